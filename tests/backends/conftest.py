"""Backends under test: one fresh backend per worker; one Dask LocalCluster per test module."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

import neon_nb
from neon_nb.backends import DaskBackend, ProcessBackend

BACKENDS = ["threads", "processes", pytest.param("dask", marks=pytest.mark.dask)]


@pytest.fixture(scope="module")
def dask_client():
    """A 2-process LocalCluster on 127.0.0.1 for the whole module, closed afterwards."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A factory of backends of one kind: each NeonWorker needs its own backend instance."""
    kind = request.param
    if kind == "threads":
        return lambda: "threads"
    if kind == "processes":
        return ProcessBackend
    client = request.getfixturevalue("dask_client")
    return lambda: DaskBackend(client)


@pytest.fixture
def make_worker(tmp_path) -> Iterator[Callable[..., neon_nb.NeonWorker]]:
    """Started workers, all shut down after the test; ``release`` (a file) frees waiting tasks first."""
    made: list[neon_nb.NeonWorker] = []

    def make(*args, start: bool = True, **kwargs) -> neon_nb.NeonWorker:
        w = neon_nb.NeonWorker(*args, **kwargs)
        made.append(w)
        return w.start() if start else w

    yield make
    (tmp_path / "release").touch()
    for w in made:
        w.shutdown(timeout=10.0, cancel_pending=True)
