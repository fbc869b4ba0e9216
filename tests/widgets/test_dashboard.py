"""Dashboard: one owner thread, bounded refreshes, silence when idle, live controls.

Clicks and slider moves are delivered the way a browser's comm message is
(``set_state``), on a separate thread, as ipykernel 7 does with subshells.
"""

from __future__ import annotations

import re
import threading
import time
import warnings

from matplotlib.collections import PolyCollection

import neon_nb.widgets._dashboard as dashboard_module
from neon_nb import EventKind, Task
from neon_nb.batch import Batch
from neon_nb.widgets import Dashboard
from neon_nb.widgets.view import widget_tree

from ..conftest import wait_until
from .helpers import WAIT, frontend_sets, on_thread, wait_for_trait


def _noop() -> None:
    return None


def _count(dash: Dashboard, state: str) -> int:
    m = re.search(rf'neon-count-{state}" data-count="(\d+)"', dash.counts.value)
    assert m, dash.counts.value
    return int(m.group(1))


def _event_waiter(worker, kind: EventKind, match=lambda e: True):
    """An Event set when the worker emits ``kind`` (a test subscription of its own)."""
    seen = threading.Event()

    def cb(batch):
        if any(e.kind is kind and match(e) for e in batch):
            seen.set()

    sub = worker.subscribe(cb, on="inline")
    return seen, sub


# ---------------------------------------------------------------------- owner
def test_updates_arrive_only_on_the_owner_thread(make_worker, dashboards, comms, monkeypatch):
    worker = make_worker(max_workers=2, queue_size=0, retry_delay=0.0, log_level="ERROR")
    drawn_on: list[str] = []
    for name in ("plot_throughput", "plot_latency", "plot_task_stream"):
        real = getattr(dashboard_module, name)

        def spy(*args, _real=real, **kwargs):
            drawn_on.append(threading.current_thread().name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(dashboard_module, name, spy)
    dash = dashboards(worker, plot_interval=0.0)
    owner = dash.subscription.name
    trait_threads: list[str] = []

    def record(change):
        trait_threads.append(threading.current_thread().name)

    widgets = widget_tree(dash.widget)
    for w in widgets:
        w.observe(record)
    mark = comms.mark()
    drawn_on.clear()

    Batch(kind="flaky", count=30, duration=0.001, priority=("classes", [0, 5]), retries=1,
          failure_probability=0.5, seed=3).submit(worker)
    Batch(kind="io", count=20, duration=0.002, seed=4).submit(worker)
    # Controls used from another thread while tasks run: worker calls only.
    on_thread(lambda: frontend_sets(dash.pause_button, value=True))
    on_thread(lambda: frontend_sets(dash.pause_button, value=False))
    on_thread(lambda: frontend_sets(dash.workers_slider, value=3))
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(WAIT)
    on_thread(lambda: dash.shutdown_button.click())
    assert wait_for_trait(dash.state, "value", lambda v: v == "stopped")
    assert dash.refresh(WAIT)

    for w in widgets:
        w.unobserve(record)
    updates = comms.updates_since(mark)
    assert updates, "the dashboard sent nothing"
    assert {m.thread for m in updates} == {owner}
    assert drawn_on and set(drawn_on) == {owner}
    # The frontend's own trait changes land on the "subshell" thread; all else on the owner.
    assert set(trait_threads) <= {owner, "subshell"}
    assert owner in trait_threads
    echoes = [m for m in comms.since(mark) if m.method == "echo_update"]
    assert {m.thread for m in echoes} <= {"subshell"}


def test_ipython_display_of_a_worker_shows_a_dashboard(make_worker, monkeypatch):
    import IPython.display
    from IPython.core.interactiveshell import InteractiveShell

    from neon_nb.widgets import _dashboard

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    worker = make_worker(max_workers=1)
    shell = InteractiveShell.instance()
    try:
        # Importing neon_nb.widgets in IPython registers the display of workers.
        assert _dashboard.register_worker_display()
        hook = shell.display_formatter.ipython_display_formatter.lookup(worker)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a shell, not a kernel: no front end
            hook(worker)
    finally:
        InteractiveShell.clear_instance()
    assert len(shown) == 1 and isinstance(shown[0], Dashboard)
    bundle = shown[0]._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == f"<neon_nb Dashboard of worker {worker.name!r}>"
    shown[0].close()


# ----------------------------------------------------------------- rate bound
def test_refresh_rate_is_bounded_under_a_flood(make_worker, dashboards, comms):
    worker = make_worker(max_workers=2, queue_size=0, log_level="ERROR")
    dash = dashboards(worker)
    n = 20_000
    mark = comms.mark()
    deliveries0 = dash.deliveries
    t0 = time.monotonic()
    worker.add_tasks([Task(i, _noop) for i in range(n)])
    assert worker.wait_for_completion(60)
    assert dash.refresh(WAIT)
    span = time.monotonic() - t0

    assert dash.progress.value == n and _count(dash, "succeeded") == n
    updates = comms.updates_since(mark)
    # Deliveries are coalesced to <= 10 per second (plus the refresh), whatever the task rate.
    deliveries = dash.deliveries - deliveries0
    assert deliveries <= 10 * span + 2, (deliveries, span)
    times = sorted(m.time for m in updates)
    for i, t in enumerate(times):  # any 1-second window
        in_window = sum(1 for u in times[i:] if u < t + 1.0)
        assert in_window <= 10 * 8, (in_window, "messages in one second")
    # A handful of messages per refresh: far below jupyter_server's 1,000 msgs/s.
    assert len(updates) <= 8 * (deliveries + 2), (len(updates), deliveries)


def test_an_idle_dashboard_sends_nothing(make_worker, dashboards, comms):
    worker = make_worker(max_workers=2, queue_size=0)
    dash = dashboards(worker)
    worker.add_tasks([Task(i, _noop) for i in range(50)])
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(WAIT)
    mark, deliveries = comms.mark(), dash.deliveries

    # An event that changes nothing shown: a delivery happens, and sends nothing.
    delivered = threading.Event()
    real = dash._on_events

    def spy(batch):
        real(batch)
        delivered.set()

    dash._on_events = spy
    worker.configure(retry_delay=worker.config.retry_delay + 1.0)  # shown nowhere
    assert delivered.wait(WAIT)
    assert dash.deliveries == deliveries + 1
    assert comms.since(mark) == []
    # And without events nothing runs at all: no timer, no polling. (An observation
    # window, not a synchronisation: nothing is expected to happen in it.)
    threading.Event().wait(0.5)
    assert dash.deliveries == deliveries + 1
    assert comms.since(mark) == []
    assert dash.refresh(WAIT) and comms.since(mark) == []


# ------------------------------------------------------------------- controls
def test_slider_resizes_the_live_pool(make_worker, dashboards):
    worker = make_worker(max_workers=2, queue_size=0)
    dash = dashboards(worker)
    assert dash.workers_slider.value == 2
    resized, sub = _event_waiter(worker, EventKind.WORKER_RESIZED, lambda e: e.detail[1] == 4)
    with sub:
        on_thread(lambda: frontend_sets(dash.workers_slider, value=4))
        assert resized.wait(WAIT)
    assert worker.get_status()["max_workers"] == 4
    # Four tasks that can only finish together prove four threads run at once.
    barrier = threading.Barrier(4, timeout=WAIT)
    futures = [worker.submit(barrier.wait) for _ in range(4)]
    assert all(f.exception(WAIT) is None for f in futures)
    assert worker.get_status()["threads"] == 4
    assert wait_for_trait(dash.pool_size, "value", lambda v: v == "pool size: 4")

    on_thread(lambda: frontend_sets(dash.workers_slider, value=1))
    assert wait_for_trait(dash.pool_size, "value", lambda v: v.startswith("pool size: 1"))
    assert worker.get_status()["max_workers"] == 1

    # A resize made in code moves the slider (on the owner thread).
    worker.resize(3)
    assert wait_for_trait(dash.workers_slider, "value", lambda v: v == 3)
    assert worker.get_status()["max_workers"] == 3


def test_pause_toggle_and_cancel_button(make_worker, dashboards):
    worker = make_worker(max_workers=1, queue_size=0)
    dash = dashboards(worker)
    on_thread(lambda: frontend_sets(dash.pause_button, value=True))
    assert worker.paused
    assert wait_for_trait(dash.pause_button, "description", lambda v: v == "Resume")
    futures = worker.map(lambda x: x, range(10))
    assert wait_for_trait(dash.counts, "value", lambda v: 'neon-count-queued" data-count="10"' in v)

    on_thread(lambda: dash.cancel_button.click())
    assert all(f.cancelled() for f in futures)
    assert wait_for_trait(dash.counts, "value", lambda v: 'neon-count-cancelled" data-count="10"' in v)

    worker.resume()  # in code: the toggle follows
    assert wait_for_trait(dash.pause_button, "value", lambda v: v is False)
    assert dash.pause_button.description == "Pause"


def test_shutdown_button_gives_a_final_view(make_worker, dashboards):
    worker = make_worker(max_workers=2, queue_size=0)
    dash = dashboards(worker)
    worker.map(lambda x: x, range(20))
    on_thread(lambda: dash.shutdown_button.click())
    assert wait_for_trait(dash.state, "value", lambda v: v == "stopped")
    assert dash.refresh(WAIT)
    assert dash.progress.value == 20 and dash.progress.bar_style == "success"
    assert _count(dash, "succeeded") == 20
    assert dash.workers_slider.disabled and dash.pause_button.disabled and dash.shutdown_button.disabled
    assert dash.cancel_button.disabled
    assert not dash.subscription.active


# -------------------------------------------------------------------- content
def test_a_failing_task_shows_in_counts_and_task_stream(make_worker, dashboards, monkeypatch):
    worker = make_worker(max_workers=2, queue_size=0, retry_attempts=0, log_level="CRITICAL")
    figures = []
    real = dashboard_module.plot_task_stream

    def keep(*args, **kwargs):
        fig = real(*args, **kwargs)
        figures.append(fig)
        return fig

    monkeypatch.setattr(dashboard_module, "plot_task_stream", keep)
    dash = dashboards(worker)

    def boom():
        raise ValueError("boom")

    bad = worker.submit(boom)
    ok = worker.submit(_noop)
    assert isinstance(bad.exception(WAIT), ValueError) and ok.exception(WAIT) is None
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(WAIT)
    assert _count(dash, "failed") == 1 and _count(dash, "succeeded") == 1
    assert dash.progress.bar_style == "warning"
    gids = {c.get_gid(): c for ax in figures[-1].axes for c in ax.collections
            if isinstance(c, PolyCollection)}
    assert len(gids["neon-stream-failed"].get_paths()) == 1
    assert len(gids["neon-stream-succeeded"].get_paths()) == 1
    assert bytes(dash.task_stream.value).startswith(b"\x89PNG")


def test_keeps_updating_while_the_main_thread_blocks(make_worker, dashboards, gate):
    # The last task waits for the dashboard to show the first five as finished, so
    # wait_for_completion() can only return if the dashboard updated while it blocked.
    worker = make_worker(max_workers=1, queue_size=0)
    dash = dashboards(worker)
    worker.map(lambda x: x, range(5), priority=1)
    last = worker.submit(gate.wait, WAIT)
    opener = threading.Thread(
        target=lambda: wait_for_trait(dash.progress, "value", lambda v: v >= 5) and gate.set(),
        name="opener")
    opener.start()
    assert worker.wait_for_completion(WAIT * 2)
    opener.join(WAIT)
    assert last.result(0) is True, "the dashboard did not update during the blocking wait"


def test_works_with_metrics_disabled(make_worker, dashboards):
    worker = make_worker(max_workers=2, queue_size=0, enable_metrics=False)
    assert worker.metrics is None
    dash = dashboards(worker)
    worker.map(lambda x: x, range(7))
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(WAIT)
    assert _count(dash, "succeeded") == 7 and dash.progress.value == 7
    assert "metrics off" in dash.utilisation.value
    assert bytes(dash.latency.value).startswith(b"\x89PNG")


def test_dashboard_of_a_stopped_worker(make_worker, dashboards, comms):
    worker = make_worker(max_workers=2, queue_size=0)
    worker.map(lambda x: x, range(5))
    worker.shutdown()
    dash = dashboards(worker)
    assert dash.subscription is None
    assert dash.state.value == "stopped" and _count(dash, "succeeded") == 5
    mark = comms.mark()
    assert dash.refresh(WAIT)
    assert comms.since(mark) == []


def test_close_is_idempotent_and_stops_updates(make_worker, comms):
    worker = make_worker(max_workers=1, queue_size=0)
    dash = Dashboard(worker)
    dash.close()
    dash.close()
    assert not dash.subscription.active
    mark = comms.mark()
    worker.map(lambda x: x, range(3))
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(WAIT)
    assert comms.updates_since(mark) == []


def test_refresh_returns_while_a_long_task_runs_and_nothing_else_happens(make_worker, dashboards,
                                                                          gate):
    # The owner thread runs only when events come; with one long task running and nothing
    # else happening none comes, and refresh() once waited its whole timeout in vain.
    worker = make_worker(max_workers=2)
    dash = dashboards(worker)
    started = threading.Event()
    worker.submit(lambda: (started.set(), gate.wait(WAIT)))
    worker.submit(sum, [1]).result(timeout=WAIT)
    assert started.wait(WAIT)
    # The owner has drawn every event and gone idle, its plots behind (the plot budget
    # holds them back while a task runs): nothing will bring it back by itself.
    assert wait_until(lambda: dash._drawn_status == tuple(
        worker.get_status()[k] for k in dashboard_module._STATUS_KEYS) and dash._plots_behind)
    assert dash.refresh(timeout=2.0) is True  # before: False, after the whole timeout
    status = worker.get_status()
    assert dash.progress_label.value == f"1 / {status['submitted_tasks']} finished"
    assert dash.plot_renders >= 1 and not dash._plots_behind


def test_tasks_resumed_from_a_journal_are_shown_as_their_own_kind(make_worker, dashboards,
                                                                   tmp_path):
    journal = tmp_path / "runs.db"
    earlier = make_worker(journal=journal)
    earlier.map(abs, range(-6, 0), id_prefix="r")  # r0..r5 are done in the journal
    earlier.shutdown()
    worker = make_worker(max_workers=2, journal=journal)
    dash = dashboards(worker)
    assert "neon-count-resumed" not in dash.counts.value  # none yet: no chip
    worker.map(abs, range(-10, 0), id_prefix="r")  # six resumed, four run
    assert worker.wait_for_completion(WAIT)
    assert dash.refresh(timeout=WAIT)
    assert _count(dash, "resumed") == 6 and _count(dash, "succeeded") == 10
    assert dash.progress_label.value == "10 / 10 finished (6 resumed)"
    assert dash.picture_text().endswith("0 retried, 6 resumed")


def test_a_background_batch_counts_towards_the_progress_before_it_is_queued(make_worker,
                                                                           dashboards):
    worker = make_worker(max_workers=2, queue_size=5)
    worker.pause()  # nothing runs: five tasks fill the queue, fifteen wait in the backlog
    dash = dashboards(worker)
    futures = worker.add_tasks([Task(f"b{i}", abs, (-i,)) for i in range(20)],
                               background=True)
    assert dash.refresh(timeout=WAIT)
    status = worker.get_status()
    assert (status["queued_tasks"], status["backlog_tasks"]) == (5, 15)
    assert _count(dash, "queued") == 5 and _count(dash, "backlog") == 15
    assert dash.progress_label.value == "0 / 20 finished (15 not yet queued)"
    assert dash.progress.max == 20
    assert dash.picture_text().endswith("0 retried, 15 in the backlog")
    worker.resume()
    assert [f.result(WAIT) for f in futures] == list(range(20))
    assert worker.wait_for_completion(WAIT) and dash.refresh(timeout=WAIT)
    assert "neon-count-backlog" not in dash.counts.value  # the backlog is gone: so is its chip
    assert dash.progress_label.value == "20 / 20 finished"
    assert dash.progress.bar_style == "success"
