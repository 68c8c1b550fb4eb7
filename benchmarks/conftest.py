"""Shared fixtures and run information for the benchmark suite.

Run: `pytest --benchmark-only` (or `pytest benchmarks --benchmark-only`). The default
`pytest` run collects this folder too but skips it, so the tests stay fast.
Each group compares implementations of one task side by side in one run; read the
ratios, not the absolute times (the machine is shared). Compilation is kept out of every
timed region: each fixture calls its functions once before they are timed, and compile
time is measured on its own (group "compile" in test_bench_epoch.py).

The header and pytest-benchmark's JSON `machine_info` record the thread settings: the
per-step numba kernels run on one thread (no `parallel=True`), compiled epochs and
whole forward passes on `fnn.team` (FNN_NUM_THREADS); NumPy's BLAS uses its own pool
(OpenBLAS: OPENBLAS_NUM_THREADS, default one thread per core); OPENBLAS_CORETYPE, if
set, forces OpenBLAS's kernel choice (we leave it as the machine sets it).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np
import pytest

import fnn

# The task everywhere: the notebook's net on MNIST, batch 64, lr 0.1, one shuffled epoch.
SEED = 0
SIZES = [784, 64, 10]
BATCH = 64
LR = 0.1


def thread_settings() -> dict[str, Any]:
    """BLAS pools (via threadpoolctl when installed), numba's, and the relevant env vars."""
    import numba

    from fnn.team import max_threads

    info: dict[str, Any] = {
        "numba_kernels": "per-step: 1 thread (no parallel=True); compiled epochs and "
                         f"evaluation: fnn.team, at most {max_threads()} threads",
        "numba": numba.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
    }
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "OPENBLAS_CORETYPE", "NUMBA_NUM_THREADS", "XLA_FLAGS"):
        info[var] = os.environ.get(var, "(unset)")
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["blas"] = "threadpoolctl not installed; see numpy.show_config()"
    else:
        info["blas"] = [
            f"{p['internal_api']} {p.get('version')} {p.get('architecture', '')}: "
            f"{p['num_threads']} threads"
            for p in threadpool_info() if p["user_api"] == "blas"
        ]
    return info


#: The gradients of the per-step rows: fnn on each backend and the notebook's own.
GRADIENTS = {
    "numba": lambda p, x, y: fnn.backprop(p, x, y, backend="numba"),
    "numpy": lambda p, x, y: fnn.backprop(p, x, y, backend="numpy"),
    "notebook": fnn.reference.backprop,
}


def notebook_weight_grad(a: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The origin notebook's weight gradient (as in `fnn.reference.backprop`, without the
    1/n): an (n, d_in, d_out) broadcast product summed over the batch."""
    return np.sum(delta[..., np.newaxis, :] * a[..., :, np.newaxis], axis=0)


def per_step_epoch(gradient: Any) -> Any:
    """run(params, x, y, order) -> params: one epoch through the public per-step API,
    `gradient(params, xb, yb) -> (loss, grads)` then `fnn.sgd_step`, batch by batch."""

    def run(params: fnn.Params, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> fnn.Params:
        for s in range(0, len(order), BATCH):
            idx = order[s : s + BATCH]
            _, grads = gradient(params, x[idx], y[idx])
            params = fnn.sgd_step(params, grads, LR)
        return params

    return run


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"fnn benchmarks, threads: {thread_settings()}"]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["fnn_threads"] = thread_settings()


@pytest.fixture(scope="session")
def mnist():
    """fnn.data.load_mnist(): the full MNIST shipped in data/mnist, float32."""
    from fnn.data import load_mnist

    try:
        return load_mnist()
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture(scope="session")
def data(mnist):
    """data(dtype) -> MNIST (fnn.data.Dataset) with x of that dtype (float32 or float64)."""
    cache = {np.dtype(np.float32): mnist}

    def get(dtype: type) -> Any:
        key = np.dtype(dtype)
        if key not in cache:
            cache[key] = mnist._replace(x_train=mnist.x_train.astype(key),
                                        x_test=mnist.x_test.astype(key))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def net():
    """net(dtype) -> the notebook's network, 784-64-10, initialised from SEED."""
    return lambda dtype=np.float32: fnn.init_params(SEED, SIZES, dtype=dtype)


@pytest.fixture(scope="session")
def order(mnist) -> np.ndarray:
    """One shuffled epoch's order, the same for every implementation."""
    return np.random.default_rng(SEED).permutation(len(mnist.x_train))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Timings belong to benchmark runs: a plain `pytest` lists these as skipped, not run.
    if config.getoption("benchmark_only", False):
        return
    skip = pytest.mark.skip(reason="a benchmark: run with pytest --benchmark-only")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(skip)
