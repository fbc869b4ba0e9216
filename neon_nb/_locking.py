"""Taking the worker's lock without lock convoys under the GIL.

A thread that blocks on a `threading.Lock` held by a thread that lost the GIL in
its critical section is handed the lock the moment it is released, at the OS
level, without the GIL. The former holder, back for the lock on its next task,
must then wait for the new holder, which waits for the GIL: from then on every
acquisition is a hand-over between threads, two context switches per task (a
lock convoy). With four worker threads and short tasks this cost four times
the work itself.

`acquire` avoids it: when the lock is held it yields the GIL (``time.sleep(0)``)
so that the holder finishes its critical section and goes on, and tries again;
the lock then changes threads only when the GIL does, every few milliseconds.
After a few tries (a holder blocked for long, many waiters) it blocks after all.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

__all__ = ["Held", "acquire"]

#: Yields before blocking: each lets the holder run up to a GIL switch interval.
_TRIES = 16


def acquire(lock: threading.Lock) -> None:
    """Take ``lock`` (see the module notes); call it after ``lock.acquire(False)`` failed."""
    for _ in range(_TRIES):
        time.sleep(0)
        if lock.acquire(False):
            return
    lock.acquire()


class Held:
    """``with Held(lock):`` takes ``lock`` as `acquire` does; for paths where a call costs nothing."""

    __slots__ = ("lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        if not self.lock.acquire(False):
            acquire(self.lock)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.lock.release()
