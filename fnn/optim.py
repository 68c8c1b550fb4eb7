"""Optimizers and learning-rate schedules, pure and Optax-like.

An optimizer is a pair of pure functions::

    opt = fnn.optim.adam(1e-3)
    state = opt.init(params)
    params, state = opt.update(grads, state, params)   # new values; inputs untouched

The state is a NamedTuple whose `count` is the number of updates made so far and whose
other fields are tuples of `Layer` shaped like params (velocity, moments), read-only.
Every array keeps the params' dtype: float32 params give float32 updates and state.

The learning rate is a float or a schedule, a function `step -> lr` of the update's
0-based index (`state.count` before the update). Weight decay applies to the weights
`w` only, never to the biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from .hyperparams import Int, check_hyperparam
from .params import Layer, Params, freeze
from .validate import (
    check_grads,
    check_in_dtype,
    check_int,
    check_lr,
    check_params,
    check_real,
    describe,
    real_as_float,
    shown,
)

__all__ = [
    "STATE_TYPES",
    "AdamState",
    "Optimizer",
    "SGDState",
    "Schedule",
    "adam",
    "check_state",
    "constant_schedule",
    "cosine_decay",
    "empty_slots",
    "exponential_decay",
    "sgd",
    "step_decay",
]

Schedule: TypeAlias = Callable[[int], float]


class SGDState(NamedTuple):
    """count: updates made; velocity: per-layer momentum buffers, () without momentum."""

    count: int
    velocity: Params


class AdamState(NamedTuple):
    """count: updates made; mu, nu: first and second moment estimates, like params."""

    count: int
    mu: Params
    nu: Params


# Every state type by name, so a checkpoint can rebuild the state it stored.
STATE_TYPES: dict[str, type] = {"SGDState": SGDState, "AdamState": AdamState}


class Optimizer(NamedTuple):
    """init(params) -> state; update(grads, state, params) -> (new_params, new_state).

    `update` checks its arguments (structure, shapes and dtypes; not finiteness, which
    would cost a pass over every array); `update_unchecked` is the same update for a
    caller that checked them once already (`fnn.fit` checks at its boundary and then
    calls it every step). None for an optimizer made without one: use `update`.
    """

    init: Callable[[Params], Any]
    update: Callable[[Params, Any, Params], tuple[Params, Any]]
    update_unchecked: Callable[[Params, Any, Params], tuple[Params, Any]] | None = None


# ---------------------------------------------------------------- schedules
def constant_schedule(lr: float) -> Schedule:
    """lr at every step."""
    lr = check_lr(lr)
    return lambda step: lr


def step_decay(lr: float, rate: float, every: int) -> Schedule:
    """lr * rate ** (step // every): multiplied by `rate` every `every` steps."""
    lr = check_lr(lr)
    rate = check_hyperparam("decay_rate", rate, "rate")
    every = check_int(every, "every", 1)
    return lambda step: lr * rate ** (step // every)


def exponential_decay(lr: float, rate: float, steps: float) -> Schedule:
    """lr * rate ** (step / steps): smooth decay by `rate` per `steps` steps."""
    lr = check_lr(lr)
    rate = check_hyperparam("decay_rate", rate, "rate")
    steps = check_real(steps, "steps", 0.0, math.inf, lo_open=True, hi_open=True)
    return lambda step: lr * rate ** (step / steps)


def cosine_decay(
    lr: float, total_steps: int, *, final_lr: float = 0.0, warmup_steps: int = 0
) -> Schedule:
    """Linear warm-up to lr over `warmup_steps`, then half a cosine down to `final_lr`.

    Warm-up step s (< warmup_steps) uses lr * (s + 1) / warmup_steps. After it, with
    t = (step - warmup_steps) / (total_steps - warmup_steps) clipped to [0, 1], the rate
    is final_lr + (lr - final_lr) * (1 + cos(pi t)) / 2.
    """
    lr = check_lr(lr)
    total_steps = check_int(total_steps, "total_steps", 1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps: expected fewer than total_steps={total_steps}, got {warmup_steps}"
        )
    final_lr = check_real(final_lr, "final_lr", 0.0, lr)
    span = total_steps - warmup_steps

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return lr * (step + 1) / warmup_steps
        t = min((step - warmup_steps) / span, 1.0)
        return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    return schedule


def _as_schedule(lr: float | Schedule) -> Schedule:
    if callable(lr):
        _lr_at(lr, 0)  # a schedule that returns, say, a string is refused here, once
        return lr
    return constant_schedule(lr)


def check_state(state: Any, state_type: type, params: Params, empty: tuple[str, ...] = (),
                name: str = "state") -> None:
    """Check an optimizer state: of `state_type`, a count that is an int in [0, 2**63)
    (the compiled loops count in int64; beyond it a schedule's step / steps or adam's
    b1 ** t would raise OverflowError), each slot shaped like params except those named
    in `empty`, which must be ()."""
    if not isinstance(state, state_type):
        raise TypeError(
            f"{name}: expected the {state_type.__name__} made by this optimizer's init, "
            f"got {describe(state)}"
        )
    Int(0).check(state.count, f"{name}.count")
    for field in state._fields[1:]:
        slot = getattr(state, field)
        if field in empty:  # SGD's velocity without momentum
            if not isinstance(slot, tuple) or slot:
                raise ValueError(f"{name}.{field}: expected () for this optimizer, got "
                                 f"{describe(slot)}")
        else:
            check_grads(slot, params, f"{name}.{field}")


def empty_slots(template: Any) -> tuple[str, ...]:
    """The slots an optimizer keeps empty, read off a state its init made."""
    return tuple(f for f in template._fields[1:] if not getattr(template, f))


def _check_update(grads: Any, state: Any, params: Any, state_type: type,
                  empty: tuple[str, ...]) -> np.dtype:
    # Structure, shapes and dtypes only: finiteness is the compute functions' check.
    dtype = check_params(params, finite=False)
    check_grads(grads, params)
    check_state(state, state_type, params, empty)
    return dtype


def _reals_checker(schedule: Schedule, reals: dict[str, tuple[float, bool]]
                   ) -> Callable[[np.dtype], None]:
    """A check of the optimizer's reals (name -> (value, whether 0 is allowed)) and its
    lr at step 0 as the params' dtype holds them (`fnn.validate.check_in_dtype`), made
    where the dtype is first known, at init and update (`fnn.fit` calls init). They are
    the optimizer's constants, so each dtype is checked once: per update the check
    cost 6-7 us (a checked sgd update 29 -> 35 us at 784-64-10)."""
    passed: set[np.dtype] = set()

    def check(dtype: np.dtype) -> None:
        if dtype not in passed:
            for name, (value, zero_ok) in reals.items():
                check_in_dtype(value, dtype, name, zero_ok=zero_ok)
            _lr_at(schedule, 0, dtype)
            passed.add(dtype)

    return check


def _zeros_like(params: Params) -> Params:
    return tuple(
        Layer(freeze(np.zeros_like(p.w)), freeze(np.zeros_like(p.b))) for p in params
    )


def _lr_at(schedule: Schedule, step: int, dtype: np.dtype | None = None) -> float:
    # A Python float keeps float32 arrays float32 when multiplied (an np.float64 would not).
    value = schedule(step)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"lr schedule: expected a real number at step {step}, got "
                        f"{describe(value)} {value!r}")
    lr = real_as_float(value)  # inf for 10**400, refused below
    if not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr schedule: expected a finite lr >= 0 at step {step}, "
                         f"got {shown(value)}")
    if dtype is not None:  # the update rounds lr to the params' dtype: 1e39 -> inf
        try:
            check_in_dtype(lr, dtype, "lr schedule", zero_ok=True)
        except ValueError as exc:
            raise ValueError(f"{exc} at step {step}") from None
    return lr


# ---------------------------------------------------------------- optimizers
def sgd(
    lr: float | Schedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay.

    With g = grad + weight_decay * w (weights only) and velocity v (zero at first):
      plain:     p <- p - lr * g                  (the origin notebook's update)
      momentum:  v <- momentum * v + g;  p <- p - lr * v
      nesterov:  v <- momentum * v + g;  p <- p - lr * (g + momentum * v)
    lr: positive float or schedule; momentum in [0, 1), > 0 for nesterov;
    weight_decay >= 0.
    """
    schedule = _as_schedule(lr)
    mu = check_hyperparam("momentum", momentum)
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")
    if nesterov and mu == 0:
        raise ValueError("nesterov: needs momentum > 0, got momentum=0")
    wd = check_hyperparam("weight_decay", weight_decay)
    empty = () if mu else ("velocity",)
    # (A momentum that rounds to 0 in the dtype is plain SGD, nesterov's too: harmless.)
    check_reals = _reals_checker(schedule, {"momentum": (mu, True), "weight_decay": (wd, True)})

    def init(params: Params) -> SGDState:
        check_reals(check_params(params, finite=False))
        return SGDState(0, _zeros_like(params) if mu else ())

    def update(grads: Params, state: SGDState, params: Params) -> tuple[Params, SGDState]:
        check_reals(_check_update(grads, state, params, SGDState, empty))
        return update_unchecked(grads, state, params)

    def update_unchecked(grads: Params, state: SGDState,
                         params: Params) -> tuple[Params, SGDState]:
        step_lr = _lr_at(schedule, state.count, params[0].w.dtype)
        new_params, new_velocity = [], []
        for l, (p, g) in enumerate(zip(params, grads)):
            gw = g.w + wd * p.w if wd else g.w
            dw, db = gw, g.b
            if mu:
                v = state.velocity[l]
                vw, vb = mu * v.w + gw, mu * v.b + g.b
                new_velocity.append(Layer(freeze(vw), freeze(vb)))
                dw, db = (gw + mu * vw, g.b + mu * vb) if nesterov else (vw, vb)
            new_params.append(Layer(freeze(p.w - step_lr * dw), freeze(p.b - step_lr * db)))
        return tuple(new_params), SGDState(state.count + 1, tuple(new_velocity))

    return Optimizer(init, update, update_unchecked)


def adam(
    lr: float | Schedule,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> Optimizer:
    """Adam (Kingma & Ba), with decoupled weight decay (AdamW) when weight_decay > 0.

    At update t = count + 1:
      m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
      p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
      and then, for weights only, w <- w - lr * weight_decay * w_old.
    b1, b2 in [0, 1); eps > 0; weight_decay >= 0.
    """
    schedule = _as_schedule(lr)
    b1 = check_hyperparam("b1", b1)
    b2 = check_hyperparam("b2", b2)
    eps = check_hyperparam("eps", eps)
    wd = check_hyperparam("weight_decay", weight_decay)
    check_reals = _reals_checker(schedule, {"b1": (b1, True), "b2": (b2, True),
                                            "eps": (eps, False), "weight_decay": (wd, True)})

    def init(params: Params) -> AdamState:
        check_reals(check_params(params, finite=False))
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def step(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr_t: float,
             c1: float, c2: float, decay: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * (g * g)
        delta = (m / c1) / (np.sqrt(v / c2) + eps)
        new = p - lr_t * delta
        if decay:
            new -= (lr_t * decay) * p
        return freeze(new), freeze(m), freeze(v)

    def update(grads: Params, state: AdamState, params: Params) -> tuple[Params, AdamState]:
        check_reals(_check_update(grads, state, params, AdamState, ()))
        return update_unchecked(grads, state, params)

    def update_unchecked(grads: Params, state: AdamState,
                         params: Params) -> tuple[Params, AdamState]:
        lr_t = _lr_at(schedule, state.count, params[0].w.dtype)
        t = state.count + 1
        c1, c2 = 1.0 - b1**t, 1.0 - b2**t
        new_params, mus, nus = [], [], []
        for p, g, m, v in zip(params, grads, state.mu, state.nu):
            w, mw, vw = step(p.w, g.w, m.w, v.w, lr_t, c1, c2, wd)
            b, mb, vb = step(p.b, g.b, m.b, v.b, lr_t, c1, c2, 0.0)
            new_params.append(Layer(w, b))
            mus.append(Layer(mw, mb))
            nus.append(Layer(vw, vb))
        return tuple(new_params), AdamState(t, tuple(mus), tuple(nus))

    return Optimizer(init, update, update_unchecked)
