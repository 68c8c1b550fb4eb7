"""fnn against NumPy, PyTorch and JAX at several network sizes, one process per
implementation and shape.

    python benchmarks/peers/scale.py [--rounds 3] [--dtype float32] [--shapes 0,1,4]

Each implementation runs in its own worker process (`workers`: so that no library's
threads spin while another is timed), built and compiled (one warm-up epoch) before
timing; the parent then interleaves the rounds: round r asks every worker of a shape in
turn for one epoch (after `workers.SETTLE` seconds of quiet) and waits for it, and each
keeps its fastest. The task: MNIST, ReLU hidden layers,
softmax cross-entropy, plain SGD lr 0.1, one shuffled epoch (60,000 examples) from fnn's
initial params (seed 0), the same order everywhere. "fnn sgd_epoch" takes as many
threads as `fnn.epoch.threads_for` gives (both cores for the larger nets), "1 thread"
is the same with FNN_NUM_THREADS=1. The NumPy rows are fnn's NumPy
backend (BLAS products) per step, once with this machine's OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE and once with both unset in that worker alone (OpenBLAS as shipped, a
user's machine). Prints a Markdown table in ms per epoch, the ratio of the fastest
peer to fnn's fastest path (above 1: fnn is faster), and the epoch's FLOP floor: its
dense FLOP count (`dense_flops`) over the two-core peak, measured as a 4096 x 4096
OpenBLAS matrix product (`measure_peak`; fnn skips zeros, so it can beat the floor).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

from workers import Worker, interleave, serve  # noqa: E402

LR = 0.1
SEED = 0
# (sizes, batch): the notebook's net, wider and deeper ones, a dense large one, a big batch.
SHAPES = (
    ((784, 64, 10), 64),
    ((784, 64, 10), 256),
    ((784, 256, 128, 10), 64),
    ((784, 800, 10), 64),
    ((784, 1024, 1024, 10), 128),
    ((784, 256, 128, 10), 1024),
)
FNN = ("fnn sgd_epoch", "fnn sgd_epoch, 1 thread", "fnn per step, numba")
IMPLS = (*FNN, "fnn per step, numpy (BLAS)", "numpy, CORETYPE unset",
         "torch eager", "jax jit + lax.scan")
UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _epoch_fn(impl: str, sizes: tuple[int, ...], batch: int, dtype: str):
    import numpy as np

    import fnn

    ds = fnn.load_mnist(dtype=dtype)
    x, y = ds.x_train, ds.y_train
    order = np.random.default_rng(SEED).permutation(len(x))
    params = fnn.init_params(SEED, sizes, dtype=dtype)
    if impl.startswith("fnn sgd_epoch"):  # its threads: see `measure`
        return lambda: fnn.sgd_epoch(params, x, y, order, batch, LR)
    if impl.startswith(("fnn per step", "numpy")):
        backend = "numba" if impl.endswith("numba") else "numpy"

        def per_step() -> None:
            p = params
            for s in range(0, len(order), batch):
                idx = order[s : s + batch]
                _, g = fnn.backprop(p, x[idx], y[idx], backend=backend)
                p = fnn.sgd_step(p, g, LR)
        return per_step
    from peers import jax_task, torch_task

    build = torch_task if impl.startswith("torch") else jax_task
    return build(params, x, y, order, batch, LR).epochs[impl]


def dense_flops(sizes: tuple[int, ...], n: int = 60_000) -> float:
    """Floating-point operations of one epoch of n examples counted densely (no zero
    skipped): per example, 2 x (the forward products + the weight gradients + the input
    gradients of every layer but the first)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    macs = 2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:])
    return 2.0 * macs * n


PEAK_N = 4096  # large enough that the sgemm runs at its peak on every core


def peak_worker(dtype: str) -> None:
    """Print the fastest of 5 (PEAK_N x PEAK_N) @ (PEAK_N x PEAK_N) products in FLOP/s."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.random((PEAK_N, PEAK_N)).astype(dtype) for _ in range(2))
    a @ b  # warm up (threads started, pages touched)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    print(json.dumps({"flops": 2.0 * PEAK_N**3 / best}), flush=True)


def measure_peak(dtype: str, unset: bool) -> float:
    """The two-core peak in FLOP/s, measured as a large NumPy (OpenBLAS) matrix product in
    a worker process, with this machine's OPENBLAS_CORETYPE or with it unset."""
    env = dict(os.environ)
    if unset:
        for var in UNSET:
            env.pop(var, None)
    out = subprocess.run([sys.executable, __file__, "--peak", "--dtype", dtype], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])["flops"]


def worker(impl: str, shape: int, dtype: str) -> None:
    sizes, batch = SHAPES[shape]
    serve(lambda: {impl: _epoch_fn(impl, sizes, batch, dtype)})


def measure(shape: int, dtype: str, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """({impl: fastest seconds}, {impl: first-run seconds}) for one shape."""
    workers = {}
    for impl in IMPLS:
        env = dict(os.environ)
        if impl.endswith("CORETYPE unset"):
            for var in UNSET:
                env.pop(var, None)
        if impl.endswith("1 thread"):
            env["FNN_NUM_THREADS"] = "1"
        workers[impl] = Worker([sys.executable, __file__, "--worker", impl, "--shape",
                                str(shape), "--dtype", dtype], env)
    return interleave(workers, rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shapes", default=",".join(str(i) for i in range(len(SHAPES))))
    ap.add_argument("--worker", default=None)
    ap.add_argument("--shape", type=int, default=0)
    ap.add_argument("--peak", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peak:
        return peak_worker(args.dtype)
    if args.worker:
        return worker(args.worker, args.shape, args.dtype)
    settings = {v: os.environ.get(v, "(unset)") for v in UNSET}
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.dtype}, "
          f"fastest of {args.rounds} interleaved rounds, one process per implementation "
          f"and shape; this machine's {settings}")
    peak = max(measure_peak(args.dtype, unset) for unset in (False, True))
    print(f"two-core peak: {peak / 1e9:,.0f} GFLOP/s ({args.dtype} {PEAK_N}x{PEAK_N} "
          f"matrix product, NumPy/OpenBLAS 2 threads, the faster of the machine's and the "
          f"unset OPENBLAS_CORETYPE, fastest of 5); the floor column is the epoch's dense "
          f"FLOPs at that peak")
    print("| net | batch | " + " | ".join(IMPLS) + " | fastest peer / fastest fnn "
          "| FLOP floor | fastest fnn / floor |")
    print("|---|---:|" + "---:|" * (len(IMPLS) + 3))
    for shape in (int(s) for s in args.shapes.split(",")):
        best, first = measure(shape, args.dtype, args.rounds)
        sizes, batch = SHAPES[shape]
        cells = [f"{best[i] * 1e3:,.0f}" if i in best else "-" for i in IMPLS]
        fnn_best = min(best[i] for i in FNN if i in best)
        peers = [best[i] for i in best if i not in FNN]
        ratio = f"{min(peers) / fnn_best:.2f}" if peers else "-"
        floor = dense_flops(sizes) / peak
        print(f"| {'-'.join(map(str, sizes))} | {batch} | " + " | ".join(cells) +
              f" | {ratio} | {floor * 1e3:,.0f} | {fnn_best / floor:.1f} |", flush=True)
        print("  first (warm-up) epoch, s: " +
              ", ".join(f"{i} {first[i]:.1f}" for i in IMPLS if i in first),
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
