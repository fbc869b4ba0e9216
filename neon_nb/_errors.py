"""Every exception neon_nb raises, in one hierarchy.

Each message names the parameter at fault and what is allowed, so that a
notebook user can fix the call without reading the source.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "ConfigTypeError",
    "DuplicateTaskError",
    "FlakyTaskError",
    "JournalError",
    "NeonError",
    "QueueFullError",
    "TaskPicklingError",
    "UnknownTaskError",
    "UnstorableResultError",
    "WorkerLostError",
    "WorkerShutdownError",
]


class NeonError(Exception):
    """Base class of every error raised by neon_nb."""


class ConfigError(NeonError, ValueError):
    """A configuration value has the wrong type or is out of range, or a key is unknown."""


class ConfigTypeError(ConfigError, TypeError):
    """A configuration value has the wrong type."""


class _CutShort(NeonError):
    """An error that can cut a batch short: what was queued before it, and what was not."""

    def __init__(self, message: str = "", *, submitted: list[Any] | None = None,
                 remaining: list[Any] | None = None) -> None:
        super().__init__(message)
        self.submitted = submitted if submitted is not None else []
        self.remaining = remaining if remaining is not None else []


class QueueFullError(_CutShort):
    """The bounded queue stayed full for the whole of the allowed wait.

    For a batch (`NeonWorker.add_tasks`), ``submitted`` holds the futures of the
    tasks that were queued before the queue filled and ``remaining`` the tasks
    that were not; nothing else was changed.
    """


class DuplicateTaskError(NeonError, ValueError):
    """A task with the same id is still queued, running or waiting for a retry."""


class WorkerShutdownError(_CutShort, RuntimeError):
    """The worker is shutting down or stopped and accepts no new task.

    Raised by `NeonWorker.add_tasks` when a shutdown interrupts the batch,
    ``submitted`` holds the futures of the tasks already queued (the shutdown
    decides their fate) and ``remaining`` the tasks that were not queued.
    """


class UnknownTaskError(NeonError, KeyError):
    """No live or remembered task has this id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TaskPicklingError(NeonError, TypeError):
    """A task cannot be sent to another process (processes or Dask backend)."""


class WorkerLostError(NeonError):
    """The process running a task died (a Dask worker, or a process of the processes backend).

    The task did not fail by itself, so it is retried under the retry policy
    (``retry_attempts``, delays, backoff) even when ``retry_on`` would not
    match it. The original error (e.g. distributed's ``KilledWorker``) is the
    ``__cause__``.
    """


class BackendUnavailableError(NeonError, ConnectionError):
    """The execution backend cannot be used, e.g. the Dask scheduler is unreachable at `start`."""


class FlakyTaskError(NeonError, RuntimeError):
    """The planned failure of an attempt of a synthetic flaky task (`Batch`, kind ``"flaky"``)."""


class UnstorableResultError(TaskPicklingError):
    """A task's result cannot be pickled into the journal (see `neon_nb.open_journal`).

    The task fails with this error at the moment it finishes; it is never retried, since
    another attempt would return the same kind of value. The pickling error is the ``__cause__``.
    """


class JournalError(NeonError):
    """A journal cannot be used: the file is not a neon_nb journal, it was written by a newer
    neon_nb, it is closed, or SQLite could not write to it (the SQLite error is the ``__cause__``).
    """
