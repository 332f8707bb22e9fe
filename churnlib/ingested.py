"""The ingested data and its record: what every step reads, and only ingestion.py writes.

``ingesteddata/`` holds ``finaldata.csv`` (every accepted row, de-duplicated, in canonical form),
``rowhashes.bin`` (one 64-bit hash per row, for de-duplication), ``ingestion_record.json`` (every
file ingested or rejected, and the committed lengths of the two data files) and
``ingestedfiles.txt``; ``logs/ingestion_record.txt`` is the record as a table for people.

Only the committed part of ``finaldata.csv`` (the record's ``bytes``) is ever read: bytes past it
belong to an ingest that has not finished. Loading the record imports no pandas (the cron fast path
reads it); reading the rows does.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.columns import shown_name
from churnlib.errors import ChurnError
from churnlib.fsutil import atomic_write_json, atomic_write_text, read_json

RECORD_FILE = "ingestion_record.json"
DATA_FILE = "finaldata.csv"
HASHES_FILE = "rowhashes.bin"
INGESTED_LIST_FILE = "ingestedfiles.txt"
READABLE_RECORD_FILE = "ingestion_record.txt"  # in logs/
RECORD_FORMAT = 1


class IngestedDataError(ChurnError):
    """The ingested data does not match its record: it was changed outside the pipeline."""


class NoIngestedData(IngestedDataError):
    """Nothing has been ingested yet."""


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


def load_record(ingested_folder: Path) -> dict[str, Any]:
    """Return the ingestion record, or an empty one before the first ingest."""
    path = ingested_folder / RECORD_FILE
    try:
        record = read_json(path)
    except ValueError:
        raise IngestedDataError(f"{path}: not valid JSON; it was changed outside the pipeline") from None
    if record is None:
        return empty_record()
    if record.get("format") != RECORD_FORMAT:
        raise IngestedDataError(f"{path}: unknown record format {record.get('format')!r}")
    return record


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
        lines.append(
            f"{entry['ingested_at']:<21} {entry['name']:<32} {entry['size']:>10} "
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
    from churnlib.modelstore import sha256_bytes

    record = load_record(ingested_folder) if record is None else record
    schema = frozen_schema(record)
    if schema is None or record["rows"] == 0:
        raise NoIngestedData(f"{ingested_folder / DATA_FILE}: no ingested data yet")
    with open(ingested_folder / DATA_FILE, "rb") as handle:
        data = handle.read(record["bytes"])
    frame = read_canonical_csv(io.BytesIO(data), schema)
    fingerprint = {
        "file": DATA_FILE,
        "rows": int(len(frame)),
        "bytes": len(data),
        "sha256": sha256_bytes(data),
        "data_version": record["data_version"],
        "class_counts": {str(k): int(v) for k, v in frame[schema.target].value_counts().sort_index().items()},
    }
    return frame, schema, fingerprint


def read_ingested_rows(ingested_folder: Path, schema, *, start: int, end: int):
    """Return the rows stored in bytes [start, end) of finaldata.csv (start is a row boundary)."""
    from churnlib.dataset import read_canonical_tail

    return read_canonical_tail(ingested_folder / DATA_FILE, schema, start=start, end=end)


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summary_statistics(frame, numeric_columns: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    """Return mean, median and standard deviation (sample, ddof=1) of each numeric column; None when undefined."""
    stats = {}
    for column in numeric_columns:
        values = frame[column]
        stats[column] = {
            "mean": _number(values.mean()),
            "median": _number(values.median()),
            "std": _number(values.std()),
            "count": int(values.notna().sum()),
        }
    return stats


def missing_data(frame) -> dict[str, float]:
    """Return the share (0..1) of missing values in each column."""
    if len(frame) == 0:
        return {column: 0.0 for column in frame.columns}
    return {column: float(share) for column, share in frame.isna().mean().items()}


def ingested_statistics(ingested_folder: Path) -> dict[str, Any]:
    """Return summary statistics and missing-data shares of the ingested data (its committed rows)."""
    record = load_record(ingested_folder)
    try:
        frame, schema, _fingerprint = read_ingested_data(ingested_folder, record)
    except NoIngestedData:
        return {"data_version": record["data_version"], "rows": 0, "summary_statistics": {}, "missing_data": {},
                "last_ingest": record.get("last_ingest")}
    return {
        "data_version": record["data_version"],
        "rows": int(len(frame)),
        "summary_statistics": summary_statistics(frame, schema.numeric_columns),
        "missing_data": missing_data(frame[list(schema.columns)]),
        "last_ingest": record.get("last_ingest"),
    }
