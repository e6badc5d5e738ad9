"""Writing into folders that other people and other runs may share.

Whoever can write into an output folder can plant a symlink under any name a run is known to
use. So nothing is ever opened for writing under a predictable name:

- a file written by us goes to an unpredictable name made with O_CREAT|O_EXCL (`atomic_write`)
  and is renamed into place, and a rename replaces a planted link instead of following it;
- folders below an output folder (`--out`) are entered one by one with O_NOFOLLOW from that
  folder (`open_folder`, `output_folder`): a link planted at `O/vae` is refused, never followed,
  and the temporary file and its rename happen in the folder that was checked, not in whatever a
  path names a moment later;
- libraries that write by path (GDAL) write inside a private folder (`Staging`: mode 0700, an
  unpredictable name) where nobody else can create anything, and files are published by rename;
- lock files are opened with O_NOFOLLOW and never truncated; folders we keep state in must be
  real folders of ours (`own_folder`);
- a scene's outputs belong to one run at a time (`exclusive`); where the run's lock is held by
  another process (a Ray driver), every publish first asks that holder's lease (`fenced`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

from copgen_rt.errors import OutputBusyError, OutputWriteError
from copgen_rt.reading import regular_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


PUBLIC_MODE = 0o666 & ~_umask()  # what open() would have given a new file


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(e: BaseException | None) -> bool:
    """Whether `e`, or an exception it was raised from, is a full disk, a quota or a file size
    limit (libraries such as torch's compilers wrap the OSError)."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    return False


def write_error(path: Path, e: BaseException) -> OutputWriteError:
    """One line for an OSError (or GDAL's wrapped one) met while writing `path`."""
    code = e.errno if isinstance(e, OSError) else None  # GDAL's exceptions carry its own error numbers
    if out_of_space(e) or "No space" in str(e) or "too large" in str(e):
        why = "no space left (disk full, quota or file size limit)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "not writable (permissions or a read-only filesystem)"
    else:
        text = getattr(e, "strerror", None) or str(e)
        why = (text.strip().splitlines() or [type(e).__name__])[0][:160]
        if code is None:  # GDAL reports a failed write as a failed read of what it wrote
            why += " (is the disk full, or a quota or file size limit reached?)"
    return OutputWriteError(f"cannot write {path}: {why}")


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be made there, before any long work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise write_error(folder, e) from None


_fence: ContextVar[Callable[[], None] | None] = ContextVar("copgen_publish_fence", default=None)


@contextlib.contextmanager
def fenced(check: Callable[[], None]) -> Iterator[None]:
    """Call `check` before publishing each file in this context: it raises where this process no
    longer has the right to write (the lock holder, a Ray driver, is gone)."""
    token = _fence.set(check)
    try:
        yield
    finally:
        _fence.reset(token)


def _check_fence() -> None:
    check = _fence.get()
    if check is not None:
        check()


def _refusal(path: Path, e: OSError) -> OutputWriteError:
    """Why the folder `path` could not be entered without following a link."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return write_error(path, e)
    if stat.S_ISLNK(mode):
        return OutputWriteError(f"{path} is a symlink: refusing to write through it; remove it")
    if not stat.S_ISDIR(mode):
        return OutputWriteError(f"{path} is not a folder: refusing to write into it; remove it")
    return write_error(path, e)


def open_folder(folder: Path, below: Path | None = None) -> int:
    """A descriptor of `folder`, created if missing. With `below` (an output folder the user
    named, followed if it is a link), every folder between `below` and `folder` is created and
    entered with O_NOFOLLOW: a link or a file planted there is refused (OutputWriteError)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    root = folder if below is None else below
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root, flags)
    except OSError as e:
        raise _refusal(root, e) from None
    if below is None:
        return fd
    here = below
    try:
        for part in folder.relative_to(below).parts:
            here = here / part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=fd)
            inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except OSError as e:
        os.close(fd)
        raise _refusal(here, e) from None
    return fd


def output_folder(folder: Path, below: Path) -> Path:
    """`folder` made and checked as `open_folder` does, for libraries that write by path."""
    os.close(open_folder(folder, below))
    return folder


@contextlib.contextmanager
def atomic_write(path: Path, below: Path | None = None, replace: bool = True) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` complete or not at all (see the module docstring):
    made under an unpredictable name with O_EXCL in the folder `open_folder(path.parent, below)`
    opened, and renamed within that same folder; with `replace=False` linked there instead, which
    raises FileExistsError where a file is there (it is kept)."""
    folder = open_folder(path.parent, below)
    tmp = f".{path.name[:200]}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                os.fchmod(f.fileno(), PUBLIC_MODE)
            _check_fence()
            if replace:
                os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                os.link(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
                os.unlink(tmp, dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            raise
    finally:
        os.close(folder)


def write_bytes(path: Path, data: bytes, below: Path | None = None) -> None:
    """`data` at `path` by `atomic_write`; a failure is one line (OutputWriteError)."""
    try:
        with atomic_write(path, below) as f:
            f.write(data)
    except OSError as e:
        raise write_error(path, e) from None


def write_text(path: Path, text: str, below: Path | None = None) -> None:
    write_bytes(path, text.encode(), below)


def write_new(path: Path, data: bytes) -> bool:
    """`data` at `path` complete, unless a file is there already: that one is kept, so where
    processes race to record one result the first to finish wins. Whether `data` was written."""
    try:
        with atomic_write(path, replace=False) as f:
            f.write(data)
    except FileExistsError:
        return False
    except OSError as e:
        raise write_error(path, e) from None
    return True


def publish(src: Path, final: Path, below: Path | None = None) -> None:
    """Move a finished file made by path (in a private folder of ours) to `final`, replacing
    whatever is there (a planted link included, never followed), within the folder checked by
    `open_folder(final.parent, below)`."""
    folder = open_folder(final.parent, below)
    try:
        _check_fence()
        os.chmod(src, PUBLIC_MODE)
        os.replace(src, final.name, dst_dir_fd=folder)
    except OSError as e:
        raise write_error(final, e) from None
    finally:
        os.close(folder)


class Staging:
    """A private folder inside an output folder for files that libraries write by path."""

    def __init__(self, folder: Path, prefix: str = ".copgen-tmp-"):
        try:
            self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
        except OSError as e:
            raise write_error(folder, e) from None

    def file(self, name: str) -> Path:
        return self.path / name

    def publish(self, name: str, final: Path) -> Path:
        """Move a finished file into place (replacing whatever is at `final`, never following it)."""
        publish(self.path / name, final)
        return final

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_folder(path: Path) -> Path:
    """`path` as a folder of this user's, created private if missing; a link, a file or somebody
    else's folder there is refused (we would write into wherever it leads)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise write_error(path, e) from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder" if not stat.S_ISDIR(st.st_mode) \
            else "a folder of another user"
        raise OutputWriteError(f"{path} is {what}: refusing to keep run state there; remove it")
    return path


def is_regular_file(path: Path) -> bool:
    """A plain file (links, FIFOs and devices are not): safe to open and read."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def open_lock(path: Path) -> int:
    """A lock file's descriptor: created if missing, never truncated, never through a link."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PUBLIC_MODE)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputWriteError(f"{path} is a symlink: refusing to use it as a lock; remove it") from None
        raise write_error(path, e) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputWriteError(f"{path} is not a plain file: refusing to use it as a lock; remove it")
    return fd


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at `path` for `what`, or fail at once if another run holds it."""
    fd = open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"{what} is being written by another run right now (it holds {path}); "
                                  "wait for it to finish, or write to another --out") from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold the lock at `path`, waiting for other holders (for short critical sections)."""
    fd = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def onnx_sha256(path: Path) -> str:
    """sha256 of an ONNX file and its external data file (`<name>.data`, written above 2 GB)."""
    h = hashlib.sha256()
    data = path.with_name(path.name + ".data")
    for p in [path, *([data] if data.exists() else [])]:
        with open(p, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per (path, size, mtime): weights are hashed for provenance,
    verification and cache keys, and a large checkpoint takes seconds."""
    st = Path(path).stat()
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with os.fdopen(os.open(regular_file(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()
