"""fnn.sklearn: the estimators pass scikit-learn's own estimator checks, train the bits
`fnn.fit` trains, map arbitrary labels, continue runs with partial_fit, and work inside
GridSearchCV and a Pipeline.

Truth: scikit-learn's `check_estimator` suite (each check its own test), `fnn.fit` and a
hand-written loop over fnn's public optimizer and backprop, and label counts.
"""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone
from sklearn.datasets import load_iris, make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fnn
from fnn.batching import batch_indices
from fnn.sklearn import MLPClassifier, MLPRegressor
from fnn.train import make_optimizer, rng_from_state

# MLPRegressor trains with fnn's mean squared error, which TrainConfig gains in the
# models work; until it is merged its tests are skipped. (Lead: remove this gate after
# the merge.)


def blobs(n=240, classes=3, seed=0):
    x, y = make_blobs(n_samples=n, centers=classes, random_state=seed)
    return StandardScaler().fit_transform(x), y


def assert_same_params(a, b):
    assert len(a) == len(b)
    for la, lb in zip(a, b):
        np.testing.assert_array_equal(la.w, lb.w)
        np.testing.assert_array_equal(la.b, lb.b)


# ---------------------------------------------------------------------------------------
# scikit-learn's estimator checks


@parametrize_with_checks([MLPClassifier()])
def test_classifier_passes_sklearn_checks(estimator, check):
    check(estimator)


@parametrize_with_checks([MLPRegressor()])
def test_regressor_passes_sklearn_checks(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------------------
# MLPClassifier


def test_trains_the_bits_fnn_fit_trains():
    x, y = blobs()
    clf = MLPClassifier(hidden=(16, 8), epochs=3, batch_size=20, lr=0.05, random_state=7)
    clf.fit(x, y)
    config = fnn.TrainConfig(sizes=(2, 16, 8, 3), epochs=3, batch_size=20, lr=0.05, seed=7)
    config = config._replace(val_fraction=0.0)  # the estimator trains on all it is given
    state = fnn.fit(None, (x.astype(np.float32), y), config)
    assert_same_params(clf.params_, state.params)
    np.testing.assert_array_equal(clf.predict(x), fnn.predict(state.params, x.astype(np.float32)))
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_arbitrary_labels_map_to_classes():
    x, y = blobs()
    codes = np.array([10, -3, 7])  # non-contiguous, unsorted, negative
    names = np.array(["setosa", "a", "zz"])
    by_index = MLPClassifier(random_state=0).fit(x, y)
    for labels in (codes, names):
        clf = MLPClassifier(random_state=0).fit(x, labels[y])
        np.testing.assert_array_equal(clf.classes_, np.sort(labels))
        # The network sees class k = classes_[k]: the same run as on indices 0..2 when the
        # sorted labels keep the index order, a relabelled one otherwise.
        rank = np.searchsorted(np.sort(labels), labels)
        pred = clf.predict(x)
        assert pred.dtype == labels.dtype and set(pred) <= set(labels)
        if (rank == np.arange(3)).all():
            assert_same_params(clf.params_, by_index.params_)
        assert np.mean(pred == labels[y]) > 0.9
    proba = clf.predict_proba(x[:5])
    assert proba.shape == (5, 3) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(x[:5]))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(x[:5])), proba, rtol=1e-12)


def test_input_is_cast_to_the_estimators_dtype():
    x, y = blobs()
    a = MLPClassifier(random_state=1, epochs=2).fit(x, y)  # float64 in
    b = MLPClassifier(random_state=1, epochs=2).fit(x.astype(np.float32), y)
    assert a.params_[0].w.dtype == np.float32
    assert_same_params(a.params_, b.params_)
    c = MLPClassifier(random_state=1, epochs=2, dtype="float64").fit(x.tolist(), y.tolist())
    assert c.params_[0].w.dtype == np.float64
    assert c.n_features_in_ == 2


def test_partial_fit_on_the_same_data_continues_the_run():
    x, y = blobs()
    whole = MLPClassifier(random_state=3, epochs=4, optimizer="adam", lr=0.01).fit(x, y)
    parts = MLPClassifier(random_state=3, epochs=4, optimizer="adam", lr=0.01)
    for _ in range(4):
        parts.partial_fit(x, y, classes=[0, 1, 2])
    assert_same_params(parts.params_, whole.params_)
    assert parts.n_iter_ == 4
    np.testing.assert_array_equal(parts.loss_curve_, whole.loss_curve_)
    # fit then partial_fit: one epoch more.
    more = MLPClassifier(random_state=3, epochs=5, optimizer="adam", lr=0.01).fit(x, y)
    whole.partial_fit(x, y)
    assert_same_params(whole.params_, more.params_)


def test_partial_fit_on_new_chunks_keeps_the_optimizer_state():
    x, y = blobs(300)
    a, b = slice(0, 180), slice(180, 300)
    clf = MLPClassifier(hidden=8, optimizer="momentum", lr=0.05, batch_size=16, random_state=5)
    clf.partial_fit(x[a], y[a], classes=np.unique(y))
    before = clf._state
    assert before.opt_state.count == 12 and before.opt_state.velocity  # 180 / 16 -> 12 steps

    # The truth, by hand from fnn's public API: one epoch over chunk b with the velocity,
    # step count and batch-order stream where chunk a left them.
    config = before.config
    opt, _ = make_optimizer(config, 120)
    params, opt_state = before.params, before.opt_state
    xb, yb = x[b].astype(np.float32), y[b]
    for idx in batch_indices(120, 16, rng_from_state(before.rng_state)):
        _, grads = fnn.backprop(params, xb[idx], yb[idx])
        params, opt_state = opt.update(grads, opt_state, params)
    clf.partial_fit(x[b], y[b])
    assert_same_params(clf.params_, params)
    assert clf._state.opt_state.count == 12 + 8 and clf.n_iter_ == 2

    # Planted: starting chunk b with a fresh optimizer state gives other params.
    params, opt_state = before.params, opt.init(before.params)
    for idx in batch_indices(120, 16, rng_from_state(before.rng_state)):
        _, grads = fnn.backprop(params, xb[idx], yb[idx])
        params, opt_state = opt.update(grads, opt_state, params)
    assert not np.array_equal(clf.params_[0].w, params[0].w)


def test_partial_fit_errors():
    x, y = blobs()
    clf = MLPClassifier()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(x, y)
    clf.partial_fit(x, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"y: expected labels among classes_ \[0, 1, 2\], got 7"):
        clf.partial_fit(x[:3], [0, 1, 7])
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 2"):
        clf.partial_fit(np.zeros((3, 3)), [0, 1, 2])


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"lr": -1.0}, ValueError, "config.lr: expected"),
        ({"epochs": 0}, ValueError, "config.epochs: expected an int >= 1, got 0"),
        ({"optimizer": "rmsprop"}, ValueError, "config.optimizer: expected one of"),
        ({"dtype": "float16"}, TypeError, "config.dtype: expected 'float32' or 'float64'"),
        ({"hidden": "wide"}, TypeError, "hidden: expected an int or a sequence of ints, got 'wide'"),
        ({"hidden": (8, 0)}, ValueError, r"config.sizes\[2\]: expected a positive width, got 0"),
        ({"backend": "torch"}, ValueError, "config.backend: expected one of"),
        ({"activation": "swish"}, ValueError, "activation: expected"),
    ],
)
def test_bad_hyper_parameters_are_named(params, error, message):
    x, y = blobs(30)
    with pytest.raises(error, match=message):
        MLPClassifier(**params).fit(x, y)


def test_one_class_and_unfitted_errors():
    x, _ = blobs(30)
    with pytest.raises(ValueError, match="y: expected at least 2 classes, got 1 class"):
        MLPClassifier().fit(x, np.zeros(30))
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(x)


def test_random_state_forms():
    x, y = blobs(60)
    a = MLPClassifier(epochs=1, random_state=np.random.RandomState(0)).fit(x, y)
    b = MLPClassifier(epochs=1, random_state=np.random.RandomState(0)).fit(x, y)
    assert_same_params(a.params_, b.params_)  # a RandomState draws the same seed
    c = MLPClassifier(epochs=1, random_state=1).fit(x, y)
    assert not np.array_equal(a.params_[0].w, c.params_[0].w)


def test_in_a_pipeline_and_a_grid_search():
    x, y = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # iris is sorted by class
    x, y = x[order], y[order]
    pipe = make_pipeline(StandardScaler(), MLPClassifier(random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden": [(4,), (32,)],
                               "mlpclassifier__lr": [0.01, 0.1]}, cv=3)
    grid.fit(x[:120], y[:120])
    assert len(grid.cv_results_["params"]) == 4
    assert grid.best_params_["mlpclassifier__lr"] in (0.01, 0.1)
    assert grid.best_score_ > 0.85
    assert grid.score(x[120:], y[120:]) > 0.85  # held out
    best = grid.best_estimator_[-1]
    assert best.get_params()["hidden"] == grid.best_params_["mlpclassifier__hidden"]
    assert clone(best).get_params() == best.get_params()
    assert np.bincount(grid.predict(x), minlength=3).min() > 30  # every class predicted


# ---------------------------------------------------------------------------------------
# MLPRegressor


def test_regressor_fits_a_smooth_function_and_keeps_y_shape():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (400, 3))
    y = np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    reg = MLPRegressor(random_state=0).fit(x, y)
    assert reg.predict(x).shape == (400,)
    assert reg.score(x, y) > 0.8
    y2 = np.stack([y, -1000 * y + 50], axis=1)  # another scale: targets are standardized
    reg2 = MLPRegressor(random_state=0).fit(x, y2)
    assert reg2.predict(x).shape == (400, 2)
    assert reg2.score(x, y2) > 0.8


def test_regressor_trains_the_bits_fnn_fit_trains():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 0.0])
    reg = MLPRegressor(hidden=8, epochs=3, lr=0.01, optimizer="sgd", activation="tanh", random_state=2).fit(x, y)
    assert reg.get_params()["activation"] == "tanh"
    config = fnn.TrainConfig(sizes=(4, 8, 1), epochs=3, batch_size=32, lr=0.01, seed=2,
                             loss="mse", activation="tanh")
    config = config._replace(val_fraction=0.0)  # the estimator trains on all it is given
    x32 = x.astype(np.float32)
    # The estimator trains on standardized targets and maps its predictions back.
    mean, std = y.mean(), y.std()
    t = ((y - mean) / std).astype(np.float32).reshape(-1, 1)
    state = fnn.fit(None, (x32, t), config)
    assert_same_params(reg.params_, state.params)
    out = fnn.forward(state.params, x32, activation="tanh").ravel()
    np.testing.assert_array_equal(reg.predict(x), out.astype(np.float64) * std + mean)


def test_regressor_in_a_pipeline_and_partial_fit():
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 5.0, (300, 2))
    y = 0.3 * x[:, 0] - 0.1 * x[:, 1]
    pipe = make_pipeline(StandardScaler(), MLPRegressor(random_state=0)).fit(x, y)
    assert pipe.score(x, y) > 0.9
    xs = StandardScaler().fit_transform(x)  # unscaled x at lr 0.1 diverges
    with pytest.raises(ValueError, match="y: expected the first call's number of outputs, 1, got 2"):
        MLPRegressor(epochs=1).partial_fit(xs, y).partial_fit(xs, np.c_[y, y])
    whole = MLPRegressor(epochs=3, random_state=4).fit(xs, y)
    parts = MLPRegressor(epochs=3, random_state=4)
    for _ in range(3):
        parts.partial_fit(xs, y)
    assert_same_params(parts.params_, whole.params_)
