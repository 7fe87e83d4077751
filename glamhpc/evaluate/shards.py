"""Splitting an evaluation's episodes over shards (ranks, array tasks) and merging them back.

Pure functions, no environments: the evaluation of one suite item is ``episodes`` episodes on
``num_streams`` env streams (global env indices); episode ``i`` is episode ``i // num_streams``
of stream ``i % num_streams`` (`glamhpc.evaluate.episodes.stream_quotas`). A shard owns a
contiguous block of streams and plays all of their episodes. Because each stream's seeds and
sampling generator depend only on the stream index, the merged shards are exactly the unsharded
run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from glamhpc.evaluate.episodes import Episode, stream_quotas

__all__ = ["episode_index", "merge_shards", "shard_episodes", "shard_streams"]


def shard_streams(num_streams: int, num_shards: int, shard: int) -> range:
    """Env streams owned by ``shard`` of ``num_shards``: balanced contiguous blocks.

    Contiguous blocks map onto one EnvBatch per shard (``env_seed_offset`` = block start).

    Raises:
        ValueError: fewer streams than shards (a shard would have nothing to do), or a shard
            index out of range.
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} is not in 0..{num_shards - 1}")
    if num_streams < num_shards:
        raise ValueError(
            f"{num_shards} shards need at least as many env streams (num_envs), got {num_streams}"
        )
    base, extra = divmod(num_streams, num_shards)
    start = shard * base + min(shard, extra)
    return range(start, start + base + (1 if shard < extra else 0))


def episode_index(stream: int, number: int, num_streams: int) -> int:
    """Index (0..episodes-1) of episode ``number`` of ``stream`` in the whole evaluation."""
    return number * num_streams + stream


def shard_episodes(episodes: int, num_streams: int, num_shards: int, shard: int) -> list[int]:
    """Episode indices ``shard`` plays, ascending; the shards partition ``range(episodes)``."""
    streams = shard_streams(num_streams, num_shards, shard)
    return [i for i in range(episodes) if i % num_streams in streams]


def merge_shards(
    parts: Iterable[Sequence[Episode]], episodes: int, num_streams: int
) -> list[Episode]:
    """Episodes of all shards in evaluation order (by episode index), checked for completeness.

    Raises:
        ValueError: an episode is missing, duplicated or outside the plan (shards from different
            plans, or a shard that did not finish).
    """
    quotas = stream_quotas(episodes, num_streams)
    by_index: dict[int, Episode] = {}
    for part in parts:
        for ep in part:
            if not (0 <= ep.stream < num_streams and 0 <= ep.number < quotas[ep.stream]):
                raise ValueError(
                    f"episode {ep.number} of stream {ep.stream} is not part of a plan of "
                    f"{episodes} episodes on {num_streams} streams"
                )
            index = episode_index(ep.stream, ep.number, num_streams)
            if index in by_index:
                raise ValueError(f"episode {ep.number} of stream {ep.stream} appears twice")
            by_index[index] = ep
    if len(by_index) != episodes:
        missing = sorted(set(range(episodes)) - set(by_index))
        raise ValueError(f"{len(missing)} episodes missing from the shards (first: {missing[:5]})")
    return [by_index[i] for i in range(episodes)]
