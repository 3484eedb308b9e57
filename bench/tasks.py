"""The task endpoints against the chat endpoint they replace, side by side on one server in one run:

- classify with 6 labels (every label scored in one batched pass) against a single 1-token chat completion on the
  same prompt (the least a chat call can do), and against 6 separate 1-token completions (one per label);
- N tickets through /v1/batches with triage against the same N sent one by one.

    python bench/tasks.py [-m MODEL] [--repeats 20] [--tickets 100] [--threads 2]

Prints a Markdown table of medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn

from tinythink.llm import LLM
from tinythink.model.load import load_model
from tinythink.serve.app import ServerSettings, create_app
from tinythink.serve.host import ModelHost
from tinythink.tasks.classify import ClassifyRequest, chat

LABELS = ["billing", "technical", "account", "shipping", "sales", "other"]
TICKETS = ["I was charged twice for my subscription.", "The app crashes when I open settings.",
           "I cannot log in to my account since yesterday.", "My parcel has not arrived after two weeks.",
           "Do you offer discounts for teams of fifty?", "How do I change the language of the emails?"]


def serve(model: str, data_dir: Path) -> tuple[str, ModelHost, uvicorn.Server]:
    loaded = load_model(model)
    host = ModelHost(loaded.name, LLM(loaded), max_batch=16, context=1024)
    server = uvicorn.Server(uvicorn.Config(create_app({loaded.name: host}, ServerSettings(data_dir=data_dir)),
                                           host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", host, server


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tickets", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        url, host, server = serve(args.model, Path(tmp))
        c = httpx.Client(base_url=url, timeout=600)
        rows = {"classify (6 labels)": [], "chat, 1 token": [], "6 chats of 1 token, one per label": []}
        for i in range(args.repeats):
            text = TICKETS[i % len(TICKETS)] + f" (ticket {i})"  # no two requests share a whole prompt
            messages = chat(ClassifyRequest(text=text, labels=LABELS))
            one = {"model": host.name, "messages": messages, "max_tokens": 1}
            rows["classify (6 labels)"].append(timed(lambda: c.post("/v1/tasks/classify", json={
                "text": text, "labels": LABELS}).raise_for_status()))
            rows["chat, 1 token"].append(timed(lambda: c.post("/v1/chat/completions", json=one).raise_for_status()))
            rows["6 chats of 1 token, one per label"].append(timed(lambda: [
                c.post("/v1/chat/completions", json={**one, "messages": messages + [
                    {"role": "assistant", "content": label}]}).raise_for_status() for label in LABELS]))
        lines = [{"custom_id": f"t{i}", "method": "POST", "url": "/v1/tasks/triage",
                  "body": {"text": TICKETS[i % len(TICKETS)] + f" (ticket {i})"}} for i in range(args.tickets)]
        upload = c.post("/v1/files", files={"file": ("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines))},
                        data={"purpose": "batch"}).json()
        start = time.perf_counter()
        batch = c.post("/v1/batches", json={"input_file_id": upload["id"], "endpoint": "/v1/tasks/triage",
                                            "completion_window": "24h"}).json()
        while c.get(f"/v1/batches/{batch['id']}").json()["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        batched = time.perf_counter() - start
        one_by_one = timed(lambda: [c.post("/v1/tasks/triage", json=x["body"]).raise_for_status() for x in lines])
        server.should_exit = True
        host.close()
    base = statistics.median(rows["chat, 1 token"])
    print(f"\n{args.model}, {args.threads} threads, median of {args.repeats}\n")
    print("| request | median s | against 1-token chat |\n|---|---|---|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.3f} | {statistics.median(times) / base:.2f}x |")
    print(f"\n| {args.tickets} tickets, triage | wall s | tickets/s |\n|---|---|---|")
    print(f"| /v1/batches | {batched:.1f} | {args.tickets / batched:.2f} |")
    print(f"| one request at a time | {one_by_one:.1f} | {args.tickets / one_by_one:.2f} |")
    print(f"\nbatch against one at a time: {one_by_one / batched:.2f}x faster")


if __name__ == "__main__":
    main()
