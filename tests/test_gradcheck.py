"""Gradient checks: planted backprop bugs are caught where they live, correct backprops pass.

Independent truths: a small backprop written here from the chain rule, with a `bug=`
switch that plants one bug at a time; the origin notebook's finite-difference loop
(`fnn.reference.numerical_grad`); `fnn.backprop` on one example at a time.
"""

from __future__ import annotations

import numpy as np
import pytest

import fnn
from fnn.gradcheck import (
    DEFAULT_H,
    MODES,
    GradientCheckError,
    assert_gradients,
    check_gradients,
    notebook_problem,
    numerical_grads,
)
from fnn.params import Layer
from fnn.per_example import per_example_grads

MUTANT_SIZES = (5, 6, 6, 4, 3)  # params[1].w is square: a transposed gradient keeps its shape
MUTANT_BATCH = 6  # equal to the width of layer 1: a bias summed over the wrong axis fits
SMALL_SIZES = (6, 5, 4, 3)
NETS = [SMALL_SIZES, (4, 8, 8, 2), (7, 3, 5, 4, 3)]


def problem(seed, sizes=SMALL_SIZES, batch=7):
    """notebook_problem with non-zero biases, so the bias path is exercised."""
    params, x, y = notebook_problem(seed, sizes, batch)
    rng = np.random.default_rng(seed + 1000)
    return tuple(Layer(p.w, rng.normal(0, 0.1, p.b.shape)) for p in params), x, y


def kink_stress(params, x, seed, h=DEFAULT_H["full"]):
    """Move every hidden pre-activation of example 0 to within ~2h of zero.

    A step of W_0[i, j] moves z_1[0, j] by h * x[0, i] and carries on upwards, so most
    steps of the layers below cross some kink. Offsets keep |z| >= 1e-12, so that no
    forward pass, whatever its summation order, puts a unit on the other side of its kink.
    """
    rng = np.random.default_rng(seed)
    out, a = [], x
    for l, (w, b) in enumerate(params):
        if l < len(params) - 1:
            target = rng.uniform(-2, 2, b.shape) * h
            target = np.where(np.abs(target) < 1e-12, 1e-12, target)
            b = b - (a @ w + b)[0] + target
        z = a @ w + b
        out.append(Layer(w, b))
        a = np.maximum(z, 0)
    return tuple(out)


def chain_rule_backprop(bug=None, layer=1, entry=(0, 0)):
    """A backprop written from the chain rule, with at most one planted bug.

    bug: None, "transpose" (grad w of `layer` transposed), "no_mask" (the ReLU mask
    below `layer` skipped), "batch_scale" (the mean's 1/n missing), "bias_axis" (grad b
    of `layer` summed over units instead of examples), "sign" (grads of `layer` negated),
    "one_entry" (grad w of `layer` at `entry` off by a factor 1 + 1e-4),
    "relu_prime_zero_one" (every ReLU mask z >= 0: the other convention at z == 0).
    """

    def grad_fn(params, x, y):
        n = len(y)
        acts, zs = [x], []
        for l, (w, b) in enumerate(params):
            zs.append(acts[-1] @ w + b)
            acts.append(np.maximum(zs[-1], 0) if l < len(params) - 1 else zs[-1])
        logits = acts[-1]
        m = logits.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
        loss = np.mean(lse - logits[np.arange(n), y])
        delta = np.exp(logits - lse[:, None])
        delta[np.arange(n), y] -= 1
        if bug != "batch_scale":
            delta /= n
        grads = []
        for l in range(len(params) - 1, -1, -1):
            gw = acts[l].T @ delta
            gb = delta.sum(axis=1 if (bug == "bias_axis" and l == layer) else 0)
            if l == layer and bug == "transpose":
                gw = gw.T
            if l == layer and bug == "sign":
                gw, gb = -gw, -gb
            if l == layer and bug == "one_entry":
                gw[entry] *= 1 + 1e-4
            grads.append(Layer(gw, gb))
            if l > 0:
                delta = delta @ params[l].w.T
                if bug == "relu_prime_zero_one":
                    delta = delta * (zs[l - 1] >= 0)
                elif not (bug == "no_mask" and l == layer):
                    delta = delta * (zs[l - 1] > 0)
        return loss, tuple(reversed(grads))

    return grad_fn


def failing(report):
    return {(t.layer, t.tensor) for t in report.tensors if not t.ok}


ALL_TENSORS = {(l, t) for l in range(len(MUTANT_SIZES) - 1) for t in "wb"}


# ---------------------------------------------------------------- planted bugs
def _typical_entry(params, x, y, layer):
    """The entry of median magnitude in grads[layer].w: not an easy, large one."""
    _, grads = fnn.backprop(params, x, y)
    g = np.abs(grads[layer].w).ravel()
    median = np.argsort(g)[len(g) // 2]
    return tuple(int(i) for i in np.unravel_index(median, grads[layer].w.shape))


MUTANTS = [
    # (bug, layer, tensors where it lives)
    ("transpose", 1, {(1, "w")}),
    ("no_mask", 2, {(0, "w"), (0, "b"), (1, "w"), (1, "b")}),
    ("batch_scale", None, ALL_TENSORS),
    ("bias_axis", 1, {(1, "b")}),
    ("sign", 2, {(2, "w"), (2, "b")}),
    ("one_entry", 0, {(0, "w")}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("bug", "layer", "where"), MUTANTS, ids=[m[0] for m in MUTANTS])
def test_planted_bug_fails_exactly_where_it_lives(mode, bug, layer, where):
    if mode == "directional" and bug == "one_entry":
        pytest.skip("a 1e-4 error in one of 30 entries is below a random projection's noise")
    for seed in range(3):
        params, x, y = problem(seed, MUTANT_SIZES, MUTANT_BATCH)
        entry = _typical_entry(params, x, y, 0)
        grad_fn = chain_rule_backprop(bug, 1 if layer is None else layer, entry)
        report = check_gradients(params, x, y, grad_fn=grad_fn, mode=mode, seed=seed)
        assert not report.ok
        assert failing(report) == where, str(report)
        worst = report.worst
        assert (worst.max_rel_at.layer, worst.max_rel_at.tensor) in where
        if bug == "one_entry" and mode != "directional":
            assert worst.max_rel_at.index == entry
            assert worst.max_rel_err == pytest.approx(1e-4, rel=1e-3)
        if bug == "batch_scale":  # the median ratio exposes the missing 1/n
            assert all(t.mean.median_ratio == pytest.approx(MUTANT_BATCH) for t in report.tensors)
        if bug == "sign":
            assert all(t.mean.median_ratio == pytest.approx(-1) for t in report.tensors
                       if t.layer == layer)
        assert "FAILED" in str(report) and "worst:" in str(report)


def test_batch_scale_bug_is_invisible_at_batch_one_and_caught_at_two():
    params, x, y = problem(0, MUTANT_SIZES, 1)
    assert check_gradients(params, x, y, grad_fn=chain_rule_backprop("batch_scale")).ok
    params, x, y = problem(0, MUTANT_SIZES, 2)
    assert failing(check_gradients(params, x, y, grad_fn=chain_rule_backprop("batch_scale"))) == ALL_TENSORS


def test_chain_rule_backprop_without_bug_matches_fnn():
    # The mutants' baseline is itself right, so a failure above is the planted bug.
    params, x, y = problem(0, MUTANT_SIZES, MUTANT_BATCH)
    loss, grads = chain_rule_backprop()(params, x, y)
    ref_loss, ref = fnn.backprop(params, x, y, backend="numpy")
    assert loss == pytest.approx(float(ref_loss), rel=1e-13)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g.w, r.w, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g.b, r.b, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- correct backprops pass
GRAD_FNS = {
    "fnn-numba": lambda p, x, y: fnn.backprop(p, x, y, backend="numba"),
    "fnn-numpy": lambda p, x, y: fnn.backprop(p, x, y, backend="numpy"),
    "reference": fnn.reference.backprop,
    "chain-rule": chain_rule_backprop(),
}


@pytest.mark.parametrize("batch", [1, 7, 33])
@pytest.mark.parametrize("name", list(GRAD_FNS))
def test_correct_backprop_passes_on_50_seeds_and_under_kink_stress(name, batch):
    grad_fn, kinks, rechecked = GRAD_FNS[name], 0, 0
    for seed in range(50):
        params, x, y = problem(seed, NETS[seed % len(NETS)], batch)
        # Each seed as drawn, then with example 0 on the kinks of every hidden unit.
        for p in (params, kink_stress(params, x, seed)):
            report = check_gradients(p, x, y, grad_fn=grad_fn)
            assert report.ok, f"seed {seed}\n{report}"
            assert all(t.mean.checked + t.mean.excluded == np.prod(t.shape) for t in report.tensors)
            kinks += sum(t.kinks for t in report.tensors)
            rechecked += sum(t.rechecked for t in report.tensors)
    assert kinks > 0 and rechecked > 0  # the stress case really crossed kinks


@pytest.mark.parametrize("mode", ["directional", "complex-step"])
def test_other_modes_pass_correct_backprop(mode):
    kinks = 0
    for seed in range(20):
        params, x, y = problem(seed, SMALL_SIZES, 1 + seed % 9)
        if seed % 2:
            params = kink_stress(params, x, seed)
        report = check_gradients(params, x, y, mode=mode, seed=seed, per_example=True)
        assert report.ok, f"seed {seed}\n{report}"
        kinks += sum(t.kinks for t in report.tensors)
    if mode == "complex-step":
        assert kinks == 0  # an imaginary step never moves a unit across its kink


def test_notebook_case_passes_full_and_is_accurate():
    params, x, y = notebook_problem(0)
    report = assert_gradients(params, x, y)
    assert report.mode == "full" and report.batch == 1 and report.dtype == "float64"
    assert max(t.mean.norm_ratio for t in report.tensors) < 1e-8
    assert sum(t.mean.checked for t in report.tensors) == 43932


# ---------------------------------------------------------------- kinks and exclusion
def test_excluding_too_much_fails_and_is_counted():
    params, x, y = problem(1, SMALL_SIZES, 1)
    params = kink_stress(params, x, 1)
    report = check_gradients(params, x, y, recheck=False)
    excluded = [t.mean.excluded / np.prod(t.shape) for t in report.tensors]
    assert max(excluded) > 0.1
    assert not report.ok
    assert {(t.layer, t.tensor) for t, e in zip(report.tensors, excluded) if e > 0.1} == failing(report)
    assert all(t.rechecked == 0 and t.kinks >= t.mean.excluded for t in report.tensors)
    # The same exclusions are tolerated when allowed, and re-checking resolves them.
    assert check_gradients(params, x, y, recheck=False, max_excluded_fraction=1.0).ok
    rechecked = check_gradients(params, x, y)
    assert rechecked.ok and sum(t.rechecked for t in rechecked.tensors) > 0


def test_unit_exactly_at_its_kink_is_rechecked_on_the_dead_side():
    # x[0] = 0 and b_0[:3] = 0 put three layer-1 units of example 0 exactly at z = 0 in
    # every implementation. A +h step of b_0[j] crosses the kink at once, however small:
    # only the one-sided difference on the dead side (ReLU'(0) = 0) resolves it.
    params, x, y = problem(12, SMALL_SIZES, 3)
    x[0] = 0
    b0 = params[0].b.copy()
    b0[:3] = 0
    params = (Layer(params[0].w, b0), *params[1:])
    for name, grad_fn in GRAD_FNS.items():
        report = check_gradients(params, x, y, grad_fn=grad_fn, per_example=True)
        assert report.ok, f"{name}\n{report}"
        b = report.tensors[1]
        assert b.kinks >= 3 and b.rechecked == b.kinks and b.mean.excluded == 0

    # A backprop with the other convention, ReLU'(0) = 1, differs exactly there.
    report = check_gradients(params, x, y, grad_fn=chain_rule_backprop("relu_prime_zero_one"))
    assert failing(report) == {(0, "b")}
    assert report.worst.max_rel_at.index[0] in (0, 1, 2)


def test_kinks_do_not_hide_a_bug():
    params, x, y = problem(3, MUTANT_SIZES, MUTANT_BATCH)
    params = kink_stress(params, x, 3)
    report = check_gradients(params, x, y, grad_fn=chain_rule_backprop("no_mask", 2))
    assert failing(report) == {(0, "w"), (0, "b"), (1, "w"), (1, "b")}


# ---------------------------------------------------------------- per-example gradients
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_example_grads_are_each_examples_own_backprop(backend, dtype):
    params, x, y = problem(4, SMALL_SIZES, 7)
    params = tuple(Layer(w.astype(dtype), b.astype(dtype)) for w, b in params)
    x = x.astype(dtype)
    pe = per_example_grads(params, x, y, backend=backend)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    _, mean = fnn.backprop(params, x, y, backend=backend)
    for layer, p, g in zip(pe, params, mean):
        assert layer.w.shape == (7, *p.w.shape) and layer.b.shape == (7, *p.b.shape)
        assert layer.w.dtype == dtype and not layer.w.flags.writeable
        np.testing.assert_allclose(layer.w.mean(axis=0), g.w, rtol=rtol, atol=rtol * np.abs(g.w).max())
        np.testing.assert_allclose(layer.b.mean(axis=0), g.b, rtol=rtol, atol=rtol * np.abs(g.b).max())
    for n in range(7):
        _, own = fnn.backprop(params, x[n : n + 1], y[n : n + 1], backend=backend)
        for layer, g in zip(pe, own):
            np.testing.assert_allclose(layer.w[n], g.w, rtol=rtol, atol=rtol * np.abs(g.w).max())
            np.testing.assert_allclose(layer.b[n], g.b, rtol=rtol, atol=rtol * np.abs(g.b).max())


def test_per_example_check_locates_the_example():
    params, x, y = problem(5, SMALL_SIZES, 7)

    def swapped(params, x, y):  # examples 2 and 5 swapped: the mean cannot see it
        pe = per_example_grads(params, x, y)
        order = [0, 1, 5, 3, 4, 2, 6]
        return tuple(Layer(g.w[order], g.b[order]) for g in pe)

    assert check_gradients(params, x, y, per_example=True).ok
    report = check_gradients(params, x, y, per_example=swapped)
    assert not report.ok
    assert all(t.mean.ok for t in report.tensors)
    assert all(not t.per_example.ok for t in report.tensors if t.layer == 0)
    assert report.worst.max_rel_at.example in (2, 5)
    assert "/ex" in str(report)


def test_per_example_callable_with_wrong_shape_is_reported():
    params, x, y = problem(5, SMALL_SIZES, 3)
    report = check_gradients(params, x, y, per_example=lambda p, x, y: fnn.backprop(p, x, y)[1])
    assert not report.ok and all(not t.per_example.shape_ok for t in report.tensors)


# ---------------------------------------------------------------- numerical gradients
def test_numerical_grads_match_the_notebook_loop_and_each_other():
    params, x, y = problem(6, SMALL_SIZES, 5)
    slow = fnn.reference.numerical_grad(params, x, y)
    full = numerical_grads(params, x, y, backend="numba")
    for mode, backend in [("full", "numpy"), ("complex-step", None)]:
        other = numerical_grads(params, x, y, mode=mode, backend=backend)
        for a, b in zip(full, other):
            np.testing.assert_allclose(a.w, b.w, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(a.b, b.b, rtol=1e-9, atol=1e-12)
    for a, b in zip(full, slow):
        np.testing.assert_allclose(a.w, b.w, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(a.b, b.b, rtol=1e-6, atol=1e-9)
    pe = numerical_grads(params, x, y, per_example=True)
    for a, b in zip(full, pe):
        assert b.w.shape == (5, *a.w.shape)
        np.testing.assert_allclose(b.w.mean(axis=0), a.w, rtol=1e-12, atol=1e-16)


# ---------------------------------------------------------------- casting, shapes, bad input
def test_float32_network_is_cast_with_a_warning():
    params, x, y = problem(7, SMALL_SIZES, 4)
    p32 = tuple(Layer(w.astype(np.float32), b.astype(np.float32)) for w, b in params)
    seen = []

    def spy(params, x, y):
        seen.append((params[0].w.dtype, x.dtype))
        return fnn.backprop(params, x, y)

    with pytest.warns(UserWarning, match=r"cast params and x from float32 to float64"):
        report = check_gradients(p32, x.astype(np.float32), y, grad_fn=spy)
    assert report.ok and report.cast_from == "float32" and report.dtype == "float64"
    assert seen == [(np.float64, np.float64)]
    assert "cast from float32" in str(report)
    with pytest.warns(UserWarning, match=r"cast x from float32"):
        check_gradients(params, x.astype(np.float32), y)


def test_wrong_shape_is_reported_not_crashed():
    params, x, y = problem(8, SMALL_SIZES, 4)

    def transposed(params, x, y):  # params[0].w is (6, 5): the transpose has another shape
        loss, grads = fnn.backprop(params, x, y)
        return loss, (Layer(grads[0].w.T, grads[0].b), *grads[1:])

    report = check_gradients(params, x, y, grad_fn=transposed)
    assert failing(report) == {(0, "w")}
    t = report.tensors[0]
    assert not t.mean.shape_ok and t.mean.got_shape == (5, 6) and t.mean.expected_shape == (6, 5)
    assert "shape mismatch" in str(report)


def test_nan_gradient_and_wrong_loss_fail():
    params, x, y = problem(8, SMALL_SIZES, 4)

    def nan_grad(params, x, y):
        loss, grads = fnn.backprop(params, x, y)
        b = grads[1].b.copy()
        b[2] = np.nan
        return loss, (grads[0], Layer(grads[1].w, b), grads[2])

    assert failing(check_gradients(params, x, y, grad_fn=nan_grad)) == {(1, "b")}

    def sum_loss(params, x, y):
        loss, grads = fnn.backprop(params, x, y)
        return loss * len(y), grads

    report = check_gradients(params, x, y, grad_fn=sum_loss)
    assert not report.ok and not report.loss_ok and failing(report) == set()
    assert "MISMATCH" in str(report)


BAD_GRAD_FNS = [
    (lambda p, x, y: fnn.backprop(p, x, y)[1], TypeError, "return \\(loss, grads\\)"),
    (lambda p, x, y: (np.ones(2), fnn.backprop(p, x, y)[1]), TypeError, "scalar loss"),
    (lambda p, x, y: (0.0, fnn.backprop(p, x, y)[1][:2]), ValueError, "expected 3 layers"),
    (lambda p, x, y: (0.0, np.zeros(3)), TypeError, "tuple of fnn.Layer"),
    (lambda p, x, y: (0.0, (p[0].w, *fnn.backprop(p, x, y)[1][1:])), TypeError, r"grads\[0\]"),
    (lambda p, x, y: (0.0, (Layer(None, p[0].b), *p[1:])), TypeError, r"grads\[0\]\.w"),
]


@pytest.mark.parametrize(("grad_fn", "error", "match"), BAD_GRAD_FNS)
def test_bad_grad_fn_structure_raises_clearly(grad_fn, error, match):
    params, x, y = problem(9, SMALL_SIZES, 3)
    with pytest.raises(error, match=match):
        check_gradients(params, x, y, grad_fn=grad_fn)


BAD_OPTIONS = [
    ({"mode": "forward"}, ValueError, "mode"),
    ({"h": 0.0}, ValueError, "h"),
    ({"h": -1e-6}, ValueError, "h"),
    ({"h": float("nan")}, ValueError, "h"),
    ({"h": "1e-6"}, TypeError, "h"),
    ({"rtol": 0}, ValueError, "rtol"),
    ({"atol": -1.0}, ValueError, "atol"),
    ({"max_excluded_fraction": 1.5}, ValueError, "max_excluded_fraction"),
    ({"max_excluded_fraction": "all"}, TypeError, "max_excluded_fraction"),
    ({"directions": 0}, ValueError, "directions"),
    ({"directions": 2.5}, TypeError, "directions"),
    ({"chunk_bytes": 0}, ValueError, "chunk_bytes"),
    ({"grad_fn": 3}, TypeError, "grad_fn"),
    ({"per_example": "yes"}, TypeError, "per_example"),
    ({"seed": -1}, ValueError, "seed"),
    ({"backend": "cuda"}, ValueError, "backend"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD_OPTIONS)
def test_bad_options_raise(options, error, match):
    params, x, y = problem(9, SMALL_SIZES, 3)
    with pytest.raises(error, match=match):
        check_gradients(params, x, y, **options)


def test_bad_data_raises():
    params, x, y = problem(9, SMALL_SIZES, 3)
    with pytest.raises(TypeError, match="x: expected dtype float64"):
        check_gradients(params, x.astype(np.int64), y)
    with pytest.raises(ValueError, match="x: expected 6 features"):
        check_gradients(params, x[:, :4], y)
    with pytest.raises(ValueError, match="y: expected labels in"):
        check_gradients(params, x, y + 10)
    with pytest.raises(TypeError, match="params"):
        check_gradients(list(params), x, y)
    with pytest.raises(ValueError, match="mode"):
        numerical_grads(params, x, y, mode="directional")
    with pytest.raises(TypeError, match="x: expected dtype"):
        per_example_grads(params, x.astype(np.float32), y)
    with pytest.raises(ValueError, match="batch"):
        notebook_problem(0, batch=0)


# ---------------------------------------------------------------- report and raising
def test_assert_gradients_raises_with_the_report():
    params, x, y = problem(10, MUTANT_SIZES, MUTANT_BATCH)
    with pytest.raises(GradientCheckError) as info:
        assert_gradients(params, x, y, grad_fn=chain_rule_backprop("sign", 2))
    assert isinstance(info.value, AssertionError)
    assert not info.value.report.ok and str(info.value) == str(info.value.report)
    with pytest.raises(GradientCheckError):
        check_gradients(params, x, y, grad_fn=chain_rule_backprop("sign", 2), raise_on_fail=True)
    assert assert_gradients(params, x, y).ok


def test_report_reads_as_a_table_and_is_deterministic():
    params, x, y = problem(11, SMALL_SIZES, 5)
    a = check_gradients(params, x, y, mode="directional", seed=3, directions=5)
    b = check_gradients(params, x, y, mode="directional", seed=3, directions=5)
    assert a == b and a.seed == 3 and a.passes > 0
    text = str(a).splitlines()
    assert text[0].startswith("gradient check passed: mode=directional")
    assert "norm ratio" in text[2] and len(text) == 3 + 2 * (len(SMALL_SIZES) - 1)
    assert all(t.mean.checked == 5 for t in a.tensors)
    gen = check_gradients(params, x, y, mode="directional", seed=np.random.default_rng(3))
    assert gen.seed is None and gen.ok
