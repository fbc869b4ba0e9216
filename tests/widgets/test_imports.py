"""Import boundaries, checked in fresh interpreters.

* ``import neon_nb`` (and ``neon_nb.batch``) imports neither ipywidgets nor matplotlib.
* Without ipywidgets or matplotlib, ``import neon_nb.widgets`` raises an ImportError that
  says ``pip install 'neon_nb[notebook]'`` (a ``sys.meta_path`` finder hides the package).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BLOCKER = textwrap.dedent("""
    import sys
    class Blocker:
        def __init__(self, names):
            self.names = names
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, Blocker(BLOCKED))
""")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)


def test_core_imports_no_notebook_library():
    r = _run("import sys, neon_nb, neon_nb.batch\n"
             "bad = [m for m in ('ipywidgets', 'matplotlib', 'IPython', 'ipykernel') if m in sys.modules]\n"
             "assert not bad, bad\n")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("blocked", ["ipywidgets", "matplotlib"])
def test_widgets_without_a_dependency_says_how_to_install(blocked):
    code = (f"BLOCKED = {{{blocked!r}}}\n" + BLOCKER + textwrap.dedent("""
        import neon_nb  # the core works
        try:
            import neon_nb.widgets
        except ImportError as exc:
            print("MESSAGE:", exc)
        else:
            raise SystemExit("imported without the dependency")
        """))
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "pip install 'neon_nb[notebook]'" in r.stdout
    assert blocked in r.stdout


def test_public_surface():
    pytest.importorskip("ipywidgets")
    import neon_nb.widgets as w

    assert set(w.__all__) == {
        "Batch", "BatchBuilder", "Dashboard", "FlakyTaskError", "ScalingExperiment", "TaskKind",
        "get_task_kind", "plot_latency", "plot_scaling", "plot_task_stream", "plot_throughput",
        "register_task_kind", "task_kinds"}
    assert all(hasattr(w, name) for name in w.__all__)
