"""`neon_nb.report`: one self-contained HTML file of a run (needs matplotlib, like the plots).

The report is parsed (stdlib ``html.parser``) and each section is checked against what the worker
itself says: counts against ``get_status()``, latency against the snapshot, failures against
``tasks("failed")``, settings against ``worker.config``. Self-containment is checked on the file:
every image a decodable ``data:`` PNG, no other URL anywhere, a policy forbidding fetches, < 5 MB.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import re
import subprocess
import sys
import threading
from html.parser import HTMLParser

import pytest
from PIL import Image

import neon_nb
from neon_nb import NeonWorker, Task
from neon_nb.plots import format_seconds
from neon_nb.report import MAX_FAILURES, report_html, write_report

from .helpers import WAIT

FIVE_MB = 5 * 1024 * 1024


class Parsed(HTMLParser):
    """Headings, tables (rows of cell texts), image sources, every URL-bearing attribute."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.meta: list[dict[str, str]] = []
        self._tag: list[str] = []
        self._cell: list[str] | None = None
        self._text = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._tag.append(tag)
        for key in ("src", "href", "action", "data", "poster"):
            if key in a:
                self.urls.append(a[key])
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "meta":
            self.meta.append(a)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._text = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2":
            self.h2.append(self._text.strip())
        if self._tag:
            self._tag.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        self._text += data


def section_tables(text: str) -> dict[str, list[list[list[str]]]]:
    """Tables grouped by the <h2> they follow."""
    out: dict[str, list] = {}
    for part in re.split(r"(?=<h2>)", text):
        m = re.match(r"<h2>([^<]*)</h2>", part)
        if m:
            out[html.unescape(m.group(1))] = Parsed(part).tables
    return out


def boom(i: int) -> None:
    raise ValueError(f"bad <input> & 'quotes' #{i}")


def flaky_then_ok(state: dict) -> str:
    state["n"] = state.get("n", 0) + 1
    if state["n"] == 1:
        raise RuntimeError("first attempt fails")
    return "ok"


@pytest.fixture
def finished_worker():
    w = NeonWorker(max_workers=3, queue_size=0, retry_delay=0.0, name="rep", log_level="CRITICAL").start()
    w.add_tasks([Task(f"ok-{i}", sum, ([i, 1],)) for i in range(40)]
                + [Task(f"<b>bad</b>-{i}", boom, (i,), retry_attempts=0) for i in range(3)]
                + [Task("again", flaky_then_ok, ({},), retry_attempts=1)])
    assert w.wait_for_completion(WAIT)
    w.shutdown()
    return w


def test_sections_agree_with_the_worker(finished_worker, tmp_path) -> None:
    w = finished_worker
    path = write_report(w, tmp_path / "run.html")
    text = path.read_text()
    parsed = Parsed(text)
    assert parsed.h2 == ["Counts", "Throughput over time", "Latency per phase", "Utilisation per thread",
                         "Task stream", "Failures", "Configuration", "Machine and versions"]
    tables = section_tables(text)
    status = w.get_status()
    counts = dict(tables["Counts"][0][1:])
    assert counts == {"submitted": "44", "in the backlog (not yet queued)": "0", "queued": "0",
                      "running": "0", "waiting to retry": "0", "succeeded": "41", "failed": "3",
                      "cancelled": "0", "retried": "1"}
    assert int(counts["succeeded"]) == status["completed_tasks"]
    snap = w.metrics.snapshot()
    latency = {row[0].split(" (")[0]: row[1:] for row in tables["Latency per phase"][0][1:]}
    assert set(latency) == {"queue wait", "run time", "end to end"}
    run = snap.latency["run_time"]
    assert latency["run time"] == [str(run.count), *(format_seconds(v) for v in
                                                     (run.p50, run.p90, run.p99, run.max, run.mean))]
    failures = tables["Failures"][0][1:]
    assert sorted(r[0] for r in failures) == sorted(f"<b>bad</b>-{i}" for i in range(3))
    assert all(r[1] == "1" and r[3].startswith("ValueError: bad <input> & 'quotes' #") for r in failures)
    assert "<b>bad</b>" not in text and "bad <input>" not in text  # escaped, not markup
    settings = dict(tables["Configuration"][0][1:])
    assert settings == {"backend": "threads", **{f.name: str(getattr(w.config, f.name))
                                                 for f in dataclasses.fields(w.config)}}
    assert w.backend.name == "threads"
    machine = dict(tables["Machine and versions"][0][1:])
    assert machine["neon_nb"] == neon_nb.__version__ and machine["Python"].endswith(sys.version.split()[0])
    threads = [r[0] for r in tables["Utilisation per thread"][0][1:]]
    assert threads == sorted(t.rsplit("-", 1)[1] for t in snap.utilisation) and threads
    assert "worker state <b>stopped</b>" in text and "clean shutdown" in text
    lines = str(w.shutdown_report).splitlines()  # what happened, then the failed tasks
    assert len(lines) >= 2 and lines[1].startswith("failed:")
    assert f"while running<br>{html.escape(lines[1])}" in text


def test_the_file_is_self_contained_and_small(finished_worker, tmp_path) -> None:
    path = write_report(finished_worker, tmp_path / "run.html")
    raw = path.read_bytes()
    assert len(raw) < FIVE_MB
    parsed = Parsed(raw.decode())
    assert len(parsed.images) == 3  # throughput, latency, task stream
    for src in parsed.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        assert im.format == "PNG" and im.width > 100
    assert all(u.startswith("data:") for u in parsed.urls), parsed.urls
    assert not re.search(rb"(?i)https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", raw)
    assert b"<script" not in raw.lower()
    csp = [m["content"] for m in parsed.meta if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")


def test_many_long_failures_stay_under_five_megabytes(tmp_path) -> None:
    def long_error(i: int) -> None:
        raise RuntimeError(f"{i}: " + "x" * 20_000)

    w = NeonWorker(max_workers=4, queue_size=0, log_level="CRITICAL").start()
    try:
        w.add_tasks([Task(f"task-{i}-" + "y" * 2000, long_error, (i,), retry_attempts=0)
                     for i in range(3000)])
        assert w.wait_for_completion(60)
        path = write_report(w, tmp_path / "big.html")
    finally:
        w.shutdown()
    text = path.read_text()
    assert path.stat().st_size < FIVE_MB
    failures = section_tables(text)["Failures"][0]
    assert len(failures) == 1 + MAX_FAILURES
    assert f"... and {3000 - MAX_FAILURES} more failed tasks." in text
    assert "more characters)" in failures[1][3]


def test_a_running_worker_is_reported_as_it_is(tmp_path) -> None:
    gate = threading.Event()
    started = threading.Barrier(3, timeout=WAIT)

    def hold() -> None:
        started.wait()
        gate.wait(WAIT)

    w = NeonWorker(max_workers=2, queue_size=0).start()
    try:
        w.add_tasks([Task(f"h{i}", hold) for i in range(5)])
        started.wait()
        text = report_html(w)
    finally:
        gate.set()
        w.shutdown()
    counts = dict(section_tables(text)["Counts"][0][1:])
    assert counts["running"] == "2" and counts["queued"] == "3" and counts["submitted"] == "5"
    assert "worker state <b>running</b>" in text


def test_a_snapshot_has_no_errors_or_settings_but_names_failed_attempts(finished_worker) -> None:
    text = report_html(finished_worker.metrics.snapshot(), title="From a snapshot")
    parsed = Parsed(text)
    assert "<h1>From a snapshot</h1>" in text and len(parsed.images) == 3
    assert "A metrics snapshot holds no errors" in text
    assert all(html.escape(f"<b>bad</b>-{i}") in text for i in range(3))
    assert "Not known from a metrics snapshot" in text
    counts = dict(section_tables(text)["Counts"][0][1:])
    assert counts["failed"] == "3" and counts["retried"] == "1"


def test_metrics_off_still_gives_a_whole_report() -> None:
    w = NeonWorker(max_workers=1, enable_metrics=False).start()
    try:
        w.submit(int).result(WAIT)
        text = report_html(w)
    finally:
        w.shutdown()
    # Throughput and task stream say "metrics disabled" in their plots; latency says it in words.
    assert "Metrics were disabled" in text and len(Parsed(text).images) == 2


def test_bad_input_is_named(finished_worker, tmp_path) -> None:
    with pytest.raises(TypeError, match=r"source must be a neon_nb\.NeonWorker or a neon_nb\."):
        write_report({"state": "running"}, tmp_path / "x.html")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"the folder .* does not exist"):
        write_report(finished_worker, tmp_path / "missing" / "x.html")
    with pytest.raises(TypeError, match="title must be a str"):
        report_html(finished_worker, title=3)  # type: ignore[arg-type]


def test_written_from_another_thread_without_pyplot(tmp_path) -> None:
    code = (
        "import sys, threading\n"
        "from neon_nb import NeonWorker\n"
        "from neon_nb.report import write_report\n"
        "w = NeonWorker(max_workers=2).start(); w.map(abs, range(20)); w.wait_for_completion()\n"
        f"t = threading.Thread(target=write_report, args=(w, {str(tmp_path / 'r.html')!r}))\n"
        "t.start(); t.join(); w.shutdown()\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
        "assert 'ipywidgets' not in sys.modules and 'IPython' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.html").stat().st_size > 10_000


def test_the_demo_writes_a_report_and_says_where(tmp_path) -> None:
    target = tmp_path / "demo.html"
    r = subprocess.run([sys.executable, "-m", "neon_nb.demo", "--tasks", "60", "--quiet", "--report",
                        str(target)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(f"Report written to {target} (open it in a browser)")
    text = target.read_text()
    assert target.stat().st_size < FIVE_MB and len(Parsed(text).images) == 3
    assert "<h1>neon_nb demo: 60 tasks on 8 threads (seed 42)</h1>" in text


def test_the_demo_checks_the_report_path_before_running(tmp_path) -> None:
    r = subprocess.run([sys.executable, "-m", "neon_nb.demo", "--report", str(tmp_path / "no" / "r.html")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "the folder" in r.stderr and "does not exist" in r.stderr
    assert "Counts per state" not in r.stdout  # nothing ran


def test_make_demo_writes_a_report_by_default() -> None:
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    r = subprocess.run(["make", "-n", "demo"], cwd=root, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "-m neon_nb.demo --report demo-report.html" in r.stdout
