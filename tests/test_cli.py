"""The command line, run in-process on tiny MNIST runs (--limit, one or two epochs)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from test_train import patch_backprop, same_run, step_by_step

import fnn.checkpoint
import fnn.cli
import fnn.train
from fnn.checkpoint import load_checkpoint
from fnn.cli import main
from fnn.train import TrainConfig

pytest.importorskip("datasets")
pytest.importorskip("matplotlib")

TINY = ["train", "--limit", "640", "--batch-size", "64", "--quiet"]  # 10 steps an epoch


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def same_params(a, b):
    return all(np.array_equal(x.w, y.w) and np.array_equal(x.b, y.b) for x, y in zip(a, b))


def test_train_writes_checkpoint_history_config_and_plot(tmp_path, capsys):
    code, out, err = run(capsys, *TINY, "--epochs", 2, "--eval-every", 4, "--out", tmp_path)
    assert code == 0 and err == ""
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == len(history["lr"]) == 20
    assert history["eval_step"] == [0, 4, 8, 10, 12, 16, 20]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["sizes"] == [784, 64, 10] and config["limit"] == 640
    assert config["train"]["optimizer"] == "sgd" and config["dataset"] is None
    state = load_checkpoint(tmp_path / "checkpoint.npz", sizes=(784, 64, 10))
    assert state.finished and state.step == 20
    assert state.history.loss.tolist() == history["loss"]
    png = (tmp_path / "training.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # The test split is measured once, at the end; the evaluations were on validation.
    accuracy = 100 * state.test_accuracy
    assert out.startswith(f"final test accuracy: {accuracy:.2f}% on 10000 examples (784-64-10")
    assert "2 epochs, 20 steps" in out and "best val_loss" in out
    assert len(out.splitlines()) == 1
    assert state.test_accuracy != state.history.eval_accuracy[-1]
    assert (history["test_loss"], history["test_accuracy"]) == (state.test_loss,
                                                                state.test_accuracy)


def test_progress_bar_on_stderr_with_loss_and_accuracy(tmp_path, capsys):
    argv = [a for a in TINY if a != "--quiet"]
    code, out, err = run(capsys, *argv, "--epochs", 1, "--hidden", "32,16", "--out", tmp_path)
    assert code == 0 and len(out.splitlines()) == 1 and "(784-32-16-10" in out
    assert "10/10" in err and "loss=" in err and "val_acc=" in err and "test_acc" not in err
    code, out, err = run(capsys, *argv, "--epochs", 1, "--val-fraction", 0, "--out", tmp_path)
    assert code == 0 and "test_acc=" in err  # no validation part: the notebook's way


def test_no_arguments_train_the_notebook_net_on_the_shipped_mnist(tmp_path, monkeypatch, capsys):
    seen = {}
    real_fit, real_load = fnn.cli.fit, fnn.cli._load_data

    def load(run, dtype, quiet, **kwargs):
        seen["data"] = (run["dataset"], dtype, run["limit"])
        return real_load({**run, "limit": 128}, dtype, quiet, **kwargs)  # keep it quick

    def spy_fit(params, data, config, **kwargs):
        seen["config"] = config
        return real_fit(params, data, config._replace(epochs=1), **kwargs)

    monkeypatch.setattr(fnn.cli, "_load_data", load)
    monkeypatch.setattr(fnn.cli, "fit", spy_fit)
    monkeypatch.chdir(tmp_path)
    assert main([]) == 0
    assert seen["data"] == (None, "float32", None)  # None: fnn.data's shipped copy
    assert seen["config"] == TrainConfig(sizes=(784, 64, 10), epochs=10, batch_size=64,
                                         lr=0.1, optimizer="sgd", backend=fnn.get_backend())
    assert "final test accuracy" in capsys.readouterr().out
    assert (tmp_path / "runs" / "train" / "checkpoint.npz").exists()
    assert main(["--epochs", "1", "--quiet"]) == 0  # options without a command: train


def test_resume_continues_bit_identically(tmp_path, capsys):
    opts = [*TINY, "--optimizer", "adam", "--lr", "0.003", "--schedule", "exp", "--seed", 7]
    assert run(capsys, *opts, "--epochs", 2, "--out", tmp_path / "whole")[0] == 0
    assert run(capsys, *opts, "--epochs", 1, "--out", tmp_path / "part")[0] == 0
    code, out, _ = run(capsys, "train", "--resume", tmp_path / "part", "--epochs", 2, "--quiet")
    assert code == 0 and str(tmp_path / "part") in out
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")
    resumed = load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert resumed.step == whole.step == 20
    assert same_params(resumed.params, whole.params)
    assert np.array_equal(resumed.history.loss, whole.history.loss)
    history = json.loads((tmp_path / "part" / "history.json").read_text())
    assert history["eval_accuracy"] == whole.history.eval_accuracy.tolist()


def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_identically(tmp_path, monkeypatch, capsys):
    opts = [*TINY, "--epochs", 2, "--optimizer", "nesterov", "--lr", "0.05"]
    assert run(capsys, *opts, "--out", tmp_path / "whole")[0] == 0
    patch_backprop(monkeypatch, 14, "ctrl-c")  # Ctrl-C during the 14th step
    code, out, err = run(capsys, *opts, "--out", tmp_path / "cut")
    assert code == 130 and out == ""
    assert f"interrupted after step 13; checkpoint saved to {tmp_path / 'cut'}" in err
    assert f"fnn train --resume {tmp_path / 'cut'}" in err
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.npz")
    assert (state.step, state.epoch, state.batch) == (13, 1, 3)
    assert len(json.loads((tmp_path / "cut" / "history.json").read_text())["loss"]) == 13
    monkeypatch.undo()
    assert run(capsys, "train", "--resume", tmp_path / "cut", "--quiet")[0] == 0
    whole = load_checkpoint(tmp_path / "whole" / "checkpoint.npz")
    resumed = load_checkpoint(tmp_path / "cut" / "checkpoint.npz")
    assert same_params(resumed.params, whole.params)


def test_train_runs_compiled_chunks_with_the_outputs_of_the_step_loop(tmp_path, monkeypatch,
                                                                      capsys):
    # The progress bar, checkpoints every 3 steps, evaluations every 4, metrics.csv and
    # best.npz: fnn train takes fit's compiled path, and every output (the checkpoints
    # written on the way too) is the loop over steps', wall times aside.
    chunks, saves = [], []
    real_steps, real_save = fnn.train.run_steps, fnn.checkpoint.save_checkpoint

    def count_steps(*args):
        if threading.current_thread() is threading.main_thread():  # not the warm-up's
            chunks.append(args[6].shape[0])
        return real_steps(*args)

    def record_save(path, state, **kwargs):
        saves.append((path.name, state.step))
        return real_save(path, state, **kwargs)

    monkeypatch.setattr(fnn.train, "run_steps", count_steps)
    monkeypatch.setattr(fnn.checkpoint, "save_checkpoint", record_save)
    argv = [a for a in TINY if a != "--quiet"]
    opts = [*argv, "--epochs", 2, "--optimizer", "momentum", "--eval-every", 4,
            "--checkpoint-every", 3, "--dropout", 0.2]
    code, _, err = run(capsys, *opts, "--out", tmp_path / "compiled")
    assert code == 0 and "20/20" in err and "loss=" in err and "val_acc=" in err
    assert sum(chunks) == 20 and len(chunks) < 20
    compiled_saves = list(saves)
    saves.clear()
    step_by_step(monkeypatch)
    assert run(capsys, *opts, "--out", tmp_path / "steps")[0] == 0
    assert saves == compiled_saves
    assert [s for name, s in saves if name == "checkpoint.npz"] == [3, 6, 9, 10, 12, 15, 18, 20]
    for name in ("checkpoint.npz", "best.npz"):
        a, b = (load_checkpoint(tmp_path / run_dir / name) for run_dir in ("compiled", "steps"))
        same_run(a, b)
        assert np.array_equal([a.test_loss, a.test_accuracy], [b.test_loss, b.test_accuracy],
                              equal_nan=True)  # (nan in best.npz: saved mid-run)
    rows = [[{k: v for k, v in row.items() if k != "elapsed_s"}
             for row in csv.DictReader(io.StringIO((tmp_path / run_dir / "metrics.csv").read_text()))]
            for run_dir in ("compiled", "steps")]
    assert rows[0] == rows[1] and [r["step"] for r in rows[0]][:4] == ["0", "4", "8", "10"]
    histories = [json.loads((tmp_path / run_dir / "history.json").read_text())
                 for run_dir in ("compiled", "steps")]
    for history in histories:
        del history["eval_time"]
    assert histories[0] == histories[1]


def test_a_first_run_says_once_that_it_compiles_and_a_warm_one_says_nothing(tmp_path, capsys):
    numba = pytest.importorskip("numba")
    stream = io.StringIO()
    with fnn.cli._announce_compiling(stream):
        add = numba.njit(lambda a, b: a + b)  # not cached: compiles here, twice
        add(1, 2), add(1.0, 2.0)
    assert stream.getvalue() == fnn.cli.COMPILING + "\n"
    stream = io.StringIO()
    with fnn.cli._announce_compiling(stream):
        add(3, 4)  # compiled already
    assert stream.getvalue() == ""
    argv = [a for a in TINY if a != "--quiet"]
    assert run(capsys, *argv, "--epochs", 1, "--out", tmp_path)[0] == 0  # kernels loaded
    code, _, err = run(capsys, *argv, "--epochs", 1, "--out", tmp_path)
    assert code == 0 and "compiling" not in err and "1/1" in err  # (the bar is there)


def test_train_warms_its_kernels_up_while_the_data_loads(tmp_path, monkeypatch, capsys):
    # The warm-up thread runs during the data load (a first run compiles meanwhile), the
    # run then waits for it; --quiet has none.
    seen, warming = [], threading.Event()
    real_load, real_fit = fnn.cli._load_data, fnn.cli.fit

    def load(*args):
        seen.append(warming.wait(timeout=3))  # the warm-up's fit starts while this waits
        warming.clear()
        return real_load(*args)

    def fit(*args, **kwargs):
        if threading.current_thread().name == "fnn-warm-up":
            warming.set()
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fnn.cli, "_load_data", load)
    monkeypatch.setattr(fnn.cli, "fit", fit)
    argv = [a for a in TINY if a != "--quiet"]
    assert run(capsys, *argv, "--epochs", 1, "--out", tmp_path / "a")[0] == 0
    assert not any(t.name == "fnn-warm-up" for t in threading.enumerate())  # waited for
    assert run(capsys, *TINY, "--epochs", 1, "--out", tmp_path / "b")[0] == 0
    assert seen == [True, False]


def test_divergence_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    patch_backprop(monkeypatch, 7, "nan")
    code, _, err = run(capsys, *TINY, "--epochs", 1, "--checkpoint-every", 2, "--out", tmp_path)
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("fnn: error: training loss is nan at step 6")
    assert "the last good checkpoint is" in err
    assert load_checkpoint(tmp_path / "checkpoint.npz").step == 6


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "argument --epochs: expected an int >= 1, got 0"),
    (["train", "--epochs", "ten"], "argument --epochs: expected an int, got 'ten'"),
    (["train", "--hidden", "64,0"], "argument --hidden: expected positive widths"),
    (["train", "--hidden", "64x"], "argument --hidden: expected comma-separated widths"),
    (["train", "--lr", "-1"], "argument --lr: expected a value in (0.0, inf), got -1"),
    (["train", "--momentum", "1.5"], "argument --momentum"),
    (["train", "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
    (["train", "--backend", "cuda"], "argument --backend: invalid choice"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["check", "--mode", "fast"], "argument --mode: invalid choice"),
    (["train", "--optimizer", "momentum", "--momentum", "0", "--limit", "64"],
     "--momentum: optimizer 'momentum' needs momentum > 0"),
    (["train", "--limit", "64", "--batch-size", "100", "--dataset", "/nonexistent/mnist"],
     "source: no folder /nonexistent/mnist"),
    (["train", "--resume", "/nonexistent/run"], "no such checkpoint file"),
])
def test_bad_options_give_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but never into the checkout
    code, out, err = run(capsys, *argv)
    assert list(tmp_path.iterdir()) == []
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("fnn: error: "), err
    assert message in err


def test_bad_resumes_give_one_line_and_exit_2(tmp_path, capsys):
    assert run(capsys, *TINY, "--epochs", 1, "--out", tmp_path)[0] == 0
    ckpt = tmp_path / "checkpoint.npz"
    code, _, err = run(capsys, "train", "--resume", tmp_path, "--lr", "0.5", "--seed", 1)
    assert code == 2 and len(err.splitlines()) == 1
    assert "--lr, --seed cannot change when resuming" in err
    code, _, err = run(capsys, "train", "--resume", ckpt, "--limit", 100)
    assert code == 2 and "--limit cannot change when resuming (the run used 640)" in err
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    code, _, err = run(capsys, "train", "--resume", tmp_path)
    assert code == 2 and len(err.splitlines()) == 1 and "truncated or corrupted" in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "train", "--help")
    assert code == 0 and "--resume" in out and "--hidden" in out


def test_check_command_passes_and_fails(monkeypatch, capsys):
    gradcheck = pytest.importorskip("fnn.gradcheck")
    code, out, _ = run(capsys, "check", "--sizes", "7,6,5", "--batch", 3, "--seed", 2)
    assert code == 0 and out.strip()
    real = gradcheck.check_gradients

    def doubled(params, x, y, **kwargs):  # a planted bug: gradients twice too large
        def grad_fn(p, xx, yy, **kw):
            value, grads = fnn.backprop(p, xx, yy, **kw)
            return value, tuple(type(g)(2 * g.w, 2 * g.b) for g in grads)
        return real(params, x, y, grad_fn=grad_fn, **kwargs)

    monkeypatch.setattr(gradcheck, "check_gradients", doubled)
    code, out, _ = run(capsys, "check", "--sizes", "7,6,5", "--batch", 3)
    assert code == 1 and out.strip()


def test_python_dash_m_and_light_imports():
    # The entry point runs as a module, and importing the training modules does not pull
    # in the heavy optional dependencies (they load when a command needs them).
    code = textwrap.dedent("""
        import sys
        import fnn.cli, fnn.plot, fnn.train, fnn.checkpoint, fnn.optim
        heavy = {"matplotlib", "tqdm", "datasets", "pyarrow"} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "fnn", "train", "--epochs", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "fnn: error: argument --epochs: expected an int >= 1, got 0 (see fnn train --help)"
    ]


# ---------------------------------------------------------------- decoding aside (first run)
# `python -m fnn train` with `_decode_aside` watched: it prints the decoder's pid (or None).
DECODE_SPY = textwrap.dedent("""
    import sys
    import fnn.cli
    real = fnn.cli._decode_aside
    def spy(run):
        decoder = real(run)
        print("decoder", None if decoder is None else decoder.pid, file=sys.stderr, flush=True)
        return decoder
    fnn.cli._decode_aside = spy
    sys.exit(fnn.cli.main(sys.argv[1:]))
""")


def spied_train(tmp_path, *argv, **popen):
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    return subprocess.Popen([sys.executable, "-c", DECODE_SPY, "train", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **popen)


def decoder_pid(err: str):
    line = next(l for l in err.splitlines() if l.startswith("decoder "))
    return None if line == "decoder None" else int(line.split()[1])


def array_entries(tmp_path):
    root = tmp_path / "hf" / "fnn-arrays"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.fixture
def digits_folder(tmp_path):
    from test_data import png, random_images, write_folder

    pix, labels = random_images(3, 96, 8, 8), [i % 10 for i in range(96)]
    return write_folder(tmp_path / "digits", {"train": ([png(p) for p in pix[:80]], labels[:80]),
                                              "test": ([png(p) for p in pix[80:]], labels[80:])})


def test_a_first_run_decodes_its_images_in_a_forked_process(tmp_path, digits_folder):
    # A first run (nothing in the array cache) decodes in a child while its kernels load
    # or compile, then reads the child's cache entries: the run is the one it would have
    # been (an in-process load, --quiet, gives the same bits); a second run forks nothing.
    opts = ["--dataset", digits_folder, "--epochs", 2, "--batch-size", 16]
    first = spied_train(tmp_path, *opts, "--out", tmp_path / "a")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert decoder_pid(err) is not None and "Traceback" not in err
    assert len(array_entries(tmp_path)) == 2  # one per split, written by the child
    again = spied_train(tmp_path, *opts, "--out", tmp_path / "b")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0 and decoder_pid(err) is None
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-quiet")}
    subprocess.run([sys.executable, "-m", "fnn", "train", *map(str, opts), "--quiet", "--out",
                    tmp_path / "c"], check=True, env=env, capture_output=True)
    a, b, c = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in "abc")
    assert same_params(a.params, c.params) and same_params(b.params, c.params)


def test_no_process_to_fork_leaves_the_decode_to_this_process(tmp_path, digits_folder,
                                                             monkeypatch):
    import multiprocessing.context

    def refuse(self):
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork's EAGAIN

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", refuse)
    run_opts = {**fnn.cli.DATA_DEFAULTS, "dataset": str(digits_folder)}
    assert fnn.cli._decode_aside(run_opts) is None


def test_a_failed_decode_aside_reports_once_from_the_parent(tmp_path, digits_folder):
    path = digits_folder / "data" / "test-00000-of-00001.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    proc = spied_train(tmp_path, "--dataset", digits_folder, "--out", tmp_path / "a")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and out == "", err
    assert decoder_pid(err) is not None  # the child ran, failed, and said nothing
    errors = [l for l in err.splitlines() if l.startswith("fnn: error")]
    assert len(errors) == 1 and errors[0].startswith(
        "fnn: error: source: could not read the data files"), err
    # (datasets logs the bad file once, from the parent's load: the child's output is muted)
    assert err.count("Failed to read file") == 1 and "Traceback" not in err
    assert array_entries(tmp_path) == [] and not (tmp_path / "a").exists()


def test_ctrl_c_while_the_child_decodes_stops_both_and_leaves_no_partial_entry(tmp_path):
    # As a terminal sends it: SIGINT to the whole process group, here while the child
    # decodes the shipped MNIST (about 3 s). Exit 130, no traceback from either process,
    # the child gone, and the array cache holds whole entries or none (no temporary left).
    proc = spied_train(tmp_path, "--out", tmp_path / "run", start_new_session=True)
    err = ""
    while not err.rstrip().endswith(tuple("0123456789")) and "decoder None" not in err:
        err += proc.stderr.readline()
    pid = decoder_pid(err)
    assert pid is not None
    time.sleep(0.8)
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    err += rest
    assert proc.returncode == 130 and "fnn: interrupted" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}")
    rows = []
    for entry in array_entries(tmp_path):
        assert not entry.name.startswith(".")
        x, y = np.load(entry / "x.npy"), np.load(entry / "y.npy")
        assert len(x) == len(y)
        rows.append(len(x))
    assert 60000 not in rows  # stopped before it had decoded the training split
