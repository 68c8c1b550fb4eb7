"""`fnn.epoch.run_steps`: every optimizer of `fnn.optim` in one compiled loop, bit for bit.

Truth: the loop that `fit` runs step by step, `fnn.backprop(..., backend="numba")` +
`opt.update(grads, state, params)` with the `fnn.optim` optimizer that a TrainConfig
makes (sgd, momentum, nesterov, adam; weight decay L2 for the sgd family, decoupled for
adam). The compiled loop runs the same gradient kernels and, in its update, the same
float operations in the same dtype and order (NumPy 2 rounds a Python float operand to
the array's dtype; adam's 1 - b1, 1 - b1**t and lr * weight_decay are float64 first), so
params, every optimizer state array, count and losses agree exactly. Several epochs,
each a `run_steps` call resuming from the state the previous one returned, so adam's
bias corrections run at counts past 0; the batches leave a smaller last one.

Shapes are small and few (each depth, dtype and target kind compiles its own loop).
"""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn.backends import get_ops
from fnn.dropout import fold_key
from fnn.epoch import OptimizerSpec, compiled_optimizer, run_steps, steps_in_epoch
from fnn.hyperparams import OPTIMIZERS
from fnn.mlp import backprop_unchecked
from fnn.model import make_model
from fnn.optim import AdamState, SGDState, adam, cosine_decay, sgd

SIZES = [20, 16, 8, 5]
N = 53
SEED = 11


def make_problem(dtype, loss="softmax_cross_entropy", seed=0):
    rng = np.random.default_rng(seed)
    params = fnn.init_params(rng, SIZES, dtype=dtype)
    params = tuple(fnn.Layer(p.w, rng.normal(0, 0.2, p.b.shape).astype(dtype)) for p in params)
    x = rng.standard_normal((N, SIZES[0])).astype(dtype)
    x[rng.random(x.shape) < 0.5] = 0  # sparse rows: the kernels skip the zeros
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, SIZES[-1], N)
    elif loss == "mse":
        y = rng.standard_normal((N, SIZES[-1])).astype(dtype)
    else:
        y = (rng.random((N, SIZES[-1])) > 0.5).astype(dtype)
    return params, x, y


def make_optimizer(kind, momentum, weight_decay, schedule):
    """As fnn.train.make_optimizer does for TrainConfig.optimizer == kind."""
    if kind == "adam":
        return adam(schedule, weight_decay=weight_decay)
    mu = 0.0 if kind == "sgd" else momentum
    return sgd(schedule, momentum=mu, nesterov=kind == "nesterov", weight_decay=weight_decay)


def assert_same(a, b, what):
    """Two tuples of Layer: the same dtype, shape and bits."""
    assert len(a) == len(b), what
    for l, (p, q) in enumerate(zip(a, b)):
        for name in ("w", "b"):
            u, v = getattr(p, name), getattr(q, name)
            assert u.dtype == v.dtype, f"{what}[{l}].{name}"
            np.testing.assert_array_equal(u, v, err_msg=f"{what}[{l}].{name}", strict=True)
            assert u.tobytes() == v.tobytes(), f"{what}[{l}].{name}: the sign of a zero"


def assert_same_state(got, want):
    assert type(got) is type(want) and got.count == want.count
    for field in want._fields[1:]:
        assert_same(getattr(got, field), getattr(want, field), field)


def train_both(kind, weight_decay, dtype, *, lr=0.05, schedule=None, activation="relu",
               loss="softmax_cross_entropy", dropout=0.0, batch_size=19, epochs=3,
               momentum=0.9):
    """(compiled, per-step) after `epochs` shuffled epochs: (params, state, losses) each."""
    params, x, y = make_problem(dtype, loss)
    model = make_model(len(params), activation, loss, dropout)
    spec = compiled_optimizer(kind, momentum, weight_decay)
    assert spec is not None
    schedule = schedule or (lambda step: lr)
    opt = make_optimizer(kind, momentum, weight_decay, schedule)
    rng = np.random.default_rng(SEED)
    orders = [rng.permutation(N) for _ in range(epochs)]
    y_in = y.astype(np.int64) if y.ndim == 1 else y
    inputs = [x.copy(), y.copy()] + [a.copy() for p in params for a in p]

    # Compiled: one run_steps per epoch, each resuming from the state the last returned.
    got, state, losses = params, opt.init(params), []
    for order in orders:
        steps = steps_in_epoch(N, batch_size)
        lrs = np.array([float(schedule(state.count + k)) for k in range(steps)])
        keys = (np.array([fold_key((SEED, state.count + k)) for k in range(steps)],
                         dtype=np.uint64) if model.has_dropout else None)
        got, state, epoch_losses = run_steps(got, state, x, y_in, order, batch_size, lrs,
                                             spec, model, keys)
        assert epoch_losses.dtype == np.float64 and epoch_losses.shape == (steps,)
        losses.extend(epoch_losses.tolist())
    # The inputs were never written; the outputs are new read-only arrays.
    now = [x, y] + [a for p in params for a in p]
    assert all(a.tobytes() == a0.tobytes() for a, a0 in zip(now, inputs))
    for slot in (got, *state[1:]):
        assert all(not a.flags.writeable for p in slot for a in p)

    # Per step: the public API, as fit's loop runs it.
    want, want_state, want_losses = params, opt.init(params), []
    for order in orders:
        for start in range(0, N, batch_size):
            idx = order[start:start + batch_size]
            t = want_state.count
            key = (SEED, t) if model.has_dropout else None
            kw = dict(activation=activation, loss=loss, dropout=dropout, key=key)
            value, grads = fnn.backprop(want, x[idx], y[idx], backend="numba", **kw)
            # backprop rounds its loss to the params' dtype; fit takes the float64 one.
            value64, grads64 = backprop_unchecked(get_ops("numba"), want, model,
                                                  np.ascontiguousarray(x[idx]), y_in[idx],
                                                  fold_key(key) if key else None)
            assert_same(grads64, grads, "grads")
            assert value == dtype(value64)
            want, want_state = opt.update(grads, want_state, want)
            want_losses.append(value64)
    return (got, state, np.array(losses)), (want, want_state, np.array(want_losses))


def check(compiled, per_step):
    (got, state, losses), (want, want_state, want_losses) = compiled, per_step
    assert_same(got, want, "params")
    assert_same_state(state, want_state)
    np.testing.assert_array_equal(losses, want_losses, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# 0.03: float32(0.01 * 0.03) != float32(0.01) * float32(0.03), so rounding adam's lr * wd
# in float32 (fnn.optim multiplies the Python floats first) would change the bits.
@pytest.mark.parametrize("weight_decay", [0.0, 0.03])
@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam"])
def test_run_steps_equals_the_optimizer_step_by_step(kind, weight_decay, dtype):
    lr = 0.01 if kind == "adam" else 0.1
    compiled, per_step = train_both(kind, weight_decay, dtype, lr=lr)
    check(compiled, per_step)
    # It trains (the last epoch's mean loss is lower than the first's), and the state is
    # the optimizer's own.
    losses = compiled[2].reshape(3, -1)
    assert losses[-1].mean() < losses[0].mean()
    state = compiled[1]
    assert isinstance(state, AdamState if kind == "adam" else SGDState)
    assert state.count == 3 * steps_in_epoch(N, 19)
    if kind == "sgd":
        assert state.velocity == ()


@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam"])
def test_a_schedule_and_a_batch_that_divides_nothing(kind):
    # A warm-up then a cosine: a different lr at every step (adam's lr * weight_decay too).
    schedule = cosine_decay(0.02 if kind == "adam" else 0.2, 20, final_lr=0.001,
                            warmup_steps=3)
    compiled, per_step = train_both(kind, 0.03, np.float32, schedule=schedule, batch_size=7,
                                    epochs=2, momentum=0.8)
    check(compiled, per_step)
    assert len(set(compiled[2].tolist())) > 1


@pytest.mark.parametrize(("kind", "dtype", "activation", "loss", "dropout"), [
    ("adam", np.float32, "gelu", "mse", (0.2, 0.5, 0.3)),
    ("nesterov", np.float64, "tanh", "sigmoid_binary_cross_entropy", (0.0, 0.3, 0.3)),
    ("momentum", np.float32, "sigmoid", "softmax_cross_entropy", (0.1, 0.0, 0.4)),
    ("sgd", np.float64, "relu", "mse", 0.25),
])
def test_every_model(kind, dtype, activation, loss, dropout):
    compiled, per_step = train_both(kind, 0.02, dtype, lr=0.01 if kind == "adam" else 0.05,
                                    activation=activation, loss=loss, dropout=dropout,
                                    batch_size=9, epochs=2)
    check(compiled, per_step)


def test_compiled_optimizer_covers_every_optimizer_a_config_makes():
    assert compiled_optimizer("sgd", 0.9, 0.0) == OptimizerSpec("sgd")  # momentum unused
    assert compiled_optimizer("sgd", 0.9, 1e-4) == OptimizerSpec("sgd", 0.0, 1e-4)
    assert compiled_optimizer("momentum", 0.0, 0.0) == OptimizerSpec("sgd")
    assert compiled_optimizer("momentum", 0.9, 1e-4) == OptimizerSpec("momentum", 0.9, 1e-4)
    assert compiled_optimizer("nesterov", 0.5, 0.0) == OptimizerSpec("nesterov", 0.5)
    assert compiled_optimizer("nesterov", 0.0) is None  # fnn.optim.sgd refuses it
    assert compiled_optimizer("adam", 0.9, 1e-2) == OptimizerSpec("adam", 0.0, 1e-2, 0.9,
                                                                  0.999, 1e-8)
    assert compiled_optimizer("rmsprop") is None
    for name in OPTIMIZERS:  # TrainConfig's choices
        assert compiled_optimizer(name, 0.9, 1e-3) is not None


def test_unknown_spec_is_refused():
    params, x, y = make_problem(np.float64)
    with pytest.raises(ValueError, match=r"spec.kind: expected one compiled_optimizer"):
        run_steps(params, SGDState(0, ()), x, y.astype(np.int64), np.arange(N), 19,
                  np.full(3, 0.1), OptimizerSpec("rmsprop"))
