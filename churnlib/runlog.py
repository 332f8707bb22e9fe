"""The run log, ``logs/runs.jsonl``: one JSON line per cron tick, what it found and what it decided.

``Decision`` lists every decision a line can hold, each defined here once; ``fullprocess.py``
writes the lines, and whatever reads them (people, the API's metrics) finds the same names.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Any

from churnlib.columns import shown_lines
from churnlib.fsutil import append_line
from churnlib.errors import in_step

RUNS_FILE = "runs.jsonl"
LATEST_DRIFT_FILE = "latest_drift.json"  # the drift table of the latest check
DIAGNOSTICS_FILE = "diagnostics.json"  # the latest diagnostics
DASHBOARD_FILE = "dashboard.html"  # the history page (churnlib.history)
OUTBOX_FILE = "alerts_outbox.json"  # alerts not yet delivered (churnlib.alerts)
UNDELIVERABLE_FILE = "alerts_undeliverable.json"  # alerts refused again and again, moved aside (churnlib.alerts)
ALERT_STATE_FILE = "alert_state.json"  # the alert conditions active now (churnlib.alerts)


class Decision(str, Enum):
    """What a tick decided; the value is what ``runs.jsonl`` holds."""

    NOTHING_NEW = "nothing_new"            # no new file, and nothing pending that can be checked
    LOCK_HELD = "lock_held"                # another tick was running; this one did nothing
    NO_DATA = "no_data"                    # no rows ingested yet (every file so far was rejected)
    NO_NEW_ROWS = "no_new_rows"            # new files, but no new rows (rejected, or all duplicates)
    WAITING_FOR_ROWS = "waiting_for_rows"  # new rows, too few for the checks: they wait for more
    COLD_START = "cold_start"              # no model deployed yet: the first one was trained and deployed
    SCHEMA_CHANGED = "schema_changed"      # the deployed model's columns differ from the data's: retrained
    NO_DRIFT = "no_drift"                  # checked: no score drop and no feature drift; the release stays
    RETRAINED_DEPLOYED = "retrained_deployed"  # a retrain was due (retrain_reason), a new model trained and deployed
    RETRAINED_REFUSED = "retrained_refused"    # a retrain was due, a new model trained, refused by the policy
    FAILED = "failed"                      # the tick could not finish; the reason says why

    def __str__(self) -> str:
        return self.value


class RetrainReason(str, Enum):
    """Why a tick retrained; ``runs.jsonl`` lists them under ``retrain_reason``."""

    COLD_START = "cold_start"          # no model deployed yet
    SCHEMA_CHANGED = "schema_changed"  # the deployed model's columns differ from the data's
    SCORE_DROP = "score_drop"          # the deployed model scored significantly lower on the new rows
    FEATURE_DRIFT = "feature_drift"    # features of the new rows drifted from the drift reference
    CONFIG_CHANGED = "config_changed"  # the model settings in config.json differ from the deployed model's
    SCHEDULE = "schedule"              # schedule.every_rows or schedule.every_days came round

    def __str__(self) -> str:
        return self.value


DRIFT_REASONS = (RetrainReason.SCORE_DROP, RetrainReason.FEATURE_DRIFT)


def _text(value: str) -> str:
    # A file name whose bytes are not UTF-8 arrives with lone surrogates: no reader of the line (the
    # history page, a JSON parser in another language) could use it. Shown as churnlib.columns shows it.
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return shown_lines(value)
    return value


def json_safe(value: Any) -> Any:
    """Return ``value`` with NaN and infinities as None (JSON has neither), enums as their values, and
    text that is not valid Unicode (a file name's undecodable bytes) in its shown form."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@in_step("run log")
def append_run(log_folder: Path, run: dict[str, Any]) -> None:
    """Append one run's JSON line to ``logs/runs.jsonl`` (one write, fsynced)."""
    line = json.dumps(json_safe(run), default=str, allow_nan=False, separators=(",", ":"))
    append_line(log_folder / RUNS_FILE, line)
