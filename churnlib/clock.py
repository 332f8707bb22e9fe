"""The one clock the pipeline stamps its records with: UTC, to the second, ISO 8601."""

from __future__ import annotations

import calendar
import time
from typing import Any


def utc_now() -> str:
    """Return the current time as ``2026-11-22T07:29:12Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def stamp_seconds(stamp: Any) -> float | None:
    """Return a stamp made by ``utc_now`` as seconds since the epoch, or None for anything else."""
    if not isinstance(stamp, str) or len(stamp) < 19:
        return None
    try:
        return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
