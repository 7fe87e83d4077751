"""The split of an evaluation into parts and the merge back (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glamhpc.evaluate.episodes import Episode, stream_quotas
from glamhpc.evaluate.parts import episode_index, merge_parts, part_episodes, part_streams


def _split() -> st.SearchStrategy[tuple[int, int, int]]:
    """(episodes, streams, parts) with 1 <= parts <= streams."""
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


@given(_split())
def test_parts_partition_streams_and_episodes(split: tuple[int, int, int]) -> None:
    episodes, streams, num_parts = split
    blocks = [part_streams(streams, num_parts, p) for p in range(num_parts)]
    assert [g for b in blocks for g in b] == list(range(streams))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    owned = [part_episodes(episodes, streams, num_parts, p) for p in range(num_parts)]
    assert sorted(i for o in owned for i in o) == list(range(episodes))
    assert sum(stream_quotas(episodes, streams)) == episodes


@given(_split())
def test_merged_parts_equal_the_unsplit_episodes(split: tuple[int, int, int]) -> None:
    episodes, streams, num_parts = split
    whole = _episodes_of(range(streams), episodes, streams)
    parts = [
        _episodes_of(part_streams(streams, num_parts, p), episodes, streams)
        for p in range(num_parts)
    ]
    merged = merge_parts(reversed(parts), episodes, streams)
    assert merged == merge_parts([whole], episodes, streams)
    assert [episode_index(e.stream, e.number, streams) for e in merged] == list(range(episodes))
    # Each part plays exactly the episode indices the split assigns to it.
    for p, part in enumerate(parts):
        got = sorted(episode_index(e.stream, e.number, streams) for e in part)
        assert got == part_episodes(episodes, streams, num_parts, p)


def test_merge_rejects_missing_duplicate_and_foreign_episodes() -> None:
    whole = _episodes_of(range(4), 10, 4)
    with pytest.raises(ValueError, match="missing"):
        merge_parts([whole[:-1]], 10, 4)
    with pytest.raises(ValueError, match="twice"):
        merge_parts([whole, whole[:1]], 10, 4)
    with pytest.raises(ValueError, match="not part of an evaluation"):
        merge_parts([[*whole, Episode(0, 7, True, 1.0, 3, "goto")]], 10, 4)


def test_split_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least as many env streams"):
        part_streams(2, 3, 0)
    with pytest.raises(ValueError, match=r"not in 0\.\.1"):
        part_streams(4, 2, 2)
