"""Stress: many producers, random failures, retries, cancels and a shutdown at a random moment.

Invariants, checked while it runs and at the end:

* every submitted task ends in exactly one terminal state, and its future agrees;
* ``submitted == queued + running + retry_waiting + completed + failed + cancelled`` in every
  `get_status()`, and ``submitted == completed + failed + cancelled`` at the end;
* no attempt ran twice: each task records the attempt number the worker gave it, and the
  attempts seen are exactly ``1..attempts``;
* ``retried_tasks`` equals the retries the records account for.

Then the same with ``sys.setswitchinterval(1e-6)`` (a thread switch every few bytecodes), and a
hypothesis state machine that interleaves add, cancel, pause/resume, resize and completion.
"""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter, defaultdict

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from neon_nb import (
    NeonWorker,
    SynchronizedCounter,
    Task,
    TaskState,
    WorkerShutdownError,
    update_config,
)

from .conftest import WAIT, assert_counters_add_up

SUCCEEDED, FAILED, CANCELLED = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED


class Transient(OSError):
    """Retried (the worker's filter is OSError)."""


class Fatal(ValueError):
    """Not retried."""


class Ledger:
    """What the task functions saw: (task id, attempt) pairs and how each attempt ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: dict[object, list[int]] = defaultdict(list)
        self.outcomes: dict[object, list[str]] = defaultdict(list)

    def record(self, tid, attempt: int, outcome: str) -> None:
        with self.lock:
            self.attempts[tid].append(attempt)
            self.outcomes[tid].append(outcome)


def make_task_function(w: NeonWorker, ledger: Ledger, tid, plan: tuple[str, int]):
    """``plan``: ("ok", 0) | ("transient", k) fail k times then succeed | ("fatal", 0)."""
    kind, failures = plan

    def run():
        attempt = w.get_task_status(tid).attempts  # given by the worker when it claimed the task
        if kind == "fatal":
            ledger.record(tid, attempt, "raised")
            raise Fatal(tid)
        if kind == "transient" and attempt <= failures:
            ledger.record(tid, attempt, "raised")
            raise Transient(f"{tid} attempt {attempt}")
        ledger.record(tid, attempt, "returned")
        return tid

    return run


def random_plan(rng: random.Random) -> tuple[str, int]:
    r = rng.random()
    if r < 0.70:
        return ("ok", 0)
    if r < 0.95:
        return ("transient", rng.randint(1, 4))  # 3 or 4 failures exhaust retry_attempts=2
    return ("fatal", 0)


def check_final_state(w: NeonWorker, ledger: Ledger, futures: dict) -> None:
    status = w.get_status()
    assert status["state"] == "stopped"
    assert (status["queued_tasks"], status["running_tasks"], status["retry_waiting_tasks"]) == (0, 0, 0)
    assert status["submitted_tasks"] == (status["completed_tasks"] + status["failed_tasks"]
                                         + status["cancelled_tasks"])
    infos = {i.id: i for i in w.tasks()}
    assert len(infos) == status["submitted_tasks"]  # history_size holds them all
    by_state = Counter(i.state for i in infos.values())
    assert by_state == Counter({SUCCEEDED: status["completed_tasks"], FAILED: status["failed_tasks"],
                                CANCELLED: status["cancelled_tasks"]}) - Counter()

    retries = 0
    for tid, info in infos.items():
        assert info.state.terminal, info
        seen = ledger.attempts.get(tid, [])
        # No attempt ran twice, none was skipped, and nothing ran that the worker did not count.
        assert sorted(seen) == list(range(1, info.attempts + 1)), (tid, seen, info)
        outcomes = ledger.outcomes.get(tid, [])
        if info.state is SUCCEEDED:
            assert outcomes[-1] == "returned" and outcomes.count("returned") == 1
            retries += info.attempts - 1
        elif info.state is FAILED:
            assert outcomes and set(outcomes) == {"raised"}
            retries += info.attempts - 1
        else:  # cancelled while queued (0 attempts) or while waiting for a retry
            assert set(outcomes) <= {"raised"}
            retries += info.attempts
    assert status["retried_tasks"] == retries

    for tid, fut in futures.items():
        assert fut.done(), tid
        state = infos[tid].state  # every future handed out belongs to a counted task
        if fut.cancelled():
            assert state is CANCELLED
        elif fut.exception() is not None:
            assert state is FAILED and isinstance(fut.exception(), (Transient, Fatal))
        else:
            assert state is SUCCEEDED and fut.result() == tid


def run_stress(seed: int, n_producers: int = 16, per_producer: int = 1000) -> None:
    update_config(log_level="ERROR")  # thousands of expected failures: do not format them
    rng = random.Random(seed)
    total = n_producers * per_producer
    w = NeonWorker(4, queue_size=1024, name=f"stress{seed}", retry_attempts=2, retry_delay=0.001,
                   retry_backoff=2.0, retry_jitter=0.5, retry_on=(OSError,),
                   history_size=total + 10, health_check_interval=0.05)
    w.start()
    ledger = Ledger()
    futures: dict = {}
    futures_lock = threading.Lock()
    accepted = SynchronizedCounter()
    shutdown_at = rng.randint(total // 10, total)  # a random moment, in submissions
    time_to_stop = threading.Event()
    start = threading.Barrier(n_producers + 3, timeout=WAIT)
    producers_done = threading.Event()
    errors: list[BaseException] = []
    torn: list[dict] = []
    reports = []

    def keep(futs):
        with futures_lock:
            for f in futs:
                futures[f.task_id] = f
        if accepted.add(len(futs)) >= shutdown_at:
            time_to_stop.set()

    def producer(p: int) -> None:
        prng = random.Random(seed * 1000 + p)
        try:
            start.wait()
            i = 0
            while i < per_producer:
                if prng.random() < 0.2:  # a batch of up to 10
                    n = min(prng.randint(2, 10), per_producer - i)
                    tasks = []
                    for j in range(i, i + n):
                        tid = (p, j)
                        tasks.append(Task(tid, make_task_function(w, ledger, tid, random_plan(prng)),
                                          priority=prng.randint(-2, 2)))
                    keep(w.add_tasks(tasks, timeout=WAIT))
                    i += n
                else:
                    tid = (p, i)
                    fn = make_task_function(w, ledger, tid, random_plan(prng))
                    if prng.random() < 0.5:
                        fut = w.add_task(Task(tid, fn, priority=prng.randint(-2, 2)), timeout=WAIT)
                    else:
                        fut = w.submit(fn, task_id=tid, priority=prng.randint(-2, 2))
                    keep([fut])
                    i += 1
        except WorkerShutdownError as exc:
            # The random shutdown came: stop producing. A batch interrupted while waiting for
            # room may have queued a prefix: the error carries their futures.
            keep(exc.submitted)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def canceller() -> None:
        crng = random.Random(seed + 7)
        start.wait()
        while not producers_done.is_set():
            with futures_lock:
                if not futures:
                    continue
                tid = crng.choice(list(futures)) if crng.random() < 0.01 else next(reversed(futures))
                fut = futures[tid]
            (fut.cancel() if crng.random() < 0.5 else w.cancel(tid))

    def observer() -> None:
        start.wait()
        while not producers_done.is_set():
            s = w.get_status()
            parts = (s["queued_tasks"] + s["running_tasks"] + s["retry_waiting_tasks"]
                     + s["completed_tasks"] + s["failed_tasks"] + s["cancelled_tasks"])
            if parts != s["submitted_tasks"] or min(s[k] for k in s if k.endswith("_tasks")) < 0 \
                    or s["running_tasks"] > 4:
                torn.append(s)

    def stopper() -> None:
        start.wait()
        time_to_stop.wait(WAIT * 6)
        reports.append(w.shutdown(timeout=None, cancel_pending=rng.random() < 0.5))

    threads = [threading.Thread(target=producer, args=(p,), name=f"producer-{p}")
               for p in range(n_producers)]
    helpers = [threading.Thread(target=t, name=t.__name__) for t in (canceller, observer, stopper)]
    for t in threads + helpers:
        t.start()
    try:
        for t in threads:
            t.join(WAIT * 6)
        time_to_stop.set()  # every producer finished before the chosen moment: stop now
        helpers[2].join(WAIT * 6)
    finally:
        producers_done.set()
        for t in helpers:
            t.join(WAIT)
        if not reports:  # pragma: no cover - only when something above failed
            w.shutdown(timeout=5.0, cancel_pending=True)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads + helpers)
    assert torn == []
    assert reports and reports[0].clean, reports
    assert accepted.value == len(futures) == w.get_status()["submitted_tasks"]
    check_final_state(w, ledger, futures)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_stress(seed):
    run_stress(seed)


@pytest.mark.slow
def test_stress_with_tiny_switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_stress(seed=3)
    finally:
        sys.setswitchinterval(old)
    assert sys.getswitchinterval() == old


# ------------------------------------------------------------------ hypothesis state machine
class WorkerMachine(RuleBasedStateMachine):
    """Tasks block on their own Event; rules add, cancel, complete (set the Event), pause,
    resume and resize, in any order. Invariants are checked after every step."""

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        self.w = NeonWorker(2, queue_size=0, name="machine", retry_attempts=1, retry_delay=0.0,
                            retry_on=(OSError,), enable_metrics=False, health_check_interval=1e6)
        self.w.start()
        self.ledger = Ledger()
        self.gates: dict[str, threading.Event] = {}
        self.modes: dict[str, str] = {}
        self.futures: dict = {}
        self.n = 0
        self.paused = False
        self.size = 2

    def _function(self, tid: str, gate: threading.Event):
        def run():
            attempt = self.w.get_task_status(tid).attempts
            gate.wait(WAIT)
            mode = self.modes.get(tid, "ok")
            if mode == "fail" or (mode == "fail_once" and attempt == 1):
                self.ledger.record(tid, attempt, "raised")
                raise Transient(f"{tid} attempt {attempt}")
            self.ledger.record(tid, attempt, "returned")
            return tid
        return run

    @rule(target=tasks, priority=st.integers(-2, 2))
    def add(self, priority):
        tid = f"t{self.n}"
        self.n += 1
        gate = self.gates[tid] = threading.Event()
        self.futures[tid] = self.w.add_task(Task(tid, self._function(tid, gate), priority=priority))
        return tid

    @rule(tid=tasks, via_future=st.booleans())
    def cancel(self, tid, via_future):
        fut = self.futures[tid]
        was_cancelled = fut.cancelled()
        ok = fut.cancel() if via_future else self.w.cancel(tid)
        if ok:
            assert fut.cancelled()
            assert self.w.get_task_status(tid).state is CANCELLED
        else:
            assert not fut.cancelled() or was_cancelled

    @rule(tid=tasks, mode=st.sampled_from(["ok", "fail_once", "fail"]))
    def complete(self, tid, mode):
        self.modes.setdefault(tid, mode)  # decided before the gate opens; the first decision holds
        self.gates[tid].set()

    @rule()
    def pause(self):
        self.w.pause()
        self.paused = True

    @rule()
    def resume(self):
        self.w.resume()
        self.paused = False

    @rule(n=st.integers(1, 4))
    def resize(self, n):
        self.w.resize(n)
        self.size = n

    @invariant()
    def counters_add_up(self):
        s = self.w.get_status()
        assert_counters_add_up(s)
        assert s["submitted_tasks"] == self.n
        assert s["state"] == ("paused" if self.paused else "running")
        assert (s["max_workers"], s["threads"]) == (self.size, self.size)

    @invariant()
    def futures_agree_with_the_worker(self):
        for tid, fut in self.futures.items():
            info = self.w.get_task_status(tid)  # read first: the future is set in the same step
            if info.state.terminal:
                assert fut.done()
                assert fut.cancelled() == (info.state is CANCELLED)
            seen = self.ledger.attempts.get(tid, [])
            assert len(seen) == len(set(seen)) and len(seen) <= info.attempts

    def teardown(self):
        for gate in self.gates.values():
            gate.set()
        report = self.w.shutdown(timeout=WAIT)
        assert report.clean
        status = self.w.get_status()
        assert status["submitted_tasks"] == (status["completed_tasks"] + status["failed_tasks"]
                                             + status["cancelled_tasks"]) == self.n
        for tid, fut in self.futures.items():
            info = self.w.get_task_status(tid)
            assert fut.done() and info.state.terminal
            assert sorted(self.ledger.attempts.get(tid, [])) == list(range(1, info.attempts + 1))


WorkerMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_worker_state_machine = WorkerMachine.TestCase


# ------------------------------------------------------------------ hostile user code
@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_hostile_stress(seed):
    """The randomized stress with hostile ids, exceptions, callbacks and shutdown places
    (``python -m benchmarks.stress`` runs it 50 times): nothing lost, duplicated or hung."""
    from benchmarks.stress import run_hostile

    update_config(log_level="CRITICAL")  # thousands of planned failures
    result = run_hostile(seed, producers=6, per_producer=500)
    assert result.tasks > 0
    assert (result.lost, result.duplicated, result.unbalanced, result.hung) == (0, 0, 0, 0), result
