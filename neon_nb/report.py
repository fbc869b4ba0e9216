"""A run report: one self-contained HTML file of a worker's run, to open or share without Python.

``write_report(worker, "run.html")`` (a running or stopped `NeonWorker`, or a
`MetricsSnapshot`) writes the counts, throughput over time, latency
percentiles per phase, utilisation per thread, the task stream, the failures
with their errors, the configuration, and the machine and library versions.
The plots are PNGs embedded as ``data:`` URIs and the styles are inline: the
file loads nothing else, and its Content-Security-Policy forbids the browser
to fetch anything at all. Failures and long texts are capped, so a report
stays well under 5 MB.

Needs matplotlib (``pip install 'neon_nb[notebook]'``, or just matplotlib);
``import neon_nb`` does not import this module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import importlib.metadata
import os
import pathlib
import platform
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._metrics import MetricsSnapshot
from ._worker import NeonWorker
from .plots import (
    format_seconds,
    plot_latency,
    plot_task_stream,
    plot_throughput,
    render_png,
    short_thread_name,
    task_stream_lanes,
)

__all__ = ["MAX_FAILURES", "report_html", "write_report"]

#: Failed tasks listed in full; the rest are counted.
MAX_FAILURES = 200
_MAX_TEXT = 600  # characters of one error or task id
_LIBRARIES = ("neon_nb", "hdrhistogram", "matplotlib", "numpy", "pandas", "ipywidgets", "ipykernel",
              "cloudpickle", "distributed")
# get_status() keys shown as counts, in order, with the words used everywhere else.
_COUNTS = (("submitted_tasks", "submitted"), ("backlog_tasks", "in the backlog (not yet queued)"),
           ("queued_tasks", "queued"), ("running_tasks", "running"),
           ("retry_waiting_tasks", "waiting to retry"), ("completed_tasks", "succeeded"),
           ("failed_tasks", "failed"), ("cancelled_tasks", "cancelled"), ("retried_tasks", "retried"))
_SNAPSHOT_COUNTS = (("submitted", "submitted"), ("queued", "queued"), ("running", "running"),
                    ("retry_wait", "waiting to retry"), ("succeeded", "succeeded"),
                    ("failed", "failed"), ("cancelled", "cancelled"), ("retried", "retried"))

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; max-width: 980px; margin: 24px auto;
       padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 3px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; text-align: left;
        border-bottom: 1px solid #eee; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.meta { color: #555; } .note { color: #666; font-size: 13px; }
.bar { display: inline-block; width: 160px; height: 10px; background: #e6e6e6; }
.bar span { display: block; height: 100%; background: #1f77b4; }
img { max-width: 100%; height: auto; } code, pre { font-size: 12px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
td { overflow-wrap: anywhere; } th:first-child, td:first-child { min-width: 8em; }
"""
# Nothing may be fetched: images are data: URIs, styles are inline.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass(frozen=True)
class _Facts:
    """Everything the report shows, read once from the worker (or the snapshot)."""

    name: str
    state: str
    counts: Sequence[tuple[str, int]]
    snapshot: MetricsSnapshot | None
    status: Mapping[str, Any] | None
    failures: Sequence[Any] | None          # TaskInfo of failed tasks, None from a snapshot
    config: Any
    backend: str | None                     # where the tasks ran, None from a snapshot
    shutdown: Any
    health: Any


def _from_worker(worker: NeonWorker) -> _Facts:
    status = worker.get_status()
    metrics = worker.metrics
    return _Facts(
        name=worker.name, state=status["state"],
        counts=[(label, status[key]) for key, label in _COUNTS if key in status],
        snapshot=None if metrics is None else metrics.snapshot(), status=status,
        failures=worker.tasks("failed"), config=worker.config, backend=worker.backend.name,
        shutdown=worker.shutdown_report,
        health=worker.health() if status["state"] in ("running", "paused") else None)


def _from_snapshot(snapshot: MetricsSnapshot) -> _Facts:
    counts = snapshot.counts
    return _Facts(name="(from a metrics snapshot)", state="unknown (a metrics snapshot)",
                  counts=[(label, counts.get(key, 0)) for key, label in _SNAPSHOT_COUNTS],
                  snapshot=snapshot, status=None, failures=None, config=None, backend=None,
                  shutdown=None,
                  health=None)


# ----------------------------------------------------------------------- pieces
def _e(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + f"... ({len(text) - _MAX_TEXT} more characters)"
    return html.escape(text)


def _img(figure: Any, alt: str) -> str:
    data = base64.b64encode(render_png(figure)).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    def cell(tag: str, i: int, v: Any) -> str:
        cls = ' class="num"' if i in numeric else ""
        return f"<{tag}{cls}>{v}</{tag}>"

    out = ["<table><tr>" + "".join(cell("th", i, html.escape(h)) for i, h in enumerate(head)) + "</tr>"]
    out += ["<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows]
    return "".join(out) + "</table>"


# --------------------------------------------------------------------- sections
def _counts_section(f: _Facts) -> str:
    rows = [(html.escape(label), n) for label, n in f.counts]
    notes = ["<b>retried</b> counts retries scheduled (one per retry); a task retried twice and "
             "then successful counts once as succeeded and twice as retried."]
    if f.status is not None:
        s = f.status
        notes.append(f"State <b>{_e(s['state'])}</b>, pool size {s['max_workers']} "
                     f"({s['threads']} threads alive), queue bound "
                     f"{s['queue_size'] or 'none (unbounded)'}, uptime {s['uptime_s']:.1f} s.")
    if f.shutdown is not None:
        # Its first line says what happened, the next ones which tasks failed: kept as lines.
        notes.append("Shutdown: " + "<br>".join(map(_e, str(f.shutdown).splitlines())))
    if f.health is not None and not f.health.healthy:
        notes.append(f"Health: not healthy ({len(f.health.stuck)} stuck tasks, "
                     f"{f.health.alive_threads} of {f.health.expected_threads} threads alive).")
    return ("<h2>Counts</h2>" + _table(("tasks", "count"), rows, numeric=(1,))
            + "".join(f'<p class="note">{n}</p>' for n in notes))


def _throughput_section(snap: MetricsSnapshot | None) -> str:
    text = ("Tasks finished per second (succeeded and failed for good, stacked), one step per "
            "metrics window.")
    if snap is not None:
        finished = sum(p.total for p in snap.throughput)
        span = snap.taken_at - snap.started_at
        if span > 0:
            text += (f" {finished} tasks finished in the {span:.1f} s since the metrics started: "
                     f"{finished / span:.1f} per second on average.")
    return (f"<h2>Throughput over time</h2><p class=note>{text}</p>"
            + _img(plot_throughput(snap), "throughput over time"))


def _latency_section(snap: MetricsSnapshot | None) -> str:
    head = "<h2>Latency per phase</h2>"
    if snap is None:
        return head + "<p>Metrics were disabled for this worker (<code>enable_metrics=False</code>).</p>"
    names = {"queue_wait": "queue wait (queued to started)", "run_time": "run time (started to ended)",
             "end_to_end": "end to end (submitted to ended)"}
    rows = [(html.escape(names.get(k, k)), s.count,
             *(format_seconds(v) for v in (s.p50, s.p90, s.p99, s.max, s.mean)))
            for k, s in snap.latency.items()]
    table = _table(("phase", "count", "p50", "p90", "p99", "max", "mean"), rows,
                   numeric=range(1, 7))
    note = ("<p class=note>Queue wait and run time count attempts (a retried task once per "
            "attempt); end to end counts finished tasks. From HdrHistogram at 3 significant "
            "digits.</p>")
    return head + table + note + _img(plot_latency(snap), "latency histograms with p50, p90, p99")


def _utilisation_section(snap: MetricsSnapshot | None) -> str:
    head = "<h2>Utilisation per thread</h2>"
    if snap is None or not snap.utilisation:
        return head + "<p>No utilisation measured (metrics disabled, or no thread ran a task).</p>"
    util = snap.utilisation
    rows = [(html.escape(short_thread_name(t)), f"{util[t]:.0%}",
             f'<span class="bar"><span style="width:{min(max(util[t], 0.0), 1.0) * 100:.0f}%"></span>'
             f"</span>") for t in task_stream_lanes((), util)]
    return (head + f"<p class=note>Share of the last {snap.utilisation_span:.1f} s each worker "
            f"thread spent running tasks.</p>" + _table(("thread", "busy", ""), rows, numeric=(1,)))


def _stream_section(snap: MetricsSnapshot | None) -> str:
    n = 0 if snap is None else len(snap.task_stream)
    return (f"<h2>Task stream</h2><p class=note>The last {n} attempts, one lane per worker thread, "
            f"coloured by outcome (green succeeded, red failed, orange failed and retried).</p>"
            + _img(plot_task_stream(snap), "task stream: attempts per worker thread over time"))


def _failures_section(f: _Facts) -> str:
    head = "<h2>Failures</h2>"
    if f.failures is None:
        ids = [] if f.snapshot is None else [s.task_id for s in f.snapshot.task_stream
                                             if s.outcome == "failed"]
        shown = ", ".join(_e(i) for i in ids[:MAX_FAILURES]) or "none in the task stream"
        return head + (f"<p>A metrics snapshot holds no errors (a report of the worker does). "
                       f"Failed attempts in the task stream: {shown}.</p>")
    if not f.failures:
        return head + "<p>No task failed for good.</p>"
    rows = [(_e(t.id), t.attempts, _e(short_thread_name(t.thread or "")), f"<pre>{_e(t.error or '')}</pre>")
            for t in f.failures[:MAX_FAILURES]]
    more = len(f.failures) - MAX_FAILURES
    tail = f"<p class=note>... and {more} more failed tasks.</p>" if more > 0 else ""
    note = (f"<p class=note>{len(f.failures)} tasks failed for good (retries exhausted, or an "
            f"exception not retried); the last error of each. Only the last "
            f"<code>history_size</code> finished tasks are kept by the worker.</p>")
    return head + note + _table(("task", "attempts", "thread", "error"), rows, numeric=(1,)) + tail


def _config_section(config: Any, backend: str | None) -> str:
    head = "<h2>Configuration</h2>"
    if config is None:
        return head + "<p>Not known from a metrics snapshot.</p>"
    rows = [("backend", _e(backend))]
    rows += [(f"<code>{f.name}</code>", _e(getattr(config, f.name))) for f in dataclasses.fields(config)]
    return head + _table(("setting", "value"), rows)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _machine_section() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    rows = [("system", _e(platform.platform())), ("machine", _e(platform.machine())),
            ("CPUs", f"{cpus} usable of {os.cpu_count()}"),
            ("Python", _e(f"{platform.python_implementation()} {sys.version.split()[0]}"
                          f"{' (free-threaded build)' if free_threaded else ''}"))]
    rows += [(html.escape(lib), html.escape(v)) for lib in _LIBRARIES
             if (v := _version(lib)) is not None]
    return "<h2>Machine and versions</h2>" + _table(("", ""), rows)


# ----------------------------------------------------------------------- public
def report_html(source: NeonWorker | MetricsSnapshot, *, title: str | None = None) -> str:
    """The report of ``source`` as one HTML document (a str); see `write_report`."""
    if isinstance(source, NeonWorker):
        facts = _from_worker(source)
    elif isinstance(source, MetricsSnapshot):
        facts = _from_snapshot(source)
    else:
        raise TypeError(f"source must be a neon_nb.NeonWorker or a neon_nb.MetricsSnapshot, got "
                        f"{type(source).__name__} {source!r}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {title!r}")
    heading = title if title is not None else f"neon_nb run report: worker {facts.name}"
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    body = "".join((
        f"<h1>{_e(heading)}</h1><p class=meta>Generated {when}; worker state "
        f"<b>{_e(facts.state)}</b>.</p>",
        _counts_section(facts), _throughput_section(facts.snapshot), _latency_section(facts.snapshot),
        _utilisation_section(facts.snapshot), _stream_section(facts.snapshot),
        _failures_section(facts), _config_section(facts.config, facts.backend), _machine_section(),
    ))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def write_report(source: NeonWorker | MetricsSnapshot, path: str | os.PathLike[str], *,
                 title: str | None = None) -> pathlib.Path:
    """Write the HTML report of ``source`` (a worker, running or stopped, or a snapshot) to ``path``.

    From a worker: counts and state, throughput over time, latency
    percentiles per phase (queue wait, run time, end to end), utilisation
    per thread, the task stream, the failed tasks with their last error
    (``worker.tasks("failed")``, the first `MAX_FAILURES`), the worker's
    configuration, the machine and the library versions. From a
    `MetricsSnapshot`: the same without state, errors or configuration,
    which a snapshot does not hold. A running worker is reported as it is at
    the call. Returns the path written (the folder must exist).

    Thread-safe: reads the worker through its thread-safe methods and draws
    its own figures on the Agg canvas, so any thread may call it.
    """
    target = pathlib.Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write the report to {str(target)!r}: the folder "
                                f"{str(target.parent)!r} does not exist")
    text = report_html(source, title=title)
    target.write_text(text, encoding="utf-8")
    return target
