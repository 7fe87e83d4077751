"""BabyAI-Text levels: mission grammar, held-out rule, step limits, kinds, bot solvability."""

from __future__ import annotations

import collections
import re

import gymnasium as gym
import numpy as np
import pytest
from minigrid.utils.baby_ai_bot import BabyAIBot

from glamhpc.envs.levels import (
    HELD_OUT_COMBOS,
    LEVEL_IDS,
    MAX_STEPS,
    TASK_KINDS,
    known_levels,
    level_language,
    register_levels,
    resolve_level,
    silence_generation,
)

_OBJ = r"(?:a|the) (?:(?:red|green|blue|purple|yellow|grey) )?(?:key|ball|box)"
_DOOR = r"the (?:(?:red|green|blue|purple|yellow|grey) )?door"
MISSION_RE = {
    "goto": re.compile(rf"go to {_OBJ}"),
    "pickup": re.compile(rf"pick up {_OBJ}"),
    "putnext": re.compile(rf"put {_OBJ} next to {_OBJ}"),
    "open": re.compile(rf"open {_DOOR}"),
    "pickup_then_goto": re.compile(
        rf"pick up {_OBJ}, then go to {_OBJ}|go to {_OBJ} after you pick up {_OBJ}"
    ),
    "pickup_then_pickup": re.compile(
        rf"pick up {_OBJ}, then pick up {_OBJ}|pick up {_OBJ} after you pick up {_OBJ}"
    ),
}
PAIR_RE = re.compile(r"(red|green|blue|purple|yellow|grey) (key|ball|box|door)")
DONE = 6  # minigrid's no-op action


def _episodes(level: str, seeds: range, **kwargs: object) -> list[tuple[str, str, int]]:
    env = gym.make(level, **kwargs)
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        u = env.unwrapped
        out.append((u.task_kind, obs["mission"], u.max_steps))
    return out


@pytest.mark.parametrize("level", sorted(LEVEL_IDS))
def test_missions_valid_and_step_limits(level: str) -> None:
    kinds = LEVEL_IDS[level].KINDS
    seen = collections.Counter()
    for kind, mission, max_steps in _episodes(level, range(150)):
        assert kind in kinds
        assert MISSION_RE[kind].fullmatch(mission), (kind, mission)
        assert max_steps == MAX_STEPS[kind]
        seen[kind] += 1
    assert set(seen) == set(kinds), seen


def test_every_mixed_kind_appears_roughly_uniformly() -> None:
    counts = collections.Counter(
        k for k, _, _ in _episodes("BabyAI-MixedTrainLocal-v0", range(500))
    )
    assert set(counts) == set(TASK_KINDS)
    assert min(counts.values()) > 60  # uniform would give 100 each


def test_train_never_names_held_out_pairs() -> None:
    missions = [m for _, m, _ in _episodes("BabyAI-MixedTrainLocal-v0", range(600))]
    for level in ("BabyAI-PickUpSeqGoToLocal-v0", "BabyAI-PickUpSeqPickUpLocal-v0"):
        missions += [m for _, m, _ in _episodes(level, range(100))]
    for mission in missions:
        assert not any(pair in mission for pair in HELD_OUT_COMBOS), mission


def test_test_level_names_only_held_out_pairs() -> None:
    eps = _episodes("BabyAI-MixedTestLocal-v0", range(150))
    for kind, mission, _ in eps:
        pairs = [" ".join(p) for p in PAIR_RE.findall(mission)]
        assert pairs, mission  # colour always stated, doors included
        assert all(p in HELD_OUT_COMBOS for p in pairs), mission
        if kind == "open":
            assert mission in ("open the red door", "open the grey door")


def _objects(env: gym.Env) -> list:
    return [c for c in env.unwrapped.grid.grid if c is not None and c.type != "wall"]


def test_goto_french_is_upstreams_level() -> None:
    # babyai-text's Level_GoToFrench: one 8x8 room, 8 objects (num_dists=8, the target among
    # them) and no held-out filter; the Mixed goto task places 9 and filters.
    french = gym.make("BabyAI-GoToFrench-v0")
    mixed = gym.make("BabyAI-MixedTrainLocal-v0", task_kinds=["goto"])
    held_out = 0
    for seed in range(120):
        obs, _ = french.reset(seed=seed)
        objs = _objects(french)
        assert len(objs) == 8 and french.unwrapped.width == french.unwrapped.height == 8
        pair = PAIR_RE.search(obs["mission"])
        assert pair is not None
        assert (pair[2], pair[1]) in {(o.type, o.color) for o in objs}, obs["mission"]
        held_out += pair[0] in HELD_OUT_COMBOS
        mixed.reset(seed=seed)
        assert len(_objects(mixed)) == 9
    # 3 of the 18 goto pairs are held out: ~20 of 120 missions name one; with the filter, none.
    assert held_out >= 5


def test_open_colour_omitted_about_half_the_time() -> None:
    opens = [
        m for _, m, _ in _episodes("BabyAI-MixedTrainLocal-v0", range(400), task_kinds=["open"])
    ]
    bare = sum(m == "open the door" for m in opens)
    assert 120 < bare < 280
    assert all(
        PAIR_RE.fullmatch(m.removeprefix("open the ")) for m in opens if m != "open the door"
    )


def test_open_layout_two_rooms_locked_door_and_key() -> None:
    env = gym.make("BabyAI-MixedTrainLocal-v0", task_kinds=["open"])
    for seed in range(30):
        env.reset(seed=seed)
        u = env.unwrapped
        assert (u.width, u.height) == (15, 8)
        cells = [c for c in u.grid.grid if c is not None and c.type != "wall"]
        doors = [c for c in cells if c.type == "door"]
        assert len(doors) == 1 and doors[0].is_locked
        assert doors[0].color in ("yellow", "green", "blue", "purple")
        keys = [c for c in cells if c.type == "key" and c.color == doors[0].color]
        assert keys
        assert len(cells) == 1 + 1 + 8  # door, key, distractors
        agent_room = u.room_from_pos(*u.agent_pos)
        assert all(agent_room.pos_inside(*c.cur_pos) for c in cells if c.type != "door")


def test_surface_orders_of_composition_levels() -> None:
    then = [m for _, m, _ in _episodes("BabyAI-PickUpThenGoToLocal-v0", range(40))]
    after = [m for _, m, _ in _episodes("BabyAI-GoToAfterPickUpLocal-v0", range(40))]
    both = [m for _, m, _ in _episodes("BabyAI-PickUpSeqGoToLocal-v0", range(80))]
    assert all(", then go to" in m for m in then)
    assert all(" after you pick up " in m for m in after)
    assert any(", then " in m for m in both) and any(" after you " in m for m in both)


@pytest.mark.parametrize("kind", ["goto", "open", "putnext"])
def test_minigrid_truncates_at_the_kinds_limit(kind: str) -> None:
    env = gym.make("BabyAI-MixedTrainLocal-v0", task_kinds=[kind])
    env.reset(seed=3)
    for step in range(1, MAX_STEPS[kind] + 1):
        _, reward, terminated, truncated, _ = env.step(DONE)
        assert not terminated and reward == 0
        assert truncated == (step == MAX_STEPS[kind])


def _fingerprint(env: gym.Env) -> tuple[str, str, bytes, tuple[int, int], int]:
    u = env.unwrapped
    return (u.task_kind, u.mission, u.grid.encode().tobytes(), tuple(u.agent_pos), u.agent_dir)


def test_same_seed_same_episode_and_seeds_differ() -> None:
    a, b = gym.make("BabyAI-MixedTrainLocal-v0"), gym.make("BabyAI-MixedTrainLocal-v0")
    prints = set()
    for seed in range(40):
        a.reset(seed=seed)
        b.reset(seed=seed)
        assert _fingerprint(a) == _fingerprint(b)
        prints.add(_fingerprint(a))
    assert len(prints) == 40
    rng = np.random.default_rng(0)
    for action in rng.integers(0, 6, size=60):
        ra, rb = a.step(int(action)), b.step(int(action))
        assert np.array_equal(ra[0]["image"], rb[0]["image"]) and ra[1:4] == rb[1:4]


def test_per_instance_sampling_keeps_one_kind() -> None:
    kinds = set()
    for inst in range(12):
        env = gym.make(
            "BabyAI-MixedTrainLocal-v0", task_sampling="per_instance", instance_seed=inst
        )
        per_env = {k for k, _, _ in _episodes_from(env, range(8))}
        assert len(per_env) == 1
        kinds |= per_env
        again = gym.make(
            "BabyAI-MixedTrainLocal-v0", task_sampling="per_instance", instance_seed=inst
        )
        assert {k for k, _, _ in _episodes_from(again, range(2))} == per_env
    assert len(kinds) > 1
    with pytest.raises(ValueError, match="task_sampling"):
        gym.make("BabyAI-MixedTrainLocal-v0", task_sampling="sometimes")


def _episodes_from(env: gym.Env, seeds: range) -> list[tuple[str, str, int]]:
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        out.append((env.unwrapped.task_kind, obs["mission"], env.unwrapped.max_steps))
    return out


def _bot_success(level: str, seeds: range, **kwargs: object) -> dict[str, list[bool]]:
    env = gym.make(level, **kwargs)
    results: dict[str, list[bool]] = collections.defaultdict(list)
    for seed in seeds:
        env.reset(seed=seed)
        bot = BabyAIBot(env)
        ret, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(bot.replan())
            ret += float(reward)
            done = terminated or truncated
        results[env.unwrapped.task_kind].append(ret > 0)
    return results


@pytest.mark.parametrize("kind", TASK_KINDS)
@pytest.mark.parametrize("level", ["BabyAI-MixedTrainLocal-v0", "BabyAI-MixedTestLocal-v0"])
def test_bot_solves_each_mixed_kind(level: str, kind: str) -> None:
    results = _bot_success(level, range(8), task_kinds=[kind])[kind]
    assert sum(results) >= 7, results


@pytest.mark.parametrize(
    "level", sorted(set(LEVEL_IDS) - {"BabyAI-MixedTrainLocal-v0", "BabyAI-MixedTestLocal-v0"})
)
def test_bot_solves_composition_levels(level: str) -> None:
    results = [ok for oks in _bot_success(level, range(8)).values() for ok in oks]
    assert sum(results) >= 7, results


def test_our_levels_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # MixedTestLocal rejects dozens of candidates per reset (putnext needs two held-out pairs).
    _episodes("BabyAI-MixedTestLocal-v0", range(30), task_kinds=["putnext"])
    assert capsys.readouterr().out == ""


def test_silence_generation_covers_minigrid_levels(capsys: pytest.CaptureFixture[str]) -> None:
    env = gym.make("BabyAI-PutNextLocal-v0")
    for seed in range(30):
        env.reset(seed=seed)
    assert "Sampling rejected" in capsys.readouterr().out  # minigrid does print...
    with silence_generation():
        for seed in range(30):
            env.reset(seed=seed)
    assert capsys.readouterr().out == ""  # ...and we swallow it


def test_known_levels_and_resolution() -> None:
    register_levels()  # idempotent
    levels = known_levels()
    assert set(LEVEL_IDS) <= set(levels)
    assert "BabyAI-GoToLocal-v0" in levels and all(lv.startswith("BabyAI-") for lv in levels)
    for name in ("MixedTrainLocal", "BabyAI-MixedTrainLocal", "BabyAI-MixedTrainLocal-v0"):
        assert resolve_level(name) == "BabyAI-MixedTrainLocal-v0"
    assert resolve_level("gotolocal") == "BabyAI-GoToLocal-v0"
    with pytest.raises(ValueError, match=r"'MixedTrainLocl'.*MixedTrainLocal"):
        resolve_level("MixedTrainLocl")
    with pytest.raises(ValueError, match="unknown level"):
        resolve_level("CartPole-v1")


def test_goto_local_distractor_sweep_is_complete() -> None:
    for name, n_objs in (("GoToLocalS8N4", 4), ("GoToLocalS8N16", 16)):
        env = gym.make(resolve_level(name))
        with silence_generation():
            obs, _ = env.reset(seed=0)
        u = env.unwrapped
        objs = [c for c in u.grid.grid if c is not None and c.type != "wall"]
        assert len(objs) == n_objs and u.max_steps == 64
        assert MISSION_RE["goto"].fullmatch(obs["mission"])


def test_level_language() -> None:
    assert level_language("BabyAI-GoToFrench-v0") == "french"
    assert level_language("BabyAI-MixedTrainLocal-v0") == "english"
    assert level_language("BabyAI-GoToLocal-v0") == "english"


def test_static_catalog_is_exactly_the_registered_levels() -> None:
    """Config validation resolves names from a static list (no minigrid import): it must list
    exactly what gymnasium holds once our levels are registered."""
    from glamhpc.envs.catalog import LEVEL_IDS

    assert sorted(LEVEL_IDS) == known_levels()
