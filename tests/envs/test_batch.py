"""EnvBatch: auto-reset in the same step, seeding scheme, rank split, exact JSON resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from minigrid.utils.baby_ai_bot import BabyAIBot

from glamhpc.envs.batch import (
    EnvBatch,
    StepResult,
    episode_seed,
    instance_seed,
    merge_state_dicts,
)
from glamhpc.envs.levels import MAX_STEPS
from glamhpc.envs.textenv import TextEnv

LEVEL = "MixedTrainLocal"


def _same(a: StepResult, b: StepResult) -> bool:
    return (
        np.array_equal(a.rewards, b.rewards)
        and np.array_equal(a.dones, b.dones)
        and np.array_equal(a.truncated, b.truncated)
        and a.episodes == b.episodes
    )


def _random_actions(n_envs: int, steps: int, n_actions: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_actions, size=(steps, n_envs))


def test_first_prompts_and_action_texts() -> None:
    batch = EnvBatch(LEVEL, num_envs=3, seed=1)
    prompts = batch.prompts()
    assert len(prompts) == 3 and all(p.endswith("\n Action 0: ") for p in prompts)
    assert all("Observation 1" not in p for p in prompts)
    assert batch.action_texts == [
        "turn left",
        "turn right",
        "go forward",
        "pick up",
        "drop",
        "toggle",
    ]
    with pytest.raises(ValueError, match="expected 3 actions"):
        batch.step([0, 0])


def test_episode_seed_scheme() -> None:
    """Env i's episode k is the level reset with episode_seed(seed, offset + i, k)."""
    batch = EnvBatch(LEVEL, num_envs=2, seed=7, env_seed_offset=5)
    for i in range(2):
        ref = TextEnv(LEVEL)
        ref.reset(seed=episode_seed(7, 5 + i, 0))
        assert batch.prompts()[i] == ref.prompt
    seeds = {episode_seed(s, g, k) for s in range(3) for g in range(50) for k in range(20)}
    assert len(seeds) == 3 * 50 * 20  # no collisions between runs, envs and episodes
    assert episode_seed(1, 2, 3) == episode_seed(1, 2, 3) < 2**63
    assert instance_seed(1, 2) != episode_seed(1, 2, 0)


def test_auto_reset_in_the_same_step() -> None:
    batch = EnvBatch(LEVEL, num_envs=4, seed=3)
    kinds = batch.task_kinds()
    episodes = [0] * 4
    started = [0] * 4
    # Spinning in place never solves a task, so every episode runs to its kind's step limit.
    for t in range(1, 200):
        result = batch.step([0] * 4)
        assert result.rewards.dtype == np.float32 and result.dones.dtype == bool
        assert result.dones.sum() == len(result.episodes)
        for info in result.episodes:
            i = info.env_index
            assert info.length == t - started[i] == MAX_STEPS[kinds[i]]
            assert not info.success and info.return_ == 0.0 and info.task_kind == kinds[i]
            assert result.dones[i] and result.truncated[i]
            # The returned state is already the next episode's first observation.
            episodes[i] += 1
            started[i] = t
            prompt = batch.prompts()[i]
            assert "Observation 0" in prompt and "Observation 1" not in prompt
            ref = TextEnv(LEVEL)
            ref.reset(seed=episode_seed(3, i, episodes[i]))
            assert prompt == ref.prompt and batch.task_kinds()[i] == ref.task_kind
            kinds[i] = ref.task_kind
    assert min(episodes) >= 1


def test_bot_episodes_report_success_and_scaled_rewards() -> None:
    batch = EnvBatch(LEVEL, num_envs=3, seed=0)
    bots = [BabyAIBot(env) for env in batch.envs]
    finished = []
    for _ in range(400):
        result = batch.step([bot.replan() for bot in bots])
        for info in result.episodes:
            i = info.env_index
            assert info.success and 0 < info.return_ < 1
            assert result.rewards[i] == pytest.approx(20 * info.return_, rel=1e-6)
            raw = 1 - 0.9 * info.length / MAX_STEPS[info.task_kind]
            assert info.return_ == pytest.approx(raw)
            bots[i] = BabyAIBot(batch.envs[i])  # the env already holds its next episode
            finished.append(info)
        if len(finished) >= 12:
            break
    assert len(finished) >= 12


def test_same_seed_same_run_different_seed_differs() -> None:
    a, b, c = (EnvBatch(LEVEL, num_envs=4, seed=s) for s in (5, 5, 6))
    assert a.prompts() == b.prompts() != c.prompts()
    for row in _random_actions(4, 150):
        assert _same(a.step(row), b.step(row))
        assert a.prompts() == b.prompts()


def test_two_ranks_see_the_envs_of_one_rank() -> None:
    whole = EnvBatch(LEVEL, num_envs=6, seed=2)
    ranks = [EnvBatch(LEVEL, num_envs=3, seed=2, env_seed_offset=3 * r) for r in range(2)]
    assert whole.prompts() == ranks[0].prompts() + ranks[1].prompts()
    for row in _random_actions(6, 140):
        full = whole.step(row)
        parts = [ranks[r].step(row[3 * r : 3 * r + 3]) for r in range(2)]
        assert np.array_equal(full.rewards, np.concatenate([p.rewards for p in parts]))
        assert np.array_equal(full.dones, np.concatenate([p.dones for p in parts]))
    assert whole.prompts() == ranks[0].prompts() + ranks[1].prompts()


@pytest.mark.parametrize("action_space", ["standard", "augmented"])
def test_state_dict_round_trip_is_exact(action_space: str) -> None:
    n_actions = 9 if action_space == "augmented" else 6
    plan = _random_actions(4, 260, n_actions, seed=1)
    ref = EnvBatch(LEVEL, num_envs=4, seed=9, action_space=action_space)
    for row in plan[:170]:  # crosses at least one episode boundary per env (64/128 steps)
        ref.step(row)
    state = json.loads(json.dumps(ref.state_dict()))  # must survive JSON
    assert all(e["episode"] >= 1 for e in state["envs"])

    restored = EnvBatch(LEVEL, num_envs=4, seed=9, action_space=action_space)
    restored.load_state_dict(state)
    assert restored.prompts() == ref.prompts()
    assert restored.state_dict() == ref.state_dict()
    for row in plan[170:]:
        assert _same(restored.step(row), ref.step(row))
        assert restored.prompts() == ref.prompts()


def test_state_resumes_across_a_different_rank_split() -> None:
    plan = _random_actions(4, 90, seed=2)
    ranks = [EnvBatch(LEVEL, num_envs=2, seed=4, env_seed_offset=2 * r) for r in range(2)]
    for row in plan:
        for r in range(2):
            ranks[r].step(row[2 * r : 2 * r + 2])
    merged = merge_state_dicts(b.state_dict() for b in ranks)
    whole = EnvBatch(LEVEL, num_envs=4, seed=4)
    whole.load_state_dict(merged)
    assert whole.prompts() == ranks[0].prompts() + ranks[1].prompts()


def test_load_state_dict_rejects_incompatible_states() -> None:
    state = EnvBatch(LEVEL, num_envs=2, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed: saved 1, here 2"):
        EnvBatch(LEVEL, num_envs=2, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="action_space"):
        EnvBatch(LEVEL, num_envs=2, seed=1, action_space="synonyms").load_state_dict(state)
    with pytest.raises(ValueError, match=r"lacks global env indices \[2\]"):
        EnvBatch(LEVEL, num_envs=3, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        EnvBatch(LEVEL, num_envs=2, seed=1).load_state_dict({"envs": []})
    with pytest.raises(ValueError, match="different 'seed'"):
        merge_state_dicts([state, EnvBatch(LEVEL, num_envs=2, seed=3).state_dict()])


def test_per_instance_kinds_are_fixed_and_survive_restore() -> None:
    batch = EnvBatch(LEVEL, num_envs=6, seed=0, task_sampling="per_instance")
    kinds = batch.task_kinds()
    assert len(set(kinds)) > 1
    for _ in range(130):
        batch.step([0] * 6)  # every env finishes at least one episode
        assert batch.task_kinds() == kinds
    restored = EnvBatch(LEVEL, num_envs=6, seed=0, task_sampling="per_instance")
    restored.load_state_dict(batch.state_dict())
    assert restored.task_kinds() == kinds and restored.prompts() == batch.prompts()


def test_level_kwargs_and_french_batch() -> None:
    only_open = EnvBatch(LEVEL, num_envs=3, seed=0, level_kwargs={"task_kinds": ("open",)})
    assert only_open.task_kinds() == ["open"] * 3
    restored = EnvBatch(LEVEL, num_envs=3, seed=0, level_kwargs={"task_kinds": ["open"]})
    restored.load_state_dict(json.loads(json.dumps(only_open.state_dict())))
    french = EnvBatch("GoToFrench", num_envs=2, seed=0)
    assert french.language == "french" and french.action_texts[0] == "tourner à gauche"
    assert all(p.startswith("Actions possibles pour l'agent:") for p in french.prompts())
