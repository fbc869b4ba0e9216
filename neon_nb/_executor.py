"""`NeonExecutor`: a drop-in `concurrent.futures.ThreadPoolExecutor` built on `NeonWorker`."""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

from ._errors import WorkerShutdownError
from ._task import TaskFuture
from ._worker import NeonWorker

__all__ = ["NeonExecutor"]

_executor_ids = itertools.count()


class NeonExecutor(Executor):
    """A `concurrent.futures.Executor` with ThreadPoolExecutor's semantics, plus:

    * priorities: ``submit(fn, *args, priority=5)`` (keyword reserved; pass a
      function's own ``priority`` argument through ``functools.partial``);
    * futures cancelled by ``cancel()`` or ``shutdown(cancel_futures=True)``
      are seen at once by ``wait()`` and ``as_completed()`` (python/cpython#87893);
    * ``shutdown()`` from inside a task does not deadlock;
    * the live pool can be resized (``executor.worker.resize(n)``) and observed
      (``executor.worker``: status, events, metrics, dashboard);
    * a journal (``journal="runs.db"``, as for `NeonWorker`): every call's
      outcome is kept in that file, and a call made again, in this process or
      after a restart (the same function with the same arguments: the calls
      are the keys), returns its stored result without running.

    As with ThreadPoolExecutor, the queue is unbounded and tasks are not
    retried unless asked (``retry_attempts``). At interpreter exit, queued work
    still runs to completion (``exit_timeout=None``), as ThreadPoolExecutor does.
    """

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Callable[..., Any] | None = None, initargs: tuple = (), *,
                 queue_size: int = 0, retry_attempts: int = 0, exit_timeout: float | None = None,
                 **settings: Any) -> None:
        if max_workers is None:
            import os

            max_workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
        if type(max_workers) is not int or max_workers <= 0:
            raise ValueError(f"max_workers must be an int > 0, got {max_workers!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        name = thread_name_prefix or f"NeonExecutor-{next(_executor_ids)}"
        self._worker = NeonWorker(max_workers, queue_size, name=name, retry_attempts=retry_attempts,
                                  exit_timeout=exit_timeout, initializer=initializer,
                                  initargs=initargs, **settings)
        self._worker.start()
        # As with ThreadPoolExecutor: an executor dropped without shutdown() lets its
        # threads finish the queued work and exit. (The worker does not refer back to
        # the executor, so dropping it really frees it.)
        self._finalizer = weakref.finalize(self, self._worker.shutdown, timeout=None, wait=False)
        self._finalizer.atexit = False  # at exit, the worker's own exit hook applies

    @property
    def worker(self) -> NeonWorker:
        """The `NeonWorker` underneath: status, metrics, events, resize."""
        return self._worker

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        priority = kwargs.pop("priority", 0)
        if "task_id" in kwargs:
            # NeonWorker.submit would take it as the task's id; here it belongs to fn,
            # as every keyword does with ThreadPoolExecutor.
            fn = functools.partial(fn, task_id=kwargs.pop("task_id"))
        try:
            return self._worker.submit(fn, *args, priority=priority, **kwargs)
        except WorkerShutdownError:
            raise RuntimeError("cannot schedule new futures after shutdown") from None

    submit.__doc__ = Executor.submit.__doc__

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like `concurrent.futures.Executor.map`; ``chunksize`` is accepted and, as for threads, unused."""
        if type(chunksize) is not int or chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        return super().map(fn, *iterables, timeout=timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As `ThreadPoolExecutor.shutdown`; safe to call many times and from inside a task."""
        self._worker.shutdown(timeout=None, cancel_pending=cancel_futures, wait=wait)
        self._finalizer.detach()
