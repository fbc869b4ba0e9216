"""Tasks: what users submit (`Task`), what they get back (`TaskFuture`, `TaskInfo`)."""

from __future__ import annotations

import concurrent.futures._base as _fb
import enum
import logging
import math
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeAlias

from ._checks import MAX_SECONDS

__all__ = ["RetryFilter", "Task", "TaskFuture", "TaskInfo", "TaskState"]

logger = logging.getLogger("neon_nb")


class TaskState(str, enum.Enum):
    """Where a task is. ``SUCCEEDED``, ``FAILED`` and ``CANCELLED`` are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})

#: Which exceptions are retried: an exception type, a tuple of them, or a predicate.
RetryFilter: TypeAlias = (type[BaseException] | tuple[type[BaseException], ...]
                          | Callable[[BaseException], bool])


@dataclass(slots=True)
class Task:
    """A unit of work: ``function(*args, **kwargs)``, identified by ``id``.

    ``priority``: a higher number runs first; equal priorities run in
    submission order. The ``retry_*`` fields override the worker's settings for
    this task only (None means "use the worker's"). ``retry_on`` chooses which
    exceptions are retried: a tuple of exception types, or a predicate taking
    the exception. Everything is validated here, at construction.
    """

    id: Hashable
    function: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] | None = None
    priority: int = 0
    retry_attempts: int | None = None
    retry_delay: float | None = None
    retry_backoff: float | None = None
    retry_on: RetryFilter | None = None

    def __post_init__(self) -> None:
        tid = self.id
        # The common task (an int or non-empty str id, a tuple of arguments, no keyword
        # arguments and no retry overrides) is checked in one expression: a batch of a
        # million tasks pays for each check.
        if ((type(tid) is int or (type(tid) is str and tid)) and type(self.args) is tuple
                and self.kwargs is None and type(self.priority) is int
                and self.retry_attempts is None and self.retry_delay is None
                and self.retry_backoff is None and self.retry_on is None
                and callable(self.function)):
            return
        if tid is None or (isinstance(tid, (str, bytes)) and not tid):
            raise ValueError(f"Task.id must be a non-empty hashable value, got {tid!r}")
        try:
            hash(tid)
        except TypeError:
            raise TypeError(f"Task.id must be hashable, got unhashable {type(tid).__name__} "
                            f"{tid!r}") from None
        self._check_call(tid)
        self._check_retry(tid)

    def _check_call(self, tid: Hashable) -> None:
        if not callable(self.function):
            raise TypeError(f"Task.function must be callable, got {type(self.function).__name__} "
                            f"{self.function!r} (task {tid!r})")
        if type(self.args) is not tuple:
            if isinstance(self.args, (list, tuple)):
                self.args = tuple(self.args)
            else:
                raise TypeError(f"Task.args must be a tuple, got {type(self.args).__name__} "
                                f"{self.args!r} (task {tid!r}); for one argument write (x,)")
        if self.kwargs is not None:
            if not isinstance(self.kwargs, dict):
                raise TypeError(f"Task.kwargs must be a dict or None, got "
                                f"{type(self.kwargs).__name__} (task {tid!r})")
            bad = [k for k in self.kwargs if not isinstance(k, str)]
            if bad:
                raise TypeError(f"Task.kwargs keys must be str (they are keyword argument names), "
                                f"got {bad[0]!r} (task {tid!r})")
        if type(self.priority) is not int:
            raise TypeError(f"Task.priority must be an int (higher runs first), got "
                            f"{type(self.priority).__name__} {self.priority!r} (task {tid!r})")

    def _check_retry(self, tid: Hashable) -> None:
        if self.retry_attempts is not None and (type(self.retry_attempts) is not int
                                                or self.retry_attempts < 0):
            raise ValueError(f"Task.retry_attempts must be None or an int >= 0, got "
                             f"{self.retry_attempts!r} (task {tid!r})")
        for name in ("retry_delay", "retry_backoff"):
            v = getattr(self, name)
            if v is None:
                continue
            low, high = (1.0, math.inf) if name == "retry_backoff" else (0.0, MAX_SECONDS)
            if type(v) not in (int, float) or not math.isfinite(v) or not low <= v <= high:
                most = "" if high == math.inf else f", at most {high:g}"
                raise ValueError(f"Task.{name} must be None or a finite number >= {low:g}{most}, "
                                 f"got {v!r} (task {tid!r})")
        check_retry_on(self.retry_on, f"Task.retry_on (task {tid!r})")


def check_retry_on(value: Any, where: str) -> None:
    """Validate an exception filter: None, an exception type, a tuple of them, or a callable."""
    if value is None or _is_exc_type(value):
        return
    if isinstance(value, tuple):
        if value and all(_is_exc_type(t) for t in value):
            return
    elif callable(value) and not isinstance(value, type):  # a class is callable, but no predicate
        return
    raise TypeError(f"{where} must be an exception type, a tuple of exception types or a "
                    f"predicate callable(exc) -> bool, got {value!r}")


def _is_exc_type(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseException)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A frozen view of one task's status, as returned by `NeonWorker.get_task_status`.

    Times are ``time.monotonic()`` seconds (None when the step has not happened):
    ``submitted_at`` is the first submission, ``enqueued_at`` the last time the
    task entered the queue (a retry re-enters it), ``started_at`` and
    ``finished_at`` belong to the last attempt.
    ``error`` is ``"ExceptionType: message"`` of the last failure; the exception
    itself is on the task's future.
    """

    id: Hashable
    state: TaskState
    priority: int
    sequence: int
    attempts: int
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    thread: str | None
    error: str | None
    enqueued_at: float | None = None

    @property
    def _enqueued(self) -> float:
        return self.submitted_at if self.enqueued_at is None else self.enqueued_at

    @property
    def done(self) -> bool:
        return self.state.terminal

    @property
    def queue_wait(self) -> float | None:
        """Seconds between the last (re)queueing and the start of the last attempt."""
        if self.started_at is None or self.started_at < self._enqueued:
            return None  # not started since it was (re)queued
        return self.started_at - self._enqueued

    @property
    def run_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class _OnFirstUse:
    """A per-instance attribute made on its first use (a non-data descriptor).

    ``Future.__init__`` makes a Condition (with its RLock) and two lists for
    every future, though most are never waited on: a third of a future's cost,
    and most of its memory while its task is queued. The first access stores
    the value in the instance's ``__dict__`` (``dict.setdefault`` is atomic, so
    two threads racing get the same object); later accesses find it there.
    """

    __slots__ = ("factory", "name")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.__dict__.setdefault(self.name, self.factory())


#: The condition of every future that ended before anyone waited on it. Nobody ever waits
#: on it: a reader who takes it finds the future's state final.
_SETTLED = threading.Condition()
_SETTLED_LOCK = _SETTLED._lock  # type: ignore[attr-defined]  # noqa: SLF001 - entered in C on the hot path


class TaskFuture(Future):
    """The handle `NeonWorker.add_task` returns: a `concurrent.futures.Future`.

    ``cancel()`` withdraws a queued task (or one waiting for a retry) from the
    worker and notifies ``concurrent.futures.wait``/``as_completed`` at once;
    a running or finished task cannot be cancelled. ``task_id`` names the task.

    The worker changes the state of this future under its own lock (so that the
    status counters and the future agree at every instant) and runs the done
    callbacks after releasing it. Its executor-side methods (``mark_running``,
    ``settle_result``, ``settle_exception``, ``settle_cancelled``,
    ``run_callbacks``) are for the worker that owns the future, as
    ``Future.set_result`` is for executors; they use the base class's private
    fields, stable since Python 3.2 and pinned by the test suite.
    """

    __slots__ = ("_canceller", "task_id")
    # The base class's fields that Future.__init__ would make at once, made on first use.
    _condition = _OnFirstUse(threading.Condition)
    _waiters = _OnFirstUse(list)
    _done_callbacks = _OnFirstUse(list)

    def __init__(self, task_id: Hashable = None, canceller: Callable[[Any], bool] | None = None) -> None:
        # Not Future.__init__ (see _OnFirstUse): the same fields, the rest on first use.
        self._state = _fb.PENDING
        self._result = None
        self._exception = None
        self.task_id = task_id
        self._canceller = canceller

    def result(self, timeout: float | None = None) -> Any:
        """As `concurrent.futures.Future.result`; a success is returned without any lock."""
        # A successful future's state and result never change again, and the result was
        # stored before the state: reading the state first is enough.
        if self._state == _fb.FINISHED and self._exception is None:
            return self._result
        return super().result(timeout)

    def cancel(self) -> bool:
        """Withdraw the task if it has not started; False if it runs or has ended. Thread-safe."""
        canceller = self._canceller
        if canceller is None:
            # Not (or no longer) owned by a worker: plain Future semantics.
            if super().cancel():
                return self._notify_cancelled()
            return self.cancelled()
        return canceller(self)

    # --- executor side: called by the owning worker with its lock held ---------
    # They change the state and wake waiters (result(), wait(), as_completed()) but run
    # no callback: the worker calls run_callbacks() after releasing its lock.

    def mark_running(self) -> None:
        """PENDING -> RUNNING: the task's first attempt starts."""
        # Only the worker (under its lock) and cancel() (which goes through that lock)
        # change a pending future, and nobody waits for this transition, so the
        # future's own condition is not needed.
        self._state = _fb.RUNNING

    def settle_result(self, result: Any) -> bool:
        """The task succeeded with ``result``; True if done callbacks wait to run."""
        self._canceller = None
        d = self.__dict__
        cond = d.get("_condition")
        if cond is None:
            # Nobody has looked at this future under its condition (result() and wait()
            # make it first): it gets the shared _SETTLED condition instead. Installed and
            # made final in one critical section of _SETTLED, so that a reader who finds
            # _SETTLED finds the state final (never waits on it).
            with _SETTLED_LOCK:
                cond = d.setdefault("_condition", _SETTLED)
                if cond is _SETTLED:
                    self._result = result
                    self._state = _fb.FINISHED
                    return False  # no waiter, no callback, no notification
        # A reader made the condition: the usual way. Its RLock entered in C:
        # Condition.__enter__ is Python code, and this runs under the worker's lock.
        with cond._lock:  # noqa: SLF001 - the hot path (see above)
            self._result = result
            self._state = _fb.FINISHED
            for waiter in self.__dict__.get("_waiters", ()):
                waiter.add_result(self)
            # notify_all() is Python code; skip it when nobody waits in result().
            # (Checked under the condition: a waiter registers before releasing it.)
            if cond._waiters:  # noqa: SLF001 - the hot path (see above)
                cond.notify_all()
        return bool(self.__dict__.get("_done_callbacks"))

    def settle_exception(self, exc: BaseException) -> None:
        """The task failed for good with ``exc``."""
        with self._condition:
            self._exception = exc
            self._state = _fb.FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._condition.notify_all()
        self._canceller = None

    def settle_cancelled(self) -> bool:
        """Cancel from PENDING or RUNNING (a task waiting for a retry); False if finished.

        Goes straight to CANCELLED_AND_NOTIFIED so that ``wait()`` and
        ``as_completed()`` see it (the standard pool only notifies them when a
        worker later dequeues the item: python/cpython#87893).
        """
        with self._condition:
            if self._state == _fb.FINISHED:
                return False
            if self._state != _fb.CANCELLED_AND_NOTIFIED:
                self._state = _fb.CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                self._condition.notify_all()
        self._canceller = None
        return True

    @property
    def has_callbacks(self) -> bool:
        """Are done callbacks waiting to run (read under the worker's lock)?"""
        return bool(self.__dict__.get("_done_callbacks"))

    def run_callbacks(self) -> None:
        """Run the done callbacks, each isolated (the owning worker calls it without its lock)."""
        self._invoke_callbacks()

    def add_done_callback(self, fn: Callable[[Future], object]) -> None:
        """As `concurrent.futures.Future.add_done_callback`; what ``fn`` raises is logged."""
        with self._condition:
            if self._state not in (_fb.CANCELLED, _fb.CANCELLED_AND_NOTIFIED, _fb.FINISHED):
                self._done_callbacks.append(fn)
                return
        self._run_callback(fn)

    def _invoke_callbacks(self) -> None:
        # The base class lets a BaseException out of a callback: on a worker thread that
        # killed the thread, and in a worker call it cut the call short. Each callback is
        # isolated here, whatever it raises (SystemExit and KeyboardInterrupt included).
        for callback in self.__dict__.get("_done_callbacks", ()):
            self._run_callback(callback)

    def _run_callback(self, callback: Callable[[Future], object]) -> None:
        try:
            callback(self)
        except Exception:
            logger.exception("done callback %r of task %r raised", callback, self.task_id)
        except BaseException as exc:
            logger.error("done callback %r of task %r raised %s", callback, self.task_id,
                         type(exc).__name__)

    def _notify_cancelled(self) -> bool:
        with self._condition:
            if self._state == _fb.CANCELLED:
                self._state = _fb.CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                self._condition.notify_all()
        return True

    def __repr__(self) -> str:
        return f"<TaskFuture {self.task_id!r} {self._state.lower()}>"
