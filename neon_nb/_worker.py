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
import math
import queue
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._config import WorkerConfig, config_manager
from ._errors import (
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

logger = logging.getLogger("neon_nb")
logger.addHandler(logging.NullHandler())

_now = time.monotonic


def _bounded(left: float | None) -> float | None:
    """A wait argument the OS accepts (timeouts above threading.TIMEOUT_MAX overflow)."""
    return left if left is None or left < threading.TIMEOUT_MAX else threading.TIMEOUT_MAX


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


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What `NeonWorker.shutdown` did.

    ``clean`` is True when every task reached a terminal state before the
    timeout. ``cancelled`` are the ids of tasks cancelled by the shutdown
    (queued or waiting for a retry); ``abandoned`` the ids of tasks still
    running when the timeout expired (their threads are left to finish them).
    ``complete`` is False when this call's timeout expired while a shutdown
    started by another call was still in progress: the report is its state so far.
    """

    clean: bool
    elapsed: float
    timeout: float | None
    succeeded: int
    failed: int
    cancelled: tuple[Hashable, ...]
    abandoned: tuple[Hashable, ...]
    complete: bool = True

    def __str__(self) -> str:
        if not self.complete:
            head = "shutdown still in progress"
        else:
            head = "clean shutdown" if self.clean else "shutdown timed out"
        return (f"{head} in {self.elapsed:.2f}s: {self.succeeded} succeeded, {self.failed} failed, "
                f"{len(self.cancelled)} cancelled, {len(self.abandoned)} abandoned while running")


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

    def __init__(self, tid: Hashable, fn: Callable, args: tuple, kwargs: dict | None, priority: int,
                 future: TaskFuture | None) -> None:
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
_exit_hook_lock = threading.Lock()
_exit_hook_installed = False


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
    """A thread-safe background worker with a bounded priority queue.

    Every public method is safe to call from any thread, including from inside
    a task and from widget callbacks. Settings not given here come from
    `neon_nb.get_config()` and follow later `update_config()` calls; settings
    given here are pinned for this worker (change them with `configure`).

    Parameters: see `WorkerConfig` for the settings. ``name`` prefixes thread
    names (``neon-worker_0``...). ``backend`` chooses where tasks execute:
    ``"threads"`` (default), ``"processes"`` or ``"dask"`` (see
    `neon_nb.backends`); scheduling stays here whatever the backend.
    """

    def __init__(self, max_workers: int | None = None, queue_size: int | None = None, *,
                 name: str | None = None, backend: Any = "threads", exit_timeout: Any = "config",
                 retry_on: Any = (Exception,), **settings: Any) -> None:
        pinned = dict(settings)
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
        if exit_timeout != "config" and exit_timeout is not None and not (
                type(exit_timeout) in (int, float) and exit_timeout >= 0):
            raise ValueError(f"exit_timeout must be 'config', None (wait for everything) or a "
                             f"number >= 0, got {exit_timeout!r}")
        self._exit_timeout = exit_timeout
        check_retry_on(retry_on, "retry_on")
        self._retry_on = retry_on

        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._resumed = threading.Condition(self._lock)
        self._monitor_cv = threading.Condition(self._lock)
        self._put_waiters = 0

        # The queue: one FIFO per priority, and a heap of the priorities present
        # (negated). Push and pop are O(1) for the usual handful of priorities,
        # where one heap of all tasks costs O(log n) tuple comparisons per task.
        self._buckets: dict[int, deque[_Record]] = {}
        self._prios: list[int] = []
        self._seq = itertools.count()
        self._tokens: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._live: dict[Hashable, _Record] = {}
        self._history: OrderedDict[Hashable, _Record] = OrderedDict()
        self._auto_ids = itertools.count()

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
            self._monitor = threading.Thread(target=self._monitor_loop, name=f"{self.name}-monitor",
                                             daemon=True)
            self._emit_locked(EventKind.WORKER_STARTED, detail=n)
        # Registered before any thread runs: a thread that fails at once (an
        # initializer) may shut the worker down before start() returns.
        _live_workers.add(self)
        _install_exit_hook()
        for t in new:
            t.start()
        self._monitor.start()
        logger.debug("worker %s started with %d threads", self.name, n)
        self._after_emit()
        return self

    def __enter__(self) -> NeonWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def state(self) -> str:
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
        if type(task) is not Task:
            if not isinstance(task, Task):
                raise TypeError(f"task must be a neon_nb.Task, got {type(task).__name__} {task!r}; "
                                f"use submit(fn, *args) for a plain callable")
        deadline = _deadline(block, timeout)
        rec = _Record(task.id, task.function, task.args, task.kwargs, task.priority, None)
        if (task.retry_attempts is not None or task.retry_delay is not None
                or task.retry_backoff is not None or task.retry_on is not None):
            rec.retry_attempts = task.retry_attempts
            rec.retry_delay = task.retry_delay
            rec.retry_backoff = task.retry_backoff
            rec.retry_on = task.retry_on
        return self._add(rec, block, deadline)

    def submit(self, fn: Callable[..., Any], /, *args: Any, priority: int = 0,
               task_id: Hashable | None = None, **kwargs: Any) -> TaskFuture:
        """Queue ``fn(*args, **kwargs)`` and return its future; blocks while the queue is full.

        ``task_id`` defaults to a generated int. Thread-safe.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        if type(priority) is not int:
            raise TypeError(f"priority must be an int (higher runs first), got "
                            f"{type(priority).__name__} {priority!r}")
        if task_id is None:
            task_id = f"task-{next(self._auto_ids)}"
        else:
            Task(task_id, fn)  # validates the id
        return self._add(_Record(task_id, fn, args, kwargs or None, priority, None), True, None)

    def _add(self, rec: _Record, block: bool, deadline: float | None) -> TaskFuture:
        if self._check_task is not None:
            self._check_task(rec.id, rec.fn, rec.args, rec.kwargs)
        fut = TaskFuture(rec.id, self._cancel_future)
        rec.future = fut
        with self._lock:
            if self._closed:
                raise WorkerShutdownError(f"worker {self.name!r} is shut down: it accepts no new task "
                                          f"(task {rec.id!r})")
            if rec.id in self._live:
                raise DuplicateTaskError(f"a task with id {rec.id!r} is still "
                                         f"{self._live[rec.id].state.value}; ids must be unique "
                                         f"among live tasks")
            size = self._config.queue_size
            if size and self._queued >= size:
                self._wait_for_room_locked(deadline, rec.id, 1)
                if rec.id in self._live:  # someone else took the id while we waited
                    raise DuplicateTaskError(f"a task with id {rec.id!r} was added while this "
                                             f"call waited for room")
            self._enqueue_locked(rec)
        self._tokens.put(_ITEM)
        if self._inline_subs:
            self._after_emit()
        return fut

    def add_tasks(self, tasks: Iterable[Task], block: bool = True,
                  timeout: float | None = None) -> list[TaskFuture]:
        """Queue many tasks at once; cheaper per task than a loop of `add_task`.

        The whole batch is validated first (types, and ids unique within the
        batch and among live tasks): on a bad item nothing is queued. Tasks are
        then queued in order as room allows. If the queue stays full past
        ``timeout`` (or at once with ``block=False``), `QueueFullError` is raised
        with ``.submitted`` (futures of the tasks already queued, which run
        normally) and ``.remaining`` (the tasks that were not queued).
        Returns the futures in the order of ``tasks``. Thread-safe.
        """
        tasks = list(tasks)
        deadline = _deadline(block, timeout)
        recs = []
        seen = set()
        check = self._check_task
        canceller = self._cancel_future
        for i, task in enumerate(tasks):
            if not isinstance(task, Task):
                raise TypeError(f"tasks[{i}] must be a neon_nb.Task, got {type(task).__name__} {task!r}")
            if task.id in seen:
                raise DuplicateTaskError(f"task id {task.id!r} appears twice in the batch "
                                         f"(tasks[{i}])")
            seen.add(task.id)
            if check is not None:
                check(task.id, task.function, task.args, task.kwargs)
            rec = _Record(task.id, task.function, task.args, task.kwargs, task.priority,
                          TaskFuture(task.id, canceller))
            if (task.retry_attempts is not None or task.retry_delay is not None
                    or task.retry_backoff is not None or task.retry_on is not None):
                rec.retry_attempts = task.retry_attempts
                rec.retry_delay = task.retry_delay
                rec.retry_backoff = task.retry_backoff
                rec.retry_on = task.retry_on
            recs.append(rec)
        futures = [r.future for r in recs]  # records drop their future when they finish
        done = woken = 0
        try:
            with self._lock:
                if self._closed:
                    raise WorkerShutdownError(f"worker {self.name!r} is shut down: it accepts no "
                                              f"new task")
                live = self._live
                if not live.keys().isdisjoint(seen):
                    rec = next(r for r in recs if r.id in live)
                    raise DuplicateTaskError(f"a task with id {rec.id!r} is still "
                                             f"{live[rec.id].state.value}; nothing of the batch "
                                             f"was queued")
                size = self._config.queue_size
                if not size or self._queued + len(recs) <= size:
                    # It all fits: one pass, the shortest hold of the lock.
                    self._enqueue_many_locked(recs)
                    done = len(recs)
                for rec in recs[done:]:
                    if size and self._queued >= size:
                        # Wake threads for what is queued so far, or no room will ever come.
                        for _ in range(done - woken):
                            self._tokens.put(_ITEM)
                        woken = done
                        self._wait_for_room_locked(deadline, rec.id, len(recs) - done)
                        size = self._config.queue_size
                        if rec.id in live or self._closed:
                            raise WorkerShutdownError("worker shut down while the batch waited") \
                                if self._closed else DuplicateTaskError(
                                    f"a task with id {rec.id!r} was added while the batch waited")
                    self._enqueue_locked(rec)
                    done += 1
        except QueueFullError as exc:
            raise QueueFullError(str(exc), submitted=futures[:done],
                                 remaining=tasks[done:]) from None
        except WorkerShutdownError as exc:
            if not done:
                raise
            raise WorkerShutdownError(f"{exc}; {done} task(s) of the batch were queued before "
                                      f"(see .submitted and .remaining)",
                                      submitted=futures[:done], remaining=tasks[done:]) from None
        finally:
            put = self._tokens.put
            for _ in range(done - woken):
                put(_ITEM)
            if done and self._inline_subs:
                self._after_emit()
        return futures

    def map(self, fn: Callable[..., Any], params: Iterable[Any], *, priority: int | Callable = 0,
            id_prefix: str | None = None, star: bool = False, **task_options: Any) -> list[TaskFuture]:
        """Queue ``fn(p)`` for each ``p`` in ``params`` as one batch; return the futures.

        ``priority`` is an int or a function of the parameter. With ``star=True``
        each ``p`` is unpacked: ``fn(*p)``. ``task_options`` are `Task` retry
        overrides. Ids are ``f"{id_prefix}{i}"`` (a unique prefix by default).
        """
        prefix = id_prefix if id_prefix is not None else f"{getattr(fn, '__name__', 'task')}-" \
                                                         f"{next(self._auto_ids)}-"
        tasks = []
        for i, p in enumerate(params):
            prio = priority(p) if callable(priority) else priority
            args = tuple(p) if star else (p,)
            tasks.append(Task(f"{prefix}{i}", fn, args, priority=prio, **task_options))
        return self.add_tasks(tasks)

    def _wait_for_room_locked(self, deadline: float | None, tid: Hashable, n: int) -> None:
        if deadline == 0.0:
            raise QueueFullError(f"queue is full ({self._queued}/{self._config.queue_size} tasks) and "
                                 f"block=False (task {tid!r}); retry later, raise queue_size, or "
                                 f"pass block=True with a timeout")
        self._put_waiters += 1
        try:
            while True:
                size = self._config.queue_size
                if self._closed:
                    raise WorkerShutdownError(f"worker {self.name!r} shut down while task {tid!r} "
                                              f"waited for room")
                if not size or self._queued < size:
                    return
                if deadline is None:
                    self._not_full.wait()
                else:
                    left = deadline - _now()
                    if left <= 0:
                        raise QueueFullError(f"queue stayed full ({self._queued}/{size} tasks) for "
                                             f"the whole timeout (task {tid!r}, {n} not queued)")
                    self._not_full.wait(_bounded(left))
        finally:
            self._put_waiters -= 1

    def _enqueue_many_locked(self, recs: Sequence[_Record]) -> None:
        """Queue records (already validated) in order: the one place a task enters the queue."""
        now = _now()
        next_seq = self._seq.__next__
        live = self._live
        buckets = self._buckets
        prev = bucket = None
        for rec in recs:
            rec.seq = next_seq()
            rec.submitted_at = rec.enqueued_at = now
            live[rec.id] = rec
            p = rec.priority
            if p != prev:
                bucket = buckets.get(p)
                if bucket is None:
                    bucket = buckets[p] = deque()
                    heapq.heappush(self._prios, -p)
                prev = p
            bucket.append(rec)
        self._queued += len(recs)
        self._submitted += len(recs)
        if self._subs:
            for rec in recs:
                self._emit_locked(EventKind.TASK_SUBMITTED, rec)

    def _enqueue_locked(self, rec: _Record) -> None:
        self._enqueue_many_locked((rec,))

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

        Under load, recording the finished attempt and claiming the next task
        share one critical section: half the lock traffic, and under the GIL
        every avoided hand-off counts. Callbacks and logging of the finished
        attempt still run after the lock is released.
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
                    self._after_record(self._record(done, name))
                    done = None
                    continue
            if token is not _ITEM or self._paused or self._retire:
                # Rare transitions take the slow path with nothing pending.
                if done is not None:
                    self._after_record(self._record(done, name))
                    done = None
                if self._control(token, name):
                    return
                continue
            with lock:
                post = None if done is None else self._record_locked(done, name)
                # Re-checked under the lock: pause() must win over a stale read above.
                rec = None if self._paused or self._retire else self._claim_locked(name)
                if rec is None and (self._paused or self._retire):
                    self._tokens.put(token)  # keep the token for whoever runs its task
            if post is not None:
                self._after_record(post)
                post = None  # no reference to the last result while this thread blocks
            elif self._inline_subs:
                self._after_emit()
            done = None
            if rec is not None:
                done = self._execute(rec)
                rec = None

    def _control(self, token: int, name: str) -> bool:
        """Handle stop, retire and pause; True if this thread must exit."""
        with self._lock:
            if token is _STOP:
                self._threads.pop(name, None)
                return True
            if token is _RETIRE:
                if self._retire > 0:
                    self._retire -= 1
                    self._threads.pop(name, None)
                    return True
                return False  # surplus: another thread already retired
            while self._paused and not self._retire and not self._stopping:
                self._resumed.wait()
            if self._retire > 0:
                self._retire -= 1
                self._threads.pop(name, None)
                self._tokens.put(token)  # the token belongs to a queued task
                return True
            rec = self._claim_locked(name)
        if self._inline_subs:
            self._after_emit()
        if rec is not None:  # the next token claims the next task
            self._after_record(self._record(self._execute(rec), name))
        return False

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
            rec.future._set_running_locked()
        if self._put_waiters:
            self._not_full.notify()
        if self._subs:
            self._emit_locked(EventKind.TASK_STARTED, rec)
        return rec

    def _execute(self, rec: _Record) -> tuple:
        """Run one attempt, no lock held. Returns ``(rec, ok, value, end, retryable)``."""
        try:
            call = self._call
            if call is None:
                if rec.kwargs:
                    value = rec.fn(*rec.args, **rec.kwargs)
                else:
                    value = rec.fn(*rec.args)
            else:
                value = call(rec.fn, rec.args, rec.kwargs or {})
        except BaseException as exc:
            end = _now()
            # The exception filter is user code: evaluate it here, outside the lock.
            return (rec, False, exc, end, self._retryable(rec, exc))
        end = _now()
        pending = self._metrics_pending
        if pending is not None:  # deque.append is atomic: no need to hold the lock for it
            pending.append((rec.id, rec.thread, rec.enqueued_at, rec.started_at, end,
                            rec.submitted_at, OUTCOME_SUCCEEDED, rec.attempts))
        return (rec, True, value, end, False)

    def _retryable(self, rec: _Record, exc: BaseException) -> bool:
        if isinstance(exc, TaskPicklingError):
            return False  # the task cannot cross a process boundary: another attempt cannot help
        if self._always_retry and isinstance(exc, self._always_retry):
            return True  # the backend's failure (a lost process), not the task's
        retry_on = rec.retry_on if rec.retry_on is not None else self._retry_on
        if isinstance(retry_on, (type, tuple)):
            return isinstance(exc, retry_on)
        try:
            return bool(retry_on(exc))
        except Exception:
            logger.exception("retry_on predicate raised for task %r; not retrying", rec.id)
            return False

    def _record(self, done: tuple, name: str) -> tuple:
        with self._lock:
            return self._record_locked(done, name)

    def _record_locked(self, done: tuple, name: str) -> tuple:
        """Record a finished attempt: success, retry or final failure.

        Returns what must happen after the lock is released (callbacks, logging).
        """
        rec, ok, value, end, retryable = done
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
            return (fut, None, None)
        error = f"{type(value).__name__}: {value}"
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
            return (None, (rec.id, rec.attempts, error, retry_in), None)
        rec.state = FAILED
        self._failed += 1
        if self._subs:
            self._emit_locked(EventKind.TASK_FAILED, rec, detail=error)
        self._finish_locked(rec)
        fut._set_exception_locked(value)
        return (fut, None, (rec.id, rec.attempts, error, value))

    def _after_record(self, post: tuple) -> None:
        """Outside the lock: log, then run the future's done callbacks and inline subscribers."""
        fut, retry, failure = post
        if retry is not None:
            logger.info("task %r failed on attempt %d (%s); retry in %.3fs", *retry)
        elif failure is not None:
            tid, attempts, error, exc = failure
            logger.warning("task %r failed after %d attempt(s): %s", tid, attempts, error,
                           exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None)
        if fut is not None and fut._done_callbacks:
            fut._invoke_callbacks()
        if self._inline_subs:
            self._after_emit()

    def _retry_delay_locked(self, rec: _Record) -> float | None:
        """Seconds until the next attempt of a retryable failure, or None if it is final."""
        cfg = self._config
        limit = cfg.retry_attempts if rec.retry_attempts is None else rec.retry_attempts
        if rec.attempts > limit:
            return None
        if self._stopping or (self._closed and self._cancel_on_close):
            return None  # no thread will be left to run it
        delay = cfg.retry_delay if rec.retry_delay is None else rec.retry_delay
        backoff = cfg.retry_backoff if rec.retry_backoff is None else rec.retry_backoff
        cap = max(cfg.retry_max_delay, delay)
        try:
            delay = min(delay * backoff ** (rec.attempts - 1), cap)
        except OverflowError:  # a huge backoff: the cap applies
            delay = cap
        if cfg.retry_jitter:
            delay *= 1.0 + random.uniform(-cfg.retry_jitter, cfg.retry_jitter)
        return max(delay, 0.0)

    _cancel_on_close = False

    def _finish_locked(self, rec: _Record) -> None:
        """Move a terminal record from the live table to the bounded history."""
        tid = rec.id
        del self._live[tid]
        rec.fn = rec.args = rec.kwargs = None  # a finished task keeps no reference to them
        rec.future = None
        hist = self._history
        limit = self._config.history_size
        if limit:
            hist[tid] = rec
            while len(hist) > limit:  # more than one after history_size was lowered
                hist.popitem(last=False)
        if not self._live:
            self._all_done.notify_all()
            if self._closed:
                self._stop_threads_locked()

    # ============================================================ cancellation
    def cancel(self, task_id: Hashable) -> bool:
        """Cancel a queued task (or one waiting for a retry). False if it is running or done."""
        _check_hashable("task_id", task_id)
        with self._lock:
            rec = self._live.get(task_id)
            fut = None if rec is None else self._cancel_locked(rec)
        if fut is None:
            return False
        fut._invoke_callbacks()
        self._after_emit()
        return True

    def _cancel_future(self, fut: TaskFuture) -> bool:
        # TaskFuture.cancel() lands here: withdraw the task if it has not started.
        with self._lock:
            if fut.cancelled():
                return True
            rec = self._live.get(fut.task_id)
            if rec is None or rec.future is not fut or self._cancel_locked(rec) is None:
                return fut.cancelled()
        fut._invoke_callbacks()
        self._after_emit()
        return True

    def _cancel_locked(self, rec: _Record) -> TaskFuture | None:
        """Cancel a queued or retry-waiting record; return its future (callbacks still to run)."""
        state = rec.state
        if state is QUEUED:
            self._queued -= 1
            if self._put_waiters:
                self._not_full.notify()
        elif state is RETRY_WAIT:
            self._retry_waiting -= 1  # its retry-heap entry is skipped by state
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
        fut._set_cancelled_locked()
        return fut

    def cancel_pending(self) -> int:
        """Cancel every queued task and every pending retry; return how many. Running tasks go on."""
        futures = self._cancel_all_pending()
        return len(futures)

    def _cancel_all_pending(self) -> list[TaskFuture]:
        with self._lock:
            recs = [r for r in self._live.values() if r.state is QUEUED or r.state is RETRY_WAIT]
            futures = []
            for rec in recs:
                fut = self._cancel_locked(rec)
                if fut is not None:
                    futures.append(fut)
            if not self._queued:  # drop the cancelled entries at once
                self._buckets.clear()
                self._prios.clear()
        for fut in futures:
            fut._invoke_callbacks()
        self._after_emit()
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
        retry); ``uptime_s`` (seconds since `start`, 0 before).
        ``submitted = queued + running + retry_waiting + completed + failed + cancelled``
        holds at every instant.
        """
        with self._lock:
            return {
                "state": self._state,
                "max_workers": self._config.max_workers,
                "threads": len(self._threads) - self._retire,
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
                "uptime_s": 0.0 if self._started_at is None else _now() - self._started_at,
            }

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
        _check_hashable("task_id", task_id)
        with self._lock:
            rec = self._live.get(task_id) or self._history.get(task_id)
            if rec is None:
                raise UnknownTaskError(f"no task with id {task_id!r} (never submitted, or finished "
                                       f"and forgotten: history_size={self._config.history_size})")
            return rec.info()

    def tasks(self, state: TaskState | str | None = None) -> list[TaskInfo]:
        """Status of live and remembered tasks, in submission order, optionally of one state."""
        want = None if state is None else TaskState(state)
        with self._lock:
            recs = list(self._history.values()) + list(self._live.values())
            infos = [r.info() for r in recs if want is None or r.state is want]
        infos.sort(key=lambda i: i.sequence)
        return infos

    def _own_task_locked(self) -> int:
        """1 if the calling thread is one of ours running a task (it must not wait for itself)."""
        me = threading.current_thread()
        return 1 if self._threads.get(me.name) is me and me.name in self._busy else 0

    def wait_for_completion(self, timeout: float | None = None) -> bool:
        """Block until no task is queued, running or waiting for a retry; False on timeout.

        Thread-safe. Called from inside a task, it does not wait for that task itself.
        """
        deadline = _deadline(True, timeout)
        with self._lock:
            own = self._own_task_locked()
            while len(self._live) > own:
                if deadline is None:
                    self._all_done.wait()
                else:
                    left = deadline - _now()
                    if left <= 0:
                        return False
                    self._all_done.wait(_bounded(left))
            return True

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
        follow = {k: getattr(new, k) for k in changed if k not in self._pinned}
        if follow:
            self._apply_config(follow)

    def _apply_config(self, changes: dict[str, Any]) -> WorkerConfig:
        # The new snapshot is derived from the current one under the lock, so
        # concurrent configure() calls never lose each other's changes.
        start: list[threading.Thread] = []
        changed = frozenset(changes)
        with self._lock:
            old = self._config
            cfg = old.replace(**changes)
            self._config = cfg
            while len(self._history) > cfg.history_size:
                self._history.popitem(last=False)
            if cfg.queue_size != old.queue_size and self._put_waiters:
                self._not_full.notify_all()
            if cfg.enable_metrics and self.metrics is None:
                self._enable_metrics()
            elif not cfg.enable_metrics:
                self._metrics_pending = None
            if cfg.max_workers != old.max_workers and self._state in (WorkerState.RUNNING,
                                                                       WorkerState.PAUSED):
                current = len(self._threads) - self._retire
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
    def shutdown(self, timeout: float | str | None = "config", cancel_pending: bool = False,
                 wait: bool = True) -> ShutdownReport | None:
        """Stop accepting tasks, let running ones finish, and run or cancel the queue.

        Queued tasks still run (unless ``cancel_pending``) while time remains;
        at the ``timeout`` (default: the ``shutdown_timeout`` setting; None
        waits for everything) queued tasks and pending retries are cancelled
        and tasks still running are abandoned to their (daemon) threads. It
        returns within the timeout plus a few milliseconds even if a task
        hangs. A paused worker is resumed so that its queue can drain.

        Idempotent and thread-safe: a second call waits (within its own
        timeout) for the first and returns the same `ShutdownReport`, or a
        report with ``complete=False`` if the first is still going on. ``wait=False`` starts the shutdown
        and returns None at once. Called from inside a task, it does not wait
        for that task.
        """
        if timeout == "config":
            timeout = self._config.shutdown_timeout
        _check_timeout("timeout", timeout)
        t_begin = _now()
        deadline = None if timeout is None else t_begin + timeout
        with self._lock:
            first = not self._closed
            if first:
                self._closed = True
                self._shutdown_claimed = True
                self._shutdown_started_at = t_begin
                self._cancel_on_close = bool(cancel_pending)
                if self._state == WorkerState.CREATED:
                    self._state = WorkerState.STOPPED
                else:
                    self._state = WorkerState.SHUTTING_DOWN
                self._paused = False
                self._resumed.notify_all()
                self._not_full.notify_all()
                self._monitor_cv.notify()
                self._emit_locked(EventKind.WORKER_SHUTTING_DOWN, detail=timeout)
                never_started = self._state == WorkerState.STOPPED
        self._after_emit()
        if first and cancel_pending:
            self._cancel_all_pending()
        if first and never_started:
            self._cancel_all_pending()  # no thread will ever run them
            return self._finalize(t_begin, timeout)
        if not wait:
            if first:
                threading.Thread(target=self._complete_shutdown_claimed, args=(t_begin, timeout),
                                 name=f"{self.name}-shutdown", daemon=True).start()
            return None
        if not first:
            with self._lock:
                # The call that owned the shutdown was interrupted (Ctrl-C during its
                # wait): this one takes over, or the worker would stay half shut down.
                take_over = not self._shutdown_claimed and not self._shutdown_done.is_set()
                if take_over:
                    self._shutdown_claimed = True
            if not take_over:
                # Another call is shutting down: wait for its report, within our own bound.
                left = None if deadline is None else max(0.0, deadline - _now())
                if self._shutdown_done.wait(_bounded(left)):
                    return self._report
                return self._progress_report(timeout)
        return self._complete_shutdown_claimed(t_begin, timeout)

    def _complete_shutdown_claimed(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        try:
            return self._complete_shutdown(t_begin, timeout)
        except BaseException:  # KeyboardInterrupt: let a later call finish the job
            with self._lock:
                self._shutdown_claimed = False
            raise

    def _complete_shutdown(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        # Wait for live tasks (not for the caller's own, if called from a task).
        deadline = None if timeout is None else t_begin + timeout
        with self._lock:
            own = self._own_task_locked()
            while len(self._live) > own:
                if deadline is None:
                    self._all_done.wait()
                else:
                    left = deadline - _now()
                    if left <= 0:
                        break
                    self._all_done.wait(_bounded(left))
        if self._live:
            self._cancel_all_pending()
        return self._finalize(t_begin, timeout)

    def _stop_threads_locked(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._resumed.notify_all()
        for _ in range(len(self._threads)):
            self._tokens.put(_STOP)  # behind every item token: queued work drains first

    def _finalize(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        with self._lock:
            self._stop_threads_locked()
            me_name = threading.current_thread().name
            abandoned = tuple(rec.id for rec in self._live.values()
                              if rec.state is RUNNING and rec.thread != me_name)
            threads = [t for n, t in self._threads.items() if n not in self._busy]
            me = threading.current_thread()
        deadline = None if timeout is None else t_begin + timeout
        for t in threads:
            if t is me or not t.ident:
                continue
            left = None if deadline is None else max(0.0, deadline - _now())
            t.join(_bounded(left))
        self._backend.stop(self, timeout=None if deadline is None else max(0.0, deadline - _now()))
        with self._lock:
            if self._report is not None:
                return self._report
            self._state = WorkerState.STOPPED
            self._monitor_cv.notify()
            report = ShutdownReport(
                clean=not abandoned, elapsed=_now() - t_begin, timeout=timeout,
                succeeded=self._succeeded, failed=self._failed,
                cancelled=tuple(self._shutdown_cancelled), abandoned=abandoned)
            self._report = report
            self._emit_locked(EventKind.WORKER_STOPPED, detail=report)
            subs = self._subs
        for s in subs:
            s._close(drain=True)
        self._after_emit()
        for s in subs:
            s.flush() if s.mode == "inline" else None
        _live_workers.discard(self)
        config_manager().remove_listener(self)
        self._shutdown_done.set()
        if abandoned:
            logger.warning("worker %s: shutdown timed out after %.1fs; %d task(s) still running were "
                           "abandoned: %r", self.name, report.elapsed, len(abandoned), abandoned[:10])
        else:
            logger.debug("worker %s: %s", self.name, report)
        return report

    def _progress_report(self, timeout: float | None) -> ShutdownReport:
        """A report of a shutdown still in progress (``complete=False``)."""
        with self._lock:
            started = self._shutdown_started_at or _now()
            return ShutdownReport(
                clean=False, elapsed=_now() - started, timeout=timeout,
                succeeded=self._succeeded, failed=self._failed,
                cancelled=tuple(self._shutdown_cancelled),
                abandoned=tuple(r.id for r in self._live.values() if r.state is RUNNING),
                complete=False)

    def _exit_shutdown(self) -> None:
        if self._closed and self._shutdown_done.is_set():
            return
        t = self._exit_timeout
        timeout = self._config.shutdown_timeout if t == "config" else t
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
        while True:
            due: list[_Record] = []
            with self._lock:
                if self._state == WorkerState.STOPPED:
                    return
                now = _now()
                rh = self._retry_heap
                while rh and rh[0][0] <= now:
                    rec = heapq.heappop(rh)[2]
                    if rec.state is RETRY_WAIT:
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
            for _ in due:
                self._tokens.put(_ITEM)
            if due or any(sub._deferred for sub in self._inline_subs):
                self._after_emit()
            if health_due:
                self._check_health()
            if self.metrics is not None and self._metrics_pending is not None:
                try:
                    self.metrics.fold()
                except Exception:  # pragma: no cover
                    logger.exception("folding metrics failed")
            with self._lock:
                if self._state == WorkerState.STOPPED:
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
            expected = len(self._threads) - self._retire
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


def _check_hashable(name: str, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{name} must be a task id (hashable), got unhashable "
                        f"{type(value).__name__} {value!r}") from None


def _deadline(block: bool, timeout: float | None) -> float | None:
    if not isinstance(block, bool):
        raise TypeError(f"block must be True or False, got {block!r}")
    if not block:
        return 0.0
    _check_timeout("timeout", timeout)
    return None if timeout is None else _now() + timeout


def _check_timeout(name: str, value: Any) -> None:
    """None or a number >= 0: TypeError for another type, ValueError for a bad number."""
    if value is None:
        return
    if type(value) not in (int, float):
        raise TypeError(f"{name} must be None or a number of seconds >= 0, got "
                        f"{type(value).__name__} {value!r}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be None or a number of seconds >= 0, got {value!r}")
