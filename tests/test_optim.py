"""Optimizers and schedules against updates computed here by hand with plain NumPy.

Each test recomputes the textbook formulas independently (in float64 unless the dtype
is the point), checks that inputs are never changed and that outputs are read-only and
keep the params' dtype.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fnn
from fnn.optim import (
    AdamState,
    SGDState,
    adam,
    constant_schedule,
    cosine_decay,
    exponential_decay,
    sgd,
    step_decay,
)
from fnn.params import Layer

SIZES = [6, 5, 3]


def make(seed=0, dtype=np.float64, steps=4):
    """Params and a list of `steps` gradients (random, so each step differs)."""
    rng = np.random.default_rng(seed)
    params = fnn.init_params(rng, SIZES, dtype=dtype)
    params = tuple(Layer(p.w, rng.normal(0, 0.1, p.b.shape).astype(dtype)) for p in params)
    grads = [
        tuple(Layer(rng.normal(size=p.w.shape).astype(dtype),
                    rng.normal(size=p.b.shape).astype(dtype)) for p in params)
        for _ in range(steps)
    ]
    for g in grads:
        for layer in g:
            layer.w.flags.writeable = layer.b.flags.writeable = False
    return params, grads


def as_lists(params):
    return [[np.array(p.w, dtype=np.float64), np.array(p.b, dtype=np.float64)] for p in params]


def run(opt, params, grads):
    """Apply opt over grads; check inputs untouched and outputs read-only each step."""
    state = opt.init(params)
    for g in grads:
        before = [a.copy() for layer in (*params, *g) for a in layer]
        new_params, new_state = opt.update(g, state, params)
        after = [a for layer in (*params, *g) for a in layer]
        assert all(np.array_equal(a, b) for a, b in zip(before, after)), "input mutated"
        assert new_state.count == state.count + 1
        for layer in new_params:
            assert not layer.w.flags.writeable and not layer.b.flags.writeable
        params, state = new_params, new_state
    return params, state


def assert_params(actual, expected, rtol=1e-13):
    for a, (ew, eb) in zip(actual, expected):
        np.testing.assert_allclose(a.w, ew, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(a.b, eb, rtol=rtol, atol=rtol)


# ---------------------------------------------------------------- sgd family
def test_plain_sgd_is_the_notebook_update_and_matches_fnn_sgd_step():
    params, grads = make()
    new, state = run(sgd(0.1), params, grads[:1])
    expect = [[w - 0.1 * gw, b - 0.1 * gb] for (w, b), (gw, gb) in zip(as_lists(params), grads[0])]
    assert_params(new, expect, rtol=0)
    reference = fnn.sgd_step(params, grads[0], lr=0.1)
    for a, r in zip(new, reference):
        assert np.array_equal(a.w, r.w) and np.array_equal(a.b, r.b)
    assert state == SGDState(1, ())


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_and_nesterov_match_hand_computed_steps(nesterov):
    params, grads = make(1)
    lr, mu = 0.05, 0.9
    new, state = run(sgd(lr, momentum=mu, nesterov=nesterov), params, grads)
    p = as_lists(params)
    v = [[np.zeros_like(w), np.zeros_like(b)] for w, b in p]
    for g in grads:
        for l in range(len(p)):
            for k in range(2):
                v[l][k] = mu * v[l][k] + g[l][k]
                d = g[l][k] + mu * v[l][k] if nesterov else v[l][k]
                p[l][k] = p[l][k] - lr * d
    assert_params(new, p)
    assert_params(state.velocity, v)
    assert state.count == len(grads)


def test_sgd_weight_decay_applies_to_weights_only():
    params, grads = make(2)
    lr, wd = 0.1, 0.01
    new, _ = run(sgd(lr, weight_decay=wd), params, grads[:2])
    p = as_lists(params)
    for g in grads[:2]:
        for l in range(len(p)):
            p[l][0] = p[l][0] - lr * (g[l][0] + wd * p[l][0])
            p[l][1] = p[l][1] - lr * g[l][1]
    assert_params(new, p)


def test_momentum_with_weight_decay_decays_inside_the_velocity():
    params, grads = make(3)
    lr, mu, wd = 0.1, 0.5, 0.1
    new, _ = run(sgd(lr, momentum=mu, weight_decay=wd), params, grads[:3])
    p = as_lists(params)
    v = [[np.zeros_like(w), np.zeros_like(b)] for w, b in p]
    for g in grads[:3]:
        for l in range(len(p)):
            gw = g[l][0] + wd * p[l][0]
            v[l][0] = mu * v[l][0] + gw
            v[l][1] = mu * v[l][1] + g[l][1]
            p[l][0] = p[l][0] - lr * v[l][0]
            p[l][1] = p[l][1] - lr * v[l][1]
    assert_params(new, p)


# ---------------------------------------------------------------- adam
def adam_by_hand(params, grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    p = as_lists(params)
    m = [[np.zeros_like(a) for a in layer] for layer in p]
    v = [[np.zeros_like(a) for a in layer] for layer in p]
    for t, g in enumerate(grads, start=1):
        for l in range(len(p)):
            for k in range(2):
                m[l][k] = b1 * m[l][k] + (1 - b1) * g[l][k]
                v[l][k] = b2 * v[l][k] + (1 - b2) * g[l][k] ** 2
                m_hat = m[l][k] / (1 - b1**t)
                v_hat = v[l][k] / (1 - b2**t)
                decay = wd * p[l][k] if k == 0 else 0.0
                p[l][k] = p[l][k] - lr * m_hat / (np.sqrt(v_hat) + eps) - lr * decay
    return p, m, v


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adam_matches_hand_computed_steps(wd):
    params, grads = make(4)
    new, state = run(adam(1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=wd), params, grads)
    p, m, v = adam_by_hand(params, grads, 1e-2, b1=0.8, b2=0.99, eps=1e-6, wd=wd)
    assert_params(new, p)
    assert_params(state.mu, m)
    assert_params(state.nu, v)
    assert isinstance(state, AdamState) and state.count == len(grads)


def test_adam_first_step_moves_every_parameter_by_lr_against_the_gradient_sign():
    # m_hat = g and v_hat = g^2 at t = 1, so the step is lr * g / (|g| + eps): lr in size.
    params, grads = make(5)
    new, _ = run(adam(1e-3), params, grads[:1])
    for a, p, g in zip(new, params, grads[0]):
        for new, old, grad in ((a.w, p.w, g.w), (a.b, p.b, g.b)):
            np.testing.assert_allclose(new - old, -1e-3 * grad / (np.abs(grad) + 1e-8),
                                       rtol=1e-9)


@pytest.mark.parametrize("make_opt", [
    lambda: sgd(0.1), lambda: sgd(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda: adam(1e-3, weight_decay=1e-2),
])
def test_float32_stays_float32_and_tracks_float64(make_opt):
    p32, g32 = make(6, np.float32)
    p64 = tuple(Layer(p.w.astype(np.float64), p.b.astype(np.float64)) for p in p32)
    g64 = [tuple(Layer(g.w.astype(np.float64), g.b.astype(np.float64)) for g in gs)
           for gs in g32]
    new32, state32 = run(make_opt(), p32, g32)
    new64, _ = run(make_opt(), p64, g64)
    for layer in (*new32, *(x for slot in state32[1:] for x in slot)):
        assert layer.w.dtype == np.float32 and layer.b.dtype == np.float32
    for a, b in zip(new32, new64):
        np.testing.assert_allclose(a.w, b.w, rtol=1e-5, atol=1e-6)


def test_schedule_sets_each_steps_lr():
    params, grads = make(7, steps=3)
    lrs = [0.3, 0.2, 0.1]
    new, _ = run(sgd(lambda step: lrs[step]), params, grads)
    p = as_lists(params)
    for lr, g in zip(lrs, grads):
        p = [[w - lr * gw, b - lr * gb] for (w, b), (gw, gb) in zip(p, g)]
    assert_params(new, p)


def test_bad_schedule_value_is_reported_with_its_step():
    params, grads = make(8)
    with pytest.raises(ValueError, match="at step 0"):  # refused when the optimizer is made
        sgd(lambda step: math.nan)
    opt = sgd(lambda step: math.nan if step == 1 else 0.1)
    state = opt.init(params)
    params, state = opt.update(grads[0], state, params)
    with pytest.raises(ValueError, match="at step 1"):
        opt.update(grads[0], state, params)


# ---------------------------------------------------------------- schedules
def test_schedules_hit_known_values():
    assert [constant_schedule(0.1)(s) for s in (0, 10**6)] == [0.1, 0.1]
    sd = step_decay(0.1, 0.5, 10)
    assert [sd(s) for s in (0, 9, 10, 19, 20, 35)] == pytest.approx(
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.0125], rel=1e-15)
    ed = exponential_decay(1.0, 0.5, 10)
    assert [ed(s) for s in (0, 5, 10, 30)] == pytest.approx(
        [1.0, math.sqrt(0.5), 0.5, 0.125], rel=1e-15)
    cd = cosine_decay(0.2, 100)
    assert [cd(s) for s in (0, 50, 100, 200)] == pytest.approx([0.2, 0.1, 0.0, 0.0], abs=1e-15)
    assert cd(25) == pytest.approx(0.1 * (1 + math.sqrt(0.5)), rel=1e-14)
    warm = cosine_decay(1.0, 110, warmup_steps=10, final_lr=0.1)
    assert [warm(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0], rel=1e-15)
    assert [warm(s) for s in (10, 60, 110)] == pytest.approx([1.0, 0.55, 0.1], rel=1e-14)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("build, error, match", [
    (lambda: sgd(-0.1), ValueError, "lr"),
    (lambda: sgd(math.inf), ValueError, "lr"),
    (lambda: sgd("0.1"), TypeError, "lr"),
    (lambda: sgd(0.1, momentum=1.0), ValueError, "momentum"),
    (lambda: sgd(0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda: sgd(0.1, nesterov=True), ValueError, "nesterov"),
    (lambda: sgd(0.1, momentum=0.9, nesterov="yes"), TypeError, "nesterov"),
    (lambda: sgd(0.1, weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: adam(0.0), ValueError, "lr"),
    (lambda: adam(1e-3, b1=1.0), ValueError, "b1"),
    (lambda: adam(1e-3, b2=math.nan), ValueError, "b2"),
    (lambda: adam(1e-3, eps=0.0), ValueError, "eps"),
    (lambda: step_decay(0.1, 0.0, 10), ValueError, "rate"),
    (lambda: step_decay(0.1, 0.5, 0), ValueError, "every"),
    (lambda: exponential_decay(0.1, 1.5, 10), ValueError, "rate"),
    (lambda: cosine_decay(0.1, 0), ValueError, "total_steps"),
    (lambda: cosine_decay(0.1, 10, warmup_steps=10), ValueError, "warmup_steps"),
    (lambda: cosine_decay(0.1, 10, final_lr=0.2), ValueError, "final_lr"),
])
def test_construction_rejects_bad_hyperparameters(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_update_rejects_mismatched_grads_and_foreign_state():
    params, grads = make(9)
    opt = sgd(0.1, momentum=0.9)
    state = opt.init(params)
    bad = (grads[0][0], Layer(grads[0][1].w[:, :2], grads[0][1].b))
    with pytest.raises(ValueError, match=r"grads\[1\]\.w"):
        opt.update(bad, state, params)
    with pytest.raises(ValueError, match="grads"):
        opt.update(grads[0][:1], state, params)
    with pytest.raises(TypeError, match="SGDState"):
        opt.update(grads[0], adam(1e-3).init(params), params)
    with pytest.raises(TypeError, match="params"):
        opt.init([list(layer) for layer in params])
    f32 = tuple(Layer(g.w.astype(np.float32), g.b.astype(np.float32)) for g in grads[0])
    with pytest.raises(ValueError, match="dtype"):
        opt.update(f32, state, params)
