"""A team of threads inside one compiled kernel: how an epoch uses both cores.

A training step is a chain of products, each short (a few hundred microseconds at the
sizes fnn trains): handing each product to a pool would cost more than it saves, and
numba's own `parallel=True` would make every caller of a parallel kernel uncacheable and
start a thread pool as the cache loads (which would make forking a sweep worker unsafe).
So the whole epoch runs as one `nogil` kernel on each of `team` Python threads at once
(SPMD): member `tid` computes its share of every output (`share`), and the members meet
at a `barrier` only where one needs what another wrote (once per layer and step, and at
the end of each step).
No member adds up anything another computed, and each output element is computed by
exactly the code a single thread would run, in the same order: so the bits are the same
for every team size, 1 included (tests/test_team.py checks them for 1, 2 and 3).

The barrier spins on an atomic counter (`fnn.numba_compat`), with a pause instruction,
then yields the CPU: when another process holds the second core, a waiting member gives
its core away instead of burning the time slice its partner needs. `run` starts the
members, joins them and re-raises a member's exception; a member that fails raises
`ABORT` in `sync`, and every barrier then returns False, so no member waits for ever.
The threads live as long as one call: nothing is left running (a sweep may fork after).

Each member is pinned to a CPU of its own for the call (Linux; member 0 to the CPU it is
on, the caller's own CPU mask restored after): left to the scheduler, both members of a
two-thread team often ran on one CPU for a whole epoch (seen in /proc/<pid>/task/*/stat),
where they take turns and run slower than one thread (784-64-10 batch 64: 58-74 ms
against 36-41 ms when apart, and 57-60 ms on one thread).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .numba_compat import ATOMICS, atomic_add, atomic_load, atomic_store, cpu_relax, jit

__all__ = ["SYNC_SIZE", "barrier", "free_cpus", "max_threads", "new_sync", "run", "share",
           "team_for"]

_jit = jit()
_inline = jit(inline="always")

# The words of `sync`, each on its own 64-byte cache line: members arriving at the
# barrier, the barrier's generation, and the abort flag.
_COUNT, _GENERATION, _ABORT = 0, 8, 16
#: The length of a team's `sync` array (int64).
SYNC_SIZE = 24


def new_sync() -> np.ndarray:
    """A fresh `sync` array for one team: (SYNC_SIZE,) int64 zeros."""
    return np.zeros(SYNC_SIZE, dtype=np.int64)


@_inline
def share(n, unit, tid, team):
    """[lo, hi): member tid's share of n items, in whole units of `unit` items (the last
    unit may be short), contiguous and in member order; (0, n) for a team of one."""
    units = (n + unit - 1) // unit
    lo = min(n, unit * (units * tid // team))
    hi = min(n, unit * (units * (tid + 1) // team))
    return lo, hi


@_jit
def barrier(sync, team):
    """Wait until all `team` members have arrived; False if the team was aborted.

    Writes a member made before it arrived are seen by every member after it (the
    counter's atomics are sequentially consistent). A team of one returns at once.
    """
    if team == 1:
        return True
    generation = atomic_load(sync, _GENERATION)
    if atomic_add(sync, _COUNT, 1) == team - 1:  # the last to arrive releases the others
        atomic_store(sync, _COUNT, 0)
        atomic_add(sync, _GENERATION, 1)
    else:
        spins = 0
        while atomic_load(sync, _GENERATION) == generation:
            if atomic_load(sync, _ABORT) != 0:
                return False
            cpu_relax(spins)
            spins += 1
    return atomic_load(sync, _ABORT) == 0


def max_threads() -> int:
    """The threads a compiled epoch may use: FNN_NUM_THREADS, else NUMBA_NUM_THREADS,
    else the CPUs this process may run on; 1 without atomics (`fnn.numba_compat`)."""
    if not ATOMICS:  # pragma: no cover - depends on the numba release
        return 1
    for name in ("FNN_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}") from None
    return _cpus()


def team_for(macs: int, per_thread: int) -> int:
    """The threads for a piece of work of `macs` multiply-adds: one per `per_thread` of
    them, at most `max_threads()` and `free_cpus()` (read only when it would be more
    than one)."""
    wanted = min(max_threads(), macs // per_thread)
    if wanted <= 1:
        return 1
    return min(wanted, free_cpus())


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def _current_cpu() -> int | None:
    """The CPU the calling thread runs on (Linux), else None."""
    try:
        with open("/proc/thread-self/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[36])  # field 39, "processor"
    except (OSError, ValueError, IndexError):
        return None


def _placement(team: int) -> list[int] | None:
    """A CPU for each member, all different, member 0's the one the caller is on now;
    None where threads cannot be pinned (not Linux) or there are fewer CPUs than members."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not on Linux
        return None
    allowed = sorted(os.sched_getaffinity(0))
    here = _current_cpu()
    if len(allowed) < team or here not in allowed:
        return None
    return [here, *[c for c in allowed if c != here][: team - 1]]


def _pin(cpu: int) -> set[int] | None:
    """Pin the calling thread to `cpu`; its CPU mask before, or None if refused (a
    container may forbid it: the member then runs where the scheduler puts it)."""
    try:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
    except OSError:
        return None
    return saved


def _restore(saved: set[int]) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, saved)


#: free_cpus reads the runnable count this many times, _LOAD_GAP seconds apart, and takes
#: the fewest: a kernel thread that runs for microseconds shows in one read, a process
#: that keeps a core busy in all. (With one read, a quiet machine's 784-64-10 epoch ran
#: on one thread in about 1 call in 4: a passing kernel thread had been counted.)
_LOAD_READS, _LOAD_GAP = 5, 1e-4


def _runnable() -> int:
    """Threads runnable on the machine now, the caller included: the fourth field of
    /proc/loadavg (Linux); 1 where it cannot be read."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not on Linux
        return 1


def free_cpus() -> int:
    """The CPUs this process may run on, less the threads running elsewhere (the fewest
    runnable in _LOAD_READS reads, the caller excluded); at least 1.

    A member that shares its core with another process waits at each barrier for a time
    slice: measured, a 784-64-10 epoch on two threads ran 2.3-4x slower than on one while
    another process kept one of the two cores busy. So a team is never larger than this.
    """
    running = _runnable()
    for _ in range(_LOAD_READS - 1):
        if running <= 1:
            break
        time.sleep(_LOAD_GAP)
        running = min(running, _runnable())
    return max(1, _cpus() - max(0, running - 1))


def run(kernel: Callable[..., Any], args: tuple[Any, ...], sync: np.ndarray,
        team: int) -> Any:
    """kernel(*args, sync, tid, team) on `team` threads at once (tid 0 on this one).

    Returns member 0's result. An exception in any member aborts the others at their
    next barrier and is raised here (member 0's first).
    """
    if team == 1:
        return kernel(*args, sync, 0, 1)
    errors: list[BaseException] = []
    cpus = _placement(team)

    def member(tid: int) -> None:
        try:
            if cpus:
                _pin(cpus[tid])
            kernel(*args, sync, tid, team)
        except BaseException as exc:  # handed to the caller below
            sync[_ABORT] = 1
            errors.append(exc)

    threads = [threading.Thread(target=member, args=(tid,), name=f"fnn-team-{tid}",
                                daemon=True) for tid in range(1, team)]
    for t in threads:
        t.start()
    saved = _pin(cpus[0]) if cpus else None
    try:
        result = kernel(*args, sync, 0, team)
    except BaseException:
        sync[_ABORT] = 1
        raise
    finally:
        for t in threads:
            t.join()
        if saved:
            _restore(saved)
    if errors:
        raise errors[0]
    return result
