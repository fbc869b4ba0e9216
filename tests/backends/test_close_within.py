"""`close_within`: a backend's stop keeps the shutdown's bound, and what overruns it is logged."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from neon_nb.backends._support import close_within

from ..conftest import WAIT, wait_until


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "neon_nb"]


def test_a_slow_close_returns_at_the_bound_then_finishes_in_the_background(caplog):
    caplog.set_level(logging.INFO, logger="neon_nb")
    release, finished = threading.Event(), threading.Event()

    def slow() -> None:
        release.wait(WAIT)
        finished.set()

    t0 = time.monotonic()
    assert close_within(slow, 0.2, "closing the thing") is False
    assert time.monotonic() - t0 < WAIT  # it did not wait for the close (bounded only by release)
    assert not finished.is_set()
    assert _messages(caplog) == ["closing the thing did not finish within the 0.2s left of the "
                                 "shutdown's bound; it goes on in the background (thread "
                                 "neon-backend-close)"]
    release.set()
    assert finished.wait(WAIT)
    assert wait_until(lambda: "closing the thing finished in the background" in _messages(caplog))


def test_a_close_in_time_is_silent(caplog):
    caplog.set_level(logging.INFO, logger="neon_nb")
    ran = []
    assert close_within(lambda: ran.append(threading.current_thread().name), WAIT, "closing") is True
    assert ran == ["neon-backend-close"] and _messages(caplog) == []


def test_no_bound_closes_on_the_calling_thread():
    ran = []
    assert close_within(lambda: ran.append(threading.current_thread()), None, "closing") is True
    assert ran == [threading.current_thread()]


@pytest.mark.parametrize("bound", [0.0, WAIT])
def test_a_failing_close_is_logged_with_its_traceback(caplog, bound):
    caplog.set_level(logging.INFO, logger="neon_nb")
    gate = threading.Event()

    def broken() -> None:
        gate.wait(WAIT)
        raise OSError("cannot close")

    if bound:
        gate.set()
    close_within(broken, bound, "closing the pool")
    gate.set()
    assert wait_until(lambda: "closing the pool failed" in _messages(caplog))
    failure = next(r for r in caplog.records if r.getMessage() == "closing the pool failed")
    assert failure.exc_info is not None and "cannot close" in str(failure.exc_info[1])
    assert not any("finished in the background" in m for m in _messages(caplog))
