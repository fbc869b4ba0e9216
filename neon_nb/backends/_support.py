"""What the out-of-process backends share: a pickling check at submission, lost-worker retries."""

from __future__ import annotations

import logging
import pickle
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
