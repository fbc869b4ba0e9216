"""Fixtures for the journal tests.

* ``make_journal``: open `Journal` objects on files in ``tmp_path``; at teardown every gate is
  opened first (a writer thread blocked in a gated callback is released), then each journal is
  closed, and the test fails if one could not close.
* ``path``: the default journal file of a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from neon_nb._journal import Journal

from ..conftest import WAIT, Gates


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runs.db"


@pytest.fixture
def make_journal(path: Path, gates: Gates) -> Iterator[Callable[..., Journal]]:
    made: list[Journal] = []

    def make(at: Path | None = None, **options) -> Journal:
        journal = Journal(at or path, **options)
        made.append(journal)
        return journal

    yield make
    gates.open_all()
    stuck = [j for j in made if not j.close(timeout=WAIT)]
    assert not stuck, f"journals that did not close: {stuck}"
