"""A worker's threads: `ThreadPool` starts, shrinks, lends, stops and replaces them.

Idle threads block on a `queue.SimpleQueue` of wake-up tokens (a C
implementation: cheap to put and to wait on). One `Token.ITEM` is put per
queued task, so tokens >= queued tasks at all times; the queue, not the token,
decides which task runs, so priority order holds. A token that finds the queue
empty (its task was cancelled) is simply dropped.

* Shrinking: ``retire`` counts threads that must exit. A thread checks it
  before claiming a task; idle threads are woken by `Token.RETIRE`. Whoever
  decrements ``retire`` exits; surplus RETIRE tokens are ignored.
* Lending: a worker thread that blocks in a public call (waiting for
  completion, for room, for a shutdown) gets a stand-in thread for the time of
  its wait, so the pool keeps its size; ``lent`` counts them, and when the wait
  ends one thread too many retires.
* Death: a thread that leaves normally removes itself from ``threads``; one
  whose loop crashed is in ``crashed``, and the monitor replaces it. (Never
  judge by ``Thread.is_alive()``: it is False for a thread that has started but
  not yet run, which once made the monitor replace healthy threads.)
* Stopping: one `Token.STOP` per thread, put *behind* every item token, so the
  queued work drains first.

Every method is called with the worker's lock held, except `join`.
"""

from __future__ import annotations

import enum
import itertools
import queue
import threading
from collections.abc import Callable, Iterable

__all__ = ["ThreadPool", "Token"]


class Token(enum.Enum):
    """What wakes an idle worker thread."""

    ITEM = "a task was queued"
    RETIRE = "one thread too many"
    STOP = "the worker stops"


class ThreadPool:
    """The threads of one worker, named ``<worker>-worker_<n>``; each runs ``target(name)``."""

    def __init__(self, prefix: str, target: Callable[[str], None]) -> None:
        self.prefix = prefix
        self.target = target
        self.tokens: queue.SimpleQueue[Token] = queue.SimpleQueue()
        self.threads: dict[str, threading.Thread] = {}
        self.retire = 0  # threads that must exit
        self.lent = 0  # threads blocked in a call, each with a stand-in
        self.crashed: set[str] = set()  # threads whose loop died, to be replaced
        self.replaced = 0
        self.stopping = False  # STOP tokens sent
        self._ids = itertools.count()

    def size(self) -> int:
        """Threads that count toward ``max_workers`` (not the retiring ones, nor the lent ones)."""
        return len(self.threads) - self.retire - self.lent

    def new_thread(self) -> threading.Thread:
        """A registered, not yet started thread (start it once the lock is released)."""
        name = f"{self.prefix}-worker_{next(self._ids)}"
        t = threading.Thread(target=self.target, args=(name,), name=name, daemon=True)
        self.threads[name] = t
        return t

    def owns(self, thread: threading.Thread) -> bool:
        return self.threads.get(thread.name) is thread

    def resize(self, target: int) -> list[threading.Thread]:
        """Grow or shrink toward ``target`` threads; the new threads, to be started."""
        delta = target - self.size()
        if delta > 0:
            undo = min(delta, self.retire)  # threads still retiring stay instead
            self.retire -= undo
            return [self.new_thread() for _ in range(delta - undo)]
        if delta < 0:
            self.retire += -delta
            self.wake(Token.RETIRE, -delta)
        return []

    def wake(self, token: Token, n: int = 1) -> None:
        put = self.tokens.put
        for _ in range(n):
            put(token)

    def leave(self, name: str) -> None:
        """Thread ``name`` exits (a STOP or a RETIRE it took)."""
        self.threads.pop(name, None)

    def take_retirement(self, name: str) -> bool:
        """Should ``name`` exit because the pool shrinks? (It then leaves.)"""
        if self.retire > 0:
            self.retire -= 1
            self.leave(name)
            return True
        return False

    def lend(self, thread: threading.Thread, working: bool) -> bool:
        """``thread`` blocks in a call: give it a stand-in if it is one of ours. True if lent.

        The stand-in starts at once (under the lock: it needs the lock only later).
        """
        if not working or self.stopping or not self.owns(thread):
            return False
        stand_in = self.new_thread()
        try:
            stand_in.start()
        except RuntimeError:  # no more threads: wait without a stand-in
            self.leave(stand_in.name)
            return False
        self.lent += 1
        return True

    def unlend(self) -> None:
        """A lent thread's wait is over: one thread too many now, the first idle one retires."""
        self.lent -= 1
        if not self.stopping:
            self.retire += 1
            self.wake(Token.RETIRE)

    def stop(self) -> bool:
        """Tell every thread to stop once the queued work is done; False if already told."""
        if self.stopping:
            return False
        self.stopping = True
        self.wake(Token.STOP, len(self.threads))
        return True

    def replace_crashed(self, replace: bool) -> tuple[list[str], list[threading.Thread]]:
        """Forget the threads whose loop died: (their names, replacements to be started)."""
        dead = [n for n in self.crashed if n in self.threads]
        self.crashed.clear()
        new = []
        for name in dead:
            self.leave(name)
            if replace:
                self.replaced += 1
                new.append(self.new_thread())
        return dead, new

    def alive(self) -> int:
        return sum(1 for t in self.threads.values() if t.is_alive() or not t.ident)

    def idle_threads(self, busy: Iterable[str], but: threading.Thread) -> list[threading.Thread]:
        """The threads holding no task (to be joined), except ``but``."""
        busy = set(busy)
        return [t for n, t in self.threads.items() if n not in busy and t is not but]

    def reset_after_fork(self) -> None:
        # In a child made by os.fork(): none of these threads exists there.
        self.tokens = queue.SimpleQueue()
        self.threads.clear()
        self.crashed.clear()
        self.retire = self.lent = 0
        self.stopping = True
