"""``python -m benchmarks [--quick] [--scale] [--only SUITE] [--reps N]``.

Prints one table per benchmark, then a targets table with PASS/MISS for each
goal. A missed target is reported, not hidden; the exit status is 0 either way
(non-zero only if a benchmark crashed).

Suites, in this order: core, scale, dashboard, backends, journal (a suite whose
module does not exist is reported as not available). ``--scale`` runs the scale
suite alone (10^6 queued tasks: drain rate against 10^4, memory per queued task);
the default run includes it, ``--quick`` leaves it out unless ``--scale`` is given
(then at small N). ``--reps`` sets the repetitions of every suite that takes it.
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

from ._report import Target, load_average, machine_line, section, table

SUITES = ("core", "scale", "dashboard", "backends", "journal")


def _print(line: str = "") -> None:
    print(line, flush=True)


def _run_optional(name: str, quick: bool, reps: int | None = None) -> list[Target]:
    """Run ``benchmarks.bench_<name>.run(print_fn)`` if that module exists.

    ``quick`` and ``reps`` are passed to a ``run`` that takes them (``reps`` only if given).
    """
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
    params = inspect.signature(run).parameters
    kwargs: dict[str, Any] = {"quick": quick} if "quick" in params else {}
    if reps is not None and "reps" in params:
        kwargs["reps"] = reps
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


def _suites(args: argparse.Namespace) -> list[str]:
    if args.only:
        return [args.only]
    if args.scale:
        return ["scale"]
    return [s for s in SUITES if not (args.quick and s == "scale")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small N and few repetitions: a smoke test (figures mean nothing)")
    parser.add_argument("--scale", action="store_true",
                        help="only the 10^6-task figures (drain rate, memory per queued task)")
    parser.add_argument("--only", choices=SUITES, help="run one suite")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per figure (every suite)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.scale and args.only not in (None, "scale"):
        parser.error("--scale runs the scale suite: it does not combine with --only " + args.only)

    targets: list[Target] = []
    crashed: list[str] = []
    t_all = time.perf_counter()
    _print(f"machine: {machine_line()}")
    for name in _suites(args):
        section(_print, f"[{name}]")
        t0 = time.perf_counter()
        try:
            targets += _run_optional(name, args.quick, args.reps)
        except Exception:
            crashed.append(name)
            _print(f"{name}: CRASHED")
            _print(traceback.format_exc())
        _print(f"[{name}] took {time.perf_counter() - t0:.1f}s (load {load_average()})")

    section(_print, "Targets")
    if targets:
        _print(table(["target", "measured: median [min, max]", "goal", "result"],
                     [[t.name, t.measured, t.goal, "PASS" if t.passed else "MISS"] for t in targets]))
    else:
        _print("(no targets measured)")
    missed = sum(not t.passed for t in targets)
    _print(f"{len(targets) - missed} met, {missed} missed; total {time.perf_counter() - t_all:.1f}s; "
           f"load average at the end {load_average()}"
           + (f"; crashed: {', '.join(crashed)}" if crashed else ""))
    if args.quick:
        _print("(--quick: small N, figures are not meaningful)")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
