"""Clear errors: unpicklable tasks, lost workers, an unreachable scheduler; and backend choice."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import neon_nb
from neon_nb import (
    BackendUnavailableError,
    EventKind,
    NeonError,
    NeonWorker,
    Task,
    TaskPicklingError,
    TaskState,
    WorkerLostError,
)
from neon_nb.backends import DaskBackend, ProcessBackend, ThreadBackend, make_backend

from . import backend_tasks as bt

pytestmark = pytest.mark.timeout(60)

OUT_OF_PROCESS = ["processes", pytest.param("dask", marks=pytest.mark.dask)]


@pytest.fixture(params=OUT_OF_PROCESS)
def remote(request):
    if request.param == "processes":
        return ProcessBackend
    client = request.getfixturevalue("dask_client")
    return lambda: DaskBackend(client)


# ------------------------------------------------------------------ pickling
def test_unpicklable_task_fails_at_add_task_naming_it(make_worker, remote):
    w = make_worker(2, backend=remote())
    lock = threading.Lock()

    def uses_lock() -> bool:  # a closure over a lock: the function itself cannot be pickled
        return lock.locked()

    with pytest.raises(TaskPicklingError, match=r"task 'closure' .* its function cannot be pickled"):
        w.add_task(Task("closure", uses_lock))
    with pytest.raises(TaskPicklingError, match=r"task 'lock-arg' .* its args cannot be pickled") as ei:
        w.add_task(Task("lock-arg", bt.square, (lock,)))
    assert isinstance(ei.value, NeonError) and isinstance(ei.value, TypeError)
    assert "_thread.lock" in str(ei.value)
    with pytest.raises(TaskPicklingError, match=r"its kwargs cannot be pickled"):
        w.add_task(Task("gen-kwarg", bt.add, (1,), {"y": (i for i in range(3))}))
    with pytest.raises(TaskPicklingError, match=r"task 'task-\d+'"):
        w.submit(bt.square, lock)
    # A batch with one bad task queues nothing.
    with pytest.raises(TaskPicklingError, match="'b2'"):
        w.add_tasks([Task("b1", bt.square, (1,)), Task("b2", bt.square, (lock,))])
    assert w.get_status()["submitted_tasks"] == 0
    # ...and the worker is still healthy.
    assert w.submit(bt.square, 7).result(timeout=30) == 49


def test_lambdas_and_local_functions_run_out_of_process(make_worker, remote):
    # cloudpickle sends them by value (ProcessBackend uses it when installed, as Dask does).
    w = make_worker(2, backend=remote())
    offset = 10

    def local(x):
        return x + offset

    assert w.submit(lambda x: x * 3, 5).result(timeout=30) == 15
    assert w.submit(local, 1).result(timeout=30) == 11


INSTALL_CLOUDPICKLE = "pip install 'neon_nb[processes]'"


def test_plain_pickle_serializer_rejects_lambdas_at_add_task(make_worker):
    w = make_worker(1, backend=ProcessBackend(serializer="pickle"))
    with pytest.raises(TaskPicklingError, match=r"task 'lam'.*module level") as ei:
        w.add_task(Task("lam", lambda: 1))
    assert f"need cloudpickle: {INSTALL_CLOUDPICKLE})" in str(ei.value)  # the command to run
    assert w.submit(bt.square, 4).result(timeout=30) == 16


def _defined_in_main() -> str:
    return "ran"


def test_a_main_module_function_that_the_child_cannot_load_names_the_install(make_worker, monkeypatch):
    # As a function defined in a notebook: plain pickle sends it by reference to __main__, where
    # the worker process does not have it.
    import __main__

    monkeypatch.setattr(_defined_in_main, "__module__", "__main__")
    monkeypatch.setattr(_defined_in_main, "__qualname__", "neon_nb_test_function")
    monkeypatch.setattr(__main__, "neon_nb_test_function", _defined_in_main, raising=False)
    w = make_worker(1, backend=ProcessBackend(serializer="pickle"), retry_attempts=0)
    exc = w.submit(_defined_in_main).exception(timeout=30)
    assert isinstance(exc, TaskPicklingError)
    assert str(exc).startswith("the task could not be loaded in the worker process")
    assert f"travels by value with cloudpickle: {INSTALL_CLOUDPICKLE}" in str(exc)


def test_cloudpickle_serializer_without_cloudpickle_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=re.escape(f"needs cloudpickle: {INSTALL_CLOUDPICKLE}")):
        ProcessBackend(serializer="cloudpickle")


def test_result_that_cannot_be_pickled_back_fails_the_task_once(make_worker):
    # Retries on: a TaskPicklingError is never retried (another attempt cannot fix it).
    w = make_worker(1, backend=ProcessBackend(), retry_attempts=2, retry_delay=0.0)
    fut = w.add_task(Task("gen", bt.make_generator))
    with pytest.raises(TaskPicklingError, match=r"result .*generator.* cannot be pickled back"):
        fut.result(timeout=30)
    assert w.get_task_status("gen").attempts == 1


def test_result_that_cannot_be_unpickled_in_the_parent_fails_the_task_once(make_worker):
    w = make_worker(1, backend=ProcessBackend(), retry_attempts=2, retry_delay=0.0)
    fut = w.add_task(Task("unloadable", bt.return_two_arg_error))
    with pytest.raises(TaskPicklingError, match=r"result cannot be unpickled in this process "
                                                r"\(TypeError: .*missing 1 required positional"):
        fut.result(timeout=30)
    assert w.get_task_status("unloadable").attempts == 1


@pytest.mark.parametrize(("task", "type_name", "message", "why"), [
    (bt.raise_two_arg_error, "TwoArgError", "code 42: broken on purpose",
     "it cannot be unpickled in this process (TypeError"),
    (bt.raise_unpicklable_error, "UnpicklableError", "holds a generator",
     "it cannot be pickled in the worker process (TypeError"),
])
def test_exception_that_cannot_travel_becomes_one_clear_pickling_error(make_worker, task, type_name,
                                                                        message, why):
    # Before: a confusing "TypeError: __init__() missing 1 required positional argument", retried.
    w = make_worker(1, backend=ProcessBackend(), retry_attempts=2, retry_delay=0.0)
    exc = w.add_task(Task("t", task)).exception(timeout=30)
    assert type(exc) is TaskPicklingError
    text = str(exc)
    assert text.startswith(f"the task raised {type_name}: {message}; that exception cannot be sent "
                           f"back as itself: {why}")
    assert "__reduce__" in text  # the fix
    # The child's traceback, as text: where it was raised.
    assert "Traceback (most recent call last)" in text and f"in {task.__name__}" in text
    assert w.get_task_status("t").attempts == 1
    assert w.get_task_status("t").error.startswith("TaskPicklingError: the task raised")


def test_remote_traceback_is_the_cause(make_worker):
    w = make_worker(1, backend=ProcessBackend(), retry_attempts=0)
    exc = w.submit(bt.fail, "deep").exception(timeout=30)
    assert type(exc) is ValueError and "in fail" in str(exc.__cause__)


# --------------------------------------------------------------- lost workers
def test_killed_process_is_retried_even_outside_retry_on(make_worker, tmp_path):
    # retry_on lists ValueError only: a lost process is retried anyway (documented decision).
    w = make_worker(2, backend=ProcessBackend(), retry_attempts=2, retry_delay=0.0,
                    retry_on=(ValueError,))
    events = []
    w.subscribe(lambda b: events.extend(b), on="inline")
    fut = w.add_task(Task("victim", bt.suicide_once, (str(tmp_path / "marker"),)))
    assert fut.result(timeout=40) == "ok"
    info = w.get_task_status("victim")
    assert info.attempts == 2 and info.error.startswith("WorkerLostError: a worker process died")
    # Still usable after the pool broke.
    assert w.submit(bt.square, 3).result(timeout=30) == 9
    w.shutdown()
    kinds = [e.kind for e in events if e.task_id == "victim"]
    assert EventKind.TASK_RETRY_SCHEDULED in kinds and kinds[-1] is EventKind.TASK_SUCCEEDED


def test_lost_process_fails_when_retries_are_exhausted(make_worker, tmp_path):
    w = make_worker(1, backend=ProcessBackend(), retry_attempts=0)
    exc = w.add_task(Task("v", bt.suicide_once, (str(tmp_path / "m"),))).exception(timeout=40)
    assert isinstance(exc, WorkerLostError) and isinstance(exc.__cause__, Exception)


@pytest.mark.dask
def test_killed_dask_worker_is_retried_and_succeeds(make_worker, tmp_path):
    pytest.importorskip("distributed")
    # A cluster of its own: killing a worker must not disturb the module's shared cluster.
    backend = DaskBackend(n_workers=2, silence_logs=50)
    w = make_worker(2, backend=backend, retry_attempts=2, retry_delay=0.0, retry_on=(ValueError,))
    events = []
    w.subscribe(lambda b: events.extend(b), on="inline")
    marker = tmp_path / "pid"
    fut = w.add_task(Task("victim", bt.killed_once, (str(marker),)))
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = int(marker.read_text())
    assert victim != os.getpid()
    os.kill(victim, signal.SIGKILL)  # the Dask worker process running the task
    result = fut.result(timeout=40)
    assert result.startswith("ok in ") and result != f"ok in {victim}"
    info = w.get_task_status("victim")
    assert info.state is TaskState.SUCCEEDED and info.attempts == 2
    assert info.error.startswith("WorkerLostError: the Dask worker")
    w.shutdown()
    kinds = [e.kind for e in events if e.task_id == "victim"]
    assert kinds.count(EventKind.TASK_STARTED) == 2 and EventKind.TASK_RETRY_SCHEDULED in kinds
    assert backend.client is None  # the cluster it started is closed


# ------------------------------------------------------- unreachable scheduler
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.dask
def test_unreachable_scheduler_fails_fast_at_start():
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_closed_port()}"
    w = NeonWorker(2, backend=DaskBackend(address=address, connect_timeout=1.0))
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailableError) as ei:
        w.start()
    assert time.monotonic() - t0 < 5.0
    assert address in str(ei.value) and "connect_timeout=1s" in str(ei.value)
    assert isinstance(ei.value, ConnectionError) and isinstance(ei.value, NeonError)
    assert w.state == "created"
    assert w.shutdown().clean


# --------------------------------------------------------------- choosing one
def test_make_backend_specs(dask_client):
    assert isinstance(make_backend(None), ThreadBackend)
    assert isinstance(make_backend("threads"), ThreadBackend)
    assert isinstance(make_backend("processes"), ProcessBackend)
    assert isinstance(make_backend("dask"), DaskBackend)
    b = make_backend("tcp://10.1.2.3:8786")
    assert isinstance(b, DaskBackend) and b.address == "tcp://10.1.2.3:8786"
    assert make_backend(dask_client)._user_client is dask_client
    mine = ProcessBackend()
    assert make_backend(mine) is mine
    with pytest.raises(ValueError, match=r"'threads', 'processes', 'dask'.*got 'gpu'"):
        make_backend("gpu")


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"client": object()}, TypeError, "client must be a distributed.Client"),
    ({"address": ""}, TypeError, "address must be a scheduler address"),
    ({"address": "tcp://h:1", "n_workers": 2}, ValueError, "n_workers configure a LocalCluster"),
    ({"n_workers": 0}, ValueError, "n_workers must be None or an int >= 1"),
    ({"threads_per_worker": 1.5}, ValueError, "threads_per_worker must be"),
    ({"connect_timeout": 0}, ValueError, "connect_timeout must be a number of seconds > 0"),
])
def test_dask_backend_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        DaskBackend(**kwargs)


def test_dask_backend_client_and_address_exclusive(dask_client):
    with pytest.raises(ValueError, match="not both"):
        DaskBackend(dask_client, address="tcp://h:1")
    assert DaskBackend("tcp://h:1").address == "tcp://h:1"  # a string first argument is an address


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"serializer": "json"}, "serializer must be one of"),
    ({"mp_context": "teleport"}, "mp_context must be one of"),
    ({"max_tasks_per_child": 0}, "max_tasks_per_child must be None or an int >= 1"),
])
def test_process_backend_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProcessBackend(**kwargs)


def test_one_backend_serves_one_worker(make_worker):
    backend = ProcessBackend()
    make_worker(1, backend=backend)
    second = make_worker(1, backend=backend, start=False)
    with pytest.raises(ValueError, match="already serves worker"):
        second.start()


def test_process_pool_follows_resizes(make_worker, tmp_path):
    backend = ProcessBackend()
    w = make_worker(1, backend=backend)
    assert w.submit(bt.square, 2).result(timeout=30) == 4
    assert backend._current[1] == 1
    w.resize(3)
    futs = [w.add_task(Task(i, bt.wait_for_file, (str(tmp_path / "go"),))) for i in range(3)]
    deadline = time.monotonic() + 30
    while backend.processes < 3 and time.monotonic() < deadline:  # all three block at once
        time.sleep(0.01)
    assert backend._current[1] == 3 and backend.processes == 3
    (tmp_path / "go").touch()
    assert [f.result(timeout=30) for f in futs] == ["released"] * 3
    w.resize(1)
    assert w.submit(bt.square, 5).result(timeout=30) == 25
    assert backend._current[1] == 1


def test_importing_backends_does_not_import_distributed():
    code = ("import sys, neon_nb, neon_nb.backends; w = neon_nb.NeonWorker(1, backend='processes'); "
            "print('distributed' in sys.modules, 'cloudpickle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(neon_nb.__file__).parents[1], check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "False"
