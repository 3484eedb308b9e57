"""Documents (txt, md, html, pdf) as plain text, cut into passages of about `words` words on paragraph and sentence
boundaries, each passage knowing its file and its place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from tinythink.errors import TinythinkError

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")


@dataclass(frozen=True)
class Passage:
    source: str  # the file, relative to the documents' directory (or "passage N" for inline ones)
    index: int  # its place in the file
    text: str


class _Text(HTMLParser):
    SKIP = {"script", "style", "head", "nav", "footer"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table"}

    def __init__(self):
        super().__init__()
        self.parts, self.skipping = [], 0

    def handle_starttag(self, tag, attrs):
        self.skipping += tag in self.SKIP
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        self.skipping -= tag in self.SKIP and self.skipping > 0

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def text_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
        except (PdfReadError, ValueError, OSError) as e:
            raise TinythinkError(f"{path}: not a readable PDF: {e}") from None
    raw = path.read_text(errors="replace")
    if suffix in (".html", ".htm"):
        parser = _Text()
        parser.feed(raw)
        return "".join(parser.parts)
    return raw


def passages(text: str, source: str, words: int = 120) -> list[Passage]:
    """Paragraphs joined until about `words` words (a markdown heading always starts a new passage); a longer
    paragraph is cut between its sentences."""
    pieces = []  # (text, starts a section)
    for paragraph in re.split(r"\n\s*\n|\n(?=#)", text):
        heading = paragraph.lstrip().startswith("#")
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        if len(paragraph.split()) <= words:
            pieces.append((paragraph, heading))
        else:
            pieces += [(s, heading and i == 0) for i, s in enumerate(re.split(r"(?<=[.!?])\s+", paragraph))]
    out, current = [], []
    for piece, heading in pieces:  # a markdown heading starts a passage: sections are not run together
        if current and (heading or len(" ".join(current + [piece]).split()) > words):
            out.append(" ".join(current))
            current = []
        current.append(piece)
    if current:
        out.append(" ".join(current))
    return [Passage(source, i, t) for i, t in enumerate(out)]
