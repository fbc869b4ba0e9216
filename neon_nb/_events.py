"""Events and subscriptions: how anything leaves the worker threads.

The worker appends each `Event` to one bounded log while it holds its lock
(so every subscriber sees transitions in the order they happened), and never
calls user code there: emitting costs one tuple and one deque append, however
many subscribers there are. Each subscription keeps a cursor into that log
and takes what is new when it delivers. Delivery happens elsewhere:

* ``on="thread"``: a delivery thread per subscription, owned by the worker.
  Live whatever the main thread does; a slow callback only delays itself.
* ``on=<asyncio loop>``: ``loop.call_soon_threadsafe``; in a notebook, the
  kernel's loop, so the callback runs on the kernel thread when it is idle.
* ``on="inline"``: on a worker thread right after it released its lock (a
  delivery deferred by ``max_rate_hz`` is made by the worker's monitor thread).
  Must not block: it delays that worker.

A subscriber's buffer is the part of the log past its cursor, bounded by its
``buffer_size``: when it would be exceeded the *oldest* events are dropped and
the count is reported in the next `EventBatch` (drops are counted before the
``kinds`` filter). ``max_rate_hz`` coalesces deliveries.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, NamedTuple

__all__ = ["Event", "EventBatch", "EventKind", "Subscription"]

logger = logging.getLogger("neon_nb")

_MIN_GAP = 0.005  # seconds between two deliveries of an unthrottled thread subscriber


class EventKind(str, enum.Enum):
    TASK_SUBMITTED = "task_submitted"
    TASK_STARTED = "task_started"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_RETRY_SCHEDULED = "task_retry_scheduled"
    TASK_CANCELLED = "task_cancelled"
    WORKER_STARTED = "worker_started"
    WORKER_RESIZED = "worker_resized"
    WORKER_PAUSED = "worker_paused"
    WORKER_RESUMED = "worker_resumed"
    WORKER_CONFIG_CHANGED = "worker_config_changed"
    WORKER_SHUTTING_DOWN = "worker_shutting_down"
    WORKER_STOPPED = "worker_stopped"

    def __str__(self) -> str:
        return self.value


TASK_EVENTS = frozenset(k for k in EventKind if k.value.startswith("task_"))
WORKER_EVENTS = frozenset(EventKind) - TASK_EVENTS


class Event(NamedTuple):
    """One transition. Immutable.

    ``seq`` increases by one per event of a worker. ``time`` is the
    ``time.monotonic()`` of the transition; ``started_at`` is the start of the
    attempt for a finished attempt (succeeded, failed, retry scheduled).
    ``thread`` is the worker thread's name for task events. ``detail`` is the
    error text of a failure, the retry delay, ``(old, new)`` pool sizes, or the
    changed settings.
    """

    seq: int
    kind: EventKind
    time: float
    task_id: Hashable | None = None
    priority: int | None = None
    attempt: int | None = None
    thread: str | None = None
    started_at: float | None = None
    detail: Any = None


class EventBatch(NamedTuple):
    """What a callback receives: events in order, and how many were dropped just before them."""

    events: tuple[Event, ...]
    dropped: int = 0

    def __iter__(self) -> Iterator[Event]:  # type: ignore[override]
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


Callback = Callable[[EventBatch], Any]


class Subscription:
    """A live subscription; cancel it, or use it as a context manager.

    Thread-safe. Counters: ``delivered`` events, ``dropped`` events,
    ``batches`` delivered, ``errors`` raised by the callback.
    """

    def __init__(self, owner: Any, callback: Callback, *, on: Any, max_rate_hz: float | None,
                 buffer_size: int, kinds: Iterable[EventKind] | None, name: str) -> None:
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__} {callback!r}")
        if isinstance(on, asyncio.AbstractEventLoop):
            mode = "loop"
        elif on in ("thread", "inline"):
            mode = on
        else:
            raise ValueError(f"on must be 'thread', 'inline' or an asyncio event loop, got {on!r}")
        if max_rate_hz is not None and (type(max_rate_hz) not in (int, float)
                                        or not max_rate_hz > 0):
            raise ValueError(f"max_rate_hz must be None or a number > 0, got {max_rate_hz!r}")
        if type(buffer_size) is not int or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        self.kinds: frozenset[EventKind] | None = None
        if kinds is not None:
            kinds = frozenset(EventKind(k) for k in kinds)
            self.kinds = kinds
        self.callback = callback
        self.mode = mode
        self.loop: asyncio.AbstractEventLoop | None = on if mode == "loop" else None
        self.max_rate_hz = max_rate_hz
        # Even unthrottled, a delivery thread batches for at least _MIN_GAP: each
        # wake-up costs a thread switch under the GIL, which the workers pay for.
        self._min_gap = (_MIN_GAP if mode == "thread" else 0.0) if max_rate_hz is None \
            else 1.0 / max_rate_hz
        self._owner = owner
        self._lock: threading.Lock = owner._lock  # the worker's lock guards the log and cursor
        self._cap = buffer_size
        self._cursor = 0  # seq of the next event to deliver; set by the worker at subscribe
        self._done_upto = 0  # every event below this seq has been through the callback
        self._flushed = threading.Condition()
        self._urgent = False  # a flush() asked to skip the rate limit once
        self._deferred = False  # inline: a delivery is waiting for the rate limit
        self._armed = False
        self._closed = False
        self._last_delivery = -1e9
        self._deliver_lock = threading.Lock()  # one delivery at a time, in order
        # The thread inside a delivery (holding _deliver_lock), so that a call from the
        # callback itself (flush, join, a shutdown that flushes) never waits for itself.
        self._delivering: int | None = None
        self.delivered = 0
        self.dropped = 0
        self.batches = 0
        self.errors = 0
        self.name = name
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # C-level: cheap to signal
        self._cancelled = False
        self._thread: threading.Thread | None = None
        if mode == "thread":
            self._thread = threading.Thread(target=self._thread_loop, name=name, daemon=True)

    def _start(self) -> None:
        if self._thread is not None:
            self._thread.start()

    # --- called by the worker with its lock held: no user code, no blocking ---
    def _arm(self) -> None:
        # First event since the last delivery: wake the deliverer (no user code here).
        if self.mode == "thread":
            self._wake.put(None)
        elif self.mode == "loop":
            try:
                self.loop.call_soon_threadsafe(self._deliver_on_loop)  # type: ignore[union-attr]
            except RuntimeError:  # loop closed: nobody will ever read this buffer
                self._closed = True
                self._cancelled = True  # no longer holds the log back

    def _pending(self) -> bool:
        # Unlocked read: a hint only (the deque's ends are read atomically).
        log = self._owner._log
        try:
            return log[-1][0] >= self._cursor
        except IndexError:
            return False

    def _take(self) -> EventBatch | None:
        """Everything new since the last take, bounded by buffer_size; None if nothing."""
        owner = self._owner
        with self._lock:
            self._armed = False
            owner._need_wake = True
            log = owner._log
            if not log:
                return None
            last = log[-1][0]
            start = self._cursor
            if last < start:
                return None
            first = log[0][0]
            dropped = 0
            if start < first:  # the log overflowed past our cursor
                dropped = first - start
                start = first
            if last + 1 - start > self._cap:  # more than our buffer holds: keep the newest
                dropped += last + 1 - start - self._cap
                start = last + 1 - self._cap
            skip = start - first
            events = tuple(log) if not skip else tuple(itertools.islice(log, skip, None))
            self._cursor = last + 1
            owner._trim_log_locked()
        if self.kinds is not None:
            kinds = self.kinds
            events = tuple(e for e in events if e[1] in kinds)
        if dropped:
            self.dropped += dropped
        if not events and not dropped:
            return None
        return EventBatch(events, dropped)

    def _call(self, batch: EventBatch) -> None:
        self._last_delivery = time.monotonic()
        try:
            self.callback(batch)
        except Exception:
            self.errors += 1
            logger.exception("event callback %r raised; delivery goes on", self.callback)
        except BaseException as exc:
            # SystemExit or KeyboardInterrupt raised by the callback: isolated like any
            # other error, so that no delivery (and no worker call it runs in) is cut short.
            self.errors += 1
            logger.error("event callback %r raised %s; delivery goes on", self.callback,
                         type(exc).__name__)
        finally:
            self.delivered += len(batch.events)
            self.batches += 1

    # --- delivery -------------------------------------------------------------
    def _thread_loop(self) -> None:
        try:
            self._deliver_forever()
        except BaseException:  # a bug here must not silently end delivery
            logger.exception("delivery thread %s failed", self.name)
            self._cancelled = self._closed = True
            self._notify_flushed()

    def _deliver_forever(self) -> None:
        wake = self._wake.get
        while True:
            wake()
            if self._min_gap and not self._urgent:
                # Coalesce: let events accumulate until the rate allows a batch.
                delay = self._last_delivery + self._min_gap - time.monotonic()
                if delay > 0 and not self._closed:
                    self._stop_wait(delay)
            self._urgent = False
            if not (self._closed and self._cancelled):
                self._deliver_once()
            if self._closed and not self._pending():
                self._notify_flushed()
                return

    def _stop_wait(self, delay: float) -> None:
        # Sleep for the rate limit; a wake token from close() or flush() ends it early.
        try:
            self._wake.get(timeout=delay)
        except queue.Empty:
            pass

    def _deliver_on_loop(self) -> None:
        if self._closed and self._cancelled:
            return
        delay = self._last_delivery + self._min_gap - time.monotonic()
        if delay > 0 and not self._urgent:
            self.loop.call_later(delay, self._deliver_on_loop)  # type: ignore[union-attr]
            return
        self._urgent = False
        self._deliver_once()

    def _pump_inline(self) -> None:
        # Called by a worker thread after it released the worker lock. Whoever
        # holds _deliver_lock delivers everything pending, so events stay in
        # order and no worker ever waits for another worker's callback.
        while not self._cancelled and self._pending():
            if not self._deliver_lock.acquire(blocking=False):
                return
            self._delivering = threading.get_ident()
            try:
                if self._min_gap and time.monotonic() - self._last_delivery < self._min_gap:
                    # Coalesced into a later delivery, which the worker's monitor
                    # thread makes if no further event comes first.
                    if not self._deferred:
                        self._deferred = True
                        self._owner._kick_monitor()
                    return
                self._deferred = False
                self._deliver_once_locked()
            finally:
                self._delivering = None
                self._deliver_lock.release()

    def _deliver_once(self) -> bool:
        """Take what is new and call the callback, one delivery at a time (in order).

        False, doing nothing, when called from inside this subscription's own callback.
        """
        me = threading.get_ident()
        if self._delivering == me:
            return False
        with self._deliver_lock:
            self._delivering = me
            try:
                self._deliver_once_locked()
            finally:
                self._delivering = None
        return True

    def _deliver_once_locked(self) -> None:
        batch = self._take()
        upto = self._cursor
        try:
            if batch is not None:
                self._call(batch)
        finally:
            with self._flushed:
                self._done_upto = upto
                self._flushed.notify_all()

    def _after_fork_in_child(self, lock: threading.Lock) -> None:
        # A copy in a child process made by os.fork(): no delivery thread, fresh locks.
        self._lock = lock
        self._deliver_lock = threading.Lock()
        self._flushed = threading.Condition()
        self._wake = queue.SimpleQueue()
        self._delivering = None
        self._closed = self._cancelled = True

    def _notify_flushed(self) -> None:
        with self._flushed:
            self._flushed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver every event emitted before this call, and wait until the callback has had it.

        Ignores ``max_rate_hz`` for this one delivery. On the delivering thread
        (or for ``on="inline"``) it delivers on the calling thread. Returns
        False if ``timeout`` expired first (or the subscription was cancelled).
        Called from this subscription's own callback it cannot wait for itself:
        it returns at once, True only if nothing was left to deliver.
        Thread-safe.
        """
        if self._delivering == threading.get_ident():
            return not self._pending()
        with self._lock:
            log = self._owner._log
            target = log[-1][0] if log else self._cursor - 1
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        loop_here = False
        if self.mode == "loop":
            try:
                loop_here = asyncio.get_running_loop() is self.loop
            except RuntimeError:
                loop_here = False
        if self.mode == "inline" or loop_here or (self._thread is not None and self._thread is me):
            while self._done_upto <= target and not self._cancelled:
                if not self._deliver_once():
                    break
            return self._done_upto > target
        with self._flushed:
            while self._done_upto <= target:
                if self._cancelled or (self._closed and not self._pending()
                                       and (self._thread is None or not self._thread.is_alive())):
                    return self._done_upto > target
                self._urgent = True
                if self.mode == "thread":
                    self._wake.put(None)  # also ends a rate-limit sleep early
                else:
                    try:
                        self.loop.call_soon_threadsafe(self._deliver_on_loop)  # type: ignore[union-attr]
                    except RuntimeError:
                        return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._flushed.wait(left if left is None else min(left, 0.05))
        return True

    # --- lifecycle --------------------------------------------------------------
    def _close(self, *, drain: bool) -> None:
        """Stop delivery; with ``drain`` the thread first delivers what is buffered."""
        if not drain:
            self._cancelled = True
        self._closed = True
        self._wake.put(None)

    def cancel(self) -> None:
        """Stop receiving events; undelivered ones are discarded. Idempotent, thread-safe."""
        self._owner._unsubscribe(self)
        self._close(drain=False)
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout=1.0)

    @property
    def active(self) -> bool:
        return not self._closed

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the delivery thread has delivered everything after the worker stopped.

        From the subscription's own callback it returns False at once: the delivery
        thread cannot end while it runs that callback.
        """
        t = self._thread
        if t is None or not t.ident:
            return True
        if t is threading.current_thread():
            return False
        t.join(timeout)
        return not t.is_alive()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        state = "active" if self.active else "closed"
        return (f"<Subscription {self.name} on={self.mode} {state} delivered={self.delivered} "
                f"dropped={self.dropped} errors={self.errors}>")
