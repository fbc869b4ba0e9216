"""Is this worker started by a script's top-level code, outside ``if __name__ == "__main__":``?

With the ``spawn`` and ``forkserver`` start methods, every worker process
re-runs the main module before it can run a task (that is how it finds the
task's functions). A script that starts a worker at top level, unguarded,
would start a worker again in each child, which cannot start processes while
it is itself starting: the pool breaks and the child prints its traceback.
Python's multiprocessing names the fix in that situation; `main_guard_problem`
lets the processes backend name it at ``start()``, before any process starts.

Only the source of the main module is read (with `ast`): nothing is executed.
When the main module has no source file (a notebook, ``python -c``, the
interactive prompt) or is not re-run by the children, there is no problem.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path
from types import FrameType

__all__ = ["main_guard_problem"]

GUARD_HINT = ('put the code that starts the worker under `if __name__ == "__main__":` (worker processes '
              'import the main module, and must not start a worker again); see "Safe importing of main '
              'module" in the multiprocessing documentation')


def main_guard_problem(start_method: str) -> str | None:
    """A message naming the script and line if the caller starts processes from unguarded top-level code.

    None when there is nothing to fix: the start method is ``fork``, the main
    module is not re-run by children, or the call is under the guard (or in a
    function called from there), or the source cannot be read.
    """
    if start_method == "fork":
        return None
    path = _rerun_main_path()
    if path is None:
        return None
    frame = _outermost_main_frame(inspect.currentframe())
    if frame is None:
        return None
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None
    if _guarded(tree.body, line):
        return None
    return (f"{path}, line {line}, starts a worker with the processes backend from the script's top-level "
            f"code, which every worker process runs again when it starts ({start_method!r} start "
            f"method): {GUARD_HINT}.")


def _rerun_main_path() -> str | None:
    """The main module's file if ``spawn``/``forkserver`` children run it again; else None.

    Mirrors multiprocessing: a main module run by name (``python -m pkg.mod``)
    is imported again unless it is a package's ``__main__``; a script by path.
    """
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return None
        return getattr(spec, "origin", None)
    return getattr(main, "__file__", None)


def _outermost_main_frame(frame: FrameType | None) -> FrameType | None:
    """The frame of the main module's top-level code in this call stack, if any."""
    main = sys.modules.get("__main__")
    main_globals = vars(main) if main is not None else None
    found = None
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            found = frame
        frame = frame.f_back
    return found


def _is_main_test(test: ast.expr) -> bool | None:
    """True for ``__name__ == "__main__"``, False for ``__name__ != "__main__"``, else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and len(test.comparators) == 1):
        return None
    sides = {type(test.left), type(test.comparators[0])}
    if sides != {ast.Name, ast.Constant}:
        return None
    name = test.left if isinstance(test.left, ast.Name) else test.comparators[0]
    const = test.comparators[0] if isinstance(test.left, ast.Name) else test.left
    if not (isinstance(name, ast.Name) and name.id == "__name__"
            and isinstance(const, ast.Constant) and const.value == "__main__"):
        return None
    if isinstance(test.ops[0], ast.Eq):
        return True
    return False if isinstance(test.ops[0], ast.NotEq) else None


def _guarded(body: list[ast.stmt], line: int) -> bool:
    """Whether ``line`` lies in a guarded block within ``body`` (searched through nested blocks)."""
    for stmt in body:
        end = getattr(stmt, "end_lineno", None) or stmt.lineno
        if not stmt.lineno <= line <= end:
            continue
        if isinstance(stmt, ast.If):
            kind = _is_main_test(stmt.test)
            in_body = any(s.lineno <= line <= (s.end_lineno or s.lineno) for s in stmt.body)
            if (kind is True and in_body) or (kind is False and not in_body):
                return True
        return any(_guarded(block, line) for block in _blocks(stmt))
    return False


def _blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    """The statement lists nested in a compound statement (if, with, try, for, while, match)."""
    blocks = [getattr(stmt, name) for name in ("body", "orelse", "finalbody")
              if isinstance(getattr(stmt, name, None), list)]
    blocks += [h.body for h in getattr(stmt, "handlers", ())]
    blocks += [c.body for c in getattr(stmt, "cases", ())]
    return blocks
