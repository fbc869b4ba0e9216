"""`SynchronizedCounter`: an integer that many threads can change without losing updates."""

from __future__ import annotations

import os
import threading
import weakref

__all__ = ["SynchronizedCounter"]

_counters: weakref.WeakSet[SynchronizedCounter] = weakref.WeakSet()


class SynchronizedCounter:
    """A thread-safe integer counter.

    Every operation is atomic. The lock is reentrant, so a thread that holds
    it (``with counter:``) can call the counter's methods again, e.g. to read
    and then update in one critical section::

        with counter:
            if counter.value < limit:
                counter.increment()
    """

    __slots__ = ("__weakref__", "_lock", "_value")

    def __init__(self, initial: int = 0) -> None:
        if type(initial) is not int:
            raise TypeError(f"initial must be an int, got {type(initial).__name__} {initial!r}")
        self._value = initial
        self._lock = threading.RLock()
        _counters.add(self)

    @property
    def value(self) -> int:
        with self._lock:
            return self._value

    def increment(self, amount: int = 1) -> int:
        """Add ``amount`` (default 1) and return the new value."""
        return self.add(amount)

    def decrement(self, amount: int = 1) -> int:
        """Subtract ``amount`` (default 1) and return the new value."""
        _check_int("amount", amount)
        with self._lock:
            self._value -= amount
            return self._value

    def add(self, amount: int) -> int:
        """Add ``amount`` (may be negative) and return the new value."""
        _check_int("amount", amount)
        with self._lock:
            self._value += amount
            return self._value

    def reset(self, value: int = 0) -> int:
        """Set the value and return the previous one."""
        _check_int("value", value)
        with self._lock:
            old, self._value = self._value, value
            return old

    def compare_and_set(self, expected: int, new: int) -> bool:
        """Set to ``new`` only if the value is ``expected``; True if it was set."""
        _check_int("new", new)
        with self._lock:
            if self._value != expected:
                return False
            self._value = new
            return True

    def __enter__(self) -> SynchronizedCounter:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"SynchronizedCounter({self.value})"


def _after_fork_in_child() -> None:
    # A lock held at os.fork() by a thread that stayed in the parent would never be released.
    for counter in list(_counters):
        counter._lock = threading.RLock()  # noqa: SLF001 - this module's own fork handler


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_int(name: str, value: object) -> None:
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
