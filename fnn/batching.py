"""Seeded epoch orders and mini-batches.

Kept apart from data loading because training needs it without any dataset library:
`fit` draws each epoch's order here. Randomness comes only from what the caller passes
(a Generator, an int seed or a sequence of ints such as ``(seed, epoch)``), never from
NumPy's global state, so the same seed gives the same batches on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .hyperparams import Flag, check_hyperparam
from .validate import check_int, shown

__all__ = ["MAX_EXAMPLES", "batch_indices", "iterate_batches"]

#: The largest ``n`` `batch_indices` (and `fnn.validation_split`) accepts. An epoch's
#: order is materialized as ``n`` int64 indices (2 GiB at this bound, and a validation
#: split's permutation, mask and index arrays several times that): at 2**31 the split
#: needed about 34 GiB, beyond a 24 GiB machine, so larger sizes are refused up front
#: with a ValueError rather than a MemoryError (or the OOM killer) mid-way.
MAX_EXAMPLES: int = 2**28

Seed = np.random.Generator | np.random.SeedSequence | int | Sequence[int]


def batch_indices(
    n: int,
    batch_size: int,
    rng: Seed | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """One epoch's mini-batches, as index arrays into the ``n`` examples.

    Every index in ``range(n)`` appears exactly once (with ``drop_last`` at most once), in
    batches of ``batch_size``; the last batch holds the remainder ``n % batch_size``
    unless ``drop_last`` drops it.

    Args:
        n: the number of examples, an int in [0, `MAX_EXAMPLES`].
        batch_size: an int >= 1.
        rng: where the shuffle comes from; never NumPy's global state.
            A ``np.random.Generator`` is advanced, so calling again with the same
            Generator gives the next epoch's (different) order: create it once per run,
            ``rng = np.random.default_rng(seed)``, and pass it every epoch.
            An int seed >= 0, a flat sequence of such ints (e.g. ``(seed, epoch)``) or a
            ``np.random.SeedSequence`` gives the order as a pure function of those
            numbers: the same value, the same order, so a run can resume at any epoch.
            May be None only with ``shuffle=False``.
        shuffle: False keeps the order 0..n-1 (``rng`` is then not used).
        drop_last: drop a last batch smaller than ``batch_size``.

    Returns:
        A list of int64 arrays, each of shape ``(batch_size,)`` except possibly the last.

    Raises:
        TypeError: a non-int ``n`` or ``batch_size`` (bools included), a non-bool
            ``shuffle`` or ``drop_last``, or an ``rng`` of another type (a bool, a float,
            a nested sequence, a legacy RandomState).
        ValueError: ``n`` < 0 or > `MAX_EXAMPLES`, ``batch_size`` < 1, a negative seed,
            ``rng=None`` with ``shuffle=True``.

    Typical training loop::

        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            for idx in batch_indices(len(x), 128, rng):
                params = step(params, x[idx], y[idx])
    """
    n = check_int(n, "n", 0)
    if n > MAX_EXAMPLES:
        raise ValueError(
            f"n: expected an int <= {MAX_EXAMPLES} (fnn.batching.MAX_EXAMPLES; an epoch's "
            f"order is n int64 indices), got {shown(n)}"
        )
    batch_size = check_int(batch_size, "batch_size", 1)
    # Flags are bools: "x" would silently count as True.
    shuffle = Flag().check(shuffle, "shuffle")
    drop_last = check_hyperparam("drop_last", drop_last)
    if shuffle:
        order = _generator(rng).permutation(n)
    else:
        order = np.arange(n, dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    return [order[i : i + batch_size] for i in range(0, stop, batch_size)]


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    rng: Seed | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield one epoch's ``(x[idx], y[idx])`` mini-batches; see `batch_indices`.

    ``x``: shape ``(n, ...)``; ``y``: shape ``(n, ...)`` with the same ``n``. Batches are
    copies (fancy indexing), of shapes ``(b, ...)`` and dtypes those of ``x`` and ``y``.
    The order is drawn when the generator starts, from ``rng`` as in `batch_indices`.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(
            "x and y must be arrays with the same first dimension, "
            f"got shapes {x.shape} and {y.shape}"
        )
    for idx in batch_indices(len(x), batch_size, rng, shuffle=shuffle, drop_last=drop_last):
        yield x[idx], y[idx]


_EXPECTED_RNG = (
    "rng: expected a np.random.Generator, an int seed >= 0, a flat sequence of such ints "
    "such as (seed, epoch), or a np.random.SeedSequence"
)


def _generator(rng: Seed | None) -> np.random.Generator:
    """The Generator `rng` stands for; seeds go through np.random.default_rng unchanged,
    so a seed gives the same order as it always has."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ValueError(
            "rng is None but shuffle=True: pass a np.random.Generator, an int seed or a "
            "sequence of ints such as (seed, epoch); the global NumPy state is never used"
        )
    if isinstance(rng, np.random.RandomState):
        raise TypeError(f"{_EXPECTED_RNG}, got a legacy RandomState")
    if not isinstance(rng, np.random.SeedSequence) and not _is_seed(rng):
        # NumPy would take a bool as 0/1 and flatten nested lists: both are mistakes.
        raise TypeError(f"{_EXPECTED_RNG}, got {type(rng).__name__} {rng!r}")
    try:
        return np.random.default_rng(rng)
    except ValueError as e:  # a negative seed
        raise ValueError(f"{_EXPECTED_RNG}, got {rng!r}") from e


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_seed(rng: object) -> bool:
    if _is_int(rng):
        return True
    if isinstance(rng, np.ndarray):
        return rng.ndim == 1 and rng.dtype.kind in "iu"
    return isinstance(rng, (list, tuple)) and all(_is_int(v) for v in rng)
