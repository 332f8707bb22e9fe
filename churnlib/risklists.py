"""The customer files waiting in the scoring folder, and the record of the risk lists made from them.

What the cron job needs before it knows there is work, so it imports no pandas or scikit-learn:
``find_customer_files`` lists the scoring folder (``churnlib.sourcefiles``: unchanged files are not
read again) and returns the files to score with the deployed release: new or changed files, and
after a redeploy every file whose list an older release made. ``predictions/scoring_record.json``
holds which content was scored (or rejected) with which release. Scoring itself is ``scoring.py``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
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
STALE_FOLDER = "stale"  # in the predictions folder: lists whose customer file is gone, kept for the user to delete
MAX_REJECTED = 1_000  # rejected files kept in the record: the latest, of files still in the folder
# A file name's bytes at most (Linux and macOS file systems). A list is written under a temporary
# name first (churnlib.fsutil.temporary_path_for): "." + its name + ".tmp-<pid>-<8 hex digits>".
NAME_MAX = 255
TEMPORARY_NAME_BYTES = len(".") + len(".tmp-4194304-00000000")  # the largest Linux pid


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
    rejected: list[dict]  # refused unread by the scan (symlinks out, unreadable files, a list name taken)
    record_changed: bool
    stale: list[dict] = field(default_factory=list)  # lists moved aside this time: their customer file is gone


def list_settings(risk_lists: Any, outreach: Any) -> dict[str, Any]:
    """Return the settings that shape a list (its reason columns, the outreach columns and contact rule),
    as kept in the record with each list: a list made with other settings is made again."""
    return {"reasons": risk_lists.reasons, "outreach": None if outreach is None else dataclasses.asdict(outreach)}


def find_customer_files(scoring_folder: Path, record: dict[str, Any], release_id: str | None, *,
                        predictions_folder: Path | None = None, settings: dict[str, Any] | None = None,
                        rescore: bool = False) -> CustomerWork:
    """Return the files in ``scoring_folder`` that need scoring with ``release_id``; imports no pandas.

    A file needs it unless its content was scored by that release already with these list
    ``settings`` (``list_settings``; None: not compared), or rejected while that release was
    deployed (a new release may have another schema). ``rescore``: every file needs it. With
    ``predictions_folder``, the lists (and summaries) there whose customer file is gone are moved
    to its ``stale/`` folder.
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
    changed |= _bound_rejected(record)
    files, taken = _one_file_per_list([f for f in found.files if _list_name_fits(f.name)], record)
    for source in found.files:
        if not _list_name_fits(source.name):
            reason = (f"the name is too long for its list's name ({len(os.fsencode(summary_name(source.name)))} "
                      f"bytes with its suffix; at most {NAME_MAX - TEMPORARY_NAME_BYTES}): rename the file")
            taken.append((source, None, reason))
    for source, owner, reason in taken:
        if not any(r["name"] == source.name and r["sha256"] == source.sha256 and r["reason"] == reason
                   for r in record["rejected"]):
            record["rejected"] = [r for r in record["rejected"] if r["name"] != source.name]
            entry = reject_unread(source.name, reason, sha256=source.sha256, size=source.size)
            if owner is not None:
                entry["list_of"] = owner  # not scored while the other file is there; retried once it is gone
            found.rejected.append(entry)
            changed = True
    pending = []
    if release_id is not None:
        rejected = {(r["name"], r["sha256"]) for r in record["rejected"]
                    if r.get("release_id") == release_id and "list_of" not in r and not rescore}
        settings_changed = []
        for source in files:
            scored = record["scored"].get(source.name)
            if scored and scored["sha256"] == source.sha256 and scored["release_id"] == release_id and not rescore:
                if settings is None or scored.get("settings") == settings:
                    continue
                settings_changed.append(source.name)
            if (source.name, source.sha256) in rejected:
                continue
            pending.append(source)
        if settings_changed:
            logger.info("the list settings (risk_lists, outreach) changed since %s were scored: scored again",
                        ", ".join(shown_name(name) for name in settings_changed))
    # Every name still in the folder counts, read or not (a file unreadable for a while keeps its list).
    stale = [] if predictions_folder is None else move_stale_lists(predictions_folder, list(record["seen"]))
    return CustomerWork(record=record, pending=pending, rejected=found.rejected, record_changed=changed or bool(stale),
                        stale=stale)


def move_stale_lists(predictions_folder: Path, present: list[str]) -> list[dict]:
    """Move the lists and summaries whose customer file is no longer in the scoring folder to ``stale/``;
    return what was moved.

    Such a list is never refreshed again, yet someone may still be working from it: it is moved
    aside, with a log line, for the user to delete, never deleted here. An older stale copy of the
    same name is replaced (and the log says so).
    """
    wanted = {list_name(name) for name in present} | {summary_name(name) for name in present}
    moved = []
    try:
        entries = sorted(os.scandir(predictions_folder), key=lambda e: e.name)
    except FileNotFoundError:
        return moved
    for entry in entries:
        name = entry.name
        if name.startswith(".") or not name.endswith((LIST_SUFFIX, SUMMARY_SUFFIX)) or name in wanted:
            continue
        if not entry.is_file(follow_symlinks=False):
            continue
        stale_folder = predictions_folder / STALE_FOLDER
        stale_folder.mkdir(exist_ok=True)
        target = stale_folder / name
        replaced = target.exists()
        os.replace(entry.path, target)
        logger.warning("moved %s/%s to %s/%s/: its customer file is no longer in the scoring folder, so the "
                       "list is not refreshed any more%s; delete it when it is no longer needed",
                       predictions_folder.name, shown_name(name), predictions_folder.name, STALE_FOLDER,
                       " (an older stale copy was replaced)" if replaced else "")
        moved.append({"name": name, "moved_to": f"{predictions_folder.name}/{STALE_FOLDER}/{name}"})
    return moved


def _bound_rejected(record: dict[str, Any]) -> bool:
    """Keep the latest rejection of each file still in the folder, at most MAX_REJECTED; return whether any went."""
    latest: dict[str, dict] = {}
    for entry in record["rejected"]:
        if entry["name"] in record["seen"]:  # the scan keeps exactly the names still in the folder
            latest.pop(entry["name"], None)
            latest[entry["name"]] = entry
    kept = list(latest.values())[-MAX_REJECTED:]
    if len(kept) == len(record["rejected"]):
        return False
    record["rejected"] = kept
    return True


def _one_file_per_list(files: list[FoundFile], record: dict[str, Any]) -> tuple[list[FoundFile], list[tuple[FoundFile, str | None, str]]]:
    """Return the files that each have their list to themselves, and the others with the file whose list it is
    and the reason they are not scored.

    ``team.csv`` and ``team.CSV`` would both write ``team.risk.csv``: the file whose list it is
    already, else the first by name, keeps it. Names are compared case-blind, as some file systems do.
    """
    owners: dict[str, FoundFile] = {}
    for source in sorted(files, key=lambda f: (record["scored"].get(f.name, {}).get("list") is None, f.name)):
        owners.setdefault(list_name(source.name).casefold(), source)
    kept, taken = [], []
    for source in files:
        owner = owners[list_name(source.name).casefold()]
        if owner is source:
            kept.append(source)
        else:
            reason = (f"its list would be {list_name(source.name)}, which is {owner.name}'s (list names do not tell "
                      f"{source.name} from {owner.name}); rename one of them")
            taken.append((source, owner.name, reason))
    return kept, taken


def _list_name_fits(input_name: str) -> bool:
    """Whether the list and summary of ``input_name`` can be written (their temporary names are longer)."""
    return len(os.fsencode(summary_name(input_name))) + TEMPORARY_NAME_BYTES <= NAME_MAX


def list_name(input_name: str) -> str:
    """Return the name of the risk list of customer file ``input_name``."""
    return Path(input_name).stem + LIST_SUFFIX


def summary_name(input_name: str) -> str:
    """Return the name of the summary of the risk list of customer file ``input_name``."""
    return Path(input_name).stem + SUMMARY_SUFFIX


def list_path(predictions_folder: Path, input_name: str) -> Path:
    """Return where the risk list of customer file ``input_name`` goes."""
    return predictions_folder / list_name(input_name)
