"""The math of an MLP, written once over `Ops` and a `Model`.

Layer l computes `z_l = h_l @ w_l + b_l` and `a_l = f_l(z_l)`, where h_0 = x and
h_{l+1} = a_l, times a dropout multiplier when one is drawn; the last layer is linear
and its outputs go to the loss. `Ops` says how each primitive is computed (NumPy/BLAS
or the Numba kernels), `Model` what (fnn.model: activations, loss, dropout), so this
module holds the order of the steps and nothing else. ReLU'(0) is taken as 0 (as in
the origin notebook): a unit whose pre-activation is exactly 0 passes no gradient.

The public functions validate their inputs once and never mutate them; the functions
ending in `_unchecked` are the same math for callers that validated already (the
training loop, gradient checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .backends import Ops, get_ops
from .dropout import drop_multiplier
from .model import Model, check_key, make_model
from .params import Layer, Params, freeze
from .validate import check_grads, check_lr, check_params, check_x

__all__ = ["Trace", "accuracy", "backprop", "check_call", "forward", "loss", "predict",
           "sgd_step"]


class Trace(NamedTuple):
    """One forward pass, as backprop needs it; lists over layers l = 0 .. L-1.

    inputs[l]: what layer l read, (n, d_l): x, or the previous activation after dropout.
    zs[l], acts[l]: layer l's pre-activation and activation (the last: both the outputs;
    for ReLU z_l may be a_l itself). drops[l]: the dropout multiplier applied to make
    inputs[l], or None.
    """

    inputs: list
    zs: list
    acts: list
    drops: list

    @property
    def out(self) -> np.ndarray:
        return self.acts[-1]


def forward_unchecked(ops: Ops, params: Params, model: Model, x: np.ndarray,
                      key: np.uint64 | None = None) -> Trace:
    """The forward pass; dropout only when key is not None."""
    t = Trace([], [], [], [])
    h = x
    for l, (w, b) in enumerate(params):
        drop = None
        if key is not None and model.dropout[l] > 0:
            drop = drop_multiplier(key, l, h.shape, model.dropout[l], h.dtype)
            h = h * drop
        z, a = ops.layer(h, w, b, model.activation(l))
        t.inputs.append(h)
        t.zs.append(z)
        t.acts.append(a)
        t.drops.append(drop)
        h = a
    return t


def output_unchecked(ops: Ops, params: Params, model: Model, x: np.ndarray,
                     key: np.uint64 | None = None) -> np.ndarray:
    """The network's output (n, k): `forward_unchecked(...).out`, from the path's own
    whole pass (`Ops.output`) where it has one and no dropout applies."""
    out = None if key is not None and model.has_dropout else ops.output(params, model, x)
    return forward_unchecked(ops, params, model, x, key).out if out is None else out


def backprop_unchecked(
    ops: Ops, params: Params, model: Model, x: np.ndarray, y: np.ndarray,
    key: np.uint64 | None = None,
) -> tuple[float, Params]:
    """Mean loss and its gradient; x: (n, d_in) C-contiguous, y checked for model.loss."""
    t = forward_unchecked(ops, params, model, x, key)
    value, delta = ops.loss_grad(t.out, y, model.loss)

    def layer_grad(a: np.ndarray, d: np.ndarray) -> Layer:
        return Layer(freeze(ops.weight_grad(a, d)), freeze(ops.bias_grad(d)))

    return value, backward_unchecked(ops, params, model, t, delta, layer_grad)


def backward_unchecked(
    ops: Ops, params: Params, model: Model, t: Trace, delta: np.ndarray,
    layer_grad: Callable[[np.ndarray, np.ndarray], Layer],
) -> Params:
    """Backprop from delta = dloss/d(outputs) (n, d_out) down the trace t.

    layer_grad(input of layer l, gradient at z_l) -> that layer's gradient record
    (the batch's sums for backprop, one outer product per example for per-example
    gradients). Returns the records, input layer first.
    """
    grads = []
    for l in range(len(params) - 1, -1, -1):
        grads.append(layer_grad(t.inputs[l], delta))
        if l > 0:
            delta = ops.backward(delta, params[l].w, t.zs[l - 1], t.acts[l - 1],
                                 t.inputs[l], model.activation(l - 1), t.drops[l])
    return tuple(reversed(grads))


def check_call(
    params: Any, x: Any, y: Any = None, *, activation: Any = "relu",
    loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
    training: bool = False, has_y: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, bool, Model, np.uint64 | None, np.dtype]:
    """Validate a compute call once: (x2d, y checked or None, single, model, key, dtype)."""
    dtype = check_params(params)
    model = make_model(len(params), activation, loss, dropout)
    x2, single = check_x(x, params, dtype)
    y2 = None
    if has_y:
        y2 = model.loss.check_targets(y, x2.shape[0], params[-1].w.shape[1], single, dtype)
    return x2, y2, single, model, check_key(key, model, training), dtype


def forward(params: Params, x: Any, *, activation: Any = "relu",
            loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
            backend: str | None = None) -> np.ndarray:
    """Outputs of the network (the logits, for a classification loss).

    x: (batch, d_in) or a single example (d_in,), of the params' dtype.
    activation, loss, dropout: see `fnn.model`; dropout applies only with a key.
    Returns (batch, d_out), or (d_out,) for a single example, same dtype.
    """
    x2, _, single, model, k, _ = check_call(params, x, activation=activation, loss=loss,
                                            dropout=dropout, key=key, has_y=False)
    out = output_unchecked(get_ops(backend), params, model, x2, k)
    return out[0] if single else out


def loss(params: Params, x: Any, y: Any, *, activation: Any = "relu",
         loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
         backend: str | None = None) -> np.floating:
    """Mean loss of the network on (x, y).

    Computed in IEEE arithmetic: outputs that overflow to inf give an inf or nan loss
    (returned as such; `fnn.fit` stops on it with TrainingDiverged).

    x: (batch, d_in) of the params' dtype; y: (batch,) integer labels in [0, d_out) for
    softmax cross-entropy, (batch, d_out) float targets for mse (0/1 for sigmoid binary
    cross-entropy). A single example (d_in,) takes a scalar label or (d_out,) targets.
    Returns a scalar of the params' dtype.
    """
    x2, y2, _, model, k, dtype = check_call(params, x, y, activation=activation, loss=loss,
                                            dropout=dropout, key=key)
    ops = get_ops(backend)
    return dtype.type(ops.loss_value(output_unchecked(ops, params, model, x2, k), y2,
                                     model.loss))


def backprop(params: Params, x: Any, y: Any, *, activation: Any = "relu",
             loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
             backend: str | None = None) -> tuple[np.floating, Params]:
    """Mean loss and its gradient with respect to every parameter.

    x, y: as in `loss`. With dropout, key (an int or tuple of ints) draws the masks.
    Returns (loss: scalar of the params' dtype, grads: tuple of Layer shaped like params,
    read-only).
    """
    x2, y2, _, model, k, dtype = check_call(params, x, y, activation=activation, loss=loss,
                                            dropout=dropout, key=key, training=True)
    value, grads = backprop_unchecked(get_ops(backend), params, model, x2, y2, k)
    return dtype.type(value), grads


def _classifier(model: Model) -> Any:
    if model.loss.predict is None:
        raise ValueError(f"loss: predict and accuracy are defined for the classification "
                         f"losses ('softmax_cross_entropy', 'sigmoid_binary_cross_entropy'), "
                         f"got {model.loss.name!r}; for it, forward gives the prediction")
    return model.loss


def _finite_outputs(out: np.ndarray) -> np.ndarray:
    # An argmax over NaN or inf outputs would be silently arbitrary (class 0 for NaN).
    if not np.isfinite(out).all():
        row = int(np.argwhere(~np.isfinite(out))[0][0])
        raise ValueError(f"x: expected inputs whose outputs are finite, got outputs "
                         f"{out[row].tolist()} for example {row} (they overflow: scale x)")
    return out


def predict(params: Params, x: Any, *, activation: Any = "relu",
            loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
            backend: str | None = None) -> np.ndarray:
    """Predicted classes. x: (batch, d_in) -> (batch,) int64 (argmax of the logits), or
    for sigmoid binary cross-entropy (batch, d_out) int64 0/1 (one decision per output)."""
    x2, _, single, model, k, _ = check_call(params, x, activation=activation, loss=loss,
                                            dropout=dropout, key=key, has_y=False)
    head = _classifier(model)
    p = head.predict(_finite_outputs(output_unchecked(get_ops(backend), params, model, x2,
                                                      k)))
    return p[0] if single else p


def accuracy(params: Params, x: Any, y: Any, *, activation: Any = "relu",
             loss: Any = "softmax_cross_entropy", dropout: Any = 0.0, key: Any = None,
             backend: str | None = None) -> float:
    """Fraction of predictions equal to the targets (per output, for binary outputs)."""
    x2, y2, _, model, k, _ = check_call(params, x, y, activation=activation, loss=loss,
                                        dropout=dropout, key=key)
    head = _classifier(model)
    out = _finite_outputs(output_unchecked(get_ops(backend), params, model, x2, k))
    return head.accuracy_of(out, y2)


def sgd_step_unchecked(params: Params, grads: Params, lr: float) -> Params:
    """params - lr * grads, as new read-only arrays of the params' dtype."""
    return tuple(
        Layer(freeze(p.w - lr * g.w), freeze(p.b - lr * g.b)) for p, g in zip(params, grads)
    )


def sgd_step(params: Params, grads: Params, lr: float) -> Params:
    """One plain gradient-descent step: new params `params - lr * grads`.

    grads: tuple of Layer with the shapes and dtype of params; lr: finite, > 0.
    """
    dtype = check_params(params)
    check_grads(grads, params)
    # lr as the params' dtype holds it (1e39 would be inf in float32, 1e-50 a 0).
    return sgd_step_unchecked(params, grads, check_lr(lr, "lr", dtype))
