"""The backend interface, and the default: run the task on the worker thread itself."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any


class Backend:
    """Where tasks execute. Subclasses override what they need.

    ``call`` is None to run ``fn(*args, **kwargs)`` directly on the worker
    thread, or a callable ``call(fn, args, kwargs) -> result`` that runs it
    elsewhere and blocks the worker thread until the outcome is known (raising
    the task's exception).
    """

    name = "base"
    call: Callable[[Callable, tuple, dict], Any] | None = None
    always_retry: tuple[type[BaseException], ...] = ()
    """Exceptions that are the backend's failure, not the task's (a lost worker process):
    retried whatever ``retry_on`` says; the attempt limit, delays and backoff still apply."""

    def start(self, worker: Any) -> None:
        """Called by `NeonWorker.start` before any thread starts; raise a clear error if unusable."""

    def stop(self, worker: Any, timeout: float | None = None) -> None:
        """Called once at the end of `NeonWorker.shutdown`; must return within ``timeout`` seconds.

        ``timeout`` is what is left of the shutdown's bound (None: unbounded).
        """

    def check_task(self, task_id: Hashable, fn: Callable, args: tuple, kwargs: dict | None) -> None:
        """Raise at submission if this backend cannot run the task (e.g. it cannot be pickled)."""


class ThreadBackend(Backend):
    """The default: tasks run on the worker's own threads."""

    name = "threads"
