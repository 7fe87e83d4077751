"""Generalization suites: exact modifier output on a real prompt, word boundaries, suite lists."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

from glamhpc.envs.actions import ACTION_SPACES, action_texts
from glamhpc.envs.prompt import build_prompt
from glamhpc.envs.suites import (
    COMPOSITION_SUITE,
    DISTRACTOR_TRANSFER_SUITE,
    MODIFIERS,
    PAPER_SUITE,
    SUITES,
    SuiteItem,
    WordReplacement,
    get_modifier,
    get_suite,
)
from glamhpc.envs.text import describe


def _cell(type_name: str, color: str, state: str = "open") -> tuple[int, int, int]:
    return (OBJECT_TO_IDX[type_name], COLOR_TO_IDX[color], STATE_TO_IDX[state])


def real_prompt() -> str:
    """A prompt produced by the real text and prompt code, with every noun and colour."""
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[:, :, 0] = OBJECT_TO_IDX["empty"]
    image[2, 6] = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)
    image[3, 6] = _cell("key", "grey")
    image[0, 2] = _cell("ball", "red")
    image[3, 4] = _cell("box", "green")
    image[4, 4] = _cell("door", "purple", "open")
    image[5, 1] = _cell("key", "yellow")
    image[6, 5] = _cell("ball", "blue")
    first = describe(image, carrying=("key", "grey"))
    image[2, 6] = (OBJECT_TO_IDX["empty"], 0, 0)  # keep the second view wall-free
    return build_prompt(
        "go to the red ball", [first, describe(image[::-1, :])], ["drop"], action_texts("standard")
    )


HEADER = "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
ORIGINAL = (
    f"{HEADER} \n Goal of the agent: go to the red ball \n Observation 0: "
    "You carry a grey key, You see a wall 1 step left, "
    "You see a red ball 3 steps left and 4 steps forward, You see a green box 2 steps forward, "
    "You see a open purple door 1 step right and 2 steps forward, "
    "You see a yellow key 2 steps right and 5 steps forward, "
    "You see a blue ball 3 steps right and 1 step forward, \n Action 0: drop \n Observation 1: "
    "You see a blue ball 3 steps left and 1 step forward, "
    "You see a yellow key 2 steps left and 5 steps forward, "
    "You see a open purple door 1 step left and 2 steps forward, "
    "You see a green box 2 steps forward, "
    "You see a red ball 3 steps right and 4 steps forward, \n Action 1: "
)


def test_real_prompt_is_what_the_modifier_tests_expect() -> None:
    assert real_prompt() == ORIGINAL


def _expected(**words: str) -> str:
    """ORIGINAL with whole words swapped by hand (str.replace on space/comma-delimited tokens)."""
    text = ORIGINAL
    for old in words:
        text = text.replace(f" {old} ", f" <{old}> ").replace(f" {old},", f" <{old}>,")
    for old, new in words.items():
        text = text.replace(f"<{old}>", new)
    return text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "other_nouns",
            f"{HEADER} \n Goal of the agent: go to the red table \n Observation 0: "
            "You carry a grey chair, You see a wall 1 step left, "
            "You see a red table 3 steps left and 4 steps forward, "
            "You see a green car 2 steps forward, "
            "You see a open purple door 1 step right and 2 steps forward, "
            "You see a yellow chair 2 steps right and 5 steps forward, "
            "You see a blue table 3 steps right and 1 step forward, \n Action 0: drop "
            "\n Observation 1: You see a blue table 3 steps left and 1 step forward, "
            "You see a yellow chair 2 steps left and 5 steps forward, "
            "You see a open purple door 1 step left and 2 steps forward, "
            "You see a green car 2 steps forward, "
            "You see a red table 3 steps right and 4 steps forward, \n Action 1: ",
        ),
        (
            "adjective_synonyms",
            f"{HEADER} \n Goal of the agent: go to the vermilion ball \n Observation 0: "
            "You carry a silver key, You see a wall 1 step left, "
            "You see a vermilion ball 3 steps left and 4 steps forward, "
            "You see a jade box 2 steps forward, "
            "You see a open violet door 1 step right and 2 steps forward, "
            "You see a golden key 2 steps right and 5 steps forward, "
            "You see a cyan ball 3 steps right and 1 step forward, \n Action 0: drop "
            "\n Observation 1: You see a cyan ball 3 steps left and 1 step forward, "
            "You see a golden key 2 steps left and 5 steps forward, "
            "You see a open violet door 1 step left and 2 steps forward, "
            "You see a jade box 2 steps forward, "
            "You see a vermilion ball 3 steps right and 4 steps forward, \n Action 1: ",
        ),
        (
            "invented_both",
            f"{HEADER} \n Goal of the agent: go to the faze xolo \n Observation 0: "
            "You carry a sil dax, You see a wall 1 step left, "
            "You see a faze xolo 3 steps left and 4 steps forward, "
            "You see a jatu afze 2 steps forward, "
            "You see a open vurst door 1 step right and 2 steps forward, "
            "You see a gakul dax 2 steps right and 5 steps forward, "
            "You see a croh xolo 3 steps right and 1 step forward, \n Action 0: drop "
            "\n Observation 1: You see a croh xolo 3 steps left and 1 step forward, "
            "You see a gakul dax 2 steps left and 5 steps forward, "
            "You see a open vurst door 1 step left and 2 steps forward, "
            "You see a jatu afze 2 steps forward, "
            "You see a faze xolo 3 steps right and 4 steps forward, \n Action 1: ",
        ),
        (
            "goal_rephrase_1",
            ORIGINAL.replace(" \n Goal of the agent: ", " \n I would like the agent to: "),
        ),
        ("goal_rephrase_2", ORIGINAL.replace(" \n Goal of the agent: ", " \n You have to: ")),
        ("invented_nouns", _expected(key="dax", ball="xolo", box="afze")),
        (
            "invented_adjectives",
            _expected(
                red="faze", green="jatu", blue="croh", purple="vurst", yellow="gakul", grey="sil"
            ),
        ),
    ],
)
def test_modifier_on_a_real_prompt(name: str, expected: str) -> None:
    modified = get_modifier(name)(ORIGINAL)
    assert modified == expected
    assert modified != ORIGINAL


def test_hand_swap_helper_agrees_with_explicit_strings() -> None:
    # Guards `_expected` itself, which two cases above rely on.
    assert get_modifier("other_nouns")(ORIGINAL) == _expected(key="chair", ball="table", box="car")
    assert "dax" in _expected(key="dax") and " key" not in _expected(key="dax")


def test_invented_both_is_nouns_then_adjectives() -> None:
    both = get_modifier("invented_both")(ORIGINAL)
    nouns, adjectives = get_modifier("invented_nouns"), get_modifier("invented_adjectives")
    assert both == adjectives(nouns(ORIGINAL)) == nouns(adjectives(ORIGINAL))


def test_replacements_are_simultaneous() -> None:
    # A chain key->chair, chair->key must swap, not collapse both words onto one.
    swap = WordReplacement({"key": "chair", "chair": "key"})
    assert swap("a key and a chair") == "a chair and a key"
    # Replacement outputs are never re-scanned.
    assert WordReplacement({"ball": "ball ball"})("a ball") == "a ball ball"


@pytest.mark.parametrize(
    "text",
    [
        "boxes keys balls",
        "keyboard ballroom boxer",
        "colored redder greenish bluer greyhound purpled",
        "Key Ball Box RED",  # case-sensitive: prompts are lower-case for these words
        "goal of the agent",
    ],
)
def test_only_whole_words_are_replaced(text: str) -> None:
    for modifier in MODIFIERS.values():
        assert modifier(text) == text


def test_word_boundaries_next_to_punctuation() -> None:
    assert get_modifier("other_nouns")("key, (ball).box\nbox:") == "chair, (table).car\ncar:"


@pytest.mark.parametrize("space", sorted(ACTION_SPACES))
@pytest.mark.parametrize("name", sorted(MODIFIERS))
def test_action_header_and_action_lines_are_untouched(space: str, name: str) -> None:
    texts = action_texts(space)
    prompt = build_prompt("go to a blue key", [[], []], [texts[-1]], texts)
    modified = get_modifier(name)(prompt)
    header = prompt.split(" \n ", 1)[0]
    assert modified.split(" \n ", 1)[0] == header
    assert f"\n Action 0: {texts[-1]} \n" in modified


@settings(max_examples=100, deadline=None)
@given(
    words=st.lists(st.sampled_from(["key", "ball", "box", "red", "grey", "a", "x"]), max_size=12)
)
def test_modifiers_map_word_by_word(words: list[str]) -> None:
    text = " ".join(words)
    for modifier in MODIFIERS.values():
        assert modifier(text) == " ".join(modifier.mapping.get(w, w) for w in words)


def test_word_replacement_validation_pickling_and_hash() -> None:
    with pytest.raises(ValueError):
        WordReplacement({})
    with pytest.raises(ValueError):
        WordReplacement({"": "x"})
    modifier = get_modifier("invented_both")
    clone = pickle.loads(pickle.dumps(modifier))
    assert clone == modifier and hash(clone) == hash(modifier)
    assert clone(ORIGINAL) == modifier(ORIGINAL)
    assert len(set(PAPER_SUITE)) == len(PAPER_SUITE)


def test_unknown_modifier() -> None:
    with pytest.raises(ValueError, match="other_nouns"):
        get_modifier("shouting")


# --- suites --------------------------------------------------------------------------------------


def test_paper_suite_contents() -> None:
    by_name = {item.name: item for item in PAPER_SUITE}
    assert list(by_name) == [
        "no_modification",
        "mixed_test",
        "other_nouns",
        "adjective_synonyms",
        "invented_nouns",
        "invented_adjectives",
        "invented_both",
        "goal_rephrase_1",
        "goal_rephrase_2",
        "synonym_actions",
        "french",
        "pickup_seq_pickup",
        "pickup_then_goto",
        "goto_after_pickup",
        "pickup_seq_goto",
    ]
    assert by_name["no_modification"] == SuiteItem("no_modification", "BabyAI-MixedTrainLocal-v0")
    assert by_name["mixed_test"].level == "BabyAI-MixedTestLocal-v0"
    for name in MODIFIERS:
        assert by_name[name].modifier is MODIFIERS[name]
        assert by_name[name].level == "BabyAI-MixedTrainLocal-v0"
    assert by_name["synonym_actions"].action_space == "synonyms"
    assert by_name["french"].language == "french"
    assert by_name["french"].level == "BabyAI-GoToFrench-v0"
    assert [i.level for i in COMPOSITION_SUITE] == [
        "BabyAI-PickUpSeqPickUpLocal-v0",
        "BabyAI-PickUpThenGoToLocal-v0",
        "BabyAI-GoToAfterPickUpLocal-v0",
        "BabyAI-PickUpSeqGoToLocal-v0",
    ]
    assert [i.level for i in DISTRACTOR_TRANSFER_SUITE] == [
        "BabyAI-GoToLocalS8N4-v0",
        "BabyAI-GoToLocal-v0",
        "BabyAI-GoToLocalS8N16-v0",
    ]
    # One agent evaluated on other distractor counts is not an experiment of the paper (its
    # Fig. 3b trains one agent per count: configs/paper/sweeps/distractors.yaml), so the paper
    # suite does not hold it.
    assert not set(DISTRACTOR_TRANSFER_SUITE) & set(PAPER_SUITE)


@pytest.mark.parametrize(
    "item", [*PAPER_SUITE, *DISTRACTOR_TRANSFER_SUITE], ids=lambda item: item.name
)
def test_items_are_runnable_combinations(item: SuiteItem) -> None:
    texts = action_texts(item.action_space, item.language)  # raises if inconsistent
    assert texts
    mission = "go to the red ball"
    prompt = build_prompt(mission, [[]], [], texts, item.language)
    assert item.modify(prompt) == (prompt if item.modifier is None else item.modifier(prompt))


def test_suite_levels_are_registered() -> None:
    import gymnasium as gym

    import glamhpc.envs.levels  # noqa: F401  (registers the BabyAI-Text ids)

    # minigrid has no 16-distractor GoToLocal; glamhpc.envs.levels is expected to add it.
    pending = {"BabyAI-GoToLocalS8N16-v0"}
    items = [*PAPER_SUITE, *DISTRACTOR_TRANSFER_SUITE]
    missing = sorted({i.level for i in items if i.level not in gym.registry} - pending)
    assert missing == []


def test_get_suite() -> None:
    assert get_suite("paper") == list(PAPER_SUITE)
    assert get_suite("compositions") == list(COMPOSITION_SUITE)
    assert get_suite("distractor_transfer") == list(DISTRACTOR_TRANSFER_SUITE)
    assert [i.name for i in get_suite("french")] == ["french"]
    assert [i.name for i in get_suite("goto_local_n16")] == ["goto_local_n16"]
    assert set(SUITES) == {"paper", "compositions", "distractor_transfer"}
    assert len({i.name for i in PAPER_SUITE}) == len(PAPER_SUITE)


def test_unknown_suite_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown suite 'nope'") as info:
        get_suite("nope")
    for name in [*SUITES, "other_nouns", "goto_local_n16"]:
        assert name in str(info.value)


def test_old_distractor_suite_name_says_what_it_became() -> None:
    with pytest.raises(ValueError) as info:
        get_suite("distractors")
    message = str(info.value)
    assert "\n" not in message
    for text in ("distractor_transfer", "Fig. 3b", "configs/paper/sweeps/distractors.yaml"):
        assert text in message
