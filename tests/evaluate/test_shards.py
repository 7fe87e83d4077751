"""The split of an evaluation into shards and the merge back (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glamhpc.evaluate.episodes import Episode, stream_quotas
from glamhpc.evaluate.shards import episode_index, merge_shards, shard_episodes, shard_streams


def _plan() -> st.SearchStrategy[tuple[int, int, int]]:
    """(episodes, streams, shards) with 1 <= shards <= streams."""
    return st.integers(1, 40).flatmap(
        lambda streams: st.tuples(st.integers(0, 300), st.just(streams), st.integers(1, streams))
    )


def _episodes_of(streams_range: range, episodes: int, num_streams: int) -> list[Episode]:
    quotas = stream_quotas(episodes, num_streams)
    return [
        Episode(g, k, (g + k) % 3 == 0, float(g), k + 1, "goto")
        for g in streams_range
        for k in range(quotas[g])
    ]


@given(_plan())
def test_shards_partition_streams_and_episodes(plan: tuple[int, int, int]) -> None:
    episodes, streams, shards = plan
    blocks = [shard_streams(streams, shards, s) for s in range(shards)]
    assert [g for b in blocks for g in b] == list(range(streams))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    parts = [shard_episodes(episodes, streams, shards, s) for s in range(shards)]
    assert sorted(i for p in parts for i in p) == list(range(episodes))
    assert sum(stream_quotas(episodes, streams)) == episodes


@given(_plan())
def test_merged_shards_equal_the_unsharded_episodes(plan: tuple[int, int, int]) -> None:
    episodes, streams, shards = plan
    whole = _episodes_of(range(streams), episodes, streams)
    parts = [
        _episodes_of(shard_streams(streams, shards, s), episodes, streams) for s in range(shards)
    ]
    merged = merge_shards(reversed(parts), episodes, streams)
    assert merged == merge_shards([whole], episodes, streams)
    assert [episode_index(e.stream, e.number, streams) for e in merged] == list(range(episodes))
    # Each shard plays exactly the episode indices the split assigns to it.
    for s, part in enumerate(parts):
        got = sorted(episode_index(e.stream, e.number, streams) for e in part)
        assert got == shard_episodes(episodes, streams, shards, s)


def test_merge_rejects_missing_duplicate_and_foreign_episodes() -> None:
    whole = _episodes_of(range(4), 10, 4)
    with pytest.raises(ValueError, match="missing"):
        merge_shards([whole[:-1]], 10, 4)
    with pytest.raises(ValueError, match="twice"):
        merge_shards([whole, whole[:1]], 10, 4)
    with pytest.raises(ValueError, match="not part of a plan"):
        merge_shards([[*whole, Episode(0, 7, True, 1.0, 3, "goto")]], 10, 4)


def test_split_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least as many env streams"):
        shard_streams(2, 3, 0)
    with pytest.raises(ValueError, match=r"not in 0\.\.1"):
        shard_streams(4, 2, 2)
