"""Benchmark: a warm load of full MNIST (both splits) from the repository copy.

Run with `pytest benchmarks --benchmark-only`. "Warm" = the decoded images are in the
array cache (first call below fills it); what is timed is a call as a training script
or notebook makes it: cache lookup plus scaling 70,000 x 784 pixels to float32.
"""

import pytest

from fnn.data import load_mnist

pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-cache")
    load_mnist(cache_dir=path)  # cold: through datasets, fills both caches
    return path


def test_load_mnist_warm(benchmark, cache_dir):
    benchmark.group = "data"
    benchmark(load_mnist, cache_dir=cache_dir)


def test_load_mnist_warm_from_disk(benchmark, cache_dir):
    # As in a new process: the in-process cache emptied before each round.
    import fnn.data as fdata

    benchmark.group = "data"
    benchmark.pedantic(
        load_mnist,
        kwargs={"cache_dir": cache_dir},
        setup=fdata._memory.clear,
        rounds=5,
        iterations=1,
    )
