"""A headless demo: ``python -m neon_nb.demo [--tasks N] [--workers N] [--seed S]`` (``make demo``).

Runs a mixed batch on a `NeonWorker` (IO-bound sleeps, CPU-bound arithmetic,
flaky tasks that fail with a seeded probability and are retried, three
priorities, a few cancellations), prints progress lines on stderr at most
twice a second while it runs, then a summary on stdout: counts per state,
throughput, latency percentiles, utilisation per thread and the shutdown report.

Progress comes from an event subscription (``on="thread"``, ``max_rate_hz=2``):
worker threads never print. No Jupyter library is imported.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._events import EventBatch, EventKind
from ._metrics import MetricsSnapshot
from ._task import Task, TaskFuture
from ._worker import NeonWorker, ShutdownReport

__all__ = ["DemoResult", "main", "run_demo"]

KINDS = ("io", "cpu", "flaky")
PRIORITIES = {2: "high", 1: "normal", 0: "low"}


class FlakyError(RuntimeError):
    """What a flaky task raises when its (seeded) coin comes up bad."""


def io_task(seconds: float) -> float:
    """IO-bound: waits without holding the GIL."""
    time.sleep(seconds)
    return seconds


def cpu_task(n: int) -> int:
    """CPU-bound: pure-Python arithmetic, holds the GIL."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


class Flaky:
    """A task that fails each attempt with probability ``p``, drawn from its own seeded RNG.

    Attempts of one task run one after another, so its outcome is fixed by the seed.
    """

    def __init__(self, p: float, seed: str, seconds: float) -> None:
        self.p = p
        self.rng = random.Random(seed)
        self.seconds = seconds
        self.attempts = 0

    def __call__(self) -> int:
        self.attempts += 1
        time.sleep(self.seconds)
        if self.rng.random() < self.p:
            raise FlakyError(f"bad luck on attempt {self.attempts}")
        return self.attempts


@dataclass
class DemoResult:
    """What `run_demo` observed; the summary is printed from it."""

    tasks: int
    workers: int
    seed: int
    elapsed: float
    outcomes: dict[str, Counter]  # kind -> Counter(succeeded/failed/cancelled)
    status: dict[str, Any]
    snapshot: MetricsSnapshot
    report: ShutdownReport
    queue_wait_by_priority: dict[int, float]  # median seconds, from the task history
    progress_lines: int
    mix: dict[str, int] = field(default_factory=dict)

    @property
    def counts(self) -> Counter:
        total: Counter = Counter()
        for c in self.outcomes.values():
            total.update(c)
        return total


class _Progress:
    """Event subscriber: tallies finished tasks, prints one line per (rate-limited) delivery."""

    def __init__(self, worker: NeonWorker, total: int, out: TextIO | None) -> None:
        self.worker = worker
        self.total = total
        self.out = out
        self.t0 = time.monotonic()
        self.counts: Counter = Counter()
        self.dropped = 0
        self.lines = 0

    def __call__(self, batch: EventBatch) -> None:  # runs on the subscription's own thread
        self.dropped += batch.dropped
        for ev in batch:
            self.counts[ev.kind] += 1
        if self.out is None:
            return
        c = self.counts
        done = c[EventKind.TASK_SUCCEEDED] + c[EventKind.TASK_FAILED] + c[EventKind.TASK_CANCELLED]
        st = self.worker.get_status()
        elapsed = time.monotonic() - self.t0
        line = (f"[{elapsed:5.1f}s] {done:>{len(str(self.total))}}/{self.total} done "
                f"({c[EventKind.TASK_SUCCEEDED]} ok, {c[EventKind.TASK_FAILED]} failed, "
                f"{c[EventKind.TASK_CANCELLED]} cancelled, {c[EventKind.TASK_RETRY_SCHEDULED]} retries)"
                f"  running {st['running_tasks']}, queued {st['queued_tasks']}, "
                f"waiting to retry {st['retry_waiting_tasks']}")
        if self.dropped:
            line += f"  [{self.dropped} events dropped]"
        print(line, file=self.out, flush=True)
        self.lines += 1


def build_tasks(n: int, seed: int, fail_prob: float) -> tuple[list[Task], dict[str, str]]:
    """The mixed batch: half IO, 30% CPU, 20% flaky; priorities 0-2. Deterministic for a seed."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    kind_of: dict[str, str] = {}
    for i in range(n):
        r = rng.random()
        kind = "io" if r < 0.5 else "cpu" if r < 0.8 else "flaky"
        priority = rng.choice((0, 0, 1, 1, 1, 2))
        tid = f"{kind}-{i}"
        if kind == "io":
            task = Task(tid, io_task, (rng.uniform(0.005, 0.060),), priority=priority)
        elif kind == "cpu":
            task = Task(tid, cpu_task, (rng.randint(10_000, 40_000),), priority=priority)
        else:
            task = Task(tid, Flaky(fail_prob, f"{seed}-{i}", rng.uniform(0.002, 0.020)),
                        priority=priority, retry_attempts=2, retry_delay=0.02, retry_backoff=2.0,
                        retry_on=(FlakyError,))
        tasks.append(task)
        kind_of[tid] = kind
    return tasks, kind_of


def run_demo(tasks: int = 400, workers: int = 8, seed: int = 42, *, fail_prob: float = 0.3,
             cancel_share: float = 0.02, progress: TextIO | None = sys.stderr,
             queue_size: int = 100) -> DemoResult:
    """Run the mixed batch and return what happened (the worker is shut down at the end)."""
    if tasks < 1 or workers < 1:
        raise ValueError(f"tasks and workers must be >= 1, got tasks={tasks!r}, workers={workers!r}")
    if not 0.0 <= fail_prob <= 1.0:
        raise ValueError(f"fail_prob must be in [0, 1], got {fail_prob!r}")
    batch_tasks, kind_of = build_tasks(tasks, seed, fail_prob)
    # A bounded queue: add_task waits for room, so the producer is held back (backpressure).
    worker = NeonWorker(max_workers=workers, queue_size=queue_size, name="demo", enable_metrics=True)
    tally = _Progress(worker, tasks, progress)
    worker.start()
    sub = worker.subscribe(tally, on="thread", max_rate_hz=2.0)
    t0 = time.monotonic()
    futures: list[TaskFuture] = []
    try:
        for task in batch_tasks:
            futures.append(worker.add_task(task))
        # Change our mind about a few low-priority tasks: those still queued are cancelled.
        pick = random.Random(seed + 1)
        low = [i for i, t in enumerate(batch_tasks) if t.priority == 0]
        for i in pick.sample(low, min(len(low), round(cancel_share * tasks))):
            futures[i].cancel()
        worker.wait_for_completion()
        elapsed = time.monotonic() - t0
        snapshot = worker.metrics.snapshot()  # type: ignore[union-attr]
        status = worker.get_status()
        waits: dict[int, list[float]] = {}
        for info in worker.tasks():
            if info.queue_wait is not None:
                waits.setdefault(info.priority, []).append(info.queue_wait)
    finally:
        report = worker.shutdown(timeout=10.0, cancel_pending=True)
        # Shutdown closes the subscription after its last events: let it print the final line.
        if not sub.join(timeout=2.0):
            sub.cancel()
    outcomes: dict[str, Counter] = {k: Counter() for k in KINDS}
    for task, fut in zip(batch_tasks, futures):
        c = outcomes[kind_of[task.id]]
        if fut.cancelled():
            c["cancelled"] += 1
        elif fut.exception() is not None:
            c["failed"] += 1
        else:
            c["succeeded"] += 1
    mix = Counter(kind_of.values())
    return DemoResult(tasks=tasks, workers=workers, seed=seed, elapsed=elapsed, outcomes=outcomes,
                      status=status, snapshot=snapshot, report=report,  # type: ignore[arg-type]
                      queue_wait_by_priority={p: statistics.median(v) for p, v in waits.items()},
                      progress_lines=tally.lines, mix=dict(mix))


# ------------------------------------------------------------------ summary
def format_summary(r: DemoResult) -> str:
    out: list[str] = []
    add = out.append
    st = r.status
    add(f"neon_nb demo: {r.tasks} tasks on {r.workers} worker threads (seed {r.seed})")
    add(f"mix: {r.mix.get('io', 0)} IO-bound (sleep 5-60 ms), {r.mix.get('cpu', 0)} CPU-bound "
        f"(pure-Python loop), {r.mix.get('flaky', 0)} flaky (retried up to 2 times)")
    add(f"elapsed {r.elapsed:.2f} s, throughput {r.tasks / r.elapsed:.1f} tasks/s")
    add("")
    add("Counts per state")
    rows = [(k, r.outcomes[k]["succeeded"], r.outcomes[k]["failed"], r.outcomes[k]["cancelled"],
             sum(r.outcomes[k].values())) for k in KINDS]
    c = r.counts
    rows.append(("total", c["succeeded"], c["failed"], c["cancelled"], sum(c.values())))
    add(_table(("kind", "succeeded", "failed", "cancelled", "total"), rows))
    add(f"worker status: submitted {st['submitted_tasks']}, completed {st['completed_tasks']}, "
        f"failed {st['failed_tasks']}, cancelled {st['cancelled_tasks']}, "
        f"retries {st['retried_tasks']}")
    add("")
    add("Latency (ms), from worker.metrics.snapshot()")
    lat = r.snapshot.latency
    add(_table(("", "count", "p50", "p90", "p99", "max"),
               [(name, s.count, *(f"{v * 1e3:.1f}" for v in (s.p50, s.p90, s.p99, s.max)))
                for name, s in lat.items()]))
    add("")
    add("Median queue wait by priority (higher runs first)")
    add(_table(("priority", "median wait ms"),
               [(f"{p} ({PRIORITIES.get(p, p)})", f"{w * 1e3:.1f}")
                for p, w in sorted(r.queue_wait_by_priority.items(), reverse=True)]))
    add("")
    util = r.snapshot.utilisation
    add(f"Utilisation per thread (busy share of the last {r.snapshot.utilisation_span:.1f} s)")
    add(_table(("thread", "busy", ""),
               [(th, f"{u:.0%}", "#" * round(u * 20)) for th, u in sorted(util.items())], left=(0, 2)))
    add("")
    add(f"Shutdown: {r.report}")
    return "\n".join(out)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: tuple[int, ...] = (0,)) -> str:
    cells = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(v.ljust(w) if i in left else v.rjust(w)
                               for i, (v, w) in enumerate(zip(row, widths))).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neon_nb.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=_positive_int, default=400, help="tasks in the batch (400)")
    parser.add_argument("--workers", type=_positive_int, default=8, help="worker threads (8)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the mix and of the failures (42)")
    parser.add_argument("--fail-prob", type=float, default=0.3,
                        help="failure probability of each flaky attempt (0.3)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fail_prob <= 1.0:
        parser.error(f"--fail-prob must be in [0, 1], got {args.fail_prob}")
    result = run_demo(args.tasks, args.workers, args.seed, fail_prob=args.fail_prob,
                      progress=None if args.quiet else sys.stderr)
    print(format_summary(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
