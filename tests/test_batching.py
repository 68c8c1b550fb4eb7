"""fnn.batching: seeded epoch orders and mini-batches.

Truth: index coverage counted directly, the global NumPy state compared before and after,
and a digest of the batches recorded from fnn.data.batch_indices before batching moved to
its own module (so every seed still gives the batches it gave then).
"""

import hashlib

import numpy as np
import pytest

import fnn
from fnn.batching import MAX_EXAMPLES, batch_indices, iterate_batches

# sha256 of `recorded_cases()` below, computed with the code of commit 4274175
# (fnn/data.py's batch_indices) before the move.
RECORDED_DIGEST = "1e7cfbd449ef209de24c692d2e3564b0953efae01577202c5c2c78d26feb492e"


def recorded_cases() -> str:
    h = hashlib.sha256()
    cases = []
    for n, bs in [(0, 4), (1, 1), (10, 3), (100, 32), (1000, 64), (60000, 128), (55000, 4096)]:
        for rng in [0, 7, (7, 0), (7, 3), [1, 2, 3], 2**63, np.random.default_rng(5)]:
            for drop_last in (False, True):
                cases.append((n, bs, rng, drop_last))
    for n, bs, rng, drop in cases:
        for b in batch_indices(n, bs, rng, drop_last=drop):
            h.update(str(b.dtype).encode())
            h.update(np.ascontiguousarray(b).tobytes())
            h.update(b"|")
        h.update(b"#")
    g = np.random.default_rng(2026)
    for _ in range(3):  # an advancing Generator, as fit uses it
        for b in batch_indices(1000, 100, g):
            h.update(b.tobytes())
    for b in batch_indices(17, 5, None, shuffle=False):
        h.update(b.tobytes())
    return h.hexdigest()


def test_epoch_orders_are_bit_identical_to_the_recorded_ones():
    assert recorded_cases() == RECORDED_DIGEST


def test_digest_catches_a_changed_order(monkeypatch):
    # The digest is sensitive: a planted change (one seed's order reversed) is caught.
    import fnn.batching as fb

    real = fb._generator

    class Reversed:
        def __init__(self, g):
            self.g = g

        def permutation(self, n):
            return self.g.permutation(n)[::-1]

    monkeypatch.setattr(fb, "_generator", lambda rng: Reversed(real(rng)) if rng == 7 else real(rng))
    assert recorded_cases() != RECORDED_DIGEST


def test_public_names():
    assert fnn.batch_indices is batch_indices
    assert "batch_indices" in fnn.__all__



@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (12, 4), (5, 8), (1, 1), (0, 4)])
def test_batches_cover_every_index_once(n, batch_size):
    batches = batch_indices(n, batch_size, np.random.default_rng(0))
    assert all(b.dtype == np.int64 for b in batches)
    assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert len(batches) == -(-n // batch_size)
    assert sorted(np.concatenate(batches or [np.empty(0, np.int64)]).tolist()) == list(range(n))


def test_last_batch_kept_or_dropped():
    kept = batch_indices(10, 4, 0)
    assert [len(b) for b in kept] == [4, 4, 2]
    dropped = batch_indices(10, 4, 0, drop_last=True)
    assert [len(b) for b in dropped] == [4, 4]
    np.testing.assert_array_equal(np.concatenate(dropped), np.concatenate(kept)[:8])
    assert batch_indices(3, 4, 0, drop_last=True) == []


def test_shuffling_is_seeded_and_differs_between_epochs():
    rng = np.random.default_rng(42)
    epoch1 = np.concatenate(batch_indices(100, 32, rng))
    epoch2 = np.concatenate(batch_indices(100, 32, rng))
    assert not np.array_equal(epoch1, epoch2)  # the Generator advanced
    rng = np.random.default_rng(42)
    np.testing.assert_array_equal(np.concatenate(batch_indices(100, 32, rng)), epoch1)
    np.testing.assert_array_equal(np.concatenate(batch_indices(100, 32, rng)), epoch2)
    # A seed, or (seed, epoch), is a pure function of its value.
    a = np.concatenate(batch_indices(100, 32, (7, 0)))
    np.testing.assert_array_equal(np.concatenate(batch_indices(100, 32, (7, 0))), a)
    assert not np.array_equal(np.concatenate(batch_indices(100, 32, (7, 1))), a)
    np.testing.assert_array_equal(
        np.concatenate(batch_indices(100, 32, 3)), np.concatenate(batch_indices(100, 32, 3))
    )
    assert not np.array_equal(a, np.arange(100))


def test_batches_leave_global_random_state_alone():
    # The legacy global state is what must stay untouched, hence the legacy calls.
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    batch_indices(50, 8, 1)
    batch_indices(50, 8, np.random.default_rng(1))
    list(iterate_batches(np.zeros((5, 2)), np.zeros(5), 2, (1, 2)))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_unshuffled_batches_are_in_order():
    batches = batch_indices(7, 3, None, shuffle=False)
    assert [b.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]


def test_iterate_batches_pairs_rows():
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.arange(10)
    seen = []
    for xb, yb in iterate_batches(x, y, 4, 0):
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(10))
    assert [len(yb) for _, yb in iterate_batches(x, y, 4, 0, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="same first dimension"):
        list(iterate_batches(x, y[:9], 4, 0))


@pytest.mark.parametrize(
    ("n", "batch_size", "rng", "error", "message"),
    [
        (10, 0, 0, ValueError, "batch_size: expected an int >= 1, got 0"),
        (10, -2, 0, ValueError, "batch_size: expected an int >= 1, got -2"),
        (10, 2.5, 0, TypeError, "batch_size: expected an int, got float"),
        (10, True, 0, TypeError, "batch_size"),
        (10, "4", 0, TypeError, "batch_size"),
        (-1, 4, 0, ValueError, "n: expected an int >= 0, got -1"),
        (10.0, 4, 0, TypeError, "n: expected an int, got float"),
        (10, 4, None, ValueError, "rng is None but shuffle=True"),
        (10, 4, 1.5, TypeError, "rng: expected a np.random.Generator, .*got float 1.5"),
        (10, 4, -3, ValueError, "rng: expected .*, got -3"),
        (10, 4, [1, -2], ValueError, r"rng: expected .*, got \[1, -2\]"),
        (10, 4, np.random.RandomState(0), TypeError, "rng: expected .*RandomState"),
        # NumPy itself would take these: a bool as the seed 0/1, a nested list flattened.
        (6, 3, True, TypeError, "rng: expected .*, got bool True"),
        (6, 3, False, TypeError, "rng: expected .*, got bool False"),
        (6, 3, np.True_, TypeError, "rng: expected .*, got bool"),
        (6, 3, [[1]], TypeError, r"rng: expected .*flat sequence.*, got list \[\[1\]\]"),
        (6, 3, [True, 2], TypeError, "rng: expected"),
        (6, 3, (1, 2.0), TypeError, "rng: expected"),
        (6, 3, np.array([[1]]), TypeError, "rng: expected"),
        (6, 3, np.array([1.0]), TypeError, "rng: expected"),
        (6, 3, "3", TypeError, "rng: expected .*, got str '3'"),
        # Beyond the bound: refused before anything is allocated (was a MemoryError).
        (10**13, 8, 0, ValueError, r"n: expected an int <= 268435456 .*, got 10000000000000"),
        (MAX_EXAMPLES + 1, 8, 0, ValueError, "n: expected an int <= "),
        (2**64, 8, None, ValueError, "n: expected an int <= "),
    ],
)
def test_batch_argument_errors(n, batch_size, rng, error, message):
    with pytest.raises(error, match=message):
        batch_indices(n, batch_size, rng)


def test_size_bound_holds_without_shuffle_and_for_iterate_batches():
    with pytest.raises(ValueError, match="n: expected an int <= "):
        batch_indices(MAX_EXAMPLES + 1, 1, None, shuffle=False)
    with pytest.raises(TypeError, match="rng: expected"):
        list(iterate_batches(np.zeros((6, 2)), np.zeros(6), 3, True))


def test_numpy_integers_are_accepted():
    batches = batch_indices(np.int64(10), np.int32(5), np.random.default_rng(0))
    assert [len(b) for b in batches] == [5, 5]


@pytest.mark.parametrize(
    "seed",
    [3, np.int64(3), np.uint8(3), (3, 1), [3, 1], np.array([3, 1]), (), 2**100],
    ids=["int", "int64", "uint8", "tuple", "list", "array", "empty", "big"],
)
def test_every_documented_seed_form_is_numpys_default_rng(seed):
    # Accepted seeds give exactly default_rng's permutation (the checks change no order).
    expected = np.random.default_rng(seed).permutation(20)
    np.testing.assert_array_equal(np.concatenate(batch_indices(20, 6, seed)), expected)
    ss = np.random.SeedSequence(seed if not isinstance(seed, tuple) else list(seed))
    np.testing.assert_array_equal(
        np.concatenate(batch_indices(20, 6, ss)), np.random.default_rng(ss).permutation(20)
    )

