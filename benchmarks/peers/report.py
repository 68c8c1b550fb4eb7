"""Print fnn vs the notebook, NumPy, PyTorch and JAX side by side; write RESULTS.md.

    python benchmarks/peers/report.py [--rounds 7] [--out benchmarks/peers/RESULTS.md]

Each implementation runs in a worker process of its own (`workers`: fnn's numba path,
fnn's NumPy path, the notebook's code, PyTorch, JAX), where its rows are built and
called once untimed (compiling); the parent interleaves the rounds over every row of
every worker (round 1 runs all of them, then round 2, ...) and keeps each one's fastest
round, so that load from other processes hits all alike and no library's threads spin
while another is timed; ratios are to fnn's fastest path. Compile times and the
ten-epoch script are measured in new processes. Peers missing from the environment are
left out of the table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # conftest (the task, thread settings), peers

import conftest  # noqa: E402
from conftest import BATCH, GRADIENTS, LR, SEED, SIZES, notebook_weight_grad, per_step_epoch  # noqa: E402
from workers import Worker, interleave, serve  # noqa: E402

import fnn  # noqa: E402

PER_STEP = {"numba": "fnn backprop + sgd_step per step, numba",
            "numpy": "fnn backprop + sgd_step per step, numpy (BLAS)",
            "notebook": "notebook gradient (fnn.reference) + sgd_step per step"}
PEER_STEP = {"torch": "torch eager step", "jax": "jax jitted step"}
#: The worker processes, one per implementation, in the tables' order.
IMPLEMENTATIONS = (*PER_STEP, *PEER_STEP)
SGD_EPOCH = "fnn sgd_epoch (numba, one compiled loop)"
DTYPES = ("float32", "float64")
STEP_CALLS = 50  # steps per timed call of a "step" row


def repeat(f: Callable[[], object], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            f()
    return run


def rows_of(impl: str) -> dict[str, Callable[[], object]]:
    """The rows one implementation's worker times, named "table: label | dtype" (table:
    epoch, step or kernel)."""
    from fnn.data import load_mnist

    ds = load_mnist()
    order = np.random.default_rng(SEED).permutation(len(ds.x_train))
    rows: dict[str, Callable[[], object]] = {}
    if impl in PEER_STEP:
        from peers import jax_task, torch_task

        build = torch_task if impl == "torch" else jax_task
        task = build(fnn.init_params(SEED, SIZES), ds.x_train, ds.y_train, order, BATCH, LR)
        rows |= {f"epoch: {label} | float32": f for label, f in task.epochs.items()}
        rows[f"step: {PEER_STEP[impl]} | float32"] = repeat(task.step, STEP_CALLS)
        return rows
    gradient = GRADIENTS[impl]
    idx = order[:BATCH]
    for dtype in DTYPES:
        x = ds.x_train.astype(dtype, copy=False)
        params = fnn.init_params(SEED, SIZES, dtype=dtype)
        if impl == "numba":
            from fnn.epoch import sgd_epoch

            rows[f"epoch: {SGD_EPOCH} | {dtype}"] = (
                lambda x=x, p=params: sgd_epoch(p, x, ds.y_train, order, BATCH, LR))
        run = per_step_epoch(gradient)
        rows[f"epoch: {PER_STEP[impl]} | {dtype}"] = (
            lambda run=run, p=params, x=x: run(p, x, ds.y_train, order))

        def step(x=x, params=params) -> fnn.Params:
            _, grads = gradient(params, x[idx], ds.y_train[idx])
            return fnn.sgd_step(params, grads, LR)
        rows[f"step: {PER_STEP[impl]} | {dtype}"] = repeat(step, STEP_CALLS)
    return rows | kernel_rows(impl, ds)


def kernel_rows(impl: str, ds: fnn.Dataset) -> dict[str, Callable[[], object]]:
    """The weight-gradient rows of one implementation: a.T @ delta of both layers of
    the notebook's net, batches 64 and 256, each row enough calls that it lasts ~1 ms
    or more (`kernel_calls`). The operands (the same in every worker: one seeded stream)
    come from a plain NumPy forward and backward pass."""
    from fnn import kernels
    from fnn.backends import NUMPY_OPS

    f = {"numba": kernels.weight_grad, "numpy": NUMPY_OPS.weight_grad,
         "notebook": notebook_weight_grad}[impl]
    rows: dict[str, Callable[[], object]] = {}
    rng = np.random.default_rng(SEED)
    for dtype in DTYPES:
        (w0, b0), (w1, b1) = fnn.init_params(SEED, SIZES, dtype=dtype)
        for batch in (64, 256):
            idx = rng.permutation(len(ds.x_train))[:batch]
            x = ds.x_train[idx].astype(dtype)
            h = np.maximum(x @ w0 + b0, 0)
            out = h @ w1 + b1
            p = np.exp(out - out.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(batch), ds.y_train[idx]] -= 1
            d2 = p / batch
            d1 = (d2 @ w1.T) * (h > 0)
            for a, delta in ((x, d1), (h, d2)):
                name = f"weight_grad {a.shape[1]}x{delta.shape[1]} b{batch}"
                row = f"{name}: {impl} | {dtype}"
                rows[f"kernel: {row}"] = repeat(lambda a=a, delta=delta: f(a, delta),
                                                kernel_calls(row))
    return rows


def kernel_calls(row: str) -> int:
    """Calls per timed round of the weight-gradient row "weight_grad {d_in}x{d_out}
    b{batch}: {impl} | {dtype}" (the notebook's are slow)."""
    what, impl = row.split(" | ")[0].split(": ")
    (d_in, d_out), batch = what.split()[1].split("x"), what.split()[2][1:]
    small = int(d_in) * int(d_out) * int(batch) < 100_000
    if impl == "notebook":
        return 20 if small else 2
    return 500 if small else 20


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
    ap.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return serve(lambda: rows_of(args.worker))

    load_start = os.getloadavg()
    workers = {impl: Worker([sys.executable, __file__, "--worker", impl], os.environ)
               for impl in IMPLEMENTATIONS}
    best, _ = interleave(workers, args.rounds)

    def table_of(kind: str) -> dict[str, float]:
        """That table's rows (without the prefix), float32 first, then by worker."""
        names = [n for n in best if n.startswith(kind + ": ")]
        names.sort(key=lambda n: DTYPES.index(n.rsplit(" | ", 1)[1]))  # stable: by worker
        return {n.removeprefix(kind + ": "): best[n] for n in names}

    epochs, steps = table_of("epoch"), table_of("step")
    kern = {n: t / kernel_calls(n) for n, t in table_of("kernel").items()}
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
        f"of {args.rounds} interleaved rounds, one worker process per implementation).",
        f"- Versions: {versions()}.",
        f"- Threads: {conftest.thread_settings()}. PyTorch: {_torch_threads()}; JAX/XLA: "
        "its default CPU thread pool.",
        "",
    ]
    lines += table("One epoch", epochs, base_epoch, "ms per epoch", 1e3)
    base_step = f"{PER_STEP['numba']} | float32"
    lines += table("One step (public per-step API from Python; batch picked by index)",
                   steps, base_step, "us per step", 1e6, per=STEP_CALLS)
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
