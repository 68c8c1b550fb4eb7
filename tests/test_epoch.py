"""`fnn.epoch`: a whole epoch in one compiled loop equals the per-step public API.

Truth: the loop the epoch path replaces, `fnn.backprop` + `fnn.sgd_step` (or
`fnn.optim.sgd(lr, momentum).update`) over the same batches. With the numba backend the
two run the same kernels in the same order and the same float operations in the update,
so they agree bit for bit; with the NumPy (BLAS) backend they agree to the core
tolerances (rtol 1e-5 float32, 1e-12 float64, atol = rtol * max|expected| per tensor,
see tests/test_kernels.py), with a factor of 10 for the few steps over which rounding
differences compound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fnn
from fnn.epoch import momentum_epoch, sgd_epoch, sgd_epoch_unchecked, steps_in_epoch
from fnn.optim import sgd
from fnn.params import Layer

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def dataset(seed, sizes, n, dtype=np.float32):
    rng = np.random.default_rng(seed)
    params = fnn.init_params(rng, sizes, dtype=dtype)
    params = tuple(Layer(p.w, rng.normal(0, 0.1, p.b.shape).astype(dtype)) for p in params)
    x = rng.random((n, sizes[0])).astype(dtype)
    x[rng.random(x.shape) < 0.8] = 0  # MNIST-like
    y = rng.integers(0, sizes[-1], n)
    return params, x, y, rng.permutation(n)


def per_step(params, x, y, order, batch_size, lrs, backend, momentum=0.0):
    """The reference loop: the public per-step API, one batch at a time."""
    opt = sgd(lambda step: float(lrs[step]), momentum) if momentum else None
    state = opt.init(params) if opt else None
    losses = []
    for s in range(steps_in_epoch(len(order), batch_size)):
        idx = order[s * batch_size : (s + 1) * batch_size]
        value, grads = fnn.backprop(params, x[idx], y[idx], backend=backend)
        losses.append(value)
        if opt:
            params, state = opt.update(grads, state, params)
        else:
            params = fnn.sgd_step(params, grads, float(lrs[s]))
    return params, np.array(losses), state


def assert_same_bits(a, b):
    for la, lb in zip(a, b):
        assert la.w.tobytes() == lb.w.tobytes() and la.b.tobytes() == lb.b.tobytes()


def close(actual, expected, rtol):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# Each depth compiles its own loop (params are a tuple): a few cases keep the suite fast.
@pytest.mark.parametrize(("sizes", "n", "batch_size", "dtype"), [
    ([784, 64, 10], 200, 64, np.float32),  # MNIST's net; a last batch of 8
    ([784, 64, 10], 200, 64, np.float64),
    ([31, 70, 16, 7, 5], 45, 9, np.float64),  # deeper; no partial batch
    ([12, 3], 5, 64, np.float32),  # no hidden layer; one batch smaller than batch_size
])
def test_sgd_epoch_equals_the_per_step_api(sizes, n, batch_size, dtype):
    params, x, y, order = dataset(0, sizes, n, dtype)
    lrs = np.full(steps_in_epoch(n, batch_size), 0.1)
    new, losses = sgd_epoch(params, x, y, order, batch_size, 0.1)
    want, want_losses, _ = per_step(params, x, y, order, batch_size, lrs, "numba")
    assert_same_bits(new, want)
    assert losses.dtype == dtype and losses.tobytes() == want_losses.astype(dtype).tobytes()
    blas, blas_losses, _ = per_step(params, x, y, order, batch_size, lrs, "numpy")
    for p, q in zip(new, blas):
        close(p.w, q.w, 10 * RTOL[dtype])
        close(p.b, q.b, 10 * RTOL[dtype])
    close(losses, blas_losses.astype(dtype), 10 * RTOL[dtype])


def test_sgd_epoch_is_pure_and_bit_identical_on_repeat():
    params, x, y, order = dataset(1, [784, 64, 10], 130, np.float32)
    inputs = [a.copy() for a in (x, y, order)] + [a.copy() for p in params for a in p]
    first, losses = sgd_epoch(params, x, y, order, 64, 0.1)
    again, losses2 = sgd_epoch(params, x, y, order, 64, 0.1)
    assert_same_bits(first, again)
    assert losses.tobytes() == losses2.tobytes()
    for a, a0 in zip([x, y, order] + [a for p in params for a in p], inputs):
        assert a.tobytes() == a0.tobytes()  # nothing written
    for p in first:
        assert isinstance(p, Layer) and not p.w.flags.writeable and not p.b.flags.writeable
    _, same_batch = sgd_epoch(params, x, y, np.tile(order[:64], 4), 64, 0.1)
    assert np.all(np.diff(same_batch) < 0)  # it trains: four steps on one batch


def test_per_step_learning_rates_and_any_order():
    params, x, y, _ = dataset(2, [20, 8, 3], 30, np.float64)
    order = np.array([5, 5, 29, 0, 7, 7, 7, 1, 2, 3, 4])  # repeats, any subset
    lrs = np.array([0.5, 0.1, 0.01])
    new, _ = sgd_epoch(params, x, y, order, 4, lrs)
    want, _, _ = per_step(params, x, y, order, 4, lrs, "numba")
    assert_same_bits(new, want)
    unchecked, _ = sgd_epoch_unchecked(params, x, y.astype(np.int64), order, 4, lrs)
    assert_same_bits(unchecked, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_momentum_epoch_equals_the_optimizer(dtype):
    params, x, y, order = dataset(3, [784, 64, 10], 150, dtype)
    lrs = np.full(3, 0.05)
    new, velocity, losses = momentum_epoch(params, None, x, y, order, 64, 0.05, 0.9)
    want, want_losses, state = per_step(params, x, y, order, 64, lrs, "numba", 0.9)
    assert_same_bits(new, want)
    assert_same_bits(velocity, state.velocity)
    assert losses.tobytes() == want_losses.astype(dtype).tobytes()
    # A second epoch resumes from the velocity, as the optimizer's state does.
    new2, velocity2, _ = momentum_epoch(new, velocity, x, y, order[:64], 64, 0.05, 0.9)
    opt = sgd(0.05, 0.9)
    _, grads = fnn.backprop(want, x[order[:64]], y[order[:64]])
    want2, state2 = opt.update(grads, state._replace(count=0), want)
    assert_same_bits(new2, want2)
    assert_same_bits(velocity2, state2.velocity)


BAD = [
    # (argument overrides, exception, message)
    ({"x": "x32_as_64"}, TypeError, r"x: expected dtype float32"),
    ({"x": "x_1d"}, ValueError, r"x: expected a dataset of shape \(n, 6\)"),
    ({"y": "y_short"}, ValueError, r"y: expected shape \(10,\)"),
    ({"y": "y_big"}, ValueError, r"y: expected labels in \[0, 2\]"),
    ({"order": np.array([0.0, 1.0])}, TypeError, r"order: expected integer row indices, got dtype float64"),
    ({"order": np.array([], dtype=int)}, ValueError, r"order: expected a non-empty 1-d array"),
    ({"order": np.array([[0, 1]])}, ValueError, r"order: expected a non-empty 1-d array"),
    ({"order": np.array([0, 10])}, ValueError, r"order: expected row indices in \[0, 9\], got 10"),
    ({"order": np.array([-1, 0])}, ValueError, r"order: expected row indices in \[0, 9\], got -1"),
    ({"batch_size": 0}, ValueError, r"batch_size: expected an int >= 1, got 0"),
    ({"batch_size": 2.0}, TypeError, r"batch_size: expected an int, got float"),
    ({"lr": -0.1}, ValueError, r"lr: expected a finite, positive float"),
    ({"lr": np.array([0.1, 0.1])}, ValueError, r"lr: expected one learning rate per step, 4, got 2"),
    ({"lr": np.array([0.1, 0.1, np.nan, 0.1])}, ValueError, r"lr\[2\]: expected a finite, positive float"),
    ({"params": "not params"}, TypeError, r"params: expected a tuple of fnn.Layer"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD, ids=lambda v: str(v)[:30])
def test_sgd_epoch_rejects_bad_input(change, error, message):
    params, x, y, _ = dataset(4, [6, 4, 3], 10)
    args = {"params": params, "x": x, "y": y, "order": np.arange(10), "batch_size": 3,
            "lr": 0.1}
    special = {"x32_as_64": x.astype(np.float64), "x_1d": x[0], "y_short": y[:9],
               "y_big": np.full(10, 3)}
    args.update({k: special.get(v, v) if isinstance(v, str) else v for k, v in change.items()})
    with pytest.raises(error, match=message):
        sgd_epoch(**args)


def test_momentum_epoch_rejects_bad_momentum_and_velocity():
    params, x, y, order = dataset(5, [6, 4, 3], 10)
    for momentum, error in ((0.0, ValueError), (1.0, ValueError), ("0.9", TypeError)):
        with pytest.raises(error, match=r"momentum: expected a float in \(0, 1\)"):
            momentum_epoch(params, None, x, y, order, 3, 0.1, momentum)
    with pytest.raises(ValueError, match=r"velocity: expected 2 layers like params, got 1"):
        momentum_epoch(params, params[:1], x, y, order, 3, 0.1, 0.9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_sgd_epoch_rejects_a_non_finite_row_it_uses_and_ignores_rows_it_does_not(bad):
    params, x, y, _ = dataset(6, [6, 4, 3], 10)
    x[7, 2] = bad
    with pytest.raises(ValueError, match=rf"x: expected finite values, got {bad} at index "
                                         r"\(7, 2\)"):
        sgd_epoch(params, x, y, np.array([0, 1, 2, 3, 7, 4]), 2, 0.1)
    with pytest.raises(ValueError, match=r"x: expected finite values, .* at index \(7, 2\)"):
        momentum_epoch(params, None, x, y, np.arange(10), 3, 0.1, 0.9)
    # Rows that the order leaves out are never read: the epoch runs as on clean data.
    clean = x.copy()
    clean[7] = 0
    order = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9])
    assert_same_bits(sgd_epoch(params, x, y, order, 2, 0.1)[0],
                     sgd_epoch(params, clean, y, order, 2, 0.1)[0])



# Compiled afresh in a subprocess (a kernel loaded from the cache brings its callees
# inside its own code, so only a compile shows which were needed).
_PRUNED = textwrap.dedent("""
    import json, numpy as np, fnn
    from fnn import kernels
    from fnn.epoch import sgd_epoch
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 20)), rng.integers(0, 3, 40)
    sgd_epoch(fnn.init_params(0, (20, 16, 8, 3), dtype=np.float64), x, y, np.arange(40), 8, 0.1)
    print(json.dumps({name: len(getattr(kernels, name).overloads) for name in
                      ("_activate_rows", "_act_backward_rows", "_drop_rows", "_times_rows",
                       "_update", "_relu_mask_rows", "train_epoch")}))
""")


def test_the_notebooks_net_compiles_no_code_of_other_activations_or_dropout(tmp_path):
    # ReLU hidden layers, identity output, no dropout: the epoch takes None for the codes
    # and the thresholds, and numba prunes the branches that need them; plain SGD takes
    # None for the optimizer's constants, so the optimizers' update is not compiled either.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PRUNED], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = json.loads(proc.stdout.strip().splitlines()[-1])
    assert compiled == {"_activate_rows": 0, "_act_backward_rows": 0, "_drop_rows": 0,
                        "_times_rows": 0, "_update": 0, "_relu_mask_rows": 1,
                        "train_epoch": 1}
