"""The two compute paths behind one API, and how to choose between them.

A backend is an `Ops` record of primitives with the same signatures on both paths:
`"numpy"` builds them from BLAS matmuls and the NumPy functions of the activation and
loss records, `"numba"` (the default) from the jitted loops in `fnn.kernels`, which
compile the very same record functions. `fnn.mlp` writes forward and backprop once,
over an `Ops`.

Choose per call with `backend="numpy"`, for a whole program with `fnn.set_backend`, or
before start-up with the environment variable `FNN_BACKEND`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .activations import Activation
from .losses import Loss

__all__ = ["BACKENDS", "Ops", "get_backend", "get_ops", "set_backend"]


class Ops(NamedTuple):
    """Primitives of one compute path. Shapes: n examples, k outputs.

    layer(x: (n, d_in), w: (d_in, d_out), b: (d_out,), act: Activation)
        -> (z, a): z = x @ w + b and a = act(z), both (n, d_out); z may be a itself
        where act's derivative reads only its sign (ReLU) or act is the identity.
    backward(delta: (n, d_out), w: (d_in, d_out), z, a: (n, d_in) the previous layer's
        pre-activation and activation, a_in: (n, d_in) what this layer read (a after
        dropout), act: that layer's Activation, drop: (n, d_in) dropout multiplier or
        None) -> ((delta @ w.T) * drop) * act'(z): (n, d_in), the gradient at z.
    weight_grad(a: (n, d_in), delta: (n, d_out)) -> (d_in, d_out)      a.T @ delta
    bias_grad(delta: (n, d_out)) -> (d_out,)                            sum over n
    loss_grad(out: (n, k), y, loss: Loss) -> (mean loss, dloss/dout (n, k))
    loss_value(out: (n, k), y, loss: Loss) -> mean loss
    output(params, model: Model, x: (n, d_in)) -> the network's output (n, k) without
        dropout in one call (what predict, accuracy, loss and evaluation read), or None
        where the path has no such pass for the model: then `fnn.mlp` runs `layer`
        layer by layer. The same bits either way.
    """

    layer: Callable
    backward: Callable
    weight_grad: Callable
    bias_grad: Callable
    loss_grad: Callable
    loss_value: Callable
    output: Callable


def _np_layer(x: np.ndarray, w: np.ndarray, b: np.ndarray,
              act: Activation) -> tuple[np.ndarray, np.ndarray]:
    # BLAS computes x @ w for a Fortran-ordered w (valid params) as a transposed
    # product, whose rounding differs; a C copy gives every layout the same bits.
    z = x @ np.ascontiguousarray(w)
    z += b
    if act.zero_preserving:  # ReLU: in place, its derivative reads only z > 0
        np.maximum(z, 0, out=z)
        return z, z
    a = np.asarray(act.forward(z), dtype=z.dtype)
    return z, a


def _np_backward(delta: np.ndarray, w: np.ndarray, z: np.ndarray, a: np.ndarray,
                 a_in: np.ndarray, act: Activation, drop: np.ndarray | None) -> np.ndarray:
    out = delta @ np.ascontiguousarray(w).T  # as in _np_layer
    if drop is not None:
        out *= drop
    out *= act.derivative(z, a)
    return out


def _np_loss_grad(out: np.ndarray, y: np.ndarray, loss: Loss) -> tuple[float, np.ndarray]:
    delta = loss.example_grad(out, y)
    delta /= out.shape[0]
    return loss.value(out, y), delta


NUMPY_OPS = Ops(
    layer=_np_layer,
    backward=_np_backward,
    weight_grad=lambda a, delta: a.T @ delta,
    bias_grad=lambda delta: delta.sum(axis=0),
    loss_grad=_np_loss_grad,
    loss_value=lambda out, y, loss: loss.value(out, y),
    output=lambda params, model, x: None,  # BLAS products are the pass already
)

BACKENDS = ("numba", "numpy")
_default = os.environ.get("FNN_BACKEND", "numba")
_numba_ops: Ops | None = None


def _check_name(backend: object, name: str = "backend") -> str:
    # A str first: `in` would compare an array elementwise and ask its truth value.
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{name}: expected one of {BACKENDS}, got {backend!r}")
    return backend  # type: ignore[return-value]


def set_backend(backend: str) -> None:
    """Set the compute path used when a call passes no `backend`: "numba" or "numpy"."""
    global _default
    _default = _check_name(backend)


def get_backend() -> str:
    """The compute path used when a call passes no `backend`."""
    return _check_name(_default, "FNN_BACKEND")


def get_ops(backend: str | None = None) -> Ops:
    """The `Ops` of `backend`, or of the default backend when None."""
    global _numba_ops
    name = get_backend() if backend is None else _check_name(backend)
    if name == "numpy":
        return NUMPY_OPS
    if _numba_ops is None:
        # Imported on first use: loading numba costs ~0.5 s that numpy users never pay.
        from . import numba_ops

        _numba_ops = numba_ops.NUMBA_OPS
    return _numba_ops
