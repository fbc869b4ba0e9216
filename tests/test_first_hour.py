"""A new user's first hour: nothing hangs or fails silently, every message is clear.

Each test pins one trap a newcomer fell into: a forgotten ``start()``, a failure that left
no trace in a script, counts that disagreed, threads left behind, a notebook cell tied up
by a large batch, help text that did not help, and a bare error message.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import logging
import subprocess
import sys
import textwrap
import threading

import pytest

from neon_nb import (
    MetricsSnapshot,
    NeonExecutor,
    NeonWorker,
    Task,
    TaskState,
    WorkerConfig,
    get_config,
)

from .conftest import WAIT, assert_counters_add_up, wait_until


def threads_named(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


# ============================================================ a forgotten start()
@pytest.mark.parametrize("how", ["submit", "add_task", "add_tasks", "map"])
def test_the_first_task_starts_a_worker_that_was_not_started(how):
    w = NeonWorker(max_workers=2, name=f"lazy-{how}")
    try:
        assert w.state == "created"
        if how == "submit":
            futs = [w.submit(sum, [1, 2])]
        elif how == "add_task":
            futs = [w.add_task(Task("t", sum, ([1, 2],)))]
        elif how == "add_tasks":
            futs = w.add_tasks([Task("t", sum, ([1, 2],))])
        else:
            futs = w.map(sum, [[1, 2]])
        assert [f.result(timeout=WAIT) for f in futs] == [3]
        assert w.state == "running"
        assert w.start() is w  # still idempotent
    finally:
        w.shutdown(timeout=WAIT)


def test_a_worker_paused_before_its_first_task_queues_it():
    w = NeonWorker(max_workers=1, name="lazy-paused")
    try:
        w.pause()
        fut = w.submit(int, "5")
        assert w.state == "paused" and w.get_status()["queued_tasks"] == 1
        w.resume()
        assert fut.result(timeout=WAIT) == 5
    finally:
        w.shutdown(timeout=WAIT)


# ============================================================ failures leave a trace
def test_a_final_failure_is_visible_in_a_script_without_logging_configured():
    # The original API's basic-usage example, which forgets `import time`.
    script = textwrap.dedent("""
        from neon_nb import NeonWorker, Task

        worker = NeonWorker(max_workers=4, queue_size=100, retry_delay=0.01)
        worker.start()

        def process_data(data_id, processing_time=1.0):
            time.sleep(processing_time)
            return f"Processed {data_id}"

        worker.add_task(Task(id="task_1", function=process_data, args=("data_123",),
                             kwargs={"processing_time": 0.5}, priority=1))
        worker.wait_for_completion()
        print(f"Completed: {worker.get_status()['completed_tasks']}")
        print(worker.shutdown(timeout=30.0))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "Completed: 0" in out.stdout
    assert "task 'task_1' failed after 4 attempt(s): NameError: name 'time' is not defined" \
        in out.stderr
    # The report's text names the failure too.
    assert "NameError" in out.stdout and "task_1" in out.stdout


def test_the_log_level_setting_is_the_loggers_level():
    nb = logging.getLogger("neon_nb")
    assert logging.getLevelName(nb.getEffectiveLevel()) == get_config().log_level
    assert not any(isinstance(h, logging.NullHandler) for h in nb.handlers)


def test_many_final_failures_are_logged_in_full_only_up_to_a_bound(make_worker, caplog):
    w = make_worker(max_workers=2, retry_attempts=0)

    def boom(i):
        raise ValueError(f"bad {i}")

    with caplog.at_level(logging.DEBUG, logger="neon_nb"):
        futs = w.map(boom, range(40))
        for f in futs:
            f.exception(timeout=WAIT)
        # Logged just after each future resolves, on the worker threads: wait for the last.
        assert wait_until(lambda: sum("failed after" in r.getMessage()
                                      for r in caplog.records) == 40)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    full = [r for r in warnings if "failed after" in r.getMessage()]
    assert len(full) == 10
    assert any("further task failures" in r.getMessage() for r in warnings)
    assert sum("failed after" in r.getMessage() for r in caplog.records) == 40  # the rest at DEBUG


def test_the_shutdown_report_lists_failures_with_their_errors(make_worker):
    w = make_worker(max_workers=2, retry_attempts=0)

    def boom():
        raise KeyError("missing")

    w.submit(boom, task_id="k").exception(timeout=WAIT)
    report = w.shutdown(timeout=WAIT)
    assert report.failures == (("k", "KeyError: 'missing'"),)
    assert "KeyError: 'missing'" in str(report)


# ============================================================ counts that agree
def test_the_shutdown_report_counts_every_cancellation_and_says_which_were_its_own(make_worker,
                                                                                   gate):
    w = make_worker(max_workers=1)
    started = threading.Event()
    w.submit(lambda: (started.set(), gate.wait(WAIT)))
    assert started.wait(WAIT)
    early = [w.submit(int) for _ in range(3)]
    for f in early:
        assert f.cancel()
    late = [w.submit(int) for _ in range(2)]
    report = w.shutdown(timeout=0.2, cancel_pending=True)
    gate.set()
    assert report.cancelled_total == 5 and len(report.cancelled) == 2
    assert {f.task_id for f in late} == set(report.cancelled)
    assert "5 cancelled (2 by the shutdown)" in str(report)


# ============================================================ no thread left behind
def test_shutdown_with_wait_leaves_no_thread_behind():
    w = NeonWorker(max_workers=3, name="tidy").start()
    w.submit(int).result(timeout=WAIT)
    w.shutdown(timeout=WAIT)
    assert threads_named("tidy-") == []


def test_leaving_an_executor_block_leaves_no_thread_behind():
    with NeonExecutor(max_workers=3, thread_name_prefix="tidyex") as ex:
        assert ex.submit(pow, 2, 5).result(timeout=WAIT) == 32
    assert threads_named("tidyex") == []


def test_a_dropped_executor_finishes_its_work_and_its_threads_exit():
    ran = threading.Event()
    ex = NeonExecutor(max_workers=2, thread_name_prefix="dropped")
    ex.submit(ran.set)
    del ex
    gc.collect()
    assert ran.wait(WAIT)
    assert wait_until(lambda: threads_named("dropped") == [])


# ============================================================ a cell is not tied up
def test_a_background_batch_returns_at_once_and_runs_everything(make_worker, gate):
    w = make_worker(max_workers=2, queue_size=10)
    started = threading.Barrier(3, timeout=WAIT)
    for _ in range(2):
        w.submit(lambda: (started.wait(), gate.wait(WAIT)))
    started.wait()
    futs = w.add_tasks([Task(i, pow, (i, 2)) for i in range(1000)], background=True)
    assert len(futs) == 1000  # returned while the queue is full and nothing can run
    st = w.get_status()
    assert st["queued_tasks"] == 10 and st["backlog_tasks"] == 990
    assert_counters_add_up(st)
    gate.set()
    assert [f.result(timeout=WAIT) for f in futs] == [i * i for i in range(1000)]
    assert w.wait_for_completion(WAIT)
    st = w.get_status()
    assert st["backlog_tasks"] == 0 and st["completed_tasks"] == 1002


def test_a_background_task_can_be_cancelled_before_it_enters_the_queue(make_worker, gate):
    w = make_worker(max_workers=1, queue_size=2)
    started = threading.Event()
    w.submit(lambda: (started.set(), gate.wait(WAIT)))
    assert started.wait(WAIT)
    futs = w.add_tasks([Task(f"b{i}", int, ("1",)) for i in range(10)], background=True)
    assert futs[-1].cancel() and futs[-1].cancelled()
    assert w.get_task_status("b9").state is TaskState.CANCELLED
    gate.set()
    assert [f.result(timeout=WAIT) for f in futs[:-1]] == [1] * 9
    assert w.wait_for_completion(WAIT)
    st = w.get_status()
    assert st["cancelled_tasks"] == 1 and st["submitted_tasks"] == 11
    assert_counters_add_up(st)


def test_a_shutdown_cancels_the_backlog_and_reports_it(make_worker, gate):
    w = make_worker(max_workers=1, queue_size=3)
    started = threading.Event()
    w.submit(lambda: (started.set(), gate.wait(WAIT)))
    assert started.wait(WAIT)
    futs = w.add_tasks([Task(f"s{i}", int, ("2",)) for i in range(20)], background=True)
    report = w.shutdown(timeout=0.1, cancel_pending=True)
    gate.set()
    assert all(f.cancelled() for f in futs)
    assert set(report.cancelled) == {f"s{i}" for i in range(20)}
    assert w.get_status()["backlog_tasks"] == 0
    assert_counters_add_up(w.get_status())


def test_background_batches_from_many_threads_lose_nothing(make_worker):
    w = make_worker(max_workers=4, queue_size=16)
    barrier = threading.Barrier(6, timeout=WAIT)
    results: list = []
    lock = threading.Lock()

    def producer(p):
        barrier.wait()
        futs = w.add_tasks([Task((p, i), pow, (i, 2)) for i in range(300)], background=True)
        with lock:
            results.extend(futs)

    ts = [threading.Thread(target=producer, args=(p,)) for p in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(WAIT)
    assert len(results) == 1800
    assert sorted(f.result(timeout=WAIT) for f in results) == sorted([i * i for i in range(300)] * 6)
    assert w.wait_for_completion(WAIT)
    assert w.get_status()["completed_tasks"] == 1800


# ============================================================ help that helps
def test_the_worker_signature_names_every_setting():
    params = inspect.signature(NeonWorker).parameters
    for f in dataclasses.fields(WorkerConfig):
        assert f.name in params, f.name
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert "'config'" not in str(inspect.signature(NeonWorker))


def test_the_worker_docstring_shows_an_example_and_says_how_it_starts():
    doc = inspect.getdoc(NeonWorker)
    assert ">>>" in doc or "```" in doc or "::" in doc
    assert "start()" in doc and "first task" in doc


def test_every_setting_is_described_where_help_shows_it():
    doc = inspect.getdoc(WorkerConfig)
    for f in dataclasses.fields(WorkerConfig):
        assert f"``{f.name}``" in doc, f.name
    assert "seed" not in doc


def test_small_docstrings_say_what_they_mean():
    assert "task-" in inspect.getdoc(NeonWorker.submit)
    assert "seconds" in inspect.getdoc(MetricsSnapshot.to_dataframe)
    assert inspect.getdoc(NeonWorker.paused) and inspect.getdoc(NeonWorker.state)


# ============================================================ messages
def test_map_over_a_number_names_the_parameter(make_worker):
    w = make_worker(max_workers=1)
    with pytest.raises(TypeError, match=r"params must be an iterable.*got int 5"):
        w.map(abs, 5)
