"""Prompt builder and History window: exact whitespace (spec section 6), French, window rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glamhpc.envs.actions import action_texts
from glamhpc.envs.prompt import MAX_WINDOW, History, build_prompt, french_goal

ACTIONS = action_texts("standard")
HEADER = (
    "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle"
    " \n Goal of the agent: go to the red ball"
)
OBS_A = ["You see a wall 1 step left", "You see a red ball 2 steps forward"]
OBS_B = ["You see a red ball 1 step forward"]


def test_first_step_of_an_episode() -> None:
    prompt = build_prompt("go to the red ball", [OBS_A], [], ACTIONS)
    assert prompt == (
        "Possible action of the agent: turn left, turn right, go forward, pick up, drop, toggle \n"
        " Goal of the agent: go to the red ball \n"
        " Observation 0: You see a wall 1 step left, You see a red ball 2 steps forward, \n"
        " Action 0: "
    )


def test_two_steps() -> None:
    prompt = build_prompt("go to the red ball", [OBS_A, OBS_B], ["go forward"], ACTIONS)
    assert prompt == (
        HEADER + " \n Observation 0: You see a wall 1 step left, You see a red ball 2 steps "
        "forward, \n Action 0: go forward \n Observation 1: You see a red ball 1 step forward, "
        "\n Action 1: "
    )


def test_empty_description_list() -> None:
    prompt = build_prompt("go to the red ball", [[], []], ["turn left"], ACTIONS)
    assert prompt == (
        HEADER + " \n Observation 0: \n Action 0: turn left \n Observation 1: \n Action 1: "
    )


def test_restricted_header_drops_only_the_last_comma() -> None:
    prompt = build_prompt("go to a box", [[]], [], action_texts("restricted"))
    assert prompt.startswith(
        "Possible action of the agent: turn left, turn right, go forward \n Goal of the agent: "
        "go to a box \n"
    )


@pytest.mark.parametrize(("fix_grammar", "goal"), [(False, "une"), (True, "la")])
def test_french_prompt(fix_grammar: bool, goal: str) -> None:
    prompt = build_prompt(
        "go to the red ball",
        [["Tu vois un mur à 1 pas à gauche"], ["Tu vois une balle rouge 1 pas devant"]],
        ["aller tout droit"],
        action_texts("standard", "french"),
        language="french",
        fix_grammar=fix_grammar,
    )
    assert prompt == (
        "Actions possibles pour l'agent: tourner à gauche, tourner à droite, aller tout droit, "
        f"attraper, lâcher, basculer \n But de l'agent: aller à {goal} balle rouge \n "
        "Observation 0: Tu vois un mur à 1 pas à gauche, \n Action 0: aller tout droit \n "
        "Observation 1: Tu vois une balle rouge 1 pas devant, \n Action 1: "
    )


def test_french_colourless_goal_keeps_upstreams_trailing_space() -> None:
    french = action_texts("standard", "french")
    parity = build_prompt("go to the box", [[]], [], french, "french")
    fixed = build_prompt("go to the box", [[]], [], french, "french", fix_grammar=True)
    assert "But de l'agent: aller à la boîte  \n Observation 0: " in parity
    assert "But de l'agent: aller à la boîte \n Observation 0: " in fixed


FR_NOUN = {"key": "clef", "ball": "balle", "box": "boîte"}
FR_COLOR = {
    "red": "rouge",
    "green": "verte",
    "blue": "bleue",
    "purple": "violette",
    "yellow": "jaune",
    "grey": "grise",
}
GOTO_CASES = [
    (article, noun, color)
    for article in ("the", "a")
    for noun in ("key", "ball", "box")
    for color in (None, *FR_COLOR)
]


def _mission(article: str, noun: str, color: str | None) -> str:
    return f"go to {article} {color + ' ' if color else ''}{noun}"


@pytest.mark.parametrize(("article", "noun", "color"), GOTO_CASES)
def test_french_goal_upstream_every_case(article: str, noun: str, color: str | None) -> None:
    # Upstream tests "the" then "a" as substrings of the whole mission, the last hit winning: no
    # colour word holds an "a", so "une" comes from the article "a" or the noun "ball".
    det = "une" if article == "a" or noun == "ball" else "la"
    # Empty colour slot: "aller à la clef " (upstream joins three slots with spaces).
    expected = f"aller à {det} {FR_NOUN[noun]} {FR_COLOR[color] if color else ''}"
    assert french_goal(_mission(article, noun, color)) == expected


@pytest.mark.parametrize(("article", "noun", "color"), GOTO_CASES)
def test_french_goal_fixed_every_case(article: str, noun: str, color: str | None) -> None:
    det = {"the": "la", "a": "une"}[article]
    expected = f"aller à {det} {FR_NOUN[noun]}" + (f" {FR_COLOR[color]}" if color else "")
    assert french_goal(_mission(article, noun, color), fix_grammar=True) == expected


@pytest.mark.parametrize(
    ("mission", "parity", "fixed"),
    [
        ("go to the red ball", "aller à une balle rouge", "aller à la balle rouge"),
        ("go to the red key", "aller à la clef rouge", "aller à la clef rouge"),
        ("go to a grey box", "aller à une boîte grise", "aller à une boîte grise"),
        ("go to the box", "aller à la boîte ", "aller à la boîte"),
        ("go to a ball", "aller à une balle ", "aller à une balle"),
        ("go to the purple door", "aller à la  violette", "aller à la porte violette"),
    ],
)
def test_french_goal_examples(mission: str, parity: str, fixed: str) -> None:
    assert french_goal(mission) == parity
    assert french_goal(mission, fix_grammar=True) == fixed


def test_upstream_french_goal_never_fails() -> None:
    # Upstream translated whatever mission it got, leaving unknown slots empty.
    assert french_goal("open the door") == "aller à la  "
    assert french_goal("pick up a red key") == "aller à une clef rouge"
    assert french_goal("") == "aller à   "


@pytest.mark.parametrize(
    "mission",
    [
        "pick up the red ball",
        "open the door",
        "go to the red ball, then pick up a key",
        "go to the pink ball",
        "go to red ball",
        "",
    ],
)
def test_untranslatable_mission_raises_naming_it_with_fix_grammar(mission: str) -> None:
    with pytest.raises(ValueError, match="cannot translate mission") as info:
        build_prompt(mission, [[]], [], ACTIONS, language="french", fix_grammar=True)
    assert repr(mission) in str(info.value)


def test_english_prompt_keeps_any_mission() -> None:
    mission = "pick up the red ball, then go to a grey key"
    assert f"Goal of the agent: {mission} \n" in build_prompt(mission, [[]], [], ACTIONS)
    fixed = build_prompt(mission, [[]], [], ACTIONS, fix_grammar=True)
    assert fixed == build_prompt(mission, [[]], [], ACTIONS)


@pytest.mark.parametrize(
    ("observations", "actions"),
    [([], []), ([[]], ["turn left"]), ([[], [], []], ["turn left"]), ([[], []], [])],
)
def test_observation_and_action_counts_must_agree(observations, actions) -> None:
    with pytest.raises(ValueError):
        build_prompt("go to the red ball", observations, actions, ACTIONS)


def test_empty_action_space_and_unknown_language() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_prompt("go to the red ball", [[]], [], [])
    with pytest.raises(ValueError, match="unknown language"):
        build_prompt("go to the red ball", [[]], [], ACTIONS, language="german")


# --- History -------------------------------------------------------------------------------------


def obs(n: int) -> list[str]:
    return [f"You see a red ball {n} steps forward"]


def test_history_first_prompt_has_only_observation_0() -> None:
    history = History()
    history.reset(OBS_A)
    assert history.prompt("go to the red ball", ACTIONS) == build_prompt(
        "go to the red ball", [OBS_A], [], ACTIONS
    )
    assert history.observations == [tuple(OBS_A)]
    assert history.actions == []


def test_window_of_3_slides_over_5_steps_and_renumbers() -> None:
    history = History(3)
    history.reset(obs(0))
    for n in range(1, 5):
        history.push(f"action {n - 1}", obs(n))
    assert history.observations == [tuple(obs(2)), tuple(obs(3)), tuple(obs(4))]
    assert history.actions == ["action 2", "action 3"]
    assert history.prompt("go to the red ball", ACTIONS) == (
        HEADER + " \n Observation 0: You see a red ball 2 steps forward, \n Action 0: action 2"
        " \n Observation 1: You see a red ball 3 steps forward, \n Action 1: action 3"
        " \n Observation 2: You see a red ball 4 steps forward, \n Action 2: "
    )


def test_window_1_only_ever_shows_the_current_observation() -> None:
    history = History(1)
    history.reset(obs(0))
    history.push("turn left", obs(1))
    history.push("turn right", obs(2))
    assert history.actions == []
    assert history.prompt("go to the red ball", ACTIONS) == (
        HEADER + " \n Observation 0: You see a red ball 2 steps forward, \n Action 0: "
    )


def test_window_9_keeps_nine_observations() -> None:
    history = History(9)
    history.reset(obs(0))
    for n in range(1, 13):
        history.push(f"a{n - 1}", obs(n))
    prompt = history.prompt("go to the red ball", ACTIONS)
    assert [o[0] for o in history.observations] == [obs(n)[0] for n in range(4, 13)]
    assert history.actions == [f"a{n}" for n in range(4, 12)]
    assert "Observation 8: You see a red ball 12 steps forward" in prompt
    assert "Observation 9" not in prompt
    assert "Observation 0: You see a red ball 4 steps forward, \n Action 0: a4 \n" in prompt


@pytest.mark.parametrize("window", [0, -1, 10, 2.5, True, "3", None])
def test_invalid_window(window) -> None:
    with pytest.raises(ValueError, match=r"1\.\.9"):
        History(window)


def test_numpy_integer_window_is_accepted() -> None:
    import numpy as np

    history = History(np.int64(2))
    assert history.window == 2 and type(history.window) is int


def test_reset_clears_the_previous_episode() -> None:
    history = History(3)
    history.reset(obs(0))
    history.push("go forward", obs(1))
    history.reset(obs(7))
    assert history.observations == [tuple(obs(7))]
    assert history.actions == []
    assert "Observation 1" not in history.prompt("go to the red ball", ACTIONS)


def test_push_or_prompt_before_reset_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        History().push("turn left", [])
    with pytest.raises(RuntimeError, match="reset"):
        History().prompt("go to the red ball", ACTIONS)


def test_stored_observations_do_not_alias_the_caller_list() -> None:
    history = History()
    description = list(OBS_A)
    history.reset(description)
    description.append("You see a grey key 1 step left")
    assert history.observations == [tuple(OBS_A)]
    assert "grey key" not in history.prompt("go to the red ball", ACTIONS)


@pytest.mark.parametrize("fix_grammar", [False, True])
def test_history_french_prompt(fix_grammar: bool) -> None:
    history = History(2)
    history.reset(["Tu vois une balle rouge 2 pas devant"])
    history.push("aller tout droit", [])
    french = action_texts("standard", "french")
    prompt = history.prompt("go to the red ball", french, "french", fix_grammar)
    assert prompt == build_prompt(
        "go to the red ball",
        [["Tu vois une balle rouge 2 pas devant"], []],
        ["aller tout droit"],
        french,
        "french",
        fix_grammar,
    )
    assert french_goal("go to the red ball", fix_grammar) in prompt


descriptions = st.lists(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20),
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(
    window=st.integers(1, MAX_WINDOW),
    first=descriptions,
    steps=st.lists(st.tuples(st.sampled_from(ACTIONS), descriptions), max_size=14),
)
def test_history_prompt_equals_build_prompt(window, first, steps) -> None:
    history = History(window)
    history.reset(first)
    everything = [first] + [o for _, o in steps]
    taken = [a for a, _ in steps]
    for action, observation in steps:
        history.push(action, observation)
    kept = everything[-window:]
    assert history.observations == [tuple(o) for o in kept]
    assert history.actions == (taken[-(window - 1) :] if window > 1 else [])
    prompt = history.prompt("go to the red ball", ACTIONS)
    assert prompt == build_prompt("go to the red ball", kept, history.actions, ACTIONS)
    assert prompt.endswith(f"\n Action {len(kept) - 1}: ")
