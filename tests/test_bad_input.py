"""A table of bad calls: each raises its clear error, naming the parameter, and the worker is
still healthy afterwards (the next task runs, the counters add up, the pool is whole)."""

from __future__ import annotations

import math

import pytest

from neon_nb import (
    ConfigError,
    ConfigTypeError,
    DuplicateTaskError,
    NeonExecutor,
    NeonWorker,
    SynchronizedCounter,
    Task,
    UnknownTaskError,
    update_config,
)

from .conftest import WAIT, assert_counters_add_up


def f(*args):
    return args


# (case id, call(worker), expected exception, text the message must contain)
CASES = [
    # --- Task fields
    ("task-empty-id", lambda w: Task("", f), ValueError, "Task.id"),
    ("task-unhashable-id", lambda w: Task(["x"], f), TypeError, "Task.id"),
    ("task-not-callable", lambda w: Task("x", 42), TypeError, "Task.function"),
    ("task-args-int", lambda w: Task("x", f, args=7), TypeError, "Task.args"),
    ("task-kwargs-str", lambda w: Task("x", f, kwargs="a=1"), TypeError, "Task.kwargs"),
    ("task-priority-str", lambda w: Task("x", f, priority="high"), TypeError, "Task.priority"),
    ("task-priority-float", lambda w: Task("x", f, priority=1.5), TypeError, "Task.priority"),
    ("task-retry-attempts", lambda w: Task("x", f, retry_attempts=-1), ValueError,
     "Task.retry_attempts"),
    ("task-retry-delay", lambda w: Task("x", f, retry_delay=-1.0), ValueError, "Task.retry_delay"),
    ("task-retry-on", lambda w: Task("x", f, retry_on="ValueError"), TypeError, "Task.retry_on"),
    # --- submission
    ("add-not-a-task", lambda w: w.add_task("task"), TypeError, "task must be"),
    ("add-callable", lambda w: w.add_task(f), TypeError, "submit(fn"),
    ("add-block-str", lambda w: w.add_task(Task("x", f), block="no"), TypeError, "block"),
    ("add-timeout-negative", lambda w: w.add_task(Task("x", f), timeout=-1), ValueError, "timeout"),
    ("add-timeout-nan", lambda w: w.add_task(Task("x", f), timeout=math.nan), ValueError, "timeout"),
    ("add-timeout-str", lambda w: w.add_task(Task("x", f), timeout="1"), TypeError, "timeout"),
    ("batch-bad-item", lambda w: w.add_tasks([Task("a", f), None]), TypeError, "tasks[1]"),
    ("batch-duplicate", lambda w: w.add_tasks([Task("a", f), Task("a", f)]), DuplicateTaskError,
     "'a'"),
    ("batch-block-int", lambda w: w.add_tasks([Task("a", f)], block=0), TypeError, "block"),
    ("submit-not-callable", lambda w: w.submit("print"), TypeError, "fn must be callable"),
    ("submit-priority", lambda w: w.submit(f, priority=2.5), TypeError, "priority"),
    ("submit-task-id", lambda w: w.submit(f, task_id={}), TypeError, "Task.id"),
    ("map-priority", lambda w: w.map(f, [1, 2], priority="hi"), TypeError, "Task.priority"),
    # --- queries and control
    ("status-unknown", lambda w: w.get_task_status("nope"), UnknownTaskError, "'nope'"),
    ("status-unhashable", lambda w: w.get_task_status(["x"]), TypeError, "task_id"),
    ("cancel-unhashable", lambda w: w.cancel(["x"]), TypeError, "task_id"),
    ("wait-timeout-str", lambda w: w.wait_for_completion(timeout="soon"), TypeError, "timeout"),
    ("shutdown-timeout", lambda w: w.shutdown(timeout=-5), ValueError, "timeout"),
    ("configure-range", lambda w: w.configure(max_workers=0), ConfigError, "max_workers"),
    ("configure-unknown", lambda w: w.configure(queue_sizes=1), ConfigError, "queue_sizes"),
    ("resize-str", lambda w: w.resize("8"), ConfigTypeError, "max_workers"),
    ("configure-log-level", lambda w: w.configure(log_level="LOUD"), ConfigError, "log_level"),
    ("subscribe-on", lambda w: w.subscribe(print, on="pigeon"), ValueError, "on must be"),
    ("subscribe-callback", lambda w: w.subscribe("cb"), TypeError, "callback"),
    # --- global configuration
    ("config-range", lambda w: update_config(max_workers=-2), ConfigError, "max_workers"),
    ("config-unknown", lambda w: update_config(nope=1), ConfigError, "nope"),
    ("config-type", lambda w: update_config(retry_delay="1s"), ConfigTypeError, "retry_delay"),
    # --- construction (nothing is started, nothing leaks)
    ("worker-max-workers", lambda w: NeonWorker(max_workers=0), ConfigError, "max_workers"),
    ("worker-queue-size", lambda w: NeonWorker(queue_size=-1), ConfigError, "queue_size"),
    ("worker-unknown-setting", lambda w: NeonWorker(max_wrkers=4), TypeError, "max_wrkers"),
    ("worker-name", lambda w: NeonWorker(name=""), TypeError, "name"),
    ("worker-retry-on", lambda w: NeonWorker(retry_on=42), TypeError, "retry_on"),
    ("worker-exit-timeout", lambda w: NeonWorker(exit_timeout=-1), ValueError, "exit_timeout"),
    ("worker-backend", lambda w: NeonWorker(backend="gpu"), ValueError, "backend"),
    ("executor-max-workers", lambda w: NeonExecutor(max_workers=0), ValueError, "max_workers"),
    ("counter-amount", lambda w: SynchronizedCounter().add("1"), TypeError, "amount"),
]


def _id(case):
    return case.values[0] if hasattr(case, "values") else case[0]


def test_the_table_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize(("case", "call", "exc", "text"), CASES, ids=[_id(c) for c in CASES])
def test_bad_call_raises_a_clear_error_and_the_worker_stays_healthy(make_worker, case, call, exc,
                                                                    text):
    w = make_worker(max_workers=2, queue_size=10, name="bad")
    w.submit(f, 0).result(timeout=WAIT)
    before = w.get_status()
    with pytest.raises(exc) as info:
        call(w)
    assert text in str(info.value), f"{case}: {info.value}"

    # Healthy afterwards: nothing was queued by the bad call, the next task runs, counters add up.
    after = w.get_status()
    assert after["submitted_tasks"] == before["submitted_tasks"]
    assert after["state"] == "running"
    assert w.submit(f, 1).result(timeout=WAIT) == (1,)
    assert w.wait_for_completion(WAIT)
    status = w.get_status()
    assert_counters_add_up(status)
    assert status["completed_tasks"] == 2 and status["failed_tasks"] == 0
    report = w.check_health()
    assert report.healthy and report.alive_threads == 2
