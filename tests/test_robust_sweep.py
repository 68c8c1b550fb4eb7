"""Bad input to `fnn.sweep`, `fnn sweep` and the scikit-learn estimators is refused up
front with a named ValueError/TypeError (the CLI: one line, exit 2), before any run
starts or any file is written; huge regression targets are scaled without overflow.

Tiny arrays (48 examples, 4 features) keep the sweeps that do run to a second or so."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest

import fnn
from fnn.cli import main
from fnn.sweep import parse_seeds, sweep

sweep_module = importlib.import_module("fnn.sweep")  # (fnn.sweep is also the function)
# (getattr: so that each test, not the import, fails where the limits are missing)
MAX_RUNS = getattr(sweep_module, "MAX_RUNS", 10_000)
MAX_JOBS = getattr(sweep_module, "MAX_JOBS", 1024)

RNG = np.random.default_rng(0)
X = RNG.random((48, 4), dtype=np.float32)
Y = RNG.integers(0, 2, 48)
DATA = (X, Y, X[:8], Y[:8])
BASE = fnn.TrainConfig(sizes=(4, 3, 2), epochs=1, batch_size=8)


def refused(tmp_path, exc, match, *, base=BASE, grid=None, seeds=(0,), **kwargs):
    """sweep(...) raises `exc` matching `match`, and writes nothing."""
    out = tmp_path / "out"
    kwargs = {"data": DATA, "jobs": 1, **kwargs}
    with pytest.raises(exc, match=match):
        sweep(base, grid or {"lr": [0.1]}, seeds, out=out, **kwargs)
    assert not out.exists()


def cli_refused(tmp_path, capsys, *argv):
    """`fnn sweep ...` exits 2 with one line on stderr and writes nothing."""
    out = tmp_path / "cli"
    code = main(["sweep", "--limit", "64", "--out", str(out), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("fnn: error: ") and err.count("\n") == 1, err
    assert not out.exists()
    return err


# ---------------------------------------------------------------- 1: number of seeds
def test_parse_seeds_bounds_the_count_and_each_seed():
    with pytest.raises(ValueError, match=r"^seeds: expected at most 10000 seeds"):
        parse_seeds("0-99999999999")
    with pytest.raises(ValueError, match=r"^seeds: expected at most"):
        parse_seeds("0-5000,10000-15000")
    with pytest.raises(ValueError, match=r"^seeds: expected an int <= 9223372036854775807"):
        parse_seeds("9223372036854775808")
    with pytest.raises(ValueError, match=r"^seeds: expected seeds such as"):
        parse_seeds("1" * 5000)
    assert parse_seeds(f"0-{MAX_RUNS - 1}") == tuple(range(MAX_RUNS))
    assert parse_seeds("9223372036854775807") == (2**63 - 1,)


def test_sweep_bounds_the_number_of_runs(tmp_path):
    refused(tmp_path, ValueError, r"^seeds: expected at most 10000", seeds=range(10**30))
    refused(tmp_path, ValueError, r"^seeds: expected at most 10000", seeds=range(MAX_RUNS + 1))
    many = {"lr": [0.1, 0.2], "batch_size": list(range(1, 5001))}
    refused(tmp_path, ValueError, r"^runs: expected at most 10000 .* got 20000", grid=many,
            seeds=(0, 1))
    huge = {f: [v] * 100 for f, v in (("lr", 0.1), ("epochs", 1), ("batch_size", 8),
                                      ("weight_decay", 0.0), ("warmup_steps", 0))}
    refused(tmp_path, ValueError, r"^grid: expected at most 10000 .* got 10000000000",
            grid=huge)


def test_cli_refuses_too_many_seeds(tmp_path, capsys):
    err = cli_refused(tmp_path, capsys, "--grid", "lr=0.1", "--seeds", "0-99999999999")
    assert "--seeds: expected at most" in err


# ---------------------------------------------------------------- 2: jobs
def test_sweep_bounds_jobs_before_writing(tmp_path):
    refused(tmp_path, ValueError, rf"^jobs: expected an int <= {MAX_JOBS} .*, got 2147483648",
            jobs=2**31)
    refused(tmp_path, ValueError, r"^jobs: expected an int <= .*, got an int of 100 bits",
            jobs=10**30)


def test_sweep_starts_at_most_one_worker_per_run(tmp_path, monkeypatch):
    sizes = []
    real = sweep_module._process_pool

    def recording(jobs, *args, **kwargs):
        sizes.append(jobs)
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "_process_pool", recording)
    result = sweep(BASE, {"lr": [0.1]}, [0], out=tmp_path / "out", data=DATA, jobs=8,
                   warm=False)
    assert [r.status for r in result.runs] == ["done"]
    assert sizes == [1]


# ---------------------------------------------------------------- 3: seeds, data, config
def test_sweep_refuses_bad_seeds_before_writing(tmp_path):
    refused(tmp_path, ValueError, r"^seeds\[1\]: expected an int <= 9223372036854775807",
            seeds=[0, 2**63])
    refused(tmp_path, ValueError, r"^seeds\[0\]: expected an int >= 0", seeds=[-1])


@pytest.mark.parametrize(("data", "exc", "match"), [
    ((X, Y.astype(float), X[:8], Y[:8]), TypeError, r"^data\.y_train: expected integer"),
    ((X, Y + 5, X[:8], Y[:8]), ValueError, r"^data\.y_train: expected labels in \[0, 1\]"),
    ((X * np.nan, Y, X[:8], Y[:8]), ValueError, r"^data\.x_train: expected finite values"),
    ((X, Y, X[:8], Y[:8] + 2), ValueError, r"^data\.y_test: expected labels in \[0, 1\]"),
    ((X, Y, X[:0], Y[:0]), ValueError, r"^data\.x_test: expected at least one example"),
    ((X, Y[:5], X[:8], Y[:8]), ValueError, r"^data\.y_train: expected shape \(48,\)"),
    ((X.astype(np.float64) * 1e39, Y, X[:8], Y[:8]), ValueError,
     r"^data\.x_train: expected finite values"),  # not once cast to the runs' float32
])
def test_sweep_refuses_bad_data_before_writing(tmp_path, data, exc, match):
    refused(tmp_path, exc, match, data=data)


def test_sweep_refuses_an_out_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"^out: expected a folder"):
        sweep(BASE, {"lr": [0.1]}, [0], out=tmp_path / "file", data=DATA, jobs=1)
    with pytest.raises(TypeError, match=r"^out: expected a folder path, got int"):
        sweep(BASE, {"lr": [0.1]}, [0], out=5, data=DATA, jobs=1)


def test_sweep_refuses_a_config_no_run_could_train(tmp_path):
    # 48 examples less the 4 held out leave 44: no batch of 1000 with drop_last.
    refused(tmp_path, ValueError, r"^grid\[lr=0\.1\]: config\.batch_size: expected at most "
            r"the 44 training examples", base=BASE._replace(drop_last=True, batch_size=1000))
    refused(tmp_path, ValueError, r"^grid\[batch_size=45\]: config\.batch_size",
            base=BASE._replace(drop_last=True), grid={"batch_size": [8, 45]})


def test_cli_refuses_bad_seed(tmp_path, capsys):
    err = cli_refused(tmp_path, capsys, "--grid", "lr=0.1", "--seeds", "9223372036854775808")
    assert "--seeds: expected an int <= 9223372036854775807" in err


def test_cli_refuses_too_many_jobs(tmp_path, capsys):
    err = cli_refused(tmp_path, capsys, "--grid", "lr=0.1", "--seeds", "0", "--jobs",
                      "2147483648")
    assert "jobs: expected an int <=" in err


# ---------------------------------------------------------------- 4: regression targets
@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce")  # sklearn's sum
def test_regressor_scales_huge_targets_without_overflow():
    from fnn.sklearn import MLPRegressor

    x = RNG.random((30, 4))
    y = RNG.random(30)
    small = MLPRegressor(hidden=3, epochs=1, random_state=0).fit(x, y).predict(x)
    huge = MLPRegressor(hidden=3, epochs=1, random_state=0).fit(x, y * 1e200).predict(x)
    assert np.isfinite(huge).all()
    np.testing.assert_allclose(huge / 1e200, small, rtol=1e-5)
    # Near float64's largest value, of both signs: the spread itself overflows naively.
    big = np.where(y > 0.5, 1.0, -1.0) * 1e308
    out = MLPRegressor(hidden=3, epochs=1, random_state=0).fit(x, big).predict(x)
    assert np.isfinite(out).all() and np.abs(out).max() > 1e300
    const = MLPRegressor(hidden=3, epochs=1, random_state=0).fit(x, np.full(30, 1e308))
    np.testing.assert_allclose(const.predict(x), 1e308, rtol=1e-3)


def test_regressor_refuses_targets_out_of_the_networks_range():
    from fnn.sklearn import MLPRegressor

    x = RNG.random((30, 4))
    y = RNG.random(30)
    model = MLPRegressor(hidden=3, epochs=1, random_state=0).partial_fit(x, y)
    with pytest.raises(ValueError, match=r"^y: expected targets .*float32.*got "):
        model.partial_fit(x, y * 1e45)
    assert math.isfinite(model.loss_curve_[-1])
