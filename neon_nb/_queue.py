"""The storage of waiting tasks: `TaskQueue` (by priority) and `RetryHeap` (by due time).

Neither is thread-safe: the worker's lock guards both (as `queue.Queue` keeps its
storage apart from its lock). A task cancelled while it waits is not searched for:
its entry stays, is skipped when it comes up, and is compacted away once such
entries outnumber the live ones (amortised O(1) per cancellation).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from ._record import TaskRecord
from ._task import TaskState

__all__ = ["RetryHeap", "TaskQueue"]

QUEUED, RETRY_WAIT = TaskState.QUEUED, TaskState.RETRY_WAIT

#: Withdrawn entries kept before a compaction is considered.
_COMPACT_AFTER = 256


class TaskQueue:
    """Queued records: one FIFO per priority, and a heap of the priorities present.

    ``pop`` takes the first record of the highest priority: push and pop are O(1)
    for the usual handful of priorities, where one heap of all tasks costs
    O(log n) comparisons of tuples per task. ``len()`` counts live records.
    """

    __slots__ = ("_buckets", "_count", "_dead", "_prios")

    def __init__(self) -> None:
        self._buckets: dict[int, deque[TaskRecord]] = {}
        self._prios: list[int] = []  # negated priorities present, a heap
        self._count = 0
        self._dead = 0

    def __len__(self) -> int:
        return self._count

    def put(self, rec: TaskRecord) -> None:
        """Queue ``rec`` behind the records of its priority."""
        p = rec.priority
        bucket = self._buckets.get(p)
        if bucket is None:
            bucket = self._buckets[p] = deque()
            heapq.heappush(self._prios, -p)
        bucket.append(rec)
        self._count += 1

    def put_many(self, recs: Iterable[TaskRecord]) -> None:
        """Queue records in order (one bucket lookup per run of equal priorities)."""
        buckets = self._buckets
        prev: int | None = None
        bucket: deque[TaskRecord] | None = None
        n = 0
        for rec in recs:
            p = rec.priority
            if p != prev:
                bucket = buckets.get(p)
                if bucket is None:
                    bucket = buckets[p] = deque()
                    heapq.heappush(self._prios, -p)
                prev = p
            bucket.append(rec)  # type: ignore[union-attr]  # set with prev
            n += 1
        self._count += n

    def pop(self) -> TaskRecord | None:
        """The first queued record of the highest priority, or None when none is queued."""
        prios = self._prios
        buckets = self._buckets
        while prios:
            bucket = buckets[-prios[0]]
            while bucket:
                rec = bucket.popleft()
                if rec.state is QUEUED:
                    self._count -= 1
                    return rec
                self._dead -= 1  # withdrawn while it waited
            del buckets[-heapq.heappop(prios)]  # no record of this priority is left
        return None

    def withdraw(self) -> None:
        """One queued record is no longer queued (cancelled): its entry is dropped later."""
        self._count -= 1
        self._dead += 1
        if self._dead > _COMPACT_AFTER and self._dead > self._count:
            self._compact()

    def _compact(self) -> None:
        buckets = {}
        for p, bucket in self._buckets.items():
            kept = deque(r for r in bucket if r.state is QUEUED)
            if kept:
                buckets[p] = kept
        self._buckets = buckets
        self._prios = [-p for p in buckets]
        heapq.heapify(self._prios)
        self._dead = 0


class RetryHeap:
    """Records waiting for their retry, by due time (``time.monotonic()``)."""

    __slots__ = ("_count", "_dead", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TaskRecord]] = []
        self._count = 0
        self._dead = 0

    def __len__(self) -> int:
        return self._count

    def push(self, due: float, rec: TaskRecord) -> None:
        heapq.heappush(self._heap, (due, rec.seq, rec))
        self._count += 1

    def next_due(self) -> float | None:
        """When the first retry is due (it may be a withdrawn entry: waking early is harmless)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[TaskRecord]:
        """The records due by ``now``, in due order."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            rec = heapq.heappop(heap)[2]
            if rec.state is RETRY_WAIT:
                due.append(rec)
            else:
                self._dead -= 1  # withdrawn while it waited
        self._count -= len(due)
        return due

    def withdraw(self) -> None:
        """One waiting record is no longer waiting (cancelled): its entry is dropped later."""
        self._count -= 1
        self._dead += 1
        if self._dead > _COMPACT_AFTER and self._dead > self._count:
            self._heap = [e for e in self._heap if e[2].state is RETRY_WAIT]
            heapq.heapify(self._heap)
            self._dead = 0
