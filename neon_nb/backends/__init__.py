"""Execution backends: where a task's function runs once NeonWorker has scheduled it.

Scheduling (priority queue, bound, retries, status, events, metrics) always
stays in `NeonWorker`; a backend only executes. Each worker thread hands one
task at a time to its backend and waits for the outcome, so ``max_workers``
is also the number of tasks in flight on the backend.

* ``"threads"`` (`ThreadBackend`, the default): on the worker threads. For IO.
* ``"processes"`` (`ProcessBackend`): in a process pool. For CPU-bound Python.
* ``"dask"`` (`DaskBackend`): on a Dask distributed cluster, local or remote.

Thread names and events stay those of the worker threads whatever the backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from ._base import Backend, ThreadBackend
from ._dask import DaskBackend
from ._process import ProcessBackend

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Backend", "BackendSpec", "DaskBackend", "ProcessBackend", "ThreadBackend", "make_backend"]

#: What ``NeonWorker(backend=...)`` accepts: a name (``"threads"``, ``"processes"``,
#: ``"dask"``), a Dask scheduler address, a ``distributed.Client`` or a `Backend`.
BackendSpec = Union[str, Backend, "Client", None]


def make_backend(spec: BackendSpec | Any) -> Backend:
    """A backend from a name, a scheduler address, a ``distributed.Client`` or a `Backend`.

    ``"threads"`` (or None), ``"processes"``, ``"dask"`` (a LocalCluster
    started for this worker), ``"tcp://host:8786"`` (any string with
    ``://``: a running Dask scheduler), a ``distributed.Client``, or a
    `Backend` instance, returned as is. For options, build the backend
    yourself: ``ProcessBackend(...)``, ``DaskBackend(address=..., ...)``.
    """
    if isinstance(spec, Backend):
        return spec
    if spec is None or spec == "threads":
        return ThreadBackend()
    if spec == "processes":
        return ProcessBackend()
    if spec == "dask":
        return DaskBackend()
    if isinstance(spec, str) and "://" in spec:
        return DaskBackend(address=spec)
    if type(spec).__name__ == "Client" and type(spec).__module__.startswith("distributed"):
        return DaskBackend(spec)
    raise ValueError(f"backend must be 'threads', 'processes', 'dask', a Dask scheduler address "
                     f"('tcp://host:8786'), a distributed.Client or a neon_nb.backends.Backend "
                     f"instance, got {spec!r}")
