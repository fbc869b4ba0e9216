"""`neon_nb.scaling`: the Amdahl fit, the measurement procedure, and the science.

The fit is checked against exact and brute-force answers. The procedure (a fresh worker per
count, warm-up, repetitions, progress, stop, timeout) is checked by what the tasks and callbacks
observe, never by timing. Three tests check the science on real workloads; they are the only ones
that time anything, and their thresholds hold on a busy 2-core machine (see each test).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neon_nb import Task
from neon_nb.backends import ProcessBackend
from neon_nb.scaling import (
    ScalingPoint,
    ScalingResult,
    amdahl_speedup,
    fit_parallel_fraction,
    measure_scaling,
)

from .conftest import WAIT
from .scaling_tasks import cpu_work

# ------------------------------------------------------------------------------------ the fit


def brute_force_fit(speedups: dict[int, float], steps: int = 200_000) -> float:
    """The least-squares p on a fine grid: the reference the fit must match."""
    pts = [(n, s) for n, s in speedups.items() if n > 1]
    return min((i / steps for i in range(steps + 1)),
               key=lambda p: sum((s - amdahl_speedup(p, n)) ** 2 for n, s in pts))


def test_amdahl_speedup_formula() -> None:
    assert amdahl_speedup(0.0, 8) == 1.0
    assert amdahl_speedup(1.0, 8) == 8.0
    assert amdahl_speedup(0.9, 10) == pytest.approx(1 / (0.1 + 0.09))
    assert amdahl_speedup(0.5, 1) == 1.0


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9, 0.99, 1.0])
def test_fit_recovers_exact_amdahl_speedups(p: float) -> None:
    speedups = {n: amdahl_speedup(p, n) for n in (1, 2, 4, 8, 16)}
    assert fit_parallel_fraction(speedups) == pytest.approx(p, abs=1e-6)


@given(p=st.floats(0, 1), counts=st.lists(st.integers(2, 256), min_size=1, max_size=6, unique=True))
def test_fit_recovers_any_parallel_fraction(p: float, counts: list[int]) -> None:
    speedups = {1: 1.0} | {n: amdahl_speedup(p, n) for n in counts}
    assert fit_parallel_fraction(speedups) == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize("speedups", [
    {1: 1.0, 2: 1.9, 4: 3.1, 8: 4.0},          # a typical measured curve
    {1: 1.0, 2: 1.05, 4: 0.98, 8: 1.1},        # the GIL: flat, noisy
    {1: 1.0, 2: 1.7, 4: 1.9, 8: 2.0},          # CPU-bound on 2 cores: flattens at the core count
    {1: 1.0, 2: 1.9, 8: 4.0},
])
def test_fit_is_least_squares_on_the_speedups(speedups: dict[int, float]) -> None:
    assert fit_parallel_fraction(speedups) == pytest.approx(brute_force_fit(speedups), abs=2e-5)


def test_fit_is_not_least_squares_on_inverse_speedups() -> None:
    """The linearised fit (on 1/S) weighs small speedups more; the fit on S must differ from it."""
    speedups = {1: 1.0, 2: 1.9, 8: 4.0}
    a = [1 - 1 / n for n in (2, 8)]
    inverse_fit = sum(x * (1 - 1 / speedups[n]) for x, n in zip(a, (2, 8))) / sum(x * x for x in a)
    p = fit_parallel_fraction(speedups)
    assert p is not None and abs(p - inverse_fit) > 0.005


def test_fit_clamps_to_zero_and_one() -> None:
    assert fit_parallel_fraction({1: 1.0, 2: 2.4, 4: 5.0}) == 1.0      # super-linear
    assert fit_parallel_fraction({1: 1.0, 2: 0.7, 4: 0.5}) == 0.0      # slower with more workers


def test_fit_needs_a_count_above_one() -> None:
    assert fit_parallel_fraction({}) is None
    assert fit_parallel_fraction({1: 1.0}) is None


# ----------------------------------------------------------------------------- the result


def make_result(speedups: dict[int, float], **kw) -> ScalingResult:
    """A result whose 1-worker run takes 1 s for 100 tasks, and n workers 1/S(n) s."""
    points = tuple(ScalingPoint(n, 100, (1.0 / s, 1.0 / s * 1.2, 1.0 / s * 0.9)) for n, s in speedups.items())
    return ScalingResult(points, planned=tuple(sorted(speedups)), label="demo", repeats=3, **kw)


def test_result_mappings_agree() -> None:
    r = make_result({1: 1.0, 2: 1.8, 4: 3.0})
    assert r.workers == (1, 2, 4)
    assert r.seconds[4] == pytest.approx(1 / 3)          # the median of (1/S, 1.2/S, 0.9/S)
    assert r.throughput[2] == pytest.approx(180.0)
    assert r.speedup == pytest.approx({1: 1.0, 2: 1.8, 4: 3.0})
    assert r.efficiency[4] == pytest.approx(0.75)
    assert r.parallel_fraction == pytest.approx(brute_force_fit(dict(r.speedup)), abs=2e-5)
    assert r.amdahl(4) == pytest.approx(amdahl_speedup(r.parallel_fraction, 4))
    assert r.max_speedup == pytest.approx(1 / (1 - r.parallel_fraction))
    residuals = [r.speedup[n] - r.amdahl(n) for n in r.workers]
    assert r.fit_error == pytest.approx(math.sqrt(sum(x * x for x in residuals) / 3))
    assert r.complete and not r.stopped


def test_result_is_frozen_and_sorted() -> None:
    r = make_result({4: 3.0, 1: 1.0, 2: 1.8})
    assert r.workers == (1, 2, 4)
    with pytest.raises(AttributeError):
        r.parallel_fraction = 0.5  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.speedup[2] = 9.0  # type: ignore[index]


def test_best_statistic_uses_the_fastest_run() -> None:
    r = make_result({1: 1.0, 2: 1.8})
    best = r.using("best")
    assert best.seconds[2] == pytest.approx(0.9 / 1.8)
    assert best.throughput[1] == pytest.approx(100 / 0.9)
    assert r.statistic == "median" and best.statistic == "best"
    with pytest.raises(ValueError, match="statistic"):
        r.using("mean")


def test_speedup_is_empty_until_one_worker_is_measured() -> None:
    r = ScalingResult((ScalingPoint(2, 10, (1.0,)),), planned=(1, 2))
    assert r.speedup == {} and r.parallel_fraction is None and r.amdahl(4) is None
    assert not r.complete


def test_table_shows_every_count_and_the_fit() -> None:
    r = make_result({1: 1.0, 2: 1.8, 4: 3.0})
    text = str(r)
    assert text == repr(r)
    lines = text.splitlines()
    assert lines[0].startswith("Scaling of demo on threads: median of 3 runs per worker count")
    rows = [line.split() for line in lines[2:5]]
    assert [row[0] for row in rows] == ["1", "2", "4"]
    assert rows[1][4] == "1.80x" and rows[2][5] == "75%"
    assert f"p = {r.parallel_fraction:.3f}" in lines[-1]


def test_table_of_a_stopped_result_names_what_is_missing() -> None:
    r = ScalingResult((ScalingPoint(1, 10, (1.0,)), ScalingPoint(2, 10, (0.5,))), planned=(1, 2, 4, 8),
                      stopped=True)
    assert "stopped; not measured: 4, 8" in str(r)
    empty = ScalingResult((), planned=(1, 2), stopped=True)
    assert "nothing measured: stopped" in str(empty)


def test_to_dataframe_matches_the_mappings() -> None:
    pd = pytest.importorskip("pandas")
    r = make_result({1: 1.0, 2: 1.8, 4: 3.0})
    df = r.to_dataframe()
    assert isinstance(df, pd.DataFrame)
    assert list(df.index) == [1, 2, 4] and df.index.name == "workers"
    assert list(df.columns) == ["tasks", "runs", "seconds", "throughput", "speedup", "efficiency",
                                "amdahl", "failed"]
    assert df.loc[2, "speedup"] == pytest.approx(r.speedup[2])
    assert df.loc[4, "amdahl"] == pytest.approx(r.amdahl(4))
    assert (df["runs"] == 3).all()


# ------------------------------------------------------------------------- the procedure


class Recorder:
    """Task bodies that note which thread ran them (thread names carry the worker's name)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.threads: list[str] = []
        self.calls = 0  # calls of make_tasks

    def run(self) -> None:
        with self.lock:
            self.threads.append(threading.current_thread().name)

    def make(self, n: int = 12):
        def make_tasks() -> list[Task]:
            with self.lock:
                self.calls += 1
            return [Task(f"t{i}", self.run) for i in range(n)]
        return make_tasks


def test_each_count_runs_on_a_fresh_worker_with_warmup_and_repeats() -> None:
    rec = Recorder()
    progress: list[tuple[ScalingResult, str]] = []
    result = measure_scaling(rec.make(12), workers=(4, 1, 2), repeats=3, warmup=2,
                             on_progress=lambda r: progress.append((r, threading.current_thread().name)))
    assert result.workers == (1, 2, 4) and result.complete and not result.stopped
    assert all(pt.tasks == 12 and len(pt.seconds) == 3 and pt.failed == 0 for pt in result.points)
    assert rec.calls == 3 * (1 + 3)  # per count: one warm-up list, three timed lists
    by_worker: dict[str, int] = {}
    for name in rec.threads:
        worker = name.split("-worker")[0]
        by_worker[worker] = by_worker.get(worker, 0) + 1
    # Warm-up: 2 tasks per worker thread (at most the list), then 3 x 12 timed tasks.
    assert by_worker == {"scaling-1": 2 + 36, "scaling-2": 4 + 36, "scaling-4": 8 + 36}
    threads_of = {w: {n for n in rec.threads if n.startswith(w + "-")} for w in by_worker}
    assert all(len(threads_of[f"scaling-{n}"]) <= n for n in (1, 2, 4))
    # One progress call per count, with the result so far, on the calling thread.
    assert [r.workers for r, _ in progress] == [(1,), (1, 2), (1, 2, 4)]
    assert {t for _, t in progress} == {threading.current_thread().name}
    assert [r.planned for r, _ in progress] == [(1, 2, 4)] * 3


def test_no_warmup_runs_only_the_timed_lists() -> None:
    rec = Recorder()
    measure_scaling(rec.make(5), workers=(1, 2), repeats=2, warmup=0)
    assert rec.calls == 4 and len(rec.threads) == 20


def test_failures_are_counted_not_hidden() -> None:
    def boom() -> None:
        raise ValueError("bad")

    def make_tasks() -> list[Task]:
        return [Task(f"ok{i}", int) for i in range(6)] + [Task(f"bad{i}", boom) for i in range(2)]

    result = measure_scaling(make_tasks, workers=(1, 2), repeats=2, warmup=0, retry_attempts=0)
    assert [pt.failed for pt in result.points] == [4, 4]
    assert "failed" in str(result).splitlines()[1]


def test_stop_between_counts_keeps_what_was_measured() -> None:
    stop = threading.Event()
    rec = Recorder()
    result = measure_scaling(rec.make(4), workers=(1, 2, 4), repeats=1,
                             on_progress=lambda r: stop.set(), stop=stop)
    assert result.stopped and result.workers == (1,) and result.planned == (1, 2, 4)
    assert not any(name.startswith("scaling-2") for name in rec.threads)


def test_stop_during_a_run_abandons_it_within_its_bound() -> None:
    """A task that never ends on its own: the stop cancels the queued tasks and gives up on the
    running one after the documented 5 s, without waiting for it."""
    stop = threading.Event()
    started = threading.Event()
    release = threading.Event()
    ran = itertools.count()

    def hold() -> None:
        next(ran)
        started.set()
        release.wait(3 * WAIT)

    outcome: dict[str, ScalingResult] = {}
    t = threading.Thread(target=lambda: outcome.setdefault("r", measure_scaling(
        lambda: [Task(f"h{i}", hold) for i in range(50)], workers=(1, 2), warmup=0, stop=stop)))
    t.start()
    try:
        assert started.wait(WAIT)
        stop.set()
        t.join(WAIT)
        assert not t.is_alive(), "measure_scaling did not return within its bound after stop"
    finally:
        release.set()
    result = outcome["r"]
    assert result.stopped and result.workers == () and "nothing measured" in str(result)
    assert next(ran) == 1, "the queued tasks of the abandoned run were not cancelled"


def test_timeout_raises_and_shuts_the_worker_down() -> None:
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError, match=r"on 1 worker did not finish within timeout=0.2"):
            measure_scaling(lambda: [Task("slow", release.wait, (0.5,))], workers=(1, 2), warmup=0,
                            timeout=0.2)
    finally:
        release.set()
    # The autouse leak check fails this test if the worker were still running.


def test_an_error_in_make_tasks_propagates_and_leaves_no_worker() -> None:
    calls = itertools.count()

    def make_tasks() -> list[Task]:
        if next(calls) == 2:
            raise RuntimeError("cannot build the workload")
        return [Task("a", int)]

    with pytest.raises(RuntimeError, match="cannot build"):
        measure_scaling(make_tasks, workers=(1, 2), repeats=3, warmup=0)


def test_a_backend_instance_serves_each_fresh_worker_in_turn() -> None:
    result = measure_scaling(lambda: [Task(f"c{i}", cpu_work, (1000,)) for i in range(4)],
                             workers=(1, 2), repeats=1, warmup=1, backend=ProcessBackend())
    assert result.backend == "processes" and result.complete


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"make_tasks": 5}, TypeError, "make_tasks must be a callable"),
    ({"make_tasks": lambda: 5}, TypeError, r"make_tasks\(\) must return a list of neon_nb.Task"),
    ({"make_tasks": lambda: []}, ValueError, r"make_tasks\(\) returned no task"),
    ({"make_tasks": lambda: [int]}, TypeError, "item 0 is type"),
    ({"workers": (2, 4)}, ValueError, "workers must include 1"),
    ({"workers": (1, 2, 2)}, ValueError, "must not repeat"),
    ({"workers": (1, 0)}, ValueError, "workers must be ints >= 1"),
    ({"workers": (1, True)}, ValueError, "workers must be ints >= 1"),
    ({"workers": 4}, TypeError, "workers must be an iterable"),
    ({"repeats": 0}, ValueError, "repeats must be an int >= 1"),
    ({"warmup": -1}, ValueError, "warmup must be an int >= 0"),
    ({"timeout": 0}, ValueError, "timeout must be None or seconds > 0"),
    ({"statistic": "mean"}, ValueError, "statistic must be one of"),
    ({"on_progress": 3}, TypeError, "on_progress must be None or a callable"),
    ({"stop": True}, TypeError, "stop must be None or an object with is_set"),
    ({"backend": "gpu"}, ValueError, "backend must be"),
    ({"max_workers": 3}, TypeError, "max_workers cannot be worker settings here"),
    ({"retry_attempts": -1}, ValueError, "retry_attempts"),
    ({"retry_atempts": 1}, ValueError, "unknown configuration key.*'retry_atempts'"),
    ({"label": 3}, TypeError, "label must be a str or None"),
])
def test_bad_input_is_named(kwargs, error, match) -> None:
    args = {"make_tasks": lambda: [Task("a", int)], "workers": (1, 2), "warmup": 0} | kwargs
    with pytest.raises(error, match=match):
        measure_scaling(**args)


def test_importing_scaling_imports_no_jupyter_and_no_matplotlib() -> None:
    code = ("import sys, neon_nb, neon_nb.scaling; "
            "bad = [m for m in ('IPython', 'ipywidgets', 'matplotlib', 'pandas') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------- the science


def sleep_tasks() -> list[Task]:
    return [Task(f"s{i}", time.sleep, (0.01,)) for i in range(240)]


@pytest.mark.slow
def test_sleeping_tasks_scale_with_threads() -> None:
    """IO-like tasks overlap on threads: speedup >= 6 at 8, p >= 0.9, and never past Little's law.

    Sleeps barely use the CPU, so a busy machine slows the 1- and the 8-worker runs alike.
    """
    result = measure_scaling(sleep_tasks, workers=(1, 2, 4, 8), repeats=1)
    print(result)
    assert result.speedup[8] >= 6, result
    assert result.parallel_fraction is not None and result.parallel_fraction >= 0.9, result
    # Little's law, as a hard bound: n workers each hold one 10 ms task at a time, so 240 tasks
    # take at least ceil(240 / n) * 10 ms (time.sleep never returns early).
    for n in result.workers:
        assert result.seconds[n] >= math.ceil(240 / n) * 0.01, (n, result.seconds[n])


def best_runs_until(make_tasks, workers, backend, accept, budget=60.0, repeats=5) -> ScalingResult:
    """Measure again and again, pooling every run of each count, until the fastest runs of the
    pool ``accept`` (or ``budget`` seconds pass); returns the pooled result, statistic "best".

    Other programs share this machine's 2 cores and can only slow a run down, never speed it up.
    The fastest run of each count is the least disturbed one, and pooling the runs of several
    attempts gives each count more chances to meet a quiet moment. A quiet moment of a few tenths
    of a second per count is enough; a minute of uninterrupted load is not, and fails the test.
    """
    pooled: dict[int, list[float]] = {n: [] for n in workers}
    tasks = {}
    deadline = time.monotonic() + budget
    while True:
        r = measure_scaling(make_tasks, workers=workers, repeats=repeats, backend=backend)
        for pt in r.points:
            pooled[pt.workers].extend(pt.seconds)
            tasks[pt.workers] = pt.tasks
        result = ScalingResult(tuple(ScalingPoint(n, tasks[n], tuple(pooled[n])) for n in workers),
                               planned=tuple(workers), backend=r.backend, label=r.label,
                               repeats=len(pooled[1]), statistic="best")
        if accept(result) or time.monotonic() > deadline:
            return result


@pytest.mark.slow
def test_pure_python_on_threads_fits_a_parallel_fraction_near_zero() -> None:
    """The GIL: one thread computes at a time, so more threads do not finish sooner: p near 0.

    Judged on the fastest runs (see `best_runs_until`): a busy moment that slows the 1-thread runs
    but not the others would fake a speedup.
    """
    result = best_runs_until(lambda: [Task(f"c{i}", cpu_work, (40_000,)) for i in range(40)],
                             (1, 2, 4), "threads", lambda r: r.parallel_fraction <= 0.2)
    print(result)
    assert result.parallel_fraction is not None and result.parallel_fraction <= 0.2, result


@pytest.mark.slow
def test_pure_python_on_processes_fits_a_parallel_fraction_near_one() -> None:
    """Two processes compute on two cores at once: p near 1 for 1 vs 2 workers.

    Judged on the fastest runs (see `best_runs_until`): two busy cores leave the processes one
    core to share, which would look like p near 0. Threads never reach this however idle the
    machine (previous test), so passing here shows the work really ran in parallel.
    """
    result = best_runs_until(lambda: [Task(f"c{i}", cpu_work, (150_000,)) for i in range(24)],
                             (1, 2), "processes", lambda r: r.parallel_fraction >= 0.8)
    print(result)
    assert result.parallel_fraction is not None and result.parallel_fraction >= 0.8, result
