"""fnn.team: an epoch shared by a team of threads gives the bits of one thread, for every
model, optimizer and batch shape; a failing member never leaves the others waiting."""

from __future__ import annotations

import builtins
import os
import threading

import numba as nb
import numpy as np
import pytest

import fnn
from fnn import epoch, kernels, team
from fnn.model import make_model

SPEC = {
    "sgd": epoch.OptimizerSpec("sgd"),
    "sgd+decay": epoch.OptimizerSpec("sgd", weight_decay=1e-3),
    "momentum": epoch.OptimizerSpec("momentum", momentum=0.8),
    "nesterov": epoch.OptimizerSpec("nesterov", momentum=0.9),
    "adam+decay": epoch.OptimizerSpec("adam", weight_decay=1e-2),
}


def _problem(sizes, n, dtype, seed=0, targets=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, sizes[0])) * (rng.random((n, sizes[0])) < 0.3)
    x = x.astype(dtype)
    y = (rng.random((n, sizes[-1])).astype(dtype) if targets
         else rng.integers(0, sizes[-1], n).astype(np.int64))
    return fnn.init_params(seed, sizes, dtype=dtype), x, y, rng.permutation(n)


def _slots(spec, params):
    zeros = tuple(fnn.Layer(np.zeros_like(p.w), np.zeros_like(p.b)) for p in params)
    return {"sgd": (), "momentum": (zeros,), "nesterov": (zeros,),
            "adam": (zeros, zeros)}[spec.kind]


def _bits(result):
    new_params, new_slots, losses = result
    arrays = [a for layer in new_params for a in layer]
    arrays += [a for slot in new_slots for layer in slot for a in layer]
    return [np.ascontiguousarray(a).tobytes() for a in arrays] + [losses.tobytes()]


def _run(params, x, y, order, batch, spec, threads, model=None, keys=None):
    steps = epoch.steps_in_epoch(order.shape[0], batch)
    lrs = np.linspace(0.05, 0.02, steps)
    return epoch.run_epoch(params, _slots(spec, params), x, y, order, batch, lrs, spec,
                           model, keys, 3, threads=threads)


@pytest.mark.parametrize("opt", list(SPEC))
@pytest.mark.parametrize("batch", [1, 5, 64, 97])
def test_a_team_gives_the_bits_of_one_thread(opt, batch):
    # batch 1 leaves the second member no rows, 5 and 97 split unevenly, and 97 also
    # leaves a short last batch (300 = 3 * 97 + 9).
    params, x, y, order = _problem((30, 70, 20, 7), 300, np.float32)
    one = _bits(_run(params, x, y, order, batch, SPEC[opt], 1))
    for threads in (2, 3):
        assert _bits(_run(params, x, y, order, batch, SPEC[opt], threads)) == one


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_team_matches_backprop_and_the_optimizer_step_by_step(dtype):
    params, x, y, order = _problem((30, 70, 20, 7), 200, dtype, seed=3)
    new_params, _, losses = _run(params, x, y, order, 48, SPEC["sgd"], 2)
    p = params
    lrs = np.linspace(0.05, 0.02, losses.shape[0])
    for k, start in enumerate(range(0, 200, 48)):
        idx = order[start:start + 48]
        value, grads = fnn.backprop(p, x[idx], y[idx], backend="numba")
        p = fnn.sgd_step(p, grads, float(lrs[k]))
        assert value == dtype(losses[k])
    for a, b in zip(p, new_params):
        assert a.w.tobytes() == b.w.tobytes() and a.b.tobytes() == b.b.tobytes()


# Every built-in activation (as two hidden layers each, so that every pair of codes
# meets), with dropout on the input and hidden layers, under every optimizer in turn.
MODELS = (
    (("tanh", "relu"), (0.2, 0.3, 0.0)),
    (("sigmoid", "gelu"), (0.0, 0.5, 0.1)),
    (("leaky_relu", "identity"), (0.1, 0.0, 0.4)),
    (("gelu", "leaky_relu"), 0.0),
)


@pytest.mark.parametrize("loss", list(fnn.LOSS_FUNCTIONS))
def test_every_activation_loss_and_dropout_in_a_team(loss):
    # Labels or float targets in [0, 1) (per-element loss terms), the activations'
    # own outputs, dropout masks drawn by row: 2 and 3 threads give the bits of one.
    targets = loss != "softmax_cross_entropy"
    params, x, y, order = _problem((30, 40, 24, 6), 250, np.float64, seed=5, targets=targets)
    keys = np.arange(1, 7, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    assert {a for acts, _ in MODELS for a in acts} == set(fnn.ACTIVATIONS)
    for (acts, rates), opt in zip(MODELS, ("adam+decay", "momentum", "nesterov", "sgd+decay")):
        m = make_model(3, acts, loss, rates)
        one = _bits(_run(params, x, y, order, 50, SPEC[opt], 1, m, keys[:5]))
        for threads in (2, 3):
            assert _bits(_run(params, x, y, order, 50, SPEC[opt], threads, m, keys[:5])) == one


def test_a_wide_net_packs_in_a_team_with_the_same_bits():
    # Wider than a tile, a batch of PACK_ROWS or more: the products pack their right
    # operand (`_packs`): one thread packs each tile as it goes; a team packs every tile
    # of w (forward) and w.T (backward) once, into the shared buffers, the tiles (4 of
    # the first layer's, ragged last) dealt out among 2 or 3 members. The last batch
    # (116 rows) is too short to pack.
    params, x, y, order = _problem((150, 200, 130, 10), 3 * kernels.PACK_ROWS, np.float32)
    batch = kernels.PACK_ROWS + 6
    one = _bits(_run(params, x, y, order, batch, SPEC["sgd"], 1))
    assert _bits(_run(params, x, y, order, batch, SPEC["sgd"], 2)) == one
    assert _bits(_run(params, x, y, order, batch, SPEC["sgd"], 3)) == one
    assert _bits(_run(params, x, y, order, batch, SPEC["nesterov"], 2)) == \
        _bits(_run(params, x, y, order, batch, SPEC["nesterov"], 1))


def test_a_bad_row_in_the_second_members_share_stops_the_team():
    params, x, y, order = _problem((30, 70, 7), 200, np.float32)
    x = x.copy()
    x[order[64 + 50]] = np.nan  # step 1, row 50 of 64: the second member's share
    x.flags.writeable = False
    for threads in (1, 2):
        with pytest.raises(ValueError, match=f"x.*{order[64 + 50]}"):
            _run(params, x, y, order, 64, SPEC["sgd"], threads)


def test_no_thread_is_left_running():
    params, x, y, order = _problem((30, 70, 7), 100, np.float32)
    before = threading.active_count()
    _run(params, x, y, order, 20, SPEC["sgd"], 2)
    assert threading.active_count() == before


@nb.njit(nogil=True)
def _count_rounds(slots, rounds, sync, tid, team_size):
    """Each member bumps its slot, then checks after the barrier that every member's slot
    reached the round: a barrier that let one member through early would fail."""
    for k in range(1, rounds + 1):
        slots[tid * 8] = k
        if not team.barrier(sync, team_size):
            return -2
        for t in range(team_size):
            if slots[t * 8] < k:
                return k
        if not team.barrier(sync, team_size):
            return -2
    return 0


@pytest.mark.parametrize("size", [2, 3])
def test_the_barrier_holds_every_member(size):
    slots = np.zeros(8 * size, dtype=np.int64)
    assert team.run(_count_rounds, (slots, 20000), team.new_sync(), size) == 0


@nb.njit(nogil=True)
def _fail_in_member_one(x, sync, tid, team_size):
    if tid == 1:
        raise ValueError("member one failed")
    return team.barrier(sync, team_size)


def test_a_failing_member_aborts_the_team_and_its_error_is_raised():
    # Member 0 waits at the barrier that member 1 never reaches: it must not wait for ever.
    with pytest.raises(ValueError, match="member one failed"):
        team.run(_fail_in_member_one, (0,), team.new_sync(), 2)


def test_threads_for_small_and_large_nets(monkeypatch):
    monkeypatch.delenv("FNN_NUM_THREADS", raising=False)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    # Pinned: the real count depends on what else is running at that instant.
    monkeypatch.setattr(team, "free_cpus", lambda: 2)
    small = fnn.init_params(0, (784, 64, 10))
    large = fnn.init_params(0, (784, 1024, 1024, 10))
    assert epoch.threads_for(small, 1) == 1
    assert epoch.threads_for(large, 128) == 2
    monkeypatch.setattr(team, "free_cpus", lambda: 1)  # another process holds a core
    assert epoch.threads_for(large, 128) == 1
    monkeypatch.setattr(team, "free_cpus", lambda: 2)
    monkeypatch.setenv("FNN_NUM_THREADS", "1")
    assert epoch.threads_for(large, 128) == 1
    monkeypatch.setenv("FNN_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="FNN_NUM_THREADS: expected a positive integer, got 'two'"):
        team.max_threads()


def test_share_covers_every_item_once_in_whole_units():
    share = nb.njit(lambda n, unit, tid, size: team.share(n, unit, tid, size))
    for n in (0, 1, 5, 64, 97, 1000):
        for unit in (1, 2, 64):
            for size in (1, 2, 3):
                parts = [share(n, unit, t, size) for t in range(size)]
                assert parts[0][0] == 0 and parts[-1][1] == n
                for (lo, hi), (lo2, _) in zip(parts, parts[1:]):
                    assert hi == lo2 and lo % unit == 0


def test_free_cpus_leaves_out_the_threads_running_elsewhere(monkeypatch, tmp_path):
    # /proc/loadavg's fourth field: runnable threads now / all; the caller is one of them.
    monkeypatch.setattr(team, "_cpus", lambda: 2)
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(team, "open", lambda *a, **k: builtins.open(loadavg), raising=False)
    for runnable, free in ((1, 2), (2, 1), (5, 1)):
        loadavg.write_text(f"0.50 0.40 0.30 {runnable}/120 4242\n")
        assert team.free_cpus() == free


def test_free_cpus_ignores_a_thread_seen_in_one_read_only(monkeypatch):
    # A kernel thread passing by shows in one read; a busy process shows in every read.
    monkeypatch.setattr(team, "_cpus", lambda: 2)
    for reads, free in (([2, 1, 2, 2, 2], 2), ([2] * 5, 1), ([3, 2, 2, 2, 2], 1)):
        seq = iter(reads)
        monkeypatch.setattr(team, "_runnable", seq.__next__)
        assert team.free_cpus() == free


def test_members_run_pinned_to_cpus_of_their_own_and_the_callers_mask_comes_back():
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and two CPUs")
    before = os.sched_getaffinity(0)
    seen = {}

    def kernel(sync, tid, n):
        seen[tid] = os.sched_getaffinity(0)
        return 0

    team.run(kernel, (), team.new_sync(), 2)
    assert len(seen[0]) == len(seen[1]) == 1 and seen[0] != seen[1]
    assert seen[0] | seen[1] <= before
    assert os.sched_getaffinity(0) == before


def test_the_team_chooser_times_both_choices_then_takes_the_faster():
    c = epoch._TeamChooser()
    assert c.pick(1) == 1  # one thread wanted: nothing to choose
    c = epoch._TeamChooser()
    picks = []

    def call(wanted, per_step):
        team = c.pick(wanted)
        picks.append(team)
        c.record(team, per_step[team] * 10, 10)

    call(2, {2: 99.0, 1: 99.0})  # first call: not timed (it may compile)
    assert c.per_step == {}
    call(2, {2: 9.0, 1: 2.0})  # the wanted team, disturbed
    call(2, {2: 3.0, 1: 2.0})  # one thread
    call(2, {2: 1.5, 1: 2.0})  # the team again: its pace
    call(2, {2: 1.5, 1: 2.5})
    assert picks == [2, 2, 1, 2, 1] and c.per_step == {2: [9.0, 1.5], 1: [2.0, 2.5]}
    for _ in range(5, epoch.PROBE_EVERY - 1):
        call(2, {2: 1.5, 1: 2.0})
    assert set(picks[5:]) == {2}  # the fastest of the team's timings beat one thread's
    assert c.per_step[2] == [1.5] * epoch.RECENT  # the last few timings only
    call(2, {2: 1.5, 1: 1.0})  # call PROBE_EVERY: one thread again, faster now
    assert picks[-1] == 1
    call(2, {2: 1.5, 1: 1.0})
    assert picks[-1] == 1  # and kept
    for _ in range(epoch.RECENT):  # one thread slows down for good: after RECENT slow
        call(2, {2: 1.5, 1: 4.0})   # calls the team is back
    assert picks[-epoch.RECENT:] == [1] * epoch.RECENT
    call(2, {2: 1.5, 1: 4.0})
    assert picks[-1] == 2
    call(1, {2: 1.0, 1: 5.0})  # the CPUs are busy: one thread, whatever was timed
    assert picks[-1] == 1
    c = epoch._TeamChooser()
    for wanted in (2, 2, 2, 2, 2, 3):  # a choice never timed (a larger team) goes first
        team = c.pick(wanted)
        c.record(team, 1.0, 1)
    assert team == 3


def test_automatic_teams_give_the_same_bits_call_after_call(monkeypatch):
    monkeypatch.delenv("FNN_NUM_THREADS", raising=False)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setattr(team, "free_cpus", lambda: 2)
    monkeypatch.setattr(epoch, "_CHOOSERS", {})
    params, x, y, order = _problem((150, 200, 130, 10), 3 * kernels.PACK_ROWS, np.float32)
    batch = kernels.PACK_ROWS + 6
    assert epoch.threads_for(params, batch) == 2
    runs = [_bits(_run(params, x, y, order, batch, SPEC["sgd"], None)) for _ in range(4)]
    assert all(r == runs[0] for r in runs)
    (chooser,) = epoch._CHOOSERS.values()
    assert set(chooser.per_step) == {1, 2}  # both were run and timed
    assert runs[0] == _bits(_run(params, x, y, order, batch, SPEC["sgd"], 1))
