"""fnn against JAX at the notebook's shape, one worker process per implementation.

    python benchmarks/peers/workers.py [--rounds 7] [--dtype float32]

Each implementation runs in its own process (so no library's threads spin while another
is timed), built and compiled before timing; the parent then interleaves the rounds:
round r asks every worker in turn for one epoch and waits for it, and each keeps its
fastest. The task is conftest's: MNIST 784-64-10, batch 64, lr 0.1, one shuffled epoch
from fnn's initial params. Prints the table and the ratio of JAX's scan to fnn's epoch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPLS = ("fnn sgd_epoch", "fnn backprop + sgd_step per step", "jax jit + lax.scan")


def worker(impl: str, dtype: str) -> None:
    sys.path[:0] = [str(HERE.parent), str(HERE)]
    import numpy as np
    from conftest import BATCH, GRADIENTS, LR, SEED, SIZES, per_step_epoch

    import fnn

    ds = fnn.load_mnist(dtype=dtype)
    order = np.random.default_rng(SEED).permutation(len(ds.x_train))
    params = fnn.init_params(SEED, SIZES, dtype=dtype)
    if impl == "fnn sgd_epoch":
        def run() -> None:
            fnn.sgd_epoch(params, ds.x_train, ds.y_train, order, BATCH, LR)
    elif impl == "fnn backprop + sgd_step per step":
        step = per_step_epoch(GRADIENTS["numba"])

        def run() -> None:
            step(params, ds.x_train, ds.y_train, order)
    else:
        from peers import jax_task

        run = jax_task(params, ds.x_train, ds.y_train, order, BATCH, LR).epochs[impl]
    t = time.perf_counter()
    run()  # compile and warm up
    print(json.dumps({"ready": time.perf_counter() - t}), flush=True)
    for _ in sys.stdin:
        t = time.perf_counter()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--worker", default=None)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.dtype)
    procs = {i: subprocess.Popen([sys.executable, __file__, "--worker", i, "--dtype", args.dtype],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for i in IMPLS}
    warm = {i: json.loads(p.stdout.readline())["ready"] for i, p in procs.items()}
    best = dict.fromkeys(IMPLS, float("inf"))
    for _ in range(args.rounds):
        for i, p in procs.items():
            p.stdin.write("go\n")
            p.stdin.flush()
            best[i] = min(best[i], json.loads(p.stdout.readline())["seconds"])
    for p in procs.values():
        p.stdin.close()
        p.wait()
    print(f"{args.dtype}, fastest of {args.rounds} interleaved rounds, one process each")
    for i in IMPLS:
        print(f"| {i} | {best[i] * 1e3:.0f} ms | {best[i] / best['fnn sgd_epoch']:.2f} | "
              f"first run {warm[i]:.1f} s |")
    print(f"JAX scan / fnn sgd_epoch: {best['jax jit + lax.scan'] / best['fnn sgd_epoch']:.2f}x")


if __name__ == "__main__":
    main()
