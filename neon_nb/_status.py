"""What a worker says about itself: its state, frozen statistics, health and shutdown reports.

One vocabulary of task states runs through everything: `TaskState` (``queued``,
``running``, ``retry_wait``, ``succeeded``, ``failed``, ``cancelled``), the fields of
`WorkerStatistics`, the counts of a metrics snapshot and the events. The original
Neon Worker API's `get_status()` keys (``completed_tasks``, ``retry_waiting_tasks``...)
stay as they were: they are documented API, built from the same counts.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HealthReport", "Phase", "ShutdownReport", "WorkerState", "WorkerStatistics"]


class WorkerState(str, enum.Enum):
    """Where a worker is in its life, as `NeonWorker.state` reports it (compares equal to its value)."""

    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value


class Phase(enum.IntEnum):
    """A worker's lifecycle: it only moves forward, under the worker's lock.

    Whether the worker is paused is separate (a running worker may be paused).
    """

    CREATED = 0  # not started: tasks are not accepted yet (the first one starts it)
    RUNNING = 1  # accepts and runs tasks
    DRAINING = 2  # shutting down: accepts no task; the queue still runs, retries too
    FINAL = 3  # the shutdown's last window: nothing pending starts, a failure is final
    STOPPING = 4  # every thread has been told to stop
    STOPPED = 5  # the shutdown report is written

    @property
    def closed(self) -> bool:
        """No new task is accepted."""
        return self >= Phase.DRAINING

    def state(self, paused: bool) -> WorkerState:
        if self is Phase.CREATED:
            return WorkerState.CREATED
        if self is Phase.RUNNING:
            return WorkerState.PAUSED if paused else WorkerState.RUNNING
        return WorkerState.STOPPED if self is Phase.STOPPED else WorkerState.SHUTTING_DOWN


@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A consistent snapshot of a worker's counts, taken under its lock (`NeonWorker.statistics`).

    ``submitted == queued + running + retry_wait + succeeded + failed + cancelled``
    holds in every snapshot. ``retried`` counts retries scheduled (one per retry);
    ``backlog`` counts tasks of background batches not yet queued (they are
    counted as submitted when they enter the queue). ``threads`` are the pool's
    threads (without those retiring, and without the stand-ins of threads
    waiting in a call); ``uptime`` is seconds since `start` (0 before).
    ``resumed`` counts the tasks found done in the worker's journal, which
    ended without running: each is also counted as submitted and as succeeded
    (or failed, a failure kept with ``journal_keep_failed``).
    """

    state: WorkerState
    max_workers: int
    threads: int
    queue_size: int
    submitted: int
    queued: int
    running: int
    retry_wait: int
    succeeded: int
    failed: int
    cancelled: int
    retried: int
    backlog: int
    uptime: float
    resumed: int = 0

    def counts(self) -> dict[str, int]:
        """The task counts by `TaskState` value, plus ``submitted``, ``retried`` and ``resumed``."""
        return {"submitted": self.submitted, "queued": self.queued, "running": self.running,
                "retry_wait": self.retry_wait, "succeeded": self.succeeded,
                "failed": self.failed, "cancelled": self.cancelled, "retried": self.retried,
                "resumed": self.resumed}

    def as_status(self) -> dict[str, Any]:
        """The `NeonWorker.get_status` dict: the original API's keys, built from these counts."""
        return {
            "state": self.state.value,  # a plain str, as in the original API
            "max_workers": self.max_workers,
            "threads": self.threads,
            "active_workers": self.running,  # the original API's name for running tasks
            "queued_tasks": self.queued,
            "queue_size": self.queue_size,
            "running_tasks": self.running,
            "retry_waiting_tasks": self.retry_wait,
            "submitted_tasks": self.submitted,
            "completed_tasks": self.succeeded,
            "failed_tasks": self.failed,
            "cancelled_tasks": self.cancelled,
            "retried_tasks": self.retried,
            "backlog_tasks": self.backlog,
            "resumed_tasks": self.resumed,
            "uptime_s": self.uptime,
        }


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What `NeonWorker.shutdown` did.

    ``clean`` is True when every task reached a terminal state before the
    timeout. ``succeeded``, ``failed`` and ``cancelled_total`` count every
    task of the worker's life; ``cancelled`` are the ids of the tasks the
    shutdown itself cancelled (queued, waiting for a retry, or not yet queued
    by a background batch); ``abandoned`` the ids of tasks still running when
    the timeout expired (their threads are left to finish them).
    ``failures`` pairs the id and the error (``"Type: message"``) of each
    failed task the worker still remembers (the last ``history_size`` tasks).
    ``complete`` is False while the shutdown is still in progress: when this
    call's timeout expired while a shutdown started by another call went on,
    or when it was called from inside a task (it completes when that task
    returns; `NeonWorker.shutdown_report` then holds the final report).
    """

    clean: bool
    elapsed: float
    timeout: float | None
    succeeded: int
    failed: int
    cancelled: tuple[Hashable, ...]
    abandoned: tuple[Hashable, ...]
    complete: bool = True
    cancelled_total: int = 0
    failures: tuple[tuple[Hashable, str], ...] = ()

    def __str__(self) -> str:
        if not self.complete:
            head = "shutdown still in progress"
        else:
            head = "clean shutdown" if self.clean else "shutdown timed out"
        text = (f"{head} in {self.elapsed:.2f}s: {self.succeeded} succeeded, {self.failed} "
                f"failed, {self.cancelled_total} cancelled ({len(self.cancelled)} by the "
                f"shutdown), {len(self.abandoned)} abandoned while running")
        if self.failures:
            shown = "; ".join(f"{_repr(tid)}: {err}" for tid, err in self.failures[:5])
            more = len(self.failures) - 5
            text += f"\nfailed: {shown}" + (f"; and {more} more" if more > 0 else "")
        return text


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The monitor's latest check. ``stuck`` maps task ids to seconds running beyond the threshold."""

    checked_at: float
    healthy: bool
    state: str
    expected_threads: int
    alive_threads: int
    replaced_threads: int
    stuck: Mapping[Hashable, float]
    queue_fill: float


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # a task id's __repr__ is user code
        return f"<{type(value).__name__} whose repr() raised>"
