"""The journal's writer: terminal task outcomes, written durably in groups, off the caller's thread.

A `Journal` is one open journal file (the format is in `neon_nb._journal_format`). The worker
hands it finished tasks' outcomes (`write`) and resolves their futures only from the
``on_durable`` callback, which runs after the transaction holding them has committed. Hence:
a future that has delivered its result to the caller has its result in the journal.

Durability. The file is in SQLite's WAL mode, with ``synchronous=FULL`` by default. What this
relies on, from SQLite's documentation:

* Atomic commit: a transaction is in the file entirely or not at all, whatever happens to the
  process. In WAL mode a commit appends frames to the ``-wal`` file, each with a checksum; at
  recovery, frames after the last complete commit (a torn write) fail the check and are ignored.
* A committed transaction survives a crash of the process (SIGKILL, out of memory, a kernel
  restart) whatever the ``synchronous`` setting: the data is in the operating system's cache.
* With ``synchronous=FULL`` the ``-wal`` file is synced to the disk at every commit, so a commit
  also survives a power loss or a crash of the operating system. With ``"normal"`` (faster) the
  last commits before a power loss may be rolled back, never half-applied.

Grouping and the crash bound. `write` appends to an in-memory queue and returns; one writer
thread takes everything queued, writes it in ONE transaction, commits, then calls each ``write``
call's ``on_durable`` in order. While outcomes keep coming it starts at most one transaction per
``group_delay`` (2 ms), so that they share transactions; after a quiet ``group_delay`` it
commits at once. An entry counts as pending from `write` until its commit;
`write` blocks while ``max_pending`` entries are pending (a single larger call waits until none
is). So at any moment at most ``max_pending`` finished outcomes (or one larger call's) exist only
in memory: that is the most a crash can lose. Their futures were not resolved, so nobody saw
them; a resumed run runs those tasks again.

Results are pickled: never open a journal that comes from an untrusted source. A new journal
file is created with permissions 0o600 (SQLite gives its ``-wal`` and ``-shm`` files the same).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, overload

from . import _journal_format as fmt
from ._errors import JournalError
from ._journal_format import StoredOutcome, canonical_id
from ._version import __version__

__all__ = ["Journal", "JournalEntry", "JournalStats", "wall_time"]

logger = logging.getLogger("neon_nb")

OnDurable = Callable[[Sequence["JournalEntry"]], Any]
OnError = Callable[[Sequence["JournalEntry"], JournalError], Any]
#: One `Journal.write` call, as queued: its entries and its callbacks.
_Call = tuple[Sequence["JournalEntry"], OnDurable, "OnError | None"]

#: Keys per SELECT in lookup() (below SQLite's bound on host parameters, 999 before 3.32).
_LOOKUP_CHUNK = 500
#: After a checkpoint, the -wal file is truncated to this size (it otherwise keeps its peak size).
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_SYNCHRONOUS = ("full", "normal")
_SYNCHRONOUS_LEVELS = {"normal": 1, "full": 2}  # what PRAGMA synchronous reports


@overload
def wall_time(monotonic_seconds: float) -> float: ...
@overload
def wall_time(monotonic_seconds: None) -> None: ...
def wall_time(monotonic_seconds: float | None) -> float | None:
    """A ``time.monotonic()`` reading as wall-clock seconds (``time.time()``), for the file:
    monotonic times mean nothing after a restart."""
    if monotonic_seconds is None:
        return None
    return time.time() - (time.monotonic() - monotonic_seconds)


class JournalEntry(NamedTuple):
    """One terminal outcome, as `Journal.write` takes it (the column order of the file).

    ``payload`` is the pickled result of a success (`Journal.encode_result`) or the pickled
    exception of a failure when it could be pickled (`Journal.encode_error`), else None.
    Times are wall-clock seconds (`wall_time`). Build entries with `succeeded` / `failed`.
    """

    key: str
    task_id: str
    state: str
    payload: bytes | None
    error: str | None
    attempts: int
    priority: int
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None

    @classmethod
    def succeeded(cls, key: str, task_id: Hashable, payload: bytes, *, attempts: int = 1,
                  priority: int = 0, submitted_at: float | None = None,
                  started_at: float | None = None, finished_at: float | None = None) -> JournalEntry:
        """A success; ``payload`` comes from `Journal.encode_result`."""
        return cls(key, canonical_id(task_id), fmt.SUCCEEDED, payload, None, attempts, priority,
                   submitted_at, started_at, finished_at)

    @classmethod
    def failed(cls, key: str, task_id: Hashable, exc: BaseException, *, attempts: int = 1,
               priority: int = 0, submitted_at: float | None = None,
               started_at: float | None = None, finished_at: float | None = None) -> JournalEntry:
        """A final failure: its error text, and the exception itself when it can be pickled."""
        return cls(key, canonical_id(task_id), fmt.FAILED, fmt.encode_error(exc),
                   fmt.error_text(exc), attempts, priority, submitted_at, started_at, finished_at)


class JournalStats(NamedTuple):
    """Counters of one `Journal` (`Journal.stats`)."""

    entries: int          # entries committed
    transactions: int     # commits of entries (each holds one or more write() calls)
    largest_group: int    # most entries in one transaction
    pending: int          # entries handed to write() and not committed yet
    blocked: int          # write() calls waiting for room right now (backpressure)
    write_errors: int     # failed transactions (their calls got on_error)
    callback_errors: int  # callbacks and group listeners that raised (logged)


class Journal:
    """One open journal file (SQLite, WAL mode): writes task outcomes, finds them again.

    Thread-safe: any thread may call `write`, `lookup`, `flush` and `close`. A writer thread
    owned by the journal does every write and runs the callbacks, holding none of the
    journal's locks. Opening it starts a new run (``run_id``) in the file; `close` ends it.

    ``path``: the file, created (0o600) if missing; its directory must exist.
    ``run_name``: a label for this run. ``keep_failed``: `lookup` also returns final failures
    (by default a failed task is run again). ``max_pending`` (>= 1): the most entries waiting
    for their commit before `write` blocks, the bound of what a crash can lose.
    ``group_delay`` (seconds, >= 0): while outcomes keep coming, the writer starts at most
    one transaction per ``group_delay`` (sooner once half of ``max_pending`` is waiting), so
    that they share transactions: less CPU per entry, up to that much added latency. On a
    journal quiet for ``group_delay``, an outcome is committed at once.
    ``synchronous``: ``"full"`` (a commit survives a power loss) or ``"normal"`` (it
    survives a crash of the process only). ``busy_timeout`` (seconds > 0): how long a write
    waits while another process holds the file's write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, run_name: str = "", keep_failed: bool = False,
                 max_pending: int = 256, group_delay: float = 0.002, synchronous: str = "full",
                 busy_timeout: float = 10.0) -> None:
        _check_options(run_name, keep_failed, max_pending, group_delay, synchronous, busy_timeout)
        self.path = _check_path(path)
        self.keep_failed = keep_failed
        self.max_pending = max_pending
        self.group_delay = float(group_delay)
        self._group_target = max(1, max_pending // 2)
        self._conn = _open_for_writing(self.path, synchronous, float(busy_timeout))
        self.synchronous = _synchronous_of(self._conn)
        try:
            self.run_id = _start_run(self._conn, run_name)
            self._reader: sqlite3.Connection | None = fmt.connect(
                self.path, read_only=True, busy_timeout=float(busy_timeout))
        except BaseException:
            self._conn.close()
            raise
        self._insert_sql = (f"INSERT INTO tasks (run_id, {', '.join(JournalEntry._fields)}) "
                            f"VALUES ({int(self.run_id)}, {', '.join('?' * len(JournalEntry._fields))})")
        self._read_lock = threading.Lock()  # the reader connection, for lookup()
        self._lock = threading.Lock()       # the queue and the counters below
        self._wake = threading.Condition(self._lock)      # the writer waits for work
        self._progress = threading.Condition(self._lock)  # flush() waits for callbacks
        self._queue: deque[_Call] = deque()
        self._listeners: tuple[Callable[[], Any], ...] = ()  # add_group_listener
        self._pending = 0        # entries queued or being committed
        # write() calls waiting for room, in order: each on a condition of its own, so that
        # only the first in line is woken when room frees (not every waiting thread).
        self._waiting: deque[threading.Condition] = deque()
        self._writer_idle = False
        self._last_commit = -math.inf  # when the writer's last transaction ended (monotonic)
        self._flushing = 0
        self._calls_in = 0       # write() calls accepted
        self._calls_done = 0     # write() calls whose callback has returned
        self._closing = False
        self._closed = threading.Event()
        self._stats = [0, 0, 0, 0, 0]  # entries, transactions, largest, write errors, callback errors
        self._generation = _fork_generation
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"neon_nb-journal-{self.run_id}")
        self._writer.start()
        _register(self)

    # ------------------------------------------------------------ keys and values
    @staticmethod
    def key(task_id: Hashable, fn: Callable[..., Any] | None = None, args: Sequence[Any] = (),
            kwargs: Mapping[str, Any] | None = None, *, with_args: bool = False) -> str:
        """The key of a task: its id in a canonical text form, the same in every process.

        Stable for ids that are str, bytes, numbers, bools, or tuples / frozensets of them, and
        for objects whose ``repr`` depends on their value only; an object with the default
        ``repr`` (a memory address) raises ValueError. ``with_args=True`` adds a digest of
        ``fn``'s qualified name and of ``(args, kwargs)``, for ids reused with other arguments.
        Thread-safe (a pure function).
        """
        return fmt.task_key(task_id, fn, args, kwargs, with_args=with_args)

    @staticmethod
    def encode_result(value: Any, task_id: Hashable = None) -> bytes:
        """Pickle a result on the calling thread; `UnstorableResultError` names its type if it
        cannot be pickled (that task then fails with this error). Thread-safe."""
        return fmt.encode_result(value, task_id)

    @staticmethod
    def encode_error(exc: BaseException) -> bytes | None:
        """Pickle an exception if it can be pickled and loaded again, else None. Thread-safe."""
        return fmt.encode_error(exc)

    # --------------------------------------------------------------------- reading
    def lookup(self, keys: Sequence[str], *, keep_failed: bool | None = None
               ) -> dict[str, StoredOutcome]:
        """The outcomes usable for resuming these keys, by key (keys with none are absent).

        For each key: its latest success; with ``keep_failed`` (None: the journal's
        setting), its latest failure when it never succeeded. Only committed outcomes are
        seen (from any run or process). Thread-safe; does not wait for the writer.
        """
        if isinstance(keys, str):
            raise TypeError(f"keys must be a sequence of keys, not one str {keys!r}; write [key]")
        if keep_failed is not None and not isinstance(keep_failed, bool):
            raise TypeError(f"keep_failed must be None, True or False, got {keep_failed!r}")
        self._check_fork()
        wanted = list(dict.fromkeys(keys))
        found: dict[str, StoredOutcome] = {}
        keep = self.keep_failed if keep_failed is None else keep_failed
        states = fmt.STATES if keep else (fmt.SUCCEEDED,)
        with self._read_lock:
            conn = self._reader
            if conn is None:
                raise JournalError(f"the journal {str(self.path)!r} is closed")
            for state in states:
                todo = [k for k in wanted if k not in found]
                for lo in range(0, len(todo), _LOOKUP_CHUNK):
                    found.update(_latest(conn, state, todo[lo:lo + _LOOKUP_CHUNK]))
        return found

    # --------------------------------------------------------------------- writing
    def write(self, entries: Sequence[JournalEntry], on_durable: OnDurable,
              on_error: OnError | None = None) -> None:
        """Queue ``entries`` for the next group; return at once unless the journal is full.

        Blocks while ``max_pending`` entries are pending (backpressure), except on the
        writer thread itself (from a callback), which never waits for itself. After the
        transaction holding these entries has committed, the writer thread calls
        ``on_durable(entries)`` (the same sequence object: do not modify it meanwhile);
        calls are answered in the order they were made, each call's entries together in one
        transaction. If the transaction fails (disk full, the file locked by another process
        past ``busy_timeout``), it calls ``on_error(entries, JournalError)`` instead, or logs
        the error when ``on_error`` is None. A callback that raises is logged, never fatal.
        Callbacks run on the writer thread: while one runs, nothing else is written.

        Raises JournalError once `close` has been called. Thread-safe.
        """
        if not callable(on_durable):
            raise TypeError(f"on_durable must be callable, got {on_durable!r}")
        if on_error is not None and not callable(on_error):
            raise TypeError(f"on_error must be callable or None, got {on_error!r}")
        _check_entries(entries)
        self._check_fork()
        n = len(entries)
        with self._lock:
            if self._closing:
                raise JournalError(f"the journal {str(self.path)!r} is closed; {n} outcome(s) "
                                   f"were not written")
            if n and threading.current_thread() is not self._writer:
                self._wait_for_room(n)
            self._queue.append((entries, on_durable, on_error))
            self._pending += n
            self._calls_in += 1
            # Wake the writer only when it sleeps or the group is big enough: a wake-up per
            # call would cut every group_delay short.
            if self._writer_idle or self._pending >= self._group_target:
                self._wake.notify()

    def _check_fork(self) -> None:
        if self._generation != _fork_generation:
            raise JournalError("this journal was opened before the process forked: open a new "
                               "Journal in the child process")

    def _wait_for_room(self, n: int) -> None:
        # Called with the lock held. Calls that must wait are let in first come, first served
        # (a call that finds others waiting queues behind them, even if it would fit), so that
        # small calls cannot starve a large one. A call larger than max_pending waits for an
        # empty queue. Once closing, waiting calls go in: close() writes them.
        if not self._waiting and self._fits(n):
            return
        me = threading.Condition(self._lock)
        self._waiting.append(me)
        try:
            while not self._closing and (self._waiting[0] is not me or not self._fits(n)):
                me.wait()
        finally:
            self._waiting.remove(me)
            self._wake_first()  # the next in line checks for room

    def _wake_first(self) -> None:
        """Room may have freed: the first waiting call checks (lock held)."""
        if self._waiting:
            self._waiting[0].notify()

    def _wake_all_waiting(self) -> None:
        """Closing: every waiting call goes in (lock held)."""
        for waiter in self._waiting:
            waiter.notify()

    def add_group_listener(self, listener: Callable[[], Any]) -> None:
        """Call ``listener()`` on the writer thread after the callbacks of each group (committed
        or failed) have returned, before `flush` counts them as done; no lock is held. For
        owners of many small `write` calls that act once per group (a worker settles the
        futures of a whole group under one acquisition of its lock). What it raises is logged.
        Thread-safe."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def remove_group_listener(self, listener: Callable[[], Any]) -> None:
        """Stop calling ``listener`` (no error if it was not added). Thread-safe."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

    def _fits(self, n: int) -> bool:
        return not self._pending or self._pending + n <= self.max_pending

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every `write` call made before this one is committed and its callback
        has returned; False if ``timeout`` passed first. From a callback (the writer thread)
        it cannot wait for itself and returns False at once. Thread-safe."""
        _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._calls_in
            if self._calls_done >= target:
                return True
            if threading.current_thread() is self._writer:
                return False
            self._flushing += 1
            self._wake.notify()
            try:
                while self._calls_done < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._progress.wait(remaining)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting writes, write what is pending (and run its callbacks), end the run,
        close the file. True once closed; False if ``timeout`` passed first (the writer goes on
        in the background). From a callback it returns False at once and the close completes
        after the callback returns. Idempotent; thread-safe."""
        _check_timeout(timeout)
        with self._lock:
            self._closing = True
            self._wake.notify_all()
            self._wake_all_waiting()
        if threading.current_thread() is self._writer:
            return self._closed.is_set()
        return self._closed.wait(timeout)

    @property
    def closed(self) -> bool:
        """True once `close` has finished (everything written, the file closed)."""
        return self._closed.is_set()

    def stats(self) -> JournalStats:
        """A consistent snapshot of the counters. Thread-safe."""
        with self._lock:
            return JournalStats(self._stats[0], self._stats[1], self._stats[2], self._pending,
                                len(self._waiting), self._stats[3], self._stats[4])

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "closing" if self._closing else "open"
        return (f"<Journal {str(self.path)!r} run {self.run_id} {state}, "
                f"{self._pending} pending, {self._stats[0]} written>")

    # ------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        try:
            while True:
                group = self._take_group()
                if group is None:
                    break
                self._commit(group)
        except BaseException:  # pragma: no cover - a bug in this module; never seen
            logger.exception("the journal writer of %r stopped", str(self.path))
        finally:
            self._finish()

    def _take_group(self) -> list[_Call] | None:
        """Everything queued, once there is something (None: closed and drained)."""
        with self._lock:
            while not self._queue:
                if self._closing and not self._waiting:
                    return None
                self._writer_idle = True
                self._wake.wait()
            self._writer_idle = False
            self._gather()
            group = list(self._queue)
            self._queue.clear()
            return group

    def _gather(self) -> None:
        # With the lock held. While outcomes keep coming, start at most one transaction per
        # group_delay, so that the later calls join this group (fewer, larger transactions:
        # less CPU per entry). After a quiet group_delay, commit at once (no added latency).
        deadline = self._last_commit + self.group_delay
        while self._pending < self._group_target and not self._closing and not self._flushing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)

    def _commit(self, group: list[_Call]) -> None:
        rows = [entry for entries, _, _ in group for entry in entries]
        error = self._insert(rows)
        results = [error] * len(group)
        if error is not None and len(group) > 1 and not isinstance(error.__cause__,
                                                                   sqlite3.OperationalError):
            # A bad value in one call must not fail the others: each call on its own.
            results = [self._insert(entries) for entries, _, _ in group]
        self._last_commit = time.monotonic()  # only the writer thread uses it
        with self._lock:
            self._pending -= len(rows)
            self._wake_first()
        self._answer(group, results)

    def _insert(self, rows: Sequence[JournalEntry]) -> JournalError | None:
        """One transaction; None once committed, else the error (rolled back)."""
        if not rows:
            return None
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout for another process
            try:
                conn.executemany(self._insert_sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        except sqlite3.Error as exc:
            error = JournalError(f"could not write {len(rows)} task outcome(s) to the journal "
                                 f"{str(self.path)!r}: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            with self._lock:
                self._stats[3] += 1
            logger.error("%s", error)
            return error
        with self._lock:
            stats = self._stats
            stats[0] += len(rows)
            stats[1] += 1
            stats[2] = max(stats[2], len(rows))
        return None

    def _answer(self, group: list[_Call], results: Sequence[JournalError | None]) -> None:
        """Run the callbacks, in order, with no lock held; then count the calls as done."""
        for (entries, on_durable, on_error), error in zip(group, results):
            try:
                if error is None:
                    on_durable(entries)
                elif on_error is not None:
                    on_error(entries, error)
            except Exception:
                self._count_callback_error()
        for listener in self._listeners:  # (a tuple, replaced whole: read without the lock)
            try:
                listener()
            except Exception:
                self._count_callback_error()
        with self._lock:
            self._calls_done += len(group)
            self._progress.notify_all()

    def _count_callback_error(self) -> None:
        with self._lock:
            self._stats[4] += 1
        logger.exception("a journal callback raised (ignored)")

    def _finish(self) -> None:
        with self._lock:
            self._closing = True
            leftovers = list(self._queue)  # only after a crash of the loop
            self._queue.clear()
            self._wake_all_waiting()
        if leftovers:
            stopped = JournalError(f"the writer of the journal {str(self.path)!r} stopped")
            self._answer(leftovers, [stopped] * len(leftovers))
        try:
            with self._conn:
                self._conn.execute("UPDATE runs SET ended_at = ? WHERE run_id = ?",
                                   (time.time(), self.run_id))
        except sqlite3.Error as exc:
            logger.error("could not record the end of run %s in the journal %r: %s",
                         self.run_id, str(self.path), exc)
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._conn.close()  # the last connection: SQLite checkpoints the -wal into the file
        self._closed.set()


# ============================================================== helpers
def _latest(conn: sqlite3.Connection, state: str, keys: list[str]) -> dict[str, StoredOutcome]:
    marks = ", ".join("?" * len(keys))
    sql = (f"SELECT {fmt.OUTCOME_COLUMNS}, payload FROM tasks WHERE seq IN "
           f"(SELECT max(seq) FROM tasks WHERE state = ? AND key IN ({marks}) GROUP BY key)")
    try:
        rows = conn.execute(sql, (state, *keys)).fetchall()
    except sqlite3.Error as exc:
        raise JournalError(f"could not read the journal: {type(exc).__name__}: {exc}") from exc
    return {row[1]: fmt.outcome_from_row(row[:-1], fmt.constant(row[-1])) for row in rows}


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:  # no transaction left to roll back (SQLite ended it itself)
        pass


def _check_options(run_name: Any, keep_failed: Any, max_pending: Any, group_delay: Any,
                   synchronous: Any, busy_timeout: Any) -> None:
    if not isinstance(run_name, str):
        raise TypeError(f"run_name must be a str, got {type(run_name).__name__} {run_name!r}")
    if not isinstance(keep_failed, bool):
        raise TypeError(f"keep_failed must be True or False, got {keep_failed!r}")
    if type(max_pending) is not int or max_pending < 1:
        raise ValueError(f"max_pending must be an int >= 1 (entries awaiting their commit), "
                         f"got {max_pending!r}")
    if not _is_number(group_delay) or group_delay < 0:
        raise ValueError(f"group_delay must be a number of seconds >= 0, got {group_delay!r}")
    if synchronous not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be 'full' (survives a power loss) or 'normal' "
                         f"(survives a process crash), got {synchronous!r}")
    if not _is_number(busy_timeout) or busy_timeout <= 0:
        raise ValueError(f"busy_timeout must be a number of seconds > 0, got {busy_timeout!r}")


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (not _is_number(timeout) or timeout < 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")


def _check_entries(entries: Any) -> None:
    if not isinstance(entries, (list, tuple)):
        raise TypeError(f"entries must be a list or tuple of JournalEntry, got "
                        f"{type(entries).__name__}")
    for entry in entries:
        if type(entry) is not JournalEntry:
            raise TypeError(f"entries must hold JournalEntry records, got {type(entry).__name__}")
        if entry.state not in fmt.STATES:
            raise ValueError(f"JournalEntry.state must be 'succeeded' or 'failed', got "
                             f"{entry.state!r} (task {entry.task_id})")


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}")
    result = Path(os.fspath(path)).expanduser()
    if result.is_dir():
        raise IsADirectoryError(f"the journal path {str(result)!r} is a directory; give a file "
                                f"name, e.g. {str(result / 'runs.db')!r}")
    if not result.parent.is_dir():
        raise FileNotFoundError(f"the directory of the journal {str(result)!r} does not exist: "
                                f"create it first")
    return result


def _create_private(path: Path) -> bool:
    """Create ``path`` readable by its owner only if it does not exist; True if created here."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, 0o600)  # whatever the umask: SQLite copies this mode to -wal and -shm
    finally:
        os.close(fd)
    return True


def _open_for_writing(path: Path, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    created = _create_private(path)
    conn = fmt.connect(path, read_only=False, busy_timeout=busy_timeout)
    try:
        fmt.schema_version(conn, path)  # refuse a foreign file before changing anything in it
        mode = _enable_wal(conn, busy_timeout)
        if mode != "wal":
            raise JournalError(f"the journal {str(path)!r} cannot use SQLite's WAL mode here "
                               f"(got {mode!r}; a network file system?): use a local file")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        fmt.create_schema(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        _discard(path, created)
        raise JournalError(f"cannot open the journal {str(path)!r}: {exc}") from exc
    except BaseException:
        conn.close()
        _discard(path, created)
        raise
    return conn


def _enable_wal(conn: sqlite3.Connection, busy_timeout: float) -> str:
    """Switch to WAL mode, waiting up to ``busy_timeout`` for other processes.

    Switching needs the file to itself, and SQLite reports a conflict (two processes creating
    the journal at once) at once, without its busy handler: hence this retry loop.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # a back-off between attempts, not a synchronisation
        pause = min(2 * pause, 0.05)


def _synchronous_of(conn: sqlite3.Connection) -> str:
    """The setting SQLite reports for this connection, by name."""
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    return next((name for name, value in _SYNCHRONOUS_LEVELS.items() if value == level), str(level))


def _discard(path: Path, created: bool) -> None:
    # Only a file this call created and nobody has written to since.
    if created and path.exists() and path.stat().st_size == 0:
        path.unlink()


def _start_run(conn: sqlite3.Connection, name: str) -> int:
    try:
        cur = conn.execute(
            "INSERT INTO runs (name, pid, host, started_at, neon_nb_version, python_version) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, os.getpid(), socket.gethostname(), time.time(), __version__,
             sys.version.split()[0]))
    except sqlite3.Error as exc:
        raise JournalError(f"cannot start a run in the journal: {exc}") from exc
    return int(cur.lastrowid or 0)


# ========================================================= process-wide
_open_journals: weakref.WeakSet[Journal] = weakref.WeakSet()
_registry_lock = threading.Lock()
_exit_hook = False
_fork_generation = 0
#: How long the exit hook lets each open journal write what is pending.
EXIT_CLOSE_TIMEOUT = 10.0


def _register(journal: Journal) -> None:
    global _exit_hook  # noqa: PLW0603 - the process has one exit hook for its journals
    with _registry_lock:
        _open_journals.add(journal)
        if not _exit_hook:
            _exit_hook = True
            atexit.register(_close_all_at_exit)


def _close_all_at_exit() -> None:
    # Journals their owner forgot to close still write what is pending (bounded).
    for journal in list(_open_journals):
        if journal.closed:
            continue
        try:
            journal.close(timeout=EXIT_CLOSE_TIMEOUT)
        except Exception:  # pragma: no cover - last-chance cleanup
            logger.exception("closing the journal %r at exit failed", str(journal.path))


def _after_fork_in_child() -> None:
    # The writer thread does not exist in a forked child, nor may SQLite connections be shared
    # across a fork: the parent's journals become unusable here (write() raises).
    global _fork_generation  # noqa: PLW0603 - one counter per process, bumped in a forked child
    _fork_generation += 1
    _open_journals.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
