"""What "the live dashboard works in a real browser" means, as checks on JupyterLab's DOM.

The same checks run in the positive test and in the negative control (widget manager blocked), so
they must fail when widgets do not render. They only accept *live* evidence: the dashboard's own DOM
(``.neon-dashboard`` exists only if the widget JavaScript rendered it), a progress-bar width and
count attributes that move, plot ``<img>`` elements whose ``src`` changes while tasks run, and a
pool-size label that follows the slider through the kernel. A text or static-image fallback passes
none of them.

`DashboardRun.observe` samples every dashboard on the page while the notebook runs; the ``check_*``
functions raise ``AssertionError`` with a readable reason.
"""

from __future__ import annotations

import base64
import io
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

# Every dashboard on the page, in document order (a list; empty if none).
READ_DASHBOARDS_JS = """() => [...document.querySelectorAll('.neon-dashboard')].map((d) => {
    const bar = d.querySelector('.neon-progress .progress-bar');
    const width = bar ? /([\\d.]+)%/.exec(bar.style.width || '') : null;
    const count = (s) => {
        const e = d.querySelector('.neon-counts .neon-count-' + s);
        return e ? Number(e.getAttribute('data-count')) : null;
    };
    const img = (c) => {
        const e = d.querySelector('img.' + c);
        return e ? {src: e.getAttribute('src') || '', width: e.naturalWidth} : null;
    };
    const text = (c) => { const e = d.querySelector('.' + c); return e ? e.innerText.trim() : null; };
    return {
        progress: width ? parseFloat(width[1]) : null,
        progress_label: text('neon-progress-label'),
        submitted: count('submitted'), queued: count('queued'), running: count('running'),
        succeeded: count('succeeded'), failed: count('failed'), cancelled: count('cancelled'),
        retried: count('retried'),
        pool: text('neon-pool-size'), state: text('neon-state'),
        throughput: img('neon-throughput'), latency: img('neon-latency'), taskstream: img('neon-taskstream'),
        slider_disabled: !!d.querySelector('.neon-slider-workers .noUi-target[disabled]'),
    };
})"""

# Index (among code cells) of the first cell showing [*] (the running one: cells queued after it
# show [*] too), and whether every code cell has an execution count.
READ_CELLS_JS = """() => {
    const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
        .map(p => p.innerText.trim());
    const running = prompts.findIndex(p => p === '[*]:');
    return {
        running: running < 0 ? null : running,
        done: prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p)),
    };
}"""

POOL_RE = re.compile(r"pool size:\s*(\d+)")


@dataclass
class Sample:
    t: float  # seconds since the observation started
    running_cell: int | None
    all_done: bool
    dashboards: list[dict[str, Any]]

    def dash(self, index: int) -> dict[str, Any]:
        """What was read of dashboard ``index``: empty (falsy) if the page had no such dashboard."""
        return self.dashboards[index] if index < len(self.dashboards) else {}

    def tasks_running(self, index: int) -> bool:
        """The dashboard itself shows work in flight: some tasks finished, not all."""
        d = self.dash(index)
        return bool(d) and d["progress"] is not None and 0 < d["progress"] < 100


@dataclass
class DashboardRun:
    """Samples of the page taken every ``every`` seconds while the notebook runs."""

    samples: list[Sample] = field(default_factory=list)

    def observe(self, lab: Any, *, timeout: float, every: float = 0.1) -> DashboardRun:
        """Sample until every code cell has an execution count (or ``timeout`` seconds)."""
        start = time.monotonic()
        while True:
            cells = lab.page.evaluate(READ_CELLS_JS)
            sample = Sample(
                t=time.monotonic() - start,
                running_cell=cells["running"],
                all_done=cells["done"],
                dashboards=lab.page.evaluate(READ_DASHBOARDS_JS),
            )
            self.samples.append(sample)
            if sample.all_done or sample.t > timeout:
                return self
            time.sleep(every)

    @property
    def last(self) -> Sample:
        return self.samples[-1]

    def summary(self, index: int = 0, limit: int = 15) -> str:
        """A compact trace of dashboard ``index`` for failure messages."""
        if not any(s.dash(index) for s in self.samples):
            return f"  (dashboard #{index} was never in the DOM in {len(self.samples)} reads)"
        rows = []
        step = max(1, len(self.samples) // limit)
        for s in self.samples[::step]:
            d = s.dash(index) or {}
            rows.append(
                f"  t={s.t:5.1f}s cell={s.running_cell} progress={d.get('progress')} "
                f"ok={d.get('succeeded')} failed={d.get('failed')} pool={d.get('pool')!r} "
                f"thr={_short(d.get('throughput'))} lat={_short(d.get('latency'))}"
            )
        return "\n".join(rows)


def _short(img: dict[str, Any] | None) -> str:
    if not img:
        return "-"
    return "..." + img["src"][-6:] if img["src"] else "(empty)"


# --------------------------------------------------------------------------------------------------
# Checks on the samples
# --------------------------------------------------------------------------------------------------


def check_notebook_ran(run: DashboardRun) -> None:
    assert run.samples and run.last.all_done, "the notebook did not finish running all cells"


def check_dashboard_rendered(run: DashboardRun, index: int = 0) -> None:
    assert any(s.dash(index) for s in run.samples), (
        f"dashboard #{index} (.neon-dashboard) never appeared in the DOM: the widgets did not render "
        "(a text/plain fallback is not a dashboard)"
    )


def check_progress_reaches_100(run: DashboardRun, index: int = 0) -> None:
    seen = [s.dash(index)["progress"] for s in run.samples if s.dash(index)]
    seen = [p for p in seen if p is not None]
    assert seen, f"dashboard #{index}: no progress bar (.neon-progress .progress-bar)"
    assert any(0 < p < 100 for p in seen), (
        f"dashboard #{index}: the progress bar never showed work in progress (only {sorted(set(seen))})"
    )
    assert seen[-1] == 100, f"dashboard #{index}: progress ends at {seen[-1]}%:\n{run.summary(index)}"


def check_plots_live(run: DashboardRun, index: int = 0, names: tuple[str, ...] = ("throughput", "latency")):
    """Each plot is a decoded <img> whose src changed between two reads taken while tasks ran."""
    busy = [s for s in run.samples if s.tasks_running(index)]
    assert len(busy) >= 2, (
        f"dashboard #{index}: fewer than two reads while tasks ran ({len(busy)}):\n{run.summary(index)}"
    )
    for name in names:
        srcs = [s.dash(index)[name]["src"] for s in busy if s.dash(index)[name]]
        srcs = [src for src in srcs if src]
        assert srcs, f"dashboard #{index}: no {name} plot (img.neon-{name} with a src) while tasks ran"
        assert any(a != b for a, b in itertools.pairwise(srcs)), (
            f"dashboard #{index}: the {name} plot did not change between reads while tasks ran "
            f"({len(srcs)} reads over {busy[-1].t - busy[0].t:.1f} s):\n{run.summary(index)}"
        )
        final = run.last.dash(index)[name]
        assert final and final["width"] > 0, f"dashboard #{index}: the final {name} image did not decode"
        assert final["src"].startswith(("blob:", "data:image/")), f"unexpected {name} src {final['src']!r}"


def check_updates_during_cell(run: DashboardRun, cell: int, index: int = 0, gap: float = 0.8) -> tuple:
    """While code cell ``cell`` runs (e.g. ``time.sleep``), two reads ``gap`` s apart differ.

    Returns the two (time, progress) reads.
    """
    during = [s for s in run.samples if s.running_cell == cell and s.dash(index)]
    assert during, f"no read of dashboard #{index} while code cell {cell} ran:\n{run.summary(index)}"
    span = during[-1].t - during[0].t
    assert span >= gap, f"code cell {cell} ran only {span:.1f} s in the reads: too short to compare"
    first = during[0]
    second = next(s for s in during if s.t >= first.t + gap)
    p1, p2 = first.dash(index)["progress"], second.dash(index)["progress"]
    assert p1 is not None and p2 is not None and p2 > p1, (
        f"dashboard #{index} froze while code cell {cell} ran: progress {p1}% at t={first.t:.1f}s, "
        f"{p2}% at t={second.t:.1f}s:\n{run.summary(index)}"
    )
    return (first.t, p1), (second.t, p2)


# --------------------------------------------------------------------------------------------------
# Checks on the page after the run
# --------------------------------------------------------------------------------------------------


def read_dashboard(lab: Any, index: int = 0) -> dict[str, Any] | None:
    dashboards = lab.page.evaluate(READ_DASHBOARDS_JS)
    return dashboards[index] if index < len(dashboards) else None


def check_final_counts(lab: Any, expected: dict[str, int], index: int = 0, timeout: float = 15.0) -> dict:
    """The counts (``.neon-count-<state>[data-count]``) reach ``expected`` and the bar 100%."""

    def matches(d: dict | None) -> bool:
        return d is None or (all(d[k] == v for k, v in expected.items()) and d["progress"] == 100)

    d = lab.poll(lambda: read_dashboard(lab, index), matches, timeout=timeout)
    assert d is not None, f"dashboard #{index} (.neon-dashboard) is not in the DOM after the run"
    shown = {k: d[k] for k in expected}
    assert shown == expected, f"dashboard #{index} counts {shown}, expected {expected}"
    assert d["progress"] == 100, f"dashboard #{index}: progress bar at {d['progress']}% after the run"
    return d


def check_no_errors(lab: Any) -> None:
    errors = lab.error_outputs()
    assert not errors, "error outputs in the notebook:\n" + "\n".join(errors)


def read_pool_size(lab: Any, index: int = 0) -> int | None:
    match = POOL_RE.search((read_dashboard(lab, index) or {}).get("pool") or "")
    return int(match.group(1)) if match else None


def check_slider_resizes_pool(lab: Any, index: int = 0, steps: int = 2, timeout: float = 15.0) -> tuple:
    """Drag the ``max_workers`` slider's handle ``steps`` steps to the right; the pool-size label
    (rendered from the worker's status by the kernel) follows. Returns (before, after).

    A mouse drag, as a user does: Notebook 7 does not pass arrow keys to a focused slider handle.
    """
    before = read_pool_size(lab, index)
    assert before is not None, f"dashboard #{index}: no 'pool size: N' in .neon-pool-size"
    d = read_dashboard(lab, index)
    assert d and not d["slider_disabled"], f"dashboard #{index}: the max_workers slider is disabled"
    slider = lab.page.locator(".neon-dashboard").nth(index).locator(".neon-slider-workers")
    handle = slider.locator(".noUi-handle")
    assert handle.count() == 1, f"dashboard #{index}: no max_workers slider handle"
    handle.scroll_into_view_if_needed()
    low, high = (float(handle.get_attribute(a)) for a in ("aria-valuemin", "aria-valuemax"))
    box = handle.bounding_box()
    track = slider.locator(".noUi-target").bounding_box()
    assert box and track, f"dashboard #{index}: the slider is not laid out"
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    lab.page.mouse.move(x, y)
    lab.page.mouse.down()
    lab.page.mouse.move(x + track["width"] * steps / (high - low), y, steps=8)
    lab.page.mouse.up()
    target = before + steps
    after = lab.poll(lambda: read_pool_size(lab, index), lambda n: n == target, timeout=timeout)
    assert after == target, (
        f"dashboard #{index}: pool size {before} -> {after} after moving the slider by +{steps}, "
        f"expected {target}"
    )
    return before, after


# --------------------------------------------------------------------------------------------------
# The static picture (what a saved notebook shows without a kernel)
# --------------------------------------------------------------------------------------------------

# Every image in an output area: its data, whether it is displayed, and whether it decoded.
READ_IMAGES_JS = """() => [...document.querySelectorAll('.jp-OutputArea-output img')].map((i) => ({
    src: i.getAttribute('src') || '', shown: i.offsetParent !== null, width: i.naturalWidth,
}))"""


def png_description(data: bytes) -> str:
    from PIL import Image

    return Image.open(io.BytesIO(data)).info.get("Description", "")


def read_pictures(lab: Any, worker: str) -> list[dict[str, Any]]:
    """The dashboard pictures of ``worker`` on the page, with the state each one describes."""
    prefix = f"neon_nb dashboard of worker {worker!r}"
    found = []
    for img in lab.page.evaluate(READ_IMAGES_JS):
        head, _, data = img["src"].partition(",")
        if not head.startswith("data:image/png;base64"):
            continue
        text = png_description(base64.b64decode(data))
        if text.startswith(prefix):
            found.append({"text": text, "shown": img["shown"], "width": img["width"]})
    return found


def check_picture(lab: Any, worker: str, expected: str, *, shown: bool, timeout: float = 15.0) -> dict:
    """The worker's static picture is in the page, decoded, describes ``expected``, and is shown
    (no live view) or hidden (the live view hides it)."""
    pictures = lab.poll(lambda: read_pictures(lab, worker),
                        lambda p: len(p) == 1 and p[0]["text"] == expected, timeout=timeout)
    assert len(pictures) == 1, f"expected one picture of worker {worker!r}, found {pictures}"
    (picture,) = pictures
    assert picture["text"] == expected, f"the picture shows {picture['text']!r}, expected {expected!r}"
    assert picture["width"] > 0, "the picture did not decode"
    assert picture["shown"] == shown, (
        f"the picture is {'shown' if picture['shown'] else 'hidden'}; expected it "
        f"{'shown (no live view)' if shown else 'hidden under the live view'}")
    return picture


def check_saved_picture(lab: Any, notebook: str, worker: str, expected: str) -> str:
    """After saving, the notebook file holds the picture of ``expected`` (what GitHub shows)."""
    nb = lab.save(notebook)
    prefix = f"neon_nb dashboard of worker {worker!r}"
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []) if cell["cell_type"] == "code" else []:
            data = out.get("data", {})
            text = "".join(data.get("text/plain", ""))  # a saved string may be split in lines
            if "image/png" in data and text.startswith(prefix):
                texts.append(text)
    assert texts == [expected], f"saved pictures of worker {worker!r}: {texts}, expected [{expected!r}]"
    return texts[0]
