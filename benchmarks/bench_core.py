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

The method is the one of `benchmarks._report`: every repetition runs each
variant once, in alternating order (ABC, CBA, ...); each pool is warmed up before
it is timed; a comparison is the median of the per-repetition paired ratios, printed
with its [min, max]. Futures are held the way a user holds them: kept in a list,
then each one's ``result()`` read. The figures at 10^6 tasks (memory per queued
task, drain rate) are in `benchmarks.bench_scale`.
"""

from __future__ import annotations

import gc
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from neon_nb import NeonWorker, Task

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

__all__ = [
    "IOResult",
    "OverheadResult",
    "ThroughputResult",
    "io_efficiency",
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
IDLE_MODES = (MODE_TASK, MODE_TPE)


def _noop() -> None:
    return None


def _probe(starts: list, i: int) -> None:
    starts[i] = _perf()


# ============================================================== throughput
class _Flood(NamedTuple):
    rate: float  # tasks per second
    latencies_us: np.ndarray  # submit-to-start of every task
    lost: int  # futures add_tasks returned as None (a core bug if ever > 0)


@dataclass
class ThroughputResult:
    """No-op throughput and submit-to-start latency of one mode, one value per repetition."""

    mode: str
    tasks: int
    rates: list[float]  # tasks per second
    vs_tpe: Spread  # paired ratio of the rate to ThreadPoolExecutor's (1.0 for itself)
    flood_p50_us: float  # medians over the repetitions
    flood_p99_us: float
    idle_p50_us: Spread | None = None  # per repetition: p50 of idle_n tasks
    idle_p99_us: float | None = None
    idle_vs_tpe: Spread | None = None  # paired ratio of idle p50 to ThreadPoolExecutor's
    lost_futures: int = 0

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def reps(self) -> int:
        return len(self.rates)


def _warm_neon(w: NeonWorker, n: int = 200) -> None:
    for f in w.add_tasks([Task(("warm", i), _noop) for i in range(n)]):
        if f is not None:
            f.result()
    w.wait_for_completion()
    gc.collect()


def _flood_neon(n: int, workers: int, batch: int | None) -> _Flood:
    starts = [0.0] * n
    submits = [0.0] * (n if batch is None else -(-n // batch))
    w = NeonWorker(workers, 0).start()
    lost = 0
    try:
        _warm_neon(w)
        futures: list[Future | None] = []
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
    return _Flood(n / elapsed, (np.asarray(starts) - sub) * 1e6, lost)


def _flood_tpe(n: int, workers: int) -> _Flood:
    starts = [0.0] * n
    submits = [0.0] * n
    with ThreadPoolExecutor(workers) as ex:
        for f in [ex.submit(_noop) for _ in range(200)]:
            f.result()
        gc.collect()
        futures: list[Future] = []
        t0 = _perf()
        submit = ex.submit
        append = futures.append
        for i in range(n):
            submits[i] = _perf()
            append(submit(_probe, starts, i))
        for f in futures:
            f.result()
        elapsed = _perf() - t0
    return _Flood(n / elapsed, (np.asarray(starts) - np.asarray(submits)) * 1e6, 0)


def _idle_latency(mode: str, n: int, workers: int) -> np.ndarray:
    """Submit one task to an idle pool, wait for it, repeat: the pool's pick-up latency in us."""
    starts = [0.0] * n
    submits = [0.0] * n
    if mode == MODE_TPE:
        with ThreadPoolExecutor(workers) as ex:
            for f in [ex.submit(_noop) for _ in range(50)]:
                f.result()
            for i in range(n):
                submits[i] = _perf()
                ex.submit(_probe, starts, i).result()
    else:
        w = NeonWorker(workers, 0).start()
        try:
            _warm_neon(w, 50)
            for i in range(n):
                submits[i] = _perf()
                w.add_task(Task(i, _probe, (starts, i))).result()
        finally:
            w.shutdown()
    return (np.asarray(starts) - np.asarray(submits)) * 1e6


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def throughput(n: int = 50_000, reps: int = 5, workers: int = WORKERS, batch: int = BATCH,
               idle_n: int = 2_000, warmup: bool = True) -> list[ThroughputResult]:
    """No-op throughput and latency of the three modes (paired, alternating repetitions).

    The idle latency is its own interleaved series: ``reps`` repetitions of ``idle_n`` tasks
    on each idle pool (none if ``idle_n`` is 0; `add_tasks` has none: it is one call per batch).
    """
    floods = interleave({
        MODE_TASK: lambda: _flood_neon(n, workers, None),
        MODE_BATCH: lambda: _flood_neon(n, workers, batch),
        MODE_TPE: lambda: _flood_tpe(n, workers),
    }, reps, warmup=warmup)
    idle: dict[str, list[np.ndarray]] = {}
    if idle_n:
        idle = interleave({m: partial(_idle_latency, m, idle_n, workers) for m in IDLE_MODES},
                          reps, warmup=warmup)
    tpe_rates = [f.rate for f in floods[MODE_TPE]]
    tpe_idle = [_pct(x, 50) for x in idle.get(MODE_TPE, [])]
    results = []
    for mode in MODES:
        runs = floods[mode]
        rates = [f.rate for f in runs]
        result = ThroughputResult(
            mode=mode if mode != MODE_BATCH else f"{mode} ({batch:,}/batch)", tasks=n, rates=rates,
            vs_tpe=paired_ratios(rates, tpe_rates),
            flood_p50_us=median([_pct(f.latencies_us, 50) for f in runs]),
            flood_p99_us=median([_pct(f.latencies_us, 99) for f in runs]),
            lost_futures=sum(f.lost for f in runs))
        if mode in idle:
            p50 = [_pct(x, 50) for x in idle[mode]]
            result.idle_p50_us = spread(p50)
            result.idle_p99_us = median([_pct(x, 99) for x in idle[mode]])
            result.idle_vs_tpe = paired_ratios(p50, tpe_idle)
        results.append(result)
    return results


# ================================================================ IO-bound
@dataclass
class IOResult:
    """Sleeping tasks: elapsed time (one per repetition) against ``tasks * duration / workers``."""

    mode: str
    workers: int
    tasks: int
    duration: float
    elapsed: list[float]  # seconds, one per repetition
    ideal: float
    vs_tpe: Spread | None = None  # paired ratio of the share of ideal to ThreadPoolExecutor's

    @property
    def share(self) -> Spread:
        """Share of the ideal time, per repetition."""
        return spread(self.ideal / e for e in self.elapsed)

    @property
    def efficiency(self) -> float:
        return self.share.median


def _io_neon(tasks: int, duration: float, workers: int, batch: bool) -> float:
    w = NeonWorker(workers, 0).start()
    try:
        # Warm-up: one sleeping task per thread, all at once, so every thread has run.
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
    """IO-bound efficiency for each mode and worker count (paired, alternating repetitions)."""
    results = []
    for workers in worker_counts:
        times = interleave({
            MODE_TASK: partial(_io_neon, tasks, duration, workers, False),
            MODE_BATCH: partial(_io_neon, tasks, duration, workers, True),
            MODE_TPE: partial(_io_tpe, tasks, duration, workers),
        }, reps)
        for mode in IO_MODES:
            # A share of the ideal is ideal / elapsed: the ratio of shares is TPE's time / this one's.
            vs = None if mode == MODE_TPE else paired_ratios(times[MODE_TPE], times[mode])
            results.append(IOResult(mode, workers, tasks, duration, times[mode],
                                    tasks * duration / workers, vs))
    return results


# ========================================================= metrics overhead
@dataclass
class OverheadResult:
    """No-op throughput (add_tasks batches) with metrics + one thread subscriber, and without."""

    tasks: int
    rates_off: list[float]  # one per repetition
    rates_on: list[float]
    delivered: int = 0  # events the subscriber received over all repetitions
    dropped: int = 0  # events its bounded buffer dropped

    @property
    def ratio(self) -> Spread:
        """Paired per-repetition ratio: metrics on + subscriber / metrics off."""
        return paired_ratios(self.rates_on, self.rates_off)

    @property
    def rate_off(self) -> float:
        return median(self.rates_off)

    @property
    def rate_on(self) -> float:
        return median(self.rates_on)


def _overhead_once(n: int, workers: int, batch: int, on: bool) -> tuple[float, int, int]:
    w = NeonWorker(workers, 0, enable_metrics=on).start()
    sub = w.subscribe(lambda batch: None, on="thread") if on else None
    try:
        _warm_neon(w)
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
                     batch: int = BATCH, warmup: bool = True) -> OverheadResult:
    """Side by side, alternating: metrics off; metrics on + one ``on="thread"`` subscriber."""
    runs = interleave({"off": lambda: _overhead_once(n, workers, batch, False),
                       "on": lambda: _overhead_once(n, workers, batch, True)}, reps, warmup=warmup)
    return OverheadResult(n, [r[0] for r in runs["off"]], [r[0] for r in runs["on"]],
                          sum(r[1] for r in runs["on"]), sum(r[2] for r in runs["on"]))


# ====================================================================== run
TARGET_ADD_TASK = 1.0
TARGET_BATCH = 2.0
TARGET_IO = {64: 0.95, 256: 0.60}
TARGET_OVERHEAD = 0.9


def _throughput_section(print_fn: PrintFn, n: int, reps: int, idle_n: int) -> list[Target]:
    section(print_fn, f"No-op throughput and submit-to-start latency ({WORKERS} workers, "
                      f"{n:,} tasks, {reps} alternating repetitions)")
    t0 = _perf()
    res = throughput(n, reps, WORKERS, BATCH, idle_n)
    print_fn(table(
        ["mode", "tasks/s", "vs TPE [min, max]", "flood p50 us", "flood p99 us", "idle p50 us",
         "idle p99 us", "idle p50 vs TPE"],
        [[x.mode, x.rate, _vs(x.vs_tpe, x.mode), x.flood_p50_us, x.flood_p99_us,
          None if x.idle_p50_us is None else x.idle_p50_us.median, x.idle_p99_us,
          None if x.idle_vs_tpe is None else _vs(x.idle_vs_tpe, x.mode)] for x in res]))
    print_fn("tasks/s and latencies: medians over the repetitions; vs TPE: median of the "
             "per-repetition ratios [min, max]. NeonWorker: default settings (metrics on), "
             "unbounded queue. flood = during the throughput run, idle = one task at a time on an "
             f"idle pool ({idle_n:,} per repetition, its own alternating series).")
    for x in res:
        if x.lost_futures:
            print_fn(f"WARNING: {x.mode}: add_tasks returned {x.lost_futures} None future(s) "
                     f"(a task finished before add_tasks built its return list)")
    print_fn(f"({_perf() - t0:.1f}s)")
    one = next(x for x in res if x.mode == MODE_TASK)
    batch = next(x for x in res if x.mode.startswith(MODE_BATCH))
    return [ratio_target(f"no-op throughput, add_task, {WORKERS} workers, vs ThreadPoolExecutor",
                         one.vs_tpe, TARGET_ADD_TASK),
            ratio_target(f"no-op throughput, add_tasks ({BATCH:,}/batch), vs ThreadPoolExecutor",
                         batch.vs_tpe, TARGET_BATCH)]


def _vs(ratio: Spread, mode: str) -> str:
    return "(baseline)" if mode == MODE_TPE else ratio.fmt()


def _io_section(print_fn: PrintFn, tasks: int, reps: int) -> list[Target]:
    section(print_fn, f"IO-bound efficiency ({tasks:,} tasks x 10 ms sleep, {reps} alternating "
                      f"repetitions)")
    t0 = _perf()
    io = io_efficiency(tasks, 0.010, tuple(TARGET_IO), reps)
    print_fn(table(["mode", "workers", "ideal s", "elapsed s", "of ideal [min, max]", "vs TPE"],
                   [[x.mode, x.workers, f"{x.ideal:.3f}", f"{median(x.elapsed):.3f}",
                     x.share.fmt("%", 1, 100), None if x.vs_tpe is None else x.vs_tpe.fmt()]
                    for x in io]))
    print_fn("of ideal = (tasks x duration / workers) / elapsed, per repetition; vs TPE: the "
             f"paired ratio of the shares ({_perf() - t0:.1f}s)")
    targets = []
    for x in io:
        if x.mode == MODE_TASK:
            goal = TARGET_IO[x.workers]
            tpe = next(t for t in io if t.mode == MODE_TPE and t.workers == x.workers)
            targets.append(Target(
                f"IO-bound {tasks:,} x 10 ms, {x.workers} workers, share of ideal (add_task)",
                f"{x.share.fmt('%', 1, 100)} (TPE {tpe.share.median:.1%})", f">= {goal:.0%}",
                x.efficiency >= goal))
    return targets


def _overhead_section(print_fn: PrintFn, n: int, reps: int) -> list[Target]:
    section(print_fn, f"Metrics overhead (add_tasks batches, {WORKERS} workers, {n:,} tasks, "
                      f"{reps} alternating repetitions)")
    t0 = _perf()
    ov = metrics_overhead(n, reps, WORKERS, BATCH)
    print_fn(table(["configuration", "tasks/s", "vs off [min, max]"],
                   [["enable_metrics=False", ov.rate_off, "1.00x"],
                    ['enable_metrics=True + 1 on="thread" subscriber', ov.rate_on, ov.ratio.fmt()]]))
    print_fn(f"subscriber: {ov.delivered:,} events delivered, {ov.dropped:,} dropped by its bounded "
             f"buffer ({_perf() - t0:.1f}s)")
    return [ratio_target('metrics + one on="thread" subscriber vs metrics off', ov.ratio,
                         TARGET_OVERHEAD)]


def run(print_fn: PrintFn = print, quick: bool = False, reps: int | None = None) -> list[Target]:
    """Run every core benchmark, print its table, and return the targets."""
    if quick:
        n, r, io_tasks, io_reps, idle_n = 2_000, 2, 200, 2, 200
    else:
        n, r, io_tasks, io_reps, idle_n = 50_000, 6, 2_000, 4, 2_000
    if reps is not None:
        r = io_reps = reps
    print_fn(f"machine: {machine_line()}")
    targets = _throughput_section(print_fn, n, r, idle_n)
    targets += _io_section(print_fn, io_tasks, io_reps)
    targets += _overhead_section(print_fn, n, r)
    return targets
