"""A property-based fuzz of every public function, on both backends (Hypothesis).

Generated shapes, dtypes, layouts (Fortran, strided, negative strides, read-only, nested
lists), NaN and inf, label and target values, params structures and hyper-parameters
go to forward, loss, backprop, predict, accuracy, per_example_grads, check_gradients,
sgd_step, sgd_epoch, momentum_epoch, init_params, batch_indices, the optimizers,
TrainConfig with fit, and save/load_checkpoint. Each call must either raise a
ValueError or TypeError whose message starts with the name of one of its arguments, or
return a correct result: a valid input in any layout gives the same bits as its
C-contiguous copy, and the backends agree. No other exception, and no input changes.

The default profile is small (a few tens of examples per property, derandomized, so
the run is quick and repeatable); FNN_FUZZ_PROFILE=large runs a larger, random one.
"""

from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fnn
from fnn import optim
from fnn.checkpoint import load_checkpoint, save_checkpoint
from fnn.train import TrainConfig, TrainingDiverged, fit

settings.register_profile(
    "fnn-fuzz", max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck))
settings.register_profile(
    "fnn-fuzz-large", max_examples=1000, deadline=None, database=None,
    suppress_health_check=list(HealthCheck))
FUZZ = settings.get_profile("fnn-fuzz-large" if os.environ.get("FNN_FUZZ_PROFILE") == "large"
                            else "fnn-fuzz")

pytestmark = [pytest.mark.filterwarnings("ignore::RuntimeWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")]

BACKENDS = ("numpy", "numba")
MODEL_ARGS = {"activation", "loss", "dropout", "key", "backend"}


# ---------------------------------------------------------------- the property
def _arrays(obj, out=None):
    """Every ndarray inside obj (tuples, lists, dicts, NamedTuples)."""
    out = [] if out is None else out
    if isinstance(obj, np.ndarray):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _arrays(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _arrays(o, out)
    return out


def _snapshot(obj):
    return [(a.tobytes(), a.shape, a.strides, a.dtype.str, a.flags.writeable)
            for a in _arrays(obj)]


def _contiguous(obj):
    """obj with every array (and nested list of numbers) a C-contiguous copy."""
    if isinstance(obj, np.ndarray):
        return np.array(obj, order="C")
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_contiguous(o) for o in obj))
    if isinstance(obj, tuple):
        return tuple(_contiguous(o) for o in obj)
    return obj


def call(fn, args, kwargs, names):
    """fn(*args, **kwargs) under the fuzz's rules: ("ok", result) or ("error", exc)."""
    before = _snapshot((args, kwargs))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(*args, **kwargs)
        outcome = ("ok", result)
    except (ValueError, TypeError) as exc:
        head = re.match(r"[A-Za-z_]\w*", str(exc))
        named = (head and head[0] in names) or any(
            "/" in n and str(exc).startswith(n) for n in names)  # a file, by its path
        assert named, f"{type(exc).__name__} names no argument: {exc}"
        outcome = ("error", exc)
    assert _snapshot((args, kwargs)) == before, "an input changed"
    return outcome


def same_bits(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_bits, a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


# ---------------------------------------------------------------- strategies
def _rows(x):
    """How many examples x holds, for drawing labels (2 for a ragged list, 1 for one)."""
    try:
        a = np.asarray(x)
    except ValueError:
        return 2
    return a.shape[0] if a.ndim == 2 else 1


DTYPES = (np.float32, np.float64)


@st.composite
def layout(draw, a, allow_list=True):
    """`a` (a C array) in a drawn layout holding the same values."""
    kinds = ["C", "F", "strided", "negative", "readonly"] + (["list"] if allow_list else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "strided" and a.ndim:
        return np.repeat(a, 2, axis=-1)[..., ::2]
    if kind == "negative" and a.ndim:
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "list":
        return a.tolist()
    return a


@st.composite
def networks(draw, min_out=2):
    sizes = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    sizes[-1] = max(sizes[-1], min_out)
    dtype = draw(st.sampled_from(DTYPES))
    return fnn.init_params(draw(st.integers(0, 2**32)), sizes, dtype=dtype)


@st.composite
def params_variants(draw, params):
    """Valid params in other layouts, or one corruption of them."""
    kind = draw(st.sampled_from(["valid"] * 6 + [
        "nan", "inf", "list", "float16", "int", "chain", "b_shape", "not_layer",
        "mixed_dtype", "empty", "3d", "matrix"]))
    layers = list(params)
    l = draw(st.integers(0, len(layers) - 1))
    w, b = layers[l]
    if kind == "valid":
        return tuple(fnn.Layer(draw(layout(p.w, False)), draw(layout(p.b, False)))
                     for p in layers)
    if kind in ("nan", "inf"):
        w = w.copy()
        w.flat[draw(st.integers(0, w.size - 1))] = np.nan if kind == "nan" else -np.inf
    elif kind == "list":
        return list(layers)
    elif kind == "float16":
        w = w.astype(np.float16)
    elif kind == "int":
        w, b = w.astype(np.int64), b.astype(np.int64)
    elif kind == "chain":
        w = np.zeros((w.shape[0] + 1, w.shape[1]), w.dtype)
    elif kind == "b_shape":
        b = np.zeros(b.shape[0] + 1, b.dtype)
    elif kind == "not_layer":
        layers[l] = (w, b)
        return tuple(layers)
    elif kind == "mixed_dtype":
        b = b.astype(np.float64 if b.dtype == np.float32 else np.float32)
    elif kind == "empty":
        return ()
    elif kind == "3d":
        w = w[None]
    elif kind == "matrix":
        w = np.matrix(w)
    layers[l] = fnn.Layer(w, b)
    return tuple(layers)


@st.composite
def inputs(draw, params):
    """x for params: usually valid (in any layout), sometimes wrong in one way."""
    d_in, dtype = params[0].w.shape[0], params[0].w.dtype
    n = draw(st.integers(1, 6))
    scale = draw(st.sampled_from([1.0, 1.0, 1e3, 1e30]))
    x = (np.random.default_rng(draw(st.integers(0, 99))).normal(size=(n, d_in)) * scale)
    x = x.astype(dtype)
    kind = draw(st.sampled_from(["valid"] * 6 + [
        "single", "nan", "inf", "features", "3d", "empty", "float16", "int", "complex",
        "object", "bool", "scalar", "ragged", "masked", "str"]))
    if kind == "valid":
        return draw(layout(x))
    if kind == "single":
        return draw(layout(x[0]))
    if kind in ("nan", "inf"):
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, d_in - 1))] = (
            np.nan if kind == "nan" else np.inf)
        return x
    return {
        "features": lambda: np.ones((n, d_in + 1), dtype),
        "3d": lambda: x[None],
        "empty": lambda: x[:0],
        "float16": lambda: x.astype(np.float16),
        "int": lambda: x.astype(np.int64),
        "complex": lambda: x.astype(np.complex128),
        "object": lambda: x.astype(object),
        "bool": lambda: x > 0,
        "scalar": lambda: 1.0,
        "ragged": lambda: [[1.0] * d_in, [1.0] * (d_in + 1)],
        "masked": lambda: np.ma.masked_array(x, mask=x > 0),
        "str": lambda: "x",
    }[kind]()


@st.composite
def labels(draw, n, k):
    """Integer labels for n examples of k classes: valid, or wrong in one way."""
    y = np.random.default_rng(draw(st.integers(0, 99))).integers(0, k, size=n)
    kind = draw(st.sampled_from(["valid"] * 5 + [
        "k", "negative", "1e12", "uint64", "float", "bool", "shape", "2d", "list",
        "object", "none"]))
    if kind == "valid":
        return draw(layout(y))
    if kind in ("k", "negative", "1e12"):
        if n:
            y[draw(st.integers(0, n - 1))] = {"k": k, "negative": -1, "1e12": 10**12}[kind]
        return y
    return {
        "uint64": lambda: np.full(n, 2**64 - 1, np.uint64),
        "float": lambda: y.astype(np.float64),
        "bool": lambda: y > 0,
        "shape": lambda: y[: max(n - 1, 0)] if n > 1 else np.zeros(2, int),
        "2d": lambda: y[:, None],
        "list": lambda: [*y.tolist(), 0],
        "object": lambda: y.astype(object),
        "none": lambda: None,
    }[kind]()


@st.composite
def targets(draw, n, k, loss):
    """Float targets (n, k) for mse and binary cross-entropy, valid or not."""
    t = np.random.default_rng(draw(st.integers(0, 99))).random((n, k))
    kind = draw(st.sampled_from(["valid"] * 5 + ["nan", "inf", "shape", "int", "above"]))
    if kind == "valid":
        return draw(layout(t))
    if kind in ("nan", "inf"):
        if n:
            t[0, 0] = np.nan if kind == "nan" else np.inf
        return t
    return {"shape": lambda: t[:, :1] if k > 1 else t[:, [0, 0]],
            "int": lambda: (t > 0.5).astype(int),
            "above": lambda: t + 1.5}[kind]()


def reals():
    """Hyper-parameter values: typical, boundary, huge, non-finite, wrong types."""
    return st.one_of(
        st.floats(-2, 2), st.sampled_from([0, 0.0, 1, 1.0, 0.5, 1e-8, 1e6, 10**400, 2**64,
                                           -(10**400), math.inf, -math.inf, math.nan]),
        st.sampled_from([None, "0.1", True, [0.1], np.float32(0.3), np.int64(2)]))


def ints():
    return st.one_of(st.integers(-2, 10), st.sampled_from(
        [2**31, 2**63 - 1, 2**63, 2**64, 10**30, 1.0, "3", None, True, np.int64(4),
         np.uint64(2**63)]))


# ---------------------------------------------------------------- compute functions
COMPUTE = {
    "forward": (fnn.forward, False), "loss": (fnn.loss, True), "backprop": (fnn.backprop, True),
    "predict": (fnn.predict, False), "accuracy": (fnn.accuracy, True),
    "per_example_grads": (fnn.per_example_grads, True),
}
MODELS = ("softmax_cross_entropy", "mse", "sigmoid_binary_cross_entropy")


@st.composite
def compute_calls(draw, with_y):
    params = draw(networks())
    p = draw(params_variants(params))
    x = draw(inputs(params))
    n = _rows(x)
    k = params[-1].w.shape[1]
    loss = draw(st.sampled_from((*MODELS, "hinge")))
    kwargs = {"backend": draw(st.sampled_from(BACKENDS)), "loss": loss,
              "activation": draw(st.sampled_from(["relu", "relu", "tanh", "gelu", "swish",
                                                  ("relu",) * (len(params) - 1)]))}
    if draw(st.booleans()):
        kwargs["dropout"] = draw(st.sampled_from([0.0, 0.3, 1.0, -0.1]))
        kwargs["key"] = draw(st.sampled_from([None, 3, (1, 2), "k", -1]))
    args = [p, x]
    if with_y:
        args.append(draw(targets(n, k, loss) if loss in MODELS[1:] else labels(n, k)))
        if isinstance(x, np.ndarray) and x.ndim == 1 and draw(st.booleans()) and loss == MODELS[0]:
            args[-1] = int(draw(st.integers(0, k)))  # a scalar label for one example
    return params, args, kwargs


@pytest.mark.parametrize("name", list(COMPUTE))
@FUZZ
@given(data=st.data())
def test_compute_functions(name, data):
    fn, with_y = COMPUTE[name]
    params, args, kwargs = data.draw(compute_calls(with_y))
    names = {"params", "x", "y"} | MODEL_ARGS
    kind, result = call(fn, args, kwargs, names)
    if kind != "ok":
        return
    # The same bits from C-contiguous copies (arrays, not lists: a list becomes float64).
    if all(not isinstance(a, list) for a in args):
        again = fn(*_contiguous(tuple(args)), **kwargs)
        assert same_bits(result, again), "a layout changed the result"
    # The other backend agrees, to rounding.
    other = dict(kwargs, backend="numba" if kwargs["backend"] == "numpy" else "numpy")
    kind2, result2 = call(fn, args, other, names)
    assert kind2 == "ok", result2
    tol = 1e-3 if params[0].w.dtype == np.float32 else 1e-9
    for a, b in zip(_arrays([result]) or [np.asarray(result)],
                    _arrays([result2]) or [np.asarray(result2)]):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        finite = np.isfinite(a) & np.isfinite(b)
        # Where values overflow (x ~ 1e30), IEEE results may differ in which entries are
        # inf or NaN between the backends (documented); elsewhere they agree.
        assert (np.isfinite(a) == np.isfinite(b)).all() or name in (
            "loss", "backprop", "per_example_grads")
        scale = np.abs(a[finite]).max() if finite.any() else 1.0
        assert np.allclose(a[finite], b[finite], rtol=tol, atol=tol * max(scale, 1.0))


@FUZZ
@given(data=st.data())
def test_check_gradients(data):
    params = data.draw(networks())
    params = tuple(fnn.Layer(p.w.astype(np.float64), p.b.astype(np.float64)) for p in params)
    p = data.draw(params_variants(params))
    x = data.draw(inputs(params))
    n = _rows(x)
    y = data.draw(labels(n, params[-1].w.shape[1]))
    kwargs = {"backend": data.draw(st.sampled_from(BACKENDS)),
              "mode": data.draw(st.sampled_from(["full", "directional", "fast"])),
              "h": data.draw(st.sampled_from([None, None, 1e-6, 0.0, -1.0, "x"]))}
    names = {"params", "x", "y", "grad_fn", "mode", "h", "rtol", "atol", "seed"} | MODEL_ARGS
    kind, report = call(fnn.check_gradients, (p, x, y), kwargs, names)
    # fnn's own backprop passes its own full check on unsaturated inputs. Not asserted
    # (found by this fuzz, left to the gradient checker's owner): with |x| ~ 1e3 the
    # gradients underflow to ~1e-127, below what differences of h = 1e-6 resolve, and
    # "directional" fails a tensor whose true gradient is exactly 0 (its floor is
    # relative to that tensor's own rounding noise) or whose directions cross kinks.
    if kind == "ok" and kwargs["mode"] == "full" and np.abs(np.asarray(x, float)).max() < 10:
        assert report.ok, str(report)


# ---------------------------------------------------------------- updates and epochs
@FUZZ
@given(data=st.data())
def test_sgd_step(data):
    params = data.draw(networks())
    grads = fnn.backprop(params, np.ones((2, params[0].w.shape[0]), params[0].w.dtype),
                         [0, 1])[1]
    g = data.draw(params_variants(grads))
    lr = data.draw(reals())
    kind, new = call(fnn.sgd_step, (params, g, lr), {}, {"params", "grads", "lr"})
    if kind == "ok":
        for p, q, gg in zip(params, new, g):
            assert np.array_equal(q.w, p.w - float(lr) * gg.w, equal_nan=True)


@pytest.mark.parametrize("momentum", [False, True])
@FUZZ
@given(data=st.data())
def test_epochs(momentum, data):
    # One argument wrong at a time (or none), so that valid epochs run often too.
    bad = data.draw(st.sampled_from(["none"] * 5 + ["params", "x", "y", "order", "bs", "lr",
                                                    "mu"]))
    params = data.draw(networks())
    p = data.draw(params_variants(params)) if bad == "params" else params
    n = data.draw(st.integers(1, 9))
    x = np.random.default_rng(n).normal(size=(n, params[0].w.shape[0])).astype(
        params[0].w.dtype)
    x = data.draw(inputs(params)) if bad == "x" else data.draw(layout(x, False))
    n = _rows(x)
    y = data.draw(labels(n, params[-1].w.shape[1])) if bad in ("y", "x") else \
        np.arange(n) % params[-1].w.shape[1]
    order = data.draw(st.permutations(list(range(n))).map(np.array)) if bad != "order" else \
        data.draw(st.sampled_from([np.array([n]), np.array([-1]), np.zeros(0, int),
                                   np.zeros((1, 1), int), np.array([0.0]), [0, 0, 0], None]))
    bs = data.draw(ints() if bad == "bs" else st.integers(1, 10))
    lr = data.draw(st.one_of(reals(), st.just(np.full(3, 0.1)))) if bad == "lr" else 0.05
    names = {"params", "velocity", "x", "y", "order", "batch_size", "lr", "momentum"} | MODEL_ARGS
    if momentum:
        mu = data.draw(reals()) if bad == "mu" else 0.9
        args = (p, None, x, y, order, bs, lr, mu)
        kind, out = call(fnn.momentum_epoch, args, {}, names)
    else:
        args = (p, x, y, order, bs, lr)
        kind, out = call(fnn.sgd_epoch, args, {}, names)
    if kind == "ok" and not any(isinstance(a, list) for a in args):
        again = (fnn.momentum_epoch if momentum else fnn.sgd_epoch)(*_contiguous(args))
        assert same_bits(out, again), "a layout changed the result"
        if not momentum and bad == "none":  # the epoch is backprop + sgd_step, step by step
            step = params
            for i in range(0, len(order), bs):
                idx = order[i:i + bs]
                g = fnn.backprop(step, np.ascontiguousarray(x)[idx], y[idx], backend="numba")[1]
                step = fnn.sgd_step(step, g, lr)
            assert same_bits(out[0], step)


# ---------------------------------------------------------------- constructors
@FUZZ
@given(seed=st.one_of(ints(), st.just(np.random.default_rng(0))),
       sizes=st.one_of(st.lists(ints(), max_size=4), st.sampled_from(
           ["784,10", (3, 2), [[3], [2]], None, [3.0, 2], [10**7, 10**7], [2**62, 2]])),
       dtype=st.sampled_from([np.float32, "float64", "f4", None, "foo", int, np.float16,
                              "f4,", object]))
def test_init_params(seed, sizes, dtype):
    kind, p = call(fnn.init_params, (seed, sizes), {"dtype": dtype}, {"seed", "sizes", "dtype"})
    if kind == "ok":
        assert [q.w.shape for q in p] == list(zip(sizes[:-1], sizes[1:]))
        assert not any(q.w.flags.writeable or q.b.flags.writeable for q in p)


@FUZZ
@given(n=st.one_of(st.integers(-2, 50), st.sampled_from(  # a valid 2**31 would take 16 GiB
           [2**31 + 1, 2**63, 10**30, 1.0, "3", None, True, np.int64(7)])),
       bs=ints(), rng=st.sampled_from(
           [0, 7, (1, 2), None, True, [[1]], -3, 1.5, "s", np.random.SeedSequence(4), 2**70]),
       shuffle=st.sampled_from([True, False, 1, None]),
       drop_last=st.sampled_from([True, False, 0, "no"]))
def test_batch_indices(n, bs, rng, shuffle, drop_last):
    kind, batches = call(fnn.batch_indices, (n, bs, rng),
                         {"shuffle": shuffle, "drop_last": drop_last},
                         {"n", "batch_size", "rng", "shuffle", "drop_last"})
    if kind == "ok":
        flat = np.concatenate(batches) if batches else np.zeros(0, int)
        assert len(set(flat.tolist())) == flat.size and flat.size <= n
        assert all(len(b) == bs for b in batches[:-1])


@FUZZ
@given(data=st.data())
def test_optimizers(data):
    which = data.draw(st.sampled_from(["sgd", "adam"]))
    valid = {"lr": st.sampled_from([0.1, 1e-3, lambda s: 0.1 / (s + 1)]),
             "momentum": st.floats(0, 0.99), "nesterov": st.booleans(),
             "weight_decay": st.sampled_from([0.0, 1e-4]), "b1": st.floats(0, 0.99),
             "b2": st.floats(0, 0.999), "eps": st.sampled_from([1e-8, 1e-3])}
    fields = ["lr", "momentum", "nesterov", "weight_decay"] if which == "sgd" else \
        ["lr", "b1", "b2", "eps", "weight_decay"]
    bad = data.draw(st.sampled_from(["none"] * 3 + fields))  # one wrong at a time
    wrong = {"lr": st.one_of(reals(), st.sampled_from(
        [lambda s: "0.1", lambda s: math.nan, lambda s: 1 / (s - 1)])),
        "nesterov": st.sampled_from([1, None, "yes"])}
    values = {f: data.draw(wrong.get(f, reals()) if f == bad else valid[f]) for f in fields}
    if which == "sgd" and values["nesterov"] is True and values["momentum"] == 0:
        values["momentum"] = 0.5
    lr, kwargs = values.pop("lr"), values
    names = set(fields)
    kind, opt = call(getattr(optim, which), (lr,), kwargs, names | {"nesterov"})
    if kind != "ok":
        return
    params = data.draw(networks())
    # A real that the params' dtype cannot hold (eps 1e-187 in float32) is refused here.
    kind, state = call(opt.init, (params,), {}, names)
    if kind != "ok":
        assert "(the params' dtype) holds" in str(state), state
        return
    grads = data.draw(params_variants(fnn.backprop(
        params, np.ones((2, params[0].w.shape[0]), params[0].w.dtype), [0, 1])[1]))
    bad_state = data.draw(st.sampled_from(["none", "count", "type", "swap"]))
    if bad_state == "count":
        state = state._replace(count=-1)
    elif bad_state == "type":
        state = (0,)
    elif bad_state == "swap" and len(params) > 1 and state[1]:
        state = state._replace(**{state._fields[1]: tuple(reversed(state[1]))})
    kind, out = call(opt.update, (grads, state, params), {},
                     {"grads", "state", "params", "lr"})
    if kind == "ok":
        again = opt.update_unchecked(grads, state, params)
        assert same_bits(out, again)


# ---------------------------------------------------------------- training and checkpoints
CONFIG_FIELDS = {
    "epochs": ints(), "batch_size": ints(), "lr": reals(), "momentum": reals(),
    "optimizer": st.sampled_from(["sgd", "momentum", "nesterov", "adam", "rmsprop", 3]),
    "schedule": st.sampled_from(["constant", "step", "exp", "cosine", "poly", None]),
    "decay_rate": reals(), "decay_epochs": reals(), "warmup_steps": ints(),
    "weight_decay": reals(), "seed": ints(),
    "backend": st.sampled_from(["numpy", "numba", None, "cuda"]),
    "dtype": st.sampled_from(["float32", "float64", None, "int8", np.float32]),
    "eval_every": ints(), "drop_last": st.sampled_from([False, True, 0, "yes"]),
    "activation": st.sampled_from(["relu", "tanh", "swish", ("relu",), ("relu", "tanh"), 3]),
    "loss": st.sampled_from(["softmax_cross_entropy", "mse", "hinge"]),
    "dropout": st.sampled_from([0.0, 0.2, 1.0, (0.1,), (0.1, 0.2, 0.3, 0.4), "x"]),
}
FIT_NAMES = {"config", "data", "params", "resume", "callbacks"}


@FUZZ
@given(data=st.data())
def test_fit_and_checkpoints(data, tmp_path_factory):
    changed = {f: data.draw(s) for f, s in CONFIG_FIELDS.items() if data.draw(
        st.integers(0, 5)) == 0}
    base = {"sizes": (4, 3, 3), "epochs": 2, "batch_size": 4, "lr": 0.1, "backend": "numpy"}
    config = TrainConfig(**{**base, **changed})
    if isinstance(config.epochs, int) and config.epochs > 3:
        config = config._replace(epochs=3)  # keep each example quick
    dtype = np.float64 if config.dtype in ("float64",) else np.float32
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(dtype)
    y = (rng.random((10, 3)) if config.loss == "mse" else rng.integers(0, 3, 10))
    y = data.draw(st.one_of(st.just(y), labels(10, 3)))
    x = data.draw(layout(x, False))
    try:
        kind, state = call(fit, (None, (x, y), config), {}, FIT_NAMES)
    except TrainingDiverged:
        return  # a documented outcome of a large lr
    if kind != "ok":
        return
    again = fit(None, (np.ascontiguousarray(x), np.ascontiguousarray(y)), config)
    assert same_bits(state.params, again.params) and same_bits(state.history.loss,
                                                               again.history.loss)
    extra = data.draw(st.sampled_from([None, {"a": 1}, {"a": [1, "b"]}, [1], {"x": math.nan},
                                       {1: 2}, {"s": object()}]))
    path = tmp_path_factory.mktemp("fuzz") / "c.npz"
    kind, _ = call(save_checkpoint, (path, state), {"extra": extra}, {"extra", "state"})
    if kind == "ok":
        loaded = load_checkpoint(path, sizes=config.sizes)
        assert same_bits(loaded.params, state.params)
        assert same_bits(tuple(loaded.history), tuple(state.history))
        assert (loaded.step, loaded.epoch, loaded.batch) == (state.step, state.epoch,
                                                               state.batch)
    else:
        assert not path.exists()
    kind, _ = call(load_checkpoint, (path,), {"sizes": data.draw(st.sampled_from(
        [None, (4, 3, 3), (4, 3), "4,3", [4.0, 3, 3]])), "dtype": data.draw(st.sampled_from(
            [None, "float32", "float64", "foo", None]))}, {"sizes", "dtype", str(path)})
