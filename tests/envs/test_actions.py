"""Text action spaces: exact strings, minigrid ids, languages and errors."""

from __future__ import annotations

import dataclasses

import pytest
from minigrid.core.actions import Actions

from glamhpc.envs.actions import (
    ACTION_SPACES,
    FRENCH_ACTION_TEXTS,
    ActionSpec,
    action_texts,
    env_actions,
    get_action_space,
)

STANDARD = ["turn left", "turn right", "go forward", "pick up", "drop", "toggle"]


def test_known_spaces() -> None:
    assert set(ACTION_SPACES) == {"standard", "restricted", "augmented", "synonyms"}


def test_standard_space_follows_minigrid_action_ids() -> None:
    assert action_texts("standard") == STANDARD
    assert env_actions("standard") == [
        Actions.left,
        Actions.right,
        Actions.forward,
        Actions.pickup,
        Actions.drop,
        Actions.toggle,
    ]
    assert env_actions("standard") == list(range(6))


def test_restricted_is_the_first_three() -> None:
    assert action_texts("restricted") == ["turn left", "turn right", "go forward"]
    assert env_actions("restricted") == [0, 1, 2]


def test_augmented_adds_no_op_distractors() -> None:
    assert action_texts("augmented") == [*STANDARD, "sleep", "do nothing", "think"]
    assert env_actions("augmented") == [0, 1, 2, 3, 4, 5, 6, 6, 6]
    assert Actions.done == 6


def test_synonyms() -> None:
    assert action_texts("synonyms") == [
        "rotate left",
        "rotate right",
        "move ahead",
        "take",
        "release",
        "switch",
    ]
    assert env_actions("synonyms") == list(range(6))


@pytest.mark.parametrize("name", sorted(ACTION_SPACES))
def test_spaces_are_consistent(name: str) -> None:
    space = get_action_space(name)
    assert isinstance(space, tuple)
    assert all(isinstance(spec, ActionSpec) for spec in space)
    texts = action_texts(name)
    assert len(set(texts)) == len(texts), "candidates must be distinguishable"
    assert all(t == t.strip() and t for t in texts)
    assert all(0 <= a <= int(Actions.done) for a in env_actions(name))
    # A comma inside a candidate would break the comma-separated prompt header.
    assert not any("," in t for t in texts)


def test_action_spec_is_frozen() -> None:
    spec = ActionSpec("turn left", 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.text = "x"  # type: ignore[misc]
    assert spec == ActionSpec("turn left", 0)


def test_french_texts() -> None:
    assert action_texts("standard", "french") == [
        "tourner à gauche",
        "tourner à droite",
        "aller tout droit",
        "attraper",
        "lâcher",
        "basculer",
    ]
    assert action_texts("restricted", "french") == action_texts("standard", "french")[:3]
    assert list(FRENCH_ACTION_TEXTS) == STANDARD


@pytest.mark.parametrize("name", ["augmented", "synonyms"])
def test_spaces_without_french_words_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="no French words"):
        action_texts(name, "french")


@pytest.mark.parametrize("call", [action_texts, env_actions, get_action_space])
def test_unknown_space_error_names_the_allowed_ones(call) -> None:
    with pytest.raises(ValueError, match="unknown action space 'nope'") as info:
        call("nope")
    for name in ACTION_SPACES:
        assert name in str(info.value)


def test_unknown_language() -> None:
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        action_texts("standard", "klingon")


def test_returned_lists_are_copies() -> None:
    texts = action_texts("standard")
    texts.append("fly")
    assert action_texts("standard") == STANDARD
