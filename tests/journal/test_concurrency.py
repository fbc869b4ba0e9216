"""`Journal` under concurrency: many writers, grouping, backpressure, closing, other processes.

The writer thread is held at a known point by an on_durable callback blocked on a gate (an
Event): what happens while it is held is then deterministic.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from neon_nb import JournalError, open_journal
from neon_nb._journal import Journal

from ..conftest import WAIT, wait_until
from . import child
from .helpers import Calls, entry, integrity, pipe, read_until, stored_keys


def _hold(journal, gate):
    """Write one entry whose callback blocks the writer thread on ``gate``; return once it does."""
    entered = threading.Event()

    def held(_entries):
        entered.set()
        gate.wait()

    journal.write([entry(("held", random.random()), 0)], held)
    assert entered.wait(WAIT)


def test_many_threads_writing_at_once_every_entry_durable_once_callbacks_once_in_order(
        make_journal, path):
    threads, calls_each, max_pending = 16, 150, 64
    j = make_journal(max_pending=max_pending)
    lock = threading.Lock()
    answered: dict[tuple[int, int], int] = {}
    order: dict[int, list[int]] = {t: [] for t in range(threads)}
    problems: list[str] = []
    check = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    start = threading.Barrier(threads)
    handed: list[str] = []

    def on_durable_for(t: int, c: int, entries):
        def on_durable(got):
            pending = j.stats().pending
            if got is not entries or pending > max_pending:
                problems.append(f"call {t}/{c}: wrong entries or {pending} pending")
            if c % 10 == 0:  # durable before its callback: a connection of our own sees it
                keys = [e.key for e in entries]
                marks = ",".join("?" * len(keys))
                n = check.execute(f"SELECT count(*) FROM tasks WHERE key IN ({marks})", keys)
                if n.fetchone()[0] != len(keys):
                    problems.append(f"call {t}/{c} answered before it was committed")
            with lock:
                answered[t, c] = answered.get((t, c), 0) + 1
                order[t].append(c)
        return on_durable

    def producer(t: int) -> None:
        rng = random.Random(t)
        start.wait()
        for c in range(calls_each):
            entries = [entry((t, c, i), (t, c, i)) for i in range(rng.randint(1, 4))]
            j.write(entries, on_durable_for(t, c, entries))
            with lock:
                handed.extend(e.key for e in entries)
            if j.stats().pending > max_pending:
                problems.append(f"more than {max_pending} pending after a write")

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT * 3)
    assert j.flush(timeout=WAIT)
    check.close()
    assert not problems, problems[:5]
    assert set(answered.values()) == {1} and len(answered) == threads * calls_each
    assert all(order[t] == list(range(calls_each)) for t in range(threads))  # FIFO per producer
    keys = stored_keys(path)
    assert len(keys) == len(set(keys)) == j.stats().entries  # every entry exactly once
    assert sorted(keys) == sorted(handed)
    assert j.stats().largest_group <= max_pending


def test_calls_that_wait_behind_a_commit_go_into_one_transaction(make_journal, gate):
    j = make_journal(max_pending=100)
    _hold(j, gate)
    calls = Calls()
    for i in range(50):
        j.write([entry(i, i)], calls.on_durable)
    assert j.stats()[:2] == (1, 1) and j.stats().pending == 50  # one entry, one transaction so far
    gate.set()
    assert j.flush(timeout=WAIT)
    stats = j.stats()
    assert (stats.entries, stats.transactions, stats.largest_group) == (51, 2, 50)
    assert [es[0].task_id for es in calls.durable] == [str(i) for i in range(50)]


def test_write_blocks_at_max_pending_until_the_writer_makes_room(make_journal, gate):
    j = make_journal(max_pending=8)
    _hold(j, gate)
    for i in range(8):
        j.write([entry(i, i)], lambda _e: None)  # room for exactly 8: none of these waits
    assert j.stats().pending == 8
    returned = threading.Event()

    def ninth():
        j.write([entry(8, 8)], lambda _e: None)
        returned.set()

    t = threading.Thread(target=ninth)
    t.start()
    assert wait_until(lambda: j.stats().blocked == 1)
    assert not returned.is_set() and j.stats().pending == 8  # the bound holds
    gate.set()
    assert returned.wait(WAIT)
    t.join(WAIT)
    assert j.flush(timeout=WAIT) and j.stats().entries == 10


def test_a_call_larger_than_max_pending_waits_for_an_empty_queue_not_forever(make_journal, gate):
    j = make_journal(max_pending=4)
    big = [entry(("big", i), i) for i in range(10)]
    done = Calls()
    j.write(big, done.on_durable)  # nothing pending: it goes in at once
    assert j.flush(timeout=WAIT) and len(done.durable) == 1
    _hold(j, gate)
    j.write([entry("small", 0)], lambda _e: None)
    returned = threading.Event()
    def write_big() -> None:
        j.write(big[:5], done.on_durable)
        returned.set()

    t = threading.Thread(target=write_big)
    t.start()
    assert wait_until(lambda: j.stats().blocked == 1) and not returned.is_set()
    gate.set()
    assert returned.wait(WAIT)
    t.join(WAIT)
    assert j.flush(timeout=WAIT) and len(done.durable) == 2


def test_flush_with_a_timeout_returns_false_while_the_writer_is_held(make_journal, gate):
    j = make_journal()
    _hold(j, gate)
    j.write([entry("x", 1)], lambda _e: None)
    assert j.flush(timeout=0.05) is False
    gate.set()
    assert j.flush(timeout=WAIT) is True


def test_close_writes_the_pending_entries_and_waiting_calls_first(make_journal, gate, path):
    j = make_journal(max_pending=3)
    _hold(j, gate)
    calls = Calls()
    for i in range(3):
        j.write([entry(i, i)], calls.on_durable)
    blocked_returned = threading.Event()
    def fourth() -> None:
        j.write([entry(3, 3)], calls.on_durable)
        blocked_returned.set()

    t = threading.Thread(target=fourth)
    t.start()
    assert wait_until(lambda: j.stats().blocked == 1)
    closed = threading.Event()
    def close() -> None:
        if j.close(timeout=WAIT):
            closed.set()

    closer = threading.Thread(target=close)
    closer.start()
    # The close releases the waiting call (it is written, not refused) but cannot finish while
    # the writer is held; new calls are refused at once.
    assert blocked_returned.wait(WAIT)
    with pytest.raises(JournalError, match="is closed"):
        j.write([entry("late", 0)], calls.on_durable)
    assert not closed.is_set() and not j.closed
    gate.set()
    assert closed.wait(WAIT)
    for thread in (t, closer):
        thread.join(WAIT)
    assert [es[0].task_id for es in calls.durable] == ["0", "1", "2", "3"]
    assert stored_keys(path)[1:] == ["0", "1", "2", "3"]


def test_close_from_inside_a_callback_does_not_deadlock(make_journal, gate, path):
    j = make_journal()
    seen = {}
    entered = threading.Event()

    def closing(_entries):
        entered.set()
        gate.wait()
        seen["close"] = j.close(timeout=WAIT)  # cannot wait for its own thread: returns at once
        seen["closed"] = j.closed

    j.write([entry("a", 1)], closing)
    assert entered.wait(WAIT)
    after = Calls()
    j.write([entry("b", 2)], after.on_durable)  # queued before the close: still written
    gate.set()
    assert j.close(timeout=WAIT) and j.closed
    assert seen == {"close": False, "closed": False}
    assert len(after.durable) == 1 and stored_keys(path) == ["'a'", "'b'"]


def test_a_write_waits_while_another_connection_holds_the_write_lock(make_journal, path):
    j = make_journal()
    calls = Calls()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        j.write([entry("a", 1)], calls.on_durable, calls.on_error)
        # SQLite cannot commit while the lock is held; the writer waits (busy_timeout 10 s).
        assert j.flush(timeout=0.1) is False and not calls.any.is_set()
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    assert j.flush(timeout=WAIT)
    assert len(calls.durable) == 1 and not calls.errors


def test_a_lock_held_past_busy_timeout_fails_that_group_and_the_journal_goes_on(make_journal, path):
    j = make_journal(busy_timeout=0.1)
    calls = Calls()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        j.write([entry("a", 1), entry("b", 2)], calls.on_durable, calls.on_error)
        assert calls.any.wait(WAIT)  # answered while the lock is still held: it can only fail
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    (entries, error), = calls.errors
    assert [e.task_id for e in entries] == ["'a'", "'b'"] and not calls.durable
    assert isinstance(error, JournalError) and "database is locked" in str(error)
    assert isinstance(error.__cause__, sqlite3.OperationalError)
    j.write([entry("c", 3)], calls.on_durable, calls.on_error)
    assert j.flush(timeout=WAIT) and len(calls.durable) == 1
    assert stored_keys(path) == ["'c'"] and j.stats().write_errors == 1


@pytest.mark.slow
def test_two_processes_write_one_journal_at_once(path):
    """Two workers in two kernels on one file: created together, written together, nothing lost."""
    groups, size = 150, 3
    procs = [subprocess.Popen(
        [sys.executable, child.__file__, str(path), "--tag", tag, "--group", str(size),
         "--groups", str(groups), "--group-delay", "0", "--max-pending", "6", "--wait-go",
         "--pause-at", str(groups // 3)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for tag in ("p1", "p2")]
    for p in procs:  # both open the (missing) file at the same moment and write a third
        pipe(p.stdin).write("go\n")
        pipe(p.stdin).flush()
    early: list[list[str]] = []
    for p in procs:  # both now have the journal open and have written into it: go on together
        early.append(read_until(p, "paused"))
    for p in procs:
        pipe(p.stdin).write("go\n")
        pipe(p.stdin).close()
    # Read through the same buffered pipes as read_until (communicate() would skip their buffers).
    outputs = [(pipe(p.stdout).read(), pipe(p.stderr).read(), p.wait(timeout=120)) for p in procs]
    for before, (out, err, status) in zip(early, outputs):
        assert status == 0, err
        lines = before + out.splitlines()
        assert lines[-1].startswith("done True"), lines[-3:]
        stats = list(map(int, lines[-1].split()[2:]))
        assert stats[0] == groups * size and stats[5] == 0  # entries, write errors
        assert sorted(int(x.split()[1]) for x in lines if x.startswith("a ")) == list(range(groups))
        assert not [x for x in lines if x.startswith("e ")]
    assert integrity(path) == [("ok",)]
    with open_journal(path) as reader:
        runs = reader.runs()
        assert sorted(r.name for r in runs) == ["p1", "p2"] and all(r.ended for r in runs)
        assert [r.succeeded for r in runs] == [groups * size] * 2
        ids = [o.task_id for o in reader.tasks()]
    assert len(ids) == len(set(ids)) == 2 * groups * size


def test_child_script_payloads_are_deterministic():
    assert child.payload("t", 1, 2, 100) == child.payload("t", 1, 2, 100)
    assert len(child.payload("t", 1, 2, 100)) == 100 and child.payload("t", 1, 3, 8) != \
        child.payload("t", 1, 2, 8)


def test_stats_and_repr_describe_the_journal(make_journal, path: Path):
    j = make_journal()
    j.write([entry("a", 1)], lambda _e: None)
    assert j.flush(timeout=WAIT)
    assert j.stats().entries == 1 and j.stats().transactions == 1
    assert repr(j) == f"<Journal {str(path)!r} run {j.run_id} open, 0 pending, 1 written>"


def test_group_delay_holds_a_stream_but_not_a_lone_outcome(make_journal):
    # A delay far beyond the test's waits: whatever is committed early was not held back by it.
    j = make_journal(group_delay=60.0, max_pending=8)
    first = Calls()
    j.write([entry("lone", 1)], first.on_durable)  # a quiet journal: committed at once
    assert first.any.wait(WAIT)
    second = Calls()
    j.write([entry("next", 2)], second.on_durable)  # right after a commit: waits for company
    assert not second.any.wait(0.1)
    assert j.flush(timeout=WAIT) and len(second.durable) == 1  # flush() cuts the wait short
    third = Calls()
    j.write([entry("a", 3)], third.on_durable)
    assert not third.any.wait(0.1)
    j.write([entry("b", 4), entry("c", 5), entry("d", 6)], third.on_durable)  # half of max_pending
    assert wait_until(lambda: len(third.durable) == 2)
    assert j.stats().transactions == 3  # lone; next; a with b, c and d
    j.write([entry("e", 7)], third.on_durable)
    assert j.close(timeout=WAIT) and len(third.durable) == 3  # close() does not wait either


def test_calls_waiting_for_room_go_in_first_come_first_served(make_journal, gate):
    j = make_journal(max_pending=4)
    _hold(j, gate)
    for i in range(3):
        j.write([entry(i, i)], lambda _e: None)
    order = Calls()
    big = [entry(("big", i), i) for i in range(4)]

    def write(entries) -> None:
        j.write(entries, order.on_durable)

    first = threading.Thread(target=write, args=(big,))  # 3 + 4 > 4: waits
    first.start()
    assert wait_until(lambda: j.stats().blocked == 1)
    second = threading.Thread(target=write, args=([entry("small", 0)],))  # would fit: queues behind
    second.start()
    assert wait_until(lambda: j.stats().blocked == 2)
    gate.set()
    for t in (first, second):
        t.join(WAIT)
    assert j.flush(timeout=WAIT)
    assert [len(es) for es in order.durable] == [4, 1]


def _close_amid_writes(path: Path) -> tuple[list[int], list[int]]:
    """8 threads write to a journal until it refuses; it is closed amid their writes. Returns
    the calls accepted (write() returned) and those answered (on_durable ran)."""
    j = Journal(path, max_pending=2, group_delay=0)
    lock = threading.Lock()
    accepted: list[int] = []
    answered: list[int] = []
    start = threading.Barrier(9)

    def answer(n: int):
        def on_durable(_entries):
            with lock:
                answered.append(n)
        return on_durable

    def produce(t: int) -> None:
        start.wait()
        for i in range(10_000):
            n = t * 100_000 + i
            try:
                j.write([entry(n, n)], answer(n))
            except JournalError:
                return
            with lock:
                accepted.append(n)

    threads = [threading.Thread(target=produce, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    start.wait()
    assert wait_until(lambda: j.stats().entries >= 50)  # then close amid the writes
    assert j.close(timeout=WAIT)
    for t in threads:
        t.join(WAIT)
    return accepted, answered


def test_closing_while_many_threads_write_answers_every_accepted_call(tmp_path):
    """Each write() either raises JournalError (refused: the journal is closing) or returns,
    and then its callback runs exactly once, also for calls that waited for room at the close."""
    for round_ in range(30):
        path = tmp_path / f"close{round_}.db"
        accepted, answered = _close_amid_writes(path)
        assert sorted(answered) == sorted(accepted), round_
        assert len(stored_keys(path)) == len(accepted)
