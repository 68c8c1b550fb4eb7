"""Print fnn vs the notebook, NumPy, PyTorch and JAX side by side; write RESULTS.md.

    python benchmarks/peers/report.py [--rounds 7] [--out benchmarks/peers/RESULTS.md]

One process measures every implementation of each task in interleaved rounds (round 1
runs all of them, then round 2, ...) and keeps each one's fastest round, so that load
from other processes hits all alike; ratios are to fnn's fastest path. Compilation is
done before timing (reported separately: compile times and the ten-epoch script run in
new processes). Peers missing from the environment are left out of the table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # conftest (the task, thread settings), peers

import conftest  # noqa: E402
from conftest import BATCH, GRADIENTS, LR, SEED, SIZES, notebook_weight_grad, per_step_epoch  # noqa: E402
from peers import jax_task, torch_task  # noqa: E402

import fnn  # noqa: E402
from fnn import kernels  # noqa: E402
from fnn.backends import NUMPY_OPS  # noqa: E402
from fnn.data import load_mnist  # noqa: E402
from fnn.epoch import sgd_epoch  # noqa: E402

Row = tuple[str, Callable[[], object]]
PER_STEP = {"numba": "fnn backprop + sgd_step per step, numba",
            "numpy": "fnn backprop + sgd_step per step, numpy (BLAS)",
            "notebook": "notebook gradient (fnn.reference) + sgd_step per step"}


def interleaved(rows: list[Row], rounds: int) -> dict[str, float]:
    """The fastest of `rounds` runs of each callable, the runs interleaved across rows."""
    for _, f in rows:
        f()  # warm-up: compilation, caches
    best = {name: np.inf for name, _ in rows}
    for _ in range(rounds):
        for name, f in rows:
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def repeat(f: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            f()
    return run


def peers_for(params: fnn.Params, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> dict:
    out = {}
    for name, build in (("torch", torch_task), ("jax", jax_task)):
        try:
            out[name] = build(params, x, y, order, BATCH, LR)
        except ImportError:
            print(f"({name} not installed: left out)")
    return out


def epoch_rows(ds, order, peers) -> list[Row]:
    rows: list[Row] = []
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = ds.x_train.astype(dtype, copy=False)
        params = fnn.init_params(SEED, SIZES, dtype=dtype)
        rows += [
            (f"fnn sgd_epoch (numba, one compiled loop) | {name}",
             lambda x=x, p=params: sgd_epoch(p, x, ds.y_train, order, BATCH, LR)),
        ]
        for impl, label in PER_STEP.items():
            run = per_step_epoch(GRADIENTS[impl])
            rows.append((f"{label} | {name}", lambda run=run, p=params, x=x: run(
                p, x, ds.y_train, order)))
        if dtype is np.float32:
            for task in peers.values():
                rows += [(f"{label} | float32", f) for label, f in task.epochs.items()]
    return rows


def step_rows(ds, order, peers) -> list[Row]:
    rows: list[Row] = []
    idx = order[:BATCH]
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        x = ds.x_train.astype(dtype, copy=False)
        params = fnn.init_params(SEED, SIZES, dtype=dtype)
        for impl, label in PER_STEP.items():
            def step(gradient=GRADIENTS[impl], x=x, params=params):
                _, grads = gradient(params, x[idx], ds.y_train[idx])
                return fnn.sgd_step(params, grads, LR)
            rows.append((f"{label} | {name}", repeat(step, 50)))
        if dtype is np.float32:
            labels = {"torch": "torch eager step", "jax": "jax jitted step"}
            rows += [(f"{labels[k]} | float32", repeat(t.step, 50)) for k, t in peers.items()]
    return rows


def kernel_rows(ds) -> tuple[list[Row], dict[str, int]]:
    """The rows, and the calls each makes per timed round."""
    rows: list[Row] = []
    calls: dict[str, int] = {}
    rng = np.random.default_rng(SEED)
    for dtype in (np.float32, np.float64):
        params = fnn.init_params(SEED, SIZES, dtype=dtype)
        for batch in (64, 256):
            idx = rng.permutation(len(ds.x_train))[:batch]
            x = ds.x_train[idx].astype(dtype)
            h = kernels.linear(x, params[0].w, params[0].b, True)
            _, d2 = kernels.softmax_xent(kernels.linear(h, params[1].w, params[1].b, False),
                                         ds.y_train[idx])
            d1 = kernels.relu_backward(d2, params[1].w, h)
            for a, delta in ((x, d1), (h, d2)):
                shape = f"{a.shape[1]}x{delta.shape[1]}"
                for label, f in (("numba", kernels.weight_grad), ("numpy", NUMPY_OPS.weight_grad),
                                 ("notebook", notebook_weight_grad)):
                    # Enough calls per timed round that a round lasts ~1 ms or more.
                    small = a.shape[1] * delta.shape[1] * batch < 100_000
                    reps = (20 if small else 2) if label == "notebook" else (500 if small else 20)
                    name = f"weight_grad {shape} b{batch}: {label} | {np.dtype(dtype).name}"
                    rows.append((name, repeat(lambda f=f, a=a, delta=delta: f(a, delta), reps)))
                    calls[name] = reps
    return rows, calls


SCRIPT = f"""
import sys, time, numpy as np, fnn, fnn.data as fdata
from fnn.epoch import sgd_epoch
p = fnn.init_params({SEED}, {SIZES})
x = np.random.default_rng(0).random((256, {SIZES[0]}), dtype=np.float32)
sgd_epoch(p, x, np.arange(256) % {SIZES[-1]}, np.arange(256), {BATCH}, {LR})  # no compile below
t = time.perf_counter()
ds = fdata.load_mnist()
for epoch in range(10):
    order = fnn.batch_indices(len(ds.x_train), len(ds.x_train), ({SEED}, epoch))[0]
    p, _ = sgd_epoch(p, ds.x_train, ds.y_train, order, {BATCH}, {LR})
acc = fnn.accuracy(p, ds.x_test, ds.y_test)
print(time.perf_counter() - t, acc)
"""

FIRST_CALLS = f"""
import time; t = time.perf_counter()
import numpy as np, fnn
from fnn.epoch import sgd_epoch
dtype = np.{{dtype}}
p = fnn.init_params(0, {SIZES}, dtype=dtype)
x = np.random.default_rng(0).random((64, {SIZES[0]})).astype(dtype)
y = np.arange(64) % {SIZES[-1]}
fnn.backprop(p, x, y); t1 = time.perf_counter()
sgd_epoch(p, x, y, np.arange(64), 32, 0.1); t2 = time.perf_counter()
print(t1 - t, t2 - t1)
"""


def compile_times() -> dict[str, tuple[float, float]]:
    """{'float32 cold': (import + first backprop, first sgd_epoch), ...} in seconds."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for dtype in ("float32", "float64"):
            env = dict(os.environ, NUMBA_CACHE_DIR=str(Path(cache) / dtype))
            for kind in ("cold", "warm"):
                res = subprocess.run([sys.executable, "-c", FIRST_CALLS.format(dtype=dtype)],
                                     env=env, check=True, capture_output=True, text=True)
                out[f"{dtype} {kind}"] = tuple(map(float, res.stdout.split()))
    return out


def ten_epochs(runs: int = 3) -> tuple[float, float]:
    """The fastest of `runs` new processes: (seconds, test accuracy)."""
    results = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-c", SCRIPT], check=True, capture_output=True,
                             text=True)
        results.append(tuple(map(float, res.stdout.split())))
    return min(results)


def versions() -> str:
    import numba
    import scipy

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}",
             f"Numba {numba.__version__}", f"SciPy {scipy.__version__}"]
    for mod in ("torch", "jax", "jaxlib"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            pass
    return ", ".join(parts)


def table(title: str, times: dict[str, float], base: str, unit: str, scale: float,
          per: int = 1) -> list[str]:
    lines = [f"### {title}", "",
             f"| implementation | dtype | {unit} | time / {base.split(' |')[0]}, {base.split('| ')[1]} |",
             "|---|---|---:|---:|"]
    for name, t in times.items():
        label, dtype = name.split(" | ")
        t /= per
        lines.append(f"| {label} | {dtype} | {t * scale:,.1f} | {t / (times[base] / per):.2f} |")
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args()

    load_start = os.getloadavg()
    ds = load_mnist()
    order = np.random.default_rng(SEED).permutation(len(ds.x_train))
    peers = peers_for(fnn.init_params(SEED, SIZES), ds.x_train, ds.y_train, order)

    epochs = interleaved(epoch_rows(ds, order, peers), args.rounds)
    steps = interleaved(step_rows(ds, order, peers), args.rounds)
    rows, calls = kernel_rows(ds)
    kern = {k: t / calls[k] for k, t in interleaved(rows, args.rounds).items()}
    compiled = compile_times()
    end_to_end, accuracy = ten_epochs()
    load_end = os.getloadavg()

    base_epoch = "fnn sgd_epoch (numba, one compiled loop) | float32"
    lines = [
        "# fnn vs the notebook, NumPy, PyTorch and JAX",
        "",
        f"Measured {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} by "
        "`python benchmarks/peers/report.py`.",
        "",
        f"- Task: MNIST {'-'.join(map(str, SIZES))}, batch {BATCH}, lr {LR}, plain SGD, one "
        "shuffled epoch (938 steps, the last of 32), the same initial params and order "
        "everywhere; compile excluded from every time.",
        f"- Machine: {conftest._cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}; load average {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end (the machine is shared: each figure is the fastest "
        f"of {args.rounds} interleaved rounds).",
        f"- Versions: {versions()}.",
        f"- Threads: {conftest.thread_settings()}. PyTorch: {_torch_threads()}; JAX/XLA: "
        "its default CPU thread pool.",
        "",
    ]
    lines += table("One epoch", epochs, base_epoch, "ms per epoch", 1e3)
    base_step = f"{PER_STEP['numba']} | float32"
    lines += table("One step (public per-step API from Python; batch picked by index)",
                   {k: v for k, v in steps.items()}, base_step, "us per step", 1e6, per=50)
    lines += ["Kernel rows are per call; ratios within each shape, batch and dtype to numba.",
              ""]
    lines += _kernel_table(kern)
    lines += ["### Compile time (new process, import fnn + first call; "
              "cold = empty numba cache, warm = cache hit)", "",
              "| dtype, cache | import + first backprop (s) | first sgd_epoch (s) |",
              "|---|---:|---:|"]
    lines += [f"| {k} | {a:.2f} | {b:.2f} |" for k, (a, b) in compiled.items()]
    lines += ["", "### Ten epochs end to end (new process: load MNIST from the array cache, "
              "10 shuffled epochs of sgd_epoch, test accuracy; compile excluded)", "",
              f"{end_to_end:.2f} s, test accuracy {accuracy:.4f}.", ""]
    text = "\n".join(lines)
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}")


def _kernel_table(kern: dict[str, float]) -> list[str]:
    """kern: seconds per call of each kernel row."""
    lines = ["### Weight-gradient kernel a.T @ delta (per call)", "",
             "| shape, batch | dtype | numba (us) | numpy BLAS (us) | notebook (us) | "
             "notebook / numba | numpy / numba |", "|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(k.split(": ")[0], k.split(" | ")[1]) for k in kern})
    for what, dtype in keys:
        t = {impl: kern[f"{what}: {impl} | {dtype}"] for impl in ("numba", "numpy", "notebook")}
        lines.append(f"| {what.removeprefix('weight_grad ')} | {dtype} | {t['numba'] * 1e6:.1f} "
                     f"| {t['numpy'] * 1e6:.1f} | {t['notebook'] * 1e6:.1f} | "
                     f"{t['notebook'] / t['numba']:.1f}x | {t['numpy'] / t['numba']:.1f}x |")
    return [*lines, ""]


def _torch_threads() -> str:
    try:
        import torch
    except ImportError:
        return "not installed"
    return f"{torch.get_num_threads()} intra-op threads"


if __name__ == "__main__":
    main()
