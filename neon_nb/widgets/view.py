"""How neon_nb's widgets display: a live widget, a text line, and a static picture.

A `WidgetView` (`Dashboard`, `BatchBuilder`, `ScalingExperiment`) displays as
two outputs:

1. the live widget (``application/vnd.jupyter.widget-view+json``, with its
   repr as ``text/plain``), which JupyterLab, Notebook 7 and VS Code render
   while the kernel runs;
2. for views that have one, a `StaticPicture`: a PNG of the view's latest
   state (``image/png``) under a display id. GitHub, nbviewer and
   ``jupyter nbconvert --to html`` show it in a saved notebook, where no
   kernel runs the widget. Where the live widget renders, a style rule in
   the widget hides the picture, so it is not shown twice.

The picture is kept current with ``update_display_data`` messages, sent by
the view's owner thread (never a worker thread) at a low rate. Which output a
message updates depends on its parent header, and front ends differ:

* JupyterLab and Notebook 7 route a message to the output area of the cell
  whose request is its parent, and look the display id up there only. So
  the picture remembers the parent of each cell that displayed it and sends
  one update with each.
* nbclient (``nbconvert --execute``, ``jupyter execute``) keeps only
  messages whose parent is the cell executing *now*, and then updates every
  output with the display id, in any cell. So one more update goes with the
  kernel's current parent (which is what a thread without a parent of its
  own sends with).

nbval ignores update messages, so none of this changes what it compares.

`add_classes` tags widgets with CSS classes, which the browser tests select.
`warn_without_frontend` tells a script user, once, that a widget is not shown.
"""

from __future__ import annotations

import base64
import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["PICTURE_CSS", "PICTURE_HIDER_CLASS", "StaticPicture", "WidgetView", "add_classes", "has_frontend",
           "warn_without_frontend", "widget_tree"]

#: The class of a widget element whose style rule hides the static picture next to it.
PICTURE_HIDER_CLASS = "neon-picture-hider"

#: The rule, inside each live view: the output right after a live neon_nb view is its static
#: picture (they are displayed together), so it is hidden wherever the live view renders.
PICTURE_CSS = (".jp-OutputArea-child:has(.neon-live-view) + .jp-OutputArea-child:has(img) "
               "{ display: none; }")


def add_classes(widget: Any, *classes: str) -> Any:
    """Add CSS classes to an ipywidgets widget and return it (for building layouts inline)."""
    for c in classes:
        widget.add_class(c)
    return widget


def widget_tree(widget: Any) -> list[Any]:
    """A widget, its children, recursively, and their layout and style widgets; each once.

    Closing them all (``for w in widget_tree(box): w.close()``) frees every comm of a view.
    """
    import ipywidgets as W

    out: dict[int, Any] = {}
    todo = [widget]
    while todo:
        w = todo.pop()
        if id(w) in out:
            continue
        out[id(w)] = w
        todo.extend(sub for sub in (getattr(w, "layout", None), getattr(w, "style", None))
                    if isinstance(sub, W.Widget))
        todo.extend(reversed(getattr(w, "children", ())))
    return list(out.values())


def has_frontend() -> bool:
    """Is this code running in a Jupyter kernel (so that a front end may render widgets)?"""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_without_frontend(what: str, instead: str) -> bool:
    """Warn once per ``what`` and process when no notebook front end can show a widget.

    A warning rather than a log line: it is a message to the programmer about
    how the code is used, shown once by default in a script (the logging
    configuration of the application does not decide whether it is seen),
    and testable with ``pytest.warns``. Returns True if it warned.
    """
    if has_frontend():
        return False
    with _warned_lock:
        if what in _warned:
            return False
        _warned.add(what)
    warnings.warn(f"{what} is a notebook widget: it needs a notebook front end (JupyterLab, "
                  f"Notebook 7, VS Code) and shows nothing in a plain script. {instead}",
                  RuntimeWarning, stacklevel=3)
    return True


class StaticPicture:
    """One display output (``image/png``) that any one thread can keep current.

    `show` displays it in the cell being executed (call it on the kernel
    thread, while that cell runs) and remembers the cell's parent header;
    `update` replaces the picture in every cell that showed it (see the module
    notes for the messages). Outside a kernel both do nothing.

    Thread-safety: `show` and `update` may run on different threads; the
    remembered parents are guarded by a lock, never held while sending.
    """

    #: At most this many displaying cells are remembered (the most recent ones).
    MAX_PARENTS = 8

    def __init__(self) -> None:
        self.display_id = f"neon-picture-{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._parents: list[dict[str, Any]] = []
        self.updates = 0  # messages sent by `update`, for tests

    @property
    def shown(self) -> bool:
        """Was the picture displayed in a kernel (so that updates have somewhere to go)?"""
        with self._lock:
            return bool(self._parents)

    def bundle(self, png: bytes, text: str) -> dict[str, Any]:
        return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}

    def show(self, render: Callable[[], bytes | None], text: str) -> None:
        """Display ``render()`` (PNG bytes) in the current cell, on the kernel thread.

        The cell is remembered *before* ``render`` runs: a change after that
        point is either in the picture or sent as an update (an update that
        arrives before the display is ignored, and the display is newer).
        """
        from IPython.display import display

        pub = _display_publisher()
        if pub is not None:
            parent = dict(pub.parent_header or {})
            with self._lock:
                known = {p.get("msg_id") for p in self._parents}
                if parent.get("msg_id") not in known:
                    self._parents = [*self._parents, parent][-self.MAX_PARENTS:]
        png = render()
        if png is not None:
            display(self.bundle(png, text), raw=True, display_id=self.display_id)

    def update(self, png: bytes, text: str) -> int:
        """Replace the picture wherever it was shown; returns the number of messages sent."""
        pub = _display_publisher()
        with self._lock:
            parents = list(self._parents)
        if pub is None or not parents:
            return 0
        current = dict(pub.parent_header or {})
        if current.get("msg_id") not in {p.get("msg_id") for p in parents}:
            parents.append(current)
        content = {"data": self.bundle(png, text), "metadata": {},
                   "transient": {"display_id": self.display_id}}
        for parent in parents:
            msg = pub.session.msg("update_display_data", content, parent=parent)
            pub.session.send(pub.pub_socket, msg, ident=pub.topic)
        self.updates += len(parents)
        return len(parents)


def _display_publisher() -> Any:
    """The kernel's display publisher, if this runs in a kernel that can send messages."""
    if not has_frontend():
        return None
    from IPython import get_ipython

    pub = getattr(get_ipython(), "display_pub", None)
    if getattr(pub, "session", None) is None or getattr(pub, "pub_socket", None) is None:
        return None
    return pub


class WidgetView:
    """Base of neon_nb's views: displays ``widget`` (a box of ipywidgets), and ``picture``.

    Subclasses set ``widget``, and optionally ``picture`` (a `StaticPicture`)
    and `picture_png` (its latest PNG bytes). ``text/plain`` is the view's
    repr, the line a front end without widgets prints.
    """

    widget: Any
    picture: StaticPicture | None = None

    def picture_png(self) -> bytes | None:
        """The static picture's latest PNG (None: no picture)."""
        return None

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
        return data

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        if self.picture is not None:
            self.picture.show(self.picture_png, self.picture_text())

    def picture_text(self) -> str:
        """The static picture in words (its ``text/plain``)."""
        return f"{self!r} (a picture of its latest state)"
