"""The model besides its params: each hidden layer's activation, the loss, dropout.

Every compute function takes `activation=`, `loss=`, `dropout=` (and `key=`) and
turns them, once, at its boundary, into one `Model` record that the compute paths
read. The defaults (ReLU, softmax cross-entropy, no dropout) are the origin notebook's
network.

dropout: a rate p in [0, 1) for every hidden layer's activations; or a tuple with one
rate per hidden layer; or a tuple with one more, whose first entry is the rate on the
network's input (x itself). key: an int or a tuple of ints that the masks are a pure
function of (see `fnn.dropout`). Without a key no dropout is applied: that is
evaluation. Training with dropout (backprop, per-example gradients, epochs, gradient
checks) needs a key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .activations import IDENTITY, RELU, Activation, resolve_activations
from .dropout import fold_key
from .hyperparams import HYPERPARAMS
from .losses import SOFTMAX_XENT, Loss, resolve_loss

__all__ = ["DEFAULT_MODEL_KWARGS", "Model", "check_key", "make_model"]

DEFAULT_MODEL_KWARGS = {"activation": "relu", "loss": "softmax_cross_entropy", "dropout": 0.0}


class Model(NamedTuple):
    """activations: one per hidden layer; loss: the head's; dropout: the rate on the
    input of each layer (dropout[0] on x, dropout[l] on hidden layer l's activations),
    one per layer of params."""

    activations: tuple[Activation, ...]
    loss: Loss
    dropout: tuple[float, ...]

    def activation(self, l: int) -> Activation:
        """The activation applied by layer l (the last layer is linear)."""
        return self.activations[l] if l < len(self.activations) else IDENTITY

    @property
    def has_dropout(self) -> bool:
        return any(self.dropout)

    @property
    def is_default(self) -> bool:
        """ReLU everywhere, softmax cross-entropy, no dropout: the notebook's network."""
        return (all(a is RELU for a in self.activations) and self.loss is SOFTMAX_XENT
                and not self.has_dropout)


def _check_dropout(dropout: Any, n_layers: int) -> tuple[float, ...]:
    n_hidden = n_layers - 1
    if isinstance(dropout, Sequence) and not isinstance(dropout, (str, bytes)):
        try:
            size = len(dropout)
        except OverflowError:  # range(10**30): refused before tuple() runs out of memory
            size = -1
        if not 0 <= size <= n_layers:
            raise ValueError(f"dropout: expected one rate per hidden layer ({n_hidden}), or "
                             f"{n_hidden + 1} with the input's first, got a "
                             f"{type(dropout).__name__} of "
                             f"{'more than 2**63' if size < 0 else size} rates")
        rates = HYPERPARAMS["dropout"].check(tuple(dropout), "dropout")
        if len(rates) == n_hidden:
            return (0.0, *rates)
        if len(rates) == n_hidden + 1:
            return rates
        raise ValueError(f"dropout: expected one rate per hidden layer ({n_hidden}), or "
                         f"{n_hidden + 1} with the input's first, got {len(rates)}: {rates}")
    rate = HYPERPARAMS["dropout"].check(dropout, "dropout")
    return (0.0,) + (rate,) * n_hidden


def make_model(n_layers: int, activation: Any = "relu", loss: Any = "softmax_cross_entropy",
               dropout: Any = 0.0) -> Model:
    """The validated Model of a network with `n_layers` layers (n_layers - 1 hidden)."""
    return Model(resolve_activations(activation, n_layers - 1), resolve_loss(loss),
                 _check_dropout(dropout, n_layers))


def check_key(key: Any, model: Model, training: bool) -> np.uint64 | None:
    """The folded dropout key, or None when no dropout applies.

    Training with dropout needs a key (ValueError naming `key`); evaluation (no key)
    applies no dropout; a key without dropout is accepted and unused.
    """
    if key is None:
        if training and model.has_dropout:
            raise ValueError(f"key: expected an int or a tuple of ints to draw the dropout "
                             f"masks from (dropout={model.dropout[1:]!r} with input rate "
                             f"{model.dropout[0]}), got None")
        return None
    folded = fold_key(key)
    return folded if model.has_dropout else None
