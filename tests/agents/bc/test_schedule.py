"""The pure pieces of behaviour cloning: which pairs each step trains on, and its learning rate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from glamhpc.agents.bc.schedule import (
    batches_per_epoch,
    epoch_order,
    lr_at,
    rank_share,
    step_batch,
    total_steps,
)


@pytest.mark.parametrize(("pairs", "batch", "expected"), [(10, 3, 4), (9, 3, 3), (1, 5, 1)])
def test_batches_per_epoch_keeps_the_short_last_batch(pairs, batch, expected):
    assert batches_per_epoch(pairs, batch) == expected


@pytest.mark.parametrize(("pairs", "batch"), [(0, 3), (3, 0)])
def test_batches_per_epoch_refuses_empty(pairs, batch):
    with pytest.raises(ValueError):
        batches_per_epoch(pairs, batch)


def test_total_steps_counts_epochs_and_stops_at_max_steps():
    assert total_steps(10, 3, 2) == 8
    assert total_steps(10, 3, 2, max_steps=5) == 5
    assert total_steps(10, 3, 2, max_steps=100) == 8


def test_each_epoch_visits_every_pair_once_in_its_own_keyed_order():
    pairs, batch = 11, 4
    for epoch in range(3):
        steps = range(epoch * 3, epoch * 3 + 3)
        seen = np.concatenate([step_batch(7, s, pairs, batch) for s in steps])
        assert sorted(seen.tolist()) == list(range(pairs))
        assert np.array_equal(seen, epoch_order(7, epoch, pairs))
    assert not np.array_equal(epoch_order(7, 0, pairs), epoch_order(7, 1, pairs))
    assert not np.array_equal(epoch_order(7, 0, pairs), epoch_order(8, 0, pairs))
    assert np.array_equal(epoch_order(7, 2, pairs), epoch_order(7, 2, pairs))


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rank_shares_partition_the_global_batch(world):
    batch = np.array([9, 4, 7, 1, 3, 0, 8])
    shares = [rank_share(batch, r, world) for r in range(world)]
    assert sorted(np.concatenate(shares).tolist()) == sorted(batch.tolist())
    assert sum(len(s) for s in shares) == len(batch)


def test_rank_share_may_be_empty_and_refuses_a_bad_rank():
    assert len(rank_share(np.array([1, 2]), 3, 4)) == 0
    with pytest.raises(ValueError):
        rank_share(np.array([1]), 2, 2)


def test_lr_warms_up_linearly_then_decays_along_a_cosine_to_zero():
    peak = 1e-3
    assert lr_at(0, 100, 10, peak) == 0.0
    assert lr_at(5, 100, 10, peak) == pytest.approx(5e-4)
    assert lr_at(10, 100, 10, peak) == pytest.approx(peak)
    assert lr_at(55, 100, 10, peak) == pytest.approx(peak * 0.5)
    assert lr_at(100, 100, 10, peak) == pytest.approx(0.0, abs=1e-15)
    values = [lr_at(s, 100, 10, peak) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    # Without warm-up the first step runs at the peak.
    assert lr_at(0, 50, 0, peak) == peak
    assert lr_at(25, 50, 0, peak) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi / 2)))
