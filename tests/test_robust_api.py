"""Bad input at the public API raises a named ValueError or TypeError, never another
exception, a hang or a silent wrong result: sizes and counts that would run out of
memory, ints too large for a float or for len(), records whose compiled `code` is not
theirs, masked-array params, reals the params' dtype cannot hold, and arguments that
NumPy would compare elementwise or take as a truth value.
"""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn import Layer
from fnn.activations import BUILTIN, Activation
from fnn.backends import set_backend
from fnn.batching import batch_indices
from fnn.epoch import check_order, momentum_epoch, sgd_epoch
from fnn.losses import LOSS_FUNCTIONS
from fnn.params import MAX_PARAMETERS

BACKENDS = ("numba", "numpy")


@pytest.fixture(scope="module")
def net():
    p = fnn.init_params(0, [4, 3, 2])
    x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
    y = np.array([0, 1, 0, 1, 1])
    return p, x, y


@pytest.fixture(scope="module")
def net64():
    p = fnn.init_params(0, [4, 3, 2], dtype=np.float64)
    x = np.linspace(-1, 1, 20).reshape(5, 4)
    return p, x, np.array([0, 1, 0, 1, 1])


# ---------------------------------------------------------------- 1. parameter count
@pytest.mark.parametrize("sizes", [[2**31, 1], [65536, 65535], [2**30, 1]])
def test_init_params_refuses_sizes_a_24gib_machine_cannot_draw(sizes):
    with pytest.raises(ValueError, match=r"^sizes: expected at most \d+ parameters"):
        fnn.init_params(0, sizes)


def test_max_parameters_fits_the_float64_draw_in_8gib():
    # The float32 params plus the float64 draw of the largest layer: 12 bytes a parameter.
    assert MAX_PARAMETERS * 12 <= 8 * 2**30


# ---------------------------------------------------------------- 2. unbounded counts
@pytest.mark.parametrize("directions", [2**40, 10**30])
def test_check_gradients_bounds_directions(net64, directions):
    p, x, y = net64
    with pytest.raises(ValueError, match=r"^directions: expected an int <= \d+"):
        fnn.check_gradients(p, x, y, mode="directional", directions=directions)


# ---------------------------------------------------------------- 3. huge ints
CALLS = {
    "forward": lambda p, x, y, **k: fnn.forward(p, x, **k),
    "loss": lambda p, x, y, **k: fnn.loss(p, x, y, **k),
    "backprop": lambda p, x, y, **k: fnn.backprop(p, x, y, **k),
    "accuracy": lambda p, x, y, **k: fnn.accuracy(p, x, y, **k),
    "per_example_grads": lambda p, x, y, **k: fnn.per_example_grads(p, x, y, **k),
    "sgd_epoch": lambda p, x, y, **k: sgd_epoch(p, x, y, np.arange(5), 2, 0.1, **k),
}


@pytest.mark.parametrize("call", CALLS)
def test_huge_dropout_range_is_a_value_error(net, call):
    p, x, y = net
    with pytest.raises(ValueError, match=r"^dropout: expected one rate per hidden layer"):
        CALLS[call](p, x, y, dropout=range(10**30), key=1)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("key", [range(2**64), range(2**40)])
def test_huge_key_sequence_is_a_value_error(net, call, key):
    p, x, y = net
    with pytest.raises(ValueError, match=r"^key: expected an int or a tuple of at most"):
        CALLS[call](p, x, y, dropout=0.5, key=key)


def test_schedule_returning_a_huge_int_is_a_value_error():
    with pytest.raises(ValueError, match=r"^lr schedule: expected a finite lr >= 0 at step 0, "
                                         r"got an int of \d+ bits"):
        fnn.optim.sgd(lambda s: 10**400)


@pytest.mark.parametrize("make", [
    lambda: fnn.optim.adam(1e-3),
    lambda: fnn.optim.sgd(fnn.optim.exponential_decay(0.1, 0.5, 10)),
    lambda: fnn.optim.sgd(fnn.optim.cosine_decay(0.1, 100)),
    lambda: fnn.optim.sgd(fnn.optim.step_decay(0.1, 0.5, 10)),
])
def test_state_count_beyond_int64_is_a_value_error(net, make):
    p, x, y = net
    opt = make()
    _, g = fnn.backprop(p, x, y)
    state = opt.init(p)._replace(count=10**400)
    with pytest.raises(ValueError, match=r"^state\.count: expected an int <= "):
        opt.update(g, state, p)
    # The largest count allowed still updates.
    opt.update(g, opt.init(p)._replace(count=2**63 - 1), p)


def test_grad_fn_returning_a_huge_int_loss_is_a_value_error(net64):
    p, x, y = net64
    with pytest.raises(ValueError, match=r"^grad_fn: expected a real scalar loss"):
        fnn.check_gradients(p, x, y, grad_fn=lambda P, X, Y: (10**400, fnn.backprop(P, X, Y)[1]))


# ---------------------------------------------------------------- 4. record codes
def _tanh_user(code):
    return Activation("t", np.tanh, lambda z, a: 1 - a * a, code=code)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("code", [2**70, 1, 99, 0, -2])
def test_user_activation_with_a_builtin_code_is_refused(net, backend, code):
    p, x, y = net
    act = _tanh_user(code)
    for f in (lambda: fnn.forward(p, x, activation=act, backend=backend),
              lambda: fnn.predict(p, x, activation=act, backend=backend),
              lambda: fnn.backprop(p, x, y, activation=act, backend=backend),
              lambda: sgd_epoch(p, x, y, np.arange(5), 2, 0.1, activation=act)):
        with pytest.raises(ValueError, match=r"^activation\.code: expected -1 for a user"):
            f()


@pytest.mark.parametrize("code", ["x", 2.0, None, True])
def test_activation_code_of_another_type_is_a_type_error(net, code):
    p, x, _ = net
    with pytest.raises(TypeError, match=r"^activation\.code: expected an int"):
        fnn.forward(p, x, activation=_tanh_user(code))


def test_user_activation_code_minus_one_and_builtin_records_still_run(net):
    p, x, y = net
    user = fnn.forward(p, x, activation=_tanh_user(-1), backend="numpy")
    builtin = fnn.forward(p, x, activation=BUILTIN[2], backend="numpy")
    assert np.array_equal(user, builtin)
    for act in BUILTIN:
        fnn.backprop(p, x, y, activation=act)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,code", [("mse", 2**70), ("softmax_cross_entropy", 1),
                                       ("mse", 2), ("mse", 5), ("mse", "x")])
def test_loss_with_a_code_not_its_own_is_refused(net, backend, name, code):
    p, x, y = net
    loss = LOSS_FUNCTIONS[name]._replace(code=code)
    targets = y if name == "softmax_cross_entropy" else np.zeros((5, 2), np.float32)
    with pytest.raises((ValueError, TypeError), match=r"^loss\.code: expected"):
        fnn.backprop(p, x, targets, loss=loss, backend=backend)


def test_user_loss_with_code_minus_one_still_runs(net):
    p, x, _ = net
    mse = LOSS_FUNCTIONS["mse"]
    user = mse._replace(name="mine", code=-1)
    t = np.zeros((5, 2), np.float32)
    assert fnn.loss(p, x, t, loss=user) == fnn.loss(p, x, t, loss=mse)


# ---------------------------------------------------------------- 5. masked params
def _masked(p):
    return (Layer(np.ma.masked_array(p[0].w), p[0].b), p[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_params_are_a_type_error(net, backend):
    p, x, y = net
    pm = _masked(p)
    for f in (lambda: fnn.forward(pm, x, backend=backend),
              lambda: fnn.evaluate(pm, x, y, backend=backend),
              lambda: fnn.backprop(pm, x, y, backend=backend),
              lambda: sgd_epoch(pm, x, y, np.arange(5), 2, 0.1)):
        with pytest.raises(TypeError, match=r"^params\[0\]\.w: expected a plain ndarray"):
            f()


def test_masked_grads_are_a_type_error(net):
    p, x, y = net
    _, g = fnn.backprop(p, x, y)
    with pytest.raises(TypeError, match=r"^grads\[0\]\.w: expected a plain ndarray"):
        fnn.sgd_step(p, _masked(g), 0.1)
    opt = fnn.optim.sgd(0.1)
    with pytest.raises(TypeError, match=r"^grads\[0\]\.w: expected a plain ndarray"):
        opt.update(_masked(g), opt.init(p), p)


# ---------------------------------------------------------------- 6. reals and dtypes
def test_lr_beyond_float32_is_refused(net):
    p, x, y = net
    _, g = fnn.backprop(p, x, y)
    for lr in (1e39, 1e-50):
        with pytest.raises(ValueError, match=r"^lr: expected .*float32"):
            fnn.sgd_step(p, g, lr)
        with pytest.raises(ValueError, match=r"^lr: expected .*float32"):
            sgd_epoch(p, x, y, np.arange(5), 2, lr)
    with pytest.raises(ValueError, match=r"^lr\[1\]: expected .*float32"):
        sgd_epoch(p, x, y, np.arange(5), 2, np.array([0.1, 1e39, 0.1]))
    # A momentum that float32 rounds to 0 is plain SGD: harmless, so it runs.
    new, _, _ = momentum_epoch(p, None, x, y, np.arange(5), 2, 0.1, 1e-50)
    assert all(np.isfinite(a).all() for layer in new for a in layer)
    # float64 holds them.
    p64 = fnn.init_params(0, [4, 3, 2], dtype=np.float64)
    fnn.sgd_step(p64, fnn.backprop(p64, x.astype(np.float64), y)[1], 1e-50)


@pytest.mark.parametrize("make,message", [
    (lambda: fnn.optim.sgd(0.1, weight_decay=1e300), r"^weight_decay: expected .*float32"),
    (lambda: fnn.optim.adam(1e-3, weight_decay=1e300), r"^weight_decay: expected .*float32"),
    (lambda: fnn.optim.adam(1e-3, eps=1e-50), r"^eps: expected .*float32"),
    (lambda: fnn.optim.sgd(1e39), r"^lr schedule: expected .*float32"),
])
def test_optimizer_reals_beyond_float32_are_refused(net, make, message):
    p, _, _ = net
    opt = make()
    with pytest.raises(ValueError, match=message):
        opt.init(p)
    p64 = fnn.init_params(0, [4, 3, 2], dtype=np.float64)
    opt.init(p64)


def test_fit_with_weight_decay_beyond_float32_is_refused(net):
    _, x, y = net
    xs = np.tile(x, (4, 1))
    ys = np.tile(y, 4)
    config = fnn.TrainConfig(sizes=(4, 3, 2), epochs=1, batch_size=4, lr=0.1,
                             weight_decay=1e300, backend="numba")
    with pytest.raises(ValueError, match=r"weight_decay: expected .*float32"):
        fnn.fit(None, (xs, ys), config)


# ---------------------------------------------------------------- 7. messages
def test_array_backend_is_a_named_error(net):
    p, x, _ = net
    arr = np.array(["numba", "numpy"])
    with pytest.raises(ValueError, match=r"^backend: expected one of"):
        fnn.forward(p, x, backend=arr)
    with pytest.raises(ValueError, match=r"^backend: expected one of"):
        set_backend(arr)


def test_array_mode_is_a_named_error(net64):
    p, x, y = net64
    with pytest.raises(ValueError, match=r"^mode: expected one of"):
        fnn.check_gradients(p, x, y, mode=np.array(["full", "directional"]))


def test_ragged_or_masked_order_is_a_named_error(net):
    p, x, y = net
    with pytest.raises(ValueError, match=r"^order: expected an array"):
        sgd_epoch(p, x, y, [[0, 1], [2]], 2, 0.1)
    with pytest.raises(TypeError, match=r"^order: expected a plain ndarray"):
        check_order(np.ma.masked_array(np.arange(5), mask=[0, 1, 0, 0, 0]), 5)


@pytest.mark.parametrize("flag", ["recheck", "raise_on_fail"])
def test_gradcheck_flags_must_be_bools(net64, flag):
    p, x, y = net64
    with pytest.raises(TypeError, match=rf"^{flag}: expected a bool"):
        fnn.check_gradients(p, x, y, mode="directional", **{flag: "x"})


def test_batch_indices_drop_last_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^drop_last: expected a bool"):
        batch_indices(10, 3, 0, drop_last="x")
    assert len(batch_indices(10, 3, 0, drop_last=np.bool_(True))) == 3



@pytest.mark.parametrize("n", [2**28 + 1, 2**33, 10**30])
def test_validation_split_bounds_n(n):
    # 2**31 examples needed about 34 GiB at peak (permutation, mask and index arrays).
    with pytest.raises(ValueError, match=r"^n: expected an int <= 268435456 "):
        fnn.validation_split(n, 0.5, 0)


def test_notebook_problem_bounds_its_inputs():
    from fnn.gradcheck import notebook_problem

    with pytest.raises(ValueError, match=r"^batch: expected at most \d+ examples of 4 inputs"):
        notebook_problem(0, (4, 3, 2), batch=MAX_PARAMETERS // 4 + 1)


@pytest.mark.parametrize("field, value", [("lr", 1e39), ("weight_decay", 1e300),
                                          ("lr", 1e-50)])
def test_config_reals_must_fit_the_dtype(field, value):
    config = fnn.TrainConfig(sizes=(4, 3, 2), dtype="float32", **{field: value})
    with pytest.raises(ValueError, match=rf"^config.{field}: expected a value that float32"):
        fnn.train.check_config(config)
