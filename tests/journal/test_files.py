"""The journal file: permissions, what is refused, the schema version, other openers, exit, fork."""

from __future__ import annotations

import inspect
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from neon_nb import JournalError, open_journal
from neon_nb._journal import Journal
from neon_nb._journal_format import APPLICATION_ID, SCHEMA_VERSION

from ..conftest import WAIT
from .helpers import entry, stored_keys


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_file_and_its_wal_and_shm_are_private_whatever_the_umask(path, umask):
    old = os.umask(umask)
    try:
        j = Journal(path)
        j.write([entry("a", 1)], lambda _e: None)
        assert j.flush(timeout=WAIT)
        wal, shm = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
        assert wal.exists() and shm.exists()  # while the journal is open
        assert {p.name: _mode(p) for p in (path, wal, shm)} == {
            path.name: 0o600, wal.name: 0o600, shm.name: 0o600}
        assert j.close(timeout=WAIT)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


def test_an_existing_journal_keeps_its_permissions(path):
    Journal(path).close()
    path.chmod(0o640)  # the owner's choice, e.g. to share with a group
    Journal(path).close()
    assert _mode(path) == 0o640


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(path):
    path.write_text("id,value\n1,2\n")
    before = path.read_bytes()
    with pytest.raises(JournalError, match="is not a neon_nb journal"):
        Journal(path)
    with pytest.raises(JournalError, match="is not a neon_nb journal"):
        open_journal(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_another_applications_database_is_refused_and_not_switched_to_wal(path):
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE notes (text TEXT)")
    other.commit()
    other.close()
    for opener in (Journal, open_journal):
        with pytest.raises(JournalError, match="SQLite database of another application"):
            opener(path)
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    check.close()


def test_a_journal_of_a_newer_schema_is_refused_with_the_versions(path):
    Journal(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for opener in (Journal, open_journal):
        with pytest.raises(JournalError, match=rf"newer neon_nb \(schema version {SCHEMA_VERSION + 1}; "
                                               rf"this version reads up to {SCHEMA_VERSION}\)"):
            opener(path)


def test_the_file_is_marked_as_a_journal_in_its_header(path):
    Journal(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_an_empty_file_becomes_a_journal_for_the_writer_but_not_for_the_reader(path):
    path.touch()
    with pytest.raises(JournalError, match="not a neon_nb journal: it is empty"):
        open_journal(path)
    with Journal(path) as j:
        j.write([entry("a", 1)], lambda _e: None)
    assert stored_keys(path) == ["'a'"]


@pytest.mark.parametrize("setting", ["full", "normal"])
def test_synchronous_is_what_sqlite_reports_for_the_writers_connection(path, setting):
    with Journal(path, synchronous=setting) as j:
        assert j.synchronous == setting
    assert inspect.signature(Journal).parameters["synchronous"].default == "full"  # power loss


def test_opening_waits_while_another_connection_keeps_the_file_from_switching_to_wal(path):
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # a write lock on a file that is not in WAL mode yet
    try:
        with pytest.raises(JournalError, match="database is locked"):
            Journal(path, busy_timeout=0.2)  # the lock outlasts busy_timeout: a clear error
        opened: dict[str, Journal] = {}

        def open_it() -> None:
            opened["j"] = Journal(path)

        t = threading.Thread(target=open_it)
        t.start()
        threading.Event().wait(0.2)  # let it try while the lock is held (if it does not, fine)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    t.join(WAIT)
    assert opened["j"].close(timeout=WAIT)


def test_a_journal_left_open_at_exit_writes_what_is_pending_and_ends_its_run(path):
    code = textwrap.dedent(f"""
        from neon_nb._journal import Journal, JournalEntry
        j = Journal({str(path)!r}, run_name="forgotten", group_delay=5.0)
        for i in range(100):
            j.write([JournalEntry.succeeded(j.key(i), i, j.encode_result(i))], lambda _e: None)
        # no close(): the interpreter exits with the entries still waiting for their group
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with open_journal(path) as reader:
        (run,) = reader.runs()
        assert (run.name, run.ended, run.succeeded) == ("forgotten", True, 100)
        assert [reader.result(i) for i in range(100)] == list(range(100))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
# Forking a process with threads is the very case under test (Python 3.12+ warns about it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_cannot_write_to_its_parents_journal(make_journal, path):
    j = make_journal()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what write() did, then leave without any cleanup
        try:
            j.write([entry("child", 1)], lambda _e: None)
            os.write(w, b"wrote")
        except JournalError as exc:
            os.write(w, str(exc).encode()[:200])
        finally:
            os._exit(0)
    os.close(w)
    said = os.read(r, 400).decode()
    os.close(r)
    os.waitpid(pid, 0)
    assert "opened before the process forked" in said
    j.write([entry("parent", 1)], lambda _e: None)
    assert j.flush(timeout=WAIT) and stored_keys(path) == ["'parent'"]
