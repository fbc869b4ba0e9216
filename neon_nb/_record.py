"""A task as the worker tracks it: `TaskRecord`, the key its id is filed under, the retry policy.

Nothing here takes a lock or starts a thread. A record is changed only with the
worker's lock held (see `neon_nb._scheduler`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from ._config import WorkerConfig
from ._task import RetryFilter, Task, TaskFuture, TaskInfo, TaskState

__all__ = ["IdKey", "RetryOverrides", "TaskRecord", "describe_error", "is_plain_id", "retry_delay",
           "safe_repr", "same_id"]

QUEUED = TaskState.QUEUED


class RetryOverrides(NamedTuple):
    """A task's own retry settings; None means "the worker's"."""

    attempts: int | None
    delay: float | None
    backoff: float | None
    on: RetryFilter | None

    @classmethod
    def of(cls, task: Task) -> RetryOverrides | None:
        """The task's overrides, or None when it has none (the common case: nothing stored)."""
        if (task.retry_attempts is None and task.retry_delay is None and task.retry_backoff is None
                and task.retry_on is None):
            return None
        return cls(task.retry_attempts, task.retry_delay, task.retry_backoff, task.retry_on)


class TaskRecord:
    """A submitted task, as the worker tracks it. Changed only under the worker's lock.

    ``key`` is what the worker files it under (see `is_plain_id`); ``id`` is the
    user's id. ``seq`` orders tasks by submission; the times are
    ``time.monotonic()``; ``attempts`` counts started attempts; ``thread``
    names the thread of the last attempt; ``error`` is the last failure's
    ``"Type: message"``. ``fn``, ``args``, ``kwargs`` and ``future`` are dropped
    when the task ends (`release`). ``journal_key`` is the key of its outcome in
    the worker's journal, set at submission, only when the worker has one.
    """

    __slots__ = ("args", "attempts", "enqueued_at", "error", "finished_at", "fn", "future", "id",
                 "journal_key", "key", "kwargs", "priority", "retry", "seq", "started_at", "state",
                 "submitted_at", "thread")
    journal_key: str  # (not set by __init__: only a worker with a journal sets and reads it)

    def __init__(self, key: Hashable, tid: Hashable, fn: Callable[..., Any], args: tuple,
                 kwargs: dict[str, Any] | None, priority: int, future: TaskFuture,
                 retry: RetryOverrides | None = None) -> None:
        self.key = key
        self.id = tid
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.priority = priority
        self.future = future
        self.retry = retry
        self.state = QUEUED
        self.seq = -1
        self.attempts = 0
        self.submitted_at = 0.0
        self.enqueued_at = 0.0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.thread: str | None = None
        self.error: str | None = None

    def info(self) -> TaskInfo:
        return TaskInfo(self.id, self.state, self.priority, self.seq, self.attempts,
                        self.submitted_at, self.started_at, self.finished_at, self.thread,
                        self.error, self.enqueued_at)

    def release(self) -> TaskFuture:
        """Drop the function, its arguments and the future (an ended task keeps none); the future."""
        fut = self.future
        # An ended record is only read for its status: these are never read again.
        self.fn = self.args = self.kwargs = self.future = None  # type: ignore[assignment]
        return fut


def retry_delay(cfg: WorkerConfig, rec: TaskRecord) -> float | None:
    """Seconds until the next attempt of a failed ``rec``, or None if its attempts are used up.

    ``retry_delay * retry_backoff ** (attempts - 1)``, spread by ``retry_jitter``
    and capped by ``retry_max_delay`` (which bounds a task's own delay too).
    """
    over = rec.retry
    limit = cfg.retry_attempts if over is None or over.attempts is None else over.attempts
    if rec.attempts > limit:
        return None
    delay = cfg.retry_delay if over is None or over.delay is None else over.delay
    backoff = cfg.retry_backoff if over is None or over.backoff is None else over.backoff
    cap = cfg.retry_max_delay
    try:
        delay = delay * backoff ** (rec.attempts - 1)
    except OverflowError:  # a huge backoff: the cap applies
        delay = cap
    if cfg.retry_jitter:
        delay *= 1.0 + random.uniform(-cfg.retry_jitter, cfg.retry_jitter)
    return max(min(delay, cap), 0.0)


# ---------------------------------------------------------------- task ids as keys
# The worker files every task under a key. For ids of the plain built-in types (str, int,
# float, bytes, bool and tuples of them) the key is the id itself: hashing and comparing
# them runs no Python code. Any other id is wrapped in an IdKey whose hash is computed
# once, at submission, outside the lock, and whose equality is identity: so dict
# operations under the lock never call a user's __hash__ or __eq__ (which may raise,
# re-enter the worker, or change while the task runs). A public call that looks a task
# up by such an id finds its key by value, with the lock released (`same_id`).
_PLAIN_ID_TYPES = frozenset({str, int, float, bytes, bool})


def is_plain_id(tid: Any) -> bool:
    """Is ``tid`` of a type whose hash and equality run no user code (then it is its own key)?"""
    t = type(tid)
    if t in _PLAIN_ID_TYPES:
        return True
    return t is tuple and all(is_plain_id(x) for x in tid)


class IdKey:
    """The key of a task id of another type: its hash computed once, identity for equality."""

    __slots__ = ("hash", "id")

    def __init__(self, tid: Hashable, h: int) -> None:
        self.id = tid
        self.hash = h

    def __hash__(self) -> int:
        return self.hash

    def __repr__(self) -> str:
        return f"IdKey({safe_repr(self.id)})"


def same_id(a: Any, b: Any) -> bool:
    """``a == b`` for two task ids; an ``__eq__`` that raises means "not the same"."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def describe_error(exc: BaseException) -> str:
    """``"Type: message"``, never raising (an exception's ``__str__`` is user code)."""
    try:
        name = type(exc).__name__
    except BaseException:  # a metaclass with a hostile __name__
        name = "<exception>"
    try:
        text = str(exc)
    except BaseException as err:  # any failure of user code is described, not raised
        return f"{name}: <str() of the exception raised {type(err).__name__}>"
    return f"{name}: {text}"


def safe_repr(value: Any) -> str:
    """``repr(value)`` for a message; never raises (a task id's ``__repr__`` is user code)."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} whose repr() raised>"
