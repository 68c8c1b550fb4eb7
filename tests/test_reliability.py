"""Issue 12, one test (or a few) per reported fault: each reproduces the report exactly and
failed on d0818ca; item 4 was fixed there already and keeps its regression test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_checkpoint import fix_checksum, rewrite, set_meta
from test_train import blobs, interrupt_at

import fnn
import fnn.cli
from fnn import optim
from fnn.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from fnn.data import Dataset
from fnn.train import TrainConfig, TrainingDiverged, TrainingInterrupted, check_config, fit

BACKENDS = ("numpy", "numba")
DATA = blobs(seed=5, n=224, n_val=32)  # 7 batches of 32 an epoch
CONFIG = TrainConfig(sizes=(12, 8, 3), epochs=2, batch_size=32, lr=0.05)


class _Timeout(Exception):
    pass


def within(seconds, f, *args, **kwargs):
    """f(*args, **kwargs), failing (not hanging) if it runs longer than `seconds`."""
    def expire(signum, frame):
        raise _Timeout(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return f(*args, **kwargs)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- 1: resume past the epoch
def test_1_resume_with_batch_past_the_epoch_is_refused_not_a_hang():
    st = fit(None, DATA[:2], CONFIG._replace(epochs=1, backend="numpy"))
    for bad, field in ((st._replace(batch=10), "resume.batch"),
                       (st._replace(step=3), "resume.history"),
                       (st._replace(epoch=5), "config.epochs"),
                       (st._replace(batch=-1), "resume.batch")):
        with pytest.raises(ValueError, match=field):
            within(20, fit, None, DATA[:2], CONFIG._replace(backend="numpy"), resume=bad)


def test_1_cli_resume_of_an_edited_checkpoint_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fnn.cli, "_load_data",
                        lambda run, dtype, quiet: (Dataset(*DATA), (1, DATA[0].shape[1])))
    assert fnn.cli.main(["train", "--hidden", "8", "--batch-size", "32", "--epochs", "1",
                         "--quiet", "--out", str(tmp_path)]) == 0
    ckpt = tmp_path / "checkpoint.npz"
    rewrite(ckpt, lambda a: (set_meta(a, epoch=1, batch=40), fix_checksum(a)))
    capsys.readouterr()
    code = within(30, fnn.cli.main, ["train", "--resume", str(tmp_path), "--epochs", "2",
                                     "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "meta.batch" in err and len(err.splitlines()) == 1, err


# ---------------------------------------------------------------- 2: metadata validated
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    with pytest.raises(TrainingInterrupted) as info:
        fit(None, DATA[:2], CONFIG._replace(optimizer="adam", backend="numpy"),
            callbacks=[interrupt_at(9)])
    path = tmp_path_factory.mktemp("ckpt") / "good.npz"
    save_checkpoint(path, info.value.state, extra={"note": "x"})
    return path


def _nan_params(a):
    w = a["params.0.w"].copy()
    w[1, 2] = np.nan
    a["params.0.w"] = w


CRAFTED_META = {
    "step is a str": (lambda a: set_meta(a, step="abc"), "meta.step"),
    "step < 0": (lambda a: set_meta(a, step=-5), "meta.step"),
    "epoch 99": (lambda a: set_meta(a, epoch=99), "meta.epoch"),
    "batch 10**9": (lambda a: set_meta(a, batch=10**9), "meta.batch"),
    "elapsed a str": (lambda a: set_meta(a, elapsed="x"), "meta.elapsed"),
    "int fingerprint": (lambda a: set_meta(a, data_fingerprint=7), "meta.data_fingerprint"),
    "extra a list": (lambda a: set_meta(a, extra=[1, 2]), "meta.extra"),
    "count a str": (lambda a: set_meta(a, opt_state={"type": "AdamState", "count": "z",
                                                     "fields": {"mu": 2, "nu": 2}}),
                    "meta.opt_state.count"),
    "NaN in params": (_nan_params, r"params\[0\]\.w: expected finite values, got nan at index \(1, 2\)"),
    "mu of shape (3, 3)": (lambda a: a.update({"opt.mu.0.w": np.zeros((3, 3), np.float32)}),
                           r"'opt\.mu\.0\.w': expected shape \(12, 8\)"),
    "history.loss strings": (lambda a: a.update({"history.loss": np.array(["a"] * 9)}),
                             r"'history\.loss': expected dtype float64"),
    "an extra entry": (lambda a: a.update({"surprise": np.zeros(2)}), r"unknown \['surprise\.npy'\]"),
}


@pytest.mark.parametrize("case", list(CRAFTED_META))
def test_2_crafted_metadata_with_a_recomputed_checksum_is_refused(good_file, tmp_path, case):
    change, message = CRAFTED_META[case]
    path = tmp_path / "bad.npz"
    path.write_bytes(good_file.read_bytes())
    rewrite(path, lambda a: (change(a), fix_checksum(a)))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


# ---------------------------------------------------------------- 3: no other exceptions
def _set_method(data: bytes, method: int) -> bytes:
    """Every local and central header's compression method set to `method`."""
    b = bytearray(data)
    for sig, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = b.find(sig)
        while at >= 0:
            b[at + offset:at + offset + 2] = method.to_bytes(2, "little")
            at = b.find(sig, at + 4)
    return bytes(b)


def test_3_compression_method_99_is_a_checkpoint_error(good_file, tmp_path):
    path = tmp_path / "m99.npz"
    path.write_bytes(_set_method(good_file.read_bytes(), 99))
    with pytest.raises(CheckpointError, match=r"compression method 99"):
        load_checkpoint(path)


def test_3_a_declared_shape_of_2_to_the_40_is_refused_before_allocating(good_file, tmp_path):
    import zipfile

    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(good_file) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "history.loss.npy":
                header = {"descr": "<f8", "fortran_order": False, "shape": (2**40,)}
                import io
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, header)
                data = buf.getvalue() + b"\0" * 64
            dst.writestr(info.filename, data)
    with pytest.raises(CheckpointError, match=r"history.loss"):
        load_checkpoint(path)


def _bomb(good_file, path, name="history.eval_loss.npy", mib=64):
    """good_file with entry `name` replaced by `mib` MiB of zeros that deflate to ~1/1000."""
    import io
    import zipfile

    with zipfile.ZipFile(good_file) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w", force_zip64=True) as f:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buf, {"descr": "<f8", "fortran_order": False, "shape": (mib * 2**17,)})
            f.write(buf.getvalue())
            zero = bytes(2**20)
            for _ in range(mib):
                f.write(zero)
    return path


def test_3_a_zip_bomb_is_refused_quickly_with_bounded_memory(good_file, tmp_path):
    import tracemalloc

    path = _bomb(good_file, tmp_path / "bomb.npz")
    assert path.stat().st_size < 2**20  # the file is small, the entry is not
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"zip bomb"):
        load_checkpoint(path)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 2 and peak < 8 * 2**20, (seconds, peak)


# ---------------------------------------------------------------- 4: check_gradients, zeros
@pytest.mark.parametrize("backend, mode", [("numpy", "full"), ("numba", "complex-step")])
def test_4_check_gradients_on_zero_inputs(backend, mode):
    p = fnn.init_params(0, [3, 4, 4, 2], dtype="float64")
    report = fnn.check_gradients(p, np.zeros((1, 3)), [1], backend=backend, mode=mode)
    assert report.ok, str(report)


# ---------------------------------------------------------------- 5: non-finite params
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_5_non_finite_params_are_refused_naming_layer_and_index(backend, bad):
    p = (fnn.Layer(np.array([[bad, 1.], [1., 1.]]), np.zeros(2)),)
    x = np.array([[0., 1.]])
    for call in (lambda: fnn.forward(p, x, backend=backend),
                 lambda: fnn.loss(p, x, [0], backend=backend),
                 lambda: fnn.backprop(p, x, [0], backend=backend),
                 lambda: fnn.predict(p, x, backend=backend)):
        with pytest.raises(ValueError, match=r"params\[0\]\.w: expected finite values, got "
                           r".*at index \(0, 0\)"):
            call()
    q = fnn.init_params(0, [2, 3, 2], dtype="float64")
    b = np.zeros(2)
    b[1] = bad
    q = (q[0], fnn.Layer(q[1].w, b))
    with pytest.raises(ValueError, match=r"params\[1\]\.b: .* at index \(1,\)"):
        fnn.sgd_epoch(q, np.ones((4, 2)), np.zeros(4, int), np.arange(4), 2, 0.1)


# ---------------------------------------------------------------- 6: huge numbers
def test_6_huge_batch_sizes_train_the_epoch_as_one_batch():
    p = fnn.init_params(0, [3, 4, 2], dtype="float64")
    x = np.random.default_rng(0).normal(size=(5, 3))
    y = np.array([0, 1, 0, 1, 1])
    one, losses = fnn.sgd_epoch(p, x, y, np.arange(5), 5, 0.1)
    for bs in (2**63 - 1, 2**64, 10**30):
        got, got_losses = fnn.sgd_epoch(p, x, y, np.arange(5), bs, 0.1)
        assert all(np.array_equal(a.w, b.w) for a, b in zip(got, one))
        assert np.array_equal(got_losses, losses)


HUGE = {
    "sgd_step lr": (lambda: fnn.sgd_step(*_pg(), 10**400), "lr: "),
    "TrainConfig lr": (lambda: check_config(TrainConfig(lr=10**400)), "config.lr: "),
    "TrainConfig epochs": (lambda: check_config(TrainConfig(epochs=2**64)), "config.epochs: "),
    "adam b2": (lambda: optim.adam(0.1, b2=10**400), "b2: "),
    "sgd momentum": (lambda: optim.sgd(0.1, momentum=-(10**400)), "momentum: "),
    "init_params 1e7": (lambda: fnn.init_params(0, [10**7, 10**7]), "sizes: expected at most"),
    "init_params 2**62": (lambda: fnn.init_params(0, [2**62, 2]), "sizes: expected at most"),
    "batch_indices": (lambda: fnn.batch_indices(10**13, 8, 0), "n: expected an int <="),
    "config sizes": (lambda: check_config(TrainConfig(sizes=(784, 64, 10**12))),
                     "config.sizes: expected at most"),
    "a 5000-digit lr": (lambda: fnn.sgd_step(*_pg(), 10**5000), "lr: .*an int of 16610 bits"),
}


def _pg():
    p = fnn.init_params(0, [3, 2], dtype="float64")
    return p, p


@pytest.mark.parametrize("case", list(HUGE))
def test_6_huge_numbers_give_a_named_value_error(case):
    call, message = HUGE[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_6_cli_labels_up_to_1e12_are_refused_in_one_line(monkeypatch, capsys, tmp_path):
    x, y, xt, yt = DATA
    y = y.astype(np.int64)
    y[0] = 10**12
    monkeypatch.setattr(fnn.cli, "_load_data",
                        lambda run, dtype, quiet: (Dataset(x, y, xt, yt), (1, x.shape[1])))
    code = fnn.cli.main(["train", "--quiet", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "expected at most" in err, err
    assert "1000000000001" in err


# ---------------------------------------------------------------- 7: accepted but wrong
def test_7_accepted_although_wrong_now_refused():
    p = fnn.init_params(0, [3, 2], dtype="float64")
    x = np.ma.masked_array(np.ones((2, 3)), mask=[[True, False, False]] * 2)
    with pytest.raises(TypeError, match=r"x: expected a plain ndarray, got a masked array"):
        fnn.forward(p, x)
    one = fnn.init_params(0, [1, 2], dtype="float64")
    with pytest.raises(TypeError, match=r"x: .*masked"):
        fnn.forward(one, np.ma.masked_array([[np.nan]], mask=[[True]]))
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got None"):
        fnn.init_params(0, [3, 2], dtype=None)
    with pytest.raises(TypeError, match=r"rng: "):
        fnn.batch_indices(6, 3, True)
    with pytest.raises(TypeError, match=r"rng: "):
        fnn.batch_indices(6, 3, [[1]])
    with pytest.raises(TypeError, match=r"lr schedule: expected a real number at step 0, got "
                       "str '0.1'"):
        optim.sgd(lambda s: "0.1")
    with pytest.raises(TypeError, match=r"lr schedule: .* at step 1"):
        opt = optim.sgd(lambda s: 0.1 if s == 0 else "0.1")
        params, state = opt.update(p, opt.init(p), p)
        opt.update(p, state, params)


# ---------------------------------------------------------------- 8: errors name arguments
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_8_errors_name_the_argument(tmp_path, good_file):
    p = fnn.init_params(0, [3, 2], dtype="float64")
    with pytest.raises(ValueError, match=r"^x: expected an array"):
        fnn.forward(p, [[1., 2., 3.], [1., 2.]])
    with pytest.raises(TypeError, match=r"^x: expected a plain ndarray, got np.matrix"):
        fnn.forward(p, np.matrix(np.ones((2, 3))))
    with pytest.raises(TypeError, match=r"^params\[0\]: expected plain ndarrays"):
        fnn.forward((fnn.Layer(np.matrix(p[0].w), p[0].b),), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"^y: expected an array"):
        fnn.loss(p, np.ones((2, 3)), [[0], [1, 1]])
    state = load_checkpoint(good_file)
    with pytest.raises(TypeError, match=r"^extra: expected a dict"):
        save_checkpoint(tmp_path / "c.npz", state, extra=[1])
    assert not (tmp_path / "c.npz").exists()
    with pytest.raises(TypeError, match=r"^dtype: expected float32 or float64, got 'foo'"):
        load_checkpoint(tmp_path / "does-not-exist.npz", dtype="foo")  # before reading
    path = tmp_path / "v.npz"
    path.write_bytes(good_file.read_bytes())
    rewrite(path, lambda a: (set_meta(a, version="1"), fix_checksum(a)))
    with pytest.raises(CheckpointError, match=r"meta.version: expected the int 1, got str '1'"):
        load_checkpoint(path)


# ---------------------------------------------------------------- 9: files
def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_9_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "checkpoint.npz"
    stale = tmp_path / f".checkpoint.npz.{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".checkpoint.npz.{os.getppid()}.def456.tmp"  # a live process's
    other = tmp_path / ".training.png.1.xyz.tmp"  # another file's temporaries are not ours
    for f in (stale, live, other):
        f.write_bytes(b"partial")
        os.utime(f, (time.time() - 60, time.time() - 60))
    atomic_write(target, lambda f: f.write(b"ok"))
    assert target.read_bytes() == b"ok"
    assert not stale.exists() and live.exists() and other.exists()


def test_9_sigkill_mid_save_leaves_the_old_file_and_the_next_save_cleans_up(tmp_path):
    target = tmp_path / "c.bin"
    target.write_bytes(b"old")
    code = ("import os, signal\n"
            "from fnn.checkpoint import atomic_write\n"
            "def write(f):\n"
            "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write({str(target)!r}, write)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".c.bin.*.tmp"))
    assert target.read_bytes() == b"old" and len(left) == 1
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and not list(tmp_path.glob(".c.bin.*.tmp"))


def test_9_an_exception_mid_write_removes_the_temporary(tmp_path):
    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x", fail)
    assert list(tmp_path.iterdir()) == []


def test_9_saving_onto_a_symlink_writes_through_to_its_target(tmp_path, good_file):
    real = tmp_path / "store" / "real.npz"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    save_checkpoint(link, load_checkpoint(good_file))
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_checkpoint(real).step == 9
    assert not list(real.parent.glob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_9_resume_without_a_checkpoint_says_why(tmp_path):
    with pytest.raises(CheckpointError, match=r"no such checkpoint file .*first epoch end"):
        load_checkpoint(tmp_path / "checkpoint.npz")


# ---------------------------------------------------------------- 10: overflow, divergence
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_10_overflowing_float32_logits(backend):
    p = fnn.init_params(0, [3, 4, 2])
    big = (fnn.Layer(p[0].w * np.float32(1e30), p[0].b), fnn.Layer(p[1].w * np.float32(1e30),
                                                                    p[1].b))
    x = np.ones((2, 3), np.float32)
    assert not np.isfinite(fnn.forward(big, x, backend=backend)).all()
    assert not np.isfinite(fnn.loss(big, x, [0, 1], backend=backend))  # documented: IEEE
    with pytest.raises(ValueError, match=r"x: expected inputs whose outputs are finite"):
        fnn.predict(big, x, backend=backend)
    with pytest.raises(ValueError, match=r"x: expected inputs whose outputs are finite"):
        fnn.accuracy(big, x, [0, 1], backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_10_a_huge_lr_counts_as_diverged(backend):
    # float64, so the loss stays finite (float32 overflows to NaN, caught either way).
    config = TrainConfig(sizes=(12, 16, 3), epochs=2, batch_size=32, lr=1e6, backend=backend,
                         dtype="float64")
    data = blobs(seed=5, n=224, n_val=32, dtype=np.float64)
    with pytest.raises(TrainingDiverged, match=r"stayed over 1000 times the first loss") as info:
        fit(None, data, config)
    assert np.isfinite(info.value.state.history.loss).all()
    assert info.value.state.step == info.value.step


# ---------------------------------------------------------------- issue 10 fold-ins
def test_every_config_field_has_one_constraint_and_the_cli_reads_it(capsys):
    from fnn.hyperparams import HYPERPARAMS

    assert set(TrainConfig._fields) <= set(HYPERPARAMS)
    # --momentum 1.0 was accepted by the CLI while TrainConfig refuses it.
    with pytest.raises(ValueError, match=r"config.momentum: expected a value in \[0.0, 1.0\)"):
        check_config(TrainConfig(momentum=1.0))
    assert fnn.cli.main(["train", "--momentum", "1.0"]) == 2
    assert "argument --momentum: expected a value in [0.0, 1.0), got 1.0" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match=r"momentum: expected a value in \[0.0, 1.0\)"):
        optim.sgd(0.1, momentum=1.0)
    with pytest.raises(ValueError, match=r"config.dropout\[1\]: expected a value in"):
        check_config(TrainConfig(sizes=(4, 3, 3, 2), dropout=(0.1, 1.0)))
    with pytest.raises(ValueError, match=r"config.loss: expected one of"):
        check_config(TrainConfig(loss="hinge"))
    with pytest.raises(ValueError, match=r"config.activation\[1\]: expected one of"):
        check_config(TrainConfig(sizes=(4, 3, 3, 2), activation=("tanh", "swish")))


def test_update_checks_once_and_fit_uses_the_unchecked_path(monkeypatch):
    p = fnn.init_params(0, [12, 8, 3])
    opt = optim.adam(1e-3)
    state = opt.init(p)
    grads = fnn.backprop(p, DATA[0][:8], DATA[1][:8])[1]
    a = opt.update(grads, state, p)
    b = opt.update_unchecked(grads, state, p)
    assert all(np.array_equal(x.w, y.w) for x, y in zip(a[0], b[0]))
    with pytest.raises(ValueError, match=r"state.mu\[0\].w"):
        opt.update(grads, state._replace(mu=(state.mu[1], state.mu[0])), p)
    calls = []
    real = fnn.validate.check_grads
    monkeypatch.setattr(optim, "check_grads", lambda *a, **k: (calls.append(1), real(*a, **k)))
    fit(None, DATA[:2], CONFIG._replace(optimizer="adam", backend="numpy"))
    assert len(calls) <= 2  # the resume-free fit checks no optimizer state per step


# ---------------------------------------------------------------- found by the fuzz
@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzz_found_fortran_ordered_weights_give_the_bits_of_c_ordered(backend):
    # NumPy's BLAS rounds x @ w differently for a Fortran-ordered w (a transposed product):
    # forward gave a last-bit difference at 2-2 float64 before the ops made w C-contiguous.
    w = np.array([[0.02895695, 1.1034062], [-0.87162738, 1.09896222]])
    p = (fnn.Layer(w, np.zeros(2)),)
    pf = (fnn.Layer(np.asfortranarray(w), np.zeros(2)),)
    x = np.array([[0.12573022, -0.13210486]])
    assert fnn.forward(pf, x, backend=backend).tobytes() == \
        fnn.forward(p, x, backend=backend).tobytes()
    big = fnn.init_params(1, [7, 5, 3], dtype="float64")
    bigf = tuple(fnn.Layer(np.asfortranarray(l.w), l.b) for l in big)
    xs = np.random.default_rng(2).normal(size=(9, 7))
    ys = np.arange(9) % 3
    for a, b in zip(fnn.backprop(big, xs, ys, backend=backend)[1],
                    fnn.backprop(bigf, xs, ys, backend=backend)[1]):
        assert a.w.tobytes() == b.w.tobytes() and a.b.tobytes() == b.b.tobytes()


def test_fuzz_found_check_gradients_names_a_ragged_x():
    p = fnn.init_params(0, [1, 2], dtype="float64")
    with pytest.raises(ValueError, match=r"^x: expected an array"):
        fnn.check_gradients(p, [[1.0], [1.0, 1.0]], [0, 1])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_fuzz_found_optimizer_update_names_a_matrix_grad():
    p = fnn.init_params(0, [1, 2])
    opt = optim.adam(0.1)
    g = (fnn.Layer(np.matrix(np.ones((1, 2), np.float32)), np.ones(2, np.float32)),)
    with pytest.raises(TypeError, match=r"^grads\[0\]\.w: expected a plain ndarray"):
        opt.update(g, opt.init(p), p)
