"""`tinythink task` as a user runs it: a text as an argument or on standard input, and a CSV of tickets whose
answers go to JSONL, resumed after an interrupted run without answering a row twice."""

import csv
import json
import subprocess
import sys

TINYTHINK = [sys.executable, "-m", "tinythink.cli"]


def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TINYTHINK, "task", *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_a_text_from_the_arguments_or_standard_input():
    r = run("sentiment", "I loved every minute of it.")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["probabilities"]) == {"positive", "negative", "neutral"}
    notes = run("report", "--title", "weekly report", "--max-tokens", "60", stdin="- 4 releases\n- 1 outage\n")
    assert notes.returncode == 0, notes.stderr
    assert json.loads(notes.stdout)["report"]
    bad = run("classify", "some text", "--labels", "only-one")
    assert bad.returncode == 2 and "labels" in bad.stderr and "at least 2" in bad.stderr


def test_a_csv_of_tickets_resumes_without_answering_a_row_twice(tmp_path):
    rows = tmp_path / "tickets.csv"
    with rows.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "labels"])
        w.writerow(["a", "Refund my second payment please", ""])
        w.writerow(["b", "", ""])  # no text: an error line for this row, the others go on
        w.writerow(["c", "The app freezes on start", "bug,question"])
        w.writerow(["d", "Where is my parcel?", ""])
    out = tmp_path / "answers.jsonl"
    out.write_text(json.dumps({"row": 0, "response": {"label": "earlier run"}}) + "\n" + '{"row": 3, "resp')  # cut
    r = run("classify", "--labels", "billing,technical,shipping", "--input", str(rows), "--output", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0]["response"] == {"label": "earlier run"}
    lines = lines[1:]
    by_row = {line["row"]: line for line in lines}
    assert sorted(by_row) == [1, 2, 3] and len(lines) == 3  # row 0 was done; the cut line's row 3 ran again
    assert [by_row[i]["id"] for i in (1, 2, 3)] == ["b", "c", "d"]
    assert "text" in by_row[1]["error"]
    assert by_row[2]["response"]["label"] in ("bug", "question")  # the row's own labels
    assert by_row[3]["response"]["label"] in ("billing", "technical", "shipping")


def test_an_excel_sheet_of_tickets(tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    book.active.append(["id", "text"])
    book.active.append([7, "I was charged twice for my order, please refund one payment."])
    book.active.append([None, None])  # an empty row: skipped
    book.active.append([8.0, "The app crashes every time I open the settings page."])
    rows, out = tmp_path / "tickets.xlsx", tmp_path / "answers.jsonl"
    book.save(rows)
    r = run("classify", "--labels", "billing,technical", "--input", str(rows), "--output", str(out))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(line["row"], line["id"]) for line in lines] == [(0, "7"), (1, "8")]  # cells as text, 8.0 as written
    assert all(line["response"]["label"] in ("billing", "technical") for line in lines)
    junk = tmp_path / "junk.xlsx"
    junk.write_bytes(b"not a workbook")
    bad = run("classify", "--labels", "a,b", "--input", str(junk), "--output", str(out))
    assert bad.returncode != 0 and "not an Excel .xlsx workbook" in bad.stderr
