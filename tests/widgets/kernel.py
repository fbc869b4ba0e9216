"""Run code cells in a real IPython kernel and keep every IOPub message, tagged with its cell.

For tests of what a front end receives: display outputs, display ids, and which cell's request
a message names as its parent (JupyterLab and nbclient route messages by that parent).
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Kernel:
    client: Any
    cells: list[str] = field(default_factory=list)      # msg_id of each executed cell, in order
    messages: list[dict[str, Any]] = field(default_factory=list)

    def run(self, code: str, timeout: float = 60.0) -> int:
        """Execute ``code`` as the next cell; wait until the kernel is idle again. Returns its index."""
        msg_id = self.client.execute(code)
        self.cells.append(msg_id)
        while True:
            msg = self.client.get_iopub_msg(timeout=timeout)
            self.messages.append(msg)
            content = msg["content"]
            if msg["msg_type"] == "error":
                raise AssertionError("\n".join(content["traceback"]))
            if (msg["msg_type"] == "status" and content["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return len(self.cells) - 1

    def drain(self, timeout: float = 0.5) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.messages.append(self.client.get_iopub_msg(timeout=timeout))

    def cell_of(self, msg: dict[str, Any]) -> int | None:
        parent = msg["parent_header"].get("msg_id")
        return self.cells.index(parent) if parent in self.cells else None

    def outputs(self, *types: str) -> list[tuple[int | None, dict[str, Any]]]:
        """(cell index, message) of every message of the given types, in arrival order."""
        return [(self.cell_of(m), m) for m in self.messages if m["msg_type"] in types]


@contextlib.contextmanager
def kernel(env: dict[str, str] | None = None) -> Iterator[Kernel]:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", env=env)
    try:
        yield Kernel(client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
