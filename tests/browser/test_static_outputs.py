"""What people see without a kernel, opened in Chromium with every outside request blocked.

* ``jupyter nbconvert --execute --to html`` of the dashboard notebook: the dashboard's static
  picture is in the page, visible, decoded, and shows the final state (the widget itself cannot
  render there: its JavaScript would come from a CDN).
* A run report (``neon_nb.report.write_report``): every image renders and nothing is fetched.

Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from typing import Any

import pytest

from . import dashboard_checks as dc
from .conftest import ARTIFACTS, NOTEBOOKS, _isolated_env, _venv_python

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

FINAL_PICTURE = ("neon_nb dashboard of worker 'demo': stopped; 300 submitted, 293 succeeded, 7 failed, "
                 "0 cancelled, 14 retried")

# Every image of the page: decoded width, whether it is displayed, and its data.
IMAGES_JS = """() => [...document.images].map((i) => ({
    src: i.getAttribute('src') || '', width: i.naturalWidth, shown: i.offsetParent !== null,
}))"""


def open_offline(context: Any, path) -> tuple[Any, list[str]]:
    """A page showing the file ``path``; every request that is not for that file is blocked."""
    page = context.new_page()
    fetched: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith("data:") or url == path.as_uri():
            r.continue_()
        else:
            fetched.append(url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri(), wait_until="load")
    return page, fetched


def test_nbconvert_html_shows_the_final_dashboard_picture(lab_browser, tmp_path) -> None:
    source = tmp_path / "dashboard.ipynb"
    shutil.copy(NOTEBOOKS / "A1_live_dashboard.ipynb", source)
    python = _venv_python()
    env = _isolated_env(tmp_path / "env", python)
    done = subprocess.run(
        [str(python), "-m", "nbconvert", "--execute", "--to", "html", "--output", "dashboard-executed",
         str(source)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    page, fetched = open_offline(lab_browser, tmp_path / "dashboard-executed.html")
    try:
        pictures = []
        for img in page.evaluate(IMAGES_JS):
            head, _, data = img["src"].partition(",")
            if head == "data:image/png;base64":
                text = dc.png_description(base64.b64decode(data))
                if text.startswith("neon_nb dashboard of worker 'demo'"):
                    pictures.append({**img, "text": text})
        assert [(p["text"], p["shown"]) for p in pictures] == [(FINAL_PICTURE, True)], pictures
        assert pictures[0]["width"] > 0
        picture = page.locator("img").first
        picture.scroll_into_view_if_needed()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "nbconvert-dashboard.png"))
        picture.screenshot(path=str(ARTIFACTS / "nbconvert-dashboard-picture.png"))
    finally:
        page.close()
    # nbconvert's page asks CDNs for require.js, MathJax and the widget manager; all were blocked,
    # and the picture showed regardless.
    assert all(u.startswith(("http://", "https://")) for u in fetched), fetched


def test_a_run_report_renders_every_image_and_fetches_nothing(lab_browser, tmp_path) -> None:
    from neon_nb import NeonWorker, Task
    from neon_nb.batch import Batch
    from neon_nb.report import write_report

    w = NeonWorker(max_workers=4, queue_size=0, retry_delay=0.01, name="browser-report",
                   log_level="CRITICAL").start()
    try:
        Batch(kind="io", count=80, duration=("uniform", 0.002, 0.01), seed=5).submit(w)
        Batch(kind="flaky", count=20, duration=0.002, retries=1, retry_delay=0.01,
              failure_probability=0.5, seed=6).submit(w)
        w.add_tasks([Task(f"boom-{i}", int, ("not a number",), retry_attempts=0) for i in range(3)])
        assert w.wait_for_completion(60)
    finally:
        w.shutdown()
    path = write_report(w, tmp_path / "report.html")
    assert path.stat().st_size < 5 * 1024 * 1024
    page, fetched = open_offline(lab_browser, path)
    try:
        images = page.evaluate(IMAGES_JS)
        assert len(images) == 3 and all(i["width"] > 0 and i["shown"] for i in images), images
        assert "boom-0" in page.inner_text("body") and "ValueError" in page.inner_text("body")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "run-report.png"), full_page=True)
    finally:
        page.close()
    assert fetched == [], f"the report fetched {fetched}"
