"""A headless demo: ``python -m neon_nb.demo [--tasks N] [--workers N] [--seed S] [--report PATH]``.

Runs a mixed batch on a `NeonWorker`, built from `neon_nb.Batch` and its
registered task kinds: IO-bound sleeps, CPU-bound hashing, flaky tasks that
fail planned attempts and are retried, at three priorities. A few queued
low-priority tasks are then cancelled on purpose, to show cancellation. It
prints progress lines on stderr at most twice a second while it runs, then a
summary on stdout: counts per state, throughput, latency percentiles,
utilisation per thread and the shutdown report. For a seed, the mix, the
durations, the priorities, which tasks fail and which are cancelled are all
the same at every run; only the timings vary.
With ``--report PATH`` it also writes the run's HTML report there
(`neon_nb.report.write_report`; needs matplotlib). ``make demo`` does both.

Progress comes from an event subscription (``on="thread"``, ``max_rate_hz=2``):
worker threads never print. No Jupyter library is imported.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ._events import EventBatch, EventKind
from ._metrics import MetricsSnapshot
from ._task import Task, TaskFuture
from ._worker import NeonWorker, ShutdownReport
from .batch import Batch

__all__ = ["DemoResult", "build_batches", "build_tasks", "main", "run_demo"]

KINDS = ("io", "cpu", "flaky")
#: Share of each kind in the mix (the rest is flaky).
SHARES = {"io": 0.5, "cpu": 0.3}
PRIORITIES = {2: "high", 1: "normal", 0: "low"}
#: Priority classes drawn uniformly: 1/3 low, 1/2 normal, 1/6 high.
PRIORITY_CLASSES = ("classes", [0, 0, 1, 1, 1, 2])
DURATIONS = {"io": ("uniform", 0.005, 0.060), "cpu": ("uniform", 0.001, 0.005),
             "flaky": ("uniform", 0.002, 0.020)}
FLAKY_RETRIES = 2


@dataclass
class DemoResult:
    """What `run_demo` observed; the summary is printed from it.

    ``outcomes`` counts every task's end, whatever ended it; ``cancelled_on_purpose``
    is how many queued tasks the demo itself cancelled (its ``cancel_share``).
    """

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
    cancelled_on_purpose: int = 0
    fail_prob: float = 0.3

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


def build_batches(n: int, seed: int, fail_prob: float) -> dict[str, Batch]:
    """The mix as one `Batch` per kind: half IO, 30% CPU, 20% flaky. Deterministic for a seed.

    Each flaky attempt fails with probability ``fail_prob`` (planned when the
    batch is built, so the same tasks fail at every run); a flaky task is
    retried up to `FLAKY_RETRIES` times.
    """
    counts = {kind: round(share * n) for kind, share in SHARES.items()}
    counts["flaky"] = n - sum(counts.values())

    def batch(i: int, kind: str, **retrying: Any) -> Batch:
        return Batch(kind=kind, count=counts[kind], duration=DURATIONS[kind], priority=PRIORITY_CLASSES,
                     seed=seed * 10 + i, id_prefix=f"{kind}-", **retrying)

    return {"io": batch(0, "io"), "cpu": batch(1, "cpu"),
            "flaky": batch(2, "flaky", failure_probability=fail_prob, retries=FLAKY_RETRIES,
                           retry_delay=0.02)}


def build_tasks(n: int, seed: int, fail_prob: float) -> tuple[list[Task], dict[str, str]]:
    """The mixed batch's tasks, kinds interleaved in a seeded order, and each task id's kind."""
    tasks: list[Task] = []
    kind_of: dict[str, str] = {}
    for kind, batch in build_batches(n, seed, fail_prob).items():
        for task in batch.tasks():
            tasks.append(task)
            kind_of[str(task.id)] = kind
    random.Random(seed).shuffle(tasks)
    return tasks, kind_of


def _plan_cancellations(tasks: list[Task], seed: int, k: int) -> list[Task]:
    """Choose ``k`` low-priority tasks to cancel, and move them to the end of the submission.

    Queued last at the lowest priority, they are still waiting when the demo
    cancels them: which tasks are cancelled does not depend on timing.
    """
    low = [t for t in tasks if t.priority == 0]
    chosen = random.Random(seed + 1).sample(low, min(len(low), k))
    picked = {id(t) for t in chosen}
    tasks[:] = [t for t in tasks if id(t) not in picked] + chosen
    return chosen


def run_demo(tasks: int = 400, workers: int = 8, seed: int = 42, *, fail_prob: float = 0.3,
             cancel_share: float = 0.02, progress: TextIO | None = sys.stderr,
             queue_size: int = 100, report_path: str | os.PathLike[str] | None = None) -> DemoResult:
    """Run the mixed batch and return what happened (the worker is shut down at the end).

    ``report_path``: where the run's HTML report is written, after the shutdown.
    """
    if tasks < 1 or workers < 1:
        raise ValueError(f"tasks and workers must be >= 1, got tasks={tasks!r}, workers={workers!r}")
    if not 0.0 <= fail_prob <= 1.0:
        raise ValueError(f"fail_prob must be in [0, 1], got {fail_prob!r}")
    batch_tasks, kind_of = build_tasks(tasks, seed, fail_prob)
    to_cancel = _plan_cancellations(batch_tasks, seed, round(cancel_share * tasks))
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
        # Change our mind about a few low-priority tasks, queued last: they are cancelled.
        cancelled_on_purpose = sum(worker.cancel(task.id) for task in to_cancel)
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
        c = outcomes[kind_of[str(task.id)]]
        if fut.cancelled():
            c["cancelled"] += 1
        elif fut.exception() is not None:
            c["failed"] += 1
        else:
            c["succeeded"] += 1
    if report_path is not None:
        from .report import write_report

        write_report(worker, report_path, title=f"neon_nb demo: {tasks} tasks on {workers} threads "
                                           f"(seed {seed})")
    mix = Counter(kind_of.values())
    assert report is not None  # shutdown() with wait=True (the default) always returns its report
    return DemoResult(tasks=tasks, workers=workers, seed=seed, elapsed=elapsed, outcomes=outcomes,
                      status=status, snapshot=snapshot, report=report,
                      queue_wait_by_priority={p: statistics.median(v) for p, v in waits.items()},
                      progress_lines=tally.lines, mix=dict(mix), cancelled_on_purpose=cancelled_on_purpose,
                      fail_prob=fail_prob)


# ------------------------------------------------------------------ summary
def format_summary(r: DemoResult) -> str:
    out: list[str] = []
    add = out.append
    st = r.status
    add(f"neon_nb demo: {r.tasks} tasks on {r.workers} worker threads (seed {r.seed})")
    add(_note(f"mix: {r.mix.get('io', 0)} IO-bound (sleep 5-60 ms), {r.mix.get('cpu', 0)} CPU-bound "
              f"(hash 1-5 ms, holding the GIL), {r.mix.get('flaky', 0)} flaky (each attempt fails "
              f"with probability {r.fail_prob:g}, retried up to {FLAKY_RETRIES} times)"))
    add(f"elapsed {r.elapsed:.2f} s, throughput {r.tasks / r.elapsed:.1f} tasks/s")
    add("")
    add("Counts per state (how each task ended)")
    rows = [(k, r.outcomes[k]["succeeded"], r.outcomes[k]["failed"], r.outcomes[k]["cancelled"],
             sum(r.outcomes[k].values())) for k in KINDS]
    c = r.counts
    rows.append(("total", c["succeeded"], c["failed"], c["cancelled"], sum(c.values())))
    add(_table(("kind", "succeeded", "failed", "cancelled", "total"), rows))
    if r.cancelled_on_purpose:
        add(_note(f"cancelled: {r.cancelled_on_purpose} low-priority tasks that the demo cancelled "
                  f"on purpose while they were still queued, to show cancellation"))
    add(_note(f"failed: flaky tasks whose {FLAKY_RETRIES + 1} attempts all failed"))
    add(f"worker status: submitted {st['submitted_tasks']}, completed {st['completed_tasks']}, "
        f"failed {st['failed_tasks']}, cancelled {st['cancelled_tasks']}, "
        f"retries {st['retried_tasks']}")
    add("")
    add(_latency_section(r))
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


def _note(text: str, indent: str = "") -> str:
    """An explanatory line of the summary, wrapped to a terminal's width."""
    return textwrap.fill(text, width=100, initial_indent=indent, subsequent_indent=indent or "  ")


def _latency_section(r: DemoResult) -> str:
    lat = r.snapshot.latency
    attempts = lat["run_time"].count if "run_time" in lat else 0
    ran = attempts - r.status["retried_tasks"]
    lines = [
        "Latency (ms), from worker.metrics.snapshot()",
        _table(("", "count", "p50", "p90", "p99", "max"),
               [(name, s.count, *(f"{v * 1e3:.1f}" for v in (s.p50, s.p90, s.p99, s.max)))
                for name, s in lat.items()]),
        _note(f"queue_wait and run_time count attempts: {attempts} = {ran} tasks that ran + "
              f"{r.status['retried_tasks']} retries; end_to_end counts each task that ran once, from "
              f"submission to its last attempt's end (cancelled tasks never ran)."),
    ]
    return "\n".join(lines)


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
    parser.add_argument("--report", metavar="PATH",
                        help="also write the run's HTML report to PATH (needs matplotlib)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.fail_prob <= 1.0:
        parser.error(f"--fail-prob must be in [0, 1], got {args.fail_prob}")
    if args.report is not None:
        _check_report_path(parser, args.report)
    result = run_demo(args.tasks, args.workers, args.seed, fail_prob=args.fail_prob,
                      progress=None if args.quiet else sys.stderr, report_path=args.report)
    print(format_summary(result), flush=True)
    if args.report is not None:
        print(f"\nReport written to {os.path.abspath(args.report)} (open it in a browser)", flush=True)
    return 0


def _check_report_path(parser: argparse.ArgumentParser, path: str) -> None:
    """Fail before the run, not after it: the report needs matplotlib and an existing folder."""
    try:
        import neon_nb.report  # noqa: F401  (imports matplotlib)
    except ImportError as exc:
        parser.error(f"--report needs matplotlib ({exc}); pip install 'neon_nb[notebook]'")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        parser.error(f"--report {path}: the folder {folder} does not exist")


if __name__ == "__main__":
    sys.exit(main())
