"""The benchmark code runs and returns well-formed results (tiny N: checks structure, not speed)."""

from __future__ import annotations

import math

import pytest

from benchmarks import Target, bench_core, bench_journal
from benchmarks.__main__ import _as_targets, _run_optional, main
from benchmarks._report import table


def test_throughput_structure():
    results = bench_core.throughput(n=300, reps=1, workers=2, batch=100, idle_n=20)
    assert [r.mode.split(" (")[0] for r in results] == list(bench_core.MODES)
    for r in results:
        assert r.tasks == 300 and r.reps == 1 and len(r.rates) == 1
        assert r.rate > 0 and math.isfinite(r.rate)
        assert 0 <= r.flood_p50_us <= r.flood_p99_us
        assert r.lost_futures >= 0  # > 0 only through a core bug, reported by the bench
    by_mode = {r.mode.split(" (")[0]: r for r in results}
    assert by_mode[bench_core.MODE_BATCH].idle_p50_us is None
    for mode in (bench_core.MODE_TASK, bench_core.MODE_TPE):
        p50, p99 = by_mode[mode].idle_p50_us, by_mode[mode].idle_p99_us
        assert p50 is not None and p99 is not None and 0 < p50 <= p99


def test_io_efficiency_structure():
    results = bench_core.io_efficiency(tasks=40, duration=0.001, worker_counts=(4, 8), reps=1)
    assert {(r.mode, r.workers) for r in results} == {
        (m, w) for m in bench_core.IO_MODES for w in (4, 8)}
    for r in results:
        assert r.ideal == pytest.approx(40 * 0.001 / r.workers)
        # Sleeping can't beat the ideal by more than the clock's slack.
        assert 0 < r.efficiency <= 1.2


def test_metrics_overhead_structure():
    r = bench_core.metrics_overhead(n=300, reps=1, workers=2, batch=100)
    assert r.rate_off > 0 and r.rate_on > 0
    assert r.ratio == pytest.approx(r.rate_on / r.rate_off)
    # submitted + started + succeeded per task, and nothing is lost without being counted.
    assert r.delivered + r.dropped >= 3 * 300


def test_memory_growth_runs_in_a_subprocess():
    r = bench_core.memory_growth(n=2_000, batch=500, queue_size=1_000, timeout=120)
    assert r.tasks == 2_000
    assert r.rss_before_mb > 0 and r.rss_peak_mb >= r.rss_after_mb
    assert r.status["completed_tasks"] == 2_000 + 500  # the tasks and the warm-up batch
    assert math.isfinite(r.growth_mb)


def test_missing_suite_is_reported_not_fatal(capsys):
    assert _run_optional("no_such_suite", quick=True) == []
    assert "no_such_suite: not available" in capsys.readouterr().out


def test_main_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--only", "nothing"])
    with pytest.raises(SystemExit):
        main(["--reps", "0"])


def test_targets_and_table_helpers():
    got = _as_targets([Target("a", "1", ">= 1", True), ("b", "2x", ">= 3x", False), "junk"])
    assert got == [Target("a", "1", ">= 1", True), Target("b", "2x", ">= 3x", False)]
    assert _as_targets(None) == []
    text = table(["name", "value"], [["x", 1234.5], ["yy", None]])
    lines = text.splitlines()
    assert lines[0].startswith("name") and "1,234" in lines[2] and lines[3].rstrip().endswith("-")


def test_journal_benchmark_structure(tmp_path):
    rows = bench_journal.throughput(tmp_path, n=64, sizes=(1, 16), synchronous=("normal",), reps=1)
    assert [(r.label, r.synchronous) for r in rows] == [("1 per call", "normal"),
                                                       ("16 per call", "normal")]
    assert all(r.rate > 0 and 1 <= r.per_transaction <= 64 for r in rows)
    (cost,) = bench_journal.caller_cost(tmp_path, n=32, sizes=(4,), reps=1)
    assert cost.call_size == 4 and 0 < cost.write_us < cost.build_us
    (many,) = bench_journal.threads(tmp_path, n_threads=3, per_thread=10, synchronous=("full",), reps=1)
    assert many.entries == 30 and many.rate > 0
    (pace,) = bench_journal.paced(tmp_path, n_threads=2, per_thread=5, task=0.001,
                                  synchronous=("normal",), reps=1)
    assert pace.synchronous == "normal" and pace.rate > 0 and pace.writer_us > 0
    lat = bench_journal.latency(tmp_path, n=3, synchronous=("normal",), delays=(0.0,), gaps=(0.0,))
    assert len(lat) == 1 and 0 < lat[0].p50_ms <= lat[0].p99_ms
    level = bench_journal.worker_level(tmp_path, (("io", 3, 12, 0.001), ("no-op", 2, 20, None)),
                                       reps=2)
    assert [(x.workload, x.threads, x.tasks) for x in level] == [("io", 3, 12), ("no-op", 2, 20)]
    assert all(x.off > 0 and x.on > 0 and x.ratio == x.on / x.off for x in level)


def test_journal_benchmark_run_returns_its_three_targets():
    lines: list[str] = []
    targets = bench_journal.run(lines.append, quick=True)
    assert [t.name.split(",")[0] for t in targets] == ["journal on / off", "journal", "journal"]
    assert any("worker level" in line for line in lines)
    assert any(row.startswith("no-op") for line in lines for row in line.splitlines())
