"""`NeonWorker`: priority, retries, resize, live configuration, pause, cancel, status, health, shutdown.

Every wait is bounded (`WAIT`) and synchronised with Events and Barriers: a test that fails
does so quickly and with a message, never by hanging until pytest-timeout.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import neon_nb
from neon_nb import (
    DuplicateTaskError,
    EventKind,
    NeonWorker,
    QueueFullError,
    Task,
    TaskState,
    UnknownTaskError,
    WorkerShutdownError,
    update_config,
)

from .background_python import python_ignoring_sigint
from .conftest import WAIT, assert_counters_add_up, wait_until

#: Allowed lateness of a bounded call (2 shared cores; the bound itself is the worker's promise).
EPSILON = 0.5


def noop(*args, **kwargs):
    return args


def blocker(gate: threading.Event, started: threading.Event | None = None, value=None):
    """A task function that signals it started, then blocks until ``gate`` is set."""
    def run():
        if started is not None:
            started.set()
        if not gate.wait(WAIT):
            raise TimeoutError("gate never opened")
        return value
    return run


def worker_threads(w: NeonWorker) -> list[threading.Thread]:
    prefix = f"{w.name}-worker_"
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# ================================================================ lifecycle
def test_context_manager_starts_and_shuts_down():
    with NeonWorker(2, queue_size=10, enable_metrics=False) as w:
        assert w.state == "running"
        assert w.start() is w  # idempotent
        fut = w.submit(noop, 1)
        assert fut.result(timeout=WAIT) == (1,)
    assert w.state == "stopped"
    assert w.shutdown_report is not None and w.shutdown_report.clean
    with pytest.raises(WorkerShutdownError):
        w.start()


def test_missing_settings_come_from_the_current_config(make_worker):
    update_config(max_workers=3, queue_size=7, retry_attempts=1)
    w = make_worker()
    assert (w.config.max_workers, w.config.queue_size, w.config.retry_attempts) == (3, 7, 1)
    s = w.get_status()
    assert s["max_workers"] == 3 and s["queue_size"] == 7
    assert wait_until(lambda: len(worker_threads(w)) == 3)


def test_status_has_the_documented_keys(worker):
    s = worker.get_status()
    required = {"state", "max_workers", "active_workers", "queued_tasks", "running_tasks",
                "submitted_tasks", "completed_tasks", "failed_tasks", "cancelled_tasks",
                "retried_tasks", "uptime_s"}
    assert required <= set(s)
    assert s["state"] == "running" and s["max_workers"] == 2
    assert all(s[k] == 0 for k in required - {"state", "max_workers", "uptime_s"})
    assert s["uptime_s"] >= 0
    s["queued_tasks"] = 99  # a fresh dict each call: mutating it changes nothing
    assert worker.get_status()["queued_tasks"] == 0


def test_uptime_is_zero_before_start(make_worker):
    w = make_worker(max_workers=1, start=False)
    assert w.get_status()["uptime_s"] == 0.0 and w.state == "created"


def test_threads_are_named_and_log_records_carry_the_thread_name(make_worker, caplog):
    w = make_worker(max_workers=2, name="neon", retry_attempts=0)
    barrier = threading.Barrier(3, timeout=WAIT)
    names = []

    def both_at_once():
        names.append(threading.current_thread().name)
        barrier.wait()

    futs = [w.submit(both_at_once) for _ in range(2)]
    barrier.wait()
    for f in futs:
        f.result(timeout=WAIT)
    assert sorted(names) == ["neon-worker_0", "neon-worker_1"]

    def boom():
        raise ValueError("logged")

    with caplog.at_level(logging.WARNING, logger="neon_nb"):
        fut = w.submit(boom)
        fut.exception(timeout=WAIT)
        assert wait_until(lambda: any("logged" in r.getMessage() for r in caplog.records))
    rec = next(r for r in caplog.records if "logged" in r.getMessage())
    assert rec.name == "neon_nb" and rec.threadName in ("neon-worker_0", "neon-worker_1")


# ================================================================ priority
def test_priority_order_under_load(make_worker):
    """One worker thread, many producers, worker paused while they submit: the run order is
    exactly (-priority, submission sequence), i.e. higher first and FIFO among equals."""
    w = make_worker(max_workers=1, queue_size=0)
    w.pause()
    ran = []
    n_producers, per_producer = 8, 60
    start = threading.Barrier(n_producers, timeout=WAIT)
    errors = []

    def producer(i):
        rng = random.Random(i)
        try:
            start.wait()
            for j in range(per_producer):
                tid = f"p{i}-{j}"
                w.add_task(Task(tid, ran.append, (tid,), priority=rng.randint(-3, 3)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(n_producers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not errors
    total = n_producers * per_producer
    assert ran == []
    assert w.get_status()["queued_tasks"] == total

    w.resume()
    assert w.wait_for_completion(WAIT)
    infos = {info.id: info for info in w.tasks()}
    assert len(infos) == total
    expected = sorted(infos, key=lambda tid: (-infos[tid].priority, infos[tid].sequence))
    assert ran == expected
    # The sequence is the submission order of each producer.
    for i in range(n_producers):
        seqs = [infos[f"p{i}-{j}"].sequence for j in range(per_producer)]
        assert seqs == sorted(seqs)


def test_fifo_among_equal_priorities_and_negative_priorities(make_worker):
    w = make_worker(max_workers=1)
    w.pause()
    ran = []
    for i, prio in enumerate([0, -1, 0, 5, -1, 5, 0]):
        w.add_task(Task(i, ran.append, (i,), priority=prio))
    w.resume()
    assert w.wait_for_completion(WAIT)
    assert ran == [3, 5, 0, 2, 6, 1, 4]


def test_map_with_priority_function(make_worker):
    w = make_worker(max_workers=1)
    w.pause()
    ran = []
    futs = w.map(ran.append, [1, 5, 3], priority=lambda p: p)
    w.resume()
    for f in futs:
        f.result(timeout=WAIT)
    assert ran == [5, 3, 1]


# ================================================================ futures
def test_futures_results_exceptions_and_callbacks(worker):
    fut = worker.add_task(Task("ok", noop, (1, 2), {"k": 3}))
    assert fut.result(timeout=WAIT) == (1, 2)
    assert fut.task_id == "ok"

    def fail():
        raise KeyError("nope")

    bad = worker.submit(fail)
    assert isinstance(bad.exception(timeout=WAIT), KeyError)
    with pytest.raises(KeyError):
        bad.result()

    # A done callback runs after the worker released its lock: it may call the worker.
    seen = []
    done = threading.Event()

    def callback(f):
        seen.append((f.result(), worker.get_status()["completed_tasks"]))
        worker.submit(done.set)

    cb = worker.submit(noop, "x")
    cb.add_done_callback(callback)
    assert done.wait(WAIT)
    assert seen and seen[0][0] == ("x",)


def test_submit_passes_kwargs_and_generates_ids(worker):
    f1 = worker.submit(dict, a=1, b=2)
    f2 = worker.submit(noop, priority=3)
    assert f1.result(timeout=WAIT) == {"a": 1, "b": 2}
    assert f2.result(timeout=WAIT) == ()
    assert f1.task_id != f2.task_id
    assert worker.get_task_status(f2.task_id).priority == 3
    f3 = worker.submit(noop, task_id="mine")
    assert f3.task_id == "mine" and f3.result(timeout=WAIT) == ()


def test_duplicate_live_id_is_refused_and_reusable_once_finished(worker, gate):
    started = threading.Event()
    first = worker.add_task(Task("dup", blocker(gate, started, 1)))
    started.wait(WAIT)
    with pytest.raises(DuplicateTaskError, match="'dup'"):
        worker.add_task(Task("dup", noop))
    with pytest.raises(DuplicateTaskError):
        worker.submit(noop, task_id="dup")
    gate.set()
    assert first.result(timeout=WAIT) == 1
    assert worker.add_task(Task("dup", noop, (2,))).result(timeout=WAIT) == (2,)
    assert_counters_add_up(worker.get_status())
    assert worker.get_status()["submitted_tasks"] == 2


# ================================================================ bounded queue
def test_block_false_raises_at_once_when_full(make_worker):
    w = make_worker(max_workers=1, queue_size=2)
    w.pause()
    w.add_task(Task("a", noop))
    w.add_task(Task("b", noop))
    t0 = time.monotonic()
    with pytest.raises(QueueFullError) as info:
        w.add_task(Task("c", noop), block=False)
    assert time.monotonic() - t0 < EPSILON
    assert "'c'" in str(info.value) and "block=False" in str(info.value)
    assert w.get_status()["submitted_tasks"] == 2


def test_timeout_waits_then_raises(make_worker):
    w = make_worker(max_workers=1, queue_size=1)
    w.pause()
    w.add_task(Task("a", noop))
    t0 = time.monotonic()
    with pytest.raises(QueueFullError, match="timeout"):
        w.add_task(Task("b", noop), timeout=0.1)
    elapsed = time.monotonic() - t0
    assert 0.1 <= elapsed < 0.1 + EPSILON
    with pytest.raises(DuplicateTaskError):  # a failed add left nothing behind but "a"
        w.add_task(Task("a", noop))
    assert w.get_status()["queued_tasks"] == 1


def test_blocked_producer_proceeds_when_room_frees(make_worker, gate):
    w = make_worker(max_workers=1, queue_size=1)
    started = threading.Event()
    w.add_task(Task("running", blocker(gate, started)))
    started.wait(WAIT)
    w.add_task(Task("queued", noop))
    added = threading.Event()

    def producer():
        w.add_task(Task("waiting", noop), timeout=WAIT)
        added.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not added.wait(0.05)  # the queue is full: the producer waits
    gate.set()
    assert added.wait(WAIT)
    t.join(WAIT)
    assert w.wait_for_completion(WAIT)
    assert w.get_status()["completed_tasks"] == 3


# ================================================================ add_tasks
def test_add_tasks_returns_futures_in_order(worker):
    tasks = [Task(i, noop, (i,)) for i in range(50)]
    futs = worker.add_tasks(tasks)
    assert [f.task_id for f in futs] == list(range(50))
    assert [f.result(timeout=WAIT) for f in futs] == [(i,) for i in range(50)]


def test_add_tasks_validates_the_whole_batch_first(worker, gate):
    started = threading.Event()
    worker.add_task(Task("live", blocker(gate, started)))
    started.wait(WAIT)
    with pytest.raises(TypeError, match=r"tasks\[2\]"):
        worker.add_tasks([Task("a", noop), Task("b", noop), "c"])
    with pytest.raises(DuplicateTaskError, match="appears twice"):
        worker.add_tasks([Task("a", noop), Task("a", noop)])
    with pytest.raises(DuplicateTaskError, match="'live'"):
        worker.add_tasks([Task("a", noop), Task("live", noop)])
    assert worker.get_status()["submitted_tasks"] == 1  # nothing of the bad batches was queued
    assert worker.add_tasks([]) == []


def test_add_tasks_full_queue_reports_submitted_and_remaining(make_worker):
    w = make_worker(max_workers=1, queue_size=3)
    w.pause()
    tasks = [Task(f"t{i}", noop, (i,)) for i in range(5)]
    with pytest.raises(QueueFullError) as info:
        w.add_tasks(tasks, block=False)
    err = info.value
    assert [f.task_id for f in err.submitted] == ["t0", "t1", "t2"]
    assert err.remaining == tasks[3:]
    assert w.get_status()["queued_tasks"] == 3

    # With a timeout: nothing fits, after waiting.
    t0 = time.monotonic()
    with pytest.raises(QueueFullError) as info:
        w.add_tasks(tasks[3:], timeout=0.1)
    assert time.monotonic() - t0 >= 0.1
    assert info.value.submitted == [] and info.value.remaining == tasks[3:]

    # The submitted ones run normally.
    w.resume()
    assert [f.result(timeout=WAIT) for f in err.submitted] == [(0,), (1,), (2,)]
    assert w.add_tasks(err.remaining, timeout=WAIT)[1].result(timeout=WAIT) == (4,)


def test_add_tasks_blocks_until_the_whole_batch_fits(make_worker):
    w = make_worker(max_workers=1, queue_size=2)
    futs = w.add_tasks([Task(i, noop, (i,)) for i in range(6)], timeout=1.0)
    assert [f.result(timeout=WAIT) for f in futs] == [(i,) for i in range(6)]


# ================================================================ retries
class Flaky:
    """Fails ``failures`` times (with a new exception each time), then returns ``value``."""

    def __init__(self, failures: int, exc: type[BaseException] = OSError, value="ok"):
        self.failures = failures
        self.exc = exc
        self.value = value
        self.calls = 0
        self.starts: list[float] = []

    def __call__(self):
        self.calls += 1
        self.starts.append(time.monotonic())
        if self.calls <= self.failures:
            raise self.exc(f"attempt {self.calls}")
        return self.value


def collect_retry_delays(w: NeonWorker):
    delays: list[float] = []
    sub = w.subscribe(lambda batch: delays.extend(e.detail for e in batch), on="inline",
                      kinds=[EventKind.TASK_RETRY_SCHEDULED])
    return delays, sub


def test_retries_from_config_then_success(make_worker):
    w = make_worker(max_workers=1, retry_attempts=2, retry_delay=0.0)
    flaky = Flaky(2)
    fut = w.add_task(Task("f", flaky))
    assert fut.result(timeout=WAIT) == "ok"
    info = w.get_task_status("f")
    assert (info.state, info.attempts, flaky.calls) == (TaskState.SUCCEEDED, 3, 3)
    s = w.get_status()
    assert (s["retried_tasks"], s["completed_tasks"], s["failed_tasks"]) == (2, 1, 0)


def test_final_failure_keeps_the_last_exception_and_attempts(make_worker):
    w = make_worker(max_workers=1, retry_attempts=3, retry_delay=0.0)
    flaky = Flaky(100)
    fut = w.add_task(Task("f", flaky))
    exc = fut.exception(timeout=WAIT)
    assert isinstance(exc, OSError) and str(exc) == "attempt 4"
    info = w.get_task_status("f")
    assert (info.state, info.attempts, info.error) == (TaskState.FAILED, 4, "OSError: attempt 4")
    s = w.get_status()
    assert (s["retried_tasks"], s["failed_tasks"], s["completed_tasks"]) == (3, 1, 0)


def test_retry_delay_backoff_and_cap(make_worker):
    w = make_worker(max_workers=1, retry_attempts=4, retry_delay=0.01, retry_backoff=2.0,
                    retry_max_delay=0.03)
    delays, sub = collect_retry_delays(w)
    flaky = Flaky(100)
    assert isinstance(w.add_task(Task("f", flaky)).exception(timeout=WAIT), OSError)
    sub.flush()
    assert delays == pytest.approx([0.01, 0.02, 0.03, 0.03])
    # Each attempt started at least its delay after the previous one.
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:])]
    assert all(g >= d for g, d in zip(gaps, delays)), (gaps, delays)


def test_retry_jitter_spreads_delays(make_worker):
    w = make_worker(max_workers=1, retry_attempts=8, retry_delay=0.004, retry_jitter=0.5)
    delays, sub = collect_retry_delays(w)
    w.add_task(Task("f", Flaky(100))).exception(timeout=WAIT)
    sub.flush()
    assert len(delays) == 8
    assert all(0.002 <= d <= 0.006 for d in delays), delays
    assert len(set(delays)) > 1


def test_per_task_overrides(make_worker):
    w = make_worker(max_workers=1, retry_attempts=0, retry_delay=30.0)
    delays, sub = collect_retry_delays(w)
    # Retried although the worker does not retry, with the task's own (short) delay and backoff.
    t = Task("over", Flaky(2), retry_attempts=2, retry_delay=0.002, retry_backoff=3.0)
    assert w.add_task(t).result(timeout=WAIT) == "ok"
    sub.flush()
    assert delays == pytest.approx([0.002, 0.006])
    # And the reverse: the worker retries, this task does not.
    w.configure(retry_attempts=5, retry_delay=0.0)
    never = Flaky(1)
    assert isinstance(w.add_task(Task("never", never, retry_attempts=0)).exception(timeout=WAIT),
                      OSError)
    assert never.calls == 1


class Abort(BaseException):
    pass


def test_exception_filter(make_worker):
    w = make_worker(max_workers=1, retry_attempts=3, retry_delay=0.0, retry_on=(OSError,))
    value_error = Flaky(1, ValueError)
    assert isinstance(w.add_task(Task("v", value_error)).exception(timeout=WAIT), ValueError)
    assert value_error.calls == 1  # not in the worker's filter

    os_error = Flaky(2, ConnectionError)  # a subclass of OSError
    assert w.add_task(Task("o", os_error)).result(timeout=WAIT) == "ok"

    # A task's filter replaces the worker's.
    v2 = Flaky(1, ValueError)
    assert w.add_task(Task("v2", v2, retry_on=ValueError)).result(timeout=WAIT) == "ok"

    # A predicate.
    transient = Flaky(1, RuntimeError)
    pred = Task("p", transient, retry_on=lambda e: "attempt" in str(e))
    assert w.add_task(pred).result(timeout=WAIT) == "ok"


def test_a_raising_predicate_means_no_retry_and_is_logged(make_worker, caplog):
    w = make_worker(max_workers=1, retry_attempts=3, retry_delay=0.0)

    def broken_predicate(exc):
        raise RuntimeError("predicate bug")

    flaky = Flaky(1)
    with caplog.at_level(logging.ERROR, logger="neon_nb"):
        assert isinstance(w.add_task(Task("x", flaky, retry_on=broken_predicate)).exception(WAIT),
                          OSError)
    assert flaky.calls == 1
    assert any("predicate" in r.getMessage() for r in caplog.records)


def test_base_exceptions_are_recorded_not_retried_by_default(make_worker):
    w = make_worker(max_workers=1, retry_attempts=3, retry_delay=0.0)
    flaky = Flaky(5, Abort)
    assert isinstance(w.add_task(Task("a", flaky)).exception(timeout=WAIT), Abort)
    assert flaky.calls == 1
    # The thread survived: the next task runs.
    assert w.submit(noop, 1).result(timeout=WAIT) == (1,)


def test_a_task_waiting_for_its_retry_does_not_occupy_a_thread(make_worker):
    w = make_worker(max_workers=1, retry_attempts=1, retry_delay=60.0)
    scheduled = threading.Event()
    w.subscribe(lambda batch: scheduled.set(), on="inline", kinds=[EventKind.TASK_RETRY_SCHEDULED])
    slow_retry = w.add_task(Task("slow", Flaky(1)))
    assert scheduled.wait(WAIT)
    # The only thread is free: another task runs while "slow" waits 60 s for its retry.
    assert w.submit(noop, "other").result(timeout=WAIT) == ("other",)
    s = w.get_status()
    assert (s["retry_waiting_tasks"], s["running_tasks"], s["queued_tasks"]) == (1, 0, 0)
    assert w.get_task_status("slow").state is TaskState.RETRY_WAIT
    assert_counters_add_up(s)
    # ... and can be cancelled while it waits.
    assert slow_retry.cancel()
    assert slow_retry.cancelled()
    info = w.get_task_status("slow")
    assert (info.state, info.attempts) == (TaskState.CANCELLED, 1)
    assert w.wait_for_completion(WAIT)


def test_retry_settings_apply_to_later_attempts(make_worker, gates):
    update_config(retry_attempts=1, retry_delay=0.0)
    w = make_worker(max_workers=1)  # retry settings follow the global config
    second_running = threading.Event()
    go = gates()
    calls = []

    def fails():
        calls.append(1)
        if len(calls) == 2:
            second_running.set()
            go.wait(WAIT)
        raise OSError(f"attempt {len(calls)}")

    fut = w.add_task(Task("f", fails))
    assert second_running.wait(WAIT)
    # Attempt 2 would be the last; raise the limit while it runs.
    update_config(retry_attempts=3)
    go.set()
    assert str(fut.exception(timeout=WAIT)) == "attempt 4"
    assert w.get_task_status("f").attempts == 4


def test_huge_backoff_does_not_kill_the_thread(make_worker, monkeypatch):
    crashes = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    w = make_worker(max_workers=1, retry_delay=0.0, retry_max_delay=0.001)
    try:
        fut = w.add_task(Task("b", Flaky(100), retry_attempts=3, retry_backoff=1e200))
        assert isinstance(fut.exception(timeout=2), OSError)
        assert w.get_task_status("b").attempts == 4
        assert crashes == []
    finally:
        w.shutdown(timeout=0.1)


# ================================================================ resize
def test_resize_grows_and_shrinks_under_load_without_interrupting_tasks(make_worker, gate):
    w = make_worker(max_workers=2)
    all_six = threading.Barrier(7, timeout=WAIT)  # 6 tasks + this thread

    def task(i):
        all_six.wait()  # passes only when 6 tasks run at the same time
        gate.wait(WAIT)
        return i

    futs = [w.submit(task, i) for i in range(6)]
    assert w.get_status()["running_tasks"] <= 2
    w.resize(6)
    all_six.wait()  # grown: the 6 tasks are running
    s = w.get_status()
    assert (s["max_workers"], s["threads"], s["running_tasks"]) == (6, 6, 6)

    # Shrink to 1 while all six run, with more work queued behind them.
    w.resize(1)
    s = w.get_status()
    assert (s["max_workers"], s["threads"], s["running_tasks"]) == (1, 1, 6)
    concurrent = []
    now = [0]
    lock = threading.Lock()

    def queued_task(i):
        with lock:
            now[0] += 1
            concurrent.append(now[0])
        name = threading.current_thread().name
        with lock:
            now[0] -= 1
        return name

    later = [w.submit(queued_task, i) for i in range(10)]
    gate.set()
    assert [f.result(timeout=WAIT) for f in futs] == list(range(6))  # none was interrupted
    names = {f.result(timeout=WAIT) for f in later}
    assert len(names) == 1 and max(concurrent) == 1
    assert wait_until(lambda: len(worker_threads(w)) == 1)
    assert w.get_status()["completed_tasks"] == 16

    w.resize(3)
    assert wait_until(lambda: len(worker_threads(w)) == 3)


def test_shrink_then_grow_before_threads_retire(make_worker, gate):
    w = make_worker(max_workers=4)
    barrier = threading.Barrier(5, timeout=WAIT)

    def task():
        barrier.wait()
        gate.wait(WAIT)

    futs = [w.submit(task) for _ in range(4)]
    barrier.wait()
    w.resize(1)
    w.resize(3)  # undoes two pending retirements rather than starting new threads
    assert w.get_status()["threads"] == 3
    gate.set()
    for f in futs:
        f.result(timeout=WAIT)
    assert wait_until(lambda: len(worker_threads(w)) == 3)
    three = threading.Barrier(4, timeout=WAIT)
    futs = [w.submit(three.wait) for _ in range(3)]
    three.wait()
    for f in futs:
        f.result(timeout=WAIT)


def test_resize_while_paused(make_worker):
    w = make_worker(max_workers=3)
    w.pause()
    ran = []
    for i in range(5):
        w.submit(ran.append, i)
    w.resize(1)
    assert wait_until(lambda: len(worker_threads(w)) == 1)
    assert ran == [] and w.get_status()["queued_tasks"] == 5
    w.resume()
    assert w.wait_for_completion(WAIT)
    assert sorted(ran) == list(range(5))


# ================================================================ live configuration
def test_queue_size_follows_update_config(make_worker):
    update_config(queue_size=2)
    w = make_worker(max_workers=1)
    w.pause()
    w.submit(noop)
    w.submit(noop)
    with pytest.raises(QueueFullError):
        w.add_task(Task("x", noop), block=False)
    added = threading.Event()

    def producer():
        w.add_task(Task("y", noop), timeout=WAIT)
        added.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not added.wait(0.05)
    update_config(queue_size=3)  # wakes the blocked producer
    assert added.wait(WAIT)
    t.join(WAIT)
    s = w.get_status()
    assert (s["queue_size"], s["queued_tasks"]) == (3, 3)
    # Shrinking below the current fill drops nothing; new tasks wait for room.
    update_config(queue_size=1)
    with pytest.raises(QueueFullError):
        w.add_task(Task("z", noop), block=False)
    assert w.get_status()["queued_tasks"] == 3
    w.resume()
    assert w.wait_for_completion(WAIT)
    assert w.get_status()["completed_tasks"] == 3
    # Unbounded.
    update_config(queue_size=0)
    w.pause()
    w.add_tasks([Task(i, noop) for i in range(300)], block=False)
    w.resume()
    assert w.wait_for_completion(WAIT)


def test_max_workers_follows_update_config(make_worker):
    w = make_worker(queue_size=0)  # 4 threads from the default config
    assert wait_until(lambda: len(worker_threads(w)) == 4)
    update_config(max_workers=2)
    assert w.get_status()["max_workers"] == 2
    assert wait_until(lambda: len(worker_threads(w)) == 2)
    update_config(max_workers=5)
    five = threading.Barrier(6, timeout=WAIT)
    futs = [w.submit(five.wait) for _ in range(5)]
    five.wait()
    for f in futs:
        f.result(timeout=WAIT)


def test_log_level_follows_update_config_and_configure(make_worker):
    w = make_worker(max_workers=1)
    update_config(log_level="WARNING")
    assert w.config.log_level == "WARNING"
    assert logging.getLogger("neon_nb").level == logging.WARNING
    w.configure(log_level="debug")
    assert w.config.log_level == "DEBUG"
    assert logging.getLogger("neon_nb").level == logging.DEBUG


def test_pinned_settings_are_not_overridden(make_worker):
    w = make_worker(max_workers=2, retry_attempts=0, queue_size=50)
    update_config(max_workers=5, retry_attempts=4, queue_size=7, retry_delay=0.5)
    cfg = w.config
    assert (cfg.max_workers, cfg.retry_attempts, cfg.queue_size) == (2, 0, 50)
    assert cfg.retry_delay == 0.5  # not pinned: follows
    assert len(worker_threads(w)) == 2
    # configure() pins too.
    w.configure(retry_delay=0.1)
    update_config(retry_delay=2.0)
    assert w.config.retry_delay == 0.1


def test_configure_is_all_or_nothing(worker):
    before = worker.config
    with pytest.raises(neon_nb.ConfigError, match="queue_size"):
        worker.configure(retry_attempts=2, queue_size=-5)
    assert worker.config is before
    update_config(retry_attempts=3)  # retry_attempts was not pinned by the failed call...
    assert worker.config.retry_attempts == 0  # ...but the fixture pinned it


def test_concurrent_configure_loses_nothing(make_worker):
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        n = 150
        for _ in range(40):
            w = make_worker(max_workers=1, start=False)
            start = threading.Barrier(2)

            def a(w=w, start=start):
                start.wait()
                for i in range(1, n + 1):
                    w.configure(retry_attempts=i)

            def b(w=w, start=start):
                start.wait()
                for i in range(1, n + 1):
                    w.configure(history_size=i)

            ts = [threading.Thread(target=a), threading.Thread(target=b)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            # Each setting has one writer whose last write was n.
            assert (w.config.retry_attempts, w.config.history_size) == (n, n)
    finally:
        sys.setswitchinterval(old)


# ================================================================ pause / resume
def test_pause_and_resume(make_worker, gate):
    w = make_worker(max_workers=2)
    started = threading.Event()
    running = w.submit(blocker(gate, started, "done"))
    assert started.wait(WAIT)
    w.pause()
    w.pause()  # idempotent
    assert w.paused and w.state == "paused"
    ran = []
    queued = [w.submit(ran.append, i) for i in range(5)]  # submissions are still accepted
    gate.set()
    assert running.result(timeout=WAIT) == "done"  # a running task finishes while paused
    with pytest.raises(TimeoutError):
        queued[0].result(timeout=0.1)
    assert ran == []
    s = w.get_status()
    assert (s["state"], s["queued_tasks"], s["running_tasks"]) == ("paused", 5, 0)
    w.resume()
    w.resume()
    assert not w.paused and w.state == "running"
    for f in queued:
        f.result(timeout=WAIT)
    assert sorted(ran) == list(range(5))


def test_pause_before_start(make_worker):
    w = make_worker(max_workers=1, start=False)
    w.pause()
    ran = []
    w.submit(ran.append, 1)
    w.start()
    assert w.state == "paused"
    assert not wait_until(lambda: ran, timeout=0.05)
    w.resume()
    assert w.wait_for_completion(WAIT) and ran == [1]


# ================================================================ cancel
def test_cancel(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    running = w.add_task(Task("running", blocker(gate, started)))
    started.wait(WAIT)
    queued = [w.add_task(Task(f"q{i}", noop)) for i in range(3)]
    callbacks = []
    for f in queued:
        f.add_done_callback(callbacks.append)

    assert w.cancel("q0") is True
    assert queued[1].cancel() is True
    assert w.cancel("q0") is False  # already cancelled: no longer live
    assert queued[1].cancel() is True  # Future.cancel() of a cancelled future stays True
    assert w.cancel("running") is False and running.cancel() is False
    assert w.cancel("never-submitted") is False
    assert queued[0].cancelled() and queued[1].cancelled()
    assert callbacks == [queued[0], queued[1]]  # each callback exactly once
    assert w.get_task_status("q0").state is TaskState.CANCELLED
    s = w.get_status()
    assert (s["cancelled_tasks"], s["queued_tasks"], s["running_tasks"]) == (2, 1, 1)
    assert_counters_add_up(s)

    gate.set()
    running.result(timeout=WAIT)
    queued[2].result(timeout=WAIT)
    assert w.cancel("q2") is False and queued[2].cancel() is False
    assert callbacks == [queued[0], queued[1], queued[2]]


def test_cancel_pending(make_worker):
    w = make_worker(max_workers=1)
    w.pause()
    futs = [w.submit(noop) for _ in range(4)]
    assert w.cancel_pending() == 4
    assert all(f.cancelled() for f in futs)
    s = w.get_status()
    assert (s["cancelled_tasks"], s["queued_tasks"]) == (4, 0)
    w.resume()
    assert w.submit(noop, 1).result(timeout=WAIT) == (1,)


# ================================================================ task status
def test_get_task_status_through_a_lifecycle(make_worker, gate):
    w = make_worker(max_workers=1, name="st", retry_attempts=0)
    w.pause()
    started = threading.Event()
    fut = w.add_task(Task("t", blocker(gate, started, 5), priority=7))
    info = w.get_task_status("t")
    assert (info.state, info.priority, info.attempts, info.started_at, info.thread) == (
        TaskState.QUEUED, 7, 0, None, None)
    assert not info.done
    w.resume()
    started.wait(WAIT)
    info = w.get_task_status("t")
    assert (info.state, info.attempts, info.thread) == (TaskState.RUNNING, 1, "st-worker_0")
    assert info.started_at >= info.submitted_at
    gate.set()
    fut.result(timeout=WAIT)
    info = w.get_task_status("t")
    assert info.state is TaskState.SUCCEEDED and info.done and info.error is None
    assert info.run_time >= 0 and info.queue_wait >= 0

    def fail():
        raise ValueError("bad value")

    w.add_task(Task("f", fail)).exception(timeout=WAIT)
    assert w.get_task_status("f").error == "ValueError: bad value"
    assert [i.id for i in w.tasks()] == ["t", "f"]
    assert [i.id for i in w.tasks("failed")] == ["f"]
    assert [i.id for i in w.tasks(TaskState.SUCCEEDED)] == ["t"]


def test_unknown_task_is_a_key_error_naming_the_id(worker):
    with pytest.raises(UnknownTaskError) as info:
        worker.get_task_status("ghost")
    assert isinstance(info.value, KeyError)
    assert "'ghost'" in str(info.value)


def test_history_size_bounds_finished_records(make_worker):
    w = make_worker(max_workers=1, history_size=5)
    futs = w.add_tasks([Task(i, noop) for i in range(20)])
    for f in futs:
        f.result(timeout=WAIT)
    assert w.wait_for_completion(WAIT)
    for i in range(15):
        with pytest.raises(UnknownTaskError, match="history_size=5"):
            w.get_task_status(i)
    assert [w.get_task_status(i).state for i in range(15, 20)] == [TaskState.SUCCEEDED] * 5
    assert len(w.tasks()) == 5
    assert w.get_status()["completed_tasks"] == 20  # counts keep everything


def test_history_size_zero_keeps_no_record(make_worker):
    w = make_worker(max_workers=1, history_size=0)
    w.submit(noop, task_id="gone").result(timeout=WAIT)
    assert w.wait_for_completion(WAIT)
    with pytest.raises(UnknownTaskError):
        w.get_task_status("gone")


# ================================================================ health
def test_health_flags_stuck_tasks(make_worker, gate):
    w = make_worker(max_workers=1, stuck_task_threshold=1e-6, health_check_interval=1e6)
    started = threading.Event()
    fut = w.add_task(Task("stuck", blocker(gate, started)))
    started.wait(WAIT)
    report = w.check_health()
    assert "stuck" in report.stuck and report.stuck["stuck"] > 0
    assert not report.healthy
    assert "stuck" in w.health().stuck
    gate.set()
    fut.result(timeout=WAIT)
    report = w.check_health()
    assert report.healthy and report.stuck == {}
    assert (report.expected_threads, report.alive_threads, report.replaced_threads) == (1, 1, 0)


def test_health_does_not_flag_tasks_under_the_threshold(make_worker, gate):
    w = make_worker(max_workers=1, stuck_task_threshold=60.0)
    started = threading.Event()
    w.submit(blocker(gate, started))
    started.wait(WAIT)
    report = w.check_health()
    assert report.healthy and report.stuck == {} and report.state == "running"


def test_the_monitor_checks_health_periodically(make_worker):
    w = make_worker(max_workers=1, health_check_interval=0.01)
    first = w.health().checked_at
    assert wait_until(lambda: w.health().checked_at > first)


def test_a_dead_worker_thread_is_replaced(make_worker, monkeypatch, caplog):
    crashes = []
    monkeypatch.setattr(threading, "excepthook", crashes.append)
    w = make_worker(max_workers=2, start=False, health_check_interval=1e6)
    original = w._work
    crashed = threading.Event()

    def crashing_loop(name):
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("simulated crash of the worker loop")
        return original(name)

    w._work = crashing_loop
    with caplog.at_level(logging.ERROR, logger="neon_nb"):
        w.start()
        assert crashed.wait(WAIT)
        assert wait_until(lambda: crashes)
        dead = crashes[0].thread
        dead.join(WAIT)
        assert not dead.is_alive()
        report = w.check_health()
    assert report.replaced_threads == 1
    assert report.expected_threads == 2
    assert any("died" in r.getMessage() for r in caplog.records)
    # The pool is whole again: two tasks run at the same time.
    both = threading.Barrier(3, timeout=WAIT)
    futs = [w.submit(both.wait) for _ in range(2)]
    both.wait()
    for f in futs:
        f.result(timeout=WAIT)
    assert wait_until(lambda: len(worker_threads(w)) == 2)
    assert w.check_health().healthy


# ================================================================ wait_for_completion
def test_wait_for_completion(make_worker, gate):
    w = make_worker(max_workers=1, retry_attempts=1, retry_delay=0.05)
    assert w.wait_for_completion(0) is True  # nothing to wait for
    started = threading.Event()
    fut = w.submit(blocker(gate, started))
    started.wait(WAIT)
    t0 = time.monotonic()
    assert w.wait_for_completion(timeout=0.1) is False
    assert 0.1 <= time.monotonic() - t0 < 0.1 + EPSILON
    gate.set()
    assert w.wait_for_completion(timeout=WAIT) is True
    assert fut.done()
    # A task waiting for its retry counts as not complete.
    flaky = w.submit(Flaky(1))
    assert w.wait_for_completion(timeout=WAIT) is True
    assert flaky.result(timeout=0) == "ok"


def test_wait_for_completion_inside_a_task_does_not_wait_for_itself(worker):
    fut = worker.submit(lambda: worker.wait_for_completion(timeout=WAIT))
    assert fut.result(timeout=WAIT) is True


# ================================================================ shutdown
def test_shutdown_is_graceful_by_default(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    first = w.submit(blocker(gate, started, "first"))
    started.wait(WAIT)
    queued = [w.submit(noop, i) for i in range(5)]
    threading.Timer(0.05, gate.set).start()
    report = w.shutdown(timeout=WAIT)
    assert report.clean and report.cancelled == () and report.abandoned == ()
    assert report.succeeded == 6
    assert first.result(timeout=0) == "first"
    assert [f.result(timeout=0) for f in queued] == [(i,) for i in range(5)]
    assert w.state == "stopped"
    assert "clean shutdown" in str(report)


def test_shutdown_cancel_pending(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    running = w.add_task(Task("r", blocker(gate, started, 1)))
    started.wait(WAIT)
    w.add_tasks([Task(f"q{i}", noop) for i in range(3)])
    threading.Timer(0.05, gate.set).start()
    report = w.shutdown(timeout=WAIT, cancel_pending=True)
    assert report.clean
    assert sorted(report.cancelled) == ["q0", "q1", "q2"]
    assert running.result(timeout=0) == 1  # the running task was let finish


def test_shutdown_bound_with_a_hanging_task(make_worker, gate):
    w = make_worker(max_workers=1, retry_attempts=1, retry_delay=60.0)
    scheduled = threading.Event()
    w.subscribe(lambda b: scheduled.set(), on="inline", kinds=[EventKind.TASK_RETRY_SCHEDULED])
    retrying = w.add_task(Task("retrying", Flaky(1)))
    assert scheduled.wait(WAIT)
    started = threading.Event()
    hang = w.add_task(Task("hang", blocker(gate, started, "late")))
    started.wait(WAIT)
    queued = w.add_task(Task("queued", noop))
    timeout = 0.3
    t0 = time.monotonic()
    report = w.shutdown(timeout=timeout)
    elapsed = time.monotonic() - t0
    assert timeout <= elapsed < timeout + EPSILON
    assert not report.clean
    assert report.abandoned == ("hang",)
    assert sorted(report.cancelled) == ["queued", "retrying"]
    assert queued.cancelled() and retrying.cancelled() and not hang.done()
    assert w.state == "stopped"
    assert "timed out" in str(report)
    # The abandoned task still completes on its (daemon) thread.
    gate.set()
    assert hang.result(timeout=WAIT) == "late"


def test_shutdown_zero_timeout(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    w.add_task(Task("hang", blocker(gate, started)))
    started.wait(WAIT)
    t0 = time.monotonic()
    report = w.shutdown(timeout=0)
    assert time.monotonic() - t0 < EPSILON
    assert report.abandoned == ("hang",)


def test_shutdown_is_idempotent_and_concurrent_calls_share_the_report(make_worker, gate):
    w = make_worker(max_workers=2)
    started = threading.Event()
    w.submit(blocker(gate, started))
    started.wait(WAIT)
    reports = []
    go = threading.Barrier(4, timeout=WAIT)

    def call():
        go.wait()
        reports.append(w.shutdown(timeout=WAIT))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    go.wait()
    gate.set()
    for t in threads:
        t.join(WAIT)
    assert len(reports) == 3
    assert reports[0] is reports[1] is reports[2]
    assert reports[0].clean
    assert w.shutdown() is reports[0]
    assert w.shutdown(timeout=0, cancel_pending=True) is reports[0]


def test_shutdown_from_inside_a_task(make_worker):
    w = make_worker(max_workers=2)
    others = [w.submit(noop, i) for i in range(3)]
    fut = w.submit(lambda: w.shutdown(timeout=WAIT), priority=-1)  # runs after the others
    report = fut.result(timeout=WAIT)
    assert report.clean and report.abandoned == ()
    assert [f.result(timeout=0) for f in others] == [(0,), (1,), (2,)]
    # The calling task was still running: the shutdown completed after it returned, and
    # the final report counts it.
    assert not report.complete
    final = w.shutdown()
    assert final.complete and final.clean and final.succeeded == 4
    assert w.shutdown() is final
    assert w.state == "stopped"


def test_shutdown_without_waiting(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    fut = w.submit(blocker(gate, started, 3))
    started.wait(WAIT)
    assert w.shutdown(timeout=WAIT, wait=False) is None
    assert w.state == "shutting_down"
    with pytest.raises(WorkerShutdownError):
        w.submit(noop)
    gate.set()
    report = w.shutdown(timeout=WAIT)
    assert report.clean and fut.result(timeout=0) == 3


def test_shutdown_resumes_a_paused_worker_so_its_queue_drains(make_worker):
    w = make_worker(max_workers=1)
    w.pause()
    futs = [w.submit(noop, i) for i in range(4)]
    report = w.shutdown(timeout=WAIT)
    assert report.clean and report.succeeded == 4
    assert [f.result(timeout=0) for f in futs] == [(i,) for i in range(4)]


def test_pending_retries_run_during_a_graceful_shutdown(make_worker):
    w = make_worker(max_workers=1, retry_attempts=2, retry_delay=0.01)
    fut = w.submit(Flaky(2))
    report = w.shutdown(timeout=WAIT)
    assert report.clean and fut.result(timeout=0) == "ok"


@pytest.mark.parametrize("call", [
    lambda w: w.add_task(Task("late", noop)),
    lambda w: w.add_tasks([Task("late", noop)]),
    lambda w: w.submit(noop),
    lambda w: w.map(noop, [1, 2]),
])
def test_adding_after_shutdown_raises(make_worker, call):
    w = make_worker(max_workers=1)
    w.shutdown()
    with pytest.raises(WorkerShutdownError) as info:
        call(w)
    assert isinstance(info.value, RuntimeError)
    assert w.name in str(info.value) and "shut down" in str(info.value)


def test_a_producer_waiting_for_room_is_told_about_shutdown(make_worker):
    w = make_worker(max_workers=1, queue_size=1)
    w.pause()
    w.submit(noop)
    err = []
    waiting = threading.Event()

    def producer():
        waiting.set()
        try:
            w.add_task(Task("blocked", noop), timeout=WAIT)
        except WorkerShutdownError as exc:
            err.append(exc)

    t = threading.Thread(target=producer)
    t.start()
    waiting.wait(WAIT)
    w.shutdown(timeout=WAIT, cancel_pending=True)
    t.join(WAIT)
    assert not t.is_alive()
    # Either it got in before the shutdown (and was cancelled) or it was refused.
    assert err or w.get_task_status("blocked").state is TaskState.CANCELLED


def test_shutdown_validates_its_timeout_before_closing(worker):
    with pytest.raises(ValueError, match="timeout"):
        worker.shutdown(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        worker.shutdown(timeout="soon")
    assert worker.state == "running"
    assert worker.submit(noop, 1).result(timeout=WAIT) == (1,)


def test_shutdown_of_a_never_started_worker_is_immediate(make_worker):
    w = make_worker(max_workers=1, start=False)
    report = w.shutdown(timeout=1)
    assert report.clean and report.cancelled == () and w.state == "stopped"
    with pytest.raises(WorkerShutdownError):
        w.submit(noop)  # the first task does not start a worker that was shut down


def test_shutdown_with_a_huge_timeout(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    w.submit(blocker(gate, started, 1))
    started.wait(WAIT)

    def open_when_shutting_down():
        wait_until(lambda: w.state == "shutting_down")
        gate.set()

    t = threading.Thread(target=open_when_shutting_down)
    t.start()
    try:
        report = w.shutdown(timeout=1e10)  # beyond threading.TIMEOUT_MAX: must still work
    finally:
        gate.set()
        t.join(WAIT)
    assert report.clean


def test_ctrl_c_during_shutdown_does_not_leave_the_worker_half_shut_down(tmp_path):
    # In a subprocess: the interrupt is a real SIGINT delivered to the main thread. The child
    # starts with SIGINT ignored (as under `&` or nohup) and restores Python's Ctrl-C handler.
    script = tmp_path / "interrupted.py"
    script.write_text(textwrap.dedent("""
        import os, signal, threading, time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from neon_nb import NeonWorker
        w = NeonWorker(1, enable_metrics=False, shutdown_timeout=1.5).start()
        gate = threading.Event()
        started = threading.Event()
        w.submit(lambda: (started.set(), gate.wait(30)))
        started.wait()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            w.shutdown(timeout=30)
        except KeyboardInterrupt:
            print("interrupted", w.state, flush=True)
        gate.set()
        t0 = time.monotonic()
        report = w.shutdown(timeout=1.5)   # tries again: the task is done, so this is quick
        print("second", w.state, report.complete, round(time.monotonic() - t0, 1), flush=True)
    """))
    out = subprocess.run(python_ignoring_sigint(str(script)), capture_output=True, text=True,
                         timeout=60, check=False)
    assert "interrupted shutting_down" in out.stdout, out.stderr
    state, complete, secs = out.stdout.split("second ")[1].split()
    assert (state, complete) == ("stopped", "True")
    assert float(secs) < 1.0


def test_shutdown_while_a_batch_waits_reports_what_was_queued(make_worker):
    w = make_worker(max_workers=1, queue_size=2)
    w.pause()
    tasks = [Task(i, noop) for i in range(4)]
    box = {}

    def producer():
        try:
            box["futures"] = w.add_tasks(tasks, timeout=WAIT)
        except WorkerShutdownError as exc:
            box["error"] = exc

    t = threading.Thread(target=producer)
    t.start()
    assert wait_until(lambda: w.get_status()["queued_tasks"] == 2)  # the batch now waits for room
    w.shutdown(timeout=WAIT, cancel_pending=True)
    t.join(WAIT)
    err = box["error"]
    assert [f.task_id for f in err.submitted] == [0, 1]
    assert all(f.cancelled() for f in err.submitted)
    assert err.remaining == tasks[2:]


def test_lowering_history_size_live_bounds_the_history(make_worker):
    w = make_worker(max_workers=1, history_size=100)
    for f in w.add_tasks([Task(i, noop) for i in range(50)]):
        f.result(timeout=WAIT)
    assert w.wait_for_completion(WAIT)
    w.configure(history_size=5)
    for f in w.add_tasks([Task(f"n{i}", noop) for i in range(3)]):
        f.result(timeout=WAIT)
    assert w.wait_for_completion(WAIT)
    assert [i.id for i in w.tasks()] == [48, 49, "n0", "n1", "n2"]


def test_pause_during_a_graceful_shutdown_does_not_stall_it(make_worker, gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    w.submit(blocker(gate, started))
    started.wait(WAIT)
    queued = [w.submit(noop, i) for i in range(3)]
    w.shutdown(timeout=None, wait=False)
    w.pause()
    gate.set()
    try:
        report = w.shutdown(timeout=1.0)
        assert report.complete and report.clean
        assert all(f.done() and not f.cancelled() for f in queued)
    finally:
        w.resume()  # unstall it, whatever happened


def test_same_named_workers_do_not_confuse_shutdown(make_worker, gate):
    a = make_worker(max_workers=1, name="pool")
    b = make_worker(max_workers=1, name="pool")
    started = threading.Event()
    b_task = b.submit(blocker(gate, started, "b"))
    started.wait(WAIT)

    def from_a():
        finished = b.wait_for_completion(timeout=0.2)  # b's task is still blocked
        return finished, b_task.done()

    assert a.submit(from_a).result(timeout=WAIT) == (False, False)


def test_wait_for_completion_from_a_done_callback_waits_for_the_others(make_worker, gate):
    w = make_worker(max_workers=2)
    started = threading.Event()
    other = w.submit(blocker(gate, started, "other"))
    started.wait(WAIT)
    w.pause()
    quick = w.submit(noop)
    seen = {}
    called = threading.Event()

    def callback(_):  # runs on the worker thread that ran `quick`, after `quick` finished
        seen["finished"] = w.wait_for_completion(timeout=0.2)
        seen["other_done"] = other.done()
        called.set()

    quick.add_done_callback(callback)
    w.resume()
    assert called.wait(WAIT)
    assert seen == {"finished": False, "other_done": False}
