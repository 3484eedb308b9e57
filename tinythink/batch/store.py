"""Files and batches in SQLite plus a directory of file contents, under one data directory.

Every change is one committed transaction, so a server killed at any moment restarts with each batch line either
answered (its row in `lines`) or not yet: none lost, none answered twice.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, data TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lines (batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL,
    status_code INTEGER NOT NULL, body TEXT NOT NULL, request_id TEXT NOT NULL, PRIMARY KEY (batch_id, idx));
"""
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.root / "tinythink.db", check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def close(self):
        self.db.close()

    def _execute(self, sql: str, args=()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    # ---- files

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def add_file(self, file_id: str, filename: str, purpose: str, size: int) -> dict:
        """Records a file whose content is already at file_path(file_id) (written and synced by the caller)."""
        self._execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", (file_id, filename, purpose, size, int(time.time())))
        return self.file(file_id)

    def write_file(self, filename: str, purpose: str, content: bytes) -> dict:
        file_id = new_id("file")
        partial = self.file_path(file_id).with_suffix(".partial")
        with partial.open("wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        partial.rename(self.file_path(file_id))
        return self.add_file(file_id, filename, purpose, len(content))

    def file(self, file_id: str) -> dict | None:
        rows = self._execute("SELECT id, filename, purpose, bytes, created_at FROM files WHERE id = ?", (file_id,))
        return file_object(rows[0]) if rows else None

    def files(self, purpose: str | None = None) -> list[dict]:
        sql, args = "SELECT id, filename, purpose, bytes, created_at FROM files", ()
        if purpose:
            sql, args = sql + " WHERE purpose = ?", (purpose,)
        return [file_object(r) for r in self._execute(sql + " ORDER BY created_at DESC, rowid DESC", args)]

    def delete_file(self, file_id: str) -> bool:
        with self.lock:
            deleted = self.db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount
        self.file_path(file_id).unlink(missing_ok=True)
        return bool(deleted)

    # ---- batches

    def add_batch(self, batch: dict):
        self._execute("INSERT INTO batches VALUES (?, ?, ?)", (batch["id"], json.dumps(batch), batch["created_at"]))

    def batch(self, batch_id: str) -> dict | None:
        rows = self._execute("SELECT data FROM batches WHERE id = ?", (batch_id,))
        return json.loads(rows[0][0]) if rows else None

    def update_batch(self, batch_id: str, **changes) -> dict:
        with self.lock:  # read and write in one step: the worker and a cancel request may both change a batch
            data = json.loads(self.db.execute("SELECT data FROM batches WHERE id = ?", (batch_id,)).fetchone()[0])
            data.update(changes)
            self.db.execute("UPDATE batches SET data = ? WHERE id = ?", (json.dumps(data), batch_id))
        return data

    def batches(self) -> list[dict]:
        rows = self._execute("SELECT data FROM batches ORDER BY created_at DESC, rowid DESC")
        return [json.loads(r[0]) for r in rows]

    def active_batches(self) -> list[dict]:
        """Batches with work left, oldest first."""
        rows = self._execute("SELECT data FROM batches ORDER BY created_at, rowid")
        return [b for b in (json.loads(r[0]) for r in rows) if b["status"] in ACTIVE]

    # ---- the answers of a batch's lines

    def add_line(self, batch_id: str, idx: int, custom_id: str, status_code: int, body: dict, request_id: str):
        """One line's answer and the batch's counts, in one transaction (a line answered twice is refused)."""
        ok = 200 <= status_code < 300
        with self.lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute("INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?)",
                                (batch_id, idx, custom_id, status_code, json.dumps(body), request_id))
                data = json.loads(self.db.execute("SELECT data FROM batches WHERE id = ?",
                                                  (batch_id,)).fetchone()[0])
                data["request_counts"]["completed" if ok else "failed"] += 1
                self.db.execute("UPDATE batches SET data = ? WHERE id = ?", (json.dumps(data), batch_id))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def answered(self, batch_id: str) -> set[int]:
        return {r[0] for r in self._execute("SELECT idx FROM lines WHERE batch_id = ?", (batch_id,))}

    def lines(self, batch_id: str) -> list[tuple[int, str, int, dict, str]]:
        rows = self._execute("SELECT idx, custom_id, status_code, body, request_id FROM lines WHERE batch_id = ? "
                             "ORDER BY idx", (batch_id,))
        return [(i, c, s, json.loads(b), r) for i, c, s, b, r in rows]


def file_object(row: tuple) -> dict:
    file_id, filename, purpose, size, created = row
    return {"id": file_id, "object": "file", "bytes": size, "created_at": created, "filename": filename,
            "purpose": purpose, "status": "processed", "expires_at": None, "status_details": None}
