"""Static plots: Figures with the expected artists, from a real snapshot, headless."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import StepPatch

from neon_nb import Task
from neon_nb.plots import render_png
from neon_nb.widgets import plot_latency, plot_task_stream, plot_throughput

from .helpers import WAIT


def _fail() -> None:
    raise RuntimeError("planned")


@pytest.fixture(scope="module")
def snapshot():
    from neon_nb import NeonWorker

    w = NeonWorker(max_workers=3, queue_size=0, retry_delay=0.0, log_level="CRITICAL").start()
    try:
        w.add_tasks([Task(f"ok-{i}", sum, ([i, 1],)) for i in range(40)]
                    + [Task(f"bad-{i}", _fail, retry_attempts=1) for i in range(4)])
        assert w.wait_for_completion(WAIT)
        return w.metrics.snapshot()
    finally:
        w.shutdown()


def test_throughput(snapshot):
    fig = plot_throughput(snapshot)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    steps = [p for p in fig.axes[0].patches if isinstance(p, StepPatch)]
    assert [s.get_label() for s in steps] == ["succeeded", "failed"]
    assert render_png(fig).startswith(b"\x89PNG")


def test_latency(snapshot):
    fig = plot_latency(snapshot)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["queue wait", "run time", "end to end"]
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert any(isinstance(p, StepPatch) for p in ax.patches)
        labels = [ln.get_label() for ln in ax.lines if isinstance(ln, Line2D)]
        assert [lb.split()[0] for lb in labels] == ["p50", "p90", "p99"]


def test_task_stream(snapshot):
    fig = plot_task_stream(snapshot)
    ax = fig.axes[0]
    by_gid = {c.get_gid(): len(c.get_paths()) for c in ax.collections if isinstance(c, PolyCollection)}
    assert by_gid == {"neon-stream-succeeded": 40, "neon-stream-failed": 4, "neon-stream-retry": 4}
    # One lane per worker thread.
    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker_0", "worker_1", "worker_2"]


def test_redraw_into_the_same_figure(snapshot):
    fig = plot_latency(snapshot)
    again = plot_latency(snapshot, figure=fig)
    assert again is fig and len(fig.axes) == 3


@pytest.mark.parametrize("plot", [plot_throughput, plot_latency, plot_task_stream])
def test_no_data_and_no_metrics(plot):
    from neon_nb import NeonWorker

    w = NeonWorker(max_workers=1)
    empty = w.metrics.snapshot()
    for snap, text in ((empty, "no"), (None, "metrics disabled")):
        fig = plot(snap)
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert texts and all(t.startswith(text) for t in texts)
        assert render_png(fig).startswith(b"\x89PNG")


def test_plots_never_import_pyplot():
    code = (
        "import sys\n"
        "from neon_nb import NeonWorker\n"
        "from neon_nb.plots import plot_latency, plot_task_stream, plot_throughput, render_png\n"
        "w = NeonWorker(max_workers=1).start(); w.map(abs, range(5)); w.wait_for_completion()\n"
        "s = w.metrics.snapshot(); w.shutdown()\n"
        "for f in (plot_throughput, plot_latency, plot_task_stream): render_png(f(s))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False, env={**os.environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr
