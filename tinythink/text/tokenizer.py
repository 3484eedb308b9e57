"""Tokenizers, built from a Hugging Face `tokenizer.json` or from a GGUF file's metadata.

A GGUF file stores the vocabulary, merges and special tokens under llama.cpp's key names; this module
rebuilds the same byte-level BPE tokenizer with the `tokenizers` library, splitting text the way
llama.cpp does for the file's `tokenizer.ggml.pre` type.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer as Backend, decoders, models, pre_tokenizers, processors

from tinythink.errors import ModelFileError, TinythinkError

# Text split rules, as llama.cpp applies them per `tokenizer.ggml.pre`.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# pre-type -> (split each digit first?, split regex)
_PRE_TOKENIZERS = {
    "default": (False, _GPT2_SPLIT), "gpt2": (False, _GPT2_SPLIT),
    "smollm": (True, _GPT2_SPLIT), "starcoder": (True, _GPT2_SPLIT), "refact": (True, _GPT2_SPLIT),
    "llama-bpe": (False, _LLAMA3_SPLIT), "llama3": (False, _LLAMA3_SPLIT), "smaug-bpe": (False, _LLAMA3_SPLIT),
    "qwen2": (False, _QWEN2_SPLIT), "deepseek-r1-qwen": (False, _QWEN2_SPLIT),
}
# Control tokens that end a turn in the chat formats we know; llama.cpp treats them the same way.
_END_OF_TURN = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<end_of_turn>",
                "<|end|>", "</s>"}
_CONTROL, _USER_DEFINED = 3, 4


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, which byte-level vocabularies are spelled in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@dataclass
class Tokenizer:
    backend: Backend
    bos_token: str | None = None
    eos_token: str | None = None
    stop_ids: frozenset[int] = field(default_factory=frozenset)  # ids that end generation
    chat_template: str | None = None
    add_bos: bool = False
    _byte_of: dict[str, int] | None = field(default=None, repr=False)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes of one token (a byte-level token may hold part of a UTF-8 character)."""
        if self._byte_of is None:
            self._byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        piece = self.backend.id_to_token(token) or ""
        if all(c in self._byte_of for c in piece) and isinstance(self.backend.decoder, decoders.ByteLevel):
            return bytes(self._byte_of[c] for c in piece)
        return self.decode([token], skip_special_tokens=False).encode()

    # ---- building

    @classmethod
    def from_gguf_metadata(cls, meta: dict, path: Path) -> Tokenizer:
        kind = meta.get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ModelFileError(path, f"tokenizer type {kind!r} is not supported (supported: gpt2 byte-level BPE)")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in _PRE_TOKENIZERS:
            raise ModelFileError(path, f"tokenizer pre-type {pre!r} is not supported "
                                       f"(supported: {', '.join(sorted(_PRE_TOKENIZERS))})")
        tokens: list[str] = meta["tokenizer.ggml.tokens"]
        types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        alphabet = _bytes_to_unicode()
        spelled = set(alphabet.values())
        # a few files store tokens as raw text rather than in the byte alphabet: spell those as bytes
        vocab = {t if set(t) <= spelled else "".join(alphabet[b] for b in t.encode()): i for i, t in enumerate(tokens)}
        merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
        backend = Backend(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
        split_digits, split = _PRE_TOKENIZERS[pre]
        steps = [pre_tokenizers.Digits(individual_digits=True)] if split_digits else []
        steps += [pre_tokenizers.Split(Regex(split), behavior="isolated"),
                  pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
        backend.decoder = decoders.ByteLevel()
        # control tokens are special (matched whole, skipped when decoding); user-defined ones are matched whole
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t, ty in zip(tokens, types) if ty == _CONTROL and set(t) <= spelled])
        backend.add_tokens([AddedToken(t, special=False, normalized=False)
                            for t, ty in zip(tokens, types) if ty == _USER_DEFINED and set(t) <= spelled])

        def token(key: str) -> str | None:
            i = meta.get(f"tokenizer.ggml.{key}")
            return tokens[i] if i is not None and 0 <= i < len(tokens) else None

        bos, eos = token("bos_token_id"), token("eos_token_id")
        add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
        if add_bos:
            bos_id = vocab[bos]
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
        stop = {meta.get(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")} - {None}
        stop |= {i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == _CONTROL and t in _END_OF_TURN}
        return cls(backend, bos, eos, frozenset(stop), meta.get("tokenizer.chat_template"), add_bos)

    @classmethod
    def from_hf_dir(cls, path: Path) -> Tokenizer:
        file = path / "tokenizer.json"
        if not file.is_file():
            raise ModelFileError(path, "no tokenizer.json (only fast tokenizers are supported)")
        try:
            backend = Backend.from_file(str(file))
        except Exception as e:
            raise ModelFileError(file, f"unreadable tokenizer ({e})") from None
        config = _read_json(path / "tokenizer_config.json")
        gen = _read_json(path / "generation_config.json") or _read_json(path / "config.json")

        def content(tok) -> str | None:
            return tok.get("content") if isinstance(tok, dict) else tok

        bos, eos = content(config.get("bos_token")), content(config.get("eos_token"))
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        eos_ids = gen.get("eos_token_id")
        stop = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
        if eos is not None and backend.token_to_id(eos) is not None:
            stop.add(backend.token_to_id(eos))
        bos_id = backend.token_to_id(bos) if bos else None
        add_bos = bos_id is not None and bos_id in backend.encode("a").ids[:1]
        return cls(backend, bos, eos, frozenset(stop), template, add_bos)

    def gguf_metadata(self) -> dict:
        """The `tokenizer.*` fields llama.cpp reads this tokenizer from (the inverse of from_gguf_metadata)."""
        spec = json.loads(self.backend.to_str())
        model = spec["model"]
        if model.get("type") != "BPE" or not isinstance(self.backend.decoder, decoders.ByteLevel):
            raise TinythinkError("only byte-level BPE tokenizers can be written to GGUF")
        tokens = [""] * self.vocab_size
        for t, i in model["vocab"].items():
            tokens[i] = t
        types = [1] * len(tokens)
        for added in spec["added_tokens"]:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = _CONTROL if added["special"] else _USER_DEFINED
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": _pre_type(spec.get("pre_tokenizer")),
                  "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                  "tokenizer.ggml.merges": merges, "tokenizer.ggml.add_bos_token": self.add_bos}
        for key, token in (("bos", self.bos_token), ("eos", self.eos_token)):
            if token is not None and self.token_id(token) is not None:
                fields[f"tokenizer.ggml.{key}_token_id"] = self.token_id(token)
        if self.chat_template:
            fields["tokenizer.chat_template"] = self.chat_template
        return fields

    def save_hf(self, path: Path):
        """Write tokenizer.json and tokenizer_config.json, loadable by transformers' AutoTokenizer."""
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token,
                  "eos_token": self.eos_token, "add_bos_token": self.add_bos, "clean_up_tokenization_spaces": False}
        if self.chat_template:
            config["chat_template"] = self.chat_template
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def _pre_type(pre: dict | None) -> str:
    """The llama.cpp pre-tokenizer type whose split rule this tokenizer.json pre-tokenizer applies."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    digits = any(s["type"] == "Digits" and s.get("individual_digits") for s in steps)
    split = next((s["pattern"].get("Regex") for s in steps if s["type"] == "Split"), None)
    if split is None and any(s["type"] == "ByteLevel" and s.get("use_regex", True) for s in steps):
        split = _GPT2_SPLIT  # ByteLevel's own regex is GPT-2's
    for name, rule in _PRE_TOKENIZERS.items():
        if rule == (digits, split):
            return name
    raise TinythinkError(f"this tokenizer's pre-tokenizer has no llama.cpp equivalent (split {split!r})")


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(file, f"invalid JSON ({e})") from None
