"""`DaskBackend`: run tasks on a Dask distributed cluster, past one machine.

NeonWorker still schedules (priority, bounded queue, retries, events); each
worker thread submits its task with ``client.submit(..., pure=False)`` under
a unique key (so Dask never merges two attempts or two equal tasks) and blocks
on the Dask future. ``distributed`` is imported only when the backend starts:
importing neon_nb never imports it.
"""

from __future__ import annotations

import functools
import logging
import socket
import struct
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import CancelledError
from typing import Any

from .._errors import BackendUnavailableError, WorkerLostError, WorkerShutdownError
from ._base import Backend
from ._support import check_picklable, close_within

__all__ = ["DaskBackend"]

logger = logging.getLogger("neon_nb")

_HINT = ("Pass only picklable arguments and closures (not locks, open files, sockets or generators); "
         "create such objects inside the task, or load them there.")

#: Dask's default ports: the scheduler, and its dashboard (HTTP), which is often given by mistake.
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
#: A Dask message starts with its length (8 bytes); a handshake is far below this.
_MAX_HANDSHAKE = 1 << 20


class DaskBackend(Backend):
    """Run each task on a Dask distributed cluster.

    Three ways to get a cluster, exactly one of them:

    * ``DaskBackend(client)``: an existing ``distributed.Client``, used as is
      and never closed by neon_nb (several backends may share it);
    * ``DaskBackend(address="tcp://host:8786")`` (or a string as the first
      argument): connect to a running scheduler; `start` raises
      `BackendUnavailableError` naming the address if it cannot be reached
      within ``connect_timeout`` seconds;
    * ``DaskBackend()``: start a ``LocalCluster`` for you at `start`, closed
      at shutdown. ``n_workers`` (Dask's default: one per core),
      ``threads_per_worker`` (1), ``processes`` (True), ``host``
      (``"127.0.0.1"``: nothing listens beyond this machine) and
      ``dashboard_address`` (None: Dask's own dashboard is off; ``":8787"``
      turns it on) and any other ``LocalCluster`` keyword apply here only.

    Each worker thread has one task on the cluster at a time, so size
    ``max_workers`` to the cluster's threads for priority to act at once. More
    threads than that keep more tasks in flight, which pays for many short
    tasks (a Dask round trip takes milliseconds); the extra tasks wait inside
    Dask, counted as running by NeonWorker, in the order NeonWorker sent them.

    A worker process that dies while running a task makes the task raise
    `WorkerLostError`, which NeonWorker retries under its retry policy even if
    ``retry_on`` does not list it. Dask has its own rescheduling of such tasks
    (``distributed.scheduler.allowed-failures``, 3 by default) that runs
    first; a cluster started by this backend sets it to 0, so that every loss
    is seen, counted and retried by NeonWorker.

    At shutdown, tasks still running after the timeout are cancelled on the
    cluster (Dask cannot interrupt a running function: on a shared cluster it
    runs to its end). One backend serves one worker at a time. Thread-safe.
    """

    name = "dask"
    always_retry = (WorkerLostError,)

    def __init__(self, client: Any = None, *, address: str | None = None,
                 n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool | None = None, host: str | None = None,
                 dashboard_address: str | None = None, connect_timeout: float = 5.0,
                 **cluster_kwargs: Any) -> None:
        if isinstance(client, str):
            if address is not None:
                raise ValueError(f"give the scheduler address once: client={client!r} and "
                                 f"address={address!r}")
            client, address = None, client
        if client is not None and address is not None:
            raise ValueError(f"give either client= (a distributed.Client) or address= (a scheduler "
                             f"address), not both; got client={client!r}, address={address!r}")
        if client is not None and not _is_client(client):
            raise TypeError(f"client must be a distributed.Client (or an address string), got "
                            f"{type(client).__name__} {client!r}")
        if address is not None and (not isinstance(address, str) or not address):
            raise TypeError(f"address must be a scheduler address like 'tcp://10.0.0.5:8786', got "
                            f"{address!r}")
        local = {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                 "processes": processes, "host": host, "dashboard_address": dashboard_address,
                 **cluster_kwargs}
        given = sorted(k for k, v in local.items() if v is not None)
        if (client is not None or address is not None) and given:
            raise ValueError(f"{', '.join(given)} configure a LocalCluster started by DaskBackend() "
                             f"and cannot be used with client= or address=")
        if type(connect_timeout) not in (int, float) or not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be a number of seconds > 0, got {connect_timeout!r}")
        if n_workers is not None and not (type(n_workers) is int and n_workers >= 1):
            raise ValueError(f"n_workers must be None or an int >= 1, got {n_workers!r}")
        if threads_per_worker is not None and not (
                type(threads_per_worker) is int and threads_per_worker >= 1):
            raise ValueError(f"threads_per_worker must be None or an int >= 1, got {threads_per_worker!r}")
        self._user_client = client
        self.address = address
        self.connect_timeout = float(connect_timeout)
        self._local = {"n_workers": n_workers,
                       "threads_per_worker": 1 if threads_per_worker is None else threads_per_worker,
                       "processes": True if processes is None else processes,
                       "host": "127.0.0.1" if host is None else host,
                       "dashboard_address": dashboard_address, **cluster_kwargs}

        self._lock = threading.Lock()  # guards the fields below; never held while waiting on Dask
        self._worker: weakref.ref | None = None
        self._client: Any = None
        self._cluster: Any = None
        self._owns_client = False
        self._inflight: dict[str, Any] = {}  # key -> distributed.Future, for cancel at stop

    # ------------------------------------------------------------- lifecycle
    def start(self, worker: Any) -> None:
        """Connect (or start a LocalCluster). Raises `BackendUnavailableError` if that fails."""
        with self._lock:
            bound = None if self._worker is None else self._worker()
            if bound is not None and bound is not worker and self._client is not None:
                raise ValueError(f"this DaskBackend already serves worker {bound.name!r}; create one "
                                 f"backend per worker (they can share a Client: DaskBackend(client))")
            if self._client is not None:
                return
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise ImportError("the dask backend needs distributed: pip install 'neon_nb[dask]'") from exc
        cluster = None
        owns = True
        if self._user_client is not None:
            client, owns = self._user_client, False
            if getattr(client, "asynchronous", False):
                raise ValueError("DaskBackend needs a synchronous distributed.Client (worker threads "
                                 "block on its futures); got one created with asynchronous=True")
            if client.status not in ("running", "connecting", "newly-created"):
                raise BackendUnavailableError(f"the distributed.Client given to DaskBackend is "
                                              f"{client.status}; pass a running Client")
        elif self.address is not None:
            # distributed waits for the scheduler's handshake without a timeout: a listener that
            # never speaks would hang Client() for ever. Find out first, within connect_timeout.
            _check_scheduler_speaks(self.address, self.connect_timeout)
            try:
                client = Client(self.address, timeout=self.connect_timeout, set_as_default=False)
            except Exception as exc:
                raise BackendUnavailableError(
                    f"cannot reach the Dask scheduler at {self.address!r} within connect_timeout="
                    f"{self.connect_timeout:g}s ({type(exc).__name__}: {exc}). Is the scheduler "
                    f"running, and is the address right? DaskBackend() without an address starts a "
                    f"local cluster instead.") from exc
        else:
            opts = dict(self._local)
            # Dask would silently re-run a task whose worker died (allowed-failures); here every
            # loss reaches NeonWorker as WorkerLostError, to be counted, shown and retried.
            opts["scheduler_kwargs"] = {"allowed_failures": 0, **(opts.get("scheduler_kwargs") or {})}
            try:
                with warnings.catch_warnings():
                    # With the dashboard off, Dask still serves /health on a port and warns when
                    # another cluster holds 8787; irrelevant here.
                    warnings.filterwarnings("ignore", message="Port .* is already in use")
                    cluster = LocalCluster(**opts)
                client = Client(cluster, set_as_default=False)
            except Exception as exc:
                if cluster is not None:
                    _quietly(cluster.close)
                raise BackendUnavailableError(f"could not start a Dask LocalCluster with "
                                              f"{self._local} ({type(exc).__name__}: {exc})") from exc
        with self._lock:
            self._worker = weakref.ref(worker)
            self._client, self._cluster, self._owns_client = client, cluster, owns
        logger.debug("worker %s: dask backend on %s", worker.name, client.scheduler.address)

    def stop(self, worker: Any, timeout: float | None = None) -> None:
        """Cancel tasks abandoned by the shutdown; close the client and cluster if they are ours.

        Returns within ``timeout`` (what is left of the shutdown's bound): a
        cluster still closing then (its worker process may be stuck in a hung
        task) finishes closing in a background thread, with a warning logged.
        """
        with self._lock:
            client, cluster, owns = self._client, self._cluster, self._owns_client
            abandoned = list(self._inflight.values())
            self._inflight.clear()
            self._client = self._cluster = None
        if client is None:
            return

        def close() -> None:
            if abandoned:
                _quietly(client.cancel, abandoned)
            if owns:
                _quietly(client.close, timeout=10)
            if cluster is not None:
                _quietly(cluster.close, timeout=10)

        what = (f"closing the Dask LocalCluster of worker {worker.name!r}" if cluster is not None
                else f"closing the Dask client of worker {worker.name!r}")
        close_within(close, timeout, what)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` in use (None before `start` and after shutdown)."""
        return self._client

    @property
    def dashboard_link(self) -> str | None:
        """Dask's own dashboard, if it runs."""
        client = self._client
        if client is None or (self._cluster is not None and self._local["dashboard_address"] is None):
            return None
        return client.dashboard_link

    # ------------------------------------------------------------ submission
    def check_task(self, task_id: Hashable, fn: Callable, args: tuple, kwargs: dict | None) -> None:
        import cloudpickle  # distributed's fallback serializer; a dependency of distributed

        check_picklable(cloudpickle.CloudPickler, "dask", task_id, fn, args, kwargs, _HINT)

    # ------------------------------------------------------------- execution
    def call(self, fn: Callable, args: tuple, kwargs: dict) -> Any:
        """Run ``fn(*args, **kwargs)`` on the cluster; block this worker thread until it ends."""
        client = self._client
        if client is None:
            raise BackendUnavailableError("the dask backend is not started (or already stopped)")
        name = getattr(fn, "__name__", None) or type(fn).__name__
        if kwargs:
            # Not client.submit(fn, **kwargs): a task keyword named like one of submit's own
            # (key, priority, workers, retries...) would be taken by submit.
            fn = functools.partial(fn, **kwargs)
        key = f"{name}-{uuid.uuid4().hex}"  # unique: Dask never deduplicates two attempts
        # fifo_timeout=0: Dask runs what waits in its queue in submission order, which is
        # NeonWorker's priority order (by default it may reorder submits 100 ms apart).
        fut = client.submit(fn, *args, key=key, pure=False, fifo_timeout=0)
        with self._lock:
            self._inflight[key] = fut
        try:
            return fut.result()
        except BaseException as exc:
            where = _lost_worker(fut, exc)
            if where is None:
                raise  # the task's own exception, with Dask's remote traceback
            if self._client is not client:  # stop() cancelled it: the shutdown abandoned this task
                raise WorkerShutdownError(
                    "the worker shut down while this task still ran on the Dask cluster (past the "
                    "shutdown's timeout): it was cancelled there") from exc
            raise WorkerLostError(f"the Dask worker {where} running this task was lost "
                                  f"({type(exc).__name__}); the task is retried under the retry "
                                  f"policy") from exc
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def __repr__(self) -> str:
        client = self._client
        if client is None:
            where = self.address or ("a Client" if self._user_client is not None else "a LocalCluster")
            return f"<DaskBackend (not started) for {where}>"
        return f"<DaskBackend {client.scheduler.address}>"


def _check_scheduler_speaks(address: str, timeout: float) -> None:
    """Raise `BackendUnavailableError` if ``address`` accepts TCP but does not speak Dask in ``timeout``.

    A Dask scheduler sends its handshake as soon as it accepts a connection: 8
    bytes of length, then the message. A listener that sends nothing (Dask's
    dashboard, any HTTP server) or something else (an SSH server) is not a
    scheduler. Only ``tcp://`` addresses are checked (a TLS server waits for
    the client to speak first); a refused or unreachable address is left to
    ``distributed.Client``, which reports it within its own timeout.
    """
    from distributed.comm import parse_address, parse_host_port, unparse_host_port

    scheme, location = parse_address(address)
    if scheme != "tcp":
        return
    host, port = parse_host_port(location, SCHEDULER_PORT)
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            header = _read_upto(sock, 8, deadline)
    except OSError:
        return  # refused, unreachable, reset: distributed.Client says so itself
    if len(header) == 8 and 0 < struct.unpack("Q", header)[0] <= _MAX_HANDSHAKE:
        return
    heard = "nothing" if not header else f"{header!r}, which is not a Dask message"
    hint = (f"A Dask scheduler listens on port {SCHEDULER_PORT} by default; {DASHBOARD_PORT} is its "
            f"dashboard (HTTP)")
    if port == DASHBOARD_PORT:
        hint += f": try {scheme}://{unparse_host_port(host, SCHEDULER_PORT)}"
    raise BackendUnavailableError(
        f"{address!r} accepts connections but is not a Dask scheduler: it sent {heard} within "
        f"connect_timeout={timeout:g}s, where a scheduler greets at once. Is it the scheduler's "
        f"address? {hint}.")


def _read_upto(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Up to ``n`` bytes from ``sock``, read until the peer closes or ``deadline`` passes."""
    data = b""
    while len(data) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
            break
        if not chunk:
            break
        data += chunk
    return data


def _is_client(obj: Any) -> bool:
    return any(c.__name__ == "Client" and c.__module__.startswith("distributed")
               for c in type(obj).__mro__)


def _lost_worker(fut: Any, exc: BaseException) -> str | None:
    """Where the task was lost, if ``exc`` means a lost worker or connection; None for a task error."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        last = exc.last_worker
        return str(getattr(last, "address", last))
    try:
        status = fut.status
    except Exception:
        status = None
    if status in ("error", "finished"):
        return None  # the function raised (or its result failed to load): not a lost worker
    if isinstance(exc, (CancelledError, OSError, TimeoutError)):  # OSError covers CommClosedError
        return "(connection lost)"
    return None


def _quietly(fn: Callable, *args: Any, **kwargs: Any) -> None:
    # stop() runs at the end of NeonWorker.shutdown: a failure to close is logged, never raised.
    try:
        fn(*args, **kwargs)
    except Exception:
        logger.warning("dask backend: %s failed", getattr(fn, "__qualname__", fn), exc_info=True)
