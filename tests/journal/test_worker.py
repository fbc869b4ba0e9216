"""`NeonWorker(journal=...)`: outcomes written, futures settled once durable, tasks resumed.

The writer is held back deterministically by another connection holding the file's write lock
(`held_write_lock`): while it is held nothing commits, so a future that settled before its
outcome was durable would show.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from neon_nb import (
    Batch,
    ConfigError,
    ConfigTypeError,
    DuplicateTaskError,
    EventKind,
    Journal,
    NeonExecutor,
    NeonWorker,
    QueueFullError,
    Task,
    UnstorableResultError,
    WorkerConfig,
    WorkerShutdownError,
    open_journal,
    update_config,
)

from ..conftest import WAIT, assert_counters_add_up, wait_until


class Counted:
    """A task function that counts its calls per argument (thread-safe) and squares it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter = Counter()

    def __call__(self, x: int) -> int:
        with self.lock:
            self.calls[x] += 1
        return x * x


def square(x: int) -> int:
    return x * x


def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


@contextlib.contextmanager
def held_write_lock(path: Path) -> Iterator[None]:
    """Hold the journal file's write lock from a connection of our own: nothing commits."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=WAIT)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def stored(path: Path) -> dict[str, tuple]:
    """task id text -> (state, error, attempts, priority) of its latest outcome, read apart."""
    with open_journal(path) as j:
        return {o.task_id: (o.state, o.error, o.attempts, o.priority) for o in j.tasks()}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


# ============================================================ writing outcomes
def test_every_outcome_is_written_with_its_details(make_worker, path):
    flaky_calls = Counter()

    def flaky(x: int) -> int:
        flaky_calls[x] += 1
        if flaky_calls[x] == 1:
            raise RuntimeError("first attempt")
        return x

    w = make_worker(max_workers=4, retry_attempts=1, retry_delay=0.0, journal=path)
    t0 = time.time()
    ok = [w.add_task(Task(f"ok{i}", square, (i,), priority=i % 3)) for i in range(50)]
    bad = w.add_task(Task("bad", boom, (7,), priority=9))
    retried = w.add_task(Task("flaky", flaky, (5,)))
    assert [f.result(WAIT) for f in ok] == [i * i for i in range(50)]
    with pytest.raises(ValueError, match="boom 7"):
        bad.result(WAIT)
    assert retried.result(WAIT) == 5
    assert w.wait_for_completion(WAIT)
    rows = stored(path)
    assert len(rows) == 52
    assert rows["'ok3'"] == ("succeeded", None, 1, 0)
    assert rows["'ok4'"] == ("succeeded", None, 1, 1)
    assert rows["'bad'"] == ("failed", "ValueError: boom 7", 2, 9)  # retried once, then final
    assert rows["'flaky'"] == ("succeeded", None, 2, 0)
    with open_journal(path) as j:
        assert j.result("ok7") == 49
        outcome = next(o for o in j.tasks() if o.task_id == "'ok7'")
        assert t0 <= outcome.submitted_at <= outcome.started_at <= outcome.finished_at <= time.time()
        with pytest.raises(ValueError, match="boom 7"):
            j.result("bad")
    w.shutdown()
    assert w.journal is not None and w.journal.closed  # opened from a path: closed by shutdown


def test_futures_settle_only_once_their_outcome_is_durable(make_worker, path):
    w = make_worker(max_workers=4, journal=Journal(path, busy_timeout=WAIT))
    with held_write_lock(path):
        futures = [w.submit(square, i, task_id=i) for i in range(40)]
        # The tasks end (their state and counts say so) but nothing can commit.
        assert wait_until(lambda: w.get_status()["completed_tasks"] == 40)
        assert not any(f.done() for f in futures)
        assert not w.wait_for_completion(timeout=0.2)
        assert w.get_task_status(3).state == "succeeded"
    assert w.wait_for_completion(WAIT)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == [i * i for i in range(40)]
    assert len(stored(path)) == 40
    w.shutdown()
    w.journal.close()


def test_a_future_delivered_has_its_result_in_the_journal_under_load(make_worker, path):
    # 8 threads wait on futures of 4 submitting threads: whenever result() returns, a separate
    # read-only connection must find the outcome.
    w = make_worker(max_workers=8, queue_size=50, journal=path)
    futures: list = []
    lock = threading.Lock()
    missing: list = []

    def submit(k: int) -> None:
        for i in range(150):
            fut = w.add_task(Task((k, i), square, (i,)))
            with lock:
                futures.append(fut)

    def check(start: int) -> None:
        with open_journal(path) as reader:
            for fut in futures[start::8]:
                value = fut.result(WAIT)
                if reader.result(fut.task_id) != value:
                    missing.append(fut.task_id)

    submitters = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join(WAIT)
    checkers = [threading.Thread(target=check, args=(s,)) for s in range(8)]
    for t in checkers:
        t.start()
    for t in checkers:
        t.join(WAIT)
    assert len(futures) == 600 and not missing
    assert w.wait_for_completion(WAIT)
    assert_counters_add_up(w.get_status())


# ==================================================================== resuming
def _first_run(path: Path, make_worker, tasks: int = 20) -> None:
    first = make_worker(journal=path)
    first.add_tasks([Task(f"t{i}", square, (i,)) for i in range(tasks)])
    assert first.wait_for_completion(WAIT)
    first.shutdown()


def test_a_task_done_in_the_journal_is_not_run_again(make_worker, path):
    _first_run(path, make_worker)
    fn = Counted()
    w = make_worker(journal=path)
    fut = w.add_task(Task("t3", fn, (3,)))
    assert fut.done() and fut.result() == 9  # done when returned: nothing ran
    assert not fn.calls
    fresh = w.add_task(Task("t99", fn, (99,)))
    assert fresh.result(WAIT) == 99 * 99 and fn.calls == Counter({99: 1})
    assert w.wait_for_completion(WAIT)
    status = w.get_status()
    assert status["resumed_tasks"] == 1 and status["completed_tasks"] == 2
    assert status["submitted_tasks"] == 2
    assert_counters_add_up(status)
    assert w.statistics().resumed == 1 and w.statistics().counts()["resumed"] == 1


def test_resuming_through_every_way_of_submitting(make_worker, path):
    fn = Counted()
    first = make_worker(journal=path, max_workers=4)
    first.add_task(Task("a", fn, (1,))).result(WAIT)
    first.submit(fn, 2, task_id="b").result(WAIT)
    first.submit(fn, 3).result(WAIT)  # a generated id: keyed by its call
    first.add_tasks([Task(f"batch{i}", fn, (10 + i,)) for i in range(5)])
    first.map(fn, range(20, 25), id_prefix="m")
    first.map(fn, range(30, 35))  # generated ids: keyed by their calls
    Batch(kind="io", count=6, duration=0.0, seed=1, id_prefix="io-").submit(first)
    assert first.wait_for_completion(WAIT)
    first.shutdown()
    ran_first = sum(fn.calls.values())
    assert ran_first == 18

    w = make_worker(journal=path, max_workers=4)
    futures = [w.add_task(Task("a", fn, (1,))), w.submit(fn, 2, task_id="b"), w.submit(fn, 3)]
    futures += w.add_tasks([Task(f"batch{i}", fn, (10 + i,)) for i in range(5)])
    futures += w.map(fn, range(20, 25), id_prefix="m")
    futures += w.map(fn, range(30, 35))
    io = Batch(kind="io", count=6, duration=0.0, seed=1, id_prefix="io-")
    futures += io.submit(w)
    futures += w.add_tasks([Task(f"batch{i}", fn, (10 + i,)) for i in range(5, 7)], background=True)
    assert all(f.done() for f in futures[:-2])  # every resumed future is done on return
    values = [f.result(WAIT) for f in futures]
    assert values[:18] == [1, 4, 9, *(x * x for x in range(10, 15)), *(x * x for x in range(20, 25)),
                           *(x * x for x in range(30, 35))]
    assert values[18:24] == [0.0] * 6
    assert sum(fn.calls.values()) == ran_first + 2  # only the two new tasks ran
    assert fn.calls[15] == fn.calls[16] == 1
    assert w.wait_for_completion(WAIT)
    assert w.get_status()["resumed_tasks"] == 24


def test_the_executor_resumes_by_call(tmp_path):
    path = tmp_path / "runs.db"
    fn = Counted()
    with NeonExecutor(max_workers=2, journal=path) as ex:
        assert list(ex.map(fn, range(6))) == [x * x for x in range(6)]
    with NeonExecutor(max_workers=2, journal=str(path)) as ex:
        assert list(ex.map(fn, range(8))) == [x * x for x in range(8)]
        assert ex.submit(fn, 3).result(WAIT) == 9
        assert ex.worker.get_status()["resumed_tasks"] == 7
    assert fn.calls == Counter({x: 1 for x in range(8)})


def test_ids_alone_match_by_default_and_with_args_adds_the_call(make_worker, path):
    fn = Counted()
    first = make_worker(journal=path)
    first.add_task(Task("job", fn, (2,))).result(WAIT)
    first.shutdown()
    by_id = make_worker(journal=path)
    assert by_id.add_task(Task("job", fn, (5,))).result(WAIT) == 4  # the stored result: id alone
    by_id.shutdown()
    by_args = make_worker(journal=path, journal_with_args=True)
    assert by_args.add_task(Task("job", fn, (5,))).result(WAIT) == 25  # other arguments: runs
    assert by_args.add_task(Task("job2", fn, (5,))).result(WAIT) == 25
    by_args.shutdown()
    again = make_worker(journal=path, journal_with_args=True)
    assert again.add_task(Task("job", fn, (5,))).result(WAIT) == 25
    assert again.get_status()["resumed_tasks"] == 1
    assert fn.calls == Counter({2: 1, 5: 2})


def test_failed_tasks_run_again_unless_kept(make_worker, path):
    first = make_worker(journal=path, retry_attempts=0)
    with pytest.raises(ValueError):
        first.add_task(Task("f", boom, (1,))).result(WAIT)
    first.shutdown()
    fn = Counted()
    rerun = make_worker(journal=path)
    assert rerun.add_task(Task("f", fn, (4,))).result(WAIT) == 16  # by default: runs again
    rerun.shutdown()
    assert fn.calls == Counter({4: 1})
    # The latest success wins over any failure; a key with only a failure is kept on demand.
    failed_only = make_worker(journal=path, retry_attempts=0)
    with pytest.raises(ValueError):
        failed_only.add_task(Task("g", boom, (2,))).result(WAIT)
    failed_only.shutdown()
    kept = make_worker(journal=path, journal_keep_failed=True)
    fut = kept.add_task(Task("g", fn, (3,)))
    assert fut.done() and isinstance(fut.exception(), ValueError)
    assert str(fut.exception()) == "boom 2"
    assert kept.add_task(Task("f", fn, (9,))).result() == 16
    status = kept.get_status()
    assert (status["failed_tasks"], status["completed_tasks"], status["resumed_tasks"]) == (1, 1, 2)
    assert kept.get_task_status("g").error == "ValueError: boom 2"
    kept.shutdown()
    assert "g" in dict(kept.shutdown_report.failures)
    # The Journal's own keep_failed is the default when the worker is given a Journal.
    journal = Journal(path, keep_failed=True)
    try:
        own = make_worker(journal=journal)
        assert own.add_task(Task("g", fn, (3,))).exception() is not None
        own.shutdown()
    finally:
        journal.close()
    assert fn.calls == Counter({4: 1})


def test_a_resumed_task_carries_its_stored_attempts_and_times(make_worker, path):
    gate = threading.Event()

    def slow_flaky(x: int) -> int:
        if not gate.is_set():
            gate.set()
            raise RuntimeError("once")
        time.sleep(0.05)  # a measurable run time (what is checked, not a synchronisation)
        return x

    first = make_worker(journal=path, retry_attempts=1, retry_delay=0.0)
    assert first.add_task(Task("s", slow_flaky, (1,), priority=2)).result(WAIT) == 1
    before = first.get_task_status("s")
    first.shutdown()
    w = make_worker(journal=path)
    info = w.get_task_status(w.add_task(Task("s", square, (1,))).task_id)
    assert info.state == "succeeded" and info.attempts == 2 and info.thread is None
    assert info.run_time == pytest.approx(before.run_time, abs=0.005)
    assert info.finished_at - info.submitted_at == pytest.approx(
        before.finished_at - before.submitted_at, abs=0.005)
    assert info.finished_at <= time.monotonic()
    assert [i.id for i in w.tasks("succeeded")] == ["s"]


def test_resumed_tasks_emit_their_event_and_their_own_count(make_worker, path):
    _first_run(path, make_worker, tasks=5)
    w = make_worker(journal=path, start=False)
    seen: list = []
    done = threading.Event()

    def on_events(batch) -> None:
        seen.extend(batch)
        if sum(e.kind is EventKind.TASK_RESUMED for e in seen) == 5:
            done.set()

    w.subscribe(on_events, on="thread")
    w.add_tasks([Task(f"t{i}", square, (i,)) for i in range(7)])
    assert done.wait(WAIT)
    resumed = [e for e in seen if e.kind is EventKind.TASK_RESUMED]
    assert sorted(e.task_id for e in resumed) == [f"t{i}" for i in range(5)]
    assert all(e.detail == "succeeded" and e.attempt == 1 for e in resumed)
    assert w.wait_for_completion(WAIT)
    s = w.get_status()
    assert (s["resumed_tasks"], s["completed_tasks"], s["submitted_tasks"]) == (5, 7, 7)


def test_resuming_keeps_the_rules_of_submission(make_worker, path, gate):
    _first_run(path, make_worker, tasks=3)
    w = make_worker(journal=path, queue_size=1, max_workers=1)
    live = w.add_task(Task("x", gate.wait, (WAIT,)))
    with pytest.raises(DuplicateTaskError):  # a live id refuses the batch, stored or not
        w.add_tasks([Task("t1", square, (1,)), Task("x", square, (1,))])
    assert w.get_status()["resumed_tasks"] == 0
    w.add_task(Task("q", square, (0,)))  # the queue (size 1) is full now
    with pytest.raises(QueueFullError) as err:
        w.add_tasks([Task("t1", square, (1,)), Task("new", square, (2,)), Task("t2", square, (2,))],
                    block=False)
    assert [f.result() for f in err.value.submitted] == [1, 4]  # the resumed ones were accepted
    assert [t.id for t in err.value.remaining] == ["new"]
    gate.set()
    assert live.result(WAIT)
    w.shutdown()
    with pytest.raises(WorkerShutdownError):  # a stopped worker accepts nothing, stored or not
        w.add_task(Task("t0", square, (0,)))


# ================================================================ what can fail
def test_an_unpicklable_result_fails_its_task_only(make_worker, path):
    w = make_worker(journal=path, retry_attempts=3, retry_delay=0.0)
    bad = w.add_task(Task("lock", threading.Lock))
    good = [w.add_task(Task(i, square, (i,))) for i in range(20)]
    with pytest.raises(UnstorableResultError, match=r"_thread\.lock"):
        bad.result(WAIT)
    assert w.get_task_status("lock").attempts == 1  # never retried: it would fail the same way
    assert [f.result(WAIT) for f in good] == [i * i for i in range(20)]
    assert w.health().healthy
    rows = stored(path)
    assert rows["'lock'"][0] == "failed" and "UnstorableResultError" in rows["'lock'"][1]


def test_a_failed_write_loses_no_task(make_worker, path, caplog):
    journal = Journal(path, busy_timeout=0.05)
    try:
        w = make_worker(max_workers=4, journal=journal)
        with caplog.at_level(logging.WARNING, "neon_nb"), held_write_lock(path):
            futures = [w.submit(square, i, task_id=i) for i in range(30)]
            assert [f.result(WAIT) for f in futures] == [i * i for i in range(30)]
            assert w.wait_for_completion(WAIT)
        assert "were not written to the journal" in caplog.text
        assert journal.stats().write_errors >= 1
        # The worker goes on, and the journal too once the lock is released.
        assert w.submit(square, 7, task_id="later").result(WAIT) == 49
        assert w.wait_for_completion(WAIT)
        assert set(stored(path)) == {"'later'"}
        assert w.health().healthy
        w.shutdown()
    finally:
        journal.close()


def test_a_journal_closed_under_the_worker_loses_no_task(make_worker, path, caplog, gate):
    journal = Journal(path)
    w = make_worker(max_workers=2, journal=journal)
    started = threading.Event()

    def waits(x: int) -> int:
        started.set()
        gate.wait(WAIT)
        return x

    fut = w.submit(waits, 5, task_id="w")
    assert started.wait(WAIT)
    journal.close()
    with caplog.at_level(logging.WARNING, "neon_nb"):
        gate.set()
        assert fut.result(WAIT) == 5
    assert "was not written to the journal" in caplog.text
    assert w.wait_for_completion(WAIT)
    assert_counters_add_up(w.get_status())


# ======================================================== callbacks and waiting
def test_done_callbacks_run_on_their_own_thread_and_may_wait_for_other_tasks(make_worker, path):
    w = make_worker(max_workers=2, journal=path)
    threads: list[str] = []
    results: list[int] = []
    later: concurrent.futures.Future = concurrent.futures.Future()

    def callback(fut) -> None:
        threads.append(threading.current_thread().name)
        # Waits for a task submitted after this one: its outcome must be written (by the
        # writer thread, which this callback must not be blocking).
        results.append(later.result(WAIT).result(WAIT))
        w.wait_for_completion(WAIT)

    first = w.submit(square, 2, task_id="first")
    first.add_done_callback(callback)
    later.set_result(w.submit(square, 3, task_id="later"))
    assert first.result(WAIT) == 4
    assert w.wait_for_completion(WAIT)
    w.shutdown()  # stops the callback thread once it has run what is queued
    assert threads == [f"{w.name}-callbacks"] and results == [9]


def test_wait_for_completion_inside_a_task_waits_for_the_others_durable(make_worker, path):
    w = make_worker(max_workers=2, journal=Journal(path, busy_timeout=WAIT))
    inside: list = []

    def waiter() -> str:
        inside.append(w.wait_for_completion(WAIT))
        inside.append(other.done())
        return "waited"

    with held_write_lock(path):
        other = w.submit(square, 4, task_id="other")
        assert wait_until(lambda: w.get_status()["completed_tasks"] == 1)
        fut = w.submit(waiter, task_id="waiter")
        assert not fut.done() and not other.done()
    assert fut.result(WAIT) == "waited" and inside == [True, True]
    w.shutdown()
    w.journal.close()


def test_shutdown_flushes_a_given_journal_and_keeps_it_open(make_worker, path):
    journal = Journal(path)
    try:
        w = make_worker(journal=journal)
        futures = w.map(square, range(100), id_prefix="s")
        report = w.shutdown()
        assert all(f.done() for f in futures) and report.succeeded == 100
        assert not journal.closed and journal.stats().pending == 0
        assert len(stored(path)) == 100
    finally:
        journal.close()


def test_shutdown_stays_bounded_while_the_journal_cannot_commit(make_worker, path):
    w = make_worker(max_workers=4, journal=Journal(path, busy_timeout=WAIT))
    with held_write_lock(path):
        futures = [w.submit(square, i, task_id=i) for i in range(20)]
        assert wait_until(lambda: w.get_status()["completed_tasks"] == 20)
        t0 = time.monotonic()
        report = w.shutdown(timeout=0.3)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.3 + 2.0, elapsed  # bounded by its timeout (2 shared cores: slack)
        assert report.succeeded == 20 and report.clean and not report.abandoned
        assert not any(f.done() for f in futures)  # not durable yet: not settled
    # The writer goes on in the background: every future settles once it can commit.
    assert [f.result(WAIT) for f in futures] == [i * i for i in range(20)]
    w.journal.close()
    assert len(stored(path)) == 20


# ====================================================== the lock and the lookups
class SlowLookups(Journal):
    """A journal whose lookups wait for ``release`` and are counted."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.lookups = 0

    def lookup(self, keys, *, keep_failed=None):
        self.lookups += 1
        self.entered.set()
        assert self.release.wait(WAIT)
        return super().lookup(keys, keep_failed=keep_failed)


def test_lookups_happen_outside_the_workers_lock_one_per_batch(make_worker, path):
    journal = SlowLookups(path)
    try:
        w = make_worker(journal=journal, queue_size=0)
        results: list = []
        t = threading.Thread(target=lambda: results.append(w.add_tasks(
            [Task(i, square, (i,)) for i in range(1500)])))
        t.start()
        assert journal.entered.wait(WAIT)
        # The lookup is waiting: the worker's lock must be free.
        assert w.get_status()["submitted_tasks"] == 0
        journal.release.set()
        t.join(WAIT)
        assert journal.lookups == 1  # one query for 1,500 tasks
        w.map(square, range(700))
        assert journal.lookups == 2
        assert w.wait_for_completion(WAIT)
        w.shutdown()
    finally:
        journal.release.set()
        journal.close()


# ================================================================ settings
def test_the_journal_setting_and_its_checks(tmp_path, make_worker, monkeypatch):
    path = tmp_path / "set.db"
    assert WorkerConfig(journal=str(path)).journal == str(path)
    with pytest.raises(ConfigTypeError, match="journal"):
        WorkerConfig(journal="")
    with pytest.raises(ConfigTypeError, match="journal"):
        update_config(journal=3)
    update_config(journal=path)  # a Path is taken as its str
    w = make_worker()
    assert w.config.journal == str(path) and w.journal is not None
    assert w.submit(square, 2, task_id="x").result(WAIT) == 4
    update_config(journal=None)  # later workers: none; this one keeps its journal
    assert w.config.journal == str(path)
    assert make_worker().journal is None
    assert make_worker(journal=False).config.journal is None
    with pytest.raises(ConfigError, match="journal cannot change"):
        w.configure(journal=str(tmp_path / "other.db"))
    w.configure(journal=str(path))  # the same: no change
    with pytest.raises(TypeError, match="journal must be"):
        NeonWorker(journal=3)
    with pytest.raises(TypeError, match="journal_keep_failed"):
        NeonWorker(journal=path, journal_keep_failed="yes")
    with pytest.raises(TypeError, match="journal_with_args"):
        NeonWorker(journal=path, journal_with_args=None)
    monkeypatch.setenv("NEON_JOURNAL", str(tmp_path / "env.db"))
    from neon_nb._config import config_from_env

    assert config_from_env().journal == str(tmp_path / "env.db")
    monkeypatch.setenv("NEON_JOURNAL", "")
    assert config_from_env().journal is None


def test_a_task_without_a_picklable_call_needs_an_id(make_worker, path):
    w = make_worker(journal=path)
    lock = threading.Lock()
    with pytest.raises(ValueError, match="give the task an id"):
        w.submit(id, lock)
    assert w.submit(id, lock, task_id="with-id").result(WAIT) == id(lock)
    with pytest.raises(ValueError, match="no stable repr"):
        w.add_task(Task(object(), square, (1,)))
    assert_counters_add_up(w.get_status())


# ============================================================== concurrency
def test_many_threads_resuming_and_running_at_once(make_worker, path):
    _first_run(path, make_worker, tasks=300)  # t0..t299 are done
    fn = Counted()
    w = make_worker(max_workers=8, queue_size=64, journal=path)
    futures: dict = {}
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def submitter(k: int) -> None:
        barrier.wait(WAIT)
        ids = range(k * 75, (k + 1) * 75)  # 600 ids: half of them stored
        if k % 2:
            out = w.add_tasks([Task(f"t{i}", fn, (i,)) for i in ids])
        else:
            out = [w.add_task(Task(f"t{i}", fn, (i,))) for i in ids]
        with lock:
            futures.update(zip(ids, out))

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(futures) == 600
    assert all(futures[i].result(WAIT) == i * i for i in range(600))
    assert w.wait_for_completion(WAIT)
    assert fn.calls == Counter(range(300, 600))  # each new task ran once, no stored one ran
    s = w.get_status()
    assert (s["resumed_tasks"], s["completed_tasks"], s["submitted_tasks"]) == (300, 600, 600)
    assert len(stored(path)) == 600
