"""A worker's clock: `Monitor`, one thread that does what is due when it is due.

* Retries whose delay is over go back to the queue (and threads are woken).
* Every ``health_check_interval``: tasks running past ``stuck_task_threshold``
  are flagged, and worker threads whose loop died are replaced (their task is
  failed: it can never finish).
* Every quarter of a second at most (once per metrics window if that is shorter): pending
  attempts are folded into the histograms, so that what waits to be folded stays small
  however fast tasks end (150,000 attempts a second would otherwise hold tens of MB).
* An inline delivery held back by ``max_rate_hz`` is made when it is due.

The monitor sleeps on a condition of the worker's lock until the earliest of
these; the worker notifies it when something earlier appears (a retry, a
configuration change). Some of its work runs user code (an inline subscriber,
the callbacks of a task lost with its thread, log handlers): whatever that
raises is logged, and the monitor goes on. If that code blocks in a call to
the worker, a new monitor thread takes over for the time of the wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from ._events import EventLog
from ._pool import ThreadPool, Token
from ._scheduler import Scheduler
from ._status import HealthReport, Phase, WorkerState

if TYPE_CHECKING:
    from ._config import WorkerConfig
    from ._metrics import Metrics

__all__ = ["Monitor", "MonitorLinks"]

logger = logging.getLogger("neon_nb")

#: Marks this module for the signal handlers: code here may hold a worker's lock.
NEON_HOLDS_WORKER_LOCKS = True
#: The longest time between two folds of the pending metrics, in seconds.
FOLD_INTERVAL = 0.25


class MonitorLinks(NamedTuple):
    """What a monitor works with, all owned by its worker and guarded by ``lock``."""

    name: str  # the worker's
    lock: threading.Lock
    wakeup: threading.Condition  # on ``lock``: notified when something is due earlier
    scheduler: Scheduler
    pool: ThreadPool
    events: EventLog
    settings: Callable[[], WorkerConfig]
    metrics: Callable[[], Metrics | None]
    phase: Callable[[], Phase]  # (lock held)
    state: Callable[[], WorkerState]  # (lock held)


class Monitor:
    """The monitor of one worker; `start` its thread, `check_health` from any thread."""

    def __init__(self, links: MonitorLinks) -> None:
        self.links = links
        self.thread: threading.Thread | None = None
        self.health: HealthReport | None = None
        self.next_health = 0.0

    def start(self) -> None:
        """Start the monitor thread (lock held; it needs the lock only later)."""
        self.thread = threading.Thread(target=self._loop, name=f"{self.links.name}-monitor",
                                       daemon=True)
        self.thread.start()

    def working(self) -> bool:
        """Started and not stopped (lock held)."""
        return Phase.CREATED < self.links.phase() < Phase.STOPPED

    def take_over(self, thread: threading.Thread) -> None:
        """``thread`` is about to block in a call: if it is the monitor, a new one takes over."""
        if thread is self.thread and self.working():
            self.start()  # the blocked thread leaves the loop when its wait is over

    def recheck(self) -> None:
        """Check health at the next pass (after a configuration change). Lock held."""
        self.next_health = 0.0
        self.links.wakeup.notify()

    # ------------------------------------------------------------------ the loop
    def _loop(self) -> None:
        links = self.links
        me = threading.current_thread()
        while True:
            with links.lock:
                if not self.working() or self.thread is not me:
                    return  # stopped, or replaced while this thread waited in user code
                now = time.monotonic()
                promoted = links.scheduler.promote_due(now)
                health_due = now >= self.next_health or bool(links.pool.crashed)
                if health_due:
                    self.next_health = now + links.settings().health_check_interval
            links.pool.wake(Token.ITEM, promoted)
            self._duties(bool(promoted), health_due)
            with links.lock:
                if not self.working() or self.thread is not me:
                    return
                # Whatever became due while the lock was released notified nobody:
                # it is taken into account here, under the lock.
                left = self._next_due() - time.monotonic()
                if left > 0:
                    links.wakeup.wait(left)

    def _next_due(self) -> float:
        links = self.links
        due = [self.next_health]
        retry = links.scheduler.retries.next_due()
        if retry is not None:
            due.append(retry)
        metrics = links.metrics()
        if metrics is not None:
            due.append(time.monotonic() + min(metrics.window, FOLD_INTERVAL))
        deferred = links.events.next_deferred()
        if deferred is not None:
            due.append(deferred)
        return min(due)

    def _duties(self, deliver: bool, health_due: bool) -> None:
        links = self.links
        try:
            if deliver or links.events.next_deferred() is not None:
                links.events.pump_inline()
            if health_due:
                self.check_health()
            metrics = links.metrics()
            if metrics is not None:
                metrics.fold()
        except BaseException:  # the monitor must outlive any user code
            try:
                logger.exception("worker %s: the monitor's work raised; it goes on", links.name)
            except BaseException:  # a hostile log handler: nothing left to tell
                pass

    # ------------------------------------------------------------------ health
    def check_health(self) -> HealthReport:
        """Flag stuck tasks, replace crashed threads (failing their tasks); the report."""
        links = self.links
        with links.lock:
            now = time.monotonic()
            threshold = links.settings().stuck_task_threshold
            stuck = links.scheduler.stuck(now, threshold)
            # Crashed threads are replaced while the worker runs, not once it shuts down.
            dead, start = links.pool.replace_crashed(links.phase() is Phase.RUNNING)
            lost = [f for f in (links.scheduler.fail_lost(
                n, f"worker thread {n} crashed while running this task") for n in dead)
                if f is not None]
            size = links.settings().queue_size
            state = links.state()
            report = HealthReport(
                checked_at=now, healthy=not stuck and not dead and state is not WorkerState.STOPPED,
                state=state, expected_threads=links.pool.size(), alive_threads=links.pool.alive(),
                replaced_threads=links.pool.replaced, stuck=stuck,
                queue_fill=(len(links.scheduler.queue) / size) if size else 0.0)
            self.health = report
        for t in start:
            t.start()
        for fut in lost:
            fut.run_callbacks()
        if dead:
            logger.error("worker %s: replaced %d dead worker thread(s): %s", links.name, len(dead),
                         dead)
        if stuck:
            logger.warning("worker %s: %d task(s) running longer than %.1fs: %r", links.name,
                           len(stuck), threshold, list(stuck)[:10])
        return report

