"""Validators shared by the public calls: each error names the parameter and what is allowed."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

__all__ = ["MAX_SECONDS", "bounded_wait", "check_hashable", "check_timeout", "deadline_of"]

# Durations are waited on with Condition.wait(), which raises OverflowError beyond
# threading.TIMEOUT_MAX (about 292 years on Linux, far less on some platforms): a
# health_check_interval of inf once killed the monitor thread, and every pending retry
# with it. 1e9 s (31 years) stays below TIMEOUT_MAX even after adding time.monotonic().
MAX_SECONDS = 1e9


def check_timeout(name: str, value: Any) -> None:
    """None or a number >= 0: TypeError for another type, ValueError for a bad number."""
    if value is None:
        return
    if type(value) not in (int, float):
        raise TypeError(f"{name} must be None or a number of seconds >= 0, got "
                        f"{type(value).__name__} {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be None or a number of seconds >= 0, got {value!r}")


def check_hashable(name: str, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{name} must be a task id (hashable), got unhashable "
                        f"{type(value).__name__} {value!r}") from None


def deadline_of(block: bool, timeout: float | None) -> float | None:
    """The monotonic deadline of a call with ``block``/``timeout`` (0.0: do not wait)."""
    if not isinstance(block, bool):
        raise TypeError(f"block must be True or False, got {block!r}")
    if not block:
        return 0.0
    check_timeout("timeout", timeout)
    return None if timeout is None else time.monotonic() + timeout


def bounded_wait(cond: threading.Condition, deadline: float | None) -> bool:
    """Wait on ``cond`` (its lock held) until notified or ``deadline``; False if it had passed.

    The caller re-checks its predicate in a loop, as with any condition variable.
    """
    if deadline is None:
        cond.wait()
        return True
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    cond.wait(left if left < threading.TIMEOUT_MAX else threading.TIMEOUT_MAX)
    return True
