"""Core benchmarks: NeonWorker against ThreadPoolExecutor, in one run on one machine.

* Throughput of no-op tasks and submit-to-start latency, for NeonWorker with one
  ``add_task`` at a time (Task construction included), NeonWorker with
  ``add_tasks`` batches, and ``ThreadPoolExecutor`` with the same worker count.
  Latency is measured here, not by the worker: the producer stamps
  ``perf_counter()`` just before the call that hands the task over, the task
  stamps it again when it starts. "flood" latency is taken during the
  throughput run (so it includes the time spent queued behind earlier tasks);
  "idle" latency submits one task at a time to an idle pool and waits for it.
* IO-bound efficiency: sleeping tasks as a share of the ideal
  (tasks x duration / workers).
* Metrics overhead: metrics on plus one ``on="thread"`` subscriber against
  metrics off, side by side; the goal is at least 0.9x the throughput of
  metrics off (what a live dashboard may cost).
* Memory: RSS growth over 1,000,000 no-op tasks through one worker, in a
  subprocess so that nothing else in this process counts; the goal is under
  100 MB (the history and the metrics are bounded, so memory stays flat).

Every figure is the median of several repetitions, interleaved across the
variants so that a burst of load on a shared machine hits them alike; each pool
is warmed up before it is timed. Futures are held the way a user holds them:
kept in a list, then each one's ``result()`` read.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neon_nb import NeonWorker, Task

from ._report import PrintFn, Target, machine_line, median, section, table

__all__ = [
    "IOResult",
    "MemoryResult",
    "OverheadResult",
    "ThroughputResult",
    "io_efficiency",
    "memory_growth",
    "metrics_overhead",
    "run",
    "throughput",
]

_perf = time.perf_counter
WORKERS = 4
BATCH = 1_000

MODE_TASK = "NeonWorker add_task"
MODE_BATCH = "NeonWorker add_tasks"
MODE_TPE = "ThreadPoolExecutor"
MODES = (MODE_TASK, MODE_BATCH, MODE_TPE)


def _noop() -> None:
    return None


def _probe(starts: list, i: int) -> None:
    starts[i] = _perf()


# ============================================================== throughput
@dataclass
class ThroughputResult:
    """No-op throughput and submit-to-start latency of one mode (medians over ``reps``)."""

    mode: str
    tasks: int
    reps: int
    rate: float  # tasks per second
    rates: list[float]
    flood_p50_us: float
    flood_p99_us: float
    idle_p50_us: float | None = None
    idle_p99_us: float | None = None
    lost_futures: int = 0  # futures add_tasks returned as None (a core bug if ever > 0)


def _flood_neon(n: int, workers: int, batch: int | None, **settings) -> tuple[float, np.ndarray, int]:
    starts = [0.0] * n
    submits = [0.0] * (n if batch is None else -(-n // batch))
    w = NeonWorker(workers, 0, **settings).start()
    lost = 0
    try:
        for f in w.add_tasks([Task(("warm", i), _noop) for i in range(200)]):
            if f is not None:
                f.result()
        w.wait_for_completion()
        gc.collect()
        futures = []
        t0 = _perf()
        if batch is None:
            add = w.add_task
            append = futures.append
            for i in range(n):
                submits[i] = _perf()
                append(add(Task(i, _probe, (starts, i))))
        else:
            for b, lo in enumerate(range(0, n, batch)):
                tasks = [Task(i, _probe, (starts, i)) for i in range(lo, min(n, lo + batch))]
                submits[b] = _perf()
                futures.extend(w.add_tasks(tasks))
        for f in futures:
            if f is None:
                lost += 1
            else:
                f.result()
        if lost:
            w.wait_for_completion()
        elapsed = _perf() - t0
    finally:
        w.shutdown()
    sub = np.asarray(submits) if batch is None else np.repeat(submits, batch)[:n]
    return n / elapsed, (np.asarray(starts) - sub) * 1e6, lost


def _flood_tpe(n: int, workers: int) -> tuple[float, np.ndarray, int]:
    starts = [0.0] * n
    submits = [0.0] * n
    with ThreadPoolExecutor(workers) as ex:
        for f in [ex.submit(_noop) for _ in range(200)]:
            f.result()
        gc.collect()
        futures = []
        t0 = _perf()
        submit = ex.submit
        append = futures.append
        for i in range(n):
            submits[i] = _perf()
            append(submit(_probe, starts, i))
        for f in futures:
            f.result()
        elapsed = _perf() - t0
    return n / elapsed, (np.asarray(starts) - np.asarray(submits)) * 1e6, 0


def _idle_latency(mode: str, n: int, workers: int) -> np.ndarray:
    """Submit one task to an idle pool, wait for it, repeat: the pool's pick-up latency in us."""
    starts = [0.0] * n
    submits = [0.0] * n
    if mode == MODE_TPE:
        ex = ThreadPoolExecutor(workers)
        for f in [ex.submit(_noop) for _ in range(50)]:
            f.result()
        for i in range(n):
            submits[i] = _perf()
            ex.submit(_probe, starts, i).result()
        ex.shutdown()
    else:
        w = NeonWorker(workers, 0).start()
        for i in range(50):
            w.add_task(Task(("warm", i), _noop)).result()
        for i in range(n):
            submits[i] = _perf()
            w.add_task(Task(i, _probe, (starts, i))).result()
        w.shutdown()
    return (np.asarray(starts) - np.asarray(submits)) * 1e6


def throughput(n: int = 50_000, reps: int = 5, workers: int = WORKERS, batch: int = BATCH,
               idle_n: int = 2_000) -> list[ThroughputResult]:
    """No-op throughput and latency of the three modes, repetitions interleaved."""
    rates: dict[str, list[float]] = {m: [] for m in MODES}
    p50: dict[str, list[float]] = {m: [] for m in MODES}
    p99: dict[str, list[float]] = {m: [] for m in MODES}
    lost = dict.fromkeys(MODES, 0)
    for _ in range(reps):
        for mode in MODES:
            if mode == MODE_TPE:
                rate, lat, nlost = _flood_tpe(n, workers)
            else:
                rate, lat, nlost = _flood_neon(n, workers, None if mode == MODE_TASK else batch)
            rates[mode].append(rate)
            p50[mode].append(float(np.percentile(lat, 50)))
            p99[mode].append(float(np.percentile(lat, 99)))
            lost[mode] += nlost
    results = []
    for mode in MODES:
        idle = None
        if idle_n and mode != MODE_BATCH:
            idle = _idle_latency(mode, idle_n, workers)
        results.append(ThroughputResult(
            mode=mode if mode != MODE_BATCH else f"{mode} ({batch:,}/batch)", tasks=n, reps=reps,
            rate=median(rates[mode]), rates=rates[mode],
            flood_p50_us=median(p50[mode]), flood_p99_us=median(p99[mode]),
            idle_p50_us=None if idle is None else float(np.percentile(idle, 50)),
            idle_p99_us=None if idle is None else float(np.percentile(idle, 99)),
            lost_futures=lost[mode]))
    return results


# ================================================================ IO-bound
@dataclass
class IOResult:
    """Sleeping tasks: elapsed time against the ideal ``tasks * duration / workers``."""

    mode: str
    workers: int
    tasks: int
    duration: float
    reps: int
    elapsed: float  # median seconds
    ideal: float

    @property
    def efficiency(self) -> float:
        return self.ideal / self.elapsed


def _io_neon(tasks: int, duration: float, workers: int, batch: bool) -> float:
    w = NeonWorker(workers, 0).start()
    try:
        for f in w.add_tasks([Task(("warm", i), time.sleep, (duration,)) for i in range(workers)]):
            if f is not None:
                f.result()
        w.wait_for_completion()
        gc.collect()
        t0 = _perf()
        if batch:
            futures = w.add_tasks([Task(i, time.sleep, (duration,)) for i in range(tasks)])
        else:
            add = w.add_task
            futures = [add(Task(i, time.sleep, (duration,))) for i in range(tasks)]
        for f in futures:
            if f is not None:
                f.result()
        w.wait_for_completion()
        return _perf() - t0
    finally:
        w.shutdown()


def _io_tpe(tasks: int, duration: float, workers: int) -> float:
    with ThreadPoolExecutor(workers) as ex:
        # Warm-up: each sleeping task makes the pool start one more thread, up to `workers`.
        for f in [ex.submit(time.sleep, duration) for _ in range(workers)]:
            f.result()
        gc.collect()
        t0 = _perf()
        futures = [ex.submit(time.sleep, duration) for _ in range(tasks)]
        for f in futures:
            f.result()
        return _perf() - t0


IO_MODES = (MODE_TASK, MODE_BATCH, MODE_TPE)


def io_efficiency(tasks: int = 2_000, duration: float = 0.010, worker_counts: tuple[int, ...] = (64, 256),
                  reps: int = 3) -> list[IOResult]:
    """IO-bound efficiency for each mode and worker count (median of ``reps``)."""
    results = []
    for workers in worker_counts:
        times: dict[str, list[float]] = {m: [] for m in IO_MODES}
        for _ in range(reps):
            for mode in IO_MODES:
                if mode == MODE_TPE:
                    times[mode].append(_io_tpe(tasks, duration, workers))
                else:
                    times[mode].append(_io_neon(tasks, duration, workers, mode == MODE_BATCH))
        for mode in IO_MODES:
            results.append(IOResult(mode, workers, tasks, duration, reps, median(times[mode]),
                                    tasks * duration / workers))
    return results


# ========================================================= metrics overhead
@dataclass
class OverheadResult:
    """No-op throughput (add_tasks batches) with metrics + one thread subscriber, and without."""

    tasks: int
    reps: int
    rate_off: float
    rate_on: float
    rates_off: list[float]
    rates_on: list[float]
    delivered: int = 0  # events the subscriber received over all repetitions
    dropped: int = 0  # events its bounded buffer dropped

    @property
    def ratio(self) -> float:
        return self.rate_on / self.rate_off


def _overhead_once(n: int, workers: int, batch: int, on: bool) -> tuple[float, int, int]:
    w = NeonWorker(workers, 0, enable_metrics=on).start()
    sub = w.subscribe(lambda batch: None, on="thread") if on else None
    try:
        for f in w.add_tasks([Task(("warm", i), _noop) for i in range(200)]):
            if f is not None:
                f.result()
        w.wait_for_completion()
        gc.collect()
        futures = []
        t0 = _perf()
        for lo in range(0, n, batch):
            futures.extend(w.add_tasks([Task(i, _noop) for i in range(lo, min(n, lo + batch))]))
        for f in futures:
            if f is not None:
                f.result()
        w.wait_for_completion()
        elapsed = _perf() - t0
    finally:
        w.shutdown()
    if sub is None:
        return n / elapsed, 0, 0
    sub.join(5.0)
    return n / elapsed, sub.delivered, sub.dropped


def metrics_overhead(n: int = 50_000, reps: int = 5, workers: int = WORKERS,
                     batch: int = BATCH) -> OverheadResult:
    """Side by side, repetitions interleaved: metrics off; metrics on + one ``on="thread"`` subscriber."""
    off: list[float] = []
    on: list[float] = []
    delivered = dropped = 0
    for _ in range(reps):
        off.append(_overhead_once(n, workers, batch, False)[0])
        rate, d, x = _overhead_once(n, workers, batch, True)
        on.append(rate)
        delivered += d
        dropped += x
    return OverheadResult(n, reps, median(off), median(on), off, on, delivered, dropped)


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
    import psutil

    proc = psutil.Process()
    mb = 1024 * 1024
    w = NeonWorker(WORKERS, queue_size).start()
    for f in w.add_tasks([Task(("warm", i), _noop) for i in range(batch)]):
        if f is not None:
            f.result()
    w.wait_for_completion()
    gc.collect()
    before = peak = proc.memory_info().rss
    t0 = _perf()
    previous: list = []
    for lo in range(0, n, batch):
        # add_tasks blocks while the bounded queue is full: the producer is held back.
        current = w.add_tasks([Task(i, _noop) for i in range(lo, min(n, lo + batch))])
        for f in previous:  # a user reads the results of one batch, then lets it go
            if f is not None:
                f.result()
        previous = current
        if (lo // batch) % 50 == 0:
            peak = max(peak, proc.memory_info().rss)
    w.wait_for_completion()
    elapsed = _perf() - t0
    w.metrics.snapshot()  # fold whatever is pending: it counts too
    del previous, current
    gc.collect()
    after = proc.memory_info().rss
    status = w.get_status()
    w.shutdown()
    return {"tasks": n, "batch": batch, "queue_size": queue_size, "rss_before_mb": before / mb,
            "rss_after_mb": after / mb, "rss_peak_mb": max(peak, after) / mb, "elapsed": elapsed,
            "status": {k: v for k, v in status.items() if isinstance(v, (int, float, str))}}


def memory_growth(n: int = 1_000_000, batch: int = BATCH, queue_size: int = 10_000,
                  timeout: float = 900.0) -> MemoryResult:
    """Run `_memory_child` in a fresh interpreter and return what it measured."""
    root = Path(__file__).resolve().parent.parent
    code = (f"import json, benchmarks.bench_core as b; "
            f"print(json.dumps(b._memory_child({int(n)}, {int(batch)}, {int(queue_size)})))")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory benchmark subprocess failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return MemoryResult(**json.loads(out.stdout.strip().splitlines()[-1]))


# ====================================================================== run
TARGET_ADD_TASK = 1.0
TARGET_BATCH = 2.0
TARGET_IO = {64: 0.95, 256: 0.60}
TARGET_OVERHEAD = 0.9
TARGET_MEMORY_MB = 100.0


def run(print_fn: PrintFn = print, quick: bool = False, reps: int | None = None) -> list[Target]:
    """Run every core benchmark, print its table, and return the targets."""
    if quick:
        n, r, io_tasks, io_reps, mem_n, idle_n = 2_000, 1, 200, 1, 20_000, 200
    else:
        n, r, io_tasks, io_reps, mem_n, idle_n = 50_000, 5, 2_000, 3, 1_000_000, 2_000
    if reps is not None:
        r = io_reps = reps
    targets: list[Target] = []
    print_fn(f"machine: {machine_line()}")

    section(print_fn, f"No-op throughput and submit-to-start latency ({WORKERS} workers, "
                      f"{n:,} tasks, median of {r})")
    t0 = _perf()
    res = throughput(n, r, WORKERS, BATCH, idle_n)
    tpe = next(x for x in res if x.mode == MODE_TPE)
    print_fn(table(
        ["mode", "tasks/s", "vs TPE", "flood p50 us", "flood p99 us", "idle p50 us", "idle p99 us"],
        [[x.mode, x.rate, f"{x.rate / tpe.rate:.2f}x", x.flood_p50_us, x.flood_p99_us,
          x.idle_p50_us, x.idle_p99_us] for x in res]))
    print_fn("NeonWorker: default settings (metrics on), unbounded queue. flood = during the "
             "throughput run, idle = one task at a time on an idle pool.")
    for x in res:
        if x.lost_futures:
            print_fn(f"WARNING: {x.mode}: add_tasks returned {x.lost_futures} None future(s) "
                     f"(a task finished before add_tasks built its return list)")
    print_fn(f"({_perf() - t0:.1f}s)")
    one = next(x for x in res if x.mode == MODE_TASK)
    batch = next(x for x in res if x.mode.startswith(MODE_BATCH))
    targets.append(_target("add_task throughput vs ThreadPoolExecutor", one.rate / tpe.rate,
                           TARGET_ADD_TASK))
    targets.append(_target("add_tasks throughput vs ThreadPoolExecutor", batch.rate / tpe.rate,
                           TARGET_BATCH))

    section(print_fn, f"IO-bound efficiency ({io_tasks:,} tasks x 10 ms sleep, median of {io_reps})")
    t0 = _perf()
    io = io_efficiency(io_tasks, 0.010, (64, 256), io_reps)
    print_fn(table(["mode", "workers", "ideal s", "elapsed s", "of ideal"],
                   [[x.mode, x.workers, f"{x.ideal:.3f}", f"{x.elapsed:.3f}", f"{x.efficiency:.0%}"]
                    for x in io]))
    print_fn(f"({_perf() - t0:.1f}s)")
    for x in io:
        if x.mode == MODE_TASK:
            goal = TARGET_IO[x.workers]
            targets.append(Target(f"IO-bound efficiency, {x.workers} workers (add_task)",
                                  f"{x.efficiency:.0%}", f">= {goal:.0%}", x.efficiency >= goal))

    section(print_fn, f"Metrics overhead (add_tasks batches, {WORKERS} workers, {n:,} tasks, median of {r})")
    t0 = _perf()
    ov = metrics_overhead(n, r, WORKERS, BATCH)
    print_fn(table(["configuration", "tasks/s", "ratio"],
                   [["enable_metrics=False", ov.rate_off, "1.00x"],
                    ['enable_metrics=True + 1 on="thread" subscriber', ov.rate_on, f"{ov.ratio:.2f}x"]]))
    print_fn(f"subscriber: {ov.delivered:,} events delivered, {ov.dropped:,} dropped by its bounded "
             f"buffer ({_perf() - t0:.1f}s)")
    targets.append(_target("metrics + subscriber vs metrics off", ov.ratio, TARGET_OVERHEAD))

    section(print_fn, f"Memory: {mem_n:,} no-op tasks through one worker (subprocess)")
    t0 = _perf()
    mem = memory_growth(mem_n, BATCH, 10_000)
    print_fn(table(["tasks", "batch", "queue_size", "RSS before MB", "RSS after MB", "growth MB",
                    "peak growth MB", "tasks/s"],
                   [[mem.tasks, mem.batch, mem.queue_size, f"{mem.rss_before_mb:.1f}",
                     f"{mem.rss_after_mb:.1f}", f"{mem.growth_mb:.1f}", f"{mem.peak_growth_mb:.1f}",
                     mem.tasks / mem.elapsed]]))
    st = mem.status
    print_fn(f"completed {st.get('completed_tasks', 0):,} of {st.get('submitted_tasks', 0):,} "
             f"({_perf() - t0:.1f}s)")
    growth = max(mem.growth_mb, mem.peak_growth_mb)
    targets.append(Target(f"RSS growth over {mem_n:,} tasks", f"{growth:.1f} MB",
                          f"< {TARGET_MEMORY_MB:.0f} MB", growth < TARGET_MEMORY_MB))
    return targets


def _target(name: str, ratio: float, goal: float) -> Target:
    return Target(name, f"{ratio:.2f}x", f">= {goal:.1f}x", ratio >= goal)
