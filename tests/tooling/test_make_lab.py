"""`make lab` as the README gives it: the Makefile's own command, started for real.

The command is read from the Makefile with ``make -n lab`` (``STAMP=`` drops the venv
prerequisite, which the running test suite's venv already satisfies), so a change that breaks
the Makefile breaks these tests. The server runs on a free port with every Jupyter directory in a
temporary folder, answers ``/api/status`` with its token, and is shut down through the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import pwd
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0  # a cold JupyterLab start on two shared cores
STOP_TIMEOUT = 30.0
UNPRIVILEGED = "nobody"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(user: str | None) -> list[str]:
    """A prefix that runs a command as ``user`` (None: as ourselves)."""
    if user is None:
        return []
    return ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}", "--clear-groups", "--"]


def _headless_env(**extra: str) -> dict[str, str]:
    # No display: the Makefile must then add --no-browser (and nothing tries to open one here).
    # MAKEFLAGS & co. come from an outer `make test`: the inner make must not inherit them.
    drop = ("DISPLAY", "WAYLAND_DISPLAY", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "JUPYTER_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def lab_command(*, user: str | None = None, **variables: str) -> str:
    """The shell command `make lab` would run (as ``user``), with ``variables`` on make's command line."""
    out = subprocess.run([*_as_user(user), "make", "--no-print-directory", "-n", "lab", "STAMP=",
                          *(f"{k}={v}" for k, v in variables.items())],
                         cwd=REPO, env=_headless_env(), capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ----------------------------------------------------------------- the flags
def test_lab_defaults_to_localhost_8888_and_passes_allow_root_only_as_root():
    cmd = lab_command()
    assert "--ServerApp.port=8888" in cmd and "--ServerApp.ip=localhost" in cmd
    assert "--ServerApp.port_retries=0" in cmd  # a busy port is an error, not a silent move
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    if platform.system() == "Linux":
        assert "--no-browser" in cmd  # no display: nothing to open
    assert "ssh -N -L 8888:localhost:8888" in cmd
    assert "http://localhost:8888/lab?token=" in cmd


def test_lab_port_and_ip_variables():
    cmd = lab_command(PORT="9123", IP="0.0.0.0")
    assert "--ServerApp.port=9123" in cmd and "--ServerApp.ip=0.0.0.0" in cmd
    # Listening on every interface: the tunnel still forwards to localhost.
    assert "ssh -N -L 9123:localhost:9123" in cmd


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_lab_as_an_unprivileged_user_has_no_allow_root():
    # The one flag that differs: JupyterLab needs nothing else to run as an ordinary user.
    cmd = lab_command(user=UNPRIVILEGED)
    assert "--allow-root" not in cmd and "--ServerApp.port=8888" in cmd


# ---------------------------------------------------------------- the server
def _jupyter_env(home: Path, token: str) -> dict[str, str]:
    dirs = {name: str(home / name.lower()) for name in (
        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR", "MPLCONFIGDIR",
        "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
    env = {k: v for k, v in _headless_env().items() if not k.startswith(("JUPYTER", "JPY_", "IPY"))}
    env.update(dirs, HOME=str(home), JUPYTER_TOKEN=token, TMPDIR=str(home))
    return env


def _get(url: str, token: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _wait_for_status(proc: subprocess.Popen, url: str, token: str, log: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    pause = threading.Event()  # never set: a bounded pause between polls of another process
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"`make lab` exited with {proc.returncode} during start-up:\n{log.read_text()}")
        try:
            status, body = _get(f"{url}/api/status?token={token}", token)
            if status == 200:
                return json.loads(body)
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        pause.wait(0.25)
    pytest.fail(f"no HTTP 200 from {url}/api/status in {START_TIMEOUT:.0f}s ({last!r}):\n{log.read_text()}")


def _stop(proc: subprocess.Popen, url: str, token: str) -> int:
    if proc.poll() is None:
        with contextlib.suppress(urllib.error.URLError, OSError):
            _get(f"{url}/api/shutdown", token, method="POST")
        try:
            return proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            pytest.fail("JupyterLab did not exit after POST /api/shutdown")
    return proc.returncode


def test_make_lab_serves_with_its_token_and_stops_cleanly(tmp_path):
    # As whoever runs the suite: root in containers and CI, where `make lab` used to fail.
    port = _free_port()
    token = os.urandom(16).hex()
    cmd = lab_command(PORT=str(port), IP="127.0.0.1")
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", cmd], cwd=REPO, env=_jupyter_env(tmp_path, token),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        status = _wait_for_status(proc, url, token, log)
        assert "started" in status
        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: refused
            urllib.request.urlopen(f"{url}/api/status", timeout=10)
        assert refused.value.code == 403
    finally:
        code = _stop(proc, url, token)
    text = log.read_text()
    assert code == 0, text
    # What the user reads first: the URL with its token, and the tunnel for a headless machine.
    banner = text.splitlines()[:4]
    assert banner[0].endswith(f"http://127.0.0.1:{port}/lab?token={token}"), banner
    assert any(f"ssh -N -L {port}:127.0.0.1:{port} " in line for line in banner), banner
    assert "Running as root is not recommended" not in text
