"""Smoke test of the browser harness itself, on a tiny notebook of its own.

It separates "the harness is broken" from "the dashboard is broken": an ``IntProgress`` updated by a
background thread must update live in the DOM (also while a later cell sleeps), and an ``IntSlider``
moved with the keyboard must reach the kernel and come back through a Label.
"""

from __future__ import annotations

import re

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

SETUP = """\
import sys, threading, time
import ipywidgets as widgets
import neon_nb
print("kernel-python:", sys.executable)
"""

WIDGETS = """\
progress = widgets.IntProgress(value=0, max=60, description="work")
progress.add_class("harness-progress")
slider = widgets.IntSlider(value=4, min=1, max=16, description="n")
slider.add_class("harness-slider")
echo = widgets.Label(value="n=4")
echo.add_class("harness-echo")
slider.observe(lambda change: setattr(echo, "value", f"n={change['new']}"), names="value")

def tick():
    for i in range(1, progress.max + 1):
        time.sleep(0.1)
        progress.value = i

widgets.VBox([progress, slider, echo])
"""

START = "threading.Thread(target=tick, daemon=True).start()"
SLEEP = "time.sleep(3)"
DONE = "time.sleep(max(0.0, 6.5 - 3)); print('done at', progress.value)"


def _write_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, WIDGETS, START, SLEEP, DONE)]
    nbformat.write(nb, str(path))


def test_harness_sees_live_widget_updates(lab) -> None:
    _write_notebook(lab.server.root_dir / "harness_smoke.ipynb")
    lab.open_notebook("harness_smoke.ipynb")
    lab.run_all()

    # The sleep cell (index 3) runs while the thread keeps moving the bar: two reads differ.
    lab.poll(lab.running_cell_index, lambda i: i == 3, timeout=30)
    assert lab.running_cell_index() == 3, "the time.sleep(3) cell never started running"
    first = lab.progress_percent(".harness-progress")
    lab.page.wait_for_timeout(1000)
    second = lab.progress_percent(".harness-progress")
    assert lab.running_cell_index() == 3, "the sleep cell finished before the second read"
    assert first is not None and second is not None, "no live progress bar in the DOM"
    assert first < second < 100, f"progress did not move during time.sleep: {first} -> {second}"

    # The bar reaches 100%.
    final = lab.poll(lambda: lab.progress_percent(".harness-progress"), lambda v: v == 100, timeout=30)
    assert final == 100, f"progress bar stuck at {final}%"

    lab.wait_all_executed()
    lab.wait_idle()
    assert not lab.error_outputs(), lab.error_outputs()
    outputs = lab.page.locator(".jp-OutputArea-output").all_inner_texts()
    kernel_python = next((t for t in outputs if "kernel-python:" in t), "")
    assert str(lab.server.python.parent) in kernel_python, (
        f"kernel is not the .venv python: {kernel_python!r}"
    )

    # Keyboard on the slider handle: the new value reaches the kernel and comes back in the Label.
    echo = lab.page.locator(".harness-echo")
    assert echo.inner_text().strip() == "n=4"
    handle = lab.page.locator(".harness-slider .noUi-handle")
    handle.focus()
    for _ in range(3):
        handle.press("ArrowRight")
    lab.page.wait_for_function(
        "() => document.querySelector('.harness-echo').innerText.trim() === 'n=7'", timeout=10_000
    )
    assert re.fullmatch(r"n=7", echo.inner_text().strip())
    lab.screenshot("final", lab.page.locator(".jp-NotebookPanel").first)
