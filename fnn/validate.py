"""Input checks, run once at the public boundary.

Each check raises TypeError or ValueError with a message that names the argument, says
what was expected and what came. Inner code (kernels, training loops) trusts its inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .params import FLOAT_DTYPES, Layer, Params

__all__ = [
    "as_array",
    "check_dtype",
    "check_grads",
    "check_in_dtype",
    "check_int",
    "check_lr",
    "check_params",
    "check_real",
    "check_x",
    "check_xy",
    "check_y",
    "describe",
    "real_as_float",
    "shown",
]


def describe(obj: Any) -> str:
    """A short account of what came, for error messages: type, or shape and dtype."""
    if isinstance(obj, np.ndarray):
        return f"ndarray of shape {obj.shape} and dtype {obj.dtype}"
    return type(obj).__name__


def check_params(params: Any, name: str = "params", *, finite: bool = True) -> np.dtype:
    """Check that `params` is a non-empty tuple of Layers whose shapes chain and, unless
    `finite=False`, whose values are all finite (the Numba kernels skip zero inputs, so
    an inf weight times a zero input would be hidden there and NaN on the NumPy path:
    refusing it keeps the backends one function).

    Returns the common float dtype.
    """
    if not isinstance(params, tuple) or isinstance(params, Layer):
        raise TypeError(
            f"{name}: expected a tuple of fnn.Layer (as made by fnn.init_params), "
            f"got {describe(params)}"
        )
    if not params:
        raise ValueError(f"{name}: expected at least one Layer, got an empty tuple")
    dtype = None
    for i, layer in enumerate(params):
        where = f"{name}[{i}]"
        if not isinstance(layer, Layer):
            raise TypeError(f"{where}: expected an fnn.Layer(w, b), got {describe(layer)}")
        w, b = layer
        if isinstance(w, np.matrix) or isinstance(b, np.matrix):
            raise TypeError(f"{where}: expected plain ndarrays w and b, got np.matrix")
        for field, a in (("w", w), ("b", b)):
            _refuse_subclass(a, f"{where}.{field}")  # a masked array
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            raise TypeError(f"{where}.w: expected a 2-d ndarray (d_in, d_out), got {describe(w)}")
        if not isinstance(b, np.ndarray) or b.ndim != 1:
            raise TypeError(f"{where}.b: expected a 1-d ndarray (d_out,), got {describe(b)}")
        if w.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{where}.w: expected dtype float32 or float64, got {w.dtype}")
        if dtype is None:
            dtype = w.dtype
        if w.dtype != dtype or b.dtype != dtype:
            raise TypeError(
                f"{where}: expected w and b of the network's dtype {dtype}, "
                f"got w {w.dtype} and b {b.dtype}"
            )
        if b.shape[0] != w.shape[1]:
            raise ValueError(
                f"{where}.b: expected shape ({w.shape[1]},) to match w {w.shape}, got {b.shape}"
            )
        if w.shape[0] == 0 or w.shape[1] == 0:
            raise ValueError(f"{where}.w: expected positive widths, got shape {w.shape}")
        if i > 0 and params[i - 1].w.shape[1] != w.shape[0]:
            raise ValueError(
                f"{where}.w: expected {params[i - 1].w.shape[1]} input rows to chain with "
                f"{name}[{i - 1}].w of shape {params[i - 1].w.shape}, got shape {w.shape}"
            )
    assert dtype is not None
    if finite:
        for i, (w, b) in enumerate(params):
            for field, a in (("w", w), ("b", b)):
                if not _all_finite(a):
                    raise nonfinite_error(a, f"{name}[{i}].{field}")
    return dtype


def check_grads(grads: Any, params: Params, name: str = "grads") -> None:
    """Check that `grads` has exactly the structure, shapes and dtype of `params`."""
    if not isinstance(grads, tuple) or isinstance(grads, Layer):
        raise TypeError(
            f"{name}: expected a tuple of fnn.Layer like params, got {describe(grads)}"
        )
    if len(grads) != len(params):
        raise ValueError(f"{name}: expected {len(params)} layers like params, got {len(grads)}")
    for i, (g, p) in enumerate(zip(grads, params)):
        if not isinstance(g, Layer):
            raise TypeError(f"{name}[{i}]: expected an fnn.Layer(w, b), got {describe(g)}")
        for field, ga, pa in (("w", g.w, p.w), ("b", g.b, p.b)):
            _refuse_subclass(ga, f"{name}[{i}].{field}")
            if not isinstance(ga, np.ndarray) or ga.shape != pa.shape or ga.dtype != pa.dtype:
                raise ValueError(
                    f"{name}[{i}].{field}: expected shape {pa.shape} and dtype {pa.dtype} "
                    f"like params, got {describe(ga)}"
                )


def _refuse_subclass(value: Any, name: str) -> None:
    """The ndarray subclasses `as_array` refuses, refused in params and grads too: the
    Numba kernels cannot type a masked array, and NumPy's arithmetic would return one
    (or an np.matrix) as new params."""
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name}: expected a plain ndarray, got a masked array (its masked "
                        f"entries would be used as data); pass value.filled(...)")
    if isinstance(value, np.matrix):
        raise TypeError(f"{name}: expected a plain ndarray, got np.matrix; pass "
                        f"np.asarray(value)")


def as_array(value: Any, name: str) -> np.ndarray:
    """`value` as an ndarray, or a TypeError/ValueError naming `name`.

    Refused: masked arrays (their masked entries would be used as data) and np.matrix
    (its rows and products are not an ndarray's), and anything NumPy cannot make one
    rectangular array of (a ragged list). Other ndarray subclasses (np.memmap) pass.
    """
    _refuse_subclass(value, name)
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: expected an array (a rectangular nested list or an "
                         f"ndarray), got a {type(value).__name__} NumPy cannot make one "
                         f"array of ({' '.join(str(exc).split()[:12])} ...)") from None


def shown(value: Any) -> str:
    """A number as an error message shows it; a huge int by its size, since str() of an
    int over 4300 digits itself raises."""
    if isinstance(value, (int, np.integer)) and abs(int(value)) >= 10**30:
        return f"{'-' if value < 0 else ''}an int of {int(value).bit_length()} bits"
    return str(value)


def _all_finite(a: np.ndarray) -> bool:
    # A sum is finite only if every term is (inf or nan propagate), and costs far less
    # than isfinite().all(); overflow of large finite values falls back to the full test.
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.add.reduce(a, axis=None))):
            return True
    return bool(np.isfinite(a).all())


def nonfinite_error(x: np.ndarray, name: str = "x", rows: Any = slice(None)) -> ValueError:
    """The error for a NaN or an infinity in x[rows] (which must hold one), at its index in x."""
    first = np.argwhere(~np.isfinite(x[rows]))[0]
    index = (np.arange(x.shape[0])[rows][first[0]], *first[1:].tolist())
    return ValueError(f"{name}: expected finite values, got {x[index]} at index "
                      f"{tuple(int(i) for i in index)}")


def check_x(
    x: Any, params: Params, dtype: np.dtype, name: str = "x", *, finite: bool = True
) -> tuple[np.ndarray, bool]:
    """Check inputs `x: (batch, d_in)` or `(d_in,)` of the params' dtype, non-empty and,
    unless `finite=False` (for a caller that checks the rows it uses), finite.

    Returns (x as a C-contiguous (batch, d_in) array, whether a single example was given).
    """
    x = as_array(x, name)
    d_in = params[0].w.shape[0]
    if x.ndim not in (1, 2):
        raise ValueError(f"{name}: expected shape (batch, {d_in}) or ({d_in},), got {x.shape}")
    if x.shape[-1] != d_in:
        raise ValueError(
            f"{name}: expected {d_in} features (params[0].w has {d_in} rows), "
            f"got shape {x.shape}"
        )
    if x.dtype != dtype:
        raise TypeError(
            f"{name}: expected dtype {dtype} (the params' dtype), got {x.dtype}; "
            f"cast with x.astype(np.{dtype})"
        )
    single = x.ndim == 1
    if single:
        x = x.reshape(1, d_in)
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one example, got an empty batch {x.shape}")
    if finite and not _all_finite(x):
        raise nonfinite_error(x, name)
    return np.ascontiguousarray(x), single


def check_y(y: Any, n: int, n_classes: int, single: bool, name: str = "y") -> np.ndarray:
    """Check integer labels `y: (n,)` in [0, n_classes); a scalar label when `single`.

    Returns y as a C-contiguous int64 array of shape (n,).
    """
    y = as_array(y, name)
    if single and y.ndim == 0:
        y = y.reshape(1)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one label per example, got {y.shape}")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{name}: expected labels in [0, {n_classes - 1}] ({n_classes} classes), got {bad}"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


def check_xy(x: Any, y: Any, params: Any) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """check_params, check_x and check_y together; returns (x2d, y, dtype)."""
    dtype = check_params(params)
    x2, single = check_x(x, params, dtype)
    return x2, check_y(y, x2.shape[0], params[-1].w.shape[1], single), dtype


def check_lr(lr: Any, name: str = "lr", dtype: np.dtype | None = None) -> float:
    """Check a learning rate: a finite, positive real number and, given the params'
    `dtype`, one that dtype holds (see `check_in_dtype`)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a positive float, got {type(lr).__name__} {lr!r}")
    v = real_as_float(lr)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a finite, positive float, got {shown(lr)}")
    return v if dtype is None else check_in_dtype(v, dtype, name)


def check_in_dtype(value: float, dtype: np.dtype, name: str, *, zero_ok: bool = False
                   ) -> float:
    """`value` (a finite float, checked already), refused with a ValueError naming `name`
    when the params' `dtype` cannot hold it: the updates multiply arrays of that dtype by
    it, so NumPy (NEP 50) and the kernels round it to the dtype first, and 1e39 would
    become inf in float32 (NaN params, silently) and 1e-50 a 0 (no update at all).
    A non-zero value that rounds to 0 passes only when `zero_ok`. Returned unchanged."""
    info = np.finfo(dtype)
    if float(info.smallest_subnormal) <= abs(value) <= float(info.max):
        return value  # held (the usual case: no cast, no errstate, per step)
    with np.errstate(over="ignore", under="ignore"):
        held = float(np.dtype(dtype).type(value))
    if math.isinf(held) or (held == 0 and value != 0 and not zero_ok):
        lo = "" if zero_ok else f"at least {float(info.smallest_subnormal):g} and "
        raise ValueError(f"{name}: expected a value that {np.dtype(dtype).name} (the params' "
                         f"dtype) holds, {lo}at most {float(info.max):g} in magnitude, "
                         f"got {value:g}")
    return value


def real_as_float(value: Any) -> float:
    """float(value), or inf for an int too large for a float (10**400), so that the
    caller's range check refuses it with a named ValueError instead of an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def check_real(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False,
               hi_open: bool = False) -> float:
    """A finite real in [lo, hi], open at either end when asked; returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    v = real_as_float(value)
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    if (
        not math.isfinite(v)
        or v < lo or (lo_open and v == lo)
        or v > hi or (hi_open and v == hi)
    ):
        raise ValueError(f"{name}: expected a value in {left}{lo}, {hi}{right}, got {shown(value)}")
    return v


def check_int(value: Any, name: str, minimum: int) -> int:
    """An int (not a bool) >= minimum; returned as a Python int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {shown(value)}")
    return int(value)


def check_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """A float dtype fnn computes in: float32 or float64 (anything np.dtype accepts but
    None, which np.dtype would silently take as float64)."""
    if dtype is None:
        raise TypeError(f"{name}: expected float32 or float64, got None")
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):  # ValueError: a malformed dtype string such as "f4,"
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}") from None
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {resolved}")
    return resolved
