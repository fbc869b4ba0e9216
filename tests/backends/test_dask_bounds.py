"""The Dask backend keeps its time bounds: `start()` on an address that does not speak Dask, and
`stop()` within what is left of the shutdown's bound, even with a hung task on its own cluster."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neon_nb import BackendUnavailableError, NeonWorker, Task, TaskState, WorkerShutdownError
from neon_nb.backends import DaskBackend

from ..conftest import wait_until
from . import backend_tasks as bt

pytestmark = [pytest.mark.dask, pytest.mark.timeout(120)]

#: What start() may take beyond connect_timeout (importing distributed is done by then).
MARGIN = 3.0


class Listener:
    """A TCP listener that accepts connections and holds them; it sends ``greeting`` (or nothing)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, greeting: bytes = b"") -> None:
        self.sock = socket.create_server((host, port))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.accepted = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed by close()
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                if self.greeting:
                    conn.sendall(self.greeting)
                self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)


@contextlib.contextmanager
def listening(**kwargs) -> Iterator[Listener]:
    listener = Listener(**kwargs)
    try:
        yield listener
    finally:
        listener.close()


def start_in_thread(w: NeonWorker, bound: float) -> tuple[BaseException | None, float]:
    """Call ``w.start()`` on another thread; fail the test if it is still running after ``bound``."""
    box: dict = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            w.start()
        except BaseException as exc:
            box["error"] = exc
        box["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(bound)
    if t.is_alive():
        pytest.fail(f"start() still hangs after {bound:.0f}s")
    return box.get("error"), box["elapsed"]


@pytest.fixture(autouse=True)
def _distributed_imported():
    pytest.importorskip("distributed")


# ------------------------------------------------------------------- start()
def test_silent_listener_fails_within_connect_timeout():
    with listening() as silent:
        address = f"tcp://127.0.0.1:{silent.port}"
        w = NeonWorker(2, backend=DaskBackend(address=address, connect_timeout=1.0))
        error, elapsed = start_in_thread(w, 60)
        assert silent.accepted.is_set()  # it was reached: the TCP connection succeeded
    assert isinstance(error, BackendUnavailableError), error
    assert elapsed < 1.0 + MARGIN, elapsed
    message = str(error)
    assert message.startswith(f"{address!r} accepts connections but is not a Dask scheduler: it sent "
                              f"nothing within connect_timeout=1s")
    assert "listens on port 8786 by default; 8787 is its dashboard" in message
    assert w.state == "created"
    assert w.shutdown().clean


def test_dashboard_port_suggests_the_scheduler_port():
    try:
        dashboard = Listener(host="127.0.0.2", port=8787)  # a silent HTTP-like listener on 8787
    except OSError:
        pytest.skip("port 8787 of 127.0.0.2 is taken on this machine")
    try:
        w = NeonWorker(1, backend=DaskBackend(address="tcp://127.0.0.2:8787", connect_timeout=0.5))
        error, _ = start_in_thread(w, 60)
    finally:
        dashboard.close()
    assert isinstance(error, BackendUnavailableError), error
    assert str(error).endswith("8787 is its dashboard (HTTP): try tcp://127.0.0.2:8786.")


def test_a_server_that_speaks_another_protocol_is_refused_at_once():
    # Like an SSH server: it speaks first, but not Dask. distributed would wait for a message
    # of that "length" for ever.
    with listening(greeting=b"SSH-2.0-OpenSSH_9.2\r\n") as ssh:
        w = NeonWorker(1, backend=DaskBackend(address=f"tcp://127.0.0.1:{ssh.port}", connect_timeout=30))
        error, elapsed = start_in_thread(w, 60)
    assert isinstance(error, BackendUnavailableError), error
    assert "it sent b'SSH-2.0-', which is not a Dask message" in str(error)
    assert elapsed < 30  # at once: no need to wait for the whole connect_timeout


def test_a_real_scheduler_address_still_works(dask_client):
    w = NeonWorker(1, backend=DaskBackend(address=dask_client.scheduler.address, connect_timeout=10))
    w.start()
    try:
        assert w.submit(bt.square, 6).result(timeout=60) == 36
    finally:
        assert w.shutdown(timeout=30).clean


# -------------------------------------------------------------------- stop()
def test_shutdown_with_a_hung_task_on_its_own_cluster_keeps_its_bound(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="neon_nb")
    backend = DaskBackend(n_workers=1, silence_logs=logging.ERROR)
    w = NeonWorker(1, backend=backend, name="bounded").start()
    try:
        hung = w.add_task(Task("hang", bt.wait_for_file, (str(tmp_path / "never"), 60.0)))
        assert wait_until(lambda: w.get_task_status("hang").state is TaskState.RUNNING, timeout=60)
        t0 = time.monotonic()
        report = w.shutdown(timeout=1.0)
        elapsed = time.monotonic() - t0
    finally:
        w.shutdown(timeout=1.0)
    # Before, closing the cluster after the deadline took about 4 s more.
    assert elapsed < 1.0 + MARGIN, elapsed
    assert report.abandoned == ("hang",)
    assert backend.client is None
    # Not a silent leak: the cluster still closing is named, and so is the end of its closing.
    late = [r.getMessage() for r in caplog.records if "did not finish within" in r.getMessage()]
    assert late and late[0].startswith("closing the Dask LocalCluster of worker 'bounded' did not finish")
    assert wait_until(lambda: any("finished in the background" in r.getMessage() for r in caplog.records),
                      timeout=60), [r.getMessage() for r in caplog.records]
    # The abandoned task was cancelled on the cluster, and says so (not "a worker was lost").
    exc = hung.exception(timeout=60)
    assert isinstance(exc, WorkerShutdownError), repr(exc)
    assert "cancelled there" in str(exc)


@pytest.mark.slow
def test_a_program_that_ends_while_its_cluster_closes_waits_for_it(tmp_path):
    # The close goes on in a daemon thread; interpreter exit waits for it rather than race
    # with Dask's own exit hook (which made the close fail with a traceback).
    script = tmp_path / "ends.py"
    script.write_text(textwrap.dedent(f"""
        import logging, sys
        sys.path.insert(0, {str(Path(bt.__file__).parent)!r})
        import backend_tasks as bt
        from neon_nb import NeonWorker, TaskState
        from neon_nb.backends import DaskBackend

        if __name__ == "__main__":
            logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
            logging.getLogger("distributed").setLevel(logging.CRITICAL)
            w = NeonWorker(1, backend=DaskBackend(n_workers=1, silence_logs=logging.CRITICAL)).start()
            w.submit(bt.wait_for_file, {str(tmp_path / "never")!r}, 60.0)
            while w.tasks(TaskState.RUNNING) == []:
                pass
            print("report:", w.shutdown(timeout=0.5), flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "1 abandoned while running" in out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    assert "neon_nb INFO closing the Dask LocalCluster of worker 'neon' finished in the background" \
        in out.stderr, out.stderr
