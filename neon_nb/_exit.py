"""Workers in the life of the process: a hook at interpreter exit, a handler after ``os.fork()``.

A worker registers bound methods here, held weakly: ``on_exit`` while it runs (the
exit hook calls each, so that every running worker shuts down gracefully and
within its bound *before* the interpreter joins threads), and ``after_fork`` for
its whole life (in a child made by ``os.fork()``, each gets fresh locks).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["after_fork", "forget_on_exit", "instances", "on_exit", "running"]

logger = logging.getLogger("neon_nb")

_lock = threading.Lock()
_on_exit: dict[int, weakref.WeakMethod] = {}  # id(owner) -> its exit method, while it runs
_after_fork: dict[int, weakref.WeakMethod] = {}
_hook_installed = False


def on_exit(method: Callable[[], Any]) -> None:
    """Call ``method`` (a bound method) at interpreter exit, unless `forget_on_exit` comes first."""
    global _hook_installed  # noqa: PLW0603 - the process has one exit hook
    with _lock:
        _on_exit[id(method.__self__)] = weakref.WeakMethod(method)  # type: ignore[attr-defined]
        install = not _hook_installed
        _hook_installed = True
    if install:
        try:
            # Before the interpreter joins non-daemon threads (atexit would run after).
            # No public hook runs before the interpreter joins threads (atexit runs after).
            threading._register_atexit(_at_exit)  # type: ignore[attr-defined]  # noqa: SLF001
        except (AttributeError, RuntimeError):  # the interpreter is already exiting, or no hook
            import atexit

            atexit.register(_at_exit)


def forget_on_exit(owner: object) -> None:
    with _lock:
        _on_exit.pop(id(owner), None)


def running() -> list[Any]:
    """The owners whose exit method is registered (the running workers)."""
    with _lock:
        methods = list(_on_exit.values())
    return [m.__self__ for m in (ref() for ref in methods) if m is not None]


def instances() -> list[Any]:
    """Every owner registered with `after_fork` and still alive (every worker)."""
    with _lock:
        methods = list(_after_fork.values())
    return [m.__self__ for m in (ref() for ref in methods) if m is not None]


def after_fork(method: Callable[[], Any]) -> None:
    """Call ``method`` (a bound method) in a child process made by ``os.fork()``."""
    with _lock:
        _after_fork[id(method.__self__)] = weakref.WeakMethod(method)  # type: ignore[attr-defined]
        for key in [k for k, ref in _after_fork.items() if ref() is None]:
            del _after_fork[key]


def _at_exit() -> None:
    with _lock:
        methods = [ref() for ref in _on_exit.values()]
    for method in methods:
        if method is None:
            continue
        try:
            method()
        except Exception:  # last-chance cleanup: the other workers still shut down
            logger.exception("shutting down %r at interpreter exit failed", method.__self__)


def _in_child() -> None:
    # os.fork() copies one thread: a lock held by another at the fork would never be released.
    global _lock  # noqa: PLW0603 - replaced, not shared, in the child
    _lock = threading.Lock()
    _on_exit.clear()  # the parent's workers are the parent's to shut down
    for ref in list(_after_fork.values()):
        method = ref()
        if method is not None:
            method()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
