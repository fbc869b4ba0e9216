"""The processes backend in a script: the ``if __name__ == "__main__":`` guard, and pools that cannot start.

Each case is a real script run by a real interpreter: with the ``forkserver`` (or ``spawn``)
start method every worker process imports the script again, which is what goes wrong.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neon_nb.backends._main_guard import _guarded

pytestmark = pytest.mark.timeout(120)

HEADER = """\
from neon_nb import NeonWorker

def square(x):
    return x * x
"""

UNGUARDED = {
    "top level": """
        w = NeonWorker(2, backend="processes").start()
        print("result", w.submit(square, 7).result(timeout=60))
        w.shutdown()
    """,
    "in a function called at top level": """
        def main():
            w = NeonWorker(2, backend="processes").start()
            print("result", w.submit(square, 7).result(timeout=60))
            w.shutdown()

        main()
    """,
}

GUARDED = {
    "guard block": """
        if __name__ == "__main__":
            w = NeonWorker(2, backend="processes").start()
            print("result", w.submit(square, 7).result(timeout=60))
            w.shutdown()
    """,
    "main() under the guard": """
        def main():
            with NeonWorker(2, backend="processes") as w:
                print("result", w.submit(square, 7).result(timeout=60))

        if __name__ == "__main__":
            main()
    """,
}


def run_script(tmp_path: Path, body: str, *, as_module: bool = False) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_script.py"
    script.write_text(HEADER + textwrap.dedent(body))
    argv = ["-m", "user_script"] if as_module else [str(script)]
    return subprocess.run([sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=100, check=False)


def assert_one_clear_error_at_start(out: subprocess.CompletedProcess[str], script: str) -> None:
    assert out.returncode == 1, out.stdout + out.stderr
    assert "result" not in out.stdout
    # One traceback, from the parent, ending in the error that names the fix and the line.
    assert out.stderr.count("Traceback (most recent call last)") == 1, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("neon_nb._errors.BackendUnavailableError: the processes backend cannot "
                           "start here: "), last
    assert 'under `if __name__ == "__main__":`' in last
    assert f"{script}, line " in last
    assert ".start()" in out.stderr  # raised by start(), where the user called it
    # No child ever ran the script: no child traceback, no lost worker, no retry.
    for noise in ("WorkerLostError", "forkserver.py", "spawn.py", "BrokenProcessPool", "retried"):
        assert noise not in out.stderr, out.stderr


@pytest.mark.parametrize("body", UNGUARDED.values(), ids=UNGUARDED.keys())
def test_script_without_the_guard_fails_at_start_naming_the_fix(tmp_path, body):
    out = run_script(tmp_path, body)
    assert_one_clear_error_at_start(out, str(tmp_path / "user_script.py"))


def test_module_run_with_dash_m_without_the_guard_fails_at_start(tmp_path):
    # `python -m user_script`: the children import it again by name.
    out = run_script(tmp_path, UNGUARDED["top level"], as_module=True)
    assert_one_clear_error_at_start(out, str(tmp_path / "user_script.py"))


@pytest.mark.parametrize("body", GUARDED.values(), ids=GUARDED.keys())
def test_script_with_the_guard_runs(tmp_path, body):
    out = run_script(tmp_path, body)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["result 49"]


def test_fork_start_method_needs_no_guard(tmp_path):
    # fork does not import the main module again: nothing to refuse.
    out = run_script(tmp_path, """
        from neon_nb.backends import ProcessBackend
        w = NeonWorker(1, backend=ProcessBackend(mp_context="fork")).start()
        print("result", w.submit(square, 7).result(timeout=60))
        w.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["result 49"]


def test_a_pool_that_cannot_start_is_not_retried(tmp_path):
    # Guarded, but the module fails whenever a worker process imports it (it runs as __mp_main__
    # there): no process can ever start. One clear error, and no pool after pool.
    out = run_script(tmp_path, """
        import sys
        if __name__ == "__mp_main__":
            print("child started", file=sys.stderr, flush=True)
            raise RuntimeError("this module cannot be imported by a worker process")

        if __name__ == "__main__":
            w = NeonWorker(2, backend="processes", retry_attempts=3, retry_delay=0.0).start()
            futures = [w.submit(square, i) for i in range(4)]
            for f in futures:
                exc = f.exception(timeout=60)
                print("error", type(exc).__name__, w.get_task_status(f.task_id).attempts)
            print("message", exc)
            w.shutdown()
    """)
    assert out.returncode == 0, out.stderr
    errors = [line for line in out.stdout.splitlines() if line.startswith("error ")]
    assert len(errors) == 4 and all(line.split()[1] == "BackendUnavailableError" for line in errors), errors
    message = out.stdout.split("message ", 1)[1]
    assert message.startswith("the processes backend cannot start worker processes: each new process "
                              "exits while starting, before it runs any task")
    assert 'if __name__ == "__main__":' in message
    assert "WorkerLostError" not in out.stdout + out.stderr
    # The first pool and one probe: at most one process each per worker thread, whatever the
    # number of tasks and retries (4 tasks x 4 attempts would otherwise start 16 pools).
    started = out.stderr.count("child started")
    assert 1 <= started <= 4, out.stderr


# ------------------------------------------------------------ which lines are guarded
SOURCE = textwrap.dedent("""\
    import os                                    # 1
    if __name__ == "__main__":                   # 2
        start()                                  # 3
    if "__main__" == __name__:                   # 4
        try:                                     # 5
            start()                              # 6
        finally:                                 # 7
            pass                                 # 8
    if __name__ != "__main__":                   # 9
        pass                                     # 10
    else:                                        # 11
        start()                                  # 12
    if os.environ.get("X"):                      # 13
        pass                                     # 14
    elif __name__ == "__main__":                 # 15
        start()                                  # 16
    if __name__ == "__main__" or True:           # 17
        start()                                  # 18
    if __name__ != "__main__":                   # 19
        start()                                  # 20
    start()                                      # 21
    if __name__ == "__main__": start()           # 22
""")


@pytest.mark.parametrize(("line", "guarded"), [
    (3, True), (6, True), (12, True), (16, True), (22, True),
    (1, False), (10, False), (14, False), (18, False), (20, False), (21, False),
])
def test_guard_recognition(line, guarded):
    assert _guarded(ast.parse(SOURCE).body, line) is guarded
