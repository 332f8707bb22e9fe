"""The ingested data and its record: what every step reads, and only ingestion.py writes.

``ingesteddata/`` holds ``finaldata.csv`` (every accepted row, de-duplicated, in canonical form),
``rowhashes.bin`` (one 64-bit hash per row, for de-duplication), ``ingestion_record.json`` (every
file ingested or rejected, and the committed lengths of the two data files) and
``ingestedfiles.txt``; ``logs/ingestion_record.txt`` is the record as a table for people.

Beside it, ``finaldata.parquet/`` holds the same rows in columnar form, one Parquet part per accepted
batch (``part-<data version>-<first row>.parquet``; a file larger than one chunk gets one a chunk), which retraining reads (ten times faster than the CSV) and a
Dask cluster's workers can read. A part is written before the record that commits its rows and
lists it (``parts``: file, first row, rows, size, SHA-256), so a crash leaves a part no record
lists, which the next check removes: the parts and the CSV are committed and rolled back together.
Data ingested before the parts existed gets one part of all its rows at the next ingest.

Only the committed part of ``finaldata.csv`` (the record's ``bytes``) is ever read: bytes past it
belong to an ingest that has not finished. Loading the record imports no pandas (the cron fast path
reads it); reading the rows does.

Nothing is lost by a mistake made on these files by hand:

- Before rows are appended, the bytes about to be appended are written to ``append_intent.bin``.
  A large file is appended a chunk at a time: the intent then holds the chunk about to be appended
  and the SHA-256 of the chunks of the same file appended before it. Recovery after a crash cuts
  only bytes that start where the record's committed data ends and are those earlier chunks (by
  their SHA-256) followed by a prefix of the intent: the pipeline's own uncommitted append. Any
  other extra bytes are refused as a change made outside the pipeline, never cut.
- The record keeps a SHA-256 of each appended range (``segments``) and cheap signs of the file as
  the pipeline left it (``data_signature``: size, modification time, SHA-256 of the last 64 KiB).
  Every tick compares the signs, which costs a stat and a 64 KiB read; only when they disagree is
  the whole file checked against the segments. A change is refused with "changed outside the
  pipeline", and ``python ingestion.py --accept-changes`` or a restore from a backup resolves it.
- A missing record next to ingested data stops the tick: the record is what says which rows are
  committed, and rebuilding it from ``sourcedata/`` would drop the rows of files no longer there.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.columns import MISSING_CATEGORY, shown_name
from churnlib.errors import ChurnError
from churnlib.fsutil import (
    append_bytes_synced,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    sha256_bytes,
    sha256_stream,
)

logger = logging.getLogger("ingestion")  # what it logs belongs to the ingestion step

RECORD_FILE = "ingestion_record.json"
DATA_FILE = "finaldata.csv"
HASHES_FILE = "rowhashes.bin"
INGESTED_LIST_FILE = "ingestedfiles.txt"
READABLE_RECORD_FILE = "ingestion_record.txt"  # in logs/
INTENT_FILE = "append_intent.bin"
PARTS_FOLDER = "finaldata.parquet"
DECISION_STATE_FILE = "decision_state.json"  # fullprocess.py's: how far into the data decisions are complete
RECORD_FORMAT = 1
TAIL_BYTES = 64 * 1024
ACCEPT_COMMAND = "python ingestion.py --accept-changes"
HOW_TO_RESOLVE = (f"restore it from a backup, or accept the data as it is now with `{ACCEPT_COMMAND}` "
                  "(docs/operations.md: \"Changed outside the pipeline\")")


class IngestedDataError(ChurnError):
    """The ingested data does not match its record: it was changed outside the pipeline."""


class NoIngestedData(IngestedDataError):
    """Nothing has been ingested yet."""


class ChangedOutsidePipeline(IngestedDataError):
    """finaldata.csv or rowhashes.bin differs from what the pipeline wrote; the message says how to resolve it."""


def empty_record() -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "schema": None,
        "rows": 0,
        "bytes": 0,
        "data_version": 0,
        "updated_at": None,
        "last_ingest": None,
        "files": [],
        "rejected": [],
        "ignored": {},
        "seen": {},
    }


def _restore_record_advice(ingested_folder: Path) -> str:
    return (f"restore {RECORD_FILE} from a backup, or copy the newest release's copy "
            f"(<deployment folder>/releases/<id>/{RECORD_FILE}) into {ingested_folder.name}/ and run "
            f"`{ACCEPT_COMMAND}`; to start over from the source folder instead, move {ingested_folder.name}/ away "
            "(rows of files no longer in the source folder are then lost)")


def load_record(ingested_folder: Path) -> dict[str, Any]:
    """Return the ingestion record, or an empty one before the first ingest.

    A record missing next to ingested data is an error, never an empty record: it would make every
    ingested row look uncommitted.
    """
    path = ingested_folder / RECORD_FILE
    record = read_json(path, if_damaged="it was damaged (a full disk, or an edit by hand?): "
                                        + _restore_record_advice(ingested_folder))
    if record is None:
        data = ingested_folder / DATA_FILE
        try:
            size = data.stat().st_size
        except FileNotFoundError:
            size = 0
        if size:
            raise IngestedDataError(
                f"{path}: missing, but {data} holds {size:,} bytes of ingested rows; without the record the "
                "pipeline cannot tell which rows are committed, and will not guess: " + _restore_record_advice(ingested_folder)
            )
        return empty_record()
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise IngestedDataError(f"{path}: unknown record format {found!r}; " + _restore_record_advice(ingested_folder))
    return record


# --- appending rows, and telling the pipeline's own uncommitted bytes from changes made by hand ---


def data_signature(path: Path, committed: int) -> dict[str, Any]:
    """Return the cheap signs of finaldata.csv as the pipeline left it: size, mtime, SHA-256 of the last 64 KiB."""
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        start = max(0, committed - TAIL_BYTES)
        handle.seek(start)
        tail = handle.read(committed - start)
    return {"bytes": committed, "mtime_ns": st.st_mtime_ns, "tail_sha256": sha256_bytes(tail)}


class PendingAppend:
    """Rows appended to finaldata.csv and their hashes to rowhashes.bin piece by piece (a large file a
    chunk at a time), not committed yet.

    Before each piece, the intent (``append_intent.bin``) names it: its bytes, where it goes, and
    the SHA-256 of the pieces of the same append before it; so a crash mid-append leaves bytes that
    recovery can prove are the pipeline's own, while the intent holds one piece, not the whole
    file. The caller commits by calling ``note_segment``, adding the rows and bytes to the record and
    saving it, then ``clear_intent``; ``undo`` cuts both files back to where the append started.
    """

    def __init__(self, ingested_folder: Path, record: dict[str, Any], *, source: str):
        self.folder = ingested_folder
        self.source = source
        self.at = utc_now()
        self.starts = {DATA_FILE: record["bytes"], HASHES_FILE: record["rows"] * 8}
        self.lengths = {DATA_FILE: 0, HASHES_FILE: 0}
        self.digests = {DATA_FILE: hashlib.sha256(), HASHES_FILE: hashlib.sha256()}

    def add(self, data: bytes, hashes: bytes) -> None:
        """Append one piece to both files (synced); on a failure (a full disk) undo the whole append and raise."""
        header: dict[str, Any] = {"source": self.source, "at": self.at}
        for name, piece in ((DATA_FILE, data), (HASHES_FILE, hashes)):
            header[name] = {"start": self.starts[name] + self.lengths[name], "length": len(piece)}
            if self.lengths[name]:
                header[name]["after"] = {"start": self.starts[name], "length": self.lengths[name],
                                         "sha256": self.digests[name].hexdigest()}
        try:
            atomic_write_bytes(self.folder / INTENT_FILE, json.dumps(header).encode() + b"\n" + data + hashes)
            for name, piece in ((DATA_FILE, data), (HASHES_FILE, hashes)):
                append_bytes_synced(self.folder / name, piece)  # cut back by itself when it fails
                self.lengths[name] += len(piece)
                self.digests[name].update(piece)
        except OSError:
            # A failed append is undone at once, intent included: nothing it wrote is left taking
            # space until the next run.
            self.undo()
            raise

    def undo(self) -> None:
        """Cut both files back to where the append started, and remove the intent."""
        for name, start in self.starts.items():
            path = self.folder / name
            if path.exists() and path.stat().st_size > start:
                _truncate(path, start)
        self.lengths = {DATA_FILE: 0, HASHES_FILE: 0}
        clear_intent(self.folder)

    def note_segment(self, record: dict[str, Any]) -> None:
        """Note the appended range of finaldata.csv and the file's new signs in ``record`` (about to be committed)."""
        if not self.lengths[DATA_FILE]:
            return
        start = self.starts[DATA_FILE]
        end = start + self.lengths[DATA_FILE]
        record.setdefault("segments", []).append(
            {"start": start, "end": end, "sha256": self.digests[DATA_FILE].hexdigest(), "source": self.source})
        record["data_signature"] = data_signature(self.folder / DATA_FILE, end)


def append_rows(ingested_folder: Path, record: dict[str, Any], data: bytes, hashes: bytes, *, source: str) -> None:
    """Append rows to finaldata.csv and their hashes to rowhashes.bin in one piece; note the new segment in ``record``.

    The caller commits by adding the rows and bytes to the record and saving it, then calls ``clear_intent``.
    """
    pending = PendingAppend(ingested_folder, record, source=source)
    pending.add(data, hashes)
    pending.note_segment(record)


def clear_intent(ingested_folder: Path) -> None:
    """Remove the intent of an append that is committed (or was cut back)."""
    (ingested_folder / INTENT_FILE).unlink(missing_ok=True)


def _read_intent(ingested_folder: Path) -> tuple[dict[str, Any], bytes] | None:
    try:
        raw = (ingested_folder / INTENT_FILE).read_bytes()
        head, _, payload = raw.partition(b"\n")
        header = json.loads(head)
        return header, payload
    except (OSError, ValueError):
        return None


def _truncate(path: Path, length: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(length)
        handle.flush()
        os.fsync(handle.fileno())


def _cut_own_uncommitted(ingested_folder: Path, name: str, committed: int, size: int) -> None:
    """Cut the bytes of ``name`` past ``committed`` when they are the pipeline's own uncommitted append; else refuse."""
    path = ingested_folder / name
    intent = _read_intent(ingested_folder)
    if intent is not None:
        header, payload = intent
        part = header.get(name) or {}
        offset = 0 if name == DATA_FILE else header.get(DATA_FILE, {}).get("length", 0)
        intended = payload[offset: offset + part.get("length", 0)]
        # The pieces of the same append before this one (a large file is appended a chunk at a time).
        before = part.get("after") or {"start": part.get("start"), "length": 0, "sha256": None}
        piece = part.get("start")
        if (before.get("start") == committed and piece == committed + before.get("length", -1)
                and piece <= size <= piece + len(intended)
                and (before["sha256"] is None or _range_sha256(path, committed, piece) == before["sha256"])):
            with open(path, "rb") as handle:
                handle.seek(piece)
                extra = handle.read(size - piece)
            if extra == intended[: len(extra)]:
                logger.warning("%s: cutting %d uncommitted bytes left by an ingest of %s interrupted at %s",
                               name, size - committed, header.get("source"), header.get("at"))
                _truncate(path, committed)
                return
    raise ChangedOutsidePipeline(
        f"{path}: {size - committed:,} bytes after the {committed:,} the ingestion record commits, which no "
        f"interrupted ingest of the pipeline's own wrote: it was changed outside the pipeline (rows added by hand?); "
        + HOW_TO_RESOLVE)


def _range_sha256(path: Path, start: int, end: int) -> str:
    """Return the SHA-256 of bytes [start, end) of a file, read a block at a time."""
    with open(path, "rb") as handle:
        handle.seek(start)
        return sha256_stream(handle, end - start)


def _changed_segments(path: Path, segments: list[dict[str, Any]], committed: int) -> list[str]:
    """Return the appended ranges of finaldata.csv whose bytes differ from what the pipeline wrote."""
    changed = []
    position = 0
    with open(path, "rb") as handle:
        for segment in segments:
            if segment["start"] != position:
                changed.append(f"bytes {position:,}-{segment['start']:,} (not written by the pipeline)")
            handle.seek(segment["start"])
            if sha256_bytes(handle.read(segment["end"] - segment["start"])) != segment["sha256"]:
                changed.append(f"bytes {segment['start']:,}-{segment['end']:,} (the rows from {segment['source']})")
            position = segment["end"]
    if position != committed:
        changed.append(f"bytes {position:,}-{committed:,} (not written by the pipeline)")
    return changed


def check_ingested_data(ingested_folder: Path, record: dict[str, Any]) -> bool:
    """Check finaldata.csv and rowhashes.bin against the record; return True when the record was updated.

    The pipeline's own uncommitted append is cut. On a normal tick the check costs two stats and a
    64 KiB read; the whole file is read only when those signs disagree with the record (a new
    modification time, say), and the record's signs are then updated if the content is unchanged.
    Anything else raises ChangedOutsidePipeline, saying what changed and how to resolve it. Imports
    no pandas.
    """
    committed = {DATA_FILE: record["bytes"], HASHES_FILE: record["rows"] * 8}
    for name, length in committed.items():
        path = ingested_folder / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size > length:
            _cut_own_uncommitted(ingested_folder, name, length, size)
        elif size < length:
            what = "missing" if not path.exists() else f"{size:,} bytes"
            raise ChangedOutsidePipeline(
                f"{path}: {what}, shorter than the {length:,} the ingestion record commits: it was changed outside "
                "the pipeline; " + HOW_TO_RESOLVE)
    clear_intent(ingested_folder)
    parts_changed = check_parts(ingested_folder, record)
    data = ingested_folder / DATA_FILE
    if record["bytes"] == 0:
        return parts_changed
    if record.get("segments") is None or record.get("data_signature") is None:
        # A record written before these checks existed: take the data as it is, once.
        with open(data, "rb") as handle:
            whole = handle.read(record["bytes"])
        record["segments"] = [{"start": 0, "end": len(whole), "sha256": sha256_bytes(whole), "source": "earlier ingests"}]
        record["data_signature"] = data_signature(data, record["bytes"])
        logger.info("%s: checksums recorded for the first time", DATA_FILE)
        return True
    signature = data_signature(data, record["bytes"])
    if signature == record["data_signature"]:
        return parts_changed
    changed = _changed_segments(data, record["segments"], record["bytes"])
    if changed:
        shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise ChangedOutsidePipeline(
            f"{data}: changed outside the pipeline: {shown} differ from what the pipeline wrote; " + HOW_TO_RESOLVE)
    logger.info("%s: modified since the last ingest, but its content is what the pipeline wrote", DATA_FILE)
    record["data_signature"] = signature
    return True


# --- the columnar history: one Parquet part per accepted batch --------------------------------


def _part_signature(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_part(ingested_folder: Path, record: dict[str, Any], frame, schema, *, first_row: int) -> dict[str, Any]:
    """Write ``frame`` (rows typed by ``schema``, as read back from finaldata.csv) as the Parquet part
    of the commit about to be made; return its entry for the record's ``parts`` (the caller lists it
    in the record it saves: until then the part is uncommitted, and removed by the next check)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churnlib.fsutil import atomic_writer

    # Named by the commit to come and the first row: never the name of a part a commit lists.
    name = f"part-{record['data_version'] + 1:06d}-{first_row}.parquet"
    path = ingested_folder / PARTS_FOLDER / name
    table = pa.Table.from_pandas(frame[list(schema.columns)], schema=_arrow_schema(schema), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    with atomic_writer(path) as handle:
        handle.write(data)
    return {"file": name, "first_row": int(first_row), "rows": int(len(frame)), "sha256": sha256_bytes(data),
            **_part_signature(path)}


def remove_part(ingested_folder: Path, part: dict[str, Any]) -> None:
    """Remove a part no commit lists (its append failed)."""
    (ingested_folder / PARTS_FOLDER / part["file"]).unlink(missing_ok=True)


def _arrow_schema(schema):
    import pyarrow as pa

    fields = []
    for column in schema.columns:
        if column == schema.target:
            fields.append(pa.field(column, pa.int64(), nullable=False))
        elif column in schema.numeric_columns:
            fields.append(pa.field(column, pa.float64()))
        else:
            fields.append(pa.field(column, pa.string()))
    return pa.schema(fields)


def parts_cover(record: dict[str, Any]) -> bool:
    """Return whether the record's Parquet parts hold every committed row (else the CSV is read)."""
    parts = record.get("parts")
    return bool(parts) and sum(part["rows"] for part in parts) == record["rows"]


def part_paths(ingested_folder: Path, record: dict[str, Any]) -> list[Path]:
    """Return the committed parts' paths, in row order."""
    return [ingested_folder / PARTS_FOLDER / part["file"] for part in record.get("parts") or []]


def check_parts(ingested_folder: Path, record: dict[str, Any]) -> bool:
    """Check the Parquet parts against the record; return True when the record's signs were updated.

    A part whose size or modification time differs is hashed: a different content raises
    ChangedOutsidePipeline. Parts no record lists (an ingest interrupted before its commit) are removed.
    """
    from churnlib.fsutil import remove_stale_temporaries

    folder = ingested_folder / PARTS_FOLDER
    listed = {part["file"] for part in record.get("parts") or []}
    if folder.is_dir():
        remove_stale_temporaries(folder)
        for path in sorted(folder.glob("part-*.parquet")):
            if path.name not in listed:
                logger.warning("%s/%s: removing a part no commit lists (left by an interrupted ingest)",
                               PARTS_FOLDER, path.name)
                path.unlink(missing_ok=True)
    updated = False
    for part in record.get("parts") or []:
        path = folder / part["file"]
        try:
            signature = _part_signature(path)
        except FileNotFoundError:
            raise ChangedOutsidePipeline(f"{path}: missing, but the ingestion record commits its {part['rows']:,} rows: "
                                         "it was changed outside the pipeline; " + HOW_TO_RESOLVE) from None
        if signature == {"bytes": part["bytes"], "mtime_ns": part["mtime_ns"]}:
            continue
        from churnlib.fsutil import sha256_file

        if signature["bytes"] != part["bytes"] or sha256_file(path) != part["sha256"]:
            raise ChangedOutsidePipeline(f"{path}: changed outside the pipeline (its content is not what the "
                                         "pipeline wrote); " + HOW_TO_RESOLVE)
        part.update(signature)
        updated = True
    return updated


def read_parts(ingested_folder: Path, record: dict[str, Any], schema, *, columns: list[str] | None = None):
    """Return the committed rows read from the Parquet parts, typed exactly as read_canonical_csv types them."""
    import pyarrow.parquet as pq

    frame = pq.ParquetDataset([str(path) for path in part_paths(ingested_folder, record)]).read(
        columns=columns).to_pandas(types_mapper=None)
    return typed_like_csv(frame, schema)


def typed_like_csv(frame, schema):
    """Return ``frame`` with the dtypes read_canonical_csv gives: text columns as objects holding str or
    NaN (scikit-learn's imputers see NaN as missing, not None), numbers float64, the target int64."""
    import numpy as np

    for column in frame.columns:
        if column == schema.target:
            frame[column] = frame[column].astype(np.int64)
        elif column in schema.numeric_columns:
            frame[column] = frame[column].astype(np.float64)
        else:  # an empty text reads back from the CSV as missing, so it is missing here too
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna() & (values != ""), np.nan)
    return frame


def save_record(record: dict[str, Any], ingested_folder: Path, log_folder: Path) -> None:
    """Write the record atomically, then its readable forms (ingestedfiles.txt, logs/ingestion_record.txt)."""
    record["updated_at"] = utc_now()
    atomic_write_json(ingested_folder / RECORD_FILE, record)
    # The readable views are rebuilt from the record on every save, so they need no fsync.
    atomic_write_text(ingested_folder / INGESTED_LIST_FILE, "".join(f"{f['name']}\n" for f in record["files"]),
                      durable=False)
    atomic_write_text(log_folder / READABLE_RECORD_FILE, readable_record(record), durable=False)


def readable_record(record: dict[str, Any]) -> str:
    """Return the record as a plain-text table for people reading logs/."""
    lines = [
        f"Ingestion record, updated {record['updated_at']}: {record['rows']} rows in "
        f"{len(record['files'])} file(s), {len(record['rejected'])} file(s) rejected.",
        "",
        "INGESTED",
        f"{'time':<21} {'file':<32} {'bytes':>10} {'read':>8} {'added':>8}  sha256",
    ]
    for entry in record["files"]:
        name = entry["name"]
        if entry.get("replaces"):
            name += f" (new content; replaces the file ingested {entry['replaces']['ingested_at']})"
        lines.append(
            f"{entry['ingested_at']:<21} {name:<32} {entry['size']:>10} "
            f"{entry['rows_read']:>8} {entry['rows_added']:>8}  {entry['sha256'][:16]}"
        )
    lines += ["", "REJECTED", f"{'time':<21} {'file':<32} reason"]
    for entry in record["rejected"]:
        lines.append(f"{entry['rejected_at']:<21} {shown_name(entry['name']):<32} {entry['reason']}")
    if record["ignored"]:
        lines += ["", "IGNORED (not CSV files)"]
        lines += [f"{shown_name(name):<32} {reason}" for name, reason in sorted(record["ignored"].items())]
    return "\n".join(lines) + "\n"


def frozen_schema(record: dict[str, Any]):
    """Return the record's frozen schema, or None before the first file was accepted."""
    from churnlib.dataset import FrozenSchema

    return None if record["schema"] is None else FrozenSchema.from_dict(record["schema"])


def read_ingested_data(ingested_folder: Path, record: dict[str, Any] | None = None):
    """Return the committed ingested rows (a DataFrame), their schema, and the data's fingerprint.

    ``record`` is the ingestion record when the caller has it already (read once, so the rows and
    the data version it reports belong together). Raises NoIngestedData before the first ingest.
    """
    from churnlib.dataset import read_canonical_csv

    record = load_record(ingested_folder) if record is None else record
    schema = frozen_schema(record)
    if schema is None or record["rows"] == 0:
        raise NoIngestedData(f"{ingested_folder / DATA_FILE}: no ingested data yet")
    with open(ingested_folder / DATA_FILE, "rb") as handle:
        data = handle.read(record["bytes"])
    columnar = parts_cover(record)
    if columnar:  # the same rows, typed the same way, read ten times faster
        frame = read_parts(ingested_folder, record, schema)
    else:
        frame = read_canonical_csv(io.BytesIO(data), schema)
    fingerprint = {
        "file": DATA_FILE,
        "read_from": PARTS_FOLDER if columnar else DATA_FILE,
        "rows": int(len(frame)),
        "bytes": len(data),
        "sha256": sha256_bytes(data),
        "data_version": record["data_version"],
        "class_counts": {str(k): int(v) for k, v in frame[schema.target].value_counts().sort_index().items()},
    }
    return frame, schema, fingerprint


def ingested_fingerprint(ingested_folder: Path, record: dict[str, Any], class_counts: dict[str, int]) -> dict[str, Any]:
    """Return the fingerprint ``read_ingested_data`` gives, without reading the rows: the CSV's committed
    bytes hashed in blocks, the class counts computed elsewhere (on a Dask cluster's workers)."""
    with open(ingested_folder / DATA_FILE, "rb") as handle:
        sha256 = sha256_stream(handle, record["bytes"])
    return {"file": DATA_FILE, "read_from": PARTS_FOLDER, "rows": int(record["rows"]), "bytes": int(record["bytes"]),
            "sha256": sha256, "data_version": record["data_version"],
            "class_counts": {str(k): int(v) for k, v in sorted(class_counts.items())}}


class FrameHistory:
    """The ingested rows a retrain works on, held in this process as one pandas frame (the local engine).

    The dask engine's equal, ``churnlib.engine.ClusterHistory``, answers the same questions with the
    rows left on its workers; the retrain and the window choice ask only these.
    """

    def __init__(self, frame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def rows(self, first: int, last: int):
        """Return rows [first, last) as training takes them (here, a slice of the frame)."""
        return self.frame.iloc[first:last]

    def pandas(self, first: int, last: int):
        """Return rows [first, last) as a pandas frame in this process (meant for a few rows)."""
        return self.frame.iloc[first:last]

    def both_classes(self, first: int, last: int, target: str) -> bool:
        return self.frame.iloc[first:last][target].nunique() == 2

    def class_counts(self, first: int, last: int, target: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.frame.iloc[first:last][target].value_counts().sort_index().items()}

    def reference(self, first: int, last: int, size: int, seed: int):
        """Return what a drift reference of ``size`` rows is drawn from: here rows [first, last) (the
        draw is ``training.reference_sample``'s, in ``save_trained``)."""
        return self.frame.iloc[first:last]

    def for_search(self, first: int, last: int, seed: int):
        """Return the rows ``model.search`` searches on: here all of [first, last)."""
        return self.frame.iloc[first:last]


def read_ingested_rows(ingested_folder: Path, schema, *, start: int, end: int):
    """Return the rows stored in bytes [start, end) of finaldata.csv (start is a row boundary)."""
    from churnlib.dataset import read_canonical_tail

    return read_canonical_tail(ingested_folder / DATA_FILE, schema, start=start, end=end)


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# --- column statistics kept up to date at ingestion ---------------------------------------------
#
# ``column_stats.json`` beside the record holds, for the committed rows, what the API's
# /summarystats and the diagnostics need, so that nothing reads the whole ingested data to answer:
#
# - every column: its missing values;
# - numeric columns: count, mean and the sum of squared deviations (merged batch by batch with
#   Chan et al.'s update, which stays exact where a running sum of squares loses digits), min, max,
#   and for the median either the exact count of each distinct value (while a column has at most
#   EXACT_MEDIAN_MAX_VALUES of them) or, beyond, a log-bucket quantile sketch (DDSketch) whose
#   quantiles are within SKETCH_RELATIVE_ACCURACY of the true value, relatively;
# - categorical columns: each category's rows and churners (at most MAX_CATEGORIES categories;
#   later ones are counted together as "(other)");
# - the target: rows of each class.
#
# Ingestion writes the file before the record that commits the rows; a file whose data_version is
# not the record's (a crash in between, or data ingested before this file existed) is rebuilt from
# the committed data by the next ingest.

STATS_FILE = "column_stats.json"
STATS_FORMAT = 1
EXACT_MEDIAN_MAX_VALUES = 2_000
SKETCH_RELATIVE_ACCURACY = 0.01
SKETCH_MAX_BUCKETS = 4_096
MAX_CATEGORIES = 1_000
OTHER_CATEGORY = "(other)"


def empty_statistics(schema) -> dict[str, Any]:
    """Return the statistics of no rows for ``schema`` (a FrozenSchema)."""
    return {
        "format": STATS_FORMAT, "data_version": 0, "rows": 0,
        "missing": {column: 0 for column in schema.columns},
        "numeric": {column: {"count": 0, "mean": 0.0, "m2": 0.0, "min": None, "max": None, "values": {},
                             "sketch": None} for column in schema.numeric_columns},
        "categorical": {column: {"categories": {}, "other": [0, 0]} for column in schema.categorical_columns},
        "target": {"0": 0, "1": 0},
    }


_GAMMA = (1 + SKETCH_RELATIVE_ACCURACY) / (1 - SKETCH_RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)


def _empty_sketch() -> dict[str, Any]:
    return {"relative_accuracy": SKETCH_RELATIVE_ACCURACY, "zero": 0, "positive": {}, "negative": {}}


def _sketch_add_counts(sketch: dict[str, Any], values: dict[float, int]) -> None:
    """Add values (value -> count) to a sketch: each lands in the bucket ceil(log_gamma |value|)."""
    for value, count in values.items():
        if value == 0:
            sketch["zero"] += count
            continue
        store = sketch["positive"] if value > 0 else sketch["negative"]
        key = str(math.ceil(math.log(abs(value)) / _LOG_GAMMA))
        store[key] = store.get(key, 0) + count
    for name in ("positive", "negative"):
        store = sketch[name]
        if len(store) > SKETCH_MAX_BUCKETS:
            # Fold the buckets of the smallest magnitudes into one: only those quantiles lose accuracy.
            keys = sorted(store, key=int)
            excess = keys[: len(keys) - SKETCH_MAX_BUCKETS + 1]
            folded = sum(store.pop(key) for key in excess)
            store[excess[-1]] = folded


def _sketch_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    into["zero"] += other["zero"]
    for name in ("positive", "negative"):
        for key, count in other[name].items():
            into[name][key] = into[name].get(key, 0) + count
    _sketch_add_counts(into, {})


def _sketch_quantile_at(sketch: dict[str, Any], rank: int) -> float:
    """Return the value of the rank-th smallest item (0-based), to within the sketch's accuracy."""
    def value(key: str) -> float:
        return 2 * _GAMMA ** int(key) / (_GAMMA + 1)

    seen = 0
    for key in sorted(sketch["negative"], key=int, reverse=True):  # most negative first
        seen += sketch["negative"][key]
        if rank < seen:
            return -value(key)
    seen += sketch["zero"]
    if rank < seen:
        return 0.0
    for key in sorted(sketch["positive"], key=int):
        seen += sketch["positive"][key]
        if rank < seen:
            return value(key)
    raise IndexError(rank)


def _median_of_counts(values: dict[str, int], count: int) -> float:
    """Return the exact median (the mean of the two middle values for an even count) of value counts."""
    lower_rank, upper_rank = (count - 1) // 2, count // 2
    seen, lower = 0, None
    for value in sorted(values, key=float):
        seen += values[value]
        if lower is None and lower_rank < seen:
            lower = float(value)
        if upper_rank < seen:
            return (lower + float(value)) / 2
    raise ValueError("counts do not add up")


def batch_statistics(frame, schema) -> dict[str, Any]:
    """Return the column statistics of the rows of ``frame`` (typed by ``schema``)."""
    import numpy as np

    stats = empty_statistics(schema)
    stats["rows"] = int(len(frame))
    target = frame[schema.target].to_numpy(dtype=np.int64)
    stats["target"] = {"0": int((target == 0).sum()), "1": int((target == 1).sum())}
    for column in schema.columns:
        if column == schema.target:
            continue
        stats["missing"][column] = int(frame[column].isna().sum())
    for column in schema.numeric_columns:
        values = frame[column].to_numpy(dtype=float)
        values = values[~np.isnan(values)]
        entry = stats["numeric"][column]
        if len(values) == 0:
            continue
        mean = float(values.mean())
        entry.update(count=int(len(values)), mean=mean, m2=float(((values - mean) ** 2).sum()),
                     min=float(values.min()), max=float(values.max()))
        distinct, counts = np.unique(values, return_counts=True)
        value_counts = dict(zip(distinct.tolist(), counts.tolist()))
        if len(distinct) <= EXACT_MEDIAN_MAX_VALUES:
            entry["values"] = {repr(value): count for value, count in value_counts.items()}
        else:
            entry["values"], entry["sketch"] = None, _empty_sketch()
            _sketch_add_counts(entry["sketch"], value_counts)
    for column in schema.categorical_columns:
        categories: dict[str, list[int]] = {}
        texts = frame[column].tolist()
        for text, label in zip(texts, target.tolist()):
            name = text if isinstance(text, str) else MISSING_CATEGORY
            counts = categories.setdefault(name, [0, 0])
            counts[0] += 1
            counts[1] += label
        stats["categorical"][column]["categories"] = categories
    return stats


def merge_statistics(total: dict[str, Any], batch: dict[str, Any]) -> dict[str, Any]:
    """Return ``total`` with ``batch``'s rows added (both from batch_statistics or empty_statistics)."""
    total["rows"] += batch["rows"]
    for label, count in batch["target"].items():
        total["target"][label] = total["target"].get(label, 0) + count
    for column, count in batch["missing"].items():
        total["missing"][column] = total["missing"].get(column, 0) + count
    for column, new in batch["numeric"].items():
        old = total["numeric"][column]
        if new["count"] == 0:
            continue
        count = old["count"] + new["count"]
        delta = new["mean"] - old["mean"]
        old["mean"] += delta * new["count"] / count
        old["m2"] += new["m2"] + delta * delta * old["count"] * new["count"] / count
        old["min"] = new["min"] if old["min"] is None else min(old["min"], new["min"])
        old["max"] = new["max"] if old["max"] is None else max(old["max"], new["max"])
        old["count"] = count
        if old["values"] is not None and new["values"] is not None:
            for value, n in new["values"].items():
                old["values"][value] = old["values"].get(value, 0) + n
            if len(old["values"]) > EXACT_MEDIAN_MAX_VALUES:
                old["sketch"] = _empty_sketch()
                _sketch_add_counts(old["sketch"], {float(v): n for v, n in old["values"].items()})
                old["values"] = None
        else:
            if old["sketch"] is None:
                old["sketch"] = _empty_sketch()
                _sketch_add_counts(old["sketch"], {float(v): n for v, n in old["values"].items()})
                old["values"] = None
            if new["sketch"] is not None:
                _sketch_merge(old["sketch"], new["sketch"])
            else:
                _sketch_add_counts(old["sketch"], {float(v): n for v, n in new["values"].items()})
    for column, new in batch["categorical"].items():
        old = total["categorical"][column]
        for name, (count, positives) in list(new["categories"].items()) + [(OTHER_CATEGORY, new["other"])]:
            if name == OTHER_CATEGORY or (name not in old["categories"] and len(old["categories"]) >= MAX_CATEGORIES):
                target = old["other"]
            else:
                target = old["categories"].setdefault(name, [0, 0])
            target[0] += count
            target[1] += positives
    return total


def save_statistics(stats: dict[str, Any], ingested_folder: Path, *, data_version: int) -> None:
    """Write the column statistics of the rows committed at ``data_version`` (before the record commits them)."""
    stats["data_version"] = data_version
    atomic_write_json(ingested_folder / STATS_FILE, stats)


def load_statistics(ingested_folder: Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """Return the column statistics of the record's committed rows, or None when missing or out of step."""
    try:
        stats = read_json(ingested_folder / STATS_FILE)
    except ValueError:
        return None
    if (not isinstance(stats, dict) or stats.get("format") != STATS_FORMAT
            or stats.get("data_version") != record["data_version"] or stats.get("rows") != record["rows"]):
        return None
    return stats


def rebuild_statistics(ingested_folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Return the column statistics computed from the committed data (after a crash, or once after an upgrade)."""
    schema = frozen_schema(record)
    if schema is None or record["rows"] == 0:
        return empty_statistics(schema) if schema is not None else None
    frame, schema, _fingerprint = read_ingested_data(ingested_folder, record)
    return merge_statistics(empty_statistics(schema), batch_statistics(frame, schema))


def describe_statistics(stats: dict[str, Any]) -> dict[str, Any]:
    """Return the figures people read (mean, median, std, ...; categories with churn rates) from stored statistics."""
    rows = stats["rows"]
    numeric = {}
    for column, entry in stats["numeric"].items():
        count = entry["count"]
        if entry["values"] is not None:
            median = _median_of_counts(entry["values"], count) if count else None
        else:
            middle = (_sketch_quantile_at(entry["sketch"], (count - 1) // 2)
                      + _sketch_quantile_at(entry["sketch"], count // 2)) / 2
            median = middle
        numeric[column] = {
            "mean": _number(entry["mean"]) if count else None,
            "median": _number(median),
            "std": _number(math.sqrt(entry["m2"] / (count - 1))) if count > 1 else None,
            "count": count,
            "missing": stats["missing"].get(column, 0),
            "min": entry["min"],
            "max": entry["max"],
            "median_exact": entry["values"] is not None,
        }
    categorical = {}
    for column, entry in stats["categorical"].items():
        items = sorted(entry["categories"].items(), key=lambda item: (-item[1][0], item[0]))
        if entry["other"][0]:
            items.append((OTHER_CATEGORY, entry["other"]))
        categorical[column] = {
            "categories": [{"value": name, "count": count, "share": count / rows if rows else None,
                            "churn_rate": positives / count if count else None}
                           for name, (count, positives) in items],
            "distinct": len(entry["categories"]) + (1 if entry["other"][0] else 0),
        }
    positives = stats["target"].get("1", 0)
    return {
        "rows": rows,
        "numeric": numeric,
        "categorical": categorical,
        "missing_data": {column: (count / rows if rows else 0.0) for column, count in stats["missing"].items()},
        "target": {"counts": {"0": stats["target"].get("0", 0), "1": positives},
                   "churn_rate": positives / rows if rows else None},
    }


def ingested_statistics(ingested_folder: Path) -> dict[str, Any]:
    """Return the summary statistics of the ingested data from the statistics kept at ingestion.

    Only when those are missing or out of step (data ingested by a version before they existed, or
    a crash between writing them and the record) are they computed from the data, once per data
    version, and a warning says so: the next ingest writes them.
    """
    record = load_record(ingested_folder)
    base = {"data_version": record["data_version"], "last_ingest": record.get("last_ingest")}
    if frozen_schema(record) is None or record["rows"] == 0:
        return {**base, "rows": 0, "summary_statistics": {}, "categorical": {}, "missing_data": {},
                "target": None, "source": "none"}
    stats = load_statistics(ingested_folder, record)
    source = STATS_FILE
    if stats is None:
        logger.warning("%s: missing or out of step with the record; statistics computed from the data until "
                       "the next ingest writes it", ingested_folder / STATS_FILE)
        stats = rebuild_statistics(ingested_folder, record)
        source = "data"
    described = describe_statistics(stats)
    return {**base, "rows": described["rows"], "summary_statistics": described["numeric"],
            "categorical": described["categorical"], "missing_data": described["missing_data"],
            "target": described["target"], "source": source}
