"""`NeonWorker`: a thread-safe background worker with a bounded priority queue.

How it is built (read this before changing anything below):

* One lock (``_lock``, a plain `threading.Lock`) guards every piece of
  scheduling state: the `Scheduler` (a task's whole life: the queue, the retry
  heap, the backlog, the task tables and the counters), the `ThreadPool`'s
  bookkeeping, the `EventLog`, and the lifecycle (a `Phase`, and whether the
  worker is paused). Conditions built on it wait for completion (``_all_done``),
  for room in the queue (``_room``), for resume (``_resumed``) and for the
  monitor's next deadline (``_wakeup``). One lock means one order of events: a
  status read, a future and the event stream always agree.
* Nothing that can run user code runs under that lock: task functions, done
  callbacks, event callbacks, logging, and the ``__hash__``/``__eq__``/``__str__``
  of a task's id or exception all happen after it is released.
* The worker loop (`_work`): take a wake-up token, claim the best queued task,
  run it, record it. Under load, recording and the next claim share one
  critical section when nothing must run in between.
* Re-entrant calls (a task or a callback calling the worker): a call that waits
  never waits for work only its own thread can do. From inside a task,
  ``wait_for_completion()`` and ``shutdown()`` wait for the other tasks only, and
  a worker thread (or the monitor) that blocks in any call gets a stand-in for
  the time of its wait (``_lend``).
* Shutdown: close (no new task), optionally cancel what is pending, wait for the
  live tasks up to the timeout, then the last window (cancel what is left; a
  failure is final), stop the threads behind the queued work, and join them
  outside the lock. Threads are daemons so that a hung task cannot hang the
  interpreter; an exit hook shuts every running worker down within its bound
  first.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import _exit
from ._checks import bounded_wait, check_hashable, check_timeout, deadline_of
from ._config import FROM_CONFIG, WorkerConfig, _FromConfig, config_manager
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    DuplicateTaskError,
    NeonError,
    QueueFullError,
    TaskPicklingError,
    UnknownTaskError,
    WorkerShutdownError,
)
from ._events import DeliverOn, EventBatch, EventKind, EventLog, Subscription
from ._journal import Journal
from ._journaling import Resumed, WorkerJournal, open_for_worker
from ._locking import Held
from ._locking import acquire as acquire_yielding
from ._metrics import OUTCOME_SUCCEEDED, Metrics
from ._monitor import Monitor, MonitorLinks
from ._pool import ThreadPool, Token
from ._record import IdKey, RetryOverrides, TaskRecord, describe_error, is_plain_id, safe_repr, same_id
from ._scheduler import QUIET, AfterLock, Attempt, Refusal, Scheduler
from ._status import HealthReport, Phase, ShutdownReport, WorkerState, WorkerStatistics
from ._task import RetryFilter, Task, TaskFuture, TaskInfo, TaskState, check_retry_on

if TYPE_CHECKING:
    from .backends import Backend, BackendSpec

__all__ = ["HealthReport", "NeonWorker", "ShutdownReport", "WorkerState", "WorkerStatistics"]

# No NullHandler here: with no logging configured, Python's last-resort handler prints
# WARNING and above on stderr, so that a task that fails for good never fails silently.
logger = logging.getLogger("neon_nb")

#: Marks this module for the signal handlers: code here may hold a worker's lock.
NEON_HOLDS_WORKER_LOCKS = True

_now = time.monotonic
_SETTINGS = tuple(f.name for f in fields(WorkerConfig))
_FULL_FAILURE_LOGS = 10  # final failures of a worker logged at WARNING, before DEBUG
_OWN_KEYS = frozenset({str, int})  # the usual ids, their own keys (see neon_nb._record)
_new_attempt = tuple.__new__  # an Attempt without the Python-level __new__ of a NamedTuple
_worker_names = itertools.count()


def _bounded(left: float | None) -> float | None:
    """A wait argument the OS accepts (timeouts above threading.TIMEOUT_MAX overflow)."""
    return left if left is None or left < threading.TIMEOUT_MAX else threading.TIMEOUT_MAX


@dataclass
class _Shutdown:
    """A shutdown in progress (or done): guarded by the worker's lock."""

    started_at: float
    owned: bool = True  # a call is completing it (False once that call was interrupted)
    report: ShutdownReport | None = None
    done: threading.Event = field(default_factory=threading.Event)


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
    ``initializer(*initargs)`` runs first in every worker thread; if it
    raises, the worker shuts down and cancels its queue.

    ``journal``: a file path or a `Journal` (None: the ``journal`` setting;
    False: none). The outcome of every task that ends (succeeded, or failed
    for good) is written there, and a task's future settles only once its
    outcome is durable. A task submitted later whose key has a stored success
    (from this run or an earlier one, in any process) is not run: its future
    is returned already done, with the stored result (``resumed_tasks`` in
    `get_status`). The key is the task's id alone; ``journal_with_args=True``
    adds a digest of the function's qualified name and arguments, for ids
    reused with other arguments. A task without an id of its own (``submit``
    without ``task_id``, ``map`` without ``id_prefix``) is keyed by its call:
    the function and its arguments. A task that failed for good runs again,
    unless ``journal_keep_failed`` (None: the `Journal`'s ``keep_failed``)
    keeps its failure. A path opens a journal that `shutdown` closes; a
    `Journal` is flushed by `shutdown` and stays open. See the README's
    "Resumable runs".

    Every public method is safe to call from any thread, including from
    inside a task and from callbacks (see the README's Guarantees).
    """

    def __init__(self, max_workers: int | None = None, queue_size: int | None = None, *,  # noqa: PLR0913 - each setting a keyword: help() shows them
                 name: str | None = None, backend: BackendSpec = "threads",
                 shutdown_timeout: float | None = None, log_level: str | None = None,
                 retry_attempts: int | None = None, retry_delay: float | None = None,
                 health_check_interval: float | None = None, enable_metrics: bool | None = None,
                 retry_backoff: float | None = None, retry_max_delay: float | None = None,
                 retry_jitter: float | None = None, history_size: int | None = None,
                 stuck_task_threshold: float | None = None,
                 exit_timeout: float | _FromConfig | None = FROM_CONFIG,
                 retry_on: RetryFilter = (Exception,),
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple = (), journal: str | os.PathLike[str] | Journal | bool | None = None,
                 journal_keep_failed: bool | None = None, journal_with_args: bool = False) -> None:
        given = {"max_workers": max_workers, "queue_size": queue_size,
                 "shutdown_timeout": shutdown_timeout, "log_level": log_level,
                 "retry_attempts": retry_attempts, "retry_delay": retry_delay,
                 "health_check_interval": health_check_interval, "enable_metrics": enable_metrics,
                 "retry_backoff": retry_backoff, "retry_max_delay": retry_max_delay,
                 "retry_jitter": retry_jitter, "history_size": history_size,
                 "stuck_task_threshold": stuck_task_threshold}
        pinned = {k: v for k, v in given.items() if v is not None}
        self._config: WorkerConfig = config_manager().get().replace(**pinned)  # names bad keys
        self._pinned = frozenset(pinned)
        self.name = _checked_name(name)
        self._exit_timeout = _checked_exit_timeout(exit_timeout)
        check_retry_on(retry_on, "retry_on")
        self._retry_on = retry_on
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable, got {initializer!r}")
        self._initializer = None if initializer is None else (initializer, tuple(initargs))

        self._phase = Phase.CREATED
        self._closed = False  # self._phase.closed, read on every submission
        self._paused = False
        self._started_at: float | None = None
        self._shutdown: _Shutdown | None = None
        self._forked_from: int | None = None
        self._auto_ids = itertools.count()
        self._sub_ids = itertools.count()
        self._failures_logged = itertools.count()
        self._feeder: threading.Thread | None = None

        self._lock = threading.Lock()
        self._events = EventLog(self._lock, self._kick_monitor, self.name)
        self._sched = Scheduler(self._config, self._events)
        self._pool = ThreadPool(self.name, self._thread_main)
        self._new_conditions()
        self._monitor = Monitor(MonitorLinks(
            self.name, self._lock, self._wakeup, self._sched, self._pool, self._events,
            settings=lambda: self._config, metrics=self._live_metrics,
            phase=lambda: self._phase, state=self._state_locked))
        self.metrics: Metrics | None = None
        if self._config.enable_metrics:
            self._enable_metrics()

        from .backends import Backend, make_backend

        self._backend = make_backend(backend)
        self._call = self._backend.call  # None for threads: call the function directly
        self._always_retry = tuple(self._backend.always_retry)
        # None when the backend accepts any callable (threads): skip the call per task.
        self._check_task = (None if type(self._backend).check_task is Backend.check_task
                            else self._backend.check_task)
        # Last: a journal opened here starts a writer thread, and nothing below can fail.
        self._journaling = self._open_journal(journal, journal_keep_failed, journal_with_args)
        config_manager().add_listener(self._on_global_config)
        _exit.after_fork(self._after_fork_in_child)

    def _open_journal(self, spec: Any, keep_failed: Any, with_args: Any) -> WorkerJournal | None:
        journaling = open_for_worker(spec, self._config.journal, keep_failed=keep_failed,
                                     with_args=with_args, name=self.name,
                                     settled=self._journal_settled)
        # The journal is fixed for the worker's life: its setting follows no later update.
        self._pinned = self._pinned | {"journal"}
        path = None if journaling is None else str(journaling.journal.path)
        self._config = self._sched.config = self._config.replace(journal=path)
        if journaling is not None:
            self._sched.journaled = True
            self._call = journaling.wrap_call(self._call)
        return journaling

    def _journal_settled(self, n: int) -> None:
        """The journal settled the futures of ``n`` ended tasks (their outcomes are durable)."""
        with self._held:
            self._sched.settled(n)

    def _new_conditions(self) -> None:
        self._held = Held(self._lock)  # `with self._held:` takes the lock without convoys
        self._all_done = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._resumed = threading.Condition(self._lock)
        self._wakeup = threading.Condition(self._lock)
        self._sched.bind(self._all_done, self._room, self._wakeup)

    # ================================================================ lifecycle
    def start(self) -> NeonWorker:
        """Start the threads. Idempotent; returns self. Raises if the worker was shut down."""
        with self._held:
            if self._closed:
                raise self._closed_error("start (create a new worker)")
            if self._phase is not Phase.CREATED:
                return self
        self._backend.start(self)  # may raise a clear error (e.g. unreachable scheduler)
        with self._held:
            if self._phase is not Phase.CREATED:
                return self
            self._phase = Phase.RUNNING
            self._started_at = _now()
            n = self._config.max_workers
            new = [self._pool.new_thread() for _ in range(n)]
            self._events.emit(EventKind.WORKER_STARTED, detail=n)
            # Registered before any thread runs: a thread that fails at once (an
            # initializer) may shut the worker down before start() returns.
            _exit.on_exit(self._exit_shutdown)
            self._monitor.start()
        for t in new:
            t.start()
        logger.debug("worker %s started with %d threads", self.name, n)
        self._events.pump_inline()
        return self

    def _start_on_first_task(self) -> None:
        """A worker nobody started starts with its first task (a forgotten start() once hung)."""
        if self._phase is Phase.CREATED:
            try:
                self.start()
            except WorkerShutdownError:
                pass  # shut down meanwhile: the submission reports it

    def __enter__(self) -> NeonWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def state(self) -> WorkerState:
        """``"created"``, ``"running"``, ``"paused"``, ``"shutting_down"`` or ``"stopped"``."""
        return self._phase.state(self._paused)

    def _state_locked(self) -> WorkerState:
        return self._phase.state(self._paused)

    @property
    def config(self) -> WorkerConfig:
        """This worker's current settings (an immutable snapshot)."""
        return self._config

    @property
    def journal(self) -> Journal | None:
        """The `Journal` this worker writes outcomes to, or None. Thread-safe (fixed)."""
        return None if self._journaling is None else self._journaling.journal

    @property
    def backend(self) -> Backend:
        """Where this worker's tasks execute (a `neon_nb.backends.Backend`: its ``name`` is
        ``"threads"``, ``"processes"`` or ``"dask"``). Thread-safe (fixed for the worker's life)."""
        return self._backend

    @property
    def paused(self) -> bool:
        """True between `pause` and `resume`: queued tasks wait, running ones go on."""
        return self._paused

    def _closed_error(self, what: str) -> WorkerShutdownError:
        if self._forked_from is not None:
            return WorkerShutdownError(
                f"worker {self.name!r} was copied into this process by os.fork() (its threads "
                f"stayed in process {self._forked_from}): it accepts no {what} here. Create a "
                f"new NeonWorker in this process, or fork before starting the worker")
        return WorkerShutdownError(f"worker {self.name!r} is shut down: it accepts no {what}")

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
        deadline = None if block is True and timeout is None else deadline_of(block, timeout)
        tid = task.id
        return self._add(self._record_for(task, tid if type(tid) in _OWN_KEYS else self._key_of(tid)),
                         deadline)

    def submit(self, fn: Callable[..., Any], /, *args: Any, priority: int = 0,
               task_id: Hashable | None = None, **kwargs: Any) -> TaskFuture:
        """Queue ``fn(*args, **kwargs)`` and return its future; blocks while the queue is full.

        ``task_id`` defaults to a generated ``"task-<n>"`` (with a journal, such a
        task is found again by its call: ``fn`` and its arguments). Thread-safe.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        if type(priority) is not int:
            raise TypeError(f"priority must be an int (higher runs first), got "
                            f"{type(priority).__name__} {priority!r}")
        key: Hashable
        generated = task_id is None
        if task_id is None:
            task_id = key = f"task-{next(self._auto_ids)}"
        else:
            Task(task_id, fn)  # validates the id
            key = task_id if type(task_id) in _OWN_KEYS else self._key_of(task_id)
        if self._check_task is not None:
            self._check_task(task_id, fn, args, kwargs or None)
        rec = TaskRecord(key, task_id, fn, args, kwargs or None, priority,
                         TaskFuture(task_id, self._cancel_future))
        return self._add(rec, None, generated)

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

        With a journal, the tasks found done there (one lookup for the batch) are
        resumed first; ``.submitted`` of an error then lists their futures too.
        """
        return self._add_batch(tasks, block, timeout, background, by_call=False)

    def _add_batch(self, tasks: Iterable[Task], block: bool, timeout: float | None,
                   background: bool, by_call: bool) -> list[TaskFuture]:
        """`add_tasks`; ``by_call``: the ids were generated (journal keys are the calls)."""
        tasks = _as_list("tasks", tasks)
        if not isinstance(background, bool):
            raise TypeError(f"background must be True or False, got {background!r}")
        deadline = deadline_of(block, timeout)
        recs = self._records_for_batch(tasks)
        futures = [r.future for r in recs]
        self._start_on_first_task()
        if self._journaling is not None:
            return self._add_journaled(recs, futures, tasks, deadline, background, by_call)
        return self._queue_batch(recs, futures, tasks, deadline, background)

    def _queue_batch(self, recs: list[TaskRecord], futures: list[TaskFuture], tasks: list[Task],
                     deadline: float | None, background: bool) -> list[TaskFuture]:
        if background:
            return self._add_in_background(recs, futures, tasks)
        with self._held:
            done, woken, refusal, culprit = self._enqueue_batch(recs, deadline)
        self._pool.wake(Token.ITEM, done - woken)
        if done and self._events.inline:
            self._events.pump_inline()
        if refusal is not None:
            raise self._batch_error(refusal, culprit or recs[0], futures, tasks, done)
        return futures

    def map(self, fn: Callable[..., Any], params: Iterable[Any], *, priority: int | Callable = 0,
            id_prefix: str | None = None, star: bool = False, background: bool = False,
            **task_options: Any) -> list[TaskFuture]:
        """Queue ``fn(p)`` for each ``p`` in ``params`` as one batch; return the futures.

        ``priority`` is an int or a function of the parameter. With ``star=True``
        each ``p`` is unpacked: ``fn(*p)``. ``task_options`` are `Task` retry
        overrides. Ids are ``f"{id_prefix}{i}"`` (a unique prefix by default).
        ``background``: as for `add_tasks`, return at once even if the queue is full.
        With a journal, tasks of generated ids are found again by their call
        (``fn`` and the parameter), those of an ``id_prefix`` by their ids.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__} {fn!r}")
        params = _as_list("params", params)
        prefix = id_prefix if id_prefix is not None else \
            f"{getattr(fn, '__name__', 'task')}-{next(self._auto_ids)}-"
        tasks = []
        for i, p in enumerate(params):
            prio = priority(p) if callable(priority) else priority
            args = tuple(p) if star else (p,)
            tasks.append(Task(f"{prefix}{i}", fn, args, priority=prio, **task_options))
        return self._add_batch(tasks, True, None, background, by_call=id_prefix is None)

    # --- records and keys (outside the lock: user code may run) ----------------
    def _record_for(self, task: Task, key: Hashable) -> TaskRecord:
        """A new record (and future) for ``task``; checked by the backend first."""
        if self._check_task is not None:
            self._check_task(task.id, task.function, task.args, task.kwargs)
        tid = task.id
        retry = None if (task.retry_attempts is None and task.retry_delay is None
                         and task.retry_backoff is None and task.retry_on is None) \
            else RetryOverrides.of(task)
        return TaskRecord(key, tid, task.function, task.args, task.kwargs, task.priority,
                          TaskFuture(tid, self._cancel_future), retry)

    def _records_for_batch(self, tasks: list[Task]) -> list[TaskRecord]:
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

    def _key_of(self, tid: Hashable) -> Hashable:
        """The key ``tid`` is filed under: the known key of an equal id, if any."""
        return self._keys_of((tid,))[0]

    def _keys_of(self, ids: Sequence[Hashable]) -> list[Hashable]:
        # Plain ids are their own keys. For others, hashing and comparing run user code:
        # both happen here, on the calling thread, with the lock released (it is taken
        # once, only to read the candidates with the same hash).
        keys: list[Hashable | None] = [tid if type(tid) in _OWN_KEYS or is_plain_id(tid) else None
                                       for tid in ids]
        hashes = {i: hash(tid) for i, tid in enumerate(ids) if keys[i] is None}
        if not hashes:
            return keys  # every id is plain
        with self._held:
            known = self._sched.candidates(set(hashes.values()))
        for i, h in hashes.items():
            tid = ids[i]
            keys[i] = next((k for k in known[h] if same_id(k.id, tid)), None) or IdKey(tid, h)
        return keys  # all filled

    # --- queueing -----------------------------------------------------------------
    def _add(self, rec: TaskRecord, deadline: float | None, by_call: bool = False) -> TaskFuture:
        fut = rec.future  # (the record drops it when the task ends)
        if self._phase is Phase.CREATED:
            self._start_on_first_task()
        if self._journaling is not None and self._resume_from_journal([rec], by_call, batch=False):
            return fut
        sched = self._sched
        lock = self._lock
        if not lock.acquire(False):
            acquire_yielding(lock)
        try:
            size = self._config.queue_size
            if not self._closed and rec.key not in sched.live and (not size or len(sched.queue) < size):
                refusal = None  # the common case, decided at once
            else:
                refusal = self._admit(rec, deadline)
            if refusal is None:
                sched.enqueue_one(rec)
        finally:
            lock.release()
        if refusal is not None:
            raise self._refusal_error(refusal, rec)
        self._pool.tokens.put(Token.ITEM)
        if self._events.inline:
            self._events.pump_inline()
        return fut

    def _admit(self, rec: TaskRecord, deadline: float | None) -> Refusal | None:
        """Why ``rec`` cannot be queued now (after waiting for room), or None. Lock held."""
        if self._closed:
            return Refusal("closed")
        refusal = self._sched.refusal(rec)
        if refusal is None and not self._sched.has_room():
            refusal = self._wait_for_room(deadline)
            if refusal is None and rec.key in self._sched.live:  # taken while we waited
                refusal = Refusal("duplicate_while_waiting")
        return refusal

    def _wait_for_room(self, deadline: float | None) -> Refusal | None:
        """Wait until the queue has room (lock held); None, or why the wait ended."""
        sched = self._sched
        if deadline == 0.0:
            return Refusal("full_now", (len(sched.queue), self._config.queue_size))
        sched.room_waiters += 1
        lent = self._lend()
        try:
            while True:
                if self._closed:
                    return Refusal("closed_while_waiting")
                if sched.has_room():
                    return None
                if not bounded_wait(self._room, deadline):
                    return Refusal("full", (len(sched.queue), self._config.queue_size))
        finally:
            sched.room_waiters -= 1
            self._unlend(lent)

    def _refusal_error(self, refusal: Refusal, rec: TaskRecord, n: int = 1) -> NeonError:
        """The error for a refused task (formatted with the lock released: repr is user code)."""
        kind, detail = refusal
        tid = safe_repr(rec.id)
        if kind == "closed":
            return self._closed_error(f"new task (task {tid})")
        if kind == "closed_while_waiting":
            return WorkerShutdownError(f"worker {self.name!r} shut down while task {tid} waited "
                                       f"for room")
        if kind.startswith("duplicate"):
            why = (f"is still {detail}; ids must be unique among live tasks" if kind == "duplicate"
                   else "was added while this call waited for room")
            return DuplicateTaskError(f"a task with id {tid} {why}")
        queued, size = detail
        if kind == "full_now":
            return QueueFullError(f"queue is full ({queued}/{size} tasks) and block=False (task "
                                  f"{tid}); retry later, raise queue_size, or pass block=True "
                                  f"with a timeout")
        return QueueFullError(f"queue stayed full ({queued}/{size} tasks) for the whole timeout "
                              f"(task {tid}, {n} not queued)")

    def _enqueue_batch(self, recs: list[TaskRecord], deadline: float | None
                       ) -> tuple[int, int, Refusal | None, TaskRecord | None]:
        """Queue ``recs`` in order as room allows (lock held).

        Returns (how many were queued, how many of those already have their
        wake-up token, the refusal that stopped it or None, the record it stopped at).
        """
        if self._closed:
            return 0, 0, Refusal("closed"), None
        sched = self._sched
        dup = next((r for r in recs if r.key in sched.live), None)
        if dup is not None:
            return 0, 0, sched.refusal(dup), dup
        if sched.has_room(len(recs)):
            sched.enqueue(recs)  # it all fits: one pass, the shortest hold
            return len(recs), 0, None, None
        done = woken = 0
        for rec in recs:
            if not sched.has_room():
                # Wake threads for what is queued so far, or no room will ever come.
                self._pool.wake(Token.ITEM, done - woken)
                woken = done
                refusal = self._wait_for_room(deadline)
                if refusal is None and rec.key in sched.live:
                    refusal = Refusal("duplicate_while_waiting")
                if refusal is not None:
                    return done, woken, refusal, rec
            sched.enqueue((rec,))
            done += 1
        return done, woken, None, None

    def _batch_error(self, refusal: Refusal, culprit: TaskRecord, futures: list[TaskFuture],
                     tasks: list[Task], done: int) -> NeonError:
        err = self._refusal_error(refusal, culprit, len(tasks) - done)
        queued = futures[:done]
        if refusal.kind == "duplicate":
            return DuplicateTaskError(f"{err}; nothing of the batch was queued")
        if isinstance(err, QueueFullError):
            return QueueFullError(str(err), submitted=queued, remaining=tasks[done:])
        if not done or not isinstance(err, WorkerShutdownError):
            return err
        return WorkerShutdownError(f"{err}; {done} task(s) of the batch were queued before (see "
                                   f".submitted and .remaining)", submitted=queued,
                                   remaining=tasks[done:])

    # --- resuming from the journal ------------------------------------------------
    def _resume_from_journal(self, recs: list[TaskRecord], by_call: bool, *, batch: bool
                             ) -> list[Resumed]:
        """End the records found done in the journal (looked up before taking the lock: it
        reads the file); return them. Every record gets its journal key. Raises as the
        submission would (the worker closed, an id live), resuming nothing then."""
        if self._closed:
            return []  # refused as usual (and the journal may be closed already)
        resumed, _ = self._journaling.split(recs, by_call)  # type: ignore[union-attr]  # checked by the callers
        if not resumed:
            return resumed
        sched = self._sched
        culprit: TaskRecord | None = recs[0]
        refusal: Refusal | None = Refusal("closed")
        with self._held:
            if not self._closed:
                culprit = next((r for r in recs if r.key in sched.live), None)
                refusal = None if culprit is None else sched.refusal(culprit)
            if refusal is None:
                for done in resumed:
                    sched.resume(done.rec, done.ok, done.value, done.stored)
        if refusal is not None:
            assert culprit is not None  # (a refusal always names its record)
            raise (self._batch_error(refusal, culprit, [], [], 0) if batch
                   else self._refusal_error(refusal, culprit))
        self._events.pump_inline()
        return resumed

    def _add_journaled(self, recs: list[TaskRecord], futures: list[TaskFuture], tasks: list[Task],
                       deadline: float | None, background: bool, by_call: bool) -> list[TaskFuture]:
        """A batch on a worker with a journal: resume what is done, queue the rest."""
        resumed = self._resume_from_journal(recs, by_call, batch=True)
        if not resumed:
            return self._queue_batch(recs, futures, tasks, deadline, background)
        gone = {id(r.rec) for r in resumed}
        rest = [(r, t) for r, t in zip(recs, tasks) if id(r) not in gone]
        if rest:
            try:
                self._queue_batch([r for r, _ in rest], [r.future for r, _ in rest],
                                  [t for _, t in rest], deadline, background)
            except (QueueFullError, WorkerShutdownError) as exc:
                exc.submitted[:0] = [f for f, r in zip(futures, recs) if id(r) in gone]
                raise
        return futures

    # --- background batches ------------------------------------------------------
    def _add_in_background(self, recs: list[TaskRecord], futures: list[TaskFuture],
                           tasks: list[Task]) -> list[TaskFuture]:
        feeder = None
        with self._held:
            refusal, culprit, done = self._queue_or_backlog(recs)
            if refusal is None and self._sched.backlog_futures and self._feeder is None:
                feeder = self._feeder = threading.Thread(
                    target=self._feed, name=f"{self.name}-feeder", daemon=True)
        if refusal is not None:
            raise self._batch_error(refusal, culprit, futures, tasks, 0)
        self._pool.wake(Token.ITEM, done)
        if feeder is not None:
            feeder.start()
        if done and self._events.inline:
            self._events.pump_inline()
        return futures

    def _queue_or_backlog(self, recs: list[TaskRecord]) -> tuple[Refusal | None, TaskRecord, int]:
        """Queue what fits of a background batch, the rest waits in the backlog (lock held)."""
        sched = self._sched
        if self._closed:
            return Refusal("closed"), recs[0], 0
        dup = next((r for r in recs if r.key in sched.live), None)
        if dup is not None:
            return sched.refusal(dup), dup, 0
        size = self._config.queue_size
        room = len(recs) if not size else max(0, size - len(sched.queue))
        n = 0 if sched.backlog_futures else min(room, len(recs))  # behind an earlier backlog
        sched.enqueue(recs[:n])
        sched.add_to_backlog(recs[n:])
        return None, recs[0], n

    def _feed(self) -> None:
        """The feeder thread: backlog records enter the queue, in order, as room frees."""
        while True:
            with self._held:
                room = self._room_for_backlog()
                if not room:
                    self._feeder = None
                    return
                batch, clashes = self._sched.take_backlog(room)
                self._sched.enqueue(batch)
            self._pool.wake(Token.ITEM, len(batch))
            self._after_cancel(clashes)  # their done callbacks, then inline deliveries

    def _room_for_backlog(self) -> int:
        """Wait for room in the queue (lock held): how much, or 0 when the backlog is done."""
        sched = self._sched
        while True:
            if self._closed or not sched.backlog_futures:
                return 0
            size = self._config.queue_size
            room = len(sched.backlog) if not size else size - len(sched.queue)
            if room > 0:
                return room
            sched.room_waiters += 1
            try:
                self._room.wait()
            finally:
                sched.room_waiters -= 1

    # ================================================================ threads
    def _thread_main(self, name: str) -> None:
        # A thread that leaves normally removes itself from the pool; one whose loop
        # crashes is marked crashed, and the monitor replaces it.
        if self._initializer is not None and not self._run_initializer(name):
            return
        try:
            self._work(name)
        except BaseException:  # a bug in the loop itself
            logger.exception("worker thread %s died; the monitor will replace it", name)
            with self._held:
                self._pool.crashed.add(name)
                self._wakeup.notify()
            raise

    def _run_initializer(self, name: str) -> bool:
        fn, args = self._initializer  # type: ignore[misc]  # checked by the caller
        try:
            fn(*args)
        except BaseException:
            # As ThreadPoolExecutor: a failed initializer breaks the pool.
            logger.exception("initializer of %s failed; the worker is shut down and its queued "
                             "tasks cancelled", name)
            with self._held:
                self._pool.leave(name)
            self.shutdown(timeout=0, cancel_pending=True, wait=False)
            return False
        return True

    def _work(self, name: str) -> None:
        """The worker loop: take the best queued task, run it, record it, repeat.

        Under load, recording a finished attempt and claiming the next task share one
        critical section, if nothing has to run in between: half the lock traffic, and
        under the GIL every avoided hand-off counts. When something must run (the
        future's done callbacks, logging of a failure: user code), the thread records,
        releases the lock, runs it, and only then claims: done callbacks run between two
        tasks, never while this thread holds a task it has not started.
        """
        pool = self._pool
        tokens = pool.tokens
        get, get_nowait = tokens.get, tokens.get_nowait
        record_and_claim = self._record_and_claim
        events = self._events
        done: Attempt | None = None  # the finished attempt not yet recorded
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
            rec: TaskRecord | None = None
            if token is not Token.ITEM or self._paused or pool.retire:
                # Rare transitions take the slow path, with the finished attempt recorded first.
                rec, leave = self._control(token, name, done)
                done = None
                if leave:
                    return
            else:
                after, rec = record_and_claim(done, name, token)
                done = None
                if not after.quiet:
                    self._follow_up(after)
                elif events.inline:
                    events.pump_inline()
                after = QUIET  # no reference to the last result while this thread blocks
            if rec is not None:
                done = self._execute(rec)
                rec = None

    def _record_and_claim(self, done: Attempt | None, name: str,
                          token: Token) -> tuple[AfterLock, TaskRecord | None]:
        """Record ``done`` and claim the next task, in one critical section (see `_work`)."""
        lock = self._lock
        if not lock.acquire(False):
            acquire_yielding(lock)  # (no lock convoy: see neon_nb._locking)
        try:
            after = QUIET if done is None else self._sched.record(done, name)
            if not after.quiet or self._paused or self._pool.retire:
                self._pool.tokens.put(token)  # claimed after the follow-up, or kept for another
                return after, None
            return after, self._sched.claim(name)
        finally:
            lock.release()

    def _control(self, token: Token, name: str,
                 done: Attempt | None) -> tuple[TaskRecord | None, bool]:
        """Handle stop, retire and pause: (a claimed task or None, True if this thread must exit)."""
        if done is not None:
            self._follow_up(self._record(done, name))
        pool = self._pool
        with self._held:
            if token is Token.STOP:
                pool.leave(name)
                return None, True
            if token is Token.RETIRE:
                return None, pool.take_retirement(name)  # False: surplus, another retired
            while self._paused and not pool.retire and not pool.stopping:
                self._resumed.wait()
            if pool.take_retirement(name):
                pool.wake(token)  # the token belongs to a queued task
                return None, True
            rec = self._sched.claim(name)
        if self._events.inline:
            self._events.pump_inline()
        return rec, False

    def _execute(self, rec: TaskRecord) -> Attempt:
        """Run one attempt, no lock held.

        Everything that may run user code about a failure (the exception's ``__str__``,
        the ``retry_on`` filter) runs here, before the lock is taken to record it.
        """
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
            return _new_attempt(Attempt, (rec, False, exc, _now(), self._retryable(rec, exc),
                                          describe_error(exc)))
        end = _now()
        pending = self._sched.metrics
        if pending is not None:  # deque.append is atomic: no need to hold the lock for it
            pending.append((rec.id, rec.thread, rec.enqueued_at, rec.started_at, end,
                            rec.submitted_at, OUTCOME_SUCCEEDED, rec.attempts))
        return _new_attempt(Attempt, (rec, True, value, end, False, None))

    def _retryable(self, rec: TaskRecord, exc: BaseException) -> bool:
        try:
            if isinstance(exc, (TaskPicklingError, BackendUnavailableError)):
                return False  # the task cannot cross to its backend: another attempt cannot help
            if self._always_retry and isinstance(exc, self._always_retry):
                return True  # the backend's failure (a lost process), not the task's
            over = rec.retry
            retry_on = self._retry_on if over is None or over.on is None else over.on
            if isinstance(retry_on, (type, tuple)):
                return isinstance(exc, retry_on)
            return bool(retry_on(exc))
        except BaseException:  # user code (a predicate, an __instancecheck__)
            logger.exception("retry_on predicate raised for task %r; not retrying", rec.id)
            return False

    def _record(self, done: Attempt, name: str) -> AfterLock:
        with self._held:
            return self._sched.record(done, name)

    def _follow_up(self, after: AfterLock) -> None:
        """Outside the lock: log, then run the future's done callbacks and inline subscribers.

        All of it may run user code (log handlers too): whatever it raises, even a
        BaseException, is logged here and never ends this worker thread.
        """
        fut, retry, failure, _, ended = after
        try:
            if ended is not None:  # a worker with a journal: its writer settles the future
                self._journaling.ended(ended)  # type: ignore[union-attr]  # set with a journal only
            if retry is not None:
                logger.info("task %r failed on attempt %d (%s); retry in %.3fs", *retry)
            elif failure is not None:
                self._log_failure(*failure)
            if fut is not None and fut.has_callbacks:
                fut.run_callbacks()
            if self._events.inline:
                self._events.pump_inline()
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

    # ================================================================== lending
    def _lend(self) -> bool:
        """The calling thread is about to block in a public call (lock held).

        A worker thread that blocks (in a task, a done callback, an inline
        subscriber) would shrink the pool for the time of its wait, and stall it if
        every thread waited: a stand-in thread takes its place until the wait ends
        (`_unlend`). A blocking monitor thread hands its role to a new monitor.
        Returns True if a worker thread lent.
        """
        me = threading.current_thread()
        working = Phase.RUNNING <= self._phase < Phase.STOPPING
        if self._pool.lend(me, working):
            return True
        self._monitor.take_over(me)
        return False

    def _unlend(self, lent: bool) -> None:
        if lent:
            self._pool.unlend()
            self._resumed.notify_all()  # a paused thread may be the one to retire

    # ============================================================ cancellation
    def cancel(self, task_id: Hashable) -> bool:
        """Cancel a queued task (or one waiting for a retry). False if it is running or done."""
        check_hashable("task_id", task_id)
        key = self._key_of(task_id)
        with self._held:
            rec = self._sched.live.get(key)
            fut = None if rec is None else self._sched.cancel(rec)
            if fut is None and rec is None:
                fut = self._withdraw_backlogged(key)
        if fut is None:
            return False
        self._after_cancel([fut])
        return True

    def _withdraw_backlogged(self, key: Hashable) -> TaskFuture | None:
        rec = next((r for r in self._sched.backlog_futures.values() if r.key == key), None)
        return None if rec is None else self._sched.withdraw(rec)

    def _cancel_future(self, fut: TaskFuture) -> bool:
        # TaskFuture.cancel() lands here: withdraw the task if it has not started.
        key = self._key_of(fut.task_id)
        with self._held:
            if fut.cancelled():
                return True
            sched = self._sched
            backlogged = sched.backlog_futures.get(fut)
            if backlogged is not None:
                sched.withdraw(backlogged)
            else:
                rec = sched.live.get(key)
                if rec is None or rec.future is not fut or sched.cancel(rec) is None:
                    return fut.cancelled()
        self._after_cancel([fut])
        return True

    def _after_cancel(self, futures: list[TaskFuture]) -> None:
        """Outside the lock: the cancelled futures' callbacks, then inline deliveries."""
        for fut in futures:
            fut.run_callbacks()
        self._events.pump_inline()

    def cancel_pending(self) -> int:
        """Cancel every queued task, every pending retry and the backlog; return how many.

        Running tasks go on.
        """
        with self._held:
            futures = self._sched.cancel_pending()
        self._after_cancel(futures)
        return len(futures)

    # ================================================================= status
    def statistics(self) -> WorkerStatistics:
        """A frozen, consistent snapshot of the worker's counts (taken under its lock)."""
        with self._held:
            return self._statistics_locked()

    def _statistics_locked(self) -> WorkerStatistics:
        s = self._sched
        return WorkerStatistics(
            state=self._state_locked(), max_workers=self._config.max_workers,
            threads=self._pool.size(), queue_size=self._config.queue_size,
            submitted=s.submitted, queued=len(s.queue), running=s.running,
            retry_wait=s.retry_waiting, succeeded=s.succeeded, failed=s.failed,
            cancelled=s.cancelled, retried=s.retried, backlog=len(s.backlog_futures),
            uptime=0.0 if self._started_at is None else _now() - self._started_at,
            resumed=s.resumed)

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
        ``resumed_tasks`` (found done in the journal, ended without running;
        also counted as submitted and as completed, or failed);
        ``uptime_s`` (seconds since `start`, 0 before).
        ``submitted = queued + running + retry_waiting + completed + failed + cancelled``
        holds at every instant. `statistics` returns the same as a frozen object.
        """
        return self.statistics().as_status()

    def get_task_status(self, task_id: Hashable) -> TaskInfo:
        """A frozen `TaskInfo` for a live task or one of the last ``history_size`` finished ones.

        Raises `UnknownTaskError` (a KeyError) for an id never seen or forgotten.
        """
        check_hashable("task_id", task_id)
        key = self._key_of(task_id)
        with self._held:
            rec = self._sched.find(key)
            info = None if rec is None else rec.info()
            history_size = self._config.history_size
        if info is None:
            raise UnknownTaskError(f"no task with id {safe_repr(task_id)} (never submitted, or "
                                   f"finished and forgotten: history_size={history_size})")
        return info

    def tasks(self, state: TaskState | str | None = None) -> list[TaskInfo]:
        """Status of live and remembered tasks, in submission order, optionally of one state."""
        want = None if state is None else TaskState(state)
        with self._held:
            return self._sched.infos(want)

    def _in_task(self) -> bool:
        """Is the calling thread one of ours, holding a task? (It must not wait for that task.)"""
        me = threading.current_thread()
        return self._pool.owns(me) and me.name in self._sched.busy

    def wait_for_completion(self, timeout: float | None = None) -> bool:
        """Block until no task is queued, running or waiting for a retry; False on timeout.

        With a journal, also until every ended task's outcome is durable and its
        future settled.

        Thread-safe. From inside a task it waits for every other task: not for its
        own, nor for other tasks that are themselves waiting this way (so two such
        tasks never wait for each other), and its thread gets a stand-in meanwhile,
        so the pool keeps running queued tasks.
        """
        deadline = deadline_of(True, timeout)
        with self._held:
            return self._wait_idle(deadline)

    def _wait_idle(self, deadline: float | None) -> bool:
        """Wait for the live tasks to end (see `wait_for_completion`; lock held)."""
        sched = self._sched
        inside = self._in_task()
        if inside:
            sched.inside_waiters += 1
            if sched.idle(True):
                self._all_done.notify_all()  # the other in-task waiters may be done now
        lent = self._lend()
        try:
            while not sched.idle(inside):
                if not bounded_wait(self._all_done, deadline):
                    return False
            return True
        finally:
            if inside:
                sched.inside_waiters -= 1
            self._unlend(lent)

    # ================================================================ control
    def pause(self) -> None:
        """Stop starting new tasks; running ones finish. Submissions are still accepted."""
        with self._held:
            if self._paused or self._closed:
                return  # a shutdown drains the queue: pausing it then would stall it
            self._paused = True
            self._events.emit(EventKind.WORKER_PAUSED)
        self._events.pump_inline()

    def resume(self) -> None:
        """Start dispatching queued tasks again."""
        with self._held:
            if not self._paused:
                return
            self._paused = False
            self._resumed.notify_all()
            self._events.emit(EventKind.WORKER_RESUMED)
        self._events.pump_inline()

    def resize(self, max_workers: int) -> None:
        """Grow or shrink the live pool; running tasks are never interrupted. Thread-safe."""
        self.configure(max_workers=max_workers)

    def configure(self, **changes: Any) -> WorkerConfig:
        """Change this worker's settings (all or nothing) and pin them against `update_config`.

        ``journal`` is fixed when the worker is created (ConfigError).
        """
        self._config.replace(**changes)  # validate first: raises ConfigError naming the key
        if "journal" in changes and changes["journal"] != self._config.journal:
            raise ConfigError("journal cannot change on a worker: it is opened when the worker is "
                              "created; create a new NeonWorker(journal=...)")
        with self._held:
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
        with self._held:
            old = self._config
            if changes is None:
                changes = self._global_changes(old)
                if not changes:
                    return old
            cfg = self._config = self._sched.config = old.replace(**changes)
            start = self._reconfigure(old, cfg)
            self._events.emit(EventKind.WORKER_CONFIG_CHANGED,
                              detail=tuple(sorted((k, getattr(cfg, k)) for k in changes)))
        for t in start:
            t.start()
        if "log_level" in changes:
            logging.getLogger("neon_nb").setLevel(cfg.log_level)
        self._events.pump_inline()
        return cfg

    def _global_changes(self, old: WorkerConfig) -> dict[str, Any]:
        current = config_manager().get()
        return {k: getattr(current, k) for k in _SETTINGS
                if k not in self._pinned and getattr(current, k) != getattr(old, k)}

    def _reconfigure(self, old: WorkerConfig, cfg: WorkerConfig) -> list[threading.Thread]:
        """Follow a new configuration (lock held); the new threads, to be started."""
        self._sched.trim_history()
        if cfg.queue_size != old.queue_size and self._sched.room_waiters:
            self._room.notify_all()
        if cfg.enable_metrics and self.metrics is None:
            self._enable_metrics()
        self._sched.metrics = self.metrics.pending if cfg.enable_metrics and self.metrics else None
        start: list[threading.Thread] = []
        if cfg.max_workers != old.max_workers and self._phase is Phase.RUNNING:
            current = self._pool.size()
            start = self._pool.resize(cfg.max_workers)
            self._resumed.notify_all()  # paused threads may have to retire
            self._events.emit(EventKind.WORKER_RESIZED, detail=(current, cfg.max_workers))
        self._monitor.recheck()
        return start

    def _enable_metrics(self) -> None:
        if self.metrics is None:
            self.metrics = Metrics(lambda: self.statistics().counts(), self._running_spans,
                                   self._thread_names)
        self._sched.metrics = self.metrics.pending

    def _live_metrics(self) -> Metrics | None:
        """The metrics to fold, if they are collected (for the monitor)."""
        return self.metrics if self._sched.metrics is not None else None

    def _running_spans(self) -> list[tuple[str, float]]:
        with self._held:
            return self._sched.running_spans()

    def _thread_names(self) -> list[str]:
        with self._held:
            return sorted(self._pool.threads)

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
        so that its queue can drain. Tasks of background batches that have not
        entered the queue are cancelled at once.

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
        seconds: float | None = timeout  # checked just above
        with self._held:
            t_begin = _now()  # the bound counts from when the shutdown can start
            first = self._shutdown is None
            never_started = first and self._begin_shutdown(t_begin, seconds, cancel_pending)
            withdrawn = self._sched.withdraw_backlog() if first else []
            inside = self._in_task()
        self._after_cancel(withdrawn)
        if not first:
            return self._join_shutdown(t_begin, seconds, wait, inside)
        if cancel_pending or never_started:
            self.cancel_pending()
        if never_started:
            return self._finalize(t_begin, seconds)
        if wait and not inside:
            return self._complete_shutdown_owned(t_begin, seconds)
        # Inside a task the shutdown cannot complete before that task returns: a helper
        # thread completes it (within the same bound), and this call waits for the others.
        threading.Thread(target=self._complete_shutdown_owned, args=(t_begin, seconds),
                         name=f"{self.name}-shutdown", daemon=True).start()
        return self._wait_for_the_others(t_begin, seconds) if wait else None

    def _begin_shutdown(self, t_begin: float, timeout: float | None, cancel_pending: bool) -> bool:
        """Close the worker (lock held); True if it was never started."""
        never_started = self._phase is Phase.CREATED
        self._phase = Phase.STOPPING if never_started else (
            Phase.FINAL if cancel_pending else Phase.DRAINING)
        self._closed = True
        self._shutdown = _Shutdown(started_at=t_begin)
        sched = self._sched
        sched.cancelled_ids = []
        sched.retries_open = not cancel_pending
        sched.on_drained = self._stop_threads
        self._paused = False
        for cond in (self._resumed, self._room, self._all_done):
            cond.notify_all()
        self._wakeup.notify()
        self._events.emit(EventKind.WORKER_SHUTTING_DOWN, detail=timeout)
        return never_started

    def _join_shutdown(self, t_begin: float, timeout: float | None, wait: bool,
                       inside: bool) -> ShutdownReport | None:
        """A later shutdown() call: wait (within its own bound) for the one in progress."""
        if not wait:
            return None
        if inside:
            return self._wait_for_the_others(t_begin, timeout)
        shutdown: _Shutdown = self._shutdown  # type: ignore[assignment]  # set by the first call
        with self._held:
            # The call that owned the shutdown was interrupted (Ctrl-C during its wait):
            # this one takes over, or the worker would stay half shut down.
            take_over = not shutdown.owned and not shutdown.done.is_set()
            shutdown.owned = True
        if take_over:
            return self._complete_shutdown_owned(t_begin, timeout)
        with self._held:
            lent = self._lend()
        try:
            left = None if timeout is None else max(0.0, t_begin + timeout - _now())
            done = shutdown.done.wait(_bounded(left))
        finally:
            with self._held:
                self._unlend(lent)
        return shutdown.report if done and shutdown.report else self._progress_report(timeout)

    def _wait_for_the_others(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        with self._held:
            self._wait_idle(None if timeout is None else t_begin + timeout)
        return self._progress_report(timeout, caller=threading.current_thread().name)

    def _complete_shutdown_owned(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        try:
            return self._complete_shutdown(t_begin, timeout)
        except BaseException:  # KeyboardInterrupt: let a later call finish the job
            with self._held:
                self._shutdown.owned = False  # type: ignore[union-attr]
            raise

    def _complete_shutdown(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        with self._held:
            idle = self._wait_idle(None if timeout is None else t_begin + timeout)
            if not idle:
                # The last window: from this critical section on, nothing pending starts
                # and a failing task is failed for good (no retry left behind).
                self._phase = max(self._phase, Phase.FINAL)
                self._sched.retries_open = False
        if not idle:
            self.cancel_pending()
        return self._finalize(t_begin, timeout)

    def _stop_threads(self) -> None:
        """Tell the threads to stop behind the queued work (lock held)."""
        if self._pool.stop():
            self._phase = max(self._phase, Phase.STOPPING)
            self._resumed.notify_all()

    def _finalize(self, t_begin: float, timeout: float | None) -> ShutdownReport:
        deadline = None if timeout is None else t_begin + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - _now())

        me = threading.current_thread()
        with self._held:
            self._stop_threads()
            abandoned = self._sched.running_ids()
            threads = self._pool.idle_threads(self._sched.busy, but=me)
        for t in threads:
            if t.ident:
                t.join(_bounded(left()))
        self._backend.stop(self, timeout=left())
        if self._journaling is not None:  # what is pending is written, its futures settled
            self._journaling.close(left())
        with self._held:
            shutdown: _Shutdown = self._shutdown  # type: ignore[assignment]
            if shutdown.report is not None:
                return shutdown.report
            report = shutdown.report = self._final_report(t_begin, timeout, abandoned)
            self._phase = Phase.STOPPED
            self._wakeup.notify()
            self._events.emit(EventKind.WORKER_STOPPED, detail=report)
            subs = self._events.stop_all()
            helpers = [t for t in (self._monitor.thread, self._feeder) if t is not None]
        self._events.pump_inline()
        for s in subs:
            if s.mode == "inline":
                s.flush()
        for t in helpers:  # shutdown(wait=True) leaves no thread of ours behind
            if t is not me and t.ident:
                t.join(_bounded(left()))
        _exit.forget_on_exit(self)
        config_manager().remove_listener(self._on_global_config)
        shutdown.done.set()
        self._log_report(report)
        return report

    def _final_report(self, t_begin: float, timeout: float | None,
                      abandoned: tuple[Hashable, ...]) -> ShutdownReport:
        s = self._sched
        return ShutdownReport(
            clean=not abandoned, elapsed=_now() - t_begin, timeout=timeout,
            succeeded=s.succeeded, failed=s.failed, cancelled=tuple(s.cancelled_ids or ()),
            abandoned=abandoned, cancelled_total=s.cancelled, failures=s.failures())

    def _log_report(self, report: ShutdownReport) -> None:
        if report.abandoned:
            logger.warning("worker %s: shutdown timed out after %.1fs; %d task(s) still running were "
                           "abandoned: %r", self.name, report.elapsed, len(report.abandoned),
                           report.abandoned[:10])
        else:
            logger.debug("worker %s: %s", self.name, report)

    def _progress_report(self, timeout: float | None, caller: str | None = None) -> ShutdownReport:
        """A report of a shutdown still in progress (``complete=False``).

        ``caller``: the thread of the task that called shutdown() (its own task is
        not "abandoned": the shutdown completes when it returns); then ``clean``
        says whether every other task is done.
        """
        with self._held:
            s = self._sched
            started = self._shutdown.started_at if self._shutdown else _now()
            running = s.running_ids(but=caller)
            return ShutdownReport(
                clean=caller is not None and not running, elapsed=_now() - started,
                timeout=timeout, succeeded=s.succeeded, failed=s.failed,
                cancelled=tuple(s.cancelled_ids or ()), abandoned=running, complete=False,
                cancelled_total=s.cancelled, failures=s.failures())

    def _exit_shutdown(self) -> None:
        """At interpreter exit (the exit hook): a graceful shutdown within ``exit_timeout``."""
        shutdown = self._shutdown
        if shutdown is not None and shutdown.done.is_set():
            return
        t = self._exit_timeout
        report = self.shutdown(timeout=self._config.shutdown_timeout if t is FROM_CONFIG else t)
        if report is not None and not report.clean:
            logger.warning("interpreter exit: worker %s %s", self.name, report)

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The report of the finished shutdown, or None."""
        shutdown = self._shutdown
        return None if shutdown is None else shutdown.report

    # ================================================================= health
    def health(self) -> HealthReport:
        """The latest health report (checked every ``health_check_interval`` s; now, if none yet)."""
        return self._monitor.health or self._monitor.check_health()

    def check_health(self) -> HealthReport:
        """Run a health check now and return it."""
        return self._monitor.check_health()

    def _kick_monitor(self) -> None:
        with self._held:
            self._wakeup.notify()

    # ================================================================= events
    def subscribe(self, callback: Callable[[EventBatch], Any], *, on: DeliverOn = "thread",
                  max_rate_hz: float | None = None, buffer_size: int = 10_000,
                  kinds: Iterable[EventKind] | None = None) -> Subscription:
        """Receive batches of `Event` (as `EventBatch`) from this worker.

        ``on``: ``"thread"`` (a delivery thread owned by the worker), an
        asyncio loop (its thread, via ``call_soon_threadsafe``), or
        ``"inline"`` (a worker thread, after it released its lock; must not
        block). ``max_rate_hz`` coalesces deliveries (an unthrottled ``"thread"``
        subscriber is still batched over 5 ms: each wake-up costs the workers a
        thread switch under the GIL). ``buffer_size`` bounds the buffer: when
        full the oldest events are dropped and the count is reported in the
        next batch. ``kinds``: the kinds of event delivered (default: all); only
        kinds some subscriber takes are built, so a narrow subscription is cheap.
        ``kinds=()`` subscribes to changes alone: no event is built, and the
        callback receives an empty batch (at most ``max_rate_hz`` times a second)
        whenever the worker changed since its previous call; the way to keep a
        display of ``get_status()`` current at the least cost. Thread-safe.
        """
        sub = Subscription(self._events, callback, on=on, max_rate_hz=max_rate_hz,
                           buffer_size=buffer_size, kinds=kinds,
                           name=f"{self.name}-dispatch_{next(self._sub_ids)}")
        return sub.start()  # (WorkerShutdownError once the worker has stopped)

    # ================================================================== fork
    def _after_fork_in_child(self) -> None:
        """In a child made by os.fork(): fresh locks; a started worker becomes a stopped copy."""
        self._lock = threading.Lock()
        self._new_conditions()
        self._events.reset_after_fork(self._lock)
        self._monitor.links = self._monitor.links._replace(lock=self._lock, wakeup=self._wakeup)
        if self.metrics is not None:
            self.metrics.reset_lock_after_fork()
        if self._phase is Phase.CREATED:
            return  # never started: it can be started in the child as usual
        self._forked_from = os.getppid()
        self._pool.reset_after_fork()
        self._feeder = None
        self._monitor.thread = None
        sched = self._sched
        sched.backlog.clear()
        sched.backlog_futures.clear()
        sched.room_waiters = sched.inside_waiters = 0
        self._phase = Phase.STOPPED
        self._closed = True
        shutdown = self._shutdown = self._shutdown or _Shutdown(started_at=_now())
        shutdown.done = threading.Event()
        if shutdown.report is None:
            shutdown.report = ShutdownReport(
                clean=False, elapsed=0.0, timeout=0.0, succeeded=sched.succeeded,
                failed=sched.failed, cancelled=(), abandoned=sched.running_ids())
        shutdown.done.set()

    # ================================================================ display
    def __repr__(self) -> str:
        s = self.statistics()
        return (f"<NeonWorker {self.name} {s.state} workers={s.max_workers} queued={s.queued} "
                f"running={s.running} done={s.succeeded} failed={s.failed}>")



def _checked_name(name: str | None) -> str:
    if name is None:
        n = next(_worker_names)
        return "neon" if n == 0 else f"neon{n}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    return name


def _checked_exit_timeout(value: Any) -> float | _FromConfig | None:
    if value == "config":  # the spelling of earlier versions
        return FROM_CONFIG
    if value is not FROM_CONFIG and value is not None and not (
            type(value) in (int, float) and value >= 0):
        raise ValueError(f"exit_timeout must be None (wait for everything) or a number of "
                         f"seconds >= 0 (default: the shutdown_timeout setting), got {value!r}")
    return value


def _as_list(name: str, values: Any) -> list:
    """``list(values)``, or a TypeError naming the parameter if it is not iterable."""
    try:
        return list(values)
    except TypeError:
        if hasattr(values, "__iter__"):
            raise  # an iterable that failed while iterating: its own error
        raise TypeError(f"{name} must be an iterable (a list, a range, a generator...), got "
                        f"{type(values).__name__} {values!r}") from None
