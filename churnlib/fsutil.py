"""The one atomic writer and the one run lock.

Every state file is replaced, never edited in place: the new content goes to a temporary file in
the same folder, is flushed and fsynced, then ``os.replace``-d over the old one and the folder is
fsynced. A crash at any instant leaves the old or the new file, never a torn one. Temporary files
carry the writer's PID in their name, so a later run can tell a dead writer's leftovers from a
live writer's work in progress.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from churnlib.errors import StateFileError, StorageError


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(handle: BinaryIO, limit: int | None = None) -> str:
    """Return the hex SHA-256 of what is left in an open binary file (at most ``limit`` bytes of it),
    read in 1 MiB blocks."""
    digest = hashlib.sha256()
    while limit is None or limit > 0:
        block = handle.read(1024 * 1024 if limit is None else min(1024 * 1024, limit))
        if not block:
            break
        digest.update(block)
        if limit is not None:
            limit -= len(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    with open(path, "rb") as handle:
        return sha256_stream(handle)

TMP_MARKER = ".tmp-"
_TMP_NAME = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]+$")


def temporary_path_for(path: Path) -> Path:
    """Return a fresh temporary path next to ``path``, marked with this process's PID."""
    return path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}-{os.urandom(4).hex()}")


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def naming_write_errors(path: Path, what: str = "write") -> Iterator[None]:
    """Turn an OSError raised while writing ``path`` into a StorageError that names the file.

    A failed write() or fsync() does not say which file it was writing ("[Errno 28] No space left
    on device"); the person reading the log needs to know.
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StorageError(f"cannot {what} {path}: {reason}", errno=exc.errno, path=str(path)) from exc


@contextmanager
def atomic_writer(path: str | os.PathLike, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` when the block ends without an error.

    A crash or an error at any point leaves the old content (the temporary file is removed);
    for content too large to hold in memory, written piece by piece. ``durable=False`` skips the
    fsyncs: readers still never see a torn file, but after a power loss the old content may come
    back. For views that are rebuilt from state on every write. A failed write (a full disk) names
    ``path``.
    """
    path = Path(path)
    with naming_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path_for(path)
        try:
            with open(tmp, "wb") as handle:
                yield handle
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if durable:
            fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_bytes_synced(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (for files inside a folder that is renamed into place whole)."""
    with naming_write_errors(path), open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def copy_file_synced(source: Path, destination: Path) -> None:
    """Copy ``source`` to a new file ``destination`` in 1 MiB blocks and fsync it."""
    with open(source, "rb") as src, naming_write_errors(destination), open(destination, "wb") as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
        dst.flush()
        os.fsync(dst.fileno())


def append_bytes_synced(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` and fsync it (the caller commits the new length elsewhere).

    A failed append (a full disk) cuts the file back to its length before it at once, so the
    bytes it did write neither fill the disk nor wait for the next run to be removed; the
    StorageError raised names the file.
    """
    with naming_write_errors(path, "append to"):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                except OSError:
                    pass  # the record still commits the old length: the next run cuts the rest
                raise
        finally:
            os.close(fd)


def read_json(path: Path, default: Any = None, *, if_damaged: str | None = None) -> Any:
    """Return the JSON in ``path``, or ``default`` when the file does not exist.

    A file that is not valid JSON raises StateFileError naming it, then ``if_damaged`` (what to do).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno} column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        advice = if_damaged or "it was damaged (a full disk, or an edit by hand?): restore it from a backup"
        raise StateFileError(f"{path}: not valid JSON{where}; {advice}") from None


def read_json_or_none(path: Path) -> Any:
    """Return the JSON in ``path``, or None when it is missing, unreadable or not JSON: for views that
    show what the pipeline last wrote and must not fail because it is being rewritten or was damaged."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def append_line(path: Path, line: str) -> None:
    """Append one line to a log-like file with a single write, and fsync it (cut back if the write fails)."""
    with naming_write_errors(path, "append to"):
        path.parent.mkdir(parents=True, exist_ok=True)
    append_bytes_synced(path, (line.rstrip("\n") + "\n").encode("utf-8"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files and folders in ``folder`` left by writers that are no longer running."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if not match:
            continue
        writer = int(match.group(1))
        if writer == os.getpid() or _pid_alive(writer):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


class LockHeld(RuntimeError):
    """Another process holds the run lock."""


class RunLock:
    """An exclusive ``fcntl.flock`` on one file, held for a whole run.

    The kernel drops the lock when its holder dies, so a lock left by a killed process never blocks
    the next run. The holder's PID is written into the file for the "lock is held" message.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, *, timeout: float = 0.0) -> bool:
        """Take the lock; wait up to ``timeout`` seconds. Return False when it stayed held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder_pid(self) -> int | None:
        """Return the PID written by the current (or last) holder, if readable."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        if not self.acquire():
            raise LockHeld(f"{self.path} is held by PID {self.holder_pid() or '?'}")
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_path(config) -> Path:
    """Return the run lock shared by every script that changes the project's state."""
    return config.paths.ingested / ".run.lock"
