"""The public surface of `neon_nb`, pinned; and the core's imports stay light."""

from __future__ import annotations

import inspect
import pathlib
import subprocess
import sys
import textwrap
import types

import neon_nb

# Adding or removing a public name is an API change: update this list on purpose.
PUBLIC = [
    "BackendUnavailableError",
    "Batch",
    "ConfigError",
    "ConfigManager",
    "ConfigTypeError",
    "DuplicateTaskError",
    "Event",
    "EventBatch",
    "EventKind",
    "FlakyTaskError",
    "HealthReport",
    "Journal",
    "JournalError",
    "JournalReader",
    "JournalRun",
    "JournalStats",
    "LatencySummary",
    "Metrics",
    "MetricsSnapshot",
    "NeonError",
    "NeonExecutor",
    "NeonWorker",
    "QueueFullError",
    "ShutdownReport",
    "SignalHandlers",
    "StoredOutcome",
    "Subscription",
    "SynchronizedCounter",
    "Task",
    "TaskFuture",
    "TaskInfo",
    "TaskKind",
    "TaskPicklingError",
    "TaskSpan",
    "TaskState",
    "ThroughputPoint",
    "UnknownTaskError",
    "UnstorableResultError",
    "WorkerConfig",
    "WorkerLostError",
    "WorkerShutdownError",
    "WorkerState",
    "WorkerStatistics",
    "__version__",
    "config_manager",
    "get_config",
    "get_task_kind",
    "install_signal_handlers",
    "open_journal",
    "register_task_kind",
    "task_kinds",
    "update_config",
]

#: Heavy or Jupyter-only libraries the core must never import.
HEAVY = ("ipywidgets", "matplotlib", "IPython", "ipykernel", "traitlets", "distributed", "dask",
         "pandas", "numpy")


def test_all_is_pinned():
    assert neon_nb.__all__ == PUBLIC


def test_every_exported_name_exists():
    for name in neon_nb.__all__:
        assert hasattr(neon_nb, name), name


def test_nothing_public_is_left_out_of_all():
    public = {name for name, value in vars(neon_nb).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert public <= set(neon_nb.__all__), public - set(neon_nb.__all__)


def test_errors_form_one_hierarchy_in_one_module():
    errors = [getattr(neon_nb, n) for n in neon_nb.__all__
              if inspect.isclass(getattr(neon_nb, n)) and issubclass(getattr(neon_nb, n), Exception)]
    assert len(errors) >= 8
    for err in errors:
        assert issubclass(err, neon_nb.NeonError), err
        assert err.__module__ == "neon_nb._errors", err
    assert issubclass(neon_nb.WorkerShutdownError, RuntimeError)
    assert issubclass(neon_nb.UnknownTaskError, KeyError)
    assert issubclass(neon_nb.DuplicateTaskError, ValueError)


def test_batches_and_task_kinds_are_one_api_from_three_places():
    # The core exports them; neon_nb.batch defines them; neon_nb.widgets (the BatchBuilder's
    # module) still re-exports them, so existing imports keep working.
    import neon_nb.batch

    names = ("Batch", "FlakyTaskError", "TaskKind", "get_task_kind", "register_task_kind", "task_kinds")
    for name in names:
        assert getattr(neon_nb, name) is getattr(neon_nb.batch, name), name
    code = ("import neon_nb, neon_nb.widgets as w; "
            f"print(all(getattr(w, n) is getattr(neon_nb, n) for n in {names!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=False)
    if "needs ipywidgets and matplotlib" in out.stderr:  # a core-only install has no widgets
        assert "pip install" in out.stderr
    else:
        assert out.stdout.strip() == "True", out.stderr


def test_the_package_is_typed():
    assert (pathlib.Path(neon_nb.__file__).parent / "py.typed").is_file()


def test_importing_and_using_the_core_imports_no_jupyter_or_plotting_library():
    code = textwrap.dedent(f"""
        import sys
        import neon_nb
        after_import = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        w = neon_nb.NeonWorker(1).start()
        w.submit(int, "1").result()
        w.get_status(); w.health(); w.metrics.snapshot() if w.metrics else None
        w.shutdown()
        ex = neon_nb.NeonExecutor(1)
        list(ex.map(str, range(3)))
        ex.shutdown()
        after_use = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
        print(after_import, after_use)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr
