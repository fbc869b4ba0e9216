"""`ScalingExperiment`: the live experiment; one owner thread draws, the chart fills in per count.

Workloads are a few milliseconds per count; every wait is bounded and event-driven (`result`
waits for the owner's final render), never a sleep.
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings

import pytest

from neon_nb import ConfigError, Task
from neon_nb.scaling import ScalingResult
from neon_nb.widgets import ScalingExperiment
from neon_nb.widgets.view import widget_tree

from .helpers import WAIT, on_thread


def quick_tasks() -> list[Task]:
    return [Task(f"q{i}", time.sleep, (0.002,)) for i in range(12)]


@pytest.fixture
def experiments():
    made: list[ScalingExperiment] = []

    def make(*args, **kwargs) -> ScalingExperiment:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*needs a notebook front end", category=RuntimeWarning)
            exp = ScalingExperiment(*args, **kwargs)
        made.append(exp)
        return exp

    yield make
    for exp in made:
        exp.close()


def measured_rows(table_html: str) -> int:
    return table_html.count('data-state="measured"')


def test_the_chart_fills_in_one_count_at_a_time_drawn_by_the_owner_only(experiments, comms) -> None:
    """Each count's tasks wait for a gate that the test opens once the previous count is drawn."""
    gates = [threading.Event() for _ in range(3)]
    calls = itertools.count()
    drawn = threading.Condition()
    charts: list[tuple[int, str]] = []

    def make_tasks() -> list[Task]:
        gate = gates[next(calls)]  # no warm-up, one run: the k-th call is the k-th count
        return [Task(f"g{i}", gate.wait, (WAIT,)) for i in range(4)]

    def on_chart(change) -> None:
        with drawn:
            charts.append((measured_rows(exp.table.value), threading.current_thread().name))
            drawn.notify_all()

    exp = experiments(make_tasks, workers=(1, 2, 4), repeats=1, warmup=0, start=False)
    exp.chart.observe(on_chart, names="value")
    mark = comms.mark()
    exp.start()
    try:
        for k, gate in enumerate(gates):
            gate.set()
            with drawn:
                assert drawn.wait_for(lambda k=k: len(charts) > k, WAIT), charts
    finally:
        for gate in gates:
            gate.set()
    result = exp.result(WAIT)
    assert isinstance(result, ScalingResult) and result.workers == (1, 2, 4) and not result.stopped
    # One new chart per finished count, each with one more row in the table, all by the owner.
    assert charts == [(1, "neon-scaling-ui"), (2, "neon-scaling-ui"), (3, "neon-scaling-ui")]
    senders = {m.thread for m in comms.updates_since(mark)}
    assert senders == {"neon-scaling-ui"}, senders
    assert exp.progress.value == 3 and exp.progress.bar_style == "success"
    assert exp.status.value.startswith("done in")
    assert f"p = {result.parallel_fraction:.3f}" in exp.status.value
    assert exp.stop_button.disabled
    assert exp.picture_png() == exp.chart.value
    names = {t.name for t in threading.enumerate()}
    assert not names & {"neon-scaling-run", "neon-scaling-ui"}, "threads left after the end"


def test_renders_are_rate_limited(experiments) -> None:
    """Counts that end every few milliseconds: the owner still renders at most 5 times a second
    (the final render excepted, which never waits)."""
    renders: list[tuple[float, str]] = []
    exp = experiments(lambda: [Task(f"s{i}", time.sleep, (0.005,)) for i in range(8)],
                      workers=(1, 2, 4, 8, 16), repeats=3, warmup=0, start=False, max_rate_hz=5)
    exp.status.observe(lambda change: renders.append((time.monotonic(), change["new"])), names="value")
    exp.start()
    exp.result(WAIT)
    owner = [t for t, text in renders if not text.startswith("done")]
    gaps = [b - a for a, b in itertools.pairwise(owner)]
    assert len(owner) >= 2 and min(gaps) >= 0.2 * 0.95, (gaps, renders)


def test_stop_from_another_thread_ends_it_with_the_counts_so_far(experiments) -> None:
    release = threading.Event()
    first = threading.Event()

    def make() -> list[Task]:
        # 4 x 0.3 s on 1 worker: the stop (seen within 50 ms) comes long before the run's end,
        # and the abandoned task ends by itself in 0.3 s.
        return [Task(f"h{i}", lambda: (first.set(), release.wait(0.3))) for i in range(4)]

    exp = experiments(make, workers=(1, 2), repeats=1, warmup=0)
    try:
        assert first.wait(WAIT)
        on_thread(lambda: exp.stop_button.click())  # as a subshell thread delivers a click
        result = exp.result(WAIT)
    finally:
        release.set()
    assert result.stopped and result.workers == ()
    assert exp.status.value.startswith("stopped in") and exp.stop_button.disabled
    assert exp.table.value.count('data-state="waiting"') == 2
    assert exp.progress.bar_style == "warning"


def test_an_error_is_shown_and_raised_by_result(experiments) -> None:
    def broken() -> list[Task]:
        raise RuntimeError("no workload today")

    exp = experiments(broken, workers=(1, 2))
    with pytest.raises(RuntimeError, match="no workload today"):
        exp.result(WAIT)
    assert exp.status.value.startswith("failed after") and "no workload today" in exp.status.value


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"workers": (2, 4)}, ValueError, "workers must include 1"),
    ({"repeats": 0}, ValueError, "repeats must be an int >= 1"),
    ({"retry_atempts": 1}, ConfigError, "retry_atempts"),
    ({"max_rate_hz": 0}, ValueError, "max_rate_hz must be a number > 0"),
])
def test_bad_input_fails_at_the_call(experiments, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        experiments(quick_tasks, **kwargs)
    assert not any(t.name == "neon-scaling-run" for t in threading.enumerate())


def test_not_started_until_start(experiments) -> None:
    exp = experiments(quick_tasks, workers=(1, 2), repeats=1, warmup=0, start=False)
    assert exp.status.value == "not started" and not exp.running
    with pytest.raises(RuntimeError, match="call start"):
        exp.result(0)
    assert exp.start() is exp
    assert exp.result(WAIT).complete


def test_close_stops_waits_and_closes_every_widget(experiments) -> None:
    started = threading.Event()

    def hold() -> None:
        started.set()
        threading.Event().wait(0.3)  # a task that ends by itself, after the close began

    exp = experiments(lambda: [Task(f"h{i}", hold) for i in range(4)], workers=(1, 2), warmup=0)
    assert started.wait(WAIT)
    exp.close()
    assert all(w.comm is None for w in widget_tree(exp.widget))
    assert not exp.running and exp.latest.workers == ()
    names = {t.name for t in threading.enumerate()}
    assert not names & {"neon-scaling-run", "neon-scaling-ui"}
