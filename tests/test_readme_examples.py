"""The README's self-contained Python examples run as written (each in a fresh interpreter).

The examples a reader copies first: the quickstart, the configuration calls, and the resumable
run followed by reading its journal back. Examples that need a notebook, a live worker from an
earlier block, or a long measurement are covered by their own tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def block(containing: str) -> str:
    """The README's Python block that contains ``containing`` (exactly one does)."""
    found = [b for b in BLOCKS if containing in b]
    assert len(found) == 1, f"{len(found)} README blocks contain {containing!r}"
    return found[0]


def run(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)  # the assert shows the example's stderr
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_quickstart_runs(tmp_path: Path) -> None:
    out = run(block("def process_data("), tmp_path).split()
    assert out == ["Processed", "data_123", "1"]


def test_the_configuration_example_runs(tmp_path: Path) -> None:
    out = run(block("from neon_nb import get_config, update_config\n"), tmp_path)
    assert out.strip().isdigit()


@pytest.mark.slow
def test_the_resumable_run_and_its_journal_run(tmp_path: Path) -> None:
    pytest.importorskip("pandas")  # the reading example ends with to_dataframe (the pandas extra)
    run(block('journal="runs.db"') + "\nworker.shutdown()\n", tmp_path)
    out = run(block("from neon_nb import open_journal\n")
              + '\n    print(journal.result("sim-1"), len(journal.to_dataframe("tasks")) >= 1000)\n',
              tmp_path)
    assert out.splitlines()[-1] == "1 True"
    assert "2 runs" in out
