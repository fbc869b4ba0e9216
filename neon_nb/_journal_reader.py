"""Reading a journal back: `open_journal` returns a read-only `JournalReader`.

The file is opened with SQLite's ``mode=ro``: nothing is written through the reader, and it
can be read while a worker (in this process or another) is writing to it. Results are pickled,
and reading one unpickles it, which can run arbitrary code: never open a journal that comes
from an untrusted source.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _journal_format as fmt
from ._errors import JournalError, UnknownTaskError
from ._journal_format import StoredOutcome

__all__ = ["JournalReader", "JournalRun", "open_journal"]

_RUN_COLUMNS = ("r.run_id, r.name, r.pid, r.host, r.started_at, r.ended_at, r.neon_nb_version, "
                "r.python_version")
_TIME_COLUMNS = ("submitted_at", "started_at", "finished_at")


def open_journal(path: str | os.PathLike[str]) -> JournalReader:
    """Open a journal for reading (read-only): its runs, its task outcomes, their results.

    Raises FileNotFoundError if there is no such file, and `JournalError` if it is not a
    neon_nb journal or was written by a newer neon_nb. Never open a journal from an untrusted
    source: reading a result unpickles it.
    """
    return JournalReader(path)


@dataclass(frozen=True, slots=True)
class JournalRun:
    """One run in a journal: a worker that opened the file. Immutable.

    Times are wall-clock seconds since the epoch; ``ended_at`` is None while the run is
    going on, or when its process died before closing the journal. ``succeeded`` and
    ``failed`` count the outcomes it wrote.
    """

    run_id: int
    name: str
    pid: int
    host: str
    started_at: float
    ended_at: float | None
    neon_nb_version: str
    python_version: str
    succeeded: int
    failed: int

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def outcomes(self) -> int:
        return self.succeeded + self.failed


class JournalReader:
    """A journal opened read-only (`open_journal`). Thread-safe; close it, or use ``with``.

    Every call reads the file as it is now: outcomes committed by a live worker appear.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}")
        self.path = Path(os.fspath(path)).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"no journal at {str(self.path)!r}"
                                    + (" (it is a directory)" if self.path.is_dir() else ""))
        self._lock = threading.Lock()
        conn = fmt.connect(self.path, read_only=True, busy_timeout=10.0)
        try:
            version = fmt.schema_version(conn, self.path)
        except BaseException:
            conn.close()
            raise
        if version == 0:
            conn.close()
            raise JournalError(f"{str(self.path)!r} is not a neon_nb journal: it is empty")
        self.schema_version = version
        self._conn: sqlite3.Connection | None = conn

    # ------------------------------------------------------------------ queries
    def runs(self) -> list[JournalRun]:
        """Every run, oldest first, with the number of outcomes each wrote."""
        rows = self._query(
            f"SELECT {_RUN_COLUMNS}, "
            f"(SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id AND t.state = 'succeeded'), "
            f"(SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id AND t.state = 'failed') "
            f"FROM runs r ORDER BY r.run_id")
        return [JournalRun(*row) for row in rows]

    def tasks(self, run: int | JournalRun | None = None, state: str | None = None) -> list[StoredOutcome]:
        """Task outcomes in the order they were written, every run's or one ``run``'s.

        ``run``: a run id, a `JournalRun`, or a negative index into `runs` (-1: the latest).
        ``state``: ``"succeeded"``, ``"failed"`` or None (both). Results are read from the file
        when asked for (`StoredOutcome.result`), while the reader is open.
        """
        where: list[str] = []
        params: list[Any] = []
        if run is not None:
            where.append("run_id = ?")
            params.append(self._run_id(run))
        if state is not None:
            if state not in fmt.STATES:
                raise ValueError(f"state must be 'succeeded', 'failed' or None, got {state!r}")
            where.append("state = ?")
            params.append(str(state))
        sql = f"SELECT {fmt.OUTCOME_COLUMNS} FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [self._outcome(row) for row in self._query(sql + " ORDER BY seq", params)]

    def outcome(self, task_id: Hashable) -> StoredOutcome:
        """The outcome a resumed task would get: the latest success of this id, else its latest
        failure (among keys built with ``with_args``, the latest of any arguments).

        Raises `UnknownTaskError` (a KeyError) if the journal holds no outcome of this id.
        """
        base = fmt.canonical_id(task_id)
        rows = self._query(
            f"SELECT {fmt.OUTCOME_COLUMNS} FROM tasks WHERE key = ? OR (key >= ? AND key < ?) "
            f"ORDER BY state = 'succeeded' DESC, seq DESC LIMIT 1",
            # with_args keys are "<id> #<digest>": the range of strings starting with "<id> #".
            (base, base + " #", base + " $"))
        if not rows:
            raise UnknownTaskError(f"the journal {str(self.path)!r} has no outcome of task {base}")
        return self._outcome(rows[0])

    def result(self, task_id: Hashable) -> Any:
        """The stored result of a task (see `outcome`); a task that only failed raises its
        exception, like ``Future.result()``."""
        return self.outcome(task_id).result()

    # --------------------------------------------------------------- dataframes
    def to_dataframe(self, table: str = "tasks", *, results: bool = False) -> Any:
        """A pandas DataFrame of ``"tasks"`` (one row per outcome) or ``"runs"``.

        Times are timezone-aware UTC timestamps. ``results=True`` adds a ``result`` column
        with each success's unpickled result (tasks only). Needs pandas
        (``pip install 'neon_nb[pandas]'``).
        """
        if table not in ("tasks", "runs"):
            raise ValueError(f"table must be 'tasks' or 'runs', got {table!r}")
        if results and table != "tasks":
            raise ValueError("results=True applies to the 'tasks' table only")
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_dataframe() needs pandas: pip install 'neon_nb[pandas]'") from exc
        if table == "runs":
            frame = pd.DataFrame([_run_record(r) for r in self.runs()],
                                 columns=[*JournalRun.__dataclass_fields__, "ended"])
            times: tuple[str, ...] = ("started_at", "ended_at")
        else:
            outcomes = self.tasks()
            frame = pd.DataFrame([_task_record(o, results) for o in outcomes],
                                 columns=_task_columns(results))
            times = _TIME_COLUMNS
        for column in times:
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
        return frame

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A few lines: runs, outcomes per state, distinct tasks, the latest run."""
        (total, ok, failed, distinct), = self._query(
            "SELECT count(*), coalesce(sum(state = 'succeeded'), 0), "
            "coalesce(sum(state = 'failed'), 0), count(DISTINCT key) FROM tasks")
        runs = self.runs()
        lines = [f"neon_nb journal {str(self.path)!r} (schema {self.schema_version}): "
                 f"{len(runs):,} run{'s' * (len(runs) != 1)}, {total:,} outcome"
                 f"{'s' * (total != 1)} ({ok:,} succeeded, {failed:,} failed) of {distinct:,} "
                 f"distinct task{'s' * (distinct != 1)}"]
        if runs:
            lines.append("  latest " + _describe(runs[-1]))
        return "\n".join(lines)

    def __repr__(self) -> str:
        if self.closed:
            return f"<JournalReader {str(self.path)!r} closed>"
        return self.summary()

    # ------------------------------------------------------------------ closing
    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the file (idempotent). Outcomes read before keep their fields; their results
        can no longer be loaded."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- internals
    def _query(self, sql: str, params: Any = ()) -> list[Any]:
        with self._lock:
            if self._conn is None:
                raise JournalError(f"the journal reader of {str(self.path)!r} is closed")
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"could not read the journal {str(self.path)!r}: "
                                   f"{type(exc).__name__}: {exc}") from exc

    def _payload(self, seq: int) -> bytes | None:
        rows = self._query("SELECT payload FROM tasks WHERE seq = ?", (seq,))
        return rows[0][0] if rows else None

    def _outcome(self, row: Any) -> StoredOutcome:
        return fmt.outcome_from_row(row, functools.partial(self._payload, row[-1]))

    def _run_id(self, run: Any) -> int:
        if isinstance(run, JournalRun):
            return run.run_id
        if type(run) is not int:
            raise TypeError(f"run must be a run id (int), a JournalRun, a negative index or None, "
                            f"got {type(run).__name__} {run!r}")
        ids = [row[0] for row in self._query("SELECT run_id FROM runs ORDER BY run_id")]
        if run < 0:
            if -run > len(ids):
                raise ValueError(f"run={run} is out of range: the journal has {len(ids)} run(s)")
            return ids[run]
        if run not in ids:
            raise ValueError(f"the journal has no run {run}; its runs are "
                             f"{_id_ranges(ids) or 'none'}")
        return run


def _run_record(run: JournalRun) -> tuple:
    return (*(getattr(run, f) for f in JournalRun.__dataclass_fields__), run.ended)


def _task_columns(results: bool) -> list[str]:
    cols = ["run_id", "seq", "task_id", "key", "state", "error", "attempts", "priority",
            *_TIME_COLUMNS, "run_time_s"]
    return [*cols, "result"] if results else cols


def _task_record(o: StoredOutcome, results: bool) -> tuple:
    row = (o.run_id, o.seq, o.task_id, o.key, o.state, o.error, o.attempts, o.priority,
           o.submitted_at, o.started_at, o.finished_at, o.run_time)
    return (*row, o.result() if o.succeeded else None) if results else row


def _describe(run: JournalRun) -> str:
    name = f" {run.name!r}" if run.name else ""
    end = (f"ended {_when(run.ended_at)}" if run.ended_at is not None
           else "not closed (still running, or its process died)")
    return (f"run {run.run_id}{name}: started {_when(run.started_at)} on {run.host} "
            f"(pid {run.pid}), {end}; {run.succeeded:,} succeeded, {run.failed:,} failed")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _id_ranges(ids: list[int]) -> str:
    return f"{ids[0]}..{ids[-1]}" if len(ids) > 1 else ", ".join(map(str, ids))
