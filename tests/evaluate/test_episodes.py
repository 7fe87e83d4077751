"""`glamhpc.evaluate.episodes`: the learning benchmark's `run_episodes`, per-stream determinism."""

from __future__ import annotations

from glamhpc.envs.batch import EnvBatch
from glamhpc.evaluate.episodes import (
    TEST_SEED_BASE,
    play_episodes,
    run_episodes,
    shuffle_between_envs,
    stream_quotas,
    uniform_policy,
)

LEVEL = "BabyAI-GoToRedBallNoDists-v0"


def _envs(n: int, offset: int = 0) -> EnvBatch:
    return EnvBatch(LEVEL, n, seed=TEST_SEED_BASE, history=1, env_seed_offset=offset)


def test_run_episodes_plays_exactly_the_quota() -> None:
    seen: list[int] = []
    res = run_episodes(uniform_policy(6), _envs, 7, 3, seed=1, on_episode=seen.append)
    assert res.n == 7 and seen == list(range(1, 8))
    assert 0.0 <= res.success_rate() <= 1.0 and all(n >= 1 for n in res.lengths)
    blind = run_episodes(
        uniform_policy(6), _envs, 5, 4, seed=1, prompt_transform=shuffle_between_envs
    )
    assert blind.n == 5
    assert stream_quotas(7, 3) == [3, 2, 2]


def test_an_episode_does_not_depend_on_its_batch() -> None:
    quotas = stream_quotas(8, 4)
    together = play_episodes(uniform_policy(6), _envs(4), quotas, seed=3)
    apart = [
        *play_episodes(uniform_policy(6), _envs(1, 0), quotas[:1], seed=3),
        *play_episodes(uniform_policy(6), _envs(3, 1), quotas[1:], seed=3),
    ]
    key = lambda e: (e.stream, e.number)  # noqa: E731
    assert sorted(together, key=key) == sorted(apart, key=key)
    greedy = play_episodes(uniform_policy(6), _envs(4), quotas, seed=3, greedy=True)
    assert greedy != together  # argmax of a uniform policy always turns left
    assert all(not e.success and e.length == 64 for e in greedy)
