"""The journal's storage layer: outcomes through ``Journal.write()`` -> ``on_durable``.

1. Throughput by call size: one producer hands N entries to ``write()`` in calls of 1, 4,
   16, 64, 256 and 512 entries (``max_pending`` 256, ``group_delay`` 2 ms), with
   ``synchronous="full"`` (the default: a commit survives a power loss) and ``"normal"``
   (it survives a process crash). Entries per second from the first ``write()`` to the last
   ``on_durable``, and the entries per transaction the writer formed.
2. Cost on the calling thread, per entry: ``write()`` alone (entries built beforehand), and
   building the entry as the worker will (``key``, ``encode_result`` of a small result,
   ``JournalEntry.succeeded``) plus ``write()``; ``max_pending`` above N so that the caller
   never waits for the writer (this is the cost, not the backpressure).
3. How the worker writes: 16 threads, one entry per ``write()`` call.
4. Latency of one entry, ``write()`` to ``on_durable`` (p50 / p99), with ``group_delay`` 0
   and 2 ms: what a resolved future waits for. Entries one at a time, each waited for, either
   back to back (a stream: the delay applies) or 5 ms apart (a quiet journal: it does not).
5. CPU per entry at the worker-level pace: 16 threads that each wait 2 ms (an IO-bound task)
   then build and write one entry. The CPU time of the whole process per entry, minus that of
   the same threads that only wait (the journal's share), and the writer thread's own part.
   Under the GIL this CPU is what the journal takes from the worker threads.

Goals, derived from the worker-level target (16 threads of 2 ms IO-bound tasks produce at
most 8,000 outcomes a second): (3) >= 8,000 entries/s with ``synchronous="full"``; (2) a
built-and-written entry costs the calling thread <= 20 us (1% of a 2 ms task).

6. Worker level: ``NeonWorker(journal=path)`` versus no journal, side by side, interleaved
   repetitions on the same machine: 2 ms IO-bound tasks (``time.sleep``) on 16 threads (goal
   >= 0.9x the throughput without a journal), and no-op tasks on 4 threads (stated, no goal:
   there the journal's work per task, a pickle, a row, a commit every few milliseconds and
   settling the future from the writer thread, is all there is). Tasks per second from the
   ``add_tasks`` call to ``wait_for_completion`` (which, with a journal, waits until every
   outcome is durable), on a started and warmed-up worker, a fresh journal file per run.

Run: ``.venv/bin/python -m benchmarks --only journal`` or
``.venv/bin/python -m benchmarks.bench_journal``. The journal files go to a temporary
directory (the default one of ``tempfile``: its disk decides the fsync cost).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/bench_journal.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks._report import PrintFn, Target, machine_line, median, section, table
else:
    from ._report import PrintFn, Target, machine_line, median, section, table

from neon_nb import NeonWorker, Task
from neon_nb._journal import Journal, JournalEntry

__all__ = ["CallerCost", "Latency", "Paced", "Throughput", "WorkerLevel", "caller_cost", "latency",
           "paced", "run", "threads", "throughput", "worker_level"]

_perf = time.perf_counter
CALL_SIZES = (1, 4, 16, 64, 256, 512)
SYNCHRONOUS = ("full", "normal")
THREADS = 16
TARGET_RATE = 8_000.0   # entries/s: 16 threads finishing 2 ms tasks
TARGET_COST_US = 20.0   # us per entry on the calling thread: 1% of a 2 ms task
TARGET_RATIO = 0.9      # worker throughput with a journal / without, 2 ms IO tasks, 16 threads


@dataclass
class Throughput:
    """Entries per second through write() -> on_durable (medians over ``reps``)."""

    label: str
    synchronous: str
    entries: int
    rate: float
    per_transaction: float


@dataclass
class CallerCost:
    """Microseconds per entry spent on the calling thread."""

    call_size: int
    write_us: float   # write() alone
    build_us: float   # key + encode_result + JournalEntry.succeeded + write()


@dataclass
class Paced:
    """CPU microseconds per entry with 16 producers paced like 2 ms tasks (medians)."""

    synchronous: str
    rate: float          # entries/s reached (the pace allows 16 / 2 ms = 8,000/s)
    journal_us: float    # process CPU per entry, minus the same threads without a journal
    writer_us: float     # the writer thread's CPU per entry
    per_transaction: float


@dataclass
class Latency:
    """write() -> on_durable of one entry, in milliseconds, entries ``gap`` seconds apart."""

    synchronous: str
    group_delay: float
    gap: float
    p50_ms: float
    p99_ms: float


@dataclass
class WorkerLevel:
    """Tasks per second through a NeonWorker, without and with a journal (medians)."""

    workload: str
    threads: int
    tasks: int
    off: float
    on: float

    @property
    def ratio(self) -> float:
        return self.on / self.off


class _Counter:
    """Counts entries in on_durable (the writer thread only) and signals the last one, noting
    the writer thread's CPU time then."""

    def __init__(self, total: int) -> None:
        self.total, self.seen, self.done = total, 0, threading.Event()
        self.writer_cpu = 0.0

    def __call__(self, entries) -> None:
        self.seen += len(entries)
        if self.seen >= self.total:
            self.writer_cpu = time.thread_time()
            self.done.set()


def _entries(n: int, tag: str) -> list[JournalEntry]:
    payload = Journal.encode_result(("a small result", 1.5))
    return [JournalEntry.succeeded(Journal.key((tag, i)), (tag, i), payload) for i in range(n)]


def _calls(entries: list[JournalEntry], size: int) -> list[list[JournalEntry]]:
    return [entries[lo:lo + size] for lo in range(0, len(entries), size)]


def _fresh(folder: Path, name: str) -> Path:
    path = folder / name
    for leftover in folder.glob(name + "*"):
        leftover.unlink()
    return path


def _one_throughput(folder: Path, n: int, size: int, synchronous: str) -> tuple[float, float]:
    calls = _calls(_entries(n, "t"), size)
    counter = _Counter(n)
    with Journal(_fresh(folder, "throughput.db"), synchronous=synchronous) as j:
        t0 = _perf()
        for call in calls:
            j.write(call, counter)
        counter.done.wait()
        elapsed = _perf() - t0
        stats = j.stats()
    return n / elapsed, stats.entries / max(1, stats.transactions)


def throughput(folder: Path, n: int = 20_000, sizes=CALL_SIZES, synchronous=SYNCHRONOUS,
               reps: int = 3) -> list[Throughput]:
    """Section 1: one producer, calls of each size; interleaved repetitions, medians."""
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(reps):
        for sync in synchronous:
            for size in sizes:
                runs.setdefault((sync, size), []).append(_one_throughput(folder, n, size, sync))
    return [Throughput(f"{size} per call", sync, n, median([r for r, _ in got]),
                       median([g for _, g in got])) for (sync, size), got in runs.items()]


def _one_cost(folder: Path, n: int, size: int) -> tuple[float, float]:
    prebuilt = _calls(_entries(n, "w"), size)
    counter = _Counter(n)
    with Journal(_fresh(folder, "cost.db"), max_pending=n + size) as j:
        t0 = _perf()
        for call in prebuilt:
            j.write(call, counter)
        write_only = (_perf() - t0) / n
        assert j.flush(timeout=120)
        counter = _Counter(n)
        t0 = _perf()
        for lo in range(0, n, size):
            call = [JournalEntry.succeeded(j.key(("b", i)), ("b", i), j.encode_result(("r", i * 1.5)))
                    for i in range(lo, min(n, lo + size))]
            j.write(call, counter)
        built = (_perf() - t0) / n
    return write_only * 1e6, built * 1e6


def caller_cost(folder: Path, n: int = 20_000, sizes=CALL_SIZES, reps: int = 3) -> list[CallerCost]:
    """Section 2: microseconds per entry on the calling thread (medians)."""
    out = []
    for size in sizes:
        got = [_one_cost(folder, n, size) for _ in range(reps)]
        out.append(CallerCost(size, median([w for w, _ in got]), median([b for _, b in got])))
    return out


def _one_threads(folder: Path, n_threads: int, per_thread: int, sync: str) -> tuple[float, float]:
    total = n_threads * per_thread
    counter = _Counter(total)
    start = threading.Barrier(n_threads + 1)
    with Journal(_fresh(folder, "threads.db"), synchronous=sync) as j:

        def produce(t: int) -> None:
            mine = _entries(per_thread, f"p{t}")
            start.wait()
            for e in mine:
                j.write([e], counter)

        workers = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
        for w in workers:
            w.start()
        start.wait()
        t0 = _perf()
        counter.done.wait()
        elapsed = _perf() - t0
        for w in workers:
            w.join()
        stats = j.stats()
    return total / elapsed, stats.entries / max(1, stats.transactions)


def threads(folder: Path, n_threads: int = THREADS, per_thread: int = 2_000,
            synchronous=SYNCHRONOUS, reps: int = 3) -> list[Throughput]:
    """Section 3: ``n_threads`` producers, one entry per call (medians)."""
    out = []
    for sync in synchronous:
        got = [_one_threads(folder, n_threads, per_thread, sync) for _ in range(reps)]
        out.append(Throughput(f"{n_threads} threads, 1 per call", sync, n_threads * per_thread,
                              median([r for r, _ in got]), median([g for _, g in got])))
    return out


def _paced_run(folder: Path, sync: str | None, n_threads: int, per_thread: int,
               task: float) -> tuple[float, float, float, float]:
    """(entries/s, process CPU s, writer CPU s, entries per transaction); ``sync`` None: no
    journal, the threads only wait."""
    total = n_threads * per_thread
    counter = _Counter(total)
    start = threading.Barrier(n_threads + 1)
    journal = Journal(_fresh(folder, "paced.db"), synchronous=sync) if sync else None

    def produce(t: int) -> None:
        pause = threading.Event()  # never set: its wait() stands for a task's IO
        start.wait()
        for i in range(per_thread):
            pause.wait(task)
            if journal is not None:
                tid = (t, i)
                journal.write([JournalEntry.succeeded(journal.key(tid), tid,
                                                      journal.encode_result(("r", i)))], counter)

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(n_threads)]
    for w in workers:
        w.start()
    start.wait()
    c0, t0 = time.process_time(), _perf()
    for w in workers:
        w.join()
    if journal is not None:
        counter.done.wait()
    elapsed, cpu = _perf() - t0, time.process_time() - c0
    per_txn = 0.0
    if journal is not None:
        stats = journal.stats()
        per_txn = stats.entries / max(1, stats.transactions)
        journal.close()
    return total / elapsed, cpu, counter.writer_cpu, per_txn


def paced(folder: Path, n_threads: int = THREADS, per_thread: int = 400, task: float = 0.002,
          synchronous=SYNCHRONOUS, reps: int = 3) -> list[Paced]:
    """Section 5: the journal's CPU per entry at the pace of 16 threads of 2 ms tasks."""
    total = n_threads * per_thread
    runs: dict[str | None, list[tuple[float, float, float, float]]] = {}
    for _ in range(reps):  # interleaved: a burst of load hits every variant alike
        for sync in (None, *synchronous):
            runs.setdefault(sync, []).append(_paced_run(folder, sync, n_threads, per_thread, task))
    base = median([cpu for _, cpu, _, _ in runs[None]])
    return [Paced(sync, median([r for r, _, _, _ in got]),
                  (median([cpu for _, cpu, _, _ in got]) - base) / total * 1e6,
                  median([w for _, _, w, _ in got]) / total * 1e6,
                  median([g for _, _, _, g in got]))
            for sync, got in runs.items() if sync is not None]


def latency(folder: Path, n: int = 100, synchronous=SYNCHRONOUS, delays=(0.0, 0.002),
            gaps=(0.0, 0.005)) -> list[Latency]:
    """Section 4: one entry at a time, each waited for, ``gap`` seconds apart."""
    out = []
    for sync in synchronous:
        for delay in delays:
            for gap in gaps:
                times = _latencies(folder, n, sync, delay, gap)
                out.append(Latency(sync, delay, gap, median(times),
                                   times[min(len(times) - 1, int(len(times) * 0.99))]))
    return out


def _latencies(folder: Path, n: int, sync: str, delay: float, gap: float) -> list[float]:
    times = []
    pause = threading.Event()  # never set: its wait() is the gap between two entries
    with Journal(_fresh(folder, "latency.db"), synchronous=sync, group_delay=delay) as j:
        for e in _entries(n, "l"):
            pause.wait(gap)
            one = _Counter(1)
            t0 = _perf()
            j.write([e], one)
            one.done.wait()
            times.append((_perf() - t0) * 1e3)
    return sorted(times)


def _io_task(seconds: float) -> None:
    time.sleep(seconds)


def _noop() -> None:
    return None


def _one_worker_run(folder: Path, journal: bool, n_threads: int, n: int, task: float | None,
                    tag: int) -> float:
    """Tasks/s of one batch on a fresh, warmed-up worker (``journal``: on a fresh file)."""
    fn, args = (_noop, ()) if task is None else (_io_task, (task,))
    w = NeonWorker(max_workers=n_threads, queue_size=0, retry_attempts=0, name=f"bench-{tag}",
                   journal=_fresh(folder, "worker.db") if journal else False)
    try:
        w.add_tasks([Task(("warm", i), fn, args) for i in range(4 * n_threads)])
        assert w.wait_for_completion(600)
        tasks = [Task(i, fn, args) for i in range(n)]
        t0 = _perf()
        w.add_tasks(tasks)
        assert w.wait_for_completion(600)  # with a journal: every outcome durable
        elapsed = _perf() - t0
    finally:
        w.shutdown(timeout=60)
    return n / elapsed


def worker_level(folder: Path, workloads: tuple[tuple[str, int, int, float | None], ...] = (
        ("2 ms IO", THREADS, 4_000, 0.002), ("no-op", 4, 20_000, None)),
        reps: int = 5) -> list[WorkerLevel]:
    """Section 6: (label, threads, tasks, task seconds or None for no-op); medians of
    ``reps`` runs, journal off and on interleaved."""
    out = []
    for label, n_threads, n, task in workloads:
        runs: dict[bool, list[float]] = {False: [], True: []}
        for rep in range(reps):
            for journal in (False, True) if rep % 2 == 0 else (True, False):
                runs[journal].append(_one_worker_run(folder, journal, n_threads, n, task, rep))
        out.append(WorkerLevel(label, n_threads, n, median(runs[False]), median(runs[True])))
    return out


def run(print_fn: PrintFn = print, quick: bool = False) -> list[Target]:
    """Measure and print the four sections; return the targets (see the module docstring)."""
    print_fn(f"machine: {machine_line()}")
    n, reps, per_thread, lat_n = (2_000, 1, 200, 20) if quick else (20_000, 3, 2_000, 100)
    folder = Path(tempfile.mkdtemp(prefix="neon_nb-bench-journal-"))
    try:
        section(print_fn, f"write() -> on_durable, one producer, {n:,} entries")
        rows = throughput(folder, n, reps=reps)
        print_fn(table(["call size", "synchronous", "entries/s", "entries/transaction"],
                       [[r.label, r.synchronous, r.rate, r.per_transaction] for r in rows]))
        section(print_fn, "cost on the calling thread, us per entry")
        costs = caller_cost(folder, n, reps=reps)
        print_fn(table(["call size", "write() only", "key + encode + entry + write()"],
                       [[c.call_size, c.write_us, c.build_us] for c in costs]))
        section(print_fn, f"{THREADS} threads, one entry per write() call")
        many = threads(folder, per_thread=per_thread, reps=reps)
        print_fn(table(["producers", "synchronous", "entries/s", "entries/transaction"],
                       [[r.label, r.synchronous, r.rate, r.per_transaction] for r in many]))
        section(print_fn, "latency of one entry, write() -> on_durable")
        lat = latency(folder, lat_n)
        print_fn(table(["synchronous", "group_delay (ms)", "entries", "p50 (ms)", "p99 (ms)"],
                       [[x.synchronous, x.group_delay * 1e3,
                         "5 ms apart" if x.gap else "back to back", x.p50_ms, x.p99_ms]
                        for x in lat]))
        section(print_fn, f"{THREADS} threads paced like 2 ms tasks, one entry each: CPU per entry")
        pace = paced(folder, per_thread=per_thread // 5, reps=reps)
        print_fn(table(["synchronous", "entries/s", "journal CPU (us)", "of it, writer (us)",
                        "entries/transaction"],
                       [[p.synchronous, p.rate, p.journal_us, p.writer_us, p.per_transaction]
                        for p in pace]))
        section(print_fn, "worker level: NeonWorker without and with journal=path (synchronous=full)")
        sizes = ((("2 ms IO", THREADS, 400, 0.002), ("no-op", 4, 2_000, None)) if quick else
                 (("2 ms IO", THREADS, 4_000, 0.002), ("no-op", 4, 20_000, None)))
        level = worker_level(folder, sizes, reps=1 if quick else 5)
        print_fn(table(["tasks", "threads", "n", "no journal (tasks/s)", "journal (tasks/s)", "ratio"],
                       [[x.workload, x.threads, x.tasks, x.off, x.on, f"{x.ratio:.2f}x"]
                        for x in level]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    full = next(r for r in many if r.synchronous == "full")
    one = next(c for c in costs if c.call_size == 1)
    io = level[0]
    return [
        Target(f"journal on / off, {io.workload} tasks x {io.threads} threads (worker)",
               f"{io.ratio:.2f}x", f">= {TARGET_RATIO}x", io.ratio >= TARGET_RATIO),
        Target(f"journal, {THREADS} threads x 1-entry writes (synchronous=full)",
               f"{full.rate:,.0f}/s", f">= {TARGET_RATE:,.0f}/s", full.rate >= TARGET_RATE),
        Target("journal, cost per entry on the calling thread (key, encode, write)",
               f"{one.build_us:.1f} us", f"<= {TARGET_COST_US:.0f} us", one.build_us <= TARGET_COST_US),
    ]


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
