"""The pipeline's clock: stamps written by utc_now read back as the same instant."""

import calendar
import random
import time

from churnlib.clock import stamp_seconds, utc_now


def test_stamps_read_back_as_strptime_reads_them_and_anything_else_is_none():
    rng = random.Random(5)
    for _ in range(2000):
        instant = rng.randrange(0, 4_102_444_800)  # 1970 to 2100
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(instant))
        assert stamp_seconds(stamp) == float(instant) == calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(stamp_seconds(utc_now()) - time.time()) < 2  # the same instant, to the second
    for bad in (None, 17, "", "yesterday", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-11-26 15:00:00Z",
                "2026-11-26T25:00:00Z", "２０２６-11-26T15:00:00Z", "2026-1-026T15:00:00Z"):
        assert stamp_seconds(bad) is None, bad
    for leap_day in ("2028-02-29T00:00:00Z", "2000-02-29T12:00:00Z"):
        assert stamp_seconds(leap_day) == calendar.timegm(time.strptime(leap_day, "%Y-%m-%dT%H:%M:%SZ"))
    assert stamp_seconds("2100-02-29T00:00:00Z") is None  # a century that is not a leap year
