"""What the out-of-process backends share: a pickling check at submission, lost-worker retries."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Hashable
from typing import Any

from .._errors import TaskPicklingError, WorkerLostError

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


def retry_lost_workers(worker: Any) -> None:
    """Make `WorkerLostError` retryable whatever the worker's or the task's ``retry_on`` says.

    A lost worker process is not the task's failure, so the exception filter
    (which describes the task's own errors) does not apply; the attempt limit,
    delays and backoff still do. NeonWorker has no public hook for this yet:
    this wraps its filter check on the instance (see the backends' report).
    """
    original = getattr(worker, "_retryable", None)
    if original is None:
        logger.warning("worker %s: cannot mark WorkerLostError as always retryable on this version "
                       "of NeonWorker; a lost worker is retried only if retry_on matches it",
                       getattr(worker, "name", worker))
        return
    if getattr(original, "_neon_retries_lost_workers", False):
        return

    def _retryable(rec: Any, exc: BaseException) -> bool:
        return isinstance(exc, WorkerLostError) or original(rec, exc)

    _retryable._neon_retries_lost_workers = True  # type: ignore[attr-defined]
    worker._retryable = _retryable
