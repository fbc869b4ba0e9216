"""`plot_scaling`: the measured speedups, the ideal line, the fitted Amdahl curve and the CPUs."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from neon_nb.plots import plot_scaling, render_png
from neon_nb.scaling import ScalingPoint, ScalingResult, amdahl_speedup


def result_for(speedups: dict[int, float], planned=None, **kw) -> ScalingResult:
    points = tuple(ScalingPoint(n, 100, (1 / s, 1.1 / s, 0.95 / s)) for n, s in speedups.items())
    return ScalingResult(points, planned=tuple(planned or sorted(speedups)), repeats=3, label="work",
                         cpu_count=kw.pop("cpu_count", 2), **kw)


def lines_by_label(fig: Figure) -> dict[str, object]:
    return {ln.get_label(): ln for ln in fig.axes[0].lines}


def test_points_ideal_line_amdahl_curve_and_cpus() -> None:
    r = result_for({1: 1.0, 2: 1.9, 4: 3.4, 8: 5.5})
    fig = plot_scaling(r)
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == "Scaling: work on threads"
    lines = lines_by_label(fig)
    ideal = lines["ideal: S(n) = n"]
    assert np.allclose(ideal.get_xdata(), ideal.get_ydata())
    (amdahl_label,) = [k for k in lines if k.startswith("Amdahl's law")]
    assert f"p = {r.parallel_fraction:.3f}" in amdahl_label
    curve = lines[amdahl_label]
    xs = np.asarray(curve.get_xdata())
    assert np.allclose(curve.get_ydata(), [amdahl_speedup(r.parallel_fraction, x) for x in xs])
    assert xs[0] == 1 and xs[-1] == 8
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    marker_line = bars.lines[0]
    assert list(marker_line.get_xdata()) == [1, 2, 4, 8]
    assert np.allclose(marker_line.get_ydata(), [r.speedup[n] for n in (1, 2, 4, 8)])
    cpu = lines["2 CPUs available"]
    assert list(cpu.get_xdata()) == [2, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert ax.get_ylim()[1] >= 8  # the whole ideal line is in view
    assert render_png(fig).startswith(b"\x89PNG")


def test_a_partial_result_keeps_the_planned_axis() -> None:
    r = result_for({1: 1.0, 2: 2.0}, planned=(1, 2, 4, 8))
    fig = plot_scaling(r)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    assert ax.get_title(loc="left") == "Scaling: work on threads (to measure: 4, 8)"
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert list(bars.lines[0].get_xdata()) == [1, 2]
    stopped = ScalingResult(r.points, planned=(1, 2, 4, 8), stopped=True, label="work")
    assert "(stopped, not measured: 4, 8)" in plot_scaling(stopped).axes[0].get_title(loc="left")


@pytest.mark.parametrize(("stopped", "text"), [(False, "measuring 1 worker..."),
                                               (True, "stopped before a count was measured")])
def test_nothing_measured_yet(stopped: bool, text: str) -> None:
    fig = plot_scaling(ScalingResult((), planned=(1, 2, 4), stopped=stopped))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == [text]
    assert not ax.containers and "ideal: S(n) = n" in lines_by_label(fig)


def test_many_workers_use_log_log_axes() -> None:
    counts = (1, 2, 4, 8, 16, 32, 64)
    r = result_for({n: amdahl_speedup(0.95, n) for n in counts}, cpu_count=64)
    ax = plot_scaling(r).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(n) for n in counts]


def test_redraw_into_the_same_figure() -> None:
    fig = plot_scaling(result_for({1: 1.0}, planned=(1, 2)))
    again = plot_scaling(result_for({1: 1.0, 2: 1.5}), figure=fig)
    assert again is fig and len(fig.axes) == 1
    assert any(k.startswith("Amdahl") for k in lines_by_label(fig))


@pytest.mark.parametrize("speedups", [{1: 1.0, 2: 2.0, 4: 3.99, 8: 7.9},   # IO on threads
                                      {1: 1.0, 2: 1.89, 4: 1.92, 8: 1.89},  # CPU on 2 processes
                                      {1: 1.0, 2: 1.02, 4: 1.01, 8: 0.99}])  # CPU on threads
def test_speedup_labels_cross_no_line(speedups) -> None:
    fig = plot_scaling(result_for(speedups))
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg canvases have one
    labels = [t for t in ax.texts if t.get_text().endswith("x")]
    assert [t.get_text() for t in labels] == [f"{s:.2f}x" for s in speedups.values()]
    for line in ax.lines:
        if line.get_linestyle() == "None":
            continue  # the dots (their labels sit next to them)
        xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        dense_x = np.linspace(xs[0], xs[-1], 400)
        points = ax.transData.transform(np.column_stack([dense_x, np.interp(dense_x, xs, ys)]))
        for text in labels:
            box = text.get_window_extent(renderer)
            inside = ((points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
                      & (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1))
            assert not inside.any(), (text.get_text(), line.get_label())
