"""Fixtures for the widget tests: in-process, no kernel, no browser.

* ``comms`` (autouse): every widget gets a `RecordingComm` (the approach of
  ipywidgets' own tests: replace ``comm.create_comm``), which records each
  message with the thread that sent it. Nothing is sent anywhere.
* ``dashboards``: a factory of `Dashboard` objects, closed at teardown; the
  test fails if a dashboard's event callback raised (the subscription logs
  and counts such errors instead of raising them).
* `wait_for_trait`: wait on a widget trait through ``observe`` and a
  `threading.Event` (no sleeping).

* ``make_worker``: started workers, shut down at teardown; ``gate``: an
  Event that tasks block on, set at teardown before the workers shut down.
  (Defined here so this directory stands alone; ``tests/conftest.py`` adds
  its leak checks.)
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .helpers import Message, Recorder

try:
    import ipywidgets  # noqa: F401
    import matplotlib  # noqa: F401
except ImportError:  # a core-only install: only the import-guard tests apply
    collect_ignore = ["test_dashboard.py", "test_batch_builder.py", "test_plots.py"]


@pytest.fixture(autouse=True)
def comms() -> Iterator[Recorder | None]:
    try:
        import comm
        from comm.base_comm import BaseComm
    except ImportError:
        yield None
        return
    rec = Recorder()

    class RecordingComm(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                        buffers: Any = None, **keys: Any) -> None:
            data = data or {}
            msg = Message(msg_type, data.get("method"), tuple(sorted(data.get("state") or ())),
                          threading.current_thread().name, time.monotonic(), self.comm_id)
            with rec.lock:
                rec.messages.append(msg)

    previous = comm.create_comm
    comm.create_comm = RecordingComm
    try:
        yield rec
    finally:
        comm.create_comm = previous


@pytest.fixture
def dashboards() -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    from neon_nb.widgets import Dashboard

    def make(worker: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            # No kernel here: the once-per-process "needs a notebook front end" warning is
            # tested on its own (test_dashboard_picture.py).
            warnings.filterwarnings("ignore", message=".*needs a notebook front end", category=RuntimeWarning)
            d = Dashboard(worker, **kwargs)
        made.append(d)
        return d

    yield make
    errors = {d.worker.name: d.subscription.errors for d in made if d.subscription is not None}
    for d in made:
        d.close()
    assert not any(errors.values()), f"dashboard callbacks raised: {errors}"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    ev = threading.Event()
    yield ev
    ev.set()


@pytest.fixture
def make_worker(gate: threading.Event) -> Iterator[Callable[..., Any]]:
    from neon_nb import NeonWorker

    made: list[Any] = []

    def make(*args: Any, **kwargs: Any) -> Any:
        w = NeonWorker(*args, **kwargs)
        made.append(w)
        return w.start()

    yield make
    gate.set()
    for w in made:
        w.shutdown(timeout=5.0, cancel_pending=True)
