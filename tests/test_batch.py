"""Batch (seeded, deterministic) and the task-kind registry: pure Python, in the core.

The BatchBuilder widget, which builds a `Batch` from a form, is tested in tests/widgets.
"""

from __future__ import annotations

import pytest

from neon_nb import (
    Batch,
    FlakyTaskError,
    NeonError,
    Task,
    TaskKind,
    get_task_kind,
    register_task_kind,
    task_kinds,
)
from neon_nb.batch import _Flaky, cpu_task, io_task

from .conftest import WAIT


def test_builtin_kinds():
    kinds = task_kinds()
    assert list(kinds)[:3] == ["io", "cpu", "flaky"]
    assert kinds["io"].fn is io_task and kinds["cpu"].fn is cpu_task
    assert kinds["flaky"].failure_probability > 0
    assert io_task(0.0) == 0.0
    assert cpu_task(0.0) >= 1


def test_same_seed_same_tasks():
    spec = dict(kind="flaky", count=50, duration=("uniform", 0.01, 0.05),
                priority=("classes", [0, 5, 10]), retries=2, failure_probability=0.4, seed=7)
    a, b = Batch(**spec, id_prefix="a-"), Batch(**spec, id_prefix="a-")
    assert a == b
    assert a.durations == b.durations and a.priorities == b.priorities
    assert a.planned_failures == b.planned_failures
    assert [t.id for t in a.tasks()] == [t.id for t in b.tasks()] == [f"a-{i}" for i in range(50)]
    assert a.tasks()[0].args == b.tasks()[0].args
    c = Batch(**{**spec, "seed": 8})
    assert c.durations != a.durations
    assert all(0.01 <= d <= 0.05 for d in a.durations)
    assert set(a.priorities) <= {0, 5, 10} and len(set(a.priorities)) == 3
    assert max(a.planned_failures) <= 3  # capped at retries + 1


@pytest.mark.parametrize(("duration", "check"), [
    (0.02, lambda ds: set(ds) == {0.02}),
    (("fixed", 0.03), lambda ds: set(ds) == {0.03}),
    (("uniform", 0.0, 0.1), lambda ds: all(0 <= d <= 0.1 for d in ds) and len(set(ds)) > 1),
    (("exponential", 0.05), lambda ds: all(d >= 0 for d in ds) and 0.02 < sum(ds) / len(ds) < 0.1),
])
def test_duration_distributions(duration, check):
    assert check(Batch(kind="io", count=200, duration=duration, seed=1).durations)


@pytest.mark.parametrize(("priority", "check"), [
    (5, lambda ps: set(ps) == {5}),
    (("fixed", -2), lambda ps: set(ps) == {-2}),
    (("random", 0, 3), lambda ps: set(ps) == {0, 1, 2, 3}),
    (("classes", [1, 9]), lambda ps: set(ps) == {1, 9}),
])
def test_priority_modes(priority, check):
    assert check(Batch(kind="io", count=200, priority=priority, seed=1).priorities)


@pytest.mark.parametrize("bad", [
    dict(kind="nope"), dict(count=-1), dict(count=1.5), dict(duration=("normal", 1)),
    dict(duration=("uniform", 0.2, 0.1)), dict(duration=-1.0), dict(priority=1.5),
    dict(priority=("random", 5, 1)), dict(priority=("classes", [])), dict(retries=-1),
    dict(failure_probability=1.5), dict(retry_delay=-1),
])
def test_bad_parameters_raise_clear_errors(bad):
    with pytest.raises(ValueError):
        Batch(**bad)


def test_flaky_wrapper_fails_the_planned_attempts():
    call = _Flaky(io_task, 2)
    for attempt in (1, 2):
        with pytest.raises(FlakyTaskError, match=f"attempt {attempt}") as ei:
            call(0.0)
        assert isinstance(ei.value, NeonError) and isinstance(ei.value, RuntimeError)
    assert call(0.0) == 0.0


def test_expected_outcomes_match_a_real_run(make_worker):
    worker = make_worker(max_workers=3, queue_size=0, retry_delay=0.0, log_level="CRITICAL")
    batch = Batch(kind="flaky", count=60, duration=0.0, retries=1, failure_probability=0.4,
                  retry_delay=0.0, seed=11)
    want = batch.expected()
    assert 0 < want["failed"] < 60 and want["retried"] > 0
    futures = batch.submit(worker)
    assert worker.wait_for_completion(WAIT)
    failed = sum(1 for f in futures if f.exception(0) is not None)
    status = worker.get_status()
    assert {"succeeded": 60 - failed, "failed": failed, "retried": status["retried_tasks"]} == want
    assert status["failed_tasks"] == want["failed"]


def test_register_a_user_task_kind():
    def double(x=21):
        return 2 * x

    kind = register_task_kind("test-double", double, description="doubles", takes_duration=False)
    try:
        assert isinstance(kind, TaskKind) and get_task_kind("test-double") is kind
        with pytest.raises(ValueError, match="already registered"):
            register_task_kind("test-double", double)
        task = Batch(kind="test-double", count=1, seed=0).tasks()[0]
        assert isinstance(task, Task) and task.args == () and task.function() == 42
    finally:
        register_task_kind("test-double", io_task, replace=True)
