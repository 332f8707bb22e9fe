"""The customer files waiting in the scoring folder, and the record of the risk lists made from them.

What the cron job needs before it knows there is work, so it imports no pandas or scikit-learn:
``find_customer_files`` lists the scoring folder (``churnlib.sourcefiles``: unchanged files are not
read again) and returns the files to score with the deployed release: new or changed files, and
after a redeploy every file whose list an older release made. ``predictions/scoring_record.json``
holds which content was scored (or rejected) with which release. Scoring itself is ``scoring.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnlib.clock import utc_now
from churnlib.columns import shown_name
from churnlib.fsutil import atomic_write_json, read_json
from churnlib.sourcefiles import FoundFile, scan_csv_folder

logger = logging.getLogger("scoring")  # the scoring step's log: logs/scoring.log

SCORING_RECORD_FILE = "scoring_record.json"  # in the predictions folder: what was scored, with which release
SCORING_RECORD_FORMAT = 1
LIST_SUFFIX = ".risk.csv"
SUMMARY_SUFFIX = ".risk.json"


def empty_scoring_record() -> dict[str, Any]:
    return {"format": SCORING_RECORD_FORMAT, "scored": {}, "rejected": [], "seen": {}, "ignored": {}}


def load_scoring_record(predictions_folder: Path) -> dict[str, Any]:
    """Return the record of the customer files scored so far (empty before the first)."""
    path = predictions_folder / SCORING_RECORD_FILE
    try:
        record = read_json(path)
    except ValueError:
        logger.warning("%s: not valid JSON; every customer file will be scored again", path)
        record = None
    if not isinstance(record, dict) or record.get("format") != SCORING_RECORD_FORMAT:
        return empty_scoring_record()
    return record


def save_scoring_record(record: dict[str, Any], predictions_folder: Path) -> None:
    atomic_write_json(predictions_folder / SCORING_RECORD_FILE, record)


@dataclass
class CustomerWork:
    """The customer files to score: new or changed since scored, or scored by another release."""

    record: dict[str, Any]
    pending: list[FoundFile]
    rejected: list[dict]  # refused unread by the scan (symlinks out, unreadable files)
    record_changed: bool


def find_customer_files(scoring_folder: Path, record: dict[str, Any], release_id: str | None) -> CustomerWork:
    """Return the files in ``scoring_folder`` that need scoring with ``release_id``; imports no pandas.

    A file needs it unless its content was scored by that release already, or rejected while that
    release was deployed (a new release may have another schema).
    """
    def reject_unread(name: str, reason: str, *, sha256: str | None, size: int | None) -> dict:
        entry = {"name": name, "sha256": sha256, "size": size, "reason": reason, "rejected_at": utc_now(),
                 "release_id": release_id}
        record["rejected"].append(entry)
        logger.warning("rejected %s: %s", shown_name(name), reason)
        return entry

    found = scan_csv_folder(scoring_folder, record, reject=reject_unread, logger=logger, kind="scoring folder")
    present = {source.name for source in found.files}
    changed = found.record_changed
    for name in list(record["scored"]):
        if name not in present:
            del record["scored"][name]
            changed = True
    pending = []
    if release_id is not None:
        rejected = {(r["name"], r["sha256"]) for r in record["rejected"] if r.get("release_id") == release_id}
        for source in found.files:
            scored = record["scored"].get(source.name)
            if scored and scored["sha256"] == source.sha256 and scored["release_id"] == release_id:
                continue
            if (source.name, source.sha256) in rejected:
                continue
            pending.append(source)
    return CustomerWork(record=record, pending=pending, rejected=found.rejected, record_changed=changed)


def list_path(predictions_folder: Path, input_name: str) -> Path:
    """Return where the risk list of customer file ``input_name`` goes."""
    return predictions_folder / (Path(input_name).stem + LIST_SUFFIX)
