"""The command line's workflow: validation and early stopping, model flags, configs that
rerun, provenance, metrics.csv, data options and scaling, fnn eval and fnn predict.
Tiny in-process runs (--limit) on the shipped MNIST, and a digits dataset stored as 0..16."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_cli import TINY, run, same_params

import fnn
from fnn.checkpoint import load_checkpoint, read_checkpoint
from fnn.train import validation_split

pytest.importorskip("datasets")
pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def mnist():
    return fnn.load_mnist()


def ckpt(folder, name="checkpoint.npz"):
    return read_checkpoint(folder / name)


# ---------------------------------------------------------------- validation, early stopping
def test_validation_part_is_held_out_and_the_test_split_measured_once(tmp_path, capsys, mnist):
    code, out, _ = run(capsys, *TINY, "--epochs", 2, "--val-fraction", 0.25, "--out", tmp_path)
    assert code == 0
    state, _ = ckpt(tmp_path)
    train, val = validation_split(640, 0.25, 0)
    x, y = mnist.x_train[:640], mnist.y_train[:640]
    assert state.step == 2 * 8  # 480 training examples, batch 64
    assert (state.history.eval_loss[-1], state.history.eval_accuracy[-1]) == fnn.evaluate(
        state.params, x[val], y[val])
    assert (state.test_loss, state.test_accuracy) == fnn.evaluate(
        state.params, mnist.x_test, mnist.y_test)
    assert f"final test accuracy: {100 * state.test_accuracy:.2f}% on 10000 examples" in out
    # The same bits as fit on the training part alone (the other seed streams unchanged).
    alone = fnn.fit(None, (x[train], y[train]), state.config._replace(val_fraction=0.0))
    assert same_params(alone.params, state.params)


def test_early_stopping_keeps_the_best_checkpoint(tmp_path, capsys):
    opts = [*TINY, "--epochs", 10, "--patience", 2, "--eval-every", 5, "--lr", 0.5,
            "--optimizer", "nesterov"]
    code, out, _ = run(capsys, *opts, "--out", tmp_path)
    assert code == 0 and "stopped early: 2 evaluations without improvement" in out
    last, best = ckpt(tmp_path)[0], ckpt(tmp_path, "best.npz")[0]
    h = last.history
    i = int(np.argmin(h.eval_loss))
    assert last.stopped_early and last.epoch < 10 and h.eval_step.size - 1 - i == 2
    assert best.step == h.eval_step[i] and best.history.eval_loss[-1] == h.eval_loss[i]
    assert f"best val_loss {h.eval_loss[i]:.4g} at step {h.eval_step[i]}" in out
    # The run resumed from its last checkpoint is already done.
    code, out, _ = run(capsys, "train", "--resume", tmp_path, "--epochs", 20, "--quiet")
    assert code == 0 and load_checkpoint(tmp_path / "checkpoint.npz").step == last.step
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--scale", "standardize")
    assert code == 2 and "--scale cannot change when resuming (the run used pixel)" in err
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--config", tmp_path)
    assert code == 2 and "--config and --resume exclude each other" in err


@pytest.mark.parametrize("argv, message", [
    (["--val-fraction", "1"], "argument --val-fraction: expected a value in [0.0, 1.0), got 1.0"),
    (["--val-fraction", "-0.1"], "argument --val-fraction: expected a value in [0.0, 1.0)"),
    (["--patience", "0"], "argument --patience: expected an int >= 1, got 0"),
    (["--monitor", "loss"], "argument --monitor: invalid choice: 'loss'"),
    (["--patience", "3", "--val-fraction", "0", "--limit", "64"],
     "--patience: early stopping needs a validation part, got --val-fraction 0"),
    (["--val-fraction", "0.001", "--limit", "64"], "--val-fraction: expected a fraction that holds out"),
    (["--activation", "swish"], "argument --activation: expected one of ('relu', 'leaky_relu'"),
    (["--activation", "tanh,relu", "--limit", "64"], "--activation"),
    (["--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
    (["--dropout", "1.5"], "argument --dropout: expected a value in [0.0, 1.0), got 1.5"),
    (["--dropout", "a,b"], "argument --dropout: expected a number, got 'a'"),
    (["--monitor", "val_accuracy", "--loss", "mse", "--limit", "64"],
     "--monitor: loss 'mse' has no accuracy"),
    (["--scale", "0"], "argument --scale: expected pixel or standardize or the data's largest"),
    (["--image-column", "pixels", "--limit", "64"], "image_column='pixels': no such column"),
    (["--label-column", "image", "--limit", "64"], "label_column: expected a column other"),
    (["--train-split", "validation", "--limit", "64"], "split 'validation' not found"),
    (["--config", "/nonexistent/config.json"], "config file /nonexistent/config.json: no such file"),
])
def test_bad_workflow_options_give_one_line_and_exit_2(argv, message, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", *argv)
    assert list(tmp_path.iterdir()) == []
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fnn: error: "), err
    assert message in err, err


# ---------------------------------------------------------------- model flags
def test_activation_loss_and_dropout_flags(tmp_path, capsys, mnist):
    code, out, _ = run(capsys, *TINY, "--epochs", 1, "--hidden", "32,16", "--activation",
                       "tanh,gelu", "--dropout", "0.1,0.3", "--out", tmp_path / "a")
    assert code == 0
    state = load_checkpoint(tmp_path / "a" / "checkpoint.npz")
    assert state.config.activation == ("tanh", "gelu") and state.config.dropout == (0.1, 0.3)
    assert state.test_accuracy == fnn.evaluate(state.params, mnist.x_test, mnist.y_test,
                                               activation=("tanh", "gelu"))[1]
    # mse trains on one-hot targets; there is no accuracy, so the loss is reported.
    code, out, _ = run(capsys, *TINY, "--epochs", 1, "--loss", "mse", "--activation", "sigmoid",
                       "--out", tmp_path / "m")
    assert code == 0 and out.startswith("final test loss: ")
    state = load_checkpoint(tmp_path / "m" / "checkpoint.npz")
    onehot = np.eye(10, dtype=np.float32)[mnist.y_test]
    loss, acc = fnn.evaluate(state.params, mnist.x_test, onehot, activation="sigmoid", loss="mse")
    assert state.test_loss == loss and math.isnan(acc) and math.isnan(state.test_accuracy)
    assert f"{loss:.4g} on 10000 examples" in out


# ---------------------------------------------------------------- config, provenance, metrics
def test_config_reruns_bit_identically_and_flags_override_it(tmp_path, capsys):
    opts = [*TINY, "--epochs", 2, "--optimizer", "adam", "--lr", 0.003, "--hidden", 24,
            "--val-fraction", 0.2, "--seed", 3]
    assert run(capsys, *opts, "--out", tmp_path / "a")[0] == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["format"] == "fnn.run-config" and config["train"]["val_fraction"] == 0.2
    prov = config["provenance"]
    assert prov["fnn"] == fnn.__version__ and prov["numpy"] == np.__version__
    assert {"numba", "python", "platform", "blas", "git", "environment"} <= set(prov)
    assert ckpt(tmp_path / "a")[1]["provenance"]["numpy"] == np.__version__
    code, _, _ = run(capsys, "train", "--config", tmp_path / "a" / "config.json", "--quiet",
                     "--out", tmp_path / "b")
    assert code == 0
    a, b = ckpt(tmp_path / "a")[0], ckpt(tmp_path / "b")[0]
    assert same_params(a.params, b.params) and a.config == b.config
    assert np.array_equal(a.history.loss, b.history.loss)
    code, _, _ = run(capsys, "train", "--config", tmp_path / "a", "--seed", 4, "--epochs", 1,
                     "--quiet", "--out", tmp_path / "c")
    c = ckpt(tmp_path / "c")[0]
    assert code == 0 and c.config == a.config._replace(seed=4, epochs=1)


@pytest.mark.parametrize("content, message", [
    ("not json", "expected fnn's JSON run config, got an unreadable file"),
    ('{"epochs": 3}', "expected fnn's run config (a JSON object with a 'train' object)"),
    ('{"format": "other", "train": {}}', "expected format 'fnn.run-config' version 1"),
    ('{"train": {"epochs": 1, "lr_max": 2}}', "unknown keys ['lr_max'] in 'train'"),
    ('{"train": {}, "datset": "x"}', "unknown keys ['datset']"),
    ('{"train": {"epochs": 0}, "limit": 64}', "--epochs: expected an int >= 1, got 0"),
])
def test_bad_config_files_give_one_line_and_exit_2(content, message, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(content)
    code, out, err = run(capsys, "train", "--config", path, "--out", tmp_path / "out")
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_metrics_csv_has_a_row_per_evaluation_and_survives_a_resume(tmp_path, capsys):
    opts = [*TINY, "--epochs", 2, "--eval-every", 3, "--optimizer", "nesterov", "--lr", 0.05]
    assert run(capsys, *opts, "--out", tmp_path / "whole")[0] == 0
    rows = list(csv.DictReader((tmp_path / "whole" / "metrics.csv").open()))
    state = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")
    h = state.history
    val = [r for r in rows if r["split"] == "validation"]
    assert [int(r["step"]) for r in val] == h.eval_step.tolist()
    assert [float(r["loss"]) for r in val] == h.eval_loss.tolist()
    assert [float(r["accuracy"]) for r in val] == h.eval_accuracy.tolist()
    assert float(val[1]["train_loss"]) == pytest.approx(h.loss[:3].mean(), rel=1e-12)
    assert rows[-1]["split"] == "test" and float(rows[-1]["accuracy"]) == state.test_accuracy
    # Stopped mid-run and resumed: the file ends as the uninterrupted run's (times aside).
    assert run(capsys, *opts, "--epochs", 1, "--out", tmp_path / "cut")[0] == 0
    assert run(capsys, "train", "--resume", tmp_path / "cut", "--epochs", 2, "--quiet")[0] == 0
    resumed = list(csv.DictReader((tmp_path / "cut" / "metrics.csv").open()))

    def drop_time(rs):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]

    assert drop_time(resumed) == drop_time(rows)


# ---------------------------------------------------------------- data options and scaling
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's 8x8 digits stored as images of values 0..16, with other column and
    split names, in the Hugging Face layout."""
    sk = pytest.importorskip("sklearn.datasets")
    import io

    import datasets

    d = sk.load_digits()
    images, labels = d.images.astype(np.uint8), d.target.tolist()
    root = tmp_path_factory.mktemp("digits")
    (root / "data").mkdir()
    features = datasets.Features({"pixels": datasets.Image(),
                                  "digit": datasets.ClassLabel(num_classes=10)})
    for name, sl in (("fit", slice(0, 1500)), ("holdout", slice(1500, None))):
        blobs = []
        for img in images[sl]:
            buf = io.BytesIO()
            Image.fromarray(img, mode="L").save(buf, format="PNG")
            blobs.append({"bytes": buf.getvalue(), "path": None})
        datasets.Dataset.from_dict({"pixels": blobs, "digit": labels[sl]}, features=features
                                   ).to_parquet(str(root / "data" / f"{name}-00000-of-00001.parquet"))
    return root, images


def test_columns_splits_scaling_and_the_range_warning(digits, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    root, images = digits
    opts = ["train", "--dataset", root, "--image-column", "pixels", "--label-column", "digit",
            "--train-split", "fit", "--test-split", "holdout", "--epochs", 2, "--quiet"]
    code, out, err = run(capsys, *opts, "--out", tmp_path / "pixel")
    assert code == 0 and "on 297 examples (64-64-10" in out
    # (datasets may draw a progress bar here the first time it converts the files)
    assert ("fnn: warning: the training data's largest value is 16 but --scale pixel divides "
            "by 255, so the inputs only reach 0.063; try --scale 16") in err
    code, out, err = run(capsys, *opts, "--scale", "standardize", "--out", tmp_path / "std")
    assert code == 0 and "warning" not in err
    state, extra = ckpt(tmp_path / "std")
    # Statistics of the training part only: not the validation part, not the test split.
    train, _ = validation_split(1500, 1 / 12, 0)
    x = np.divide(images[:1500].reshape(1500, 64)[train], np.float32(255), dtype=np.float32)
    np.testing.assert_array_equal(np.array(extra["scaling"]["mean"], np.float32),
                                  x.mean(axis=0, dtype=np.float64).astype(np.float32))
    assert extra["image_shape"] == [8, 8]
    # eval applies the stored scaling: it reproduces the run's own test measurement.
    code, out, _ = run(capsys, "eval", tmp_path / "std")
    assert code == 0 and f"holdout: loss {state.test_loss:.4f}, accuracy " \
        f"{100 * state.test_accuracy:.2f}% on 297 examples" in out
    code, _, _ = run(capsys, *opts, "--scale", 16, "--out", tmp_path / "div")
    pixel_acc = ckpt(tmp_path / "pixel")[0].test_accuracy
    assert code == 0 and ckpt(tmp_path / "div")[0].test_accuracy > pixel_acc + 0.2
    # predict applies it too.
    png = tmp_path / "d.png"
    Image.fromarray(images[1600], mode="L").save(png)
    code, out, _ = run(capsys, "predict", tmp_path / "std", png, "--json")
    mean, std = (np.array(extra["scaling"][k], np.float32) for k in ("mean", "std"))
    x1 = (np.divide(images[1600].reshape(1, 64), np.float32(255), dtype=np.float32) - mean) / std
    assert code == 0 and json.loads(out)[0]["class"] == int(fnn.predict(state.params, x1)[0])


# ---------------------------------------------------------------- eval and predict
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    from fnn.cli import main

    assert main([*TINY, "--epochs", "2", "--out", str(out)]) == 0
    return out


def test_eval_reports_loss_accuracy_and_a_confusion_matrix(trained, tmp_path, capsys, mnist):
    state = load_checkpoint(trained / "checkpoint.npz")
    code, out, _ = run(capsys, "eval", trained, "--png", tmp_path / "c.png")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"test: loss {state.test_loss:.4f}, accuracy "
                               f"{100 * state.test_accuracy:.2f}% on 10000 examples")
    pred = fnn.predict(state.params, mnist.x_test)
    table = np.array([[int(v) for v in line.split()[1:11]] for line in lines[2:12]])
    truth = np.zeros((10, 10), dtype=int)
    np.add.at(truth, (mnist.y_test, pred), 1)
    assert np.array_equal(table, truth)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    code, out, _ = run(capsys, "eval", trained / "best.npz", "--split", "train")
    best = load_checkpoint(trained / "best.npz")
    acc = fnn.accuracy(best.params, mnist.x_train, mnist.y_train)
    assert code == 0 and out.startswith("train: loss ") and f"{100 * acc:.2f}% on 60000" in out
    assert (trained / "confusion-train.png").exists()


def test_predict_prints_class_and_probability_per_file(trained, tmp_path, capsys, mnist):
    state = load_checkpoint(trained / "checkpoint.npz")
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        pixels = np.rint(mnist.x_test[i].reshape(28, 28) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").convert("RGB").save(files[-1])  # colour: to gray
    code, out, _ = run(capsys, "predict", trained, *files)
    probs = fnn.losses.softmax(fnn.forward(state.params, mnist.x_test[:3]).astype(np.float64))
    assert code == 0 and out.splitlines() == [
        f"{f}: {int(np.argmax(p))} ({100 * p.max():.1f}%)" for f, p in zip(files, probs)]
    code, out, _ = run(capsys, "predict", trained, files[0], "--json")
    got = json.loads(out)
    assert got[0]["class"] == int(np.argmax(probs[0]))
    np.testing.assert_allclose(got[0]["probabilities"], probs[0], rtol=1e-6)


def test_bad_eval_and_predict_input_gives_one_line_and_exit_2(trained, tmp_path, capsys):
    big, text, deep = tmp_path / "big.png", tmp_path / "text.png", tmp_path / "deep.png"
    Image.new("L", (32, 28)).save(big)
    text.write_text("not an image")
    Image.new("I;16", (28, 28)).save(deep)
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    cases = [
        (["eval", tmp_path / "nothing"], "no such checkpoint file"),
        (["eval", tmp_path / "foreign.npz"], "not an fnn checkpoint"),
        (["eval", trained, "--split", "dev"], "split 'dev' not found"),
        (["predict", tmp_path / "nothing", big], "no such checkpoint file"),
        (["predict", trained, big], "expected 28x28 pixels (HxW, the training images' size), got 28x32"),
        (["predict", trained, text], "expected an image file Pillow can read"),
        (["predict", trained, deep], "got mode 'I;16'"),
        (["predict", trained, tmp_path / "missing.png"], "missing.png: no such file"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith("fnn: error: ") and message in err, (argv, err)


def test_saved_runs_from_python(trained, tmp_path):
    from fnn.runs import evaluate_saved, load_saved_run, predict_files

    run = load_saved_run(trained)
    r = evaluate_saved(run)
    assert (r.split, r.n) == ("test", 10000) and r.matrix.sum() == 10000
    assert (r.loss, r.accuracy) == (run.state.test_loss, run.state.test_accuracy)
    assert np.trace(r.matrix) == round(r.accuracy * 10000)
    with pytest.raises(ValueError, match=r"image .*x\.png: no such file"):
        predict_files(run, [tmp_path / "x.png"])
    with pytest.raises(fnn.CheckpointError, match="no such checkpoint file"):
        load_saved_run(tmp_path)
