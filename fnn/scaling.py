"""Input scaling: how a run turns pixels into network inputs, stored so that eval and
predict apply exactly what training applied.

The loader gives pixels / 255 (`fnn.data`). A `Scaling` spec is a JSON-able dict:

    {"kind": "pixel"}                          x as loaded: pixels / 255 (the default)
    {"kind": "divide", "max": 16.0}            pixels / max, for data stored as 0..max
    {"kind": "standardize", "mean": [...], "std": [...]}
                                               per feature (x - mean) / std, with mean
                                               and std of the training part (std 0 -> 1)

`fit_scaling` builds a spec from the training part only (never the validation or test
examples), `apply_scaling` applies one to any x: (n, d) in [0, 1] of float32/float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SCALES", "apply_scaling", "check_scale", "check_scaling", "fit_scaling",
           "range_warning"]

SCALES = ("pixel", "standardize")  # or a number: the largest value the data is stored as
PIXEL_MAX = 255.0


def fit_scaling(scale: str | float, x_train: np.ndarray, rows: Any = None) -> dict[str, Any]:
    """The spec for `scale` ("pixel", "standardize" or a positive max value), with
    statistics from x_train: (n, d) as loaded (pixels / 255), of its `rows` (an index of
    the training part; None: all). The rows are gathered only for the statistics: a
    copy of MNIST's training part took 0.4 s of a 2.2-s `fnn train`."""
    if isinstance(scale, str):
        if scale == "pixel":
            return {"kind": "pixel"}
        if scale != "standardize":
            raise ValueError(f"scale: expected one of {SCALES} or a positive number, "
                             f"got {scale!r}")
        if rows is not None:
            x_train = x_train[rows]
        dtype = x_train.dtype
        mean = x_train.mean(axis=0, dtype=np.float64).astype(dtype)
        std = x_train.std(axis=0, dtype=np.float64).astype(dtype)
        std[std == 0] = 1  # constant features (MNIST's border pixels) pass through centred
        # float() of a float32 is exact, and JSON keeps float64s exactly: eval gets the bits.
        return {"kind": "standardize", "mean": [float(v) for v in mean],
                "std": [float(v) for v in std]}
    return {"kind": "divide", "max": float(check_scale(scale))}


def check_scale(scale: Any, name: str = "scale") -> str | float:
    """A `scale` option: one of SCALES or a positive finite number; else ValueError."""
    if isinstance(scale, str) and scale in SCALES:
        return scale
    if not _positive(scale):
        raise ValueError(f"{name}: expected one of {SCALES} or a positive number, got "
                         f"{scale!r:.80}")
    return scale


def _finite(value: Any) -> bool:
    """A finite number of JSON's (an int too: 1e400 is not a float, but 10**400 is an int)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and -1e308 < value < 1e308)


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def check_scaling(spec: Any, name: str = "scaling") -> dict[str, Any]:
    """A Scaling spec as `fit_scaling` makes it (it may come from an untrusted file):
    its kind, and its max (a positive number) or its mean and std (lists of finite
    numbers of one length, std positive). Anything else raises ValueError naming
    `name`.field; returns the spec."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    fields = {"pixel": {"kind"}, "divide": {"kind", "max"},
              "standardize": {"kind", "mean", "std"}}.get(kind)
    if fields is None:
        raise ValueError(f"{name}: expected a spec of kind 'pixel', 'divide' or "
                         f"'standardize', got {spec!r:.80}")
    if set(spec) != fields:
        raise ValueError(f"{name}: expected the keys {sorted(fields)} for kind {kind!r}, "
                         f"got {sorted(spec)}")
    if kind == "divide" and not _positive(spec["max"]):
        raise ValueError(f"{name}.max: expected a positive number, got {spec['max']!r:.80}")
    if kind == "standardize":
        for field, ok in (("mean", _finite), ("std", _positive)):
            values = spec[field]
            if not isinstance(values, list) or not values or not all(map(ok, values)):
                what = "finite numbers" if field == "mean" else "positive numbers"
                raise ValueError(f"{name}.{field}: expected a list of {what}, got "
                                 f"{values!r:.80}")
        if len(spec["mean"]) != len(spec["std"]):
            raise ValueError(f"{name}.std: expected {len(spec['mean'])} values (as mean), "
                             f"got {len(spec['std'])}")
    return spec


def apply_scaling(x: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """x: (n, d) as loaded (pixels / 255) -> the network's input, same dtype and shape.
    A spec that does not fit x (not one `check_scaling` takes, or statistics of another
    width) raises ValueError."""
    kind = check_scaling(spec)["kind"]
    if kind == "pixel":
        return x
    if kind == "divide":
        # pixels / 255 rounds to the nearest float, so rint recovers the stored integers.
        return np.divide(np.rint(x * PIXEL_MAX), x.dtype.type(spec["max"]), dtype=x.dtype)
    mean = np.array(spec["mean"], dtype=x.dtype)
    std = np.array(spec["std"], dtype=x.dtype)
    if mean.shape != (x.shape[1],):
        raise ValueError(f"scaling: statistics of {mean.size} features, got x of "
                         f"{x.shape[1]} features")
    return (x - mean) / std


def range_warning(x_train: np.ndarray, scale: str | float) -> str | None:
    """A sentence when the data's largest value is far below what `scale` divides by (a
    dataset stored as 0..16 read as 0..255 trains poorly), else None."""
    if scale == "standardize" or x_train.size == 0:
        return None
    top = PIXEL_MAX if scale == "pixel" else float(scale)
    peak = float(np.rint(x_train.max() * PIXEL_MAX))
    if peak >= top / 4:
        return None
    return (f"the training data's largest value is {peak:g} but --scale {scale} divides by "
            f"{top:g}, so the inputs only reach {peak / top:.3f}; try --scale {peak:g} or "
            "--scale standardize")
