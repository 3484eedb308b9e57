"""Documents become passages, BM25 ranks them, coverage says when none is about the question, and the index of a
directory persists and follows its files."""

import json
import os

import pytest

from tinythink.errors import TinythinkError
from tinythink.retrieval import index as index_module
from tinythink.retrieval.bm25 import BM25, words
from tinythink.retrieval.index import DocumentIndex
from tinythink.retrieval.read import passages, text_of

FAQ = """# Refunds

Refunds are paid back to the card you used within 5 business days of our approval.

# Shipping

Orders ship from our warehouse in Leeds. Express delivery arrives the next working day.
"""


def test_markdown_sections_become_passages_and_long_paragraphs_are_cut_at_sentences():
    found = passages(FAQ, "faq.md")
    assert [p.text.split()[1] for p in found] == ["Refunds", "Shipping"] and [p.index for p in found] == [0, 1]
    long = " ".join(f"Sentence number {i} is here." for i in range(100))
    cut = passages(long, "long.txt", words=50)
    assert len(cut) > 1 and all(len(p.text.split()) <= 50 for p in cut) and all(p.text.endswith(".") for p in cut)
    assert " ".join(p.text for p in cut) == long


def test_html_keeps_the_text_and_drops_scripts_and_styles(tmp_path):
    page = tmp_path / "a.html"
    page.write_text("<html><head><style>p{}</style><script>var x=1</script></head><body><h1>Title</h1>"
                    "<p>First para.</p><p>Second &amp; last.</p></body></html>")
    text = text_of(page)
    assert "var x" not in text and "p{}" not in text
    assert [p.text for p in passages(text, "a.html", words=2)] == ["Title", "First para.", "Second & last."]


def test_a_pdf_is_read_and_a_broken_one_is_named(tmp_path):
    from pypdf import PdfWriter

    blank = tmp_path / "blank.pdf"
    w = PdfWriter()
    w.add_blank_page(100, 100)
    with blank.open("wb") as f:
        w.write(f)
    assert text_of(blank).strip() == ""
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(TinythinkError, match="broken.pdf"):
        text_of(broken)


def test_bm25_ranks_the_passage_about_the_question_first():
    texts = [p.text for p in passages(FAQ, "faq.md")] + ["Our office is open from 9 to 5 on weekdays."]
    bm25 = BM25(texts)
    scores = bm25.scores("How long do refunds take?")
    assert max(range(3), key=scores.__getitem__) == 0 and scores[1] == scores[2] == 0
    assert words("Refunds refunded refunding") == ["refund"] * 3
    assert bm25.coverage("When is the office open?", 2) == 1.0
    assert bm25.coverage("Do you sell gift vouchers?", 0) == 0.0


def test_the_index_persists_and_follows_its_files(tmp_path, monkeypatch):
    docs, saved = tmp_path / "docs", tmp_path / "index.json"
    docs.mkdir()
    (docs / "faq.md").write_text(FAQ)
    index = DocumentIndex(docs, saved)
    assert index.search("refunds", 1)[0][0].source == "faq.md"
    assert json.loads(saved.read_text())["files"]["faq.md"]["passages"][0].startswith("# Refunds")
    monkeypatch.setattr(index_module, "RECHECK_SECONDS", 0.0)
    (docs / "hours.txt").write_text("The office is open from 9 to 5 on weekdays.")
    best = index.search("When is the office open?", 1)[0]
    assert best[0].source == "hours.txt" and best[2] == 1.0
    os.remove(docs / "faq.md")
    assert index.search("refunds", 3) == []
    (docs / "hours.txt").write_text("Closed on Sundays.")
    st = (docs / "hours.txt").stat()
    os.utime(docs / "hours.txt", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert index.search("open weekdays", 1) == []
    again = DocumentIndex(docs, saved)  # from the saved file; the unchanged document is not read again
    assert [p.text for p in again.passages] == ["Closed on Sundays."]
    with pytest.raises(TinythinkError, match="not a directory"):
        DocumentIndex(tmp_path / "missing")
