"""The journal's file format, shared by its writer (`Journal`) and its reader (`open_journal`).

A journal is an SQLite database marked as neon_nb's by its header's ``application_id``, with its
schema version in ``user_version``. Two tables:

* ``runs``: one row per `Journal` opened on the file (a worker's run): name, pid, host, wall-clock
  start and end (no end: the process died or is still running), neon_nb and Python versions.
* ``tasks``: one row per terminal outcome, in write order (``seq``): the task's key, its id as
  text, ``succeeded`` or ``failed``, the pickled result (or the pickled exception, when it could
  be pickled), the error as ``"Type: message"``, attempts, priority and wall-clock times.

Keys. A task is matched by its key, which is its id in a canonical text form (`task_key`): for
str, bytes, numbers, bools and tuples or frozensets of them, the same text in every process
(``repr``, with frozenset members sorted). Other ids use their ``repr``, so it must be stable
across processes: an object whose class keeps ``object.__repr__`` (which shows a memory address)
is refused with a clear error. ``with_args=True`` appends a digest of the function's qualified
name and of the arguments (builtin values in a canonical form, other objects by their pickle).

Results are pickled. Loading a journal unpickles what it holds, which can run arbitrary code:
never open a journal that comes from an untrusted source.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import sqlite3
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import JournalError, UnstorableResultError

__all__ = ["StoredOutcome"]

#: Marks the file as a neon_nb journal (the ASCII of "nNJ1"), in the SQLite header.
APPLICATION_ID = 0x6E4E4A31
#: The version of the schema below; a file with a higher one was written by a newer neon_nb.
SCHEMA_VERSION = 1

SUCCEEDED = "succeeded"
FAILED = "failed"
STATES = (SUCCEEDED, FAILED)

#: Results are pickled with protocol 5: readable by every Python neon_nb supports.
PICKLE_PROTOCOL = 5
#: SQLite's default bound on a BLOB (SQLITE_MAX_LENGTH): a larger pickled result cannot be stored.
MAX_PAYLOAD_BYTES = 1_000_000_000
#: Argument digests use protocol 4 for objects without a canonical form; pinned, since a
#: different protocol would change every key.
_DIGEST_PROTOCOL = 4

_SCHEMA = (
    """CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        pid INTEGER NOT NULL,
        host TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL,
        neon_nb_version TEXT NOT NULL,
        python_version TEXT NOT NULL
    )""",
    """CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (run_id),
        key TEXT NOT NULL,
        task_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('succeeded', 'failed')),
        payload BLOB,
        error TEXT,
        attempts INTEGER NOT NULL,
        priority INTEGER NOT NULL,
        submitted_at REAL,
        started_at REAL,
        finished_at REAL
    )""",
    # lookup(): the latest outcome of a key in a given state is one index probe.
    "CREATE INDEX tasks_by_key ON tasks (key, state, seq)",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

#: The columns of a `StoredOutcome`, in its field order (the payload is read apart).
OUTCOME_COLUMNS = ("task_id, key, state, error, attempts, priority, submitted_at, started_at, "
                   "finished_at, run_id, seq")


# ================================================================== keys
_SCALARS = frozenset({str, bytes, int, float, complex, bool, type(None)})


def canonical_id(task_id: Hashable) -> str:
    """The id as text that is the same in every process (see the module docstring)."""
    kind = type(task_id)
    if kind in _SCALARS:
        return repr(task_id)
    if kind is tuple and isinstance(task_id, tuple):  # exactly a tuple: a subclass may repr otherwise
        inner = ", ".join(canonical_id(item) for item in task_id)
        return f"({inner},)" if len(task_id) == 1 else f"({inner})"
    if kind is frozenset and isinstance(task_id, frozenset):
        if not task_id:
            return "frozenset()"
        return "frozenset({" + ", ".join(sorted(canonical_id(item) for item in task_id)) + "})"
    if kind.__repr__ is object.__repr__:
        raise ValueError(
            f"task id {task_id!r} cannot be a journal key: a {kind.__name__} has no stable repr "
            f"(the default one shows a memory address, different after a restart); use a str, "
            f"int or tuple id, or give {kind.__name__} a __repr__ that depends on its value only")
    return repr(task_id)


def task_key(task_id: Hashable, fn: Callable[..., Any] | None = None, args: Sequence[Any] = (),
             kwargs: Mapping[str, Any] | None = None, *, with_args: bool = False) -> str:
    """The key under which a task's outcome is stored and found again.

    Without ``with_args`` it is `canonical_id` of the id alone. With it, the key also holds a
    digest of ``fn``'s module and qualified name (a ``functools.partial`` is unwrapped, its bound
    arguments joining the others) and of ``(args, kwargs)``: str, bytes, numbers, None, tuples,
    lists, dicts (keys sorted) and sets (members sorted) in a canonical form, other objects by
    their pickle, which is stable for value types (numpy arrays, dataclasses of builtins) but not
    promised for every object.
    """
    if task_id is None:
        raise ValueError("task_id must be a task's id, got None")
    base = canonical_id(task_id)
    if not with_args:
        return base
    name, args, kwargs = _unwrap(fn, tuple(args), dict(kwargs or {}))
    try:
        blob = b"|".join((name.encode(), _canonical_arg(args), _canonical_arg(kwargs)))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ValueError(f"with_args=True needs arguments that can be pickled, to build the key "
                         f"of task {base}: {exc}") from exc
    return f"{base} #{hashlib.blake2b(blob, digest_size=12).hexdigest()}"


def call_key(fn: Callable[..., Any], args: Sequence[Any] = (),
             kwargs: Mapping[str, Any] | None = None) -> str:
    """The key of a task identified by its call alone (its id was generated, not given).

    ``"call <module>.<qualname> #<digest>"``: the function's name, readable, and the digest of
    `task_key` with arguments. Never equal to an id's key (those are ``repr`` texts).
    """
    name, _, _ = _unwrap(fn, (), {})
    return f"call {name} {task_key('call', fn, args, kwargs, with_args=True).rpartition(' ')[2]}"


def _unwrap(fn: Callable[..., Any] | None, args: tuple, kwargs: dict) -> tuple[str, tuple, dict]:
    while isinstance(fn, functools.partial):
        args = fn.args + args
        kwargs = {**fn.keywords, **kwargs}
        fn = fn.func
    if fn is None:
        return "", args, kwargs
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}", args, kwargs


def _canonical_arg(value: Any) -> bytes:
    kind = type(value)
    if kind in _SCALARS:
        return repr(value).encode()
    if kind is tuple or kind is list:
        inner = b",".join(_canonical_arg(v) for v in value)
        return b"(" + inner + b")" if kind is tuple else b"[" + inner + b"]"
    if kind is dict:
        items = sorted(_canonical_arg(k) + b":" + _canonical_arg(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if kind is set or kind is frozenset:
        return b"set{" + b",".join(sorted(_canonical_arg(v) for v in value)) + b"}"
    data = pickle.dumps(value, protocol=_DIGEST_PROTOCOL)
    # Length-prefixed: raw pickle bytes could contain the separators above.
    return b"P" + str(len(data)).encode() + b":" + data


# ============================================================ payloads
def encode_result(value: Any, task_id: Hashable = None) -> bytes:
    """Pickle a task's result, or raise `UnstorableResultError` naming its type."""
    whose = f"task {task_id!r} returned" if task_id is not None else "the result is"
    try:
        data = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    except Exception as exc:  # pickling can raise nearly anything (PicklingError, TypeError, ...)
        raise UnstorableResultError(
            f"{whose} a {type(value).__module__}.{type(value).__qualname__}, which cannot be "
            f"stored in the journal: pickling it failed with {type(exc).__name__}: {exc}. Return "
            f"a picklable value (built-in types, numpy arrays, classes defined at module level)"
        ) from exc
    if len(data) > MAX_PAYLOAD_BYTES:
        raise UnstorableResultError(
            f"{whose} a {type(value).__module__}.{type(value).__qualname__} of {len(data):,} bytes "
            f"pickled, more than the journal stores ({MAX_PAYLOAD_BYTES:,}, SQLite's bound): "
            f"write large data to a file and return its path")
    return data


def encode_error(exc: BaseException) -> bytes | None:
    """Pickle a task's exception if it can be pickled and loaded again, else None (never raises)."""
    try:
        data = pickle.dumps(exc, protocol=PICKLE_PROTOCOL)
        pickle.loads(data)  # an exception class with a custom __init__ may pickle but not load
    except Exception:
        return None
    return data


def error_text(exc: BaseException) -> str:
    """``"Type: message"``, as `TaskInfo.error` shows it."""
    return f"{type(exc).__name__}: {exc}"


def decode(data: bytes, what: str) -> Any:
    try:
        return pickle.loads(data)
    except Exception as exc:
        raise JournalError(f"the stored {what} cannot be loaded: {type(exc).__name__}: {exc} (a "
                           f"class it needs may be missing: import or define it first)") from exc


# ======================================================= stored outcome
@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """One task outcome read back from a journal. Immutable; thread-safe.

    ``task_id`` is the id as text (the key's readable part), ``state`` is ``"succeeded"`` or
    ``"failed"``, ``error`` is ``"Type: message"`` of a failure. Times are wall-clock seconds
    since the epoch (``time.time()``), None when unknown; ``run_id`` is the run that wrote it
    and ``seq`` its position in the file's write order.

    `result` and `exception` unpickle the stored value on each call (a fresh copy each time).
    Unpickling can run arbitrary code: only read journals you trust.
    """

    task_id: str
    key: str
    state: str
    error: str | None
    attempts: int
    priority: int
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    run_id: int
    seq: int
    _load: Callable[[], bytes | None] = field(repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCEEDED

    @property
    def run_time(self) -> float | None:
        """Seconds of the last attempt."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def result(self) -> Any:
        """The stored result; a failed outcome raises its exception, like ``Future.result()``.

        Raises `JournalError` if the value cannot be unpickled here (e.g. its class is defined
        in a notebook cell that has not run yet in this kernel).
        """
        if self.state != SUCCEEDED:
            raise self._failure()
        data = self._load()
        if data is None:
            raise JournalError(f"task {self.task_id} has no stored result")
        return decode(data, f"result of task {self.task_id}")

    def exception(self) -> BaseException | None:
        """None for a success; for a failure its exception, unpickled when it could be stored,
        else a `JournalError` carrying the error text."""
        return None if self.state == SUCCEEDED else self._failure()

    def _failure(self) -> BaseException:
        data = self._load()
        if data is not None:
            try:
                exc = pickle.loads(data)
            except Exception:
                exc = None
            if isinstance(exc, BaseException):
                return exc
        return JournalError(f"task {self.task_id} failed in run {self.run_id}: {self.error}")


def outcome_from_row(row: Sequence[Any], load: Callable[[], bytes | None]) -> StoredOutcome:
    """A `StoredOutcome` from the `OUTCOME_COLUMNS` of one row."""
    (task_id, key, state, error, attempts, priority, submitted_at, started_at, finished_at, run_id,
     seq) = row
    return StoredOutcome(task_id, key, state, error, attempts, priority, submitted_at, started_at,
                         finished_at, run_id, seq, load)


def constant(data: bytes | None) -> Callable[[], bytes | None]:
    return functools.partial(_identity, data)


def _identity(data: bytes | None) -> bytes | None:
    return data


# ================================================================ files
def connect(path: Path, *, read_only: bool, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any thread.

    ``read_only`` opens with SQLite's ``mode=ro``: nothing can be written through it.
    """
    target, uri = (path.resolve().as_uri() + "?mode=ro", True) if read_only else (str(path), False)
    try:
        return sqlite3.connect(target, timeout=busy_timeout, isolation_level=None,
                               check_same_thread=False, uri=uri)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot open the journal {str(path)!r}: {exc}") from exc


def schema_version(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, 0 for a new (empty) file; raise if it is no journal we can read."""
    try:
        app = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.OperationalError as exc:  # locked, unreadable, ...: it may well be a journal
        raise JournalError(f"cannot read the journal {str(path)!r}: {exc}") from exc
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        raise JournalError(f"{str(path)!r} is not a neon_nb journal: {exc}") from exc
    if app == 0 and version == 0 and tables == 0:
        return 0
    if app != APPLICATION_ID:
        raise JournalError(f"{str(path)!r} is not a neon_nb journal: it is an SQLite database of "
                           f"another application (application_id {app:#x}); give a new file name")
    if version > SCHEMA_VERSION:
        raise JournalError(f"the journal {str(path)!r} was written by a newer neon_nb (schema "
                           f"version {version}; this version reads up to {SCHEMA_VERSION}): "
                           f"upgrade neon_nb to read it")
    if version < 1:
        raise JournalError(f"the journal {str(path)!r} has no schema version: it is damaged")
    return version


def create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new file; a no-op if another process did it first."""
    conn.execute("BEGIN IMMEDIATE")  # one creator at a time: the check below is under the lock
    try:
        if schema_version(conn, path) == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
