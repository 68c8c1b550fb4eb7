"""The two compute paths behind one API, and how to choose between them.

A backend is an `Ops` record of six primitives with the same signatures on both paths:
`"numpy"` builds them from BLAS matmuls, `"numba"` (the default) from the jitted loops
in `fnn.kernels`. `fnn.mlp` writes forward and backprop once, over an `Ops`.

Choose per call with `backend="numpy"`, for a whole program with `fnn.set_backend`, or
before start-up with the environment variable `FNN_BACKEND`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["BACKENDS", "Ops", "get_backend", "get_ops", "set_backend"]


class Ops(NamedTuple):
    """Primitives of one compute path. Shapes: n examples, k classes.

    linear(x: (n, d_in), w: (d_in, d_out), b: (d_out,), relu: bool) -> (n, d_out)
    relu_backward(delta: (n, d_out), w: (d_in, d_out), a_prev: (n, d_in)) -> (n, d_in)
        (delta @ w.T) masked where a_prev == 0 (ReLU'(0) = 0)
    weight_grad(a: (n, d_in), delta: (n, d_out)) -> (d_in, d_out)      a.T @ delta
    bias_grad(delta: (n, d_out)) -> (d_out,)                            sum over n
    softmax_xent(logits: (n, k), y: (n,) int64) -> (mean loss, dloss/dlogits (n, k))
    softmax_xent_loss(logits: (n, k), y: (n,) int64) -> mean loss
    """

    linear: Callable
    relu_backward: Callable
    weight_grad: Callable
    bias_grad: Callable
    softmax_xent: Callable
    softmax_xent_loss: Callable


def _np_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray, relu: bool) -> np.ndarray:
    z = x @ w
    z += b
    if relu:
        np.maximum(z, 0, out=z)
    return z


def _np_relu_backward(delta: np.ndarray, w: np.ndarray, a_prev: np.ndarray) -> np.ndarray:
    out = delta @ w.T
    out *= a_prev > 0
    return out


def _np_shifted_logits(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Log-softmax stabilised by the row max: exp never overflows.
    s = logits - logits.max(axis=1, keepdims=True)
    return s, np.log(np.exp(s).sum(axis=1, keepdims=True))


def _np_softmax_xent_loss(logits: np.ndarray, y: np.ndarray) -> float:
    s, lse = _np_shifted_logits(logits)
    rows = np.arange(logits.shape[0])
    return float((lse[:, 0] - s[rows, y]).mean(dtype=np.float64))


def _np_softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    n = logits.shape[0]
    s, lse = _np_shifted_logits(logits)
    rows = np.arange(n)
    value = float((lse[:, 0] - s[rows, y]).mean(dtype=np.float64))
    delta = np.exp(s - lse)
    delta[rows, y] -= 1
    delta /= n
    return value, delta


NUMPY_OPS = Ops(
    linear=_np_linear,
    relu_backward=_np_relu_backward,
    weight_grad=lambda a, delta: a.T @ delta,
    bias_grad=lambda delta: delta.sum(axis=0),
    softmax_xent=_np_softmax_xent,
    softmax_xent_loss=_np_softmax_xent_loss,
)

BACKENDS = ("numba", "numpy")
_default = os.environ.get("FNN_BACKEND", "numba")
_numba_ops: Ops | None = None


def _check_name(backend: object, name: str = "backend") -> str:
    if backend not in BACKENDS:
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
        from . import kernels

        _numba_ops = Ops(*(getattr(kernels, f) for f in Ops._fields))
    return _numba_ops
