"""Execution backends: what processes buy on CPU-bound work, and what the Dask backend costs.

1. CPU-bound batch: 200 tasks of ~20 ms of pure-Python work (a loop calibrated
   on this machine) on 2 workers, threads vs processes. Threads hold the GIL,
   so they run one task at a time; processes run two. The process pool is
   warmed up before the clock starts (its start-up is printed apart).
   Goal: processes >= 1.7x faster.
2. Dask per-task overhead, no-op tasks on one LocalCluster (2 worker
   processes, 1 thread each, 127.0.0.1): Dask's own ``client.submit`` of every
   task then ``client.gather``, beside NeonWorker with the Dask backend on the
   same client (``max_workers`` = tasks in flight; each worker thread submits
   one task and waits for it). Also printed: Dask with the same number in
   flight, and NeonWorker with one task in flight per cluster thread (the
   round trip, which dominates when ``max_workers`` equals the cluster's
   threads). Goal: NeonWorker <= 1.2x Dask's own per-task time.

Run: ``.venv/bin/python -m benchmarks --only backends`` or
``.venv/bin/python -m benchmarks.bench_backends``. On a shared 2-core machine
the figures move with the load average printed first.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_backends.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._report import PrintFn, Target, machine_line, median, section, table
else:
    from ._report import PrintFn, Target, machine_line, median, section, table

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
    one = median([_timed(burn, loops) for _ in range(3)])
    section(print_fn, f"CPU-bound batch: {n_tasks} tasks x {one * 1e3:.1f} ms of pure Python, "
                      f"{WORKERS} workers, median of {reps}")
    threads, procs, starts = [], [], []
    for _ in range(reps):  # interleaved, so that a change of load hits both
        threads.append(_batch("threads", n_tasks, loops)[0])
        elapsed, start = _batch(ProcessBackend(), n_tasks, loops)
        procs.append(elapsed)
        starts.append(start)
    t_thr, t_proc = median(threads), median(procs)
    ideal = n_tasks * one / WORKERS
    speedup = t_thr / t_proc
    print_fn(table(["backend", "batch s", "tasks/s", "vs ideal (n x t / workers)"],
                   [["threads", t_thr, n_tasks / t_thr, f"{ideal / t_thr:.0%}"],
                    ["processes", t_proc, n_tasks / t_proc, f"{ideal / t_proc:.0%}"]]))
    print_fn(f"processes are {speedup:.2f}x faster than threads (goal >= 1.7x); the pool's start-up "
             f"and warm-up, not counted: {median(starts):.2f}s")
    return [Target("processes vs threads, CPU-bound, 2 workers", f"{speedup:.2f}x", ">= 1.7x",
                   speedup >= 1.7)]


def _neon_on_dask(client, n_tasks: int, in_flight: int) -> float:
    w = NeonWorker(in_flight, queue_size=0, backend=DaskBackend(client)).start()
    try:
        w.submit(noop, -1).result()  # warm: threads, first submit
        t0 = _perf()
        w.add_tasks([Task(i, noop, (i,)) for i in range(n_tasks)])
        w.wait_for_completion()
        elapsed = _perf() - t0
    finally:
        w.shutdown()
    return elapsed


def _dask_all(client, n_tasks: int) -> float:
    t0 = _perf()
    futs = [client.submit(noop, i, pure=False) for i in range(n_tasks)]
    client.gather(futs)
    elapsed = _perf() - t0
    del futs
    return elapsed


def _dask_window(client, n_tasks: int, in_flight: int) -> float:
    from distributed import as_completed

    t0 = _perf()
    it = iter(range(n_tasks))
    ac = as_completed([client.submit(noop, next(it), pure=False) for _ in range(in_flight)],
                      loop=client.loop)
    for f in ac:
        f.result()
        i = next(it, None)
        if i is not None:
            ac.add(client.submit(noop, i, pure=False))
    return _perf() - t0


def _dask(print_fn: PrintFn, n_tasks: int, reps: int) -> list[Target]:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        print_fn("dask: not available (pip install 'neon_nb[dask]')")
        return []
    section(print_fn, f"Dask per-task overhead: {n_tasks} no-op tasks, LocalCluster of 2 processes x "
                      f"1 thread on 127.0.0.1, median of {reps}")
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster, set_as_default=False)
    try:
        client.gather([client.submit(noop, i, pure=False) for i in range(20)])  # warm
        own, neon, window = [], [], []
        for _ in range(reps):
            own.append(_dask_all(client, n_tasks))
            neon.append(_neon_on_dask(client, n_tasks, DASK_IN_FLIGHT))
            window.append(_dask_window(client, n_tasks, DASK_IN_FLIGHT))
        small = max(50, n_tasks // 5)
        rtt_neon = _neon_on_dask(client, small, 2) / small
        rtt_dask = _dask_window(client, small, 2) / small
    finally:
        client.close()
        cluster.close()
    t_own, t_neon, t_win = (median(x) / n_tasks for x in (own, neon, window))
    ratio = t_neon / t_own
    print_fn(table(["variant", "in flight", "ms/task", "tasks/s", "vs client.submit"],
                   [["Dask client.submit + gather", "all", t_own * 1e3, 1 / t_own, "1.00x"],
                    ["NeonWorker, Dask backend", DASK_IN_FLIGHT, t_neon * 1e3, 1 / t_neon,
                     f"{ratio:.2f}x"],
                    ["Dask client.submit, window", DASK_IN_FLIGHT, t_win * 1e3, 1 / t_win,
                     f"{t_win / t_own:.2f}x"],
                    ["NeonWorker, Dask backend", 2, rtt_neon * 1e3, 1 / rtt_neon,
                     f"{rtt_neon / t_own:.2f}x"],
                    ["Dask client.submit, window", 2, rtt_dask * 1e3, 1 / rtt_dask,
                     f"{rtt_dask / t_own:.2f}x"]]))
    print_fn(f"NeonWorker on Dask: {ratio:.2f}x Dask's own per-task time (goal <= 1.2x) with "
             f"max_workers={DASK_IN_FLIGHT}; with 2 in flight both pay Dask's round trip "
             f"(batched sends of 2-10 ms) per task")
    return [Target(f"Dask backend per-task time vs client.submit ({DASK_IN_FLIGHT} in flight)",
                   f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2)]


def run(print_fn: PrintFn = print, quick: bool = False) -> list[Target]:
    """Measure and print both benchmarks; return the targets (see the module docstring)."""
    print_fn(f"machine: {machine_line()}")
    if quick:
        targets = _cpu(print_fn, 40, 1)
        targets += _dask(print_fn, 100, 1)
    else:
        targets = _cpu(print_fn, 200, 3)
        targets += _dask(print_fn, 600, 3)
    return targets


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
