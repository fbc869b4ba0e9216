"""Metrics: percentiles, frozen snapshots, windows, bounds, reset.

Known samples enter through the fold path (``metrics.pending``, what worker
threads append to) or come from real tasks whose exact timestamps the worker
also keeps (`TaskInfo`). Percentiles are compared with numpy's on the same
samples, within the histogram's stated precision.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading
import time
from itertools import pairwise

import numpy as np
import pytest

from neon_nb import (
    LatencySummary,
    Metrics,
    MetricsSnapshot,
    Task,
    TaskSpan,
    ThroughputPoint,
    UnknownTaskError,
)
from neon_nb._metrics import PRECISION
from neon_nb._monitor import FOLD_INTERVAL

from .conftest import WAIT, wait_until

LATENCIES = ("queue_wait", "run_time", "end_to_end")


def noop() -> None:
    return None


def boom() -> None:
    raise ValueError("boom")


def feed(metrics: Metrics, task_id, thread: str, enqueued: float, start: float, end: float,
         outcome: str = "succeeded", attempt: int = 1, submitted: float | None = None) -> None:
    """One finished attempt, as a worker thread records it (the only place that knows the layout)."""
    metrics.pending.append((task_id, thread, enqueued, start, end,
                            enqueued if submitted is None else submitted, outcome, attempt))


def standalone(threads=("A",), running=(), **kwargs) -> Metrics:
    return Metrics(lambda: {"succeeded": 0}, lambda: list(running), lambda: list(threads), **kwargs)


def assert_close_ns(got_seconds: float, want_ns: float, what: str) -> None:
    """Within the histogram's precision (0.1% at 3 digits) plus 1 ns of rounding."""
    got = round(got_seconds * 1e9)
    assert abs(got - want_ns) <= PRECISION * want_ns + 1, f"{what}: got {got} ns, numpy {want_ns} ns"


def check_summary(s: LatencySummary, samples_ns: np.ndarray, what: str) -> None:
    assert s.count == len(samples_ns), what
    for p, got in ((50, s.p50), (90, s.p90), (99, s.p99)):
        want = float(np.percentile(samples_ns, p, method="inverted_cdf"))
        assert_close_ns(got, want, f"{what} p{p}")
    assert_close_ns(s.max, float(samples_ns.max()), f"{what} max")
    assert_close_ns(s.mean, float(samples_ns.mean()), f"{what} mean")
    assert sum(c for _, c in s.histogram) == s.count
    bounds = [b for b, _ in s.histogram]
    assert bounds == sorted(bounds)


# ========================================================== percentiles
@pytest.mark.parametrize("source", ["standalone", "worker"])
def test_percentiles_agree_with_numpy(make_worker, source):
    if source == "standalone":
        m = standalone()
    else:  # a worker's own metrics, fed through the same path its threads use
        m = make_worker(max_workers=1, queue_size=0, start=False).metrics
    rng = np.random.default_rng(20240501)
    n = 10_000  # p * n / 100 is whole: numpy's inverted CDF and HdrHistogram pick the same rank
    wait_ns = np.clip(rng.lognormal(np.log(1e5), 2.0, n), 1, 5e8).astype(np.int64)
    run_ns = np.clip(rng.lognormal(np.log(1e4), 1.5, n), 1, 5e8).astype(np.int64)
    base = m._t0 + 0.001
    for i in range(n):
        start = base + wait_ns[i] / 1e9
        feed(m, i, "A", base, start, start + run_ns[i] / 1e9)
    snap = m.snapshot()
    assert not m.pending
    check_summary(snap.latency["queue_wait"], wait_ns, "queue_wait")
    check_summary(snap.latency["run_time"], run_ns, "run_time")
    check_summary(snap.latency["end_to_end"], wait_ns + run_ns, "end_to_end")


def test_percentiles_of_real_tasks_agree_with_their_timestamps(make_worker):
    """The worker's histograms against numpy on the exact timestamps in each task's TaskInfo."""
    w = make_worker(max_workers=2, queue_size=0, retry_attempts=0)
    futures = [w.add_task(Task(i, sum, (range(i % 50 * 100),))) for i in range(300)]
    for f in futures:
        f.result(WAIT)
    assert w.wait_for_completion(WAIT)
    infos = w.tasks()
    assert len(infos) == 300 and all(i.attempts == 1 for i in infos)
    wait_ns = np.array([(i.started_at - i.submitted_at) * 1e9 for i in infos])
    run_ns = np.array([(i.finished_at - i.started_at) * 1e9 for i in infos])
    e2e_ns = np.array([(i.finished_at - i.submitted_at) * 1e9 for i in infos])
    snap = w.metrics.snapshot()
    check_summary(snap.latency["queue_wait"], wait_ns, "queue_wait")
    check_summary(snap.latency["run_time"], run_ns, "run_time")
    check_summary(snap.latency["end_to_end"], e2e_ns, "end_to_end")


def test_retried_attempts_count_in_run_time_not_in_end_to_end():
    m = standalone()
    t = m._t0 + 0.001
    feed(m, "x", "A", t, t + 0.001, t + 0.002, outcome="retry", attempt=1)
    feed(m, "x", "A", t + 0.003, t + 0.004, t + 0.006, outcome="failed", attempt=2, submitted=t)
    feed(m, "y", "A", t, t + 0.001, t + 0.003)
    snap = m.snapshot()
    assert snap.latency["run_time"].count == 3
    assert snap.latency["queue_wait"].count == 3
    assert snap.latency["end_to_end"].count == 2
    assert_close_ns(snap.latency["end_to_end"].max, 6e6, "end_to_end of x, from its first submission")
    assert sum(p.failed for p in snap.throughput) == 1
    assert sum(p.succeeded for p in snap.throughput) == 1
    assert [(s.task_id, s.outcome, s.attempt) for s in snap.task_stream] == [
        ("x", "retry", 1), ("x", "failed", 2), ("y", "succeeded", 1)]


def test_empty_metrics_summaries():
    snap = standalone().snapshot()
    for name in LATENCIES:
        s = snap.latency[name]
        assert (s.count, s.p50, s.p99, s.max, s.histogram) == (0, 0.0, 0.0, 0.0, ())
    assert snap.task_stream == () and snap.rate() == 0.0


# ============================================================= frozen
def test_snapshots_cannot_be_mutated(make_worker):
    w = make_worker(max_workers=1, queue_size=0)
    w.add_task(Task("a", noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    snap = w.metrics.snapshot()
    assert isinstance(snap, MetricsSnapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.counts = {}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.taken_at = 0.0  # type: ignore[misc]
    for mapping in (snap.counts, snap.latency, snap.utilisation):
        with pytest.raises(TypeError):
            mapping["succeeded"] = 99  # type: ignore[index]
        with pytest.raises((TypeError, AttributeError)):
            mapping.clear()  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.latency["run_time"].p50 = 0.0  # type: ignore[misc]
    assert isinstance(snap.throughput, tuple) and isinstance(snap.task_stream, tuple)
    assert isinstance(snap.latency["run_time"].histogram, tuple)
    with pytest.raises(AttributeError):
        snap.task_stream[0].end = 0.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        snap.throughput[-1].succeeded = 0  # type: ignore[misc]


def test_a_snapshot_does_not_follow_later_work(make_worker):
    w = make_worker(max_workers=1, queue_size=0)
    w.add_task(Task("a", noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    before = w.metrics.snapshot()
    frozen = (dict(before.counts), before.latency["run_time"].count, len(before.task_stream))
    for i in range(5):
        w.add_task(Task(i, noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    after = w.metrics.snapshot()
    assert (dict(before.counts), before.latency["run_time"].count, len(before.task_stream)) == frozen
    assert after.counts["succeeded"] == before.counts["succeeded"] + 5
    assert after.version > before.version


# ========================================================== dataframes
def test_to_dataframe(make_worker):
    pytest.importorskip("pandas")
    w = make_worker(max_workers=2, queue_size=0, retry_attempts=0)
    futures = [w.add_task(Task(i, boom if i % 4 == 0 else noop)) for i in range(20)]
    for f in futures:
        f.exception(WAIT)
    assert w.wait_for_completion(WAIT)
    snap = w.metrics.snapshot()
    tasks = snap.to_dataframe()
    assert list(tasks.columns) == list(TaskSpan._fields) and len(tasks) == 20
    assert (tasks["outcome"] == "failed").sum() == 5
    assert (tasks["end"] >= tasks["start"]).all()
    tp = snap.to_dataframe("throughput")
    assert list(tp.columns) == list(ThroughputPoint._fields)
    assert tp["succeeded"].sum() == 15 and tp["failed"].sum() == 5
    lat = snap.to_dataframe("latency")
    assert set(lat.index) == set(LATENCIES)
    assert lat.loc["run_time", "p50"] == snap.latency["run_time"].p50
    assert lat.loc["end_to_end", "count"] == 20
    with pytest.raises(ValueError, match="table"):
        snap.to_dataframe("nope")


# ============================================================== reset
def test_reset_forgets_distributions_but_not_counts(make_worker):
    w = make_worker(max_workers=2, queue_size=0)
    for f in [w.add_task(Task(i, noop)) for i in range(20)]:
        f.result(WAIT)
    assert w.wait_for_completion(WAIT)
    assert w.metrics.snapshot().latency["run_time"].count == 20
    w.metrics.reset()
    snap = w.metrics.snapshot()
    assert snap.counts["succeeded"] == 20  # the worker's counters stay
    assert all(snap.latency[k].count == 0 for k in LATENCIES)
    assert snap.task_stream == ()
    assert sum(p.total for p in snap.throughput) == 0
    for f in [w.add_task(Task(("after", i), noop)) for i in range(5)]:
        f.result(WAIT)
    assert w.wait_for_completion(WAIT)
    snap = w.metrics.snapshot()
    assert snap.latency["run_time"].count == 5 and len(snap.task_stream) == 5
    assert snap.counts["succeeded"] == 25


def test_attempts_that_ended_before_a_reset_are_ignored():
    m = standalone()
    t = m._t0 + 0.001
    feed(m, "old", "A", t, t, t + 0.001)  # still pending when reset() is called
    m.reset()
    old_t0 = t - 0.001
    feed(m, "stale", "A", old_t0, old_t0, old_t0 + 1e-6)  # ended before the reset
    assert m.snapshot().latency["run_time"].count == 0


# ============================================================== bounds
def test_history_size_bounds_finished_records_but_counts_stay(make_worker):
    w = make_worker(max_workers=2, queue_size=0, history_size=10)
    for f in [w.add_task(Task(i, noop)) for i in range(50)]:
        f.result(WAIT)
    assert w.wait_for_completion(WAIT)
    infos = w.tasks()
    assert len(infos) == 10
    remembered = {i.id for i in infos}
    forgotten = next(i for i in range(50) if i not in remembered)
    with pytest.raises(UnknownTaskError):
        w.get_task_status(forgotten)
    assert w.get_task_status(next(iter(remembered))).done
    assert len(w._sched.history) == 10  # what is actually held
    st = w.get_status()
    assert st["submitted_tasks"] == st["completed_tasks"] == 50
    snap = w.metrics.snapshot()
    assert snap.counts["succeeded"] == 50
    assert snap.latency["end_to_end"].count == 50
    assert sum(p.succeeded for p in snap.throughput) == 50


def test_task_stream_is_a_bounded_ring():
    m = standalone(task_stream_size=5)
    t = m._t0 + 0.001
    for i in range(20):
        feed(m, i, "A", t, t + i * 1e-6, t + i * 1e-6 + 1e-7)
    snap = m.snapshot()
    assert [s.task_id for s in snap.task_stream] == list(range(15, 20))
    assert snap.latency["run_time"].count == 20  # the distributions keep everything


def test_throughput_history_is_bounded():
    m = standalone(window=1e-4, history_windows=5)
    t0 = m._t0
    while time.monotonic() - t0 < 0.003:  # let ~30 windows pass (no sleep: 0.1 ms windows)
        pass
    now = time.monotonic()
    ends = np.linspace(t0, now, 300, endpoint=False)
    for i, end in enumerate(ends):
        feed(m, i, "A", end, end, float(end))
    snap = m.snapshot()
    assert 1 <= len(snap.throughput) <= 5
    assert len(m._windows) <= 5 + 1 and len(m._busy) <= 5 + 1
    assert sum(p.total for p in snap.throughput) < 300


def test_pending_attempts_are_folded_without_anyone_reading(make_worker):
    """The monitor folds at least once per window: the hot-path deque cannot grow without bound."""
    w = make_worker(max_workers=2, queue_size=0)
    for f in [w.add_task(Task(i, noop)) for i in range(100)]:
        f.result(WAIT)
    assert wait_until(lambda: not w.metrics.pending, timeout=WAIT)


def test_pending_attempts_are_folded_often_even_with_long_windows(make_worker):
    """What waits to be folded stays small: at most FOLD_INTERVAL between two folds
    (at 150,000 attempts a second, one fold per 1 s window held tens of MB)."""
    w = make_worker(max_workers=2, queue_size=0, health_check_interval=600.0)
    w.metrics.window = 60.0  # a long window (and no health check) must not delay the fold
    for round_ in range(3):  # after the first, the monitor has settled into its long sleep
        for f in [w.add_task(Task((round_, i), noop)) for i in range(100)]:
            f.result(WAIT)
        assert wait_until(lambda: not w.metrics.pending, timeout=WAIT), round_
    assert WAIT < 60.0 and FOLD_INTERVAL < WAIT / 4


# ======================================================= windows, counts
def test_throughput_windows_sum_to_finished_counts(make_worker):
    w = make_worker(max_workers=3, queue_size=0, retry_attempts=0)
    fail_first = set(range(0, 120, 6))
    lock = threading.Lock()

    def flaky(i: int) -> None:
        with lock:
            if i in fail_first:
                fail_first.discard(i)
                raise RuntimeError("first attempt")

    futures = []
    for i in range(120):
        if i % 10 == 0:
            futures.append(w.add_task(Task(i, boom)))
        elif i % 6 == 0:
            futures.append(w.add_task(Task(i, flaky, (i,), retry_attempts=1, retry_delay=0.0)))
        else:
            futures.append(w.add_task(Task(i, noop)))
    for f in futures:
        f.exception(WAIT)
    assert w.wait_for_completion(WAIT)
    snap = w.metrics.snapshot()
    c = snap.counts
    assert c["failed"] == 12 and c["succeeded"] == 108 and c["retried"] > 0
    assert sum(p.succeeded for p in snap.throughput) == c["succeeded"]
    assert sum(p.failed for p in snap.throughput) == c["failed"]
    starts = [p.start for p in snap.throughput]
    assert starts == sorted(starts)
    assert all(b - a == pytest.approx(snap.window) for a, b in pairwise(starts))
    st = w.get_status()
    assert (c["submitted"], c["succeeded"], c["failed"], c["cancelled"], c["retried"]) == (
        st["submitted_tasks"], st["completed_tasks"], st["failed_tasks"], st["cancelled_tasks"],
        st["retried_tasks"])


def test_counts_per_state_while_running(make_worker, gate):
    w = make_worker(max_workers=1, queue_size=0)
    running = threading.Event()

    def blocker() -> None:
        running.set()
        gate.wait(WAIT)

    first = w.add_task(Task("blocker", blocker))
    assert running.wait(WAIT)
    queued = [w.add_task(Task(i, noop)) for i in range(3)]
    assert queued[0].cancel()
    c = w.metrics.snapshot().counts
    assert (c["submitted"], c["running"], c["queued"], c["cancelled"], c["succeeded"]) == (4, 1, 2, 1, 0)
    gate.set()
    first.result(WAIT)
    assert w.wait_for_completion(WAIT)
    c = w.metrics.snapshot().counts
    assert (c["running"], c["queued"], c["succeeded"], c["cancelled"]) == (0, 0, 3, 1)


# ========================================================== utilisation
def test_utilisation_from_running_and_finished_attempts():
    t0 = time.monotonic()
    m = Metrics(lambda: {}, lambda: [("A", t0 - 100.0)], lambda: ["A", "B", "C"])
    start = m._t0
    end = time.monotonic()
    feed(m, "x", "B", start, start, end)
    snap = m.snapshot()
    u = snap.utilisation
    assert set(u) == {"A", "B", "C"}
    assert u["A"] == 1.0  # running for the whole span
    assert 0.0 < u["B"] <= 1.0
    assert u["B"] == pytest.approx((end - start) / snap.utilisation_span, rel=1e-6)
    assert u["C"] == 0.0


def test_utilisation_of_a_worker(make_worker, gate):
    w = make_worker(max_workers=2, queue_size=0)
    running = threading.Event()

    def blocker() -> None:
        running.set()
        gate.wait(WAIT)

    fut = w.add_task(Task("blocker", blocker))
    assert running.wait(WAIT)
    busy_thread = w.get_task_status("blocker").thread
    u = w.metrics.snapshot().utilisation
    with w._lock:
        names = set(w._pool.threads)
    assert set(u) == names
    assert u[busy_thread] > 0.0
    assert all(0.0 <= v <= 1.0 for v in u.values())
    gate.set()
    fut.result(WAIT)


def test_metrics_can_be_off_and_turned_on(make_worker):
    w = make_worker(max_workers=1, queue_size=0, enable_metrics=False)
    assert w.metrics is None
    w.add_task(Task("dark", noop)).result(WAIT)
    w.configure(enable_metrics=True)
    assert w.metrics is not None
    w.add_task(Task("lit", noop)).result(WAIT)
    assert w.wait_for_completion(WAIT)
    snap = w.metrics.snapshot()
    assert [s.task_id for s in snap.task_stream] == ["lit"]
    assert snap.counts["succeeded"] == 2  # counts are the worker's, metrics or not


# ================================================================ cost
def test_snapshot_never_walks_whole_histograms(monkeypatch):
    """A 10 Hz dashboard reads snapshot(): it must not use hdrh's per-bucket Python walks.

    (Those visit all ~34,000 buckets of each histogram: about 0.4 s per snapshot. Checked
    by structure, not by timing: the walking methods are made to fail.)
    """
    from hdrh.histogram import HdrHistogram

    def walk(*args, **kwargs):
        raise AssertionError("snapshot() walked a whole histogram")

    for name in ("get_recorded_iterator", "get_mean_value", "get_value_at_percentile",
                 "get_percentile_to_value_dict", "get_all_values_iterator"):
        monkeypatch.setattr(HdrHistogram, name, walk)
    m = standalone()
    t = m._t0 + 0.001
    for i in range(1_000):
        feed(m, i, "A", t, t + i * 1e-6, t + i * 2e-6)
    first = m.snapshot()
    feed(m, "more", "A", t, t + 1e-3, t + 2e-3)  # something new: no cache hit
    second = m.snapshot()
    assert first.latency["run_time"].count == 1_000
    assert second.latency["run_time"].count == 1_001
    assert second.latency["run_time"].max >= 1e-3


@pytest.mark.parametrize("fold", ["python", "vectorised"])
def test_folding_fills_the_histograms_exactly_as_record_value_does(monkeypatch, fold):
    """Both folds write into HdrHistogram's counts with the library's arithmetic inlined."""
    from hdrh.histogram import HdrHistogram

    import neon_nb._metrics as metrics_module

    monkeypatch.setattr(metrics_module, "_VECTOR_MIN", 10**9 if fold == "python" else 1)

    from neon_nb._metrics import _DIGITS, _HIGHEST_NS, _LOWEST_NS, _ns

    rng = np.random.default_rng(7)
    m = standalone(threads=("A", "B"))
    ref = {k: HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS) for k in ("queue_wait", "run_time",
                                                                        "end_to_end")}
    t0 = m._t0
    # Spans from 1 ns to beyond the histogram's top (clamped), all three outcomes.
    waits = np.concatenate([rng.lognormal(-12, 4, 3000), [0.0, 1e-9, 5000.0]])
    for i, w in enumerate(waits):
        enq = t0 + float(rng.uniform(0, 3))
        start = enq + float(w)
        end = start + float(rng.lognormal(-9, 3))
        submitted = enq - float(rng.uniform(0, 0.01))
        outcome = ("succeeded", "failed", "retry")[i % 3]
        feed(m, i, "AB"[i % 2], enq, start, end, submitted=submitted, outcome=outcome)
        ref["queue_wait"].record_value(_ns(start - enq))
        ref["run_time"].record_value(_ns(end - start))
        if outcome != "retry":
            ref["end_to_end"].record_value(_ns(end - submitted))
    m.fold()
    for name, want in ref.items():
        got = m._hist[name]
        assert list(got.counts) == list(want.counts), name
        assert (got.total_count, got.min_value, got.max_value) == (
            want.total_count, want.min_value, want.max_value), name


def test_the_vectorised_fold_agrees_with_the_python_fold(monkeypatch):
    """Windows, busy time, task stream and histograms: the same from both folds (numpy or not)."""
    import neon_nb._metrics as metrics_module

    folded = {}
    for fold, vector_min in (("python", 10**9), ("vectorised", 1)):
        rng = np.random.default_rng(11)  # the same attempts for both
        monkeypatch.setattr(metrics_module, "_VECTOR_MIN", vector_min)
        m = standalone(threads=("A", "B", "C"), window=0.25, task_stream_size=500)
        if folded:  # the same start as the first: the same attempts, to the last bit
            m._t0 = folded["python"]._t0
        t0 = m._t0
        feed(m, "before-reset", "A", t0 - 2, t0 - 1.5, t0 - 1)  # finished before the metrics began
        for i in range(5000):
            enq = t0 + float(rng.uniform(0, 4))
            start = enq + float(rng.exponential(0.01))
            # Some attempts span several windows (and one started before the metrics began).
            end = start + float(rng.exponential(0.3 if i % 50 == 0 else 0.002))
            if i == 7:
                start = t0 - 0.1
            feed(m, i, "ABC"[i % 3], enq, start, end, outcome=("succeeded", "failed", "retry")[i % 5 % 3],
                 attempt=1 + i % 2, submitted=enq - 0.001)
        assert m.fold() == 5001
        folded[fold] = m
    py, vec = folded["python"], folded["vectorised"]
    assert py._windows == vec._windows
    assert py._busy.keys() == vec._busy.keys()
    for i, per_thread in py._busy.items():
        assert per_thread.keys() == vec._busy[i].keys()
        for thread, sec in per_thread.items():
            assert vec._busy[i][thread] == pytest.approx(sec, rel=1e-12, abs=1e-12), (i, thread)
    assert list(py._stream) == list(vec._stream) and len(vec._stream) == 500
    for name in py._hist:
        assert list(py._hist[name].counts) == list(vec._hist[name].counts), name
    a, b = py.snapshot(), vec.snapshot()
    assert a.throughput == b.throughput and a.latency == b.latency


def test_the_core_imports_numpy_only_for_a_fold_that_pays_for_it():
    """Small folds never import numpy; a fold of 20,000 attempts does (once), and uses it."""
    code = textwrap.dedent("""
        import sys
        import neon_nb._metrics as M
        m = M.Metrics(lambda: {}, lambda: [], lambda: ["A"])
        t = m._t0
        def pend(n):
            for i in range(n):
                m.pending.append((i, "A", t, t + 1e-3, t + 2e-3, t, "succeeded", 1))
        pend(5_000)
        m.fold()
        small = "numpy" in sys.modules
        pend(20_000)
        m.fold()
        print(small, "numpy" in sys.modules, m._hist["run_time"].total_count)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.split() == ["False", "True", "25000"], out.stdout + out.stderr
