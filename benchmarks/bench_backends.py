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
   one task and waits for it). Also printed: plain Dask driven the same way
   (32 threads that each submit and wait: what NeonWorker's share of the
   cost is), and NeonWorker with one task in flight per cluster thread (the
   round trip, which dominates when ``max_workers`` equals the cluster's
   threads). Wall time, and CPU time of this process (client, scheduler and
   threads: steadier than wall time on a busy machine).
   Goal: NeonWorker <= 1.2x Dask's own per-task wall time.

Run: ``.venv/bin/python -m benchmarks --only backends`` or
``.venv/bin/python -m benchmarks.bench_backends``. On a shared 2-core machine
the figures move with the load average printed first.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    one = min(_timed(burn, loops) for _ in range(3))  # the least disturbed of 3
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
        own, neon, threads = [], [], []
        for _ in range(reps):  # interleaved, so that a change of load hits every variant
            own.append(_dask_all(client, n_tasks))
            neon.append(_neon_on_dask(client, n_tasks, DASK_IN_FLIGHT))
            threads.append(_dask_threads(client, n_tasks, DASK_IN_FLIGHT))
        small = max(50, n_tasks // 5)
        wall, cpu = _neon_on_dask(client, small, 2)
        rtt = (wall / small, cpu / small)
    finally:
        client.close()
        cluster.close()

    def per_task(runs: list[tuple[float, float]]) -> tuple[float, float]:
        return median([r[0] for r in runs]) / n_tasks, median([r[1] for r in runs]) / n_tasks

    (w_own, c_own), (w_neon, c_neon), (w_thr, c_thr) = per_task(own), per_task(neon), per_task(threads)
    ratio = w_neon / w_own
    rows = [["Dask: client.submit all, then gather", "all", w_own, c_own, "1.00x"],
            ["NeonWorker, Dask backend", DASK_IN_FLIGHT, w_neon, c_neon, f"{ratio:.2f}x"],
            ["Dask: threads that submit and wait", DASK_IN_FLIGHT, w_thr, c_thr, f"{w_thr / w_own:.2f}x"],
            ["NeonWorker, Dask backend", 2, rtt[0], rtt[1], f"{rtt[0] / w_own:.2f}x"]]
    print_fn(table(["variant", "in flight", "wall ms/task", "CPU ms/task", "wall vs submit all"],
                   [[r[0], r[1], r[2] * 1e3, r[3] * 1e3, r[4]] for r in rows]))
    print_fn(f"NeonWorker on Dask: {ratio:.2f}x Dask's own per-task time (goal <= 1.2x), "
             f"{w_neon / w_thr:.2f}x Dask driven the same way (threads that submit and wait). "
             f"CPU is this process's (client, scheduler, threads). With 2 in flight each task pays a "
             f"full Dask round trip (batched sends every 2-10 ms).")
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
