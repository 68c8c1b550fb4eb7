"""Gradient checks: a backprop under test against batched finite differences.

`check_gradients` compares the batch-mean gradient that `grad_fn` (any function with
`fnn.backprop`'s signature) returns with numerical gradients of the mean loss of any
network fnn can build (every activation, loss and dropout of `fnn.model`), tensor by
tensor, and returns a `GradientReport`. The numerical gradients are taken per example,
for the whole batch at once; their mean is compared with grad_fn's (it catches reduction
bugs), and on request each example's with per-example gradients. All the math comes from
the activation and loss records: no op is written again here.

How it stays fast. Perturbing one entry W_l[i, j] (or b_l[j]) shifts only the column
z_{l+1}[:, j] of the next pre-activation, by h * a_l[:, i] (or h). The layers below are
computed once and cached. For a chunk of perturbations (sized by `chunk_bytes`) the
column shift goes through its activation (and dropout mask, fixed by the key), a
rank-one update `da * W_{l+1}[j]` gives the next layer's change, and only the layers
above run, over (perturbation x example) rows at once; a change that dies (at a dead
ReLU, a dropped unit) costs nothing further: it leaves the loss exactly as it is.

Why it is also accurate. The passes carry *differences* from the unperturbed network:
for a piecewise-linear activation `f(z + d) - f(z)` is exactly `f'(z) d` while no kink
is crossed, and each loss record's `change` gives an example's loss change in a
difference form (for softmax cross-entropy `log(sum_k p_k exp(dz_k)) - dz_y` by
log1p/expm1). Rounding is then relative to the loss *change*, not to the loss: central
differences come out good to ~1e-13 relative at h = 1e-6 for ReLU nets (~1e-10 for
smooth activations, whose change f(z + d) - f(z) is rounded once), where the notebook's
loop, subtracting two whole losses, gets ~1e-9.

Modes. "full": central differences of every entry. "directional": R random unit
directions per tensor, u.g against the difference along u; a fast smoke check.
"complex-step": Im L(theta + i h e) / h with h = 1e-20 through the same passes with
imaginary changes; for the `analytic` activations (piecewise-linear ones branch on the
real part); no subtraction error and no kink crossing.

Kinks (ReLU, leaky ReLU: the records' `kinks`). A (perturbation, example) pair whose
+-h step crosses a kink of any unit above is a kink pair: its central difference
straddles a kink. Kink pairs alone are re-checked at h * 1e-3, then h * 1e-6: by a
central difference, or where one side still crosses, by a second-order one-sided
difference on the side that does not (which meets the ReLU'(0) = 0 convention). Pairs
that cross on both sides are excluded, and a tensor fails when more than
`max_excluded_fraction` of its entries were: a check can never pass by checking
nothing. Smooth activations have no kink pairs, so none of this runs for them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from .activations import IDENTITY, Activation
from .backends import Ops, get_backend, get_ops
from .hyperparams import Flag, Int
from .mlp import backprop, forward_unchecked
from .model import Model, check_key, make_model
from .params import MAX_PARAMETERS, Layer, Params, freeze, init_params, make_rng
from .per_example import per_example_grads_unchecked
from .validate import (
    as_array,
    check_int,
    check_lr,
    check_params,
    check_real,
    check_x,
    describe,
    shown,
)

__all__ = [
    "DEFAULT_H",
    "DEFAULT_RTOL",
    "MAX_DIRECTIONS",
    "MODES",
    "Comparison",
    "GradFn",
    "GradientCheckError",
    "GradientReport",
    "Position",
    "TensorCheck",
    "assert_gradients",
    "check_gradients",
    "notebook_problem",
    "numerical_grads",
]

MODES = ("full", "directional", "complex-step")
DEFAULT_H = {"full": 1e-6, "directional": 1e-6, "complex-step": 1e-20}
DEFAULT_RTOL = {"full": 1e-6, "directional": 1e-6, "complex-step": 1e-9}
#: The most random directions per tensor that mode "directional" takes. Each tensor's
#: directions are one (directions, size) float64 matrix, held at once, and each costs
#: batched passes like an entry of mode "full": past a few hundred, "full" (every entry,
#: exactly) is the better check, and 2**40 would only fail with a MemoryError.
MAX_DIRECTIONS: int = 1024
# Kink pairs are re-checked with steps this much smaller: a unit at distance |z| from its
# kink is crossed by step h only when |z| < h * |shift|, so each level leaves ~1000x fewer
# crossings. Difference form keeps even h * 1e-6 free of cancellation.
_RECHECK_SHRINKS = (1e-3, 1e-6)
# Without an explicit atol, entries below this fraction of the tensor's largest numerical
# gradient count as negligible: their error is measured against that floor.
_FLOOR = 1e-3
_CLEAN, _RECHECKED, _EXCLUDED = 0, 1, 2

GradFn: TypeAlias = Callable[[Params, np.ndarray, np.ndarray], tuple[Any, Params]]


# ---------------------------------------------------------------- the batched passes
class _Net(NamedTuple):
    """The unperturbed float64 network on one batch, cached for every pass.

    ins[k]: what layer k reads (k = 0 .. L-1), x or a_k after dropout; zs[k], acts[k]
    (k = 1 .. L-1): the pre-activation and activation (before dropout) that make ins[k];
    drops[k]: the dropout multiplier of ins[k] or None; out: the outputs (zs[L]).
    """

    params: Params
    y: np.ndarray  # (n,) int64 labels or (n, k) float targets
    model: Model
    ins: list
    zs: list
    acts: list
    drops: list
    out: np.ndarray


def _net(ops: Ops, params: Params, model: Model, x: np.ndarray, y: np.ndarray,
         key: np.uint64 | None) -> _Net:
    t = forward_unchecked(ops, params, model, x, key)
    # True pre-activations: for ReLU the forward pass keeps only a (kinks need z).
    zs = [ops.layer(t.inputs[k], w, b, IDENTITY)[0] for k, (w, b) in enumerate(params)]
    return _Net(params, y, model, t.inputs, [None, *zs], [None, *t.acts], t.drops, t.out)


def _act_diff(act: Activation, d: np.ndarray, z: np.ndarray, a: np.ndarray,
              flags: np.ndarray) -> np.ndarray:
    """act(z + d) - act(z), broadcast over d's leading axes; flags |= a kink was crossed.

    While no kink is crossed a piecewise-linear activation's change is exactly
    d * act'(z): no rounding at all, so central differences keep their full accuracy.
    """
    s = z + d
    crossed = np.zeros(s.shape, bool)
    for k in act.kinks:
        crossed |= ((s.real if np.iscomplexobj(s) else s) > k) != (z > k)
    if not act.linear_pieces:
        out = act.forward(s) - a
    else:
        out = d * act.derivative(z, a)
        if crossed.any():
            out[crossed] = np.broadcast_to(act.forward(s) - a, s.shape)[crossed]
    if act.kinks:
        flags |= crossed.any(axis=-1)
    return out


def _layer_np(d: np.ndarray, z: np.ndarray, a: np.ndarray, w: np.ndarray, flags: np.ndarray,
              act: Activation, drop: np.ndarray | None) -> np.ndarray:
    """((act(z + d) - act(z)) * drop) @ w for d: (r, n, width) -> (r, n, w')."""
    rows, n, width = d.shape
    da = _act_diff(act, d, z, a, flags)
    if drop is not None:
        da = da * drop
    # One matmul over all (pair, example) rows: (rows * n, width) @ W.
    return (da.reshape(rows * n, width) @ np.ascontiguousarray(w)).reshape(rows, n, w.shape[1])


_NO_KINKS = np.zeros(0)


def _layer_numba(d: np.ndarray, z: np.ndarray, a: np.ndarray, w: np.ndarray,
                 flags: np.ndarray, act: Activation, drop: np.ndarray | None) -> np.ndarray:
    """`_layer_np` fused in compiled code, for a built-in activation (real steps)."""
    if act.code < 0:
        return _layer_np(d, z, a, w, flags, act, drop)
    from . import kernels

    # C-contiguous w: the kernel's one compiled layout (see fnn.numba_ops._layer).
    return kernels.gradcheck_layer(d, z, a, np.ascontiguousarray(w), flags, act.code,
                                   np.array(act.kinks, dtype=np.float64), act.linear_pieces,
                                   np.zeros((0, 0)) if drop is None else drop)


def _layer_fn(backend: str | None, complex_step: bool) -> Callable:
    name = get_backend() if backend is None else backend
    return _layer_np if complex_step or name == "numpy" else _layer_numba


class _Family(NamedTuple):
    """The perturbations of one tensor: `count` entries (or directions).

    start(rows: (p,), steps: (s,)) -> (k, d, flags, live): for the s*p (step, entry)
    pairs, kink flags so far (s*p, n), which pairs still change anything (live: (s*p,)
    bool, or None for all), and their change d: (live pairs, n, width_k) of the
    pre-activation zs[k].
    """

    count: int
    width: int  # widest layer a pass goes through: sizes the chunks
    start: Callable[[np.ndarray, np.ndarray], tuple[int, np.ndarray, np.ndarray, Any]]


def _entry_family(net: _Net, l: int, tensor: str) -> _Family:
    """One perturbation per entry of params[l].w (C order) or params[l].b."""
    n_layers, n = len(net.params), len(net.y)
    d_in, d_out = net.params[l].w.shape
    src, col = np.divmod(np.arange(d_in * d_out), d_out) if tensor == "w" else (None, None)
    col = np.arange(d_out) if col is None else col
    onehot = np.eye(d_out)

    def start(rows: np.ndarray, steps: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, Any]:
        cols = col[rows]
        shift = net.ins[l][:, src[rows]].T if src is not None else np.ones((len(rows), n))
        dz = steps[:, None, None] * shift  # (s, p, n): change of zs[l+1][:, cols]
        flags = np.zeros(dz.shape, bool)
        if l + 1 == n_layers:  # the outputs themselves
            d = dz[..., None] * onehot[cols][None, :, None, :]
            return n_layers, d.reshape(-1, n, d_out), flags.reshape(-1, n), None
        k = l + 1
        da = _act_diff(net.model.activation(l), dz[..., None], net.zs[k][:, cols].T[..., None],
                       net.acts[k][:, cols].T[..., None], flags)
        if net.drops[k] is not None:
            da = da * net.drops[k][:, cols].T[..., None]
        da = da.reshape(-1, n)
        # A change that died here (a dead ReLU, a dropped unit) leaves the loss as it is.
        live = da.any(axis=1)
        cols = np.tile(cols, len(steps))[live]
        d = da[live][:, :, None] * net.params[k].w[cols][:, None, :]  # rank one: row j
        return l + 2, d, flags.reshape(-1, n), live

    widths = [p.w.shape[1] for p in net.params[l:]]
    return _Family(d_in * d_out if tensor == "w" else d_out, max(widths), start)


def _direction_family(net: _Net, l: int, tensor: str, u: np.ndarray) -> _Family:
    """One perturbation per unit direction u[r] of params[l].w or params[l].b."""
    n, d_out = net.out.shape[0], net.params[l].w.shape[1]
    dz1 = net.ins[l] @ u if tensor == "w" else np.broadcast_to(u[:, None, :], (len(u), n, d_out))

    def start(rows: np.ndarray, steps: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, Any]:
        d = steps[:, None, None, None] * dz1[rows]
        flags = np.zeros((len(steps) * len(rows), n), bool)
        return l + 1, d.reshape(-1, n, d_out), flags, None

    return _Family(len(u), max(p.w.shape[1] for p in net.params[l:]), start)


def _loss_changes(
    net: _Net, fam: _Family, rows: np.ndarray, steps: np.ndarray, layer: Callable
) -> tuple[np.ndarray, np.ndarray]:
    """One batched pass: per-example loss changes and kink flags, both (s, p, n)."""
    k, d, flags, live = fam.start(rows, steps)
    sub = flags if live is None else flags[live]
    for kk in range(k, len(net.params)):
        d = layer(d, net.zs[kk], net.acts[kk], net.params[kk].w, sub,
                  net.model.activation(kk - 1), net.drops[kk])
    change = net.model.loss.change
    if live is None:
        out = change(d, net.out, net.y)
    else:
        out = np.zeros(flags.shape, d.dtype)
        out[live] = change(d, net.out, net.y)
        flags[live] = sub
    shape = (len(steps), len(rows), net.out.shape[0])
    return out.reshape(shape), flags.reshape(shape)


def _chunks(rows: np.ndarray, bytes_per_row: int, chunk_bytes: int) -> Iterator[np.ndarray]:
    size = max(1, chunk_bytes // bytes_per_row)
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def _numerical(
    net: _Net, fam: _Family, h: float, complex_step: bool, recheck: bool, kern: Callable,
    chunk_bytes: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-example numerical gradients (count, n), pair status (count, n) and passes."""
    n = len(net.y)
    steps = np.array([1j * h]) if complex_step else np.array([h, -h])
    g = np.empty((fam.count, n))
    status = np.zeros((fam.count, n), np.int8)
    passes = 0
    per_row = len(steps) * n * fam.width * (16 if complex_step else 8)
    for rows in _chunks(np.arange(fam.count), per_row, chunk_bytes):
        dl, flags = _loss_changes(net, fam, rows, steps, kern)
        passes += 1
        if complex_step:
            g[rows] = dl[0].imag / h
        else:
            g[rows] = (dl[0] - dl[1]) / (2 * h)
            status[rows] = flags[0] | flags[1]
    # Kink pairs (status 1 = _RECHECKED from here on, if a re-check resolves them).
    unresolved = status != _CLEAN
    for shrink in _RECHECK_SHRINKS if recheck else ():
        if not unresolved.any():
            break
        h2 = h * shrink
        steps = np.array([h2, -h2, 2 * h2, -2 * h2])
        for rows in _chunks(np.flatnonzero(unresolved.any(axis=1)), 2 * per_row, chunk_bytes):
            dl, f = _loss_changes(net, fam, rows, steps, kern)
            passes += 1
            central, plus, minus = ~(f[0] | f[1]), ~(f[0] | f[2]), ~(f[1] | f[3])
            # Second-order one-sided differences (f(0) = 0 in difference form).
            value = np.select(
                [central, plus, minus],
                [(dl[0] - dl[1]) / (2 * h2), (4 * dl[0] - dl[2]) / (2 * h2),
                 (dl[3] - 4 * dl[1]) / (2 * h2)],
            )
            resolved = unresolved[rows] & (central | plus | minus)
            g[rows] = np.where(resolved, value, g[rows])
            unresolved[rows] &= ~resolved
    status[unresolved] = _EXCLUDED
    return g, status, passes


# ---------------------------------------------------------------- the report
class Position(NamedTuple):
    """Where an error sits: params[layer].<tensor>[index], for one example or the mean.

    In "directional" mode, index is (r,): the r-th random direction of that tensor.
    """

    layer: int
    tensor: str  # "w" or "b"
    index: tuple[int, ...]
    example: int | None  # None for the batch-mean gradient

    def __str__(self) -> str:
        at = f"layer {self.layer} {self.tensor}[{', '.join(map(str, self.index))}]"
        return at if self.example is None else f"{at} example {self.example}"


class Comparison(NamedTuple):
    """Analytic against numerical gradients of one tensor (batch mean or per example).

    Errors: abs = |a - n|; rel = abs / max(|a|, |n|, atol / rtol), so entries below the
    negligible floor atol / rtol are measured against it. An entry passes when rel <= rtol.
    norm_ratio = ||a - n|| / (||a|| + ||n||); median_ratio = median of a / n over entries
    where both exceed the floor (about 1 when right; the batch size, -1 or scattered
    values expose a missing mean, a sign flip or a transpose).
    """

    shape_ok: bool
    expected_shape: tuple[int, ...]
    got_shape: tuple[int, ...]
    checked: int  # entries compared
    excluded: int  # entries left out: kink pairs that no re-check could resolve
    max_abs_err: float
    max_abs_at: Position | None
    max_rel_err: float
    max_rel_at: Position | None
    analytic_at_worst: float  # a and n at max_rel_at
    numerical_at_worst: float
    norm_ratio: float
    cosine: float
    median_ratio: float
    ok: bool


class TensorCheck(NamedTuple):
    """The check of one tensor, params[layer].<tensor>.

    kinks: (entry, example) pairs whose +-h step changed the sign of a ReLU input;
    rechecked: those resolved by a smaller or one-sided step (the rest are excluded).
    per_example is None unless check_gradients(per_example=...) asked for it.
    """

    layer: int
    tensor: str
    shape: tuple[int, ...]
    kinks: int
    rechecked: int
    mean: Comparison
    per_example: Comparison | None

    @property
    def ok(self) -> bool:
        return self.mean.ok and (self.per_example is None or self.per_example.ok)


class GradientReport(NamedTuple):
    """The outcome of `check_gradients`; `str(report)` is a table, `report.ok` the verdict."""

    ok: bool
    mode: str
    h: float
    rtol: float
    dtype: str  # what the check ran in: always float64
    cast_from: str | None  # the input dtype when it was cast
    seed: int | None  # None when a Generator was passed
    batch: int
    passes: int  # batched passes over the layers above a perturbation
    loss: float  # as grad_fn returned it
    loss_ref: float  # the mean softmax cross-entropy by fnn's forward
    tensors: tuple[TensorCheck, ...]

    @property
    def loss_ok(self) -> bool:
        return abs(self.loss - self.loss_ref) <= 1e-9 * max(1.0, abs(self.loss_ref))

    @property
    def worst(self) -> Comparison | None:
        """The comparison with the largest relative error (failing ones first)."""
        comps = [c for t in self.tensors for c in (t.mean, t.per_example) if c is not None]
        return min(comps, key=lambda c: (c.ok, -_finite_or_inf(c.max_rel_err)), default=None)

    def __str__(self) -> str:
        cast = f" (cast from {self.cast_from})" if self.cast_from else ""
        lines = [
            f"gradient check {'passed' if self.ok else 'FAILED'}: mode={self.mode} h={self.h:g} "
            f"rtol={self.rtol:g} dtype={self.dtype}{cast} batch={self.batch} "
            f"seed={self.seed} passes={self.passes}",
            f"loss: grad_fn {self.loss:.12g}, forward {self.loss_ref:.12g}"
            + ("" if self.loss_ok else "  MISMATCH"),
            f"{'layer':>5} {'tensor':<6} {'shape':<16} {'checked':>8} {'excl':>5} {'kinks':>6} "
            f"{'max abs':>9} {'max rel':>9} {'at':<18} {'norm ratio':>10} {'cosine':>9} "
            f"{'a/n':>8}  ok",
        ]
        for t in self.tensors:
            lines.append(_row(t.layer, t.tensor, t.mean, t.kinks))
            if t.per_example is not None:
                lines.append(_row(t.layer, f"{t.tensor}/ex", t.per_example, t.kinks))
        worst = self.worst
        if worst is not None and not worst.ok:
            lines.append(_diagnosis(worst))
        return "\n".join(lines)


def _finite_or_inf(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def _row(layer: int, name: str, c: Comparison, kinks: int) -> str:
    shape = str(c.expected_shape)
    if not c.shape_ok:
        return f"{layer:>5} {name:<6} {shape:<16} shape mismatch: grad_fn gave {c.got_shape}  FAIL"
    at = c.max_rel_at
    where = "" if at is None else "[" + ",".join(map(str, at.index)) + "]"
    if at is not None and at.example is not None:
        where += f" ex{at.example}"
    return (
        f"{layer:>5} {name:<6} {shape:<16} {c.checked:>8} {c.excluded:>5} {kinks:>6} "
        f"{c.max_abs_err:>9.2e} {c.max_rel_err:>9.2e} {where:<18} {c.norm_ratio:>10.2e} "
        f"{c.cosine:>9.6f} {c.median_ratio:>8.4g}  {'ok' if c.ok else 'FAIL'}"
    )


def _diagnosis(c: Comparison) -> str:
    if not c.shape_ok:
        return f"worst: shape {c.got_shape} where {c.expected_shape} was expected"
    if c.checked == 0 or c.max_rel_at is None:
        return f"worst: nothing checked, {c.excluded} entries excluded"
    line = (
        f"worst: {c.max_rel_at}: analytic {c.analytic_at_worst:.9g}, numerical "
        f"{c.numerical_at_worst:.9g}, rel err {c.max_rel_err:.3g}"
    )
    if c.excluded:
        line += f"; {c.excluded} of {c.checked + c.excluded} entries excluded at kinks"
    return line


class GradientCheckError(AssertionError):
    """Raised by `assert_gradients` / `check_gradients(raise_on_fail=True)`; has `.report`."""

    def __init__(self, report: GradientReport) -> None:
        super().__init__(str(report))
        self.report = report


@np.errstate(invalid="ignore", over="ignore", divide="ignore")  # NaN/inf grads: reported
def _compare(
    a: np.ndarray, n: np.ndarray, excluded: np.ndarray, where: tuple[int, str], shape: tuple,
    *, rtol: float, atol: float | None, max_excluded_fraction: float, directional: bool,
) -> Comparison:
    """a, n, excluded: (entries,) for the batch mean or (entries, batch) per example."""
    valid = ~excluded
    checked, total = int(valid.sum()), valid.size
    scale = float(np.abs(n[valid]).max(initial=0.0))
    floor = _FLOOR * scale if atol is None else atol / rtol
    err = np.abs(a - n)
    mag = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    rel = np.divide(err, mag, out=np.zeros_like(err), where=mag > 0)
    rel[~np.isfinite(err)] = np.inf  # a NaN or inf gradient is the worst error there is
    err[~valid], rel[~valid] = 0.0, 0.0
    i_abs = int(np.argmax(np.where(np.isfinite(err), err, np.inf)))
    i_rel = int(np.argmax(rel))

    def position(flat: int) -> Position:
        entry, example = np.unravel_index(flat, a.shape) if a.ndim == 2 else (flat, None)
        index = (entry,) if directional else np.unravel_index(entry, shape)
        example = None if example is None else int(example)
        return Position(where[0], where[1], tuple(int(i) for i in index), example)

    av, nv = a[valid], n[valid]
    na, nn, nd = np.linalg.norm(av), np.linalg.norm(nv), np.linalg.norm(av - nv)
    both = (np.abs(av) > floor) & (np.abs(nv) > floor)
    ok = (
        checked > 0
        and total - checked <= max_excluded_fraction * total
        and bool(np.all(rel[valid] <= rtol))
    )
    return Comparison(
        shape_ok=True, expected_shape=shape, got_shape=shape, checked=checked,
        excluded=total - checked,
        max_abs_err=float(err.flat[i_abs]), max_abs_at=position(i_abs) if checked else None,
        max_rel_err=float(rel.flat[i_rel]), max_rel_at=position(i_rel) if checked else None,
        analytic_at_worst=float(a.flat[i_rel]), numerical_at_worst=float(n.flat[i_rel]),
        norm_ratio=float(nd / (na + nn)) if na + nn > 0 else 0.0,
        cosine=float(av @ nv / (na * nn)) if na * nn > 0 else float(na == nn),
        median_ratio=float(np.median(av[both] / nv[both])) if both.any() else math.nan,
        ok=bool(ok),
    )


def _shape_failure(expected: tuple, got: tuple) -> Comparison:
    nan = math.nan
    return Comparison(False, expected, got, 0, 0, nan, None, nan, None, nan, nan, nan, nan,
                      nan, False)


# ---------------------------------------------------------------- validation helpers
class _Problem(NamedTuple):
    params: Params  # float64
    x: np.ndarray
    y: np.ndarray
    model: Model
    key: np.uint64 | None
    cast_from: str | None


def _prepare(params: Any, x: Any, y: Any, who: str, model_kwargs: dict) -> _Problem:
    """Check inputs, cast a float32 network or x to float64 (with a warning)."""
    dtype = check_params(params)
    model = make_model(len(params), **{k: v for k, v in model_kwargs.items() if k != "key"})
    key = check_key(model_kwargs.get("key"), model, training=True)
    x = as_array(x, "x")
    cast = []
    if dtype == np.float32:
        params = tuple(Layer(freeze(w.astype(np.float64)), freeze(b.astype(np.float64)))
                       for w, b in params)
        cast.append("params")
    if x.dtype == np.float32:
        x = x.astype(np.float64)
        cast.append("x")
    if cast:
        warnings.warn(
            f"{who}: cast {' and '.join(cast)} from float32 to float64: finite differences "
            "need float64; the check (and grad_fn) runs on the float64 copies",
            stacklevel=3,
        )
    x2, single = check_x(x, params, np.dtype(np.float64))
    y2 = model.loss.check_targets(y, x2.shape[0], params[-1].w.shape[1], single,
                                  np.dtype(np.float64))
    return _Problem(params, x2, y2, model, key, "float32" if cast else None)


def _setup(params: Any, x: Any, y: Any, who: str, mode: str, backend: str | None,
           model_kwargs: dict) -> tuple[_Problem, _Net, Callable]:
    """The checked problem, its unperturbed network and the layer pass to use."""
    pb = _prepare(params, x, y, who, model_kwargs)
    if mode == "complex-step":
        _complex_step_ok(pb.model)
    net = _net(get_ops(backend), pb.params, pb.model, pb.x, pb.y, pb.key)
    return pb, net, _layer_fn(backend, mode == "complex-step")


def _complex_step_ok(model: Model) -> None:
    for i, act in enumerate(model.activations):
        if not act.analytic:
            raise ValueError(f"mode: 'complex-step' needs analytic activations; "
                             f"activation[{i}] {act.name!r} is not (use mode='full')")


def _as_layers(tree: Any, n_layers: int, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """A user's gradient tree as [(w, b)] real arrays, whatever their shapes."""
    if not isinstance(tree, (tuple, list)):
        raise TypeError(f"{name}: expected a tuple of fnn.Layer(w, b), got {describe(tree)}")
    if len(tree) != n_layers:
        raise ValueError(f"{name}: expected {n_layers} layers like params, got {len(tree)}")
    layers = []
    for i, layer in enumerate(tree):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise TypeError(f"{name}[{i}]: expected an fnn.Layer(w, b), got {describe(layer)}")
        pair = []
        for field, v in zip("wb", layer):
            arr = as_array(v, f"{name}[{i}].{field}")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{name}[{i}].{field}: expected a real array, got {describe(v)}")
            pair.append(arr.astype(np.float64, copy=False))
        layers.append((pair[0], pair[1]))
    return layers


def _check_mode_and_step(mode: Any, h: Any) -> tuple[str, float]:
    if not isinstance(mode, str) or mode not in MODES:  # an array would compare elementwise
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    return mode, check_lr(DEFAULT_H[mode] if h is None else h, "h")


def _call_grad_fn(
    grad_fn: GradFn, params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    out = grad_fn(params, x, y)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"grad_fn: expected it to return (loss, grads) like fnn.backprop, got {describe(out)}"
        )
    try:
        loss = float(out[0])
    except (TypeError, ValueError):
        raise TypeError(f"grad_fn: expected a real scalar loss, got {describe(out[0])}") from None
    except OverflowError:  # an int beyond float's range, 10**400
        raise ValueError(f"grad_fn: expected a real scalar loss a float holds, got "
                         f"{shown(out[0])}") from None
    return loss, _as_layers(out[1], len(params), "grad_fn's grads")


def _family(
    net: _Net, l: int, tensor: str, directions: int | None, rng: np.random.Generator
) -> tuple[_Family, np.ndarray | None]:
    """The perturbations of params[l].<tensor> and, for directions, their matrix (r, size)."""
    if directions is None:
        return _entry_family(net, l, tensor), None
    shape = getattr(net.params[l], tensor).shape
    u = rng.standard_normal((directions, math.prod(shape)))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return _direction_family(net, l, tensor, u.reshape(directions, *shape)), u


def _tensor_check(
    where: tuple[int, str], shape: tuple, g: np.ndarray, status: np.ndarray,
    u: np.ndarray | None, a: np.ndarray, a_pe: np.ndarray | None, compare: dict,
) -> TensorCheck:
    """Compare grad_fn's `a` (and per-example `a_pe`) with numerical g: (entries, n)."""
    n, excluded = g.shape[1], status == _EXCLUDED

    def entries(v: np.ndarray) -> np.ndarray:  # (size, ...) -> entries or directions
        return v if u is None else u @ v

    if a.shape != shape:
        mean = _shape_failure(shape, a.shape)
    else:
        n_mean = np.where(excluded, 0.0, g).mean(axis=1)
        mean = _compare(entries(a.ravel()), n_mean, excluded.any(axis=1), where, shape, **compare)
    per = None
    if a_pe is not None and a_pe.shape != (n, *shape):
        per = _shape_failure((n, *shape), a_pe.shape)
    elif a_pe is not None:
        per = _compare(entries(a_pe.reshape(n, -1).T), g, excluded, where, shape, **compare)
    kinks, rechecked = int((status != _CLEAN).sum()), int((status == _RECHECKED).sum())
    return TensorCheck(where[0], where[1], shape, kinks, rechecked, mean, per)


# ---------------------------------------------------------------- public API
def numerical_grads(
    params: Params, x: Any, y: Any, *, mode: str = "full", h: float | None = None,
    per_example: bool = False, recheck: bool = True, activation: Any = "relu",
    loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
    backend: str | None = None, chunk_bytes: int = 1 << 20,
) -> Params:
    """Numerical gradient of the mean loss, by batched passes.

    mode: "full" (central differences) or "complex-step"; h: the step (default 1e-6 and
    1e-20). x: (batch, d_in), y: the targets of `loss`; activation, loss, dropout, key:
    the model (see `fnn.model`; with dropout, the masks of `key` stay fixed). A float32
    network or x is cast to float64 with a warning. Returns a tuple of float64 `Layer`
    shaped like params, or with a leading batch axis when per_example; entries whose
    kink pairs could not be resolved are NaN.
    """
    mode, h = _check_mode_and_step(mode, h)
    if mode == "directional":
        raise ValueError("mode: expected 'full' or 'complex-step'; 'directional' gives "
                         "directional derivatives, not a gradient")
    chunk_bytes = check_int(chunk_bytes, "chunk_bytes", 1)
    recheck = Flag().check(recheck, "recheck")
    pb, net, layer = _setup(params, x, y, "numerical_grads", mode, backend,
                            dict(activation=activation, loss=loss, dropout=dropout, key=key))
    out = []
    for l, params_l in enumerate(pb.params):
        pair = []
        for tensor, p in zip("wb", params_l):
            g, status, _ = _numerical(net, _entry_family(net, l, tensor), h,
                                      mode == "complex-step", recheck, layer, chunk_bytes)
            g[status == _EXCLUDED] = np.nan
            g = g.T.reshape(-1, *p.shape) if per_example else g.mean(axis=1).reshape(p.shape)
            pair.append(freeze(g))
        out.append(Layer(*pair))
    return tuple(out)


def check_gradients(
    params: Params,
    x: Any,
    y: Any,
    *,
    grad_fn: GradFn | None = None,
    mode: str = "full",
    h: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_excluded_fraction: float = 0.1,
    per_example: bool | Callable[[Params, np.ndarray, np.ndarray], Params] = False,
    directions: int = 8,
    seed: int | np.random.Generator = 0,
    recheck: bool = True,
    raise_on_fail: bool = False,
    activation: Any = "relu",
    loss: Any = "softmax_cross_entropy",
    dropout: Any = 0.0,
    key: Any = None,
    backend: str | None = None,
    chunk_bytes: int = 1 << 20,
) -> GradientReport:
    """Check `grad_fn`'s gradient of the mean loss, tensor by tensor.

    params: tuple of fnn.Layer; x: (batch, d_in); y: the targets of `loss`. A float32
        network or x is cast to float64 (with a warning): grad_fn gets the float64 copies.
    activation, loss, dropout, key: the model whose loss is differentiated (see
        `fnn.model`); with dropout, the masks drawn from `key` stay fixed.
    grad_fn: the function under test, `(params, x, y) -> (mean loss, grads)` like
        fnn.backprop; None (the default) checks fnn.backprop of that model.
    mode: "full" (every entry, central differences), "directional" (`directions` random
        unit directions per tensor, at most MAX_DIRECTIONS, drawn from `seed`) or
        "complex-step".
    h: step (default 1e-6; 1e-20 for complex-step). rtol: an entry passes when
        |a - n| <= rtol * max(|a|, |n|, atol / rtol) (default 1e-6; 1e-9 complex-step);
        atol defaults to rtol * 1e-3 * the tensor's largest numerical entry.
    max_excluded_fraction: a tensor fails when more of its entries were excluded at kinks.
    per_example: True compares per-example numerical gradients with
        `fnn.per_example_grads` (of the same model); a callable `(params, x, y) -> grads`
        is compared instead.
    recheck: re-check kink pairs with smaller or one-sided steps (False excludes them).
    raise_on_fail: raise GradientCheckError (carrying the report) instead of returning a
        failed report. backend: the compute path of the check's own passes.
    chunk_bytes: bound on the largest temporary of one batched pass.
    """
    mode, h = _check_mode_and_step(mode, h)
    rtol = check_lr(DEFAULT_RTOL[mode] if rtol is None else rtol, "rtol")
    atol = None if atol is None else check_real(atol, "atol", 0.0, math.inf)
    compare = dict(rtol=rtol, atol=atol, directional=mode == "directional",
                   max_excluded_fraction=check_real(max_excluded_fraction,
                                                    "max_excluded_fraction", 0.0, 1.0))
    directions = Int(1, MAX_DIRECTIONS).check(directions, "directions")
    recheck = Flag().check(recheck, "recheck")
    raise_on_fail = Flag().check(raise_on_fail, "raise_on_fail")
    n_dirs = directions if mode == "directional" else None
    chunk_bytes = check_int(chunk_bytes, "chunk_bytes", 1)
    if grad_fn is not None and not callable(grad_fn):
        raise TypeError(f"grad_fn: expected a function like fnn.backprop, got {describe(grad_fn)}")
    if not (isinstance(per_example, bool) or callable(per_example)):
        raise TypeError(f"per_example: expected a bool or a function like "
                        f"per_example_grads, got {describe(per_example)}")
    rng, ops = make_rng(seed), get_ops(backend)
    pb, net, layer = _setup(params, x, y, "check_gradients", mode, backend,
                            dict(activation=activation, loss=loss, dropout=dropout, key=key))
    if grad_fn is None:
        grad_fn = partial(backprop, activation=activation, loss=loss, dropout=dropout, key=key,
                          backend=backend)

    value, grads = _call_grad_fn(grad_fn, pb.params, pb.x, pb.y)
    pe = None
    if per_example is not False:
        fn = per_example if callable(per_example) else partial(
            _per_example_of, ops, model=pb.model, key=pb.key)
        pe = _as_layers(fn(pb.params, pb.x, pb.y), len(pb.params), "per_example's grads")
    passes, tensors = 0, []
    for l, params_l in enumerate(pb.params):
        for t, tensor in enumerate("wb"):
            fam, u = _family(net, l, tensor, n_dirs, rng)
            g, status, k = _numerical(net, fam, h, mode == "complex-step", recheck, layer,
                                      chunk_bytes)
            passes += k
            a_pe = None if pe is None else pe[l][t]
            tensors.append(_tensor_check((l, tensor), params_l[t].shape, g, status, u,
                                         grads[l][t], a_pe, compare))

    report = GradientReport(
        ok=False, mode=mode, h=h, rtol=rtol, dtype="float64", cast_from=pb.cast_from,
        seed=None if isinstance(seed, np.random.Generator) else int(seed), batch=len(pb.y),
        passes=passes, loss=value,
        loss_ref=float(ops.loss_value(net.out, pb.y, pb.model.loss)),
        tensors=tuple(tensors),
    )
    report = report._replace(ok=report.loss_ok and all(t.ok for t in tensors))
    if raise_on_fail and not report.ok:
        raise GradientCheckError(report)
    return report


def _per_example_of(ops: Ops, params: Params, x: np.ndarray, y: np.ndarray, *, model: Model,
                    key: np.uint64 | None) -> Params:
    return per_example_grads_unchecked(ops, params, x, y, model, key)


def assert_gradients(params: Params, x: Any, y: Any, **options: Any) -> GradientReport:
    """`check_gradients(..., raise_on_fail=True)`: for tests; returns the passing report."""
    return check_gradients(params, x, y, raise_on_fail=True, **options)


def notebook_problem(
    seed: int | np.random.Generator = 0,
    sizes: Sequence[int] = (256, 128, 64, 32, 16, 8, 4),
    batch: int = 1,
) -> tuple[Params, np.ndarray, np.ndarray]:
    """The origin notebook's gradient-check case, for `python -m fnn check` and benchmarks.

    Returns (params: Glorot float64 with zero biases, x: (batch, sizes[0]) float64
    standard normal, y: (batch,) int64 uniform in [0, sizes[-1])), all from `seed`.
    """
    batch = check_int(batch, "batch", 1)
    rng = make_rng(seed)
    params = init_params(rng, sizes, dtype=np.float64)  # (sizes checked, and bounded)
    d_in = params[0].w.shape[0]
    if batch * d_in > MAX_PARAMETERS:  # x: no more numbers than the largest net's
        raise ValueError(f"batch: expected at most {MAX_PARAMETERS // d_in} examples of "
                         f"{d_in} inputs (fnn.params.MAX_PARAMETERS numbers), got {shown(batch)}")
    return params, rng.standard_normal((batch, sizes[0])), rng.integers(0, sizes[-1], batch)
