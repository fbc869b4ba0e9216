"""Notebook widgets for neon_nb: a live `Dashboard`, a `BatchBuilder`, a live `ScalingExperiment`,
and static plots.

Needs ipywidgets and matplotlib (``pip install 'neon_nb[notebook]'``). The core
(`neon_nb`) never imports this package; this package reads the core only
through its public API: events, metrics snapshots and thread-safe methods.
Importing it in IPython makes a `NeonWorker` that is the last expression of a
cell show its live dashboard (one per worker, reused).

Threads, in one paragraph: a dashboard is updated by exactly one thread, its
event subscription's delivery thread (``worker.subscribe(on="thread")``),
which keeps running while the kernel is busy in another cell. Worker threads
never touch a widget. Button and slider callbacks, which ipykernel 7 may run
on a subshell thread while a cell runs, only call thread-safe worker methods.

Why not the kernel's own thread: code queued on the kernel's asyncio loop
(``call_soon_threadsafe``) runs only when no cell is running, so a display fed
that way freezes for the whole of a busy cell. Setting a widget trait from any
thread is safe (every message leaves through ipykernel's IOPub thread, with
ipykernel >= 7.1 or < 7), and the Jupyter server drops iopub messages above
1,000 per second, hence one owner thread per view refreshing at about 10 Hz.
"""

from __future__ import annotations

try:
    import ipywidgets as _ipywidgets  # noqa: F401
    import matplotlib as _matplotlib  # noqa: F401
except ImportError as _exc:
    raise ImportError(
        f"neon_nb.widgets needs ipywidgets and matplotlib ({_exc.name or 'a dependency'} is not "
        f"installed): pip install 'neon_nb[notebook]'"
    ) from _exc

from ..batch import Batch, FlakyTaskError, TaskKind, get_task_kind, register_task_kind, task_kinds
from ..plots import plot_latency, plot_scaling, plot_task_stream, plot_throughput
from ._builder import BatchBuilder
from ._dashboard import Dashboard, register_worker_display
from ._scaling import ScalingExperiment

# In IPython, a worker that is the last expression of a cell now shows its live dashboard.
register_worker_display()

__all__ = [
    "Batch",
    "BatchBuilder",
    "Dashboard",
    "FlakyTaskError",
    "ScalingExperiment",
    "TaskKind",
    "get_task_kind",
    "plot_latency",
    "plot_scaling",
    "plot_task_stream",
    "plot_throughput",
    "register_task_kind",
    "task_kinds",
]
