"""Real crashes: a child process writing groups to a journal is SIGKILLed at random moments.

After each kill the journal must open (read-only first: a reader recovers a file with a hot WAL
too), pass ``PRAGMA integrity_check`` and hold every group whose ``on_durable`` had fired (the
child reported it through its stdout pipe before the kill), maybe more, never part of a group;
groups that were handed to ``write`` and are missing fit in ``max_pending`` (the crash bound).
"""

from __future__ import annotations

import ast
import os
import random
import signal
import struct
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from neon_nb import open_journal

from . import child
from .helpers import integrity, pipe, read_until


def _run_and_kill(path: Path, tag: str, rng: random.Random, acks: int, pause: float,
                  *options: str) -> tuple[set[int], set[int]]:
    """Start a writing child, SIGKILL it after ``acks`` acknowledged groups and up to ``pause``
    seconds more; return the groups it had handed to write() and those acknowledged."""
    proc = subprocess.Popen([sys.executable, child.__file__, str(path), "--tag", tag, *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        read_until(proc, "ready", prefix=True)
        lines, seen = [], 0
        while seen < acks:
            line = pipe(proc.stdout).readline()
            assert line, f"the child exited early: {pipe(proc.stderr).read()[-2000:]}"
            lines.append(line)
            seen += line.startswith("a ")
        threading.Event().wait(rng.uniform(0, pause))  # a random moment, not a synchronisation
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    lines += pipe(proc.stdout).read().splitlines()  # what it wrote to the pipe before it died
    assert proc.returncode == -signal.SIGKILL
    assert not [x for x in lines if x.startswith("e ")], lines

    def groups(kind: str) -> set[int]:
        return {int(x.split()[1]) for x in lines if x.startswith(kind + " ")}

    return groups("w"), groups("a")


def _check(path: Path, tag: str, handed: set[int], acked: set[int], *, group: int, size: int,
           max_pending: int) -> set[int]:
    """Check the journal after a kill; return the groups of this run that are in it."""
    with open_journal(path) as reader:  # read-only, on a file with a hot WAL
        (run,) = [r for r in reader.runs() if r.name == tag]
        assert not run.ended  # killed: nobody recorded its end
        outcomes = reader.tasks(run=run)
        for o in outcomes:
            _, g, i = ast.literal_eval(o.task_id)
            assert o.result() == child.payload(tag, g, i, size), (tag, g, i)
    assert integrity(path) == [("ok",)]
    counts = Counter(ast.literal_eval(o.task_id)[1] for o in outcomes)
    present = set(counts)
    assert set(counts.values()) <= {group}, counts  # never part of a group
    assert present == set(range(len(present)))  # committed in the order they were written
    assert acked <= present, sorted(acked - present)  # every acknowledged group survived
    assert len(handed - present) * group <= max_pending  # lost at most max_pending entries
    return present


@pytest.mark.slow
def test_sigkill_at_random_moments_keeps_every_acknowledged_group_and_no_partial_one(tmp_path):
    path = tmp_path / "crash.db"
    rng = random.Random(20240515)
    group, size, max_pending, rounds = 5, 64, 20, 20
    kept: dict[str, set[int]] = {}
    for r in range(rounds):  # one file: each round also recovers the previous round's crash
        tag = f"round{r}"
        handed, acked = _run_and_kill(
            path, tag, rng, rng.randint(0, 40), 0.02, "--group", str(group), "--size", str(size),
            "--max-pending", str(max_pending))
        kept[tag] = _check(path, tag, handed, acked, group=group, size=size,
                           max_pending=max_pending)
    assert sum(map(len, kept.values())) > 0
    with open_journal(path) as reader:  # nothing an earlier round kept was lost later
        assert {r.name: r.succeeded for r in reader.runs()} == {
            tag: len(groups) * group for tag, groups in kept.items()}


def wal_tail(path: Path) -> tuple[int, int]:
    """Frames written after the last commit frame of the current WAL generation, and the bytes
    of a trailing partial frame: a kill that left either landed in the middle of a write."""
    wal = path.with_name(path.name + "-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return 0, 0
    page_size, _, salt1, salt2 = struct.unpack(">4I", data[8:24])
    frame, offset, frames, last_commit = 24 + page_size, 32, 0, 0
    while offset + frame <= len(data):
        _, commit, s1, s2 = struct.unpack(">4I", data[offset:offset + 16])
        if (s1, s2) != (salt1, salt2):  # a frame of an earlier generation: the end
            return frames - last_commit, 0
        frames += 1
        last_commit = frames if commit else last_commit
        offset += frame
    return frames - last_commit, len(data) - offset


@pytest.mark.slow
def test_sigkill_during_large_writes_leaves_torn_wal_frames_that_recovery_ignores(tmp_path):
    """Groups of 8 x 128 KB results: the kill often lands while SQLite appends WAL frames.

    ``synchronous="normal"`` here: a process kill does not care about fsync (the OS has the
    data), and without it the writer spends its time appending frames, where the kills land.
    Rounds go on until three kills have left a torn tail (about one in four does).
    """
    rng = random.Random(7)
    group, size, max_pending = 8, 128 * 1024, 16
    torn = rounds = 0
    while torn < 3 and rounds < 60:
        path = tmp_path / f"torn{rounds}.db"
        handed, acked = _run_and_kill(
            path, "big", rng, rng.randint(1, 3), 0.03, "--group", str(group), "--size",
            str(size), "--max-pending", str(max_pending), "--group-delay", "0",
            "--synchronous", "normal")
        uncommitted, partial = wal_tail(path)
        torn += bool(uncommitted or partial)
        _check(path, "big", handed, acked, group=group, size=size, max_pending=max_pending)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()  # bound the disk space of the test
        rounds += 1
    assert torn >= 1, f"no kill out of {rounds} landed in the middle of a write"
