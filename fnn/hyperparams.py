"""Hyper-parameter constraints: one table, read by `TrainConfig`, the optimizers and the CLI.

Why a table: the bounds of each hyper-parameter used to be written out three times (in
`fnn.train.check_config`, in the `fnn.optim` constructors and in the CLI's argparse
types) and the copies drifted apart (`--momentum` took 1.0 while TrainConfig requires
[0, 1)). Here each bound is written once; `HYPERPARAMS[field].check(value, name)` is the
check every path runs, and `arg_type(field)` turns it into an argparse `type=`.

Every field of `fnn.train.TrainConfig` has an entry (a test holds this), plus the
optimizer arguments that TrainConfig does not carry (b1, b2, eps).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .activations import ACTIVATIONS
from .backends import BACKENDS
from .losses import LOSS_FUNCTIONS
from .monitor import MONITORS
from .validate import check_int, check_real, describe, shown

__all__ = ["HYPERPARAMS", "INT_MAX", "Choice", "Flag", "Int", "Names", "Rates", "Real",
           "Sizes", "arg_type", "check_hyperparam"]

#: The largest int a count or seed may be: the compiled loops index in int64.
INT_MAX: int = 2**63 - 1


class Int(NamedTuple):
    """An int (not a bool) in [minimum, maximum] (or None when `none_ok`)."""

    minimum: int
    maximum: int = INT_MAX
    none_ok: bool = False

    def check(self, value: Any, name: str) -> int | None:
        if value is None and self.none_ok:
            return None
        v = check_int(value, name, self.minimum)
        if v > self.maximum:
            raise ValueError(f"{name}: expected an int <= {self.maximum}, got {shown(v)}")
        return v

    def parse(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"expected an int, got {text!r}") from None


class Real(NamedTuple):
    """A finite real number in [lo, hi], open at either end when asked."""

    lo: float
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def check(self, value: Any, name: str) -> float:
        return check_real(value, name, self.lo, self.hi, lo_open=self.lo_open,
                          hi_open=self.hi_open or math.isinf(self.hi))

    def parse(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None


class Choice(NamedTuple):
    """One of `choices` (or None when `none_ok`)."""

    choices: tuple[Any, ...]
    none_ok: bool = False

    def check(self, value: Any, name: str) -> Any:
        if value is None and self.none_ok:
            return None
        if not isinstance(value, str) or value not in self.choices:
            extra = " or None" if self.none_ok else ""
            raise ValueError(f"{name}: expected one of {self.choices}{extra}, got {value!r}")
        return value

    def parse(self, text: str) -> str:
        return text


class Flag(NamedTuple):
    """A bool (NumPy's too)."""

    def check(self, value: Any, name: str) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {describe(value)} {value!r}")
        return bool(value)

    def parse(self, text: str) -> bool:
        raise ValueError("a flag takes no value")


class Sizes(NamedTuple):
    """Network widths [d_in, hidden..., d_out]: at least `min_len` positive ints."""

    min_len: int = 2

    def check(self, value: Any, name: str) -> tuple[int, ...]:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name}: expected a sequence of ints such as (784, 64, 10), "
                            f"got {describe(value)} {value!r}")
        if len(value) < self.min_len:
            raise ValueError(f"{name}: expected [d_in, ..., n_classes], got {list(value)}")
        for i, s in enumerate(value):
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise TypeError(f"{name}[{i}]: expected an int, got {describe(s)} {s!r}")
            if s < 1:
                raise ValueError(f"{name}[{i}]: expected a positive width, got {s}")
        return tuple(int(s) for s in value)

    def parse(self, text: str) -> tuple[int, ...]:
        raise ValueError("sizes come from --hidden and the data")


class Names(NamedTuple):
    """A name from `choices`, or a sequence of them (one per hidden layer)."""

    choices: tuple[str, ...]

    def check(self, value: Any, name: str) -> str | tuple[str, ...]:
        if isinstance(value, str):
            return Choice(self.choices).check(value, name)
        if not isinstance(value, Sequence):
            raise TypeError(f"{name}: expected a name from {self.choices} or a tuple of "
                            f"them, one per hidden layer, got {describe(value)} {value!r}")
        return tuple(Choice(self.choices).check(v, f"{name}[{i}]") for i, v in enumerate(value))

    def parse(self, text: str) -> str | tuple[str, ...]:
        parts = tuple(p.strip() for p in text.split(","))
        return parts[0] if len(parts) == 1 else parts


class Rates(NamedTuple):
    """A rate, or a sequence of rates (one per layer), each checked by `rate`."""

    rate: Real

    def check(self, value: Any, name: str) -> float | tuple[float, ...]:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return tuple(self.rate.check(r, f"{name}[{i}]") for i, r in enumerate(value))
        return self.rate.check(value, name)

    def parse(self, text: str) -> float | tuple[float, ...]:
        parts = tuple(self.rate.parse(p) for p in text.split(","))
        return parts[0] if len(parts) == 1 else parts


Spec = Int | Real | Choice | Flag | Sizes | Names | Rates

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "step", "exp", "cosine")
FLOAT_DTYPE_NAMES = ("float32", "float64")

#: field -> its constraint. Model fields: activation names, loss names and dropout rates
#: (their per-layer lengths are the model's to check, see `fnn.model.make_model`).
HYPERPARAMS: dict[str, Spec] = {
    "sizes": Sizes(),
    "epochs": Int(1),
    "batch_size": Int(1),
    "lr": Real(0.0, lo_open=True),
    "optimizer": Choice(OPTIMIZERS),
    "momentum": Real(0.0, 1.0, hi_open=True),
    "schedule": Choice(SCHEDULES),
    "decay_rate": Real(0.0, 1.0, lo_open=True),
    "decay_epochs": Real(0.0, lo_open=True),
    "warmup_steps": Int(0),
    "weight_decay": Real(0.0),
    "seed": Int(0),
    "backend": Choice(BACKENDS, none_ok=True),
    "dtype": Choice(FLOAT_DTYPE_NAMES),
    "eval_every": Int(0),
    "drop_last": Flag(),
    "activation": Names(tuple(ACTIVATIONS)),
    "loss": Choice(tuple(LOSS_FUNCTIONS)),
    "dropout": Rates(Real(0.0, 1.0, hi_open=True)),
    "val_fraction": Real(0.0, 1.0, hi_open=True),
    "patience": Int(1, none_ok=True),
    "monitor": Choice(tuple(MONITORS)),
    # Optimizer arguments that TrainConfig does not carry.
    "b1": Real(0.0, 1.0, hi_open=True),
    "b2": Real(0.0, 1.0, hi_open=True),
    "eps": Real(0.0, lo_open=True),
}


def check_hyperparam(field: str, value: Any, name: str | None = None) -> Any:
    """`value` checked against HYPERPARAMS[field]; errors name `name` (default `field`)."""
    return HYPERPARAMS[field].check(value, field if name is None else name)


def arg_type(field: str) -> Callable[[str], Any]:
    """An argparse `type=` that parses a command-line value and checks it against
    HYPERPARAMS[field]; a bad value is an ArgumentTypeError without the field's name
    (argparse prefixes the option)."""
    spec = HYPERPARAMS[field]

    def parse(text: str) -> Any:
        try:
            return spec.check(spec.parse(text), field)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            if message.startswith(f"{field}: "):
                message = message[len(field) + 2:]
            raise argparse.ArgumentTypeError(message) from None

    parse.__name__ = field  # argparse names the type in some messages
    return parse
