"""A task's whole life, from submission to its end, in one place: `Scheduler`.

Read top to bottom: submission (the queue, and the backlog of background
batches), running (claim, then record: success, retry or final failure; retries
coming due), cancellation, the end of a task (its history), and what the worker
reads: lookups and counts.

Every method is called with the worker's lock held. None blocks, starts a thread
or runs user code (no callback, no logging, no ``__hash__``, ``__eq__`` or
``__str__`` of a user's object): what must happen once the lock is released is
returned, as an `AfterLock` or as futures whose callbacks must run. The scheduler
notifies the worker's conditions (``all_done``, ``room``, ``retry_due``) but never
waits on them: waiting, threads and the lifecycle are the worker's.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from time import monotonic as _now
from typing import Any, NamedTuple

from ._config import WorkerConfig
from ._errors import DuplicateTaskError, NeonError
from ._events import EventKind, EventLog
from ._metrics import OUTCOME_FAILED, OUTCOME_RETRY
from ._queue import RetryHeap, TaskQueue
from ._record import IdKey, TaskRecord, retry_delay
from ._task import TaskFuture, TaskInfo, TaskState

__all__ = ["QUIET", "AfterLock", "Attempt", "Ended", "Refusal", "Scheduler"]

QUEUED, RUNNING, RETRY_WAIT = TaskState.QUEUED, TaskState.RUNNING, TaskState.RETRY_WAIT
SUCCEEDED, FAILED, CANCELLED = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED
_SUBMITTED, _STARTED = EventKind.TASK_SUBMITTED, EventKind.TASK_STARTED
_SUCCEEDED, _FAILED = EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED
_RESUMED = EventKind.TASK_RESUMED

#: Marks this module for the signal handlers: code here may hold a worker's lock.
NEON_HOLDS_WORKER_LOCKS = True



class Attempt(NamedTuple):
    """One finished attempt, as a worker thread hands it to `Scheduler.record`."""

    rec: TaskRecord
    ok: bool
    value: Any  # the result, or the exception
    end: float  # time.monotonic()
    retryable: bool  # the retry filter's verdict on the exception (evaluated outside the lock)
    error: str | None  # "Type: message" of the exception (formatted outside the lock)


class Ended(NamedTuple):
    """A task that ended on a worker with a journal: its future settles once this is durable."""

    rec: TaskRecord
    future: TaskFuture
    value: Any  # what the attempt returned (the journal's encoded result), or the exception


class AfterLock(NamedTuple):
    """What must happen once the lock is released: user code (callbacks, log handlers)."""

    future: TaskFuture | None  # whose done callbacks must run
    retry: tuple[Hashable, int, str, float] | None  # (id, attempt, error, delay) to log
    failure: tuple[Hashable, int, str, BaseException] | None  # (id, attempts, error, exc) to log
    quiet: bool  # nothing at all: the thread may claim its next task in the same critical section
    journal: Ended | None = None  # to hand to the worker's journal (then ``future`` is None)


#: A success with nothing to run after it (no callback, no inline subscriber): no allocation.
QUIET = AfterLock(None, None, None, True)


class Refusal(NamedTuple):
    """Why a task was not queued; the worker turns it into an error once the lock is released."""

    kind: str  # closed, duplicate, full_now, full, closed_while_waiting, duplicate_while_waiting
    detail: Any = None


class Scheduler:
    """The tasks of one worker: queue, retry heap, backlog, live and history tables, counts.

    ``live`` holds every task not yet ended (queued, running or waiting for a
    retry), by key; ``history`` the last ``history_size`` ended ones.
    ``submitted == len(queue) + running + retry_waiting + succeeded + failed +
    cancelled`` after every method.

    With a journal (``journaled``), a task that ends does not settle its future:
    `record` counts it in ``unsettled`` and hands it out (`AfterLock.journal`);
    the worker settles it once its outcome is durable and then calls `settled`.
    """

    def __init__(self, config: WorkerConfig, events: EventLog) -> None:
        self.config = config  # the worker's settings; replaced by the worker when they change
        self.events = events
        self.queue = TaskQueue()
        self.retries = RetryHeap()
        self.live: dict[Hashable, TaskRecord] = {}
        self.history: OrderedDict[Hashable, TaskRecord] = OrderedDict()
        self.opaque: dict[int, list[IdKey]] = {}  # hash -> keys of known ids that are not plain
        self.busy: dict[str, TaskRecord] = {}  # thread name -> the task it runs
        self.backlog: deque[TaskRecord] = deque()  # of background batches, in order
        self.backlog_futures: dict[TaskFuture, TaskRecord] = {}  # those not withdrawn
        self.seq = itertools.count()
        self.submitted = self.succeeded = self.failed = self.cancelled = self.retried = 0
        self.running = self.retry_waiting = 0
        self.room_waiters = 0  # threads waiting for room in the queue
        self.inside_waiters = 0  # calls waiting for completion from inside a task
        self.retries_open = True  # False in a shutdown's last window: a failure is final
        self.cancelled_ids: list[Hashable] | None = None  # during a shutdown: what it cancelled
        self.metrics: deque[tuple] | None = None  # attempts waiting to be folded into metrics
        self.on_drained: Callable[[], None] | None = None  # called when nothing is left to run
        self.journaled = False  # the worker has a journal (see the class docstring)
        self.unsettled = 0  # ended tasks whose outcome is not durable yet (journaled only)
        self.resumed = 0  # tasks found done in the journal: ended without running
        # The worker's conditions (set by `bind`), notified here, waited on by the worker.
        self.all_done = self.room = self.retry_due = threading.Condition()

    def bind(self, all_done: threading.Condition, room: threading.Condition,
             retry_due: threading.Condition) -> None:
        self.all_done, self.room, self.retry_due = all_done, room, retry_due

    # ================================================================ submission
    def refusal(self, rec: TaskRecord) -> Refusal | None:
        """Why ``rec`` cannot be queued (its id is live), or None; the queue's bound aside."""
        live = self.live.get(rec.key)
        return None if live is None else Refusal("duplicate", live.state.value)

    def has_room(self, n: int = 1) -> bool:
        size = self.config.queue_size
        return not size or len(self.queue) + n <= size

    def enqueue(self, recs: Sequence[TaskRecord]) -> None:
        """Queue new records (validated, ids not live), in order."""
        now = _now()
        next_seq = self.seq.__next__
        live = self.live
        for rec in recs:
            rec.seq = next_seq()
            rec.submitted_at = rec.enqueued_at = now
            key = rec.key
            live[key] = rec
            if type(key) is IdKey:
                self._index(key)
        self.queue.put_many(recs)
        self.submitted += len(recs)
        if self.events.active:
            self.events.submitted(recs)

    def enqueue_one(self, rec: TaskRecord) -> None:
        """Queue one new record (validated, its id not live): `enqueue` for one, without a loop."""
        rec.seq = next(self.seq)
        rec.submitted_at = rec.enqueued_at = _now()
        key = rec.key
        self.live[key] = rec
        if type(key) is IdKey:
            self._index(key)
        self.queue.put(rec)
        self.submitted += 1
        if self.events.active:
            self.events.submitted((rec,))

    def add_to_backlog(self, recs: Iterable[TaskRecord]) -> None:
        """Records of a background batch that do not fit now: they enter the queue later, in order."""
        for rec in recs:
            self.backlog_futures[rec.future] = rec
            self.backlog.append(rec)

    def take_backlog(self, room: int) -> tuple[list[TaskRecord], list[TaskFuture]]:
        """Up to ``room`` backlog records, to be queued; and the futures of those whose id is live.

        A record whose id is live again when its turn comes fails with
        `DuplicateTaskError` (its future's callbacks must run).
        """
        batch: list[TaskRecord] = []
        clashes: list[TaskFuture] = []
        keys: set[Hashable] = set()
        while self.backlog and len(batch) < room:
            rec = self.backlog.popleft()
            fut = rec.future
            if self.backlog_futures.pop(fut, None) is None:
                continue  # withdrawn while it waited
            if rec.key in self.live or rec.key in keys:
                fut.settle_exception(DuplicateTaskError(
                    "a task with the same id was still live when this task of a background batch "
                    "was to enter the queue"))
                clashes.append(fut)
                continue
            keys.add(rec.key)
            batch.append(rec)
        if not self.backlog_futures:
            self.backlog.clear()  # only withdrawn records can be left
        return batch, clashes

    def withdraw_backlog(self) -> list[TaskFuture]:
        """Cancel every backlog record (a shutdown, cancel_pending); return their futures."""
        futures = list(self.backlog_futures)
        for rec in list(self.backlog_futures.values()):
            self.withdraw(rec)
        self.backlog.clear()
        return futures

    def withdraw(self, rec: TaskRecord) -> TaskFuture:
        """A backlog record leaves before entering the queue: submitted and cancelled at once."""
        self.backlog_futures.pop(rec.future, None)
        now = _now()
        rec.seq = next(self.seq)
        rec.submitted_at = rec.enqueued_at = rec.finished_at = now
        rec.state = CANCELLED
        self.submitted += 1
        self.cancelled += 1
        if self.cancelled_ids is not None:
            self.cancelled_ids.append(rec.id)
        if self.events.active:
            self.events.emit(_SUBMITTED, rec)
            self.events.emit(EventKind.TASK_CANCELLED, rec)
        if type(rec.key) is IdKey:
            self._index(rec.key)  # so that get_task_status finds it by value
        fut = self._remember(rec)
        fut.settle_cancelled()
        self._after_end()
        return fut

    def resume(self, rec: TaskRecord, ok: bool, value: Any,
               stored: tuple[int, float, float | None, float | None, str | None]) -> None:
        """A new record whose outcome was found in the journal: submitted and ended at once.

        ``value`` is the stored result (``ok``) or exception; ``stored`` is (attempts,
        submitted, started, finished, error text), times as ``time.monotonic()``
        readings. The id is not live (checked by the caller). Its future is new: no
        callback waits on it.
        """
        now = _now()
        rec.seq = next(self.seq)
        # The events are of now (their times follow the log's order); the record then
        # carries the stored attempts and times, for get_task_status.
        rec.submitted_at = rec.enqueued_at = rec.finished_at = now
        rec.attempts, submitted, rec.started_at, finished, rec.error = stored
        rec.state = SUCCEEDED if ok else FAILED
        self.submitted += 1
        self.resumed += 1
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        if self.events.active:
            self.events.emit(_SUBMITTED, rec)
            self.events.emit(_RESUMED, rec, detail=rec.state.value)
        rec.submitted_at = rec.enqueued_at = submitted
        rec.finished_at = finished
        if type(rec.key) is IdKey:
            self._index(rec.key)  # so that get_task_status finds it by value
        fut = self._remember(rec)
        if ok:
            fut.settle_result(value)
        else:
            fut.settle_exception(value)

    # =================================================================== running
    def claim(self, thread: str) -> TaskRecord | None:
        """Take the best queued task and mark it running on ``thread``; None if none is queued."""
        rec = self.queue.pop()
        if rec is None:
            return None
        self.running += 1
        rec.state = RUNNING
        rec.attempts += 1
        rec.thread = thread
        rec.started_at = _now()
        self.busy[thread] = rec
        if rec.attempts == 1:
            rec.future.mark_running()
        if self.room_waiters:
            self.room.notify()
        if self.events.active:
            self.events.started(rec)
        return rec

    def record(self, attempt: Attempt, thread: str) -> AfterLock:
        """Record a finished attempt of ``thread``'s task: a success, a retry or a final failure."""
        rec, ok, value, end, retryable, error = attempt
        fut = rec.future
        rec.finished_at = end
        self.running -= 1
        del self.busy[thread]
        if ok:  # the hot path: _end() written out
            rec.state = SUCCEEDED
            self.succeeded += 1
            if self.events.active:
                self.events.succeeded(rec)
            del self.live[rec.key]
            self._remember(rec)
            if len(self.live) + len(self.backlog_futures) <= self.inside_waiters:
                self._after_end()
            if self.journaled:
                return self._unsettled(rec, fut, value, None)
            if fut.settle_result(value) or self.events.inline:
                return AfterLock(fut, None, None, False)
            return QUIET
        rec.error = error
        delay = retry_delay(self.config, rec) if retryable and self.retries_open else None
        if self.metrics is not None:
            self.metrics.append((rec.id, thread, rec.enqueued_at, rec.started_at, end,
                                 rec.submitted_at, OUTCOME_RETRY if delay is not None
                                 else OUTCOME_FAILED, rec.attempts))
        if delay is not None:
            self._schedule_retry(rec, end + delay, delay)
            return AfterLock(None, (rec.id, rec.attempts, error, delay), None, False)  # type: ignore[arg-type]
        rec.state = FAILED
        self.failed += 1
        if self.events.active:
            self.events.emit(_FAILED, rec, detail=error)
        self._end(rec)
        if self.journaled:
            return self._unsettled(rec, fut, value, (rec.id, rec.attempts, error, value))  # type: ignore[arg-type]
        fut.settle_exception(value)
        return AfterLock(fut, None, (rec.id, rec.attempts, error, value), False)  # type: ignore[arg-type]

    def _unsettled(self, rec: TaskRecord, fut: TaskFuture, value: Any,
                   failure: tuple[Hashable, int, str, BaseException] | None) -> AfterLock:
        """With a journal: ``rec`` has ended; its future waits for its outcome to be durable."""
        self.unsettled += 1
        return AfterLock(None, None, failure, False, Ended(rec, fut, value))

    def settled(self, n: int) -> None:
        """The futures of ``n`` ended tasks were settled (their outcomes are durable)."""
        self.unsettled -= n
        if not self.unsettled and len(self.live) + len(self.backlog_futures) <= self.inside_waiters:
            self.all_done.notify_all()

    def _schedule_retry(self, rec: TaskRecord, due: float, delay: float) -> None:
        rec.state = RETRY_WAIT
        self.retry_waiting += 1
        self.retried += 1
        self.retries.push(due, rec)
        self.retry_due.notify()
        if self.events.active:
            self.events.emit(EventKind.TASK_RETRY_SCHEDULED, rec, detail=delay)

    def promote_due(self, now: float) -> int:
        """Retries due by ``now`` go back to the queue, behind the tasks of their priority."""
        due = self.retries.pop_due(now)
        for rec in due:
            rec.state = QUEUED
            rec.enqueued_at = now
            self.queue.put(rec)
            if self.events.active:
                self.events.emit(_SUBMITTED, rec, detail="retry")
        self.retry_waiting -= len(due)
        return len(due)

    def fail_lost(self, thread: str, message: str) -> TaskFuture | None:
        """``thread`` died while running a task: that task can never finish; fail it."""
        rec = self.busy.pop(thread, None)
        if rec is None:
            return None
        self.running -= 1
        rec.state = FAILED
        rec.finished_at = _now()
        rec.error = f"NeonError: {message}"
        self.failed += 1
        if self.events.active:
            self.events.emit(_FAILED, rec, detail=rec.error)
        fut = rec.future
        self._end(rec)
        fut.settle_exception(NeonError(message))
        return fut

    # ============================================================== cancellation
    def cancel(self, rec: TaskRecord) -> TaskFuture | None:
        """Cancel a queued or retry-waiting record; its future (callbacks still to run), or None."""
        state = rec.state
        if state is QUEUED:
            self.queue.withdraw()
            if self.room_waiters:
                self.room.notify()
        elif state is RETRY_WAIT:
            self.retry_waiting -= 1
            self.retries.withdraw()
        else:
            return None
        rec.state = CANCELLED
        rec.finished_at = _now()
        self.cancelled += 1
        if self.cancelled_ids is not None:
            self.cancelled_ids.append(rec.id)
        if self.events.active:
            self.events.emit(EventKind.TASK_CANCELLED, rec)
        fut = rec.future
        self._end(rec)
        fut.settle_cancelled()
        return fut

    def cancel_pending(self) -> list[TaskFuture]:
        """Cancel the backlog, every queued task and every pending retry; their futures."""
        futures = self.withdraw_backlog()
        for rec in [r for r in self.live.values() if r.state is QUEUED or r.state is RETRY_WAIT]:
            fut = self.cancel(rec)
            if fut is not None:
                futures.append(fut)
        return futures

    # ======================================================== the end of a task
    def _end(self, rec: TaskRecord) -> None:
        """Move an ended record from the live table to the history."""
        del self.live[rec.key]
        self._remember(rec)
        self._after_end()

    def _after_end(self) -> None:
        if len(self.live) + len(self.backlog_futures) <= self.inside_waiters:
            self.all_done.notify_all()
            if not self.live and not self.backlog_futures and self.on_drained is not None:
                self.on_drained()

    def _remember(self, rec: TaskRecord) -> TaskFuture:
        """Keep an ended record in the bounded history; return the future it drops."""
        fut = rec.release()
        key = rec.key
        limit = self.config.history_size
        if limit:
            hist = self.history
            if key in hist:  # an id used again: the newest goes last
                del hist[key]
            hist[key] = rec
            while len(hist) > limit:
                old = hist.popitem(last=False)[0]
                if type(old) is IdKey:
                    self._forget(old)
        elif type(key) is IdKey:
            self._forget(key)
        return fut

    def trim_history(self) -> None:
        """After ``history_size`` was lowered."""
        while len(self.history) > self.config.history_size:
            self._forget(self.history.popitem(last=False)[0])

    def _index(self, key: IdKey) -> None:
        keys = self.opaque.setdefault(key.hash, [])
        if not any(k is key for k in keys):
            keys.append(key)

    def _forget(self, key: Hashable) -> None:
        """Drop an opaque id's key from the index once no live or remembered task has it."""
        if type(key) is not IdKey or key in self.live or key in self.history:
            return
        keys = self.opaque.get(key.hash)
        if keys is not None:
            keys[:] = [k for k in keys if k is not key]
            if not keys:
                del self.opaque[key.hash]

    # ===================================================== what the worker reads
    def idle(self, inside: bool) -> bool:
        """Nothing left to wait for: no task live or in the backlog (but the waiting in-task
        callers'), and every ended task's future settled."""
        return (len(self.live) + len(self.backlog_futures) <= (self.inside_waiters if inside else 0)
                and not self.unsettled)

    def find(self, key: Hashable) -> TaskRecord | None:
        return self.live.get(key) or self.history.get(key)

    def candidates(self, hashes: Iterable[int]) -> dict[int, list[IdKey]]:
        """The known keys of opaque ids with these hashes (compared by value outside the lock)."""
        return {h: list(self.opaque.get(h, ())) for h in hashes}

    def infos(self, state: TaskState | None = None) -> list[TaskInfo]:
        """Live and remembered tasks, in submission order, optionally of one state."""
        recs = [*self.history.values(), *self.live.values()]
        infos = [r.info() for r in recs if state is None or r.state is state]
        infos.sort(key=lambda i: i.sequence)
        return infos

    def failures(self) -> tuple[tuple[Hashable, str], ...]:
        """(id, error) of each failed task the history remembers."""
        return tuple((r.id, r.error or "") for r in self.history.values() if r.state is FAILED)

    def running_ids(self, but: str | None = None) -> tuple[Hashable, ...]:
        """Ids of the running tasks (except the one of thread ``but``)."""
        return tuple(r.id for r in self.live.values() if r.state is RUNNING and r.thread != but)

    def running_spans(self) -> list[tuple[str, float]]:
        """(thread, start) of every running attempt."""
        return [(name, rec.started_at) for name, rec in self.busy.items()]  # type: ignore[misc]

    def stuck(self, now: float, threshold: float) -> dict[Hashable, float]:
        """Running tasks past ``threshold`` seconds: id -> seconds running."""
        return {rec.id: now - rec.started_at for rec in self.busy.values()  # type: ignore[operator]
                if now - rec.started_at > threshold}  # type: ignore[operator]

