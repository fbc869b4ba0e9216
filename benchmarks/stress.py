"""A randomized stress with hostile user code: ``python -m benchmarks.stress [--runs 50]``.

Each run starts a worker and throws at it, from several producer threads at once:

* tasks that succeed, fail and are retried, fail for good with an exception whose
  ``__str__`` raises, or raise ``SystemExit``;
* task ids of every kind: strings, tuples, objects whose hash changes while their task
  runs, and objects that all hash alike and whose ``__eq__`` raises;
* done-callbacks that raise (``RuntimeError``, ``KeyboardInterrupt``, ``SystemExit``) or
  call back into the worker (``get_status``, a short ``wait_for_completion``);
* an inline subscriber and a thread subscriber that raise now and then and call
  ``flush()`` from their own callbacks;
* cancellations from another thread, a resize and a pause/resume;
* and one shutdown, started at a random moment from a random place: a plain thread, a
  task, a done-callback, or the inline subscriber.

After each run it counts what must be zero: futures handed out that never resolved
("lost"), attempts that ran twice or tasks with two terminal events ("duplicated"),
counters that do not add up, and runs whose shutdown did not finish in time ("hangs").
The exit status is non-zero if any is not zero.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from neon_nb import EventKind, NeonWorker, Task, WorkerShutdownError

TERMINAL = {EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED, EventKind.TASK_CANCELLED}
SHUTDOWN_PLACES = ("thread", "task", "done_callback", "inline_subscriber")


class Transient(OSError):
    """Retried (the worker's filter is OSError)."""


class BrokenStr(ValueError):
    """Not retried; its ``__str__`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


class MutableId:
    """A task id whose hash changes when the task mutates it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(("mutable", self.n))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutableId) and other.n == self.n

    def __repr__(self) -> str:
        return f"MutableId({self.n})"


class CollidingId:
    """Every instance hashes alike; comparing two different ones raises."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return 4242

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        raise RuntimeError("__eq__ is broken")

    def __repr__(self) -> str:
        return f"CollidingId({self.n})"


@dataclass
class RunResult:
    seed: int
    place: str
    tasks: int
    lost: int = 0
    duplicated: int = 0
    unbalanced: int = 0
    hung: int = 0
    seconds: float = 0.0
    outcomes: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unbalanced or self.hung)


class _Run:
    """One run's worker, ledger and hostile actors."""

    def __init__(self, seed: int, producers: int, per_producer: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.producers = producers
        self.per_producer = per_producer
        self.place = self.rng.choice(SHUTDOWN_PLACES)
        self.stop_after = self.rng.randint(producers * per_producer // 4, producers * per_producer)
        self.w = NeonWorker(4, queue_size=256, name=f"hostile{seed}", retry_attempts=2,
                            retry_delay=0.001, retry_jitter=0.5, retry_on=(Transient,),
                            history_size=10, health_check_interval=0.05)
        self.lock = threading.Lock()
        self.attempts: dict[str, list[int]] = defaultdict(list)  # label -> attempts seen
        self.futures: dict[str, Any] = {}
        self.handed_out = 0
        self.events: list[tuple[EventKind, int]] = []  # (kind, label index) from the thread sub
        self.labels: dict[int, str] = {}  # id(task id object) -> label
        self.shutdown_started = threading.Event()
        self.reports: list[Any] = []

    # ------------------------------------------------------------------ tasks
    def make_task(self, p: int, i: int, prng: random.Random) -> Task:
        label = f"{p}/{i}"
        kind = prng.choice(("str", "tuple", "mutable", "colliding"))
        tid: Any = {"str": label, "tuple": (p, i), "mutable": MutableId(p * 100_000 + i),
                    "colliding": CollidingId(p * 100_000 + i)}[kind]
        self.labels[id(tid)] = label
        plan = prng.choices(("ok", "transient", "broken_str", "system_exit", "shutdown"),
                            weights=(70, 20, 5, 4, 1))[0]
        failures = prng.randint(1, 4)
        calls = [0]

        def run() -> str:
            calls[0] += 1
            with self.lock:
                self.attempts[label].append(calls[0])
            if kind == "mutable":
                tid.n += 1  # its hash changes while the worker holds it
            if plan == "transient" and calls[0] <= failures:
                raise Transient(label)
            if plan == "broken_str":
                raise BrokenStr()
            if plan == "system_exit":
                raise SystemExit(3)
            if plan == "shutdown" and self.place == "task" and self.handed_out >= self.stop_after:
                self.start_shutdown()
            return label

        return Task(tid, run, priority=prng.randint(-2, 2))

    def start_shutdown(self) -> None:
        if self.shutdown_started.is_set():
            return
        self.shutdown_started.set()
        cancel = self.rng.random() < 0.5
        self.reports.append(self.w.shutdown(timeout=30, cancel_pending=cancel))

    # -------------------------------------------------------------- callbacks
    def done_callback(self, fut: Any) -> None:
        r = random.random()
        if r < 0.05:
            raise RuntimeError("callback bug")
        if r < 0.08:
            raise KeyboardInterrupt
        if r < 0.10:
            raise SystemExit(1)
        if r < 0.20:
            self.w.get_status()
        elif r < 0.22:
            self.w.wait_for_completion(timeout=0.01)
        if self.place == "done_callback" and self.handed_out >= self.stop_after:
            self.start_shutdown()

    def inline_subscriber(self, batch: Any) -> None:
        if random.random() < 0.05:
            raise SystemExit(2)
        if random.random() < 0.05:
            self.inline.flush(timeout=0.1)
        if self.place == "inline_subscriber" and self.handed_out >= self.stop_after:
            self.start_shutdown()

    def thread_subscriber(self, batch: Any) -> None:
        for ev in batch:
            if ev.kind in TERMINAL or ev.kind is EventKind.TASK_SUBMITTED:
                self.events.append((ev.kind, ev.task_id))
        if random.random() < 0.05:
            self.thread_sub.flush(timeout=0.1)
        if random.random() < 0.05:
            raise KeyboardInterrupt

    # -------------------------------------------------------------- producers
    def producer(self, p: int, start: threading.Barrier) -> None:
        prng = random.Random(self.seed * 1000 + p)
        start.wait()
        try:
            for i in range(self.per_producer):
                task = self.make_task(p, i, prng)
                fut = self.w.add_task(task, timeout=30)
                fut.add_done_callback(self.done_callback)
                with self.lock:
                    self.futures[self.labels[id(task.id)]] = fut
                    self.handed_out += 1
        except WorkerShutdownError:
            pass

    def disturber(self, start: threading.Barrier, done: threading.Event) -> None:
        drng = random.Random(self.seed + 1)
        start.wait()
        while not done.is_set():
            with self.lock:
                futs = list(self.futures.values())[-50:]
            if futs:
                drng.choice(futs).cancel()
            r = drng.random()
            if r < 0.02:
                self.w.resize(drng.randint(1, 6))
            elif r < 0.03:
                self.w.pause()
                self.w.resume()
            if self.place == "thread" and self.handed_out >= self.stop_after:
                self.start_shutdown()
            done.wait(0.001)

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        t0 = time.monotonic()
        w = self.w
        w.start()
        self.inline = w.subscribe(self.inline_subscriber, on="inline")
        self.thread_sub = w.subscribe(self.thread_subscriber, on="thread", buffer_size=10**7)
        start = threading.Barrier(self.producers + 1)
        done = threading.Event()
        threads = [threading.Thread(target=self.producer, args=(p, start), daemon=True)
                   for p in range(self.producers)]
        disturber = threading.Thread(target=self.disturber, args=(start, done), daemon=True)
        for t in [*threads, disturber]:
            t.start()
        for t in threads:
            t.join(120)
        self.start_shutdown_if_nobody_did()
        done.set()
        disturber.join(30)
        hung = int(not _wait(lambda: w.state == "stopped", 60))
        self.thread_sub.join(30)
        return self.check(hung, time.monotonic() - t0)

    def start_shutdown_if_nobody_did(self) -> None:
        # The chosen place may never have fired (e.g. no task planned a shutdown).
        self.place += "" if self.shutdown_started.is_set() else " (then thread)"
        self.start_shutdown()

    def check(self, hung: int, seconds: float) -> RunResult:
        res = RunResult(self.seed, self.place, len(self.futures), hung=hung, seconds=seconds)
        for label, fut in self.futures.items():
            if not fut.done():
                res.lost += 1
            elif fut.cancelled():
                res.outcomes["cancelled"] += 1
            elif fut.exception() is not None:
                res.outcomes["failed"] += 1
            else:
                res.outcomes["succeeded"] += 1
                if fut.result() != label:
                    res.duplicated += 1
        for seen in self.attempts.values():
            if sorted(seen) != list(range(1, len(seen) + 1)):
                res.duplicated += 1
        st = self.w.get_status()
        parts = (st["queued_tasks"] + st["running_tasks"] + st["retry_waiting_tasks"]
                 + st["completed_tasks"] + st["failed_tasks"] + st["cancelled_tasks"])
        if parts != st["submitted_tasks"] or st["submitted_tasks"] != len(self.futures):
            res.unbalanced += 1
        terminal = Counter(id(t) for k, t in self.events if k in TERMINAL)
        res.duplicated += sum(1 for n in terminal.values() if n > 1)
        return res


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


def run_hostile(seed: int, producers: int = 6, per_producer: int = 1000) -> RunResult:
    """One run; see the module docstring."""
    return _Run(seed, producers, per_producer).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="runs in a row (50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first run (1)")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per producer (1000)")
    args = parser.parse_args(argv)
    logging.getLogger("neon_nb").setLevel(logging.CRITICAL)  # thousands of planned failures
    totals: Counter = Counter()
    t0 = time.monotonic()
    for k in range(args.runs):
        r = run_hostile(args.seed + k, per_producer=args.tasks)
        totals.update(tasks=r.tasks, lost=r.lost, duplicated=r.duplicated,
                      unbalanced=r.unbalanced, hung=r.hung, **r.outcomes)
        print(f"run {k + 1:3d} seed {r.seed:4d}  shutdown from {r.place:<30} {r.tasks:5d} tasks  "
              f"{dict(r.outcomes)}  lost {r.lost} dup {r.duplicated} unbalanced {r.unbalanced} "
              f"hung {r.hung}  {r.seconds:.1f}s", flush=True)
    bad = totals["lost"] + totals["duplicated"] + totals["unbalanced"] + totals["hung"]
    print(f"\n{args.runs} runs, {totals['tasks']} tasks in {time.monotonic() - t0:.0f}s: "
          f"{totals['succeeded']} succeeded, {totals['failed']} failed, {totals['cancelled']} "
          f"cancelled; lost {totals['lost']}, duplicated {totals['duplicated']}, unbalanced "
          f"{totals['unbalanced']}, hangs {totals['hung']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
