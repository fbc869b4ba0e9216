"""Execution backends: where a task's function runs once NeonWorker has scheduled it.

Scheduling (priority queue, bound, retries, status, events, metrics) always
stays in `NeonWorker`; a backend only executes. Each worker thread hands one
task at a time to its backend and waits for the outcome, so ``max_workers``
is also the number of tasks in flight on the backend.
"""

from __future__ import annotations

from typing import Any

from ._base import Backend, ThreadBackend

__all__ = ["Backend", "ThreadBackend", "make_backend"]


def make_backend(spec: Any) -> Backend:
    """A backend from ``"threads"``, ``"processes"``, ``"dask"`` or a `Backend` instance."""
    if isinstance(spec, Backend):
        return spec
    if spec is None or spec == "threads":
        return ThreadBackend()
    raise ValueError(f"backend must be 'threads' or a Backend instance, got {spec!r}")
