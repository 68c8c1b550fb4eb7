"""Benchmark: one epoch of MNIST 784-64-10 (batch 64, lr 0.1, shuffled), ten epochs end
to end, and compile times.

Group "epoch-<dtype>-b64", one full epoch (938 steps, the last of 32 examples), the same
initial params and shuffled order for every implementation:
- "sgd_epoch": `fnn.epoch.sgd_epoch`, the fastest path (one compiled loop; validated);
- "numba-per-step", "numpy-per-step": `fnn.backprop` + `fnn.sgd_step` from Python per
  batch on each backend;
- "notebook": the same loop with the origin notebook's gradient (`fnn.reference`).
The peers (benchmarks/peers) join this group when PyTorch / JAX are installed.

Group "end-to-end": 10 epochs as a script runs them: load MNIST (from the array cache on
disk, as in a new process), a fresh shuffle per epoch, `sgd_epoch`, then the test-set
accuracy. Compile time is excluded (the kernels are compiled before timing).

Group "compile": a new Python process that imports fnn and makes the first `backprop`
and `sgd_epoch` calls, with an empty numba cache (cold: everything compiles) and with a
filled one (warm: machine code loaded from the cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from conftest import BATCH, GRADIENTS, LR, SEED, SIZES, per_step_epoch

import fnn
from fnn.epoch import sgd_epoch

EPOCHS = {
    "sgd_epoch": lambda params, x, y, order: sgd_epoch(params, x, y, order, BATCH, LR)[0],
    "numba-per-step": per_step_epoch(GRADIENTS["numba"]),
    "numpy-per-step": per_step_epoch(GRADIENTS["numpy"]),
    "notebook": per_step_epoch(GRADIENTS["notebook"]),
}


@pytest.mark.parametrize("impl", list(EPOCHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_epoch(benchmark, data, net, order, dtype, impl):
    ds, params = data(dtype), net(dtype)
    run = EPOCHS[impl]
    run(params, ds.x_train, ds.y_train, order[: 2 * BATCH])  # compile outside the timing
    benchmark.group = f"epoch-{np.dtype(dtype).name}-b{BATCH}"
    rounds = 2 if impl == "notebook" else 5
    trained = benchmark.pedantic(run, args=(params, ds.x_train, ds.y_train, order),
                                 rounds=rounds, iterations=1)
    assert fnn.accuracy(trained, ds.x_test, ds.y_test) > 0.9  # it learned


def test_ten_epochs_end_to_end(benchmark, mnist, net):
    import fnn.data as fdata

    params = net()
    sgd_epoch(params, mnist.x_train[:256], mnist.y_train[:256], np.arange(256), BATCH, LR)

    def script():
        ds = fdata.load_mnist()
        p = params
        for epoch in range(10):
            order = fnn.batch_indices(len(ds.x_train), len(ds.x_train), (SEED, epoch))[0]
            p, _ = sgd_epoch(p, ds.x_train, ds.y_train, order, BATCH, LR)
        return fnn.accuracy(p, ds.x_test, ds.y_test)

    forget = fnn.arraycache.clear_memory  # as a new process
    benchmark.group = "end-to-end"
    accuracy = benchmark.pedantic(script, setup=forget, rounds=3, iterations=1)
    benchmark.extra_info["test_accuracy"] = accuracy
    assert accuracy > 0.95


FIRST_CALLS = f"""
import numpy as np, fnn
from fnn.epoch import sgd_epoch
for dtype in (np.float32, np.float64):
    p = fnn.init_params(0, {SIZES}, dtype=dtype)
    x = np.random.default_rng(0).random((64, {SIZES[0]})).astype(dtype)
    y = np.arange(64) % {SIZES[-1]}
    fnn.backprop(p, x, y)
    sgd_epoch(p, x, y, np.arange(64), 32, 0.1)
"""


@pytest.mark.parametrize("cache", ["cold", "warm"])
def test_compile(benchmark, cache):
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        run = lambda: subprocess.run([sys.executable, "-c", FIRST_CALLS], env=env,  # noqa: E731
                                     check=True)
        if cache == "warm":
            run()  # fills the cache
        benchmark.group = "compile"
        benchmark.extra_info["what"] = "new process: import fnn, first backprop + sgd_epoch, " \
                                       "float32 and float64"
        if cache == "cold":
            # A fresh cache directory per round: every round compiles everything.
            def setup():
                env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(dir=cache_dir)

            benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
        else:
            benchmark.pedantic(run, rounds=3, iterations=1)


# Group "compile-per-path": what each path compiles on its first call, float32, in a new
# process with an empty numba cache. The time printed by the child (first call, after
# the import) goes into extra_info; the benchmark's own time is the whole process.
PATHS = {
    "backprop (per-step numba)": "fnn.sgd_step(p, fnn.backprop(p, x, y)[1], 0.1)",
    "sgd_epoch (compiled epoch)": "sgd_epoch(p, x, y, np.arange(64), 32, 0.1)",
    "predict + accuracy (evaluation)": "fnn.accuracy(p, x, y)",
    "fit, TrainConfig() (training and evaluation)":
        "fnn.fit(None, (x, y, x, y), fnn.TrainConfig(epochs=1, batch_size=32, "
        "val_fraction=0))",
}
PATH_CALL = f"""
import time, numpy as np
import fnn
from fnn.epoch import sgd_epoch
p = fnn.init_params(0, {SIZES})
x = np.random.default_rng(0).random((64, {SIZES[0]})).astype(np.float32)
y = np.arange(64) % {SIZES[-1]}
t = time.perf_counter()
{{call}}
print(time.perf_counter() - t)
"""


@pytest.mark.parametrize("path", list(PATHS))
def test_compile_per_path(benchmark, path):
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        code = PATH_CALL.replace("{call}", PATHS[path])
        out = []

        def run():
            out.append(float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                            capture_output=True, text=True).stdout))

        benchmark.group = "compile-per-path"
        benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.extra_info["first call s (compile)"] = round(out[0], 2)
        print(f"\n{path}: first call {out[0]:.2f} s from an empty numba cache")
