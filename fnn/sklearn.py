"""fnn as scikit-learn estimators: `MLPClassifier` and `MLPRegressor`.

So that fnn goes where scikit-learn models go (pipelines, grid searches, cross
validation) with scikit-learn's conventions: hyper-parameters are constructor arguments
(those of `fnn.TrainConfig`, with ``hidden`` for the hidden widths and ``random_state``
for the seed), learned state has a trailing underscore, input is validated at this
boundary by scikit-learn's own `validate_data`, and arbitrary class labels are mapped to
0..k-1 through ``classes_``. Training is `fnn.fit`'s, prediction `fnn.forward`'s: an int
``random_state`` gives the bits of ``fnn.fit(None, (x, y), TrainConfig(seed=...))``.

Needs scikit-learn (``pip install 'fnn[sklearn]'``); ``import fnn`` does not import this
module. `MLPRegressor` needs fnn's mean-squared-error training (``TrainConfig.loss``).
"""

from __future__ import annotations

import hashlib
from numbers import Integral
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import (
        _check_partial_fit_first_call,
        check_classification_targets,
    )
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fnn.sklearn needs scikit-learn >= 1.6: pip install 'fnn[sklearn]'"
    ) from e

from .mlp import forward
from .train import TrainConfig, TrainState, _fingerprint, fit

__all__ = ["MLPClassifier", "MLPRegressor"]

# Constructor arguments passed to TrainConfig unchanged (the estimator adds sizes, seed
# and activation, loss, and val_fraction=0: scikit-learn leaves validation to the caller,
# as cross-validation and grid searches do).
_CONFIG_PARAMS = (
    "epochs", "batch_size", "lr", "optimizer", "momentum", "schedule", "decay_rate",
    "decay_epochs", "warmup_steps", "weight_decay", "dtype", "backend",
)


class _FnnEstimator(BaseEstimator):
    """What both estimators share: the config, the seed, fit and partial_fit over a
    target already encoded (class indices, or a float (n, d) matrix)."""

    def __init__(
        self,
        hidden: int | tuple[int, ...] = (64,),
        *,
        activation: str = "relu",
        epochs: int = 20,
        batch_size: int = 32,
        lr: float = 0.1,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        schedule: str = "constant",
        decay_rate: float = 0.5,
        decay_epochs: float = 3.0,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        dtype: str = "float32",
        backend: str | None = None,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.hidden = hidden
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.momentum = momentum
        self.schedule = schedule
        self.decay_rate = decay_rate
        self.decay_epochs = decay_epochs
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state

    def _config(self, d_in: int, d_out: int, seed: int) -> TrainConfig:
        fields = {name: getattr(self, name) for name in _CONFIG_PARAMS}
        fields.update(self._extra_config())
        fields["val_fraction"] = 0.0  # the estimator trains on all it is given
        return TrainConfig(sizes=(d_in, *_hidden(self.hidden), d_out), seed=seed, **fields)

    def _extra_config(self) -> dict[str, Any]:
        return self._forward_kwargs()

    def _seed(self) -> int:
        # An int is the seed itself (the same bits as fnn.fit with that seed); None or a
        # RandomState draws one, scikit-learn's convention.
        rs = self.random_state
        if isinstance(rs, Integral) and not isinstance(rs, bool) and rs >= 0:
            return int(rs)
        return int(check_random_state(rs).randint(0, 2**31 - 1))

    def _fit_encoded(self, x: np.ndarray, t: np.ndarray, d_out: int) -> None:
        state = fit(None, (x, t), self._config(x.shape[1], d_out, self._seed()))
        self._remember(state, x, t, reset=True)

    def _partial_fit_encoded(self, x: np.ndarray, t: np.ndarray, d_out: int) -> None:
        """One more epoch over (x, t), continuing the params, optimizer state (with its
        step count) and batch-order stream of the run so far."""
        if not hasattr(self, "_state"):
            config = self._config(x.shape[1], d_out, self._seed())._replace(epochs=1)
            self._remember(fit(None, (x, t), config), x, t, reset=True)
            return
        state = self._state
        if _data_digest(x, t) == self._data_digest:
            # The same data: the run itself goes on, as a fit with one more epoch would.
            state = state._replace(config=state.config._replace(epochs=state.epoch + 1))
        else:
            # Other data (a stream of chunks): one epoch over it, from where the run is.
            # (The history goes on too: one loss per step, as resuming requires.)
            state = state._replace(epoch=0, batch=0, data_fingerprint=_fingerprint(x, t),
                                   config=state.config._replace(epochs=1))
        self._remember(fit(None, (x, t), resume=state), x, t, start=state)

    def _remember(self, state: TrainState, x: np.ndarray, t: np.ndarray, *,
                  reset: bool = False, start: TrainState | None = None) -> None:
        done = 0 if start is None else start.step  # the steps before this call
        per_epoch = -(-len(x) // state.config.batch_size)
        new = state.history.loss[len(state.history.loss) - (state.step - done):]
        curve = [float(np.mean(new[i : i + per_epoch])) for i in range(0, len(new), per_epoch)]
        self._state = state
        self._data_digest = _data_digest(x, t)
        self.params_ = state.params
        self.loss_curve_ = curve if reset else [*self.loss_curve_, *curve]
        self.n_iter_ = len(self.loss_curve_)

    def _forward(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "params_")
        x = validate_data(self, X, reset=False, dtype=np.dtype(self._state.config.dtype))
        return forward(self.params_, x, backend=self._state.config.backend,
                       **self._forward_kwargs())

    def _forward_kwargs(self) -> dict[str, Any]:
        return {"activation": self.activation}


class MLPClassifier(ClassifierMixin, _FnnEstimator):
    """An MLP classifier trained by `fnn.fit` (softmax cross-entropy).

    Args:
        hidden: the hidden layers' widths, an int or a sequence of ints ((), no hidden
            layer: multinomial logistic regression).
        activation: the hidden layers' activation, ``fnn.TrainConfig.activation``: a
            built-in's name, or one name per hidden layer.
        epochs, batch_size, lr, optimizer, momentum, schedule, decay_rate, decay_epochs,
            warmup_steps, weight_decay, dtype, backend: as in `fnn.TrainConfig` (checked
            there, at fit, with errors naming the field).
        random_state: an int >= 0 is the run's seed (``fnn.TrainConfig.seed``); None or a
            ``np.random.RandomState`` draws one (scikit-learn's convention).

    Fitted attributes: ``classes_`` (the sorted labels; class ``k`` of the network is
    ``classes_[k]``), ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame),
    ``params_`` (the network, a tuple of `fnn.Layer`), ``n_iter_`` (epochs trained
    since the last fit), ``loss_curve_`` (the mean training batch loss of each of those
    epochs).

    Defaults are small and quick (a few hundred examples train in milliseconds, as
    scikit-learn's estimator checks need); for MNIST-sized data raise ``epochs`` or use
    the recipe of `fnn.TrainConfig`.

    Input ``X``: (n, n_features) of numbers, cast to ``dtype``; ``y``: (n,) labels of
    any kind with at least two classes.
    """

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Train from scratch on X: (n, n_features), y: (n,) labels; returns self."""
        x, y = validate_data(self, X, y, dtype=_dtype(self.dtype))
        check_classification_targets(y)
        self.classes_, t = np.unique(y, return_inverse=True)
        _check_two_classes(self.classes_)
        self._fit_encoded(x, t.astype(np.int64), len(self.classes_))
        return self

    def partial_fit(self, X: Any, y: Any, classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y), continuing from the current state (the first call
        starts a run and needs ``classes``, every label that any call will bring)."""
        first = _check_partial_fit_first_call(self, classes)
        x, y = validate_data(self, X, y, dtype=_dtype(self.dtype), reset=first)
        check_classification_targets(y)
        if first:
            _check_two_classes(self.classes_)
        known = np.isin(y, self.classes_)
        if not known.all():
            raise ValueError(
                f"y: expected labels among classes_ {self.classes_.tolist()}, got "
                f"{y[~known].tolist()[0]!r}"
            )
        t = np.searchsorted(self.classes_, y).astype(np.int64)
        self._partial_fit_encoded(x, t, len(self.classes_))
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, float64 (n, n_classes), columns in ``classes_`` order."""
        logits = self._forward(X).astype(np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log class probabilities, float64 (n, n_classes)."""
        logits = self._forward(X).astype(np.float64)
        shifted = logits - logits.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable label of each row, (n,) of ``classes_``' dtype."""
        logits = self._forward(X)
        return self.classes_[np.argmax(logits, axis=1)]


class MLPRegressor(RegressorMixin, _FnnEstimator):
    """An MLP regressor trained by `fnn.fit` with the mean squared error.

    Args: those of `MLPClassifier` (any ``activation`` of ``fnn.TrainConfig``). ``y``:
    (n,) or (n, n_outputs) numbers, best scaled to unit variance (the defaults assume it);
    `predict` returns the same shape. Fitted attributes as `MLPClassifier`'s, without
    ``classes_``. Defaults as scikit-learn's MLPRegressor: Adam with lr 0.001, whose
    steps stay bounded on unscaled inputs where plain SGD at 0.1 diverges.
    """

    def __init__(
        self,
        hidden: int | tuple[int, ...] = (64,),
        *,
        activation: str = "relu",
        epochs: int = 20,
        batch_size: int = 32,
        lr: float = 0.001,
        optimizer: str = "adam",
        momentum: float = 0.9,
        schedule: str = "constant",
        decay_rate: float = 0.5,
        decay_epochs: float = 3.0,
        warmup_steps: int = 0,
        weight_decay: float = 0.0,
        dtype: str = "float32",
        backend: str | None = None,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        super().__init__(
            hidden, activation=activation, epochs=epochs, batch_size=batch_size, lr=lr,
            optimizer=optimizer, momentum=momentum, schedule=schedule, decay_rate=decay_rate,
            decay_epochs=decay_epochs, warmup_steps=warmup_steps, weight_decay=weight_decay,
            dtype=dtype, backend=backend, random_state=random_state)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _extra_config(self) -> dict[str, Any]:
        return {**super()._extra_config(), "loss": "mse"}

    def _targets(self, X: Any, y: Any, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        dtype = _dtype(self.dtype)
        x, y = validate_data(self, X, y, dtype=dtype, multi_output=True, y_numeric=True,
                             reset=reset)
        ndim, y = y.ndim, y.reshape(len(y), -1).astype(np.float64)
        if reset:
            # The network learns standardized targets (per output), whatever their scale:
            # the defaults' lr suits unit variance, and predict maps back. The arithmetic
            # is in units of a power of two near each output's largest |y| (exact, so the
            # same bits as in y's units), where a sum of squares cannot overflow: in y's
            # units, targets of 1e200 had an inf std and all became 0.
            self._y_ndim = ndim
            self._y_unit = _power_of_two_unit(y)
            u = y / self._y_unit
            self._y_mean = u.mean(axis=0) * self._y_unit
            std = u.std(axis=0) * self._y_unit
            self._y_scale = np.where(std > 0, std, 1.0)
        elif y.shape[1] != len(self._y_mean):
            raise ValueError(
                f"y: expected the first call's number of outputs, {len(self._y_mean)}, got "
                f"{y.shape[1]}"
            )
        unit = self._y_unit
        with np.errstate(over="ignore", invalid="ignore"):
            t = ((y / unit - self._y_mean / unit) / (self._y_scale / unit)).astype(dtype)
        if not np.isfinite(t).all():
            bad = np.argwhere(~np.isfinite(t))[0]
            raise ValueError(
                f"y: expected targets that standardized (mean {self._y_mean.tolist()}, std "
                f"{self._y_scale.tolist()}, from the first fit) fit in {np.dtype(dtype)}, "
                f"got {y[tuple(bad)]!r} at index {tuple(int(i) for i in bad)}"
            )
        return x, np.ascontiguousarray(t)

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Train from scratch on X: (n, n_features), y: (n,) or (n, n_outputs); returns self."""
        x, t = self._targets(X, y, reset=True)
        self._fit_encoded(x, t, t.shape[1])
        return self

    def partial_fit(self, X: Any, y: Any) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current state (or starting a run)."""
        x, t = self._targets(X, y, reset=not hasattr(self, "_state"))
        self._partial_fit_encoded(x, t, t.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, float64 (scikit-learn's convention) of shape (n,) or
        (n, n_outputs) as y was; the network runs in the estimator's dtype."""
        out = self._forward(X).astype(np.float64) * self._y_scale + self._y_mean
        return out.ravel() if self._y_ndim == 1 else out


# ---------------------------------------------------------------------------------------


def _dtype(dtype: Any) -> Any:
    # validate_data casts to this; an unknown dtype is left for TrainConfig to name.
    return np.dtype(dtype) if dtype in ("float32", "float64", np.float32, np.float64) else None


def _power_of_two_unit(y: np.ndarray) -> np.ndarray:
    """Per column of finite y (n, d): a power of two in (max |y| / 2, max |y|] (1 for a
    zero column), so that y / unit lies in [-2, 2] and scaling by it is exact."""
    _, exponent = np.frexp(np.abs(y).max(axis=0))
    return np.where(np.abs(y).max(axis=0) > 0, np.ldexp(1.0, exponent - 1), 1.0)


def _hidden(hidden: Any) -> tuple[int, ...]:
    if isinstance(hidden, Integral) and not isinstance(hidden, bool):
        return (int(hidden),)
    if isinstance(hidden, (tuple, list)) and all(
        isinstance(h, Integral) and not isinstance(h, bool) for h in hidden
    ):
        return tuple(int(h) for h in hidden)
    raise TypeError(f"hidden: expected an int or a sequence of ints, got {hidden!r}")


def _check_two_classes(classes: np.ndarray) -> None:
    if len(classes) < 2:
        raise ValueError(
            f"y: expected at least 2 classes, got {len(classes)} class "
            f"({classes.tolist()}): a classifier cannot learn from one class"
        )


def _data_digest(x: np.ndarray, t: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (x, t):
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()
