"""Per-example gradients in closed form: each example's own loss gradient.

Backprop already holds, per example, the layer input a_l[n] and the output error
delta_l[n]; the weight gradient of example n is their outer product, so the whole batch's
per-example gradients cost one broadcast product per layer, no loop over examples. Used by
`fnn.gradcheck` to locate a wrong gradient to one example, and by anything that needs
per-example norms (clipping, influence, variance of the gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Ops, get_ops
from .mlp import activations_unchecked
from .params import Layer, Params, freeze
from .reference import softmax
from .validate import check_xy

__all__ = ["per_example_grads", "per_example_grads_unchecked"]


def per_example_grads(params: Params, x: Any, y: Any, *, backend: str | None = None) -> Params:
    """Each example's own loss gradient, in closed form.

    x: (batch, d_in) of the params' dtype (a single example (d_in,) counts as batch 1);
    y: (batch,) integer labels. Returns a tuple of `Layer(w: (batch, d_in, d_out),
    b: (batch, d_out))`, read-only, params' dtype: the gradient of example n's loss (not
    divided by the batch size), so the mean over the batch axis is `fnn.backprop`'s.
    """
    x2, y2, _ = check_xy(x, y, params)
    return per_example_grads_unchecked(get_ops(backend), params, x2, y2)


def per_example_grads_unchecked(
    ops: Ops, params: Params, x: np.ndarray, y: np.ndarray
) -> Params:
    """per_example_grads for validated x: (n, d_in) C-contiguous, y: (n,) int64 in range."""
    acts = activations_unchecked(ops, params, x)
    delta = softmax(acts[-1])  # d(own loss)/d(logits) = p - onehot(y), one row per example
    delta[np.arange(len(y)), y] -= 1
    grads = []
    for l in range(len(params) - 1, -1, -1):
        # The outer product per example: grad_w[n] = a_l[n] (x) delta[n].
        grads.append(Layer(freeze(acts[l][:, :, None] * delta[:, None, :]), freeze(delta)))
        if l > 0:
            delta = ops.relu_backward(delta, params[l].w, acts[l])
    return tuple(reversed(grads))
