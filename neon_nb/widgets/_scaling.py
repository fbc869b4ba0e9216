"""`ScalingExperiment`: `neon_nb.scaling.measure_scaling`, live in a notebook.

Three threads, each with one job:

1. The *runner* (``neon-scaling-run``) runs the experiment
   (`ScalingPlan.run`). Its progress hook only stores the latest frozen
   `ScalingResult` and wakes the owner; it never touches a widget.
2. The *owner* (``neon-scaling-ui``) is the only thread that writes the
   widgets and draws the chart. It wakes on a new result, on a stop request
   and twice a second (to move the elapsed-time line), renders at most
   ``max_rate_hz`` times a second, redraws the chart only when a worker count
   has finished, and ends after the final render.
3. The Stop button's callback runs on whichever thread ipykernel uses (the
   kernel's, or a subshell thread while a cell runs): it only sets the stop
   flag and wakes the owner.

The worker threads of the experiment run tasks only; they never see the widget.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as W

from .._task import Task
from ..plots import plot_scaling, render_png
from ..scaling import ScalingPlan, ScalingResult
from .view import (
    PICTURE_CSS,
    PICTURE_HIDER_CLASS,
    StaticPicture,
    WidgetView,
    add_classes,
    warn_without_frontend,
    widget_tree,
)

__all__ = ["ScalingExperiment"]

_TICK = 0.5  # seconds between two renders of the elapsed time while a count is measured


class ScalingExperiment(WidgetView):
    """`measure_scaling` as a live widget: a chart that fills in, a table, and a Stop button.

    Takes the arguments of `neon_nb.scaling.measure_scaling` (checked here,
    at the call) and starts at once (``start=False``: call `start`). While it
    runs, the chart of speedup against workers (`neon_nb.plots.plot_scaling`)
    gains a point as each worker count finishes, beside the ideal line and
    the Amdahl curve fitted so far; the table gains a row; a line says which
    count is being measured and for how long. **Stop** ends the experiment
    after the run in progress is abandoned (see `measure_scaling`).

    `result` waits for the end and returns the `ScalingResult` (or raises
    the experiment's error); `latest` is the result so far. Displayed, it
    also leaves a static picture of its chart in the notebook, for viewers
    without a kernel, like the dashboard's. CSS classes: ``neon-scaling``,
    ``neon-scaling-status``, ``neon-scaling-progress``, ``neon-scaling-chart``,
    ``neon-scaling-table`` (one ``tr.neon-scaling-row`` per worker count, with
    ``data-workers`` and ``data-state`` = measured, measuring or waiting),
    ``neon-scaling-stop``.

    Thread-safety: `start`, `stop`, `result`, `latest` and `close` may be
    called from any thread; only the owner thread writes the widgets.
    """

    def __init__(self, make_tasks: Callable[[], Iterable[Task]],
                 workers: Iterable[int] = (1, 2, 4, 8), *, start: bool = True,
                 max_rate_hz: float = 10.0, **options: Any) -> None:
        settings = {k: options.pop(k) for k in list(options) if k not in _PLAN_OPTIONS}
        self.plan = ScalingPlan(make_tasks, workers, settings=settings,  # type: ignore[arg-type]  # checked there
                                **options)
        if not (type(max_rate_hz) in (int, float) and max_rate_hz > 0):
            raise ValueError(f"max_rate_hz must be a number > 0, got {max_rate_hz!r}")
        warn_without_frontend(
            "neon_nb.widgets.ScalingExperiment",
            "The experiment still runs: use neon_nb.scaling.measure_scaling and "
            "neon_nb.plots.plot_scaling in a script.")
        self._step = 1.0 / max_rate_hz
        self._picture = self.picture = StaticPicture()

        # Shared between the runner, the owner and any caller: guarded by _cond.
        self._cond = threading.Condition()
        self._latest: ScalingResult = self.plan.empty_result()
        self._changed = True
        self._finished = False          # the runner returned or raised
        self._rendered_final = False    # the owner drew the final state
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._closed = False
        self._started_at: float | None = None
        self._count_since = 0.0
        self._runner: threading.Thread | None = None
        self._owner: threading.Thread | None = None

        # Owner only (or the constructing thread before the owner starts).
        self._figure: Any = None
        self._chart_png = b""
        self._charted: ScalingResult | None = None
        self.renders = 0
        self.chart_renders = 0
        self._build()
        self._render(self._latest, final=False)
        if start:
            self.start()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        plan = self.plan
        runs = "1 run" if plan.repeats == 1 else f"the median of {plan.repeats} runs"
        if plan.statistic == "best":
            runs = f"the fastest of {plan.repeats} runs"
        self.title = add_classes(W.HTML(
            value=f"<b>Scaling experiment</b>: {html.escape(str(plan.label))} on "
                  f"{html.escape(self._latest.backend)}, {', '.join(map(str, plan.workers))} workers "
                  f"({runs} each, a fresh worker per count)"), "neon-scaling-title")
        self.status = add_classes(W.Label(value="not started"), "neon-scaling-status")
        self.progress = add_classes(W.IntProgress(value=0, min=0, max=len(plan.workers),
                                                  layout=W.Layout(width="40%")), "neon-scaling-progress")
        self.stop_button = add_classes(W.Button(description="Stop", icon="stop", button_style="warning",
                                                tooltip="End the experiment; the worker counts measured "
                                                        "so far are kept"), "neon-scaling-stop")
        self.stop_button.on_click(lambda _button: self.stop())
        self.chart = add_classes(W.Image(format="png", layout=W.Layout(max_width="100%", height="auto")),
                                 "neon-scaling-chart")
        self.table = add_classes(W.HTML(value=""), "neon-scaling-table")
        self.widget = add_classes(W.VBox([
            self.title,
            add_classes(W.HBox([self.progress, self.stop_button, self.status],
                               layout=W.Layout(align_items="center", grid_gap="10px")),
                        "neon-scaling-controls"),
            add_classes(W.HBox([self.chart, self.table], layout=W.Layout(align_items="flex-start")),
                        "neon-scaling-row"),
            add_classes(W.HTML(value=f"<style>{PICTURE_CSS}</style>", layout=W.Layout(display="none")),
                        PICTURE_HIDER_CLASS),
        ]), "neon-scaling", "neon-live-view")

    # ---------------------------------------------------------------- control
    def start(self) -> ScalingExperiment:
        """Start the experiment (once; later calls do nothing). Returns self. Thread-safe."""
        with self._cond:
            if self._runner is not None or self._closed:
                return self
            self._started_at = self._count_since = time.monotonic()
            self._runner = threading.Thread(target=self._run, name="neon-scaling-run", daemon=True)
            self._owner = threading.Thread(target=self._own, name="neon-scaling-ui", daemon=True)
        self._owner.start()
        self._runner.start()
        return self

    def stop(self) -> None:
        """Ask the experiment to stop (the Stop button). Returns at once; thread-safe."""
        self._stop.set()
        with self._cond:
            self._changed = True
            self._cond.notify_all()

    def result(self, timeout: float | None = None) -> ScalingResult:
        """Wait until the experiment ended and its final state is drawn; return its result.

        Raises the experiment's error if it failed, and ``TimeoutError`` if it
        has not ended within ``timeout`` seconds. Call it at the end of a
        notebook cell, so that the final chart reaches the saved notebook.
        """
        with self._cond:
            if self._runner is None:
                raise RuntimeError("the experiment was not started: call start()")
            if not self._cond.wait_for(lambda: self._rendered_final or self._closed, timeout):
                raise TimeoutError(f"the scaling experiment did not end within {timeout} s")
            if self._error is not None:
                raise self._error
            return self._latest

    @property
    def latest(self) -> ScalingResult:
        """The result so far (the counts measured until now). Thread-safe."""
        with self._cond:
            return self._latest

    @property
    def running(self) -> bool:
        with self._cond:
            return self._runner is not None and not self._finished

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the experiment, wait for it (up to ``timeout`` s), close the widgets.

        The experiment's worker gives a task still running 5 s before it
        abandons it (see `measure_scaling`). Idempotent, thread-safe.
        """
        self.stop()
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            threads = [t for t in (self._owner, self._runner) if t is not None]
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in threads:
            if t is not threading.current_thread():
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for w in widget_tree(self.widget):
            w.close()

    # ------------------------------------------------------------------ runner
    def _run(self) -> None:
        error = None
        result = None
        try:
            result = self.plan.run(on_progress=self._on_progress, stop=self._stop)
        except BaseException as exc:  # shown by the owner, raised by result()
            error = exc
        with self._cond:
            if result is not None:
                self._latest = result
            self._error = error
            self._finished = True
            self._changed = True
            self._cond.notify_all()

    def _on_progress(self, result: ScalingResult) -> None:
        # The runner's thread: hand the frozen result over, never draw here.
        with self._cond:
            self._latest = result
            self._count_since = time.monotonic()
            self._changed = True
            self._cond.notify_all()

    # ------------------------------------------------------------------- owner
    def _own(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._changed or self._closed, _TICK)
                if self._closed:
                    return
                # At most max_rate_hz renders: a burst of changes waits for the next slot
                # (the final render does not wait).
                while not (self._finished or self._closed):
                    left = last + self._step - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return
                self._changed = False
                result, finished = self._latest, self._finished
            self._render(result, final=finished)
            last = time.monotonic()
            if finished:
                with self._cond:
                    self._rendered_final = True
                    self._cond.notify_all()
                return

    def _render(self, result: ScalingResult, *, final: bool) -> None:
        """Status line, progress, table; the chart and the picture when a count was added. Owner only."""
        self.renders += 1
        self.status.value = self._status_text(result, final)
        self.progress.value = len(result.workers)
        if final:
            self.progress.bar_style = "success" if result.complete else "warning"
            self.stop_button.disabled = True
        elif self._stop.is_set():
            self.stop_button.disabled = True
        self.table.value = _table_html(result, self.plan.workers, measuring=not final)
        if result != self._charted:  # a count was added (or the run stopped): redraw
            self._figure = plot_scaling(result, figure=self._figure)
            self._chart_png = render_png(self._figure)
            self.chart.value = self._chart_png
            self._charted = result
            self.chart_renders += 1
            self._picture.update(self._chart_png, self.picture_text())

    def _status_text(self, result: ScalingResult, final: bool) -> str:
        with self._cond:
            error, since, started = self._error, self._count_since, self._started_at
        if started is None:
            return "not started"
        took = time.monotonic() - started
        if error is not None:
            return f"failed after {took:.1f} s: {type(error).__name__}: {error}"
        if final:
            state = "stopped" if result.stopped else "done"
            p = result.parallel_fraction
            fit = "" if p is None else f", parallel fraction p = {p:.3f}"
            return f"{state} in {took:.1f} s: {len(result.workers)} of {len(result.planned)} counts{fit}"
        nxt = next((n for n in result.planned if n not in result.workers), None)
        if self._stop.is_set():
            return f"stopping (abandoning the run on {nxt} workers)..."
        return f"measuring {nxt} worker{'s' if nxt != 1 else ''}... {time.monotonic() - since:.1f} s"

    # ---------------------------------------------------------------- picture
    def picture_png(self) -> bytes | None:
        return self._chart_png or None

    def picture_text(self) -> str:
        return self.latest.table()

    def __repr__(self) -> str:
        state = "running" if self.running else "not running"
        return f"<neon_nb ScalingExperiment of {self.plan.label} ({state})>"


_PLAN_OPTIONS = ("backend", "repeats", "warmup", "timeout", "statistic", "label")


def _table_html(result: ScalingResult, planned: tuple[int, ...], *, measuring: bool) -> str:
    thr, spd = result.throughput, result.speedup
    nxt = next((n for n in planned if n not in result.workers), None) if measuring else None
    rows = []
    for n in planned:
        if n in thr:
            s = spd.get(n)
            cells = [f"{thr[n]:.1f}", "-" if s is None else f"{s:.2f}x",
                     "-" if s is None else f"{s / n:.0%}"]
            state = "measured"
        else:
            state = "measuring" if n == nxt else "waiting"
            cells = ["measuring..." if n == nxt else "", "", ""]
        tds = "".join(f'<td style="text-align:right;padding:2px 8px">{c}</td>' for c in cells)
        rows.append(f'<tr class="neon-scaling-row" data-workers="{n}" data-state="{state}">'
                    f'<td style="text-align:right;padding:2px 8px">{n}</td>{tds}</tr>')
    head = "".join(f'<th style="text-align:right;padding:2px 8px">{h}</th>'
                   for h in ("workers", "tasks/s", "speedup", "efficiency"))
    p = result.parallel_fraction
    fit = "" if p is None else (f"<div style='margin-top:6px'>Amdahl fit: parallel fraction "
                                f"<b>p = {p:.3f}</b></div>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{fit}"
