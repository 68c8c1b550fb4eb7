"""Dropout masks as a pure function of a key, the same on every path.

Inverted dropout keeps each unit with probability 1 - p and scales the kept ones by
1 / (1 - p), so nothing changes in expectation and evaluation simply applies none.

The masks come from a counter-based generator, not from a stateful RNG: entry i of the
mask of layer l under key k is kept when

    splitmix64(base(k, l) + (i + 1) * GOLDEN) >= floor(p * 2**64)

(`mix` is splitmix64's finaliser, a bijection of 64-bit words). Nothing is carried
from one call to the next, so a mask depends on (key, layer, position in the batch)
alone: the NumPy path, the Numba kernels and a compiled epoch draw the same bits from
the same few lines, and `fit` gives step s of a run the key (seed, s), so a resumed run
redraws exactly the masks it would have drawn.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["GOLDEN", "MAX_KEY_WORDS", "drop_multiplier", "fold_key", "layer_base", "mix",
           "step_key", "threshold"]

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S1, _S2, _S3 = np.uint64(30), np.uint64(27), np.uint64(31)
_MAX_WORD = 2**64 - 1
# Keys `fit` derives for its steps: (seed, _FIT_STREAM, step), apart from users' keys.
_FIT_STREAM = 0x64726F70  # "drop"
#: The most ints a key may hold. Keys are a few words, (seed, stream, step); folding
#: costs a few NumPy calls a word, and a compiled epoch folds its key once per step, so
#: range(2**40) as a key would run for days (and range(2**64) has no len()).
MAX_KEY_WORDS: int = 256


def mix(x):  # type: ignore[no-untyped-def]
    """splitmix64's finaliser: uint64 arrays (NumPy, wrapping) or uint64 scalars (Numba)."""
    x = (x ^ (x >> _S1)) * _M1
    x = (x ^ (x >> _S2)) * _M2
    return x ^ (x >> _S3)


def fold_key(key: Any, name: str = "key") -> np.uint64:
    """A key (an int, or a tuple of ints, each in [0, 2**64)) folded into one word."""
    words = (key,) if not isinstance(key, Sequence) or isinstance(key, (str, bytes)) else key
    try:
        size = len(words)
    except OverflowError:  # range(2**64)
        size = _MAX_WORD
    if size == 0:
        raise ValueError(f"{name}: expected an int or a non-empty tuple of ints, got ()")
    if size > MAX_KEY_WORDS:
        raise ValueError(f"{name}: expected an int or a tuple of at most {MAX_KEY_WORDS} "
                         f"ints (fnn.dropout.MAX_KEY_WORDS), got a {type(key).__name__} of "
                         f"{'more than 2**63' if size == _MAX_WORD else size} entries")
    state = np.zeros(1, dtype=np.uint64)  # arrays: uint64 arithmetic wraps silently
    for i, w in enumerate(words):
        where = name if words is not key else f"{name}[{i}]"
        if isinstance(w, (bool, np.bool_)):
            raise TypeError(f"{where}: expected an int, got bool {w!r}")
        try:
            v = operator.index(w)
        except TypeError:
            raise TypeError(f"{where}: expected an int, got {type(w).__name__} {w!r}") from None
        if not 0 <= v <= _MAX_WORD:
            raise ValueError(f"{where}: expected an int in [0, 2**64), got {v}")
        state = mix(state ^ mix(np.array([v], dtype=np.uint64) + GOLDEN))
    return state[0]


def step_key(seed: int, step: int) -> np.uint64:
    """The key of step `step` of a `fit` run seeded with `seed`."""
    return fold_key((seed, _FIT_STREAM, step))


def layer_base(key: np.uint64, layer: int) -> np.uint64:
    """The stream of layer `layer`'s mask under the folded key."""
    return mix(np.array([key], dtype=np.uint64)
               ^ (np.array([layer + 1], dtype=np.uint64) * GOLDEN))[0]


def threshold(rate: float) -> np.uint64:
    """floor(rate * 2**64): a word below it drops its unit (probability `rate`)."""
    return np.uint64(min(int(rate * 2.0**64), _MAX_WORD))


def drop_multiplier(key: np.uint64, layer: int, shape: tuple[int, int], rate: float,
                    dtype: np.dtype) -> np.ndarray:
    """The (n, d) array of 0 (dropped) and 1 / (1 - rate) (kept) of one layer's input."""
    n, d = shape
    idx = np.arange(1, n * d + 1, dtype=np.uint64)
    kept = mix(layer_base(key, layer) + idx * GOLDEN) >= threshold(rate)
    scale = np.asarray(1.0 / (1.0 - rate), dtype=dtype)
    return (kept * scale).reshape(n, d).astype(dtype, copy=False)
