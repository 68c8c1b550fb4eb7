"""The fastest way through an epoch: one jitted loop over all of its steps.

    params, losses = sgd_epoch(params, x, y, order, batch_size=64, lr=0.1)

does exactly what this Python loop does, one `fnn.backprop` + `fnn.sgd_step` per batch
of the shuffled `order`, with the numba kernels, but without leaving compiled code
between steps (no per-step validation, no Python overhead, no new read-only arrays):

    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        value, grads = fnn.backprop(params, x[idx], y[idx], backend="numba")
        params = fnn.sgd_step(params, grads, lr)

The result is bit-identical to that loop's (the same kernels in the same order, the same
float operations in the update). It stays pure at the boundary: params are copied into
private buffers, updated there, and returned as new read-only params; the inputs are
never written. `momentum_epoch` does the same for `fnn.optim.sgd(lr, momentum)`.
`run_steps` (for validated inputs; what `fnn.fit` uses) does it for every optimizer a
TrainConfig makes, by its `compiled_optimizer` spec: sgd, momentum, nesterov and adam,
each with weight decay, taking and returning the `fnn.optim` state, bit-identical to
`opt.update` after each `fnn.backprop` (numba backend).

`lr` may be one float or one learning rate per step (an array), so a schedule can be
evaluated by the caller. The functions ending in `_unchecked` skip validation, for
callers that validated already (a training loop over many epochs).
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from . import team as _team
from .dropout import fold_key, layer_base, threshold
from .interrupts import deferred_sigint
from .model import Model, check_key, make_model
from .params import Layer, Params, freeze
from .validate import (
    as_array,
    check_grads,
    check_in_dtype,
    check_lr,
    check_params,
    check_x,
    nonfinite_error,
)

__all__ = [
    "OptimizerSpec",
    "check_order",
    "compiled_optimizer",
    "momentum_epoch",
    "momentum_epoch_unchecked",
    "run_epoch",
    "run_steps",
    "sgd_epoch",
    "sgd_epoch_unchecked",
    "steps_in_epoch",
    "threads_for",
]


def steps_in_epoch(n: int, batch_size: int) -> int:
    """The number of steps over n examples: batches of batch_size, the last one smaller."""
    return -(-n // batch_size)


def check_order(order: Any, n: int, name: str = "order") -> np.ndarray:
    """Check an epoch's example order: a non-empty 1-d integer array of rows in [0, n).

    Returns it as a C-contiguous int64 array.
    """
    order = as_array(order, name)  # refuses a masked order and a ragged list
    if order.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer row indices, got dtype {order.dtype}")
    if order.ndim != 1 or order.shape[0] == 0:
        raise ValueError(f"{name}: expected a non-empty 1-d array of row indices, got shape "
                         f"{order.shape}")
    lo, hi = int(order.min()), int(order.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: expected row indices in [0, {n - 1}], got {bad}")
    return np.ascontiguousarray(order, dtype=np.int64)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size: expected an int, got {type(batch_size).__name__} "
                        f"{batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
    return int(batch_size)


def _check_lrs(lr: Any, steps: int, dtype: np.dtype) -> np.ndarray:
    """One float lr, or one per step; returned as a (steps,) array of the params' dtype
    (each one that dtype holds: 1e39 would be inf in float32, 1e-50 a 0)."""
    if isinstance(lr, np.ndarray) and lr.ndim == 1:
        if lr.shape[0] != steps:
            raise ValueError(f"lr: expected one learning rate per step, {steps}, got {lr.shape[0]}")
        for k, value in enumerate(lr.tolist()):
            check_lr(value, f"lr[{k}]", dtype)
        return lr.astype(dtype)
    return np.full(steps, check_lr(lr, "lr", dtype), dtype=dtype)


def _check_momentum(momentum: Any, dtype: np.dtype) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.integer,
                                                               np.floating)):
        raise TypeError(f"momentum: expected a float in (0, 1), got {type(momentum).__name__} "
                        f"{momentum!r}")
    if not 0 < momentum < 1:
        raise ValueError(f"momentum: expected a float in (0, 1) (use sgd_epoch for 0), "
                         f"got {momentum}")
    # (one that rounds to 0 in the dtype runs as plain SGD: harmless, so not refused)
    return check_in_dtype(float(momentum), dtype, "momentum", zero_ok=True)


class _Epoch(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    order: np.ndarray
    batch_size: int
    lrs: np.ndarray
    model: Model
    step_keys: np.ndarray | None


def _check(
    params: Any, x: Any, y: Any, order: Any, batch_size: Any, lr: Any, activation: Any,
    loss: Any, dropout: Any, key: Any,
) -> _Epoch:
    dtype = check_params(params)
    model = make_model(len(params), activation, loss, dropout)
    if any(a.code < 0 for a in model.activations) or model.loss.code < 0:
        raise ValueError("activation: the compiled epoch takes the built-in activations and "
                         "losses only; run a user-defined one step by step with "
                         "fnn.backprop (backend='numpy' or 'numba')")
    # Finiteness is checked on the rows the epoch uses, as it gathers them (see `run_epoch`).
    x2, single = check_x(x, params, dtype, finite=False)
    if single:
        raise ValueError(f"x: expected a dataset of shape (n, {x2.shape[1]}), got {np.shape(x)}")
    y2 = model.loss.check_targets(y, x2.shape[0], params[-1].w.shape[1], False, dtype)
    order2 = check_order(order, x2.shape[0])
    batch_size = _check_batch_size(batch_size)
    steps = steps_in_epoch(order2.shape[0], batch_size)
    lrs = _check_lrs(lr, steps, dtype)
    folded = check_key(key, model, training=True)
    step_keys = None
    if folded is not None:  # step s draws from the key (*key, s), as backprop(key=...) would
        words = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        step_keys = np.array([fold_key((*words, s)) for s in range(steps)], dtype=np.uint64)
    return _Epoch(x2, y2, order2, batch_size, lrs, model, step_keys)


class OptimizerSpec(NamedTuple):
    """An optimizer as the compiled loop runs it (the lr comes per step, apart).

    kind: "sgd", "momentum", "nesterov" or "adam"; momentum: for momentum and nesterov;
    weight_decay: L2 (sgd family) or decoupled (adam), as in `fnn.optim`; b1, b2, eps: adam's.
    """

    kind: str
    momentum: float = 0.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


def compiled_optimizer(optimizer: str, momentum: float = 0.0,
                       weight_decay: float = 0.0) -> OptimizerSpec | None:
    """The spec of an optimizer that `run_steps` runs bit-identically to `fnn.optim`'s
    update, or None when it cannot (then run the steps one by one).

    optimizer, momentum, weight_decay: as in `fnn.TrainConfig` (and `make_optimizer`):
    "sgd" ignores momentum; "momentum" with momentum 0 is plain sgd; "adam" ignores
    momentum and takes b1=0.9, b2=0.999, eps=1e-8. Every optimizer TrainConfig makes
    has a spec; None for another name or a nesterov without momentum.
    """
    momentum, weight_decay = float(momentum), float(weight_decay)
    if optimizer == "sgd" or (optimizer == "momentum" and not momentum):
        return OptimizerSpec("sgd", weight_decay=weight_decay)
    if optimizer in ("momentum", "nesterov") and momentum:
        return OptimizerSpec(optimizer, momentum, weight_decay)
    if optimizer == "adam":
        return OptimizerSpec("adam", weight_decay=weight_decay)
    return None


def _optimizer_scalars(spec: OptimizerSpec, lrs: np.ndarray, count: int,
                       dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's `hyper` and `step_scalars` (`fnn.kernels.HYPER`, `STEP_SCALARS`).

    Each is the Python float that `fnn.optim` multiplies an array by, computed as it
    computes it (in float64: 1.0 - b1, 1.0 - b1**t, lr * weight_decay), then rounded to
    the params' dtype, as NumPy 2 rounds a Python float operand (NEP 50).
    """
    mu, wd = float(spec.momentum), float(spec.weight_decay)
    b1, b2, eps = float(spec.b1), float(spec.b2), float(spec.eps)
    hyper = np.array([mu, wd, b1, 1.0 - b1, b2, 1.0 - b2, eps]).astype(dtype)
    steps = lrs.shape[0]
    if spec.kind != "adam":  # the sgd family reads none of them
        return hyper, np.zeros((steps, 3), dtype=dtype)
    rows = [(1.0 - b1**t, 1.0 - b2**t, lr * wd)
            for t, lr in zip(range(count + 1, count + steps + 1), lrs.tolist())]
    return hyper, np.array(rows, dtype=np.float64).reshape(steps, 3).astype(dtype)


#: Multiply-adds per step (batch x weights) from which two threads share the steps of an
#: epoch, and per thread beyond that. The smallest step measured on the README's 2-core
#: machine, 784-64-10 at batch 8 (410,000), still ran 1.38x faster on two threads than on
#: one; below this a step stays on one thread, as a margin.
MACS_PER_THREAD = 200_000


def threads_for(params: Params, batch_size: int) -> int:
    """The threads that share each step of an epoch of `params` (tuple of Layer) at
    `batch_size`: one per MACS_PER_THREAD multiply-adds of the forward pass, at most
    `fnn.team.max_threads()` (FNN_NUM_THREADS, NUMBA_NUM_THREADS or the CPUs) and
    `fnn.team.free_cpus()` (CPUs not busy with other work right now)."""
    macs = batch_size * sum(p.w.shape[0] * p.w.shape[1] for p in params)
    return _team.team_for(macs, MACS_PER_THREAD)


#: An automatic team's calls for one problem time the other choice again every this many
#: calls, and each choice is judged by the fastest of its last RECENT timings (see
#: `_TeamChooser`).
PROBE_EVERY = 16
RECENT = 3


class _TeamChooser:
    """The team for the next automatic call of one problem (a net's shapes, a batch size
    and a dtype): `threads_for`'s choice or one thread, whichever ran a step faster in
    the fastest of its last RECENT timed calls. The bits do not depend on the choice, so
    it can follow the machine.

    Why measure: on the README's machine (a VM on a shared host) the same two-thread
    epoch ran in some processes and for minutes at a time slower than one thread
    (784-64-10 batch 64: 67-72 ms against 57-60 ms; 35-38 ms in good times), with no
    cause visible from inside. The first call is not timed (it may compile); the next
    four alternate the wanted team and one thread, so that one disturbed call does not
    decide (a disturbance only slows a call: the fastest of a few is the machine's
    pace); then the faster, the other again every PROBE_EVERY calls. The choice in use
    is timed at every call, so a lasting slow-down of it decides after RECENT calls.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.per_step: dict[int, list[float]] = {}  # team -> seconds a step, last timings

    def pick(self, wanted: int) -> int:
        self.calls += 1
        if wanted == 1 or self.calls == 1:
            return wanted
        if self.calls <= 5:
            return wanted if self.calls % 2 == 0 else 1
        # A choice not timed yet (the wanted team can change with the load) goes first.
        best = min((wanted, 1), key=lambda t: min(self.per_step.get(t, [0.0])))
        if self.calls % PROBE_EVERY == 0:
            return 1 if best == wanted else wanted
        return best

    def record(self, team: int, seconds: float, steps: int) -> None:
        if self.calls > 1 and steps > 0:
            times = self.per_step.setdefault(team, [])
            times.append(seconds / steps)
            del times[:-RECENT]


_CHOOSERS: dict[tuple[Any, ...], _TeamChooser] = {}


def _chooser(params: Params, batch_size: int) -> _TeamChooser:
    key = (tuple(p.w.shape for p in params), batch_size, params[0].w.dtype.str)
    if key not in _CHOOSERS and len(_CHOOSERS) >= 256:
        _CHOOSERS.clear()  # a bound on what a long session of many shapes keeps
    return _CHOOSERS.setdefault(key, _TeamChooser())


def _workspace(ws: tuple[np.ndarray, ...], y: np.ndarray, batch: int, codes: np.ndarray,
               thresh: np.ndarray, team: int, plain_sgd: bool,
               packing: np.ndarray | None) -> tuple[Any, ...]:
    """The buffers the threads of `kernels.train_epoch` share (its `work`), for batches of
    at most `batch` rows. An input without dropout is the array below it (x's batch or
    the layer's activation), and a ReLU or identity layer's output is its pre-activation."""
    from . import kernels

    dtype, words = ws[0].dtype, -(-batch // 64)
    xb = np.empty((batch, ws[0].shape[0]), dtype=dtype)
    none = np.zeros((0, 0), dtype=dtype)
    ins: list[np.ndarray] = []
    drops, zs, outs, hmasks, cbits, amasks, deltas, dmasks, grads, gbs = ([] for _ in range(10))
    for l, w in enumerate(ws):
        d_in, d_out = w.shape
        dropped = thresh[l] > 0
        below = xb if l == 0 else outs[l - 1]
        ins.append(np.empty((batch, d_in), dtype=dtype) if dropped else below)
        drops.append(np.empty((batch, d_in), dtype=dtype) if dropped else none)
        outs.append(np.empty((batch, d_out), dtype=dtype))
        plain = codes[l] in kernels.IN_PLACE_CODES
        zs.append(outs[l] if plain else np.empty((batch, d_out), dtype=dtype))
        hmasks.append(np.empty((batch, -(-d_in // 64)), dtype=np.uint64))
        cbits.append(np.zeros((team * words, d_in), dtype=np.uint64))
        amasks.append(np.empty((d_in, words), dtype=np.uint64))
        deltas.append(np.empty((batch, d_out), dtype=dtype))
        dmasks.append(np.empty((batch, -(-d_out // 64)), dtype=np.uint64))
        grads.append(none if plain_sgd else np.empty((d_in, d_out), dtype=dtype))
        gbs.append(np.empty(d_out, dtype=dtype))
    terms = np.empty((batch, 1 if y.ndim == 1 else y.shape[1]))
    # Two buffers for the tiles the whole team packs (`kernels._pack_tiles`), where any
    # product can pack; none for one thread, which packs each tile as it goes.
    packs = team > 1 and packing is not None
    size = kernels.tiles_size(tuple(w.shape for w in ws)) if packs else 0
    tiles = (np.empty(size, dtype=dtype), np.empty(size, dtype=dtype), np.empty(0, dtype=dtype))
    return (xb, np.empty_like(y[:batch]), terms, np.zeros(team, dtype=np.int64),
            *(tuple(a) for a in (ins, drops, zs, outs, hmasks, cbits, amasks, deltas, dmasks,
                                 grads, gbs)), tiles,
            np.zeros(max(max(w.shape) for w in ws), dtype=dtype))


def run_steps(
    params: Params, opt_state: Any, x: np.ndarray, y: np.ndarray, order: np.ndarray,
    batch_size: int, lrs: np.ndarray, spec: OptimizerSpec, model: Model | None = None,
    step_keys: np.ndarray | None = None, threads: int | None = None,
) -> tuple[Params, Any, np.ndarray]:
    """The steps over the batches of `order` in one compiled loop, for validated inputs:
    the same bits as `fnn.backprop` (numba) + the optimizer's `update` per batch.

    opt_state: the `fnn.optim` state (SGDState / AdamState) before the first of these
    steps; lrs: (steps,) the lr of each step (the schedule at count, count + 1, ...), as
    float64, the schedule's own floats (adam's decoupled decay multiplies lr * wd in
    float64 first, as `fnn.optim` does); spec: from `compiled_optimizer`.
    Returns (new params, new opt_state with count advanced by steps, losses (steps,)
    float64): SGDState(count, velocity, () for plain sgd) or AdamState(count, mu, nu),
    new read-only arrays; the inputs are never written. threads: as in `run_epoch`.
    """
    from .optim import AdamState, SGDState

    steps = lrs.shape[0]
    count = opt_state.count
    if spec.kind == "sgd":
        slots: tuple[Params, ...] = ()
    elif spec.kind in ("momentum", "nesterov"):
        slots = (opt_state.velocity,)
    elif spec.kind == "adam":
        slots = (opt_state.mu, opt_state.nu)
    else:
        raise ValueError(f"spec.kind: expected one compiled_optimizer returns, got "
                         f"{spec.kind!r}")
    new_params, new_slots, losses = run_epoch(params, slots, x, y, order, batch_size, lrs,
                                              spec, model, step_keys, count, threads)
    if spec.kind == "adam":
        return new_params, AdamState(count + steps, *new_slots), losses
    return new_params, SGDState(count + steps, new_slots[0] if new_slots else ()), losses


def run_epoch(
    params: Params, slots: tuple[Params, ...], x: np.ndarray, y: np.ndarray,
    order: np.ndarray, batch_size: int, lrs: np.ndarray, spec: OptimizerSpec,
    model: Model | None = None, step_keys: np.ndarray | None = None, count: int = 0,
    threads: int | None = None,
) -> tuple[Params, tuple[Params, ...], np.ndarray]:
    """The steps themselves, for validated inputs (see `sgd_epoch_unchecked`), with the
    optimizer `spec` (see `run_steps`, the entry point for `fnn.optim` states).

    slots: the optimizer's state arrays, () for sgd, (velocity,) for momentum and
    nesterov, (mu, nu) for adam; count: its count before the first step (adam's bias
    corrections). model: the activations, loss and dropout (None: the notebook's);
    step_keys: (steps,) uint64 folded dropout key of each step (needed when the model
    has dropout); threads: how many threads share each step (None: `threads_for`'s
    number or one thread, whichever ran this problem faster, see `_TeamChooser`; the
    bits are the same for every number). Returns (new params, new slots, the loss of
    each step as float64, exactly as `fnn.backprop` returns it).
    """
    from . import kernels  # numba loads on first use, as in fnn.backends

    model = make_model(len(params)) if model is None else model
    dtype = params[0].w.dtype
    steps = lrs.shape[0]
    n_layers = len(params)
    codes = np.array([model.activation(l).code for l in range(n_layers)], dtype=np.int64)
    rates = model.dropout if step_keys is not None else (0.0,) * n_layers
    thresh = np.array([threshold(r) if r > 0 else 0 for r in rates], dtype=np.uint64)
    scales = np.array([1.0 / (1.0 - r) for r in rates], dtype=dtype)
    bases = np.zeros((steps, n_layers), dtype=np.uint64)
    if step_keys is not None:
        for s in range(steps):
            bases[s] = [layer_base(step_keys[s], l) for l in range(n_layers)]
    kind = kernels.OPTIMIZERS.index(spec.kind)
    hyper, step_scalars = _optimizer_scalars(spec, lrs, count, dtype)
    ws = tuple(np.array(p.w, order="C") for p in params)  # private, writable copies
    bs = tuple(np.array(p.b, order="C") for p in params)
    copies = [(tuple(np.array(a.w, order="C") for a in slot),
               tuple(np.array(a.b, order="C") for a in slot)) for slot in slots]
    # A slot the optimizer has not is not read: the params stand in (one compiled type).
    (vws, vbs), (nws, nbs) = (copies + [(ws, bs)] * 2)[:2]
    # A batch larger than the epoch is the whole epoch; clamped, the kernel's int64
    # arithmetic never sees a batch_size such as 2**63 - 1 (which it would overflow).
    batch_size = min(int(batch_size), order.shape[0])
    chooser = _chooser(params, batch_size) if threads is None else None
    team = chooser.pick(threads_for(params, batch_size)) if chooser else int(threads)
    losses = np.empty(steps)
    packing = kernels.packing_for(max(p.w.shape[1] for p in params))
    widths = tuple(d for p in params for d in p.w.shape)
    plain = kind == 0 and not spec.weight_decay
    work = _workspace(ws, y, batch_size, codes, thresh, team, plain, packing)
    args = (ws, bs, vws, vbs, nws, nbs, x, y, order, batch_size, np.asarray(lrs, dtype=dtype),
            kind, bool(spec.weight_decay), None if plain else hyper, step_scalars,
            kernels.codes_arg(codes), model.loss.code,
            thresh if thresh.any() else None, scales, bases, packing,
            work, np.empty((team, kernels.scratch_size(widths, batch_size)), dtype=dtype),
            losses)
    # Ctrl-C waits for the kernel (raised inside numba's dispatcher it would be a
    # SystemError and lose the result): then a KeyboardInterrupt, the inputs untouched.
    with deferred_sigint():
        t = time.perf_counter()
        bad_row = _team.run(kernels.train_epoch, args, _team.new_sync(), team)
        if chooser:
            chooser.record(team, time.perf_counter() - t, steps)
    if bad_row >= 0:  # the private copies are dropped: nothing was written
        raise nonfinite_error(x, "x", slice(bad_row, bad_row + 1))
    new_params = tuple(Layer(freeze(w), freeze(b)) for w, b in zip(ws, bs))
    new_slots = tuple(tuple(Layer(freeze(w), freeze(b)) for w, b in zip(*copy))
                      for copy in copies)
    return new_params, new_slots, losses


def sgd_epoch_unchecked(
    params: Params, x: np.ndarray, y: np.ndarray, order: np.ndarray,
    batch_size: int,
    lrs: np.ndarray,
    model: Model | None = None,
    step_keys: np.ndarray | None = None,
) -> tuple[Params, np.ndarray]:
    """`sgd_epoch` for validated inputs: x (N, d_in) C-contiguous of the params' dtype,
    y checked for the model's loss, order (n,) int64 in [0, N), lrs (steps,) positive,
    any float dtype; model and step_keys as in `run_epoch`."""
    new_params, _, losses = run_epoch(params, (), x, y, order, batch_size, lrs,
                                      OptimizerSpec("sgd"), model, step_keys)
    return new_params, losses.astype(params[0].w.dtype)


_MODEL_DOC = """activation, loss, dropout: the model (see `fnn.model`), built-ins only here;
        y then holds what `fnn.loss` takes (float targets (N, d_out) for mse).
    key: with dropout, an int or tuple of ints: step s of the epoch draws its masks
        from the key (*key, s), exactly as `fnn.backprop(..., key=(*key, s))` would."""


def sgd_epoch(
    params: Params, x: Any, y: Any, order: Any, batch_size: int, lr: float | np.ndarray,
    *, activation: Any = "relu", loss: Any = "softmax_cross_entropy", dropout: Any = 0.0,
    key: Any = None,
) -> tuple[Params, np.ndarray]:
    """One epoch of plain SGD (the notebook's update) in one compiled loop.

    params: tuple of Layer (float32 or float64).
    x: (N, d_in) of the params' dtype; the rows that order uses must be finite (checked as
        they are gathered, which is cheaper than a pass over all of x: a NaN or an
        infinity raises ValueError with its index); y: (N,) integer labels in [0, n_classes).
    order: (n,) integer rows of x, n >= 1: the epoch's batches are order[0:batch_size],
        order[batch_size:2*batch_size], ..., the last one holding the rest (a permutation
        of range(N) from `fnn.batch_indices`' generator makes a shuffled epoch).
    batch_size: int >= 1.
    lr: finite float > 0, or an array (steps,) of them, one per step.
    {model}

    Returns (new params, read-only; the mean loss of each step, (steps,) of the params'
    dtype), bit-identical to `fnn.backprop` + `fnn.sgd_step` on the same batches with
    the numba backend. steps = ceil(n / batch_size).
    """
    e = _check(params, x, y, order, batch_size, lr, activation, loss, dropout, key)
    return sgd_epoch_unchecked(params, e.x, e.y, e.order, e.batch_size, e.lrs, e.model,
                               e.step_keys)


def momentum_epoch_unchecked(
    params: Params, velocity: Params, x: np.ndarray, y: np.ndarray,
    order: np.ndarray,
    batch_size: int, lrs: np.ndarray, momentum: float,
    model: Model | None = None,
    step_keys: np.ndarray | None = None,
) -> tuple[Params, Params, np.ndarray]:
    """`momentum_epoch` for validated inputs (see `sgd_epoch_unchecked`)."""
    new_params, (new_velocity,), losses = run_epoch(
        params, (velocity,), x, y, order, batch_size, lrs, OptimizerSpec("momentum", momentum),
        model, step_keys)
    return new_params, new_velocity, losses.astype(params[0].w.dtype)


def momentum_epoch(
    params: Params, velocity: Params | None, x: Any, y: Any, order: Any, batch_size: int,
    lr: float | np.ndarray, momentum: float, *, activation: Any = "relu",
    loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
) -> tuple[Params, Params, np.ndarray]:
    """One epoch of SGD with momentum, as `fnn.optim.sgd(lr, momentum)`, in one compiled loop.

    v <- momentum * v + grad;  p <- p - lr * v.
    velocity: tuple of Layer shaped like params (e.g. the `velocity` of an
        `fnn.optim.SGDState`), or None for zeros (the first epoch).
    momentum: float in (0, 1). Other arguments as in `sgd_epoch`.
    {model}

    Returns (new params, new velocity, losses (steps,)), bit-identical to
    `fnn.optim.sgd(lr, momentum).update` after `fnn.backprop` (numba backend) per batch.
    Nesterov, adam and weight decay run compiled through `fnn.epoch.run_steps` (for
    validated inputs, with the `fnn.optim` state), as `fnn.fit` runs them.
    """
    e = _check(params, x, y, order, batch_size, lr, activation, loss, dropout, key)
    momentum = _check_momentum(momentum, e.x.dtype)
    if velocity is None:
        velocity = tuple(Layer(np.zeros_like(p.w), np.zeros_like(p.b)) for p in params)
    else:
        check_grads(velocity, params, "velocity")
    return momentum_epoch_unchecked(params, velocity, e.x, e.y, e.order, e.batch_size, e.lrs,
                                    momentum, e.model, e.step_keys)


for _f in (sgd_epoch, momentum_epoch):
    _f.__doc__ = _f.__doc__.replace("{model}", _MODEL_DOC)  # type: ignore[union-attr]
