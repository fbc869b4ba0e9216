"""`make test` never passes quietly without its browser suite.

`.ci/install-chromium` (run by `make test-browser` and by `.ci/run`) installs Debian's chromium
when run as root and fails with the one command to run otherwise; `make test-browser` sets
``NEON_NB_REQUIRE_BROWSER=1``, which turns the browser suite's skip into a failure. apt-get is
replaced by a recording stand-in on ``PATH``: these tests never install anything.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "install-chromium"
UNPRIVILEGED = "nobody"

FAKE_APT_GET = """#!/bin/sh
# Records its arguments (and DEBIAN_FRONTEND); "install" creates the browser binary.
echo "$DEBIAN_FRONTEND $*" >> "$APT_LOG"
case "$1" in install) printf '#!/bin/sh\\n' > "$NEON_NB_CHROMIUM"; chmod 755 "$NEON_NB_CHROMIUM";; esac
"""


class Sandbox:
    """A folder with a stand-in apt-get first on PATH, a log of its calls, and a browser path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bin").mkdir()
        apt = root / "bin" / "apt-get"
        apt.write_text(FAKE_APT_GET)
        apt.chmod(0o755)
        self.log = root / "apt.log"
        self.log.touch()
        self.log.chmod(0o666)
        self.chromium = root / "chromium"

    def env(self) -> dict[str, str]:
        drop = ("CI", "NEON_NB_REQUIRE_BROWSER", "DEBIAN_FRONTEND", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(PATH=f"{self.root / 'bin'}{os.pathsep}{env['PATH']}", APT_LOG=str(self.log),
                   NEON_NB_CHROMIUM=str(self.chromium))
        return env

    def apt_calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # Not tmp_path: an unprivileged user must reach it (pytest's folder is private to its user).
    with tempfile.TemporaryDirectory(prefix="neon-nb-chromium-") as root:
        os.chmod(root, 0o755)
        yield Sandbox(Path(root))


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_present_browser_needs_nothing(sandbox):
    sandbox.chromium.write_text("#!/bin/sh\n")
    sandbox.chromium.chmod(0o755)
    out = _run([str(SCRIPT)], sandbox.env())
    assert out.returncode == 0, out.stderr
    assert sandbox.apt_calls() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path is taken only as root")
def test_missing_browser_is_installed_with_apt_get_as_root(sandbox):
    out = _run([str(SCRIPT)], sandbox.env())
    assert out.returncode == 0, out.stderr
    assert sandbox.apt_calls() == [
        " update -qq",
        "noninteractive install -y --no-install-recommends chromium -qq",
    ]
    assert os.access(sandbox.chromium, os.X_OK)


def test_missing_browser_without_root_fails_with_the_command_to_run(sandbox):
    # As root, switch to an unprivileged user; as anyone else, this is the real situation already.
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={pwd.getpwnam(UNPRIVILEGED).pw_gid}",
                  "--clear-groups", "--"]
    out = _run([*prefix, str(SCRIPT)], sandbox.env())
    assert out.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" in out.stderr
    assert sandbox.apt_calls() == []


def _make_commands(target: str) -> list[str]:
    out = _run(["make", "--no-print-directory", "-n", target, "STAMP="],
               {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")})
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_make_test_runs_the_installer_then_the_browser_suite_with_the_browser_required():
    commands = _make_commands("test")
    at = commands.index(".ci/install-chromium")
    assert commands[at + 1].startswith("NEON_NB_REQUIRE_BROWSER=1 ")
    assert commands[at + 1].endswith(" tests/browser")


def test_make_test_browser_fails_rather_than_skips_without_a_browser(sandbox):
    # The suite's own command, from the Makefile, with no browser where the tests look for it.
    pytest_line = next(line for line in _make_commands("test-browser") if "tests/browser" in line)
    out = _run(["bash", "-c", pytest_line + " -x -q -p no:randomly"], sandbox.env())
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "a missing browser is a failure, not a skip" in text
    # The same suite run by hand, outside make and CI, skips: the Makefile's setting is what fails it.
    bare = pytest_line.replace("NEON_NB_REQUIRE_BROWSER=1 ", "")
    assert bare != pytest_line
    out = _run(["bash", "-c", bare + " -q"], sandbox.env())
    assert out.returncode == 0 and "skipped" in out.stdout, out.stdout + out.stderr
