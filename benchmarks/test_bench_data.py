"""Benchmark: loading full MNIST (both splits) from the repository copy, cold and warm.

Run with `pytest benchmarks --benchmark-only`. "Cold" = an empty array cache (a fresh
cache folder each round): parquet read through `datasets`, every PNG decoded by Pillow,
the `.npy` entries written; it is what the first load on a machine costs. "Warm" = the
decoded images are in the array cache (the fixture's first call fills it); what is timed
is a call as a training script or notebook makes it: cache lookup plus scaling 70,000 x
784 pixels to float32.
"""

import itertools

import pytest

from fnn import arraycache
from fnn.data import load_mnist

pytest.importorskip("datasets")
pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-cache")
    load_mnist(cache_dir=path)  # cold: through datasets, fills both caches
    return path


def test_load_mnist_cold(benchmark, tmp_path):
    fresh = (tmp_path / f"cold-{i}" for i in itertools.count())

    def setup():
        arraycache.clear_memory()
        return (), {"cache_dir": next(fresh)}

    benchmark.group = "data"
    benchmark.pedantic(load_mnist, setup=setup, rounds=3, iterations=1)


def test_load_mnist_warm(benchmark, cache_dir):
    benchmark.group = "data"
    benchmark(load_mnist, cache_dir=cache_dir)


def test_load_mnist_warm_from_disk(benchmark, cache_dir):
    # As in a new process: the in-process cache emptied before each round.
    benchmark.group = "data"
    benchmark.pedantic(
        load_mnist,
        kwargs={"cache_dir": cache_dir},
        setup=arraycache.clear_memory,
        rounds=5,
        iterations=1,
    )
