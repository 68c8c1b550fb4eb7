"""Losses as data: each one a record with its value, gradient and target check.

The network's output layer is linear; a loss maps its outputs `out: (n, k)` and the
targets `y` to one number, the mean over the batch. Every compute path reads the same
`Loss` record: the NumPy path calls `value` and `example_grad`, the Numba kernels
compile `element` and `element_grad` of the elementwise losses (softmax cross-entropy,
a row-wise loss, has a fused kernel of its own that is tested against this record),
per-example gradients use `example_grad`, and the gradient check measures loss changes
with `change`, a difference form that never subtracts two whole losses.

    LOSS_FUNCTIONS["mse"].value(out, y)          # mean loss, accumulated in float64
    LOSS_FUNCTIONS["mse"].example_grad(out, y)   # d(loss of example n) / d out[n]

The batch-mean gradient is `example_grad / n`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .activations import check_code
from .validate import as_array, check_y

__all__ = ["LOSS_FUNCTIONS", "Loss", "resolve_loss", "softmax"]


class Loss(NamedTuple):
    """One loss and what the compute paths need to know of it.

    value(out: (n, k), y) -> float: the mean loss (accumulated in float64).
    example_grad(out, y) -> (n, k) of out's dtype: each example's own loss gradient
        with respect to its outputs (not divided by n).
    change(d: (r, n, k), out: (n, k), y) -> (r, n): the change of each example's loss
        when its outputs move by d (real, or imaginary for complex-step), computed in a
        difference form whose rounding is relative to the change, not to the loss.
    check_targets(y, n, k, single, dtype, name) -> y as the array the kernels read:
        int64 (n,) labels, or (n, k) floats of the network's dtype; raises TypeError or
        ValueError naming `name`.
    predict(out) -> predictions, or None for a loss with no classes (mse: the outputs
        are the prediction). accuracy_of(out, y) -> fraction right, or None likewise.
    element, element_grad: for a loss that is the mean of an elementwise function of
        (out, y) over all n * k entries, that function and its derivative (NumPy arrays
        or Numba scalars); None for softmax cross-entropy.
    code: the index of its compiled twin in the Numba kernels, accepted only on the
        built-in record itself; -1 for a user-defined loss (its NumPy functions run).
    """

    name: str
    value: Callable[[np.ndarray, np.ndarray], float]
    example_grad: Callable[[np.ndarray, np.ndarray], np.ndarray]
    change: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    check_targets: Callable[..., np.ndarray]
    predict: Callable[[np.ndarray], np.ndarray] | None
    accuracy_of: Callable[[np.ndarray, np.ndarray], float] | None
    element: Callable[[Any, Any], Any] | None
    element_grad: Callable[[Any, Any], Any] | None
    code: int


# ---------------------------------------------------------------- target checks
def _check_labels(y: Any, n: int, k: int, single: bool, dtype: np.dtype, name: str = "y"
                  ) -> np.ndarray:
    """Integer labels (n,) in [0, k); a scalar label when `single`. -> int64 (n,)."""
    y = as_array(y, name)
    if y.dtype.kind == "f":
        raise TypeError(f"{name}: expected integer class labels for loss "
                        f"'softmax_cross_entropy', got dtype {y.dtype} (float "
                        f"targets train with loss='mse')")
    return check_y(y, n, k, single, name)


def _float_target_check(loss: str, lo: float, hi: float) -> Callable[..., np.ndarray]:
    within = "" if np.isinf(lo) and np.isinf(hi) else f" in [{lo:g}, {hi:g}]"

    def check(y: Any, n: int, k: int, single: bool, dtype: np.dtype, name: str = "y"
              ) -> np.ndarray:
        """Float targets (n, k) ((k,) for a single example), finite, in [lo, hi]."""
        y = as_array(y, name)
        if y.dtype.kind != "f":
            raise TypeError(f"{name}: expected float targets of shape ({n}, {k}) for loss "
                            f"{loss!r}, got dtype {y.dtype}" + (
                                " (integer labels train with loss='softmax_cross_entropy')"
                                if y.dtype.kind in "iub" else ""))
        if single and y.shape == (k,):
            y = y.reshape(1, k)
        if y.shape != (n, k):
            raise ValueError(f"{name}: expected shape ({n}, {k}), one row of {k} targets per "
                             f"example, got {y.shape}")
        y = np.ascontiguousarray(y, dtype=dtype)
        with np.errstate(invalid="ignore"):
            bad = ~(np.isfinite(y) & (y >= lo) & (y <= hi))
        if bad.any():
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}: expected finite targets{within} for loss {loss!r}, "
                             f"got {y[at]} at index {at}")
        return y

    return check


# ---------------------------------------------------------------- softmax cross-entropy
def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, max-stabilised. logits: (n, k) -> (n, k), same dtype."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _shifted(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Log-softmax stabilised by the row max: exp never overflows.
    s = logits - logits.max(axis=1, keepdims=True)
    return s, np.log(np.exp(s).sum(axis=1, keepdims=True))


def _xent_value(logits: np.ndarray, y: np.ndarray) -> float:
    s, lse = _shifted(logits)
    return float((lse[:, 0] - s[np.arange(logits.shape[0]), y]).mean(dtype=np.float64))


def _xent_example_grad(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    s, lse = _shifted(logits)
    delta = np.exp(s - lse)  # softmax - onehot(y)
    delta[np.arange(logits.shape[0]), y] -= 1
    return delta


def _xent_change(d: np.ndarray, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    # log sum_k softmax(z)_k exp(dz_k) = logsumexp(z + dz) - logsumexp(z), without ever
    # forming either logsumexp.
    taken = d[:, np.arange(len(y)), y]
    return np.log1p(np.einsum("rnk,nk->rn", np.expm1(d), softmax(logits))) - taken


def _xent_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == y))


# ---------------------------------------------------------------- elementwise losses
def _mse(out, y):  # type: ignore[no-untyped-def]
    e = out - y
    return e * e


def _mse_grad(out, y):  # type: ignore[no-untyped-def]
    return 2 * (out - y)


def _mse_change(d: np.ndarray, out: np.ndarray, y: np.ndarray) -> np.ndarray:
    # (out + d - y)^2 - (out - y)^2 = d (2 (out - y) + d): no cancellation.
    return (d * (2 * (out - y) + d)).mean(axis=-1)


def _bce(z, y):  # type: ignore[no-untyped-def]
    # softplus(z) - y z, with softplus(z) = log(1 + e^z) computed without overflow.
    return np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - y * z


def _bce_grad(z, y):  # type: ignore[no-untyped-def]
    # sigmoid(z) - y, the sigmoid without exp's overflow (self-contained: Numba compiles it)
    return 0.5 + 0.5 * np.tanh(0.5 * z) - y


def _bce_change(d: np.ndarray, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    # softplus(z + d) - softplus(z) = log1p(sigmoid(z) expm1(d)).
    return (np.log1p(_bce_grad(z, 0) * np.expm1(d)) - y * d).mean(axis=-1)


def _mean_of(element: Callable) -> Callable[[np.ndarray, np.ndarray], float]:
    def value(out: np.ndarray, y: np.ndarray) -> float:
        return float(element(out, y).mean(dtype=np.float64))

    return value


def _example_grad_of(element_grad: Callable) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def example_grad(out: np.ndarray, y: np.ndarray) -> np.ndarray:
        g = element_grad(out, y)  # d(mean over the k outputs of an example) / d out
        g /= out.shape[1]
        return g

    return example_grad


def _bce_predict(out: np.ndarray) -> np.ndarray:
    return (out > 0).astype(np.int64)  # sigmoid(out) > 1/2, one decision per output


def _bce_accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((out > 0) == (y >= 0.5)))


_SOFTMAX_XENT = Loss(
    "softmax_cross_entropy", _xent_value, _xent_example_grad, _xent_change, _check_labels,
    lambda logits: np.argmax(logits, axis=-1), _xent_accuracy, None, None, code=0)
_MSE = Loss(
    "mse", _mean_of(_mse), _example_grad_of(_mse_grad), _mse_change,
    _float_target_check("mse", -np.inf, np.inf), None, None, _mse, _mse_grad, code=1)
_BCE = Loss(
    "sigmoid_binary_cross_entropy", _mean_of(_bce), _example_grad_of(_bce_grad), _bce_change,
    _float_target_check("sigmoid_binary_cross_entropy", 0.0, 1.0), _bce_predict,
    _bce_accuracy, _bce, _bce_grad, code=2)

#: name -> Loss, in the order of their `code`.
_BUILTIN_LOSSES = (_SOFTMAX_XENT, _MSE, _BCE)
LOSS_FUNCTIONS: dict[str, Loss] = {l.name: l for l in _BUILTIN_LOSSES}
SOFTMAX_XENT = _SOFTMAX_XENT


def resolve_loss(loss: Any) -> Loss:
    """The Loss named `loss` (or `loss` itself if it is one); ValueError lists the choices."""
    if isinstance(loss, Loss):
        return check_code(loss, _BUILTIN_LOSSES, "loss")
    if isinstance(loss, str) and loss in LOSS_FUNCTIONS:
        return LOSS_FUNCTIONS[loss]
    raise ValueError(f"loss: expected one of {tuple(LOSS_FUNCTIONS)}, got {loss!r}")
