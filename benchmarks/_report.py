"""What every benchmark module shares: the paired method, plain-text tables, `Target`.

The method (`interleave`, `paired_ratios`, `Spread`) is described where it is defined.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

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
    load = f"load {load_average()}"
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {load}; "
            f"Python {sys.version.split()[0]} ({platform.python_implementation()}); "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}")


def section(print_fn: PrintFn, title: str) -> None:
    print_fn("")
    print_fn(title)
    print_fn("=" * len(title))


# ============================================================ paired method
# Every comparison in these benchmarks follows one method, so that a burst of load on a
# shared machine cannot pass for a difference between variants:
#  * each variant sets up and warms its own pool inside its call, and `interleave` can run a
#    whole untimed round first (imports, code paths, the allocator's first growth);
#  * the repetitions alternate the order of the variants (ABC, CBA, ABC, ...), so no variant
#    always runs first, or right after a given other one;
#  * a comparison is the median of the per-repetition ratios of two variants measured side by
#    side (`paired_ratios`), not the ratio of their medians: a slow repetition slows both
#    members of its pair, and the ratio cancels it. Its spread (min-max) is printed next to it.

T = TypeVar("T")


def alternating_orders(names: Sequence[str], reps: int) -> list[list[str]]:
    """The order of the variants in each repetition: as given, reversed, as given, ..."""
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps!r}")
    forward = list(names)
    return [forward if r % 2 == 0 else forward[::-1] for r in range(reps)]


def interleave(variants: Mapping[str, Callable[[], T]], reps: int, *, warmup: bool = False,
               on_rep: Callable[[int, list[str]], Any] | None = None) -> dict[str, list[T]]:
    """Call every variant ``reps`` times, alternating their order; one result per repetition.

    ``warmup``: one untimed call of each variant first, results discarded. ``on_rep(r,
    order)`` is called before repetition ``r`` (for progress lines). The lists keep the
    repetition order, so ``result[a][i]`` and ``result[b][i]`` were measured side by side.
    """
    if not variants:
        raise ValueError("variants must name at least one variant")
    if warmup:
        for fn in variants.values():
            fn()
    out: dict[str, list[T]] = {name: [] for name in variants}
    for r, order in enumerate(alternating_orders(list(variants), reps)):
        if on_rep is not None:
            on_rep(r, order)
        for name in order:
            out[name].append(variants[name]())
    return out


@dataclass(frozen=True)
class Spread:
    """The median of some per-repetition values, with their min and max."""

    median: float
    lo: float
    hi: float
    values: tuple[float, ...]

    def fmt(self, unit: str = "x", digits: int = 2, scale: float = 1.0, sign: bool = False) -> str:
        """``"1.23x [1.10, 1.31]"``: the median, then [min, max] (no range for one value)."""
        spec = f"{'+' if sign else ''}.{digits}f"
        m, lo, hi = (format(v * scale, spec) for v in (self.median, self.lo, self.hi))
        return f"{m}{unit}" if len(self.values) == 1 else f"{m}{unit} [{lo}, {hi}]"

    def each(self, unit: str = "x", digits: int = 2) -> str:
        """Every value in repetition order: ``"1.80x, 0.95x, 1.75x"``."""
        return ", ".join(f"{v:.{digits}f}{unit}" for v in self.values)

    def map(self, fn: Callable[[float], float]) -> Spread:
        """The same spread through a monotonic increasing ``fn`` (e.g. a ratio to a change)."""
        return spread([fn(v) for v in self.values])


def spread(values: Iterable[float]) -> Spread:
    """Median, min and max of ``values`` (at least one)."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("spread needs at least one value")
    return Spread(statistics.median(vals), min(vals), max(vals), vals)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """The per-repetition ratios ``numerators[i] / denominators[i]``: their median and spread."""
    if len(numerators) != len(denominators):
        raise ValueError(f"paired values need one of each per repetition, got "
                         f"{len(numerators)} and {len(denominators)}")
    return spread(a / b for a, b in zip(numerators, denominators))


def ratio_target(name: str, ratio: Spread, goal: float, *, at_least: bool = True,
                 judge: str = "median") -> Target:
    """A target on a paired ratio: ``judge`` is ``"median"``, or ``"min"``/``"max"`` (every run)."""
    judged = {"median": ratio.median, "min": ratio.lo, "max": ratio.hi}[judge]
    passed = judged >= goal if at_least else judged <= goal
    measured = ratio.fmt()
    if judge != "median" and len(ratio.values) > 1:
        measured = f"{judged:.2f}x {judge} (median {ratio.fmt()})"
    where = "" if judge == "median" else ", every run"
    return Target(name, measured, f"{'>=' if at_least else '<='} {goal:.1f}x{where}", passed)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, or "n/a"."""
    try:
        return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"
