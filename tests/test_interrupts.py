"""Ctrl-C never loses a state: `fnn.interrupts` holds SIGINT until a clean point.

Real signals throughout: sent to this process from a timer thread (the kernels release the
GIL, so the timer runs while they compute), or to a child process running fit or
`python -m fnn train`, at random times. Without the deferral a SIGINT during a kernel
surfaces as `SystemError: CPUDispatcher(...) returned a result with an exception set`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_train import CONFIG, DATA, same_run

import fnn
from fnn.checkpoint import load_checkpoint
from fnn.interrupts import SigintDeferral, deferred_sigint
from fnn.train import TrainingInterrupted, fit, on_events

ROOT = Path(__file__).resolve().parents[1]


def interrupt_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


# ---------------------------------------------------------------- the context manager
def test_a_sigint_in_the_block_is_raised_at_its_end_and_the_handler_restored():
    before = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as sigint:
            assert isinstance(signal.getsignal(signal.SIGINT), SigintDeferral)
            interrupt_self()  # the handler runs at the next bytecode: it only records
            reached.append(sigint.pending)
    assert reached == [True]
    assert signal.getsignal(signal.SIGINT) is before


def test_check_raises_at_the_clean_point_once():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as sigint:
            for step in range(5):
                steps.append(step)
                if step == 2:
                    interrupt_self()
                sigint.check()
    assert steps == [0, 1, 2]
    with deferred_sigint() as sigint:  # nothing pending: the block ends normally
        sigint.check()
    assert not sigint.pending


def test_nested_blocks_share_the_outer_record():
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint() as outer:
            with deferred_sigint() as inner:
                interrupt_self()
            assert inner is outer and outer.pending  # the inner block's end raised nothing
            outer.check()


def test_a_users_handler_runs_after_the_block_and_decides():
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        with deferred_sigint():
            interrupt_self()
            assert calls == []
        assert calls == [signal.SIGINT]  # and no KeyboardInterrupt: the handler did not raise
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_exception_leaves_the_block_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(ZeroDivisionError):
        with deferred_sigint():
            interrupt_self()
            1 / 0  # noqa: B018
    assert signal.getsignal(signal.SIGINT) is before


def test_ignored_sigint_and_other_threads_are_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_sigint() as sigint:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            interrupt_self()
            sigint.check()
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []

    def other_thread():
        with deferred_sigint() as sigint:
            seen.append((signal.getsignal(signal.SIGINT), sigint.previous))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen == [(signal.getsignal(signal.SIGINT), None)]


# ---------------------------------------------------------------- fit
def signal_at(step, log):
    """A callback that sends this process SIGINT at the chunk that ends at `step`."""
    @on_events("chunk", every=step)
    def callback(event):
        if event.step == step:
            log.append(("sent", event.step))
            interrupt_self()
    return callback


def test_fit_stops_at_the_chunk_a_sigint_lands_in_with_its_state():
    log = []
    with pytest.raises(TrainingInterrupted) as info:
        fit(None, DATA, CONFIG, callbacks=[signal_at(12, log)])
    assert log == [("sent", 12)] and info.value.state.step == 12
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    same_run(fit(None, DATA, resume=info.value.state), fit(None, DATA, CONFIG))


def test_fit_hands_a_sigint_to_a_users_handler_and_goes_on_if_it_does_not_raise():
    # ... after the step's callbacks, at fit's clean point, not in the middle of them.
    log = []
    seen = on_events("chunk")(lambda event: event.step == 12 and log.append(("seen", 12)))
    previous = signal.signal(signal.SIGINT, lambda signum, frame: log.append(("handled",)))
    try:
        state = fit(None, DATA, CONFIG, callbacks=[signal_at(12, log), seen])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert log == [("sent", 12), ("seen", 12), ("handled",)]
    same_run(state, fit(None, DATA, CONFIG))


# ---------------------------------------------------------------- real signals
def test_ctrl_c_during_a_compiled_epoch_is_a_keyboard_interrupt_and_inputs_are_intact():
    # The signal lands at a random time of a ~0.1-0.3 s sgd_epoch/momentum_epoch call.
    rng = np.random.default_rng(0)
    x = rng.random((12_000, 784), dtype=np.float32)
    y = rng.integers(0, 10, 12_000)
    order = rng.permutation(12_000)
    params = fnn.init_params(0, [784, 128, 10])
    copies = [a.copy() for layer in params for a in layer]
    fnn.sgd_epoch(params, x[:64], y[:64], order[:64] % 64, 64, 0.1)  # compiled or loaded
    t = time.perf_counter()
    fnn.sgd_epoch(params, x, y, order, 64, 0.1)
    took = time.perf_counter() - t
    chance = random.Random(0)
    inside = 0
    for trial in range(20):
        epoch = fnn.sgd_epoch if trial % 2 else (
            lambda *a: fnn.momentum_epoch(params, None, *a[1:], momentum=0.9))
        timer = threading.Timer(chance.uniform(0, 0.8 * took), interrupt_self)
        returned = False
        try:
            timer.start()
            epoch(params, x, y, order, 64, 0.1)
            returned = True
            time.sleep(10 * took + 1)  # the signal comes here at the latest
        except KeyboardInterrupt:
            inside += not returned
        finally:
            timer.join()
    assert inside >= 10  # most signals landed during the call, the case under test
    assert all(np.array_equal(a, b) for a, b in zip(copies, (a for l in params for a in l)))


CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from fnn.checkpoint import load_checkpoint, save_checkpoint
    from fnn.train import TrainConfig, TrainingInterrupted, fit, on_events

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 256)).astype(np.float32)
    y = np.argmax(x @ rng.normal(size=(256, 10)), axis=1)
    config = TrainConfig(sizes=(256, 512, 10), epochs=20, batch_size=32, lr=0.02,
                         optimizer="momentum", eval_every=50, seed=3)
    fit(None, (x, y), config._replace(epochs=1))  # loads the kernels
    t = time.perf_counter()
    reference = fit(None, (x, y), config)
    print("ready", time.perf_counter() - t, flush=True)
    started = on_events("start")(lambda event: print("started", flush=True))
    path = sys.argv[1]
    for line in sys.stdin:
        try:  # a run that cannot finish before the signal
            fit(None, (x, y), config._replace(epochs=10_000), callbacks=[started])
            print("finished", flush=True)
            continue
        except TrainingInterrupted as exc:
            save_checkpoint(path, exc.state)
        state = load_checkpoint(path)
        resumed = fit(None, (x, y), config, resume=state) if state.epoch < 20 else None
        same = resumed is not None and all(
            np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)
            for a, b in zip(resumed.params, reference.params)) and np.array_equal(
            resumed.history.loss, reference.history.loss)
        print("interrupted", state.step, same, state.epoch, flush=True)
""")


def test_ctrl_c_at_random_times_in_fit_always_keeps_a_resumable_state(tmp_path):
    # 20 SIGINTs at random times of a compiled fit: each ends in TrainingInterrupted with
    # a state whose checkpoint resumes to the bits of the run that was never stopped.
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "c.npz")], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def read(expected):
        line = child.stdout.readline()
        if not line.startswith(expected):
            child.kill()
            pytest.fail(f"expected {expected!r}, got {line!r}; stderr:\n{child.communicate()[1]}")
        return line.split()

    took = float(read("ready")[1])  # seconds of the 20-epoch reference run
    chance = random.Random(1)
    steps = []
    for _ in range(20):
        child.stdin.write("go\n")
        child.stdin.flush()
        read("started")
        time.sleep(chance.uniform(0, took / 3))
        child.send_signal(signal.SIGINT)
        line = read("interrupted")
        assert line[2] == "True", f"resumed from step {line[1]} (epoch {line[3]}): other bits"
        steps.append(int(line[1]))
    err = child.communicate(timeout=60)[1]  # (closes its stdin: it ends)
    assert child.returncode == 0 and "Error" not in err, err
    assert len(set(steps)) > 10  # at many different points


def test_ctrl_c_at_random_times_in_fnn_train_exits_130_with_a_checkpoint(tmp_path):
    pytest.importorskip("datasets")
    opts = ["--limit", "6000", "--batch-size", "16", "--hidden", "512", "--lr", "0.02",
            "--optimizer", "momentum"]

    def train(*argv):
        return subprocess.run([sys.executable, "-m", "fnn", "train", "--quiet", *map(str, argv)],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    done = train(*opts, "--epochs", 6, "--out", tmp_path / "whole")
    assert done.returncode == 0, done.stderr
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")
    # Its epochs' time, without loading (or compiling) the kernels, in its first epoch.
    epoch_seconds = (whole.history.eval_time[-1] - whole.history.eval_time[1]) / 5
    chance = random.Random(2)
    for trial in range(4):
        out = tmp_path / f"cut{trial}"
        child = subprocess.Popen(
            [sys.executable, "-m", "fnn", "train", *opts, "--epochs", "1000", "--out", str(out)],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while not (out / "best.npz").exists():  # written at fit's start (the step-0 eval)
            assert child.poll() is None, child.communicate()[1]
            time.sleep(0.01)
        time.sleep(chance.uniform(0, 2 * epoch_seconds))  # (it warmed its kernels up)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert child.returncode == 130 and "Traceback" not in err, err
        state = load_checkpoint(out / "checkpoint.npz")
        assert f"interrupted after step {state.step}; checkpoint saved" in err
        assert state.epoch < 6, "interrupted too late to compare with the 6-epoch run"
        resumed = train("--resume", out, "--epochs", 6)
        assert resumed.returncode == 0, resumed.stderr
        final = load_checkpoint(out / "checkpoint.npz")
        assert all(np.array_equal(a.w, b.w) and np.array_equal(a.b, b.b)
                   for a, b in zip(final.params, whole.params))
        assert np.array_equal(final.history.loss, whole.history.loss)
