"""The job store: one SQLite file under the server's --out, so that a restarted server still
lists its finished jobs and their results. A job that was queued or running when the server
stopped comes back failed, with the reason (its tiles are not resumed).

Job states are those of OGC API - Processes (statusCode): accepted, running, successful, failed,
dismissed.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

STORE_FILE = "copgen-jobs.sqlite"
RESTARTED = "the server stopped while this job was queued or running; submit it again"


class JobStatus(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCESSFUL, JobStatus.FAILED, JobStatus.DISMISSED)


@dataclass
class Job:
    id: str
    process: str
    owner: str  # the client (token name) that submitted it; "" without tokens
    status: JobStatus
    created: str
    inputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    started: str | None = None
    finished: str | None = None
    tiles_total: int = 0
    tiles_done: float = 0.0
    calls_done: int = 0  # network calls this job's tiles took part in
    item: dict[str, Any] | None = None  # the STAC Item of its outputs, once successful

    @property
    def progress(self) -> int:
        """Percent of tiles done (OGC's `progress`)."""
        if self.status == JobStatus.SUCCESSFUL:
            return 100
        return int(100 * self.tiles_done / self.tiles_total) if self.tiles_total else 0


def new_job_id() -> str:
    """Unguessable: 128 random bits, URL- and file-name-safe."""
    return secrets.token_hex(16)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_COLUMNS = (
    "id",
    "process",
    "owner",
    "status",
    "created",
    "inputs",
    "message",
    "started",
    "finished",
    "tiles_total",
    "tiles_done",
    "calls_done",
    "item",
)


class JobStore:
    """Jobs in SQLite (one connection, serialised by a lock: the server's writes are few and small)."""

    def __init__(self, folder: Path):
        self.path = folder / STORE_FILE
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, process TEXT NOT NULL,"
            " owner TEXT NOT NULL, status TEXT NOT NULL, created TEXT NOT NULL, inputs TEXT NOT NULL,"
            " message TEXT NOT NULL,"
            " started TEXT, finished TEXT, tiles_total INTEGER NOT NULL, tiles_done REAL NOT NULL,"
            " calls_done INTEGER NOT NULL, item TEXT)"
        )

    def fail_unfinished(self) -> int:
        """At start: jobs a previous server left queued or running become failed, with the reason."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET status=?, message=?, finished=? WHERE status IN (?, ?)",
                (JobStatus.FAILED, RESTARTED, now(), JobStatus.ACCEPTED, JobStatus.RUNNING),
            )
            return cursor.rowcount

    def add(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                self._row(job),
            )

    def save(self, job: Job) -> None:
        with self._lock:
            assignments = ", ".join(f"{c}=?" for c in _COLUMNS[1:])
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*self._row(job)[1:], job.id))

    def save_progress(self, job: Job) -> None:
        """Only the progress: a dismissal written meanwhile (by another replica) stays."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET tiles_done=?, calls_done=? WHERE id=?",
                (job.tiles_done, job.calls_done, job.id),
            )

    def dismissed(self, job_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row is not None and row[0] == JobStatus.DISMISSED

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return None if row is None else self._job(row)

    def list(self, owner: str | None) -> list[Job]:
        """Jobs, newest first: every job with owner None, else that owner's."""
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        with self._lock:
            rows = (
                self._db.execute(query + " ORDER BY created DESC").fetchall()
                if owner is None
                else self._db.execute(query + " WHERE owner=? ORDER BY created DESC", (owner,)).fetchall()
            )
        return [self._job(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @staticmethod
    def _row(job: Job) -> tuple:
        return (
            job.id,
            job.process,
            job.owner,
            str(job.status),
            job.created,
            json.dumps(job.inputs),
            job.message,
            job.started,
            job.finished,
            job.tiles_total,
            job.tiles_done,
            job.calls_done,
            None if job.item is None else json.dumps(job.item),
        )

    @staticmethod
    def _job(row: tuple) -> Job:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["status"] = JobStatus(values["status"])
        values["inputs"] = json.loads(values["inputs"])
        values["item"] = None if values["item"] is None else json.loads(values["item"])
        return Job(**values)
