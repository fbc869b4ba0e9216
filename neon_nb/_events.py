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

Only the kinds some subscriber takes are built (a task's three events cost
about a microsecond together, a fifth of a no-op task's whole cost): a
subscriber of ``kinds={TASK_FAILED}`` costs a successful task nothing but a
flag test. ``kinds=()`` is a change feed: no event is built for it, and each
change since its last delivery arms it, so that its callback is called (with
an empty batch, at most ``max_rate_hz`` times a second) after anything changed.
A display that reads the worker's state when called needs nothing more.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Literal, NamedTuple

from ._errors import WorkerShutdownError
from ._locking import Held

__all__ = ["DeliverOn", "Event", "EventBatch", "EventKind", "EventLog", "Subscription"]

logger = logging.getLogger("neon_nb")

#: Marks this module for the signal handlers: code here may hold a worker's lock.
NEON_HOLDS_WORKER_LOCKS = True

_MIN_GAP = 0.005  # seconds between two deliveries of an unthrottled thread subscriber


class EventKind(str, enum.Enum):
    TASK_SUBMITTED = "task_submitted"
    TASK_STARTED = "task_started"
    TASK_SUCCEEDED = "task_succeeded"
    TASK_FAILED = "task_failed"
    TASK_RETRY_SCHEDULED = "task_retry_scheduled"
    TASK_CANCELLED = "task_cancelled"
    TASK_RESUMED = "task_resumed"  # found done in the worker's journal: ended without running
    WORKER_STARTED = "worker_started"
    WORKER_RESIZED = "worker_resized"
    WORKER_PAUSED = "worker_paused"
    WORKER_RESUMED = "worker_resumed"
    WORKER_CONFIG_CHANGED = "worker_config_changed"
    WORKER_SHUTTING_DOWN = "worker_shutting_down"
    WORKER_STOPPED = "worker_stopped"

    def __str__(self) -> str:
        return self.value


_STARTED = EventKind.TASK_STARTED
_SUBMITTED = EventKind.TASK_SUBMITTED
_SUCCEEDED = EventKind.TASK_SUCCEEDED

TASK_EVENTS = frozenset(k for k in EventKind if k.value.startswith("task_"))
WORKER_EVENTS = frozenset(EventKind) - TASK_EVENTS


class Event(NamedTuple):
    """One transition. Immutable.

    ``seq`` increases by one per event of a worker. ``time`` is the
    ``time.monotonic()`` of the transition; ``started_at`` is the start of the
    attempt for a finished attempt (succeeded, failed, retry scheduled).
    ``thread`` is the worker thread's name for task events. ``detail`` is the
    error text of a failure, the retry delay, ``(old, new)`` pool sizes, or the
    changed settings, or the stored state (``"succeeded"`` or ``"failed"``) of
    a task resumed from the journal (whose ``attempt`` is the stored one).
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
#: Where a subscription's callback runs: on its own thread, on the emitting worker thread,
#: or on an asyncio event loop.
DeliverOn = Literal["thread", "inline"] | asyncio.AbstractEventLoop

_new_event = tuple.__new__


class _Hooks(NamedTuple):
    """What the log may ask of a subscriber: plain calls that run no user code."""

    arm: Callable[[], bool]  # wake the deliverer; False when it can never deliver again
    stop: Callable[[], None]  # the worker stopped: deliver what is buffered, then end
    reset: Callable[[threading.Lock], None]  # a copy in a child made by os.fork()
    pump: Callable[[], None]  # inline: deliver what is pending on the calling thread
    deferred_until: Callable[[], float | None]  # inline: when a rate-limited delivery is due


class EventLog:
    """A worker's events: one bounded log, its sequence numbers, and each subscriber's cursor.

    Guarded by the worker's lock (``lock``), like the rest of its scheduling
    state, so that events are in the order the transitions happened. `emit` is
    called with that lock held and costs one tuple and one append, however many
    subscribers there are; a subscriber takes what is new with `take`. The log
    keeps as many events as the largest subscriber buffer; events every
    subscriber has taken are trimmed.
    """

    def __init__(self, lock: threading.Lock, kick: Callable[[], None], owner: str = "") -> None:
        self.lock = lock
        self._held = Held(lock)  # takes the lock without a convoy (see neon_nb._locking)
        self.owner = owner  # the worker's name, for messages
        self.closed = False  # the worker stopped: no new subscriber
        self.active = False  # someone subscribes: emit() is called at all
        # Source-side filtering: the kinds some subscriber wants are built, the others
        # only wake the subscribers (a change feed, ``kinds=()``, wants none).
        self._wanted: frozenset[EventKind] = frozenset()
        self.builds_submitted = self.builds_started = self.builds_succeeded = False
        self.subs: tuple[Subscription, ...] = ()
        self.inline: tuple[Subscription, ...] = ()  # the subscribers delivered inline
        self._kick = kick  # wakes the worker's monitor (a deferred inline delivery)
        self._log: deque[Event] = deque(maxlen=1)
        self._seq = itertools.count()
        self._cursors: dict[Subscription, int] = {}  # per subscriber: the next seq to deliver
        self._caps: dict[Subscription, int] = {}
        self._kinds: dict[Subscription, frozenset[EventKind] | None] = {}
        self._hooks: dict[Subscription, _Hooks] = {}
        self._armed: set[Subscription] = set()
        self._need_wake = True

    # ------------------------------------------------------- with the lock held
    def emit(self, kind: EventKind, rec: Any = None, detail: Any = None) -> None:
        """Append one event (``rec``: the task's record, for task events). Lock held."""
        if not self.active:
            return
        if kind not in self._wanted:
            if self._need_wake:
                self._wake_locked()
            return
        if rec is None:
            ev = _new_event(Event, (next(self._seq), kind, time.monotonic(), None, None, None,
                                    threading.current_thread().name, None, detail))
        elif kind is _STARTED:
            ev = _new_event(Event, (next(self._seq), kind, rec.started_at, rec.id, rec.priority,
                                    rec.attempts, rec.thread, None, detail))
        elif kind is _SUBMITTED:
            ev = _new_event(Event, (next(self._seq), kind, rec.enqueued_at, rec.id, rec.priority,
                                    rec.attempts, None, None, detail))
        else:
            ev = _new_event(Event, (next(self._seq), kind, rec.finished_at, rec.id, rec.priority,
                                    rec.attempts, rec.thread, rec.started_at, detail))
        self._log.append(ev)
        if self._need_wake:
            self._wake_locked()

    # The three events of every task, specialised (they are most of the traffic): no
    # dispatch on the kind, one tuple each, none if no subscriber wants the kind.
    # Lock held; only when `active`.
    def submitted(self, recs: Iterable[Any]) -> None:
        """``TASK_SUBMITTED`` for each of ``recs``, newly queued, in order. Lock held."""
        if self.builds_submitted:
            seq = self._seq
            self._log.extend([_new_event(Event, (next(seq), _SUBMITTED, r.enqueued_at, r.id,
                                                 r.priority, r.attempts, None, None, None))
                              for r in recs])
        if self._need_wake:
            self._wake_locked()

    def started(self, rec: Any) -> None:
        """``TASK_STARTED`` for ``rec``, just claimed. Lock held."""
        if self.builds_started:
            self._log.append(_new_event(Event, (next(self._seq), _STARTED, rec.started_at,
                                                rec.id, rec.priority, rec.attempts, rec.thread,
                                                None, None)))
        if self._need_wake:
            self._wake_locked()

    def succeeded(self, rec: Any) -> None:
        """``TASK_SUCCEEDED`` for ``rec``, just recorded. Lock held."""
        if self.builds_succeeded:
            self._log.append(_new_event(Event, (next(self._seq), _SUCCEEDED, rec.finished_at,
                                                rec.id, rec.priority, rec.attempts, rec.thread,
                                                rec.started_at, None)))
        if self._need_wake:
            self._wake_locked()

    def _wake_locked(self) -> None:
        # The first event since a subscriber's last take arms it (wakes its deliverer).
        self._need_wake = False
        for sub in self.subs:
            if sub not in self._armed:
                self._armed.add(sub)
                if not self._hooks[sub].arm():  # it can never deliver (a closed loop)
                    self._cursors.pop(sub, None)

    def stop_all(self) -> tuple[Subscription, ...]:
        """The worker stopped: each subscriber delivers what it has, then ends. Lock held."""
        self.closed = True
        subs = self.subs
        for sub in subs:
            self._hooks[sub].stop()
        return subs

    def reset_after_fork(self, lock: threading.Lock) -> None:
        """In a child made by os.fork(): a fresh lock; no subscriber is delivered to any more."""
        self.lock = lock
        self._held = Held(lock)
        for hooks in self._hooks.values():
            hooks.reset(lock)
        self.subs = self.inline = ()
        self.active = False
        self._cursors.clear()
        self._kinds.clear()
        self._want()

    # ------------------------------------------------------------ from anywhere
    def attach(self, sub: Subscription, buffer_size: int, hooks: _Hooks) -> int:
        """Start delivering to ``sub`` with the next event, whose seq is returned."""
        with self._held:
            if self.closed:
                raise WorkerShutdownError(f"worker {self.owner!r} is stopped: nothing to "
                                          f"subscribe to")
            cursor = self._cursors[sub] = self._log[-1][0] + 1 if self._log else self._peek_seq()
            self._caps[sub] = buffer_size
            self._kinds[sub] = sub.kinds
            self._hooks[sub] = hooks
            self.subs = (*self.subs, sub)
            if sub.mode == "inline":
                self.inline = (*self.inline, sub)
            self.active = True
            self._want()
            self._resize()
            self._need_wake = True  # the next event must arm the newcomer too
        return cursor

    def detach(self, sub: Subscription) -> None:
        with self._held:
            self.subs = tuple(s for s in self.subs if s is not sub)
            self.inline = tuple(s for s in self.inline if s is not sub)
            self.active = bool(self.subs)
            self._cursors.pop(sub, None)
            self._caps.pop(sub, None)
            self._kinds.pop(sub, None)
            self._want()
            self._armed.discard(sub)
            self._resize()
            self._trim()

    def take(self, sub: Subscription) -> tuple[tuple[Event, ...], int, int] | None:
        """What is new for ``sub``: (events, how many were dropped before them, next cursor).

        None if nothing is new or ``sub`` was detached. At most its buffer's size:
        the oldest events past it are dropped (and counted).
        """
        with self._held:
            self._armed.discard(sub)
            self._need_wake = True
            log = self._log
            start = self._cursors.get(sub)
            if start is None or not log or log[-1][0] < start:
                return None
            last, first = log[-1][0], log[0][0]
            if sub.changes_only:  # it takes no event: only its cursor moves
                self._cursors[sub] = last + 1
                self._trim()
                return (), 0, last + 1
            dropped = 0
            if start < first:  # the log overflowed past this cursor
                dropped, start = first - start, first
            cap = self._caps[sub]
            if last + 1 - start > cap:  # more than its buffer holds: keep the newest
                dropped += last + 1 - start - cap
                start = last + 1 - cap
            skip = start - first
            events = tuple(log) if not skip else tuple(itertools.islice(log, skip, None))
            self._cursors[sub] = last + 1
            self._trim()
        return events, dropped, last + 1

    def pending(self, sub: Subscription) -> bool:
        """Is something new for ``sub``? An unlocked hint (a deque's ends are read atomically)."""
        try:
            return self._log[-1][0] >= self._cursors.get(sub, 1 << 62)
        except IndexError:
            return False

    def last_seq(self, sub: Subscription) -> int:
        """The seq of the last event emitted so far (what a flush must deliver up to)."""
        with self._held:
            if self._log:
                return self._log[-1][0]
            return self._cursors.get(sub, 0) - 1

    def pump_inline(self) -> None:
        """Deliver to the inline subscribers, on the calling thread (no lock held)."""
        for sub in self.inline:
            self._hooks[sub].pump()

    def next_deferred(self) -> float | None:
        """When the first rate-limited inline delivery is due (for the monitor), or None."""
        due = [d for d in (self._hooks[s].deferred_until() for s in self.inline) if d is not None]
        return min(due) if due else None

    def kick(self) -> None:
        self._kick()

    # -------------------------------------------------------------- internals
    def _peek_seq(self) -> int:
        # The next event's seq: itertools.count cannot be peeked, so replace it.
        n = next(self._seq)
        self._seq = itertools.count(n)
        return n

    def _want(self) -> None:
        # The kinds to build: those some subscriber takes (None: every kind).
        wanted: frozenset[EventKind] = frozenset()
        for kinds in self._kinds.values():
            wanted |= frozenset(EventKind) if kinds is None else kinds
        self._wanted = wanted
        self.builds_submitted = _SUBMITTED in wanted
        self.builds_started = _STARTED in wanted
        self.builds_succeeded = _SUCCEEDED in wanted

    def _resize(self) -> None:
        cap = max(self._caps.values(), default=1)
        if cap != self._log.maxlen:
            self._log = deque(self._log, maxlen=cap)

    def _trim(self) -> None:
        # Forget the events every subscriber has taken.
        log = self._log
        if not self._cursors or not log:
            log.clear()
            return
        low = min(self._cursors.values())
        if low > log[-1][0]:
            log.clear()
            return
        while log and log[0][0] < low:
            log.popleft()


class Subscription:
    """A live subscription; cancel it, or use it as a context manager.

    Thread-safe. Counters: ``delivered`` events, ``dropped`` events,
    ``batches`` delivered, ``errors`` raised by the callback.
    """

    def __init__(self, log: EventLog, callback: Callback, *, on: DeliverOn,
                 max_rate_hz: float | None, buffer_size: int,
                 kinds: Iterable[EventKind] | None, name: str) -> None:
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
        self.kinds: frozenset[EventKind] | None = (
            None if kinds is None else frozenset(EventKind(k) for k in kinds))
        #: ``kinds=()``: a change feed (empty batches, each saying the worker changed).
        self.changes_only = self.kinds == frozenset()
        self.callback = callback
        self.mode = mode
        self.loop: asyncio.AbstractEventLoop | None = on if isinstance(on, asyncio.AbstractEventLoop) \
            else None
        self.max_rate_hz = max_rate_hz
        self.buffer_size = buffer_size
        self.name = name
        self.delivered = 0
        self.dropped = 0
        self.batches = 0
        self.errors = 0
        # Even unthrottled, a delivery thread batches for at least _MIN_GAP: each
        # wake-up costs a thread switch under the GIL, which the workers pay for.
        self._min_gap = (_MIN_GAP if mode == "thread" else 0.0) if max_rate_hz is None \
            else 1.0 / max_rate_hz
        self._log = log
        self._done_upto = 0  # every event below this seq has been through the callback
        self._flushed = threading.Condition()
        self._urgent = False  # a flush() asked to skip the rate limit once
        self._poked = False  # poke(): the next delivery calls back even with nothing new
        self._calls_begun = 0  # callbacks begun; ``batches`` counts those ended
        self._deferred = False  # inline: a delivery is waiting for the rate limit
        self._closed = False
        self._cancelled = False
        self._last_delivery = -1e9
        self._deliver_lock = threading.Lock()  # one delivery at a time, in order
        # The thread inside a delivery (holding _deliver_lock), so that a call from the
        # callback itself (flush, join, a shutdown that flushes) never waits for itself.
        self._delivering: int | None = None
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()  # C-level: cheap to signal
        self._thread: threading.Thread | None = None
        if mode == "thread":
            self._thread = threading.Thread(target=self._thread_loop, name=name, daemon=True)

    def start(self) -> Subscription:
        """Attach to the log and start delivering (the worker's `subscribe` calls it)."""
        cursor = self._log.attach(self, self.buffer_size, _Hooks(
            self._arm, self._stop, self._reset, self._pump_inline, self._deferred_until))
        with self._flushed:  # nothing before the cursor is this subscriber's to deliver
            self._done_upto = max(self._done_upto, cursor)
        if self._thread is not None:
            self._thread.start()
        return self

    # --- called by the log with the worker's lock held: no user code, no blocking ---
    def _arm(self) -> bool:
        if self.changes_only:
            self._poked = True  # the worker changed: that is the whole message
        if self.mode == "thread":
            self._wake.put(None)
        elif self.mode == "loop":
            try:
                self.loop.call_soon_threadsafe(self._deliver_on_loop)  # type: ignore[union-attr]
            except RuntimeError:  # the loop is closed: nobody will ever read this buffer
                self._closed = self._cancelled = True
                return False
        return True

    def _stop(self) -> None:
        self._close(drain=True)

    def _reset(self, lock: threading.Lock) -> None:
        # A copy in a child process made by os.fork(): no delivery thread, fresh locks.
        self._deliver_lock = threading.Lock()
        self._flushed = threading.Condition()
        self._wake = queue.SimpleQueue()
        self._delivering = None
        self._closed = self._cancelled = True

    def _deferred_until(self) -> float | None:
        return self._last_delivery + self._min_gap if self._deferred else None

    # --- taking and calling ---------------------------------------------------------
    def _take(self) -> tuple[EventBatch | None, int | None]:
        """Everything new since the last take (and the cursor after it), filtered by ``kinds``."""
        got = self._log.take(self)
        if got is None:
            return None, None
        events, dropped, upto = got
        if self.changes_only:
            return None, upto  # (other subscribers' events, and their drops, are not its own)
        if self.kinds is not None:
            kinds = self.kinds
            events = tuple(e for e in events if e[1] in kinds)
        if dropped:
            self.dropped += dropped
        if not events and not dropped:
            return None, upto
        return EventBatch(events, dropped), upto

    def _call(self, batch: EventBatch) -> None:
        self._last_delivery = time.monotonic()
        self._calls_begun += 1  # (one delivery at a time: no race)
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
            if self._closed and not self._log.pending(self):
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
        while not self._cancelled and (self._poked or self._log.pending(self)):
            if not self._deliver_lock.acquire(blocking=False):
                return
            self._delivering = threading.get_ident()
            try:
                if self._min_gap and time.monotonic() - self._last_delivery < self._min_gap:
                    # Coalesced into a later delivery, which the worker's monitor
                    # thread makes if no further event comes first.
                    if not self._deferred:
                        self._deferred = True
                        self._log.kick()
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
        poked, self._poked = self._poked, False
        batch, upto = self._take()
        if batch is None and poked:
            batch = EventBatch((), 0)
        try:
            if batch is not None:
                self._call(batch)
        finally:
            if upto is not None or batch is not None:
                with self._flushed:
                    if upto is not None:
                        self._done_upto = upto
                    self._flushed.notify_all()

    def _notify_flushed(self) -> None:
        with self._flushed:
            self._flushed.notify_all()

    # --- flush ------------------------------------------------------------------
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
            return not self._log.pending(self) and not self._poked
        if self.changes_only:
            return self._flush_changes(timeout)
        target = self._log.last_seq(self)
        if self._delivers_here():
            while self._done_upto <= target and not self._cancelled:
                if not self._deliver_once():
                    break
            return self._done_upto > target
        return self._wait_flushed(target, None if timeout is None else time.monotonic() + timeout)

    def _delivers_here(self) -> bool:
        """Does the calling thread deliver for this subscription (inline, its loop, its thread)?"""
        if self.mode == "inline" or (self._thread is not None
                                     and self._thread is threading.current_thread()):
            return True
        if self.mode != "loop":
            return False
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def _flush_changes(self, timeout: float | None) -> bool:
        # A change feed has no event to wait for: flushing it means a callback that
        # begins after this call (and so sees every change before it) has ended.
        mark = self._calls_begun
        self.poke()
        if self._delivers_here():
            while self.batches <= mark and not self._cancelled:
                self._poked = True
                if not self._deliver_once():
                    break
            return self.batches > mark
        return self._wait_flushed(-1, None if timeout is None else time.monotonic() + timeout,
                                  lambda: self.batches > mark)

    def _wait_flushed(self, target: int, deadline: float | None,
                      done: Callable[[], bool] | None = None) -> bool:
        if done is None:
            def done() -> bool:
                return self._done_upto > target
        with self._flushed:
            while not done():
                if self._cancelled or (self._closed and not self._log.pending(self)
                                       and not self._poked
                                       and (self._thread is None or not self._thread.is_alive())):
                    return done()
                self._urgent = True
                if not self._request_delivery():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._flushed.wait(0.05 if left is None else min(left, 0.05))
        return True

    def _request_delivery(self) -> bool:
        if self.mode == "thread":
            self._wake.put(None)  # also ends a rate-limit sleep early
            return True
        try:
            self.loop.call_soon_threadsafe(self._deliver_on_loop)  # type: ignore[union-attr]
        except RuntimeError:
            return False
        return True

    def poke(self) -> None:
        """Have the callback called soon, with an empty batch if no event is new. Thread-safe.

        For a subscriber that acts on its own schedule (a display redrawn on request):
        the call comes the usual way (its thread, its loop; inline: now, on the calling
        thread), within ``max_rate_hz``.
        """
        if self._closed:
            return
        self._poked = True
        if self.mode == "thread":
            self._wake.put(None)
        elif self.mode == "loop":
            self._request_delivery()
        else:
            self._pump_poked()

    def _pump_poked(self) -> None:
        if not self._deliver_lock.acquire(blocking=False):
            return  # a delivery in progress: it or the next one sees the flag
        self._delivering = threading.get_ident()
        try:
            self._deliver_once_locked()
        finally:
            self._delivering = None
            self._deliver_lock.release()

    # --- lifecycle --------------------------------------------------------------
    def _close(self, *, drain: bool) -> None:
        """Stop delivery; with ``drain`` the thread first delivers what is buffered."""
        if not drain:
            self._cancelled = True
        self._closed = True
        self._wake.put(None)

    def cancel(self) -> None:
        """Stop receiving events; undelivered ones are discarded. Idempotent, thread-safe."""
        self._log.detach(self)
        self._close(drain=False)
        t = self._thread
        if t is not None and t is not threading.current_thread() and t.is_alive():
            t.join(timeout=1.0)

    @property
    def active(self) -> bool:
        """True until the subscription is cancelled or its worker stopped."""
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
