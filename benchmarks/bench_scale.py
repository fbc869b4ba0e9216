"""Scale: a million queued no-op tasks, NeonWorker against ThreadPoolExecutor.

``python -m benchmarks --scale`` (``make bench SCALE=1``) runs this suite alone;
``make bench`` runs it too (not with ``--quick``). Every run is a fresh
interpreter (one subprocess per variant and repetition, in alternating order), so
that neither the memory figure nor the drain rate inherits the heap of another run.

1. Queued drain. 4 worker threads; the tasks are queued while no thread can take
   them, then released, and the clock runs from the release to the completion of
   the last task queued (FIFO: it starts last). NeonWorker: ``pause()``, queue
   with ``add_tasks`` batches of 1,000, ``resume()``. ThreadPoolExecutor: 4
   tasks that wait on an Event occupy its 4 threads, the no-op tasks are
   submitted, then the Event is set. Each process first drains 10^4 tasks the
   same way (one untimed round, then the median of several) and then 10^6: the
   rate at 10^6 against its own rate at 10^4 says how far the per-task cost
   stays flat as the queue grows (the process's CPU time per task is printed
   too: other load moves it less than wall time). Goals: NeonWorker's rate at
   10^6 >= 1.5x ThreadPoolExecutor's, and closer to flat: its (rate at 10^6 /
   rate at 10^4) over ThreadPoolExecutor's, paired per repetition, >= 1.0 (a
   rate that does not fall with the queue's length is flat; one that rises is
   not held against it).
2. Memory per queued task, in the same processes: RSS with the 10^6 tasks
   queued minus RSS just before queueing them (both after ``gc.collect()``),
   divided by 10^6. The caller keeps every future in a list, as a user does.
   RSS, not tracemalloc: it is what the machine pays (allocator slack and
   fragmentation included) and costs nothing while the tasks are queued.
   Goal: NeonWorker <= 1.0x ThreadPoolExecutor.
3. Memory growth: RSS over 10^6 no-op tasks through one worker (default
   settings, queue bounded at 10,000, batches): the history and the metrics are
   bounded, so it stays under 100 MB.

The garbage collector stays on (the default); comparisons are medians of the
per-repetition paired ratios with their [min, max] (see `benchmarks._report`).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_scale.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._report import (
        PrintFn,
        Spread,
        Target,
        interleave,
        machine_line,
        median,
        paired_ratios,
        ratio_target,
        section,
        spread,
        table,
    )
else:
    from ._report import (
        PrintFn,
        Spread,
        Target,
        interleave,
        machine_line,
        median,
        paired_ratios,
        ratio_target,
        section,
        spread,
        table,
    )

from neon_nb import NeonWorker, Task

__all__ = ["MemoryResult", "QueuedRun", "ScaleResult", "memory_growth", "queued", "run"]

_perf = time.perf_counter
WORKERS = 4
BATCH = 1_000
NEON = "NeonWorker"
TPE = "ThreadPoolExecutor"
VARIANTS = (NEON, TPE)
MB = 1024 * 1024


def _noop() -> None:
    return None


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# ==================================================== inside the subprocess
class _NeonQueue:
    """A NeonWorker whose queue is filled while paused, then released by ``resume()``."""

    def __init__(self, workers: int, batch: int) -> None:
        self.batch = batch
        self.worker = NeonWorker(workers, 0).start()
        for f in self.worker.add_tasks([Task(("warm", i), _noop) for i in range(500)]):
            f.result()
        self.worker.wait_for_completion()

    def hold(self) -> None:
        self.worker.pause()

    def fill(self, n: int) -> list[Future]:
        futures: list[Future] = []
        add, batch = self.worker.add_tasks, self.batch
        for lo in range(0, n, batch):
            futures.extend(add([Task(i, _noop) for i in range(lo, min(n, lo + batch))]))
        return futures

    def release(self) -> None:
        self.worker.resume()

    def close(self) -> None:
        self.worker.shutdown()


def _block(ready: threading.Barrier, go: threading.Event) -> None:
    ready.wait()
    go.wait()


class _TPEQueue:
    """A ThreadPoolExecutor whose threads all wait on an Event while its queue is filled."""

    def __init__(self, workers: int, batch: int) -> None:
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers)
        for f in [self.pool.submit(_noop) for _ in range(500)]:
            f.result()
        self.go = threading.Event()

    def hold(self) -> None:
        self.go = threading.Event()
        ready = threading.Barrier(self.workers + 1, timeout=60)
        for _ in range(self.workers):
            self.pool.submit(_block, ready, self.go)
        ready.wait()  # every thread holds a blocker: what is submitted next waits in the queue

    def fill(self, n: int) -> list[Future]:
        submit = self.pool.submit
        return [submit(_noop) for _ in range(n)]

    def release(self) -> None:
        self.go.set()

    def close(self) -> None:
        self.pool.shutdown()


def _drain(pool: Any, n: int, measure_memory: bool = False) -> dict[str, float]:
    """Fill ``pool`` with ``n`` tasks while held, release it, time until the last one is done."""
    pool.hold()
    if measure_memory:
        gc.collect()
    rss0 = _rss() if measure_memory else 0
    t0 = _perf()
    futures = pool.fill(n)
    fill = _perf() - t0
    if measure_memory:
        gc.collect()
    rss1 = _rss() if measure_memory else 0
    t0, c0 = _perf(), time.process_time()
    pool.release()
    futures[-1].result()  # queued last, started last
    elapsed, cpu = _perf() - t0, time.process_time() - c0
    # Not timed: every task ran and succeeded (a lost one would time out here, not hang).
    completed = sum(1 for f in futures if f.exception(timeout=60) is None)
    return {"rate": n / elapsed, "cpu_us": cpu / n * 1e6, "fill_s": fill, "completed": completed,
            "bytes_per_task": (rss1 - rss0) / n, "rss_queued_mb": rss1 / MB, "rss_before_mb": rss0 / MB}


def _child(variant: str, big: int, small: int, small_reps: int, workers: int = WORKERS,
           batch: int = BATCH) -> dict[str, Any]:
    """Runs in the subprocess: one untimed and ``small_reps`` timed drains of ``small``, then ``big``."""
    pool = _NeonQueue(workers, batch) if variant == NEON else _TPEQueue(workers, batch)
    try:
        _drain(pool, small)  # warm-up at the small size
        smalls = [_drain(pool, small) for _ in range(small_reps)]
        big_run = _drain(pool, big, measure_memory=True)
    finally:
        pool.close()
    return {"variant": variant, "big": big, "small": small, "small_rates": [d["rate"] for d in smalls],
            "small_cpu_us": [d["cpu_us"] for d in smalls], **big_run}


def _in_subprocess(call: str, kwargs: dict[str, Any], timeout: float) -> Any:
    """``benchmarks.bench_scale.<call>(**kwargs)`` in a fresh interpreter; its JSON result."""
    root = Path(__file__).resolve().parent.parent
    code = (f"import json, sys, benchmarks.bench_scale as b; "
            f"print(json.dumps(b.{call}(**json.loads(sys.argv[1]))))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{call} subprocess failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ============================================================ queued drain
@dataclass
class QueuedRun:
    """One subprocess: the drain of ``big`` queued tasks, and of ``small`` ones before it."""

    variant: str
    big: int
    small: int
    rate: float  # tasks/s draining ``big``
    small_rates: list[float]
    cpu_us: float  # CPU time of the process per task, draining ``big`` (steadier than wall time)
    small_cpu_us: list[float]
    bytes_per_task: float
    fill_s: float  # time to queue the ``big`` tasks
    completed: int
    rss_before_mb: float = 0.0
    rss_queued_mb: float = 0.0

    @property
    def flat(self) -> float:
        """Rate at ``big`` over the median rate at ``small``: 1.0 is a flat per-task cost."""
        return self.rate / median(self.small_rates)


@dataclass
class ScaleResult:
    """Every repetition of both variants, and the paired comparisons of section 1 and 2."""

    runs: dict[str, list[QueuedRun]]

    def flat(self, variant: str) -> Spread:
        return spread(r.flat for r in self.runs[variant])

    def rate(self, variant: str) -> Spread:
        return spread(r.rate for r in self.runs[variant])

    def small_rate(self, variant: str) -> Spread:
        return spread(median(r.small_rates) for r in self.runs[variant])

    def cpu_growth(self, variant: str) -> Spread:
        """CPU per task at ``big`` over CPU per task at ``small``: 1.0 is a flat cost."""
        return spread(r.cpu_us / median(r.small_cpu_us) for r in self.runs[variant])

    def bytes_per_task(self, variant: str) -> Spread:
        return spread(r.bytes_per_task for r in self.runs[variant])

    def _paired(self, attr: str) -> Spread:
        return paired_ratios([getattr(r, attr) for r in self.runs[NEON]],
                             [getattr(r, attr) for r in self.runs[TPE]])

    @property
    def rate_vs_tpe(self) -> Spread:
        return self._paired("rate")

    @property
    def flat_vs_tpe(self) -> Spread:
        """NeonWorker's flatness over ThreadPoolExecutor's, per repetition (> 1: flatter)."""
        return self._paired("flat")

    @property
    def memory_vs_tpe(self) -> Spread:
        return self._paired("bytes_per_task")


def _queued_run(variant: str, big: int, small: int, small_reps: int, timeout: float) -> QueuedRun:
    got = _in_subprocess("_child", {"variant": variant, "big": big, "small": small,
                                    "small_reps": small_reps}, timeout)
    return QueuedRun(**{k: got[k] for k in QueuedRun.__dataclass_fields__})


def queued(big: int = 1_000_000, small: int = 10_000, small_reps: int = 9, reps: int = 4,
           timeout: float = 900.0) -> ScaleResult:
    """Sections 1 and 2: one subprocess per variant and repetition, in alternating order."""
    runs = interleave({v: partial(_queued_run, v, big, small, small_reps, timeout) for v in VARIANTS},
                      reps)
    return ScaleResult(runs)


# =================================================================== memory
@dataclass
class MemoryResult:
    """RSS of a fresh process running ``tasks`` no-op tasks through one worker, in MB."""

    tasks: int
    batch: int
    queue_size: int
    rss_before_mb: float
    rss_after_mb: float
    rss_peak_mb: float
    elapsed: float
    status: dict = field(default_factory=dict)

    @property
    def growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb

    @property
    def peak_growth_mb(self) -> float:
        return self.rss_peak_mb - self.rss_before_mb


def _memory_child(n: int, batch: int, queue_size: int) -> dict:
    """Runs in the subprocess: default settings (metrics on), a bounded queue, batches."""
    w = NeonWorker(WORKERS, queue_size).start()
    for f in w.add_tasks([Task(("warm", i), _noop) for i in range(batch)]):
        f.result()
    w.wait_for_completion()
    gc.collect()
    before = peak = _rss()
    t0 = _perf()
    previous: list = []
    for lo in range(0, n, batch):
        # add_tasks blocks while the bounded queue is full: the producer is held back.
        current = w.add_tasks([Task(i, _noop) for i in range(lo, min(n, lo + batch))])
        for f in previous:  # a user reads the results of one batch, then lets it go
            f.result()
        previous = current
        if (lo // batch) % 50 == 0:
            peak = max(peak, _rss())
    w.wait_for_completion()
    elapsed = _perf() - t0
    if w.metrics is not None:
        w.metrics.snapshot()  # fold what is pending: it counts too
    del previous, current
    gc.collect()
    after = _rss()
    status = w.get_status()
    w.shutdown()
    return {"tasks": n, "batch": batch, "queue_size": queue_size, "rss_before_mb": before / MB,
            "rss_after_mb": after / MB, "rss_peak_mb": max(peak, after) / MB, "elapsed": elapsed,
            "status": {k: v for k, v in status.items() if isinstance(v, (int, float, str))}}


def memory_growth(n: int = 1_000_000, batch: int = BATCH, queue_size: int = 10_000,
                  timeout: float = 900.0) -> MemoryResult:
    """Section 3: `_memory_child` in a fresh interpreter."""
    got = _in_subprocess("_memory_child", {"n": n, "batch": batch, "queue_size": queue_size}, timeout)
    return MemoryResult(**got)


# ====================================================================== run
TARGET_DRAIN = 1.5
TARGET_FLAT = 1.0
TARGET_MEMORY = 1.0
TARGET_GROWTH_MB = 100.0


def _queued_section(print_fn: PrintFn, big: int, small: int, small_reps: int,
                    reps: int) -> list[Target]:
    section(print_fn, f"Drain of {big:,} queued no-op tasks ({WORKERS} workers) against {small:,}, "
                      f"and memory per queued task; {reps} alternating repetitions, a subprocess each")
    t0 = _perf()
    res = queued(big, small, small_reps, reps)
    rows = []
    for v in VARIANTS:
        runs = res.runs[v]
        rows.append([v, res.small_rate(v).median, res.rate(v).median, res.flat(v).fmt(),
                     median([median(r.small_cpu_us) for r in runs]), median([r.cpu_us for r in runs]),
                     res.bytes_per_task(v).fmt(" B", 0), median([r.fill_s for r in runs]),
                     f"{min(r.completed for r in runs):,}/{big:,}"])
    print_fn(table(["variant", f"{small:,} tasks/s", f"{big:,} tasks/s", f"rate {big:,} / {small:,}",
                    f"CPU us/task {small:,}", f"CPU us/task {big:,}", "bytes per queued task",
                    "queueing s", "completed (min)"], rows))
    print_fn(f"NeonWorker vs ThreadPoolExecutor, medians of per-repetition paired ratios [min, max]: "
             f"drain rate {res.rate_vs_tpe.fmt()} (per repetition: {res.rate_vs_tpe.each()}), "
             f"flatness {res.flat_vs_tpe.fmt()} (> 1: flatter), "
             f"memory per queued task {res.memory_vs_tpe.fmt()}. At {small:,}: median of "
             f"{small_reps} drains after an untimed one. CPU: this process's, all threads, per task "
             f"drained (less moved by other load than wall time); CPU at {big:,} / at {small:,}: "
             f"NeonWorker {res.cpu_growth(NEON).fmt()}, ThreadPoolExecutor {res.cpu_growth(TPE).fmt()} "
             f"({_perf() - t0:.1f}s)")
    for v in VARIANTS:
        for r in res.runs[v]:
            if r.completed != big:
                print_fn(f"WARNING: {v}: {r.completed:,} of {big:,} tasks completed")
    neon_flat, tpe_flat = res.flat(NEON), res.flat(TPE)
    return [
        ratio_target(f"drain rate, {big:,} queued no-op tasks, {WORKERS} workers, vs TPE",
                     res.rate_vs_tpe, TARGET_DRAIN),
        Target(f"rate at {big:,} / own rate at {small:,}, NeonWorker's over TPE's (flatter)",
               f"{res.flat_vs_tpe.fmt()} ({neon_flat.median:.2f}x vs {tpe_flat.median:.2f}x)",
               f">= {TARGET_FLAT:.1f}x", res.flat_vs_tpe.median >= TARGET_FLAT),
        ratio_target(f"memory per queued no-op task ({big:,} queued) vs TPE", res.memory_vs_tpe,
                     TARGET_MEMORY, at_least=False),
    ]


def _growth_section(print_fn: PrintFn, n: int) -> list[Target]:
    section(print_fn, f"Memory growth: {n:,} no-op tasks through one worker (subprocess)")
    t0 = _perf()
    mem = memory_growth(n, BATCH, 10_000)
    print_fn(table(["tasks", "batch", "queue_size", "RSS before MB", "RSS after MB", "growth MB",
                    "peak growth MB", "tasks/s"],
                   [[mem.tasks, mem.batch, mem.queue_size, f"{mem.rss_before_mb:.1f}",
                     f"{mem.rss_after_mb:.1f}", f"{mem.growth_mb:.1f}", f"{mem.peak_growth_mb:.1f}",
                     mem.tasks / mem.elapsed]]))
    st = mem.status
    print_fn(f"completed {st.get('completed_tasks', 0):,} of {st.get('submitted_tasks', 0):,} "
             f"({_perf() - t0:.1f}s)")
    growth = max(mem.growth_mb, mem.peak_growth_mb)
    return [Target(f"RSS growth over {n:,} tasks through one worker", f"{growth:.1f} MB",
                   f"< {TARGET_GROWTH_MB:.0f} MB", growth < TARGET_GROWTH_MB)]


def run(print_fn: PrintFn = print, quick: bool = False, reps: int | None = None) -> list[Target]:
    """Measure and print the three sections; return the targets (see the module docstring)."""
    if quick:
        big, small, small_reps, r, growth_n = 20_000, 2_000, 2, 2, 20_000
    else:
        big, small, small_reps, r, growth_n = 1_000_000, 10_000, 9, 4, 1_000_000
    print_fn(f"machine: {machine_line()}")
    targets = _queued_section(print_fn, big, small, small_reps, reps or r)
    targets += _growth_section(print_fn, growth_n)
    return targets


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
