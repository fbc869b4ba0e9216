"""`python -m neon_nb.demo`: the headless demo runs, and its summary adds up."""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import pytest

from neon_nb import Batch, demo, task_kinds


class _ThreadRecordingStream(io.StringIO):
    """A stream that remembers which thread wrote each chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, s: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(s)


def test_counts_add_up_and_progress_comes_from_the_subscription():
    stream = _ThreadRecordingStream()
    r = demo.run_demo(tasks=60, workers=4, seed=3, progress=stream)
    counts = r.counts
    assert sum(counts.values()) == 60
    assert sum(r.mix.values()) == 60
    for kind, c in r.outcomes.items():
        assert sum(c.values()) == r.mix.get(kind, 0), kind
    st = r.status
    assert st["submitted_tasks"] == 60
    assert st["completed_tasks"] == counts["succeeded"]
    assert st["failed_tasks"] == counts["failed"]
    assert st["cancelled_tasks"] == counts["cancelled"]
    assert st["queued_tasks"] == st["running_tasks"] == st["retry_waiting_tasks"] == 0
    # Metrics agree with the worker's counters.
    assert r.snapshot.counts["succeeded"] == counts["succeeded"]
    assert r.snapshot.latency["end_to_end"].count == counts["succeeded"] + counts["failed"]
    assert r.report.clean and r.report.succeeded == counts["succeeded"]
    # Progress lines: at least the final one, all written by the delivery thread, never by a worker.
    assert r.progress_lines >= 1
    assert "60/60 done" in stream.getvalue().splitlines()[-1]
    assert stream.writers and not any("worker" in name for name in stream.writers), stream.writers
    # At most ~2 lines a second (plus the first and the last).
    assert r.progress_lines <= 2 * r.elapsed + 3


def test_failures_are_seeded():
    batches = demo.build_batches(80, seed=11, fail_prob=0.5)
    r = demo.run_demo(tasks=80, workers=8, seed=11, fail_prob=0.5, cancel_share=0.0, progress=None)
    assert r.counts["cancelled"] == 0
    # Planned when the batch is built: a flaky task fails if all 3 of its attempts are planned to.
    want = batches["flaky"].expected()
    assert 0 < want["failed"] < r.mix["flaky"]
    assert r.counts["failed"] == want["failed"]
    assert r.status["retried_tasks"] == want["retried"]
    assert r.outcomes["io"]["failed"] == r.outcomes["cpu"]["failed"] == 0


def test_the_mix_is_built_from_batch_and_the_registered_task_kinds():
    batches = demo.build_batches(100, seed=4, fail_prob=0.3)
    assert set(batches) == {"io", "cpu", "flaky"}
    assert all(isinstance(b, Batch) and b.task_kind is task_kinds()[k] for k, b in batches.items())
    tasks, kind_of = demo.build_tasks(100, seed=4, fail_prob=0.3)
    assert len(tasks) == 100 and sorted(kind_of) == sorted(str(t.id) for t in tasks)
    functions = {kind_of[str(t.id)]: set() for t in tasks}
    for t in tasks:
        fn = t.function
        functions[kind_of[str(t.id)]].add(getattr(fn, "fn", fn))  # a flaky attempt wraps its kind's fn
    assert functions == {k: {task_kinds()[k].fn} for k in ("io", "cpu", "flaky")}
    # The kinds are interleaved, not queued one kind after another.
    assert len({kind_of[str(t.id)] for t in tasks[:20]}) == 3


def test_same_seed_same_outcomes():
    runs = [demo.run_demo(tasks=120, workers=4, seed=9, progress=None) for _ in range(2)]
    assert runs[0].outcomes == runs[1].outcomes
    assert runs[0].cancelled_on_purpose == runs[0].counts["cancelled"] == round(0.02 * 120)


def test_summary_text(capsys):
    assert demo.main(["--tasks", "30", "--workers", "3", "--seed", "5", "--quiet"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err == ""  # --quiet: no progress lines
    for heading in ("Counts per state", "Latency (ms)", "queue_wait", "run_time", "end_to_end",
                    "Median queue wait by priority", "Utilisation per thread", "Shutdown: clean"):
        assert heading in out, heading
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[-1] == "30"
    assert "throughput" in out


def test_summary_explains_every_count_that_differs():
    r = demo.run_demo(tasks=200, workers=4, seed=42, progress=None)
    text = " ".join(demo.format_summary(r).split())  # unwrapped
    cancelled = r.counts["cancelled"]
    assert cancelled == r.cancelled_on_purpose == 4
    # The table's cancellations are explained...
    assert (f"cancelled: {cancelled} low-priority tasks that the demo cancelled on purpose while they "
            f"were still queued") in text
    # ...and the shutdown line counts the same, saying which were the shutdown's own.
    assert f"{cancelled} cancelled ({len(r.report.cancelled)} by the shutdown), 0 abandoned" in text
    # Latency counts are attempts: the numbers add up and say so.
    attempts = r.snapshot.latency["run_time"].count
    retries = r.status["retried_tasks"]
    ran = r.counts["succeeded"] + r.counts["failed"]
    assert attempts == ran + retries
    assert f"count attempts: {attempts} = {ran} tasks that ran + {retries} retries" in text
    assert r.snapshot.latency["end_to_end"].count == ran


def test_bad_arguments():
    with pytest.raises(SystemExit):
        demo.main(["--tasks", "0"])
    with pytest.raises(SystemExit):
        demo.main(["--fail-prob", "2"])
    with pytest.raises(ValueError, match="workers"):
        demo.run_demo(tasks=5, workers=0, progress=None)


def test_module_runs_as_a_script_without_jupyter():
    code = "\n".join([
        "import runpy, sys",
        "sys.argv = ['demo', '--tasks', '12', '--workers', '2']",
        "try:",
        "    runpy.run_module('neon_nb.demo', run_name='__main__')",
        "except SystemExit as exc:",
        "    assert exc.code == 0, exc.code",
        "bad = [m for m in ('ipywidgets', 'IPython', 'matplotlib') if m in sys.modules]",
        "assert not bad, bad",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "Counts per state" in out.stdout
    assert "12/12 done" in out.stderr
