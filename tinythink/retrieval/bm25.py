"""Okapi BM25 (k1 1.5, b 0.75) over passages, and how much of a question a passage covers: the share of the
question's idf-weight that its words carry, which says (unlike the raw score) whether a passage is about it."""

from __future__ import annotations

import math
import re
from collections import Counter

STOPWORDS = set("""a an and are as at be by can do does for from has have how i in is it its me my of on or our
that the their there this to was we what when where which who why will with you your
long much many take get""".split())  # the last line: words of how questions are asked, not what they are about


def stem(w: str) -> str:
    """A light suffix strip, so that refund, refunds and refunded meet."""
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    for suffix, keep in (("ing", 4), ("ed", 4), ("es", 4), ("s", 3)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep and not w.endswith("ss"):
            return w[:-len(suffix)]
    return w


def words(text: str) -> list[str]:
    return [stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS]


class BM25:
    def __init__(self, texts: list[str], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.docs = [Counter(words(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.average = sum(self.lengths) / max(len(self.docs), 1) or 1.0
        frequency = Counter(w for d in self.docs for w in d)
        n = len(self.docs)
        self.idf = {w: math.log(1 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items()}
        self.unseen_idf = math.log(1 + (n + 0.5) / 0.5)  # a question word no passage has: as rare as can be

    def scores(self, query: str) -> list[float]:
        terms = set(words(query))
        out = []
        for doc, length in zip(self.docs, self.lengths):
            s = 0.0
            for w in terms & doc.keys():
                tf = doc[w]
                s += self.idf[w] * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self.average))
            out.append(s)
        return out

    def coverage(self, query: str, i: int) -> float:
        """The share of the question's idf-weight that passage i contains (0 to 1)."""
        terms = set(words(query))
        if not terms:
            return 0.0
        weight = {w: self.idf.get(w, self.unseen_idf) for w in terms}
        return sum(v for w, v in weight.items() if w in self.docs[i]) / sum(weight.values())
