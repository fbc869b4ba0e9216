"""Keys: a task is found again by its id alone, or by its id, function and arguments."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import os
import random
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neon_nb._journal import Journal

key = Journal.key


def fetch(url, retries=0, *, timeout=10):
    return url


def parse(url, retries=0, *, timeout=10):
    return url


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class Opaque:
    pass


def test_plain_ids_are_their_repr_and_types_are_kept_apart():
    assert key("task_1") == "'task_1'"
    assert key(7) == "7" and key(7.0) == "7.0" and key(True) == "True" and key("7") == "'7'"
    assert key(("batch", 3)) == "('batch', 3)" and key(("one",)) == "('one',)"
    assert key(b"raw") == "b'raw'"
    assert key(Colour.RED) == "<Colour.RED: 1>" and key(Point(1, 2)) == "Point(x=1, y=2)"


def test_frozenset_ids_have_one_text_whatever_their_iteration_order():
    assert key(frozenset({"b", "a", "c"})) == "frozenset({'a', 'b', 'c'})"
    assert key(frozenset()) == "frozenset()"
    assert key(("x", frozenset({2, 1}))) == "('x', frozenset({1, 2}))"


def test_an_id_with_an_address_in_its_repr_is_refused():
    with pytest.raises(ValueError, match=r"a Opaque has no stable repr.*give Opaque a __repr__"):
        key(Opaque())
    with pytest.raises(ValueError, match="no stable repr"):
        key(("ok", Opaque()))
    with pytest.raises(ValueError, match="task_id must be a task's id, got None"):
        key(None)


def test_with_args_tells_apart_arguments_and_functions_but_not_kwargs_order():
    base = key("t", fetch, ("u",), {"retries": 1, "timeout": 5}, with_args=True)
    assert base.startswith("'t' #") and len(base) == len("'t' #") + 24
    assert base == key("t", fetch, ["u"], {"timeout": 5, "retries": 1}, with_args=True)
    assert base != key("t", fetch, ("u",), {"retries": 2, "timeout": 5}, with_args=True)
    assert base != key("t", parse, ("u",), {"retries": 1, "timeout": 5}, with_args=True)
    assert base != key("t2", fetch, ("u",), {"retries": 1, "timeout": 5}, with_args=True)
    assert key("t", fetch, ("u",), with_args=False) == "'t'"


def test_with_args_sees_through_partial():
    bound = functools.partial(fetch, "u", timeout=5)
    assert key("t", bound, (1,), with_args=True) == key("t", fetch, ("u", 1), {"timeout": 5},
                                                        with_args=True)


def test_with_args_hashes_other_objects_by_their_pickle():
    assert key("t", fetch, (Point(1, 2),), with_args=True) == key("t", fetch, (Point(1, 2),),
                                                                  with_args=True)
    assert key("t", fetch, (Point(1, 2),), with_args=True) != key("t", fetch, (Point(2, 1),),
                                                                  with_args=True)
    with pytest.raises(ValueError, match=r"with_args=True needs arguments that can be pickled.*'t'"):
        key("t", fetch, (lambda: 1,), with_args=True)


_SCALARS = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(),
                     st.floats(allow_nan=False), st.binary(max_size=4))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3),
                            st.frozensets(st.integers(), max_size=3)),
    max_leaves=8)


def _typed(value):
    """A structure equal for two values exactly when they are the same types and reprs."""
    if isinstance(value, dict):
        return ("dict", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    if isinstance(value, frozenset):
        return ("frozenset", sorted(value))
    return (type(value).__name__, repr(value))


@given(a=_VALUES, b=_VALUES)
def test_with_args_keys_are_equal_exactly_for_equal_typed_arguments(a, b):
    same = key("t", fetch, (a,), with_args=True) == key("t", fetch, (b,), with_args=True)
    assert same == (_typed(a) == _typed(b))


@given(items=st.dictionaries(st.text(max_size=4), st.integers(), min_size=2, max_size=6),
       seed=st.integers(0, 1000))
def test_with_args_keys_ignore_the_insertion_order_of_dicts_and_sets(items, seed):
    shuffled = list(items.items())
    random.Random(seed).shuffle(shuffled)
    assert key("t", fetch, (set(items),), items, with_args=True) == \
        key("t", fetch, (set(dict(shuffled)),), dict(shuffled), with_args=True)


CASES = textwrap.dedent("""
    import json, sys
    from neon_nb._journal import Journal
    ids = ["task_1", 3, 2.5, ("batch", 7, "x"), frozenset({"alpha", "beta", "gamma", "delta"}),
           ("nested", frozenset({"p", "q", "r"}))]
    args = [(("u", {"b": 1, "a": 2}, {"s", "t", "u", "v"}), {"z": 1, "y": [1, 2]}),
            ((frozenset({"k", "l", "m"}),), {})]
    keys = [Journal.key(i) for i in ids]
    keys += [Journal.key("t", len, a, k, with_args=True) for a, k in args]
    print(json.dumps(keys))
""")


def test_keys_are_the_same_in_processes_with_different_string_hashing():
    """Keys must match after a restart: str hashing (and so set order) is random per process."""
    results = []
    for seed in ("1", "2", "3"):
        out = subprocess.run([sys.executable, "-c", CASES], capture_output=True, text=True,
                             check=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": seed})
        results.append(json.loads(out.stdout))
    assert results[0] == results[1] == results[2]
    assert results[0][4] == "frozenset({'alpha', 'beta', 'delta', 'gamma'})"
