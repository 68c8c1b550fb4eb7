"""Training: `fit` runs seeded minibatch training and returns one resumable `TrainState`.

    state = fit(None, (x, y, x_test, y_test), TrainConfig(sizes=(784, 64, 10)))
    state.params, state.history.eval_accuracy[-1]
    state = fit(None, data, resume=state._replace(config=...))   # or load_checkpoint(...)

Reproducibility: everything random comes from `config.seed` through three independent
streams: the initial params, the batch order of each epoch, and which training examples
are held out for validation (`validation_split`, a pure function of the seed and n). The same
seed, config, data and backend give bit-identical params and history (wall times aside),
and a run resumed from any `TrainState`, mid-epoch too, ends bit-identical to one that
never stopped: the state holds the batch-order RNG's state at the start of the current
epoch and the number of batches done in it.

The data and config are validated once, up front; the loop then runs `backprop_unchecked`
and the optimizer. `fit` prints nothing: progress and checkpoints go through callbacks
(see `Event` and `fnn.checkpoint.checkpoint_callback`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .backends import get_backend, get_ops
from .batching import MAX_EXAMPLES, batch_indices
from .dropout import step_key
from .epoch import compiled_optimizer, run_steps
from .hyperparams import HYPERPARAMS, OPTIMIZERS, SCHEDULES, Int
from .interrupts import SigintDeferral, deferred_sigint
from .mlp import backprop_unchecked, output_unchecked
from .model import Model, make_model
from .monitor import MONITORS, evals_since_best
from .optim import (
    Optimizer,
    Schedule,
    adam,
    check_state,
    constant_schedule,
    cosine_decay,
    empty_slots,
    exponential_decay,
    sgd,
    step_decay,
)
from .params import Layer, Params, check_parameter_count, freeze, init_params
from .validate import check_in_dtype, check_int, check_params, check_real, check_x, shown

__all__ = [
    "DIVERGENCE_FACTOR",
    "EVENT_KINDS",
    "OPTIMIZERS",
    "RESUMABLE_CHANGES",
    "SCHEDULES",
    "Event",
    "History",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "TrainingInterrupted",
    "check_config",
    "check_train_state",
    "evaluate",
    "fit",
    "make_optimizer",
    "on_events",
    "rng_from_state",
    "steps_per_epoch",
    "validation_split",
]

# OPTIMIZERS and SCHEDULES (the choices) live in fnn.hyperparams with every other bound.
#: A run has diverged when a step's training loss is not finite, or when every loss of
#: an epoch exceeds this many times the run's first loss: the lr has thrown the network
#: far from where it started and kept it there (lr=1e6 on MNIST sits near 5e5, 2e5 times
#: the initial 2.3, at chance accuracy). One spike is not divergence. The rule applies
#: to the classification losses, whose first loss is about log(classes) whatever the
#: data; an mse loss scales with the targets (and unscaled targets can grow it 1e8-fold
#: while a fit is still wanted, as in scikit-learn's estimator checks), so for mse only a
#: loss that is not finite counts.
DIVERGENCE_FACTOR: float = 1000.0
# Config fields a resumed run may change: they alter neither the data order nor the math
# of a step already taken (a longer run with a cosine schedule does change its horizon).
RESUMABLE_CHANGES = ("epochs", "eval_every", "backend")


class TrainConfig(NamedTuple):
    """Everything that defines a run. All fields are JSON-able scalars (sizes a tuple).

    sizes: network widths [d_in, hidden..., n_classes].
    optimizer: "sgd" (the notebook's), "momentum", "nesterov" (both use `momentum`) or
        "adam" (b1=0.9, b2=0.999; weight decay decoupled, as AdamW).
    schedule: "constant"; "step" (lr times decay_rate every decay_epochs epochs, in
        stairs); "exp" (the same decay, smooth); "cosine" (to 0 at the last step, after
        warmup_steps of linear warm-up).
    weight_decay: L2 penalty on the weights (not biases).
    seed: the run's only source of randomness (initial params, batch order, the
        validation split and the dropout keys, each its own stream of it).
    backend: "numba", "numpy", or None for `fnn.get_backend()` at the start of the run.
    dtype: "float32" or "float64", of params, data and optimizer state.
    eval_every: evaluate on the validation set every this many steps (0: only at the end
        of each epoch; an epoch end always evaluates, and so does step 0).
    drop_last: drop each epoch's last, partial batch instead of training on it.
    activation, loss, dropout: the model (see `fnn.model`): a built-in activation name
        or one per hidden layer; "softmax_cross_entropy" (integer labels), "mse" or
        "sigmoid_binary_cross_entropy" (float targets (n, d_out)); dropout rates. Step s
        draws its dropout masks from the key (seed, s), so a resumed run redraws them.
    val_fraction: the part of the training data held out, seeded, as the validation set
        that every evaluation uses (default 1/12: 5,000 of MNIST's 60,000); the data's
        second pair is then the test set, evaluated once at the end. 0: train on all of
        it and evaluate on the second pair throughout (the notebook's way).
    patience: stop early after this many (>= 1) evaluations in a row without a strict
        improvement of `monitor` ("val_loss" or "val_accuracy"); None: never.
    """

    sizes: tuple[int, ...] = (784, 64, 10)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "constant"
    decay_rate: float = 0.5
    decay_epochs: float = 3.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    seed: int = 0
    backend: str | None = None
    dtype: str = "float32"
    eval_every: int = 0
    drop_last: bool = False
    activation: str | tuple[str, ...] = "relu"
    loss: str = "softmax_cross_entropy"
    dropout: float | tuple[float, ...] = 0.0
    val_fraction: float = 1 / 12
    patience: int | None = None
    monitor: str = "val_loss"


class History(NamedTuple):
    """What a run measured, as arrays (float64 unless noted).

    loss: (steps,) training loss of each step's batch, before its update.
    lr: (steps,) learning rate of each step.
    eval_step: (evals,) int64, the number of steps done when each evaluation ran.
    eval_loss, eval_accuracy: (evals,) on the validation set (see TrainConfig.val_fraction).
    eval_time: (evals,) seconds of wall time spent in the run so far (not reproducible).
    """

    loss: np.ndarray
    lr: np.ndarray
    eval_step: np.ndarray
    eval_loss: np.ndarray
    eval_accuracy: np.ndarray
    eval_time: np.ndarray


class TrainState(NamedTuple):
    """A run at a step boundary: all that is needed to continue it bit-identically.

    params, opt_state: the network and its optimizer state after `step` updates.
    rng_state: the batch-order Generator's `bit_generator.state` at the start of the
        current epoch (a JSON-able dict; never mutated).
    step: updates done. epoch: epochs completed. batch: batches done in the current epoch.
    config: the run's TrainConfig (backend resolved, dtype a name).
    history: the measurements so far.
    elapsed: seconds of wall time spent training so far.
    data_fingerprint: sizes and a hash of the training labels, to refuse resuming on
        other data.
    test_loss, test_accuracy: the final network on the test set, measured once when
        the run finished (nan before that, without a test set, or accuracy for mse).
    """

    params: Params
    opt_state: Any
    rng_state: dict
    step: int
    epoch: int
    batch: int
    config: TrainConfig
    history: History
    elapsed: float
    data_fingerprint: str
    test_loss: float = math.nan
    test_accuracy: float = math.nan

    @property
    def stopped_early(self) -> bool:
        """True once `config.patience` evaluations in a row have not improved on the best."""
        c = self.config
        if not c.patience:
            return False
        values = getattr(self.history, MONITORS[c.monitor][0]).tolist()
        return evals_since_best(values, c.monitor) >= c.patience

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs or self.stopped_early


#: The kinds of Event, in the order fit sends them at one step: "start" once; "step"
#: after each step when fit runs them one by one (which a callback taking "step" makes
#: it do); "chunk" after each run of steps done at once (a compiled chunk, or one step
#: when they run one by one); "eval" after an evaluation; "epoch" at an epoch's end;
#: "end" once, when the run has finished.
EVENT_KINDS = ("start", "step", "chunk", "eval", "epoch", "end")
# What a callback that declares nothing is sent: the events of fnn before chunks, every
# step included ("chunk" would tell such a callback nothing new).
_ALL_BUT_CHUNK = frozenset(EVENT_KINDS) - {"chunk"}


class Event(NamedTuple):
    """What a callback is told, after a step or chunk, an evaluation or an epoch end.

    kind: one of EVENT_KINDS. step: updates done; epoch: epochs completed; total_steps:
    steps of the whole run. loss, lr: the last step's (nan at start). eval_loss,
    eval_accuracy: the latest evaluation's (nan if none yet). state(): the full
    TrainState at this point, built on demand (costs O(steps)). losses: for "step" and
    "chunk", the training loss of each step just done (one for "step"); () otherwise.
    """

    kind: str
    step: int
    epoch: int
    total_steps: int
    loss: float
    lr: float
    eval_loss: float
    eval_accuracy: float
    state: Callable[[], TrainState]
    losses: tuple[float, ...] = ()


Callback = Callable[[Event], None]


def on_events(*kinds: str, every: int = 0) -> Callable[[Callback], Callback]:
    """Declare the events a `fit` callback needs: `@on_events("epoch", "end")`.

    fit sends the callback only those kinds (of EVENT_KINDS). A callback without the
    declaration is sent every kind but "chunk", every step included, and so makes fit
    run the steps one by one; one that does not take "step" lets fit run them in
    compiled chunks. every > 0: the chunks end on every multiple of `every` steps too
    (with "chunk", the callback then sees each of those steps, as it would with "step").
    Returns a new callable (the given one is not changed) with the attributes `events`
    (a frozenset) and `every`; a class may set the two itself.
    """
    unknown = [k for k in kinds if k not in EVENT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds: expected some of {EVENT_KINDS}, got {unknown or 'none'}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"every: expected an int >= 0, got {every!r}")
    events = frozenset(kinds)

    def declare(callback: Callback) -> Callback:
        if not callable(callback):
            raise _fail_type("callback", "a callable taking an Event", callback)

        @functools.wraps(callback)
        def declared(event: Event) -> None:
            callback(event)

        declared.events = events  # type: ignore[attr-defined]
        declared.every = every  # type: ignore[attr-defined]
        return declared

    return declare


def _check_callbacks(callbacks: Any) -> tuple[tuple[Callback, frozenset[str], int], ...]:
    """(callback, the kinds it is sent, its step multiple or 0) of each callback."""
    try:
        items = tuple(callbacks)
    except TypeError:
        raise _fail_type("callbacks", "a sequence of callables", callbacks) from None
    out = []
    for i, callback in enumerate(items):
        if not callable(callback):
            raise _fail_type(f"callbacks[{i}]", "a callable taking an Event", callback)
        events = getattr(callback, "events", None)
        if events is None:
            out.append((callback, _ALL_BUT_CHUNK, 0))
            continue
        if (not isinstance(events, (set, frozenset, tuple, list))
                or not set(events) <= set(EVENT_KINDS)):
            raise ValueError(f"callbacks[{i}].events: expected a set of kinds from "
                             f"{EVENT_KINDS}, got {events!r}")
        every = getattr(callback, "every", 0)
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"callbacks[{i}].every: expected an int >= 0, got {every!r}")
        out.append((callback, frozenset(events), every))
    return tuple(out)


class TrainingDiverged(FloatingPointError):
    """The training loss became nan or inf (`step` is that step's index, `state` the
    state before it), or stayed over DIVERGENCE_FACTOR times the run's first loss for a
    whole epoch (`step` is the epoch's first step, `state` the state before the epoch)."""

    def __init__(self, message: str, step: int, state: TrainState) -> None:
        super().__init__(message)
        self.step = step
        self.state = state


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`; `state` is the last complete step's TrainState (resumable)."""

    def __init__(self, state: TrainState) -> None:
        super().__init__(f"training interrupted after step {state.step}")
        self.state = state


# ---------------------------------------------------------------- validation
def _fail_type(name: str, expected: str, value: Any) -> TypeError:
    return TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")


def _dtype_name(dtype: Any, name: str) -> str:
    try:
        dt = None if dtype is None else np.dtype(dtype)  # np.dtype(None) is float64
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.name not in HYPERPARAMS["dtype"].choices:
        raise TypeError(f"{name}: expected 'float32' or 'float64', got {dtype!r}")
    return dt.name


def check_config(config: Any) -> TrainConfig:
    """Validate a TrainConfig against `fnn.hyperparams.HYPERPARAMS`; returns it normalised
    (plain ints and floats, backend resolved, dtype a name)."""
    if not isinstance(config, TrainConfig):
        raise _fail_type("config", "an fnn.train.TrainConfig", config)
    # dtype first accepts any spelling np.dtype does ("f4", np.float32) and names it.
    fields = {"dtype": _dtype_name(config.dtype, "config.dtype")}
    for field in TrainConfig._fields:
        value = fields.get(field, getattr(config, field))
        fields[field] = HYPERPARAMS[field].check(value, f"config.{field}")
    optimizer, sizes = fields["optimizer"], fields["sizes"]
    if optimizer in ("momentum", "nesterov") and fields["momentum"] == 0:
        raise ValueError(f"config.momentum: optimizer {optimizer!r} needs momentum > 0, got 0")
    check_parameter_count(sizes, "config.sizes")
    for field in ("lr", "momentum", "weight_decay"):  # each multiplies the params' dtype
        check_in_dtype(fields[field], np.dtype(fields["dtype"]), f"config.{field}",
                       zero_ok=field != "lr")
    if fields["backend"] is None:
        fields["backend"] = get_backend()
    config = config._replace(**fields)
    model = make_config_model(config)  # the per-layer lengths of activation and dropout
    if model.loss.name == "softmax_cross_entropy" and sizes[-1] < 2:
        raise ValueError(f"config.sizes[-1]: expected at least 2 classes, got {sizes[-1]}")
    if config.monitor == "val_accuracy" and model.loss.accuracy_of is None:
        raise ValueError(f"config.monitor: loss {model.loss.name!r} has no accuracy, so "
                         f"expected 'val_loss', got 'val_accuracy'")
    return config


def make_config_model(config: TrainConfig) -> Model:
    """The Model (activations, loss, dropout) that a config describes; errors name config.*."""
    if not isinstance(config.activation, str) and not all(
            isinstance(a, str) for a in config.activation):
        raise TypeError(f"config.activation: expected a built-in name or a tuple of them, "
                        f"got {config.activation!r}")
    try:
        return make_model(len(config.sizes) - 1, config.activation, config.loss,
                          config.dropout)
    except (TypeError, ValueError) as e:
        raise type(e)(f"config.{e}") from None


def _check_data(data: Any, params: Params, dtype: np.dtype,
                model: Model) -> tuple[np.ndarray, ...]:
    """(x, y, x_val, y_val) checked; x_val and y_val may be None."""
    if not isinstance(data, Sequence) or len(data) not in (2, 4):
        raise TypeError(
            "data: expected (x, y) or (x, y, x_val, y_val) with x: (n, d_in) floats and "
            f"y: (n,) int labels, got {type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, Sequence) else "")
        )
    n_classes = params[-1].w.shape[1]
    out = []
    for x_name, y_name in (("x", "y"), ("x_val", "y_val"))[: len(data) // 2]:
        i = len(out)
        x, y = data[i], data[i + 1]
        if x_name == "x_val" and x is None and y is None:
            out += [None, None]
            continue
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise TypeError(
                f"data.{x_name}: expected a 2-d ndarray (n, {params[0].w.shape[0]}), "
                f"got {type(x).__name__}" + (f" of shape {x.shape}" if hasattr(x, "shape") else "")
            )
        x, _ = check_x(x, params, dtype, f"data.{x_name}")
        out += [x, model.loss.check_targets(y, x.shape[0], n_classes, False, dtype,
                                            f"data.{y_name}")]
    if len(out) == 2:
        out += [None, None]
    return tuple(out)


def _fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(y, dtype=np.int64).tobytes()).hexdigest()
    return f"n={x.shape[0]} d={x.shape[1]} labels-sha256={digest[:16]}"


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches in an epoch of n examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def make_optimizer(config: TrainConfig, n_train: int) -> tuple[Optimizer, Schedule]:
    """The optimizer and lr schedule a (validated) config describes, for n_train examples."""
    per_epoch = steps_per_epoch(n_train, config.batch_size, config.drop_last)
    decay_steps = max(1.0, config.decay_epochs * per_epoch)
    lr = config.lr
    schedule = {
        "constant": lambda: constant_schedule(lr),
        "step": lambda: step_decay(lr, config.decay_rate, round(decay_steps)),
        "exp": lambda: exponential_decay(lr, config.decay_rate, decay_steps),
        "cosine": lambda: cosine_decay(lr, config.epochs * per_epoch,
                                       warmup_steps=config.warmup_steps),
    }[config.schedule]()
    if config.optimizer == "adam":
        return adam(schedule, weight_decay=config.weight_decay), schedule
    momentum = 0.0 if config.optimizer == "sgd" else config.momentum
    opt = sgd(schedule, momentum=momentum, nesterov=config.optimizer == "nesterov",
              weight_decay=config.weight_decay)
    return opt, schedule


def evaluate(
    params: Params, x: np.ndarray, y: np.ndarray, *, activation: Any = "relu",
    loss: Any = "softmax_cross_entropy", backend: str | None = None
) -> tuple[float, float]:
    """(mean loss, accuracy) on (x: (n, d_in), y) in one batched forward pass, without
    dropout. The accuracy is nan for a loss with no classes (mse)."""
    dtype = check_params(params)
    model = make_model(len(params), activation, loss)
    x2, _ = check_x(x, params, dtype)
    y2 = model.loss.check_targets(y, x2.shape[0], params[-1].w.shape[1], False, dtype)
    return _evaluate(get_ops(backend), params, model, x2, y2)


def _evaluate(ops: Any, params: Params, model: Model, x: np.ndarray,
              y: np.ndarray) -> tuple[float, float]:
    out = output_unchecked(ops, params, model, x)
    acc = math.nan if model.loss.accuracy_of is None else model.loss.accuracy_of(out, y)
    return float(ops.loss_value(out, y, model.loss)), float(acc)


def _new_rng_state(seed: int) -> tuple[np.random.Generator, dict]:
    """Independent streams for the initial params and the batch order, from one seed."""
    init_seq, order_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(order_seq).bit_generator.state


def validation_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of n training examples, both int64, sorted.

    round(n * val_fraction) examples are held out, drawn from the seed's third stream
    (SeedSequence(seed).spawn(3)[2]; the first two, params and batch order, are
    untouched), so the split is a pure function of (n, val_fraction, seed).
    val_fraction 0 holds out nothing.
    """
    n = check_int(n, "n", 1)
    if n > MAX_EXAMPLES:
        raise ValueError(f"n: expected an int <= {MAX_EXAMPLES} (fnn.batching.MAX_EXAMPLES), "
                         f"got {shown(n)}")
    val_fraction = check_real(val_fraction, "val_fraction", 0.0, 1.0, hi_open=True)
    seed = check_int(seed, "seed", 0)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and not 1 <= n_val < n:
        raise ValueError(
            f"val_fraction: expected a fraction that holds out between 1 and {n - 1} of the "
            f"{n} training examples, got {val_fraction:g} ({n_val} examples)")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:n_val]] = True
    return np.flatnonzero(~held).astype(np.int64), np.flatnonzero(held).astype(np.int64)


_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


def rng_from_state(state: dict) -> np.random.Generator:
    """A Generator in the given `bit_generator.state` (as stored in TrainState.rng_state)."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in _BIT_GENERATORS:
        raise ValueError(
            f"rng_state: expected the state of one of NumPy's bit generators "
            f"{_BIT_GENERATORS}, got {type(state).__name__} naming {name!r}"
        )
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = state
    except Exception as exc:  # NumPy's own checks of a state dict raise many types
        text = repr(state)
        raise ValueError(
            f"rng_state: expected a {name} state as its bit_generator.state gives it "
            f"({type(exc).__name__}: {exc}), got {text[:80]}{'...' if len(text) > 80 else ''}"
        ) from None
    return np.random.Generator(bit_generator)


def _empty_history() -> History:
    f = np.zeros(0)
    return History(f, f, np.zeros(0, dtype=np.int64), f, f, f)


def _check_position(state: TrainState, per_epoch: int) -> None:
    """The resumed state's position must be one a run reaches: batch within the epoch
    (a batch past its end would never reach the epoch's end: the loop would spin
    forever), epochs done within the config's, at most one loss and lr per step done. (The
    step need not be epoch * per_epoch + batch, nor the history complete: fnn.sklearn's
    partial_fit continues a run's steps on new data from epoch 0 with a new history.)"""
    for field in ("step", "epoch", "batch"):
        value = getattr(state, field)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"resume.{field}: expected an int >= 0, got {value!r}")
    if state.batch >= per_epoch:
        raise ValueError(f"resume.batch: expected a batch in [0, {per_epoch - 1}] (an epoch "
                         f"of this data has {per_epoch} batches), got {state.batch}")
    if state.epoch > state.config.epochs:
        raise ValueError(f"resume.epoch: expected at most config.epochs="
                         f"{state.config.epochs} epochs done, got {state.epoch}")
    h = state.history
    _check_history_type(h, "resume.history")
    if h.loss.shape[0] != h.lr.shape[0] or h.loss.shape[0] > state.step:
        raise ValueError(f"resume.history: expected as many losses as lrs, at most one per "
                         f"step ({state.step}), got {h.loss.shape[0]} and {h.lr.shape[0]}")
    evals = {a.shape[0] for a in h[2:]}
    if len(evals) != 1:
        raise ValueError(f"resume.history: expected eval arrays of one length, got "
                         f"{sorted(evals)}")


#: A step, epoch, batch or optimizer step count: an int in [0, INT_MAX].
_COUNT = Int(0)


def _check_history_type(h: Any, name: str) -> None:
    if not isinstance(h, History) or any(not isinstance(a, np.ndarray) or a.ndim != 1
                                         for a in h):
        raise TypeError(f"{name}: expected an fnn.train.History of 1-d arrays, got "
                        f"{type(h).__name__}")


def _check_scalars(state: TrainState, name: str) -> dict[str, Any]:
    """The scalar fields of `state` (named `name`) checked on their own: step, epoch and
    batch ints in [0, INT_MAX], elapsed finite seconds >= 0, the test metrics reals or
    nan, data_fingerprint a str, rng_state a bit generator's state. Returns the number
    fields as Python ints and floats (NumPy scalars are taken: JSON takes neither)."""
    out: dict[str, Any] = {}
    for field in ("step", "epoch", "batch"):
        out[field] = _COUNT.check(getattr(state, field), f"{name}.{field}")
    out["elapsed"] = check_real(state.elapsed, f"{name}.elapsed", 0.0, math.inf,
                                hi_open=True)
    for field in ("test_loss", "test_accuracy"):
        value = getattr(state, field)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)):
            raise _fail_type(f"{name}.{field}", "a real number (nan: not measured)", value)
        try:
            out[field] = float(value)
        except OverflowError:  # an int beyond a float's range (10**400)
            out[field] = math.inf
        if math.isinf(out[field]):
            raise ValueError(f"{name}.{field}: expected a finite number or nan (not "
                             f"measured), got {value}")
    if not isinstance(state.data_fingerprint, str):
        raise _fail_type(f"{name}.data_fingerprint", "a str", state.data_fingerprint)
    try:
        rng_from_state(state.rng_state)
    except ValueError as exc:
        raise ValueError(f"{name}.{exc}") from None
    return out


def check_train_state(state: Any, name: str = "state") -> TrainState:
    """Check a TrainState on its own (not against data, which fit does): its config a
    valid TrainConfig, params (finite or not) of the config's sizes and dtype, the
    optimizer state the config's optimizer makes for them, the scalar fields in range
    and a History of 1-d arrays. Raises TypeError or ValueError naming `name`.field;
    returns the state with its config normalised (`check_config`) and plain Python ints
    and floats in its scalar fields."""
    if not isinstance(state, TrainState):
        raise _fail_type(name, "an fnn.train.TrainState", state)
    try:
        config = check_config(state.config)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name}.{exc}") from None
    dtype = check_params(state.params, f"{name}.params", finite=False)
    sizes = (state.params[0].w.shape[0], *(p.w.shape[1] for p in state.params))
    if sizes != config.sizes or dtype.name != config.dtype:
        raise ValueError(f"{name}.params: expected sizes {config.sizes} of dtype "
                         f"{config.dtype} ({name}.config), got {sizes} of {dtype}")
    # The state type and empty slots the config's optimizer makes, from a tiny network.
    tiny = tuple(Layer(freeze(np.zeros((1, 1))), freeze(np.zeros(1))) for _ in state.params)
    template = make_optimizer(config._replace(schedule="constant"), 1)[0].init(tiny)
    check_state(state.opt_state, type(template), state.params, empty_slots(template),
                f"{name}.opt_state")
    count = _COUNT.check(state.opt_state.count, f"{name}.opt_state.count")
    _check_history_type(state.history, f"{name}.history")
    return state._replace(config=config, opt_state=state.opt_state._replace(count=count),
                          **_check_scalars(state, name))


def _check_resume(state: Any, config: TrainConfig | None) -> TrainConfig:
    if not isinstance(state, TrainState):
        raise _fail_type("resume", "an fnn.train.TrainState", state)
    if not isinstance(state.config, TrainConfig):
        raise _fail_type("resume.config", "an fnn.train.TrainConfig", state.config)
    _check_scalars(state, "resume")  # (the loop reads them as they are)
    if config is None:
        return state.config
    config = check_config(config)
    old = state.config
    changed = [f for f in TrainConfig._fields if getattr(config, f) != getattr(old, f)
               and f not in RESUMABLE_CHANGES]
    if changed:
        diffs = ", ".join(f"{f}={getattr(old, f)!r} -> {getattr(config, f)!r}" for f in changed)
        raise ValueError(
            f"config: a resumed run may change only {RESUMABLE_CHANGES}, got {diffs}"
        )
    return config


class _Cursor(NamedTuple):
    """The committed position of the loop, replaced by one assignment per step so an
    interrupt never sees half an update."""

    params: Params
    opt_state: Any
    step: int
    epoch: int
    batch: int
    rng_state: dict


def fit(
    params: Params | None,
    data: Sequence[np.ndarray | None],
    config: TrainConfig | None = None,
    *,
    resume: TrainState | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainState:
    """Train an MLP by minibatch gradient descent; returns the final TrainState.

    params: the initial network, or None to draw it from `config.seed` (Glorot).
    data: (x, y) or (x, y, x_test, y_test); x: (n, d_in) of config.dtype, y: (n,) int
        labels in [0, n_classes) (float targets (n, d_out) for mse and binary
        cross-entropy). With `config.val_fraction` > 0 that part of (x, y) is held out
        (`validation_split`) as the validation set, and (x_test, y_test) is evaluated
        once, when the run finishes (TrainState.test_loss, test_accuracy). With
        val_fraction 0 the evaluations run on (x_test, y_test) itself. The history
        records the validation loss and accuracy at step 0, every `config.eval_every`
        steps and at each epoch end; `config.patience` stops on them.
    config: a TrainConfig; None means TrainConfig() or, when resuming, resume.config.
    resume: a TrainState to continue (params must then be None). Only the fields in
        RESUMABLE_CHANGES of its config may differ from `config`.
    callbacks: functions called with an Event at start and end, after each step (or
        chunk of steps), evaluation and epoch; see EVENT_KINDS and `on_events`, with
        which a callback declares the kinds it needs.

    Speed: with the numba backend and an optimizer that `fnn.epoch.compiled_optimizer`
    compiles, unless a callback needs every "step", the steps run in compiled chunks
    (`fnn.epoch.run_steps`) of about CHUNK_SECONDS each: the same bits as the loop over
    steps, in about half the time. Chunks end at every evaluation, at epoch ends and at
    the callbacks' `every` multiples, so evaluations, callbacks, Ctrl-C and early
    stopping happen at the same steps, with the same states, as step by step.

    Raises TrainingDiverged when a step's loss is not finite (its `state` is the one
    before that step) or, for a classification loss, when every loss of an epoch is over
    DIVERGENCE_FACTOR (1000) times the run's first loss (its `state` is the one before
    that epoch), and
    TrainingInterrupted (a KeyboardInterrupt) on Ctrl-C, with the state of the last
    complete step or chunk (in the main thread, Ctrl-C is held until a step or chunk
    is complete: `fnn.interrupts`; a handler of your own for SIGINT runs then). Returns
    the state after config.epochs epochs: `.params` and `.history` are the results.
    """
    declared = _check_callbacks(callbacks)
    if resume is not None:
        if params is not None:
            raise ValueError("params: expected None when resuming (the state holds them)")
        config = check_config(_check_resume(resume, config))
        if isinstance(resume.epoch, int) and config.epochs < resume.epoch:
            raise ValueError(f"config.epochs: expected at least the {resume.epoch} epochs "
                             f"the resumed run has done, got {config.epochs}")
        params = resume.params
    else:
        config = check_config(TrainConfig() if config is None else config)
    dtype = np.dtype(config.dtype)
    if params is None:
        init_rng, rng_state = _new_rng_state(config.seed)
        params = init_params(init_rng, config.sizes, dtype=dtype)
    else:
        _, rng_state = _new_rng_state(config.seed)
        if check_params(params) != dtype:
            raise TypeError(
                f"params: expected dtype {dtype} (config.dtype), got {params[0].w.dtype}"
            )
        sizes = (params[0].w.shape[0], *(p.w.shape[1] for p in params))
        if sizes != config.sizes:
            raise ValueError(f"params: expected sizes {config.sizes} (config.sizes), got {sizes}")
    x, y, x_test, y_test = _check_data(data, params, dtype, make_config_model(config))
    # The fingerprint is of all the training data given: the held-out part is a pure
    # function of the seed and n, so the same data means the same split.
    fingerprint = _fingerprint(x, y)
    # The training part stays where it is, named by its rows: a copy of MNIST's took 0.45 s
    # (fresh pages) of a 2.4-s `fnn train`. Its batches gather the same rows either way.
    rows: np.ndarray | None = None
    if config.val_fraction > 0:
        try:
            rows, val_idx = validation_split(x.shape[0], config.val_fraction, config.seed)
        except ValueError as e:
            raise ValueError(f"config.{e}") from None
        x_val, y_val = x[val_idx], y[val_idx]
    else:
        x_val, y_val = x_test, y_test
    n_train = x.shape[0] if rows is None else rows.shape[0]
    if config.patience and x_val is None:
        raise ValueError("config.patience: early stopping needs a validation set "
                         "(val_fraction > 0, or data with a second pair), got none")
    if steps_per_epoch(n_train, config.batch_size, config.drop_last) == 0:
        raise ValueError(
            f"config.batch_size: {config.batch_size} with drop_last leaves no batch of "
            f"{n_train} training examples"
        )
    optimizer, schedule = make_optimizer(config, n_train)
    if resume is None:
        state = TrainState(params, optimizer.init(params), rng_state, 0, 0, 0, config,
                           _empty_history(), 0.0, fingerprint)
    else:
        if resume.data_fingerprint != fingerprint:
            raise ValueError(
                f"data: the run being resumed trained on ({resume.data_fingerprint}), "
                f"got ({fingerprint})"
            )
        _check_position(resume._replace(config=config),
                        steps_per_epoch(n_train, config.batch_size, config.drop_last))
        template = optimizer.init(params)
        check_state(resume.opt_state, type(template), params, empty_slots(template),
                    "resume.opt_state")
        state = resume._replace(config=config)
    with deferred_sigint() as sigint:
        return _run(state, (x, y, rows, x_val, y_val, x_test, y_test), optimizer, schedule,
                    declared, sigint)


#: Seconds of work a compiled chunk aims at: short enough that a progress bar stays
#: live and Ctrl-C is quick, long enough that the per-chunk cost (copying the params in
#: and out, some Python) stays under a percent or so.
CHUNK_SECONDS = 0.15
_FIRST_CHUNK = 8  # steps; the next chunks follow the measured time


def _chunk_size(target: int, steps: int, seconds: float) -> int:
    """Steps for the next compiled chunk: CHUNK_SECONDS at the rate the last chunk of
    `steps` steps ran, at most 4 times the last target (a first chunk's time includes
    compiling, and a short chunk's time is mostly overhead: both underestimate the rate,
    so the target grows back quickly but does not overshoot on one fast reading)."""
    if seconds <= 0:
        return 4 * target
    return max(1, min(4 * target, int(CHUNK_SECONDS * steps / seconds)))


def _run(
    state: TrainState,
    data: tuple[np.ndarray, ...],
    optimizer: Optimizer,
    schedule: Schedule,
    callbacks: tuple[tuple[Callback, frozenset[str], int], ...],
    sigint: SigintDeferral,
) -> TrainState:
    """The training loop over validated inputs; `sigint` is checked between steps and
    chunks (fit's `deferred_sigint` block). data: (x, y, rows, x_val, y_val, x_test,
    y_test); the training examples are x[rows], y[rows] (rows None: all of x, y)."""
    x, y, rows, x_val, y_val, x_test, y_test = data
    config = state.config
    ops = get_ops(config.backend)
    model = make_config_model(config)
    n, bs = (x.shape[0] if rows is None else rows.shape[0]), config.batch_size

    def at(idx: np.ndarray) -> np.ndarray:
        """The rows of x of training examples idx."""
        return idx if rows is None else rows[idx]

    per_epoch = steps_per_epoch(n, bs, config.drop_last)
    total_steps = per_epoch * config.epochs
    eval_every = config.eval_every
    h = state.history
    losses, lrs = h.loss.tolist(), h.lr.tolist()
    evals = list(zip(h.eval_step.tolist(), h.eval_loss.tolist(), h.eval_accuracy.tolist(),
                     h.eval_time.tolist()))
    cur = _Cursor(state.params, state.opt_state, state.step, state.epoch, state.batch,
                  state.rng_state)
    t0 = time.perf_counter() - state.elapsed
    test = (math.nan, math.nan)  # measured once the run has finished
    by_loss = MONITORS[config.monitor][0] == "eval_loss"
    listeners = {kind: [c for c, kinds, _ in callbacks if kind in kinds] for kind in EVENT_KINDS}

    def stop_early() -> bool:
        if not config.patience:
            return False
        values = [e[1] if by_loss else e[2] for e in evals]
        return evals_since_best(values, config.monitor) >= config.patience

    def snapshot(c: _Cursor | None = None) -> TrainState:
        c = cur if c is None else c  # one read of the committed position
        ev = [e for e in evals if e[0] <= c.step]
        history = History(
            np.array(losses[: c.step], dtype=np.float64),
            np.array(lrs[: c.step], dtype=np.float64),
            np.array([e[0] for e in ev], dtype=np.int64),
            *(np.array([e[k] for e in ev], dtype=np.float64) for k in (1, 2, 3)),
        )
        return TrainState(c.params, c.opt_state, c.rng_state, c.step, c.epoch, c.batch, config,
                          history, time.perf_counter() - t0, state.data_fingerprint, *test)

    def notify(kind: str, done: tuple[float, ...] = ()) -> None:
        if listeners[kind]:
            last = evals[-1] if evals else (0, math.nan, math.nan, 0.0)
            event = Event(kind, cur.step, cur.epoch, total_steps,
                          losses[-1] if losses else math.nan, lrs[-1] if lrs else math.nan,
                          last[1], last[2], functools.partial(snapshot, cur), done)
            for callback in listeners[kind]:
                callback(event)

    def measure(params: Params, step: int) -> tuple[int, float, float, float] | None:
        if x_val is None:
            return None
        return (step, *_evaluate(ops, params, model, x_val, y_val), time.perf_counter() - t0)

    def key_of(step: int) -> np.uint64 | None:
        return step_key(config.seed, step) if model.has_dropout else None

    # Steps in compiled chunks (`fnn.epoch.run_steps`: a step depends only on the params
    # and optimizer state, so any chunking gives the bits of the loop over steps) unless
    # a callback needs each step. A chunk ends where something must see the state: an
    # evaluation (every eval_every steps, each epoch end) or a callback's `every`.
    builtin = all(a.code >= 0 for a in model.activations) and model.loss.code >= 0
    spec = (compiled_optimizer(config.optimizer, config.momentum, config.weight_decay)
            if ops is get_ops("numba") and builtin else None)
    compiled = spec is not None and not listeners["step"]
    multiples = sorted({eval_every, *(every for _, _, every in callbacks)} - {0})
    target = _FIRST_CHUNK  # steps in the next compiled chunk
    update = optimizer.update_unchecked or optimizer.update  # fit checked its inputs
    # The divergence bound: DIVERGENCE_FACTOR times max(the run's first loss, 1).
    first_loss = [abs(losses[0]) if losses else math.nan]
    classifier = model.loss.predict is not None  # the factor's rule is for these only

    def too_large(epoch_losses: list[float]) -> bool:
        """Every loss of an epoch over DIVERGENCE_FACTOR times the run's first: one
        spike is not divergence (a regression's first steps can jump), a whole epoch is."""
        if not classifier:
            return False
        if math.isnan(first_loss[0]) and epoch_losses:
            first_loss[0] = abs(epoch_losses[0])
        bound = DIVERGENCE_FACTOR * first_loss[0]
        return bool(epoch_losses) and first_loss[0] > 0 and min(map(abs, epoch_losses)) > bound

    def diverged_error(epoch_losses: list[float], start: _Cursor, lr: float) -> TrainingDiverged:
        return TrainingDiverged(
            f"training loss stayed over {DIVERGENCE_FACTOR:g} times the first loss "
            f"{first_loss[0]:.4g} for all of epoch {start.epoch} (steps {start.step} to "
            f"{start.step + len(epoch_losses) - 1}, lowest {min(epoch_losses):.4g}, lr "
            f"{lr:g}); lower the lr or check the data. The state before that epoch is kept.",
            start.step, snapshot(start))

    try:
        if cur.step == 0 and not evals and (ev := measure(cur.params, 0)):
            evals.append(ev)
        notify("start")
        sigint.check()
        while cur.epoch < config.epochs and not stop_early():
            rng = rng_from_state(cur.rng_state)
            batches = batch_indices(n, bs, rng, drop_last=config.drop_last)
            next_rng_state = rng.bit_generator.state
            start = cur  # where this epoch (or its resumed part) began
            stepwise_to = 0  # batches before this one run step by step (a non-finite loss)
            while True:  # one chunk of steps, or one step, per pass
                b, step = cur.batch, cur.step
                stepwise = not compiled or b < stepwise_to
                if not stepwise:
                    k = min(target, len(batches) - b, *(m - step % m for m in multiples))
                    chunk_lrs = [float(schedule(step + j)) for j in range(k)]
                    count = cur.opt_state.count  # the optimizer's own step count
                    kernel_lrs = (chunk_lrs if count == step
                                  else [float(schedule(count + j)) for j in range(k)])
                    keys = (np.array([key_of(step + j) for j in range(k)], dtype=np.uint64)
                            if model.has_dropout else None)
                    t = time.perf_counter()
                    params, opt_state, chunk = run_steps(
                        cur.params, cur.opt_state, x, y, at(np.concatenate(batches[b:b + k])), bs,
                        np.array(kernel_lrs, dtype=np.float64), spec, model, keys)
                    target = _chunk_size(target, k, time.perf_counter() - t)
                    if not np.isfinite(chunk).all():
                        # Re-run these steps one by one: the error then names the step and
                        # keeps the state before it, as the loop over steps does.
                        stepwise_to = b + k
                        continue
                    done = tuple(chunk.tolist())
                else:
                    k, idx = 1, batches[b]
                    lr = float(schedule(step))
                    value, grads = backprop_unchecked(ops, cur.params, model, x[at(idx)],
                                                      y[at(idx)], key_of(step))
                    if not math.isfinite(value):
                        raise TrainingDiverged(
                            f"training loss is {value} at step {step} (epoch {cur.epoch}, batch "
                            f"{b}, lr {lr:g}); lower the lr or check the data. The state before "
                            f"this step is kept.", step, snapshot())
                    params, opt_state = update(grads, cur.opt_state, cur.params)
                    done, chunk_lrs = (value,), [lr]
                step += k
                end = b + k == len(batches)
                due = end or (eval_every and step % eval_every == 0)
                ev = measure(params, step) if due else None
                # Commit: the lists may run ahead of `cur`; snapshot() trims them to it.
                losses.extend(done)
                lrs.extend(chunk_lrs)
                if ev:
                    evals.append(ev)
                if end:
                    cur = _Cursor(params, opt_state, step, cur.epoch + 1, 0, next_rng_state)
                    if too_large(losses[start.step:]):
                        raise diverged_error(losses[start.step:], start, chunk_lrs[-1])
                else:
                    cur = _Cursor(params, opt_state, step, cur.epoch, b + k, cur.rng_state)
                if stepwise:
                    notify("step", done)
                notify("chunk", done)
                if ev:
                    notify("eval")
                if end:
                    notify("epoch")
                sigint.check()  # Ctrl-C: TrainingInterrupted with the state just committed
                if end or (ev and stop_early()):
                    break
        if x_test is not None:
            test = _evaluate(ops, cur.params, model, x_test, y_test)
        final = snapshot()
        notify("end")
        sigint.check()
        return final
    except KeyboardInterrupt as exc:
        if isinstance(exc, TrainingInterrupted):
            raise
        raise TrainingInterrupted(snapshot()) from None
