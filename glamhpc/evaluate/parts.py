"""Splitting an evaluation's episodes into parts (ranks, array tasks) and merging them back.

Pure functions, no environments: the evaluation of one suite item is ``episodes`` episodes on
``num_streams`` env streams (global env indices); episode ``i`` is episode ``i // num_streams``
of stream ``i % num_streams`` (`glamhpc.evaluate.episodes.stream_quotas`). A part owns a
contiguous block of streams and plays all of their episodes. Because each stream's seeds and
sampling generator depend only on the stream index, the merged parts are exactly the unsplit
run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from glamhpc.evaluate.episodes import Episode, stream_quotas

__all__ = ["episode_index", "merge_parts", "part_episodes", "part_streams"]


def part_streams(num_streams: int, num_parts: int, part: int) -> range:
    """Env streams owned by ``part`` of ``num_parts``: balanced contiguous blocks.

    Contiguous blocks map onto one EnvBatch per part (``env_seed_offset`` = block start).

    Raises:
        ValueError: fewer streams than parts (a part would have nothing to do), or a part
            index out of range.
    """
    if num_parts < 1 or not 0 <= part < num_parts:
        raise ValueError(f"part {part} is not in 0..{num_parts - 1}")
    if num_streams < num_parts:
        raise ValueError(
            f"{num_parts} parts need at least as many env streams (num_envs), got {num_streams}"
        )
    base, extra = divmod(num_streams, num_parts)
    start = part * base + min(part, extra)
    return range(start, start + base + (1 if part < extra else 0))


def episode_index(stream: int, number: int, num_streams: int) -> int:
    """Index (0..episodes-1) of episode ``number`` of ``stream`` in the whole evaluation."""
    return number * num_streams + stream


def part_episodes(episodes: int, num_streams: int, num_parts: int, part: int) -> list[int]:
    """Episode indices ``part`` plays, ascending; the parts partition ``range(episodes)``."""
    streams = part_streams(num_streams, num_parts, part)
    return [i for i in range(episodes) if i % num_streams in streams]


def merge_parts(
    parts: Iterable[Sequence[Episode]], episodes: int, num_streams: int
) -> list[Episode]:
    """Episodes of all parts in evaluation order (by episode index), checked for completeness.

    Raises:
        ValueError: an episode is missing, duplicated or outside the evaluation (parts of
            different evaluations, or a part that did not finish).
    """
    quotas = stream_quotas(episodes, num_streams)
    by_index: dict[int, Episode] = {}
    for part in parts:
        for ep in part:
            if not (0 <= ep.stream < num_streams and 0 <= ep.number < quotas[ep.stream]):
                raise ValueError(
                    f"episode {ep.number} of stream {ep.stream} is not part of an evaluation of "
                    f"{episodes} episodes on {num_streams} streams"
                )
            index = episode_index(ep.stream, ep.number, num_streams)
            if index in by_index:
                raise ValueError(f"episode {ep.number} of stream {ep.stream} appears twice")
            by_index[index] = ep
    if len(by_index) != episodes:
        missing = sorted(set(range(episodes)) - set(by_index))
        raise ValueError(f"{len(missing)} episodes missing from the parts (first: {missing[:5]})")
    return [by_index[i] for i in range(episodes)]
