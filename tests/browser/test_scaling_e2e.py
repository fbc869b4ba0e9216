"""`ScalingExperiment` live in JupyterLab: the chart fills in count by count, and Stop works.

A notebook of its own (written by this test): one experiment runs to its end while the page is
sampled, then a second, slow one is stopped from its button in the browser, with the kernel idle
(its runner and owner threads keep working after their cell ended). A screenshot is taken mid-run.
"""

from __future__ import annotations

import time

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NOTEBOOK = "scaling_experiment_e2e.ipynb"
CELLS = [
    """\
# A quick IO-like workload measured live on 1, 2, 4 and 8 threads.
import time
from neon_nb import Task
from neon_nb.widgets import ScalingExperiment

def sleeps():
    return [Task(f"s{i}", time.sleep, (0.02,)) for i in range(40)]

experiment = ScalingExperiment(sleeps, workers=(1, 2, 4, 8), repeats=2)
experiment""",
    """\
# Wait for the end (the widget keeps drawing meanwhile).
result = experiment.result(timeout=60)
print("complete:", result.complete, "| p >= 0.9:", result.parallel_fraction >= 0.9)""",
    """\
# A slow experiment, to be stopped from its Stop button.
def slow():
    return [Task(f"w{i}", time.sleep, (0.5,)) for i in range(40)]

slow_experiment = ScalingExperiment(slow, workers=(1, 2), repeats=1, warmup=0)
slow_experiment""",
]

READ_JS = """() => [...document.querySelectorAll('.neon-scaling')].map((e) => ({
    measured: e.querySelectorAll('tr.neon-scaling-row[data-state="measured"]').length,
    rows: e.querySelectorAll('tr.neon-scaling-row').length,
    chart: (e.querySelector('img.neon-scaling-chart') || {}).src || '',
    width: (e.querySelector('img.neon-scaling-chart') || {}).naturalWidth || 0,
    status: (e.querySelector('.neon-scaling-status') || {}).innerText || '',
}))"""


def write_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nbformat.write(nb, str(path))


def test_scaling_experiment_fills_in_live_and_stops_from_its_button(lab) -> None:
    write_notebook(lab.server.root_dir / NOTEBOOK)
    lab.open_notebook(NOTEBOOK)
    lab.run_all()
    samples = []
    shot = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        views = lab.page.evaluate(READ_JS)
        if views:
            samples.append(views[0])
            if shot is None and views[0]["measured"] == 2:
                shot = lab.screenshot("scaling-mid-run", lab.page.locator(".neon-scaling").first)
            if views[0]["measured"] == 4 and views[0]["status"].startswith("done"):
                break
        time.sleep(0.1)
    first = [s["measured"] for s in samples]
    assert first and first[-1] == 4, f"the experiment did not finish in the page: {samples[-3:]}"
    seen = sorted(set(first))
    assert {1, 2, 3} <= set(seen), f"the table did not fill in count by count: {seen}"
    charts = [s["chart"] for s in samples if s["chart"]]
    assert len(set(charts)) >= 4, "the chart did not change as counts finished"
    assert samples[-1]["width"] > 0 and shot is not None

    # The slow experiment (20 s per count): once every cell ran, press Stop; the owner thread
    # then draws the stopped state.
    lab.wait_all_executed(timeout=60_000)
    text = lab.page.locator(".jp-Notebook").inner_text()
    assert "complete: True | p >= 0.9: True" in text
    stop = lab.page.locator(".neon-scaling").nth(1).locator(".neon-scaling-stop")
    status = lab.poll(lambda: lab.page.evaluate(READ_JS)[1]["status"],
                      lambda s: s.startswith("measuring"), 30)
    assert status.startswith("measuring"), status
    stop.click()
    final = lab.poll(lambda: lab.page.evaluate(READ_JS)[1], lambda v: v["status"].startswith("stopped"), 30)
    assert final["status"].startswith("stopped in") and final["measured"] == 0, final
    assert lab.page.locator(".neon-scaling").nth(1).locator(
        'tr.neon-scaling-row[data-state="waiting"]').count() == 2
    assert not lab.error_outputs(), lab.error_outputs()
    lab.screenshot("scaling-final", lab.page.locator(".jp-NotebookPanel").first)
