"""Benchmark: the weight-gradient kernel and the forward pass, numba vs NumPy vs notebook.

Groups "weight_grad-<dtype>-b<batch>-<d_in>x<d_out>" time a.T @ delta at the two layers
of the MNIST net (784x64: a = a real MNIST batch; 64x10: a = its hidden activations),
batch 64 and 256, float32 and float64: fnn's numba kernel, NumPy's BLAS matmul (the
"numpy" backend) and the origin notebook's broadcast-and-sum gradient (as in
`fnn.reference.backprop`). Groups "forward-<dtype>-b<batch>" time the logits of the net.
Groups "evaluate-<dtype>-<net>" time `fnn.evaluate` (loss and accuracy) on the 10,000
test images at three of the scale table's nets: the numba path's whole pass on its team
(`fnn.kernels.output_into`) against NumPy's BLAS, both as this process's thread settings
have them (one process: for the ratio without one library's idle threads in the other's
way, see the README's figures, timed in a worker process each).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SEED, notebook_weight_grad

import fnn
from fnn import kernels, reference
from fnn.backends import NUMPY_OPS

DTYPES = [np.float32, np.float64]
BATCHES = [64, 256]


WEIGHT_GRAD = {
    "numba": kernels.weight_grad,
    "numpy": NUMPY_OPS.weight_grad,
    "notebook": notebook_weight_grad,
}


@pytest.fixture(scope="module")
def layer_inputs(data, net):
    """inputs(dtype, batch, layer) -> (a, delta) as in one real backprop step."""
    cache = {}

    def get(dtype, batch, layer):
        key = (np.dtype(dtype), batch, layer)
        if key not in cache:
            ds = data(dtype)
            idx = np.random.default_rng(SEED).permutation(len(ds.x_train))[:batch]
            params = net(dtype)
            acts = [ds.x_train[idx]]
            acts.append(kernels.linear(acts[0], params[0].w, params[0].b, True))
            logits = kernels.linear(acts[1], params[1].w, params[1].b, False)
            _, delta = kernels.softmax_xent(logits, ds.y_train[idx])
            if layer == 0:
                delta = kernels.relu_backward(delta, params[1].w, acts[1])
            cache[key] = (acts[layer], delta)
        return cache[key]

    return get


@pytest.mark.parametrize("impl", list(WEIGHT_GRAD))
@pytest.mark.parametrize("layer", [0, 1], ids=["784x64", "64x10"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_weight_grad(benchmark, layer_inputs, dtype, batch, layer, impl):
    a, delta = layer_inputs(dtype, batch, layer)
    f = WEIGHT_GRAD[impl]
    np.testing.assert_allclose(f(a, delta), NUMPY_OPS.weight_grad(a, delta),
                               rtol=1e-4, atol=1e-4 * np.abs(delta).max() * len(a))
    benchmark.group = (f"weight_grad-{np.dtype(dtype).name}-b{batch}-"
                       f"{a.shape[1]}x{delta.shape[1]}")
    benchmark(f, a, delta)


@pytest.mark.parametrize("impl", ["numba", "numpy", "notebook"])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_forward(benchmark, data, net, dtype, batch, impl):
    ds, params = data(dtype), net(dtype)
    x = ds.x_train[np.random.default_rng(SEED).permutation(len(ds.x_train))[:batch]]
    if impl == "notebook":
        f = lambda: reference.forward(params, x)[0]  # noqa: E731
    else:
        f = lambda: fnn.forward(params, x, backend=impl)  # noqa: E731
    f()  # compiled outside the timed region
    benchmark.group = f"forward-{np.dtype(dtype).name}-b{batch}"
    benchmark(f)


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("sizes", [(784, 64, 10), (784, 256, 128, 10), (784, 1024, 1024, 10)],
                         ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_evaluate(benchmark, data, dtype, sizes, impl):
    ds = data(dtype)
    params = fnn.init_params(SEED, sizes, dtype=dtype)
    f = lambda: fnn.evaluate(params, ds.x_test, ds.y_test, backend=impl)  # noqa: E731
    assert f() == pytest.approx(fnn.evaluate(params, ds.x_test, ds.y_test, backend="numpy"),
                                rel=1e-4)  # (compiled outside the timed region)
    benchmark.group = f"evaluate-{np.dtype(dtype).name}-{'-'.join(map(str, sizes))}"
    benchmark(f)
