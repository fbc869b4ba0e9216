"""A child process for the journal's crash and multi-process tests (run as a script).

It opens a `Journal`, then writes groups of ``--group`` entries, one `write` call per group,
until it has written ``--groups`` of them (0: until it is killed), and reports on stdout,
one line per fact, with a single ``os.write`` each (atomic on a pipe):

* ``ready <run_id>`` once the journal is open;
* ``w <g>`` after ``write`` returned for group g (handed to the journal);
* ``a <g>`` from group g's ``on_durable`` (committed);
* ``e <g> <error>`` from its ``on_error``;
* ``paused`` after handing ``--pause-at`` groups, then it waits for a line on stdin;
* ``done <closed> <stats...>`` after ``close`` (only when ``--groups`` > 0).

Entry i of group g has the id ``(tag, g, i)`` and, as its result, `payload` bytes.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys

from neon_nb._journal import Journal, JournalEntry


def payload(tag: str, g: int, i: int, size: int) -> bytes:
    """The deterministic result of entry i of group g (the parent recomputes it to check)."""
    seed = hashlib.sha256(f"{tag}-{g}-{i}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _say(line: str) -> None:
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def _acknowledge(g: int, _entries: object) -> None:
    _say(f"a {g}")


def _failed(g: int, _entries: object, error: BaseException) -> None:
    _say(f"e {g} {error}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("path")
    p.add_argument("--tag", required=True)
    p.add_argument("--group", type=int, default=5)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--groups", type=int, default=0)
    p.add_argument("--max-pending", type=int, default=20)
    p.add_argument("--group-delay", type=float, default=0.002)
    p.add_argument("--synchronous", default="full")
    p.add_argument("--wait-go", action="store_true", help="read a line from stdin before opening")
    p.add_argument("--pause-at", type=int, default=-1, help="read a line from stdin at this group")
    args = p.parse_args(argv)
    if args.wait_go:
        sys.stdin.readline()
    journal = Journal(args.path, run_name=args.tag, max_pending=args.max_pending,
                      group_delay=args.group_delay, synchronous=args.synchronous)
    _say(f"ready {journal.run_id}")
    g = 0
    while args.groups == 0 or g < args.groups:
        if g == args.pause_at:
            _say("paused")
            sys.stdin.readline()
        entries = []
        for i in range(args.group):
            tid = (args.tag, g, i)
            entries.append(JournalEntry.succeeded(
                journal.key(tid), tid, journal.encode_result(payload(args.tag, g, i, args.size)),
                attempts=1, priority=g))
        journal.write(entries, functools.partial(_acknowledge, g), functools.partial(_failed, g))
        _say(f"w {g}")
        g += 1
    closed = journal.close(timeout=60)
    _say(f"done {closed} {' '.join(map(str, journal.stats()))}")


if __name__ == "__main__":
    main()
