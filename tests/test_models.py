"""Models as data: every activation x loss x dropout, on both backends, against
independent truth.

Truths: a forward pass written here from the textbook formulas (PyTorch's definitions:
GELU's tanh approximation, MSELoss and BCEWithLogitsLoss as means over all elements),
differentiated by central differences in float64; the two backends against each
other; digests of the outputs of the code before activations and losses became data
(commit 4274175), which the defaults must still give bit for bit; planted bugs in
derivatives and in dropout's backward, which the gradient check must catch.
"""

from __future__ import annotations

import hashlib
import math
from functools import partial

import numpy as np
import pytest

import fnn
from fnn.activations import ACTIVATIONS, Activation
from fnn.backends import NUMPY_OPS
from fnn.dropout import drop_multiplier, fold_key
from fnn.losses import LOSS_FUNCTIONS
from fnn.mlp import backprop_unchecked
from fnn.model import make_model

ACTS = tuple(ACTIVATIONS)
LOSSES = tuple(LOSS_FUNCTIONS)
BACKENDS = ("numpy", "numba")


# ---------------------------------------------------------------- the textbook net
def _act(name, z):
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))
    assert name == "identity"
    return z


def _loss(name, out, y):
    if name == "softmax_cross_entropy":
        m = out.max(axis=1, keepdims=True)
        lse = np.log(np.exp(out - m).sum(axis=1)) + m[:, 0]
        return float(np.mean(lse - out[np.arange(len(y)), y]))
    if name == "mse":
        return float(np.mean((out - y) ** 2))
    assert name == "sigmoid_binary_cross_entropy"
    p = 1.0 / (1.0 + np.exp(-out))
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def textbook_loss(params, x, y, act, loss, drops=None):
    h = x
    for l, (w, b) in enumerate(params):
        if drops is not None and drops[l] is not None:
            h = h * drops[l]
        z = h @ w + b
        h = z if l == len(params) - 1 else _act(act, z)
    return _loss(loss, h, y)


def central_differences(f, params, h=1e-6):
    """d f(params) / d params by central differences, entry by entry (float64)."""
    grads = []
    for l, layer in enumerate(params):
        pair = []
        for field, a in zip("wb", layer):
            g = np.zeros_like(a)
            for i in np.ndindex(a.shape):
                plus, minus = a.copy(), a.copy()
                plus[i] += h
                minus[i] -= h
                g[i] = (f(_replace(params, l, field, plus))
                        - f(_replace(params, l, field, minus))) / (2 * h)
            pair.append(g)
        grads.append(pair)
    return grads


def problem(seed, depth, batch, loss, dtype="float64", d_out=3):
    rng = np.random.default_rng(seed)
    sizes = [*[6, 5, 4, 4, 3][:depth], d_out]
    params = fnn.init_params(rng, sizes, dtype=dtype)
    params = tuple(fnn.Layer(p.w, rng.normal(0, 0.3, p.b.shape).astype(dtype)) for p in params)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, d_out, batch)
    elif loss == "mse":
        y = rng.standard_normal((batch, d_out)).astype(dtype)
    else:
        y = (rng.random((batch, d_out)) > 0.5).astype(dtype)
    return params, x, y


def close(got, want, rtol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    atol = rtol * max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def _replace(params, layer, field, value):
    out = list(params)
    out[layer] = params[layer]._replace(**{field: value})
    return tuple(out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_backprop_matches_central_differences_of_the_textbook_net(act, loss, backend):
    for depth, batch in ((1, 1), (2, 5), (3, 1), (4, 7)):
        params, x, y = problem(depth * 10 + batch, depth, batch, loss)
        value, grads = fnn.backprop(params, x, y, activation=act, loss=loss, backend=backend)
        assert value == pytest.approx(textbook_loss(params, x, y, act, loss), rel=1e-12)

        want = central_differences(partial(lambda p, x, y: textbook_loss(p, x, y, act, loss),
                                           x=x, y=y), params)
        for g, (gw, gb) in zip(grads, want):
            close(g.w, gw, 1e-6)
            close(g.b, gb, 1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_the_backends_agree(act, loss, dtype):
    rtol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for depth, batch, dropout in ((1, 1, 0.0), (3, 9, 0.0), (4, 33, (0.2, 0.5, 0.3, 0.4))):
        params, x, y = problem(depth, depth, batch, loss, dtype, d_out=10)
        kw = dict(activation=act, loss=loss, dropout=dropout, key=(7, depth))
        v1, g1 = fnn.backprop(params, x, y, backend="numpy", **kw)
        v2, g2 = fnn.backprop(params, x, y, backend="numba", **kw)
        assert v1.dtype == v2.dtype == np.dtype(dtype)
        assert float(v2) == pytest.approx(float(v1), rel=rtol)
        for a, b in zip(g1, g2):
            assert a.w.dtype == b.w.dtype == np.dtype(dtype)
            close(b.w, a.w, rtol)
            close(b.b, a.b, rtol)
        close(fnn.forward(params, x, backend="numba", **kw),
              fnn.forward(params, x, backend="numpy", **kw), rtol)
        pe = [fnn.per_example_grads(params, x, y, backend=be, **kw) for be in BACKENDS]
        for a, b, g in zip(*pe, g1):
            close(b.w, a.w, rtol)
            close(a.w.mean(axis=0), g.w, 10 * rtol)  # the mean of per-example is backprop's


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeats_are_bit_identical_and_inputs_untouched(backend):
    for act in ACTS:
        for loss in LOSSES:
            params, x, y = problem(3, 3, 11, loss, "float32")
            before = [a.copy() for a in (x, y)]
            kw = dict(activation=act, loss=loss, dropout=0.3, key=5, backend=backend)
            v1, g1 = fnn.backprop(params, x, y, **kw)
            v2, g2 = fnn.backprop(params, x, y, **kw)
            assert v1.tobytes() == v2.tobytes()
            assert all(a.w.tobytes() == b.w.tobytes() for a, b in zip(g1, g2))
            assert all(np.array_equal(a, b) for a, b in zip(before, (x, y)))


# Outputs of the code before models became data (commit 4274175); the defaults must
# reproduce them bit for bit. Pinned as digests: what runs in fnn's own compiled loops
# (numba backprop, forward, sgd_epoch, fit), the same bits on the AVX-512 and the AVX2
# machines this was run on. What runs through NumPy's BLAS and ufuncs (the numpy
# backend, per-example gradients' softmax) changes bits with the CPU's kernels, so it is
# pinned against that code itself, kept below as it stood, run on this machine.
BEFORE = {
    "backprop-float32-numba": "608ec034c2eacedf", "forward-float32-numba": "dd156b6816a42da4",
    "sgd_epoch-float32": "9c1755a21b8c2121", "fit-float32": "f946f7d7e4bedea8",
    "backprop-float64-numba": "ee61f6b91494edef", "forward-float64-numba": "f1983de7e7d13819",
    "sgd_epoch-float64": "04acc19ad46b1152", "fit-float64": "dbe6548e746ed8c1",
}


def _digest(*arrays):
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


def _before_numpy(params, x, y):
    """The numpy backend's forward, backprop and per-example gradients as commit 4274175
    wrote them (fnn/backends.py, mlp.py, per_example.py), operation for operation."""
    acts = [x]
    for l, (w, b) in enumerate(params):
        z = acts[-1] @ w
        z += b
        if l < len(params) - 1:
            np.maximum(z, 0, out=z)
        acts.append(z)
    logits, n = acts[-1], x.shape[0]
    s = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(s).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    value = float((lse[:, 0] - s[rows, y]).mean(dtype=np.float64))
    delta = np.exp(s - lse)
    delta[rows, y] -= 1
    own = delta.copy()  # per example: p - onehot(y), not divided by n
    delta /= n
    grads, per_example = [], []
    for l in range(len(params) - 1, -1, -1):
        grads.append((acts[l].T @ delta, delta.sum(axis=0)))
        per_example.append((acts[l][:, :, None] * own[:, None, :], own))
        if l > 0:
            delta = delta @ params[l].w.T
            delta *= acts[l] > 0
            own = own @ params[l].w.T
            own *= acts[l] > 0
    return logits, value, grads[::-1], per_example[::-1]


@pytest.mark.parametrize("explicit", [False, True])
def test_defaults_reproduce_the_outputs_from_before_models_were_data(explicit):
    kw = dict(activation="relu", loss="softmax_cross_entropy", dropout=0.0) if explicit else {}
    rng = np.random.default_rng(42)
    got = {}
    for dt in ("float32", "float64"):
        p = fnn.init_params(1, [20, 16, 8, 5], dtype=dt)
        x = (rng.random((13, 20)) * (rng.random((13, 20)) > 0.5)).astype(dt)
        y = rng.integers(0, 5, 13)
        v, g = fnn.backprop(p, x, y, backend="numba", **kw)
        got[f"backprop-{dt}-numba"] = _digest(np.asarray(v), *[a for l in g for a in l])
        got[f"forward-{dt}-numba"] = _digest(fnn.forward(p, x, backend="numba", **kw))
        q, losses = fnn.sgd_epoch(p, x, y, np.arange(13)[::-1].copy(), 4, 0.1, **kw)
        got[f"sgd_epoch-{dt}"] = _digest(losses, *[a for l in q for a in l])
        cfg = fnn.TrainConfig(sizes=(20, 16, 8, 5), epochs=2, batch_size=4, dtype=dt,
                              optimizer="nesterov", val_fraction=0.0, **kw)
        st = fnn.fit(None, (x, y, x, y), cfg)
        got[f"fit-{dt}"] = _digest(st.history.loss, st.history.eval_loss,
                                   *[a for l in st.params for a in l])

        logits, value, grads, per_example = _before_numpy(p, x, y)
        assert fnn.forward(p, x, backend="numpy", **kw).tobytes() == logits.tobytes()
        v, g = fnn.backprop(p, x, y, backend="numpy", **kw)
        assert np.asarray(v).tobytes() == np.asarray(value, dtype=dt).tobytes()
        pe = fnn.per_example_grads(p, x, y, backend="numpy", **kw)
        for want, have in ((grads, g), (per_example, pe)):
            for (w, b), layer in zip(want, have):
                assert layer.w.tobytes() == w.tobytes() and layer.b.tobytes() == b.tobytes()
    assert got == BEFORE


# ---------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
def test_gradient_checks_pass_for_every_combination(act, loss, backend):
    record = ACTIVATIONS[act]
    for depth, batch, dropout in ((2, 1, 0.0), (3, 6, 0.4)):
        params, x, y = problem(depth, depth, batch, loss)
        kw = dict(activation=act, loss=loss, dropout=dropout, key=3, backend=backend)
        report = fnn.assert_gradients(params, x, y, per_example=True, **kw)
        if not record.kinks:  # kink handling only where there are kinks
            assert all(t.kinks == 0 and t.rechecked == 0 for t in report.tensors)
        if record.analytic:
            fnn.assert_gradients(params, x, y, mode="complex-step", **kw)


def test_kinks_are_found_and_rechecked_for_relu_and_leaky_relu():
    for act in ("relu", "leaky_relu"):
        rng = np.random.default_rng(0)
        params = fnn.init_params(rng, [4, 8, 3], dtype="float64")
        x = rng.standard_normal((40, 4))
        # Put a hidden unit's pre-activation within a step of its kink.
        x[0] = np.linalg.lstsq(params[0].w.T[:1], np.array([1e-7]), rcond=None)[0]
        report = fnn.assert_gradients(params, x, rng.integers(0, 3, 40), activation=act)
        assert sum(t.kinks for t in report.tensors) > 0


def _mutant(act, derivative):
    base = ACTIVATIONS[act]
    return Activation(f"{act}-mutant", base.forward, derivative, base.kinks,
                      base.linear_pieces, base.analytic, base.zero_preserving)


MUTANT_ACTIVATIONS = {
    "tanh' = 1 - a": ("tanh", lambda z, a: 1 - a),
    "sigmoid' missing (1 - a)": ("sigmoid", lambda z, a: a),
    "gelu' without its second term": (
        "gelu", lambda z, a: 0.5 * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))),
}


@pytest.mark.parametrize("bug", MUTANT_ACTIVATIONS)
def test_planted_activation_bugs_are_caught(bug):
    act, derivative = MUTANT_ACTIVATIONS[bug]
    params, x, y = problem(1, 3, 5, "softmax_cross_entropy")
    grad_fn = partial(fnn.backprop, activation=_mutant(act, derivative), backend="numpy")
    for mode in ("full", "complex-step"):
        report = fnn.check_gradients(params, x, y, activation=act, grad_fn=grad_fn, mode=mode)
        assert not report.ok, (bug, mode)
        assert report.loss_ok  # the forward is right: only gradients are wrong
    # The same mutant record, checked as the model itself, passes its own forward only
    # if its derivative is right: it is not.
    assert not fnn.check_gradients(params, x, y, activation=_mutant(act, derivative),
                                   grad_fn=grad_fn).ok


def test_mse_gradient_missing_its_factor_2_is_caught():
    mse = LOSS_FUNCTIONS["mse"]
    half = mse._replace(name="mse-mutant", code=-1,
                        example_grad=lambda out, y: (out - y) / out.shape[1])
    params, x, y = problem(2, 2, 4, "mse")
    grad_fn = partial(fnn.backprop, loss=half, backend="numpy")
    report = fnn.check_gradients(params, x, y, loss="mse", grad_fn=grad_fn)
    assert not report.ok and report.loss_ok
    assert report.tensors[0].mean.median_ratio == pytest.approx(0.5, rel=1e-6)


def _dropout_bug(kind):
    def backward(delta, w, z, a, a_in, act, drop):
        if drop is not None:
            drop = np.ones_like(drop) if kind == "no mask" else (drop > 0).astype(drop.dtype)
        return NUMPY_OPS.backward(delta, w, z, a, a_in, act, drop)

    ops = NUMPY_OPS._replace(backward=backward)

    def grad_fn(params, x, y):
        model = make_model(len(params), "tanh", "softmax_cross_entropy", 0.5)
        return backprop_unchecked(ops, params, model, x, y, fold_key(9))

    return grad_fn


@pytest.mark.parametrize("kind", ["no mask", "no 1/(1-p) scaling"])
def test_dropout_backward_bugs_are_caught(kind):
    params, x, y = problem(4, 3, 8, "softmax_cross_entropy")
    kw = dict(activation="tanh", dropout=0.5, key=9)
    assert fnn.check_gradients(params, x, y, **kw).ok
    report = fnn.check_gradients(params, x, y, grad_fn=_dropout_bug(kind), **kw)
    assert not report.ok and report.loss_ok


def test_a_user_defined_activation_runs_on_both_backends_and_in_the_checker():
    softsign = Activation("softsign", lambda z: z / (1 + np.abs(z)),
                          lambda z, a: 1 / (1 + np.abs(z)) ** 2, analytic=False)
    params, x, y = problem(5, 3, 6, "softmax_cross_entropy")
    g = [fnn.backprop(params, x, y, activation=softsign, backend=be)[1] for be in BACKENDS]
    for a, b in zip(*g):
        close(b.w, a.w, 1e-12)
    fnn.assert_gradients(params, x, y, activation=softsign)
    with pytest.raises(ValueError, match=r"complex-step.*softsign"):
        fnn.check_gradients(params, x, y, activation=softsign, mode="complex-step")
    with pytest.raises(ValueError, match="compiled epoch takes the built-in"):
        fnn.sgd_epoch(params, x, y, np.arange(6), 2, 0.1, activation=softsign)


# ---------------------------------------------------------------- dropout
def test_dropout_masks_are_a_pure_function_of_the_key_at_the_right_rate():
    k = fold_key((1, 2))
    a = drop_multiplier(k, 0, (400, 250), 0.3, np.dtype(np.float32))
    assert a.tobytes() == drop_multiplier(fold_key((1, 2)), 0, (400, 250), 0.3,
                                          np.dtype(np.float32)).tobytes()
    assert not np.array_equal(a, drop_multiplier(fold_key((1, 3)), 0, (400, 250), 0.3,
                                                 np.dtype(np.float32)))
    assert not np.array_equal(a, drop_multiplier(k, 1, (400, 250), 0.3, np.dtype(np.float32)))
    assert set(np.unique(a)) == {np.float32(0), np.float32(1 / 0.7)}
    n = a.size
    dropped = int((a == 0).sum())
    assert abs(dropped - 0.3 * n) < 5 * math.sqrt(n * 0.3 * 0.7)  # within sampling error


def test_dropout_is_applied_only_with_a_key_and_the_same_on_both_backends():
    params, x, _ = problem(6, 3, 20, "softmax_cross_entropy", "float32", d_out=10)
    plain = fnn.forward(params, x)
    assert np.array_equal(fnn.forward(params, x, dropout=0.5), plain)  # evaluation: none
    outs = [fnn.forward(params, x, dropout=0.5, key=1, activation="relu", backend=be)
            for be in BACKENDS]
    close(outs[1], outs[0], 1e-5)
    assert not np.allclose(outs[0], plain)
    # The masks themselves are the same on both backends: so are the dead units.
    g = [fnn.backprop(params, x, np.zeros(20, int), dropout=(0.5, 0.5, 0.5), key=2,
                      backend=be)[1] for be in BACKENDS]
    assert np.array_equal(g[0][0].w == 0, g[1][0].w == 0)


def test_sgd_epoch_with_dropout_equals_the_loop_of_backprop_steps():
    for act, loss in (("relu", "softmax_cross_entropy"), ("gelu", "mse"),
                      ("tanh", "sigmoid_binary_cross_entropy")):
        params, x, y = problem(7, 3, 21, loss, "float32", d_out=4)
        order = np.random.default_rng(0).permutation(21)
        kw = dict(activation=act, loss=loss, dropout=(0.2, 0.5, 0.3))
        got, losses = fnn.sgd_epoch(params, x, y, order, 4, 0.05, key=(3, 4), **kw)
        want, want_losses = params, []
        for s, start in enumerate(range(0, 21, 4)):
            idx = order[start:start + 4]
            v, g = fnn.backprop(want, x[idx], y[idx], key=(3, 4, s), backend="numba", **kw)
            want = fnn.sgd_step(want, g, 0.05)
            want_losses.append(v)
        assert np.array_equal(losses, np.array(want_losses))
        for a, b in zip(got, want):
            assert a.w.tobytes() == b.w.tobytes() and a.b.tobytes() == b.b.tobytes()


def _stop_at(step):
    def callback(event):
        if event.kind == "step" and event.step == step:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_fit_with_dropout_resumes_bit_identically_and_compiled_equals_per_step(optimizer):
    rng = np.random.default_rng(3)
    x = rng.random((90, 12)).astype(np.float32)
    y = rng.integers(0, 4, 90)
    cfg = fnn.TrainConfig(sizes=(12, 16, 8, 4), epochs=3, batch_size=16, optimizer=optimizer,
                          activation=("tanh", "relu"), dropout=(0.1, 0.5, 0.25))
    full = fnn.fit(None, (x, y), cfg)
    stepwise = fnn.fit(None, (x, y), cfg, callbacks=[lambda e: None])  # the per-step loop
    with pytest.raises(fnn.TrainingInterrupted) as info:
        fnn.fit(None, (x, y), cfg, callbacks=[_stop_at(8)])  # mid-epoch 2
    resumed = fnn.fit(None, (x, y), resume=info.value.state)
    for other in (stepwise, resumed):
        assert np.array_equal(other.history.loss, full.history.loss)
        for a, b in zip(other.params, full.params):
            assert a.w.tobytes() == b.w.tobytes()
    no_drop = fnn.fit(None, (x, y), cfg._replace(dropout=0.0))
    assert not np.array_equal(no_drop.history.loss, full.history.loss)


# ---------------------------------------------------------------- regression and losses
def test_a_tanh_net_fits_a_smooth_function_with_mse():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (2000, 2))
    y = (np.sin(x[:, :1]) * np.cos(x[:, 1:])).astype(np.float64)
    cfg = fnn.TrainConfig(sizes=(2, 32, 32, 1), epochs=60, batch_size=32, lr=0.05,
                          optimizer="nesterov", activation="tanh", loss="mse",
                          dtype="float64", val_fraction=0.0)
    state = fnn.fit(None, (x[:1500], y[:1500], x[1500:], y[1500:]), cfg)
    baseline = float(np.mean((y[1500:] - y[:1500].mean()) ** 2))
    assert state.history.eval_loss[-1] < 0.02 * baseline  # explains > 98 % of the variance
    pred = fnn.forward(state.params, x[1500:], activation="tanh", loss="mse")
    assert float(np.mean((pred - y[1500:]) ** 2)) == pytest.approx(state.history.eval_loss[-1])
    assert math.isnan(state.history.eval_accuracy[-1])  # no classes, no accuracy
    with pytest.raises(ValueError, match="loss: predict and accuracy are defined for"):
        fnn.predict(state.params, x, activation="tanh", loss="mse")


def test_binary_cross_entropy_predicts_one_decision_per_output():
    params, x, y = problem(8, 2, 9, "sigmoid_binary_cross_entropy")
    kw = dict(loss="sigmoid_binary_cross_entropy")
    out = fnn.forward(params, x, **kw)
    assert np.array_equal(fnn.predict(params, x, **kw), (out > 0).astype(np.int64))
    assert fnn.accuracy(params, x, y, **kw) == pytest.approx(np.mean((out > 0) == (y > 0.5)))


# ---------------------------------------------------------------- bad input
P, X, Y = problem(9, 3, 4, "softmax_cross_entropy")
BAD = [
    (dict(activation="swish"), ValueError, r"activation: expected one of \('relu', 'leaky_relu', 'tanh', 'sigmoid', 'gelu', 'identity'\)"),
    (dict(activation=("tanh",) * 3), ValueError, r"activation: expected one name per hidden layer \(2\), got 3"),
    (dict(activation=("tanh", "nope")), ValueError, r"activation\[1\]: expected one of"),
    (dict(activation=3), TypeError, r"activation: expected a name"),
    (dict(loss="hinge"), ValueError, r"loss: expected one of \('softmax_cross_entropy', 'mse', 'sigmoid_binary_cross_entropy'\), got 'hinge'"),
    (dict(loss="mse"), TypeError, r"y: expected float targets of shape \(4, 3\) for loss 'mse', got dtype int64"),
    (dict(dropout=1.0, key=1), ValueError, r"dropout: expected a value in \[0.0, 1.0\), got 1.0"),
    (dict(dropout=-0.1, key=1), ValueError, r"dropout: expected a value in \[0.0, 1.0\)"),
    (dict(dropout=(0.1, 0.2, 0.3, 0.4), key=1), ValueError, r"dropout: expected one rate per hidden layer \(2\), or 3"),
    (dict(dropout=0.5), ValueError, r"key: expected an int or a tuple of ints to draw the dropout masks"),
    (dict(dropout=0.5, key=-1), ValueError, r"key: expected an int in \[0, 2\*\*64\)"),
    (dict(dropout=0.5, key=1.5), TypeError, r"key: expected an int, got float"),
]


@pytest.mark.parametrize(("kw", "exc", "msg"), BAD)
@pytest.mark.parametrize("fn", ["backprop", "per_example_grads", "check_gradients"])
def test_bad_model_arguments_are_named(fn, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        getattr(fnn, fn)(P, X, Y, **kw)


def test_bad_targets_are_named():
    with pytest.raises(TypeError, match=r"y: expected integer class labels .*float targets train with loss='mse'"):
        fnn.loss(P, X, Y.astype(float))
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 3\), one row of 3 targets"):
        fnn.loss(P, X, np.zeros((4, 2)), loss="mse")
    with pytest.raises(ValueError, match=r"y: expected finite targets for loss 'mse', got nan"):
        fnn.loss(P, X, np.full((4, 3), np.nan), loss="mse")
    with pytest.raises(ValueError, match=r"y: expected finite targets in \[0, 1\] for loss 'sigmoid_binary_cross_entropy', got 2.0"):
        fnn.loss(P, X, np.full((4, 3), 2.0), loss="sigmoid_binary_cross_entropy")
    with pytest.raises(ValueError, match=r"config.activation: expected one of"):
        fnn.fit(None, (X, Y), fnn.TrainConfig(sizes=(6, 5, 3), activation="nope"))
    with pytest.raises(TypeError, match=r"data.y: expected float targets"):
        fnn.fit(None, (X, Y), fnn.TrainConfig(sizes=(6, 5, 3), loss="mse", dtype="float64"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_refuses_outputs_that_overflow(backend):
    params = fnn.init_params(0, [4, 3], dtype="float32")
    x = np.full((2, 4), 3e38, dtype=np.float32)
    with pytest.raises(ValueError, match=r"x: expected inputs whose outputs are finite"):
        fnn.predict(params, x, backend=backend)
    with pytest.raises(ValueError, match=r"x: expected inputs whose outputs are finite"):
        fnn.accuracy(params, x, [0, 1], backend=backend)
    assert not np.isfinite(fnn.loss(params, x, [0, 1], backend=backend))  # IEEE, documented
