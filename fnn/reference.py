"""The origin notebook's own math, kept as the yardstick for tests and benchmarks.

`backprop` is the notebook's gradient: a tape of (z, a) pairs and weight gradients as an
einsum-style broadcast product summed over the batch. `numerical_grad` is its
finite-difference loop: two full forward passes per parameter. Both are slow on purpose;
use `fnn.backprop` and `fnn.check_gradients` for real work.

Departures from the notebook, each a fix: params are fnn Layers and are not mutated
(numerical_grad perturbs a private copy); the loss is the batch mean; one-hot labels
use the logits' dtype, so float32 stays float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .params import Layer, Params, freeze
from .validate import check_xy

__all__ = ["backprop", "forward", "log_softmax", "loss", "numerical_grad", "softmax"]


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return x / np.sum(x, axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - np.max(x, axis=-1, keepdims=True)
    return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(0, x)


def _d_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, 1, 0).astype(x.dtype)


def forward(params: Params, x: np.ndarray) -> tuple[np.ndarray, list]:
    """The notebook's forward: (logits (n, k), tape of (z, a) for every layer input)."""
    tape: list = [(None, x)]
    z = x
    for w, b in params:
        z = x @ w + b
        x = _relu(z)
        tape.append((z, x))
    return z, tape[:-1]


def _mean_loss(logits: np.ndarray, y: np.ndarray) -> float:
    return float(-log_softmax(logits)[np.arange(len(y)), y].mean(dtype=np.float64))


def loss(params: Params, x: Any, y: Any) -> np.floating:
    """Mean softmax cross-entropy, by the notebook's forward. x: (n, d_in), y: (n,)."""
    x2, y2, dtype = check_xy(x, y, params)
    return dtype.type(_mean_loss(forward(params, x2)[0], y2))


def backprop(params: Params, x: Any, y: Any) -> tuple[np.floating, Params]:
    """The notebook's backprop: (mean loss, grads), same contract as `fnn.backprop`."""
    x, y, dtype = check_xy(x, y, params)
    logits, tape = forward(params, x)
    n = x.shape[0]
    error = softmax(logits) - np.eye(logits.shape[-1], dtype=logits.dtype)[y]
    grad = []
    for (z, a), (w, _) in zip(reversed(tape), reversed(params)):
        grad_w = np.sum(error[..., np.newaxis, :] * a[..., :, np.newaxis], axis=0) / n
        grad_b = np.sum(error, axis=0) / n
        grad.append(Layer(freeze(grad_w), freeze(grad_b)))
        if z is not None:
            error = error @ w.T
            error = error * _d_relu(z)
    return dtype.type(_mean_loss(logits, y)), tuple(reversed(grad))


def numerical_grad(params: Params, x: Any, y: Any, h: float = 1e-6) -> Params:
    """The notebook's finite-difference loop: for each parameter, two full forward passes.

    Central differences (L(theta + h) - L(theta - h)) / 2h of the mean loss.
    About 1.6 s for the notebook's 43,932-parameter net; it exists to be beaten.
    """
    x, y, _ = check_xy(x, y, params)
    work = [[w.copy(), b.copy()] for w, b in params]

    def compute_loss() -> float:
        return _mean_loss(forward(tuple(Layer(w, b) for w, b in work), x)[0], y)

    grad = [[np.zeros_like(w), np.zeros_like(b)] for w, b in work]
    for i in range(len(work)):
        for j in range(2):
            for k in np.ndindex(work[i][j].shape):
                prev = work[i][j][k]
                work[i][j][k] = prev + h
                left = compute_loss()
                work[i][j][k] = prev - h
                right = compute_loss()
                grad[i][j][k] = (left - right) / (2 * h)
                work[i][j][k] = prev
    return tuple(Layer(freeze(w), freeze(b)) for w, b in grad)
