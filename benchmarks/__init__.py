"""Benchmarks for neon_nb: ``python -m benchmarks`` (``make bench``).

``bench_core`` measures the worker against `concurrent.futures.ThreadPoolExecutor`
in one run on the same machine; ``bench_dashboard``, ``bench_backends`` and
``bench_journal`` (if present) measure the widget layer, the execution backends
and the journal's storage layer. Each of those
modules exposes ``run(print_fn)`` (optionally ``run(print_fn, quick=...)``); if
``run`` returns an iterable of `Target` (or of ``(name, measured, goal, passed)``
tuples), they join the final targets table.
"""

from ._report import Target

__all__ = ["Target"]
