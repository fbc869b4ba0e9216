"""The dashboard as one static PNG, for notebooks saved and viewed without a kernel.

Top to bottom: a header (the worker, its state, the counts, the progress),
throughput beside utilisation, latency, and the task stream. The three plots
are the PNGs the dashboard has just rendered for its live view, stitched with
Pillow (a dependency of matplotlib); only the header and the utilisation bars
are drawn here, so no plot is rendered twice. Called by the dashboard's owner
thread only (matplotlib figures on the Agg canvas, one per call).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..plots import render_png, short_thread_name, task_stream_lanes

__all__ = ["Count", "dashboard_picture", "stack_pngs"]

_DPI = 80
_WIDTH_IN = 9.0  # the width of the latency and task-stream plots
_MAX_LANES = 16


class Count(NamedTuple):
    """One chip of the header: a label, its number and its colour."""

    label: str
    value: int
    colour: str


def stack_pngs(rows: Sequence[Sequence[bytes]], description: str = "") -> bytes:
    """PNG images laid out in rows (side by side, top-aligned), rows stacked, on white.

    ``description`` goes into the PNG's ``Description`` text chunk: what the
    picture shows, in words, for tools and tests that read the file.
    """
    images = [[Image.open(io.BytesIO(png)).convert("RGB") for png in row] for row in rows]
    width = max(sum(im.width for im in row) for row in images)
    height = sum(max(im.height for im in row) for row in images)
    out = Image.new("RGB", (width, height), "white")
    y = 0
    for row in images:
        x = 0
        for im in row:
            out.paste(im, (x, y))
            x += im.width
        y += max(im.height for im in row)
    info = PngInfo()
    if description:
        info.add_text("Description", description)
    buf = io.BytesIO()
    out.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def header_png(title: str, state: str, pool: str, counts: Sequence[Count], finished: int,
               submitted: int) -> bytes:
    """The worker's name, state and pool size, one chip per count, and a progress bar."""
    fig = Figure(figsize=(_WIDTH_IN, 1.05), dpi=_DPI)
    fig.text(0.012, 0.78, title, fontsize=11, fontweight="bold", va="center")
    fig.text(0.45, 0.78, f"{state}    {pool}", fontsize=10, va="center", color="0.25")
    slot = 0.985 / max(len(counts), 1)
    size = 8 if len(counts) <= 8 else 7  # a ninth chip (resumed tasks) makes the slots narrower
    for i, c in enumerate(counts):
        x = 0.012 + i * slot
        fig.patches.append(Rectangle((x, 0.43), 0.011, 0.1, color=c.colour,
                                     transform=fig.transFigure, figure=fig))
        fig.text(x + 0.015, 0.48, f"{c.label} {c.value}", fontsize=size, va="center")
    ax = fig.add_axes((0.012, 0.08, 0.55, 0.16))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    ax.add_patch(Rectangle((0, 0), 1, 1, color="#e6e6e6"))
    done = finished / submitted if submitted else 0.0
    ax.add_patch(Rectangle((0, 0), done, 1, color="#2ca02c" if done >= 1 else "#1f77b4"))
    fig.text(0.58, 0.16, f"{finished} / {submitted} finished", fontsize=8, va="center")
    return render_png(fig)


def utilisation_png(utilisation: Mapping[str, float] | None, span: float, busy_now: tuple[int, int]
                    ) -> bytes:
    """Busy share per worker thread (or, with metrics off, threads busy now), as bars."""
    fig = Figure(figsize=(3.0, 2.4), dpi=_DPI)
    fig.subplots_adjust(left=0.3, right=0.95, bottom=0.2, top=0.84)
    ax = fig.add_subplot()
    if utilisation is None:
        busy, threads = busy_now
        names = ["all threads"]
        values = [busy / threads * 100 if threads else 0.0]
        ax.set_title(f"Utilisation ({busy} of {threads} busy now)", fontsize=9, loc="left")
    else:
        lanes = task_stream_lanes((), utilisation)
        names = [short_thread_name(t) for t in lanes]
        values = [utilisation[t] * 100 for t in lanes]
        ax.set_title(f"Utilisation (busy, last {span:.0f} s)", fontsize=9, loc="left")
    if len(names) > _MAX_LANES:
        mean = sum(values) / len(values)
        names, values = [f"mean of {len(names)}"], [mean]
    ax.barh(range(len(names)), values, color="#1f77b4", height=0.6)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("% busy", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    return render_png(fig)


def dashboard_picture(header: bytes, throughput: bytes, utilisation: bytes, latency: bytes,
                      task_stream: bytes, description: str = "") -> bytes:
    """The whole dashboard: the header, throughput beside utilisation, latency, task stream."""
    return stack_pngs([[header], [throughput, utilisation], [latency], [task_stream]], description)
