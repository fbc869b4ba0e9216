"""Execution backends: what processes buy on CPU-bound work, and what the Dask backend costs.

1. CPU-bound batch: 200 tasks of ~20 ms of pure-Python work (a loop calibrated
   on this machine) on 2 workers, threads vs processes. Threads hold the GIL,
   so they run one task at a time; processes run two. The process pool is
   warmed up before the clock starts (its start-up is printed apart).
   Goal: processes >= 1.7x faster in every run: the judged figure is the
   minimum of the per-repetition paired speed-ups (the median is printed too).
2. Dask per-task overhead, no-op tasks on one LocalCluster (2 worker
   processes, 1 thread each, 127.0.0.1): Dask's own ``client.submit`` of every
   task then ``client.gather``, beside NeonWorker with the Dask backend on the
   same client (``max_workers`` = tasks in flight; each worker thread submits
   one task and waits for it). Also printed: plain Dask driven the same way
   (32 threads that each submit and wait: what NeonWorker's share of the
   cost is), and NeonWorker with one task in flight per cluster thread (the
   round trip, which dominates when ``max_workers`` equals the cluster's
   threads). Wall time, and CPU time of this process (client, scheduler and
   threads: steadier than wall time on a busy machine).
   Goal: NeonWorker <= 1.2x Dask's own per-task wall time.

Both use the method of `benchmarks._report`: alternating repetitions (ABC, CBA,
...), each comparison the median of the per-repetition paired ratios with its
[min, max].

Run: ``.venv/bin/python -m benchmarks --only backends`` or
``.venv/bin/python -m benchmarks.bench_backends``. On a shared 2-core machine
the figures move with the load average printed first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_backends.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._report import (
        PrintFn,
        Target,
        interleave,
        machine_line,
        median,
        paired_ratios,
        ratio_target,
        section,
        table,
    )
else:
    from ._report import (
        PrintFn,
        Target,
        interleave,
        machine_line,
        median,
        paired_ratios,
        ratio_target,
        section,
        table,
    )

from neon_nb import NeonWorker, Task
from neon_nb.backends import DaskBackend, ProcessBackend

__all__ = ["run"]

_perf = time.perf_counter
WORKERS = 2
TASK_MS = 20.0
DASK_IN_FLIGHT = 32


def burn(n: int) -> int:
    """Pure-Python CPU work: holds the GIL for its whole duration."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1_000_003
    return acc


def noop(i: int) -> int:
    return i


def _calibrate(ms: float) -> int:
    """Loop count for ``burn`` to take about ``ms`` on this machine (best of a few tries)."""
    n = 20_000
    best = min(_timed(burn, n) for _ in range(5))
    return max(1, int(n * (ms / 1e3) / best))


def _timed(fn, *args) -> float:
    t0 = _perf()
    fn(*args)
    return _perf() - t0


def _batch(backend, n_tasks: int, loops: int) -> tuple[float, float]:
    """(seconds for the batch, seconds to start the worker and warm its backend)."""
    t0 = _perf()
    w = NeonWorker(WORKERS, queue_size=0, backend=backend).start()
    try:
        # Warm-up: one task per worker thread at once, so every process of the pool exists.
        for f in w.add_tasks([Task(f"warm{i}", burn, (loops,)) for i in range(WORKERS)]):
            f.result()
        warm = _perf() - t0
        t0 = _perf()
        w.add_tasks([Task(i, burn, (loops,)) for i in range(n_tasks)])
        w.wait_for_completion()
        elapsed = _perf() - t0
        assert w.get_status()["completed_tasks"] == n_tasks + WORKERS
    finally:
        w.shutdown()
    return elapsed, warm


def _cpu(print_fn: PrintFn, n_tasks: int, reps: int) -> list[Target]:
    loops = _calibrate(TASK_MS)
    one = min(_timed(burn, loops) for _ in range(3))  # the least disturbed of 3
    section(print_fn, f"CPU-bound batch: {n_tasks} tasks x {one * 1e3:.1f} ms of pure Python, "
                      f"{WORKERS} workers, {reps} alternating repetitions")
    # A fresh ProcessBackend per run: its pool starts (and is warmed) inside _batch, untimed.
    def threads_run() -> tuple[float, float]:
        return _batch("threads", n_tasks, loops)

    def processes_run() -> tuple[float, float]:
        return _batch(ProcessBackend(), n_tasks, loops)

    runs = interleave({"threads": threads_run, "processes": processes_run}, reps)
    threads = [elapsed for elapsed, _ in runs["threads"]]
    procs = [elapsed for elapsed, _ in runs["processes"]]
    t_thr, t_proc = median(threads), median(procs)
    ideal = n_tasks * one / WORKERS
    speedup = paired_ratios(threads, procs)
    print_fn(table(["backend", "batch s", "tasks/s", "vs ideal (n x t / workers)"],
                   [["threads", t_thr, n_tasks / t_thr, f"{ideal / t_thr:.0%}"],
                    ["processes", t_proc, n_tasks / t_proc, f"{ideal / t_proc:.0%}"]]))
    print_fn(f"processes are {speedup.fmt()} faster than threads (median [min, max] of the "
             f"per-repetition paired ratios; goal >= 1.7x in every run: the min is judged); per "
             f"repetition: {speedup.each()}; the "
             f"pool's start-up and warm-up, not counted: {median([s for _, s in runs['processes']]):.2f}s")
    return [ratio_target(f"processes vs threads, CPU-bound {n_tasks} x {TASK_MS:.0f} ms, {WORKERS} workers",
                         speedup, 1.7, judge="min")]


def _clock(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: client, scheduler and worker threads)."""
    t0, c0 = _perf(), time.process_time()
    fn(*args)
    return _perf() - t0, time.process_time() - c0


def _neon_on_dask(client, n_tasks: int, in_flight: int) -> tuple[float, float]:
    w = NeonWorker(in_flight, queue_size=0, backend=DaskBackend(client)).start()
    try:
        w.submit(noop, -1).result()  # warm: threads, first submit

        def batch() -> None:
            w.add_tasks([Task(i, noop, (i,)) for i in range(n_tasks)])
            w.wait_for_completion()

        return _clock(batch)
    finally:
        w.shutdown()


def _dask_all(client, n_tasks: int) -> tuple[float, float]:
    return _clock(lambda: client.gather([client.submit(noop, i, pure=False) for i in range(n_tasks)]))


def _dask_threads(client, n_tasks: int, in_flight: int) -> tuple[float, float]:
    """Dask used as the backend uses it, without NeonWorker: threads that submit and wait."""
    def one(i: int) -> int:
        return client.submit(noop, i, pure=False).result()

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(one, range(in_flight)))  # warm: threads
        return _clock(lambda: list(pool.map(one, range(n_tasks))))


def _per_task(fn: Callable[..., tuple[float, float]], client: object, n_tasks: int,
              *more: int) -> Callable[[], tuple[float, float]]:
    """``fn(client, n_tasks, *more)`` as a variant returning (wall, CPU) seconds per task."""
    def variant() -> tuple[float, float]:
        wall, cpu = fn(client, n_tasks, *more)
        return wall / n_tasks, cpu / n_tasks
    return variant


def _dask(print_fn: PrintFn, n_tasks: int, reps: int) -> list[Target]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print_fn("dask: not available (pip install 'neon_nb[dask]')")
        return []
    section(print_fn, f"Dask per-task overhead: {n_tasks} no-op tasks, LocalCluster of 2 processes x "
                      f"1 thread on 127.0.0.1, {reps} alternating repetitions")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    small = max(50, n_tasks // 5)
    try:
        client.gather([client.submit(noop, i, pure=False) for i in range(20)])  # warm
        runs = interleave({
            "own": _per_task(_dask_all, client, n_tasks),
            "neon": _per_task(_neon_on_dask, client, n_tasks, DASK_IN_FLIGHT),
            "threads": _per_task(_dask_threads, client, n_tasks, DASK_IN_FLIGHT),
            "rtt": _per_task(_neon_on_dask, client, small, 2),
        }, reps, warmup=True)
    finally:
        client.close()
        cluster.close()

    def walls(name: str) -> list[float]:
        return [wall for wall, _ in runs[name]]

    def row(label: str, in_flight: object, name: str) -> list:
        vs = "(baseline)" if name == "own" else paired_ratios(walls(name), walls("own")).fmt()
        return [label, in_flight, median(walls(name)) * 1e3, median([c for _, c in runs[name]]) * 1e3, vs]

    ratio = paired_ratios(walls("neon"), walls("own"))
    print_fn(table(["variant", "in flight", "wall ms/task", "CPU ms/task", "wall vs submit all"],
                   [row("Dask: client.submit all, then gather", "all", "own"),
                    row("NeonWorker, Dask backend", DASK_IN_FLIGHT, "neon"),
                    row("Dask: threads that submit and wait", DASK_IN_FLIGHT, "threads"),
                    row(f"NeonWorker, Dask backend ({small} tasks)", 2, "rtt")]))
    print_fn(f"NeonWorker on Dask: {ratio.fmt()} Dask's own per-task time (goal <= 1.2x), "
             f"{paired_ratios(walls('neon'), walls('threads')).fmt()} Dask driven the same way "
             f"(threads that submit and wait); medians of per-repetition paired ratios [min, max]. "
             f"CPU is this process's (client, scheduler, threads). With 2 in flight each task pays a "
             f"full Dask round trip (batched sends every 2-10 ms).")
    return [ratio_target(f"Dask backend per task vs Dask's own client.submit ({DASK_IN_FLIGHT} in flight)",
                         ratio, 1.2, at_least=False)]


def run(print_fn: PrintFn = print, quick: bool = False, reps: int | None = None) -> list[Target]:
    """Measure and print both benchmarks; return the targets (see the module docstring)."""
    print_fn(f"machine: {machine_line()}")
    if quick:
        targets = _cpu(print_fn, 40, reps or 2)
        targets += _dask(print_fn, 100, reps or 2)
    else:
        targets = _cpu(print_fn, 200, reps or 4)
        targets += _dask(print_fn, 600, reps or 4)
    return targets


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
