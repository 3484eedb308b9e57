"""Runs batches one at a time, oldest first, each line through the server's own endpoint (in-process, over ASGI,
so a line is answered exactly as the same request over HTTP would be).

Priority: the lines' requests are the engine's background work (admitted only when no interactive request waits,
and never into the slots it keeps for them), and at most `concurrency` lines are in flight.

Restart: lines already answered are in the store and are skipped; a line that was in flight when the server died
has no answer there and runs again, so none is lost or doubled.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from tinythink.batch.lines import Line, output_line, parse
from tinythink.batch.store import Store, new_id
from tinythink.serve.host import BACKGROUND

log = logging.getLogger("tinythink.batch")
WINDOWS = {"24h": 24 * 3600}


class BatchWorker:
    def __init__(self, store: Store, app, api_key: str | None, concurrency: int):
        self.store, self.app, self.concurrency = store, app, max(1, concurrency)
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self.run_forever())

    async def stop(self):
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    async def run_forever(self):
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://batch", headers=self.headers,
                                     timeout=None) as client:
            while True:
                active = self.store.active_batches()
                if not active:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                batch = next((b for b in active if b["status"] == "cancelling"), active[0])
                try:
                    await self.process(client, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # a bug must not stop every later batch: this one fails, saying why
                    log.exception("batch %s failed", batch["id"])
                    self.store.update_batch(batch["id"], status="failed", failed_at=int(time.time()), errors={
                        "object": "list", "data": [{"code": "server_error", "message": str(e), "param": None,
                                                    "line": None}]})

    async def process(self, client: httpx.AsyncClient, batch: dict):
        bid = batch["id"]
        lines = self.input_lines(batch)
        if lines is None:
            return
        if batch["status"] == "validating":
            batch = self.store.update_batch(bid, status="in_progress", in_progress_at=int(time.time()),
                                            request_counts={"total": len(lines), "completed": 0, "failed": 0})
        expired = batch["status"] == "in_progress" and await self.run_lines(client, bid, lines)
        batch = self.store.batch(bid)
        if expired:
            self.finish(batch, "expired")
            return
        if batch["status"] == "in_progress":
            batch = self.store.update_batch(bid, status="finalizing", finalizing_at=int(time.time()))
        self.finish(batch, "cancelled" if batch["status"] == "cancelling" else "completed")

    def input_lines(self, batch: dict) -> list[Line] | None:
        path = self.store.file_path(batch["input_file_id"])
        if not path.is_file():
            self.store.update_batch(batch["id"], status="failed", failed_at=int(time.time()), errors={
                "object": "list", "data": [{"code": "file_not_found", "message": "the input file was deleted",
                                            "param": "input_file_id", "line": None}]})
            return None
        lines, errors = parse(path.read_bytes(), batch["endpoint"])
        if errors:
            self.store.update_batch(batch["id"], status="failed", failed_at=int(time.time()),
                                    errors={"object": "list", "data": errors})
            return None
        return lines

    async def run_lines(self, client: httpx.AsyncClient, bid: str, lines: list[Line]) -> bool:
        """Answers the lines not yet answered; stops starting new ones on a cancel, or when the completion window
        closes (then returns True: expired)."""
        done = self.store.answered(bid)
        todo = iter([line for line in lines if line.idx not in done])
        running: set[asyncio.Task] = set()
        while True:
            state = self.store.batch(bid)
            expired = time.time() > state["expires_at"]
            stopping = state["status"] != "in_progress" or expired
            while not stopping and len(running) < self.concurrency:
                line = next(todo, None)
                if line is None:
                    break
                running.add(asyncio.create_task(self.answer(client, bid, state["endpoint"], line)))
            if not running:
                return expired and state["status"] == "in_progress"
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()  # an unexpected error fails the batch (run_forever)

    async def answer(self, client: httpx.AsyncClient, bid: str, endpoint: str, line: Line):
        BACKGROUND.set(True)  # this task's own context: its requests queue behind interactive ones
        request_id = new_id("batch_req")
        try:
            r = await client.post(endpoint, json=line.body)
            status, body = r.status_code, r.json()
        except ValueError:
            status, body = 500, {"error": {"message": "the endpoint's answer was not JSON", "type": "server_error",
                                           "param": None, "code": None}}
        self.store.add_line(bid, line.idx, line.custom_id, status, body, request_id)

    def finish(self, batch: dict, end: str):
        """Writes the output file (2xx answers, in input order) and the error file (the rest), then the end state:
        completed, cancelled or expired (the answers so far kept in the last two as well)."""
        ok, failed = [], []
        for _, custom_id, status, body, request_id in self.store.lines(batch["id"]):
            (ok if 200 <= status < 300 else failed).append(output_line(custom_id, status, body, request_id))
        changes = {}
        if ok:
            changes["output_file_id"] = self.store.write_file(f"{batch['id']}_output.jsonl", "batch_output",
                                                              ("\n".join(ok) + "\n").encode())["id"]
        if failed:
            changes["error_file_id"] = self.store.write_file(f"{batch['id']}_error.jsonl", "batch_output",
                                                             ("\n".join(failed) + "\n").encode())["id"]
        self.store.update_batch(batch["id"], **changes, status=end, **{f"{end}_at": int(time.time())})


def new_batch(input_file_id: str, endpoint: str, completion_window: str, metadata: dict | None) -> dict:
    now = int(time.time())
    return {"id": new_id("batch"), "object": "batch", "endpoint": endpoint, "errors": None,
            "input_file_id": input_file_id, "completion_window": completion_window, "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + WINDOWS[completion_window], "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata}
