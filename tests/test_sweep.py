"""fnn.sweep and `fnn sweep`: tiny sweeps (640 training examples, 2 epochs, small nets)
on the default process pool, a Dask LocalCluster and an in-process thread pool; each run
checked bit for bit against a sequential `fit` on the same split."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn.checkpoint import load_checkpoint
from fnn.cli import main
from fnn.sweep import dask_executor, parse_seeds, sweep

pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parent.parent
N_TRAIN, N_VAL = 640, 53  # fit's validation part: round(640 / 12) = 53, seeded
BASE = fnn.TrainConfig(epochs=2, batch_size=64)
GRID = {"hidden": [(16,), (8, 8)], "lr": [0.05]}


@pytest.fixture(scope="module")
def data():
    d = fnn.load_mnist()
    return fnn.Dataset(d.x_train[:N_TRAIN], d.y_train[:N_TRAIN], d.x_test[:500], d.y_test[:500])


def alone(data, hidden, lr, seed, epochs=2):
    """The run as a user would make it alone: fit holds out its validation part (the
    default val_fraction 1/12) and measures the test split at the end."""
    config = BASE._replace(sizes=(784, *hidden, 10), lr=lr, seed=seed, epochs=epochs)
    return fnn.fit(None, data, config)


def assert_same_run(run_dir, expected, data):
    """The run folder's checkpoint holds exactly `expected`'s params and history."""
    state = load_checkpoint(run_dir / "checkpoint.npz")
    assert state.config == expected.config and state.finished
    for got, want in zip(state.params, expected.params):
        assert got.w.tobytes() == want.w.tobytes() and got.b.tobytes() == want.b.tobytes()
    for field in ("loss", "lr", "eval_step", "eval_loss", "eval_accuracy"):
        assert getattr(state.history, field).tobytes() == getattr(expected.history,
                                                                  field).tobytes(), field
    history = json.loads((run_dir / "history.json").read_text())
    assert history["loss"] == expected.history.loss.tolist()
    config = json.loads((run_dir / "config.json").read_text())
    assert tuple(config["train"]["sizes"]) == expected.config.sizes


def check_sweep(result, data, out):
    """Every run of GRID x seeds (0, 1) equals its sequential fit; the files agree."""
    assert [r.name for r in result.runs] == [
        "hidden=16,lr=0.05,seed=0", "hidden=16,lr=0.05,seed=1",
        "hidden=8x8,lr=0.05,seed=0", "hidden=8x8,lr=0.05,seed=1"]
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert [r["run"] for r in rows] == [r.name for r in result.runs]
    for run, row in zip(result.runs, rows):
        assert run.status == "done", run.error
        expected = alone(data, run.point["hidden"], 0.05, run.config.seed)
        assert_same_run(out / run.name, expected, data)
        # The metrics are those of the final params, on the hold-out and the test set.
        _, held = fnn.validation_split(N_TRAIN, 1 / 12, run.config.seed)
        assert held.size == N_VAL
        val = fnn.evaluate(expected.params, data.x_train[held], data.y_train[held])
        test = fnn.evaluate(expected.params, data.x_test, data.y_test)
        assert test == (expected.test_loss, expected.test_accuracy)
        assert (run.val_loss, run.val_accuracy) == val
        assert (run.test_loss, run.test_accuracy) == test
        assert val[1] == expected.history.eval_accuracy[-1]
        assert float(row["test_accuracy"]) == test[1] and row["seed"] == str(run.config.seed)
        assert row["hidden"] == ("16" if run.point["hidden"] == (16,) else "8x8")
        assert run.steps == 2 * math.ceil((N_TRAIN - N_VAL) / 64) and run.seconds > 0
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [s["hidden"] for s in summary] == ["16", "8x8"]
    for s, c in zip(summary, result.summary):
        accs = [r.test_accuracy for r in result.runs if r.point == c.point]
        assert c.runs == 2 and c.failed == 0
        assert c.test_accuracy.mean == pytest.approx(np.mean(accs), abs=1e-15)
        assert c.test_accuracy.std == pytest.approx(np.std(accs, ddof=1), abs=1e-15)
        assert (c.test_accuracy.min, c.test_accuracy.max) == (min(accs), max(accs))
        assert float(s["test_accuracy_mean"]) == c.test_accuracy.mean
    md = (out / "summary.md").read_text()
    assert f"{100 * result.summary[0].test_accuracy.mean:.2f} ± " in md
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_process_pool_runs_equal_sequential_fits(data, tmp_path):
    result = sweep(BASE, GRID, [0, 1], out=tmp_path, data=data, jobs=2)
    check_sweep(result, data, tmp_path)
    assert multiprocessing.active_children() == []  # the pool is gone


def _fresh_python(script: str, tmp_path: Path) -> dict:
    """Run `script` in a new interpreter (no thread of an earlier test, which would make
    sweep spawn instead of fork) and return the JSON object it prints last."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_spawned_workers_give_the_same_runs(data, tmp_path, monkeypatch):
    module = sys.modules["fnn.sweep"]
    monkeypatch.setattr(module, "_start_method", lambda: "spawn")
    result = sweep(BASE, GRID, [0, 1], out=tmp_path, data=data, jobs=2)
    check_sweep(result, data, tmp_path)


def test_workers_fork_only_where_it_is_safe(tmp_path):
    pytest.importorskip("threadpoolctl")
    got = _fresh_python("""
        import importlib.util, json, sys, threading
        import fnn
        module = sys.modules["fnn.sweep"]  # fnn.sweep is the function
        methods = [module._start_method()]  # no other thread: fork
        stop = threading.Event()
        other = threading.Thread(target=stop.wait)
        other.start()
        methods.append(module._start_method())  # a lock the thread holds would stay held
        stop.set()
        other.join()
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name: None if name == "threadpoolctl" else real(name)
        methods.append(module._start_method())  # nothing to cut the inherited BLAS pool
        print(json.dumps(methods))
    """, tmp_path)
    assert got == ["fork", "spawn", "spawn"]


def test_forked_workers_train_on_the_parents_loaded_data(tmp_path):
    # data=None: the sweep loads the shipped MNIST once; forked workers must not load it
    # again (a load in a worker would write its pid into the log).
    got = _fresh_python("""
        import json, os, sys
        from pathlib import Path
        import fnn
        module = sys.modules["fnn.sweep"]  # fnn.sweep is the function
        tmp = Path(sys.argv[1])
        real = module._load

        def load(*args):
            with (tmp / "loads.txt").open("a") as f:
                f.write(f"{os.getpid()}\\n")
            return real(*args)

        module._load = load
        method = module._start_method()
        config = fnn.TrainConfig(epochs=1, batch_size=64, sizes=(784, 8, 10))
        result = module.sweep(config, {"lr": [0.05]}, [0, 1], out=tmp / "out", limit=256,
                              jobs=2)
        print(json.dumps({"method": method, "pid": os.getpid(),
                          "loads": (tmp / "loads.txt").read_text().split(),
                          "runs": [[r.name, r.status, r.test_accuracy] for r in result.runs]}))
    """, tmp_path)
    assert got["method"] == "fork"
    assert [status for _, status, _ in got["runs"]] == ["done", "done"]
    assert got["loads"] == [str(got["pid"])]
    d = fnn.load_mnist()
    config = BASE._replace(sizes=(784, 8, 10), epochs=1)
    alone = fnn.fit(None, (d.x_train[:256], d.y_train[:256], d.x_test, d.y_test),
                    config._replace(lr=0.05, seed=1))
    name, _, accuracy = got["runs"][1]
    assert accuracy == alone.test_accuracy
    assert_same_run(tmp_path / "out" / name, alone, None)


def test_dask_local_cluster_runs_equal_sequential_fits(data, tmp_path):
    pytest.importorskip("distributed")
    with dask_executor("local", n_workers=2) as executor:
        result = sweep(BASE, GRID, [0, 1], out=tmp_path, data=data, executor=executor)
    check_sweep(result, data, tmp_path)


def test_unreachable_scheduler_is_a_clear_error_within_seconds():
    pytest.importorskip("distributed")
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"dask: expected a reachable Dask scheduler, got "
                                         r"'tcp://127.0.0.1:9'"), \
            dask_executor("tcp://127.0.0.1:9", timeout=2):
        pass
    assert time.monotonic() - t0 < 10


def test_rerun_skips_finished_runs_and_redoes_changed_ones(data, tmp_path):
    with ThreadPoolExecutor(1) as pool:
        first = sweep(BASE, GRID, [0], out=tmp_path, data=data, executor=pool)
        ckpt = tmp_path / first.runs[0].name / "checkpoint.npz"
        mtime = ckpt.stat().st_mtime_ns
        again = sweep(BASE, GRID, [0], out=tmp_path, data=data, executor=pool, warm=False)
        assert [r.status for r in again.runs] == ["skipped", "skipped"]
        assert again.runs == tuple(r._replace(status="skipped") for r in first.runs)
        assert ckpt.stat().st_mtime_ns == mtime
        # Tuple-valued fields (per-layer dropout) are skipped too once finished.
        drop = {"dropout": [(0.0, 0.5)]}
        base = BASE._replace(sizes=(784, 16, 10))
        sweep(base, drop, [0], out=tmp_path / "drop", data=data, executor=pool, warm=False)
        rerun = sweep(base, drop, [0], out=tmp_path / "drop", data=data, executor=pool)
        assert [r.status for r in rerun.runs] == ["skipped"]
        # Another base config (3 epochs) in the same folders: trained anew, not skipped.
        longer = sweep(BASE._replace(epochs=3), GRID, [0], out=tmp_path, data=data,
                       executor=pool, warm=False)
        assert [r.status for r in longer.runs] == ["done", "done"]
        assert_same_run(tmp_path / longer.runs[0].name, alone(data, (16,), 0.05, 0, epochs=3),
                        data)
        # Other data (fewer examples) in the same folders: not skipped either.
        fewer = fnn.Dataset(data.x_train[:320], data.y_train[:320], data.x_test, data.y_test)
        other = sweep(BASE._replace(epochs=3), GRID, [0], out=tmp_path, data=fewer,
                      executor=pool, warm=False)
        assert [r.status for r in other.runs] == ["done", "done"]


def test_a_failing_run_is_recorded_and_the_others_go_on(data, tmp_path):
    grid = {"lr": [0.05, 1e30]}  # lr 1e30 diverges
    with ThreadPoolExecutor(1) as pool:
        result = sweep(BASE._replace(sizes=(784, 16, 10)), grid, [0, 1], out=tmp_path,
                       data=data, executor=pool)
    assert [r.status for r in result.runs] == ["done", "done", "failed", "failed"]
    assert result.runs[2].error.startswith("TrainingDiverged: training loss is")
    assert math.isnan(result.runs[2].test_accuracy)
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert rows[3]["status"] == "failed" and "TrainingDiverged" in rows[3]["error"]
    assert [(c.runs, c.failed) for c in result.summary] == [(2, 0), (0, 2)]
    assert "| 1e+30 | 0/2 (2 failed) | n/a |" in (tmp_path / "summary.md").read_text()


def test_ctrl_c_stops_the_workers_and_keeps_finished_runs(data, tmp_path):
    seen = []

    def interrupt(run):  # Ctrl-C arrives in the parent once the first run has finished
        seen.append(run)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(BASE, {"hidden": [(16,), (8, 8), (12,)]}, [0, 1], out=tmp_path, data=data,
              jobs=2, on_run=interrupt)
    assert multiprocessing.active_children() == []
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [r["run"] for r in rows] == [seen[0].name]
    hidden = seen[0].point["hidden"]
    assert_same_run(tmp_path / seen[0].name, alone(data, hidden, 0.1, seen[0].config.seed), data)


def test_killed_sweep_resumes_to_the_same_results(data, tmp_path):
    # 20 epochs, a checkpoint at each epoch end, one worker: long enough to kill mid-way.
    argv = ["sweep", "--grid", "hidden=16,8x8", "--seeds", "0-1", "--jobs", "1", "--limit",
            str(N_TRAIN), "--set", "epochs=20", "--checkpoint-every", "0", "--quiet",
            "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fnn", *argv], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    names = ["hidden=16,seed=0", "hidden=16,seed=1", "hidden=8x8,seed=0", "hidden=8x8,seed=1"]
    deadline = time.monotonic() + 120
    while not ((tmp_path / names[0] / "result.json").exists()
               and (tmp_path / names[1] / "checkpoint.npz").exists()):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, as a crash would
    proc.wait()
    assert not (tmp_path / names[-1] / "result.json").exists()

    assert main(argv) == 0
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "runs.csv").open())}
    assert rows[names[0]]["status"] == "skipped"
    assert rows[names[1]]["status"] in ("resumed", "skipped")
    assert rows[names[-1]]["status"] == "done"
    for name in names:
        hidden = (16,) if "=16," in name else (8, 8)
        seed = int(name[-1])
        config = fnn.TrainConfig(sizes=(784, *hidden, 10), epochs=20, seed=seed)
        expected = fnn.fit(None, data, config)
        assert_same_run(tmp_path / name, expected, data)
        assert float(rows[name]["val_accuracy"]) == expected.history.eval_accuracy[-1]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("grid, error, match", [
    ({}, ValueError, r"grid: expected at least one key with values, got an empty grid"),
    ({"widths": [1]}, ValueError, r"grid: unknown key 'widths'"),
    ({"seed": [1, 2]}, ValueError, r"grid\['seed'\]: the seeds go in the `seeds` argument"),
    ({"lr": []}, ValueError, r"grid\['lr'\]: expected at least one value, got none"),
    ({"lr": 0.1}, TypeError, r"grid\['lr'\]: expected a list of values, got float 0.1"),
    ({"lr": [0.1, -1.0]}, ValueError,
     r"grid\[lr=-1.0\]: config.lr: expected a value in \(0.0, inf\), got -1.0"),
    ({"optimizer": ["sgd", "rmsprop"]}, ValueError,
     r"grid\[optimizer=rmsprop\]: config.optimizer: expected one of"),
    ({"hidden": [(16,), (0,)]}, ValueError,
     r"grid\[hidden=0\]: config.sizes\[1\]: expected a positive width, got 0"),
    ({"hidden": [(16,)], "sizes": [(784, 10)]}, ValueError, r"expected 'hidden' or 'sizes'"),
    ({"sizes": [(100, 10)]}, ValueError,
     r"grid\[sizes=100x10\]: config.sizes\[0\]: expected the data's 784 features, got 100"),
])
def test_bad_grid_is_refused_before_any_run(data, tmp_path, grid, error, match):
    with pytest.raises(error, match=match):
        sweep(BASE, grid, [0], out=tmp_path / "out", data=data, jobs=1)
    assert not (tmp_path / "out").exists()  # nothing started


@pytest.mark.parametrize("seeds, error, match", [
    ([], ValueError, r"seeds: expected at least one seed, got an empty sequence"),
    (range(0), ValueError, r"seeds: expected at least one seed"),
    ([0, 0], ValueError, r"seeds: expected distinct seeds, got \[0, 0\]"),
    ([-1], ValueError, r"seeds\[0\]: expected an int >= 0, got -1"),
    ("0-4", TypeError, r"seeds: expected a sequence of ints"),
])
def test_bad_seeds_are_refused(data, tmp_path, seeds, error, match):
    with pytest.raises(error, match=match):
        sweep(BASE, GRID, seeds, out=tmp_path, data=data, jobs=1)


def test_other_bad_arguments(data, tmp_path):
    with pytest.raises(TypeError, match=r"executor: expected a concurrent.futures.Executor"):
        sweep(BASE, GRID, [0], out=tmp_path, data=data, executor="dask")
    with pytest.raises(ValueError, match=r"grid\[hidden=16 lr=0.05\]: val_fraction: expected "
                       r"a fraction that holds out between 1 and 639"):
        sweep(BASE._replace(val_fraction=0.9999), GRID, [0], out=tmp_path, data=data)
    with pytest.raises(TypeError, match=r"data: expected an fnn.Dataset"):
        sweep(BASE, GRID, [0], out=tmp_path, data=(data.x_train, data.y_train))
    with pytest.raises(TypeError, match=r"config: expected an fnn.train.TrainConfig"):
        sweep({"lr": 0.1}, GRID, [0], out=tmp_path, data=data)


def test_parse_seeds():
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("3") == (3,)
    assert parse_seeds("0,2-3,9") == (0, 2, 3, 9)
    assert parse_seeds("4-3") == ()
    with pytest.raises(ValueError, match=r"seeds: expected seeds such as 0-4 or 0,1,2, got 'a'"):
        parse_seeds("a")


@pytest.mark.parametrize("argv, message", [
    (["--grid", "width=1,2"], "--grid: unknown key 'width'; expected one of ('hidden', 'sizes'"),
    (["--grid", "seed=1,2"], "--grid: unknown key 'seed' (use --seeds)"),
    (["--grid", "lr"], "--grid: expected KEY=VALUE,..., got 'lr'"),
    (["--grid", "lr=0.1,x"], "--grid lr: expected a number, got 'x'"),
    (["--grid", "lr=0.1,-2"], "fnn: error: grid[lr=-2.0]: config.lr: expected a value in (0.0, inf), got -2.0"),
    (["--grid", "hidden=64,0"], "--grid hidden: expected positive widths, got '0'"),
    (["--grid", "lr=0.1", "--seeds", "3-1"], "--seeds: expected at least one seed, got '3-1'"),
    (["--grid", "lr=0.1", "--seeds", "x"], "--seeds: expected seeds such as 0-4"),
    ([], "--grid: expected at least one KEY=V1,V2,..."),
    (["--grid", "lr=0.1", "--set", "lr=0.2"], "--set lr: also given in --grid"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code = main(["sweep", *argv, "--limit", "64", "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert message in err and err.startswith("fnn: error: ")
    assert not (tmp_path / "out").exists()


def test_cli_unreachable_scheduler(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(sys.modules["fnn.sweep"], "_DASK_TIMEOUT", 1.0)  # the default is 5 s
    code = main(["sweep", "--grid", "lr=0.1", "--seeds", "0", "--limit", "64", "--dask",
                 "tcp://127.0.0.1:9", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "fnn: error: dask: expected a reachable Dask scheduler" in err


def _worker_threads():
    from threadpoolctl import threadpool_info

    return ([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"],
            {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                           "NUMBA_NUM_THREADS")})


def test_pool_workers_run_one_blas_thread_each():
    pytest.importorskip("threadpoolctl")
    module = sys.modules["fnn.sweep"]
    before = dict(os.environ)
    pool = module._process_pool(1, None)
    try:
        with module._one_thread_env():
            future = pool.submit(_worker_threads)
        blas, env = future.result(timeout=60)
    finally:
        pool.shutdown()
    assert blas and set(blas) == {1}
    assert env == dict.fromkeys(env, "1")
    assert dict(os.environ) == before  # the parent's environment is restored


def test_numba_cache_is_warmed_once_before_any_run(data, tmp_path, monkeypatch):
    module = sys.modules["fnn.sweep"]
    events = []
    real_warm = module._warm

    def warm(configs, arrays):
        events.append(("warm", sorted(c.sizes for c in configs), arrays[0].shape[0]))
        real_warm(configs, arrays)

    monkeypatch.setattr(module, "_warm", warm)
    with ThreadPoolExecutor(1) as pool:
        sweep(BASE, GRID, [0, 1], out=tmp_path, data=data, executor=pool,
              on_run=lambda run: events.append(("run", run.name)))
    assert events[0] == ("warm", [(784, 8, 8, 10)] * 2 + [(784, 16, 10)] * 2, 128)
    assert [e[0] for e in events[1:]] == ["run"] * 4
