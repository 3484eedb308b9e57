"""Passages from your own documents for FAQ answers: files read and cut into passages (read), ranked by Okapi BM25
(bm25), and an index of a directory that persists and follows the files as they change (index)."""
