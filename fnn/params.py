"""Parameters: the `Layer` record, Glorot initialisation and read-only arrays.

A network's params are a tuple of `Layer`s, input layer first. Every array in them is
read-only, so a function that was handed params cannot change them behind the caller's
back; updates build new arrays (see `fnn.sgd_step` and `fnn.optim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

import numpy as np

__all__ = ["FLOAT_DTYPES", "MAX_PARAMETERS", "Layer", "Params", "check_parameter_count",
           "freeze", "init_params", "make_rng"]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: The most weights and biases `init_params` makes: 2**29 (2 GiB in float32, 4 GiB in
#: float64). Why so few: the weights are drawn in float64 and then cast (so that float32
#: and float64 nets from one seed agree), so drawing a float32 net holds up to 12 bytes a
#: parameter at once (6 GiB at this bound), and training holds several arrays of the
#: params' size besides (grads, optimizer state, the epoch's buffers). The former bound,
#: 2**32, let `init_params(0, [65536, 65535])` raise MemoryError, or the OOM killer end
#: the process, on a 24 GiB machine; beyond this one a size is refused up front with a
#: ValueError naming `sizes`.
MAX_PARAMETERS: int = 2**29


class Layer(NamedTuple):
    """One affine layer `z = a @ w + b`.

    w: (d_in, d_out) float32 or float64, read-only.
    b: (d_out,) same dtype as w, read-only.

    The same record carries gradients (`grads`, same shapes as params) and, with a
    leading batch axis, per-example gradients.
    """

    w: np.ndarray
    b: np.ndarray


Params: TypeAlias = tuple[Layer, ...]


def freeze(a: np.ndarray) -> np.ndarray:
    """Mark `a` read-only in place and return it; only for arrays fnn just created."""
    a.flags.writeable = False
    return a


def make_rng(seed: int | np.random.Generator, name: str = "seed") -> np.random.Generator:
    """A Generator from an int seed (>= 0) or an existing Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"{name}: expected a non-negative int or a numpy.random.Generator, "
            f"got {type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{name}: expected a non-negative int, got {seed}")
    return np.random.default_rng(int(seed))


def check_parameter_count(sizes: Sequence[int], name: str = "sizes") -> int:
    """The number of weights and biases of a net of these (positive int) widths; a
    ValueError naming `name` above MAX_PARAMETERS."""
    count = sum((int(a) + 1) * int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    if count > MAX_PARAMETERS:
        raise ValueError(f"{name}: expected at most {MAX_PARAMETERS} parameters "
                         f"(fnn.params.MAX_PARAMETERS), got {count} for {list(sizes)}")
    return count


def init_params(
    seed: int | np.random.Generator,
    sizes: Sequence[int],
    *,
    dtype: type | np.dtype | str = np.float32,
) -> Params:
    """Glorot/Xavier-uniform weights and zero biases for an MLP of the given widths.

    seed: int or numpy.random.Generator; the same seed gives bit-identical params.
    sizes: [d_in, hidden..., n_classes], at least two positive ints. The last entry is
        the number of classes (one output unit per class).
    dtype: float32 (default) or float64.

    Returns a tuple of `Layer(w: (sizes[l], sizes[l+1]), b: (sizes[l+1],))`, read-only.
    Weights are drawn in float64 and then cast, so a float32 and a float64 network made
    from the same seed agree to float32 rounding.
    """
    rng = make_rng(seed)
    from .validate import check_dtype  # validate imports this module

    dt = check_dtype(dtype)
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise TypeError(
            f"sizes: expected a sequence of ints such as [784, 64, 10], "
            f"got {type(sizes).__name__}"
        )
    if len(sizes) < 2:
        raise ValueError(
            f"sizes: expected at least two entries [d_in, ..., n_classes], got {list(sizes)}"
        )
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"sizes[{i}]: expected an int, got {type(s).__name__} {s!r}")
        if s <= 0:
            raise ValueError(f"sizes[{i}]: expected a positive width, got {s}")
    check_parameter_count(sizes)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        limit = np.sqrt(6.0 / (n_in + n_out))
        # copy=False: a float64 net keeps the draw itself (no second float64 copy).
        w = rng.uniform(-limit, limit, size=(int(n_in), int(n_out))).astype(dt, copy=False)
        layers.append(Layer(freeze(w), freeze(np.zeros(int(n_out), dtype=dt))))
    return tuple(layers)
