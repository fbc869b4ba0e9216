"""`Task` validation, `TaskState`, `TaskInfo`, and `TaskFuture` as a `concurrent.futures.Future`."""

from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures._base as fb
import math
import sys
import threading

import pytest

from neon_nb import Task, TaskFuture, TaskInfo, TaskState


def f(*args, **kwargs):
    return args, kwargs


def test_defaults_and_fields():
    t = Task("a", f)
    assert (t.id, t.function, t.args, t.kwargs, t.priority) == ("a", f, (), None, 0)
    assert (t.retry_attempts, t.retry_delay, t.retry_backoff, t.retry_on) == (None, None, None, None)


def test_seed_keyword_spelling():
    t = Task(id="task_1", function=f, args=("data_123",), kwargs={"processing_time": 0.5}, priority=1)
    assert t.args == ("data_123",) and t.kwargs == {"processing_time": 0.5} and t.priority == 1


def test_a_list_of_args_becomes_a_tuple():
    assert Task("a", f, [1, 2]).args == (1, 2)


@pytest.mark.parametrize("tid", [0, -1, ("batch", 3), frozenset({1}), "x", b"x"])
def test_any_non_empty_hashable_id_is_accepted(tid):
    assert Task(tid, f).id == tid


@pytest.mark.parametrize(("kwargs", "exc", "field"), [
    ({"id": ""}, ValueError, "Task.id"),
    ({"id": b""}, ValueError, "Task.id"),
    ({"id": None}, ValueError, "Task.id"),
    ({"id": ["a"]}, TypeError, "Task.id"),
    ({"id": {"a": 1}}, TypeError, "Task.id"),
    ({"function": None}, TypeError, "Task.function"),
    ({"function": "print"}, TypeError, "Task.function"),
    ({"args": 5}, TypeError, "Task.args"),
    ({"args": "abc"}, TypeError, "Task.args"),
    ({"kwargs": [("a", 1)]}, TypeError, "Task.kwargs"),
    ({"priority": 1.0}, TypeError, "Task.priority"),
    ({"priority": "high"}, TypeError, "Task.priority"),
    ({"priority": None}, TypeError, "Task.priority"),
    ({"priority": True}, TypeError, "Task.priority"),
    ({"retry_attempts": -1}, ValueError, "Task.retry_attempts"),
    ({"retry_attempts": 2.0}, ValueError, "Task.retry_attempts"),
    ({"retry_delay": -0.1}, ValueError, "Task.retry_delay"),
    ({"retry_delay": math.nan}, ValueError, "Task.retry_delay"),
    ({"retry_delay": "1"}, ValueError, "Task.retry_delay"),
    ({"retry_backoff": 0.5}, ValueError, "Task.retry_backoff"),
    ({"retry_on": 42}, TypeError, "Task.retry_on"),
    ({"retry_on": (ValueError, "x")}, TypeError, "Task.retry_on"),
    ({"retry_on": int}, TypeError, "Task.retry_on"),  # a class, but not an exception type
])
def test_invalid_fields_raise_naming_the_field(kwargs, exc, field):
    args = {"id": "t1", "function": f, **kwargs}
    with pytest.raises(exc) as info:
        Task(**args)
    assert field in str(info.value)


def test_error_message_names_the_task():
    with pytest.raises(TypeError, match="'job-7'"):
        Task("job-7", f, priority="urgent")


@pytest.mark.parametrize("retry_on", [ValueError, (ValueError, KeyError), lambda e: True, BaseException])
def test_valid_exception_filters(retry_on):
    assert Task("t", f, retry_on=retry_on).retry_on is retry_on


def test_task_state():
    assert {s for s in TaskState if s.terminal} == {TaskState.SUCCEEDED, TaskState.FAILED,
                                                     TaskState.CANCELLED}
    assert str(TaskState.RETRY_WAIT) == "retry_wait"
    assert TaskState("queued") is TaskState.QUEUED
    assert TaskState.RUNNING == "running"


def test_task_info_is_frozen_and_derives_times():
    info = TaskInfo("a", TaskState.SUCCEEDED, 1, 0, 2, 10.0, 10.5, 12.0, "neon-worker_0", None)
    assert info.done
    assert info.queue_wait == 0.5
    assert info.run_time == 1.5
    with pytest.raises(AttributeError):
        info.state = TaskState.FAILED  # type: ignore[misc]
    queued = TaskInfo("b", TaskState.QUEUED, 0, 1, 0, 10.0, None, None, None, None)
    assert not queued.done and queued.queue_wait is None and queued.run_time is None


# --- TaskFuture -----------------------------------------------------------------------------

def test_future_private_fields_are_still_there():
    # TaskFuture drives these directly (to change state under the worker lock and run the
    # callbacks after releasing it). Pin them so a Python upgrade that renames them fails here.
    fut = cf.Future()
    for name in ("_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks"):
        assert hasattr(fut, name), name
    assert callable(fut._invoke_callbacks)
    assert (fb.PENDING, fb.RUNNING, fb.CANCELLED, fb.CANCELLED_AND_NOTIFIED, fb.FINISHED) == (
        "PENDING", "RUNNING", "CANCELLED", "CANCELLED_AND_NOTIFIED", "FINISHED")
    waiter = fb._AllCompletedWaiter(1, stop_on_exception=False)
    for name in ("add_result", "add_exception", "add_cancelled"):
        assert callable(getattr(waiter, name)), name


def test_unowned_task_future_behaves_as_a_future():
    fut = TaskFuture("x")
    assert isinstance(fut, cf.Future) and fut.task_id == "x"
    seen = []
    fut.add_done_callback(seen.append)
    assert fut.cancel() is True
    assert fut.cancelled() and fut.done()
    assert seen == [fut]
    with pytest.raises(cf.CancelledError):
        fut.result(timeout=0)
    assert "cancelled" in repr(fut)


def test_unowned_cancel_is_seen_by_a_waiting_wait():
    # python/cpython#87893: Future.cancel() alone does not wake wait(); TaskFuture's does.
    fut = TaskFuture("x")
    result = {}
    waiting = threading.Event()

    def waiter():
        waiting.set()
        result["done"] = cf.wait([fut], timeout=10)

    t = threading.Thread(target=waiter)
    t.start()
    waiting.wait()
    # Cancel as soon as wait() has installed its waiter (or before: both must work).
    assert fut.cancel()
    t.join(15)
    assert not t.is_alive()
    done, not_done = result["done"]
    assert done == {fut} and not not_done


def test_worker_side_transitions():
    fut = TaskFuture("y")
    seen = []
    fut.add_done_callback(seen.append)
    fut.mark_running()
    assert fut.running()
    fut.settle_result(42)
    # Callbacks run only when the worker says so (after releasing its lock).
    assert seen == []
    fut.run_callbacks()
    assert seen == [fut] and fut.result() == 42
    assert fut.settle_cancelled() is False  # finished: cannot be cancelled
    assert not fut.cancelled()

    err = TaskFuture("z")
    err.settle_exception(KeyError("k"))
    assert isinstance(err.exception(timeout=0), KeyError)

    c = TaskFuture("c")
    c.mark_running()  # e.g. a task waiting for its retry
    assert c.settle_cancelled() is True
    assert c.cancelled() and c._state == fb.CANCELLED_AND_NOTIFIED


def test_owned_future_cancel_goes_through_the_canceller():
    calls = []

    def canceller(fut):
        calls.append(fut)
        return False

    fut = TaskFuture("w", canceller)
    assert fut.cancel() is False
    assert calls == [fut]
    assert not fut.cancelled()


def test_waiters_racing_with_the_worker_are_always_woken():
    # A TaskFuture makes its condition only when someone waits: result(), wait() and
    # as_completed() racing with the worker's settle_result must all be woken.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(150):
            futs = [TaskFuture(i) for i in range(12)]
            start = threading.Barrier(4, timeout=10)
            got: dict = {}

            def settle(futs=futs, start=start):
                start.wait()
                for f in futs:
                    f.settle_result(f.task_id)

            def by_result(futs=futs, start=start, got=got):
                start.wait()
                got["result"] = [f.result(timeout=10) for f in futs]

            def by_wait(futs=futs, start=start, got=got):
                start.wait()
                got["wait"] = len(cf.wait(futs, timeout=10).done)

            def by_as_completed(futs=futs, start=start, got=got):
                start.wait()
                got["as_completed"] = sorted(f.result() for f in cf.as_completed(futs, timeout=10))

            threads = [threading.Thread(target=t) for t in (settle, by_result, by_wait,
                                                             by_as_completed)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            assert got == {"result": list(range(12)), "wait": 12,
                           "as_completed": list(range(12))}
    finally:
        sys.setswitchinterval(old)


def test_a_reader_arriving_while_the_worker_settles_is_never_left_waiting():
    # settle_result() gives a future nobody looked at the shared settled condition: a
    # reader that finds it must find the state final too, or it waits forever (result()
    # with no timeout). Readers meet the settler mid-settle at a tiny switch interval.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(60):
            futs = [TaskFuture(i) for i in range(300)]
            got: list = []

            def reader(futs=futs, got=got):
                got.extend(f.result() for f in futs)  # no timeout: a lost wake-up hangs here

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            for f in futs:
                f.mark_running()
                f.settle_result(f.task_id)
            t.join(10)
            assert not t.is_alive(), "a reader was never woken"
            assert got == list(range(300))
    finally:
        sys.setswitchinterval(old)
