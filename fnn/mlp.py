"""The math of a ReLU MLP with a softmax cross-entropy head, written once over `Ops`.

Every layer but the last is `a = relu(a_prev @ w + b)`; the last gives the logits.
ReLU'(0) is taken as 0 (as in the origin notebook): a unit whose pre-activation is
exactly 0 passes no gradient.

The public functions validate their inputs once and never mutate them; the functions
ending in `_unchecked` are the same math for callers that validated already (the
training loop, gradient checks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Ops, get_ops
from .params import Layer, Params, freeze
from .validate import check_grads, check_lr, check_params, check_x, check_xy

__all__ = ["accuracy", "backprop", "forward", "loss", "predict", "sgd_step"]


def activations_unchecked(ops: Ops, params: Params, x: np.ndarray) -> list[np.ndarray]:
    """[x, a_1, ..., a_{L-1}, logits]: the input, each hidden ReLU output, the logits."""
    acts = [x]
    last = len(params) - 1
    for l, (w, b) in enumerate(params):
        acts.append(ops.linear(acts[-1], w, b, l < last))
    return acts


def backprop_unchecked(
    ops: Ops, params: Params, x: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    """Mean loss and its gradient; x: (n, d_in) C-contiguous, y: (n,) int64 in range."""
    acts = activations_unchecked(ops, params, x)
    value, delta = ops.softmax_xent(acts[-1], y)
    grads = []
    for l in range(len(params) - 1, -1, -1):
        grads.append(Layer(freeze(ops.weight_grad(acts[l], delta)), freeze(ops.bias_grad(delta))))
        if l > 0:
            delta = ops.relu_backward(delta, params[l].w, acts[l])
    return value, tuple(reversed(grads))


def forward(params: Params, x: Any, *, backend: str | None = None) -> np.ndarray:
    """Logits of the network.

    x: (batch, d_in) or a single example (d_in,), of the params' dtype.
    Returns (batch, n_classes), or (n_classes,) for a single example, same dtype.
    """
    dtype = check_params(params)
    x2, single = check_x(x, params, dtype)
    logits = activations_unchecked(get_ops(backend), params, x2)[-1]
    return logits[0] if single else logits


def loss(params: Params, x: Any, y: Any, *, backend: str | None = None) -> np.floating:
    """Mean softmax cross-entropy of the network on (x, y).

    x: (batch, d_in) of the params' dtype; y: (batch,) integer labels in [0, n_classes).
    A single example (d_in,) takes a scalar label. Returns a scalar of the params' dtype.
    """
    x2, y2, dtype = check_xy(x, y, params)
    ops = get_ops(backend)
    return dtype.type(ops.softmax_xent_loss(activations_unchecked(ops, params, x2)[-1], y2))


def backprop(
    params: Params, x: Any, y: Any, *, backend: str | None = None
) -> tuple[np.floating, Params]:
    """Mean softmax cross-entropy and its gradient with respect to every parameter.

    x: (batch, d_in) of the params' dtype; y: (batch,) integer labels in [0, n_classes).
    Returns (loss: scalar of the params' dtype, grads: tuple of Layer shaped like params,
    read-only).
    """
    x2, y2, dtype = check_xy(x, y, params)
    value, grads = backprop_unchecked(get_ops(backend), params, x2, y2)
    return dtype.type(value), grads


def predict(params: Params, x: Any, *, backend: str | None = None) -> np.ndarray:
    """Predicted classes, argmax of the logits. x: (batch, d_in) -> (batch,) int64."""
    return np.argmax(forward(params, x, backend=backend), axis=-1)


def accuracy(params: Params, x: Any, y: Any, *, backend: str | None = None) -> float:
    """Fraction of examples whose predicted class equals the label y: (batch,)."""
    x2, y2, _ = check_xy(x, y, params)
    logits = activations_unchecked(get_ops(backend), params, x2)[-1]
    return float(np.mean(np.argmax(logits, axis=1) == y2))


def sgd_step_unchecked(params: Params, grads: Params, lr: float) -> Params:
    """params - lr * grads, as new read-only arrays of the params' dtype."""
    return tuple(
        Layer(freeze(p.w - lr * g.w), freeze(p.b - lr * g.b)) for p, g in zip(params, grads)
    )


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """One plain gradient-descent step: new params `params - lr * grads`.

    grads: tuple of Layer with the shapes and dtype of params; lr: finite, > 0.
    """
    check_params(params)
    check_grads(grads, params)
    return sgd_step_unchecked(params, grads, check_lr(lr))
