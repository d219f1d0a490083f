"""The weighted sums every resampled statistic reads, against the plain loop over entries."""

import numpy as np
import pytest

from medprobe.probe.stats.weighted_sums import WeightedSums


def _plain(entries: list[tuple[int, int, float]], counts: np.ndarray, n_slots: int) -> np.ndarray:
    """table[s, b] = sum over the entries (image i, slot s, value v) of counts[b, i] * v."""
    table = np.zeros((n_slots, len(counts)))
    for image, slot, value in entries:
        for b in range(len(counts)):
            table[slot, b] += counts[b, image] * value
    return table


@pytest.mark.parametrize("integer_values", [True, False])
def test_dense_and_sparse_blocks_sum_as_the_plain_loop(integer_values):
    """A dense block (every image in one of three bins), a sparse one (tie groups of two or three
    images among 40 slots, one slot fed twice by the same image), a single total, and a block
    whose slots no image feeds: integer values sum exactly, any others to rounding."""
    rng = np.random.default_rng(2)
    n_images = 60
    counts = rng.poisson(1.0, (7, n_images)).astype(np.int32)
    sums, entries = WeightedSums(n_images), []

    def reserve(images, values, slots, n_slots):
        if not integer_values:
            values = values + rng.random(len(images))
        start = sums.add(images, values, slots, n_slots)
        entries.extend(zip(images, start + slots, values, strict=True))

    images = np.arange(n_images)
    reserve(images, rng.integers(0, 4, n_images).astype(float), rng.integers(0, 3, n_images), 3)
    few = rng.choice(n_images, 30, replace=False)
    twice = np.concatenate([few, few[:1]])
    reserve(twice, np.ones(31), np.concatenate([np.arange(30) // 2, [0]]), 40)
    reserve(images, np.ones(n_images), np.zeros(n_images, dtype=int), 1)
    reserve(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0, dtype=int), 5)
    table = sums.compute(counts)
    expected = _plain(entries, counts, sums.n_slots)
    assert table.shape == (3 + 40 + 1 + 5, 7)
    if integer_values:
        np.testing.assert_array_equal(table, expected)
    else:
        np.testing.assert_allclose(table, expected, rtol=1e-13)
    np.testing.assert_array_equal(table[-5:], 0.0)


def test_counts_of_the_wrong_width_are_refused():
    sums = WeightedSums(4)
    sums.add(np.arange(4))
    with pytest.raises(ValueError, match=r"expected \(B, 4\)"):
        sums.compute(np.ones((2, 3), dtype=np.int32))
