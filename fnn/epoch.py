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

`lr` may be one float or one learning rate per step (an array), so a schedule can be
evaluated by the caller. The functions ending in `_unchecked` skip validation, for
callers that validated already (a training loop over many epochs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .params import Layer, Params, freeze
from .validate import check_grads, check_lr, check_params, check_x, check_y, nonfinite_error

__all__ = [
    "check_order",
    "momentum_epoch",
    "momentum_epoch_unchecked",
    "run_epoch",
    "sgd_epoch",
    "sgd_epoch_unchecked",
    "steps_in_epoch",
]


def steps_in_epoch(n: int, batch_size: int) -> int:
    """The number of steps over n examples: batches of batch_size, the last one smaller."""
    return -(-n // batch_size)


def check_order(order: Any, n: int, name: str = "order") -> np.ndarray:
    """Check an epoch's example order: a non-empty 1-d integer array of rows in [0, n).

    Returns it as a C-contiguous int64 array.
    """
    order = np.asarray(order)
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
    """One float lr, or one per step; returned as a (steps,) array of the params' dtype."""
    if isinstance(lr, np.ndarray) and lr.ndim == 1:
        if lr.shape[0] != steps:
            raise ValueError(f"lr: expected one learning rate per step, {steps}, got {lr.shape[0]}")
        for k, value in enumerate(lr.tolist()):
            check_lr(value, f"lr[{k}]")
        return lr.astype(dtype)
    return np.full(steps, check_lr(lr), dtype=dtype)


def _check_momentum(momentum: Any) -> float:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.integer,
                                                               np.floating)):
        raise TypeError(f"momentum: expected a float in (0, 1), got {type(momentum).__name__} "
                        f"{momentum!r}")
    if not 0 < momentum < 1:
        raise ValueError(f"momentum: expected a float in (0, 1) (use sgd_epoch for 0), "
                         f"got {momentum}")
    return float(momentum)


def _check(
    params: Any, x: Any, y: Any, order: Any, batch_size: Any, lr: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    dtype = check_params(params)
    # Finiteness is checked on the rows the epoch uses, as it gathers them (see `run_epoch`).
    x2, single = check_x(x, params, dtype, finite=False)
    if single:
        raise ValueError(f"x: expected a dataset of shape (n, {x2.shape[1]}), got {np.shape(x)}")
    y2 = check_y(y, x2.shape[0], params[-1].w.shape[1], False)
    order2 = check_order(order, x2.shape[0])
    batch_size = _check_batch_size(batch_size)
    lrs = _check_lrs(lr, steps_in_epoch(order2.shape[0], batch_size), dtype)
    return x2, y2, order2, batch_size, lrs


def run_epoch(
    params: Params, velocity: Params | None, x: np.ndarray, y: np.ndarray,
    order: np.ndarray, batch_size: int, lrs: np.ndarray, momentum: float,
) -> tuple[Params, Params, np.ndarray]:
    """The epoch itself, for validated inputs (see `sgd_epoch_unchecked`): plain SGD when
    velocity is None (momentum is then ignored), else SGD with momentum.

    Returns (new params, new velocity or (), the loss of each step as float64, exactly
    as `fnn.backprop` returns it).
    """
    from . import kernels  # numba loads on first use, as in fnn.backends

    dtype = params[0].w.dtype
    ws = tuple(np.array(p.w, order="C") for p in params)  # private, writable copies
    bs = tuple(np.array(p.b, order="C") for p in params)
    if velocity is None:
        vws, vbs = ws, bs  # not read when momentum == 0
    else:
        vws = tuple(np.array(v.w, order="C") for v in velocity)
        vbs = tuple(np.array(v.b, order="C") for v in velocity)
    losses, bad_row = kernels.train_epoch(ws, bs, vws, vbs, x, y, order, batch_size,
                                          np.asarray(lrs, dtype=dtype), dtype.type(momentum))
    if bad_row >= 0:  # the private copies are dropped: nothing was written
        raise nonfinite_error(x, "x", slice(bad_row, bad_row + 1))
    new_params = tuple(Layer(freeze(w), freeze(b)) for w, b in zip(ws, bs))
    new_velocity = (
        () if velocity is None
        else tuple(Layer(freeze(w), freeze(b)) for w, b in zip(vws, vbs))
    )
    return new_params, new_velocity, losses


def sgd_epoch_unchecked(
    params: Params, x: np.ndarray, y: np.ndarray, order: np.ndarray,
    batch_size: int,
    lrs: np.ndarray,
) -> tuple[Params, np.ndarray]:
    """`sgd_epoch` for validated inputs: x (N, d_in) C-contiguous of the params' dtype,
    y (N,) int64, order (n,) int64 in [0, N), lrs (steps,) positive, any float dtype."""
    new_params, _, losses = run_epoch(params, None, x, y, order, batch_size, lrs, 0.0)
    return new_params, losses.astype(params[0].w.dtype)


def sgd_epoch(
    params: Params, x: Any, y: Any, order: Any, batch_size: int, lr: float | np.ndarray,
) -> tuple[Params, np.ndarray]:
    """One epoch of plain SGD (the notebook's update) in one compiled loop.

    params: tuple of Layer (float32 or float64).
    x: (N, d_in) of the params' dtype; the rows that order uses must be finite (checked as
        they are gathered, which is cheaper than a pass over all of x: a NaN or an
        infinity raises ValueError with its index); y: (N,) integer labels in [0, n_classes).
    order: (n,) integer rows of x, n >= 1: the epoch's batches are order[0:batch_size],
        order[batch_size:2*batch_size], ..., the last one holding the rest (a permutation
        of range(N) from `fnn.data.batch_indices`' generator makes a shuffled epoch).
    batch_size: int >= 1.
    lr: finite float > 0, or an array (steps,) of them, one per step.

    Returns (new params, read-only; the mean loss of each step, (steps,) of the params'
    dtype), bit-identical to `fnn.backprop` + `fnn.sgd_step` on the same batches with
    the numba backend. steps = ceil(n / batch_size).
    """
    x2, y2, order2, batch_size, lrs = _check(params, x, y, order, batch_size, lr)
    return sgd_epoch_unchecked(params, x2, y2, order2, batch_size, lrs)


def momentum_epoch_unchecked(
    params: Params, velocity: Params, x: np.ndarray, y: np.ndarray,
    order: np.ndarray,
    batch_size: int, lrs: np.ndarray, momentum: float,
) -> tuple[Params, Params, np.ndarray]:
    """`momentum_epoch` for validated inputs (see `sgd_epoch_unchecked`)."""
    new_params, new_velocity, losses = run_epoch(params, velocity, x, y, order, batch_size,
                                                 lrs, momentum)
    return new_params, new_velocity, losses.astype(params[0].w.dtype)


def momentum_epoch(
    params: Params, velocity: Params | None, x: Any, y: Any, order: Any, batch_size: int,
    lr: float | np.ndarray, momentum: float,
) -> tuple[Params, Params, np.ndarray]:
    """One epoch of SGD with momentum, as `fnn.optim.sgd(lr, momentum)`, in one compiled loop.

    v <- momentum * v + grad;  p <- p - lr * v.
    velocity: tuple of Layer shaped like params (e.g. the `velocity` of an
        `fnn.optim.SGDState`), or None for zeros (the first epoch).
    momentum: float in (0, 1). Other arguments as in `sgd_epoch`.

    Returns (new params, new velocity, losses (steps,)), bit-identical to
    `fnn.optim.sgd(lr, momentum).update` after `fnn.backprop` (numba backend) per batch.
    """
    x2, y2, order2, batch_size, lrs = _check(params, x, y, order, batch_size, lr)
    momentum = _check_momentum(momentum)
    if velocity is None:
        velocity = tuple(Layer(np.zeros_like(p.w), np.zeros_like(p.b)) for p in params)
    else:
        check_grads(velocity, params, "velocity")
    return momentum_epoch_unchecked(params, velocity, x2, y2, order2, batch_size, lrs, momentum)
