"""`Dashboard`: a live view of a `NeonWorker`, with controls.

Who touches what (read before changing anything here):

1. Exactly one thread updates the dashboard's widgets and figures: the
   delivery thread of the dashboard's own subscription,
   ``worker.subscribe(self._on_events, on="thread", max_rate_hz=10, kinds=())``. It
   runs whatever the kernel does (a cell in ``time.sleep`` or in
   ``wait_for_completion()``); the kernel's asyncio loop would freeze for the
   whole cell (see the project's jupyter-threads notes).
2. Events are only a trigger, so the subscription is a change feed
   (``kinds=()``): the worker builds no event for it, and each delivery (an
   empty batch, at most ``max_rate_hz`` a second, after anything changed)
   reads the worker's state afresh (``get_status()``, and
   ``metrics.snapshot()`` for the plots). Ten thousand tasks finishing cost
   one refresh and no event object.
3. Two paths per delivery. The *status* path (progress bar, counts, pool size,
   control states: microseconds, 2-4 messages) runs at every delivery, if the
   status changed. The *plots* path (a metrics snapshot and three Agg figures
   rendered to PNG: a few hundred milliseconds of Python holding the GIL) is
   budgeted by its measured cost. While tasks run it waits ``plot_interval``
   seconds into the busy period, then runs at most once per
   ``cost / plot_budget`` seconds (10% of the wall time by default), so it
   cannot slow a flood of tasks by more than that, but at least every
   ``plot_max_interval`` seconds (3 s) so that the view stays live even where
   rendering is slow (there the budget gives way). When no further event is
   certain (nothing running, no retry pending, nothing queued or the worker
   paused) nothing would call the owner again, so it waits inside its
   callback until the plots are due (``cost / 0.25`` after the last, and at
   least ``plot_interval``), polling the status at ``max_rate_hz`` and
   leaving early if tasks start again. ``WORKER_STOPPED`` and `refresh`
   bring the plots up to date at once.
4. Idle means silent: no event, no delivery; and a delivery that finds the
   same status as the last one sends nothing. Traits are only assigned new
   values (traitlets drops equal ones) and the progress bar's traits go out
   in one message (``hold_sync``).
5. Controls (buttons, slider, toggle) may be called on any thread: the
   kernel's, or a subshell thread while a cell runs (ipykernel 7 with
   JupyterLab 4.4+). They only call the worker's thread-safe methods
   (``cancel_pending``, ``shutdown(wait=False)``, ``resize``, ``pause``,
   ``resume``); the worker's resulting event brings the display up to date on
   the owner thread. They never draw.
6. The constructor subscribes *before* its first render, under the render
   lock: every change after the subscription has an event, every change
   before it is in the first render. So `refresh` can always count on a
   delivery when the display is behind.
7. A static picture for saved notebooks (`neon_nb.widgets.view`): displaying
   the dashboard also displays one PNG of it (header, plots, utilisation),
   which the live view hides. Once displayed, the owner recomposes it from
   the PNGs it has just drawn and sends it as an update at most every
   ``picture_interval`` seconds while it changes, and at once on the final
   render (the worker stopped) and on `refresh`: a notebook that ends with
   ``dashboard.refresh()`` saves the final picture.
"""

from __future__ import annotations

import html
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._worker import NeonWorker

import ipywidgets as W

from .._errors import WorkerShutdownError
from .._events import EventBatch
from ..plots import (
    OUTCOME_COLOURS,
    plot_latency,
    plot_task_stream,
    plot_throughput,
    render_png,
    short_thread_name,
    task_stream_lanes,
)
from ._dashboard_picture import Count, dashboard_picture, header_png, utilisation_png
from .view import (
    PICTURE_CSS,
    PICTURE_HIDER_CLASS,
    StaticPicture,
    WidgetView,
    add_classes,
    warn_without_frontend,
    widget_tree,
)

__all__ = ["Dashboard"]

logger = logging.getLogger("neon_nb")

# Status keys whose change calls for a new status render (uptime is not one of them).
_STATUS_KEYS = ("state", "max_workers", "threads", "queued_tasks", "running_tasks",
                "retry_waiting_tasks", "submitted_tasks", "completed_tasks", "failed_tasks",
                "cancelled_tasks", "retried_tasks", "resumed_tasks", "backlog_tasks")
# Shown in the counts row, in this order: (status key, label, CSS suffix, colour).
_COUNTS = (
    ("submitted_tasks", "submitted", "submitted", "#555"),
    ("queued_tasks", "queued", "queued", "#1f77b4"),
    ("running_tasks", "running", "running", "#9467bd"),
    ("retry_waiting_tasks", "retry wait", "retry-wait", OUTCOME_COLOURS["retry"]),
    ("completed_tasks", "succeeded", "succeeded", OUTCOME_COLOURS["succeeded"]),
    ("failed_tasks", "failed", "failed", OUTCOME_COLOURS["failed"]),
    ("cancelled_tasks", "cancelled", "cancelled", "#7f7f7f"),
    ("retried_tasks", "retried", "retried", OUTCOME_COLOURS["retry"]),
)
# Tasks found done in the worker's journal (ended without running): shown when there are some.
_RESUMED = ("resumed_tasks", "resumed", "resumed", "#17becf")
# Tasks of background batches that have not entered the queue yet (not yet counted as
# submitted): shown, after "queued", while there are some.
_BACKLOG = ("backlog_tasks", "backlog", "backlog", "#aec7e8")
_DONE_STATES = ("shutting_down", "stopped")
# While no task runs, the plots may take this share of the wall time (they catch up).
_IDLE_PLOT_SHARE = 0.25


def _more_coming(status: Mapping[str, Any]) -> bool:
    """Is a further event certain? A running task or a pending retry will emit one."""
    return (status["running_tasks"] > 0 or status["retry_waiting_tasks"] > 0
            or (status["queued_tasks"] > 0 and status["state"] == "running"))


class Dashboard(WidgetView):
    """The live dashboard of ``worker``: progress, counts, plots, utilisation and controls.

    Display it as the last expression of a cell (a worker displayed that way
    shows its dashboard too). ``max_rate_hz`` bounds deliveries (and so
    status refreshes) per second; ``plot_budget`` is the fraction of wall time
    the plots may take while tasks run; ``plot_interval`` the least and
    ``plot_max_interval`` the most time between two plot refreshes while
    tasks run.

    Every widget carries a CSS class (``neon-dashboard``, ``neon-progress``,
    ``neon-counts``, ``neon-throughput``, ``neon-latency``,
    ``neon-taskstream``, ``neon-utilisation``, ``neon-pool-size``,
    ``neon-slider-workers``, ``neon-btn-cancel``, ``neon-btn-shutdown``,
    ``neon-btn-pause``, ...). Inside ``neon-counts`` each count is an element
    ``.neon-count-<state>`` whose ``data-count`` attribute and ``<b>`` text
    hold the number (states: submitted, queued, running, retry-wait,
    succeeded, failed, cancelled, retried).

    Displayed, it also leaves a static picture of its latest state in the
    notebook (module notes, point 7), updated at most every
    ``picture_interval`` seconds (None: only when the worker stops and on
    `refresh`), so that a saved notebook shows the run on GitHub, nbviewer
    or in ``jupyter nbconvert --to html``. Outside a notebook front end (a
    plain script) it warns once that nothing will show it.

    Thread-safety: `refresh` and `close` may be called from any thread; all
    drawing happens on the subscription's delivery thread (see module notes).
    Works with ``enable_metrics=False`` (counts only) and after the worker
    stopped (a final view).
    """

    def __init__(self, worker: NeonWorker, *, max_rate_hz: float = 10.0, plot_budget: float = 0.10,
                 plot_interval: float = 1.0, plot_max_interval: float = 3.0,
                 picture_interval: float | None = 5.0) -> None:
        warn_without_frontend(
            "neon_nb.widgets.Dashboard",
            "For pictures of a run in a script, use neon_nb.plots (plot_throughput, plot_latency, "
            "plot_task_stream) or neon_nb.report.write_report(worker, 'run.html'); "
            "`python -m neon_nb.demo --report run.html` writes an example.")
        if not (type(plot_budget) in (int, float) and 0 < plot_budget <= 1):
            raise ValueError(f"plot_budget must be a fraction in (0, 1], got {plot_budget!r}")
        if not (type(plot_interval) in (int, float) and plot_interval >= 0):
            raise ValueError(f"plot_interval must be seconds >= 0, got {plot_interval!r}")
        self._worker = worker
        self.plot_budget = float(plot_budget)
        self.plot_interval = float(plot_interval)
        if not (type(plot_max_interval) in (int, float) and plot_max_interval >= plot_interval):
            raise ValueError(f"plot_max_interval must be seconds >= plot_interval, got "
                             f"{plot_max_interval!r}")
        self.plot_max_interval = float(plot_max_interval)
        if picture_interval is not None and not (
                type(picture_interval) in (int, float) and picture_interval > 0):
            raise ValueError(f"picture_interval must be None or seconds > 0, got {picture_interval!r}")
        self.picture_interval = None if picture_interval is None else float(picture_interval)
        self.picture = StaticPicture()

        # Guarded by _render_lock: only the owner (and, before it exists or after it
        # ended, the thread that holds the lock) reads or writes these and the widgets.
        self._render_lock = threading.RLock()
        self._drawn_status: tuple | None = None
        self._plotted: tuple | None = None      # (attempts finished, metrics on) last plotted
        self._plots_behind = False
        self._next_plot_busy = self._next_plot_idle = 0.0
        self._step = 1.0 / max_rate_hz
        self._busy_since: float | None = None
        self._figures: dict[str, Any] = {}
        self._picture_png: bytes | None = None
        self._pictured: tuple | None = None     # (status key, plotted) of the last picture
        self._next_picture = 0.0
        self.status_renders = 0  # counters, for tests and the benchmark
        self.plot_renders = 0
        self.picture_renders = 0
        self.deliveries = 0

        # Shared with any thread: a request for a full refresh, and its completion.
        self._done = threading.Condition()
        self._force = False
        self._full_renders = 0  # forced renders done (refresh() waits for the next one)
        self._closed = False
        self._wake = threading.Event()  # interrupts the owner's wait for the plots
        self._mirroring = threading.local()  # set while the owner writes a control's value

        self._build()
        # Subscribe first, render second (module notes, point 6).
        self.subscription = None
        try:
            self.subscription = worker.subscribe(
                self._weak_callback(), on="thread", max_rate_hz=max_rate_hz, kinds=())
        except WorkerShutdownError:
            pass  # stopped already: the first render below is also the last
        try:
            self._render(force=True)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        status = self._worker.get_status()
        n = status["max_workers"]
        self.title = add_classes(W.HTML(value=self._title_html(status)), "neon-title")
        self.state = add_classes(W.Label(value=status["state"]), "neon-state")
        self.pool_size = add_classes(W.Label(value=_pool_text(status)), "neon-pool-size")
        self.progress = add_classes(W.IntProgress(value=0, min=0, max=1, description="",
                                           layout=W.Layout(width="60%")), "neon-progress")
        self.progress_label = add_classes(W.Label(value="0 / 0 finished"), "neon-progress-label")
        self.counts = add_classes(W.HTML(value=""), "neon-counts")

        self.cancel_button = add_classes(W.Button(description="Cancel pending", icon="ban",
                                           tooltip="Cancel every queued task and pending retry"),
                                  "neon-btn-cancel")
        self.shutdown_button = add_classes(W.Button(description="Shut down", icon="power-off",
                                             button_style="danger",
                                             tooltip="Stop accepting tasks; queued tasks still run "
                                                     "within the shutdown timeout"),
                                    "neon-btn-shutdown")
        self.pause_button = add_classes(W.ToggleButton(value=bool(self._worker.paused), description="Pause",
                                                icon="pause", tooltip="Pause or resume dispatch"),
                                 "neon-btn-pause")
        slider_max = min(4096, max(16, 2 * n, 2 * (os.cpu_count() or 1)))
        self.workers_slider = add_classes(W.IntSlider(value=n, min=1, max=slider_max, step=1,
                                               description="max_workers", continuous_update=False,
                                               style={"description_width": "initial"}),
                                   "neon-slider-workers")
        self.cancel_button.on_click(self._on_cancel)
        self.shutdown_button.on_click(self._on_shutdown)
        self.pause_button.observe(self._on_pause, names="value")
        self.workers_slider.observe(self._on_slider, names="value")

        image = {"format": "png", "layout": W.Layout(max_width="100%", height="auto")}
        self.throughput = add_classes(W.Image(**image), "neon-throughput", "neon-plot")
        self.latency = add_classes(W.Image(**image), "neon-latency", "neon-plot")
        self.task_stream = add_classes(W.Image(**image), "neon-taskstream", "neon-plot")
        self.utilisation = add_classes(W.HTML(value=""), "neon-utilisation")

        self.widget = add_classes(W.VBox([
            add_classes(W.HBox([self.title, self.state, self.pool_size],
                        layout=W.Layout(align_items="center", grid_gap="12px")), "neon-header"),
            add_classes(W.HBox([self.progress, self.progress_label], layout=W.Layout(align_items="center")),
                 "neon-progress-row"),
            self.counts,
            add_classes(W.HBox([self.cancel_button, self.pause_button, self.shutdown_button,
                         self.workers_slider], layout=W.Layout(flex_flow="row wrap")), "neon-controls"),
            add_classes(W.HBox([self.throughput, self.utilisation],
                               layout=W.Layout(align_items="flex-start")), "neon-row-throughput"),
            self.latency,
            self.task_stream,
            # Hides the static picture displayed after this view (module notes, point 7).
            add_classes(W.HTML(value=f"<style>{PICTURE_CSS}</style>", layout=W.Layout(display="none")),
                        PICTURE_HIDER_CLASS),
        ]), "neon-dashboard", "neon-live-view")

    def _title_html(self, status: Mapping[str, Any]) -> str:
        return f"<b>neon_nb</b> worker <code>{html.escape(self._worker.name)}</code>"

    # --------------------------------------------------------------- controls
    # Any thread may run these (module notes, point 5): worker calls only.
    def _on_cancel(self, _button: Any) -> None:
        try:
            self._worker.cancel_pending()
        except Exception:
            logger.exception("dashboard: cancel_pending failed")

    def _on_shutdown(self, _button: Any) -> None:
        try:
            self._worker.shutdown(wait=False)
        except Exception:
            logger.exception("dashboard: shutdown failed")

    def _on_pause(self, change: Mapping[str, Any]) -> None:
        if getattr(self._mirroring, "on", False):
            return  # the owner mirroring the worker: not a user's action
        try:
            if change["new"]:
                self._worker.pause()
            else:
                self._worker.resume()
        except Exception:
            logger.exception("dashboard: pause/resume failed")

    def _on_slider(self, change: Mapping[str, Any]) -> None:
        if getattr(self._mirroring, "on", False):
            return  # the owner mirroring the worker: not a user's action
        n = change["new"]
        try:
            if n != self._worker.config.max_workers:
                self._worker.resize(n)
        except Exception:
            logger.exception("dashboard: resize to %r failed", n)

    # ------------------------------------------------------- delivery (owner)
    def _on_events(self, batch: EventBatch) -> None:
        """The subscription's callback: runs on the owner thread only."""
        self.deliveries += 1
        with self._render_lock:
            status = self._render()  # (a stopped worker's status makes it the final render)
            # Plots behind, and no further event is certain: nothing would bring this
            # thread back, so it stays here until the plots are due, keeping the
            # status live, and leaves as soon as activity resumes (events follow).
            while self._plots_behind and not self._closed and not _more_coming(status):
                left = self._next_plot_idle - time.monotonic()
                if left > 0:
                    self._wake.wait(min(left, self._step))
                    self._wake.clear()
                status = self._render()

    def _render(self, *, force: bool = False, final: bool = False) -> Mapping[str, Any]:
        """One refresh: the status if it changed, the plots if dirty and due. Owner only."""
        with self._render_lock:
            worker = self._worker
            status = worker.get_status()
            if self._closed:
                return status
            with self._done:
                force = force or self._force
                self._force = False
            final = final or status["state"] == "stopped"
            key = tuple(status[k] for k in _STATUS_KEYS)
            if force or final or key != self._drawn_status:
                self._draw_status(status)
                self._drawn_status = key
                self.status_renders += 1

            # Plots: budgeted (module notes, point 3).
            now = time.monotonic()
            metrics_on = worker.metrics is not None
            attempts = status["completed_tasks"] + status["failed_tasks"] + status["retried_tasks"]
            plotted = (attempts, metrics_on)
            more = _more_coming(status)
            if not more:
                self._busy_since = None
            elif self._busy_since is None:
                self._busy_since = now
            busy_since = now if self._busy_since is None else self._busy_since
            if plotted == self._plotted:
                due = False
            elif force or final:
                due = True
            elif more:
                due = now >= busy_since + self.plot_interval and now >= self._next_plot_busy
            else:
                due = now >= self._next_plot_idle
            if due:
                self._draw_plots(status)
                self._plotted = plotted
            self._plots_behind = plotted != self._plotted
            self._maybe_picture(status, (key, self._plotted), force or final, now)
            with self._done:
                if force or final:
                    self._full_renders += 1
                self._done.notify_all()
            return status

    def _draw_status(self, status: Mapping[str, Any]) -> None:
        total = _expected(status)
        finished = _finished(status)
        state = status["state"]
        p = self.progress
        if finished >= total and total:
            style = "warning" if status["failed_tasks"] else "success"
        else:
            style = ""
        with p.hold_sync():  # one message for the three traits
            p.max = max(total, 1)
            p.value = finished
            p.bar_style = style
        self.progress_label.value = _progress_text(status, finished, total)
        self.counts.value = _counts_html(status)
        self.pool_size.value = _pool_text(status)
        self.state.value = state
        if self._worker.metrics is None:
            self.utilisation.value = _busy_html(status)

        # Mirror the worker in the controls (a change made in code, or by a click).
        # The observers ignore these writes (thread-local flag): a status read just
        # before a user's click must not undo the click; the click's own event
        # brings the next delivery, which mirrors the new state.
        self._mirroring.on = True
        try:
            n = status["max_workers"]
            s = self.workers_slider
            if n > s.max:
                s.max = min(4096, 2 * n)
            if s.value != n:
                s.value = n
            paused = state == "paused" or bool(self._worker.paused)
            b = self.pause_button
            if b.value != paused:
                b.value = paused
        finally:
            self._mirroring.on = False
        b.description = "Resume" if paused else "Pause"
        b.icon = "play" if paused else "pause"
        done = state in _DONE_STATES
        for w in (self.pause_button, self.shutdown_button, self.workers_slider):
            w.disabled = done
        self.cancel_button.disabled = state == "stopped"

    def _draw_plots(self, status: Mapping[str, Any]) -> None:
        t0 = time.perf_counter()
        metrics = self._worker.metrics
        snap = metrics.snapshot() if metrics is not None else None
        empty = "off" if snap is None else "empty" if _is_empty(snap) else None
        for name, plot, image in (("throughput", plot_throughput, self.throughput),
                                  ("latency", plot_latency, self.latency),
                                  ("task_stream", plot_task_stream, self.task_stream)):
            if empty is not None:
                png = _placeholder_png(name, plot, snap, empty)
            else:
                fig = plot(snap, figure=self._figures.get(name))
                self._figures[name] = fig
                png = render_png(fig)
            if image.value != png:
                image.value = png
        self.utilisation.value = _busy_html(status) if snap is None else _utilisation_html(snap)
        cost = time.perf_counter() - t0
        end = time.monotonic()
        if empty is not None:
            cost = 0.0  # placeholders are cached: they say nothing of a real render's cost
        # The budget spaces plots by their cost, but never further apart than
        # plot_max_interval: a live view must move (issue seen in the browser test).
        self._next_plot_busy = end + min(self.plot_max_interval,
                                         max(self.plot_interval, cost / self.plot_budget))
        self._next_plot_idle = end + max(self.plot_interval, cost / _IDLE_PLOT_SHARE)
        self.plot_renders += 1

    # ---------------------------------------------------------------- picture
    def _maybe_picture(self, status: Mapping[str, Any], drawn: tuple, now_due: bool,
                       now: float) -> None:
        """Recompose and send the static picture if it was displayed, changed and is due. Owner only."""
        picture = self.picture
        if picture is None or not picture.shown or drawn == self._pictured:
            return
        interval = self.picture_interval
        if not now_due and (interval is None or now < self._next_picture):
            return
        self._picture_png = self._compose_picture(status)
        self._pictured = drawn
        picture.update(self._picture_png, self._picture_text(status))
        self._next_picture = time.monotonic() + (interval or 0.0)

    def _compose_picture(self, status: Mapping[str, Any]) -> bytes:
        """One PNG of the dashboard, from the plots' current PNGs. Under the render lock."""
        header = header_png(f"neon_nb worker {self._worker.name!r}", status["state"], _pool_text(status),
                            [Count(label, status[key], colour)
                             for key, label, _suffix, colour in _shown_counts(status)],
                            _finished(status), _expected(status))
        metrics = self._worker.metrics
        snap = metrics.snapshot() if metrics is not None else None
        util = utilisation_png(None if snap is None else snap.utilisation,
                               0.0 if snap is None else snap.utilisation_span,
                               (status["running_tasks"], status["threads"]))
        self.picture_renders += 1
        return dashboard_picture(header, self.throughput.value, util, self.latency.value,
                                 self.task_stream.value, self._picture_text(status))

    def _picture_text(self, status: Mapping[str, Any]) -> str:
        """The picture in words: its ``text/plain`` and its PNG's Description."""
        return (f"neon_nb dashboard of worker {self._worker.name!r}: {status['state']}; "
                f"{status['submitted_tasks']} submitted, {status['completed_tasks']} succeeded, "
                f"{status['failed_tasks']} failed, {status['cancelled_tasks']} cancelled, "
                f"{status['retried_tasks']} retried"
                + (f", {status['resumed_tasks']} resumed" if status["resumed_tasks"] else "")
                + (f", {status['backlog_tasks']} in the backlog" if status["backlog_tasks"] else ""))

    def picture_text(self) -> str:
        return self._picture_text(self._worker.get_status())

    def picture_png(self) -> bytes | None:
        """The static picture of the dashboard's current state (composed now if it is behind).

        Called by the display, on the kernel thread: it takes the render lock,
        like the owner, for the few tens of milliseconds of a composition.
        """
        with self._render_lock:
            status = self._worker.get_status()
            drawn = (tuple(status[k] for k in _STATUS_KEYS), self._plotted)
            if self._picture_png is None or drawn != self._pictured:
                self._picture_png = self._compose_picture(status)
                self._pictured = drawn
            return self._picture_png

    def _weak_callback(self) -> Callable[[EventBatch], None]:
        # The worker keeps its subscriptions; a weak reference lets a dashboard that
        # nobody displays or holds be collected, and its deliveries become no-ops.
        ref = weakref.ref(self)

        def deliver(batch: EventBatch) -> None:
            dash = ref()
            if dash is not None:
                dash._on_events(batch)  # noqa: SLF001 - this dashboard itself, held weakly

        deliver.__qualname__ = f"Dashboard[{self._worker.name}]._on_events"
        return deliver

    # ----------------------------------------------------------------- public
    @property
    def worker(self) -> Any:
        return self._worker

    def refresh(self, timeout: float | None = 10.0) -> bool:
        """Bring the whole display up to date (plots included) and wait until it is.

        Thread-safe: the work is done by the owner thread; this only asks and
        waits (up to ``timeout`` seconds; False if it timed out). Returns at
        once when the display is already current. Use it at the end of a
        notebook cell, so that the final state reaches the notebook before
        the cell ends. On the owner thread itself it renders inline.
        """
        sub = self.subscription
        if sub is not None and threading.current_thread().name == sub.name:
            self._render(force=True)
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._closed:
            return True
        if sub is None or not sub.active:
            # No owner any more (or ever): wait for its last delivery; then the render
            # lock makes this thread the owner for one render, which sends the picture
            # again (a notebook runner keeps only what arrives while a cell runs: the
            # final picture, sent between two cells, may have been lost).
            if sub is not None:
                sub.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            with self._render_lock:
                self._render(force=True)
                self._send_picture()
            return True
        with self._done:
            if self._up_to_date():
                return True
            self._force = True
            target = self._full_renders + 1
        self._wake.set()  # an owner waiting for its plots draws them now
        sub.poke()  # an owner idle between events (a long task, nothing else) comes too
        return self._wait_rendered(target, deadline)

    def _wait_rendered(self, target: int, deadline: float | None) -> bool:
        with self._done:
            while self._full_renders < target and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._done.wait(left)
        return True

    def _send_picture(self) -> None:
        """The current picture again, to the running cell too (under the render lock)."""
        picture, png = self.picture, self._picture_png
        if picture is not None and picture.shown and png is not None:
            picture.update(png, self._picture_text(self._worker.get_status()))

    @property
    def closed(self) -> bool:
        """True once `close` was called: the dashboard no longer updates."""
        return self._closed

    def _up_to_date(self) -> bool:
        status = self._worker.get_status()
        return (tuple(status[k] for k in _STATUS_KEYS) == self._drawn_status
                and not self._plots_behind)

    def close(self) -> None:
        """Stop updating and close the widgets. Idempotent, thread-safe."""
        with self._done:
            if self._closed:
                return
            self._closed = True
            self._done.notify_all()
        self._wake.set()
        sub = self.subscription
        if sub is not None:
            sub.cancel()
        with self._render_lock:
            for w in widget_tree(self.widget):
                w.close()
            self._figures.clear()

    def __repr__(self) -> str:
        return f"<neon_nb Dashboard of worker {self._worker.name!r}>"


_placeholders: dict[tuple[str, str], bytes] = {}


def _is_empty(snap: Any) -> bool:
    return (not snap.task_stream and not any(p.total for p in snap.throughput)
            and not any(s.count for s in snap.latency.values()))


def _placeholder_png(name: str, plot: Any, snap: Any, why: str) -> bytes:
    # "No data yet" and "metrics off" look the same for every dashboard: draw each once.
    png = _placeholders.get((name, why))
    if png is None:
        png = _placeholders[(name, why)] = render_png(plot(snap))
    return png




# ---------------------------------------------------------------- HTML bits
def _pool_text(status: Mapping[str, Any]) -> str:
    n, threads = status["max_workers"], status["threads"]
    extra = "" if threads == n or status["state"] in ("created", "stopped") else \
        f" ({threads} threads alive)"
    return f"pool size: {n}{extra}"


def _shown_counts(status: Mapping[str, Any]) -> tuple[tuple[str, str, str, str], ...]:
    """`_COUNTS`, with the backlog of background batches (after "queued") and the tasks
    resumed from a journal (last) when there are some."""
    shown = list(_COUNTS)
    if status["backlog_tasks"]:
        shown.insert(2, _BACKLOG)
    if status["resumed_tasks"]:
        shown.append(_RESUMED)
    return tuple(shown)


def _finished(status: Mapping[str, Any]) -> int:
    """Tasks that have ended: succeeded, failed for good or cancelled."""
    return int(status["completed_tasks"] + status["failed_tasks"] + status["cancelled_tasks"])


def _expected(status: Mapping[str, Any]) -> int:
    """Tasks the progress bar counts to: those submitted and those still in the backlog
    of a background batch (submitted when they enter the queue)."""
    return int(status["submitted_tasks"] + status["backlog_tasks"])


def _progress_text(status: Mapping[str, Any], finished: int, total: int) -> str:
    notes = []
    if status["backlog_tasks"]:
        notes.append(f"{status['backlog_tasks']} not yet queued")
    if status["resumed_tasks"]:  # found done in the worker's journal: not run here
        notes.append(f"{status['resumed_tasks']} resumed")
    return f"{finished} / {total} finished" + (f" ({', '.join(notes)})" if notes else "")


def _counts_html(status: Mapping[str, Any]) -> str:
    chips = []
    for key, label, css, colour in _shown_counts(status):
        v = status[key]
        chips.append(
            f'<span class="neon-count neon-count-{css}" data-count="{v}" '
            f'style="margin-right:14px;white-space:nowrap">'
            f'<span style="color:{colour}">&#9632;</span> {label} <b>{v}</b></span>')
    return f'<div class="neon-counts-row" style="line-height:1.8">{"".join(chips)}</div>'


def _bar_row(name: str, frac: float, note: str = "") -> str:
    pct = max(0.0, min(1.0, frac)) * 100
    return (f'<div class="neon-util-row" data-thread="{html.escape(name)}" data-busy="{pct:.0f}" '
            f'style="display:flex;align-items:center;gap:6px;font-size:12px">'
            f'<span style="width:88px">{html.escape(name)}</span>'
            f'<span style="display:inline-block;width:120px;height:10px;background:#e6e6e6">'
            f'<span style="display:block;width:{pct:.0f}%;height:100%;background:#1f77b4"></span></span>'
            f'<span>{pct:.0f}%{note}</span></div>')


def _utilisation_html(snap: Any) -> str:
    util = snap.utilisation
    rows = [_bar_row(short_thread_name(t), util[t]) for t in task_stream_lanes((), util)]
    head = f"<b>Utilisation</b> <small>(busy, last {snap.utilisation_span:.0f} s)</small>"
    return f"<div>{head}{''.join(rows) or '<div><i>no threads</i></div>'}</div>"


def _busy_html(status: Mapping[str, Any]) -> str:
    threads = max(status["threads"], 0)
    busy = status["running_tasks"]
    frac = busy / threads if threads else 0.0
    row = _bar_row("all threads", frac, f" ({busy} of {threads} busy now)")
    return f"<div><b>Utilisation</b> <small>(metrics off: busy now)</small>{row}</div>"


# One dashboard per worker for IPython's display hook (one delivery thread per worker,
# not one per display); a closed one is replaced.
_shown: weakref.WeakKeyDictionary[Any, Dashboard] = weakref.WeakKeyDictionary()


def _display_worker(worker: NeonWorker) -> None:  # pragma: no cover - exercised in notebooks
    from IPython.display import display

    dash = _shown.get(worker)
    if dash is None or dash.closed:
        dash = _shown[worker] = Dashboard(worker)
    display(dash)


def register_worker_display() -> bool:
    """In IPython, show a `NeonWorker` displayed as a cell's value as its live dashboard.

    Called when `neon_nb.widgets` is imported; True if IPython is running.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    ip = get_ipython()
    if ip is None:
        return False
    from .._worker import NeonWorker

    ip.display_formatter.ipython_display_formatter.for_type(NeonWorker, _display_worker)
    return True
