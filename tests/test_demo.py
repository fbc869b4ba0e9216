"""`python -m neon_nb.demo`: the headless demo runs, and its summary adds up."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import threading

import pytest

from neon_nb import demo


class _ThreadRecordingStream(io.StringIO):
    """A stream that remembers which thread wrote each chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, s: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(s)


def _expected_failures(tasks: list, seed: int, fail_prob: float) -> int:
    """Flaky tasks whose own seeded coin fails all 3 attempts (1 try + 2 retries)."""
    failed = 0
    for i, t in enumerate(tasks):
        if isinstance(t.function, demo.Flaky):
            rng = random.Random(f"{seed}-{i}")
            if all(rng.random() < fail_prob for _ in range(3)):
                failed += 1
    return failed


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
    tasks, _ = demo.build_tasks(80, seed=11, fail_prob=0.5)
    r = demo.run_demo(tasks=80, workers=8, seed=11, fail_prob=0.5, cancel_share=0.0, progress=None)
    assert r.counts["cancelled"] == 0
    assert r.counts["failed"] == _expected_failures(tasks, 11, 0.5)
    assert r.outcomes["io"]["failed"] == r.outcomes["cpu"]["failed"] == 0


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
