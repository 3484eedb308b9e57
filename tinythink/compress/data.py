"""Training data as token ids: documents packed into fixed-length sequences that never attend across documents.

A document is a token list with, for chat data, which of its tokens are trained (the completion's): the loss
counts the prediction of a token only where it is trained. Packing keeps documents whole where they fit, in order;
a longer one is cut into pieces, each its own document. Each sequence carries, per position, its document number
(for the attention mask and restarted positions of `Transformer.hidden`) and its label: the next token, or
IGNORE where the next token lies in another document, is padding, or is not trained.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tinythink.compress.losses import IGNORE
from tinythink.errors import TinythinkError


@dataclass
class Document:
    tokens: list[int]
    trained: list[bool] | None = None  # None: every token


@dataclass
class Batch:
    tokens: Tensor  # (B, T) int64
    documents: Tensor  # (B, T) int64, non-decreasing in each row
    labels: Tensor  # (B, T) int64: the token at t + 1, or IGNORE
    index: Tensor  # (B,) which sequences of the dataset these are (their teacher cache rows)
    split: str = "train"  # which dataset: "train" or "heldout"

    @property
    def trained_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def chat_document(tokenizer, template, messages: list[dict], completion: str) -> Document:
    """A chat prompt and its completion as one document; only the completion (and its end-of-turn) is trained."""
    prompt = tokenizer.encode(template.render(messages, add_generation_prompt=True), add_special_tokens=False)
    whole = tokenizer.encode(template.render(messages + [{"role": "assistant", "content": completion}]),
                             add_special_tokens=False)
    if whole[:len(prompt)] != prompt:  # templates that re-render earlier turns: fall back to concatenating
        whole = prompt + tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.token_id(tokenizer.eos_token)]
    return Document(whole, [False] * len(prompt) + [True] * (len(whole) - len(prompt)))


def pack(documents: list[Document], seq_len: int, pad_id: int = 0) -> list[tuple[list[int], list[int], list[int]]]:
    """Documents -> sequences of (tokens, document numbers, labels), each `seq_len` long."""
    if seq_len < 2:
        raise TinythinkError(f"the sequence length must be at least 2, not {seq_len}")
    pieces = []
    for d in documents:
        trained = d.trained or [True] * len(d.tokens)
        for lo in range(0, len(d.tokens), seq_len):
            if len(d.tokens[lo:lo + seq_len]) >= 2 and any(trained[lo + 1:lo + seq_len]):
                pieces.append((d.tokens[lo:lo + seq_len], trained[lo:lo + seq_len]))
    sequences, tokens, docs, labels = [], [], [], []

    def close():
        n = seq_len - len(tokens)
        sequences.append((tokens + [pad_id] * n, docs + [len(set(docs))] * n, labels + [IGNORE] * n))

    for piece, trained in pieces:
        if len(tokens) + len(piece) > seq_len:
            close()
            tokens, docs, labels = [], [], []
        number = len(set(docs))
        tokens += piece
        docs += [number] * len(piece)
        labels += [t if ok else IGNORE for t, ok in zip(piece[1:], trained[1:])] + [IGNORE]
    if tokens:
        close()
    return sequences


class PackedData:
    """Packed sequences, read in an order fixed by a seed, one epoch after another: position p of the run is
    always the same sequence, so a resumed run reads exactly what the interrupted one would have read."""

    def __init__(self, sequences: list[tuple[list[int], list[int], list[int]]], seed: int = 0, split: str = "train"):
        if not sequences:
            raise TinythinkError(f"no {split} data: every document was empty or had no trained tokens")
        self.tokens = torch.tensor([s[0] for s in sequences])
        self.documents = torch.tensor([s[1] for s in sequences])
        self.labels = torch.tensor([s[2] for s in sequences])
        self.seed, self.split = seed, split

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def seq_len(self) -> int:
        return self.tokens.shape[1]

    def order(self, epoch: int) -> list[int]:
        order = list(range(len(self)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def indices(self, start: int, count: int) -> list[int]:
        """The sequences at run positions start .. start + count - 1."""
        orders: dict[int, list[int]] = {}
        out = []
        for p in range(start, start + count):
            epoch, i = divmod(p, len(self))
            out.append((orders.get(epoch) or orders.setdefault(epoch, self.order(epoch)))[i])
        return out

    def batch(self, indices: list[int]) -> Batch:
        idx = torch.tensor(indices)
        return Batch(self.tokens[idx], self.documents[idx], self.labels[idx], idx, self.split)

    def subset(self, indices: list[int]) -> PackedData:
        """These sequences alone, in this order, as a dataset of their own."""
        part = PackedData.__new__(PackedData)
        idx = torch.tensor(indices, dtype=torch.long)
        part.tokens, part.documents, part.labels = self.tokens[idx], self.documents[idx], self.labels[idx]
        part.seed, part.split = self.seed, self.split
        return part

    def save(self, path: Path):
        from safetensors.torch import save_file

        save_file({"tokens": self.tokens, "documents": self.documents, "labels": self.labels}, str(path),
                  metadata={"seed": str(self.seed), "split": self.split})

    @classmethod
    def load(cls, path: Path) -> PackedData:
        from safetensors import safe_open

        data = cls.__new__(cls)
        with safe_open(str(path), framework="pt") as f:
            data.tokens, data.documents, data.labels = (f.get_tensor(k) for k in ("tokens", "documents", "labels"))
            data.seed, data.split = int(f.metadata()["seed"]), f.metadata()["split"]
        return data


def read_documents(path: Path, tokenizer, template) -> list[Document]:
    """A user's training text: a .txt file (one document per blank-line-separated paragraph) or a .jsonl file
    whose lines are {"text": ...} or {"messages": [...], "completion": ...} (chat: the completion is trained)."""
    if not path.is_file():
        raise TinythinkError(f"{path}: no such data file")
    if path.suffix == ".txt":
        paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
        return [Document(tokenizer.encode(p)) for p in paragraphs]
    if path.suffix != ".jsonl":
        raise TinythinkError(f"{path}: data files are .txt or .jsonl")
    docs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TinythinkError(f"{path}:{n}: not JSON ({e})") from None
        if "text" in row:
            docs.append(Document(tokenizer.encode(row["text"])))
        elif "messages" in row and "completion" in row:
            docs.append(chat_document(tokenizer, template, row["messages"], row["completion"]))
        else:
            raise TinythinkError(f"{path}:{n}: a line needs 'text', or 'messages' and 'completion'")
    return docs
