"""`BatchBuilder`: a form that builds a seeded `Batch` and submits it to a worker.

Threads: the form's callbacks may run on the kernel thread or on a subshell
thread (ipykernel 7). A click only validates the form and hands the `Batch`
to the builder's feeder thread, which calls ``worker.add_tasks`` (it may
block while the queue is full, so never on the kernel thread). The builder's
own widgets are written under its lock, by its callbacks and its feeder; it
draws no figure and never touches a dashboard.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._worker import NeonWorker

import ipywidgets as W

from ..batch import DISTRIBUTIONS, PRIORITY_MODES, Batch, get_task_kind, task_kinds
from .view import WidgetView, add_classes, widget_tree

__all__ = ["BatchBuilder"]

logger = logging.getLogger("neon_nb")

_INT = re.compile(r"-?\d+")


class BatchBuilder(WidgetView):
    """A widget to build batches of synthetic tasks and submit them to ``worker``.

    Fields: task kind (from the registry, see `register_task_kind`), count,
    duration distribution (fixed, uniform, exponential) and its parameters,
    priorities (fixed ``5``, random ``0-10``, classes ``0, 5, 10``), retries,
    retry delay, failure probability and seed (blank: random). Submit works
    while the worker runs. CSS classes: ``neon-batch-builder``,
    ``neon-batch-kind``, ``neon-batch-count``, ``neon-batch-dist``,
    ``neon-batch-duration``, ``neon-batch-duration-high``,
    ``neon-batch-priority-mode``, ``neon-batch-priority``,
    ``neon-batch-retries``, ``neon-batch-retry-delay``,
    ``neon-batch-failure``, ``neon-batch-seed``, ``neon-batch-submit``,
    ``neon-batch-status``.

    In code: `batch` returns the form's `Batch`; `submit` queues it like a
    click; `wait_submitted` waits until the feeder has handed everything
    to the worker.
    """

    def __init__(self, worker: NeonWorker, *, kind: str = "io", count: int = 20) -> None:
        self._worker = worker
        self._lock = threading.RLock()
        self._pending: collections.deque[Batch] = collections.deque()
        self._feeder: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)
        self.submitted: list[Batch] = []  # batches handed to the worker, in order

        kinds = task_kinds()
        first = get_task_kind(kind)
        style = {"description_width": "110px"}
        self.kind = add_classes(W.Dropdown(options=list(kinds), value=first.name, description="task kind",
                                    style=style), "neon-batch-kind")
        self.kind_help = add_classes(W.HTML(value=_kind_help(first)), "neon-batch-kind-help")
        self.count = add_classes(W.BoundedIntText(value=count, min=1, max=1_000_000, description="count",
                                           style=style), "neon-batch-count")
        self.dist = add_classes(W.Dropdown(options=list(DISTRIBUTIONS), value="fixed",
                                    description="duration", style=style), "neon-batch-dist")
        self.duration = add_classes(W.BoundedFloatText(value=first.default_duration, min=0, max=3600,
                                                step=0.01, description="seconds (mean/low)",
                                                style=style), "neon-batch-duration")
        self.duration_high = add_classes(W.BoundedFloatText(value=first.default_duration * 2, min=0,
                                                     max=3600, step=0.01,
                                                     description="uniform: high", style=style),
                                  "neon-batch-duration-high")
        self.priority_mode = add_classes(W.Dropdown(options=list(PRIORITY_MODES), value="fixed",
                                             description="priority", style=style),
                                  "neon-batch-priority-mode")
        self.priority = add_classes(W.Text(value="0", description="value(s)",
                                    placeholder="fixed: 5 · random: 0-10 · classes: 0, 5, 10",
                                    style=style), "neon-batch-priority")
        self.retries = add_classes(W.BoundedIntText(value=1, min=0, max=1000, description="retries",
                                             style=style), "neon-batch-retries")
        self.retry_delay = add_classes(W.BoundedFloatText(value=0.1, min=0, max=3600, step=0.05,
                                                   description="retry delay s", style=style),
                                "neon-batch-retry-delay")
        self.failure = add_classes(W.FloatSlider(value=first.failure_probability, min=0, max=1, step=0.05,
                                          description="failure p", style=style), "neon-batch-failure")
        self.seed = add_classes(W.Text(value="", description="seed", placeholder="blank: random",
                                style=style), "neon-batch-seed")
        self.submit_button = add_classes(W.Button(description="Submit", icon="plus", button_style="primary"),
                                  "neon-batch-submit")
        self.status = add_classes(W.Label(value=""), "neon-batch-status")
        self.kind.observe(self._on_kind, names="value")
        self.submit_button.on_click(self._on_click)
        self.widget = add_classes(W.VBox([
            W.HBox([self.kind, self.kind_help]),
            self.count,
            W.HBox([self.dist, self.duration, self.duration_high], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.priority_mode, self.priority], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.retries, self.retry_delay], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.failure, self.seed], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.submit_button, self.status], layout=W.Layout(align_items="center")),
        ]), "neon-batch-builder")

    # ------------------------------------------------------------------- form
    def batch(self) -> Batch:
        """The `Batch` the form describes now. Raises ValueError naming the bad field."""
        with self._lock:
            dist = self.dist.value
            low, high = self.duration.value, self.duration_high.value
            duration: tuple = {"fixed": ("fixed", low), "uniform": ("uniform", low, high),
                               "exponential": ("exponential", low)}[dist]
            seed_text = self.seed.value.strip()
            if seed_text and not re.fullmatch(r"-?\d+", seed_text):
                raise ValueError(f"seed must be blank or an integer, got {seed_text!r}")
            return Batch(kind=self.kind.value, count=self.count.value, duration=duration,
                         priority=_parse_priority_text(self.priority_mode.value, self.priority.value),
                         retries=self.retries.value, retry_delay=self.retry_delay.value,
                         failure_probability=self.failure.value,
                         seed=int(seed_text) if seed_text else None)

    def _on_kind(self, change: Mapping[str, Any]) -> None:
        # Defaults of the chosen kind: a form dependency, written under the lock.
        try:
            kind = get_task_kind(change["new"])
        except ValueError:
            return
        with self._lock:
            self.duration.value = kind.default_duration
            self.duration_high.value = kind.default_duration * 2
            self.failure.value = kind.failure_probability
            self.kind_help.value = _kind_help(kind)

    # ----------------------------------------------------------------- submit
    def _on_click(self, _button: Any) -> None:
        try:
            self.submit()
        except (ValueError, TypeError) as exc:
            with self._lock:
                self.status.value = f"not submitted: {exc}"

    def submit(self) -> Batch:
        """Queue the form's batch for the worker (like a click); return it.

        Returns at once: the feeder thread adds the tasks, waiting for room
        if the worker's queue is bounded. Thread-safe.
        """
        batch = self.batch()
        with self._lock:
            self._pending.append(batch)
            self.status.value = f"submitting {batch.count} {batch.task_kind.name} task(s)…"
            if self._feeder is None:
                self._feeder = threading.Thread(target=self._feed, name=f"{self._worker.name}-batch-feeder",
                                                daemon=True)
                self._feeder.start()
        return batch

    def _feed(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._feeder = None
                    self._idle.notify_all()
                    return
                batch = self._pending.popleft()
            try:
                batch.submit(self._worker)
            except Exception as exc:
                logger.warning("batch builder: submitting %s failed: %s", batch.id_prefix, exc)
                text = f"not submitted: {type(exc).__name__}: {exc}"
            else:
                text = (f"submitted {batch.count} {batch.task_kind.name} task(s) "
                        f"({batch.id_prefix}0…{batch.count - 1})")
                with self._lock:
                    self.submitted.append(batch)
            with self._lock:
                self.status.value = text

    def wait_submitted(self, timeout: float | None = None) -> bool:
        """Wait until every batch submitted so far was handed to the worker; False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._feeder is None, timeout)

    @property
    def worker(self) -> Any:
        return self._worker

    def close(self) -> None:
        """Close the form's widgets (batches already handed to the feeder still go to the worker)."""
        with self._lock:
            for w in widget_tree(self.widget):
                w.close()

    def __repr__(self) -> str:
        return f"<neon_nb BatchBuilder for worker {self._worker.name!r}>"


def _kind_help(kind: Any) -> str:
    import html

    return f"<small>{html.escape(kind.description)}</small>"


def _parse_priority_text(mode: str, text: str) -> Any:
    ints = [int(v) for v in _INT.findall(text)]
    if mode == "fixed":
        if len(ints) != 1:
            raise ValueError(f"priority 'fixed' needs one integer, got {text!r}")
        return ("fixed", ints[0])
    if mode == "random":
        # "0-10" reads as 0 and -10 to the regex: take the numbers as written.
        m = re.fullmatch(r"\s*(-?\d+)\s*(?:-|\.\.|,|\s)\s*(-?\d+)\s*", text)
        if not m:
            raise ValueError(f"priority 'random' needs 'low-high' (e.g. 0-10), got {text!r}")
        return ("random", int(m.group(1)), int(m.group(2)))
    if not ints:
        raise ValueError(f"priority 'classes' needs integers like '0, 5, 10', got {text!r}")
    return ("classes", ints)
