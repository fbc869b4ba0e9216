"""The BatchBuilder widget: a form that builds the same `Batch` as the programmatic API.

`Batch` itself and the task kinds are tested in the core suite (tests/test_batch.py).
"""

from __future__ import annotations

import neon_nb
from neon_nb.widgets import Batch, BatchBuilder, get_task_kind

from .helpers import WAIT, on_thread, wait_for_trait


def test_the_widgets_module_still_exports_the_core_batch():
    assert Batch is neon_nb.Batch


def test_builder_form_makes_the_programmatic_batch(make_worker):
    builder = BatchBuilder(make_worker(max_workers=1))
    builder.kind.value = "flaky"
    assert builder.failure.value == get_task_kind("flaky").failure_probability
    builder.count.value = 12
    builder.dist.value = "uniform"
    builder.duration.value, builder.duration_high.value = 0.01, 0.02
    builder.priority_mode.value = "random"
    builder.priority.value = "0-10"
    builder.retries.value = 2
    builder.seed.value = "5"
    b = builder.batch()
    assert (b.kind, b.count, b.duration, b.priority, b.retries, b.seed) == \
        ("flaky", 12, ("uniform", 0.01, 0.02), ("random", 0, 10), 2, 5)
    builder.priority_mode.value = "classes"
    builder.priority.value = "0, 5, 10"
    assert builder.batch().priority == ("classes", [0, 5, 10])


def test_submit_button_adds_the_batch_while_the_worker_runs(make_worker, gate):
    worker = make_worker(max_workers=2, queue_size=5, log_level="CRITICAL")
    blocker = worker.submit(gate.wait, WAIT)  # the worker is busy
    builder = BatchBuilder(worker, kind="io", count=30)
    builder.duration.value = 0.0
    builder.seed.value = "1"
    on_thread(lambda: builder.submit_button.click())  # returns at once, queue or not
    assert wait_for_trait(builder.status, "value", lambda v: v.startswith("submitting")
                          or v.startswith("submitted"))
    gate.set()
    assert builder.wait_submitted(WAIT)
    assert wait_for_trait(builder.status, "value", lambda v: v.startswith("submitted 30 io"))
    assert worker.wait_for_completion(WAIT) and blocker.result(0) is True
    assert worker.get_status()["completed_tasks"] == 31
    assert len(builder.submitted) == 1


def test_builder_reports_bad_input_and_shutdown(make_worker):
    worker = make_worker(max_workers=1)
    builder = BatchBuilder(worker)
    builder.priority.value = "high"
    builder.submit_button.click()
    assert builder.status.value.startswith("not submitted: priority 'fixed' needs one integer")
    builder.priority.value = "1"
    worker.shutdown()
    builder.submit_button.click()
    assert builder.wait_submitted(WAIT)
    assert "WorkerShutdownError" in builder.status.value
    assert builder.submitted == []
