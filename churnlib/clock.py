"""The one clock the pipeline stamps its records with: UTC, to the second, ISO 8601."""

from __future__ import annotations

import time
from typing import Any


def utc_now() -> str:
    """Return the current time as ``2026-11-22T07:29:12Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Return the days from 1970-01-01 to a date of the proleptic Gregorian calendar (Hinnant's
    days_from_civil): calendar.timegm's arithmetic without importing calendar, datetime and locale."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def stamp_seconds(stamp: Any) -> float | None:
    """Return a stamp made by ``utc_now`` as seconds since the epoch, or None for anything else."""
    # Read by position, not with time.strptime and calendar.timegm: those import locale, datetime
    # and regular expressions, about 6 ms of a tick with nothing new (python -X importtime).
    if not isinstance(stamp, str) or len(stamp) < 19 or stamp[4:17:3] != "--T::":
        return None
    parts = (stamp[0:4], stamp[5:7], stamp[8:10], stamp[11:13], stamp[14:16], stamp[17:19])
    if not all(part.isascii() and part.isdigit() for part in parts):
        return None
    year, month, day, hour, minute, second = map(int, parts)
    if not (1 <= month <= 12 and hour <= 23 and minute <= 59 and second <= 61):
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days_in_month = (29 if leap else 28) if month == 2 else 30 if month in (4, 6, 9, 11) else 31
    if not 1 <= day <= days_in_month:
        return None
    return float(_days_since_epoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)
