"""Helpers for the widget tests (fixtures are in conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Bound for any wait on something that should happen "at once" (2 shared cores).
WAIT = 10.0


@dataclass(frozen=True)
class Message:
    msg_type: str       # comm_open, comm_msg, comm_close
    method: str | None  # update, echo_update, ... for comm_msg
    keys: tuple[str, ...]
    thread: str
    time: float
    comm_id: str


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Message] = []

    def mark(self) -> int:
        with self.lock:
            return len(self.messages)

    def since(self, mark: int) -> list[Message]:
        with self.lock:
            return self.messages[mark:]

    def updates_since(self, mark: int) -> list[Message]:
        """State updates sent to the frontend (not ipywidgets' echo of a frontend change)."""
        return [m for m in self.since(mark) if m.msg_type == "comm_msg" and m.method == "update"]



def wait_for_trait(widget: Any, name: str, predicate: Callable[[Any], bool],
                   timeout: float = WAIT) -> bool:
    """Wait until ``predicate(widget.<name>)`` holds; True if it did within ``timeout``."""
    hit = threading.Event()

    def check(change: Any = None) -> None:
        if predicate(getattr(widget, name)):
            hit.set()

    widget.observe(check, names=name)
    try:
        check()
        return hit.wait(timeout)
    finally:
        widget.unobserve(check, names=name)


def on_thread(fn: Callable[[], Any], name: str = "subshell") -> None:
    """Run ``fn`` on a new thread (like an ipykernel 7 subshell delivering a click) and join it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised on the test thread
            errors.append(exc)

    t = threading.Thread(target=target, name=name)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), f"{name} thread did not finish"
    if errors:
        raise errors[0]


def frontend_sets(widget: Any, **state: Any) -> None:
    """What a comm message from the browser does: ``set_state`` (with ipywidgets' echo)."""
    widget.set_state(state)
