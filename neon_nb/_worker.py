"""`NeonWorker`: where a task goes from submitted to done, top to bottom.

Concurrency design (read this before changing anything below):

* One lock (``self._lock``, a plain `threading.Lock`) guards every piece of
  scheduling state: the queue (a FIFO per priority, and a heap of the
  priorities present), the task tables, the counters, the pool bookkeeping,
  the retry heap and the event log with the subscribers' cursors. Conditions
  built on it wait for room in the queue, for completion, for resume, and for
  the monitor's next deadline. One lock means one order of events: a status
  read, a future and an event stream always agree.
* Nothing that can call user code runs under that lock: task functions, done
  callbacks, event callbacks and logging all happen after it is released.
* Idle worker threads block on a `queue.SimpleQueue` of wake-up tokens (a C
  implementation: cheap to put and to wait on). One ``_ITEM`` token is put
  per queued task, so tokens >= queued tasks at all times; the queue, not the
  token, decides which task runs, so priority order holds. A token that finds
  the queue empty (its task was cancelled) is simply dropped. Under load a
  thread records the attempt it finished and claims the next task in one
  critical section (`_work`).
* Shrinking the pool: ``_retire`` counts threads that must exit. A thread
  checks it before claiming a task, and idle threads are woken by ``_RETIRE``
  tokens. Whoever decrements ``_retire`` exits; surplus ``_RETIRE`` tokens are
  ignored.
* Thread death: a thread that leaves normally removes itself from
  ``_threads``; one whose loop crashes adds itself to ``_crashed`` and the
  monitor replaces it (never judge by ``Thread.is_alive()``: it is False for a
  thread that has started but not yet run).
* A task waiting for its retry is in the monitor's heap, not on a thread.
* Shutdown: close (no new task), optionally cancel what is queued, wait for
  the live tasks up to the timeout, cancel what is left, then put one
  ``_STOP`` token per thread *behind* every item token and join the threads
  outside the lock. Threads are daemons so that a hung task cannot hang the
  interpreter; an exit hook (run before Python joins threads) shuts every
  worker down gracefully within its ``shutdown_timeout`` first.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from ._checks import bounded_wait, check_hashable, check_timeout, deadline_of
from ._config import FROM_CONFIG, WorkerConfig, _FromConfig, config_manager
from ._errors import (
    BackendUnavailableError,
    DuplicateTaskError,
    NeonError,
    QueueFullError,
    TaskPicklingError,
    UnknownTaskError,
    WorkerShutdownError,
)
from ._events import Event, EventKind, Subscription
from ._metrics import OUTCOME_FAILED, OUTCOME_RETRY, OUTCOME_SUCCEEDED, Metrics
from ._task import Task, TaskFuture, TaskInfo, TaskState, check_retry_on

__all__ = ["HealthReport", "NeonWorker", "ShutdownReport", "WorkerState"]

# No NullHandler here: with no logging configured, Python's last-resort handler prints
# WARNING and above on stderr, so that a task that fails for good never fails silently.
logger = logging.getLogger("neon_nb")

_now = time.monotonic


def _bounded(left: float | None) -> float | None:
    """A wait argument the OS accepts (timeouts above threading.TIMEOUT_MAX overflow)."""
    return left if left is None or left < threading.TIMEOUT_MAX else threading.TIMEOUT_MAX


# ---------------------------------------------------------------- task ids as keys
# The worker files every task under a key. For ids of the plain built-in types (str, int,
# float, bytes, bool and tuples of them) the key is the id itself: hashing and comparing
# them runs no Python code. Any other id is wrapped in an _IdKey whose hash is computed
# once, at submission, outside the lock, and whose equality is identity: so dict
# operations under the lock never call a user's __hash__ or __eq__ (which may raise,
# re-enter the worker, or change while the task runs). Public calls that look a task up
# by such an id find its key by value *outside* the lock (see NeonWorker._key_of).
_PLAIN_ID_TYPES = frozenset({str, int, float, bytes, bool})


def _is_plain(tid: Any) -> bool:
    t = type(tid)
    if t in _PLAIN_ID_TYPES:
        return True
    return t is tuple and all(_is_plain(x) for x in tid)


class _IdKey:
    """The key of a task id of a user-defined type: cached hash, identity equality."""

    __slots__ = ("hash", "id")

    def __init__(self, tid: Hashable, h: int) -> None:
        self.id = tid
        self.hash = h

    def __hash__(self) -> int:
        return self.hash

    def __repr__(self) -> str:
        return f"_IdKey({self.id!r})"


def _same_id(a: Any, b: Any) -> bool:
    """``a == b`` for two task ids; an ``__eq__`` that raises means "not the same"."""
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _describe_error(exc: BaseException) -> str:
    """``"Type: message"``, never raising (an exception's ``__str__`` is user code)."""
    try:
        name = type(exc).__name__
    except BaseException:  # a metaclass with a hostile __name__
        name = "<exception>"
    try:
        text = str(exc)
    except BaseException as err:  # any failure of user code is described
        return f"{name}: <str() of the exception raised {type(err).__name__}>"
    return f"{name}: {text}"


_new_event = tuple.__new__
_STARTED = EventKind.TASK_STARTED
_SUBMITTED = EventKind.TASK_SUBMITTED
_ITEM = 1
_RETIRE = 2
_STOP = 3

QUEUED, RUNNING, RETRY_WAIT = TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRY_WAIT
SUCCEEDED, FAILED, CANCELLED = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED


class WorkerState:
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"


_WORKING_STATES = (WorkerState.RUNNING, WorkerState.PAUSED, WorkerState.SHUTTING_DOWN)
_FULL_FAILURE_LOGS = 10  # final failures of a worker logged at WARNING before DEBUG
_SETTINGS = tuple(f.name for f in fields(WorkerConfig))


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What `NeonWorker.shutdown` did.

    ``clean`` is True when every task reached a terminal state before the
    timeout. ``succeeded``, ``failed`` and ``cancelled_total`` count every
    task of the worker's life; ``cancelled`` are the ids of the tasks the
    shutdown itself cancelled (queued, waiting for a retry, or not yet queued
    by a background batch); ``abandoned`` the ids of tasks still running when
    the timeout expired (their threads are left to finish them).
    ``failures`` pairs the id and the error (``"Type: message"``) of each
    failed task the worker still remembers (the last ``history_size`` tasks).
    ``complete`` is False while the shutdown is still in progress: when this
    call's timeout expired while a shutdown started by another call went on,
    or when it was called from inside a task (it completes when that task
    returns; `NeonWorker.shutdown_report` then holds the final report).
    """

    clean: bool
    elapsed: float
    timeout: float | None
    succeeded: int
    failed: int
    cancelled: tuple[Hashable, ...]
    abandoned: tuple[Hashable, ...]
    complete: bool = True
    cancelled_total: int = 0
    failures: tuple[tuple[Hashable, str], ...] = ()

    def __str__(self) -> str:
        if not self.complete:
            head = "shutdown still in progress"
        else:
            head = "clean shutdown" if self.clean else "shutdown timed out"
        text = (f"{head} in {self.elapsed:.2f}s: {self.succeeded} succeeded, {self.failed} "
                f"failed, {self.cancelled_total} cancelled ({len(self.cancelled)} by the "
                f"shutdown), {len(self.abandoned)} abandoned while running")
        if self.failures:
            shown = "; ".join(f"{_safe_repr(tid)}: {err}" for tid, err in self.failures[:5])
            more = len(self.failures) - 5
            text += f"\nfailed: {shown}" + (f"; and {more} more" if more > 0 else "")
        return text


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The monitor's latest check. ``stuck`` maps task ids to seconds running beyond the threshold."""

    checked_at: float
    healthy: bool
    state: str
    expected_threads: int
    alive_threads: int
    replaced_threads: int
    stuck: Mapping[Hashable, float]
    queue_fill: float


class _Record:
    """A submitted task, as the worker tracks it. Mutated only under the worker lock."""

    __slots__ = (
        "args",
        "attempts",
        "enqueued_at",
        "error",
        "finished_at",
        "fn",
        "future",
        "id",
        "key",
        "kwargs",
        "priority",
        "retry_attempts",
        "retry_backoff",
        "retry_delay",
        "retry_on",
        "seq",
        "started_at",
        "state",
        "submitted_at",
        "thread",
    )

    def __init__(self, key: Hashable, tid: Hashable, fn: Callable, args: tuple, kwargs: dict | None,
                 priority: int, future: TaskFuture | None) -> None:
        self.key = key
        self.id = tid
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.priority = priority
        self.future = future
        self.state = QUEUED
        self.attempts = 0
        self.started_at = None
        self.finished_at = None
        self.thread = None
        self.error = None
        self.retry_attempts = None
        self.retry_delay = None
        self.retry_backoff = None
        self.retry_on = None

    def info(self) -> TaskInfo:
        return TaskInfo(self.id, self.state, self.priority, self.seq, self.attempts,
                        self.submitted_at, self.started_at, self.finished_at, self.thread, self.error,
                        self.enqueued_at)


_live_workers: weakref.WeakSet[NeonWorker] = weakref.WeakSet()
_all_workers: weakref.WeakSet[NeonWorker] = weakref.WeakSet()
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


def _after_fork_in_child() -> None:
    # os.fork() copies a process with one thread: a worker's threads, and possibly a lock
    # held by one of them at the fork, stay behind in the parent. Every worker gets fresh
    # locks; a started one becomes a stopped copy that refuses new tasks with a clear error.
    global _exit_hook_lock
    _exit_hook_lock = threading.Lock()
    for w in list(_all_workers):
        w._after_fork_in_child()
    _live_workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _at_exit() -> None:
    # Runs before the interpreter joins non-daemon threads (threading._register_atexit):
    # every worker still running gets a graceful, bounded shutdown.
    for w in list(_live_workers):
        try:
            w._exit_shutdown()
        except Exception:  # pragma: no cover - last-chance cleanup
            logger.exception("shutting down %r at interpreter exit failed", w)


def _install_exit_hook() -> None:
    global _exit_hook_installed
    with _exit_hook_lock:
        if _exit_hook_installed:
            return
        _exit_hook_installed = True
    try:
        threading._register_atexit(_at_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # interpreter already shutting down, or no hook
        import atexit

        atexit.register(_at_exit)


_worker_names = itertools.count()


class NeonWorker:
    """A thread-safe background worker: a bounded priority queue and a pool of threads.

    Example::

        from neon_nb import NeonWorker, Task

        worker = NeonWorker(max_workers=4, queue_size=100)
        worker.start()                      # optional: the first task starts it too
        fut = worker.add_task(Task("t1", pow, (2, 10), priority=1))
        print(fut.result())                 # 1024
        worker.submit(print, "hello")       # or a plain callable
        worker.shutdown(timeout=30)         # bounded; returns a ShutdownReport

    A worker starts its threads with ``start()``, or on its first task if
    ``start()`` was not called (``pause()`` first to queue tasks without
    running them). Higher ``priority`` runs first; FIFO among equals.

    Settings (see `WorkerConfig` for each): those not given here come from
    `neon_nb.get_config()` and follow later `update_config()` calls; those
    given here are pinned for this worker (change them with `configure`).
    ``name`` prefixes thread names (``neon-worker_0``...). ``backend``:
    ``"threads"`` (default), ``"processes"``, ``"dask"``, a scheduler
    address, a ``distributed.Client`` or a `neon_nb.backends.Backend`;
    scheduling stays here whatever the backend. ``retry_on``: which
    exceptions are retried (exception types, or a predicate).
    ``exit_timeout``: how long the exit hook waits for this worker at
    interpreter exit (default: ``shutdown_timeout``; None: everything).

    Every public method is safe to call from any thread, including from
    inside a task and from callbacks (see the README's Guarantees).
    """

    def __init__(self, max_workers: int | None = None, queue_size: int | None = None, *,
                 name: str | None = None, backend: Any = "threads",
                 shutdown_timeout: float | None = None, log_level: str | None = None,
                 retry_attempts: int | None = None, retry_delay: float | None = None,
                 health_check_interval: float | None = None, enable_metrics: bool | None = None,
                 retry_backoff: float | None = None, retry_max_delay: float | None = None,
                 retry_jitter: float | None = None, history_size: int | None = None,
                 stuck_task_threshold: float | None = None,
                 exit_timeout: float | _FromConfig | None = FROM_CONFIG,
                 retry_on: Any = (Exception,)) -> None:
        given = {"shutdown_timeout": shutdown_timeout, "log_level": log_level,
                 "retry_attempts": retry_attempts, "retry_delay": retry_delay,
                 "health_check_interval": health_check_interval, "enable_metrics": enable_metrics,
                 "retry_backoff": retry_backoff, "retry_max_delay": retry_max_delay,
                 "retry_jitter": retry_jitter, "history_size": history_size,
                 "stuck_task_threshold": stuck_task_threshold}
        pinned = {k: v for k, v in given.items() if v is not None}
        if max_workers is not None:
            pinned["max_workers"] = max_workers
        if queue_size is not None:
            pinned["queue_size"] = queue_size
        base = config_manager().get()
        self._config: WorkerConfig = base.replace(**pinned)  # validates, names bad keys
        self._pinned = frozenset(pinned)
        if name is None:
            n = next(_worker_names)
            name = "neon" if n == 0 else f"neon{n}"
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        if exit_timeout == "config":  # the spelling of earlier versions
            exit_timeout = FROM_CONFIG
        if exit_timeout is not FROM_CONFIG and exit_timeout is not None and not (
                type(exit_timeout) in (int, float) and exit_timeout >= 0):
            raise ValueError(f"exit_timeout must be None (wait for everything) or a number of "
                             f"seconds >= 0 (default: the shutdown_timeout setting), got "
                             f"{exit_timeout!r}")
        self._exit_timeout = exit_timeout
        check_retry_on(retry_on, "retry_on")
        self._retry_on = retry_on

        self._new_locks()
        self._put_waiters = 0
        # Calls blocked in wait_for_completion()/shutdown() from inside a task: they wait
        # for every task but their own and each other's (see _wait_idle).
        self._inside_waiters = 0
        # Worker threads blocked in a public call (from a task or a callback): each one
        # has a stand-in thread for the time of its wait, so the pool keeps its size.
        self._lent = 0
        self._forked_from: int | None = None

        # The queue: one FIFO per priority, and a heap of the priorities present
        # (negated). Push and pop are O(1) for the usual handful of priorities,
        # where one heap of all tasks costs O(log n) tuple comparisons per task.
        self._buckets: dict[int, deque[_Record]] = {}
        self._prios: list[int] = []
        self._seq = itertools.count()
        self._tokens: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._live: dict[Hashable, _Record] = {}
        self._history: OrderedDict[Hashable, _Record] = OrderedDict()
        # hash -> keys of the live and remembered tasks whose ids are not plain (_IdKey)
        self._opaque: dict[int, list[_IdKey]] = {}
        self._auto_ids = itertools.count()
        # Entries of cancelled tasks still in the queue's buckets and in the retry heap:
        # dropped lazily, and compacted away when they outnumber the live ones.
        self._dead_queued = 0
        self._dead_retry = 0
        self._failures_logged = itertools.count()
        # Background batches: records accepted but not yet queued, in order, fed by a
        # feeder thread as room allows (see add_tasks(background=True)).
        self._backlog: deque[_Record] = deque()
        self._backlog_futures: dict[TaskFuture, _Record] = {}
        self._feeder: threading.Thread | None = None

        self._queued = 0
        self._running = 0
        self._retry_waiting = 0
        self._submitted = 0
        self._succeeded = 0
        self._failed = 0
        self._cancelled = 0
        self._retried = 0

        self._threads: dict[str, threading.Thread] = {}
        self._busy: dict[str, _Record] = {}  # thread name -> running record
        self._thread_ids = itertools.count()
        self._retire = 0
        self._replaced = 0
        self._crashed: set[str] = set()

        self._state = WorkerState.CREATED
        self._paused = False
        self._closed = False
        self._stopping = False  # _STOP tokens sent
        self._started_at: float | None = None
        self._report: ShutdownReport | None = None
        self._shutdown_done = threading.Event()
        self._shutdown_claimed = False  # a call is completing the shutdown
        self._shutdown_started_at: float | None = None
        self._shutdown_cancelled: list[Hashable] = []

        self._retry_heap: list[tuple[float, int, _Record]] = []
        self._monitor: threading.Thread | None = None
        self._health: HealthReport | None = None
        self._next_health = 0.0

        self._subs: tuple[Subscription, ...] = ()
        self._inline_subs: tuple[Subscription, ...] = ()
        self._log: deque[Event] = deque(maxlen=1)  # the event log, see _events.py
        self._need_wake = True
        self._event_seq = itertools.count()
        self._sub_ids = itertools.count()

        self.metrics: Metrics | None = None
        self._metrics_pending = None
        if self._config.enable_metrics:
            self._enable_metrics()

        from .backends import Backend, make_backend

        self._backend = make_backend(backend)
        self._call = self._backend.call  # None for threads: call the function directly
        self._always_retry = tuple(self._backend.always_retry)
        # None when the backend accepts any callable (threads): skip the call per task.
        self._check_task = (None if type(self._backend).check_task is Backend.check_task
                            else self._backend.check_task)
        config_manager().add_listener(self)
        _all_workers.add(self)

    def _new_locks(self) -> None:
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._resumed = threading.Condition(self._lock)
        self._monitor_cv = threading.Condition(self._lock)

    def _after_fork_in_child(self) -> None:
        """In a child made by os.fork(): fresh locks; a started worker becomes a stopped copy."""
        self._new_locks()
        self._tokens = queue.SimpleQueue()
        if self.metrics is not None:
            self.metrics._after_fork_in_child()
        for sub in self._subs:
            sub._after_fork_in_child(self._lock)
        if self._state == WorkerState.CREATED:
            return  # never started: it can be started in the child as usual
        self._forked_from = os.getppid()
        self._closed = self._stopping = True
        self._backlog.clear()
        self._backlog_futures.clear()
        self._feeder = None
        self._threads.clear()
        self._crashed.clear()
        self._monitor = None
        self._lent = self._inside_waiters = self._put_waiters = 0
        self._state = WorkerState.STOPPED
        self._shutdown_done = threading.Event()
        if self._report is None:
            self._report = ShutdownReport(
                clean=False, elapsed=0.0, timeout=0.0, succeeded=self._succeeded,
                failed=self._failed, cancelled=(),
                abandoned=tuple(r.id for r in self._busy.values()))
        self._shutdown_done.set()
        self._subs = self._inline_subs = ()

    def _closed_error(self, what: str) -> WorkerShutdownError:
        if self._forked_from is not None:
            return WorkerShutdownError(
                f"worker {self.name!r} was copied into this process by os.fork() (its threads "
                f"stayed in process {self._forked_from}): it accepts no {what} here. Create a "
                f"new NeonWorker in this process, or fork before starting the worker")
        return WorkerShutdownError(f"worker {self.name!r} is shut down: it accepts no {what}")

    # ================================================================ lifecycle
    def start(self) -> NeonWorker:
        """Start the threads. Idempotent; returns self. Raises if the worker was shut down."""
        with self._lock:
            if self._closed:
                raise WorkerShutdownError(f"worker {self.name!r} was shut down; create a new one")
            if self._state != WorkerState.CREATED:
                return self
        self._backend.start(self)  # may raise a clear error (e.g. unreachable scheduler)
        with self._lock:
            if self._state != WorkerState.CREATED:
                return self
            self._state = WorkerState.PAUSED if self._paused else WorkerState.RUNNING
            self._started_at = _now()
            n = self._config.max_workers
            new = [self._new_thread_locked() for _ in range(n)]
            monitor = self._monitor = self._new_monitor_locked()
            self._emit_locked(EventKind.WORKER_STARTED, detail=n)
        # Registered before any thread runs: a thread that fails at once (an
        # initializer) may shut the worker down before start() returns.
        _live_workers.add(self)
        _install_exit_hook()
        for t in new:
            t.start()
        monitor.start()
        logger.debug("worker %s started with %d threads", self.name, n)
        self._after_emit()
        return self

    def __enter__(self) -> NeonWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def state(self) -> str:
        """``"created"``, ``"running"``, ``"paused"``, ``"shutting_down"`` or ``"stopped"``."""
        return self._state

    @property
    def config(self) -> WorkerConfig:
        """This worker's current settings (an immutable snapshot)."""
        return self._config

    # ============================================================ submission
    def add_task(self, task: Task, block: bool = True, timeout: float | None = None) -> TaskFuture:
        """Queue ``task``; return its `TaskFuture` (a `concurrent.futures.Future`).

        Full queue: wait up to ``timeout`` seconds (forever if None) for room,
        then raise `QueueFullError`; with ``block=False`` raise at once.
        Raises `DuplicateTaskError` if a task with this id is still live, and
        `WorkerShutdownError` after `shutdown`. Thread-safe.
        """
        if type(task) is not Task and not isinstance(task, Task):
            raise TypeError(f"task must be a neon_nb.Task, got {type(task).__name__} {task!r}; "
                            f"use submit(fn, *args) for a plain callable")
        deadline = deadline_of(block, timeout)
        rec = self._record_for(task, self._key_of(task.id))
        return self._add(rec, deadline)

    def submit(self, fn: Callable[..., Any], /, *args: Any, priority: int = 0,
               task_id: Hashable | None = None, **kwargs: Any) -> TaskFuture:
        """Queue ``fn(*args, **kwargs)`` and return its future; blocks while the queue is full.

        ``task_id`` defaults to a generated ``"task-<n>"``. Thread-safe.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        if type(priority) is not int:
            raise TypeError(f"priority must be an int (higher runs first), got "
                            f"{type(priority).__name__} {priority!r}")
        if task_id is None:
            task_id = key = f"task-{next(self._auto_ids)}"
        else:
            Task(task_id, fn)  # validates the id
            key = self._key_of(task_id)
        if self._check_task is not None:
            self._check_task(task_id, fn, args, kwargs or None)
        rec = _Record(key, task_id, fn, args, kwargs or None, priority,
                      TaskFuture(task_id, self._cancel_future, key))
        return self._add(rec, None)

    def _record_for(self, task: Task, key: Hashable) -> _Record:
        """A new record (and future) for ``task``; checked by the backend first."""
        if self._check_task is not None:
            self._check_task(task.id, task.function, task.args, task.kwargs)
        rec = _Record(key, task.id, task.function, task.args, task.kwargs, task.priority,
                      TaskFuture(task.id, self._cancel_future, key))
        if (task.retry_attempts is not None or task.retry_delay is not None
                or task.retry_backoff is not None or task.retry_on is not None):
            rec.retry_attempts = task.retry_attempts
            rec.retry_delay = task.retry_delay
            rec.retry_backoff = task.retry_backoff
            rec.retry_on = task.retry_on
        return rec

    def _key_of(self, tid: Hashable) -> Hashable:
        """The key ``tid`` is filed under: its known key if a task with an equal id is known."""
        return self._keys_of((tid,))[0]

    def _keys_of(self, ids: Sequence[Hashable]) -> list[Hashable]:
        # Plain ids are their own keys. For others, hashing and comparing run user code:
        # both happen here, on the calling thread, with the lock released (it is taken
        # once, only to read the candidates with the same hash).
        keys: list[Any] = [tid if _is_plain(tid) else None for tid in ids]
        hashes = {i: hash(tid) for i, tid in enumerate(ids) if keys[i] is None}
        if not hashes:
            return keys
        with self._lock:
            known = {h: list(self._opaque.get(h, ())) for h in set(hashes.values())}
        for i, h in hashes.items():
            tid = ids[i]
            keys[i] = next((k for k in known[h] if _same_id(k.id, tid)), None) or _IdKey(tid, h)
        return keys

    def _start_on_first_task(self) -> None:
        """A worker nobody started starts with its first task (a forgotten start() once hung)."""
        if self._state == WorkerState.CREATED:
            try:
                self.start()
            except WorkerShutdownError:
                pass  # shut down meanwhile: the submission reports it

    def _add(self, rec: _Record, deadline: float | None) -> TaskFuture:
        fut: TaskFuture = rec.future  # type: ignore[assignment]  # the record drops it when done
        self._start_on_first_task()
        with self._lock:
            problem = self._admit_locked(rec, deadline)
            if problem is None:
                self._enqueue_many_locked((rec,))
        if problem is not None:
            raise self._admission_error(problem, rec)
        self._tokens.put(_ITEM)
        if self._inline_subs:
            self._after_emit()
        return fut

    def _admit_locked(self, rec: _Record, deadline: float | None) -> tuple | None:
        """Why ``rec`` cannot be queued now (after waiting for room), or None.

        Problems are returned, not raised: their messages show the task's id, whose
        ``repr`` is user code, so they are formatted after the lock is released.
        """
        if self._closed:
            return ("closed",)
        live = self._live.get(rec.key)
        if live is not None:
            return ("duplicate", live.state.value)
        size = self._config.queue_size
        if size and self._queued >= size:
            problem = self._wait_for_room_locked(deadline)
            if problem is not None:
                return problem
            if rec.key in self._live:  # someone else took the id while we waited
                return ("duplicate_while_waiting",)
        return None

    def _admission_error(self, problem: tuple, rec: _Record, n: int = 1) -> NeonError:
        kind = problem[0]
        tid = _safe_repr(rec.id)
        if kind == "closed":
            return self._closed_error(f"new task (task {tid})")
        if kind == "closed_while_waiting":
            return WorkerShutdownError(f"worker {self.name!r} shut down while task {tid} waited "
                                       f"for room")
        if kind == "duplicate":
            return DuplicateTaskError(f"a task with id {tid} is still {problem[1]}; ids must be "
                                      f"unique among live tasks")
        if kind == "duplicate_while_waiting":
            return DuplicateTaskError(f"a task with id {tid} was added while this call waited "
                                      f"for room")
        queued, size = problem[1], problem[2]
        if kind == "full_now":
            return QueueFullError(f"queue is full ({queued}/{size} tasks) and block=False (task "
                                  f"{tid}); retry later, raise queue_size, or pass block=True "
                                  f"with a timeout")
        return QueueFullError(f"queue stayed full ({queued}/{size} tasks) for the whole timeout "
                              f"(task {tid}, {n} not queued)")

    def add_tasks(self, tasks: Iterable[Task], block: bool = True, timeout: float | None = None, *,
                  background: bool = False) -> list[TaskFuture]:
        """Queue many tasks at once; cheaper per task than a loop of `add_task`.

        The whole batch is validated first (types, and ids unique within the
        batch and among live tasks): on a bad item nothing is queued. Tasks are
        then queued in order as room allows. If the queue stays full past
        ``timeout`` (or at once with ``block=False``), `QueueFullError` is raised
        with ``.submitted`` (futures of the tasks already queued, which run
        normally) and ``.remaining`` (the tasks that were not queued).
        Returns the futures in the order of ``tasks``. Thread-safe.

        ``background=True`` returns at once, however full the queue: what does
        not fit now waits in the worker's backlog and enters the queue in order
        as room frees, fed by a thread of the worker (the bounded queue still
        holds the workers back; only the caller is not). Use it in a notebook
        cell so that a large batch does not keep the cell busy.
        ``get_status()["backlog_tasks"]`` counts the tasks waiting to enter;
        cancelling one's future withdraws it; `cancel_pending` and a shutdown
        cancel them all. A task whose id is live again when its turn comes
        fails with `DuplicateTaskError`.
        """
        tasks = _as_list("tasks", tasks)
        if not isinstance(background, bool):
            raise TypeError(f"background must be True or False, got {background!r}")
        deadline = deadline_of(block, timeout)
        recs = self._records_for_batch(tasks)
        futures: list[TaskFuture] = [r.future for r in recs]  # type: ignore[misc]
        self._start_on_first_task()
        if background:
            return self._add_in_background(recs, futures, tasks)
        with self._lock:
            done, woken, problem, culprit = self._enqueue_batch_locked(recs, deadline)
        put = self._tokens.put
        for _ in range(done - woken):
            put(_ITEM)
        if done and self._inline_subs:
            self._after_emit()
        if problem is not None:
            raise self._batch_error(problem, culprit or recs[0], futures, tasks, done)
        return futures

    def _add_in_background(self, recs: list[_Record], futures: list[TaskFuture],
                           tasks: list[Task]) -> list[TaskFuture]:
        feeder = None
        with self._lock:
            problem, done = self._backlog_batch_locked(recs)
            if problem is None and self._backlog and self._feeder is None:
                feeder = self._feeder = threading.Thread(target=self._feed,
                                                         name=f"{self.name}-feeder", daemon=True)
        if problem is not None:
            raise self._batch_error(problem, problem[-1], futures, tasks, 0)
        for _ in range(done):
            self._tokens.put(_ITEM)
        if feeder is not None:
            feeder.start()
        if done and self._inline_subs:
            self._after_emit()
        return futures

    def _backlog_batch_locked(self, recs: list[_Record]) -> tuple[tuple | None, int]:
        """Queue what fits of a background batch, put the rest in the backlog: (problem, queued)."""
        if self._closed:
            return ("closed", recs[0]), 0
        dup = next((r for r in recs if r.key in self._live), None)
        if dup is not None:
            return ("duplicate", self._live[dup.key].state.value, dup), 0
        size = self._config.queue_size
        room = len(recs) if not size else max(0, size - self._queued)
        n = 0 if self._backlog_futures else min(room, len(recs))  # behind an earlier backlog
        self._enqueue_many_locked(recs[:n])
        for rec in recs[n:]:
            fut: TaskFuture = rec.future  # type: ignore[assignment]
            fut._canceller = self._cancel_backlogged
            self._backlog_futures[fut] = rec
            self._backlog.append(rec)
        return None, n

    def _feed(self) -> None:
        """The feeder thread: move backlog records into the queue, in order, as room frees."""
        while True:
            with self._lock:
                batch, clashes = self._take_backlog_locked()
                if batch is None:
                    self._feeder = None
                    return
                self._enqueue_many_locked(batch)
            for _ in batch:
                self._tokens.put(_ITEM)
            self._after_cancel(clashes)  # their done callbacks, then inline deliveries

    def _take_backlog_locked(self) -> tuple[list[_Record] | None, list[TaskFuture]]:
        """Wait for room, then take what fits from the backlog; (None, []) when there is nothing."""
        while True:
            if self._closed or not self._backlog_futures:
                self._backlog.clear()  # only withdrawn records can be left
                return None, []
            size = self._config.queue_size
            room = len(self._backlog) if not size else size - self._queued
            if room > 0:
                break
            self._put_waiters += 1
            try:
                self._not_full.wait()
            finally:
                self._put_waiters -= 1
        batch: list[_Record] = []
        clashes: list[TaskFuture] = []
        keys: set[Hashable] = set()
        while self._backlog and len(batch) < room:
            rec = self._backlog.popleft()
            fut: TaskFuture = rec.future  # type: ignore[assignment]
            if self._backlog_futures.pop(fut, None) is None:
                continue  # withdrawn (cancelled) while it waited
            if rec.key in self._live or rec.key in keys:
                fut._set_exception_locked(DuplicateTaskError(
                    "a task with the same id was still live when this task of a background batch "
                    "was to enter the queue"))
                clashes.append(fut)
                continue
            keys.add(rec.key)
            fut._canceller = self._cancel_future
            batch.append(rec)
        return batch, clashes

    def _cancel_backlogged(self, fut: TaskFuture) -> bool:
        # TaskFuture.cancel() of a task still in the backlog lands here.
        with self._lock:
            rec = self._backlog_futures.pop(fut, None)
            if rec is not None:
                self._withdraw_locked(rec)
        if rec is None:  # it entered the queue meanwhile
            return self._cancel_future(fut)
        self._after_cancel([fut])
        return True

    def _withdraw_locked(self, rec: _Record) -> None:
        """A backlog record leaves without entering the queue: submitted and cancelled at once."""
        now = _now()
        rec.seq = next(self._seq)
        rec.submitted_at = rec.enqueued_at = rec.finished_at = now
        rec.state = CANCELLED
        self._submitted += 1
        self._cancelled += 1
        if self._closed:
            self._shutdown_cancelled.append(rec.id)
        if self._subs:
            self._emit_locked(EventKind.TASK_SUBMITTED, rec)
            self._emit_locked(EventKind.TASK_CANCELLED, rec)
        fut = rec.future
        if type(rec.key) is _IdKey:
            self._index_key_locked(rec.key)  # so that get_task_status finds it by value
        self._remember_locked(rec)
        fut._set_cancelled_locked()  # type: ignore[union-attr]
        if len(self._live) + len(self._backlog_futures) <= self._inside_waiters:
            self._all_done.notify_all()

    def _withdraw_backlog_locked(self) -> list[TaskFuture]:
        futures = list(self._backlog_futures)
        recs = list(self._backlog_futures.values())
        self._backlog_futures.clear()
        for rec in recs:
            self._withdraw_locked(rec)
        self._not_full.notify_all()  # the feeder: nothing left to feed
        return futures

    def _records_for_batch(self, tasks: list[Task]) -> list[_Record]:
        seen: set[Hashable] = set()
        for i, task in enumerate(tasks):
            if not isinstance(task, Task):
                raise TypeError(f"tasks[{i}] must be a neon_nb.Task, got {type(task).__name__} "
                                f"{task!r}")
            if task.id in seen:
                raise DuplicateTaskError(f"task id {task.id!r} appears twice in the batch "
                                         f"(tasks[{i}])")
            seen.add(task.id)
        keys = self._keys_of([t.id for t in tasks])
        return [self._record_for(task, key) for task, key in zip(tasks, keys)]

    def _enqueue_batch_locked(self, recs: list[_Record], deadline: float | None
                              ) -> tuple[int, int, tuple | None, _Record | None]:
        """Queue ``recs`` in order as room allows.

        Returns (how many were queued, how many of those have had their wake-up
        token already, the problem that stopped it or None, the record it stopped at).
        """
        if self._closed:
            return 0, 0, ("closed",), None
        live = self._live
        dup = next((r for r in recs if r.key in live), None)
        if dup is not None:
            return 0, 0, ("duplicate", live[dup.key].state.value), dup
        size = self._config.queue_size
        if not size or self._queued + len(recs) <= size:
            self._enqueue_many_locked(recs)  # it all fits: one pass, the shortest hold
            return len(recs), 0, None, None
        done = woken = 0
        for rec in recs:
            if size and self._queued >= size:
                # Wake threads for what is queued so far, or no room will ever come.
                for _ in range(done - woken):
                    self._tokens.put(_ITEM)
                woken = done
                problem = self._wait_for_room_locked(deadline)
                if problem is None and rec.key in live:
                    problem = ("duplicate_while_waiting",)
                if problem is not None:
                    return done, woken, problem, rec
                size = self._config.queue_size
            self._enqueue_many_locked((rec,))
            done += 1
        return done, woken, None, None

    def _batch_error(self, problem: tuple, culprit: _Record, futures: list[TaskFuture],
                     tasks: list[Task], done: int) -> NeonError:
        err = self._admission_error(problem, culprit, len(tasks) - done)
        futures = futures[:done]  # (a record drops its future when it finishes)
        if problem[0] == "duplicate":
            return DuplicateTaskError(f"{err}; nothing of the batch was queued")
        if isinstance(err, QueueFullError):
            return QueueFullError(str(err), submitted=futures, remaining=tasks[done:])
        if not done or not isinstance(err, WorkerShutdownError):
            return err
        return WorkerShutdownError(f"{err}; {done} task(s) of the batch were queued before (see "
                                   f".submitted and .remaining)", submitted=futures,
                                   remaining=tasks[done:])

    def map(self, fn: Callable[..., Any], params: Iterable[Any], *, priority: int | Callable = 0,
            id_prefix: str | None = None, star: bool = False, background: bool = False,
            **task_options: Any) -> list[TaskFuture]:
        """Queue ``fn(p)`` for each ``p`` in ``params`` as one batch; return the futures.

        ``priority`` is an int or a function of the parameter. With ``star=True``
        each ``p`` is unpacked: ``fn(*p)``. ``task_options`` are `Task` retry
        overrides. Ids are ``f"{id_prefix}{i}"`` (a unique prefix by default).
        ``background``: as for `add_tasks`, return at once even if the queue is full.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        params = _as_list("params", params)
        prefix = id_prefix if id_prefix is not None else f"{getattr(fn, '__name__', 'task')}-" \
                                                         f"{next(self._auto_ids)}-"
        tasks = []
        for i, p in enumerate(params):
            prio = priority(p) if callable(priority) else priority
            args = tuple(p) if star else (p,)
            tasks.append(Task(f"{prefix}{i}", fn, args, priority=prio, **task_options))
        return self.add_tasks(tasks, background=background)

    def _wait_for_room_locked(self, deadline: float | None) -> tuple | None:
        """Wait until the queue has room; None, or the problem that ended the wait."""
        if deadline == 0.0:
            return ("full_now", self._queued, self._config.queue_size)
        self._put_waiters += 1
        lent = self._lend_locked()
        try:
            while True:
                size = self._config.queue_size
                if self._closed:
                    return ("closed_while_waiting",)
                if not size or self._queued < size:
                    return None
                if not bounded_wait(self._not_full, deadline):
                    return ("full", self._queued, size)
        finally:
            self._put_waiters -= 1
            self._unlend_locked(lent)

    def _enqueue_many_locked(self, recs: Sequence[_Record]) -> None:
        """Queue new records (already validated) in order."""
        now = _now()
        next_seq = self._seq.__next__
        live = self._live
        buckets = self._buckets
        prev = bucket = None
        for rec in recs:
            rec.seq = next_seq()
            rec.submitted_at = rec.enqueued_at = now
            key = rec.key
            live[key] = rec
            if type(key) is _IdKey:
                self._index_key_locked(key)
            p = rec.priority
            if p != prev:
                bucket = buckets.get(p)
                if bucket is None:
                    bucket = buckets[p] = deque()
                    heapq.heappush(self._prios, -p)
                prev = p
            bucket.append(rec)  # type: ignore[union-attr]
        self._queued += len(recs)
        self._submitted += len(recs)
        if self._subs:
            for rec in recs:
                self._emit_locked(EventKind.TASK_SUBMITTED, rec)

    def _index_key_locked(self, key: _IdKey) -> None:
        keys = self._opaque.setdefault(key.hash, [])
        if not any(k is key for k in keys):
            keys.append(key)

    def _forget_key_locked(self, key: Hashable) -> None:
        """Drop an opaque id's key from the index once no live or remembered task has it."""
        if type(key) is not _IdKey or key in self._live or key in self._history:
            return
        keys = self._opaque.get(key.hash)
        if keys is not None:
            keys[:] = [k for k in keys if k is not key]
            if not keys:
                del self._opaque[key.hash]

    # ================================================================ threads
    def _new_thread_locked(self) -> threading.Thread:
        name = f"{self.name}-worker_{next(self._thread_ids)}"
        t = threading.Thread(target=self._thread_main, args=(name,), name=name, daemon=True)
        self._threads[name] = t
        return t

    _thread_init: tuple[Callable, tuple] | None = None

    def _wrap_thread_init(self, initializer: Callable, initargs: tuple) -> None:
        """Run ``initializer(*initargs)`` first in every worker thread (NeonExecutor's initializer)."""
        self._thread_init = (initializer, initargs)

    def _thread_main(self, name: str) -> None:
        # A thread that leaves normally removes itself from self._threads; one
        # that crashes adds itself to self._crashed, and the monitor replaces it.
        # (Thread.is_alive() cannot tell: it is False for a thread that has
        # started but not yet run, which once made the monitor replace live threads.)
        if self._thread_init is not None:
            fn, args = self._thread_init
            try:
                fn(*args)
            except BaseException:
                # As ThreadPoolExecutor: a failed initializer breaks the pool.
                logger.exception("initializer of %s failed; the worker is shut down and its queued "
                                 "tasks cancelled", name)
                with self._lock:
                    self._threads.pop(name, None)
                self.shutdown(timeout=0, cancel_pending=True, wait=False)
                return
        try:
            self._work(name)
        except BaseException:  # pragma: no cover - a bug in the loop itself
            logger.exception("worker thread %s died; the monitor will replace it", name)
            with self._lock:
                self._crashed.add(name)
                self._monitor_cv.notify()
            raise

    def _work(self, name: str) -> None:
        """The worker loop: take the best queued task, run it, record it, repeat.

        Under load, recording a finished attempt and claiming the next task share one
        critical section, if nothing has to run in between: half the lock traffic, and
        under the GIL every avoided hand-off counts. When something must run (the
        future's done callbacks, logging of a failure: user code), the thread records,
        releases the lock, runs it, and only then claims: done callbacks run between two
        tasks, never while this thread holds a task it has not started.
        """
        get = self._tokens.get
        get_nowait = self._tokens.get_nowait
        lock = self._lock
        done: tuple | None = None  # the finished attempt not yet recorded
        while True:
            if done is None:
                token = get()
            else:
                try:
                    token = get_nowait()
                except queue.Empty:  # nothing queued: record alone, then block
                    self._follow_up(self._record(done, name))
                    done = None
                    continue
            rec: _Record | None = None
            if token is not _ITEM or self._paused or self._retire:
                # Rare transitions take the slow path with nothing pending.
                if done is not None:
                    self._follow_up(self._record(done, name))
                    done = None
                rec, leave = self._control(token, name)
                if leave:
                    return
            else:
                with lock:
                    post = None if done is None else self._record_locked(done, name)
                    if post is not None and not post[3]:
                        self._tokens.put(token)  # claim after the follow-up below
                    elif self._paused or self._retire:  # re-checked: pause() must win
                        self._tokens.put(token)  # keep the token for whoever runs its task
                    else:
                        rec = self._claim_locked(name)
                done = None
                if post is not None and not post[3]:
                    self._follow_up(post)
                elif self._inline_subs:
                    self._after_emit()
                post = None  # no reference to the last result while this thread blocks
            if rec is not None:
                done = self._execute(rec)
                rec = None

    def _control(self, token: int, name: str) -> tuple[_Record | None, bool]:
        """Handle stop, retire and pause: (a claimed task or None, True if this thread must exit)."""
        with self._lock:
            if token is _STOP:
                self._threads.pop(name, None)
                return None, True
            if token is _RETIRE:
                if self._retire > 0:
                    self._retire -= 1
                    self._threads.pop(name, None)
                    return None, True
                return None, False  # surplus: another thread already retired
            while self._paused and not self._retire and not self._stopping:
                self._resumed.wait()
            if self._retire > 0:
                self._retire -= 1
                self._threads.pop(name, None)
                self._tokens.put(token)  # the token belongs to a queued task
                return None, True
            rec = self._claim_locked(name)
        if self._inline_subs:
            self._after_emit()
        return rec, False

    def _push_locked(self, rec: _Record) -> None:
        p = rec.priority
        bucket = self._buckets.get(p)
        if bucket is None:
            bucket = self._buckets[p] = deque()
            heapq.heappush(self._prios, -p)
        bucket.append(rec)

    def _claim_locked(self, name: str) -> _Record | None:
        """Pop the best queued task and mark it running on ``name``; None if the queue is empty."""
        prios = self._prios
        buckets = self._buckets
        rec = None
        while prios:
            bucket = buckets[-prios[0]]
            while bucket:
                rec = bucket.popleft()
                if rec.state is QUEUED:
                    break
                rec = None  # cancelled while queued: its entry is skipped here
                self._dead_queued -= 1
            if rec is not None:
                break
            del buckets[-heapq.heappop(prios)]  # this priority has no task left
        if rec is None:
            return None
        self._queued -= 1
        self._running += 1
        rec.state = RUNNING
        rec.attempts += 1
        rec.thread = name
        rec.started_at = _now()
        self._busy[name] = rec
        if rec.attempts == 1:
            rec.future._set_running_locked()  # type: ignore[union-attr]
        if self._put_waiters:
            self._not_full.notify()
        if self._subs:
            self._emit_locked(EventKind.TASK_STARTED, rec)
        return rec

    def _execute(self, rec: _Record) -> tuple:
        """Run one attempt, no lock held. Returns ``(rec, ok, value, end, retryable, error)``.

        Everything that may run user code about a failure (the exception's ``__str__``,
        the ``retry_on`` filter) runs here, before the lock is taken to record it.
        """
        try:
            call = self._call
            if call is None:
                if rec.kwargs:
                    value = rec.fn(*rec.args, **rec.kwargs)  # type: ignore[misc]
                else:
                    value = rec.fn(*rec.args)  # type: ignore[misc]
            else:
                value = call(rec.fn, rec.args, rec.kwargs or {})
        except BaseException as exc:
            end = _now()
            return (rec, False, exc, end, self._retryable(rec, exc), _describe_error(exc))
        end = _now()
        pending = self._metrics_pending
        if pending is not None:  # deque.append is atomic: no need to hold the lock for it
            pending.append((rec.id, rec.thread, rec.enqueued_at, rec.started_at, end,
                            rec.submitted_at, OUTCOME_SUCCEEDED, rec.attempts))
        return (rec, True, value, end, False, None)

    def _retryable(self, rec: _Record, exc: BaseException) -> bool:
        try:
            if isinstance(exc, (TaskPicklingError, BackendUnavailableError)):
                return False  # the task cannot cross to its backend: another attempt cannot help
            if self._always_retry and isinstance(exc, self._always_retry):
                return True  # the backend's failure (a lost process), not the task's
            retry_on = rec.retry_on if rec.retry_on is not None else self._retry_on
            if isinstance(retry_on, (type, tuple)):
                return isinstance(exc, retry_on)
            return bool(retry_on(exc))
        except BaseException:  # user code (a predicate, __instancecheck__)
            logger.exception("retry_on predicate raised for task %r; not retrying", rec.id)
            return False

    def _record(self, done: tuple, name: str) -> tuple:
        with self._lock:
            return self._record_locked(done, name)

    def _record_locked(self, done: tuple, name: str) -> tuple:
        """Record a finished attempt: success, retry or final failure. Runs no user code.

        Returns what must happen after the lock is released, ``(future whose callbacks
        must run, retry to log, failure to log, quiet)``; ``quiet`` means nothing at all
        (no callback, no logging, no inline subscriber), so the thread may claim its next
        task in the same critical section.
        """
        rec, ok, value, end, retryable, error = done
        fut = rec.future
        rec.finished_at = end
        self._running -= 1
        del self._busy[name]
        if ok:
            rec.state = SUCCEEDED
            self._succeeded += 1
            if self._subs:
                self._emit_locked(EventKind.TASK_SUCCEEDED, rec)
            self._finish_locked(rec)
            fut._set_result_locked(value)
            return (fut, None, None, not fut._done_callbacks and not self._inline_subs)
        rec.error = error
        retry_in = self._retry_delay_locked(rec) if retryable else None
        if self._metrics_pending is not None:
            self._metrics_pending.append((rec.id, name, rec.enqueued_at, rec.started_at, end,
                                          rec.submitted_at,
                                          OUTCOME_RETRY if retry_in is not None else OUTCOME_FAILED,
                                          rec.attempts))
        if retry_in is not None:
            rec.state = RETRY_WAIT
            self._retry_waiting += 1
            self._retried += 1
            heapq.heappush(self._retry_heap, (end + retry_in, rec.seq, rec))
            self._monitor_cv.notify()
            if self._subs:
                self._emit_locked(EventKind.TASK_RETRY_SCHEDULED, rec, detail=retry_in)
            return (None, (rec.id, rec.attempts, error, retry_in), None, False)
        rec.state = FAILED
        self._failed += 1
        if self._subs:
            self._emit_locked(EventKind.TASK_FAILED, rec, detail=error)
        self._finish_locked(rec)
        fut._set_exception_locked(value)
        return (fut, None, (rec.id, rec.attempts, error, value), False)

    def _follow_up(self, post: tuple) -> None:
        """Outside the lock: log, then run the future's done callbacks and inline subscribers.

        All of it may run user code (log handlers too): whatever it raises, even a
        BaseException, is logged here and never ends this worker thread.
        """
        fut, retry, failure, _ = post
        try:
            if retry is not None:
                logger.info("task %r failed on attempt %d (%s); retry in %.3fs", *retry)
            elif failure is not None:
                self._log_failure(*failure)
            if fut is not None and fut._done_callbacks:
                fut._invoke_callbacks()
            if self._inline_subs:
                self._after_emit()
        except BaseException:  # user code must never end a worker thread
            try:
                logger.exception("worker %s: user code after a task raised; the worker goes on",
                                 self.name)
            except BaseException:  # a hostile log handler: nothing left to tell
                pass

    def _log_failure(self, tid: Hashable, attempts: int, error: str, exc: BaseException) -> None:
        # A final failure is a WARNING: with no logging configured, Python's last-resort
        # handler prints it on stderr, so a failing script does not fail silently. After
        # the first few, a flood of failures goes on at DEBUG (the tasks and the shutdown
        # report still list every one).
        n = next(self._failures_logged)  # atomic: exactly one thread sees each number
        level = logging.WARNING if n < _FULL_FAILURE_LOGS else logging.DEBUG
        logger.log(level, "task %r failed after %d attempt(s): %s", tid, attempts, error,
                   exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None)
        if n == _FULL_FAILURE_LOGS - 1:
            logger.warning("worker %s: further task failures are logged at DEBUG level; "
                           "worker.tasks('failed') and the shutdown report list them", self.name)

    def _retry_delay_locked(self, rec: _Record) -> float | None:
        """Seconds until the next attempt of a retryable failure, or None if it is final."""
        cfg = self._config
        limit = cfg.retry_attempts if rec.retry_attempts is None else rec.retry_attempts
        if rec.attempts > limit:
            return None
        if self._stopping or (self._closed and self._cancel_on_close):
            return None  # the shutdown's final window: no thread will be left to run it
        delay = cfg.retry_delay if rec.retry_delay is None else rec.retry_delay
        backoff = cfg.retry_backoff if rec.retry_backoff is None else rec.retry_backoff
        cap = cfg.retry_max_delay  # bounds every delay, a task's own included
        try:
            delay = delay * backoff ** (rec.attempts - 1)
        except OverflowError:  # a huge backoff: the cap applies
            delay = cap
        if cfg.retry_jitter:
            delay *= 1.0 + random.uniform(-cfg.retry_jitter, cfg.retry_jitter)
        return max(min(delay, cap), 0.0)

    _cancel_on_close = False

    def _finish_locked(self, rec: _Record) -> None:
        """Move a terminal record from the live table to the bounded history."""
        del self._live[rec.key]
        self._remember_locked(rec)
        if len(self._live) + len(self._backlog_futures) <= self._inside_waiters:
            self._all_done.notify_all()
            if not self._live and self._closed:
                self._stop_threads_locked()

    def _remember_locked(self, rec: _Record) -> None:
        """Keep a terminal record in the bounded history (for get_task_status and tasks())."""
        key = rec.key
        rec.fn = rec.args = rec.kwargs = None  # a finished task keeps no reference to them
        rec.future = None
        limit = self._config.history_size
        if limit:
            hist = self._history
            hist[key] = rec
            hist.move_to_end(key)
            while len(hist) > limit:  # more than one after history_size was lowered
                self._forget_key_locked(hist.popitem(last=False)[0])
        else:
            self._forget_key_locked(key)

    # ================================================================== lending
    def _lend_locked(self) -> bool:
        """The calling thread is about to block in a public call: if the worker needs it, get a stand-in.

        A worker thread that blocks (in a task, in a done callback, in an inline
        subscriber) would shrink the pool for the time of its wait, and stall it
        entirely if every thread waited: a stand-in thread takes its place until the
        wait ends (`_unlend_locked`). A blocking monitor thread (a deferred inline
        delivery) hands its role to a new monitor. Returns True if a worker thread lent.
        """
        me = threading.current_thread()
        if self._threads.get(me.name) is me:
            if self._stopping or self._state not in _WORKING_STATES:
                return False
            stand_in = self._new_thread_locked()
            try:
                stand_in.start()  # under the lock: the new thread needs it only later
            except RuntimeError:  # no more threads: wait without a stand-in
                self._threads.pop(stand_in.name, None)
                return False
            self._lent += 1
            return True
        if me is self._monitor and self._state != WorkerState.STOPPED:
            monitor = self._monitor = self._new_monitor_locked()
            monitor.start()  # this thread leaves the monitor loop when its wait is over
        return False

    def _unlend_locked(self, lent: bool) -> None:
        if not lent:
            return
        self._lent -= 1
        if not self._stopping:  # one thread too many now: the first idle one retires
            self._retire += 1
            self._tokens.put(_RETIRE)
            self._resumed.notify_all()

    def _new_monitor_locked(self) -> threading.Thread:
        return threading.Thread(target=self._monitor_loop, name=f"{self.name}-monitor", daemon=True)

    # ============================================================ cancellation
    def cancel(self, task_id: Hashable) -> bool:
        """Cancel a queued task (or one waiting for a retry). False if it is running or done."""
        check_hashable("task_id", task_id)
        key = self._key_of(task_id)
        with self._lock:
            rec = self._live.get(key)
            fut = None if rec is None else self._cancel_locked(rec)
        if fut is None:
            return False
        self._after_cancel([fut])
        return True

    def _cancel_future(self, fut: TaskFuture) -> bool:
        # TaskFuture.cancel() lands here: withdraw the task if it has not started.
        with self._lock:
            if fut.cancelled():
                return True
            rec = self._live.get(fut._key)
            if rec is None or rec.future is not fut or self._cancel_locked(rec) is None:
                return fut.cancelled()
        self._after_cancel([fut])
        return True

    def _after_cancel(self, futures: list[TaskFuture]) -> None:
        """Outside the lock: the cancelled futures' callbacks, then inline deliveries."""
        for fut in futures:
            fut._invoke_callbacks()
        self._after_emit()

    def _cancel_locked(self, rec: _Record) -> TaskFuture | None:
        """Cancel a queued or retry-waiting record; return its future (callbacks still to run)."""
        state = rec.state
        if state is QUEUED:
            self._queued -= 1
            self._dead_queued += 1  # its entry stays in its bucket until claimed or compacted
            if self._put_waiters:
                self._not_full.notify()
        elif state is RETRY_WAIT:
            self._retry_waiting -= 1
            self._dead_retry += 1  # its retry-heap entry is skipped by state, or compacted
        else:
            return None
        rec.state = CANCELLED
        rec.finished_at = _now()
        self._cancelled += 1
        fut = rec.future
        if self._closed:
            self._shutdown_cancelled.append(rec.id)
        if self._subs:
            self._emit_locked(EventKind.TASK_CANCELLED, rec)
        self._finish_locked(rec)
        fut._set_cancelled_locked()  # type: ignore[union-attr]
        self._compact_locked()
        return fut

    def _compact_locked(self) -> None:
        """Drop the entries of cancelled tasks once they outnumber the live ones (amortised O(1))."""
        if self._dead_queued > 256 and self._dead_queued > self._queued:
            buckets = {}
            for p, bucket in self._buckets.items():
                kept = deque(r for r in bucket if r.state is QUEUED)
                if kept:
                    buckets[p] = kept
            self._buckets = buckets
            self._prios = [-p for p in buckets]
            heapq.heapify(self._prios)
            self._dead_queued = 0
        if self._dead_retry > 256 and self._dead_retry > self._retry_waiting:
            self._retry_heap = [e for e in self._retry_heap if e[2].state is RETRY_WAIT]
            heapq.heapify(self._retry_heap)
            self._dead_retry = 0

    def cancel_pending(self) -> int:
        """Cancel every queued task and every pending retry; return how many. Running tasks go on."""
        futures = self._cancel_all_pending()
        return len(futures)

    def _cancel_all_pending(self, *, final: bool = False) -> list[TaskFuture]:
        """Cancel what is queued or waiting for a retry. ``final``: the shutdown's last window.

        With ``final``, from the same critical section on, a failing task is failed for
        good rather than scheduled for a retry that no thread would be left to run.
        """
        with self._lock:
            if final:
                self._cancel_on_close = True
            futures = self._withdraw_backlog_locked()
            recs = [r for r in self._live.values() if r.state is QUEUED or r.state is RETRY_WAIT]
            for rec in recs:
                fut = self._cancel_locked(rec)
                if fut is not None:
                    futures.append(fut)
        self._after_cancel(futures)
        return futures

    # ================================================================= status
    def get_status(self) -> dict[str, Any]:
        """A consistent snapshot of the worker's counters (a new dict each call).

        Keys: ``state`` (created, running, paused, shutting_down, stopped);
        ``max_workers`` (the pool's target size); ``threads`` (worker threads
        alive); ``active_workers`` (threads running a task now);
        ``queued_tasks`` (waiting in the queue); ``queue_size`` (its bound, 0 =
        unbounded); ``running_tasks``; ``retry_waiting_tasks`` (failed,
        waiting for their retry delay); ``submitted_tasks`` (accepted since
        start); ``completed_tasks`` (finished successfully);
        ``failed_tasks`` (failed for good, retries exhausted);
        ``cancelled_tasks``; ``retried_tasks`` (retries scheduled, one per
        retry); ``backlog_tasks`` (accepted by a background batch, not yet
        queued: not counted as submitted until they enter the queue);
        ``uptime_s`` (seconds since `start`, 0 before).
        ``submitted = queued + running + retry_waiting + completed + failed + cancelled``
        holds at every instant.
        """
        with self._lock:
            return {
                "state": self._state,
                "max_workers": self._config.max_workers,
                "threads": self._pool_size_locked(),
                "active_workers": self._running,
                "queued_tasks": self._queued,
                "queue_size": self._config.queue_size,
                "running_tasks": self._running,
                "retry_waiting_tasks": self._retry_waiting,
                "submitted_tasks": self._submitted,
                "completed_tasks": self._succeeded,
                "failed_tasks": self._failed,
                "cancelled_tasks": self._cancelled,
                "retried_tasks": self._retried,
                "backlog_tasks": len(self._backlog_futures),
                "uptime_s": 0.0 if self._started_at is None else _now() - self._started_at,
            }

    def _pool_size_locked(self) -> int:
        """Threads that count toward ``max_workers`` (not the retiring ones, nor the lent ones)."""
        return len(self._threads) - self._retire - self._lent

    def _counts(self) -> dict[str, int]:
        with self._lock:
            return {"submitted": self._submitted, "queued": self._queued, "running": self._running,
                    "retry_wait": self._retry_waiting, "succeeded": self._succeeded,
                    "failed": self._failed, "cancelled": self._cancelled, "retried": self._retried}

    def _running_spans(self) -> list[tuple[str, float]]:
        with self._lock:
            return [(name, rec.started_at) for name, rec in self._busy.items()]

    def _thread_names(self) -> list[str]:
        with self._lock:
            return sorted(self._threads)

    def get_task_status(self, task_id: Hashable) -> TaskInfo:
        """A frozen `TaskInfo` for a live task or one of the last ``history_size`` finished ones.

        Raises `UnknownTaskError` (a KeyError) for an id never seen or forgotten.
        """
        check_hashable("task_id", task_id)
        key = self._key_of(task_id)
        with self._lock:
            rec = self._live.get(key) or self._history.get(key)
            info = None if rec is None else rec.info()
            history_size = self._config.history_size
        if info is None:
            raise UnknownTaskError(f"no task with id {_safe_repr(task_id)} (never submitted, or "
                                   f"finished and forgotten: history_size={history_size})")
        return info

    def tasks(self, state: TaskState | str | None = None) -> list[TaskInfo]:
        """Status of live and remembered tasks, in submission order, optionally of one state."""
        want = None if state is None else TaskState(state)
        with self._lock:
            recs = list(self._history.values()) + list(self._live.values())
            infos = [r.info() for r in recs if want is None or r.state is want]
        infos.sort(key=lambda i: i.sequence)
        return infos

    def _in_task_locked(self) -> bool:
        """Is the calling thread one of ours, holding a task? (It must not wait for that task.)"""
        me = threading.current_thread()
        return self._threads.get(me.name) is me and me.name in self._busy

    def wait_for_completion(self, timeout: float | None = None) -> bool:
        """Block until no task is queued, running or waiting for a retry; False on timeout.

        Thread-safe. From inside a task it waits for every other task: not for its
        own, nor for other tasks that are themselves waiting this way (so two such
        tasks never wait for each other), and its thread gets a stand-in meanwhile,
        so the pool keeps running queued tasks.
        """
        deadline = deadline_of(True, timeout)
        with self._lock:
            return self._wait_idle_locked(deadline)

    def _wait_idle_locked(self, deadline: float | None) -> bool:
        """Wait for the live tasks to finish (see `wait_for_completion`); False at the deadline."""
        inside = self._in_task_locked()
        if inside:
            self._inside_waiters += 1
            if len(self._live) + len(self._backlog_futures) <= self._inside_waiters:
                self._all_done.notify_all()  # the other in-task waiters may be done now
        lent = self._lend_locked()
        try:
            while len(self._live) + len(self._backlog_futures) > (
                    self._inside_waiters if inside else 0):
                if not bounded_wait(self._all_done, deadline):
                    return False
            return True
        finally:
            if inside:
                self._inside_waiters -= 1
            self._unlend_locked(lent)

    # ================================================================ control
    def pause(self) -> None:
        """Stop starting new tasks; running ones finish. Submissions are still accepted."""
        with self._lock:
            if self._paused or self._closed:
                return  # a shutdown drains the queue: pausing it then would stall it
            self._paused = True
            if self._state == WorkerState.RUNNING:
                self._state = WorkerState.PAUSED
            self._emit_locked(EventKind.WORKER_PAUSED)
        self._after_emit()

    def resume(self) -> None:
        """Start dispatching queued tasks again."""
        with self._lock:
            if not self._paused:
                return
            self._paused = False
            if self._state == WorkerState.PAUSED:
                self._state = WorkerState.RUNNING
            self._resumed.notify_all()
            self._emit_locked(EventKind.WORKER_RESUMED)
        self._after_emit()

    @property
    def paused(self) -> bool:
        """True between `pause` and `resume`: queued tasks wait, running ones go on."""
        return self._paused

    def resize(self, max_workers: int) -> None:
        """Grow or shrink the live pool; running tasks are never interrupted. Thread-safe."""
        self.configure(max_workers=max_workers)

    def configure(self, **changes: Any) -> WorkerConfig:
        """Change this worker's settings (all or nothing) and pin them against `update_config`."""
        self._config.replace(**changes)  # validate first: raises ConfigError naming the key
        with self._lock:
            self._pinned = self._pinned | frozenset(changes)
        return self._apply_config(changes)

    def _on_global_config(self, old: WorkerConfig, new: WorkerConfig, changed: frozenset) -> None:
        # Listeners of concurrent update_config() calls run in any order, each with its
        # own snapshot: applying ``new`` could apply an older value last. Instead the
        # worker reads the current global settings under its own lock, so whichever
        # listener runs last applies the latest values.
        self._apply_config(None)

    def _apply_config(self, changes: dict[str, Any] | None) -> WorkerConfig:
        """Apply ``changes`` (None: follow the global settings for the keys not pinned)."""
        # The new snapshot is derived from the current one under the lock, so
        # concurrent configure() calls never lose each other's changes.
        start: list[threading.Thread] = []
        with self._lock:
            old = self._config
            if changes is None:
                current = config_manager().get()
                changes = {k: getattr(current, k) for k in _SETTINGS
                           if k not in self._pinned and getattr(current, k) != getattr(old, k)}
                if not changes:
                    return old
            changed = frozenset(changes)
            cfg = old.replace(**changes)
            self._config = cfg
            while len(self._history) > cfg.history_size:
                self._forget_key_locked(self._history.popitem(last=False)[0])
            if cfg.queue_size != old.queue_size and self._put_waiters:
                self._not_full.notify_all()
            if cfg.enable_metrics and self.metrics is None:
                self._enable_metrics()
            elif not cfg.enable_metrics:
                self._metrics_pending = None
            if cfg.max_workers != old.max_workers and self._state in (WorkerState.RUNNING,
                                                                       WorkerState.PAUSED):
                current = self._pool_size_locked()
                delta = cfg.max_workers - current
                if delta > 0:
                    undo = min(delta, self._retire)
                    self._retire -= undo
                    start = [self._new_thread_locked() for _ in range(delta - undo)]
                elif delta < 0:
                    self._retire += -delta
                    for _ in range(-delta):
                        self._tokens.put(_RETIRE)
                    self._resumed.notify_all()
                self._emit_locked(EventKind.WORKER_RESIZED, detail=(current, cfg.max_workers))
            self._next_health = 0.0
            self._monitor_cv.notify()
            self._emit_locked(EventKind.WORKER_CONFIG_CHANGED,
                              detail=tuple(sorted((k, getattr(cfg, k)) for k in changed)))
        for t in start:
            t.start()
        if "log_level" in changed:
            logging.getLogger("neon_nb").setLevel(cfg.log_level)
        self._after_emit()
        return cfg

    def _enable_metrics(self) -> None:
        if self.metrics is None:
            self.metrics = Metrics(self._counts, self._running_spans, self._thread_names)
        self._metrics_pending = self.metrics.pending

    # ================================================================ shutdown
    def shutdown(self, timeout: float | _FromConfig | None = FROM_CONFIG, cancel_pending: bool = False,
                 wait: bool = True) -> ShutdownReport | None:
        """Stop accepting tasks, let running ones finish, and run or cancel the queue.

        Queued tasks still run (unless ``cancel_pending``) while time remains;
        at the ``timeout`` (default: the ``shutdown_timeout`` setting; None
        waits for everything) queued tasks and pending retries are cancelled,
        a task that fails from then on is not retried, and tasks still running
        are abandoned to their (daemon) threads. It returns within the timeout
        plus a few milliseconds even if a task hangs. A paused worker is resumed
        so that its queue can drain.

        Idempotent and thread-safe: a second call waits (within its own
        timeout) for the first and returns the same `ShutdownReport`, or a
        report with ``complete=False`` if the first is still going on.
        ``wait=False`` starts the shutdown and returns None at once. Called
        from inside a task, it waits for the other tasks only, then returns a
        report with ``complete=False``: the shutdown completes when the calling
        task returns, and `shutdown_report` then holds the final report.
        """
        if timeout is FROM_CONFIG or timeout == "config":  # (the spelling of earlier versions)
            timeout = self._config.shutdown_timeout
        check_timeout("timeout", timeout)
        t_begin = _now()
        with self._lock:
            first = not self._closed
            never_started = first and self._begin_shutdown_locked(t_begin, timeout, cancel_pending)
            withdrawn = self._withdraw_backlog_locked() if first else []
            inside = self._in_task_locked()
        self._after_cancel(withdrawn)
        if not first:
            return self._join_shutdown(t_begin, timeout, wait, inside)  # type: ignore[arg-type]
        if cancel_pending or never_started:
            self._cancel_all_pending()
        if never_started:
            return self._finalize(t_begin, timeout)  # type: ignore[arg-type]
        if wait and not inside:
            return self._complete_shutdown_claimed(t_begin, timeout)  # type: ignore[arg-type]
        # Inside a task the shutdown cannot complete before that task returns: a helper
        # thread completes it (within the same bound), and this call waits for the others.
        threading.Thread(target=self._complete_shutdown_claimed, args=(t_begin, timeout),
                         name=f"{self.name}-shutdown", daemon=True).start()
        return self._wait_for_the_others(t_begin, timeout) if wait else None  # type: ignore[arg-type]

    def _begin_shutdown_locked(self, t_begin: float, timeout: float | None,
                               cancel_pending: bool) -> bool:
        """Close the worker; True if it was never started."""
        self._closed = True
        self._shutdown_claimed = True
        self._shutdown_started_at = t_begin
        self._cancel_on_close = bool(cancel_pending)
        never_started = self._state == WorkerState.CREATED
        self._state = WorkerState.STOPPED if never_started else WorkerState.SHUTTING_DOWN
        self._paused = False
        self._resumed.notify_all()
        self._not_full.notify_all()
        self._monitor_cv.notify()
        self._emit_locked(EventKind.WORKER_SHUTTING_DOWN, detail=timeout)
        return never_started

    def _join_shutdown(self, t_begin: float, timeout: float | None, wait: bool,
                       inside: bool) -> ShutdownReport | None:
        """A later shutdown() call: wait (within its own bound) for the one in progress."""
        if not wait:
            return None
        if inside:
            return self._wait_for_the_others(t_begin, timeout)
        with self._lock:
            # The call that owned the shutdown was interrupted (Ctrl-C during its wait):
            # this one takes over, or the worker would stay half shut down.
            take_over = not self._shutdown_claimed and not self._shutdown_done.is_set()
            if take_over:
                self._shutdown_claimed = True
        if take_over:
            return self._complete_shutdown_claimed(t_begin, timeout)
        with self._lock:
            lent = self._lend_locked()
        try:
            left = None if timeout is None else max(0.0, t_begin + timeout - _now())
            done = self._shutdown_done.wait(_bounded(left))
        finally:
            with self._lock:
                self._unlend_locked(lent)
        return self._report if done and self._report is not None else self._progress_report(timeout)

    def _wait_for_the_others(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        with self._lock:
            self._wait_idle_locked(None if timeout is None else t_begin + timeout)
        return self._progress_report(timeout, caller=threading.current_thread().name)

    def _complete_shutdown_claimed(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        try:
            return self._complete_shutdown(t_begin, timeout)
        except BaseException:  # KeyboardInterrupt: let a later call finish the job
            with self._lock:
                self._shutdown_claimed = False
            raise

    def _complete_shutdown(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        with self._lock:
            idle = self._wait_idle_locked(None if timeout is None else t_begin + timeout)
        if not idle:
            self._cancel_all_pending(final=True)
        return self._finalize(t_begin, timeout)

    def _stop_threads_locked(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._resumed.notify_all()
        for _ in range(len(self._threads)):
            self._tokens.put(_STOP)  # behind every item token: queued work drains first

    def _finalize(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        deadline = None if timeout is None else t_begin + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - _now())

        me = threading.current_thread()
        with self._lock:
            self._stop_threads_locked()
            abandoned = tuple(rec.id for rec in self._live.values() if rec.state is RUNNING)
            threads = [t for n, t in self._threads.items() if n not in self._busy and t is not me]
        for t in threads:
            if t.ident:
                t.join(_bounded(left()))
        self._backend.stop(self, timeout=left())
        with self._lock:
            if self._report is not None:
                return self._report
            self._state = WorkerState.STOPPED
            self._monitor_cv.notify()
            report = ShutdownReport(
                clean=not abandoned, elapsed=_now() - t_begin, timeout=timeout,
                succeeded=self._succeeded, failed=self._failed,
                cancelled=tuple(self._shutdown_cancelled), abandoned=abandoned,
                cancelled_total=self._cancelled, failures=self._failures_locked())
            self._report = report
            self._emit_locked(EventKind.WORKER_STOPPED, detail=report)
            subs = self._subs
            helpers = [t for t in (self._monitor, self._feeder) if t is not None]
        for s in subs:
            s._close(drain=True)
        self._after_emit()
        for s in subs:
            if s.mode == "inline":
                s.flush()
        for t in helpers:  # shutdown(wait=True) leaves no thread of ours behind
            if t is not me and t.ident:
                t.join(_bounded(left()))
        _live_workers.discard(self)
        config_manager().remove_listener(self)
        self._shutdown_done.set()
        if abandoned:
            logger.warning("worker %s: shutdown timed out after %.1fs; %d task(s) still running were "
                           "abandoned: %r", self.name, report.elapsed, len(abandoned), abandoned[:10])
        else:
            logger.debug("worker %s: %s", self.name, report)
        return report

    def _progress_report(self, timeout: float | None, caller: str | None = None) -> ShutdownReport:
        """A report of a shutdown still in progress (``complete=False``).

        ``caller``: the thread of the task that called shutdown() (its own task is
        not "abandoned": the shutdown completes when it returns); then ``clean``
        says whether every other task is done.
        """
        with self._lock:
            started = self._shutdown_started_at or _now()
            running = tuple(r.id for r in self._live.values()
                            if r.state is RUNNING and r.thread != caller)
            return ShutdownReport(
                clean=caller is not None and not running, elapsed=_now() - started,
                timeout=timeout, succeeded=self._succeeded, failed=self._failed,
                cancelled=tuple(self._shutdown_cancelled), abandoned=running, complete=False,
                cancelled_total=self._cancelled, failures=self._failures_locked())

    def _failures_locked(self) -> tuple[tuple[Hashable, str], ...]:
        return tuple((r.id, r.error or "") for r in self._history.values() if r.state is FAILED)

    def _exit_shutdown(self) -> None:
        if self._closed and self._shutdown_done.is_set():
            return
        t = self._exit_timeout
        timeout = self._config.shutdown_timeout if t is FROM_CONFIG else t
        report = self.shutdown(timeout=timeout)
        if report is not None and not report.clean:
            logger.warning("interpreter exit: worker %s %s", self.name, report)

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The report of the finished shutdown, or None."""
        return self._report

    # ============================================================ monitor thread
    def _monitor_loop(self) -> None:
        """Retries that are due, health checks, metrics folding; one thread per worker."""
        me = threading.current_thread()
        while True:
            due: list[_Record] = []
            with self._lock:
                if self._state == WorkerState.STOPPED or self._monitor is not me:
                    return  # stopped, or replaced while this thread waited in user code
                now = _now()
                rh = self._retry_heap
                while rh and rh[0][0] <= now:
                    rec = heapq.heappop(rh)[2]
                    if rec.state is not RETRY_WAIT:
                        self._dead_retry -= 1  # cancelled while it waited
                        continue
                    rec.state = QUEUED
                    self._retry_waiting -= 1
                    self._queued += 1
                    rec.enqueued_at = now
                    self._push_locked(rec)  # behind the tasks of its priority
                    due.append(rec)
                    if self._subs:
                        self._emit_locked(EventKind.TASK_SUBMITTED, rec, detail="retry")
                health_due = now >= self._next_health or bool(self._crashed)
                if health_due:
                    self._next_health = now + self._config.health_check_interval
                wake = self._next_health
                if rh:
                    wake = min(wake, rh[0][0])
                if self.metrics is not None:
                    wake = min(wake, now + self.metrics.window)
                for sub in self._inline_subs:  # a delivery deferred by max_rate_hz
                    if sub._deferred:
                        wake = min(wake, sub._last_delivery + sub._min_gap)
            rh = None  # the heap may be compacted into a new list while this thread waits
            for _ in due:
                self._tokens.put(_ITEM)
            self._monitor_duties(bool(due), health_due)
            with self._lock:
                if self._state == WorkerState.STOPPED or self._monitor is not me:
                    return
                # A retry scheduled while the lock was released above notified
                # nobody: take its due time into account now, under the lock.
                if self._retry_heap:
                    wake = min(wake, self._retry_heap[0][0])
                for sub in self._inline_subs:
                    if sub._deferred:
                        wake = min(wake, sub._last_delivery + sub._min_gap)
                left = wake - _now()
                if left > 0:
                    self._monitor_cv.wait(left)

    def _monitor_duties(self, deliver: bool, health_due: bool) -> None:
        """The monitor's work outside the lock. Some of it runs user code (deferred inline
        deliveries, callbacks of a task lost with its thread, log handlers): whatever that
        raises is logged, and the monitor goes on."""
        try:
            if deliver or any(sub._deferred for sub in self._inline_subs):
                self._after_emit()
            if health_due:
                self._check_health()
            if self.metrics is not None and self._metrics_pending is not None:
                self.metrics.fold()
        except BaseException:  # the monitor must outlive any user code
            try:
                logger.exception("worker %s: the monitor's work raised; it goes on", self.name)
            except BaseException:  # a hostile log handler
                pass

    def _check_health(self) -> HealthReport:
        start: list[threading.Thread] = []
        with self._lock:
            now = _now()
            threshold = self._config.stuck_task_threshold
            stuck = {rec.id: now - rec.started_at for rec in self._busy.values()
                     if now - rec.started_at > threshold}
            dead = [n for n in self._crashed if n in self._threads]
            lost: list[TaskFuture] = []
            for n in dead:
                del self._threads[n]
                self._crashed.discard(n)
                rec = self._busy.pop(n, None)
                if rec is not None:  # its task can never finish: fail it
                    self._running -= 1
                    rec.state = FAILED
                    rec.finished_at = now
                    rec.error = f"NeonError: worker thread {n} crashed while running this task"
                    self._failed += 1
                    fut = rec.future
                    if self._subs:
                        self._emit_locked(EventKind.TASK_FAILED, rec, detail=rec.error)
                    self._finish_locked(rec)
                    fut._set_exception_locked(NeonError(rec.error[len("NeonError: "):]))
                    lost.append(fut)
                if self._state in (WorkerState.RUNNING, WorkerState.PAUSED) and not self._closed:
                    self._replaced += 1
                    start.append(self._new_thread_locked())
            expected = self._pool_size_locked()
            alive = sum(1 for t in self._threads.values() if t.is_alive() or not t.ident)
            size = self._config.queue_size
            report = HealthReport(
                checked_at=now, healthy=not stuck and not dead and self._state != WorkerState.STOPPED,
                state=self._state, expected_threads=expected, alive_threads=alive,
                replaced_threads=self._replaced, stuck=stuck,
                queue_fill=(self._queued / size) if size else 0.0)
            self._health = report
        for t in start:
            t.start()
        for fut in lost:
            fut._invoke_callbacks()
        if dead:
            logger.error("worker %s: replaced %d dead worker thread(s): %s", self.name, len(dead), dead)
        if stuck:
            logger.warning("worker %s: %d task(s) running longer than %.1fs: %r", self.name,
                           len(stuck), threshold, list(stuck)[:10])
        return report

    def health(self) -> HealthReport:
        """The latest health report (checked every ``health_check_interval`` s; now, if none yet)."""
        return self._health if self._health is not None else self._check_health()

    def check_health(self) -> HealthReport:
        """Run a health check now and return it."""
        return self._check_health()

    # ================================================================= events
    def subscribe(self, callback: Callable[[Any], Any], *, on: Any = "thread",
                  max_rate_hz: float | None = None, buffer_size: int = 10_000,
                  kinds: Iterable[EventKind] | None = None) -> Subscription:
        """Receive batches of `Event` (as `EventBatch`) from this worker.

        ``on``: ``"thread"`` (a delivery thread owned by the worker), an
        asyncio loop (its thread, via ``call_soon_threadsafe``), or
        ``"inline"`` (a worker thread, after it released its lock; must not
        block). ``max_rate_hz`` coalesces deliveries (an unthrottled ``"thread"``
        subscriber is still batched over 5 ms: each wake-up costs the workers a
        thread switch under the GIL). ``buffer_size`` bounds
        the buffer: when full the oldest events are dropped and the count is
        reported in the next batch. ``kinds`` filters. Thread-safe.
        """
        sub = Subscription(self, callback, on=on, max_rate_hz=max_rate_hz, buffer_size=buffer_size,
                           kinds=kinds, name=f"{self.name}-dispatch_{next(self._sub_ids)}")
        with self._lock:
            if self._state == WorkerState.STOPPED:
                raise WorkerShutdownError(f"worker {self.name!r} is stopped: nothing to subscribe to")
            sub._cursor = sub._done_upto = (self._log[-1][0] + 1 if self._log
                                            else self._peek_seq_locked())
            self._subs = (*self._subs, sub)
            if sub.mode == "inline":
                self._inline_subs = (*self._inline_subs, sub)
            self._resize_log_locked()
            self._need_wake = True  # the next event must arm the newcomer too
        sub._start()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)
            self._inline_subs = tuple(s for s in self._inline_subs if s is not sub)
            self._resize_log_locked()
            self._trim_log_locked()

    def _peek_seq_locked(self) -> int:
        # The next event's seq: itertools.count cannot be peeked, so replace it.
        n = next(self._event_seq)
        self._event_seq = itertools.count(n)
        return n

    def _resize_log_locked(self) -> None:
        cap = max((s._cap for s in self._subs), default=1)
        if cap != self._log.maxlen:
            self._log = deque(self._log, maxlen=cap)

    def _trim_log_locked(self) -> None:
        # Forget events every live subscriber has taken.
        log = self._log
        cursors = [s._cursor for s in self._subs if not s._cancelled]
        if not cursors or not log or min(cursors) > log[-1][0]:
            log.clear()
            return
        low = min(cursors)
        while log and log[0][0] < low:
            log.popleft()

    def _wake_subs_locked(self) -> None:
        self._need_wake = False
        for s in self._subs:
            if not s._armed and not s._cancelled:
                s._armed = True
                s._arm()

    def _emit_locked(self, kind: EventKind, rec: _Record | None = None, detail: Any = None) -> None:
        # Hot path when someone subscribes: build the immutable event once (a
        # C-level tuple construction) and append it to each subscriber's buffer.
        subs = self._subs
        if not subs:
            return
        if rec is None:
            ev = _new_event(Event, (next(self._event_seq), kind, _now(), None, None, None,
                                    threading.current_thread().name, None, detail))
        elif kind is _STARTED:
            ev = _new_event(Event, (next(self._event_seq), kind, rec.started_at, rec.id, rec.priority,
                                    rec.attempts, rec.thread, None, detail))
        elif kind is _SUBMITTED:
            ev = _new_event(Event, (next(self._event_seq), kind, rec.enqueued_at, rec.id,
                                    rec.priority, rec.attempts, None, None, detail))
        else:
            ev = _new_event(Event, (next(self._event_seq), kind, rec.finished_at, rec.id, rec.priority,
                                    rec.attempts, rec.thread, rec.started_at, detail))
        self._log.append(ev)
        if self._need_wake:
            self._wake_subs_locked()

    def _kick_monitor(self) -> None:
        with self._lock:
            self._monitor_cv.notify()

    def _after_emit(self) -> None:
        for s in self._inline_subs:
            s._pump_inline()

    def __repr__(self) -> str:
        s = self.get_status()
        return (f"<NeonWorker {self.name} {s['state']} workers={s['max_workers']} "
                f"queued={s['queued_tasks']} running={s['running_tasks']} "
                f"done={s['completed_tasks']} failed={s['failed_tasks']}>")

    def _ipython_display_(self) -> None:  # pragma: no cover - exercised in notebooks
        # In a notebook with ipywidgets, a worker shows its live dashboard: the
        # same one each time (one delivery thread per worker, not per display).
        try:
            from .widgets import Dashboard
        except ImportError:
            print(repr(self))
            return
        from IPython.display import display

        dash = self.__dict__.get("_dashboard")
        if dash is None or dash._closed:
            dash = self._dashboard = Dashboard(self)
        display(dash)


def _safe_repr(value: Any) -> str:
    """``repr(value)`` for a message; never raises (a task id's ``__repr__`` is user code)."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} whose repr() raised>"


def _as_list(name: str, values: Any) -> list:
    """``list(values)``, or a TypeError naming the parameter if it is not iterable."""
    try:
        return list(values)
    except TypeError:
        if hasattr(values, "__iter__"):
            raise  # an iterable that failed while iterating: its own error
        raise TypeError(f"{name} must be an iterable (a list, a range, a generator...), got "
                        f"{type(values).__name__} {values!r}") from None
