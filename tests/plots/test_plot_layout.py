"""What the static plots show: legends beside the data, never over it; a labelled count axis; and
throughput steps at the true rate, also for the partly observed first and last windows."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from matplotlib.patches import StepPatch

from neon_nb import MetricsSnapshot, NeonWorker, Task, TaskSpan, ThroughputPoint
from neon_nb.plots import MIN_OBSERVED_SHARE, plot_latency, plot_throughput, throughput_steps

WAIT = 10.0


def _fail() -> None:
    raise RuntimeError("planned")


@pytest.fixture(scope="module")
def snapshot() -> MetricsSnapshot:
    w = NeonWorker(max_workers=3, queue_size=0, retry_delay=0.0, log_level="CRITICAL").start()
    try:
        gate = threading.Event()
        w.add_tasks([Task(f"ok-{i}", gate.wait, (0.002 * (i % 7),)) for i in range(60)]
                    + [Task(f"bad-{i}", _fail, retry_attempts=1) for i in range(6)])
        assert w.wait_for_completion(WAIT)
        return w.metrics.snapshot()
    finally:
        w.shutdown()


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


# ---------------------------------------------------------------------- latency
def test_latency_legends_sit_above_the_axes_never_over_the_bars(snapshot):
    fig = plot_latency(snapshot)
    renderer = _drawn(fig)
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        area = ax.get_window_extent(renderer)  # the data area: bars and percentile lines
        assert box.y0 >= area.y1 - 0.5, (ax.get_title(loc="left"), box, area)
        # ...and inside the figure, below the title.
        assert box.y1 <= fig.bbox.y1
        assert box.y1 <= ax.title.get_window_extent(renderer).y0 + 0.5
        assert [t.get_text().split()[0] for t in legend.get_texts()] == ["p50", "p90", "p99"]


def test_latency_y_axes_count_attempts_and_tasks(snapshot):
    fig = plot_latency(snapshot)
    _drawn(fig)
    assert [ax.get_ylabel() for ax in fig.axes] == ["attempts", "attempts", "tasks"]
    for ax in fig.axes:
        ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert ticks and all(t.isdigit() for t in ticks)  # counts, in whole numbers
    # The counts are the snapshot's: 66 tasks, 72 attempts (6 retries).
    heights = {ax.get_ylabel() + str(i): sum(p.get_data().values.sum() for p in ax.patches
                                              if isinstance(p, StepPatch))
               for i, ax in enumerate(fig.axes)}
    assert heights == {"attempts0": 72, "attempts1": 72, "tasks2": 66}


def test_throughput_legend_sits_above_the_axes(snapshot):
    fig = plot_throughput(snapshot)
    renderer = _drawn(fig)
    ax = fig.axes[0]
    box = ax.get_legend().get_window_extent(renderer)
    assert box.y0 >= ax.get_window_extent(renderer).y1 - 0.5
    assert box.y1 <= fig.bbox.y1


# -------------------------------------------------------------------- throughput
RATE = 100.0  # tasks per second, steady
T0 = 1000.0   # time.monotonic() when the metrics started


def synthetic(*, began: float, observed: float, rate: float = RATE, stream_size: int | None = None,
              window: float = 1.0) -> MetricsSnapshot:
    """A snapshot of tasks finishing at ``rate`` from ``began`` (seconds after the metrics started)
    until ``observed``, when it is taken; each task ran 5 ms before it finished."""
    ends = np.arange(began + 1 / rate, observed, 1 / rate)
    spans = [TaskSpan(f"t{i}", "neon-worker_0", T0 + e - 0.005, T0 + e, "succeeded", 1)
             for i, e in enumerate(ends)]
    if stream_size is not None:
        spans = spans[-stream_size:]
    first, last = int(began // window), int(observed // window)
    counts = np.bincount((ends // window).astype(int) - first, minlength=last - first + 1)
    points = tuple(ThroughputPoint((first + i) * window, int(c), 0) for i, c in enumerate(counts))
    return MetricsSnapshot(taken_at=T0 + observed, started_at=T0, window=window, counts={},
                           throughput=points, latency={}, utilisation={}, utilisation_span=5.0,
                           task_stream=tuple(spans), version=1)


def plotted_rates(snap: MetricsSnapshot) -> tuple[np.ndarray, np.ndarray]:
    step = next(p for p in plot_throughput(snap).axes[0].patches if isinstance(p, StepPatch))
    data = step.get_data()
    return data.values, data.edges


def test_partial_first_and_last_windows_show_the_true_rate():
    # Work begins 0.6 s into the first window; the snapshot is taken 0.5 s into the last one.
    # Before: the first window read 40 tasks/s and the last 50, for a steady 100.
    snap = synthetic(began=0.6, observed=4.5)
    values, edges = plotted_rates(snap)
    assert values == pytest.approx([RATE] * 5, rel=0.05)
    first_start = min(span.start for span in snap.task_stream) - T0
    assert edges[0] == pytest.approx(first_start) and 0.6 <= first_start < 0.62  # work began
    assert edges[-1] == pytest.approx(4.5)                   # when the snapshot was taken
    assert list(edges[1:-1]) == [1.0, 2.0, 3.0, 4.0]


def test_a_first_window_the_stream_no_longer_holds_keeps_its_full_length():
    # The task stream kept only the last 150 attempts: when work began is unknown.
    snap = synthetic(began=0.6, observed=4.5, stream_size=150)
    values, edges = plotted_rates(snap)
    assert edges[0] == 0.0 and values[0] == pytest.approx(40, rel=0.05)
    assert values[1:] == pytest.approx([RATE] * 4, rel=0.05)


def test_a_last_window_seen_too_briefly_is_left_out():
    snap = synthetic(began=0.0, observed=3.0 + MIN_OBSERVED_SHARE / 2)
    edges, ok, _ = throughput_steps(snap)
    assert list(edges[1:]) == [1.0, 2.0, 3.0] and ok == pytest.approx([RATE] * 3, rel=0.05)


def test_a_real_run_that_starts_late_reads_near_its_rate():
    # 4 threads x 20 ms tasks: about 200 tasks/s, from 0.5 s after the metrics started.
    w = NeonWorker(max_workers=4, queue_size=0, log_level="CRITICAL").start()
    try:
        idle = threading.Event()
        idle.wait(0.5)
        w.add_tasks([Task(i, time.sleep, (0.02,)) for i in range(400)])
        assert w.wait_for_completion(60)
        snap = w.metrics.snapshot()
    finally:
        w.shutdown()
    edges, ok, _ = throughput_steps(snap)
    full = [r for r, a, b in zip(ok, edges[:-1], edges[1:]) if b - a == pytest.approx(snap.window)]
    # Whatever the machine's speed, the partial first step reads like the full ones after it,
    # not a fraction of them (it read about half before).
    assert edges[0] > 0.4
    assert full and ok[0] >= 0.6 * np.median(full), (ok, edges)
