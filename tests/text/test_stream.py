"""Streaming text: multi-byte characters are never split, stop strings are honoured across chunks."""

from tinythink.text.stream import IncrementalDecoder, StopStrings

TEXT = "Ünïcödé 🙂👍🏽 日本語 and 🇫🇷 — done."


def test_incremental_decoding_never_splits_a_character(ours):
    tok = ours.tokenizer
    ids = tok.encode(TEXT)
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.feed(i) for i in ids] + [decoder.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == TEXT
    assert sum(1 for p in pieces if p) > 5  # it really streams


def test_stop_string_split_across_chunks():
    stops = StopStrings(["###", "END"])
    out = [stops.feed(t) for t in ["Hello #", "# not yet", " E", "N", "D tail"]]
    assert "".join(out) == "Hello ## not yet "
    assert stops.stopped and stops.flush() == ""


def test_held_back_text_is_released_when_no_stop_follows():
    stops = StopStrings(["STOP"])
    assert stops.feed("abc ST") == "abc "
    assert stops.feed("ART") == "START"
    assert stops.feed(" ST") == " "
    assert stops.flush() == "ST"
