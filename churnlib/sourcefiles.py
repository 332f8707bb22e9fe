"""The CSV files users drop into a folder (``sourcedata/``, ``scoringdata/``): found, and told apart by
content, without reading a file that has not changed since the last look.

``scan_csv_folder`` lists a folder and returns its CSV files with their SHA-256. What it saw is kept
in a record (a dict the caller saves): ``seen`` maps each name to its signature (size, times, inode)
and hash, so a file whose signature is unchanged is not read again; ``ignored`` maps entries that are
not CSV files (hidden files, folders, FIFOs, dangling symlinks) to why, so each is logged once. A
symlink leading out of the folder, a file that cannot be read and a name that would break a line of
the logs are refused without being read, once, through the caller's ``reject``. Imports no pandas:
the cron job's no-new-data tick runs it.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from churnlib.columns import shown_name
from churnlib.fsutil import sha256_stream


# Files a repository keeps in an empty folder: ignored without a word (other hidden files are logged once).
EXPECTED_HIDDEN = frozenset({".gitkeep", ".gitignore"})


class NotARegularFile(OSError):
    """A name that held a regular file when it was scanned holds something else (a FIFO, a device) now."""


@dataclass
class FoundFile:
    """A CSV file in the folder, and its content's SHA-256."""

    name: str
    path: Path
    size: int
    sha256: str
    hashed: bool  # read by this scan: new, or changed since the last look
    modified_ns: int  # the file's modification time: files are taken oldest first


@dataclass
class FolderScan:
    files: list[FoundFile] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # refused unread (symlinks out, unreadable files)
    record_changed: bool = False


# reject(name, reason, sha256=..., size=...) -> the entry the caller recorded
Reject = Callable[..., dict]


def open_regular(path: Path) -> BinaryIO:
    """Return ``path`` opened for binary reading; raise NotARegularFile for a FIFO or device.

    Opened without blocking, so a FIFO put in place of a scanned file cannot hang the tick.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of a regular file (a FIFO or device is refused, not read)."""
    with open_regular(path) as handle:
        return sha256_stream(handle)


def unreadable_reason(st: os.stat_result) -> str:
    """Return why a file the pipeline may not read is rejected, with what to change."""
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = f"uid {st.st_uid}"
    try:
        reader = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        reader = f"uid {os.geteuid()}"
    return (f"cannot read the file: permission denied ({stat.filemode(st.st_mode)}, owner {owner}); "
            f"make it readable by {reader}, the user running the pipeline")


def signature(st: os.stat_result) -> list[int]:
    """Return what tells a changed file from an unchanged one without reading it."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _ignore_once(record: dict[str, Any], name: str, reason: str, logger: logging.Logger) -> bool:
    if record["ignored"].get(name) == reason:
        return False
    record["ignored"][name] = reason
    logger.info("ignored %s: %s", shown_name(name), reason)
    return True


def _reject_unread(scan: FolderScan, record: dict[str, Any], name: str, file_signature: list[int], reason: str,
                   *, size: int | None, reject: Reject) -> None:
    """Reject a file without reading it, once: it is not looked at again until its signature changes."""
    if record["seen"].get(name, {}).get("signature") == file_signature:
        return
    record["seen"][name] = {"signature": file_signature, "sha256": None}
    scan.rejected.append(reject(name, reason, sha256=None, size=size))
    scan.record_changed = True


def scan_csv_folder(folder: Path, record: dict[str, Any], *, reject: Reject, logger: logging.Logger,
                    kind: str = "folder") -> FolderScan:
    """Return the CSV files in ``folder`` (named ``kind`` in errors) with their SHA-256; note other entries in ``record``.

    The files come oldest modification time first, then by name. A file whose signature is unchanged
    since the last scan is not read; any other file is hashed.
    Entries that are gone are dropped from the record.
    """
    scan = FolderScan()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: {kind} does not exist") from None
    root = folder.resolve()
    present = set()
    for entry in entries:
        name = entry.name
        present.add(name)
        if name in EXPECTED_HIDDEN:
            continue  # a fresh clone's empty folder holds one: nothing to say
        if name.startswith("."):
            scan.record_changed |= _ignore_once(record, name, "hidden file", logger)
            continue
        if not name.lower().endswith(".csv"):
            scan.record_changed |= _ignore_once(record, name, "not a .csv file", logger)
            continue
        path = Path(entry.path)
        try:
            link = os.lstat(path)
        except FileNotFoundError:
            continue  # vanished since the folder was listed: nothing to read
        if shown_name(name) != name:
            # Every log line and the readable record name the file: a name that breaks them is refused.
            _reject_unread(scan, record, name, signature(link),
                           f"the file name is not printable UTF-8 text ({shown_name(name)}); rename the file; not read",
                           size=link.st_size, reject=reject)
            continue
        # realpath, not Path.resolve: a symlink loop must not raise here (it fails at os.stat below).
        target = Path(os.path.realpath(path))
        if entry.is_symlink() and not target.is_relative_to(root):
            _reject_unread(scan, record, name, signature(link),
                           f"a symlink to {target}, outside {folder.name}/; not read", size=None, reject=reject)
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if entry.is_symlink():
                scan.record_changed |= _ignore_once(record, name, f"a symlink to {target.name}, which does not exist",
                                                    logger)
            continue  # else vanished: nothing to read
        except OSError as exc:  # a symlink loop, a folder on the way without permission
            _reject_unread(scan, record, name, signature(link), f"cannot read the file: {exc.strerror}; not read",
                           size=None, reject=reject)
            continue
        if stat.S_ISDIR(st.st_mode):
            scan.record_changed |= _ignore_once(record, name, "a folder, not a file", logger)
            continue
        if not stat.S_ISREG(st.st_mode):
            scan.record_changed |= _ignore_once(record, name, "not a regular file", logger)
            continue
        record["ignored"].pop(name, None)
        file_signature = signature(st)
        seen = record["seen"].get(name)
        hashed = False
        if seen and seen["signature"] == file_signature:
            sha256 = seen["sha256"]
            if sha256 is None:
                continue  # unreadable last time and unchanged since: not retried
        else:
            try:
                sha256 = file_sha256(path)
            except FileNotFoundError:
                continue
            except PermissionError:
                _reject_unread(scan, record, name, file_signature, unreadable_reason(st), size=st.st_size,
                               reject=reject)
                continue
            except OSError as exc:  # swapped for a FIFO since the stat, an I/O error: the next tick looks again
                logger.info("%s: cannot be read now (%s), will try again next tick", name, exc.strerror or exc)
                continue
            record["seen"][name] = {"signature": file_signature, "sha256": sha256}
            scan.record_changed = hashed = True
        scan.files.append(FoundFile(name=name, path=path, size=st.st_size, sha256=sha256, hashed=hashed,
                                    modified_ns=st.st_mtime_ns))
    # Oldest first, so that feb.csv dropped after jan.csv holds the newer rows whatever the names; ties by name.
    scan.files.sort(key=lambda found: (found.modified_ns, found.name))
    for key in ("seen", "ignored"):
        for name in list(record[key]):
            if name not in present:
                del record[key][name]
                scan.record_changed = True
    return scan
