"""The benchmark code runs and returns well-formed results (tiny N: checks structure, not speed),
and the paired method's arithmetic is right on known inputs."""

from __future__ import annotations

import math
import statistics

import pytest

from benchmarks import Target, bench_core, bench_journal, bench_scale
from benchmarks.__main__ import _as_targets, _run_optional, main
from benchmarks._report import (
    Spread,
    alternating_orders,
    interleave,
    paired_ratios,
    ratio_target,
    spread,
    table,
)


# ============================================================== the method
def test_orders_alternate_abc_cba():
    assert alternating_orders(["a", "b", "c"], 4) == [
        ["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"], ["c", "b", "a"]]
    assert alternating_orders(["a"], 2) == [["a"], ["a"]]
    with pytest.raises(ValueError, match="reps"):
        alternating_orders(["a", "b"], 0)


def test_interleave_runs_in_alternating_order_after_one_warmup_round():
    calls: list[str] = []
    counter = {"a": 0, "b": 0}

    def variant(name: str):
        def call() -> int:
            calls.append(name)
            counter[name] += 1
            return counter[name]
        return call

    got = interleave({"a": variant("a"), "b": variant("b")}, 3, warmup=True)
    # The warm-up round (a, b) is called but not kept: results start at each variant's 2nd call.
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert got == {"a": [2, 3, 4], "b": [2, 3, 4]}
    seen: list[tuple[int, list[str]]] = []
    interleave({"x": lambda: 0, "y": lambda: 1}, 2, on_rep=lambda r, order: seen.append((r, order)))
    assert seen == [(0, ["x", "y"]), (1, ["y", "x"])]
    with pytest.raises(ValueError, match="variant"):
        interleave({}, 1)


def test_paired_ratios_take_the_median_of_per_repetition_ratios():
    # The load changes from one repetition to the next (both variants slow down alike), and
    # repetition 3 is disturbed for one variant only: the paired median stays at the typical
    # ratio, 2.0, where the ratio of the medians (30 / 10) says 3.0.
    a = [20.0, 10.0, 40.0, 30.0, 60.0]
    b = [10.0, 5.0, 10.0, 15.0, 30.0]
    r = paired_ratios(a, b)
    assert r.values == (2.0, 2.0, 4.0, 2.0, 2.0)
    assert (r.median, r.lo, r.hi) == (2.0, 2.0, 4.0)
    assert r.median != pytest.approx(30.0 / 10.0)  # what a ratio of medians would give
    even = paired_ratios([3.0, 1.0, 8.0, 5.0], [1.0, 1.0, 2.0, 1.0])  # ratios 3, 1, 4, 5
    assert (even.median, even.lo, even.hi) == (3.5, 1.0, 5.0)
    with pytest.raises(ValueError, match="one of each"):
        paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        spread([])


def test_spread_formats_median_then_min_max():
    s = paired_ratios([2.0, 3.0, 2.5], [1.0, 1.0, 1.0])
    assert s.fmt() == "2.50x [2.00, 3.00]"
    assert s.each() == "2.00x, 3.00x, 2.50x"  # repetition order
    assert spread([0.954]).fmt("%", 0, 100) == "95%"  # one value: no range
    extra = s.map(lambda ratio: (ratio - 1) * 100)
    assert isinstance(extra, Spread) and extra.values == (100.0, 200.0, 150.0)
    assert extra.fmt("%", 1, sign=True) == "+150.0% [+100.0, +200.0]"


def test_ratio_target_judges_median_or_every_run():
    s = spread([1.6, 1.9, 2.0])
    assert ratio_target("t", s, 1.7).passed  # median 1.9
    every = ratio_target("t", s, 1.7, judge="min")
    assert not every.passed and every.measured.startswith("1.60x min (median 1.90x")
    assert every.goal == ">= 1.7x, every run"
    at_most = ratio_target("m", spread([0.9, 1.1, 1.05]), 1.0, at_least=False)
    assert not at_most.passed and at_most.goal == "<= 1.0x"
    assert ratio_target("m", spread([0.9, 1.1, 1.05]), 1.2, at_least=False, judge="max").passed


# ============================================================== the suites
def test_throughput_structure():
    results = bench_core.throughput(n=300, reps=2, workers=2, batch=100, idle_n=20, warmup=False)
    assert [r.mode.split(" (")[0] for r in results] == list(bench_core.MODES)
    by_mode = {r.mode.split(" (")[0]: r for r in results}
    tpe = by_mode[bench_core.MODE_TPE]
    for r in results:
        assert r.tasks == 300 and r.reps == 2
        assert all(x > 0 and math.isfinite(x) for x in r.rates)
        assert r.vs_tpe.values == pytest.approx([a / b for a, b in zip(r.rates, tpe.rates)])
        assert 0 <= r.flood_p50_us <= r.flood_p99_us
        assert r.lost_futures >= 0  # > 0 only through a core bug, reported by the bench
    assert tpe.vs_tpe.values == (1.0, 1.0)
    assert by_mode[bench_core.MODE_BATCH].idle_p50_us is None
    for mode in bench_core.IDLE_MODES:
        p50, p99, vs = by_mode[mode].idle_p50_us, by_mode[mode].idle_p99_us, by_mode[mode].idle_vs_tpe
        assert p50 is not None and p99 is not None and vs is not None
        assert len(p50.values) == 2 and 0 < p50.lo and p50.median <= p99
    tpe_idle = tpe.idle_vs_tpe
    assert tpe_idle is not None and tpe_idle.values == (1.0, 1.0)


def test_io_efficiency_structure():
    results = bench_core.io_efficiency(tasks=40, duration=0.001, worker_counts=(4, 8), reps=2)
    assert {(r.mode, r.workers) for r in results} == {
        (m, w) for m in bench_core.IO_MODES for w in (4, 8)}
    for r in results:
        assert r.ideal == pytest.approx(40 * 0.001 / r.workers)
        assert len(r.elapsed) == 2
        # Sleeping can't beat the ideal by more than the clock's slack.
        assert 0 < r.share.lo <= r.share.hi <= 1.2
        tpe = next(t for t in results if t.mode == bench_core.MODE_TPE and t.workers == r.workers)
        if r.mode == bench_core.MODE_TPE:
            assert r.vs_tpe is None
        else:  # the paired ratio of the shares of ideal
            assert r.vs_tpe is not None
            assert r.vs_tpe.values == pytest.approx([s / t for s, t in zip(r.share.values,
                                                                           tpe.share.values)])


def test_metrics_overhead_structure():
    r = bench_core.metrics_overhead(n=300, reps=2, workers=2, batch=100, warmup=False)
    assert len(r.rates_off) == len(r.rates_on) == 2
    assert r.ratio.values == pytest.approx([a / b for a, b in zip(r.rates_on, r.rates_off)])
    # submitted + started + succeeded per task, and nothing is lost without being counted.
    assert r.delivered + r.dropped >= 3 * 300 * 2


def test_scale_drain_and_memory_per_queued_task_at_tiny_n():
    res = bench_scale.queued(big=2_000, small=200, small_reps=2, reps=2, timeout=120)
    assert set(res.runs) == set(bench_scale.VARIANTS)
    for variant, runs in res.runs.items():
        assert len(runs) == 2
        for run in runs:
            assert run.variant == variant and (run.big, run.small) == (2_000, 200)
            assert run.completed == 2_000  # every queued task ran, none was lost
            assert len(run.small_rates) == len(run.small_cpu_us) == 2
            assert run.rate > 0 and run.cpu_us > 0 and run.fill_s > 0
            assert run.flat == pytest.approx(run.rate / statistics.median(run.small_rates))
            assert math.isfinite(run.bytes_per_task) and run.rss_queued_mb > 0
    neon, tpe = res.runs[bench_scale.NEON], res.runs[bench_scale.TPE]
    assert res.rate_vs_tpe.values == pytest.approx([n.rate / t.rate for n, t in zip(neon, tpe)])
    assert res.flat_vs_tpe.values == pytest.approx([n.flat / t.flat for n, t in zip(neon, tpe)])


def test_memory_growth_runs_in_a_subprocess():
    r = bench_scale.memory_growth(n=2_000, batch=500, queue_size=1_000, timeout=120)
    assert r.tasks == 2_000
    assert r.rss_before_mb > 0 and r.rss_peak_mb >= r.rss_after_mb
    assert r.status["completed_tasks"] == 2_000 + 500  # the tasks and the warm-up batch
    assert math.isfinite(r.growth_mb)


def test_scale_mode_runs_the_scale_suite_alone(capsys):
    assert main(["--scale", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "[scale]" in out and "[core]" not in out and "[dashboard]" not in out
    targets = out.split("Targets")[-1]
    for name in ("drain rate,", "own rate at", "memory per queued no-op task", "RSS growth"):
        assert name in targets
    assert "load average at the end" in out


def test_missing_suite_is_reported_not_fatal(capsys):
    assert _run_optional("no_such_suite", quick=True) == []
    assert "no_such_suite: not available" in capsys.readouterr().out


def test_main_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--only", "nothing"])
    with pytest.raises(SystemExit):
        main(["--reps", "0"])
    with pytest.raises(SystemExit):
        main(["--scale", "--only", "core"])


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
