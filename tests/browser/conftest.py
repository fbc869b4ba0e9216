"""Harness for the real-browser tests: JupyterLab and Notebook 7 in Debian's headless Chromium, driven
by Playwright.

In short:

* ``lab_server`` (session): JupyterLab on 127.0.0.1, a free port and a random token, run by the
  project's ``.venv`` interpreter (so the ``python3`` kernel is that interpreter and imports
  ``neon_nb``), with every Jupyter/IPython/matplotlib/XDG directory under a temporary folder, serving a
  temporary copy of ``notebooks/``. Teardown shuts it down through the REST API, waits on the PID and
  fails the session if any child process (a kernel) is left behind.
* ``lab_browser`` (session): Debian's ``/usr/bin/chromium`` through ``launch_persistent_context`` with a
  fresh profile and a tall viewport (the notebook scrolls inside its own panel).
* ``lab`` (per test): a ``Lab`` helper with a fresh page; it opens notebooks in their own workspace,
  waits for ``| Idle``, clicks Run > "Run All Cells", reads the DOM and saves screenshots to
  ``test-artifacts/``. At the end of the test it closes the page and shuts down the kernels it started
  (a screenshot and the browser console are kept in ``test-artifacts/`` when the test failed).
* ``open_lab`` (session): ``with open_lab(name) as lab:`` for a page shared by several tests, e.g. a
  module-scoped fixture that runs a notebook once and lets each test assert one thing.
* ``nb7_server``, ``open_nb7`` and ``nb7``: the same for Jupyter Notebook 7 (``jupyter notebook``),
  which is built from JupyterLab's components: the notebook DOM, the menus and the widget manager's
  URL are JupyterLab's; a notebook opens at ``/notebooks/<path>`` and the kernel's state is read
  from the notebook toolbar's execution indicator (Notebook 7 has no status bar).

Known facts this relies on: JupyterLab (and Notebook 7) as root exits without ``--allow-root``; with
the news, update check and extension manager switched off and Chromium's background networking
disabled, nothing contacts an outside host; ``{"windowingMode": "none"}`` in the notebook tracker's
settings keeps every cell in the DOM; JupyterLab 4 has no default key for Run All (the Run menu has
it); when the widget JavaScript does not load, widgets fall back to text, which the negative control
relies on.

Without ``/usr/bin/chromium`` the browser tests skip, except under ``CI=true`` or
``NEON_NB_REQUIRE_BROWSER=1`` (which ``make test-browser`` sets) where they fail: neither CI nor
``make test`` may report a missing browser as a pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # playwright is imported where a test needs it (a clear skip or error otherwise)
    from playwright.sync_api import ViewportSize

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("NEON_NB_CHROMIUM", "/usr/bin/chromium"))
WIDGET_MANAGER_URL = "**/lab/extensions/@jupyter-widgets/jupyterlab-manager/**"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 2600}

SERVER_START_TIMEOUT = 90.0  # two shared cores: a cold lab start can take a while
SERVER_STOP_TIMEOUT = 30.0


def _in_ci() -> bool:
    """CI=true, or NEON_NB_REQUIRE_BROWSER=1 (set by `make test-browser`): a missing browser fails."""
    return any(os.environ.get(var, "").strip().lower() in {"1", "true", "yes"}
               for var in ("CI", "NEON_NB_REQUIRE_BROWSER"))


def _require_browser_deps() -> None:
    """Skip locally, fail in CI, when the browser or Playwright is missing."""
    problems = []
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problems.append(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
            "`playwright install` cannot work here"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the Python `playwright` package is not installed (pip install -e '.[dev]')")
    if problems:
        message = "browser tests cannot run: " + "; ".join(problems)
        if _in_ci():
            pytest.fail(message + " (CI=true or NEON_NB_REQUIRE_BROWSER=1: a missing browser is a "
                        "failure, not a skip)", pytrace=False)
        pytest.skip(message)


def _venv_python() -> Path:
    """The project's .venv interpreter (the kernel must import neon_nb and ipywidgets)."""
    candidate = REPO / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# JupyterLab server
# --------------------------------------------------------------------------------------------------


@dataclass
class LabServer:
    frontend: str  # "lab" (JupyterLab) or "notebook" (Notebook 7)
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    token: str
    root_dir: Path  # what the server serves: a temporary copy of notebooks/
    home: Path  # the isolated environment's root
    log_path: Path
    process: subprocess.Popen[bytes]
    python: Path
    seen_children: dict[int, Any] = field(default_factory=dict)  # pid -> psutil.Process

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def kernels(self) -> list[dict[str, Any]]:
        return self.api("GET", "/api/kernels")

    def shutdown_kernel(self, kernel_id: str) -> None:
        with contextlib.suppress(urllib.error.HTTPError):  # already gone
            self.api("DELETE", f"/api/kernels/{kernel_id}", timeout=30.0)

    def record_children(self) -> None:
        """Remember the server's descendants (kernels) so teardown can prove they all exited."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen_children.setdefault(child.pid, child)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _isolated_env(home: Path, python: Path) -> dict[str, str]:
    dirs = {
        "HOME": home / "home",
        "JUPYTER_CONFIG_DIR": home / "jupyter-config",
        "JUPYTER_DATA_DIR": home / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime",
        "IPYTHONDIR": home / "ipython",
        "MPLCONFIGDIR": home / "matplotlib",
        "XDG_CONFIG_HOME": home / "xdg-config",
        "XDG_CACHE_HOME": home / "xdg-cache",
        "XDG_DATA_HOME": home / "xdg-data",
        "XDG_STATE_HOME": home / "xdg-state",
        "XDG_RUNTIME_DIR": home / "xdg-runtime",
        "TMPDIR": home / "tmp",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    (home / "xdg-runtime").chmod(0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_", "IPY"))}
    env.pop("PYTHONHOME", None)
    env.update({key: str(path) for key, path in dirs.items()})
    env.update(
        {
            # The kernel (started by the server with the server's interpreter) must import neon_nb
            # from this checkout even if the editable install is missing.
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
            "PATH": os.pathsep.join((str(python.parent), env.get("PATH", ""))),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("VIRTUAL_ENV", None)
    return env


def _write_lab_settings(settings_dir: Path) -> None:
    tracker = settings_dir / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True, exist_ok=True)
    # Keep every cell in the DOM (virtual scrolling would detach off-screen outputs).
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    # No first-run announcements popup asking to fetch news.
    news = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def _wait_ready(server: LabServer, deadline: float) -> None:
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"JupyterLab exited with code {server.process.returncode} during start-up:\n"
                f"{server.log_tail()}"
            )
        try:
            status = urllib.request.urlopen(f"{server.url}/api/status?token={server.token}", timeout=5).status
            if status == 200:
                return
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
        time.sleep(0.25)
    raise RuntimeError(
        f"JupyterLab did not answer /api/status in {SERVER_START_TIMEOUT:.0f}s "
        f"(last error: {last_error!r}):\n{server.log_tail()}"
    )


def _stop_server(server: LabServer) -> list[str]:
    """Shut down through the API, wait on our PID, SIGTERM/SIGKILL only that PID as fallbacks.

    Returns a description of every descendant (kernel) still alive afterwards (after killing them, so
    a failed run does not leak them either).
    """
    import psutil

    server.record_children()
    proc = server.process
    if proc.poll() is None:
        try:
            server.api("POST", "/api/shutdown", timeout=10.0)
        except (urllib.error.URLError, OSError):
            pass  # a server that does not answer gets the signal fallbacks below
        try:
            proc.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    children = list(server.seen_children.values())
    _gone, alive = psutil.wait_procs(children, timeout=10)
    leftovers = []
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftovers.append(f"pid {child.pid}: {' '.join(child.cmdline())[:200]}")
            child.kill()
    return leftovers


# The application class of each front end, for its command-line options.
APPS = {"lab": ("jupyterlab", "LabApp"), "notebook": ("notebook", "JupyterNotebookApp")}


def _start_server(tmp_path_factory: pytest.TempPathFactory, frontend: str) -> LabServer:
    _require_browser_deps()
    import psutil  # noqa: F401  (fail early if missing: teardown depends on it)

    module, app = APPS[frontend]
    home = tmp_path_factory.mktemp(f"{frontend}-env")
    root_dir = home / "notebooks"
    if NOTEBOOKS.is_dir():
        shutil.copytree(
            NOTEBOOKS, root_dir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__")
        )
    else:
        root_dir.mkdir()
    settings_dir = home / "lab-user-settings"
    workspaces_dir = home / "lab-workspaces"
    workspaces_dir.mkdir()
    _write_lab_settings(settings_dir)

    python = _venv_python()
    env = _isolated_env(home, python)
    token = secrets.token_hex(24)
    port = _free_port()
    cmd = [
        str(python), "-m", module,
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--IdentityProvider.token={token}",
        "--allow-root",
        f"--ServerApp.root_dir={root_dir}",
        "--ServerApp.open_browser=False",
        f"--{app}.extension_manager=readonly",
        f"--{app}.news_url=None",
        f"--{app}.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--{app}.user_settings_dir={settings_dir}",
        f"--{app}.workspaces_dir={workspaces_dir}",
        "--LanguageServerManager.autodetect=False",
        "--ServerApp.shutdown_no_activity_timeout=600",  # belt and braces if teardown never runs
        "--MappingKernelManager.cull_idle_timeout=0",
    ]  # fmt: skip
    log_path = home / f"{frontend}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd, cwd=root_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = LabServer(
        frontend=frontend,
        url=f"http://127.0.0.1:{port}",
        token=token,
        root_dir=root_dir,
        home=home,
        log_path=log_path,
        process=process,
        python=python,
    )
    try:
        _wait_ready(server, time.monotonic() + SERVER_START_TIMEOUT)
    except BaseException:
        _stop_server(server)
        raise
    return server


def _finish_server(server: LabServer) -> None:
    leftovers = _stop_server(server)
    assert server.process.returncode is not None, f"{server.frontend} is still running after teardown"
    assert not leftovers, "processes left behind by the server (killed now):\n" + "\n".join(leftovers)


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = _start_server(tmp_path_factory, "lab")
    yield server
    _finish_server(server)


@pytest.fixture(scope="session")
def nb7_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    server = _start_server(tmp_path_factory, "notebook")
    yield server
    _finish_server(server)


# --------------------------------------------------------------------------------------------------
# Browser
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_browser(tmp_path_factory: pytest.TempPathFactory, lab_server: LabServer) -> Iterator[Any]:
    """A persistent Chromium context (fresh profile); pages are created per test by ``lab``.

    Notebook 7 pages (another origin, another port) open in the same context.
    """
    _require_browser_deps()
    import psutil
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            env={**os.environ, "TMPDIR": str(lab_server.home / "tmp")},
        )
        context.set_default_timeout(30_000)
        browser_procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        try:
            yield context
        finally:
            context.close()
    _gone, alive = psutil.wait_procs(browser_procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    assert not alive, f"browser processes left behind (killed now): {[p.pid for p in alive]}"


# --------------------------------------------------------------------------------------------------
# Driving a notebook
# --------------------------------------------------------------------------------------------------


class Lab:
    """Drives one page of JupyterLab. Methods raise AssertionError/TimeoutError on failure."""

    def __init__(self, server: LabServer, context: Any, name: str) -> None:
        self.server = server
        self.context = context
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)[:80]
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        self.page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        self._kernels_before = {k["id"] for k in server.kernels()}

    # -- setup ------------------------------------------------------------------------------------

    def block_widget_manager(self) -> list[str]:
        """Negative control: make the ipywidgets lab extension unreachable. Returns blocked URLs."""
        blocked: list[str] = []

        def abort(route: Any) -> None:
            blocked.append(route.request.url)
            route.abort()

        self.page.route(WIDGET_MANAGER_URL, abort)
        return blocked

    def notebook_url(self, path: str) -> str:
        if self.server.frontend == "notebook":
            return f"{self.server.url}/notebooks/{path}?token={self.server.token}"
        workspace = f"{self.name}-{secrets.token_hex(3)}"  # a workspace of its own
        return f"{self.server.url}/lab/workspaces/{workspace}/tree/{path}?reset&token={self.server.token}"

    def open_notebook(self, path: str, timeout: float = 90_000) -> None:
        """Open ``path`` (relative to the served folder); wait until its kernel is idle."""
        self.page.goto(self.notebook_url(path), wait_until="domcontentloaded", timeout=timeout)
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for(state="attached", timeout=timeout)
        if self.server.frontend == "notebook":
            # Notebook 7's indicator reads "idle" before the kernel is even started: wait for the
            # server to report an idle kernel for this notebook first.
            self.wait_kernel_idle(path, timeout=timeout)
        self.wait_idle(timeout=timeout)

    def wait_kernel_idle(self, path: str, timeout: float = 60_000) -> None:
        """The server reports a kernel for the notebook ``path``, and it is idle."""

        def state() -> str | None:
            for session in self.server.api("GET", "/api/sessions"):
                if session.get("path") == path and session.get("kernel"):
                    return session["kernel"].get("execution_state")
            return None

        found = self.poll(state, lambda s: s == "idle", timeout=timeout / 1000, every=0.25)
        assert found == "idle", f"no idle kernel for {path} after {timeout / 1000:.0f} s (state {found!r})"

    def kernel_status(self) -> str:
        return self.page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"\|")).first.inner_text()

    def wait_idle(self, timeout: float = 60_000) -> None:
        if self.server.frontend == "notebook":
            # No status bar in Notebook 7: the toolbar's execution indicator carries the state.
            self.page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').first.wait_for(
                timeout=timeout
            )
            return
        self.page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\|\s*Idle")).first.wait_for(
            timeout=timeout
        )

    def save(self, path: str, timeout: float = 30_000) -> dict[str, Any]:
        """Save the notebook ``path`` (Ctrl+S); return its content once the server has written it."""
        target = self.server.root_dir / path
        before = target.stat().st_mtime_ns
        self.page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
        self.page.keyboard.press("Control+s")
        deadline = time.monotonic() + timeout / 1000
        while time.monotonic() < deadline:
            if target.stat().st_mtime_ns != before:
                with contextlib.suppress(ValueError):  # caught mid-write: read again
                    return json.loads(target.read_text())
            time.sleep(0.1)
        raise TimeoutError(f"{path} was not saved within {timeout / 1000:.0f} s")

    def run_all(self) -> None:
        """Run > "Run All Cells" (exact label: a substring also matches "Restart Kernel and Run All")."""
        self.page.locator(".lm-MenuBar-item", has_text=re.compile(r"^\s*Run\s*$")).click()
        menu = self.page.locator(".lm-Menu").last
        item = menu.locator(".lm-Menu-item").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^\s*Run All Cells\s*$"))
        )
        assert item.count() == 1, f"expected one 'Run All Cells' item, found {item.count()}"
        item.click()

    def wait_all_executed(self, timeout: float = 120_000) -> None:
        """Every code cell shows an execution count ``[n]:`` (none ``[*]:`` / ``[ ]:``)."""
        self.page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                return prompts.length > 0 && prompts.every(p => /^\\[\\d+\\]:$/.test(p.innerText.trim()));
            }""",
            timeout=timeout,
        )

    def running_cell_index(self) -> int | None:
        """Index (among code cells) of the cell showing ``[*]:``, or None."""
        return self.page.evaluate(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
                const i = prompts.findIndex(p => p.innerText.trim() === '[*]:');
                return i < 0 ? null : i;
            }"""
        )

    # -- reading the DOM --------------------------------------------------------------------------

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.inner_text()

    def progress_percent(self, scope: str = ".widget-hprogress") -> float | None:
        """Inline width (in %) of the first ``.progress-bar`` under ``scope``; None if absent.

        ``scope`` is a selector for the progress widget itself (``add_class`` puts the class on the
        ``.widget-hprogress`` element) or for a container around it.
        """
        return self.page.evaluate(
            """(scope) => {
                const bar = document.querySelector(`${scope} .progress-bar`);
                if (!bar) return null;
                const m = /([\\d.]+)%/.exec(bar.style.width || '');
                return m ? parseFloat(m[1]) : null;
            }""",
            scope,
        )

    def error_outputs(self) -> list[str]:
        """Error outputs, widget rendering errors, and widget views that fell back to plain text."""
        return self.page.evaluate(
            """() => {
                const out = [];
                const errors = '.jp-OutputArea-output[data-mime-type*="error"], '
                    + '.jp-RenderedText[data-mime-type*="stderr"]';
                for (const el of document.querySelectorAll(errors)) {
                    out.push(`${el.getAttribute('data-mime-type')}: ${el.innerText.slice(0, 500)}`);
                }
                for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
                    const t = el.innerText || '';
                    if (t.includes('Error displaying widget')) out.push(`widget: ${t.slice(0, 300)}`);
                }
                return out;
            }"""
        )

    def screenshot(self, label: str, locator: Any = None) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        target = locator if locator is not None else self.page
        target.screenshot(path=str(path))
        return path

    def poll(self, read: Callable[[], Any], until: Callable[[Any], bool], timeout: float, every: float = 0.1):
        """Read ``read()`` until ``until(value)``; return the last value (caller asserts on it)."""
        deadline = time.monotonic() + timeout
        value = read()
        while not until(value) and time.monotonic() < deadline:
            time.sleep(every)
            value = read()
        return value

    # -- teardown ---------------------------------------------------------------------------------

    def save_failure_artifacts(self) -> None:
        with contextlib.suppress(Exception):
            self.screenshot("failure")
        with contextlib.suppress(OSError):
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / f"{self.name}-console.log").write_text("\n".join(self.console))

    def close(self) -> None:
        self.server.record_children()
        with contextlib.suppress(Exception):
            self.page.close()
        for kernel in self.server.kernels():
            if kernel["id"] not in self._kernels_before:
                self.server.shutdown_kernel(kernel["id"])


def _opener(server: LabServer, browser: Any) -> Callable[..., Any]:
    @contextlib.contextmanager
    def _open(name: str) -> Iterator[Lab]:
        helper = Lab(server, browser, name)
        try:
            yield helper
        except BaseException:
            helper.save_failure_artifacts()
            raise
        finally:
            helper.close()

    return _open


@pytest.fixture(scope="session")
def open_lab(lab_server: LabServer, lab_browser: Any) -> Callable[..., Any]:
    """``with open_lab(name) as lab:`` for fixtures broader than a test (e.g. one run per module)."""
    return _opener(lab_server, lab_browser)


@pytest.fixture(scope="session")
def open_nb7(nb7_server: LabServer, lab_browser: Any) -> Callable[..., Any]:
    """``with open_nb7(name) as page:``: the same in Jupyter Notebook 7."""
    return _opener(nb7_server, lab_browser)


def _page_for_test(request: pytest.FixtureRequest, server: LabServer, browser: Any) -> Iterator[Lab]:
    helper = Lab(server, browser, f"{server.frontend}-{request.node.name}")
    try:
        yield helper
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            helper.save_failure_artifacts()
        helper.close()


@pytest.fixture
def lab(request: pytest.FixtureRequest, lab_server: LabServer, lab_browser: Any) -> Iterator[Lab]:
    """A fresh JupyterLab page for one test; a screenshot and the console log are kept on failure."""
    yield from _page_for_test(request, lab_server, lab_browser)


@pytest.fixture
def nb7(request: pytest.FixtureRequest, nb7_server: LabServer, lab_browser: Any) -> Iterator[Lab]:
    """A fresh Notebook 7 page for one test."""
    yield from _page_for_test(request, nb7_server, lab_browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
