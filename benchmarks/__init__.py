"""Benchmarks for neon_nb: ``python -m benchmarks`` (``make bench``).

``bench_core`` measures the worker against `concurrent.futures.ThreadPoolExecutor`
in one run on the same machine; ``bench_scale`` does so with 10^6 queued tasks
(drain rate, memory per queued task); ``bench_dashboard``, ``bench_backends`` and
``bench_journal`` (if present) measure the widget layer, the execution backends
and the journal. Each of those modules exposes ``run(print_fn)`` (optionally
``run(print_fn, quick=..., reps=...)``); if ``run`` returns an iterable of `Target`
(or of ``(name, measured, goal, passed)`` tuples), they join the final targets table.
Every comparison uses the paired method of `benchmarks._report` (``interleave``,
``paired_ratios``).
"""

from ._report import Target

__all__ = ["Target"]
