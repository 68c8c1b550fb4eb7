"""Per-example gradients in closed form: each example's own loss gradient.

Backprop already holds, per example, the layer input h_l[n] and the output error
delta_l[n]; the weight gradient of example n is their outer product, so the whole batch's
per-example gradients cost one broadcast product per layer, no loop over examples. The
pass is `fnn.mlp`'s own backward, started from the loss record's `example_grad` (each
example's gradient, not divided by the batch size). Used by `fnn.gradcheck` to locate a
wrong gradient to one example, and by anything that needs per-example norms (clipping,
influence, variance of the gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Ops, get_ops
from .mlp import backward_unchecked, check_call, forward_unchecked
from .model import Model, make_model
from .params import Layer, Params, freeze

__all__ = ["per_example_grads", "per_example_grads_unchecked"]


def per_example_grads(params: Params, x: Any, y: Any, *, activation: Any = "relu",
                      loss: Any = "softmax_cross_entropy", dropout: Any = 0.0,
                      key: Any = None, backend: str | None = None) -> Params:
    """Each example's own loss gradient, in closed form.

    x: (batch, d_in) of the params' dtype (a single example (d_in,) counts as batch 1);
    y: the targets `fnn.loss` takes. Returns a tuple of `Layer(w: (batch, d_in, d_out),
    b: (batch, d_out))`, read-only, params' dtype: the gradient of example n's loss (not
    divided by the batch size), so the mean over the batch axis is `fnn.backprop`'s.
    """
    x2, y2, _, model, k, _ = check_call(params, x, y, activation=activation, loss=loss,
                                        dropout=dropout, key=key, training=True)
    return per_example_grads_unchecked(get_ops(backend), params, x2, y2, model, k)


def _outer(a: np.ndarray, delta: np.ndarray) -> Layer:
    # The outer product per example: grad_w[n] = h_l[n] (x) delta[n].
    return Layer(freeze(a[:, :, None] * delta[:, None, :]), freeze(delta))


def per_example_grads_unchecked(
    ops: Ops, params: Params, x: np.ndarray, y: np.ndarray, model: Model | None = None,
    key: np.uint64 | None = None,
) -> Params:
    """per_example_grads for validated x: (n, d_in) C-contiguous and y (None: the
    notebook's model, ReLU and softmax cross-entropy)."""
    model = make_model(len(params)) if model is None else model
    t = forward_unchecked(ops, params, model, x, key)
    delta = model.loss.example_grad(t.out, y)
    return backward_unchecked(ops, params, model, t, delta, _outer)
