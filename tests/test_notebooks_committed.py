"""The lessons in notebooks/ are committed with the outputs of one real, complete run.

nbval compares only the cells marked ``# NBVAL_CHECK_OUTPUT``, against the outputs stored in the
file: a notebook saved without outputs, or half-run, would pass it without checking anything.
These tests read the files (JSON, standard library only) and fail in that case.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def _code_cells(path: Path) -> list[dict]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def test_there_are_lessons() -> None:
    assert len(NOTEBOOKS) >= 10, f"expected the course's notebooks, found {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_ran_once_top_to_bottom(path: Path) -> None:
    """Execution counts 1, 2, 3, ... in document order: one run of the whole notebook, no gaps."""
    counts = [c["execution_count"] for c in _code_cells(path)]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts}; re-execute it with "
        f"`jupyter nbconvert --to notebook --execute --inplace` (see notebooks/README.md)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_cells_have_stored_output_and_no_cell_failed(path: Path) -> None:
    cells = _code_cells(path)
    checked = [c for c in cells if CHECK_MARK in _source(c)]
    assert checked, f"{path.name}: no cell is marked {CHECK_MARK}, so nbval checks nothing in it"
    for cell in checked:
        text = "".join("".join(o.get("text", "")) for o in cell["outputs"] if o["output_type"] == "stream")
        assert text.strip(), f"{path.name}: a checked cell has no stored output to compare with"
    errors = [o.get("ename") for c in cells for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{path.name}: stored outputs contain errors {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_lesson_shows_a_picture_from_its_run(path: Path) -> None:
    pngs = sum("image/png" in o.get("data", {}) for c in _code_cells(path) for o in c["outputs"])
    assert pngs >= 1, f"{path.name}: no picture among its stored outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_saved_dashboard_shows_its_workers_final_state(path: Path) -> None:
    """A dashboard's picture (what GitHub and nbconvert show) is of the worker once stopped."""
    for cell in _code_cells(path):
        for out in cell["outputs"]:
            text = "".join(out.get("data", {}).get("text/plain", ""))
            if "image/png" in out.get("data", {}) and text.startswith("neon_nb dashboard of worker"):
                assert ": stopped;" in text, f"{path.name}: a saved dashboard picture is stale: {text}"
