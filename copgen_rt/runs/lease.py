"""The driver's lease on a Ray run: the driver holds the scenes' locks, but workers on other nodes
write the outputs, and a worker outlives a driver that died (its head lost, killed): without a
fence it would go on publishing into folders that a rerun may already be writing.

The lease is a file in the run's output folder (a filesystem every node shares) that the driver
creates, touches every LEASE_REFRESH_S while it runs and deletes when it ends. Before publishing
each file, a worker checks it (`check_lease`, through `copgen_rt.files.fenced`): deleted, or not
touched for LEASE_TIMEOUT_S (the driver died without deleting it), and the worker publishes
nothing and removes its temporary files. The age is measured against the worker's clock: nodes'
clocks must agree within a few seconds (NTP), as they must for Ray itself."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from copgen_rt.errors import LeaseLostError
from copgen_rt.files import check_writable, write_error

LEASE_REFRESH_S = 2.0
LEASE_TIMEOUT_S = 30.0  # many refreshes: a driver busy saving its run record is not taken for dead
LEASE_PREFIX = ".copgen-lease-"


class Lease:
    """The driver's side: created in `folder`, refreshed, deleted on close."""

    def __init__(self, folder: Path):
        check_writable(Path(folder))
        self.path = Path(folder).absolute() / f"{LEASE_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
        except OSError as e:
            raise write_error(self.path, e) from None
        self._refreshed = time.monotonic()

    def refresh(self) -> None:
        if time.monotonic() - self._refreshed >= LEASE_REFRESH_S:
            os.utime(self.path)
            self._refreshed = time.monotonic()

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def release_leases_of(pid: int, folder: Path) -> None:
    """Delete the leases process `pid` held in `folder` (it died without deleting them)."""
    for path in Path(folder).absolute().glob(f"{LEASE_PREFIX}{pid}-*"):
        with contextlib.suppress(OSError):
            path.unlink()


def check_lease(path: str) -> None:
    """Raise LeaseLostError where the driver holding `path` is gone."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        raise LeaseLostError(f"the driver of this run is gone (its lease {Path(path).name} was released): "
                             "not publishing") from None
    if age > LEASE_TIMEOUT_S:
        raise LeaseLostError(f"the driver of this run is gone (its lease was not refreshed for {age:.0f} s): "
                             "not publishing")
