"""A teacher answering many prompts through an OpenAI-compatible endpoint (tinythink's own server on a free port for
a model run here, as `tinythink eval` runs one), concurrently so that the engine batches them; every answer kept
goes to a JSONL file with its provenance, which a rerun reads to skip what is done.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path


def read_done(path: Path) -> dict[str, dict]:
    """The rows of a JSONL file by id (a torn last line, from a kill, is dropped)."""
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[row["id"]] = row
    return done


def text_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()[:16]


def seed_of(ident: str) -> int:
    """An item's sampling seed, the same in every process (Python's hash() of a string is not)."""
    return int(hashlib.sha256(ident.encode()).hexdigest()[:8], 16) >> 1


class Writer:
    """Appends rows to a JSONL file from many threads, skipping ids already there and texts already kept."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.lock = path, threading.Lock()
        self.done = read_done(path)
        self.seen = {r.get("hash") for r in self.done.values()}
        with open(path, "a") as f:  # a row cut off by a kill ends the file: start the next on a new line
            if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
                f.write("\n")

    def write(self, row: dict) -> bool:
        with self.lock:
            if row["id"] in self.done or (row.get("hash") and row["hash"] in self.seen):
                self.done.setdefault(row["id"], row)
                return False
            with open(self.path, "a") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            self.done[row["id"]] = row
            self.seen.add(row.get("hash"))
            return True


def agree(keys: list[str | None], need: float) -> str | None:
    """The key at least a `need` fraction of the samples share, else None."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    key, n = counts.most_common(1)[0]
    return key if n >= need * len(keys) - 1e-9 else None


def kept(path: Path) -> list[dict]:
    """The rows of a file that were kept (not the record of a dropped item)."""
    return [r for r in read_done(path).values() if not r.get("dropped")]


def run(client, model: str, items: Iterable[dict], request: Callable[[dict], dict],
        accept: Callable[[dict, list[str]], dict | None], writer: Writer, concurrency: int = 16, desc: str = "",
        progress: bool = True) -> Counter:
    """For every item not done yet: one chat request (`request(item)` gives its arguments), then
    `accept(item, replies)` -> the row to keep, or None to drop it (recorded as dropped, so that a rerun does not
    ask again). Returns counts of kept, dropped and failed items (a failed one is asked again by a rerun)."""
    import openai
    from tqdm import tqdm

    todo = [i for i in items if i["id"] not in writer.done]
    counts = Counter()
    bar = tqdm(total=len(todo), desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True, disable=not progress)

    def one(item: dict):
        try:
            r = client.chat.completions.create(model=model, **request(item))
        except openai.APIError as e:
            return "failed", str(e)
        replies = [c.message.content or "" for c in sorted(r.choices, key=lambda c: c.index)]
        row = accept(item, replies)
        if row is None:
            writer.write({"id": item["id"], "dropped": True, "replies": replies})
            return "dropped", None
        return ("kept" if writer.write(row) else "duplicate"), None

    with ThreadPoolExecutor(concurrency) as pool:
        for done in as_completed([pool.submit(one, item) for item in todo]):  # counted as they finish, in any order
            outcome, _ = done.result()
            counts[outcome] += 1
            bar.update(1)
            bar.set_postfix(counts)
    bar.close()
    return counts
