"""Which texts the guard can read. It learnt English only (its encoder, all-MiniLM-L6-v2, too): on other languages
its scores are noise, and before this gate 8 of 9 everyday requests in other languages ("Where is the nearest
train station?" in Spanish, a return request in Russian, ...) came out harmful or injected. A text found to be in
another language is not scored; the policy's `other_language` rule says what happens to it (flag by default).

The language is py3langid's (langid.py's model: 97 languages, BSD-3, no pickle), trusted above MIN_CONFIDENCE.
"""

from __future__ import annotations

from functools import cache

# py3langid's normalized probability. Of the guard's 8,583 items, 3 are over it as another language, and each is
# (two jailbreak prompts written in French and German, a request naming a Spanish playlist); short texts ("Hola,
# necesito ayuda": 0.46) stay under it and are scored as English
MIN_CONFIDENCE = 0.7


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def other_language(text: str) -> str | None:
    """The text's language (an ISO 639-1 code) when it is confidently not English, else None."""
    language, confidence = _identifier().classify(text)
    return language if language != "en" and confidence >= MIN_CONFIDENCE else None
