"""notebooks/A1_live_dashboard.ipynb in JupyterLab and in Notebook 7, in Debian's headless Chromium.

The test runs all cells of a *temporary copy* of the notebook, served by an isolated JupyterLab:

* outputs and saved widget state are cleared in the copy, so every dashboard on the page comes from
  this run (the committed notebook carries a finished dashboard and PNGs from its last execution);
* a clearly marked section is appended to the copy: a second worker ("probe") with its dashboard,
  kept running through a ``time.sleep(3)`` cell and left alive at the end. The notebook shuts its
  own worker down in its last steps (its slider is then disabled, rightly), so the slider is moved
  on the probe's dashboard, with the kernel idle.

The checks (``dashboard_checks.py``) read the DOM only, except the last: the notebook is saved and
the file must hold the dashboard's final static picture (what GitHub or nbviewer would show). The
negative control runs the very same checks with the ipywidgets extension blocked, and passes only if
the widget checks fail; there, the static picture must be shown instead, in its final state.

Every test runs in both front ends: JupyterLab (``lab``) and Jupyter Notebook 7 (``notebook``).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from typing import Any

import nbformat
import pytest

from . import dashboard_checks as dc
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NOTEBOOK = "A1_live_dashboard.ipynb"
# The notebook's own table ("What the run shows"), from its seeded batches; its last cell prints
# the same numbers next to Batch.expected().
EXPECTED = {"submitted": 300, "succeeded": 293, "failed": 7, "cancelled": 0, "retried": 14}
# The same, as the dashboard's static picture says it (its text/plain and PNG Description).
FINAL_PICTURE = ("neon_nb dashboard of worker 'demo': stopped; 300 submitted, 293 succeeded, 7 failed, "
                 "0 cancelled, 14 retried")
FRONTENDS = ["lab", "notebook"]
NOTEBOOK_DASHBOARD = 0  # document order: the notebook's dashboard comes first ...
PROBE_DASHBOARD = 1  # ... the probe's (appended by this test) second

PROBE_TASKS = 60
PROBE_MARK = "# Added by tests/browser/test_dashboard_e2e.py to a temporary copy (not in the notebook)."
PROBE_CELLS = [
    # Code cells appended to the temporary copy (never to the committed notebook).
    f"""{PROBE_MARK}
# A second worker ('probe') whose dashboard stays live after the notebook shut its worker down.
import time

from neon_nb import NeonWorker
from neon_nb.widgets import Batch, Dashboard

probe = NeonWorker(max_workers=2, queue_size=0, name="browser-probe")
probe.start()
probe_dashboard = Dashboard(probe)
probe_dashboard""",
    f"""{PROBE_MARK}
# About 4.5 s of IO-bound work on 2 threads, queued at once.
probe_futures = Batch(kind="io", count={PROBE_TASKS}, duration=("fixed", 0.15), seed=0).submit(probe)""",
    f"""{PROBE_MARK}
# The kernel is busy: the probe's dashboard must keep moving.
time.sleep(3)""",
    f"""{PROBE_MARK}
# Wait for the probe's tasks; the probe stays alive for the slider.
assert probe.wait_for_completion(timeout=60)
assert probe_dashboard.refresh(timeout=30)
print("probe finished:", probe.get_status()["completed_tasks"])""",
]


def prepare_copy(lab: Any) -> tuple[str, dict[str, int]]:
    """Write the copy to the served folder; return its name and the code-cell indexes we need."""
    source = lab.server.root_dir / NOTEBOOK
    if not source.is_file():
        pytest.fail(f"notebooks/{NOTEBOOK} is missing: the browser test has nothing to run", pytrace=False)
    nb = nbformat.read(str(source), as_version=4)
    nb.metadata.pop("widgets", None)  # saved widget state would render an old dashboard
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    code = [c for c in nb.cells if c.cell_type == "code"]
    sleeps = [i for i, c in enumerate(code) if re.search(r"^\s*time\.sleep\(", c.source, re.M)]
    assert sleeps, f"{NOTEBOOK} has no cell that runs time.sleep(...) while its tasks run"
    nb.cells.append(
        nbformat.v4.new_markdown_cell(
            "## Added by tests/browser (temporary copy only)\n\nNot part of the committed notebook."
        )
    )
    nb.cells.extend(nbformat.v4.new_code_cell(src) for src in PROBE_CELLS)
    cells = {
        "notebook_sleep": sleeps[0],
        "probe_sleep": len(code) + 2,  # code cells appended: probe, submit, sleep, wait
    }
    name = f"{NOTEBOOK.removesuffix('.ipynb')}-browser-{secrets.token_hex(3)}.ipynb"
    nbformat.write(nb, str(lab.server.root_dir / name))
    return name, cells


def run_dashboard_checks(lab: Any, *, screenshot: str | None = None, widgets: bool = True) -> dict[str, Any]:
    """Open a fresh copy of the notebook, run all cells, and check the dashboards in the DOM.

    Returns ``{"results": {check: ("passed", value) | ("failed", reason)}, ...}``. `failures` turns
    it into an AssertionError; the negative control uses exactly this function.
    """
    name, cells = prepare_copy(lab)
    lab.open_notebook(name)
    started = time.monotonic()
    lab.run_all()
    run = dc.DashboardRun().observe(lab, timeout=150)
    results: dict[str, tuple[str, Any]] = {}

    def check(label: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            results[label] = ("passed", fn(*args, **kwargs))
        except AssertionError as exc:
            results[label] = ("failed", str(exc))

    nbd, probe = NOTEBOOK_DASHBOARD, PROBE_DASHBOARD
    check("notebook ran", dc.check_notebook_ran, run)
    check("dashboard rendered", dc.check_dashboard_rendered, run, nbd)
    check("progress reaches 100%", dc.check_progress_reaches_100, run, nbd)
    check("counts", dc.check_final_counts, lab, EXPECTED, nbd)
    check("plots change while tasks run", dc.check_plots_live, run, nbd)
    check("updates during the notebook's time.sleep", dc.check_updates_during_cell, run,
          cells["notebook_sleep"], nbd)  # fmt: skip
    check("probe dashboard rendered", dc.check_dashboard_rendered, run, probe)
    check("probe plots change while tasks run", dc.check_plots_live, run, probe)
    check("probe updates during time.sleep(3)", dc.check_updates_during_cell, run,
          cells["probe_sleep"], probe, 1.5)  # fmt: skip
    check("probe counts", dc.check_final_counts, lab, {"succeeded": PROBE_TASKS, "failed": 0}, probe)
    check("slider resizes the pool", dc.check_slider_resizes_pool, lab, probe)
    check("no error outputs", dc.check_no_errors, lab)
    # Without widgets the picture stands in for the live view; with them, the live view hides it.
    check("static picture", dc.check_picture, lab, "demo", FINAL_PICTURE, shown=not widgets)
    check("saved picture", dc.check_saved_picture, lab, name, "demo", FINAL_PICTURE)
    facts: dict[str, Any] = {
        "results": results,
        "run": run,
        "run_seconds": round(time.monotonic() - started, 1),
    }
    if screenshot:
        facts["screenshot"] = lab.screenshot(screenshot)  # the page, as the slider check left it
        dashboards = lab.page.locator(".neon-dashboard")
        if dashboards.count():  # the notebook's own dashboard, in its final state
            facts["screenshot_dashboard"] = lab.screenshot(f"{screenshot}-notebook", dashboards.first)
        pictures = lab.page.locator(".jp-OutputArea-output img")
        if not widgets and pictures.count():  # the static picture, where it stands in
            facts["screenshot_picture"] = lab.screenshot(f"{screenshot}-picture", pictures.first)
    return facts


def failures(facts: dict[str, Any], only: tuple[str, ...] | None = None) -> list[str]:
    return [
        f"{label}: {value}"
        for label, (outcome, value) in facts["results"].items()
        if outcome == "failed" and (only is None or label in only)
    ]


def require(facts: dict[str, Any], *labels: str) -> list[Any]:
    """Assert that the named checks passed; return their values."""
    failed = failures(facts, labels)
    assert not failed, "\n".join(failed)
    return [facts["results"][label][1] for label in labels]


# --------------------------------------------------------------------------------------------------
# The notebook, run once for the positive tests
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=FRONTENDS)
def dashboard_run(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    frontend = request.param
    opener = request.getfixturevalue("open_lab" if frontend == "lab" else "open_nb7")
    with opener(f"live-dashboard-{frontend}") as lab:
        facts = run_dashboard_checks(lab, screenshot="dashboard")
        (ARTIFACTS / f"live-dashboard-{frontend}-console.log").write_text("\n".join(lab.console))
        yield facts


def test_notebook_runs_and_the_dashboard_renders(dashboard_run) -> None:
    require(dashboard_run, "notebook ran", "dashboard rendered", "probe dashboard rendered")
    assert dashboard_run["screenshot"].is_file()


def test_progress_bar_reaches_100_percent(dashboard_run) -> None:
    require(dashboard_run, "progress reaches 100%")


def test_counts_show_the_expected_numbers(dashboard_run) -> None:
    (shown,) = require(dashboard_run, "counts")
    assert {k: shown[k] for k in EXPECTED} == EXPECTED


def test_plots_change_while_tasks_run(dashboard_run) -> None:
    """On the probe's dashboard: its plots are past their first (placeholder) render."""
    require(dashboard_run, "probe plots change while tasks run")


def test_notebook_plots_change_while_its_tasks_run(dashboard_run) -> None:
    require(dashboard_run, "plots change while tasks run")


def test_dashboard_keeps_updating_while_a_later_cell_sleeps(dashboard_run) -> None:
    (first, second), (pfirst, psecond) = require(
        dashboard_run, "updates during the notebook's time.sleep", "probe updates during time.sleep(3)"
    )
    print(f"progress during time.sleep: notebook {first} -> {second}; probe {pfirst} -> {psecond}")


def test_max_workers_slider_resizes_the_pool(dashboard_run) -> None:
    (pool,) = require(dashboard_run, "slider resizes the pool")
    print("pool size before/after the slider:", pool)


def test_no_error_outputs(dashboard_run) -> None:
    require(dashboard_run, "no error outputs")


def test_the_live_view_hides_its_final_static_picture(dashboard_run) -> None:
    require(dashboard_run, "static picture")


def test_the_saved_notebook_holds_the_final_picture(dashboard_run) -> None:
    require(dashboard_run, "saved picture")


# --------------------------------------------------------------------------------------------------
# Negative control
# --------------------------------------------------------------------------------------------------

# Checks that must fail when the widget JavaScript cannot load.
WIDGET_CHECKS = (
    "dashboard rendered",
    "progress reaches 100%",
    "counts",
    "probe plots change while tasks run",
    "probe updates during time.sleep(3)",
    "slider resizes the pool",
)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_negative_control_checks_fail_without_widget_manager(request, frontend) -> None:
    """The ipywidgets extension blocked: the same checks must fail. This proves they can.

    The static picture is what a front end without widgets shows: there it must be visible, and
    final (JupyterLab and Notebook 7 applied the owner thread's updates to the displaying cell).
    """
    lab = request.getfixturevalue("lab" if frontend == "lab" else "nb7")
    blocked = lab.block_widget_manager()
    facts = run_dashboard_checks(lab, screenshot="negative-control", widgets=False)
    print("\n".join(failures(facts)))
    # The route did match, and the kernel ran every cell: its summary is on the page as text.
    assert blocked, "the widget manager's URL was never requested: the route pattern matched nothing"
    require(facts, "notebook ran")
    page_text = lab.page.locator(".jp-Notebook").inner_text()
    ok = EXPECTED["succeeded"]
    assert f"succeeded: {ok} expected: {ok}" in page_text, "the notebook's summary is not on the page"
    # What must fail, fails: every widget check raises AssertionError.
    passed = [label for label in WIDGET_CHECKS if facts["results"][label][0] != "failed"]
    assert not passed, f"checks that passed although no widget could render: {passed}"
    with pytest.raises(AssertionError):
        require(facts, *WIDGET_CHECKS)
    require(facts, "static picture", "saved picture")
