"""Events and subscriptions: order, isolation, drops, threads, rate.

Synchronisation is by `threading.Event`, never by sleeping: tasks and callbacks
signal what they reached, and the test waits for that signal (bounded by WAIT).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest

from neon_nb import Event, EventBatch, EventKind, NeonWorker, ShutdownReport, Task, WorkerShutdownError

from .conftest import WAIT

SUBMITTED = EventKind.TASK_SUBMITTED
STARTED = EventKind.TASK_STARTED
SUCCEEDED = EventKind.TASK_SUCCEEDED
FAILED = EventKind.TASK_FAILED
RETRY = EventKind.TASK_RETRY_SCHEDULED
CANCELLED = EventKind.TASK_CANCELLED
RESUMED = EventKind.TASK_RESUMED
TASK_KINDS = frozenset({SUBMITTED, STARTED, SUCCEEDED, FAILED, RETRY, CANCELLED, RESUMED})
WORKER_KINDS = frozenset(EventKind) - TASK_KINDS
# Which task event may follow which (None: the task's first event).
LEGAL = {
    None: {SUBMITTED},
    SUBMITTED: {STARTED, CANCELLED, RESUMED},
    STARTED: {SUCCEEDED, FAILED, RETRY},
    RETRY: {SUBMITTED, CANCELLED},
}
TERMINAL = {SUCCEEDED, FAILED, CANCELLED, RESUMED}


def noop() -> None:
    return None


def boom() -> None:
    raise ValueError("boom")


class Recorder:
    """A callback that keeps every batch and the thread that delivered it."""

    def __init__(self) -> None:
        self.batches: list[EventBatch] = []
        self.threads: list[threading.Thread] = []
        self.lock_free: list[bool] = []
        self.stopped = threading.Event()
        self.worker: NeonWorker | None = None

    def __call__(self, batch: EventBatch) -> None:
        self.batches.append(batch)
        self.threads.append(threading.current_thread())
        if self.worker is not None:
            # Never called with the worker lock held: taking it here must succeed.
            got = self.worker._lock.acquire(timeout=WAIT)
            if got:
                self.worker._lock.release()
            self.lock_free.append(got)
        if any(e.kind is EventKind.WORKER_STOPPED for e in batch):
            self.stopped.set()

    @property
    def events(self) -> list[Event]:
        return [e for b in self.batches for e in b]


def check_task_order(events: list[Event]) -> dict:
    """Per task, transitions in a legal order with attempts counting up; returns the last kinds."""
    last: dict = {}
    attempts: dict = {}
    for ev in events:
        if ev.kind not in TASK_KINDS:
            continue
        prev = last.get(ev.task_id)
        assert ev.kind in LEGAL.get(prev, ()), f"task {ev.task_id!r}: {prev} -> {ev.kind}"
        if ev.kind is STARTED:
            assert ev.attempt == attempts.get(ev.task_id, 0) + 1, ev
            attempts[ev.task_id] = ev.attempt
        elif ev.kind in (SUCCEEDED, FAILED, RETRY):
            assert ev.attempt == attempts[ev.task_id], ev
        last[ev.task_id] = ev.kind
    return last


@pytest.fixture
def loop_thread() -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """An asyncio loop running in its own thread (as the kernel's loop does in a notebook)."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="test-asyncio-loop", daemon=True)
    t.start()
    yield loop, t
    loop.call_soon_threadsafe(loop.stop)
    t.join(WAIT)
    loop.close()


def _on(request: pytest.FixtureRequest, on: str):
    return request.getfixturevalue("loop_thread")[0] if on == "loop" else on


# ============================================================== order
def test_order_per_subscriber(make_worker):
    """Three subscribers see the same events, seq strictly increasing, per-task order legal."""
    w = make_worker(max_workers=4, queue_size=0, retry_attempts=2, retry_delay=0.0, start=False)
    subs = [(Recorder(), "thread", None), (Recorder(), "inline", None), (Recorder(), "thread", 50.0)]
    handles = [w.subscribe(r, on=on, max_rate_hz=hz) for r, on, hz in subs]
    w.start()
    first_attempt_failed: set = set()
    guard = threading.Lock()

    def flaky(i: int) -> int:
        with guard:
            if i not in first_attempt_failed:
                first_attempt_failed.add(i)
                raise RuntimeError("first attempt")
        return i

    barrier = threading.Barrier(3)

    def produce(k: int) -> None:
        barrier.wait(WAIT)
        for i in range(k, 300, 3):
            fn, args = (boom, ()) if i % 5 == 0 else (flaky, (i,)) if i % 7 == 0 else (noop, ())
            w.add_task(Task(i, fn, args, priority=i % 4))
            if i % 11 == 0:
                w.cancel(i)  # may or may not win against a worker: both are legal

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(3)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(WAIT)
    assert w.wait_for_completion(WAIT)
    w.shutdown()
    for h in handles:
        assert h.join(WAIT)
    reference = None
    for (rec, on, hz), h in zip(subs, handles):
        events = rec.events
        seqs = [e.seq for e in events]
        assert all(a < b for a, b in pairwise(seqs)), f"{on}/{hz}: seq not increasing"
        assert seqs == list(range(len(seqs))), "subscribed before start: nothing missing"
        assert h.dropped == 0 and sum(b.dropped for b in rec.batches) == 0
        last = check_task_order(events)
        assert len(last) == 300 and set(last.values()) <= TERMINAL
        assert events[0].kind is EventKind.WORKER_STARTED
        assert events[-1].kind is EventKind.WORKER_STOPPED
        if reference is None:
            reference = events
        else:
            assert events == reference, f"{on}/{hz} saw a different stream"
    st = w.get_status()
    assert st["failed_tasks"] == sum(1 for k in check_task_order(reference).values() if k is FAILED)


# ============================================================ isolation
@pytest.mark.parametrize("on", ["thread", "inline", "loop"])
def test_failing_callback_is_isolated(make_worker, caplog, request, on):
    caplog.set_level(logging.ERROR, logger="neon_nb")
    seen: list[Event] = []
    stopped = threading.Event()

    def bad_callback(batch: EventBatch) -> None:
        seen.extend(batch)
        if any(e.kind is EventKind.WORKER_STOPPED for e in batch):
            stopped.set()
        raise RuntimeError("a bug in the subscriber")

    w = make_worker(max_workers=2, queue_size=0, retry_attempts=0, start=False)
    sub = w.subscribe(bad_callback, on=_on(request, on))
    w.start()
    futures = [w.add_task(Task(i, pow, (i, 2))) for i in range(40)]
    assert [f.result(WAIT) for f in futures] == [i * i for i in range(40)]
    assert w.wait_for_completion(WAIT)
    st = w.get_status()
    assert st["completed_tasks"] == 40 and st["failed_tasks"] == 0 and st["threads"] == 2
    assert w.check_health().healthy
    w.shutdown()
    assert sub.join(WAIT) and stopped.wait(WAIT)
    if on == "loop":
        # The counters are updated after the callback returns: let the loop finish that call.
        settled = threading.Event()
        sub.loop.call_soon_threadsafe(settled.set)
        assert settled.wait(WAIT)
    # Delivery went on to the end despite every call raising.
    assert sub.errors == sub.batches >= 1
    assert sub.delivered == len(seen)
    assert sum(1 for e in seen if e.kind is SUCCEEDED) == 40
    logged = [r for r in caplog.records if "event callback" in r.getMessage()]
    assert len(logged) == sub.errors and all(r.exc_info for r in logged)


def test_loop_closed_under_a_subscription_does_not_hurt_the_worker(make_worker):
    loop = asyncio.new_event_loop()
    loop.close()
    w = make_worker(max_workers=2, queue_size=0)
    sub = w.subscribe(lambda batch: None, on=loop)
    assert w.add_task(Task("after-close", pow, (3, 2))).result(WAIT) == 9
    assert not sub.active  # the subscription noticed its loop is gone
    assert w.get_status()["completed_tasks"] == 1


# ================================================================ drops
def test_drops_are_counted_under_a_stalled_subscriber(make_worker):
    entered = threading.Event()
    release = threading.Event()
    batches: list[EventBatch] = []

    def stalled(batch: EventBatch) -> None:
        batches.append(batch)
        if not entered.is_set():
            entered.set()
            release.wait(WAIT)

    w = make_worker(max_workers=2, queue_size=0, start=False)
    sub = w.subscribe(stalled, on="thread", buffer_size=8)
    reference = Recorder()
    ref_sub = w.subscribe(reference, on="thread", buffer_size=100_000)
    w.start()
    assert entered.wait(WAIT)  # the callback is now blocked on its first batch
    for i in range(200):
        w.add_task(Task(i, noop))
    # A stalled subscriber never slows the workers: everything finishes while it is stuck.
    assert w.wait_for_completion(WAIT)
    assert w.get_status()["completed_tasks"] == 200
    release.set()
    w.shutdown()
    assert sub.join(WAIT) and ref_sub.join(WAIT)
    emitted = len(reference.events)
    assert ref_sub.dropped == 0 and emitted >= 2 + 3 * 200
    reported = sum(b.dropped for b in batches)
    assert reported == sub.dropped > 0
    assert sub.delivered == sum(len(b) for b in batches)
    assert sub.delivered + sub.dropped == emitted
    # The oldest were dropped: what arrived after the stall is the newest, in order.
    assert batches[1].dropped > 0
    assert len(batches[1]) <= 8
    assert batches[-1].events[-1].kind is EventKind.WORKER_STOPPED
    seqs = [e.seq for e in (e for b in batches for e in b)]
    assert all(a < b for a, b in pairwise(seqs))


# ============================================================== threads
def test_thread_subscriber_runs_on_its_delivery_thread(make_worker):
    rec = Recorder()
    w = make_worker(max_workers=2, queue_size=0, start=False)
    rec.worker = w
    sub = w.subscribe(rec, on="thread")
    w.start()
    for f in [w.add_task(Task(i, noop)) for i in range(30)]:
        f.result(WAIT)
    w.shutdown()
    assert sub.join(WAIT)
    threads = set(rec.threads)
    assert len(threads) == 1
    (t,) = threads
    assert t.name == sub.name and t is not threading.main_thread()
    assert not t.name.startswith(f"{w.name}-worker_")
    assert all(rec.lock_free)


def test_inline_subscriber_runs_on_a_worker_thread(make_worker, gate):
    rec = Recorder()
    w = make_worker(max_workers=2, queue_size=0)
    rec.worker = w
    sub = w.subscribe(rec, on="inline")
    futures = [w.add_task(Task(i, gate.wait, (WAIT,))) for i in range(10)]
    # From here on only worker threads emit: the main thread waits and submits nothing.
    n_before = len(rec.batches)
    gate.set()
    for f in futures:
        f.result(WAIT)
    assert w.wait_for_completion(WAIT)
    with w._lock:
        worker_threads = set(w._pool.threads.values())
    after = list(zip(rec.batches[n_before:], rec.threads[n_before:]))
    assert any(e.kind is SUCCEEDED for b, _ in after for e in b)
    for batch, thread in after:
        assert thread in worker_threads, (thread.name, [e.kind for e in batch])
    assert all(rec.lock_free)
    sub.cancel()


def test_loop_subscriber_runs_on_the_loop_thread(make_worker, loop_thread):
    loop, loop_t = loop_thread
    rec = Recorder()
    w = make_worker(max_workers=2, queue_size=0, start=False)
    rec.worker = w
    w.subscribe(rec, on=loop)
    w.start()
    for f in [w.add_task(Task(i, noop)) for i in range(30)]:
        f.result(WAIT)
    w.shutdown()
    assert rec.stopped.wait(WAIT)
    assert set(rec.threads) == {loop_t}
    assert sum(1 for e in rec.events if e.kind is SUCCEEDED) == 30
    assert all(rec.lock_free)


# ======================================================== event content
def test_every_kind_is_emitted_with_its_fields(make_worker, gate, tmp_path):
    journal = tmp_path / "runs.db"
    earlier = make_worker(journal=journal)  # an earlier run: "done" is in the journal
    earlier.add_task(Task("done", noop, priority=4)).result(WAIT)
    earlier.shutdown()
    t_begin = time.monotonic()
    rec = Recorder()
    w = make_worker(max_workers=1, queue_size=0, retry_attempts=0, retry_delay=0.0, start=False,
                    journal=journal)
    sub = w.subscribe(rec, on="thread")
    w.start()
    running = threading.Event()

    def blocker() -> None:
        running.set()
        gate.wait(WAIT)

    failed_once = threading.Event()

    def fail_once() -> str:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("first attempt")
        return "second attempt"

    futures = [w.add_task(Task("blocker", blocker, priority=5))]
    assert running.wait(WAIT)
    futures.append(w.add_task(Task("ok", noop, priority=3)))
    futures.append(w.add_task(Task("flaky", fail_once, priority=2, retry_attempts=1, retry_delay=0.0)))
    futures.append(w.add_task(Task("doomed", boom, priority=1)))
    victim = w.add_task(Task("victim", noop, priority=-1))
    assert victim.cancel()
    assert w.add_task(Task("done", boom, priority=4)).result(0) is None  # resumed: not run
    w.pause()
    w.resume()
    w.resize(2)
    gate.set()
    assert futures[2].result(WAIT) == "second attempt"
    with pytest.raises(ValueError):
        futures[3].result(WAIT)
    assert w.wait_for_completion(WAIT)
    w.shutdown()
    assert sub.join(WAIT)
    t_end = time.monotonic()
    events = rec.events
    assert {e.kind for e in events} == set(EventKind)
    priorities = {"blocker": 5, "ok": 3, "flaky": 2, "doomed": 1, "victim": -1, "done": 4}
    started_at: dict = {}
    for e in events:
        assert t_begin <= e.time <= t_end, e
        if e.kind in WORKER_KINDS:
            assert e.task_id is None and e.thread, e
            continue
        assert e.priority == priorities[e.task_id], e
        assert isinstance(e.attempt, int) and e.attempt >= 0, e
        if e.kind is STARTED:
            assert e.thread.startswith(f"{w.name}-worker_"), e
            assert e.attempt >= 1
            started_at[(e.task_id, e.attempt)] = e.time
        elif e.kind in (SUCCEEDED, FAILED, RETRY):
            assert e.thread.startswith(f"{w.name}-worker_"), e
            assert e.started_at == started_at[(e.task_id, e.attempt)], e
            assert e.started_at <= e.time, e
        elif e.kind is RESUMED:  # no thread of this worker ran it
            assert e.thread is None and e.attempt == 1 and e.detail == "succeeded", e
    by_kind = {k: [e for e in events if e.kind is k] for k in EventKind}
    assert [(e.task_id, e.detail) for e in by_kind[RETRY]] == [("flaky", 0.0)]
    resubmitted = [e for e in by_kind[SUBMITTED] if e.task_id == "flaky"]
    assert [e.detail for e in resubmitted] == [None, "retry"]
    assert [e.attempt for e in by_kind[STARTED] if e.task_id == "flaky"] == [1, 2]
    assert [(e.task_id, e.attempt) for e in by_kind[FAILED]] == [("doomed", 1)]
    assert "ValueError: boom" in by_kind[FAILED][0].detail
    assert [e.task_id for e in by_kind[CANCELLED]] == ["victim"]
    assert [e.task_id for e in by_kind[RESUMED]] == ["done"]
    assert [e.detail for e in by_kind[EventKind.WORKER_RESIZED]] == [(1, 2)]
    assert ("max_workers", 2) in by_kind[EventKind.WORKER_CONFIG_CHANGED][-1].detail
    assert isinstance(by_kind[EventKind.WORKER_STOPPED][0].detail, ShutdownReport)
    check_task_order(events)


def test_events_are_immutable(make_worker):
    rec = Recorder()
    w = make_worker(max_workers=1, queue_size=0, start=False)
    sub = w.subscribe(rec, on="thread")
    w.start()
    w.add_task(Task("x", noop)).result(WAIT)
    w.shutdown()
    assert sub.join(WAIT)
    ev = rec.events[-1]
    with pytest.raises(AttributeError):
        ev.seq = 99  # type: ignore[misc]
    with pytest.raises(AttributeError):
        rec.batches[0].dropped = 5  # type: ignore[misc]
    assert isinstance(rec.batches[0].events, tuple)


# ================================================================= rate
@pytest.mark.parametrize("on", ["thread", "inline", "loop"])
def test_max_rate_hz_holds_under_a_flood(make_worker, request, on):
    rate = 25.0
    wanted = 6
    times: list[float] = []
    sizes: list[int] = []
    enough = threading.Event()

    def cb(batch: EventBatch) -> None:
        times.append(time.monotonic())
        sizes.append(len(batch))
        if len(times) >= wanted:
            enough.set()

    w = make_worker(max_workers=2, queue_size=0)
    t_subscribed = time.monotonic()
    sub = w.subscribe(cb, on=_on(request, on), max_rate_hz=rate)
    deadline = t_subscribed + WAIT
    i = 0
    while not enough.is_set() and time.monotonic() < deadline:
        w.add_tasks([Task((on, i + k), noop) for k in range(100)])
        i += 100
        w.wait_for_completion(WAIT)
    flood_end = time.monotonic()
    sub.cancel()
    assert enough.is_set()
    # Deliveries that began during the flood (a callback stamps its time after it began).
    during = [t for t in times if t <= flood_end]
    duration = flood_end - t_subscribed
    assert len(during) <= rate * duration + 1, (len(during), duration)
    # Coalesced: each delivery carries many events.
    assert sum(sizes) / len(sizes) > 10


# ============================================================ lifecycle
def test_subscription_lifecycle(make_worker):
    rec = Recorder()
    w = make_worker(max_workers=1, queue_size=0)
    with w.subscribe(rec, on="thread") as sub:
        assert sub.active
        w.add_task(Task("a", noop)).result(WAIT)
        assert w.wait_for_completion(WAIT)
    assert not sub.active
    n = len(rec.batches)
    sub.cancel()  # idempotent
    w.add_task(Task("b", noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    assert len(rec.batches) == n  # nothing after cancel
    assert "closed" in repr(sub)
    w.shutdown()
    with pytest.raises(WorkerShutdownError):
        w.subscribe(rec)


def test_kinds_filter(make_worker):
    rec = Recorder()
    w = make_worker(max_workers=1, queue_size=0, retry_attempts=0, start=False)
    sub = w.subscribe(rec, on="thread", kinds=[FAILED, "worker_stopped"])
    w.start()
    w.add_task(Task("ok", noop)).result(WAIT)
    with pytest.raises(ValueError):
        w.add_task(Task("bad", boom)).result(WAIT)
    w.shutdown()
    assert sub.join(WAIT)
    assert [(e.kind, e.task_id) for e in rec.events] == [(FAILED, "bad"), (EventKind.WORKER_STOPPED, None)]
    assert sub.dropped == 0


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"on": "bogus"}, ValueError, "on must be"),
    ({"max_rate_hz": 0}, ValueError, "max_rate_hz"),
    ({"max_rate_hz": "fast"}, ValueError, "max_rate_hz"),
    ({"buffer_size": 0}, ValueError, "buffer_size"),
    ({"kinds": ["no_such_kind"]}, ValueError, "no_such_kind"),
])
def test_bad_subscribe_arguments(make_worker, kwargs, error, match):
    w = make_worker(max_workers=1, queue_size=0)
    with pytest.raises(error, match=match):
        w.subscribe(lambda batch: None, **kwargs)
    with pytest.raises(TypeError, match="callback"):
        w.subscribe("not callable")
    assert w.add_task(Task("still-fine", noop)).result(WAIT) is None


def test_inline_rate_limited_subscriber_gets_the_last_events(make_worker):
    """A rate-limited inline subscriber is delayed, never starved: the final events arrive soon."""
    seen = threading.Event()

    def cb(batch: EventBatch) -> None:
        if any(e.kind is SUCCEEDED for e in batch):
            seen.set()

    w = make_worker(max_workers=1, queue_size=0)
    sub = w.subscribe(cb, on="inline", max_rate_hz=20.0)
    w.add_task(Task("only", noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    # 20 Hz: the coalesced batch is due within 50 ms of the previous one; allow 20 periods.
    assert seen.wait(1.0)
    sub.cancel()


def test_a_second_subscriber_is_woken_while_the_first_is_still_armed(make_worker):
    """A subscription made while another one waits (armed, rate-limited) still gets events."""
    w = make_worker(max_workers=1)
    first_batch = threading.Event()
    w.subscribe(lambda batch: first_batch.set(), max_rate_hz=0.2)  # then armed for 5 s
    w.submit(noop).result(WAIT)
    assert first_batch.wait(WAIT)
    w.submit(noop).result(WAIT)  # arms the first subscriber again: it now sleeps ~5 s
    seen = threading.Event()
    w.subscribe(lambda batch: seen.set() if any(e.kind is SUCCEEDED for e in batch) else None)
    w.submit(noop).result(WAIT)
    assert seen.wait(2.0)


@pytest.mark.parametrize("on", ["thread", "inline", "loop"])
def test_poke_calls_back_even_with_nothing_new(make_worker, request, on):
    w = make_worker(max_workers=1)
    got: list[int] = []
    called = threading.Event()

    def callback(batch):
        got.append(len(batch))
        called.set()

    sub = w.subscribe(callback, on=_on(request, on))
    sub.poke()
    assert called.wait(WAIT)
    assert got == [0]  # one call, an empty batch: nothing was emitted
    sub.cancel()


# ================================================= what is built, and change feeds
def test_a_narrow_subscriber_loses_no_rare_event_to_a_flood_of_others(make_worker):
    """Only the kinds some subscriber takes are built: successes cannot crowd out failures."""
    entered, release = threading.Event(), threading.Event()
    failures: list[Event] = []
    dropped: list[int] = []

    def stalled(batch: EventBatch) -> None:
        failures.extend(batch)
        dropped.append(batch.dropped)
        if not entered.is_set():
            entered.set()
            release.wait(WAIT)

    w = make_worker(max_workers=2, queue_size=0, retry_attempts=0)
    sub = w.subscribe(stalled, on="thread", buffer_size=16, kinds=[FAILED])
    with pytest.raises(ValueError):
        w.add_task(Task("first", boom)).result(WAIT)
    assert entered.wait(WAIT)  # its callback now holds the first failure
    futures = [w.add_task(Task(i, noop if i % 100 else boom)) for i in range(1, 1000)]
    assert w.wait_for_completion(WAIT)
    release.set()
    assert sub.flush(WAIT)
    # 990 successes and 9 more failures happened while its buffer held 16 events.
    assert failures[0].task_id == "first"
    assert sorted(e.task_id for e in failures[1:]) == list(range(100, 1000, 100))
    assert sub.dropped == 0 and not any(dropped)
    assert sum(f.exception() is not None for f in futures) == 9


@pytest.mark.parametrize("on", ["thread", "inline", "loop"])
def test_a_change_feed_is_called_after_every_change_with_empty_batches(make_worker, request, on):
    """``kinds=()``: empty batches; after the last change, a call that sees the final state."""
    w = make_worker(max_workers=2, queue_size=0)
    seen: list[tuple[int, int]] = []  # (events in the batch, tasks finished as the callback saw)

    def callback(batch: EventBatch) -> None:
        seen.append((len(batch), w.statistics().succeeded))

    sub = w.subscribe(callback, on=_on(request, on), kinds=())
    assert sub.changes_only
    futures = w.add_tasks([Task(i, noop) for i in range(500)])
    assert all(f.result(WAIT) is None for f in futures)
    assert w.wait_for_completion(WAIT)
    assert sub.flush(WAIT)
    assert seen and all(n == 0 for n, _ in seen)
    assert seen[-1][1] == 500  # the last call saw every task finished
    assert sub.dropped == 0 and sub.delivered == 0
    calls = len(seen)
    assert sub.flush(WAIT)  # flushing a change feed is one more call, seeing the same state
    assert len(seen) == calls + 1 and seen[-1] == (0, 500)
    sub.cancel()


def test_a_change_feed_costs_no_event_and_is_called_when_the_worker_stops(make_worker):
    w = make_worker(max_workers=1, queue_size=0)
    states: list[str] = []
    sub = w.subscribe(lambda batch: states.append(w.get_status()["state"]), kinds=())
    w.add_task(Task("one", noop)).result(WAIT)
    w.shutdown()
    assert sub.join(WAIT)
    assert states[-1] == "stopped"


def test_a_change_feed_is_throttled_by_max_rate_hz(make_worker):
    """However fast tasks finish, a change feed at 10 Hz is called about ten times a second."""
    w = make_worker(max_workers=2, queue_size=0)
    times: list[float] = []
    sub = w.subscribe(lambda batch: times.append(time.monotonic()), kinds=(), max_rate_hz=10)
    for r in range(20):  # about half a second of changes: 1,000 tasks of 1 ms on 2 threads
        w.add_tasks([Task((r, i), time.sleep, (0.001,)) for i in range(50)])
        assert w.wait_for_completion(WAIT)
    assert sub.flush(WAIT)
    assert len(times) >= 3
    gaps = [b - a for a, b in pairwise(times[:-1])]  # (the flush may skip the rate limit)
    assert all(g >= 0.09 for g in gaps), gaps
    sub.cancel()
