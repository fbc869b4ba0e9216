"""What the out-of-process backends share: a pickling check at submission, a bounded close."""

from __future__ import annotations

import atexit
import logging
import pickle
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .._errors import TaskPicklingError

logger = logging.getLogger("neon_nb")


class _NullSink:
    """A write-only file that keeps nothing: the check pickles without holding the bytes."""

    __slots__ = ()

    def write(self, data: Any) -> None:
        pass


def check_picklable(pickler: type[pickle.Pickler], backend: str, task_id: Hashable, fn: Callable,
                    args: tuple, kwargs: dict | None, hint: str) -> None:
    """Raise `TaskPicklingError` naming the task and the part (function, args, kwargs) that fails.

    Runs on the submitting thread, so a task that could never run fails at
    ``add_task`` rather than later on a worker thread. It costs one pickling
    pass of the function and its arguments (the bytes are discarded).
    """
    for part, obj in (("function", fn), ("args", args), ("kwargs", kwargs)):
        if not obj and part != "function":
            continue
        try:
            pickler(_NullSink(), protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError...
            raise TaskPicklingError(
                f"task {task_id!r} cannot be sent to the {backend} backend: its {part} cannot be "
                f"pickled ({type(exc).__name__}: {exc}). {hint}") from exc


def close_within(close: Callable[[], None], timeout: float | None, what: str) -> bool:
    """Run ``close()`` and return within ``timeout`` seconds (None: wait until it ends).

    For `Backend.stop`, which must keep the shutdown's bound: what cannot close
    in time goes on closing in a daemon thread, and is never left silently: a
    warning names ``what`` when the bound passes, and its end in the
    background is logged too (a failure with its traceback). Returns whether
    ``close`` finished in time.
    """
    if timeout is None:
        close()
        return True
    state = _Closing()
    thread = threading.Thread(target=state.run, args=(close, what), name="neon-backend-close", daemon=True)
    _closing_at_exit(thread)
    thread.start()
    if state.done.wait(timeout) or not state.mark_late():
        return True
    logger.warning("%s did not finish within the %.3gs left of the shutdown's bound; it goes on in "
                   "the background (thread %s)", what, timeout, thread.name)
    return False


class _Closing:
    """The state a background close shares with `close_within`: done, and whether it ran late."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._late = False

    def mark_late(self) -> bool:
        """Called when the bound passed: False if the close finished meanwhile."""
        with self._lock:
            self._late = not self.done.is_set()
            return self._late

    def run(self, close: Callable[[], None], what: str) -> None:
        failed = False
        try:
            close()
        except Exception:
            failed = True
            logger.warning("%s failed", what, exc_info=True)
        finally:
            with self._lock:
                self.done.set()
                late = self._late
        if late and not failed:
            logger.info("%s finished in the background", what)


#: Background closes still running, which interpreter exit waits for (up to EXIT_WAIT seconds).
_unfinished: set[threading.Thread] = set()
_unfinished_lock = threading.Lock()
EXIT_WAIT = 30.0


def _closing_at_exit(thread: threading.Thread) -> None:
    # Daemon threads, so that they never keep a program alive by themselves; but a program that
    # ends while a cluster is still closing waits for it (the libraries' own exit hooks would
    # otherwise race with the close: Dask's closes its clusters at exit too).
    with _unfinished_lock:
        first = not _unfinished
        _unfinished.add(thread)
    if first:
        atexit.register(_wait_for_closes)


def _wait_for_closes() -> None:
    """At interpreter exit: let the background closes finish, at most EXIT_WAIT seconds."""
    deadline = time.monotonic() + EXIT_WAIT
    with _unfinished_lock:
        threads = list(_unfinished)
        _unfinished.clear()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            logger.warning("a backend was still closing %gs after the program ended; leaving it", EXIT_WAIT)
