"""`SynchronizedCounter`: atomic, reentrant, validated."""

from __future__ import annotations

import sys
import threading

import pytest

from neon_nb import SynchronizedCounter


def test_basic_operations_return_the_new_value():
    c = SynchronizedCounter()
    assert c.value == 0
    assert c.increment() == 1
    assert c.increment(4) == 5
    assert c.decrement() == 4
    assert c.decrement(10) == -6
    assert c.add(-4) == -10
    assert c.add(12) == 2
    assert int(c) == 2
    assert repr(c) == "SynchronizedCounter(2)"


def test_initial_value_and_reset_returns_the_previous_value():
    c = SynchronizedCounter(7)
    assert c.reset() == 7
    assert c.value == 0
    assert c.reset(-3) == 0
    assert c.value == -3


def test_compare_and_set():
    c = SynchronizedCounter(5)
    assert c.compare_and_set(4, 9) is False
    assert c.value == 5
    assert c.compare_and_set(5, 9) is True
    assert c.value == 9


@pytest.mark.parametrize(("call", "param"), [
    (lambda c: c.increment(1.5), "amount"),
    (lambda c: c.increment("1"), "amount"),
    (lambda c: c.decrement(None), "amount"),
    (lambda c: c.add(True), "amount"),
    (lambda c: c.reset(2.0), "value"),
    (lambda c: c.compare_and_set(0, 1.0), "new"),
    (lambda c: SynchronizedCounter(0.5), "initial"),
])
def test_non_int_arguments_are_rejected_naming_the_parameter(call, param):
    c = SynchronizedCounter(3)
    with pytest.raises(TypeError) as info:
        call(c)
    assert str(info.value).startswith(f"{param} must be an int")
    assert c.value == 3


def test_reentrant_read_then_update_in_one_critical_section():
    c = SynchronizedCounter()
    limit = 100
    start = threading.Barrier(8)

    def bounded_increments():
        start.wait()
        for _ in range(200):
            with c:  # the lock is reentrant: the methods can be called while holding it
                if c.value < limit:
                    c.increment()

    threads = [threading.Thread(target=bounded_increments) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.value == limit


def test_with_block_excludes_other_threads():
    c = SynchronizedCounter()
    inside = threading.Event()
    done = threading.Event()

    def other():
        inside.wait()
        c.increment()
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with c:
        inside.set()
        # The other thread must block on the lock we hold.
        assert not done.wait(0.05)
        assert c.value == 0
    assert done.wait(10)
    t.join()
    assert c.value == 1


def test_no_lost_updates_under_contention():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        c = SynchronizedCounter()
        n_threads, n = 8, 2000
        start = threading.Barrier(n_threads)
        successes = SynchronizedCounter()

        def work(i):
            start.wait()
            for _ in range(n):
                c.increment()
                c.add(2)
                c.decrement()
                # A CAS loop: read, then set only if nobody changed it meanwhile.
                while True:
                    v = c.value
                    if c.compare_and_set(v, v + 1):
                        successes.increment()
                        break

        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert c.value == n_threads * n * 3
    assert successes.value == n_threads * n
