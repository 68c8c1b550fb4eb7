"""Benchmark: one training step through the public per-step API, called from Python.

Group "step-<dtype>-b64": pick a batch of 64 by index from MNIST, `fnn.backprop`, then
`fnn.sgd_step` (lr 0.1), as a training loop does each step: on the numba path, the NumPy
path, and with the origin notebook's gradient (`fnn.reference.backprop`). The peers'
jitted steps (benchmarks/peers) join this group when PyTorch / JAX are installed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BATCH, GRADIENTS, LR

import fnn


@pytest.mark.parametrize("impl", list(GRADIENTS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_step(benchmark, data, net, order, dtype, impl):
    ds, params = data(dtype), net(dtype)
    idx = order[:BATCH]
    gradient = GRADIENTS[impl]

    def step():
        _, grads = gradient(params, ds.x_train[idx], ds.y_train[idx])
        return fnn.sgd_step(params, grads, LR)

    step()  # compiled outside the timed region
    benchmark.group = f"step-{np.dtype(dtype).name}-b{BATCH}"
    benchmark(step)
