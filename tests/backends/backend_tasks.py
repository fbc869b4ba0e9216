"""Task functions for the backend tests: module-level, so every backend can import them.

State that must survive a process boundary (attempt counts, release flags)
lives in files under the test's tmp_path.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def add(x: int, y: int = 0, *, key: str = "", priority: int = 0) -> tuple:
    # ``key`` and ``priority`` are also client.submit's keywords: they must reach the task.
    return (x + y, key, priority)


def pid() -> int:
    return os.getpid()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fail(message: str) -> None:
    raise ValueError(message)


def flaky(path: str, failures: int) -> int:
    """Fail with ValueError on the first ``failures`` calls (counted in a file); return the call number."""
    p = Path(path)
    with p.open("a") as f:
        f.write("x")
    n = p.stat().st_size
    if n <= failures:
        raise ValueError(f"attempt {n} fails on purpose")
    return n


def wait_for_file(path: str, limit: float = 20.0) -> str:
    """Block until ``path`` exists (a release flag written by the test), at most ``limit`` s."""
    end = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.02)
    return "released"


def killed_once(marker: str, wait: float = 30.0) -> str:
    """First call: write this process's pid to ``marker`` and wait to be killed. Later calls: ok."""
    p = Path(marker)
    if p.exists():
        return f"ok in {os.getpid()}"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.rename(p)  # atomic: the test never reads a half-written pid
    time.sleep(wait)
    return "not killed"


def suicide_once(marker: str) -> str:
    """First call: kill this very process (SIGKILL). Later calls: ok."""
    p = Path(marker)
    if p.exists():
        return "ok"
    p.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
    return "unreachable"


def make_generator():
    """A result that cannot be pickled back to the parent."""
    return (i for i in range(3))


class TwoArgError(Exception):
    """An exception pickle cannot rebuild: unpickling calls ``TwoArgError(message)``, one argument short."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code
        self.detail = detail


def raise_two_arg_error() -> None:
    raise TwoArgError(42, "broken on purpose")


def return_two_arg_error() -> TwoArgError:
    """A result that pickles in the child but cannot be unpickled in the parent."""
    return TwoArgError(7, "returned, not raised")


class UnpicklableError(Exception):
    """An exception that cannot even be pickled (it holds a generator)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.source = (i for i in range(3))


def raise_unpicklable_error() -> None:
    raise UnpicklableError("holds a generator")
