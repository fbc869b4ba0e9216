"""`Journal`: writing outcomes, finding them again, encoding results, bad input, closing."""

from __future__ import annotations

import logging
import pickle
import sqlite3
import threading
import time
from typing import Any

import pytest

from neon_nb import JournalError, TaskPicklingError, UnstorableResultError, open_journal
from neon_nb._journal import Journal, JournalEntry, wall_time

from ..conftest import WAIT
from .helpers import Calls, entry, stored_keys


def _write_and_wait(journal: Journal, entries: list[JournalEntry]) -> Calls:
    calls = Calls()
    journal.write(entries, calls.on_durable, calls.on_error)
    assert journal.flush(timeout=WAIT)
    return calls


# ------------------------------------------------------------------ round trip
def test_a_written_success_is_found_with_its_result_and_fields(make_journal):
    j = make_journal(run_name="first")
    e = JournalEntry.succeeded(j.key("t1"), "t1", j.encode_result({"rows": [1, 2]}), attempts=2,
                               priority=5, submitted_at=100.0, started_at=101.0, finished_at=103.5)
    calls = _write_and_wait(j, [e])
    assert len(calls.durable) == 1 and not calls.errors
    found = j.lookup([j.key("t1"), j.key("absent")])
    assert list(found) == ["'t1'"]
    out = found["'t1'"]
    assert out.result() == {"rows": [1, 2]}
    assert out.result() is not out.result()  # each call unpickles a fresh copy
    assert (out.task_id, out.state, out.attempts, out.priority) == ("'t1'", "succeeded", 2, 5)
    assert (out.submitted_at, out.started_at, out.finished_at, out.run_time) == (100.0, 101.0, 103.5, 2.5)
    assert out.run_id == j.run_id and out.succeeded and out.exception() is None


def test_on_durable_gets_the_very_sequence_written_on_the_writer_thread(make_journal):
    j = make_journal()
    entries = [entry(i, i * i) for i in range(3)]
    calls = _write_and_wait(j, entries)
    assert calls.durable[0] is entries
    assert calls.threads == {f"neon_nb-journal-{j.run_id}"}


def test_lookup_prefers_the_latest_success_over_any_failure(make_journal):
    j = make_journal()
    _write_and_wait(j, [entry("a", "old"), entry("b", failed=ValueError("b1"))])
    _write_and_wait(j, [entry("a", "new"), entry("a", failed=ValueError("later")),
                        entry("c", failed=KeyError("c"))])
    found = j.lookup([j.key(t) for t in "abc"])
    assert set(found) == {"'a'"}  # failures are run again by default
    assert found["'a'"].result() == "new"


def test_keep_failed_returns_the_latest_failure_of_a_task_that_never_succeeded(make_journal, path):
    first = make_journal()
    _write_and_wait(first, [entry("b", failed=ValueError("b1"), attempts=4),
                            entry("b", failed=ValueError("b2"), attempts=4), entry("a", 1),
                            entry("a", failed=ValueError("a"))])
    assert first.close(timeout=WAIT)
    again = make_journal(keep_failed=True)
    found = again.lookup(["'a'", "'b'"])
    assert found["'a'"].result() == 1  # a success still wins
    b = found["'b'"]
    assert (b.state, b.error, b.attempts, b.run_id) == ("failed", "ValueError: b2", 4, first.run_id)
    exc = b.exception()
    assert type(exc) is ValueError and str(exc) == "b2"
    with pytest.raises(ValueError, match="b2"):
        b.result()


def test_a_new_run_finds_the_outcomes_of_earlier_runs(make_journal):
    first = make_journal()
    _write_and_wait(first, [entry(("x", i), i) for i in range(10)])
    assert first.close(timeout=WAIT)
    second = make_journal()
    assert second.run_id == first.run_id + 1
    found = second.lookup([second.key(("x", i)) for i in range(12)])
    assert sorted(o.result() for o in found.values()) == list(range(10))
    assert {o.run_id for o in found.values()} == {first.run_id}


def test_lookup_of_many_keys_spans_several_queries_and_ignores_duplicates(make_journal):
    j = make_journal()
    _write_and_wait(j, [entry(i, -i) for i in range(1_234)])
    keys = [j.key(i) for i in range(1_300)] + [j.key(5)] * 3
    found = j.lookup(keys)
    assert len(found) == 1_234 and all(found[j.key(i)].result() == -i for i in range(1_234))
    assert j.lookup([]) == {}


def test_lookup_sees_only_committed_outcomes(make_journal, gate):
    j = make_journal()
    entered = threading.Event()

    def hold(_entries):
        entered.set()
        gate.wait()

    j.write([entry("first", 1)], hold)
    assert entered.wait(WAIT)
    j.write([entry("second", 2)], lambda _e: None)  # queued behind the held callback
    assert set(j.lookup(["'first'", "'second'"])) == {"'first'"}
    gate.set()
    assert j.flush(timeout=WAIT)
    assert set(j.lookup(["'first'", "'second'"])) == {"'first'", "'second'"}


def test_entries_carry_error_text_and_a_picklable_exception_when_possible():
    class NeedsTwo(Exception):
        def __init__(self, a, b):  # pickles, but cannot be loaded again (args is one tuple)
            super().__init__(f"{a}-{b}")

    ok = JournalEntry.failed("'k'", "k", ValueError("bad value"), attempts=3)
    assert (ok.state, ok.error, ok.attempts) == ("failed", "ValueError: bad value", 3)
    assert ok.payload is not None and isinstance(pickle.loads(ok.payload), ValueError)
    odd = JournalEntry.failed("'k'", "k", NeedsTwo(1, 2))
    assert odd.payload is None and odd.error == "NeedsTwo: 1-2"


def test_a_failure_whose_exception_could_not_be_stored_raises_a_journal_error_with_its_text(
        make_journal):
    class Local(Exception):  # a local class cannot be pickled
        pass

    j = make_journal(keep_failed=True)
    _write_and_wait(j, [entry("k", failed=Local("gone"))])
    out = j.lookup(["'k'"])["'k'"]
    exc = out.exception()
    assert isinstance(exc, JournalError) and "Local: gone" in str(exc) and "'k'" in str(exc)
    with pytest.raises(JournalError, match="Local: gone"):
        out.result()


def test_a_result_that_cannot_be_loaded_here_is_a_clear_error_on_access(make_journal):
    j = make_journal()
    unloadable = b"cno_such_module_for_neon_nb\nThing\n."  # a pickle naming a missing class
    e = JournalEntry("'k'", "'k'", "succeeded", unloadable, None, 1, 0, None, None, None)
    _write_and_wait(j, [e])
    out = j.lookup(["'k'"])["'k'"]  # finding it works; only loading the value fails
    with pytest.raises(JournalError, match=r"result of task 'k' cannot be loaded.*no_such_module"):
        out.result()


def test_wall_time_turns_a_monotonic_reading_into_epoch_seconds():
    assert wall_time(None) is None
    assert abs(wall_time(time.monotonic()) - time.time()) < 1.0
    assert abs(wall_time(time.monotonic() - 60) - (time.time() - 60)) < 1.0


# ------------------------------------------------------------ result encoding
def test_encode_result_names_the_type_and_the_task_that_cannot_be_stored():
    with pytest.raises(UnstorableResultError, match=r"task 'load-7' returned a builtins\.function"
                       r".*cannot be stored in the journal.*(PicklingError|AttributeError)") as info:
        Journal.encode_result(lambda: 1, "load-7")
    assert isinstance(info.value, TaskPicklingError)  # never retried by the worker
    assert info.value.__cause__ is not None
    with pytest.raises(UnstorableResultError, match=r"_thread\.lock"):
        Journal.encode_result({"fine": 1, "lock": threading.Lock()})


def test_encode_result_refuses_a_result_larger_than_sqlite_stores(monkeypatch):
    from neon_nb import _journal_format

    monkeypatch.setattr(_journal_format, "MAX_PAYLOAD_BYTES", 1_000)  # 1 GB is a lot for a test
    assert len(Journal.encode_result(b"x" * 900)) < 1_000
    with pytest.raises(UnstorableResultError, match=r"task 'big' returned a builtins\.bytes of "
                                                    r"2,0\d\d bytes pickled, more than the journal"):
        Journal.encode_result(b"x" * 2_000, "big")


def test_encode_result_round_trips_ordinary_values():
    value = {"a": [1, 2.5, None], "b": (b"x", frozenset({3})), "c": "text"}
    assert pickle.loads(Journal.encode_result(value)) == value


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("options", "error", "match"), [
    ({"run_name": 3}, TypeError, "run_name must be a str"),
    ({"keep_failed": "yes"}, TypeError, "keep_failed must be True or False"),
    ({"max_pending": 0}, ValueError, "max_pending must be an int >= 1"),
    ({"max_pending": 2.0}, ValueError, "max_pending must be an int >= 1"),
    ({"max_pending": True}, ValueError, "max_pending must be an int >= 1"),
    ({"group_delay": -0.1}, ValueError, "group_delay must be a number of seconds >= 0"),
    ({"group_delay": float("nan")}, ValueError, "group_delay"),
    ({"synchronous": "off"}, ValueError, "synchronous must be 'full'"),
    ({"busy_timeout": 0}, ValueError, "busy_timeout must be a number of seconds > 0"),
])
def test_bad_options_are_refused_at_the_call_naming_the_parameter(path, options, error, match):
    with pytest.raises(error, match=match):
        Journal(path, **options)
    assert not path.exists()  # nothing was created


def test_bad_paths_are_refused_clearly(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory; give a file name"):
        Journal(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist: create it first"):
        Journal(tmp_path / "missing" / "runs.db")
    with pytest.raises(TypeError, match="path must be a file name"):
        Journal(None)  # type: ignore[arg-type]  # the error under test


def test_bad_writes_are_refused_at_the_call(make_journal):
    j = make_journal()
    ok = entry("k", 1)
    with pytest.raises(TypeError, match="on_durable must be callable"):
        j.write([ok], None)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="on_error must be callable or None"):
        j.write([ok], print, 3)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="entries must be a list or tuple of JournalEntry"):
        j.write(iter([ok]), print)  # type: ignore[arg-type]  # the error under test
    with pytest.raises(TypeError, match="entries must hold JournalEntry records, got tuple"):
        j.write([tuple(ok)], print)  # type: ignore[list-item]  # the error under test
    with pytest.raises(ValueError, match="state must be 'succeeded' or 'failed', got 'cancelled'"):
        j.write([ok._replace(state="cancelled")], print)
    with pytest.raises(TypeError, match="keys must be a sequence of keys, not one str"):
        j.lookup("'k'")
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        j.flush(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        j.close(timeout="soon")  # type: ignore[arg-type]  # the error under test
    assert j.stats().pending == 0 and stored_keys(j.path) == []


def test_one_bad_call_in_a_group_fails_alone(make_journal, gate):
    j = make_journal()
    entered = threading.Event()

    def hold(_entries):
        entered.set()
        gate.wait()

    j.write([entry("first", 1)], hold)
    assert entered.wait(WAIT)
    good, bad = Calls(), Calls()
    j.write([entry("g1", 1)], good.on_durable, good.on_error)
    # A payload SQLite cannot bind: the whole group's transaction fails on it.
    unbindable: Any = [1, 2]
    j.write([entry("b1", 1), entry("b2", 2)._replace(payload=unbindable)], bad.on_durable,
            bad.on_error)
    j.write([entry("g2", 2)], good.on_durable, good.on_error)
    gate.set()
    assert j.flush(timeout=WAIT)
    assert [[e.task_id for e in es] for es in good.durable] == [["'g1'"], ["'g2'"]]
    assert not bad.durable and len(bad.errors) == 1
    _entries, error = bad.errors[0]
    assert isinstance(error, JournalError) and isinstance(error.__cause__, sqlite3.Error)
    assert "could not write 2 task outcome(s)" in str(error)
    assert stored_keys(j.path) == ["'first'", "'g1'", "'g2'"]  # never half of the bad call


# ------------------------------------------------------------------- callbacks
def test_a_raising_callback_is_logged_and_the_next_ones_still_run(make_journal, caplog):
    j = make_journal()
    after = Calls()

    def boom(_entries):
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="neon_nb"):
        j.write([entry("a", 1)], boom)
        j.write([entry("b", 2)], after.on_durable)
        assert j.flush(timeout=WAIT)
    assert len(after.durable) == 1 and j.stats().callback_errors == 1
    assert any("journal callback raised" in r.message and r.exc_info for r in caplog.records)
    assert stored_keys(j.path) == ["'a'", "'b'"]


def test_a_callback_may_write_flush_and_read_without_deadlock(make_journal):
    j = make_journal(max_pending=1)
    done = threading.Event()
    seen = {}

    def chain(_entries):
        # On the writer thread: write() never waits for room here (it would wait for itself),
        # flush() cannot wait for itself and says so, lookup() reads committed outcomes.
        for i in range(3):
            j.write([entry(("more", i), i)], lambda _e: None)
        seen["flush"] = j.flush(timeout=WAIT)
        seen["found"] = set(j.lookup(["'first'"]))
        j.write([entry("last", 0)], lambda _e: done.set())

    j.write([entry("first", 0)], chain)
    assert done.wait(WAIT)
    assert seen == {"flush": False, "found": {"'first'"}}
    assert len(stored_keys(j.path)) == 5


def test_a_failed_write_without_on_error_is_logged(make_journal, caplog, path):
    j = make_journal(busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
    try:
        with caplog.at_level(logging.ERROR, logger="neon_nb"):
            j.write([entry("lost", 1)], lambda _e: pytest.fail("not durable"))
            assert j.flush(timeout=WAIT)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert j.stats().write_errors == 1
    assert any("could not write 1 task outcome(s)" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------- closing
def test_close_ends_the_run_and_is_idempotent(make_journal, path):
    j = make_journal(run_name="nightly")
    _write_and_wait(j, [entry("a", 1)])
    assert j.close(timeout=WAIT) and j.closed and j.close(timeout=0)
    assert "closed" in repr(j)
    with pytest.raises(JournalError, match="is closed"):
        j.write([entry("b", 2)], print)
    with pytest.raises(JournalError, match="is closed"):
        j.lookup(["'a'"])
    assert j.flush(timeout=0)  # nothing outstanding
    assert not path.with_name(path.name + "-wal").exists()  # the last close checkpointed the WAL
    with open_journal(path) as reader:
        (run,) = reader.runs()
    assert (run.name, run.ended, run.succeeded) == ("nightly", True, 1)
    assert run.ended_at is not None and run.started_at <= run.ended_at


def test_the_journal_is_a_context_manager(path):
    with Journal(path) as j:
        j.write([entry("a", 1)], print)
    assert j.closed and stored_keys(path) == ["'a'"]
