"""neon_nb: a thread-safe task worker for notebooks, and a way to see concurrency happen.

The core (this package) imports no Jupyter library; the live dashboard is in
`neon_nb.widgets` (``pip install neon_nb[notebook]``).
"""

from ._config import ConfigManager, WorkerConfig, config_manager, get_config, update_config
from ._counter import SynchronizedCounter
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    ConfigTypeError,
    DuplicateTaskError,
    NeonError,
    QueueFullError,
    TaskPicklingError,
    UnknownTaskError,
    WorkerLostError,
    WorkerShutdownError,
)
from ._events import Event, EventBatch, EventKind, Subscription
from ._executor import NeonExecutor
from ._metrics import LatencySummary, Metrics, MetricsSnapshot, TaskSpan, ThroughputPoint
from ._signals import SignalHandlers, install_signal_handlers
from ._task import Task, TaskFuture, TaskInfo, TaskState
from ._worker import HealthReport, NeonWorker, ShutdownReport, WorkerState

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "ConfigManager",
    "ConfigTypeError",
    "DuplicateTaskError",
    "Event",
    "EventBatch",
    "EventKind",
    "HealthReport",
    "LatencySummary",
    "Metrics",
    "MetricsSnapshot",
    "NeonError",
    "NeonExecutor",
    "NeonWorker",
    "QueueFullError",
    "ShutdownReport",
    "SignalHandlers",
    "Subscription",
    "SynchronizedCounter",
    "Task",
    "TaskFuture",
    "TaskInfo",
    "TaskPicklingError",
    "TaskSpan",
    "TaskState",
    "ThroughputPoint",
    "UnknownTaskError",
    "WorkerConfig",
    "WorkerLostError",
    "WorkerShutdownError",
    "WorkerState",
    "__version__",
    "config_manager",
    "get_config",
    "install_signal_handlers",
    "update_config",
]
