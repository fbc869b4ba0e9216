"""Static plots of a `MetricsSnapshot`: throughput, latency and the task stream.

Each function returns a `matplotlib.figure.Figure` built with the
object-oriented API on the Agg canvas: no pyplot, no global figure registry,
no GUI. That makes them safe in headless runs, in reports, and on the
dashboard's owner thread (which passes ``figure=`` to redraw in place).

``import neon_nb`` does not import this module; importing it needs matplotlib
(``pip install 'neon_nb[notebook]'``, or just ``matplotlib``).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from typing import Any

try:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgb
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator, NullLocator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "neon_nb.plots needs matplotlib: pip install 'neon_nb[notebook]' (or pip install matplotlib)"
    ) from exc

from ._metrics import MetricsSnapshot, TaskSpan
from .scaling import ScalingResult

__all__ = ["OUTCOME_COLOURS", "plot_latency", "plot_scaling", "plot_task_stream", "plot_throughput",
           "render_png", "short_thread_name", "task_stream_lanes", "throughput_steps"]

#: Colour of each attempt outcome in every plot (and in the dashboard's counts).
OUTCOME_COLOURS = {
    "succeeded": "#2ca02c",
    "failed": "#d62728",
    "retry": "#ff7f0e",
}
LATENCY_TITLES = {"queue_wait": "queue wait", "run_time": "run time", "end_to_end": "end to end"}
PERCENTILE_STYLES = ((50, "#1f77b4", "-"), (90, "#9467bd", "--"), (99, "#d62728", ":"))

_DPI = 80


def _figure(figure: Figure | None, figsize: tuple[float, float], **margins: float) -> Figure:
    """A cleared figure on the Agg canvas: the one given, or a new one."""
    if figure is None:
        # No layout engine: constrained/tight layout measure every tick label
        # and cost 5-10x the drawing itself. Fixed margins fit these plots.
        figure = Figure(figsize=figsize, dpi=_DPI)
        FigureCanvasAgg(figure)
    else:
        figure.clear()
    figure.subplots_adjust(**margins)
    return figure


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.45")
    ax.set_xticks([])
    ax.set_yticks([])


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (Agg), e.g. for an ``ipywidgets.Image``. Thread-safe per figure."""
    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


# ------------------------------------------------------------------- throughput
def plot_throughput(snapshot: MetricsSnapshot | None, *, figure: Figure | None = None,
                    figsize: tuple[float, float] = (6.0, 2.4)) -> Figure:
    """Completed tasks per second over time, succeeded and failed stacked.

    One step per metrics window (``snapshot.window``); the x axis is seconds
    since the metrics started. The first and last windows are only partly
    observed (work began, or the snapshot was taken, inside them): their
    steps span only that part, at the rate measured over it (see
    `throughput_steps`). Returns the figure (``figure`` if given, cleared and
    redrawn).
    """
    fig = _figure(figure, figsize, left=0.1, right=0.98, bottom=0.2, top=0.86)
    ax = fig.add_subplot()
    ax.set_title("Throughput", fontsize=10, loc="left")
    points = () if snapshot is None else snapshot.throughput
    if snapshot is None or not any(p.total for p in points):
        _no_data(ax, "no task finished yet" if snapshot is not None else "metrics disabled")
        return fig
    edges, ok, bad = throughput_steps(snapshot)
    ax.stairs(ok + bad, edges, fill=True, color=OUTCOME_COLOURS["succeeded"], alpha=0.85,
              label="succeeded")
    if bad.any():
        ax.stairs(bad, edges, fill=True, color=OUTCOME_COLOURS["failed"], alpha=0.95, label="failed")
    # From the first window's start: the idle time before work began shows as a gap.
    ax.set_xlim(points[0].start, edges[-1])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since start", fontsize=8)
    ax.set_ylabel("tasks/s", fontsize=8)
    ax.tick_params(labelsize=8)
    # Above the axes, on the title's line: a legend inside would cover the first steps.
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, frameon=False,
              borderaxespad=0.2, handlelength=1.2)
    return fig


#: A last window observed for less than this share of its length is left out: too short to
#: give a rate (two tasks in 10 ms would read as 200 tasks/s).
MIN_OBSERVED_SHARE = 0.25


def throughput_steps(snapshot: MetricsSnapshot) -> tuple[Any, Any, Any]:
    """``(edges, succeeded_rate, failed_rate)``: the throughput as steps, in tasks per second.

    A full window is its count divided by its length. The first window is
    divided by the part after work began, taken from the task stream (the
    first attempt's start) when the stream still holds every task that
    finished in that window; before, the worker was idle, not slow. The last
    window is divided by the part observed before the snapshot was taken
    (and left out when that part is under `MIN_OBSERVED_SHARE` of a window).
    The edges move accordingly, so a step's width is the time it measures.
    """
    w = snapshot.window
    points = list(snapshot.throughput)
    observed = snapshot.taken_at - snapshot.started_at
    if len(points) > 1 and observed - points[-1].start < MIN_OBSERVED_SHARE * w:
        points.pop()
    edges = np.array([p.start for p in points] + [points[-1].start + w], dtype=float)
    edges[-1] = min(edges[-1], max(observed, edges[-2] + 1e-9))
    edges[0] = _activity_start(snapshot, points[0], edges[1])
    widths = np.diff(edges)
    ok = np.fromiter((p.succeeded for p in points), float, len(points)) / widths
    bad = np.fromiter((p.failed for p in points), float, len(points)) / widths
    return edges, ok, bad


def _activity_start(snapshot: MetricsSnapshot, first: Any, first_end: float) -> float:
    """Where the first step begins: the first attempt's start if the stream covers that window."""
    t0 = snapshot.started_at
    in_first = [s for s in snapshot.task_stream
                if s.outcome != "retry" and first.start <= s.end - t0 < first_end]
    if not in_first or len(in_first) < first.total:
        return first.start  # the stream no longer holds that window: nothing better is known
    began = min(s.start for s in snapshot.task_stream) - t0
    # Never shorter than a tenth of the window: a rate over a sliver is noise.
    return float(min(max(first.start, began), first_end - 0.1 * snapshot.window))


# ---------------------------------------------------------------------- latency
#: What each latency histogram counts: every attempt waits and runs; a task ends once.
LATENCY_COUNTS = {"queue_wait": "attempts", "run_time": "attempts", "end_to_end": "tasks"}


def plot_latency(snapshot: MetricsSnapshot | None, *, figure: Figure | None = None,
                 figsize: tuple[float, float] = (9.0, 2.8)) -> Figure:
    """Histograms of queue wait, run time and end to end, with p50/p90/p99 marked.

    One axes per distribution (log-scaled seconds, counts on the y axis:
    attempts for queue wait and run time, which count every retry, and tasks
    for end to end); each has a step histogram and three vertical lines,
    whose values are listed in a legend above the axes (never over the bars).
    """
    fig = _figure(figure, figsize, left=0.065, right=0.99, bottom=0.18, top=0.78, wspace=0.32)
    axes = fig.subplots(1, 3)
    latency = {} if snapshot is None else snapshot.latency
    for ax, key in zip(axes, LATENCY_TITLES):
        # The title sits above the legend's row.
        ax.set_title(LATENCY_TITLES[key], fontsize=10, loc="left", pad=15)
        summary = latency.get(key)
        if summary is None or not summary.count or not summary.histogram:
            _no_data(ax, "no data" if snapshot is not None else "metrics disabled")
            continue
        _latency_histogram(ax, summary)
        ax.set_ylabel(LATENCY_COUNTS[key], fontsize=8, labelpad=2)
        ax.set_xlabel("seconds", fontsize=8)
    return fig


def _latency_histogram(ax: Any, summary: Any) -> None:
    uppers = np.array([b for b, _ in summary.histogram])
    counts = np.array([c for _, c in summary.histogram], dtype=float)
    # The snapshot's bins are 4 per decade: each spans (upper / 10**0.25, upper].
    # Fill the empty bins in between so the steps are contiguous.
    lo = round(math.log10(uppers[0]) * 4)
    hi = round(math.log10(uppers[-1]) * 4)
    full = np.zeros(hi - lo + 1)
    full[np.rint(np.log10(uppers) * 4).astype(int) - lo] = counts
    edges = 10.0 ** (np.arange(lo - 1, hi + 1) / 4)
    ax.stairs(full, edges, fill=True, color="0.65")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks cost more than the plot
    for p, colour, style in PERCENTILE_STYLES:
        v = summary.percentile(p)
        ax.axvline(max(v, edges[0]), color=colour, linestyle=style, linewidth=1.2,
                   label=f"p{p} {format_seconds(v)}")
    # One row just above the axes: the values are read there, the bars stay uncovered.
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, frameon=False,
              borderaxespad=0.1, handlelength=1.2, handletextpad=0.4, columnspacing=0.8)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    ax.tick_params(labelsize=7)


def format_seconds(v: float) -> str:
    """``0.0123`` -> ``"12.3 ms"``: a latency in the unit that reads best."""
    if v >= 1:
        return f"{v:.3g} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    if v >= 1e-6:
        return f"{v * 1e6:.3g} µs"
    return f"{v * 1e9:.3g} ns"


# ------------------------------------------------------------------ task stream
def _lane_key(name: str) -> tuple:
    # "neon-worker_10" after "neon-worker_9": compare the numbers as numbers.
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def task_stream_lanes(spans: Iterable[TaskSpan], threads: Iterable[str] = ()) -> list[str]:
    """The Gantt lanes: every thread seen in ``spans`` or listed in ``threads``, in natural order."""
    return sorted({s.thread for s in spans} | set(threads), key=_lane_key)


def plot_task_stream(snapshot: MetricsSnapshot | None, *, figure: Figure | None = None,
                     figsize: tuple[float, float] = (9.0, 2.6)) -> Figure:
    """A Gantt chart of the last attempts: one lane per worker thread, coloured by outcome.

    One `PolyCollection` per outcome present (``succeeded``, ``failed``,
    ``retry``); a bar spans an attempt's start to end in seconds since the
    metrics started. Bars have a darker hairline edge, so back-to-back
    attempts stay apart and microsecond tasks stay visible on a seconds-long
    axis.
    """
    fig = _figure(figure, figsize, left=0.09, right=0.86, bottom=0.18, top=0.9)
    ax = fig.add_subplot()
    ax.set_title("Task stream", fontsize=10, loc="left")
    spans = () if snapshot is None else snapshot.task_stream
    threads = () if snapshot is None else snapshot.utilisation.keys()
    lanes = task_stream_lanes(spans, threads)
    if snapshot is None or not spans:
        _no_data(ax, "no task finished yet" if snapshot is not None else "metrics disabled")
        return fig
    row = {name: i for i, name in enumerate(lanes)}
    t0 = snapshot.started_at
    handles = []
    for outcome, colour in OUTCOME_COLOURS.items():
        mine = [s for s in spans if s.outcome == outcome]
        if not mine:
            continue
        y = np.fromiter((row[s.thread] for s in mine), float, len(mine))
        x0 = np.fromiter((s.start - t0 for s in mine), float, len(mine))
        x1 = np.fromiter((s.end - t0 for s in mine), float, len(mine))
        verts = np.stack([np.column_stack([x0, y - 0.38]), np.column_stack([x0, y + 0.38]),
                          np.column_stack([x1, y + 0.38]), np.column_stack([x1, y - 0.38])], axis=1)
        edge = tuple(c * 0.6 for c in to_rgb(colour))  # darker: back-to-back attempts stay apart
        coll = PolyCollection(verts, facecolors=colour, edgecolors=edge,  # type: ignore[arg-type]  # an (n, 4, 2) array is what it takes; the stubs ask for a Sequence
                              linewidths=0.4, label=outcome)
        coll.set_gid(f"neon-stream-{outcome}")
        ax.add_collection(coll)
        handles.append(Patch(color=colour, label=f"{outcome} ({len(mine)})"))
    first = min(s.start for s in spans) - t0
    last = max(s.end for s in spans) - t0
    pad = max((last - first) * 0.01, 1e-3)
    ax.set_xlim(first - pad, last + pad)
    ax.set_ylim(-0.6, len(lanes) - 0.4)
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels([short_thread_name(n) for n in lanes], fontsize=7)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("seconds since start", fontsize=8)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def short_thread_name(name: str) -> str:
    """``"neon-worker_3"`` -> ``"worker_3"``: a worker thread's name without its worker's name."""
    return name.rsplit("-", 1)[-1]


# ---------------------------------------------------------------------- scaling
def plot_scaling(result: ScalingResult, *, figure: Figure | None = None,
                 figsize: tuple[float, float] = (6.0, 4.0), title: str | None = None) -> Figure:
    """Speedup against the number of workers, from a `neon_nb.scaling.ScalingResult`.

    The measured speedups (dots; a bar spans the fastest to the slowest run
    when there were several), the ideal line ``S(n) = n``, Amdahl's curve
    for the fitted parallel fraction, and the CPUs this process could use
    (a vertical line, when it falls inside the axis). The x axis spans the
    planned worker counts, so a partial result (a live experiment, or a
    stopped one) keeps the same axes: its missing counts are ticks without
    a dot. Past 16 workers both axes are base-2 logarithmic (the ideal line
    stays straight).
    """
    fig = _figure(figure, figsize, left=0.11, right=0.97, bottom=0.13, top=0.9)
    ax = fig.add_subplot()
    ax.set_title(title if title is not None else _scaling_title(result), fontsize=10, loc="left")
    planned = sorted(set(result.planned) | set(result.workers)) or [1]
    top = max(planned)
    log = top > 16
    ns = np.geomspace(1, top, 200) if log else np.linspace(1, top, 200)
    ax.plot(ns, ns, "--", color="0.4", linewidth=1, zorder=2.5, label="ideal: S(n) = n")
    p = result.parallel_fraction
    if p is not None:
        ax.plot(ns, 1 / ((1 - p) + p / ns), "-", color="#ff7f0e", linewidth=1.5, alpha=0.9,
                label=f"Amdahl's law, fitted p = {p:.3f} ({_ceiling(result)})")
    _scaling_points(ax, result)
    cpus = result.cpu_count
    if 1 < cpus <= top:
        ax.axvline(cpus, color="0.6", linewidth=1, linestyle="-.", zorder=0,
                   label=f"{cpus} CPUs available")
    highest = max(result.speedup.values(), default=1.0)
    if log:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlim(planned[0] / 1.2, top * 1.2)
        ax.set_ylim(0.5, max(top, highest) * 1.3)
        ax.set_yticks([2 ** k for k in range(int(math.log2(max(top, highest))) + 1)])
        ax.yaxis.set_major_formatter("{x:g}")
    else:
        ax.set_xlim(planned[0] - 0.4, top + 0.6)
        ax.set_ylim(0, max(top, highest) * 1.1)
    ax.set_xticks(planned)
    ax.set_xticklabels([str(n) for n in planned])
    _label_speedups(ax, result)  # once the axes are final: labels are placed by their extents
    ax.set_xlabel("workers", fontsize=8)
    ax.set_ylabel("speedup over 1 worker", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", frameon=True, facecolor="white", edgecolor="none",
              framealpha=0.9)
    if not result.speedup:
        ax.text(0.5, 0.5, "stopped before a count was measured" if result.stopped
                else "measuring 1 worker...", ha="center", va="center", transform=ax.transAxes,
                color="0.45")
    return fig


# Where a speedup's label may sit, in order of preference: (dx, dy) in points from its dot,
# horizontal and vertical alignment. Above-left first: the ideal line runs above and to the
# right of a dot, and a fitted curve through the dots leaves their upper-left side free.
_LABEL_SPOTS = (((-6, 6), "right", "baseline"), ((7, -5), "left", "top"),
                ((-6, -5), "right", "top"), ((6, 6), "left", "baseline"),
                ((0, 9), "center", "baseline"), ((0, -9), "center", "top"))


def _label_speedups(ax: Any, result: ScalingResult) -> None:
    """Each measured speedup's value next to its dot, where it hides no line, dot or label."""
    renderer = getattr(ax.figure.canvas, "get_renderer", lambda: None)()
    obstacles = _drawn_points(ax) if result.speedup else None
    placed: list[Any] = []
    for x, y in sorted(result.speedup.items()):
        text = _place_label(ax, x, y, renderer, obstacles, placed)
        if renderer is not None:
            placed.append(text.get_window_extent(renderer))


def _place_label(ax: Any, x: int, y: float, renderer: Any, obstacles: Any, placed: list[Any]) -> Any:
    """The first of `_LABEL_SPOTS` that is clear (or the first, if none is, or if no renderer
    can measure the text)."""
    for spot in _LABEL_SPOTS:
        text = _speedup_label(ax, x, y, spot)
        if renderer is None or _is_clear(text.get_window_extent(renderer), ax, obstacles, placed):
            return text
        text.remove()
    return _speedup_label(ax, x, y, _LABEL_SPOTS[0])


def _speedup_label(ax: Any, x: int, y: float, spot: tuple[tuple[int, int], str, str]) -> Any:
    offset, ha, va = spot
    return ax.annotate(f"{y:.2f}x", (x, y), xytext=offset, textcoords="offset points",
                       ha=ha, va=va, fontsize=7, color="#1f77b4")


def _drawn_points(ax: Any) -> Any:
    """Points along every line and dot of the axes, in display coordinates (pixels)."""
    chunks = []
    for line in ax.lines:
        xy = line.get_xydata()
        if line.get_linestyle() in ("None", "", " ") or len(xy) < 2:
            chunks.append(ax.transData.transform(xy))  # dots: their centres
            continue
        pix = ax.transData.transform(xy)
        steps = np.maximum(2, (np.hypot(*np.diff(pix, axis=0).T) / 2).astype(int))
        for a, b, k in zip(pix[:-1], pix[1:], steps):  # a sample every 2 pixels
            chunks.append(a + np.linspace(0.0, 1.0, k)[:, None] * (b - a))
    return np.concatenate(chunks) if chunks else np.empty((0, 2))


def _is_clear(box: Any, ax: Any, obstacles: Any, placed: list[Any]) -> bool:
    """Does a label's box stay inside the axes, off every line, dot and other label?"""
    frame = ax.get_window_extent()
    if not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)):
        return False
    pad = box.padded(2.0)  # a dot's radius and a line's width, in pixels
    hit = ((obstacles[:, 0] >= pad.x0) & (obstacles[:, 0] <= pad.x1)
           & (obstacles[:, 1] >= pad.y0) & (obstacles[:, 1] <= pad.y1))
    return not hit.any() and not any(box.overlaps(other) for other in placed)


def _scaling_title(result: ScalingResult) -> str:
    missing = [n for n in result.planned if n not in result.workers]
    if not missing:
        return f"Scaling: {result.label} on {result.backend}"
    state = "stopped, not measured" if result.stopped else "to measure"
    return f"Scaling: {result.label} on {result.backend} ({state}: {', '.join(map(str, missing))})"


def _ceiling(result: ScalingResult) -> str:
    ceiling = result.max_speedup
    if ceiling is None or ceiling == math.inf:
        return "no ceiling"
    return f"ceiling {ceiling:,.0f}x" if ceiling >= 100 else f"ceiling {ceiling:.3g}x"


def _scaling_points(ax: Any, result: ScalingResult) -> None:
    """The measured speedups, with the spread of the runs as a vertical bar."""
    speedup = result.speedup
    if not speedup:
        return
    base = result.seconds[1]
    xs, ys, lo, hi = [], [], [], []
    for pt in result.points:
        s = speedup[pt.workers]
        runs = [base / t for t in pt.seconds]  # each run's speedup over the 1-worker figure
        xs.append(pt.workers)
        ys.append(s)
        lo.append(max(0.0, s - min(runs)))
        hi.append(max(0.0, max(runs) - s))
    label = f"measured ({result.statistic} of {result.repeats} runs)" if result.repeats > 1 else "measured"
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color="#1f77b4", markersize=6, capsize=3,
                elinewidth=1, zorder=3, label=label)

