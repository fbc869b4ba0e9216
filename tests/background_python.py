"""Start a child Python as a background shell job would: with SIGINT ignored.

A shell starts a job with ``&`` (without job control), and ``nohup`` is often combined with it, with
SIGINT set to "ignore", and the child inherits that (POSIX keeps ignored signals across exec). Python
then installs no Ctrl-C handler: a child that relies on ``KeyboardInterrupt`` must restore
``signal.default_int_handler`` itself. Tests that send SIGINT start their children this way, so a
child that forgets fails every time, not only when the suite itself runs in the background.
"""

from __future__ import annotations

import sys

_EXEC_IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                         "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def python_ignoring_sigint(*args: str) -> list[str]:
    """The argv of ``python *args`` started with SIGINT ignored."""
    return [sys.executable, "-c", _EXEC_IGNORING_SIGINT, *args]
