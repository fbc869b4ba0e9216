"""Module-level task functions for the scaling tests (picklable for the processes backend)."""

from __future__ import annotations


def cpu_work(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL for the whole call."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
