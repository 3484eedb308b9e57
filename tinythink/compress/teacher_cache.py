"""A teacher's distributions cached on disk: for every position of a packed dataset, the k most likely next tokens
and their log-probabilities (float16), so that teacher and student need not be in memory together and one teacher
pass serves several students. The leftover mass is implied (1 - the top k's), the loss's extra bucket.

Files under the cache directory: indices.npy (N, T, k) int32, logprobs.npy (N, T, k) float16 (memory-mapped),
done.npy (N,) which sequences are filled, meta.json (k, temperature, the teacher's and the data's fingerprints).
Building it resumes: filled sequences are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from tinythink.compress.data import PackedData
from tinythink.compress.losses import TopK
from tinythink.errors import TinythinkError


def fingerprint(data: PackedData) -> str:
    import hashlib

    return hashlib.sha256(data.tokens.numpy().tobytes() + data.documents.numpy().tobytes()).hexdigest()[:16]


class TeacherCache:
    def __init__(self, directory: Path):
        self.directory = directory
        try:
            self.meta = json.loads((directory / "meta.json").read_text())
            self.indices = np.load(directory / "indices.npy", mmap_mode="r+")
            self.logprobs = np.load(directory / "logprobs.npy", mmap_mode="r+")
            self.done = np.load(directory / "done.npy", mmap_mode="r+")
        except (OSError, ValueError) as e:
            raise TinythinkError(f"{directory}: not a teacher cache ({e})") from None

    @classmethod
    def create(cls, directory: Path, data: PackedData, k: int, temperature: float, teacher_id: str) -> TeacherCache:
        meta = {"k": k, "temperature": temperature, "teacher": teacher_id, "data": fingerprint(data),
                "sequences": len(data), "seq_len": data.seq_len}
        if (directory / "meta.json").is_file():
            cache = cls(directory)
            if cache.meta != meta:
                raise TinythinkError(f"{directory} caches another teacher, data or k ({cache.meta}); remove it or "
                                     "choose another directory")
            return cache
        directory.mkdir(parents=True, exist_ok=True)
        shape = (len(data), data.seq_len, k)
        np.lib.format.open_memmap(directory / "indices.npy", "w+", np.int32, shape).flush()
        np.lib.format.open_memmap(directory / "logprobs.npy", "w+", np.float16, shape).flush()
        np.lib.format.open_memmap(directory / "done.npy", "w+", np.bool_, (len(data),)).flush()
        (directory / "meta.json").write_text(json.dumps(meta, indent=1))
        return cls(directory)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def fill(self, teacher: torch.nn.Module, data: PackedData, micro_batch: int = 4, progress: bool = True):
        """Run the teacher (its own dtype, no gradients) over every sequence not yet cached."""
        k, temperature = self.meta["k"], self.meta["temperature"]
        todo = [i for i in range(len(data)) if not self.done[i]]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(data), initial=len(data) - len(todo), desc="teacher logits", unit="seq",
                       file=sys.stderr, dynamic_ncols=True)
        teacher.eval()
        with torch.inference_mode():
            for lo in range(0, len(todo), micro_batch):
                rows = todo[lo:lo + micro_batch]
                batch = data.batch(rows)
                logits = teacher.logits(teacher.hidden(batch.tokens, batch.documents))  # (B, T, V) float32
                top = torch.log_softmax(logits / temperature, dim=-1).topk(k, dim=-1)
                self.indices[rows] = top.indices.to(torch.int32).numpy()
                self.logprobs[rows] = top.values.to(torch.float16).numpy()
                self.indices.flush()
                self.logprobs.flush()
                self.done[rows] = True  # after the rows themselves are on disk
                self.done.flush()
                if bar is not None:
                    bar.update(len(rows))
        if bar is not None:
            bar.close()

    def read(self, index: torch.Tensor) -> TopK:
        rows = index.tolist()
        if not self.done[rows].all():
            raise TinythinkError(f"{self.directory}: sequences {rows} are not cached yet")
        return TopK(torch.from_numpy(np.ascontiguousarray(self.indices[rows])),
                    torch.from_numpy(np.ascontiguousarray(self.logprobs[rows])))
