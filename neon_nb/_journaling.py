"""A worker's journal: what ``NeonWorker(journal=...)`` adds to a task's life.

At submission (the caller's thread, no lock held): every new task gets its key in the journal
(`WorkerJournal.split`), and one lookup per call (per batch for ``add_tasks`` and ``map``)
finds the tasks already done there. The worker ends those at once from their stored outcome,
without running them: they are *resumed*.

At the end of a task:

1. The worker thread pickles a result right after the function returns (`wrap_call`), so an
   unpicklable result fails its own task at its end, with `UnstorableResultError`.
2. `Scheduler.record` records the end under the worker's lock without settling the future.
3. With the lock released, the same thread hands the outcome to the journal (`ended`), which
   blocks only while ``max_pending`` outcomes wait for their commit (the crash bound).
4. The journal's writer thread commits a group of outcomes, then settles their futures
   (`_durable`) and, once per group, tells the worker under its lock how many it settled
   (`_group_end` -> `Scheduler.settled`): `wait_for_completion` waits for that count.

So a future that has delivered its result has its outcome in the journal. Done callbacks of
those futures run on a thread of their own (`CallbackRunner`), in order, never on the writer:
a callback may block, or wait for another task whose outcome the writer must commit first,
and the writer must never wait for a callback.

A write that fails (disk full, the journal closed) never loses a task: its future still gets
its result or exception, and a warning says the outcome was not stored.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import _journal_format as fmt
from ._errors import JournalError
from ._journal import Journal, JournalEntry
from ._record import TaskRecord, safe_repr
from ._scheduler import Ended
from ._task import TaskFuture, TaskState

__all__ = ["CallbackRunner", "Encoded", "Resumed", "WorkerJournal", "open_for_worker"]

logger = logging.getLogger("neon_nb")

SUCCEEDED = TaskState.SUCCEEDED
#: What a backend's call hook looks like (see `neon_nb.backends.Backend.call`).
Call = Callable[[Callable[..., Any], tuple, dict], Any]
#: Ends its thread (CallbackRunner).
_STOP = None
#: Unwritten outcomes logged one by one at WARNING, before DEBUG.
_FULL_LOGS = 10


class Encoded(NamedTuple):
    """A task's result and its pickle, made on the worker thread as the function returns."""

    value: Any
    payload: bytes


class Resumed(NamedTuple):
    """A task found done in the journal: its outcome, ready to end it without running it."""

    rec: TaskRecord
    ok: bool
    value: Any  # the stored result, or the stored exception
    stored: tuple[int, float, float | None, float | None, str | None]  # see Scheduler.resume


def open_for_worker(spec: Any, configured: str | None, *, keep_failed: Any, with_args: Any,
                    name: str, settled: Callable[[int], None]) -> WorkerJournal | None:
    """The journal of a new worker, from its ``journal`` argument (None: the setting).

    ``spec`` False: none, whatever the setting. A path: a `Journal` opened here and closed by
    the worker's shutdown. A `Journal`: used as it is, flushed but not closed by the shutdown.
    """
    if keep_failed is not None and not isinstance(keep_failed, bool):
        raise TypeError(f"journal_keep_failed must be None (the journal's setting), True or "
                        f"False, got {keep_failed!r}")
    if not isinstance(with_args, bool):
        raise TypeError(f"journal_with_args must be True or False, got {with_args!r}")
    if spec is False:
        return None
    if spec is None:
        spec = configured
        if spec is None:
            return None
    if isinstance(spec, Journal):
        if spec.closed:
            raise JournalError(f"the journal {str(spec.path)!r} is closed: give an open Journal "
                               f"or a path")
        journal, owned = spec, False
    elif isinstance(spec, (str, os.PathLike)):
        journal, owned = Journal(spec, run_name=name), True
    else:
        raise TypeError(f"journal must be a file path (str or os.PathLike), a neon_nb.Journal, "
                        f"None (the journal setting) or False (none), got "
                        f"{type(spec).__name__} {spec!r}")
    return WorkerJournal(journal, owned=owned,
                         keep_failed=journal.keep_failed if keep_failed is None else keep_failed,
                         with_args=with_args, name=name, settled=settled)


class WorkerJournal:
    """One worker's side of its journal (see the module notes). Thread-safe as used:

    `split` and `ended` run on the threads that submit and finish tasks, with no lock of the
    worker held; `_durable`, `_failed` and `_group_end` on the journal's writer thread only.
    """

    def __init__(self, journal: Journal, *, owned: bool, keep_failed: bool, with_args: bool,
                 name: str, settled: Callable[[int], None]) -> None:
        self.journal = journal
        self.owned = owned
        self.keep_failed = keep_failed
        self.with_args = with_args
        self._settled = settled  # the worker's: Scheduler.settled(n) under its lock
        self.callbacks = CallbackRunner(f"{name}-callbacks")
        # The writer thread's state of the group being answered (no lock: one thread).
        self._count = 0
        self._with_callbacks: list[TaskFuture] = []
        self._errors: list[tuple[Any, JournalError]] = []  # (task id, error)
        self._unwritten = 0  # outcomes not stored (failed writes)
        self._listener = _weak_listener(journal, weakref.WeakMethod(self._group_end))
        journal.add_group_listener(self._listener)

    # ------------------------------------------------------------------ submission
    def key(self, rec: TaskRecord, by_call: bool) -> str:
        """The journal key of a new task (user code may run: never under the worker's lock)."""
        if not by_call:
            return fmt.task_key(rec.id, rec.fn, rec.args, rec.kwargs, with_args=self.with_args)
        try:
            return fmt.call_key(rec.fn, rec.args, rec.kwargs)
        except ValueError as exc:
            raise ValueError(
                f"task {safe_repr(rec.id)} has no id of its own, so its journal key is its call "
                f"(the function and its arguments), and its arguments cannot be pickled to build "
                f"it ({exc.__cause__ or exc}); give the task an id (submit(..., task_id=...), "
                f"map(..., id_prefix=...))") from exc

    def split(self, recs: Sequence[TaskRecord], by_call: bool
              ) -> tuple[list[Resumed], list[TaskRecord]]:
        """Key each record; return those found done in the journal, and the others (in order).

        One lookup for the whole sequence. A stored result that cannot be loaded here (its
        class is not defined yet) is logged and its task runs again.
        """
        for rec in recs:
            rec.journal_key = self.key(rec, by_call)
        found = self.journal.lookup([rec.journal_key for rec in recs], keep_failed=self.keep_failed)
        if not found:
            return [], list(recs)
        resumed: list[Resumed] = []
        fresh: list[TaskRecord] = []
        offset = time.monotonic() - time.time()  # wall-clock -> monotonic
        for rec in recs:
            outcome = found.get(rec.journal_key)
            done = None if outcome is None else _resumed(rec, outcome, offset)
            if done is None:
                fresh.append(rec)
            else:
                resumed.append(done)
        return resumed, fresh

    # ---------------------------------------------------------------- end of a task
    def wrap_call(self, inner: Call | None) -> Call:
        """The backend's call (None: call the function), then pickle the result (`Encoded`)."""
        encode = fmt.encode_result

        def call(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Encoded:
            value = fn(*args, **kwargs) if inner is None else inner(fn, args, kwargs)
            return Encoded(value, encode(value))  # UnstorableResultError: this task fails

        return call

    def ended(self, note: Ended) -> None:
        """Hand an ended task's outcome to the journal (no lock held; may wait for room).

        Never raises: an outcome that cannot be handed over settles its future here.
        """
        try:
            entry = _entry(note)
            self.journal.write((entry,), functools.partial(self._durable, note),
                               functools.partial(self._failed, note))
        except BaseException as exc:  # the task must end whatever happened: never lose it
            self._settle_unwritten(note, exc)

    def _settle_unwritten(self, note: Ended, exc: BaseException) -> None:
        # A flood (every task abandoned by a shutdown, a journal closed by its owner) is
        # logged in full only for the first few, like final failures.
        self._unwritten += 1  # (a count for messages: an approximate one is enough)
        level = logging.WARNING if self._unwritten <= _FULL_LOGS else logging.DEBUG
        logger.log(level, "task %s: its outcome was not written to the journal %r (%s: %s); its "
                   "future gets it all the same, and a resumed run will run it again",
                   safe_repr(note.rec.id), str(self.journal.path), type(exc).__name__, exc)
        callbacks = _settle(note)
        self._settled(1)
        if callbacks:
            note.future.run_callbacks()

    # ------------------------------------------------------------ writer thread only
    def _durable(self, note: Ended, _entries: object) -> None:
        if _settle(note):
            self._with_callbacks.append(note.future)
        self._count += 1

    def _failed(self, note: Ended, _entries: object, error: JournalError) -> None:
        self._errors.append((note.rec.id, error))
        self._durable(note, _entries)

    def _group_end(self) -> None:
        """After each group: one acquisition of the worker's lock for all it settled."""
        n, self._count = self._count, 0
        if not n:
            return
        self._settled(n)
        if self._with_callbacks:
            futures, self._with_callbacks = self._with_callbacks, []
            self.callbacks.submit(futures)
        if self._errors:
            errors, self._errors = self._errors, []
            self._unwritten += len(errors)
            logger.warning("%d task outcome(s) were not written to the journal %r (first: task "
                           "%s, %s); their futures got them all the same, and a resumed run will "
                           "run those tasks again", len(errors), str(self.journal.path),
                           safe_repr(errors[0][0]), errors[0][1])

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float | None) -> bool:
        """Write what is pending and settle it (an owned journal is closed too), then stop
        the callback thread; True if all of it was done within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self.journal.close(timeout) if self.owned else self.journal.flush(timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        stopped = self.callbacks.stop(left)
        if not done:
            logger.warning("the journal %r was still writing when the shutdown's time was up; "
                           "it goes on in the background", str(self.journal.path))
        return done and stopped

    @property
    def unwritten(self) -> int:
        """Outcomes that could not be written (their tasks' futures were settled anyway)."""
        return self._unwritten


class CallbackRunner:
    """Runs the done callbacks of futures settled on the journal's writer thread: in order, on
    one thread, started on first use. Thread-safe. Once stopped, callbacks run on the calling
    thread (a task abandoned by a shutdown that ends later)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.SimpleQueue[list[TaskFuture] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def submit(self, futures: list[TaskFuture]) -> None:
        with self._lock:
            here = self._stopped
            if not here:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()
                self._queue.put(futures)
        if here:
            _run_callbacks(futures)

    def stop(self, timeout: float | None) -> bool:
        """Run what is queued, then end the thread; True once it has ended (or never started)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is None or thread is threading.current_thread():
            return True  # (from a callback: the thread ends once that callback returns)
        thread.join(timeout)
        return not thread.is_alive()

    def _loop(self) -> None:
        while True:
            futures = self._queue.get()
            if futures is _STOP:
                return
            _run_callbacks(futures)


# ---------------------------------------------------------------------- helpers
def _run_callbacks(futures: list[TaskFuture]) -> None:
    for fut in futures:
        fut.run_callbacks()  # each callback isolated: what it raises is logged


def _settle(note: Ended) -> bool:
    """Settle an ended task's future (True if done callbacks wait to run).

    Not under the worker's lock: once a task has ended nothing else changes its future (a
    cancel() finds the task no longer live and changes nothing).
    """
    rec, fut, value = note
    if rec.state is SUCCEEDED:
        return fut.settle_result(value.value)
    fut.settle_exception(value)
    return fut.has_callbacks


def _entry(note: Ended) -> JournalEntry:
    """The journal row of an ended task (wall-clock times: monotonic ones mean nothing later)."""
    rec, _, value = note
    offset = time.time() - time.monotonic()
    started, finished = rec.started_at, rec.finished_at
    times = (rec.submitted_at + offset, None if started is None else started + offset,
             None if finished is None else finished + offset)
    if rec.state is SUCCEEDED:
        return JournalEntry(rec.journal_key, fmt.canonical_id(rec.id), fmt.SUCCEEDED, value.payload,
                            None, rec.attempts, rec.priority, *times)
    return JournalEntry(rec.journal_key, fmt.canonical_id(rec.id), fmt.FAILED, fmt.encode_error(value),
                        rec.error, rec.attempts, rec.priority, *times)


def _resumed(rec: TaskRecord, outcome: fmt.StoredOutcome, offset: float) -> Resumed | None:
    """``rec`` ended from its stored ``outcome``, or None if the stored value cannot be loaded."""
    try:
        value = outcome.result() if outcome.succeeded else outcome.exception()
    except JournalError as exc:
        logger.warning("task %s: its stored result cannot be loaded here (%s); it runs again",
                       safe_repr(rec.id), exc)
        return None
    now = time.monotonic()

    def mono(t: float | None) -> float | None:
        return None if t is None else t + offset

    submitted = mono(outcome.submitted_at)
    stored = (outcome.attempts, now if submitted is None else submitted, mono(outcome.started_at),
              mono(outcome.finished_at), outcome.error)
    return Resumed(rec, outcome.succeeded, value, stored)


def _weak_listener(journal: Journal, ref: weakref.WeakMethod) -> Callable[[], None]:
    """A group listener calling the method ``ref`` holds weakly: a journal the user keeps does
    not keep the workers that used it alive. It removes itself once the method is gone."""

    def listener() -> None:
        method = ref()
        if method is None:
            journal.remove_group_listener(listener)
        else:
            method()

    return listener
