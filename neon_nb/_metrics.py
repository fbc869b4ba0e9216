"""Metrics: counts, throughput over time, latency percentiles, utilisation, task stream.

The hot path only appends one tuple per finished attempt to a deque (an
atomic, lock-free operation in CPython). Folding those into HdrHistograms and
windows happens later, off the worker threads: on `snapshot()`, and at least
every quarter of a second on the worker's monitor thread (`neon_nb._monitor`).
Memory is bounded: fixed-size histograms, at most ``history_windows`` windows,
at most ``task_stream_size`` spans, and what waits in the pending deque.

With numpy, a fold of many attempts is vectorised: about a third of the
plain-Python fold's cost, which at a few hundred thousand tasks a second was
the largest cost of the metrics. The core does not import numpy for small
folds: it uses it once something has imported it (matplotlib, pandas: in a
notebook, nearly always), or imports it for a fold so large that the import
costs less than the plain fold would. Without numpy the plain fold does the
same, exactly (the tests compare both).
"""

from __future__ import annotations

import math
import operator
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from hdrh.histogram import HdrHistogram

__all__ = ["LatencySummary", "Metrics", "MetricsSnapshot", "TaskSpan", "ThroughputPoint"]

# Latencies are recorded in nanoseconds, from 1 ns to 1 hour, at 3 significant
# digits: a reported percentile is within 0.1% of the true sample value.
_LOWEST_NS = 1
_HIGHEST_NS = 3_600 * 10**9
_DIGITS = 3
PRECISION = 10.0 ** -_DIGITS

OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED = "failed"
OUTCOME_RETRY = "retry"


class TaskSpan(NamedTuple):
    """One attempt in the task stream: for a Gantt view (times are ``time.monotonic()``)."""

    task_id: Hashable
    thread: str
    start: float
    end: float
    outcome: str  # "succeeded", "failed" or "retry" (failed, and retried later)
    attempt: int


class ThroughputPoint(NamedTuple):
    """Tasks that finished in ``[start, start + window)``; ``start`` in seconds since the metrics began."""

    start: float
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """A latency distribution in seconds. ``histogram`` is ``((upper_bound_s, count), ...)`` on log bins."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    histogram: tuple[tuple[float, int], ...]

    def percentile(self, p: int) -> float:
        """The value at percentile ``p``: 50, 90, 99 or 100 (the maximum)."""
        return {50: self.p50, 90: self.p90, 99: self.p99, 100: self.max}[p]


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A frozen view of a worker's metrics at ``taken_at`` (``time.monotonic()``).

    ``counts``: tasks per state plus ``submitted`` and ``retried``.
    ``throughput``: one `ThroughputPoint` per window, oldest first.
    ``latency``: ``queue_wait``, ``run_time`` and ``end_to_end`` `LatencySummary`.
    ``utilisation``: busy fraction of each worker thread over the last ``utilisation_span`` s.
    ``task_stream``: the last attempts, oldest first.
    """

    taken_at: float
    started_at: float
    window: float
    counts: Mapping[str, int]
    throughput: tuple[ThroughputPoint, ...]
    latency: Mapping[str, LatencySummary]
    utilisation: Mapping[str, float]
    utilisation_span: float
    task_stream: tuple[TaskSpan, ...]
    version: int

    @property
    def finished(self) -> int:
        c = self.counts
        return c.get("succeeded", 0) + c.get("failed", 0) + c.get("cancelled", 0)

    def rate(self, last: int = 3) -> float:
        """Mean completed tasks per second over the last ``last`` full windows."""
        full = [p for p in self.throughput if p.start + self.window <= self.taken_at - self.started_at]
        pts = full[-last:]
        if not pts:
            return 0.0
        return sum(p.total for p in pts) / (len(pts) * self.window)

    def to_dataframe(self, table: str = "tasks") -> Any:
        """A pandas DataFrame of ``"tasks"`` (the task stream), ``"throughput"`` or ``"latency"``.

        Every time is in seconds: ``start``/``end`` of a task span are
        ``time.monotonic()`` seconds (subtract ``started_at`` for seconds since
        the metrics began), a throughput row counts the tasks that finished in
        the ``window`` seconds from its ``start``, and the latency columns
        (``p50``, ``p90``, ``p99``, ``max``, ``mean``) are seconds; ``count`` is
        attempts (a retried task is counted once per attempt in queue wait and
        run time). Needs pandas (``pip install 'neon_nb[pandas]'``).
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("to_dataframe() needs pandas: pip install 'neon_nb[pandas]'") from exc
        if table == "tasks":
            return pd.DataFrame(list(self.task_stream), columns=list(TaskSpan._fields))
        if table == "throughput":
            return pd.DataFrame(list(self.throughput), columns=list(ThroughputPoint._fields))
        if table == "latency":
            rows = {k: {"count": v.count, "p50": v.p50, "p90": v.p90, "p99": v.p99, "max": v.max,
                        "mean": v.mean} for k, v in self.latency.items()}
            return pd.DataFrame.from_dict(rows, orient="index")
        raise ValueError(f"table must be 'tasks', 'throughput' or 'latency', got {table!r}")


_LATENCIES = ("queue_wait", "run_time", "end_to_end")


class Metrics:
    """A worker's metrics. Thread-safe; `snapshot()` returns a frozen `MetricsSnapshot`."""

    def __init__(self, counts: Callable[[], dict[str, int]],
                 running: Callable[[], list[tuple[str, float]]],
                 threads: Callable[[], list[str]], *, window: float = 1.0,
                 history_windows: int = 600, task_stream_size: int = 2000,
                 utilisation_span: float = 5.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self._counts = counts
        self._running = running
        self._threads = threads
        self.window = float(window)
        self.history_windows = history_windows
        self.utilisation_span = utilisation_span
        # Appended to by worker threads without any lock (deque.append is atomic).
        self.pending: deque[tuple] = deque()
        self._lock = threading.Lock()
        self._stream: deque[TaskSpan] = deque(maxlen=task_stream_size)
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._t0 = time.monotonic()
        self._hist = {k: HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS) for k in _LATENCIES}
        self._summaries: dict[str, tuple[int, LatencySummary]] = {}
        self._windows: dict[int, list[int]] = {}
        self._busy: dict[int, dict[str, float]] = {}
        self._stream.clear()
        self._version = 0

    def reset_lock_after_fork(self) -> None:
        """In a child made by ``os.fork()``: a thread left in the parent may have held the lock."""
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget histograms, windows, utilisation and the task stream.

        Counts stay: they are the worker's.
        """
        with self._lock:
            self.pending.clear()
            self._reset_locked()

    # ------------------------------------------------------------------ folding
    def fold(self) -> int:
        """Move pending attempts into the histograms and windows; return how many. Thread-safe."""
        with self._lock:
            return self._fold_locked()

    def _fold_locked(self) -> int:
        """Fold the pending attempts: vectorised if numpy is there and they are many."""
        n = len(self.pending)
        if not n:
            return 0
        if n >= _VECTOR_MIN and _numpy(n) is not None:
            self._fold_vectorised(n)
        else:
            self._fold_python(n)
        oldest = (max(self._windows) if self._windows else 0) - self.history_windows
        for d in (self._windows, self._busy):
            if len(d) > self.history_windows:
                for key in [key for key in d if key < oldest]:
                    del d[key]
        self._version += 1
        return n

    def _fold_vectorised(self, n: int) -> None:
        """`_fold_python` for many attempts at once, with numpy: the same counts, exactly.

        About a third of the plain fold's cost per attempt: at hundreds of thousands
        of tasks per second the fold was the largest cost of the metrics. The test suite
        checks both folds against each other and against ``record_value``.
        """
        pop = self.pending.popleft
        items = [pop() for _ in range(n)]
        t0, window = self._t0, self.window
        if items[0][4] < t0 or items[-1][4] < t0:  # some finished before a reset
            items = [it for it in items if it[4] >= t0]
            if not items:
                return
        # Columns, each in one C-level pass (zip(*items) would make an iterator per item).
        m = len(items)
        enq_a, start_a, end_a, sub_a = (_np.fromiter(map(field, items), _np.float64, count=m)
                                        for field in _TIMES)
        kinds = _np.array(list(map(_OUTCOME, items)), dtype=object)
        final = kinds != OUTCOME_RETRY
        h_wait, h_run, h_e2e = (self._hist[k] for k in _LATENCIES)
        _record_many(h_wait, start_a - enq_a)
        _record_many(h_run, end_a - start_a)
        _record_many(h_e2e, (end_a - sub_a)[final])
        idx = _np.floor_divide(end_a - t0, window).astype(_np.int64)
        _count_windows(self._windows, idx[final], (kinds == OUTCOME_FAILED)[final])
        _add_busy(self._busy, list(map(_THREAD, items)), start_a, end_a, idx, t0, window)
        keep_from = len(items) - (self._stream.maxlen or len(items))
        self._stream.extend(map(_SPAN, map(_SPAN_FIELDS, items[max(keep_from, 0):])))

    def _fold_python(self, n: int) -> None:  # noqa: PLR0915 - one inlined hot loop (see below)
        """Fold the pending attempts. The hot loop of the metrics: keep it lean.

        Values go straight into the HdrHistograms' counts arrays with the
        library's own bucket arithmetic (``_counts_index_for``) written out
        inline: ``record_value`` costs four Python calls per value, which at
        three values per task was the largest part of the metrics overhead.
        A test pins the result against ``record_value``.
        """
        pop = self.pending.popleft
        h_wait, h_run, h_e2e = (self._hist[k] for k in _LATENCIES)
        c_wait, c_run, c_e2e = h_wait.counts, h_run.counts, h_e2e.counts
        mask = h_wait.sub_bucket_mask  # the three histograms share their layout
        unit = h_wait.unit_magnitude
        shm = h_wait.sub_bucket_half_count_magnitude
        shm1 = shm + 1
        half = h_wait.sub_bucket_half_count
        hi = _HIGHEST_NS
        windows, busy, stream = self._windows, self._busy, self._stream
        t0, window = self._t0, self.window
        keep_from = n - (stream.maxlen or n)  # only the last spans survive the ring
        lo_w = lo_r = lo_e = hi
        hi_w = hi_r = hi_e = 0
        n_run = n_e2e = 0
        for k in range(n):
            task_id, thread, enqueued, start, end, submitted, outcome, attempt = pop()
            if end < t0:  # finished before a reset
                continue
            n_run += 1
            v = int((start - enqueued) * 1e9)
            v = 1 if v < 1 else hi if v > hi else v
            b = (v | mask).bit_length() - unit - shm1
            c_wait[((b + 1) << shm) + (v >> (b + unit)) - half] += 1
            lo_w = v if v < lo_w else lo_w
            hi_w = v if v > hi_w else hi_w
            v = int((end - start) * 1e9)
            v = 1 if v < 1 else hi if v > hi else v
            b = (v | mask).bit_length() - unit - shm1
            c_run[((b + 1) << shm) + (v >> (b + unit)) - half] += 1
            lo_r = v if v < lo_r else lo_r
            hi_r = v if v > hi_r else hi_r
            idx = int((end - t0) // window)
            if outcome != OUTCOME_RETRY:
                n_e2e += 1
                v = int((end - submitted) * 1e9)
                v = 1 if v < 1 else hi if v > hi else v
                b = (v | mask).bit_length() - unit - shm1
                c_e2e[((b + 1) << shm) + (v >> (b + unit)) - half] += 1
                lo_e = v if v < lo_e else lo_e
                hi_e = v if v > hi_e else hi_e
                w = windows.get(idx)
                if w is None:
                    w = windows[idx] = [0, 0]
                w[outcome == OUTCOME_FAILED] += 1
            # Busy time, in the window(s) the attempt spans.
            s = start if start > t0 else t0
            i = int((s - t0) // window)
            if i == idx:  # the common case: one window
                bw = busy.get(i)
                if bw is None:
                    bw = busy[i] = {}
                bw[thread] = bw.get(thread, 0.0) + (end - s)
            else:
                while s < end:
                    i = int((s - t0) // window)
                    e = min(end, t0 + (i + 1) * window)
                    bw = busy.get(i)
                    if bw is None:
                        bw = busy[i] = {}
                    bw[thread] = bw.get(thread, 0.0) + (e - s)
                    s = e if e > s else end
            if k >= keep_from:
                stream.append(_new_tuple(TaskSpan, (task_id, thread, start, end, outcome, attempt)))
        for h, count, lo, top in ((h_wait, n_run, lo_w, hi_w), (h_run, n_run, lo_r, hi_r),
                                  (h_e2e, n_e2e, lo_e, hi_e)):
            if count:
                h.total_count += count
                h.min_value = min(h.min_value, lo)
                h.max_value = max(h.max_value, top)

    # ----------------------------------------------------------------- reading
    def _summary_locked(self, name: str) -> LatencySummary:
        # A histogram changes only by recording: its count identifies its state.
        h = self._hist[name]
        cached = self._summaries.get(name)
        if cached is not None and cached[0] == h.get_total_count():
            return cached[1]
        summary = _summary(h)
        self._summaries[name] = (h.get_total_count(), summary)
        return summary

    def snapshot(self) -> MetricsSnapshot:
        """Fold what is pending and return a frozen snapshot. Thread-safe."""
        counts = self._counts()
        running = self._running()
        threads = self._threads()
        with self._lock:
            self._fold_locked()
            now = time.monotonic()
            t0, window = self._t0, self.window
            last = int((now - t0) // window)
            first = max(0, last - self.history_windows + 1)
            if self._windows:
                first = max(first, min(self._windows))
            throughput = tuple(
                ThroughputPoint(i * window, *self._windows.get(i, (0, 0))) for i in range(first, last + 1)
            )
            latency = {k: self._summary_locked(k) for k in self._hist}
            span = min(self.utilisation_span, max(now - t0, 1e-9))
            since = now - span
            util: dict[str, float] = dict.fromkeys(threads, 0.0)
            first_u = int((since - t0) // window)
            for i in range(max(first_u, 0), last + 1):
                b = self._busy.get(i)
                if not b:
                    continue
                w_start = t0 + i * window
                # Only the part of window i after `since` counts (windows are mostly whole).
                frac = 1.0 if w_start >= since else max(0.0, (w_start + window - since) / window)
                for th, sec in b.items():
                    util[th] = util.get(th, 0.0) + sec * frac
            for th, started in running:
                util[th] = util.get(th, 0.0) + (now - max(started, since))
            util = {th: min(1.0, sec / span) for th, sec in util.items()}
            return MetricsSnapshot(
                taken_at=now, started_at=t0, window=window,
                counts=types.MappingProxyType(dict(counts)),
                throughput=throughput,
                latency=types.MappingProxyType(latency),
                utilisation=types.MappingProxyType(util),
                utilisation_span=span,
                task_stream=tuple(self._stream),
                version=self._version,
            )


_new_tuple = tuple.__new__
_SPAN = TaskSpan._make  # (C-level, as is the field picker below)
_SPAN_FIELDS = operator.itemgetter(0, 1, 3, 4, 6, 7)  # a pending attempt's TaskSpan fields
# A pending attempt's fields, as `_fold_vectorised` reads them (see `Metrics.pending`).
_THREAD, _OUTCOME = operator.itemgetter(1), operator.itemgetter(6)
_TIMES = tuple(map(operator.itemgetter, (2, 3, 4, 5)))  # enqueued, start, end, submitted
_VECTOR_MIN = 256  # fewer attempts fold faster in plain Python than numpy's per-call costs
_IMPORT_MIN = 20_000  # a fold this large (~25 ms in plain Python) pays for importing numpy
_np: Any = None  # numpy, once a fold may use it
_numpy_tried = False  # an import was attempted (not installed: never try again)


def _numpy(n: int) -> Any:
    """numpy for a fold of ``n`` attempts, or None (see the module notes)."""
    global _np, _numpy_tried  # noqa: PLW0603 - one process-wide, idempotent decision
    if _np is None:
        module = sys.modules.get("numpy")
        if module is None:
            if n < _IMPORT_MIN or _numpy_tried:
                return None
            _numpy_tried = True
            try:
                import numpy as module  # (only for large folds: see the module notes)
            except ImportError:
                return None
        _np = module
    return _np


def _record_many(h: HdrHistogram, seconds: Any) -> None:
    """``h.record_value`` for each of ``seconds`` (a numpy array), with hdrh's arithmetic."""
    if not len(seconds):
        return
    np = _np
    v = (seconds * 1e9).astype(np.int64)  # truncated toward zero, as int() does
    np.clip(v, _LOWEST_NS, _HIGHEST_NS, out=v)
    # bit_length of v | mask: frexp's exponent (exact: every value is below 2**53).
    b = np.frexp((v | h.sub_bucket_mask).astype(np.float64))[1] - h.unit_magnitude \
        - h.sub_bucket_half_count_magnitude - 1
    index = ((b + 1) << h.sub_bucket_half_count_magnitude) + (v >> (b + h.unit_magnitude)) \
        - h.sub_bucket_half_count
    counts = np.ctypeslib.as_array(h.counts)
    np.add(counts, np.bincount(index, minlength=len(counts)), out=counts, casting="unsafe")
    h.total_count += len(v)
    h.min_value = min(h.min_value, int(v.min()))
    h.max_value = max(h.max_value, int(v.max()))


def _count_windows(windows: dict[int, list[int]], idx: Any, failed: Any) -> None:
    """Add each final attempt to its window's [succeeded, failed] count."""
    keys, counts = _np.unique(idx * 2 + failed, return_counts=True)
    for key, count in zip(keys.tolist(), counts.tolist()):
        w = windows.get(key >> 1)
        if w is None:
            w = windows[key >> 1] = [0, 0]
        w[key & 1] += count


def _add_busy(busy: dict[int, dict[str, float]], threads: list[str], start: Any, end: Any,
              idx: Any, t0: float, window: float) -> None:
    """Each attempt's busy time to its thread, in the window(s) it spans."""
    np = _np
    s = np.maximum(start, t0)
    first = np.floor_divide(s - t0, window).astype(np.int64)
    names = {name: code for code, name in enumerate(set(threads))}
    codes = np.fromiter(map(names.__getitem__, threads), np.int64, count=len(threads))
    one = first == idx  # the common case: the attempt lies in one window
    keys, inverse = np.unique(first[one] * len(names) + codes[one], return_inverse=True)
    sums = np.bincount(inverse, weights=(end - s)[one])
    by_code = list(names)
    for key, sec in zip(keys.tolist(), sums.tolist()):
        i, code = divmod(key, len(names))
        bw = busy.setdefault(i, {})
        bw[by_code[code]] = bw.get(by_code[code], 0.0) + sec
    for k in np.flatnonzero(~one).tolist():  # spans across windows: rare, in Python
        a, e_all = float(s[k]), float(end[k])
        while a < e_all:
            i = int((a - t0) // window)
            e = min(e_all, t0 + (i + 1) * window)
            bw = busy.setdefault(i, {})
            bw[threads[k]] = bw.get(threads[k], 0.0) + (e - a)
            a = e if e > a else e_all


def _ns(seconds: float) -> int:
    """Seconds to the recorded unit, clamped to the histogram's range (the fold inlines this)."""
    v = int(seconds * 1e9)
    if v < _LOWEST_NS:
        return _LOWEST_NS
    if v > _HIGHEST_NS:
        return _HIGHEST_NS
    return v


def _summary(h: HdrHistogram) -> LatencySummary:
    """Percentiles, max, mean and log bins of ``h``, in one sparse pass.

    hdrh's own ``get_value_at_percentile``/``get_mean_value`` walk every bucket
    in Python (tens of thousands per call): far too slow for a 10 Hz dashboard.
    Here the counts array is copied at C speed, its non-empty buckets picked
    out, and the same definitions applied to those few: results are identical
    to hdrh's (the test suite compares them).
    """
    n = h.get_total_count()
    if not n:
        return LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0, ())
    counts = h.counts[:h.counts_len]  # a C-level copy to a list
    # Bucket arithmetic of HdrHistogram.get_value_from_index, inlined.
    shm = h.sub_bucket_half_count_magnitude
    half = h.sub_bucket_half_count
    unit = h.unit_magnitude
    targets = [(p, max(int(p * n / 100 + 0.5), 1)) for p in (50, 90, 99)]
    pct: dict[int, int] = {}
    bins: dict[int, int] = {}
    total = 0
    weighted = 0
    log10 = math.log10
    for i in [i for i, c in enumerate(counts) if c]:
        c = counts[i]
        bucket = (i >> shm) - 1
        sub = (i & (half - 1)) + half
        if bucket < 0:
            sub -= half
            bucket = 0
        low = sub << (bucket + unit)  # lowest equivalent value of this bucket
        size = 1 << (unit + bucket)  # width of its range of equivalent values
        total += c
        weighted += c * (low + (size >> 1))
        while targets and total >= targets[0][1]:
            pct[targets.pop(0)[0]] = low + size - 1  # highest equivalent value
        b = math.ceil(log10(max(low, 1)) * 4)
        bins[b] = bins.get(b, 0) + c
    histogram = tuple((10 ** (b / 4) / 1e9, c) for b, c in sorted(bins.items()))
    return LatencySummary(
        count=n, p50=pct[50] / 1e9, p90=pct[90] / 1e9, p99=pct[99] / 1e9,
        max=h.get_max_value() / 1e9, mean=weighted / n / 1e9, histogram=histogram,
    )
