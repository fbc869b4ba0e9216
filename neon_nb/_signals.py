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
from collections.abc import Iterable
from types import FrameType
from typing import Any

from ._worker import NeonWorker

__all__ = ["SignalHandlers", "install_signal_handlers"]

logger = logging.getLogger("neon_nb")


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
            for w in self.workers:
                try:
                    w.shutdown(timeout=self.timeout if self.timeout is not None else "config")
                except Exception:  # pragma: no cover
                    logger.exception("graceful shutdown of %r failed", w)
        # A second signal of the same kind skips the wait: chain at once.
        self._chain(signum, frame)

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
