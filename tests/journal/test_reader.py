"""`open_journal`: reading runs, outcomes and results back, read-only, while a worker writes."""

from __future__ import annotations

import os
import re
import threading

import pytest

from neon_nb import JournalError, JournalReader, JournalRun, StoredOutcome, UnknownTaskError, open_journal
from neon_nb._journal import Journal

from ..conftest import WAIT
from .helpers import entry


def _fill(path, name, entries, **options):
    """One finished run: open a journal, write ``entries``, close it."""
    with Journal(path, run_name=name, **options) as j:
        j.write(entries, lambda _e: None)
        assert j.flush(timeout=WAIT)
        return j.run_id


@pytest.fixture
def two_runs(path):
    first = _fill(path, "first", [entry("a", "a1"), entry("b", failed=ValueError("b1")),
                                  entry(("c", 1), [1])])
    second = _fill(path, "second", [entry("b", "b2"), entry("d", failed=KeyError("d"), attempts=4)])
    return first, second


def test_runs_lists_every_run_with_its_counts(path, two_runs):
    with open_journal(path) as reader:
        runs = reader.runs()
    assert [(r.run_id, r.name, r.succeeded, r.failed, r.outcomes, r.ended) for r in runs] == [
        (two_runs[0], "first", 2, 1, 3, True), (two_runs[1], "second", 1, 1, 2, True)]
    assert all(isinstance(r, JournalRun) and r.pid > 0 and r.host for r in runs)
    assert runs[0].ended_at is not None
    assert runs[0].started_at <= runs[0].ended_at <= runs[1].started_at


def test_tasks_in_write_order_filtered_by_run_and_state(path, two_runs):
    first, second = two_runs
    with open_journal(path) as reader:
        assert [o.task_id for o in reader.tasks()] == ["'a'", "'b'", "('c', 1)", "'b'", "'d'"]
        assert [o.task_id for o in reader.tasks(run=first)] == ["'a'", "'b'", "('c', 1)"]
        assert [o.task_id for o in reader.tasks(run=-1)] == ["'b'", "'d'"]
        assert [o.task_id for o in reader.tasks(run=reader.runs()[0], state="failed")] == ["'b'"]
        assert [o.task_id for o in reader.tasks(state="succeeded")] == ["'a'", "('c', 1)", "'b'"]
        (d,) = reader.tasks(state="failed", run=second)
        assert isinstance(d, StoredOutcome) and (d.error, d.attempts) == ("KeyError: 'd'", 4)
        with pytest.raises(ValueError, match=r"no run 9; its runs are 1\.\.2"):
            reader.tasks(run=9)
        with pytest.raises(ValueError, match="run=-3 is out of range: the journal has 2 run"):
            reader.tasks(run=-3)
        with pytest.raises(TypeError, match="run must be a run id"):
            reader.tasks(run="first")  # type: ignore[arg-type]  # the error under test
        with pytest.raises(ValueError, match="state must be 'succeeded', 'failed' or None"):
            reader.tasks(state="cancelled")


def test_result_and_outcome_take_the_users_id_and_prefer_a_success(path, two_runs):
    with open_journal(path) as reader:
        assert reader.result("a") == "a1"
        assert reader.result("b") == "b2"  # failed in the first run, succeeded in the second
        assert reader.result(("c", 1)) == [1]
        assert reader.outcome("b").run_id == two_runs[1]
        with pytest.raises(KeyError, match="d"):  # only failed: raises its exception
            reader.result("d")
        with pytest.raises(UnknownTaskError, match=r"has no outcome of task 'zz'"):
            reader.outcome("zz")
        with pytest.raises(ValueError, match="no stable repr"):
            reader.outcome(object())


def test_with_args_keys_are_found_by_the_id_alone(path):
    j = Journal(path)
    k1 = j.key("t", len, ("x",), with_args=True)
    k2 = j.key("t", len, ("yy",), with_args=True)
    j.write([entry("t", 1, key=k1), entry("t", 2, key=k2), entry("t2", 3)], lambda _e: None)
    assert j.close(timeout=WAIT)
    with open_journal(path) as reader:
        assert reader.result("t") == 2  # the latest of its argument variants
        assert reader.outcome("t").key == k2
        assert reader.result("t2") == 3
        with pytest.raises(UnknownTaskError):
            reader.outcome("t ")  # a prefix of another id is another id


def test_results_load_lazily_while_the_reader_is_open(path, two_runs):
    reader = open_journal(path)
    outcomes = reader.tasks(state="succeeded")
    assert outcomes[0].result() == "a1"
    reader.close()
    reader.close()  # idempotent
    assert reader.closed and "closed" in repr(reader)
    assert outcomes[1].task_id == "('c', 1)"  # the fields stay
    with pytest.raises(JournalError, match=r"reader of .* is closed"):
        outcomes[1].result()
    with pytest.raises(JournalError, match="is closed"):
        reader.runs()


def test_the_summary_counts_runs_outcomes_and_distinct_tasks(path, two_runs):
    with open_journal(path) as reader:
        text = repr(reader)
    first_line, latest = text.splitlines()
    assert first_line == (f"neon_nb journal {str(path)!r} (schema 1): 2 runs, 5 outcomes "
                          f"(3 succeeded, 2 failed) of 4 distinct tasks")
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"  latest run 2 'second': started {stamp} on \S+ \(pid {os.getpid()}\), "
                        rf"ended {stamp}; 1 succeeded, 1 failed", latest), latest


def test_a_live_run_is_read_while_it_writes_and_shows_as_not_ended(make_journal, path):
    j = make_journal(run_name="live")
    reader = open_journal(path)
    try:
        assert reader.runs()[0].ended is False and reader.tasks() == []
        for i in range(3):
            j.write([entry(i, i)], lambda _e: None)
            assert j.flush(timeout=WAIT)
            assert [o.result() for o in reader.tasks()] == list(range(i + 1))  # each commit shows
        assert "not closed (still running, or its process died)" in reader.summary()
    finally:
        reader.close()


def test_many_threads_read_while_a_writer_writes(make_journal, path):
    j = make_journal()
    reader = open_journal(path)
    stop = threading.Event()
    seen: list[list[int]] = [[] for _ in range(6)]
    errors: list[BaseException] = []

    def read(n: int) -> None:
        try:
            while not stop.is_set():
                outcomes = reader.tasks()
                seen[n].append(len(outcomes))
                for o in outcomes[-3:]:
                    assert o.result() == int(o.task_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for i in range(300):
        j.write([entry(i, i)], lambda _e: None)
    assert j.flush(timeout=WAIT)
    stop.set()
    for t in threads:
        t.join(WAIT)
    final = len(reader.tasks())
    reader.close()
    assert not errors, errors[:3]
    assert final == 300
    assert all(counts == sorted(counts) for counts in seen)  # never goes back


def test_reading_never_changes_the_file(path, two_runs):
    before = path.read_bytes()
    with open_journal(path) as reader:
        reader.runs()
        reader.tasks()
        reader.result("a")
        reader.summary()
    assert path.read_bytes() == before


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no journal at"):
        open_journal(tmp_path / "missing.db")
    with pytest.raises(FileNotFoundError, match="it is a directory"):
        open_journal(tmp_path)
    with pytest.raises(TypeError, match="path must be a file name"):
        JournalReader(3)  # type: ignore[arg-type]  # the error under test


def test_to_dataframe_of_tasks_and_runs(path, two_runs):
    pd = pytest.importorskip("pandas")
    with open_journal(path) as reader:
        tasks = reader.to_dataframe()
        with_results = reader.to_dataframe("tasks", results=True)
        runs = reader.to_dataframe("runs")
        with pytest.raises(ValueError, match="table must be 'tasks' or 'runs'"):
            reader.to_dataframe("latency")
        with pytest.raises(ValueError, match="results=True applies to the 'tasks' table only"):
            reader.to_dataframe("runs", results=True)
    assert list(tasks.columns) == ["run_id", "seq", "task_id", "key", "state", "error", "attempts",
                                   "priority", "submitted_at", "started_at", "finished_at",
                                   "run_time_s"]
    assert list(tasks.task_id) == ["'a'", "'b'", "('c', 1)", "'b'", "'d'"]
    assert list(tasks.state) == ["succeeded", "failed", "succeeded", "succeeded", "failed"]
    assert str(tasks.finished_at.dtype).startswith("datetime64") and "UTC" in str(tasks.finished_at.dtype)
    assert list(with_results.result) == ["a1", None, [1], "b2", None]
    assert list(runs.name) == ["first", "second"] and list(runs.ended) == [True, True]
    assert list(runs.succeeded) == [2, 1]
    assert isinstance(runs.started_at.iloc[0], pd.Timestamp) and runs.started_at.iloc[0].tz is not None
