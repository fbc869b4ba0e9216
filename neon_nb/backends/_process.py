"""`ProcessBackend`: run tasks in a `concurrent.futures.ProcessPoolExecutor`, beyond the GIL.

How a task travels: the worker thread pickles ``(fn, args, kwargs)`` itself
(with cloudpickle when it is installed, so lambdas and functions defined in a
notebook work too), submits the bytes to the pool, and blocks on the pool's
future. In the child, `_run_payload` runs the task and pickles its outcome,
result or exception, with the same library: an exception class defined in a
notebook comes back as itself, with the child's traceback as its
``__cause__``. Nothing here is ever called with the worker's lock held.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import pickle
import threading
import traceback
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .._errors import BackendUnavailableError, TaskPicklingError, WorkerLostError
from ._base import Backend
from ._main_guard import GUARD_HINT, main_guard_problem
from ._support import check_picklable, close_within

__all__ = ["ProcessBackend"]

logger = logging.getLogger("neon_nb")

_SERIALIZERS = ("auto", "cloudpickle", "pickle")
#: How to get cloudpickle, which lambdas, closures and functions defined in a notebook need.
CLOUDPICKLE_INSTALL = "pip install 'neon_nb[processes]'"


class _RemoteTraceback(Exception):
    """The traceback of a task's exception in its worker process (set as ``__cause__``)."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def _run_payload(payload: bytes, cloud: bool) -> bytes:
    """In the child process: run one task and return its outcome as bytes. Never raises.

    The outcome is ``(True, result, None)``, or ``(False, pickled_exception, info)`` where
    ``info`` is ``(type name, message, traceback text, pickling error)``, plain strings that
    the parent can read even when it cannot rebuild the exception itself.
    """
    if cloud:
        import cloudpickle

        dumps = cloudpickle.dumps
    else:
        dumps = pickle.dumps
    try:
        fn, args, kwargs = pickle.loads(payload)
    except BaseException as exc:  # reported to the parent, never fatal here
        hint = "" if cloud else (f" (a function defined in a notebook or in the main script travels "
                                 f"by value with cloudpickle: {CLOUDPICKLE_INSTALL})")
        return _failure(dumps, TaskPicklingError(
            f"the task could not be loaded in the worker process ({type(exc).__name__}: "
            f"{_message(exc)}); its function's module must be importable there{hint}"), None)
    try:
        value = fn(*args, **kwargs) if kwargs else fn(*args)
    except BaseException as exc:  # SystemExit too: it must not kill the process
        return _failure(dumps, exc, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        return dumps((True, value, None))
    except Exception as exc:
        return _failure(dumps, TaskPicklingError(
            f"the task's result ({type(value).__name__}) cannot be pickled back from the worker "
            f"process ({type(exc).__name__}: {_message(exc)}); return plain data instead"), None)


def _failure(dumps: Callable[[Any], bytes], exc: BaseException, tb: str | None) -> bytes:
    """The outcome of a failed task; the exception is pickled apart, so its loss is not the info's."""
    try:
        blob, error = dumps(exc), None
    except Exception as err:
        blob, error = None, f"{type(err).__name__}: {_message(err)}"
    return dumps((False, blob, (type(exc).__qualname__, _message(exc), tb, error)))


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a user's __str__ may raise; the message must still travel
        return f"<str() of this {type(exc).__name__} raised>"


def _outcome(out: bytes) -> Any:
    """In the parent: the task's result, or raise its exception (or a `TaskPicklingError`)."""
    try:
        ok, value, info = pickle.loads(out)
    except Exception as exc:  # only a result can fail here: a failure's info is plain strings
        raise TaskPicklingError(
            f"the task's result cannot be unpickled in this process ({type(exc).__name__}: "
            f"{_message(exc)}); return plain data (built-in types, or instances of classes that "
            f"pickle can rebuild here)") from exc
    if ok:
        return value
    type_name, message, tb, error = info
    if value is not None:
        try:
            remote = pickle.loads(value)
        except Exception as err:
            error = f"it cannot be unpickled in this process ({type(err).__name__}: {_message(err)})"
        else:
            if tb is not None:
                remote.__cause__ = _RemoteTraceback(tb)
            raise remote
    else:
        error = f"it cannot be pickled in the worker process ({error})"
    raise TaskPicklingError(
        f"the task raised {type_name}: {message}; that exception cannot be sent back as itself: {error}. "
        f"pickle rebuilds an exception as type(exc)(*exc.args): an __init__ that takes other "
        f"arguments than it passes to super().__init__() needs a __reduce__ method. The task's "
        f"traceback in the worker process:\n{tb or '(none)'}")


def _ping() -> bool:
    """In the child process: nothing. Proves that a fresh pool's processes can start."""
    return True


#: How long a probe waits for a fresh process to start before giving up on a diagnosis.
_PROBE_TIMEOUT = 60.0


def _default_context() -> str:
    # Not "fork": the parent has threads (worker threads, maybe an event loop), and forking a
    # multi-threaded process can deadlock the child (a lock held by another thread at the fork).
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ProcessBackend(Backend):
    """Run each task in a worker process: for CPU-bound pure-Python work that threads cannot speed up.

    The pool has ``max_workers`` processes, the worker's setting: as each
    worker thread has at most one task in the pool, a task never waits inside
    the pool, and NeonWorker's priority order is the order tasks start. When
    the worker is resized, the next task starts a new pool of the new size;
    the old pool finishes its running tasks and its processes exit. Processes
    start on demand and are reused.

    ``serializer``: ``"auto"`` uses cloudpickle when installed (lambdas,
    closures and functions defined in a notebook work;
    ``pip install 'neon_nb[processes]'`` installs it) and the standard
    pickle otherwise (module-level functions only); or force either.
    ``mp_context``: a start method name or a multiprocessing context; by
    default ``"forkserver"`` (``"spawn"`` where there is none), never
    ``"fork"`` with live threads. As with the standard library, a script that
    uses processes needs the ``if __name__ == "__main__":`` guard (each worker
    process imports the main module): `start` raises `BackendUnavailableError`
    naming the line when a script starts its worker outside it.
    ``max_tasks_per_child``: replace a process after that many tasks.

    A task that cannot be pickled fails at ``add_task`` with
    `TaskPicklingError`. A process that dies (killed, out of memory, a crash
    in C code) breaks the pool: its tasks raise `WorkerLostError` and are
    retried under the retry policy on a fresh pool. A pool whose processes
    cannot even start (the main module fails when a child imports it) is not
    retried: the task, and every later one, raises one `BackendUnavailableError`
    that says so. At shutdown, tasks still running after the timeout are
    stopped by terminating their processes, so a hung task cannot block
    interpreter exit.

    One backend serves one worker at a time. Thread-safe.
    """

    name = "processes"
    always_retry = (WorkerLostError,)

    def __init__(self, *, mp_context: Any = None, max_tasks_per_child: int | None = None,
                 serializer: str = "auto") -> None:
        if serializer not in _SERIALIZERS:
            raise ValueError(f"serializer must be one of {_SERIALIZERS}, got {serializer!r}")
        cloud = serializer == "cloudpickle" or (
            serializer == "auto" and importlib.util.find_spec("cloudpickle") is not None)
        if cloud:
            try:
                import cloudpickle
            except ImportError as exc:
                raise ImportError(
                    f"serializer='cloudpickle' needs cloudpickle: {CLOUDPICKLE_INSTALL}") from exc

            self._dumps: Callable[[Any], bytes] = cloudpickle.dumps
            self._pickler: type[pickle.Pickler] = cloudpickle.CloudPickler
        else:
            self._dumps = pickle.dumps
            self._pickler = pickle.Pickler
        self._cloud = cloud
        self.serializer = "cloudpickle" if cloud else "pickle"
        if mp_context is None:
            mp_context = _default_context()
        if isinstance(mp_context, str):
            if mp_context not in multiprocessing.get_all_start_methods():
                raise ValueError(f"mp_context must be one of {multiprocessing.get_all_start_methods()} "
                                 f"or a multiprocessing context, got {mp_context!r}")
            mp_context = multiprocessing.get_context(mp_context)
        self._context = mp_context
        if max_tasks_per_child is not None and not (
                type(max_tasks_per_child) is int and max_tasks_per_child >= 1):
            raise ValueError(f"max_tasks_per_child must be None or an int >= 1, got "
                             f"{max_tasks_per_child!r}")
        self._max_tasks_per_child = max_tasks_per_child

        self._lock = threading.Lock()  # guards the fields below; never held while waiting on a task
        self._worker: weakref.ref | None = None
        self._current: tuple[ProcessPoolExecutor, int] | None = None  # (pool, size): one read
        self._draining: list[ProcessPoolExecutor] = []  # replaced pools still finishing tasks
        self._inflight = 0
        self._stopped = False
        # Whether processes can start here: True once any task came back; an error once a fresh
        # pool's probe broke (then every call raises it, and no pool is created again).
        self._can_start: bool | BackendUnavailableError = False
        self._probe_lock = threading.Lock()  # one diagnosis at a time; held while a probe runs

    # ------------------------------------------------------------- lifecycle
    def start(self, worker: Any) -> None:
        """Bind to ``worker``; raise `BackendUnavailableError` if a script starts it unguarded."""
        problem = main_guard_problem(self._context.get_start_method())
        if problem is not None:
            raise BackendUnavailableError(f"the processes backend cannot start here: {problem}")
        with self._lock:
            bound = None if self._worker is None else self._worker()
            if bound is not None and bound is not worker and not self._stopped:
                raise ValueError(f"this ProcessBackend already serves worker {bound.name!r}; "
                                 f"create one backend per worker")
            self._worker = weakref.ref(worker)
            self._stopped = False
        self._pool()

    def stop(self, worker: Any, timeout: float | None = None) -> None:
        """Close the pools; return within ``timeout`` (what is left of the shutdown's bound).

        Pools still closing then finish in a background thread, with a warning logged.
        """
        with self._lock:
            self._stopped = True
            pools = list(self._draining)
            if self._current is not None:
                pools.append(self._current[0])
            self._current = None
            self._draining = []
            abandoned = self._inflight

        def close() -> None:
            for pool in pools:
                if abandoned:
                    # Tasks still running after the shutdown timeout: stop them, or a hung task
                    # would keep its process (and the pool's manager thread) alive and block
                    # interpreter exit. Their worker threads then see WorkerLostError; nothing
                    # is retried.
                    _terminate_processes(pool)
                    pool.shutdown(wait=False, cancel_futures=True)
                else:
                    pool.shutdown(wait=True)

        if pools:
            close_within(close, timeout, f"closing the process pool of worker {worker.name!r}")

    @property
    def processes(self) -> int:
        """How many processes the current pool has started (0 before the first task)."""
        cur = self._current
        return 0 if cur is None else len(getattr(cur[0], "_processes", None) or ())

    # ------------------------------------------------------------ submission
    def check_task(self, task_id: Hashable, fn: Callable, args: tuple, kwargs: dict | None) -> None:
        if self._cloud:
            hint = ("Pass only picklable arguments and closures (not locks, open files, sockets or "
                    "generators); create such objects inside the task.")
        else:
            hint = (f"Define the function at module level (lambdas, closures and notebook functions "
                    f"need cloudpickle: {CLOUDPICKLE_INSTALL}) and pass only picklable arguments "
                    f"(not locks, open files, sockets or generators).")
        check_picklable(self._pickler, "processes", task_id, fn, args, kwargs, hint)

    # ------------------------------------------------------------- execution
    def call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker process; block this worker thread until it ends."""
        payload = self._dumps((fn, args, kwargs))
        with self._lock:
            self._inflight += 1
        try:
            pool, fut = self._submit(payload)
            try:
                out = fut.result()
            except BrokenProcessPool as exc:
                self._discard(pool)
                self._check_processes_start(exc)
                raise WorkerLostError(
                    f"a worker process died while this task ran ({exc}); the task is retried on a "
                    f"fresh process pool under the retry policy") from exc
        finally:
            with self._lock:
                self._inflight -= 1
        self._can_start = True  # a task came back: this environment can start processes
        return _outcome(out)

    def _submit(self, payload: bytes) -> tuple[ProcessPoolExecutor, Future]:
        for _ in range(5):
            if isinstance(self._can_start, BackendUnavailableError):
                raise self._can_start
            pool = self._pool()
            try:
                return pool, pool.submit(_run_payload, payload, self._cloud)
            except BrokenProcessPool as exc:
                self._discard(pool)  # it broke before this task went in: use a fresh one
                self._check_processes_start(exc)
            except RuntimeError:
                pass  # shut down by a concurrent resize (or stop, which _pool() reports)
        raise BackendUnavailableError("the processes backend could not start a process pool")

    def _check_processes_start(self, broken: BrokenProcessPool) -> None:
        """After a pool broke: raise `BackendUnavailableError` if processes cannot start at all.

        A pool breaks when one of its processes dies: killed while running a task
        (a lost worker, retried), or exiting during start-up, before any task
        (the main module fails in the child): retrying would only break pool
        after pool. Unless a task has already come back, one fresh pool runs a
        no-op to tell the two apart; if that breaks too, the error is kept and
        raised by every later call, and no pool is created again.
        """
        if self._can_start is True or self._stopped:
            return  # (stopped: the pool was closed under its tasks on purpose)
        with self._probe_lock:  # the other threads that saw the break wait for this diagnosis
            if self._can_start is False:
                self._can_start = self._probe(broken)
        if isinstance(self._can_start, BackendUnavailableError):
            raise self._can_start

    def _probe(self, broken: BrokenProcessPool) -> bool | BackendUnavailableError:
        try:
            pool = self._pool()
        except BackendUnavailableError:
            return False  # stopped meanwhile: no verdict
        try:
            pool.submit(_ping).result(timeout=_PROBE_TIMEOUT)
        except BrokenProcessPool:
            self._discard(pool)
            error = BackendUnavailableError(
                f"the processes backend cannot start worker processes: each new process exits while "
                f"starting, before it runs any task (its own error is printed above, on stderr; the "
                f"pool reported: {broken}). Most often the main module fails when a worker process "
                f"imports it: {GUARD_HINT}, and make sure the module imports cleanly in a fresh "
                f"process.")
            logger.error("%s", error)
            return error
        except Exception:  # a slow start or a concurrent stop: no verdict, the task is retried
            return False
        return True

    def _pool(self) -> ProcessPoolExecutor:
        """The pool sized to the worker's current ``max_workers``; a new one after a resize."""
        worker = None if self._worker is None else self._worker()
        cur = self._current
        if worker is None:
            if cur is not None:
                return cur[0]
            raise BackendUnavailableError("the processes backend is not started (or its worker is gone)")
        n = worker.config.max_workers
        if cur is not None and cur[1] == n:
            return cur[0]
        with self._lock:
            if self._stopped:
                raise BackendUnavailableError(f"the processes backend of worker {worker.name!r} is "
                                              f"stopped")
            cur = self._current
            if cur is not None and cur[1] == n:
                return cur[0]
            opts: dict[str, Any] = {"mp_context": self._context}
            if self._max_tasks_per_child is not None:
                opts["max_tasks_per_child"] = self._max_tasks_per_child
            pool = ProcessPoolExecutor(n, **opts)
            self._current = (pool, n)
            if cur is not None:
                # The old pool finishes what it runs; shutdown(wait=False) lets its processes
                # exit afterwards. It is kept until stop() in case those tasks hang.
                self._draining = [p for p in self._draining if _has_processes(p)] + [cur[0]]
        if cur is not None:
            cur[0].shutdown(wait=False)
        return pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (once, whichever thread sees it first)."""
        with self._lock:
            if self._current is not None and self._current[0] is pool:
                self._current = None
        pool.shutdown(wait=False)

    def __repr__(self) -> str:
        cur = self._current
        size = "not started" if cur is None else f"{cur[1]} processes"
        return f"<ProcessBackend {self._context.get_start_method()} {self.serializer} {size}>"


def _has_processes(pool: ProcessPoolExecutor) -> bool:
    procs: dict[int, Any] = getattr(pool, "_processes", None) or {}
    return any(p.is_alive() for p in list(procs.values()))


def _terminate_processes(pool: ProcessPoolExecutor) -> None:
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    procs: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for p in list(procs.values()):
        try:
            p.terminate()
        except Exception:  # pragma: no cover - already gone
            pass
