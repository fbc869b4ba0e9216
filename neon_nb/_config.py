"""Thread-safe configuration: `WorkerConfig`, `ConfigManager`, `get_config`, `update_config`.

A `WorkerConfig` is a frozen snapshot; the manager swaps whole snapshots under
its lock, so a reader never sees half of an update. Listeners (running
workers) are told about a change after the lock is released.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ._checks import MAX_SECONDS
from ._errors import ConfigError, ConfigTypeError

__all__ = ["FROM_CONFIG", "ConfigManager", "WorkerConfig", "get_config", "update_config"]


class _FromConfig(enum.Enum):
    """The type of `FROM_CONFIG`."""

    FROM_CONFIG = "use the configuration's setting"

    def __repr__(self) -> str:
        return "FROM_CONFIG"


#: Default of a timeout that means "the configured setting" (e.g. ``shutdown_timeout``).
FROM_CONFIG = _FromConfig.FROM_CONFIG

logger = logging.getLogger("neon_nb")

#: Marks this module for the signal handlers: code here may hold a worker's lock.
NEON_HOLDS_WORKER_LOCKS = True

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """One immutable set of worker settings; `get_config()` returns the current one.

    The first eight are the settings of the original Neon Worker API; the
    others refine retries, history and health checks, and name a journal. Each can be given at
    start-up as an environment variable ``NEON_<NAME>`` (``NEON_MAX_WORKERS=8``),
    changed for every worker with `update_config`, or pinned for one worker
    with ``NeonWorker(...)`` or ``worker.configure(...)``.

    * ``max_workers`` (4): number of worker threads (>= 1). A running worker
      resizes its pool live.
    * ``queue_size`` (100): bound of the task queue (>= 0; 0 means unbounded).
      A full queue makes ``add_task`` wait (backpressure).
    * ``shutdown_timeout`` (30.0): seconds ``shutdown()`` waits by default,
      and the bound at interpreter exit.
    * ``log_level`` ("INFO"): level of the ``neon_nb`` logger: DEBUG, INFO,
      WARNING, ERROR or CRITICAL. A task that fails for good is a WARNING.
    * ``retry_attempts`` (3): retries after a failed first attempt (>= 0);
      3 means at most 4 attempts.
    * ``retry_delay`` (1.0): seconds before the first retry (>= 0).
    * ``health_check_interval`` (10.0): seconds between two health checks (> 0).
    * ``enable_metrics`` (True): collect latency histograms, throughput and the
      task stream.
    * ``retry_backoff`` (1.0): multiplier of the delay after each retry (>= 1;
      2.0 doubles it).
    * ``retry_max_delay`` (60.0): upper bound of every retry delay, after
      backoff and jitter, a task's own ``retry_delay`` included (>= 0).
    * ``retry_jitter`` (0.0): random spread of each delay, as a fraction in
      [0, 1] (0.1 means +-10%).
    * ``history_size`` (10000): finished task records kept for
      ``get_task_status`` (>= 0). Counts and metrics keep everything.
    * ``stuck_task_threshold`` (60.0): seconds after which the health check
      flags a running task as stuck (> 0).
    * ``journal`` (None): the path of a journal file (SQLite, created if
      missing) where workers write every task's outcome and find finished tasks
      again (see `NeonWorker`'s ``journal``); None: no journal. Read when a
      worker is created: changing it affects the workers created afterwards.
    """

    max_workers: int = 4
    queue_size: int = 100
    shutdown_timeout: float = 30.0
    log_level: str = "INFO"
    retry_attempts: int = 3
    retry_delay: float = 1.0
    health_check_interval: float = 10.0
    enable_metrics: bool = True
    retry_backoff: float = 1.0
    retry_max_delay: float = 60.0
    retry_jitter: float = 0.0
    history_size: int = 10_000
    stuck_task_threshold: float = 60.0
    journal: str | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _validate(f.name, getattr(self, f.name))

    def replace(self, **changes: Any) -> WorkerConfig:
        """A new snapshot with ``changes`` applied and validated (this one is unchanged)."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys are: {', '.join(sorted(_FIELDS))}"
            )
        changes = {k: _coerce(k, v) for k, v in changes.items()}
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = frozenset(f.name for f in dataclasses.fields(WorkerConfig))

# name -> (kind, lower bound, lower bound inclusive?, upper bound)
_RULES: dict[str, tuple[type, float | None, bool, float | None]] = {
    "max_workers": (int, 1, True, 4096),
    "queue_size": (int, 0, True, None),
    "shutdown_timeout": (float, 0, True, MAX_SECONDS),
    "retry_attempts": (int, 0, True, 1000),
    "retry_delay": (float, 0, True, MAX_SECONDS),
    "health_check_interval": (float, 0, False, MAX_SECONDS),
    "retry_backoff": (float, 1, True, None),
    "retry_max_delay": (float, 0, True, MAX_SECONDS),
    "retry_jitter": (float, 0, True, 1),
    "history_size": (int, 0, True, None),
    "stuck_task_threshold": (float, 0, False, MAX_SECONDS),
}


def _coerce(name: str, value: Any) -> Any:
    """Normalise harmless spellings (an int for a float, 'info' for 'INFO')."""
    if name == "log_level" and isinstance(value, str):
        return str.upper(value)  # (str's own upper: a subclass's could be anything)
    if name == "journal" and isinstance(value, os.PathLike):
        return os.fspath(value)
    if name in _RULES and _RULES[name][0] is float and type(value) is int:
        return float(value)
    return value


def _validate(name: str, value: Any) -> None:
    if name == "log_level":
        if not isinstance(value, str) or value not in LOG_LEVELS:
            kind: type[ConfigError] = ConfigError if isinstance(value, str) else ConfigTypeError
            raise kind(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return
    if name == "enable_metrics":
        if not isinstance(value, bool):
            raise ConfigTypeError(f"enable_metrics must be True or False, got {value!r}")
        return
    if name == "journal":
        if value is not None and (type(value) is not str or not value):
            raise ConfigTypeError(f"journal must be None or the path of a journal file (a "
                                  f"non-empty str), got {value!r}")
        return
    kind, low, inclusive, high = _RULES[name]
    ok_type = (type(value) is int) if kind is int else (type(value) in (int, float))
    if not ok_type:
        raise ConfigTypeError(f"{name} must be {'an int' if kind is int else 'a number'}, "
                          f"got {type(value).__name__} {value!r}")
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number, got NaN")
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (not inclusive and value == low)):
        raise ConfigError(f"{name} must be {'>=' if inclusive else '>'} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")


def config_from_env(environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Defaults, overridden by ``NEON_<SETTING>`` environment variables (e.g. ``NEON_MAX_WORKERS=8``)."""
    environ = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for name in _FIELDS:
        raw = environ.get("NEON_" + name.upper())
        if raw is None:
            continue
        try:
            if name == "journal":
                if raw:  # NEON_JOURNAL= (empty): no journal, as when unset
                    changes[name] = raw
            elif name == "log_level":
                changes[name] = raw
            elif name == "enable_metrics":
                low = raw.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                changes[name] = low in ("1", "true", "yes", "on")
            elif _RULES[name][0] is int:
                changes[name] = int(raw)
            else:
                changes[name] = float(raw)
        except ValueError:
            raise ConfigError(f"environment variable NEON_{name.upper()}={raw!r} is not a valid "
                              f"{name}") from None
    return WorkerConfig().replace(**changes)


ConfigListener = Callable[[WorkerConfig, WorkerConfig, frozenset], object]


def _listener_key(listener: ConfigListener) -> tuple[int, int]:
    # Bound methods are created afresh at each attribute access: key them by what they bind.
    target = getattr(listener, "__self__", None)
    func = getattr(listener, "__func__", None)
    if target is not None and func is not None:
        return id(target), id(func)
    return id(listener), 0


class ConfigManager:
    """Holds the current `WorkerConfig`; thread-safe.

    ``update(**changes)`` is all-or-nothing: every change is validated before the
    snapshot is swapped. Listeners run after the lock is released, in the
    updating thread; one that raises is logged and the others still run.
    """

    def __init__(self, config: WorkerConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config if config is not None else WorkerConfig()
        # (id of the object, id of the function) -> a callable giving the listener, or None
        self._listeners: dict[tuple[int, int], Callable[[], ConfigListener | None]] = {}

    def get(self) -> WorkerConfig:
        """The current snapshot (immutable)."""
        return self._config  # a single attribute read is atomic

    def update(self, **changes: Any) -> WorkerConfig:
        """Validate and apply ``changes``; return the new snapshot."""
        with self._lock:
            old = self._config
            new = old.replace(**changes)
            self._config = new
            listeners = self._live_listeners()
            changed = frozenset(k for k in changes if getattr(old, k) != getattr(new, k))
            if "log_level" in changed:  # under the lock: concurrent updates apply in order
                logging.getLogger("neon_nb").setLevel(new.log_level)
        if changed:
            for listener in listeners:
                try:
                    listener(old, new, changed)
                except Exception:
                    logger.exception("config listener %r failed", listener)
        return new

    def _live_listeners(self) -> list[ConfigListener]:
        """The listeners still alive; the dead ones are forgotten (lock held)."""
        live = []
        for key, ref in list(self._listeners.items()):
            listener = ref()
            if listener is None:
                del self._listeners[key]
            else:
                live.append(listener)
        return live

    def reset(self) -> WorkerConfig:
        """Back to the defaults (and ``NEON_*`` environment variables)."""
        fresh = config_from_env()
        return self.update(**fresh.as_dict())

    def add_listener(self, listener: ConfigListener) -> None:
        """Call ``listener(old, new, changed)`` after each update that changes a setting.

        A bound method is held weakly (a running worker registers its own: it may
        be garbage-collected); another callable is held until `remove_listener`.
        """
        target = getattr(listener, "__self__", None)
        if target is not None and hasattr(listener, "__func__"):
            ref: Callable[[], ConfigListener | None] = weakref.WeakMethod(listener)
        else:
            ref = lambda: listener  # noqa: E731 - a strong reference with the weak one's interface
        with self._lock:
            self._listeners[_listener_key(listener)] = ref

    def remove_listener(self, listener: ConfigListener) -> None:
        with self._lock:
            self._listeners.pop(_listener_key(listener), None)


def _initial_config() -> WorkerConfig:
    """The environment's settings; a bad ``NEON_*`` variable warns and is ignored.

    (``import neon_nb`` must not fail because of one stray variable.)
    """
    try:
        return config_from_env()
    except ConfigError:
        pass
    good = {}
    for key, raw in os.environ.items():
        if not key.startswith("NEON_"):
            continue
        try:
            config_from_env({key: raw})
        except ConfigError as exc:
            warnings.warn(f"neon_nb: ignoring {exc}", RuntimeWarning, stacklevel=3)
        else:
            good[key] = raw
    return config_from_env(good)


_manager = ConfigManager(_initial_config())
# The log_level setting is the neon_nb logger's level from the start.
logger.setLevel(_manager.get().log_level)


def _after_fork_in_child() -> None:
    # The manager's lock may have been held by a thread that stayed in the parent.
    _manager._lock = threading.Lock()  # noqa: SLF001 - this module's own fork handler


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def get_config() -> WorkerConfig:
    """The current process-wide configuration (an immutable snapshot). Thread-safe."""
    return _manager.get()


def update_config(**changes: Any) -> WorkerConfig:
    """Change process-wide settings, all or nothing; running workers follow. Thread-safe.

    Raises `ConfigError` naming the key and the allowed values; on error nothing changes.
    """
    return _manager.update(**changes)


def config_manager() -> ConfigManager:
    """The process-wide `ConfigManager`."""
    return _manager
