"""TextEnv: descriptions, prompt, reward scaling, success flag, action mapping, languages."""

from __future__ import annotations

import numpy as np
import pytest
from minigrid.utils.baby_ai_bot import BabyAIBot

from glamhpc.envs.text import describe
from glamhpc.envs.textenv import TextEnv, carried


def _solve(env: TextEnv, seed: int) -> tuple[list[float], list[dict], int]:
    """Drive env with minigrid's bot (standard space: candidate index == minigrid id)."""
    env.reset(seed=seed)
    bot = BabyAIBot(env)
    rewards, infos, steps = [], [], 0
    while True:
        _, reward, terminated, truncated, info = env.step(bot.replan())
        steps += 1
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return rewards, infos, steps


def test_reset_gives_descriptions_and_first_prompt() -> None:
    env = TextEnv("MixedTrainLocal", seed=3)
    obs, info = env.reset()
    assert obs["descriptions"] == describe(obs["image"]) == env.descriptions
    assert info["task_kind"] == env.task_kind == env.unwrapped.task_kind
    assert info["max_steps"] == env.unwrapped.max_steps
    prompt = env.prompt
    assert prompt.startswith(
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
    )
    assert f" \n Goal of the agent: {obs['mission']} \n Observation 0: " in prompt
    assert prompt.endswith("\n Action 0: ") and "Observation 1" not in prompt


def test_constructor_seed_applies_to_first_reset_only() -> None:
    a, b = TextEnv("MixedTrainLocal", seed=11), TextEnv("MixedTrainLocal", seed=11)
    first = a.reset()[0]["mission"], a.prompt
    assert (b.reset()[0]["mission"], b.prompt) == first
    missions = {a.reset()[0]["mission"] for _ in range(5)}  # RNG continues, no re-seeding
    assert len(missions) > 1


@pytest.mark.parametrize("kind", ["goto", "pickup", "putnext", "open", "pickup_then_goto"])
def test_success_reward_scaling_and_raw_reward(kind: str) -> None:
    env = TextEnv("MixedTrainLocal", level_kwargs={"task_kinds": [kind]})
    rewards, infos, steps = _solve(env, seed=5)
    raw = 1 - 0.9 * steps / env.unwrapped.max_steps
    assert infos[-1]["success"] and infos[-1]["raw_reward"] == pytest.approx(raw)
    assert rewards[-1] == pytest.approx(20 * raw)
    assert not any(i["success"] for i in infos[:-1]) and sum(rewards[:-1]) == 0
    assert all(i["task_kind"] == kind for i in infos)


def test_custom_reward_scale_and_failure_is_not_success() -> None:
    env = TextEnv("BabyAI-GoToLocal-v0", seed=0, reward_scale=1.0)
    rewards, infos, _ = _solve(env, seed=0)
    assert rewards[-1] == pytest.approx(infos[-1]["raw_reward"]) and infos[-1]["success"]
    env.reset(seed=1)
    for _ in range(env.unwrapped.max_steps):
        _, reward, terminated, truncated, info = env.step(0)  # spin in place until time runs out
    assert truncated and not terminated and not info["success"] and reward == 0


def test_prompt_window_slides_and_records_action_texts() -> None:
    env = TextEnv("MixedTrainLocal", seed=0, history=3)
    env.reset()
    for action in (2, 1, 0, 2):
        env.step(action)
    prompt = env.prompt
    assert "Observation 2: " in prompt and "Observation 3" not in prompt
    # The window holds the last 3 observations and the 2 actions between them (left, forward).
    assert "\n Action 0: turn left \n Observation 1: " in prompt
    assert "\n Action 1: go forward \n Observation 2: " in prompt
    assert prompt.endswith("\n Action 2: ")
    assert env.history.observations[-1] == tuple(env.descriptions)
    one = TextEnv("MixedTrainLocal", seed=0, history=1)
    one.reset()
    one.step(2)
    assert "Observation 1" not in one.prompt and one.prompt.endswith("\n Action 0: ")


def test_carrying_sentence_comes_first() -> None:
    env = TextEnv("MixedTrainLocal", level_kwargs={"task_kinds": ["pickup"]})
    _solve(env, seed=2)
    assert carried(env) is not None
    obj_type, color = carried(env)
    assert env.descriptions[0] == f"You carry a {color} {obj_type}"


def test_augmented_noops_and_synonyms_map_to_minigrid_ids() -> None:
    env = TextEnv("MixedTrainLocal", seed=4, action_space="augmented")
    env.reset()
    assert env.action_texts[6:] == ["sleep", "do nothing", "think"]
    assert env.action_space.n == 9
    state = (tuple(env.unwrapped.agent_pos), env.unwrapped.agent_dir)
    for index in (6, 7, 8):
        _, _, _, _, info = env.step(index)
        assert info["env_action"] == 6
    assert (tuple(env.unwrapped.agent_pos), env.unwrapped.agent_dir) == state  # no-ops
    assert "Action 0: do nothing \n" in env.prompt and env.prompt.endswith("Action 2: ")

    std, syn = (
        TextEnv("MixedTrainLocal", seed=4),
        TextEnv("MixedTrainLocal", seed=4, action_space="synonyms"),
    )
    std.reset()
    syn.reset()
    for index in (0, 2, 1, 2, 3, 5, 4):
        o1, *_ = std.step(index)
        o2, _, _, _, info = syn.step(index)
        assert info["env_action"] == index
        assert np.array_equal(o1["image"], o2["image"])
    assert "rotate right" in syn.prompt and syn.prompt.startswith(
        "Possible action of the agent: rotate left, rotate right, move ahead, take, release, switch"
    )
    with pytest.raises(ValueError, match="out of range"):
        std.step(6)


def test_french_level_and_language_override() -> None:
    env = TextEnv("GoToFrench", seed=0)
    assert env.language == "french"
    env.reset()
    env.step(1)
    assert env.prompt.startswith("Actions possibles pour l'agent: tourner à gauche")
    assert "\n But de l'agent: aller à " in env.prompt
    assert "Action 0: tourner à droite \n" in env.prompt
    assert all(d.startswith("Tu ") for d in env.descriptions)
    english = TextEnv("GoToFrench", seed=0, language="english")
    english.reset()
    assert english.prompt.startswith("Possible action of the agent:")


def test_minigrid_levels_work_silently(capsys: pytest.CaptureFixture[str]) -> None:
    env = TextEnv("PutNextLocal", seed=0)
    for _ in range(20):
        env.reset()
    assert env.task_kind == "PutNextLocal"
    assert capsys.readouterr().out == ""


def _open_door_in_view(fix_grammar: bool) -> list[str]:
    """Descriptions of an open-task start whose (unlocked, opened) door is in view."""
    for seed in range(100):
        env = TextEnv(
            "MixedTrainLocal",
            action_space="augmented",
            fix_grammar=fix_grammar,
            level_kwargs={"task_kinds": ["open"]},
        )
        env.reset(seed=seed)
        doors = [c for c in env.unwrapped.grid.grid if c is not None and c.type == "door"]
        doors[0].is_locked, doors[0].is_open = False, True
        env.step(6)  # no-op: re-observe the opened door
        if any(" door " in d for d in env.descriptions):
            return env.descriptions
    raise AssertionError("no door in view in 100 seeds")


def test_fix_grammar_flag_reaches_the_french_goal() -> None:
    # Seed 0's mission is "go to the green ball": upstream writes "une", the fix "la".
    prompts = []
    for fix in (False, True):
        env = TextEnv("GoToFrench", seed=0, fix_grammar=fix)
        env.reset()
        assert env.mission == "go to the green ball"
        prompts.append(env.prompt)
    assert "But de l'agent: aller à une balle verte \n" in prompts[0]
    assert "But de l'agent: aller à la balle verte \n" in prompts[1]


def test_fix_grammar_flag_reaches_describe() -> None:
    assert any(d.startswith("You see a open ") for d in _open_door_in_view(False))
    assert any(d.startswith("You see an open ") for d in _open_door_in_view(True))
