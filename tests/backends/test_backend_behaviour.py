"""The worker's behaviour is the same whichever backend executes: threads, processes or Dask.

Every test here runs three times (see ``backend`` in conftest.py). Tasks are
module-level functions of `backend_tasks`; state that crosses a process
boundary (attempt counts, release flags) is kept in files under tmp_path.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter

import pytest

from neon_nb import EventKind, QueueFullError, Task, TaskState, WorkerShutdownError

from . import backend_tasks as bt

pytestmark = pytest.mark.timeout(60)

K = EventKind
TERMINAL = {K.TASK_SUCCEEDED, K.TASK_FAILED, K.TASK_CANCELLED}


def _record(w):
    """Subscribe inline and return the list the events land in (complete after shutdown)."""
    events = []
    w.subscribe(lambda batch: events.extend(batch), on="inline")
    return events


def test_results_kwargs_and_thread_names(make_worker, backend):
    w = make_worker(2, backend=backend(), retry_attempts=0)
    events = _record(w)
    futs = [w.submit(bt.square, i) for i in range(8)]
    # Keywords named like client.submit's own (key, priority) reach the task untouched.
    kw = w.add_task(Task("kw", bt.add, (1,), {"y": 2, "key": "k", "priority": 7}))
    assert [f.result(timeout=30) for f in futs] == [i * i for i in range(8)]
    assert kw.result(timeout=30) == (3, "k", 7)
    w.shutdown()
    started = [e for e in events if e.kind is K.TASK_STARTED]
    assert len(started) == 9
    # Execution moved, thread names did not: events name the worker's own threads.
    assert {e.thread for e in started} <= {f"{w.name}-worker_0", f"{w.name}-worker_1"}


def test_the_worker_names_its_backend(make_worker, backend):
    given = backend()
    w = make_worker(1, backend=given)
    if isinstance(given, str):  # "threads": the worker makes its backend
        assert w.backend.name == given and w.backend.call is None  # runs on its own threads
    else:  # an instance is used as it is
        assert w.backend is given and w.backend.name in ("processes", "dask")


def test_priority_order(make_worker, backend):
    w = make_worker(1, backend=backend(), start=False)
    w.pause()
    w.start()
    prios = [0, 5, 1, 5, 9, 0, 3, 9, 1, 5]
    w.add_tasks([Task(f"t{i}", bt.square, (i,), priority=p) for i, p in enumerate(prios)])
    w.resume()
    assert w.wait_for_completion(timeout=30)
    infos = sorted(w.tasks(), key=lambda i: i.started_at)
    expected = sorted(range(len(prios)), key=lambda i: (-prios[i], i))  # higher first, FIFO on ties
    assert [i.id for i in infos] == [f"t{i}" for i in expected]


def test_retry_then_success(make_worker, backend, tmp_path):
    w = make_worker(2, backend=backend(), retry_attempts=3, retry_delay=0.0)
    events = _record(w)
    fut = w.add_task(Task("flaky", bt.flaky, (str(tmp_path / "count"), 2)))
    assert fut.result(timeout=30) == 3
    info = w.get_task_status("flaky")
    assert info.state is TaskState.SUCCEEDED and info.attempts == 3
    assert "attempt 2 fails on purpose" in info.error
    assert w.get_status()["retried_tasks"] == 2
    w.shutdown()
    kinds = [e.kind for e in events if e.task_id == "flaky"]
    attempt = [K.TASK_SUBMITTED, K.TASK_STARTED]
    assert kinds == [*attempt, K.TASK_RETRY_SCHEDULED] * 2 + [*attempt, K.TASK_SUCCEEDED]
    assert [e.attempt for e in events if e.task_id == "flaky" and e.kind is K.TASK_STARTED] == [1, 2, 3]


def test_final_failure_keeps_the_exception(make_worker, backend):
    w = make_worker(2, backend=backend(), retry_attempts=1, retry_delay=0.0)
    fut = w.add_task(Task("bad", bt.fail, ("no luck",)))
    exc = fut.exception(timeout=30)
    assert type(exc) is ValueError and str(exc) == "no luck"
    info = w.get_task_status("bad")
    assert info.state is TaskState.FAILED and info.attempts == 2
    assert info.error == "ValueError: no luck"
    status = w.get_status()
    assert (status["failed_tasks"], status["retried_tasks"]) == (1, 1)


def test_cancel_queued_task(make_worker, backend):
    w = make_worker(1, backend=backend(), start=False)
    w.pause()
    w.start()
    futs = w.add_tasks([Task(n, bt.square, (i,)) for i, n in enumerate("abc")])
    assert w.cancel("b") is True
    assert futs[2].cancel() is True
    w.resume()
    assert futs[0].result(timeout=30) == 0
    assert futs[1].cancelled() and futs[2].cancelled()
    assert w.cancel("a") is False  # finished: nothing to cancel
    assert w.get_task_status("b").state is TaskState.CANCELLED
    assert w.get_status()["cancelled_tasks"] == 2


def test_cancel_does_not_stop_a_running_task(make_worker, backend, tmp_path):
    w = make_worker(1, backend=backend())
    fut = w.add_task(Task("run", bt.wait_for_file, (str(tmp_path / "go"),)))
    deadline = time.monotonic() + 20
    while w.get_task_status("run").state is not TaskState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.cancel("run") is False and fut.cancel() is False
    (tmp_path / "go").touch()
    assert fut.result(timeout=30) == "released"


def test_bounded_queue(make_worker, backend):
    w = make_worker(1, 2, backend=backend(), start=False)
    w.pause()
    w.start()
    w.add_task(Task("q0", bt.square, (0,)))
    w.add_task(Task("q1", bt.square, (1,)))
    with pytest.raises(QueueFullError, match="queue is full"):
        w.add_task(Task("q2", bt.square, (2,)), block=False)
    with pytest.raises(QueueFullError, match="whole timeout"):
        w.add_task(Task("q2", bt.square, (2,)), timeout=0.05)
    w.resume()
    assert w.wait_for_completion(timeout=30)
    assert w.get_status()["completed_tasks"] == 2


def test_shutdown_drains_the_queue(make_worker, backend):
    w = make_worker(2, backend=backend())
    futs = w.add_tasks([Task(i, bt.square, (i,)) for i in range(12)])
    report = w.shutdown(timeout=30)
    assert report.clean and report.succeeded == 12 and not report.cancelled
    assert [f.result() for f in futs] == [i * i for i in range(12)]
    with pytest.raises(WorkerShutdownError):
        w.submit(bt.square, 1)
    assert w.shutdown() is report  # idempotent


def test_shutdown_cancel_pending(make_worker, backend, tmp_path):
    w = make_worker(1, backend=backend())
    first = w.add_task(Task("first", bt.nap, (0.3,)))
    rest = w.add_tasks([Task(f"r{i}", bt.square, (i,)) for i in range(3)])
    deadline = time.monotonic() + 20
    while w.get_task_status("first").state is not TaskState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    report = w.shutdown(timeout=30, cancel_pending=True)
    assert first.result() == 0.3
    assert all(f.cancelled() for f in rest)
    assert report.clean and report.succeeded == 1 and sorted(report.cancelled) == ["r0", "r1", "r2"]


def test_shutdown_is_bounded_by_a_hanging_task(make_worker, backend, tmp_path):
    w = make_worker(1, backend=backend())
    w.add_task(Task("hang", bt.wait_for_file, (str(tmp_path / "release"), 20.0)))
    w.add_task(Task("queued", bt.square, (3,)))
    deadline = time.monotonic() + 20
    while w.get_task_status("hang").state is not TaskState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    report = w.shutdown(timeout=0.5)
    elapsed = time.monotonic() - t0
    # The worker's bound, plus the backend's teardown (terminate processes, cancel on Dask).
    assert elapsed < 0.5 + 2.0, elapsed
    assert not report.clean and report.abandoned == ("hang",) and report.cancelled == ("queued",)
    assert w.state == "stopped"


def test_counters_and_events_add_up(make_worker, backend, tmp_path):
    w = make_worker(2, backend=backend(), retry_attempts=1, retry_delay=0.0, enable_metrics=True,
                    start=False)
    w.pause()
    w.start()
    events = _record(w)
    tasks = []
    for i in range(24):
        kind = i % 4
        if kind == 0:
            tasks.append(Task(i, bt.square, (i,), priority=i % 3))
        elif kind == 1:
            tasks.append(Task(i, bt.fail, (f"task {i}",), retry_attempts=0))
        elif kind == 2:
            tasks.append(Task(i, bt.flaky, (str(tmp_path / f"c{i}"), 1)))  # one retry, then success
        else:
            tasks.append(Task(i, bt.square, (i,)))  # cancelled below
    w.add_tasks(tasks)
    for i in range(3, 24, 4):
        assert w.cancel(i)
    w.resume()
    assert w.wait_for_completion(timeout=40)
    report = w.shutdown(timeout=30)
    s = w.get_status()
    outcome = (s["completed_tasks"], s["failed_tasks"], s["cancelled_tasks"], s["retried_tasks"])
    assert outcome == (12, 6, 6, 6)
    assert s["submitted_tasks"] == 24 == s["completed_tasks"] + s["failed_tasks"] + s["cancelled_tasks"]
    assert s["queued_tasks"] == s["running_tasks"] == s["retry_waiting_tasks"] == 0
    assert report.clean and report.succeeded == 12 and report.failed == 6

    # Events: in order, one terminal event per task, and as many of each kind as the counters say.
    task_events = [e for e in events if e.task_id is not None]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    counts = Counter(e.kind for e in task_events)
    assert counts[K.TASK_SUCCEEDED] == 12 and counts[K.TASK_FAILED] == 6
    assert counts[K.TASK_CANCELLED] == 6 and counts[K.TASK_RETRY_SCHEDULED] == 6
    assert counts[K.TASK_SUBMITTED] == 24 + 6  # every retry is queued again
    assert counts[K.TASK_STARTED] == 12 + 6 + 6  # successes + failures + failed first attempts
    for t in tasks:
        mine = [e.kind for e in task_events if e.task_id == t.id]
        assert mine[0] is K.TASK_SUBMITTED and mine[-1] in TERMINAL
        assert sum(k in TERMINAL for k in mine) == 1
        for a, b in itertools.pairwise(mine):
            assert (a, b) in {(K.TASK_SUBMITTED, K.TASK_STARTED), (K.TASK_SUBMITTED, K.TASK_CANCELLED),
                              (K.TASK_STARTED, K.TASK_SUCCEEDED), (K.TASK_STARTED, K.TASK_FAILED),
                              (K.TASK_STARTED, K.TASK_RETRY_SCHEDULED),
                              (K.TASK_RETRY_SCHEDULED, K.TASK_SUBMITTED)}, mine
    assert [e.kind for e in events if e.task_id is None][-1] is K.WORKER_STOPPED

    snap = w.metrics.snapshot()
    assert snap.counts["succeeded"] == 12 and snap.counts["failed"] == 6
    assert snap.counts["cancelled"] == 6
