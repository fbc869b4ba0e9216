"""Dashboard overhead: 20,000 no-op tasks with and without a live `Dashboard` attached.

The dashboard is fed as in a notebook: its own ``worker.subscribe(on="thread",
max_rate_hz=10)`` delivery thread refreshes the widgets and renders the plots.
There is no frontend: every widget comm is replaced by one that serialises
each message to JSON (as the kernel's session would before IOPub) and counts
it. Measured:

* run time from ``add_tasks`` to ``wait_for_completion()`` returning, with and
  without a dashboard, in alternating repetitions; the overhead is the median of
  the per-repetition paired ratios (with / without) - 1, with its [min, max];
* messages the dashboard sent from the submission until its final refresh
  (``dashboard.refresh()`` after the wait), per second of that span, and how
  many status and plot refreshes it did.

Run: ``.venv/bin/python -m benchmarks.bench_dashboard`` (or through
``make bench``). Goals: overhead <= 10%, and messages far below the 1,000
IOPub messages per second at which Jupyter's server starts to drop output.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_dashboard.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._report import PrintFn, Target, interleave, machine_line, median, paired_ratios, table
else:
    from ._report import PrintFn, Target, interleave, machine_line, median, paired_ratios, table

from neon_nb import NeonWorker, Task

__all__ = ["run"]

_perf = time.perf_counter
WORKERS = 2


class _Counter:
    """Messages sent through the fake comms, with the time of each."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.bytes = 0

    def between(self, t0: float, t1: float) -> int:
        with self.lock:
            return sum(1 for t in self.times if t0 <= t <= t1)


def _install_counting_comm() -> tuple[_Counter, Any]:
    import comm
    from comm.base_comm import BaseComm

    counter = _Counter()

    class CountingComm(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                        buffers: Any = None, **keys: Any) -> None:
            size = len(json.dumps(data, default=str)) + sum(len(b) for b in buffers or ())
            with counter.lock:
                counter.times.append(_perf())
                counter.bytes += size

    previous = comm.create_comm
    comm.create_comm = CountingComm
    return counter, previous


def _noop() -> None:
    return None


def _one(n: int, with_dashboard: bool, counter: _Counter) -> dict[str, float]:
    from neon_nb.widgets import Dashboard

    worker = NeonWorker(max_workers=WORKERS, queue_size=0, name="bench-dash",
                        log_level="WARNING").start()
    with warnings.catch_warnings():  # a script has no front end: the benchmark knows
        warnings.simplefilter("ignore", RuntimeWarning)
        dash = Dashboard(worker) if with_dashboard else None
    tasks = [Task(i, _noop) for i in range(n)]
    # Warm the threads, then wait for the dashboard to show that, so that the
    # timed span starts from a quiet, up-to-date display.
    worker.add_tasks([Task(f"warm-{i}", _noop) for i in range(100)])
    worker.wait_for_completion()
    if dash is not None:
        dash.refresh()
        status0, plots0 = dash.status_renders, dash.plot_renders
    gc.collect()
    t0 = _perf()
    worker.add_tasks(tasks)
    worker.wait_for_completion()
    t1 = _perf()
    out = {"run": t1 - t0}
    if dash is not None:
        dash.refresh()
        t2 = _perf()
        out["span"] = t2 - t0
        out["msgs"] = counter.between(t0, t2)
        out["status"] = dash.status_renders - status0
        out["plots"] = dash.plot_renders - plots0
    worker.shutdown()
    if dash is not None:
        dash.close()
    return out


def run(print_fn: PrintFn = print, quick: bool = False, reps: int | None = None) -> list[Target]:
    """Measure and print; return the targets (see the module docstring)."""
    n = 2_000 if quick else 20_000
    # A run of 20,000 no-op tasks lasts about a tenth of a second here, so one pair moves by
    # tens of percent with the machine's other work: 40 pairs make the median steady.
    reps = reps or (2 if quick else 40)
    counter, previous = _install_counting_comm()
    try:
        import neon_nb.widgets  # noqa: F401  (matplotlib and ipywidgets imported before timing)

        print_fn(machine_line())
        print_fn(f"{n:,} no-op tasks, {WORKERS} worker threads, queue unbounded; "
                 f"{reps} alternating repetitions after an untimed round")
        # The untimed round warms imports, fonts and the first figures; each run warms its pool.
        runs = interleave({"without": lambda: _one(n, False, counter),
                           "with": lambda: _one(n, True, counter)}, reps, warmup=True)
    finally:
        import comm

        comm.create_comm = previous
    without, with_ = runs["without"], runs["with"]
    t_without = median([r["run"] for r in without])
    t_with = median([r["run"] for r in with_])
    extra = paired_ratios([r["run"] for r in with_], [r["run"] for r in without]).map(
        lambda ratio: (ratio - 1) * 100)
    rate = median([r["msgs"] / r["span"] for r in with_])
    refresh_rate = median([r["status"] / r["span"] for r in with_])
    print_fn(table(
        ["variant", "run time s", "tasks/s", "messages", "msgs/s", "status refreshes", "plot refreshes"],
        [["no dashboard", t_without, n / t_without, None, None, None, None],
         ["with Dashboard", t_with, n / t_with, median([r["msgs"] for r in with_]), rate,
          median([r["status"] for r in with_]), median([r["plots"] for r in with_])]]))
    print_fn(f"dashboard overhead: {extra.fmt('%', 1, sign=True)} run time (median of the "
             f"per-repetition paired ratios [min, max]); {rate:.1f} messages/s and "
             f"{refresh_rate:.1f} status refreshes/s from submission to final refresh")
    return [
        Target(f"dashboard attached, {n // 1000}k no-op tasks: extra run time",
               extra.fmt("%", 1, sign=True), "<= +10%", extra.median <= 10),
        Target("dashboard messages/s", f"{rate:.0f}/s", "far below 1,000/s (<= 100)", rate <= 100),
        Target("dashboard status refreshes/s", f"{refresh_rate:.1f}/s", "<= ~10/s", refresh_rate <= 11),
    ]


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
