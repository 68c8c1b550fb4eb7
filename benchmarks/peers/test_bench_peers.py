"""Benchmark: the same task in PyTorch and JAX, in the groups of fnn's figures.

"step-float32-b64" (one step, batch picked by index) and "epoch-float32-b64" (one
shuffled epoch), MNIST 784-64-10, lr 0.1, float32, from fnn's initial params and order;
compilation (JAX) happens before timing. Skipped when the library is not installed: the
peers are measurement tools (`pip install torch==2.13.0 jax jaxlib`), not dependencies.
`python benchmarks/peers/report.py` prints the side-by-side table (benchmarks/peers/RESULTS.md).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BATCH, LR
from peers import jax_task, torch_task

TASKS = {"torch": torch_task, "jax": jax_task}


@pytest.fixture(scope="module", params=list(TASKS))
def task(request, data, net, order):
    pytest.importorskip(request.param)
    ds = data(np.float32)
    return request.param, TASKS[request.param](net(), ds.x_train, ds.y_train, order, BATCH, LR)


def test_step(benchmark, task):
    name, t = task
    benchmark.group = f"step-float32-b{BATCH}"
    benchmark.name = f"test_step[{name}]"
    benchmark(t.step)


@pytest.mark.parametrize("which", [0, 1])
def test_epoch(benchmark, task, which):
    name, t = task
    if which >= len(t.epochs):
        pytest.skip(f"{name} has one epoch variant")
    label, epoch = list(t.epochs.items())[which]
    benchmark.group = f"epoch-float32-b{BATCH}"
    benchmark.name = f"test_epoch[{label}]"
    loss = benchmark.pedantic(epoch, rounds=5, iterations=1)
    assert loss < 0.5  # it trains
