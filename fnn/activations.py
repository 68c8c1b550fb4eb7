"""Activations as data: each one a record with its math written once.

A hidden layer computes `a = f(z)` from its pre-activation `z = a_prev @ w + b`; the
output layer is always linear. Every compute path reads the same `Activation` record:
the NumPy path calls `forward` and `derivative` on arrays; the Numba kernels compile
the very same functions for scalars (they use only NumPy ufuncs that Numba knows, which
is why a built-in is written `np.maximum(z, 0)` rather than with `np.where`); the
gradient check reads `kinks`, `linear_pieces` and `analytic` to know where central
differences straddle a kink and whether complex-step applies.

    ACTIVATIONS["tanh"].forward(z)          # the forward map, elementwise
    ACTIVATIONS["tanh"].derivative(z, a)    # f'(z), given z and a = f(z)

A user-defined activation is an `Activation(name, forward, derivative, ...)` passed as
`activation=` wherever a name is accepted. It runs on the NumPy path and in
`fnn.check_gradients`; on the Numba backend its NumPy functions run between the
compiled products, and the compiled epoch (`fnn.sgd_epoch`) takes built-ins only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .validate import shown

__all__ = [
    "ACTIVATIONS",
    "BUILTIN",
    "DERIVATIVES",
    "Activation",
    "check_code",
    "resolve_activations",
]


class Activation(NamedTuple):
    """One elementwise activation and what the compute paths need to know of it.

    forward(z) -> a: z (n, d) float32/float64 (or complex for complex-step; for the
        built-ins also a scalar, inside Numba) -> a of z's shape.
    derivative(z, a) -> f'(z), of z's shape (any real dtype; the caller multiplies it
        into a gradient of its own dtype), given z and a = forward(z).
    kinks: the z where f' jumps ((0.0,) for ReLU); () for a smooth f. The gradient check
        re-checks pairs whose step crosses one.
    linear_pieces: f is linear between its kinks, so f(z + d) - f(z) = f'(z) d exactly
        while no kink is crossed (the gradient check then carries exact differences).
    analytic: forward accepts complex input and is holomorphic off its kinks, so the
        complex-step check applies (also true of ReLU, through its real-part branch).
    zero_preserving: f(z) = 0 and f'(z) = 0 for every z <= 0 (ReLU): activations and
        their gradients are then mostly exact zeros, which the sparse Numba kernels
        skip, and the backward mask is simply a > 0.
    code: the index of its compiled twin in the Numba kernels (`BUILTIN[code]`), or -1
        for a user-defined activation. The kernels run the twin, not `forward`, so a
        code other than -1 is accepted only on the built-in record itself (see
        `check_code`): on another record it would run a different function on Numba.
    """

    name: str
    forward: Callable[[Any], Any]
    derivative: Callable[[Any, Any], Any]
    kinks: tuple[float, ...] = ()
    linear_pieces: bool = False
    analytic: bool = True
    zero_preserving: bool = False
    code: int = -1


# ---------------------------------------------------------------- the built-ins
# Written for NumPy arrays and Numba scalars alike; constants are Python floats, so a
# float32 array stays float32 under NumPy's promotion rules.
LEAKY_SLOPE = 0.01
_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_K = 0.044715


def _relu(z):  # type: ignore[no-untyped-def]
    return np.maximum(z, 0)


def _relu_derivative(z, a):  # type: ignore[no-untyped-def]
    return z > 0  # ReLU'(0) is taken as 0, as in the origin notebook


def _leaky_relu(z):  # type: ignore[no-untyped-def]
    return np.maximum(z, LEAKY_SLOPE * z)  # max picks z above 0, slope * z below


def _leaky_relu_derivative(z, a):  # type: ignore[no-untyped-def]
    return (z > 0) + LEAKY_SLOPE * (z <= 0)  # exactly 1 or the slope


def _tanh(z):  # type: ignore[no-untyped-def]
    return np.tanh(z)


def _tanh_derivative(z, a):  # type: ignore[no-untyped-def]
    return 1 - a * a


def _sigmoid(z):  # type: ignore[no-untyped-def]
    # 1 / (1 + exp(-z)) without the overflow of exp for very negative z.
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _sigmoid_derivative(z, a):  # type: ignore[no-untyped-def]
    return a * (1 - a)


def _gelu(z):  # type: ignore[no-untyped-def]
    # The tanh approximation, as PyTorch's gelu(approximate="tanh").
    return 0.5 * z * (1 + np.tanh(_GELU_C * (z + _GELU_K * z * z * z)))


def _gelu_derivative(z, a):  # type: ignore[no-untyped-def]
    t = np.tanh(_GELU_C * (z + _GELU_K * z * z * z))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * _GELU_C * (1 + 3 * _GELU_K * z * z)


def _identity(z):  # type: ignore[no-untyped-def]
    return z


def _identity_derivative(z, a):  # type: ignore[no-untyped-def]
    return 1 + 0 * z


#: The built-ins, in the order of their `code` (the Numba kernels dispatch on it).
BUILTIN: tuple[Activation, ...] = (
    Activation("relu", _relu, _relu_derivative, kinks=(0.0,), linear_pieces=True,
               zero_preserving=True, code=0),
    Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative, kinks=(0.0,),
               linear_pieces=True, code=1),
    Activation("tanh", _tanh, _tanh_derivative, code=2),
    Activation("sigmoid", _sigmoid, _sigmoid_derivative, code=3),
    Activation("gelu", _gelu, _gelu_derivative, code=4),
    Activation("identity", _identity, _identity_derivative, linear_pieces=True, code=5),
)
RELU, IDENTITY = BUILTIN[0], BUILTIN[5]
#: name -> forward, and name -> derivative, as in scikit-learn's neural_network._base.
ACTIVATIONS: dict[str, Activation] = {a.name: a for a in BUILTIN}
DERIVATIVES: dict[str, Callable[[Any, Any], Any]] = {a.name: a.derivative for a in BUILTIN}


def check_code(record: Any, builtins: Sequence[Any], name: str) -> Any:
    """`record` itself when its `code` is -1 (user-defined: its own NumPy functions run),
    else the built-in record of that code, which `record` must equal: a code is what
    the Numba kernels dispatch on, so a user's record that carried one (or one beyond
    the built-ins) would run another function there, or fail to compile. Shared by
    `fnn.losses.resolve_loss`."""
    code = record.code
    if isinstance(code, (bool, np.bool_)) or not isinstance(code, (int, np.integer)):
        raise TypeError(f"{name}.code: expected an int (-1 for a user-defined record), "
                        f"got {type(code).__name__} {code!r}")
    if code == -1:
        return record
    if 0 <= code < len(builtins) and record == builtins[code]:
        return builtins[code]
    raise ValueError(f"{name}.code: expected -1 for a user-defined record (a code in "
                     f"[0, {len(builtins) - 1}] belongs to the built-in record of that code, "
                     f"whose compiled twin the Numba kernels run), got {shown(code)} on "
                     f"{getattr(record, 'name', '?')!r}")


def _one(value: Any, name: str) -> Activation:
    if isinstance(value, Activation):
        if not (callable(value.forward) and callable(value.derivative)):
            raise TypeError(f"{name}: expected an Activation whose forward and derivative "
                            f"are functions, got {value!r}")
        return check_code(value, BUILTIN, name)
    if isinstance(value, str) and value in ACTIVATIONS:
        return ACTIVATIONS[value]
    raise ValueError(f"{name}: expected one of {tuple(ACTIVATIONS)} or an "
                     f"fnn.Activation, got {value!r}")


def resolve_activations(activation: Any, n_hidden: int) -> tuple[Activation, ...]:
    """The activation of each of `n_hidden` hidden layers.

    activation: a name (or `Activation`) for every hidden layer, or a sequence of them,
    one per hidden layer. Raises ValueError/TypeError naming `activation` and the choices.
    """
    if isinstance(activation, (str, Activation)):
        return (_one(activation, "activation"),) * n_hidden
    if not isinstance(activation, Sequence):
        raise TypeError(f"activation: expected a name from {tuple(ACTIVATIONS)} or a tuple "
                        f"of them, one per hidden layer, got {type(activation).__name__}")
    if len(activation) != n_hidden:
        raise ValueError(f"activation: expected one name per hidden layer ({n_hidden}), "
                         f"got {len(activation)}: {tuple(activation)!r}")
    return tuple(_one(a, f"activation[{i}]") for i, a in enumerate(activation))
