"""Ingestion: new CSV files in sourcedata/ -> ingesteddata/finaldata.csv plus the ingestion record.

How a tick works:

1. ``scan_source`` lists ``sourcedata/`` and finds the files whose content has been neither
   ingested nor rejected. A file whose size, times and inode are unchanged since the last look is
   not read again; any other file is hashed (SHA-256). This part imports no pandas, so a tick that
   finds nothing new stays fast.
2. ``ingest_files`` reads each new file, validates it against the schema and appends its rows that
   are not whole-row duplicates of anything ingested before. A bad file is rejected with its reason
   and the next file goes on. Only the new file is read: duplicates are found through a file of
   64-bit row hashes (``rowhashes.bin``), so a tick costs what the new data costs, not the history.
   A file is read in chunks (``churnlib.dataset.LABELLED_CHUNK_ROWS`` rows), each validated,
   de-duplicated and appended in turn, so a 10-million-row file needs no more memory than a chunk
   (plus 8 bytes a row of hashes); a bad row in its last chunk still refuses the whole file.

Crash safety: what is about to be appended (a chunk's rows) is written to ``append_intent.bin``
first, then rows are appended to ``finaldata.csv`` and ``rowhashes.bin``; after the file's last
chunk the record (``ingestion_record.json``, replaced atomically) is updated with their new
committed lengths. A run that starts after a crash
cuts both files back to the lengths the record names, but only when the extra bytes are the
interrupted append's own (the file's earlier chunks, by the SHA-256 the intent keeps of them,
then a prefix of the intent): a file is either wholly ingested and recorded,
or not at all and ingested again. Anything else (rows added or edited by hand, a missing record) is
refused with "changed outside the pipeline" (``churnlib.ingested.check_ingested_data``);
``python ingestion.py --accept-changes`` takes the data as it is now.

The pipeline never edits, moves or deletes anything in ``sourcedata/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.cli import run_script, script_parser
from churnlib.config import Config, ConfigError, SchemaSettings
from churnlib.columns import shown_name
from churnlib.errors import SourceReadError, in_step
from churnlib.fsutil import sha256_bytes
from churnlib.sourcefiles import open_regular, scan_csv_folder, signature, unreadable_reason
from churnlib.ingested import (
    HASHES_FILE,
    READABLE_RECORD_FILE,
    IngestedDataError,
    PendingAppend,
    check_ingested_data,
    clear_intent,
    load_record,
    save_record,
)
from churnlib import ingested as ingested_data

logger = logging.getLogger(Path(__file__).stem)  # "ingestion" whether imported or run as a script

SHOWN_IGNORED_COLUMNS = 10


@dataclass
class SourceFile:
    """A file in the source folder whose content has been neither ingested nor rejected."""

    name: str
    path: Path
    size: int
    sha256: str


@dataclass
class Scan:
    new_files: list[SourceFile] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # files refused without being read (symlinks out, unreadable)
    record_changed: bool = False


@dataclass
class IngestResult:
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    rows_added: int = 0
    seconds: float = 0.0


def _reject(record: dict[str, Any], name: str, reason: str, *, sha256: str | None, size: int | None,
            fingerprint: str | None = None) -> dict:
    entry = {"name": name, "size": size, "sha256": sha256, "reason": reason, "rejected_at": utc_now(),
             "schema_settings": fingerprint}
    record["rejected"].append(entry)
    logger.warning("rejected %s: %s", shown_name(name), reason)
    return entry


def settings_fingerprint(settings: SchemaSettings) -> str:
    """Return a short hash of the config's schema section: a rejection only stands while it is unchanged."""
    return hashlib.sha256(repr(sorted(vars(settings).items())).encode()).hexdigest()[:16]


def scan_source(source_folder: Path, record: dict[str, Any], settings: SchemaSettings) -> Scan:
    """Return the files in ``source_folder`` whose content is new; note other entries in ``record``.

    The folder is listed by ``churnlib.sourcefiles.scan_csv_folder`` (non-CSV entries ignored once,
    symlinks out and unreadable files rejected unread, unchanged files not read again). A file whose
    content was already ingested is not new, whatever its name; nor is one rejected under the same
    schema settings (after a fix to config.json's schema section, rejected files are tried again).
    Imports no pandas.
    """
    fingerprint = settings_fingerprint(settings)
    ingested = {entry["sha256"]: entry["name"] for entry in record["files"]}
    rejected = {
        entry["sha256"]: entry
        for entry in record["rejected"]
        if entry.get("sha256") and entry.get("schema_settings") == fingerprint
    }

    def reject_unread(name: str, reason: str, *, sha256: str | None, size: int | None) -> dict:
        return _reject(record, name, reason, sha256=sha256, size=size)

    found = scan_csv_folder(source_folder, record, reject=reject_unread, logger=logger, kind="source folder")
    scan = Scan(rejected=found.rejected, record_changed=found.record_changed)
    for source in found.files:
        name, sha256 = source.name, source.sha256
        if source.hashed:  # first look at this content under this name: say what it duplicates, once
            if sha256 in ingested and ingested[sha256] != name:
                logger.info("%s: same content as the already ingested %s, skipped", name, ingested[sha256])
            elif sha256 in rejected and rejected[sha256]["name"] != name:
                _reject(record, name, f"same content as the rejected {rejected[sha256]['name']}: "
                        f"{rejected[sha256]['reason']}", sha256=sha256, size=source.size, fingerprint=fingerprint)
                rejected[sha256] = record["rejected"][-1]
        if sha256 in ingested or sha256 in rejected:
            continue
        scan.new_files.append(SourceFile(name=name, path=source.path, size=source.size, sha256=sha256))
    return scan


def check_schema_matches_config(frozen: dict[str, Any] | None, settings: SchemaSettings) -> None:
    """Raise ConfigError when config.json's schema section contradicts the data already ingested."""
    if frozen is None:
        return
    problems = []
    if settings.target != frozen["target"]:
        problems.append(f"target is {settings.target!r}, the ingested data's is {frozen['target']!r}")
    if settings.feature_columns is not None and list(settings.feature_columns) != frozen["feature_columns"]:
        problems.append(f"feature_columns differ from the ingested data's {frozen['feature_columns']}")
    if settings.categorical_columns is not None and sorted(settings.categorical_columns) != sorted(frozen["categorical_columns"]):
        problems.append(f"categorical_columns differ from the ingested data's {frozen['categorical_columns']}")
    stray = [c for c in settings.id_columns if c in frozen["feature_columns"]]
    if stray:
        problems.append(f"id_columns {stray} are features of the ingested data")
    dropped = [c for c in frozen["id_columns"] if c not in settings.id_columns]
    if dropped:
        problems.append(f"id_columns no longer name {dropped}, id column(s) of the ingested data")
    if problems:
        raise ConfigError(
            "schema: " + "; ".join(problems)
            + " (the schema is frozen at the first ingest; to change it, move ingesteddata/ away and re-ingest)"
        )


def row_hashes(lines: list[str]):
    """Return one 64-bit hash per canonical row (BLAKE2b, stable across versions and machines)."""
    import numpy as np

    return np.array(
        [int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "little") for line in lines],
        dtype=np.uint64,
    )


class _HashIndex:
    """Membership test against every row hash ingested so far, built once per tick.

    The history is one sorted array (binary search, 8 bytes a row); the hashes added during the
    tick go into a set, so the k-th new file of a backlog costs what the first does instead of one
    comparison with each file before it. Past ADDED_IN_SET hashes (a large file) they are merged
    into the sorted array instead, where they cost 8 bytes a row, not the set's 60 or more.
    """

    ADDED_IN_SET = 100_000

    def __init__(self, path: Path, count: int):
        import numpy as np

        self._np = np
        history = np.fromfile(path, dtype=np.uint64, count=count) if count else np.empty(0, dtype=np.uint64)
        history.sort()
        self._sorted = history
        self._added: set[int] = set()

    def contains(self, hashes):
        np = self._np
        found = _members(self._sorted, hashes)
        if self._added:
            added = self._added
            found |= np.fromiter((value in added for value in hashes.tolist()), dtype=bool, count=len(hashes))
        return found

    def add(self, hashes) -> None:
        """Add hashes (sorted, as ``_AppendedFile.file_hashes`` keeps them; some may be known already)."""
        if len(self._added) + len(hashes) <= self.ADDED_IN_SET:
            self._added.update(hashes.tolist())
            return
        np = self._np
        if self._added:
            self._sorted = _merged(self._sorted, np.fromiter(self._added, dtype=np.uint64, count=len(self._added)))
            self._added = set()
        self._sorted = _merged(self._sorted, hashes, presorted=True)


def _members(sorted_hashes, hashes):
    """Return, for each of ``hashes``, whether it is in ``sorted_hashes`` (sorted)."""
    import numpy as np

    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=bool)
    positions = np.minimum(np.searchsorted(sorted_hashes, hashes), len(sorted_hashes) - 1)
    return sorted_hashes[positions] == hashes


@dataclass
class _AppendedFile:
    """One file's new rows appended chunk by chunk (finaldata.csv, rowhashes.bin, Parquet parts), not committed yet."""

    pending: PendingAppend
    ingested_folder: Path
    schema: Any = None
    first_batch: dict[str, Any] | None = None  # the column statistics of the first chunk's new rows
    file_statistics: dict[str, Any] | None = None  # past one chunk: those of the committed rows and these
    parts: list[dict] = field(default_factory=list)
    file_hashes: Any = None  # the sorted hashes of the file's distinct rows (those of the history among them)
    rows_read: int = 0
    rows_added: int = 0
    duplicates_in_file: int = 0
    duplicates_of_history: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: Exception | None = None  # why the whole file is refused
    sha256: str | None = None  # of the bytes read
    size: int = 0

    @property
    def bytes_added(self) -> int:
        return self.pending.lengths[ingested_data.DATA_FILE]

    def statistics_after(self, statistics: dict[str, Any] | None) -> dict[str, Any]:
        """Return the column statistics of the committed rows (``statistics``, updated) with these added."""
        if self.file_statistics is not None:
            return self.file_statistics
        # One chunk (any file of up to LABELLED_CHUNK_ROWS rows): merged as when files were read whole.
        total = statistics if statistics is not None else ingested_data.empty_statistics(self.schema)
        return ingested_data.merge_statistics(total, self.first_batch) if self.first_batch is not None else total

    def undo(self) -> None:
        """Cut finaldata.csv and rowhashes.bin back to the committed data and remove the parts written."""
        self.pending.undo()
        for part in self.parts:
            ingested_data.remove_part(self.ingested_folder, part)
        self.parts = []


def _append_file(source: SourceFile, handle, record: dict[str, Any], *, ingested_folder: Path,
                 settings: SchemaSettings, index: _HashIndex, statistics: dict[str, Any] | None) -> _AppendedFile:
    """Read, validate and de-duplicate one file a chunk at a time, appending each chunk's new rows
    (uncommitted: the caller commits them with the record); return what was appended.

    A file whose content is refused (``problem``) has what it appended undone: a bad row in its last
    chunk refuses the whole file, as when files were read whole. A failed write (OSError) or a read
    error (SourceReadError) undoes it too, and is raised. Memory holds one chunk, the sorted hashes
    of the file's distinct rows (8 bytes a row) and the history's index, whatever the file's size.
    """
    from churnlib.dataset import DatasetError, FrozenSchema, LabelledFile, SchemaGuessedWrong

    schema = FrozenSchema.from_dict(record["schema"]) if record["schema"] else None
    first_reading = None
    while True:
        reader = LabelledFile(handle, name=source.name, settings=settings, schema=schema)
        appended = _AppendedFile(pending=PendingAppend(ingested_folder, record, source=source.name),
                                 ingested_folder=ingested_folder)
        try:
            _append_chunks(reader, appended, record, index=index, statistics=statistics)
        except SchemaGuessedWrong as exc:  # a first file with text further on in a column of numbers
            appended.undo()
            first_reading, schema = reader.sha256, exc.schema
            handle.seek(0)
            continue
        except DatasetError as exc:
            appended.undo()
            appended.problem = exc
        except (OSError, SourceReadError):
            appended.undo()
            raise
        break
    appended.sha256, appended.size = reader.sha256, reader.size
    if first_reading not in (None, reader.sha256):
        appended.sha256 = None  # changed between the two readings: tried again next tick
    if appended.problem is None:
        appended.schema = reader.schema
        appended.rows_read, appended.ignored_columns, appended.notes = (reader.rows_read, reader.ignored_columns,
                                                                        reader.notes)
    return appended


def _append_chunks(reader, appended: _AppendedFile, record: dict[str, Any], *, index: _HashIndex,
                   statistics: dict[str, Any] | None) -> None:
    """Append the new rows of each chunk ``reader`` yields, noting them in ``appended``."""
    import copy

    import numpy as np

    from churnlib.dataset import canonical_lines, header_line

    ingested_folder = appended.ingested_folder
    seen_in_file = np.empty(0, dtype=np.uint64)  # the distinct hashes of the file's rows so far, sorted
    first_batch = file_statistics = None
    for chunk in reader.chunks():
        schema = reader.schema
        lines = canonical_lines(chunk.frame, schema)
        hashes = row_hashes(lines)
        _unique, first = np.unique(hashes, return_index=True)
        keep = np.zeros(len(hashes), dtype=bool)
        keep[first] = True
        keep &= ~_members(seen_in_file, hashes)  # rows of earlier chunks
        appended.duplicates_in_file += int(len(hashes) - keep.sum())
        seen_in_file = _merged(seen_in_file, hashes[keep])
        seen_before = index.contains(hashes)
        appended.duplicates_of_history += int((keep & seen_before).sum())
        keep &= ~seen_before
        new_lines = [line for line, kept in zip(lines, keep) if kept]
        text = "".join(f"{line}\n" for line in new_lines)
        if record["bytes"] == 0 and appended.bytes_added == 0:
            text = header_line(schema) + "\n" + text
        payload = text.encode("utf-8")
        kept = None
        if new_lines:
            kept = chunk.frame[keep].reset_index(drop=True)
            # The same rows in columnar form, committed with the CSV's bytes by the caller's
            # record; written first, so that a full disk fails before anything is appended.
            appended.parts.append(ingested_data.write_part(
                ingested_folder, record, ingested_data.typed_like_csv(kept.copy(), schema), schema,
                first_row=record["rows"] + appended.rows_added))
        if payload:
            appended.pending.add(payload, hashes[keep].tobytes())
        if kept is not None:
            batch = ingested_data.batch_statistics(kept, schema)
            if first_batch is None:
                first_batch = batch
            else:  # a second chunk: the file's statistics are kept apart until its commit
                if file_statistics is None:
                    file_statistics = (copy.deepcopy(statistics) if statistics is not None
                                       else ingested_data.empty_statistics(schema))
                    ingested_data.merge_statistics(file_statistics, first_batch)
                ingested_data.merge_statistics(file_statistics, batch)
            appended.rows_added += len(new_lines)
    appended.first_batch, appended.file_statistics = first_batch, file_statistics
    appended.file_hashes = seen_in_file


def _merged(sorted_hashes, more, *, presorted: bool = False):
    """Return the sorted array of ``sorted_hashes`` (sorted) and ``more`` (in any order, unless ``presorted``)."""
    import numpy as np

    if not presorted:
        more = np.sort(more)
    merged = np.concatenate([sorted_hashes, more])
    merged.sort(kind="stable")  # two sorted runs: timsort merges them in one pass
    return merged


@in_step("ingestion")
def ingest_files(
    files: list[SourceFile],
    record: dict[str, Any],
    *,
    ingested_folder: Path,
    log_folder: Path,
    settings: SchemaSettings,
) -> IngestResult:
    """Validate and append each new file's new rows; return what was accepted, rejected and deferred.

    A file is read, checked and appended a chunk at a time (``_append_file``), so memory does not
    grow with its size; it is committed whole or not at all. The record is saved after every file,
    so a crash loses at most the file being read.
    """
    started = time.perf_counter()
    result = IngestResult()
    ingested_folder.mkdir(parents=True, exist_ok=True)
    check_schema_matches_config(record["schema"], settings)
    if check_ingested_data(ingested_folder, record):
        save_record(record, ingested_folder, log_folder)
    hashes_path = ingested_folder / HASHES_FILE
    index = _HashIndex(hashes_path, record["rows"]) if files else None
    statistics = None
    if files and record["schema"] is not None:
        statistics = ingested_data.load_statistics(ingested_folder, record)
        if statistics is None:
            logger.info("%s: missing or out of step with the record; rebuilding it from the ingested data",
                        ingested_data.STATS_FILE)
            statistics = ingested_data.rebuild_statistics(ingested_folder, record)
    if files and record["rows"] and not ingested_data.parts_cover(record):
        _columnar_history_from_csv(ingested_folder, log_folder, record)
    fingerprint = settings_fingerprint(settings)
    for source in files:
        file_started = time.perf_counter()
        try:
            handle = open_regular(source.path)
        except FileNotFoundError:
            logger.info("%s: vanished before it could be read, skipped", source.name)
            continue
        except PermissionError:
            try:
                st = os.stat(source.path)
            except OSError:
                continue  # gone too: nothing to ingest or reject
            # Not read again until its permissions (ctime) change, like a file found unreadable by the scan.
            record["seen"][source.name] = {"signature": signature(st), "sha256": None}
            result.rejected.append(_reject(record, source.name, unreadable_reason(st),
                                           sha256=source.sha256, size=source.size))
            save_record(record, ingested_folder, log_folder)
            continue
        except OSError as exc:  # swapped for a FIFO or a folder since the scan, an I/O error
            logger.info("%s: cannot be read now (%s), will try again next tick", source.name, exc.strerror or exc)
            result.deferred.append(source.name)
            continue
        with handle:
            try:
                batch = _append_file(source, handle, record, ingested_folder=ingested_folder, settings=settings,
                                     index=index, statistics=statistics)
            except SourceReadError as exc:
                logger.info("%s: cannot be read now (%s), will try again next tick", source.name,
                            str(exc).removeprefix(f"{source.name}: "))
                result.deferred.append(source.name)
                continue
            size_after = os.fstat(handle.fileno()).st_size
        if batch.size != source.size or size_after != source.size or batch.sha256 != source.sha256:
            batch.undo()
            logger.info("%s: changed while being read (still being written?), will try again next tick", source.name)
            result.deferred.append(source.name)
            continue
        if batch.problem is not None:
            reason = str(batch.problem).removeprefix(f"{source.name}: ")
            result.rejected.append(_reject(record, source.name, reason, sha256=source.sha256, size=source.size,
                                           fingerprint=fingerprint))
            save_record(record, ingested_folder, log_folder)
            continue
        schema = batch.schema
        if record["schema"] is None:
            logger.info("schema frozen from %s: %s", source.name, schema.describe())
        statistics = batch.statistics_after(statistics)
        # The statistics go first; the record below commits them with the rows (load_statistics
        # refuses statistics whose data_version is not the record's).
        ingested_data.save_statistics(statistics, ingested_folder, data_version=record["data_version"] + 1)
        batch.pending.note_segment(record)
        earlier = [f for f in record["files"] if f["name"] == source.name]
        entry = {
            "name": source.name,
            "size": source.size,
            "sha256": source.sha256,
            "rows_read": batch.rows_read,
            "rows_added": batch.rows_added,
            "duplicates_in_file": batch.duplicates_in_file,
            "duplicates_of_earlier_rows": batch.duplicates_of_history,
            "ignored_columns": batch.ignored_columns,
            "notes": batch.notes,
            "first_row": record["rows"],
            "first_byte": record["bytes"],
            "ingested_at": utc_now(),
            "seconds": round(time.perf_counter() - file_started, 4),
        }
        if earlier:  # new content under the name of a file ingested before: both are kept
            entry["replaces"] = {"sha256": earlier[-1]["sha256"], "ingested_at": earlier[-1]["ingested_at"]}
        record["schema"] = schema.to_dict()
        if batch.parts:
            record.setdefault("parts", []).extend(batch.parts)
        record["bytes"] += batch.bytes_added
        record["rows"] += batch.rows_added
        record["data_version"] += 1
        record["files"].append(entry)
        save_record(record, ingested_folder, log_folder)  # the commit
        clear_intent(ingested_folder)
        index.add(batch.file_hashes)  # a membership test: the history's own hashes among them change nothing
        result.accepted.append(entry)
        result.rows_added += batch.rows_added
        extras = []
        if batch.duplicates_in_file or batch.duplicates_of_history:
            extras.append(f"{batch.duplicates_in_file} duplicate rows within the file, "
                          f"{batch.duplicates_of_history} already ingested")
        if earlier:
            extras.append(f"new content under the name of a file ingested at {earlier[-1]['ingested_at']}; "
                          "the rows of both are kept")
        if batch.ignored_columns:
            extras.append(f"extra columns ignored: {_some(batch.ignored_columns, SHOWN_IGNORED_COLUMNS)}")
        extras += batch.notes
        logger.info(
            "ingested %s: %d rows read, %d added%s (sha256 %s)",
            source.name, batch.rows_read, batch.rows_added,
            f"; {'; '.join(extras)}" if extras else "", source.sha256[:12],
        )
    result.seconds = round(time.perf_counter() - started, 4)
    if result.accepted or result.rejected:
        record["last_ingest"] = {
            "at": utc_now(),
            "seconds": result.seconds,
            "files_accepted": len(result.accepted),
            "files_rejected": len(result.rejected),
            "rows_added": result.rows_added,
        }
        save_record(record, ingested_folder, log_folder)
    return result


def _columnar_history_from_csv(ingested_folder: Path, log_folder: Path, record: dict[str, Any]) -> None:
    """Write one Parquet part of every committed row of finaldata.csv and commit it: once, for data
    ingested before the parts existed (or after they were accepted away)."""
    frame, schema, _fingerprint = ingested_data.read_ingested_data(ingested_folder, record)
    part = ingested_data.write_part(ingested_folder, record, frame, schema, first_row=0)
    record["parts"] = [part]  # the data is unchanged: its version (and its statistics) stay
    save_record(record, ingested_folder, log_folder)
    logger.info("%s: the %d rows ingested before the Parquet parts existed written as %s",
                ingested_data.PARTS_FOLDER, len(frame), part["file"])


def _some(names: list[str], limit: int) -> str:
    """Return the first ``limit`` names joined, and how many more there are (one log line, not 10,000 names)."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def ingest_scanned(config: Config, record: dict[str, Any], scan: Scan) -> IngestResult:
    """Ingest the new files a scan found and save what the scan noted; the caller holds the run lock."""
    result = ingest_files(
        scan.new_files,
        record,
        ingested_folder=config.paths.ingested,
        log_folder=config.paths.logs,
        settings=config.schema,
    )
    if scan.record_changed and not (result.accepted or result.rejected):
        save_record(record, config.paths.ingested, config.paths.logs)
    result.rejected[:0] = scan.rejected  # refused by the scan, unread: rejected all the same
    return result


def run_ingestion(config: Config, record: dict[str, Any] | None = None) -> IngestResult:
    """Scan the source folder and ingest what is new; the caller holds the run lock."""
    record = load_record(config.paths.ingested) if record is None else record
    return ingest_scanned(config, record, scan_source(config.paths.source, record, config.schema))


def accept_changes(ingested_folder: Path, log_folder: Path) -> dict[str, Any]:
    """Take finaldata.csv as it is now (after an edit by hand, or a record restored from a release); return what changed.

    The file must still read as the ingested data (its header, a value of the right type in every
    cell); it is rewritten in canonical form when the edit wrote a value another way. The record's
    row count, length and checksums, and rowhashes.bin, are derived from it anew. Rows already
    judged by a tick stay judged (by count), so rows added at the end are checked by the next tick.
    """
    import io

    import numpy as np

    from churnlib.dataset import canonical_lines, header_line, read_canonical_csv
    from churnlib.fsutil import atomic_write_bytes, atomic_write_json, read_json
    from churnlib.ingested import DATA_FILE, DECISION_STATE_FILE, data_signature, frozen_schema

    record = load_record(ingested_folder)
    schema = frozen_schema(record)
    path = ingested_folder / DATA_FILE
    if schema is None:
        raise IngestedDataError(f"{ingested_folder / 'ingestion_record.json'}: nothing ingested yet, nothing to accept")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IngestedDataError(f"{path}: missing; restore it from a backup, or move {ingested_folder.name}/ "
                                "away to ingest the source folder anew") from None
    header = header_line(schema)
    found = data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")
    if found != header:
        raise IngestedDataError(f"{path}: the first line is {shown_name(found)!r}, not the header {header!r}; "
                                "fix it, then accept again")
    try:
        frame = read_canonical_csv(io.BytesIO(data), schema)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestedDataError(f"{path}: cannot be read as the ingested data ({str(exc).splitlines()[0]}); "
                                "fix it, then accept again") from None
    lines = canonical_lines(frame, schema)
    canonical = (header + "\n" + "".join(f"{line}\n" for line in lines)).encode("utf-8")
    hashes = row_hashes(lines)
    rewritten = canonical != data
    if rewritten:
        atomic_write_bytes(path, canonical)
    atomic_write_bytes(ingested_folder / HASHES_FILE, hashes.tobytes())
    clear_intent(ingested_folder)
    now = utc_now()
    summary = {"at": now, "rows_before": record["rows"], "rows": len(lines), "bytes_before": record["bytes"],
               "bytes": len(canonical), "rewritten_in_canonical_form": rewritten,
               "duplicate_rows": int(len(hashes) - len(np.unique(hashes)))}
    record.update(rows=len(lines), bytes=len(canonical), data_version=record["data_version"] + 1)
    record["segments"] = [{"start": 0, "end": len(canonical), "sha256": sha256_bytes(canonical),
                           "source": f"the data accepted as it was at {now}"}]
    record["data_signature"] = data_signature(path, len(canonical))
    record.setdefault("accepted_changes", []).append(summary)
    # The columnar history of the data as accepted: one part, listed instead of the old ones (which
    # the next check removes, as parts no commit lists).
    record["parts"] = [ingested_data.write_part(ingested_folder, record, frame, schema, first_row=0)]
    # The column statistics of the data as accepted, first: the record below commits them with it,
    # so that the API answers /summarystats from them without reading the data.
    statistics = ingested_data.merge_statistics(ingested_data.empty_statistics(schema),
                                                ingested_data.batch_statistics(frame, schema))
    ingested_data.save_statistics(statistics, ingested_folder, data_version=record["data_version"])
    save_record(record, ingested_folder, log_folder)
    state = read_json(ingested_folder / DECISION_STATE_FILE, if_damaged="delete it, then accept again")
    if isinstance(state, dict) and "evaluated_rows" in state:
        rows = min(int(state["evaluated_rows"]), len(lines))
        offset = 0 if rows == 0 else len(header) + 1 + sum(len(line.encode("utf-8")) + 1 for line in lines[:rows])
        atomic_write_json(ingested_folder / DECISION_STATE_FILE,
                          {**state, "evaluated_rows": rows, "evaluated_bytes": offset, "at": now})
    logger.warning("accepted %s as it is now: %d rows (the record had %d)%s", DATA_FILE, len(lines),
                   summary["rows_before"], "; rewritten in canonical form" if rewritten else "")
    return summary


def _main(config: Config, args) -> int:
    if args.accept_changes:
        summary = accept_changes(config.paths.ingested, config.paths.logs)
        print(f"accepted {config.paths.ingested.name}/finaldata.csv as it is now: {summary['rows']:,} rows "
              f"(the record had {summary['rows_before']:,}), {summary['bytes']:,} bytes"
              + ("; rewritten in canonical form" if summary["rewritten_in_canonical_form"] else "")
              + (f"; {summary['duplicate_rows']:,} rows are duplicates" if summary["duplicate_rows"] else ""))
        return 0
    result = run_ingestion(config)
    print(
        f"{len(result.accepted)} file(s) ingested, {result.rows_added} rows added; "
        f"{len(result.rejected)} rejected; {len(result.deferred)} deferred. "
        f"Record: {config.paths.logs / READABLE_RECORD_FILE}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = script_parser(
        "Ingest new CSV files from the source folder into ingesteddata/finaldata.csv, "
        "rejecting bad files with a reason (see logs/ingestion_record.txt).",
    )
    parser.add_argument("--accept-changes", action="store_true",
                        help="take ingesteddata/finaldata.csv as it is now, after a change made outside the pipeline "
                             "(an edit by hand, a record restored from a release): the record's counts and checksums "
                             "and the duplicate index are derived from it anew")
    return run_script(parser, argv, "ingestion", _main, lock=True)


if __name__ == "__main__":
    sys.exit(main())
