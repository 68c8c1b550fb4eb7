"""Timing implementations side by side, one worker process per implementation.

A library's threads spin for a while after its work (OpenMP, BLAS and XLA pools): timed
in one process, the next implementation would share a core with them, or fnn's team
would start on fewer threads (measured on this project's machine). So each
implementation runs in a process of its own, where its rows (named callables) are built
and called once untimed (compiling, warming caches); the parent then interleaves the
rounds: round r asks every row of every worker in turn for one timed call, after SETTLE
seconds of quiet, and keeps each row's fastest. Load from other processes then hits all
rows alike.

The protocol, one JSON object a line: the worker prints {"ready": {row: seconds of its
untimed call}} (or {"missing": why} when an import failed: the implementation is not
installed), then, for each row name read from stdin, {"seconds": one timed call}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

__all__ = ["SETTLE", "Worker", "interleave", "serve"]

SETTLE = 0.3  # seconds of quiet before each timed call


class Worker(NamedTuple):
    """How to start one implementation's worker: argv (a command whose process calls
    `serve`) and env (its whole environment)."""

    argv: list[str]
    env: Mapping[str, str]


def serve(build: Callable[[], Mapping[str, Callable[[], object]]]) -> None:
    """The worker's side: build its rows, call each once untimed, report, then time one
    call of the row named on each line of stdin until stdin closes."""
    try:
        rows = build()
    except ImportError as e:
        print(json.dumps({"missing": str(e)}), flush=True)
        return
    ready = {}
    for name, run in rows.items():
        t = time.perf_counter()
        run()
        ready[name] = time.perf_counter() - t
    print(json.dumps({"ready": ready}), flush=True)
    for line in sys.stdin:
        run = rows[line.strip()]
        t = time.perf_counter()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)


def interleave(workers: Mapping[str, Worker], rounds: int,
               settle: float = SETTLE) -> tuple[dict[str, float], dict[str, float]]:
    """({row: fastest seconds of `rounds` timed calls}, {row: seconds of its untimed
    first call}) over the rows of every worker (all started at once: their warm-ups
    overlap, which only the untimed calls see). A worker that reports a missing import
    is left out, with a note on stderr. Row names are unique across workers."""
    procs = {name: subprocess.Popen(w.argv, env=dict(w.env), stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
             for name, w in workers.items()}
    owner: dict[str, subprocess.Popen[str]] = {}
    first: dict[str, float] = {}
    try:
        for name, p in procs.items():
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {name!r} exited before it was ready (its "
                                   "traceback is above)")
            msg = json.loads(line)
            if "missing" in msg:
                print(f"({name}: {msg['missing']}; left out)", file=sys.stderr)
                continue
            for row, seconds in msg["ready"].items():
                if row in owner:
                    raise ValueError(f"row names: expected unique, got {row!r} twice")
                owner[row], first[row] = p, seconds
        best = dict.fromkeys(owner, float("inf"))
        for _ in range(rounds):
            for row, p in owner.items():
                assert p.stdin is not None and p.stdout is not None
                time.sleep(settle)
                p.stdin.write(row + "\n")
                p.stdin.flush()
                best[row] = min(best[row], json.loads(p.stdout.readline())["seconds"])
    finally:
        for p in procs.values():
            if p.stdin is not None:
                p.stdin.close()
            p.wait()
    return best, first
