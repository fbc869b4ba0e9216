"""Opt-in signal handling for scripts: SIGINT/SIGTERM shut workers down gracefully, then chain.

Never installed automatically. Refused inside a Jupyter kernel, where the
interrupt button must keep raising KeyboardInterrupt in the running cell.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from types import FrameType
from typing import Any

from ._config import FROM_CONFIG
from ._worker import NeonWorker

__all__ = ["SignalHandlers", "install_signal_handlers"]

logger = logging.getLogger("neon_nb")

#: Slice of the handler's wait for the shutdown (see _graceful_shutdown).
_SLICE = 0.05
def _inside_neon(frame: FrameType | None) -> bool:
    """Was the main thread interrupted inside code that may hold a worker's (or the config's) lock?

    Each neon_nb module whose code takes those locks says so with a module-level
    marker, ``NEON_HOLDS_WORKER_LOCKS = True``; the interrupted frame's callers
    are looked up for it.
    """
    while frame is not None:
        if frame.f_globals.get("NEON_HOLDS_WORKER_LOCKS") is True:
            return True
        frame = frame.f_back
    return False


def _in_jupyter_kernel() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        ip = get_ipython()
    except Exception:  # pragma: no cover
        return False
    return ip is not None and getattr(ip, "kernel", None) is not None


class SignalHandlers:
    """Installed handlers; `uninstall()` restores the previous ones (also a context manager)."""

    def __init__(self, workers: list[NeonWorker], signals: tuple[int, ...], timeout: float | None) -> None:
        self.workers = workers
        self.timeout = timeout
        self.previous: dict[int, Any] = {}
        self.received: list[int] = []
        for sig in signals:
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = signum not in self.received
        self.received.append(signum)
        if first:
            logger.warning("signal %s: shutting down %d worker(s) gracefully",
                           signal.Signals(signum).name, len(self.workers))
            self._graceful_shutdown(frame)
        # A second signal of the same kind skips the wait: chain at once (raised from inside
        # the first handler's wait, it unwinds that too; the helper thread goes on).
        self._chain(signum, frame)

    def _graceful_shutdown(self, frame: FrameType | None) -> None:
        # This handler runs in the main thread between two bytecodes, possibly while that
        # thread holds a lock the shutdown needs: the worker's own (non-reentrant) lock in
        # the middle of add_tasks(), the config manager's in update_config(). Calling
        # shutdown() right here would then wait for ourselves forever. So:
        # 1. the shutdown runs in a helper thread, and this handler waits for it within
        #    the shutdown bound: a lock held by the interrupted code delays us, never hangs;
        # 2. if the interrupted code is inside neon_nb (the frame the handler receives
        #    says so, whatever the machine's load), it may hold such a lock: chain at
        #    once and let the helper finish once that code lets go (after a
        #    KeyboardInterrupt unwinds it, or in the interpreter's exit hook).
        helper = threading.Thread(target=self._shutdown_all, name="neon-signal-shutdown", daemon=True)
        helper.start()
        if _inside_neon(frame):
            logger.warning("signal arrived while the main thread was inside neon_nb: the shutdown "
                           "goes on in the background")
            return
        # Wait in short slices: the kernel may deliver a second signal to any thread, and
        # the main thread only runs its Python handler between two bytecodes, never inside
        # one long join(). Sliced, a second Ctrl-C is honoured within _SLICE seconds.
        deadline = time.monotonic() + self._bound()
        while helper.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("graceful shutdown still running after %.1fs; chaining to the "
                               "previous handler", self._bound())
                break
            helper.join(min(left, _SLICE))

    def _shutdown_all(self) -> None:
        for w in self.workers:
            try:
                w.shutdown(timeout=self.timeout if self.timeout is not None else FROM_CONFIG)
            except Exception:  # pragma: no cover
                logger.exception("graceful shutdown of %r failed", w)

    def _bound(self) -> float:
        """How long the handler waits for the helper: every worker's shutdown bound, plus a margin."""
        total = 0.0
        for w in self.workers:
            total += self.timeout if self.timeout is not None else w.config.shutdown_timeout
        return total + 1.0

    def _chain(self, signum: int, frame: FrameType | None) -> None:
        prev = self.previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        # SIG_IGN (or None: installed from C): nothing more to do.

    def uninstall(self) -> None:
        """Restore the previous handlers (main thread only)."""
        for sig, prev in self.previous.items():
            if signal.getsignal(sig) == self._handle:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)

    def __enter__(self) -> SignalHandlers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def install_signal_handlers(workers: NeonWorker | Iterable[NeonWorker], *,
                            signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM),
                            timeout: float | None = None) -> SignalHandlers:
    """For scripts: on SIGINT/SIGTERM, shut ``workers`` down (bounded by ``timeout``, default
    each worker's ``shutdown_timeout``), then call the previous handler (so Ctrl-C still raises
    KeyboardInterrupt and SIGTERM still terminates).

    The shutdown runs in a helper thread that the handler waits for (within the shutdown
    bound): if the signal interrupts the main thread while it is inside a worker call
    (holding the worker's lock), the handler chains at once and the shutdown completes once
    that call is unwound, at the latest in the interpreter's exit hook. It never deadlocks.

    Must be called from the main thread. Raises RuntimeError inside a Jupyter
    kernel: there, use the dashboard's Shut down button or ``worker.shutdown()``.
    """
    if _in_jupyter_kernel():
        raise RuntimeError("install_signal_handlers() is for scripts: inside a Jupyter kernel it would "
                           "take over the interrupt button. Call worker.shutdown() instead.")
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers() must be called from the main thread")
    ws = [workers] if isinstance(workers, NeonWorker) else list(workers)
    for i, w in enumerate(ws):
        if not isinstance(w, NeonWorker):
            raise TypeError(f"workers[{i}] must be a NeonWorker, got {type(w).__name__}")
    sigs = tuple(signals)
    for s in sigs:
        if s not in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            raise ValueError(f"signals may contain SIGINT, SIGTERM and SIGHUP, got {s!r}")
    if timeout is not None and not (type(timeout) in (int, float) and timeout >= 0):
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    return SignalHandlers(ws, sigs, timeout)
