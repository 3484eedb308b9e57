"""An index of a documents directory: its passages, kept in a JSON file beside the server's data, rebuilt for the
files that changed (size or modification time) whenever it is searched, at most every few seconds."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tinythink.errors import TinythinkError
from tinythink.retrieval.bm25 import BM25
from tinythink.retrieval.read import SUFFIXES, Passage, passages, text_of

RECHECK_SECONDS = 2.0


class DocumentIndex:
    def __init__(self, root: Path, saved: Path | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise TinythinkError(f"{self.root}: not a directory of documents")
        self.saved = saved
        self.files: dict[str, dict] = {}  # relative path -> {"stamp": [size, mtime], "passages": [...]}
        if saved is not None and saved.is_file():
            try:
                self.files = json.loads(saved.read_text())["files"]
            except (json.JSONDecodeError, KeyError):
                self.files = {}  # a damaged index is rebuilt from the documents
        self.lock = threading.Lock()
        self.checked = 0.0
        self.bm25: BM25 | None = None
        self.passages: list[Passage] = []
        self.refresh(force=True)

    def stamps(self) -> dict[str, list]:
        out = {}
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.suffix.lower() in SUFFIXES:
                st = path.stat()
                out[str(path.relative_to(self.root))] = [st.st_size, st.st_mtime_ns]
        return out

    def refresh(self, force: bool = False) -> bool:
        """Re-reads the files that changed; True when anything did."""
        with self.lock:
            if not force and time.monotonic() - self.checked < RECHECK_SECONDS:
                return False
            self.checked = time.monotonic()
            stamps = self.stamps()
            changed = stamps.keys() != self.files.keys() or any(self.files[k]["stamp"] != v for k, v in stamps.items())
            if not changed and self.bm25 is not None:
                return False
            files = {}
            for name, stamp in stamps.items():
                old = self.files.get(name)
                if old is not None and old["stamp"] == stamp:
                    files[name] = old
                else:
                    found = passages(text_of(self.root / name), name)
                    files[name] = {"stamp": stamp, "passages": [p.text for p in found]}
            self.files = files
            self.passages = [Passage(name, i, t) for name, f in files.items() for i, t in enumerate(f["passages"])]
            self.bm25 = BM25([p.text for p in self.passages])
            if self.saved is not None:
                partial = self.saved.with_suffix(".partial")
                partial.write_text(json.dumps({"root": str(self.root), "files": files}))
                os.replace(partial, self.saved)
            return True

    def search(self, question: str, k: int) -> list[tuple[Passage, float, float]]:
        """The k best passages for the question: (passage, BM25 score, coverage of the question), best first."""
        self.refresh()
        return search(self.bm25, self.passages, question, k)


def search(bm25: BM25, found: list[Passage], question: str, k: int) -> list[tuple[Passage, float, float]]:
    scores = bm25.scores(question)
    best = sorted(range(len(found)), key=lambda i: -scores[i])[:k]
    return [(found[i], scores[i], bm25.coverage(question, i)) for i in best if scores[i] > 0]


def inline(texts: list[str]) -> tuple[BM25, list[Passage]]:
    """Passages given with the request: each cut like a document, named "passage N"."""
    found = [p for n, t in enumerate(texts, 1) for p in passages(t, f"passage {n}")]
    return BM25([p.text for p in found]), found

