"""The core contract: init, forward, loss, backprop, sgd_step, on both compute paths.

Independent truths: the origin notebook's gradient (`fnn.reference`), central finite
differences in float64, and hand-computed values.

Tolerances. The issue fixes rtol 1e-5 (float32) and 1e-12 (float64). The two paths and
the reference sum in different orders, so an entry that is a near-cancelling sum has a
large *relative* error while its absolute error is a few ulps of the tensor's scale;
`close` therefore allows atol = rtol * max|reference| per tensor.
"""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn.params import Layer

BACKENDS = ["numba", "numpy"]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def problem(seed, sizes, batch, dtype=np.float64, sparse=False):
    rng = np.random.default_rng(seed)
    params = fnn.init_params(rng, sizes, dtype=dtype)
    # Non-zero biases, so bias gradients and the bias path are exercised.
    params = tuple(Layer(p.w, rng.normal(0, 0.1, p.b.shape).astype(dtype)) for p in params)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if sparse:  # MNIST-like: most inputs exactly zero
        x[rng.random(x.shape) < 0.8] = 0
    y = rng.integers(0, sizes[-1], batch)
    return params, x, y


NETS = [[5, 3], [17, 9, 4], [784, 64, 10], [31, 16, 16, 7, 5], [12, 33, 1, 8, 2]]
BATCHES = [1, 7, 64]


# ---------------------------------------------------------------- init_params
def test_init_params_shapes_glorot_and_zero_bias():
    params = fnn.init_params(0, [784, 64, 10])
    assert isinstance(params, tuple) and len(params) == 2
    for layer, (n_in, n_out) in zip(params, [(784, 64), (64, 10)]):
        assert isinstance(layer, fnn.Layer)
        assert layer.w.shape == (n_in, n_out) and layer.b.shape == (n_out,)
        assert layer.w.dtype == np.float32 and layer.b.dtype == np.float32
        limit = np.sqrt(6 / (n_in + n_out))
        assert np.abs(layer.w).max() <= limit
        # Uniform(-a, a) has variance a^2 / 3; with >= 640 draws the estimate is within 15%.
        assert layer.w.var() == pytest.approx(limit**2 / 3, rel=0.15)
        assert not layer.b.any()


def test_init_params_seeded_bit_identical_and_generator():
    a = fnn.init_params(3, [20, 7, 4], dtype=np.float64)
    b = fnn.init_params(3, [20, 7, 4], dtype=np.float64)
    c = fnn.init_params(np.random.default_rng(3), [20, 7, 4], dtype=np.float64)
    d = fnn.init_params(4, [20, 7, 4], dtype=np.float64)
    for la, lb, lc in zip(a, b, c):
        assert la.w.tobytes() == lb.w.tobytes() == lc.w.tobytes()
    assert not np.array_equal(a[0].w, d[0].w)
    f32 = fnn.init_params(3, [20, 7, 4])
    np.testing.assert_array_equal(f32[0].w, a[0].w.astype(np.float32))


# ---------------------------------------------------------------- purity
def test_params_and_grads_are_read_only():
    params, x, y = problem(0, [6, 5, 3], 4)
    _, grads = fnn.backprop(params, x, y)
    new = fnn.sgd_step(params, grads, 0.1)
    for tree in (fnn.init_params(0, [6, 5, 3]), grads, new):
        for layer in tree:
            for a in layer:
                with pytest.raises(ValueError, match="read-only"):
                    a[...] = 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_function_mutates_its_inputs(backend):
    params, x, y = problem(1, [9, 6, 3], 5, dtype=np.float32)
    # Writable copies: a function that wrote into them would go unnoticed otherwise.
    params = tuple(Layer(p.w.copy(), p.b.copy()) for p in params)
    before = [a.copy() for layer in params for a in layer], x.copy(), y.copy()
    fnn.forward(params, x, backend=backend)
    fnn.loss(params, x, y, backend=backend)
    _, grads = fnn.backprop(params, x, y, backend=backend)
    g_before = [a.copy() for layer in grads for a in layer]
    fnn.sgd_step(params, grads, 0.5)
    fnn.predict(params, x, backend=backend)
    fnn.accuracy(params, x, y, backend=backend)
    for a, b in zip([a for layer in params for a in layer], before[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, before[1])
    np.testing.assert_array_equal(y, before[2])
    for a, b in zip([a for layer in grads for a in layer], g_before):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- agreement
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("sizes", NETS, ids=lambda s: "-".join(map(str, s)))
def test_both_paths_match_reference(sizes, batch, dtype):
    params, x, y = problem(sum(sizes) + batch, sizes, batch, dtype, sparse=len(sizes) == 3)
    ref_logits, _ = fnn.reference.forward(params, x)
    ref_value, ref_grads = fnn.reference.backprop(params, x, y)
    for backend in BACKENDS:
        close(fnn.forward(params, x, backend=backend), ref_logits, RTOL[dtype])
        value, grads = fnn.backprop(params, x, y, backend=backend)
        assert value.dtype == dtype
        close(value, ref_value, RTOL[dtype])
        close(fnn.loss(params, x, y, backend=backend), ref_value, RTOL[dtype])
        assert len(grads) == len(params)
        for g, r in zip(grads, ref_grads):
            close(g.w, r.w, RTOL[dtype])
            close(g.b, r.b, RTOL[dtype])


def test_backprop_matches_central_finite_differences():
    params, x, y = problem(7, [6, 5, 4, 3], 5)
    h = 1e-6
    for backend in BACKENDS:
        _, grads = fnn.backprop(params, x, y, backend=backend)
        for l, layer in enumerate(params):
            for t, arr in enumerate(layer):
                for idx in np.ndindex(arr.shape):
                    def loss_at(delta, l=l, t=t, idx=idx, arr=arr):
                        a = arr.copy()
                        a[idx] += delta
                        p = list(params)
                        p[l] = p[l]._replace(**{p[l]._fields[t]: a})
                        return float(fnn.loss(tuple(p), x, y, backend="numpy"))
                    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
                    assert grads[l][t][idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_calls_are_bit_identical(backend, dtype):
    params, x, y = problem(11, [784, 64, 10], 33, dtype, sparse=True)
    runs = [fnn.backprop(params, x, y, backend=backend) for _ in range(3)]
    for value, grads in runs[1:]:
        assert value.tobytes() == runs[0][0].tobytes()
        for g, g0 in zip(grads, runs[0][1]):
            assert g.w.tobytes() == g0.w.tobytes() and g.b.tobytes() == g0.b.tobytes()


# ---------------------------------------------------------------- numerics
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_stays_float32(backend):
    params, x, y = problem(2, [8, 4, 3], 6, dtype=np.float32)
    assert fnn.forward(params, x, backend=backend).dtype == np.float32
    assert fnn.loss(params, x, y, backend=backend).dtype == np.float32
    value, grads = fnn.backprop(params, x, y, backend=backend)
    assert value.dtype == np.float32
    assert {a.dtype for g in grads for a in g} == {np.dtype(np.float32)}
    assert {a.dtype for g in fnn.sgd_step(params, grads, 0.1) for a in g} == {
        np.dtype(np.float32)
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_softmax_is_stable_for_huge_logits(backend):
    # One layer, identity-like: logits = x. exp(1e4) overflows a naive softmax.
    params = (Layer(np.eye(3), np.zeros(3)),)
    x = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4]])
    y = np.array([1, 2])
    value, grads = fnn.backprop(params, x, y, backend=backend)
    # Example 0 loses 1e4 exactly; example 1 ties two logits: log 2.
    assert value == pytest.approx((1e4 + np.log(2)) / 2)
    assert all(np.isfinite(a).all() for g in grads for a in g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_derivative_at_zero_is_zero(backend):
    # Hidden unit 0 has pre-activation exactly 0 for every example: it passes no gradient,
    # so its incoming weights and bias get zero gradient on both paths and in the reference.
    params, x, y = problem(5, [4, 3, 2], 6)
    w0 = params[0].w.copy()
    w0[:, 0] = 0
    b0 = params[0].b.copy()
    b0[0] = 0
    params = (Layer(w0, b0), params[1])
    for fn in (lambda: fnn.backprop(params, x, y, backend=backend), lambda: fnn.reference.backprop(params, x, y)):
        _, grads = fn()
        assert not grads[0].w[:, 0].any() and grads[0].b[0] == 0
        assert grads[0].w[:, 1:].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_example_forms(backend):
    params, x, y = problem(3, [10, 6, 4], 1)
    logits = fnn.forward(params, x[0], backend=backend)
    assert logits.shape == (4,)
    np.testing.assert_array_equal(logits, fnn.forward(params, x, backend=backend)[0])
    assert fnn.loss(params, x[0], int(y[0]), backend=backend) == fnn.loss(params, x, y, backend=backend)
    assert fnn.predict(params, x[0], backend=backend) == np.argmax(logits)


def test_predict_accuracy_and_sgd_step_values():
    params, x, y = problem(4, [10, 8, 5], 50)
    logits = fnn.reference.forward(params, x)[0]
    np.testing.assert_array_equal(fnn.predict(params, x), logits.argmax(1))
    assert fnn.accuracy(params, x, y) == pytest.approx(np.mean(logits.argmax(1) == y))
    _, grads = fnn.backprop(params, x, y)
    new = fnn.sgd_step(params, grads, 0.25)
    for p, g, n in zip(params, grads, new):
        np.testing.assert_array_equal(n.w, p.w - 0.25 * g.w)
        np.testing.assert_array_equal(n.b, p.b - 0.25 * g.b)


def test_sgd_lowers_the_loss():
    params, x, y = problem(8, [20, 16, 4], 32)
    first = fnn.loss(params, x, y)
    for _ in range(50):
        params = fnn.sgd_step(params, fnn.backprop(params, x, y)[1], 0.1)
    assert fnn.loss(params, x, y) < 0.5 * first


# ---------------------------------------------------------------- backends
def test_backend_selection():
    assert fnn.get_backend() in fnn.BACKENDS
    old = fnn.get_backend()
    try:
        fnn.set_backend("numpy")
        assert fnn.get_backend() == "numpy"
        with pytest.raises(ValueError, match=r"backend: expected one of \('numba', 'numpy'\), got 'torch'"):
            fnn.set_backend("torch")
        assert fnn.get_backend() == "numpy"
    finally:
        fnn.set_backend(old)
    params, x, _ = problem(0, [3, 2], 2)
    with pytest.raises(ValueError, match=r"backend: expected one of .* got 'cuda'"):
        fnn.forward(params, x, backend="cuda")


# ---------------------------------------------------------------- bad input
P, X, Y = problem(0, [6, 5, 3], 4)
_, G = fnn.backprop(P, X, Y)


def _bad_params():
    w, b = P[0]
    return [
        ([P[0].w, P[0].b], TypeError, r"params: expected a tuple of fnn\.Layer .* got list"),
        (P[0], TypeError, r"params: expected a tuple of fnn\.Layer .* got Layer"),
        ((), ValueError, r"params: expected at least one Layer, got an empty tuple"),
        (((w, b),), TypeError, r"params\[0\]: expected an fnn\.Layer\(w, b\), got tuple"),
        ((Layer(w.ravel(), b),), TypeError, r"params\[0\]\.w: expected a 2-d ndarray .* got ndarray of shape \(30,\)"),
        ((Layer(w, b[:3]),), ValueError, r"params\[0\]\.b: expected shape \(5,\) to match w \(6, 5\), got \(3,\)"),
        ((Layer(w.astype(int), b),), TypeError, r"params\[0\]\.w: expected dtype float32 or float64, got int"),
        ((Layer(w, b.astype(np.float32)),), TypeError, r"params\[0\]: expected w and b of the network's dtype float64, got w float64 and b float32"),
        ((P[0], P[0]), ValueError, r"params\[1\]\.w: expected 5 input rows to chain with params\[0\]\.w of shape \(6, 5\), got shape \(6, 5\)"),
    ]


@pytest.mark.parametrize("bad, exc, msg", _bad_params())
def test_bad_params(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        fnn.forward(bad, X)


def _nan_x():
    x = X.copy()
    x[2, 3] = np.nan
    return x


@pytest.mark.parametrize(
    "x, y, exc, msg",
    [
        (X[None], Y, ValueError, r"x: expected shape \(batch, 6\) or \(6,\), got \(1, 4, 6\)"),
        (X[:, :5], Y, ValueError, r"x: expected 6 features \(params\[0\]\.w has 6 rows\), got shape \(4, 5\)"),
        (X.astype(np.float32), Y, TypeError, r"x: expected dtype float64 \(the params' dtype\), got float32"),
        ((X * 255).astype(np.uint8), Y, TypeError, r"x: expected dtype float64 .* got uint8"),
        (X[:0], Y[:0], ValueError, r"x: expected at least one example, got an empty batch \(0, 6\)"),
        (_nan_x(), Y, ValueError, r"x: expected finite values, got nan at index \(2, 3\)"),
        (np.full_like(X, np.inf), Y, ValueError, r"x: expected finite values, got inf at index \(0, 0\)"),
        (X, Y[:3], ValueError, r"y: expected shape \(4,\), one label per example, got \(3,\)"),
        (X, Y.astype(float), TypeError, r"y: expected integer class labels.*got dtype float64"),
        (X, Y + 3, ValueError, r"y: expected labels in \[0, 2\] \(3 classes\), got [3-5]"),
        (X, Y - 5, ValueError, r"y: expected labels in \[0, 2\] \(3 classes\), got -[3-5]"),
    ],
)
@pytest.mark.parametrize("fn", ["loss", "backprop", "accuracy"])
def test_bad_x_and_y(fn, x, y, exc, msg):
    with pytest.raises(exc, match=msg):
        getattr(fnn, fn)(P, x, y)


def test_bad_x_in_forward_and_reference():
    with pytest.raises(ValueError, match=r"x: expected 6 features"):
        fnn.forward(P, X[:, :2])
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 2\]"):
        fnn.reference.backprop(P, X, Y + 3)


@pytest.mark.parametrize(
    "grads, lr, exc, msg",
    [
        (list(G), 0.1, TypeError, r"grads: expected a tuple of fnn\.Layer like params, got list"),
        (G[:1], 0.1, ValueError, r"grads: expected 2 layers like params, got 1"),
        ((G[0], (G[1].w, G[1].b)), 0.1, TypeError, r"grads\[1\]: expected an fnn\.Layer\(w, b\), got tuple"),
        ((G[0], Layer(G[1].w.T, G[1].b)), 0.1, ValueError, r"grads\[1\]\.w: expected shape \(5, 3\) and dtype float64 like params, got ndarray of shape \(3, 5\)"),
        ((G[0], Layer(G[1].w, G[1].b.astype(np.float32))), 0.1, ValueError, r"grads\[1\]\.b: expected shape \(3,\) and dtype float64 .* dtype float32"),
        (G, 0.0, ValueError, r"lr: expected a finite, positive float, got 0\.0"),
        (G, -1, ValueError, r"lr: expected a finite, positive float, got -1"),
        (G, float("nan"), ValueError, r"lr: expected a finite, positive float, got nan"),
        (G, float("inf"), ValueError, r"lr: expected a finite, positive float, got inf"),
        (G, "0.1", TypeError, r"lr: expected a positive float, got str '0\.1'"),
    ],
)
def test_bad_sgd_step(grads, lr, exc, msg):
    with pytest.raises(exc, match=msg):
        fnn.sgd_step(P, grads, lr)


@pytest.mark.parametrize(
    "args, exc, msg",
    [
        ((0, [784]), ValueError, r"sizes: expected at least two entries .* got \[784\]"),
        ((0, [784, 0, 10]), ValueError, r"sizes\[1\]: expected a positive width, got 0"),
        ((0, [784, -3, 10]), ValueError, r"sizes\[1\]: expected a positive width, got -3"),
        ((0, [784, 6.5, 10]), TypeError, r"sizes\[1\]: expected an int, got float 6\.5"),
        ((0, 784), TypeError, r"sizes: expected a sequence of ints .* got int"),
        ((-1, [3, 2]), ValueError, r"seed: expected a non-negative int, got -1"),
        (("0", [3, 2]), TypeError, r"seed: expected a non-negative int or a numpy\.random\.Generator, got str"),
    ],
)
def test_bad_init_params(args, exc, msg):
    with pytest.raises(exc, match=msg):
        fnn.init_params(*args)


def test_bad_dtype_in_init_params():
    with pytest.raises(TypeError, match=r"dtype: expected float32 or float64, got float16"):
        fnn.init_params(0, [3, 2], dtype=np.float16)
