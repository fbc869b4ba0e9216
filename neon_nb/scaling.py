"""Scaling experiments: how a workload's throughput grows with the number of workers.

`measure_scaling` runs the same workload on a fresh `NeonWorker` of each size
(1, 2, 4, 8 workers by default), times it, and fits Amdahl's law to the
speedups. The result, a frozen `ScalingResult`, prints as a table, converts to
a pandas DataFrame, and is what `neon_nb.plots.plot_scaling` draws and
`neon_nb.widgets.ScalingExperiment` shows live.

Pure Python: this module imports no Jupyter library and no matplotlib
(``import neon_nb`` does not import it either).
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from ._config import get_config
from ._task import Task, TaskFuture
from ._worker import NeonWorker

if TYPE_CHECKING:
    from .backends import BackendSpec

__all__ = [
    "ScalingPlan",
    "ScalingPoint",
    "ScalingResult",
    "amdahl_speedup",
    "fit_parallel_fraction",
    "measure_scaling",
]

STATISTICS = ("median", "best")
# Settings that measure_scaling sets itself, per worker count (no journal: a measurement must
# run every task, not find it done).
_OWN_SETTINGS = ("max_workers", "name", "backend", "journal")
# NeonWorker arguments that are not configuration settings.
_WORKER_ARGUMENTS = ("exit_timeout", "retry_on")
# While a stop flag is given, a run checks it this often (seconds).
_STOP_POLL = 0.05
# Shutting a worker down after a stop or a timeout: running tasks get this long.
_ABORT_TIMEOUT = 5.0


class StopFlag(Protocol):
    """Anything with ``is_set()``, such as a `threading.Event`."""

    def is_set(self) -> bool: ...


# ----------------------------------------------------------------- Amdahl's law
def amdahl_speedup(p: float, n: float) -> float:
    """Amdahl's law: the speedup of ``n`` workers when a fraction ``p`` of the work is parallel.

    ``S(n) = 1 / ((1 - p) + p / n)``: 1 for ``p = 0``, ``n`` for ``p = 1``,
    and at most ``1 / (1 - p)`` however many workers.
    """
    return 1.0 / ((1.0 - p) + p / n)


def _sse(p: float, points: Sequence[tuple[int, float]]) -> float:
    return math.fsum((s - amdahl_speedup(p, n)) ** 2 for n, s in points)


def fit_parallel_fraction(speedups: Mapping[int, float]) -> float | None:
    """The parallel fraction ``p`` in [0, 1] whose Amdahl curve best fits ``speedups``.

    ``speedups`` maps a worker count to its measured speedup over 1 worker.
    The fit is least squares on the speedups themselves (not on their
    inverses): it minimises ``sum((S_n - 1 / ((1 - p) + p / n))**2)`` over
    ``p`` in [0, 1], by a scan of 1,001 values then a golden-section search
    around the best one (one parameter, no library needed). The point at 1
    worker fits any ``p`` exactly and does not weigh. Speedups above the ideal
    line (super-linear) give ``p = 1``; speedups below 1 give ``p = 0``.
    Returns None when no worker count above 1 was measured.
    """
    points = [(n, s) for n, s in speedups.items() if n > 1 and math.isfinite(s)]
    if not points:
        return None
    grid = [i / 1000 for i in range(1001)]
    best = min(grid, key=lambda p: _sse(p, points))
    lo, hi = max(0.0, best - 1e-3), min(1.0, best + 1e-3)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):  # the bracket shrinks to 2e-3 * 0.618**40, about 1e-11
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _sse(a, points) <= _sse(b, points):
            hi = b
        else:
            lo = a
    p = (lo + hi) / 2
    return p if _sse(p, points) <= _sse(best, points) else best


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class ScalingPoint:
    """The timed runs of one worker count.

    ``seconds``: the wall time of each timed run, from the first submission to
    the last completion. ``tasks``: tasks per run. ``failed``: tasks that
    failed (for good) over all timed runs; their time counts like any other.
    """

    workers: int
    tasks: int
    seconds: tuple[float, ...]
    failed: int = 0

    @property
    def median(self) -> float:
        """The median run time in seconds."""
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        """The fastest run in seconds."""
        return min(self.seconds)

    def elapsed(self, statistic: str = "median") -> float:
        """The run time that stands for this count: ``"median"`` or ``"best"`` (the fastest)."""
        return self.best if statistic == "best" else self.median


def _cpu_count() -> int:
    """The CPUs this process may run on (its affinity), not the machine's total."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True, repr=False)
class ScalingResult:
    """What `measure_scaling` measured: one `ScalingPoint` per worker count, and the Amdahl fit.

    ``workers``: the counts measured, ascending. ``throughput``, ``speedup``
    and ``efficiency`` map each count to tasks per second, the speedup over
    1 worker, and speedup / workers. ``parallel_fraction`` is Amdahl's ``p``
    fitted to the speedups (see `fit_parallel_fraction`; None before a
    second count is measured) and ``fit_error`` the root-mean-square
    distance between the measured speedups and the fitted curve.

    ``planned``: the counts asked for (a stopped run measured fewer).
    ``statistic``: ``"median"`` (the default: the typical run) or ``"best"``
    (the fastest run of each count: the least disturbed by other programs;
    `using` switches). ``cpu_count``: the CPUs this process could use.
    ``label`` and ``backend`` describe the workload, for titles.

    Immutable and safe to share between threads. ``str()`` and ``repr()``
    give a plain-text table; `to_dataframe` a pandas DataFrame.
    """

    points: tuple[ScalingPoint, ...]
    planned: tuple[int, ...]
    backend: str = "threads"
    label: str = "tasks"
    repeats: int = 1
    warmup: int = 0
    cpu_count: int = field(default_factory=_cpu_count)
    stopped: bool = False
    statistic: str = "median"
    parallel_fraction: float | None = field(init=False)
    fit_error: float | None = field(init=False)

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {self.statistic!r}")
        object.__setattr__(self, "points", tuple(sorted(self.points, key=lambda pt: pt.workers)))
        speedup = self.speedup
        p = fit_parallel_fraction(speedup)
        err = None
        if p is not None:
            err = math.sqrt(statistics.fmean((s - amdahl_speedup(p, n)) ** 2 for n, s in speedup.items()))
        object.__setattr__(self, "parallel_fraction", p)
        object.__setattr__(self, "fit_error", err)

    # ------------------------------------------------------------ mappings
    @property
    def workers(self) -> tuple[int, ...]:
        """The worker counts measured, ascending."""
        return tuple(pt.workers for pt in self.points)

    @property
    def seconds(self) -> Mapping[int, float]:
        """Worker count -> the run time standing for it (median or best, per ``statistic``)."""
        return MappingProxyType({pt.workers: pt.elapsed(self.statistic) for pt in self.points})

    @property
    def throughput(self) -> Mapping[int, float]:
        """Worker count -> tasks per second."""
        return MappingProxyType({pt.workers: pt.tasks / pt.elapsed(self.statistic)
                                 for pt in self.points})

    @property
    def speedup(self) -> Mapping[int, float]:
        """Worker count -> throughput over the throughput of 1 worker (empty until 1 is measured)."""
        thr = self.throughput
        base = thr.get(1)
        if not base:
            return MappingProxyType({})
        return MappingProxyType({n: t / base for n, t in thr.items()})

    @property
    def efficiency(self) -> Mapping[int, float]:
        """Worker count -> speedup / workers (1.0 on the ideal line)."""
        return MappingProxyType({n: s / n for n, s in self.speedup.items()})

    @property
    def complete(self) -> bool:
        """Every planned worker count was measured."""
        return set(self.planned) <= set(self.workers)

    @property
    def max_speedup(self) -> float | None:
        """Amdahl's ceiling ``1 / (1 - p)`` for the fitted ``p`` (inf for p = 1)."""
        p = self.parallel_fraction
        if p is None:
            return None
        return math.inf if p >= 1 else 1.0 / (1.0 - p)

    def amdahl(self, n: float) -> float | None:
        """The fitted curve's speedup at ``n`` workers (None without a fit)."""
        p = self.parallel_fraction
        return None if p is None else amdahl_speedup(p, n)

    def using(self, statistic: str) -> ScalingResult:
        """The same runs summarised by ``"median"`` or ``"best"`` (the fastest run per count)."""
        return replace(self, statistic=statistic)

    # -------------------------------------------------------------- output
    def to_dataframe(self) -> Any:
        """A pandas DataFrame, one row per worker count (index ``workers``).

        Columns: ``tasks``, ``runs``, ``seconds`` (median or best), ``throughput``
        (tasks/s), ``speedup``, ``efficiency``, ``amdahl`` (the fitted curve),
        ``failed``. Needs pandas (``pip install 'neon_nb[pandas]'``).
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_dataframe() needs pandas: pip install 'neon_nb[pandas]'") from exc
        thr, spd = self.throughput, self.speedup
        rows = [{"workers": pt.workers, "tasks": pt.tasks, "runs": len(pt.seconds),
                 "seconds": pt.elapsed(self.statistic), "throughput": thr[pt.workers],
                 "speedup": spd.get(pt.workers, math.nan),
                 "efficiency": spd.get(pt.workers, math.nan) / pt.workers,
                 "amdahl": self.amdahl(pt.workers) or math.nan, "failed": pt.failed}
                for pt in self.points]
        columns = ["workers", "tasks", "runs", "seconds", "throughput", "speedup", "efficiency",
                   "amdahl", "failed"]
        return pd.DataFrame(rows, columns=columns).set_index("workers")

    def title(self) -> str:
        """One line: the workload, the backend and how each count was summarised."""
        runs = "1 run" if self.repeats == 1 else f"{self.statistic} of {self.repeats} runs"
        return (f"Scaling of {self.label} on {self.backend}: {runs} per worker count, "
                f"{self.cpu_count} CPU{'s' if self.cpu_count != 1 else ''}")

    def table(self) -> str:
        """The plain-text table that ``str()`` and ``repr()`` print."""
        lines = [self.title()]
        if not self.points:
            lines.append("(nothing measured" + (": stopped)" if self.stopped else ")"))
            return "\n".join(lines)
        thr, spd, fit = self.throughput, self.speedup, self.amdahl
        failed = any(pt.failed for pt in self.points)
        head = ["workers", "tasks", "seconds", "tasks/s", "speedup", "efficiency", "Amdahl fit"]
        if failed:
            head.append("failed")
        rows = []
        for pt in self.points:
            n = pt.workers
            s = spd.get(n)
            f = fit(n)
            row = [str(n), str(pt.tasks), f"{pt.elapsed(self.statistic):.3f}", f"{thr[n]:.1f}",
                   "-" if s is None else f"{s:.2f}x", "-" if s is None else f"{s / n:.0%}",
                   "-" if f is None else f"{f:.2f}x"]
            if failed:
                row.append(str(pt.failed))
            rows.append(row)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for r in [head, *rows]:
            lines.append("  ".join(v.rjust(w) for v, w in zip(r, widths)))
        lines.append(self._fit_line())
        return "\n".join(lines)

    def _fit_line(self) -> str:
        p = self.parallel_fraction
        missing = [n for n in self.planned if n not in self.workers]
        tail = f" (stopped; not measured: {', '.join(map(str, missing))})" if missing else ""
        if p is None:
            return f"parallel fraction: needs a count above 1 worker{tail}"
        ceiling = 1.0 / (1.0 - p) if p < 1 else math.inf
        if ceiling == math.inf:
            cap = "no ceiling"
        else:
            cap = f"ceiling 1/(1-p) = {ceiling:,.0f}x" if ceiling >= 100 else f"ceiling 1/(1-p) = "\
                f"{ceiling:.3g}x"
        return (f"parallel fraction p = {p:.3f} (Amdahl's law, least squares on the speedups; "
                f"rms error {self.fit_error:.2f}; {cap}){tail}")

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()


# -------------------------------------------------------------------- measuring
class _Countdown:
    """Counts finished futures; sets ``done`` (and notes the time) when the last one finishes.

    The callbacks run on the worker's threads, after the worker released its
    lock; they only take this object's own lock for an integer update.
    """

    def __init__(self, futures: Sequence[TaskFuture]) -> None:
        self._lock = threading.Lock()
        self._left = len(futures)
        self.finished_at: float | None = None
        self.done = threading.Event()
        if not futures:
            self._finish()
        for f in futures:
            f.add_done_callback(self._one)

    def _one(self, _future: Any) -> None:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        self.finished_at = time.perf_counter()
        self.done.set()

    def wait(self, stop: StopFlag | None, deadline: float | None) -> str:
        """Wait for the last future: ``"done"``, ``"stopped"`` or ``"timeout"``."""
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return "done" if self.done.is_set() else "timeout"
            # With a stop flag (which cannot wake us), wake up now and then to read it.
            step = left if stop is None else _STOP_POLL if left is None else min(left, _STOP_POLL)
            if self.done.wait(step):
                return "done"
            if stop is not None and stop.is_set():
                return "stopped"


class _Stopped(Exception):
    """Internal: the stop flag was set during a run."""


def _make(make_tasks: Callable[[], Iterable[Task]]) -> list[Task]:
    tasks = make_tasks()
    try:
        tasks = list(tasks)
    except TypeError:
        raise TypeError(f"make_tasks() must return a list of neon_nb.Task, got "
                        f"{type(tasks).__name__} {tasks!r}") from None
    if not tasks:
        raise ValueError("make_tasks() returned no task: a scaling run needs at least one")
    for i, t in enumerate(tasks):
        if not isinstance(t, Task):
            raise TypeError(f"make_tasks() must return neon_nb.Task objects; item {i} is "
                            f"{type(t).__name__} {t!r}")
    return tasks


@dataclass(frozen=True)
class ScalingPlan:
    """A validated scaling experiment, ready to `run` (what `measure_scaling` builds and runs).

    Build it with the arguments of `measure_scaling` (every one is checked
    here, with a clear error); `run` measures, on the calling thread. The live
    widget builds one at once (bad input fails at the call) and runs it on a
    thread of its own. Immutable; `run` may be called more than once.
    """

    make_tasks: Callable[[], Iterable[Task]]
    workers: tuple[int, ...] = (1, 2, 4, 8)
    backend: BackendSpec = "threads"
    repeats: int = 3
    warmup: int = 2
    timeout: float | None = None
    statistic: str = "median"
    label: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "workers", _check_workers(self.workers))
        _check_plan(self)
        object.__setattr__(self, "settings", MappingProxyType({"queue_size": 0, **self.settings}))
        if self.label is None:
            object.__setattr__(self, "label", getattr(self.make_tasks, "__name__", "tasks"))

    def empty_result(self, *, stopped: bool = False) -> ScalingResult:
        """The result before any count is measured (what a live chart starts from)."""
        return self._result((), stopped=stopped)

    def _result(self, points: Sequence[ScalingPoint], *, stopped: bool = False) -> ScalingResult:
        return ScalingResult(tuple(points), planned=self.workers, backend=_describe_backend(self.backend),
                             label=self.label or "tasks", repeats=self.repeats, warmup=self.warmup,
                             stopped=stopped, statistic=self.statistic)

    def run(self, on_progress: Callable[[ScalingResult], Any] | None = None,
            stop: StopFlag | None = None) -> ScalingResult:
        """Measure every worker count in turn; see `measure_scaling` for ``on_progress`` and ``stop``."""
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be None or a callable taking a ScalingResult, got "
                            f"{on_progress!r}")
        if stop is not None and not callable(getattr(stop, "is_set", None)):
            raise TypeError(f"stop must be None or an object with is_set(), such as threading.Event, "
                            f"got {stop!r}")
        points: list[ScalingPoint] = []
        for n in self.workers:
            if stop is not None and stop.is_set():
                return self._result(points, stopped=True)
            try:
                points.append(_measure_count(n, self, stop))
            except _Stopped:
                return self._result(points, stopped=True)
            if on_progress is not None:
                on_progress(self._result(points))
        return self._result(points)


def _run_once(worker: NeonWorker, tasks: list[Task], plan: ScalingPlan, n: int,
              stop: StopFlag | None) -> tuple[float, int]:
    """Time one batch on ``worker``: (seconds from submission to the last completion, failures)."""
    t0 = time.perf_counter()
    futures = worker.add_tasks(tasks)
    countdown = _Countdown(futures)
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    outcome = countdown.wait(stop, deadline)
    if outcome == "stopped":
        raise _Stopped
    if outcome == "timeout":
        raise TimeoutError(f"a run of {len(tasks)} tasks on {n} worker{'s' if n != 1 else ''} did not "
                           f"finish within timeout={plan.timeout:g} s")
    assert countdown.finished_at is not None
    failed = sum(1 for f in futures if not f.cancelled() and f.exception() is not None)
    return countdown.finished_at - t0, failed


def _measure_count(n: int, plan: ScalingPlan, stop: StopFlag | None) -> ScalingPoint:
    """A fresh worker of ``n``: warm-up, then ``repeats`` timed runs. Raises `_Stopped`."""
    worker = NeonWorker(max_workers=n, name=f"scaling-{n}", backend=plan.backend, journal=False,
                        **plan.settings)
    clean = False
    try:
        worker.start()
        if plan.warmup:
            # A few tasks per worker start every thread (or process, or cluster connection)
            # and warm the code paths; their time is not counted.
            _run_once(worker, _make(plan.make_tasks)[: plan.warmup * n], plan, n, stop)
        seconds: list[float] = []
        failed = 0
        tasks = 0
        for _ in range(plan.repeats):
            if stop is not None and stop.is_set():
                raise _Stopped
            batch = _make(plan.make_tasks)
            tasks = len(batch)
            took, bad = _run_once(worker, batch, plan, n, stop)
            seconds.append(took)
            failed += bad
        clean = True
        return ScalingPoint(n, tasks, tuple(seconds), failed)
    finally:
        # After a stop, a timeout or an error, queued tasks are cancelled and running ones
        # get a bounded time: the experiment never hangs on its own workload.
        worker.shutdown(timeout=None if clean else _ABORT_TIMEOUT, cancel_pending=not clean)


def _check_workers(workers: Any) -> tuple[int, ...]:
    try:
        counts = list(workers)
    except TypeError:
        raise TypeError(f"workers must be an iterable of worker counts such as (1, 2, 4, 8), got "
                        f"{workers!r}") from None
    if not counts or any(type(n) is not int or n < 1 for n in counts):
        raise ValueError(f"workers must be ints >= 1 such as (1, 2, 4, 8), got {workers!r}")
    if len(set(counts)) != len(counts):
        raise ValueError(f"workers must not repeat a count, got {workers!r}")
    if 1 not in counts:
        raise ValueError(f"workers must include 1: speedup is measured over 1 worker, got {workers!r}")
    return tuple(sorted(counts))


def _check_plan(plan: ScalingPlan) -> None:
    if not callable(plan.make_tasks):
        raise TypeError(f"make_tasks must be a callable returning a fresh list of neon_nb.Task, got "
                        f"{plan.make_tasks!r}")
    if type(plan.repeats) is not int or plan.repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {plan.repeats!r}")
    if type(plan.warmup) is not int or plan.warmup < 0:
        raise ValueError(f"warmup must be an int >= 0 (tasks per worker run untimed first), got "
                         f"{plan.warmup!r}")
    timeout = plan.timeout
    if timeout is not None and not (type(timeout) in (int, float) and timeout > 0):
        raise ValueError(f"timeout must be None or seconds > 0, got {timeout!r}")
    if plan.statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {plan.statistic!r}")
    if plan.label is not None and not isinstance(plan.label, str):
        raise TypeError(f"label must be a str or None, got {plan.label!r}")
    _describe_backend(plan.backend)
    own = sorted(set(plan.settings) & set(_OWN_SETTINGS))
    if own:
        raise TypeError(f"{', '.join(own)} cannot be worker settings here: measure_scaling sets "
                        f"them (max_workers from workers=, one fresh worker per count, and no "
                        f"journal: every task must run)")
    # The settings of each worker, checked now rather than when the first worker is built
    # (on another thread, for the live widget): unknown names and bad values name themselves.
    get_config().replace(**{k: v for k, v in plan.settings.items() if k not in _WORKER_ARGUMENTS})


def _describe_backend(backend: BackendSpec) -> str:
    from .backends import make_backend

    return make_backend(backend).name  # also validates: a clear error at the call


def measure_scaling(  # noqa: PLR0913 - an experiment's knobs, all keywords with defaults
        make_tasks: Callable[[], Iterable[Task]], workers: Iterable[int] = (1, 2, 4, 8), *,
        backend: BackendSpec = "threads", repeats: int = 3, warmup: int = 2, timeout: float | None = None,
        statistic: str = "median", label: str | None = None,
        on_progress: Callable[[ScalingResult], Any] | None = None, stop: StopFlag | None = None,
        **worker_settings: Any) -> ScalingResult:
    """Measure how throughput grows with the number of workers, and fit Amdahl's law.

    ``make_tasks()`` returns a fresh list of `Task` each time it is called
    (the workload of one run). For each count in ``workers`` (which must
    include 1), ascending, a fresh `NeonWorker` of that many workers on
    ``backend`` (``"threads"``, ``"processes"``, ``"dask"``, an address, a
    ``distributed.Client`` or a `neon_nb.backends.Backend` instance, reused
    one worker at a time) runs:

    1. a warm-up: the first ``warmup`` tasks per worker of a fresh list,
       untimed, so that every thread, process or cluster connection has
       started (``warmup=0``: none);
    2. ``repeats`` timed runs of a fresh list each, timed from the first
       submission to the last completion (``worker.add_tasks``, an unbounded
       queue unless ``queue_size`` says otherwise);

    then shuts down. A count's run time is the median of its runs
    (``statistic="best"``: the fastest). ``throughput = tasks / time`` and
    ``speedup[n] = throughput[n] / throughput[1]``.

    **The parallel fraction.** Amdahl's law says that if a fraction ``p``
    of the work can be spread over workers and the rest is serial,
    ``n`` workers give ``S(n) = 1 / ((1 - p) + p / n)``. The result's
    ``parallel_fraction`` is the ``p`` in [0, 1] whose curve is closest to
    the measured speedups, by least squares on the speedups (see
    `fit_parallel_fraction`). It summarises the *measured* scaling; it is
    not a property of the code alone:

    * tasks that wait (``time.sleep``, network, disk) release the GIL and
      overlap: ``p`` near 1 on threads on any number of cores. Their limit
      is Little's law (tasks in flight = throughput x latency: ``n``
      workers holding tasks of ``d`` seconds finish at most ``n / d`` per
      second), not processors; the serial part is the per-task cost of
      submitting and dispatching;
    * pure-Python computation on threads holds the GIL: one thread computes
      at a time, ``p`` near 0, however many cores;
    * the same on ``backend="processes"`` runs on separate cores: ``p``
      near 1, but only up to the CPUs available (``cpu_count``). Amdahl's
      law assumes one processor per worker; past the cores, speedup
      flattens for lack of them, which the fit reads as serial work, so
      measure CPU-bound work up to the core count;
    * a super-linear speedup (caches, or a slow 1-worker run on a busy
      machine) fits ``p = 1``; a slow-down fits ``p = 0``.

    ``timeout``: seconds allowed per run (``TimeoutError`` past it, after
    shutting the worker down). ``label``: the workload's name in titles
    (default: ``make_tasks``'s name). Other keyword arguments are settings
    of each worker (``queue_size`` defaults to 0, unbounded; e.g.
    ``enable_metrics=False``, ``retry_attempts=0``).

    ``on_progress(result)`` is called after each worker count with the
    result so far (a frozen `ScalingResult`), on the calling thread, with no
    lock held; it may hand the result to another thread. ``stop`` (anything
    with ``is_set()``, e.g. a `threading.Event`) ends the experiment early:
    it is checked between runs and every 50 ms during one; the run in
    progress is abandoned (its queued tasks cancelled, the worker shut down
    within 5 s) and the result has ``stopped=True`` and the counts finished
    so far.

    Blocks the calling thread until done; safe to call from any thread, and
    from several threads at once (each call has its own workers, although
    they then compete for the same cores).
    """
    plan = ScalingPlan(make_tasks, workers, backend, repeats,  # type: ignore[arg-type]  # checked there
                       warmup, timeout, statistic, label, worker_settings)
    return plan.run(on_progress, stop)
