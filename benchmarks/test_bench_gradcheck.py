"""Gradient-check speed on the origin notebook's case (issue 3).

The notebook checks its 256-128-64-32-16-8-4 net (43,932 parameters, one float64
example) by two full forward passes per parameter: `fnn.reference.numerical_grad`.
Target: "full" mode at least 30x faster, with max norm ratio < 1e-8. The speed-up is
recorded in extra_info (see `--benchmark-json`) and printed with -s.

Run: pytest benchmarks/test_bench_gradcheck.py --benchmark-only
"""

from __future__ import annotations

import time

import pytest

import fnn
from fnn.gradcheck import check_gradients, notebook_problem

pytestmark = pytest.mark.benchmark(group="gradcheck")


@pytest.fixture(scope="module")
def notebook():
    return notebook_problem(seed=0)


@pytest.fixture(scope="module")
def loop_seconds(notebook):
    """One run of the notebook's loop, for the speed-up (the loop's own benchmark is below)."""
    start = time.perf_counter()
    fnn.reference.numerical_grad(*notebook)
    return time.perf_counter() - start


def _max_norm_ratio(report):
    return max(t.mean.norm_ratio for t in report.tensors)


def test_notebook_loop(benchmark, notebook):
    grads = benchmark.pedantic(fnn.reference.numerical_grad, args=notebook, rounds=2, iterations=1)
    assert len(grads) == 6


def test_full_notebook_case(benchmark, notebook, loop_seconds):
    check_gradients(*notebook)  # load the jitted kernels outside the timing
    report = benchmark(check_gradients, *notebook, mode="full")
    assert report.ok and _max_norm_ratio(report) < 1e-8
    if benchmark.stats is not None:  # None under --benchmark-disable
        speedup = loop_seconds / benchmark.stats.stats.min
        benchmark.extra_info.update(max_norm_ratio=_max_norm_ratio(report), speedup=speedup,
                                    passes=report.passes)
        print(f"\nfull: {speedup:.0f}x faster than the notebook's loop "
              f"({loop_seconds:.2f} s), max norm ratio {_max_norm_ratio(report):.2e}")
        assert speedup >= 30


@pytest.mark.parametrize("mode", ["directional", "complex-step"])
def test_other_modes_notebook_case(benchmark, notebook, mode):
    check_gradients(*notebook, mode=mode)
    report = benchmark.pedantic(check_gradients, args=notebook, kwargs={"mode": mode},
                                rounds=5, iterations=1)
    assert report.ok and _max_norm_ratio(report) < 1e-8


def test_full_per_example_batch_16(benchmark):
    problem = notebook_problem(seed=0, batch=16)
    report = benchmark.pedantic(check_gradients, args=problem, kwargs={"per_example": True},
                                rounds=3, iterations=1, warmup_rounds=1)
    assert report.ok and report.batch == 16
    assert max(t.per_example.norm_ratio for t in report.tensors) < 1e-8
