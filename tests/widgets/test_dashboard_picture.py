"""The dashboard's static picture: what it shows, how it is displayed and kept current.

* In-process: the picture is the dashboard's own plot PNGs stitched under a header, with its
  state in words; it is recomposed only when the state changed.
* `StaticPicture` with a stand-in kernel publisher: which parent headers its updates carry.
* A real kernel (slow): the display's two outputs and the updates the owner thread sends while
  later cells run; and nbclient (what ``jupyter nbconvert --execute`` runs) saving the final
  picture in the notebook, then exporting it to HTML as an embedded image.
"""

from __future__ import annotations

import base64
import io
import os
import threading
import warnings

import pytest
from PIL import Image

from neon_nb import Task
from neon_nb.widgets import Dashboard
from neon_nb.widgets import view as view_module
from neon_nb.widgets.view import PICTURE_CSS, StaticPicture

from .helpers import WAIT

KERNEL_ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}


def png_info(png: bytes) -> tuple[tuple[int, int], str]:
    im = Image.open(io.BytesIO(png))
    return im.size, im.info.get("Description", "")


# ------------------------------------------------------------------------------ in process


def test_picture_stitches_the_live_plots_under_a_header(make_worker, dashboards) -> None:
    w = make_worker(max_workers=2, queue_size=0, name="pic")
    w.add_tasks([Task(f"t{i}", sum, ([i, 1],)) for i in range(30)])
    assert w.wait_for_completion(WAIT)
    dash = dashboards(w)
    assert dash.refresh(WAIT)
    png = dash.picture_png()
    (width, height), text = png_info(png)
    assert text == ("neon_nb dashboard of worker 'pic': running; 30 submitted, 30 succeeded, "
                    "0 failed, 0 cancelled, 0 retried")
    latency = Image.open(io.BytesIO(dash.latency.value)).convert("RGB")
    stream = Image.open(io.BytesIO(dash.task_stream.value)).convert("RGB")
    assert width == max(latency.width, stream.width)
    # The task stream is the bottom row, pasted pixel for pixel.
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    bottom = picture.crop((0, height - stream.height, stream.width, height))
    assert bottom.tobytes() == stream.tobytes()


def test_picture_is_recomposed_only_when_the_state_changed(make_worker, dashboards) -> None:
    w = make_worker(max_workers=1, queue_size=0)
    dash = dashboards(w)
    first = dash.picture_png()
    renders = dash.picture_renders
    assert dash.picture_png() is first and dash.picture_renders == renders
    w.submit(int).result(WAIT)
    assert dash.refresh(WAIT)
    second = dash.picture_png()
    assert second != first and dash.picture_renders == renders + 1
    assert "1 succeeded" in png_info(second)[1]


def test_the_live_view_carries_the_rule_that_hides_the_picture(make_worker, dashboards) -> None:
    dash = dashboards(make_worker(max_workers=1))
    assert "neon-live-view" in dash.widget._dom_classes
    styles = [c.value for c in dash.widget.children if "neon-picture-hider" in c._dom_classes]
    assert styles == [f"<style>{PICTURE_CSS}</style>"]


def test_without_a_kernel_nothing_is_sent_and_the_owner_composes_nothing(make_worker, dashboards):
    w = make_worker(max_workers=1, queue_size=0)
    dash = dashboards(w, picture_interval=0.01)
    w.submit(int).result(WAIT)
    assert dash.refresh(WAIT)
    assert dash.picture_renders == 0 and dash.picture.updates == 0


def test_plain_script_warns_once_and_points_to_plots_and_report(make_worker, monkeypatch) -> None:
    monkeypatch.setattr(view_module, "_warned", set())
    w = make_worker(max_workers=1)
    with pytest.warns(RuntimeWarning, match="needs a notebook front end") as record:
        first = Dashboard(w)
    message = str(record[0].message)
    assert "neon_nb.plots" in message and "python -m neon_nb.demo --report" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = Dashboard(w)  # once per process
    first.close()
    second.close()


def test_a_plain_script_sees_the_warning_once_on_stderr() -> None:
    import subprocess
    import sys

    code = ("from neon_nb import NeonWorker\n"
            "from neon_nb.widgets import Dashboard\n"
            "w = NeonWorker(max_workers=1).start()\n"
            "for _ in range(3):\n"
            "    Dashboard(w).close()\n"
            "w.shutdown()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       check=False, env={**os.environ, "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("needs a notebook front end") == 1, r.stderr
    assert "python -m neon_nb.demo --report" in r.stderr


# ------------------------------------------------------------- a stand-in kernel publisher


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict, str | None, str]] = []

    def msg(self, msg_type, content, parent=None):
        return {"msg_type": msg_type, "content": content, "parent": parent}

    def send(self, socket, msg, ident=None):
        self.sent.append((msg["msg_type"], msg["content"], msg["parent"].get("msg_id"),
                          threading.current_thread().name))


class FakePublisher:
    topic = b"display_data"
    pub_socket = object()

    def __init__(self) -> None:
        self.session = FakeSession()
        self.parent_header = {"msg_id": "cell-A"}


@pytest.fixture
def publisher(monkeypatch):
    pub = FakePublisher()
    shown: list[tuple[dict, dict]] = []
    monkeypatch.setattr(view_module, "has_frontend", lambda: True)
    monkeypatch.setattr(view_module, "_display_publisher", lambda: pub)
    import IPython.display

    monkeypatch.setattr(IPython.display, "display",
                        lambda data, raw, display_id: shown.append((data, display_id)))
    pub.shown = shown
    return pub


def test_updates_go_to_each_displaying_cell_and_to_the_current_one(publisher) -> None:
    pic = StaticPicture()
    assert pic.update(b"nothing shown yet", "t") == 0 and not pic.shown
    pic.show(lambda: b"png-1", "first")
    (data, display_id), = publisher.shown
    assert display_id == pic.display_id and base64.b64decode(data["image/png"]) == b"png-1"
    publisher.parent_header = {"msg_id": "cell-B"}
    pic.show(lambda: b"png-2", "second")                 # displayed again, in cell B
    publisher.parent_header = {"msg_id": "cell-D"}       # cell D is running now

    done = threading.Event()

    def owner() -> None:
        pic.update(b"png-3", "third")
        done.set()

    threading.Thread(target=owner, name="owner").start()
    assert done.wait(WAIT)
    sent = publisher.session.sent
    assert [(t, parent, thread) for t, _, parent, thread in sent] == [
        ("update_display_data", "cell-A", "owner"),
        ("update_display_data", "cell-B", "owner"),
        ("update_display_data", "cell-D", "owner"),
    ]
    content = sent[0][1]
    assert content["transient"] == {"display_id": pic.display_id}
    assert base64.b64decode(content["data"]["image/png"]) == b"png-3"
    assert content["data"]["text/plain"] == "third"
    # When the displaying cell is the current one, one message does.
    publisher.session.sent.clear()
    publisher.parent_header = {"msg_id": "cell-B"}
    assert pic.update(b"png-4", "fourth") == 2
    assert [parent for _, _, parent, _ in publisher.session.sent] == ["cell-A", "cell-B"]


def test_a_change_during_the_display_is_not_lost(publisher) -> None:
    """The cell is remembered before the picture is rendered: an update can follow at once."""
    pic = StaticPicture()
    seen_shown = []
    pic.show(lambda: seen_shown.append(pic.shown) or b"png", "t")
    assert seen_shown == [True]


def test_remembered_cells_are_bounded(publisher) -> None:
    pic = StaticPicture()
    for i in range(StaticPicture.MAX_PARENTS + 5):
        publisher.parent_header = {"msg_id": f"cell-{i}"}
        pic.show(lambda: b"png", "t")
    publisher.parent_header = {"msg_id": "now"}
    assert pic.update(b"png", "t") == StaticPicture.MAX_PARENTS + 1


# ------------------------------------------------------------------------- a real kernel

SETUP = """\
from neon_nb import NeonWorker
from neon_nb.widgets import Batch, Dashboard
w = NeonWorker(max_workers=2, queue_size=0, name="pic").start()
d = Dashboard(w, picture_interval=0.3)
d"""
SUBMIT = "futures = Batch(kind='io', count=40, duration=0.03, seed=1).submit(w)"
SLEEP = "import time\ntime.sleep(1.0)"
FINISH = "assert w.wait_for_completion(60)\nw.shutdown()\nassert d.refresh(30)\nprint('finished')"
FINAL_TEXT = ("neon_nb dashboard of worker 'pic': stopped; 40 submitted, 40 succeeded, 0 failed, "
              "0 cancelled, 0 retried")


@pytest.mark.slow
def test_in_a_kernel_the_owner_keeps_the_picture_current() -> None:
    pytest.importorskip("ipykernel")
    from .kernel import kernel

    with kernel(KERNEL_ENV) as k:
        for code in (SETUP, SUBMIT, SLEEP, FINISH):
            k.run(code)
        k.drain()
    displays = k.outputs("display_data", "execute_result")
    assert [(cell, sorted(m["content"]["data"])) for cell, m in displays[:2]] == [
        (0, ["application/vnd.jupyter.widget-view+json", "text/plain"]),
        (0, ["image/png", "text/plain"]),
    ], "the dashboard displays the live widget, then its picture"
    display_id = displays[1][1]["content"]["transient"]["display_id"]
    updates = [(cell, m) for cell, m in k.outputs("update_display_data")
               if m["content"]["transient"].get("display_id") == display_id]
    cells = [cell for cell, _ in updates]
    # Every update goes to the displaying cell (for JupyterLab) and to the running one (nbclient).
    assert cells.count(0) >= 2 and 2 in cells and 3 in cells, cells
    assert {c for c in cells} <= {0, 1, 2, 3}
    last = updates[-1][1]["content"]["data"]
    assert last["text/plain"] == FINAL_TEXT
    assert png_info(base64.b64decode(last["image/png"]))[1] == FINAL_TEXT


@pytest.mark.slow
def test_nbclient_saves_the_final_picture_and_nbconvert_embeds_it(tmp_path) -> None:
    """What ``jupyter nbconvert --execute --to html`` does, in two steps."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, SUBMIT, SLEEP, FINISH)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("MPLBACKEND", "Agg")
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert [sorted(o.get("data", {})) for o in outputs] == [
        ["application/vnd.jupyter.widget-view+json", "text/plain"], ["image/png", "text/plain"]]
    picture = outputs[1]
    assert picture.data["text/plain"] == FINAL_TEXT, "the saved picture is not the final state"
    assert png_info(base64.b64decode(picture.data["image/png"]))[1] == FINAL_TEXT
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert f'src="data:image/png;base64,{picture.data["image/png"]}' in html.replace("\n", "")



def test_refresh_sends_the_picture_again_to_the_running_cell(make_worker, dashboards,
                                                             publisher) -> None:
    # A notebook runner keeps only what arrives while a cell runs: the final picture, sent
    # by the owner between two cells, could be lost for good. refresh() sends it again.
    w = make_worker(max_workers=2, name="again")
    d = dashboards(w)
    d.picture.show(d.picture_png, d.picture_text())  # displayed in cell A
    w.submit(sum, [1]).result(timeout=WAIT)
    w.shutdown(timeout=WAIT)
    assert d.refresh(WAIT)
    publisher.parent_header = {"msg_id": "cell-Z"}  # a later cell runs
    publisher.session.sent.clear()
    assert d.refresh(WAIT)
    sent = [(parent, content["data"]["text/plain"])
            for kind, content, parent, _ in publisher.session.sent if kind == "update_display_data"]
    assert ("cell-Z", "neon_nb dashboard of worker 'again': stopped; 1 submitted, 1 succeeded, "
                      "0 failed, 0 cancelled, 0 retried") in sent
