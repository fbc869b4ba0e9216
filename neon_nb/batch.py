"""Batches of synthetic tasks: a registry of task kinds and a seeded, deterministic `Batch`.

`Batch` is the programmatic twin of the notebook's `BatchBuilder` widget
(``from neon_nb import Batch``; also importable from `neon_nb.widgets`)::

    Batch(kind="io", count=100, duration=("uniform", 0.01, 0.05),
          priority=("classes", [0, 5, 10]), retries=2, seed=0).submit(worker)

Same parameters and seed, same tasks: durations, priorities and which
attempts fail are all drawn from one ``random.Random(seed)`` when the batch is
built. Pure Python: no Jupyter library is imported here.

Built-in kinds: ``"io"`` (sleeps: releases the GIL, like waiting on a
network), ``"cpu"`` (computes for the duration: holds the GIL), and
``"flaky"`` (sleeps, then fails with a probability per attempt). Register
your own with `register_task_kind`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._worker import NeonWorker

from ._errors import FlakyTaskError
from ._task import Task

__all__ = [
    "Batch",
    "FlakyTaskError",
    "TaskKind",
    "cpu_task",
    "get_task_kind",
    "io_task",
    "register_task_kind",
    "task_kinds",
]

DISTRIBUTIONS = ("fixed", "uniform", "exponential")
PRIORITY_MODES = ("fixed", "random", "classes")


# ------------------------------------------------------------------ built-ins
def io_task(duration: float) -> float:
    """IO-bound: wait ``duration`` seconds without holding the GIL; return the duration."""
    time.sleep(duration)
    return duration


def cpu_task(duration: float) -> int:
    """CPU-bound: hash for ``duration`` seconds while holding the GIL; return the rounds done."""
    end = time.perf_counter() + duration
    h = hashlib.sha256()
    rounds = 0
    while True:
        for _ in range(64):
            h.update(b"neon")
        rounds += 1
        if time.perf_counter() >= end:
            return rounds


class _Flaky:
    """``fn(*args)``, except that the first ``failures`` calls raise `FlakyTaskError` after it.

    The worker runs one task's attempts one after another, never two at once,
    so the plain counter needs no lock. With the ``threads`` backend the same
    object sees every attempt; process and Dask backends get a fresh copy per
    attempt (the counter restarts), so there a planned failure repeats.
    """

    __slots__ = ("calls", "failures", "fn")

    def __init__(self, fn: Callable[..., Any], failures: int) -> None:
        self.fn = fn
        self.failures = failures
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        attempt = self.calls
        self.calls += 1
        result = self.fn(*args)
        if attempt < self.failures:
            raise FlakyTaskError(f"planned failure of attempt {attempt + 1}")
        return result

    def __repr__(self) -> str:
        return f"flaky({getattr(self.fn, '__name__', self.fn)}, fails {self.failures}x)"

    # Keep the name of the wrapped function in logs and task reprs.
    @property
    def __name__(self) -> str:
        return getattr(self.fn, "__name__", "flaky")


# ------------------------------------------------------------------- registry
@dataclass(frozen=True)
class TaskKind:
    """A named kind of synthetic task.

    ``fn`` is called as ``fn(duration)`` (``fn()`` when ``takes_duration`` is
    False). ``failure_probability`` is the default chance that an attempt
    fails (a `Batch` may override it). Module-level functions keep the kind
    usable with the process backend.
    """

    name: str
    fn: Callable[..., Any]
    description: str = ""
    takes_duration: bool = True
    default_duration: float = 0.05
    failure_probability: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"TaskKind.name must be a non-empty str, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"TaskKind.fn must be callable, got {self.fn!r} (kind {self.name!r})")
        if not _number(self.default_duration) or self.default_duration < 0:
            raise ValueError(f"TaskKind.default_duration must be a number >= 0, got "
                             f"{self.default_duration!r} (kind {self.name!r})")
        _check_probability(self.failure_probability, f"TaskKind.failure_probability (kind {self.name!r})")


_registry_lock = threading.Lock()
_registry: dict[str, TaskKind] = {}


def register_task_kind(name: str, fn: Callable[..., Any], *, description: str = "",
                       takes_duration: bool = True, default_duration: float = 0.05,
                       failure_probability: float = 0.0, replace: bool = False) -> TaskKind:
    """Add a kind of task to the registry (for `Batch` and the `BatchBuilder` dropdown).

    Raises ValueError if ``name`` is taken, unless ``replace``. Thread-safe.
    A `BatchBuilder` lists the kinds registered when it was created.
    """
    kind = TaskKind(name, fn, description, takes_duration, default_duration, failure_probability)
    with _registry_lock:
        if name in _registry and not replace:
            raise ValueError(f"task kind {name!r} is already registered; pass replace=True to "
                             f"replace it (registered: {', '.join(sorted(_registry))})")
        _registry[name] = kind
    return kind


def task_kinds() -> Mapping[str, TaskKind]:
    """A read-only copy of the registry, in registration order."""
    with _registry_lock:
        return MappingProxyType(dict(_registry))


def get_task_kind(kind: str | TaskKind) -> TaskKind:
    """The registered kind of that name (a `TaskKind` is returned as is)."""
    if isinstance(kind, TaskKind):
        return kind
    with _registry_lock:
        found = _registry.get(kind)
        names = ", ".join(sorted(_registry))
    if found is None:
        raise ValueError(f"unknown task kind {kind!r}; registered kinds: {names} "
                         f"(add one with register_task_kind)")
    return found


# ---------------------------------------------------------------------- batch
_batch_numbers = itertools.count()


@dataclass(frozen=True)
class Batch:
    """A seeded batch of synthetic tasks; `tasks` builds them, `submit` queues them.

    * ``kind``: a registered kind name or a `TaskKind`.
    * ``count``: number of tasks.
    * ``duration``: seconds, as a number (fixed), ``("fixed", d)``,
      ``("uniform", low, high)`` or ``("exponential", mean)``; None is the
      kind's default.
    * ``priority``: an int (fixed), ``("fixed", p)``, ``("random", low, high)``
      (integers, both ends included) or ``("classes", [p, ...])`` (uniform
      choice among the classes).
    * ``retries``: retries after a failed first attempt (None: the worker's
      ``retry_attempts``); ``retry_delay``: seconds before a retry (None: the
      worker's).
    * ``failure_probability``: chance that an attempt fails (None: the kind's).
    * ``seed``: same seed, same tasks; None draws a fresh seed.
    * ``id_prefix``: task ids are ``f"{id_prefix}{i}"``; by default
      ``"{kind}-b{n}-"`` with ``n`` counting batches in this process.
    """

    kind: str | TaskKind = "io"
    count: int = 10
    duration: Any = None
    priority: Any = 0
    retries: int | None = None
    retry_delay: float | None = None
    failure_probability: float | None = None
    seed: int | None = None
    id_prefix: str | None = None
    _plan: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kind = get_task_kind(self.kind)
        if type(self.count) is not int or self.count < 0:
            raise ValueError(f"Batch.count must be an int >= 0, got {self.count!r}")
        duration = _parse_duration(kind.default_duration if self.duration is None else self.duration)
        priority = _parse_priority(self.priority)
        if self.retries is not None and (type(self.retries) is not int or self.retries < 0):
            raise ValueError(f"Batch.retries must be None or an int >= 0, got {self.retries!r}")
        if self.retry_delay is not None and (not _number(self.retry_delay) or self.retry_delay < 0):
            raise ValueError(f"Batch.retry_delay must be None or a number >= 0, got {self.retry_delay!r}")
        p_fail = kind.failure_probability if self.failure_probability is None else self.failure_probability
        _check_probability(p_fail, "Batch.failure_probability")
        if self.seed is not None and type(self.seed) is not int:
            raise TypeError(f"Batch.seed must be None or an int, got {self.seed!r}")
        prefix = self.id_prefix
        if prefix is None:
            prefix = f"{kind.name}-b{next(_batch_numbers)}-"
            object.__setattr__(self, "id_prefix", prefix)
        elif not isinstance(prefix, str):
            raise TypeError(f"Batch.id_prefix must be None or a str, got {prefix!r}")
        # Draw everything now, in one fixed order, so tasks() is the same at every call.
        rng = random.Random(self.seed)
        # At most retries + 1 attempts can fail; which is "all of them" decides the outcome.
        max_fail = (self.retries if self.retries is not None else 1000) + 1
        plan = []
        for _ in range(self.count):
            d = duration(rng)
            p = priority(rng)
            failures = 0
            if p_fail > 0:
                while failures < max_fail and rng.random() < p_fail:
                    failures += 1
            plan.append((d, p, failures))
        object.__setattr__(self, "_plan", tuple(plan))
        object.__setattr__(self, "_kind", kind)

    @property
    def task_kind(self) -> TaskKind:
        return self._kind  # type: ignore[attr-defined]

    @property
    def durations(self) -> tuple[float, ...]:
        return tuple(d for d, _, _ in self._plan)

    @property
    def priorities(self) -> tuple[int, ...]:
        return tuple(p for _, p, _ in self._plan)

    @property
    def planned_failures(self) -> tuple[int, ...]:
        """How many leading attempts of each task fail (capped at ``retries + 1``)."""
        return tuple(f for _, _, f in self._plan)

    def tasks(self) -> list[Task]:
        """The batch as `Task` objects (new callables each call: attempt counters start at 0)."""
        kind = self.task_kind
        fn = kind.fn
        out = []
        for i, (d, p, failures) in enumerate(self._plan):
            call = _Flaky(fn, failures) if failures else fn
            args = (d,) if kind.takes_duration else ()
            out.append(Task(f"{self.id_prefix}{i}", call, args, priority=p,
                            retry_attempts=self.retries, retry_delay=self.retry_delay))
        return out

    def submit(self, worker: NeonWorker, block: bool = True, timeout: float | None = None, *,
               background: bool = False) -> list[Any]:
        """Queue the batch on ``worker`` and return the futures; see `NeonWorker.add_tasks`.

        ``background=True`` returns at once, the tasks entering the queue as room frees.
        """
        return worker.add_tasks(self.tasks(), block=block, timeout=timeout, background=background)

    def expected(self, retry_attempts: int | None = None) -> dict[str, int]:
        """Outcome counts if every task runs: ``succeeded``, ``failed`` and ``retried``.

        Holds on the threads backend, with the worker retrying `FlakyTaskError`
        (its default ``retry_on`` retries every Exception). ``retry_attempts``
        is the worker's setting, used when ``retries`` is None (default 3).
        """
        retries = self.retries if self.retries is not None else (
            3 if retry_attempts is None else retry_attempts)
        failed = sum(1 for f in self.planned_failures if f > retries)
        retried = sum(min(f, retries) for f in self.planned_failures)
        return {"succeeded": self.count - failed, "failed": failed, "retried": retried}

    def describe(self) -> str:
        """One line: kind, count, and the drawn spread of durations and priorities."""
        if not self._plan:
            return f"{self.task_kind.name}: no task"
        ds, ps = self.durations, self.priorities
        return (f"{self.task_kind.name}: {self.count} tasks, duration {min(ds):.3f}-{max(ds):.3f} s, "
                f"priorities {sorted(set(ps))}")


# ---------------------------------------------------------------- parsing
def _number(v: Any) -> bool:
    return type(v) in (int, float) and not math.isnan(v)


def _check_probability(p: Any, where: str) -> None:
    if not _number(p) or not 0 <= p <= 1:
        raise ValueError(f"{where} must be a number in [0, 1], got {p!r}")


def _parse_duration(spec: Any) -> Callable[[random.Random], float]:
    if _number(spec):
        spec = ("fixed", spec)
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in DISTRIBUTIONS:
        raise ValueError(f"duration must be seconds, ('fixed', d), ('uniform', low, high) or "
                         f"('exponential', mean), got {spec!r}")
    name, *params = spec
    want = {"fixed": 1, "uniform": 2, "exponential": 1}[name]
    if len(params) != want or not all(_number(v) and v >= 0 for v in params):
        raise ValueError(f"duration {name!r} takes {want} number(s) >= 0, got {spec!r}")
    if name == "fixed":
        d = float(params[0])
        return lambda rng: d
    if name == "uniform":
        low, high = map(float, params)
        if high < low:
            raise ValueError(f"duration ('uniform', low, high) needs low <= high, got {spec!r}")
        return lambda rng: rng.uniform(low, high)
    mean = float(params[0])
    return (lambda rng: rng.expovariate(1.0 / mean)) if mean > 0 else (lambda rng: 0.0)


def _parse_priority(spec: Any) -> Callable[[random.Random], int]:
    if type(spec) is int:
        spec = ("fixed", spec)
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in PRIORITY_MODES:
        raise ValueError(f"priority must be an int, ('fixed', p), ('random', low, high) or "
                         f"('classes', [p, ...]), got {spec!r}")
    name, *params = spec
    if name == "fixed":
        if len(params) != 1 or type(params[0]) is not int:
            raise ValueError(f"priority ('fixed', p) takes one int, got {spec!r}")
        p = params[0]
        return lambda rng: p
    if name == "random":
        if len(params) != 2 or not all(type(v) is int for v in params) or params[1] < params[0]:
            raise ValueError(f"priority ('random', low, high) takes two ints, low <= high, got {spec!r}")
        low, high = params
        return lambda rng: rng.randint(low, high)
    classes = params[0] if len(params) == 1 and isinstance(params[0], Sequence) else params
    classes = list(classes)
    if not classes or not all(type(v) is int for v in classes):
        raise ValueError(f"priority ('classes', [p, ...]) takes a non-empty list of ints, got {spec!r}")
    return lambda rng: rng.choice(classes)


# ------------------------------------------------------------------ built-in kinds
register_task_kind("io", io_task, description="IO-bound: sleeps for the duration (releases the GIL)",
                   default_duration=0.05)
register_task_kind("cpu", cpu_task, description="CPU-bound: hashes for the duration (holds the GIL)",
                   default_duration=0.02)
register_task_kind("flaky", io_task, description="sleeps, then fails with a probability per attempt",
                   default_duration=0.03, failure_probability=0.25)
