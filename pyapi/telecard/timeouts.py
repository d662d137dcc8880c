"""Timeout arguments: checked once at the API's edge, then handed to waits that take them."""

from __future__ import annotations

import math
import threading

# The C driver's waits take milliseconds in an int: longer waits are waits without a limit.
_MAX_MS = 2**31 - 1


def check_timeout(seconds: float | None, what: str) -> float | None:
    """A timeout argument as seconds (None: no limit); ValueError for anything else."""
    if seconds is None:
        return None
    if (type(seconds) is float or type(seconds) is int) and seconds >= 0:
        return float(seconds)  # NaN fails the comparison and is refused below
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        raise ValueError(f"{what} must be a number of seconds or None, not {seconds!r}")
    if seconds < 0:
        raise ValueError(f"{what} must not be negative, not {seconds}")
    return float(seconds)


def wait_time(seconds: float | None) -> float | None:
    """A checked timeout as Condition.wait() takes it: None (no limit) for inf and for values
    past what the platform can wait (which would raise OverflowError)."""
    return None if seconds is None or seconds >= threading.TIMEOUT_MAX else seconds


def wait_ms(seconds: float | None) -> int:
    """A checked timeout as the C driver's waits take it: milliseconds, -1 for no limit."""
    if seconds is None or seconds * 1000 >= _MAX_MS:
        return -1
    return round(seconds * 1000)
