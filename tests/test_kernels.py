"""The numba kernels (`fnn.kernels`) against their NumPy twins and an independent truth.

Truths: each kernel's NumPy twin in `fnn.backends.NUMPY_OPS` (BLAS), the same product
computed in extended precision (np.longdouble, no BLAS: an independent summation), and,
composed into backprop, the origin notebook's gradient `fnn.reference.backprop`.

Tolerances. The issue fixes rtol 1e-5 (float32) and 1e-12 (float64). The kernels, BLAS
and the truth sum in different orders, so an entry that is a near-cancelling sum (a
weight gradient summed over examples of both signs, a logit near 0) has a large
*relative* error while its absolute error is a few ulps of the tensor's scale. So `close`
allows atol = rtol * max|expected| per tensor: an error of rtol relative to the largest
entry, as the core tests do.

Shapes cover what the kernels special-case: MNIST's 784-64-10 at batch 64 and 256 (one
and several 64-bit mask words per column, a 784 = 12*64 + 16 input), batch 1 and odd
batches (rows go in pairs, an odd last row alone), outputs of exactly one tile, more
than one tile and a partial tile (64, 129, 200), narrow outputs (<= NARROW, computed
transposed) with batches above and below NARROW, widths of 1, and products of PACK_ROWS
rows or more over several tiles (packed, the inner dimension in blocks).
"""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn import kernels
from fnn.activations import IDENTITY, RELU
from fnn.backends import NUMPY_OPS, get_ops
from fnn.losses import SOFTMAX_XENT
from fnn.mlp import backprop_unchecked, forward_unchecked
from fnn.model import make_model
from fnn.params import Layer

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]

# (batch, d_in, d_out)
SHAPES = [
    (64, 784, 64),  # MNIST layer 1
    (64, 64, 10),  # MNIST layer 2: narrow output, batch > NARROW
    (256, 784, 64),  # four mask words per column
    (1, 784, 64),  # batch 1
    (1, 64, 10),  # narrow output, batch < NARROW
    (7, 17, 9),
    (65, 70, 1),  # an odd batch just over one word, width 1
    (3, 130, 129),  # a partial third tile
    (130, 140, 150),  # with PACKING every product packs; the weight gradient copies a.T
    (129, 3, 200),
    (200, 64, 64),
    (16, 20, 16),  # batch == NARROW == d_out: the untransposed path
    # >= PACK_ROWS rows and several tiles: right's tiles are packed, and the inner
    # dimension (300 here, 130 for the weight gradient) goes in blocks of 64-bit words.
    (130, 300, 200),
]


def close(actual, expected, rtol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def half_significand(a):
    """a rounded to half its dtype's significand bits (12 of float32's 24, 26 of float64's 53),
    so that the product of two such numbers is exact in the dtype."""
    bits = (np.finfo(a.dtype).nmant + 1) // 2
    m, e = np.frexp(a)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e).astype(a.dtype)


def sparse(rng, shape, dtype, zeros):
    """Standard normal entries, a fraction `zeros` of them exactly 0."""
    a = rng.standard_normal(shape).astype(dtype)
    a[rng.random(shape) < zeros] = 0
    return a


def operands(seed, n, d_in, d_out, dtype):
    rng = np.random.default_rng(seed)
    x = sparse(rng, (n, d_in), dtype, 0.8)  # MNIST-like: most inputs exactly zero
    w = (rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)).astype(dtype)
    b = rng.normal(0, 0.1, d_out).astype(dtype)
    delta = sparse(rng, (n, d_out), dtype, 0.5)  # ReLU-masked: about half zeros
    return x, w, b, delta


def ld(a):
    return np.asarray(a, dtype=np.longdouble)


def truth(name, x, w, b, delta, relu=False):
    """The kernel's result in extended precision, rounded to the inputs' dtype."""
    if name == "linear":
        z = ld(x) @ ld(w) + ld(b)
        out = np.where(z > 0, z, 0) if relu else z
    elif name == "relu_backward":
        out = (ld(delta) @ ld(w).T) * (x > 0)
    elif name == "weight_grad":
        out = ld(x).T @ ld(delta)
    else:
        out = ld(delta).sum(axis=0)
    return out.astype(x.dtype)


# Each kernel's NumPy twin, from the NumPy backend's Ops.
NUMPY_TWIN = {
    "linear": lambda x, w, b, relu: NUMPY_OPS.layer(x, w, b, RELU if relu else IDENTITY)[1],
    "relu_backward": lambda delta, w, a: NUMPY_OPS.backward(delta, w, a, a, a, RELU, None),
    "weight_grad": NUMPY_OPS.weight_grad,
    "bias_grad": NUMPY_OPS.bias_grad,
}


def calls(x, w, b, delta):
    """(name, kernel args, truth kwargs) for each product kernel."""
    return [
        ("linear", (x, w, b, True), {"relu": True}),
        ("linear", (x, w, b, False), {}),
        ("relu_backward", (delta, w, x), {}),
        ("weight_grad", (x, delta), {}),
        ("bias_grad", (delta,), {}),
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_kernels_match_numpy_twin_and_extended_precision(shape, dtype):
    x, w, b, delta = operands(0, *shape, dtype)
    rtol = RTOL[dtype]
    for name, args, kw in calls(x, w, b, delta):
        got = getattr(kernels, name)(*args)
        assert got.dtype == dtype, name  # float32 in, float32 out
        close(got, NUMPY_TWIN[name](*args), rtol)
        close(got, truth(name, x, w, b, delta, **kw), rtol)
        if name != "bias_grad":  # packing (where `_packs` says so) changes no bit
            packed = getattr(kernels, name)(*args, kernels.PACKING)
            assert packed.tobytes() == got.tobytes(), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_on_a_real_mnist_batch(dtype, mnist_batch):
    # Real MNIST zeros are spatially structured, unlike the random ones above.
    x = mnist_batch.astype(dtype)
    _, w, b, delta = operands(1, x.shape[0], 784, 64, dtype)
    for name, args, kw in calls(x, w, b, delta):
        close(getattr(kernels, name)(*args), truth(name, x, w, b, delta, **kw), RTOL[dtype])


@pytest.fixture(scope="module")
def mnist_batch():
    data = pytest.importorskip("fnn.data")
    try:
        ds = data.load_mnist()
    except (FileNotFoundError, ImportError) as e:  # pragma: no cover - depends on the install
        pytest.skip(f"MNIST not available: {e}")
    return ds.x_train[np.random.default_rng(0).permutation(len(ds.x_train))[:64]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_matches_numpy_twin_and_extended_precision(dtype):
    rng = np.random.default_rng(2)
    for n, k in [(1, 10), (64, 10), (7, 3), (33, 1)]:
        logits = (rng.standard_normal((n, k)) * 5).astype(dtype)
        y = rng.integers(0, k, n)
        value, delta = kernels.softmax_xent(logits, y)
        assert delta.dtype == dtype
        want_value, want_delta = NUMPY_OPS.loss_grad(logits, y, SOFTMAX_XENT)
        close(delta, want_delta, RTOL[dtype])
        assert value == pytest.approx(want_value, rel=RTOL[dtype])
        # The loss alone (`loss_into`): one formula, the same bits.
        assert get_ops("numba").loss_value(logits, y, SOFTMAX_XENT) == value
        z = ld(logits)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        assert value == pytest.approx(float((lse - z[np.arange(n), y]).mean()), rel=RTOL[dtype])


def test_relu_derivative_at_zero_is_zero():
    # A pre-activation of exactly 0 is not active: ReLU(0) = 0 and no gradient passes.
    x = np.array([[1.0, 0.0]])
    w = np.array([[1.0, -1.0], [0.0, 0.0]])
    b = np.array([-1.0, 1.0])
    np.testing.assert_array_equal(kernels.linear(x, w, b, True), [[0.0, 0.0]])
    a_prev = np.array([[0.0, 2.0]])
    got = kernels.relu_backward(np.array([[1.0, 1.0]]), np.eye(2), a_prev)
    np.testing.assert_array_equal(got, [[0.0, 1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernels_are_bit_identical_on_repeat_and_leave_inputs_alone(dtype):
    x, w, b, delta = operands(3, 64, 784, 64, dtype)
    before = [a.copy() for a in (x, w, b, delta)]
    narrow = [np.ascontiguousarray(a) for a in (x[:, :64], w[:64, :10], b[:10], delta[:, :10])]
    for name, args, _ in calls(x, w, b, delta) + calls(*narrow):
        first = getattr(kernels, name)(*args)
        assert first.tobytes() == getattr(kernels, name)(*args).tobytes(), name
    for a, a0 in zip((x, w, b, delta), before):
        assert a.tobytes() == a0.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_row_depends_only_on_its_own_inputs(dtype):
    # Rows go in pairs over the union of their non-zeros and narrow outputs are computed
    # transposed; neither may change a row's value (== ignores the sign of a zero).
    x, w, b, delta = operands(4, 37, 784, 64, dtype)
    for d_out in (64, 10):
        full = kernels.linear(x, w[:, :d_out], b[:d_out], True)
        for r in (0, 17, 36):
            single = kernels.linear(x[r : r + 1], w[:, :d_out], b[:d_out], True)
            np.testing.assert_array_equal(full[r], single[0])
    full = kernels.relu_backward(delta, w, x)
    np.testing.assert_array_equal(full[5], kernels.relu_backward(delta[5:6], w, x[5:6])[0])
    # From PACK_ROWS rows on, wide products pack right and block the inner dimension
    # (`_sparse_matmul_packed`); a single row takes the plain path: the same values.
    x, w, b, _ = operands(5, kernels.PACK_ROWS + 3, 300, 200, dtype)
    full = kernels.linear(x, w, b, False, kernels.PACKING)
    for r in (0, 64, kernels.PACK_ROWS + 2):
        np.testing.assert_array_equal(full[r], kernels.linear(x[r : r + 1], w, b, False)[0])
    # A narrow forward copies x.T a block of rows at a time (`_transpose`; blocks half as
    # tall where x's rows are 4 KiB apart): every row, in any block, keeps its value.
    for d_in in (784, 4096 // np.dtype(dtype).itemsize):
        x, w, b, _ = operands(6, 203, d_in, 10, dtype)
        full = kernels.linear(x, w, b, False)
        for r in (0, 7, 8, 15, 16, 100, 202):
            np.testing.assert_array_equal(full[r], kernels.linear(x[r : r + 1], w, b, False)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_weight_grad_sums_the_batch_in_ascending_order(shape, dtype):
    # The documented fixed order, exactly: out[i, j] = ((a[0,i]*d[0,j] + a[1,i]*d[1,j]) + ...)
    # rounded to the dtype at every step, whichever path (masked, or dense for narrow
    # outputs) the shape takes; skipped zero terms change at most the sign of a zero (==).
    # The kernels fuse each multiply-add (one rounding); NumPy below rounds the product
    # and then the sum. Operands with half the dtype's significand bits make every
    # product exact, so the two agree, while each addition still rounds and shows the order.
    # The in-place SGD update of the epoch path must give the bits of w - lr * grad.
    x, w, _, delta = operands(7, *shape, dtype)
    x, delta = half_significand(x), half_significand(delta)
    want = np.zeros((shape[1], shape[2]), dtype=dtype)
    for r in range(shape[0]):
        want = want + x[r, :, None] * delta[r, None, :]
    for packing in (None, kernels.PACKING):
        got = kernels.weight_grad(x, delta, packing)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
        lr = dtype(0.1)
        stepped = w.copy()
        kernels.weight_grad_into(x, delta, stepped, kernels.SUBTRACT, lr, packing)
        assert stepped.tobytes() == (w - lr * got).tobytes()


def test_masks_mark_exactly_the_non_zeros():
    rng = np.random.default_rng(5)
    x = sparse(rng, (130, 200), np.float32, 0.7)
    x[3, 64] = -0.0  # a negative zero is a zero
    rows, cols = kernels.row_masks(x), kernels.col_masks(x)
    assert rows.shape == (130, 4) and cols.shape == (200, 3)
    for r, i in [(0, 0), (3, 64), (129, 199), (64, 63), (77, 128)]:
        bit = (int(rows[r, i // 64]) >> (i % 64)) & 1
        assert bit == (x[r, i] != 0) == ((int(cols[i, r // 64]) >> (r % 64)) & 1)
    unpacked = np.unpackbits(rows.view(np.uint8), axis=1, bitorder="little")[:, :200]
    np.testing.assert_array_equal(unpacked, x != 0)
    assert not (int(rows[0, 3]) >> 8)  # bits past the last column stay clear


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("sizes", "batch"), [([784, 64, 10], 64), ([784, 64, 10], 1),
                                              ([31, 70, 16, 7, 5], 33)])
def test_backprop_with_the_kernels_matches_the_notebook(sizes, batch, dtype):
    rng = np.random.default_rng(6)
    params = fnn.init_params(rng, sizes, dtype=dtype)
    params = tuple(Layer(p.w, rng.normal(0, 0.1, p.b.shape).astype(dtype)) for p in params)
    x = sparse(rng, (batch, sizes[0]), dtype, 0.8)
    y = rng.integers(0, sizes[-1], batch)
    value, grads = backprop_unchecked(get_ops("numba"), params, make_model(len(params)), x, y)
    want_value, want = fnn.reference.backprop(params, x, y)
    assert value == pytest.approx(float(want_value), rel=RTOL[dtype])
    for g, gw in zip(grads, want):
        close(g.w, gw.w, RTOL[dtype])
        close(g.b, gw.b, RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("sizes", "activation", "loss"), [
    ([784, 64, 10], "relu", "softmax_cross_entropy"),  # the notebook's: codes None
    ([31, 70, 16, 7, 5], ("tanh", "relu", "gelu"), "mse"),
    ([20, 150, 3], "sigmoid", "sigmoid_binary_cross_entropy"),  # 150 rows: w's tiles packed
])
def test_a_whole_pass_gives_the_bits_of_the_layers_one_by_one(sizes, activation, loss, dtype,
                                                                monkeypatch):
    # Ops.output and loss_value (`output_into`, `loss_into`: what predict, accuracy, loss
    # and evaluation read) against the layer-by-layer pass and the loss backprop gives,
    # for one thread and a team of 3 (rows in blocks of EVAL_ROWS, shared out in 16s).
    from fnn import team as _team

    rng = np.random.default_rng(8)
    ops, model = get_ops("numba"), make_model(len(sizes) - 1, activation, loss)
    params = fnn.init_params(rng, sizes, dtype=dtype)
    params = tuple(Layer(np.asfortranarray(p.w) if l % 2 else p.w,  # either layout
                         rng.normal(0, 0.1, p.b.shape).astype(dtype))
                   for l, p in enumerate(params))
    for n in (1, 2, 17, 150, 2 * kernels.EVAL_ROWS + 35):
        x = sparse(rng, (n, sizes[0]), dtype, 0.8)
        x.flags.writeable = False
        y = (rng.integers(0, sizes[-1], n) if loss == "softmax_cross_entropy"
             else (rng.random((n, sizes[-1])) < 0.5).astype(dtype))
        want = forward_unchecked(ops, params, model, x).out
        for team in (1, 3):
            monkeypatch.setattr(_team, "team_for", lambda macs, per, team=team: team)
            out = ops.output(params, model, x)
            assert out.dtype == dtype and out.flags.c_contiguous
            np.testing.assert_array_equal(out, want)
            np.testing.assert_array_equal(np.signbit(out), np.signbit(want))
        value = ops.loss_value(out, y, model.loss)
        assert value == backprop_unchecked(ops, params, model, x, y)[0]
        assert value == pytest.approx(NUMPY_OPS.loss_value(out, y, model.loss),
                                      rel=RTOL[dtype])
    assert NUMPY_OPS.output(params, model, x) is None  # BLAS: the layers one by one


@pytest.mark.parametrize("dtype", DTYPES)
def test_each_product_is_added_with_one_rounding(dtype):
    # u = 1 + 2**-h with 2h + 1 > p, for a p-bit significand: u * u = 1 + 2**(1-h) + 2**-2h
    # needs 2h + 1 bits, so a rounded product drops the last term and -1 + u * u gives
    # 2**(1-h); a fused multiply-add keeps it exactly. Every path of the kernels (pairs of
    # rows, the narrow dense loop, forward and weight gradient) must keep it.
    h = (np.finfo(dtype).nmant + 2) // 2  # 12 for float32 (p = 24), 27 for float64 (p = 53)
    u = dtype(1 + 2.0**-h)
    fused = 2.0 ** (1 - h) + 2.0 ** (-2 * h)
    assert float(dtype(-1) + u * u) != fused  # NumPy rounds the product first
    for d_in in (1, 20):  # the masked path; and the narrow one (d_out = 1 < NARROW < d_in)
        a = np.zeros((2, d_in), dtype=dtype)
        a[:, 0] = [1, u]
        delta = np.array([[-1], [u]], dtype=dtype)
        assert kernels.weight_grad(a, delta)[0, 0] == fused
    for n in (1, 17):  # the masked path; and the narrow one (d_out = 1 < NARROW < n)
        x = np.tile(np.array([[-1, u]], dtype=dtype), (n, 1))
        w = np.array([[1], [u]], dtype=dtype)
        z = kernels.linear(x, w, np.zeros(1, dtype=dtype), False)
        np.testing.assert_array_equal(z, np.full((n, 1), fused, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_wide_net_epoch_packs_and_gives_the_bits_of_the_plain_kernels(dtype, monkeypatch):
    # A net wider than TILE at a batch of PACK_ROWS or more: the compiled epoch packs its
    # large products (`kernels.packing_for`); with packing off it must end bit-identical.
    rng = np.random.default_rng(3)
    sizes, n, batch = (300, 200, 70, 5), 400, kernels.PACK_ROWS + 5
    params = fnn.init_params(1, sizes, dtype=dtype)
    x = sparse(rng, (n, sizes[0]), dtype, 0.7)
    y = rng.integers(0, sizes[-1], n)
    order = rng.permutation(n)
    assert kernels.packing_for(200) is kernels.PACKING and kernels.packing_for(64) is None
    packed, losses = fnn.sgd_epoch(params, x, y, order, batch, 0.05)
    monkeypatch.setattr(kernels, "packing_for", lambda width: None)
    plain, plain_losses = fnn.sgd_epoch(params, x, y, order, batch, 0.05)
    assert losses.tobytes() == plain_losses.tobytes()
    for p, q in zip(packed, plain):
        assert p.w.tobytes() == q.w.tobytes() and p.b.tobytes() == q.b.tobytes()
