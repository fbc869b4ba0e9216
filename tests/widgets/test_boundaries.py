"""The widget and plotting modules use each other's public names only.

A name with a leading underscore is private to its module: a widget that imports one from
another file (``_css``, ``_short_thread``) breaks when that file is reorganised. Shared helpers
live in public names (``neon_nb.widgets.view``, ``neon_nb.plots``).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import neon_nb

PACKAGE = pathlib.Path(neon_nb.__file__).parent
MODULES = sorted([*PACKAGE.joinpath("widgets").glob("*.py"), PACKAGE / "plots.py", PACKAGE / "scaling.py"])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_imported_from_another_module(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    private = [
        f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not private, f"{path.name} imports private names of other modules: {private}"


def test_the_widgets_package_names_no_machine_path() -> None:
    for path in PACKAGE.joinpath("widgets").glob("*.py"):
        text = path.read_text()
        assert "/work/" not in text and "shared/notes" not in text, path.name
