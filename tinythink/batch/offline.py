"""`tinythink batch run IN.jsonl OUT.jsonl`: a batch input file answered without a server (vLLM's run-batch, with
resume): the same lines, the same endpoints run in-process, one output line per input line in OpenAI's output
shape (failures too, with their status code). A rerun skips the custom_ids already in OUT."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

from tinythink.batch.lines import drop_cut_line, endpoint_error, output_line, parse
from tinythink.batch.store import new_id
from tinythink.errors import TinythinkError


def done_ids(out: Path) -> set[str]:
    if not out.is_file():
        return set()
    drop_cut_line(out)
    ids = set()
    for n, line in enumerate(out.read_text().splitlines(), 1):
        try:
            ids.add(json.loads(line)["custom_id"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TinythinkError(f"{out}:{n} is not an output line of a batch; give another output file") from None
    return ids


async def run(app, source: Path, out: Path, concurrency: int = 16) -> dict:
    from tqdm import tqdm

    content = source.read_bytes()
    first = next((json.loads(line) for line in content.decode("utf-8", "replace").splitlines() if line.strip()), {})
    endpoint = first.get("url") if isinstance(first, dict) else None
    problem = endpoint_error(str(endpoint))
    if problem:
        raise TinythinkError(f"{source}: the first line's url: {problem}")
    lines, errors = parse(content, endpoint)
    if errors:
        raise TinythinkError(f"{source}: " + "; ".join(e["message"] for e in errors[:5]))
    done = done_ids(out)
    todo = [line for line in lines if line.custom_id not in done]
    counts = {"total": len(lines), "skipped": len(lines) - len(todo), "completed": 0, "failed": 0}
    bar = tqdm(total=len(lines), initial=counts["skipped"], desc="batch", unit="line", file=sys.stderr)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://batch", timeout=None) as client:
        with out.open("a") as f:
            for start in range(0, len(todo), concurrency):
                window = todo[start:start + concurrency]
                replies = await asyncio.gather(*(client.post(endpoint, json=line.body) for line in window))
                for line, r in zip(window, replies):
                    counts["completed" if r.status_code < 300 else "failed"] += 1
                    f.write(output_line(line.custom_id, r.status_code, r.json(), new_id("batch_req")) + "\n")
                    bar.update()
                f.flush()
    bar.close()
    return counts
