"""The one clock the pipeline stamps its records with: UTC, to the second, ISO 8601."""

from __future__ import annotations

import time


def utc_now() -> str:
    """Return the current time as ``2026-11-22T07:29:12Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
