"""Building entries and recording callbacks, for the journal tests."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import IO, Any

from neon_nb._journal import Journal, JournalEntry


def entry(tid: Hashable, value: Any = None, *, failed: BaseException | None = None,
          key: str | None = None, attempts: int = 1, priority: int = 0) -> JournalEntry:
    """A success of ``tid`` with result ``value``, or (``failed=exc``) its final failure."""
    key = Journal.key(tid) if key is None else key
    if failed is not None:
        return JournalEntry.failed(key, tid, failed, attempts=attempts, priority=priority)
    return JournalEntry.succeeded(key, tid, Journal.encode_result(value), attempts=attempts,
                                  priority=priority)


class Calls:
    """Records each ``on_durable`` / ``on_error`` call, with the thread it ran on. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.durable: list[Sequence[JournalEntry]] = []
        self.errors: list[tuple[Sequence[JournalEntry], BaseException]] = []
        self.threads: set[str] = set()
        self.any = threading.Event()

    def on_durable(self, entries: Sequence[JournalEntry]) -> None:
        with self.lock:
            self.durable.append(entries)
            self.threads.add(threading.current_thread().name)
        self.any.set()

    def on_error(self, entries: Sequence[JournalEntry], error: BaseException) -> None:
        with self.lock:
            self.errors.append((entries, error))
        self.any.set()


def stored_keys(path: Path) -> list[str]:
    """The keys in the file, in write order, read through a connection of our own."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT key FROM tasks ORDER BY seq")]
    finally:
        conn.close()


def integrity(path: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def pipe(stream: IO[str] | None) -> IO[str]:
    """A child's pipe (Popen's are Optional to type checkers; ours are always set)."""
    assert stream is not None
    return stream


def read_until(proc: Any, marker: str, *, prefix: bool = False) -> list[str]:
    """The lines a child printed before the line ``marker`` (or starting with it: ``prefix``),
    which is consumed; fails with the child's stderr if it exits first."""
    lines: list[str] = []
    for line in iter(proc.stdout.readline, ""):
        text = line.strip()
        if text == marker or (prefix and text.startswith(marker)):
            return lines
        lines.append(line.strip())
    proc.wait()
    raise AssertionError(f"the child exited ({proc.returncode}) before printing {marker!r}: "
                         f"{proc.stderr.read()[-2000:]}")
