"""`NeonExecutor` as a drop-in `ThreadPoolExecutor`, plus what the standard pool gets wrong."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

from neon_nb import NeonExecutor, TaskFuture

from .conftest import WAIT, wait_until


@pytest.fixture
def executor():
    ex = NeonExecutor(max_workers=2)
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


def blocked(gate: threading.Event, started: threading.Event | None = None, value=None):
    def run():
        if started is not None:
            started.set()
        gate.wait(WAIT)
        return value
    return run


def test_is_an_executor_and_returns_futures(executor):
    assert isinstance(executor, cf.Executor)
    fut = executor.submit(pow, 2, 10)
    assert isinstance(fut, cf.Future) and isinstance(fut, TaskFuture)
    assert fut.result(timeout=WAIT) == 1024


def test_submit_passes_args_kwargs_and_exceptions(executor):
    assert executor.submit(dict, a=1, fn=2).result(timeout=WAIT) == {"a": 1, "fn": 2}
    fut = executor.submit(int, "not a number")
    assert isinstance(fut.exception(timeout=WAIT), ValueError)
    with pytest.raises(ValueError):
        fut.result()


def test_a_task_id_keyword_reaches_the_function(executor):
    # ThreadPoolExecutor passes every keyword through; only `priority` is reserved here.
    def echo(*, task_id):
        return task_id

    assert executor.submit(echo, task_id="mine").result(timeout=WAIT) == "mine"


def test_no_retries_by_default(executor):
    calls = []

    def fails():
        calls.append(1)
        raise OSError("once")

    assert isinstance(executor.submit(fails).exception(timeout=WAIT), OSError)
    assert calls == [1]


def test_default_max_workers_matches_thread_pool_executor():
    ex = NeonExecutor()
    try:
        assert ex.worker.config.max_workers == min(32, (os.cpu_count() or 1) + 4)
    finally:
        ex.shutdown()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2"])
def test_bad_max_workers(bad):
    with pytest.raises(ValueError, match="max_workers"):
        NeonExecutor(bad)


def test_thread_name_prefix_and_initializer():
    seen = []
    ex = NeonExecutor(2, thread_name_prefix="pool", initializer=seen.append, initargs=("init",))
    try:
        barrier = threading.Barrier(3, timeout=WAIT)

        def name():
            barrier.wait()
            return threading.current_thread().name

        futs = [ex.submit(name) for _ in range(2)]
        barrier.wait()
        names = {f.result(timeout=WAIT) for f in futs}
        assert all(n.startswith("pool") for n in names) and len(names) == 2
        assert seen == ["init", "init"]  # once per thread
    finally:
        ex.shutdown()


def test_a_failing_initializer_breaks_the_pool():
    submitted = threading.Event()

    def boom():
        # Fail only once a task is queued (and the constructor has returned: see the report
        # on start() registering the worker after its threads run).
        submitted.wait(WAIT)
        raise RuntimeError("initializer failed")

    ex = NeonExecutor(1, initializer=boom)
    try:
        fut = ex.submit(int, 1)
        submitted.set()
        assert wait_until(lambda: fut.done())
        assert fut.cancelled()  # as ThreadPoolExecutor: queued work is cancelled...
        assert wait_until(lambda: ex.worker.state == "stopped")
        with pytest.raises(RuntimeError):  # ...and the pool accepts nothing more
            ex.submit(int, 2)
    finally:
        ex.shutdown()


def test_priority_keyword(executor):
    executor.worker.resize(1)
    executor.worker.pause()
    ran = []
    futs = [executor.submit(ran.append, p, priority=p) for p in (1, 3, 2)]
    executor.worker.resume()
    for f in futs:
        f.result(timeout=WAIT)
    assert ran == [3, 2, 1]


# ------------------------------------------------------------------------------------ map
def test_map_in_order(executor):
    assert list(executor.map(pow, [2, 3, 4], [2, 2, 2])) == [4, 9, 16]
    assert list(executor.map(str, range(10), chunksize=4)) == [str(i) for i in range(10)]
    assert list(executor.map(str, [])) == []


def test_map_raises_a_task_exception_when_iterated(executor):
    results = executor.map(int, ["1", "x", "3"])
    assert next(results) == 1
    with pytest.raises(ValueError):
        next(results)


def test_map_timeout(executor, gates):
    gate = gates()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        list(executor.map(lambda _: gate.wait(WAIT), range(3), timeout=0.1))
    assert time.monotonic() - t0 < 0.1 + 1.0
    gate.set()


def test_map_bad_chunksize(executor):
    with pytest.raises(ValueError, match="chunksize"):
        executor.map(str, [1], chunksize=0)


# ------------------------------------------------------------------------------- shutdown
def test_shutdown_wait_runs_everything():
    ex = NeonExecutor(2)
    futs = [ex.submit(pow, i, 2) for i in range(50)]
    ex.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futs] == [i * i for i in range(50)]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 1, 1)
    ex.shutdown()  # idempotent


def test_shutdown_without_waiting_returns_at_once(gates):
    gate = gates()
    ex = NeonExecutor(1)
    started = threading.Event()
    running = ex.submit(blocked(gate, started, "r"))
    queued = ex.submit(pow, 3, 2)
    started.wait(WAIT)
    t0 = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - t0 < 1.0
    assert not running.done()
    gate.set()
    # Queued work still runs after shutdown(wait=False), as with ThreadPoolExecutor.
    assert running.result(timeout=WAIT) == "r" and queued.result(timeout=WAIT) == 9
    ex.shutdown(wait=True)


def test_shutdown_cancel_futures(gates):
    gate = gates()
    ex = NeonExecutor(1)
    started = threading.Event()
    running = ex.submit(blocked(gate, started, "r"))
    started.wait(WAIT)
    queued = [ex.submit(pow, i, 2) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert running.result(timeout=WAIT) == "r"
    ex.shutdown(wait=True)


def test_context_manager():
    with NeonExecutor(2) as ex:
        futs = [ex.submit(pow, i, 3) for i in range(20)]
    assert all(f.done() for f in futs)
    assert ex.worker.state == "stopped"


def test_shutdown_from_inside_a_task_does_not_deadlock():
    ex = NeonExecutor(2)
    others = [ex.submit(pow, i, 2) for i in range(4)]
    fut = ex.submit(lambda: ex.shutdown(wait=True) or "returned")
    assert fut.result(timeout=WAIT) == "returned"
    assert [f.result(timeout=WAIT) for f in others] == [0, 1, 4, 9]
    ex.shutdown(wait=True)
    assert ex.worker.state == "stopped"


# ------------------------------------------------ python/cpython#87893: cancelled but invisible
def wait_in_thread(fn):
    """Run ``fn`` (a blocking wait) in a thread; return (thread, result box, started Event)."""
    box = {}
    started = threading.Event()

    def run():
        started.set()
        box["value"] = fn()

    t = threading.Thread(target=run)
    t.start()
    started.wait(WAIT)
    return t, box


def test_cancel_wakes_a_waiting_wait(executor, gates):
    gate = gates()
    executor.worker.resize(1)
    started = threading.Event()
    executor.submit(blocked(gate, started))
    started.wait(WAIT)
    queued = executor.submit(pow, 2, 2)
    t, box = wait_in_thread(lambda: cf.wait([queued], timeout=WAIT))
    # Whether wait() has installed its waiter yet or not, the cancel must be seen.
    assert queued.cancel()
    t.join(WAIT)
    done, not_done = box["value"]
    assert done == {queued} and not_done == set()


def test_shutdown_cancel_futures_wakes_wait_and_as_completed(gates):
    gate = gates()
    ex = NeonExecutor(1)
    try:
        started = threading.Event()
        running = ex.submit(blocked(gate, started, "r"))
        started.wait(WAIT)
        queued = [ex.submit(pow, i, 2) for i in range(5)]
        waiter, waited = wait_in_thread(lambda: cf.wait(queued, timeout=WAIT))
        completer, completed = wait_in_thread(lambda: list(cf.as_completed(queued, timeout=WAIT)))
        ex.shutdown(wait=False, cancel_futures=True)
        # Both return while the running task still blocks: the cancelled futures were seen.
        waiter.join(WAIT)
        completer.join(WAIT)
        assert not running.done()
        done, not_done = waited["value"]
        assert done == set(queued) and not_done == set()
        assert set(completed["value"]) == set(queued)
        assert all(f.cancelled() for f in queued)
    finally:
        gate.set()
        ex.shutdown(wait=True)


def test_first_completed_sees_a_cancellation(executor, gates):
    gate = gates()
    executor.worker.resize(1)
    started = threading.Event()
    executor.submit(blocked(gate, started))
    started.wait(WAIT)
    a, b = executor.submit(pow, 1, 1), executor.submit(pow, 2, 2)
    t, box = wait_in_thread(lambda: cf.wait([a, b], timeout=WAIT, return_when=cf.FIRST_COMPLETED))
    b.cancel()
    t.join(WAIT)
    assert box["value"].done == {b}


# ------------------------------------------------------------------------ references
class Payload:
    """An object to hold weakly: an argument, a callable or a result."""

    def __call__(self, arg):
        return Payload()


def test_finished_tasks_keep_no_reference_to_function_or_arguments():
    ex = NeonExecutor(2)
    try:
        fn, arg = Payload(), Payload()
        futs = [ex.submit(fn, arg) for _ in range(6)]
        for f in futs:
            f.result(timeout=WAIT)
        assert ex.worker.wait_for_completion(WAIT)
        fn_ref, arg_ref = weakref.ref(fn), weakref.ref(arg)
        del fn, arg
        gc.collect()
        assert fn_ref() is None and arg_ref() is None
    finally:
        ex.shutdown()


def test_a_result_lives_exactly_as_long_as_its_future():
    ex = NeonExecutor(1)
    try:
        ex.worker.pause()
        futs = [ex.submit(Payload(), None) for _ in range(4)]
        ex.worker.resume()
        refs = [weakref.ref(f.result(timeout=WAIT)) for f in futs]
        assert ex.worker.wait_for_completion(WAIT)
        gc.collect()
        assert all(r() is not None for r in refs)  # the futures hold them
        del futs
        gc.collect()
        assert [r() for r in refs] == [None] * 4
    finally:
        ex.shutdown()


# ------------------------------------------------------------------ interpreter exit
def run_script(tmp_path, body: str, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, check=False)


def test_queued_work_completes_at_interpreter_exit(tmp_path):
    # No shutdown() call: the main thread just ends while work is running and queued.
    out = run_script(tmp_path, """
        import os, threading
        from neon_nb import NeonExecutor
        ex = NeonExecutor(2)
        release = threading.Event()
        def task(i):
            release.wait(30)
            os.write(1, f"task {i}\\n".encode())   # one write: lines never interleave
        for i in range(20):
            ex.submit(task, i)
        release.set()
        os.write(1, b"main done\\n")
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "main done" in lines
    assert sorted(int(line.split()[1]) for line in lines if line.startswith("task")) == list(range(20))


def test_a_hanging_task_does_not_hang_interpreter_exit(tmp_path):
    # A NeonWorker's exit hook is bounded by shutdown_timeout; its threads are daemons.
    t0 = time.monotonic()
    out = run_script(tmp_path, """
        import os, threading
        from neon_nb import NeonWorker
        w = NeonWorker(2).start()
        w.submit(threading.Event().wait)          # hangs forever
        for i in range(5):
            w.submit(os.write, 1, f"task {i}\\n".encode())  # queued behind it: still run at exit
        os.write(1, b"main done\\n")
    """, NEON_SHUTDOWN_TIMEOUT="1.0")
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert sum(line.startswith("task") for line in out.stdout.splitlines()) == 5, (out.stdout, out.stderr)
    assert elapsed < 1.0 + 10.0  # the bound, plus interpreter start-up on a loaded machine
