"""Plain-text tables and the `Target` record shared by every benchmark module."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

PrintFn = Callable[[str], Any]


class Target(NamedTuple):
    """One goal of the benchmark: what was measured, the goal, and whether it was met."""

    name: str
    measured: str
    goal: str
    passed: bool


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A fixed-width table: text left-aligned, numbers right-aligned."""
    rows = [[_cell(v) for v in row] for row in rows]
    cols = list(zip(list(headers), *rows)) if rows else [[h] for h in headers]
    widths = [max(len(c) for c in col) for col in cols]
    numeric = [all(_is_number(r[i]) for r in rows) and rows for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if numeric[i] else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [fmt(list(headers)), "  ".join("-" * w for w in widths)]
    out += [fmt(r) for r in rows]
    return "\n".join(out)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _is_number(s: str) -> bool:
    s = s.replace(",", "").rstrip("x%")
    if s == "-":
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_line() -> str:
    """Where and when the figures were measured (they mean little without it)."""
    try:
        load = "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "load n/a"
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {load}; "
            f"Python {sys.version.split()[0]} ({platform.python_implementation()}); "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")


def section(print_fn: PrintFn, title: str) -> None:
    print_fn("")
    print_fn(title)
    print_fn("=" * len(title))
