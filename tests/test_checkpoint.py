"""Checkpoints: exact round trips of a whole TrainState, atomic writes, and a clear
CheckpointError for each way a file can be wrong."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from test_train import blobs, interrupt_at, same_run

import fnn
from fnn.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_callback,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from fnn.optim import AdamState, SGDState
from fnn.params import Layer
from fnn.train import TrainConfig, TrainingInterrupted, fit

DATA = blobs(seed=3)
CONFIG = TrainConfig(sizes=(12, 16, 3), epochs=2, batch_size=32, lr=0.01, optimizer="adam",
                     schedule="cosine", eval_every=3, val_fraction=0.0)


@pytest.fixture(scope="module")
def mid_run():
    """A TrainState stopped mid-epoch (step 13 of 20), and the uninterrupted run's end."""
    with pytest.raises(TrainingInterrupted) as info:
        fit(None, DATA, CONFIG, callbacks=[interrupt_at(13)])
    return info.value.state, fit(None, DATA, CONFIG)


@pytest.fixture
def saved(tmp_path, mid_run):
    path = tmp_path / "run.npz"
    save_checkpoint(path, mid_run[0], extra={"dataset": "here", "limit": 300})
    return path


def rewrite(path, change):
    """Re-save the npz with `change(arrays)` applied (a well-formed zip either way)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)


def set_meta(arrays, **fields):
    meta = json.loads(arrays["meta"].tobytes())
    meta.update(fields)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def fix_checksum(arrays):
    from fnn.checkpoint import _checksum

    arrays.pop("checksum")
    arrays["checksum"] = _checksum(arrays)


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("optimizer", ["adam", "nesterov", "sgd"])
def test_round_trip_restores_every_field_exactly(tmp_path, optimizer):
    config = CONFIG._replace(optimizer=optimizer)
    with pytest.raises(TrainingInterrupted) as info:
        fit(None, DATA, config, callbacks=[interrupt_at(7)])
    state = info.value.state
    save_checkpoint(tmp_path / "c.npz", state, extra={"note": [1, "two"]})
    loaded, extra = read_checkpoint(tmp_path / "c.npz", sizes=(12, 16, 3), dtype="float32")
    same_run(loaded, state)
    assert extra == {"note": [1, "two"]}
    assert loaded.config == state.config and loaded.rng_state == state.rng_state
    assert (loaded.elapsed, loaded.data_fingerprint) == (state.elapsed, state.data_fingerprint)
    assert np.array_equal(loaded.history.eval_time, state.history.eval_time)
    assert type(loaded.opt_state) is {"adam": AdamState}.get(optimizer, SGDState)
    if optimizer == "sgd":
        assert loaded.opt_state.velocity == ()
    for layer in (*loaded.params, *(x for slot in loaded.opt_state[1:] for x in slot)):
        assert layer.w.dtype == np.float32 and not layer.w.flags.writeable


def test_resuming_from_a_saved_mid_epoch_checkpoint_is_bit_identical(saved, mid_run):
    state = load_checkpoint(saved)
    assert (state.step, state.epoch, state.batch) == (13, 1, 3)
    same_run(fit(None, DATA, resume=state), mid_run[1])


def test_the_file_is_a_plain_npz_without_pickle(saved):
    with zipfile.ZipFile(saved) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    with np.load(saved, allow_pickle=False) as z:
        assert {"meta", "checksum", "params.0.w", "opt.mu.1.b", "history.loss"} <= set(z.files)
        assert all(z[name].dtype != object for name in z.files)
        meta = json.loads(z["meta"].tobytes())
    assert meta["format"] == "fnn.checkpoint" and meta["version"] == FORMAT_VERSION
    assert meta["sizes"] == [12, 16, 3] and meta["step"] == 13


def test_checkpoint_callback_saves_at_epoch_ends_and_every_n_steps(tmp_path, monkeypatch):
    import fnn.checkpoint as ckpt

    saved_steps = []
    real = ckpt.save_checkpoint
    monkeypatch.setattr(ckpt, "save_checkpoint",
                        lambda path, state, extra=None: (saved_steps.append(state.step),
                                                         real(path, state, extra=extra)))
    fit(None, DATA, CONFIG, callbacks=[checkpoint_callback(tmp_path / "c.npz", every=6)])
    assert saved_steps == [6, 10, 12, 18, 20]  # 10 batches per epoch; the end saves once
    assert load_checkpoint(tmp_path / "c.npz").finished
    with pytest.raises(ValueError, match="every"):
        checkpoint_callback(tmp_path / "c.npz", every=-1)


# ---------------------------------------------------------------- atomic writes
def test_a_failed_write_leaves_the_old_file_and_no_temporary(saved, mid_run, monkeypatch):
    before = saved.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(saved, mid_run[1])
    assert saved.read_bytes() == before
    assert os.listdir(saved.parent) == [saved.name]


def test_non_finite_params_never_overwrite_a_good_checkpoint(saved, mid_run):
    state = mid_run[0]
    w = state.params[0].w.copy()
    w[0, 0] = np.inf
    bad = state._replace(params=(Layer(w, state.params[0].b), *state.params[1:]))
    before = saved.read_bytes()
    with pytest.raises(CheckpointError, match=r"params\[0\]\.w: not finite"):
        save_checkpoint(saved, bad)
    assert saved.read_bytes() == before


def test_save_rejects_what_it_cannot_store(tmp_path, mid_run):
    with pytest.raises(TypeError, match="TrainState"):
        save_checkpoint(tmp_path / "c.npz", mid_run[0]._asdict())
    with pytest.raises(TypeError, match="extra"):
        save_checkpoint(tmp_path / "c.npz", mid_run[0], extra={"x": object()})
    assert not (tmp_path / "c.npz").exists()


# ---------------------------------------------------------------- bad files
def test_truncated_file(saved):
    data = saved.read_bytes()
    for keep in (len(data) // 2, len(data) - 30, 10):
        saved.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="unreadable, truncated or corrupted"):
            load_checkpoint(saved)


def test_corrupted_bytes(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("params.0.w.npy")
    middle = info.header_offset + 200 + info.file_size // 2  # inside the weights
    data[middle] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(saved)


def test_changed_array_is_caught_by_the_checksum(saved):
    def nudge(arrays):
        w = arrays["params.0.w"]
        w[3, 4] = np.nextafter(w[3, 4], np.inf)

    rewrite(saved, nudge)  # the zip itself is valid: only the checksum can tell
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(saved)


def test_changed_metadata_is_caught_by_the_checksum(saved):
    rewrite(saved, lambda a: set_meta(a, elapsed=123.0))  # valid, but not what was written
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(saved)


def test_wrong_format_version(saved):
    rewrite(saved, lambda a: (set_meta(a, version=FORMAT_VERSION + 1), fix_checksum(a)))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this fnn "
                                              f"reads version {FORMAT_VERSION}"):
        load_checkpoint(saved)


def test_wrong_architecture_or_dtype_when_one_is_expected(saved):
    with pytest.raises(CheckpointError, match=r"architecture \[12, 16, 3\] does not match the "
                                              r"expected \[784, 64, 10\]"):
        load_checkpoint(saved, sizes=(784, 64, 10))
    with pytest.raises(CheckpointError, match="dtype float32 does not match the expected float64"):
        load_checkpoint(saved, dtype=np.float64)
    assert load_checkpoint(saved, sizes=[12, 16, 3]).step == 13


def test_files_that_are_not_fnn_checkpoints(tmp_path, saved):
    cases = {
        "missing.npz": None,
        "text.npz": b"hello, world",
        "array.npy": "npy",
        "other.npz": "npz",
        "pickled.npz": "object",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content == "npy":
            np.save(path, np.arange(3))
        elif content == "npz":
            np.savez(path, weights=np.ones(3))
        elif content == "object":
            np.savez(path, meta=np.array([{"a": 1}], dtype=object))
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(CheckpointError, match="not an fnn checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_a_well_formed_file_with_inconsistent_content(saved):
    # A file a buggy writer could produce: valid checksum, but params missing a layer.
    rewrite(saved, lambda a: (a.pop("params.1.w"), fix_checksum(a)))
    with pytest.raises(CheckpointError, match=r"missing \['params\.1\.w\.npy'\]"):
        load_checkpoint(saved)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
    assert fnn.checkpoint.CheckpointError is CheckpointError


def test_test_metrics_and_the_best_checkpoint(tmp_path, monkeypatch):
    import fnn.checkpoint as ckpt

    config = CONFIG._replace(val_fraction=0.25, epochs=6, lr=0.3, optimizer="sgd")
    saves, real_save = [], ckpt.save_checkpoint

    def spy_save(path, state, **kwargs):
        saves.append(state.step)
        return real_save(path, state, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", spy_save)
    best = ckpt.best_checkpoint_callback(tmp_path / "best.npz", monitor="val_accuracy",
                                         extra={"kind": "best"})
    state = fit(None, DATA, config, callbacks=[best])
    monkeypatch.undo()
    acc = state.history.eval_accuracy
    # Saved at every evaluation that is a strict new best, step 0 included.
    running = [i for i in range(acc.size) if i == 0 or acc[i] > acc[:i].max()]
    assert saves == state.history.eval_step[running].tolist()
    loaded, extra = read_checkpoint(tmp_path / "best.npz")
    assert extra == {"kind": "best"} and loaded.step == saves[-1]
    assert loaded.history.eval_accuracy[-1] == acc.max()
    # The final state keeps its test metrics through a checkpoint.
    save_checkpoint(tmp_path / "last.npz", state)
    last = load_checkpoint(tmp_path / "last.npz")
    assert (last.test_loss, last.test_accuracy) == (state.test_loss, state.test_accuracy)
    assert not np.isnan(last.test_loss)
    with pytest.raises(ValueError, match="monitor: expected one of"):
        ckpt.best_checkpoint_callback(tmp_path / "x.npz", monitor="loss")
