"""neon_nb: a thread-safe task worker for notebooks, and a way to see concurrency happen.

The core (this package) imports no Jupyter library; the live dashboard is in
`neon_nb.widgets` (``pip install 'neon_nb[notebook]'``).
"""

from ._config import ConfigManager, WorkerConfig, config_manager, get_config, update_config
from ._counter import SynchronizedCounter
from ._errors import (
    BackendUnavailableError,
    ConfigError,
    ConfigTypeError,
    DuplicateTaskError,
    FlakyTaskError,
    JournalError,
    NeonError,
    QueueFullError,
    TaskPicklingError,
    UnknownTaskError,
    UnstorableResultError,
    WorkerLostError,
    WorkerShutdownError,
)
from ._events import Event, EventBatch, EventKind, Subscription
from ._executor import NeonExecutor
from ._journal import Journal, JournalStats
from ._journal_format import StoredOutcome
from ._journal_reader import JournalReader, JournalRun, open_journal
from ._metrics import LatencySummary, Metrics, MetricsSnapshot, TaskSpan, ThroughputPoint
from ._signals import SignalHandlers, install_signal_handlers
from ._status import HealthReport, ShutdownReport, WorkerState, WorkerStatistics
from ._task import Task, TaskFuture, TaskInfo, TaskState
from ._version import __version__
from ._worker import NeonWorker
from .batch import Batch, TaskKind, get_task_kind, register_task_kind, task_kinds

__all__ = [
    "BackendUnavailableError",
    "Batch",
    "ConfigError",
    "ConfigManager",
    "ConfigTypeError",
    "DuplicateTaskError",
    "Event",
    "EventBatch",
    "EventKind",
    "FlakyTaskError",
    "HealthReport",
    "Journal",
    "JournalError",
    "JournalReader",
    "JournalRun",
    "JournalStats",
    "LatencySummary",
    "Metrics",
    "MetricsSnapshot",
    "NeonError",
    "NeonExecutor",
    "NeonWorker",
    "QueueFullError",
    "ShutdownReport",
    "SignalHandlers",
    "StoredOutcome",
    "Subscription",
    "SynchronizedCounter",
    "Task",
    "TaskFuture",
    "TaskInfo",
    "TaskKind",
    "TaskPicklingError",
    "TaskSpan",
    "TaskState",
    "ThroughputPoint",
    "UnknownTaskError",
    "UnstorableResultError",
    "WorkerConfig",
    "WorkerLostError",
    "WorkerShutdownError",
    "WorkerState",
    "WorkerStatistics",
    "__version__",
    "config_manager",
    "get_config",
    "get_task_kind",
    "install_signal_handlers",
    "open_journal",
    "register_task_kind",
    "task_kinds",
    "update_config",
]
