"""Shared fixtures for the core tests.

* ``worker`` / ``make_worker``: workers that are always shut down, even when the test fails.
* ``_reset_config`` (autouse): the process-wide configuration and the ``neon_nb`` logger level
  are restored after every test, so no test sees another's ``update_config``.
* ``_no_leaked_workers`` (autouse): a test that leaves a started `NeonWorker` running fails
  (the worker is shut down first, so the leak does not spread to later tests).
* ``_every_task_accounted_for`` (autouse): after every test, every future a worker handed out
  is done or its task is still queued, running or waiting for a retry, and every worker's
  counters add up (``submitted = queued + running + retry_waiting + completed + failed +
  cancelled``): no test may lose a task, whatever it did.

Synchronisation in these tests uses `threading.Event`/`Barrier` and bounded waits; `wait_until`
is only for state that has no event to wait on (a thread exiting, the monitor's next check).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

import neon_nb
from neon_nb import _exit
from neon_nb._config import config_manager

#: Bound for any wait on something that should happen "at once" (generous: 2 shared cores).
WAIT = 10.0


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, interval: float = 0.002) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value.

    For conditions nothing signals (a thread has exited, a monitor pass has run).
    Waits on an Event, which nobody sets, rather than sleeping.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        pause.wait(interval)


def assert_counters_add_up(status: dict) -> None:
    """``submitted == queued + running + retry_waiting + completed + failed + cancelled``."""
    parts = (status["queued_tasks"] + status["running_tasks"] + status["retry_waiting_tasks"]
             + status["completed_tasks"] + status["failed_tasks"] + status["cancelled_tasks"])
    assert parts == status["submitted_tasks"], status


@pytest.fixture(autouse=True)
def _reset_config() -> Iterator[None]:
    nb_logger = logging.getLogger("neon_nb")
    level = nb_logger.level
    yield
    config_manager().reset()
    nb_logger.setLevel(level)


@pytest.fixture(autouse=True)
def _every_task_accounted_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    workers_before = set(_exit.instances())
    futures: weakref.WeakSet = weakref.WeakSet()  # every future a worker handed out

    def tracking(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                out = method(self, *args, **kwargs)
            except neon_nb.NeonError as exc:  # a batch cut short hands out what it queued
                futures.update(getattr(exc, "submitted", ()))
                raise
            futures.update(out if isinstance(out, list) else [out])
            return out
        return call

    for name in ("add_task", "submit", "add_tasks", "map"):
        monkeypatch.setattr(neon_nb.NeonWorker, name, tracking(getattr(neon_nb.NeonWorker, name)))
    yield
    monkeypatch.undo()
    lost = []
    for fut in list(futures):
        if fut.done():
            continue
        owner = getattr(fut._canceller, "__self__", None)
        try:
            # Status first: the worker changes it and the future in one critical section.
            state = owner.get_task_status(fut.task_id).state if owner is not None else None
        except neon_nb.UnknownTaskError:
            state = None
        if not fut.done() and (state is None or state.terminal):
            lost.append((fut, state))
    assert not lost, f"futures neither done nor owned by a live task: {lost[:5]}"
    for w in _exit.instances():
        if w not in workers_before:
            assert_counters_add_up(w.get_status())


@pytest.fixture(autouse=True)
def _no_leaked_workers(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(_exit.running())
    yield
    leaked = [w for w in _exit.running() if w not in before]
    for w in leaked:
        w.shutdown(timeout=2.0, cancel_pending=True)
    if leaked:
        pytest.fail(f"{request.node.nodeid} left {len(leaked)} NeonWorker(s) running: "
                    f"{[w.name for w in leaked]}", pytrace=False)


class Gates:
    """Events that tasks block on. Calling it makes a new one; all are set at teardown,
    before any worker is shut down, so no task is left hanging whatever the test did."""

    def __init__(self) -> None:
        self.events: list[threading.Event] = []

    def __call__(self) -> threading.Event:
        ev = threading.Event()
        self.events.append(ev)
        return ev

    def open_all(self) -> None:
        for ev in self.events:
            ev.set()


@pytest.fixture
def gates() -> Iterator[Gates]:
    g = Gates()
    yield g
    g.open_all()


@pytest.fixture
def gate(gates: Gates) -> threading.Event:
    """One Event that tasks block on (set at teardown)."""
    return gates()


@pytest.fixture
def make_worker(gates: Gates) -> Iterator[Callable[..., neon_nb.NeonWorker]]:
    """A factory of started workers; every one is shut down after the test (pending work cancelled)."""
    made: list[neon_nb.NeonWorker] = []

    def make(*args, start: bool = True, **kwargs) -> neon_nb.NeonWorker:
        w = neon_nb.NeonWorker(*args, **kwargs)
        made.append(w)
        return w.start() if start else w

    yield make
    gates.open_all()
    for w in made:
        w.shutdown(timeout=5.0, cancel_pending=True)


@pytest.fixture
def worker(make_worker) -> neon_nb.NeonWorker:
    """A started worker with 2 threads, retries off, and an unbounded queue."""
    return make_worker(max_workers=2, queue_size=0, retry_attempts=0)
