"""Bad files and bad states at the file boundaries: checkpoints written from a wrong
state, crafted run metadata, image and config paths that are not regular files, a
failed `fnn train` that must leave its --out folder as it was, a resumed state that is
not one, and counts too large to allocate. Each is a named ValueError or TypeError (the
CLI: one line, exit 2), never another exception, a hang or a clobbered file."""

from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
import zlib

import numpy as np
import pytest

from fnn.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from fnn.cli import main
from fnn.images import read_gray_image
from fnn.optim import SGDState
from fnn.params import Layer
from fnn.run_config import read_run_config
from fnn.runs import load_saved_run
from fnn.train import TrainConfig, fit

NAMED = re.compile(r"^[\w.\[\]-]+: expected .*, got ")
CONFIG = TrainConfig(sizes=(16, 3, 2), epochs=1, batch_size=4, val_fraction=0.0)
EXTRA = {"dataset": None, "limit": 200, "image_column": "image", "label_column": "label",
         "train_split": "train", "test_split": "test", "scale": "pixel",
         "image_shape": [4, 4], "scaling": {"kind": "pixel"}}


@pytest.fixture(scope="module")
def state():
    rng = np.random.default_rng(0)
    x = rng.random((24, 16), dtype=np.float32)
    return fit(None, (x, np.arange(24) % 2), CONFIG)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv):
    """The stderr line of a command that must fail with exit 2."""
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("fnn: error: "), err
    return err


def png_bytes(width, height, pixels=b""):
    """A grayscale PNG's bytes; pixels (rows of width bytes) or one IDAT of nothing."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\0" + pixels[i * width:(i + 1) * width] for i in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows if pixels else b"")) + chunk(b"IEND", b""))


def without_hanging(fifo, call):
    """call(); if it blocks on the FIFO, its other end is opened and closed (EOF for a
    reader; a writer then gets a broken pipe) so that the test fails instead of hanging."""
    box = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # unblocks a writer
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # and a reader
        finally:
            os.close(reader)
        thread.join(10)
        pytest.fail(f"blocked reading the FIFO {fifo}")
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------- A: save_checkpoint
BAD_STATES = {
    "params ()": ({"params": ()}, ValueError, "state.params"),
    "config None": ({"config": None}, TypeError, "state.config"),
    "velocity not layers": ({"opt_state": SGDState(0, (1, 2))}, ValueError, "state.opt_state"),
    "object params": (lambda s: {"params": (Layer(s.params[0].w.astype(object), s.params[0].b),
                                            s.params[1])}, TypeError, "state.params"),
    "str step": ({"step": "6"}, TypeError, "state.step"),
    "negative step": ({"step": -1}, ValueError, "state.step"),
    "huge step": ({"step": 10**30}, ValueError, "state.step"),
    "nan elapsed": ({"elapsed": math.nan}, ValueError, "state.elapsed"),
    "str elapsed": ({"elapsed": "x"}, TypeError, "state.elapsed"),
    "inf test loss": ({"test_loss": math.inf}, ValueError, "state.test_loss"),
    "str test accuracy": ({"test_accuracy": "x"}, TypeError, "state.test_accuracy"),
    "rng state": ({"rng_state": {"bit_generator": "PCG64"}}, ValueError, "state.rng_state"),
    "fingerprint None": ({"data_fingerprint": None}, TypeError, "state.data_fingerprint"),
    "history None": ({"history": None}, TypeError, "state.history"),
    "sizes mismatch": (lambda s: {"config": s.config._replace(sizes=(16, 5, 2))}, ValueError,
                       "state"),
    "batch past the epoch": ({"batch": 99}, ValueError, "state"),
    "int history": (lambda s: {"history": s.history._replace(loss=np.zeros(6, int))},
                    ValueError, "state"),
    "momentum velocity shape": (lambda s: {
        "config": s.config._replace(optimizer="momentum"),
        "opt_state": SGDState(0, tuple(Layer(p.w[:1], p.b) for p in s.params))},
        ValueError, "state.opt_state"),
}


@pytest.mark.parametrize("case", BAD_STATES)
def test_save_refuses_a_bad_state_by_name_and_keeps_the_old_file(tmp_path, state, case):
    change, kind, name = BAD_STATES[case]
    path = tmp_path / "good.npz"
    save_checkpoint(path, state)
    before = path.read_bytes()
    bad = state._replace(**(change(state) if callable(change) else change))
    with pytest.raises(kind) as info:
        save_checkpoint(path, bad)
    assert NAMED.match(str(info.value)) and str(info.value).startswith(name), info.value
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["good.npz"]
    load_checkpoint(path)


def test_save_takes_numpy_scalars_where_it_takes_python_ones(tmp_path, state):
    numpy_scalars = state._replace(
        step=np.int64(state.step), epoch=np.int32(state.epoch), batch=np.int64(0),
        elapsed=np.float32(1.5), test_loss=np.float32(0.25), test_accuracy=np.float64(0.5),
        opt_state=SGDState(np.int64(state.opt_state.count), ()))
    save_checkpoint(tmp_path / "c.npz", numpy_scalars)
    back = load_checkpoint(tmp_path / "c.npz")
    assert (back.step, back.elapsed, back.test_loss, back.opt_state.count) == (
        state.step, 1.5, 0.25, state.opt_state.count)
    assert type(back.step) is int and type(back.opt_state.count) is int


def test_save_to_a_folder_or_into_a_missing_folder_is_a_named_error(tmp_path, state):
    for path in (tmp_path, tmp_path / "missing" / "c.npz"):
        with pytest.raises(ValueError, match=r"^path: expected "):
            save_checkpoint(path, state)


# ---------------------------------------------------------------- B: a run's extra metadata
def saved_run(folder, state, **patch):
    folder.mkdir(exist_ok=True)
    save_checkpoint(folder / "checkpoint.npz", state, extra={**EXTRA, **patch})
    (folder / "config.json").write_text("sentinel")
    return folder


BAD_EXTRA = {
    "image_shape": [[], [28], [4, 5], {"a": 1}, [4, 4.0], [0, 16], "44"],
    "scaling": [{"kind": "divide"}, {"kind": "divide", "max": -1}, {"kind": "divide",
                "max": "16"}, {"kind": "standardize", "mean": [0.0], "std": [1.0]},
                {"kind": "standardize", "mean": [0.0] * 16, "std": [0.0] * 16},
                {"kind": "standardize"}, {"kind": "x"}, [], {"kind": "pixel", "max": 2}],
    "limit": [-5, 0, "200", 2.5],
    "dataset": [5],
    "scale": ["x", -1],
    "image_column": [None, 3],
}
CASES = [(field, value) for field, values in BAD_EXTRA.items() for value in values]


@pytest.mark.parametrize(("field", "value"), CASES, ids=[f"{f}={v!r}" for f, v in CASES])
def test_bad_run_metadata_is_named_by_file_and_field(tmp_path, state, capsys, field, value):
    folder = saved_run(tmp_path / "run", state, **{field: value})
    with pytest.raises(ValueError) as info:
        load_saved_run(folder)
    where = f"{folder / 'checkpoint.npz'}: extra.{field}"
    message = str(info.value).removeprefix(where)
    assert message != str(info.value) and re.match(r"^[\w.]*: expected .*, got ", message), message
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(4, 4, bytes(range(16))))
    for argv in (["predict", folder, image], ["eval", folder],
                 ["train", "--resume", folder, "--epochs", 2, "--quiet"]):
        assert where in one_line_error(capsys, *argv)
    assert (folder / "config.json").read_text() == "sentinel"


def test_good_run_metadata_still_predicts(tmp_path, state, capsys):
    folder = saved_run(tmp_path / "run", state, scaling={"kind": "divide", "max": 16})
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(4, 4, bytes(range(16))))
    code, out, _ = run(capsys, "predict", folder, image, "--json")
    assert code == 0 and json.loads(out)[0]["class"] in (0, 1)


# ---------------------------------------------------------------- C, D: images and configs
def test_a_decompression_bomb_is_a_named_error(tmp_path, state, capsys):
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_bytes(60000, 60000))
    with pytest.raises(ValueError, match=r"^image .*huge.png: expected an image file"):
        read_gray_image(bomb, (4, 4))
    folder = saved_run(tmp_path / "run", state)
    assert "huge.png" in one_line_error(capsys, "predict", folder, bomb)


def test_an_image_of_another_size_is_refused_before_it_is_decoded(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(9000, 9000))  # 81 Mpixels if decoded; no pixel data
    with pytest.raises(ValueError, match=r"expected 4x4 pixels .* got 9000x9000"):
        read_gray_image(big, (4, 4))


def test_a_fifo_or_folder_is_not_read_as_an_image_or_config(tmp_path, state, capsys):
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"^image .*f.png: expected a regular file"):
        without_hanging(fifo, lambda: read_gray_image(fifo, (4, 4)))
    with pytest.raises(ValueError, match=r"^image .*: expected a regular file"):
        read_gray_image(tmp_path, (4, 4))
    folder = saved_run(tmp_path / "run", state)
    err = without_hanging(fifo, lambda: one_line_error(capsys, "predict", folder, fifo))
    assert "f.png: expected a regular file" in err
    with pytest.raises(ValueError, match=r"^config file .*f.png: expected a regular file"):
        without_hanging(fifo, lambda: read_run_config(fifo))
    err = without_hanging(fifo, lambda: one_line_error(capsys, "train", "--config", fifo))
    assert "expected a regular file" in err
    err = one_line_error(capsys, "eval", folder, "--png", fifo)
    assert "--png: expected a file to write in an existing folder" in err
    # A checkpoint path (read, or written over) that is a FIFO.
    with pytest.raises(CheckpointError):
        without_hanging(fifo, lambda: read_checkpoint(fifo))
    with pytest.raises(ValueError, match=r"^path: expected "):
        save_checkpoint(fifo, state)
    assert fifo.exists() and not fifo.is_file()


def test_train_refuses_an_out_folder_with_a_fifo_before_writing(tmp_path, capsys):
    out = tmp_path / "X"
    out.mkdir()
    os.mkfifo(out / "metrics.csv")
    err = without_hanging(out / "metrics.csv", lambda: one_line_error(
        capsys, "train", "--limit", 200, "--epochs", 1, "--quiet", "--out", out))
    assert "metrics.csv (not a regular file)" in err and os.listdir(out) == ["metrics.csv"]


# ---------------------------------------------------------------- E: a failed fnn train
def old_run_folder(folder):
    folder.mkdir()
    for name in ("best.npz", "checkpoint.npz", "config.json", "history.json"):
        (folder / name).write_text(f"old {name}")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_failed_train_leaves_its_out_folder_as_it_was(tmp_path, capsys):
    config = tmp_path / "dl.json"
    config.write_text(json.dumps({"format": "fnn.run-config", "version": 1,
                                  "train": {"drop_last": True, "batch_size": 1000}}))
    out = tmp_path / "X"
    before = old_run_folder(out)
    err = one_line_error(capsys, "train", "--config", config, "--limit", 200, "--epochs", 1,
                         "--quiet", "--out", out)
    assert "--batch-size: 1000 with drop_last leaves no batch" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # A resume that fit refuses (the run's data is not this data) writes nothing either.
    resumed = tmp_path / "R"
    rng = np.random.default_rng(0)
    x = rng.random((24, 784), dtype=np.float32)
    other = fit(None, (x, np.arange(24) % 10), CONFIG._replace(sizes=(784, 3, 10)))
    saved_run(resumed, other, image_shape=[28, 28])
    before = {p.name: p.read_bytes() for p in resumed.iterdir()}
    err = one_line_error(capsys, "train", "--resume", resumed, "--epochs", 2, "--quiet")
    assert "data: the run being resumed trained on" in err
    assert {p.name: p.read_bytes() for p in resumed.iterdir()} == before


# ---------------------------------------------------------------- F: fit(resume=...)
BAD_RESUMES = {
    "rng no state": ({"rng_state": {"bit_generator": "PCG64"}}, ValueError, "resume.rng_state"),
    "rng MT19937 key": ({"rng_state": {"bit_generator": "MT19937",
                                       "state": {"key": [1, 2], "pos": 0}}},
                        ValueError, "resume.rng_state"),
    "rng huge": ({"rng_state": {"bit_generator": "PCG64", "state": {"state": 2**200, "inc": 1},
                                "has_uint32": 0, "uinteger": 0}}, ValueError, "resume.rng_state"),
    "rng None": ({"rng_state": None}, ValueError, "resume.rng_state"),
    "config None": ({"config": None}, TypeError, "resume.config"),
    "elapsed str": ({"elapsed": "x"}, TypeError, "resume.elapsed"),
    "elapsed nan": ({"elapsed": math.nan}, ValueError, "resume.elapsed"),
    "fingerprint int": ({"data_fingerprint": 5}, TypeError, "resume.data_fingerprint"),
}


@pytest.mark.parametrize("case", BAD_RESUMES)
@pytest.mark.parametrize("with_config", [True, False])
def test_fit_refuses_a_bad_resumed_state_by_name(state, case, with_config):
    change, kind, name = BAD_RESUMES[case]
    if not with_config and "config" in change:
        pytest.skip("the state's own config is the one checked")
    rng = np.random.default_rng(0)
    x = rng.random((24, 16), dtype=np.float32)
    config = CONFIG._replace(epochs=2) if with_config else None
    with pytest.raises(kind) as info:
        fit(None, (x, np.arange(24) % 2), config, resume=state._replace(**change))
    assert str(info.value).startswith(f"{name}: expected "), info.value


# ---------------------------------------------------------------- G: counts that allocate
@pytest.mark.parametrize("batch", [10**10, 10**30, 2**31 + 1])
def test_check_refuses_a_batch_too_large_to_allocate(capsys, batch):
    err = one_line_error(capsys, "check", "--sizes", "4,3,2", "--batch", batch)
    assert "--batch" in err and "expected an int <=" in err


def test_check_refuses_inputs_too_large_to_allocate(capsys):
    err = one_line_error(capsys, "check", "--sizes", "100000,3,2", "--batch", 2**30)
    assert "--batch" in err


def test_the_metrics_callback_refuses_a_path_that_is_not_a_file(tmp_path):
    from fnn.metrics_log import metrics_csv_callback

    (tmp_path / "metrics.csv").mkdir()
    x = np.random.default_rng(0).random((8, 4)).astype(np.float32)
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match=r"^path: expected a regular file"):
        fit(None, (x, y, x, y), TrainConfig(sizes=(4, 3, 2), epochs=1, batch_size=4,
                                            val_fraction=0),
            callbacks=[metrics_csv_callback(tmp_path / "metrics.csv")])
