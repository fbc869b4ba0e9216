"""A child process for the worker-level crash test (run as a script).

It runs a batch of ``--tasks`` short tasks (ids ``c0``, ``c1``...) on ``NeonWorker(journal=...)``
and reports on stdout, one line per fact, with a single ``os.write`` each (atomic on a pipe):

* ``ready`` once the worker is created;
* ``settled <n>`` once ``--report-at`` futures that were not done when the batch was handed
  over (tasks run here, not resumed) are done: their outcomes are durable (a future settles
  only then); exactly once;
* ``done`` after every future is done and the results are in ``--out`` (JSON, id -> result).

Each task appends its number to ``--ran`` just before it returns (one ``os.write`` on an
``O_APPEND`` file, atomic), so the parent knows which tasks finished in a process it killed.
``--submit`` chooses how the batch is handed over: ``map`` (blocking, ``id_prefix="c"``) or
``background`` (``add_tasks(..., background=True)``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time

from neon_nb import Journal, NeonWorker, Task


def value(i: int) -> str:
    """The result of task i (the parent recomputes it to check)."""
    return hashlib.sha256(f"task-{i}".encode()).hexdigest()[:16]


def _say(line: str) -> None:
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--max-pending", type=int, default=64)
    p.add_argument("--ran", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--report-at", type=int, default=0)
    p.add_argument("--submit", choices=("map", "background"), default="map")
    args = p.parse_args(argv)
    ran = os.open(args.ran, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def work(i: int) -> str:
        time.sleep(0.001)  # a short task that waits (IO-bound)
        result = value(i)
        os.write(ran, f"{i}\n".encode())
        return result

    journal = Journal(args.path, max_pending=args.max_pending)
    worker = NeonWorker(max_workers=args.workers, queue_size=0, retry_attempts=0,
                        journal=journal)
    _say("ready")
    lock = threading.Lock()
    settled = [0]

    def count(_fut: object) -> None:
        with lock:
            settled[0] += 1
            now = settled[0]
        if now == args.report_at:
            _say(f"settled {now}")

    if args.submit == "map":
        futures = worker.map(work, range(args.tasks), id_prefix="c")
    else:
        futures = worker.add_tasks([Task(f"c{i}", work, (i,)) for i in range(args.tasks)],
                                   background=True)
    for fut in futures:
        if not fut.done():  # (a resumed future is done when handed over)
            fut.add_done_callback(count)
    results = {f.task_id: f.result() for f in futures}
    worker.shutdown()
    journal.close()
    with open(args.out, "w") as out:
        json.dump(results, out)
    _say("done")


if __name__ == "__main__":
    main()
