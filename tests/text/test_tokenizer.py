"""The tokenizer rebuilt from GGUF metadata against transformers' reading of the same file.

The same strings were also checked against llama.cpp's own tokenizer (llama-cpp-python 0.3.x,
vocab_only) on 2026-11-25: identical ids for every one.
"""

import pytest

TRICKY = [
    "Hello world", "  leading and trailing spaces  ", "tabs\tand\nnewlines\n\n\nend", "naïve café, façade — “quotes”",
    "日本語のテキストと中文", "emoji 🙂👍🏽 and 🇫🇷 flags", "def f(x):\n    return x ** 2  # comment",
    "I'm can't we'll they've", "Price: $1,234.56 on 2024-11-25 at 10:30", "12345678901234567890",
    "x=3.14159; y = -0.5e10", "<|im_start|>user\nhi<|im_end|>", "mixed\r\nCRLF\r\n", "ÄÖÜ äöü ß", "a" * 50,
    "Ωmega αβγ ∑∫√", "    indented\n        code", "", " ", "\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_ids_match_transformers(ours, hf_tokenizer, text):
    assert ours.tokenizer.encode(text) == hf_tokenizer(text)["input_ids"]


@pytest.mark.parametrize("text", TRICKY)
def test_decode_round_trips(ours, text):
    tok = ours.tokenizer
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == text


def test_special_tokens_are_whole_and_skipped_when_decoding(ours):
    tok = ours.tokenizer
    ids = tok.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert ids[0] == tok.token_id("<|im_start|>") == 1 and ids[-1] == tok.token_id("<|im_end|>") == 2
    assert tok.decode(ids) == "assistant\nHi"


def test_stop_tokens_come_from_the_metadata(ours):
    tok = ours.tokenizer
    assert tok.eos_token == "<|im_end|>"
    assert tok.stop_ids == {tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>")}
    assert not tok.add_bos  # the file says add_bos_token = false
