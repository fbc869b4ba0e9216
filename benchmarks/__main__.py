"""``python -m benchmarks [--quick] [--only core|dashboard|backends|journal] [--reps N]``.

Prints one table per benchmark, then a targets table with PASS/MISS for each
goal. A missed target is reported, not hidden; the exit status is 0 either way
(non-zero only if a benchmark crashed).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

from ._report import Target, section, table

SUITES = ("core", "dashboard", "backends", "journal")


def _print(line: str = "") -> None:
    print(line, flush=True)


def _run_optional(name: str, quick: bool) -> list[Target]:
    """Run ``benchmarks.bench_<name>.run(print_fn)`` if that module exists."""
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
    except ImportError as exc:
        if exc.name not in (f"benchmarks.bench_{name}", None):
            _print(f"{name}: not available ({exc})")
        else:
            _print(f"{name}: not available (benchmarks/bench_{name}.py does not exist yet)")
        return []
    run = getattr(module, "run", None)
    if run is None:
        _print(f"{name}: not available (benchmarks.bench_{name} has no run(print_fn))")
        return []
    kwargs = {"quick": quick} if "quick" in inspect.signature(run).parameters else {}
    return _as_targets(run(_print, **kwargs))


def _as_targets(result: Any) -> list[Target]:
    if not isinstance(result, Iterable) or isinstance(result, (str, bytes, dict)):
        return []
    out = []
    for item in result:
        if isinstance(item, Target):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 4:
            out.append(Target(str(item[0]), str(item[1]), str(item[2]), bool(item[3])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N and one repetition: a smoke test")
    parser.add_argument("--only", choices=SUITES, help="run one suite")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (core)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")

    suites = [args.only] if args.only else list(SUITES)
    targets: list[Target] = []
    crashed: list[str] = []
    t_all = time.perf_counter()
    for name in suites:
        section(_print, f"[{name}]")
        t0 = time.perf_counter()
        try:
            if name == "core":
                from . import bench_core

                targets += bench_core.run(_print, quick=args.quick, reps=args.reps)
            else:
                targets += _run_optional(name, args.quick)
        except Exception:
            crashed.append(name)
            _print(f"{name}: CRASHED")
            _print(traceback.format_exc())
        _print(f"[{name}] took {time.perf_counter() - t0:.1f}s")

    section(_print, "Targets")
    if targets:
        _print(table(["target", "measured", "goal", "result"],
                     [[t.name, t.measured, t.goal, "PASS" if t.passed else "MISS"] for t in targets]))
    else:
        _print("(no targets measured)")
    missed = sum(not t.passed for t in targets)
    _print(f"{len(targets) - missed} met, {missed} missed; total {time.perf_counter() - t_all:.1f}s"
           + (f"; crashed: {', '.join(crashed)}" if crashed else ""))
    if args.quick:
        _print("(--quick: small N, figures are not meaningful)")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
