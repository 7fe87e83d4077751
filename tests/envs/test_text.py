"""Text descriptions: each template branch by hand, the real upstream outputs, properties."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

from glamhpc.envs.text import describe

EMPTY = (OBJECT_TO_IDX["empty"], 0, 0)
UNSEEN = (OBJECT_TO_IDX["unseen"], 0, 0)
WALL = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)


def obj(type_name: str, color: str, state: str = "open") -> tuple[int, int, int]:
    """Encoding of one cell; state only matters for doors (minigrid writes 0 for other objects)."""
    return (OBJECT_TO_IDX[type_name], COLOR_TO_IDX[color], STATE_TO_IDX[state])


def view(cells: dict[tuple[int, int], tuple[int, int, int]], fill=EMPTY) -> np.ndarray:
    """A 7x7x3 egocentric encoding, [x, y, channel], `fill` everywhere except `cells`."""
    image = np.empty((7, 7, 3), dtype=np.uint8)
    image[:, :] = fill
    for (i, j), code in cells.items():
        image[i, j] = code
    return image


# --- the three real upstream outputs of the spec ------------------------------------------------


def test_upstream_output_walls_and_balls() -> None:
    image = view(
        {
            (6, 6): WALL,
            (0, 4): obj("ball", "yellow"),
            (0, 6): obj("ball", "blue"),
            (2, 4): obj("ball", "purple"),
            (3, 4): obj("ball", "yellow"),
            # A wall row far away: not on the right line, hidden behind the ball on the forward
            # line, so never described.
            **{(i, 0): WALL for i in range(7)},
        }
    )
    assert " | ".join(describe(image)) == (
        "You see a wall 3 steps right | You see a yellow ball 3 steps left and 2 steps forward"
        " | You see a blue ball 3 steps left | You see a purple ball 1 step left and 2 steps"
        " forward | You see a yellow ball 2 steps forward"
    )


def test_upstream_output_carrying() -> None:
    image = view(
        {
            (3, 6): obj("ball", "yellow"),  # minigrid draws the carried object in the agent cell
            (4, 6): WALL,
            (5, 6): UNSEEN,
            (6, 6): UNSEEN,
            (1, 4): obj("ball", "green"),
            (1, 5): obj("box", "purple"),
            (3, 2): obj("key", "green"),
        }
    )
    assert " | ".join(describe(image, carrying=("ball", "yellow"))) == (
        "You carry a yellow ball | You see a wall 1 step right | You see a green ball 2 steps"
        " left and 2 steps forward | You see a purple box 2 steps left and 1 step forward"
        " | You see a green key 4 steps forward"
    )


def test_upstream_output_locked_door() -> None:
    image = view({(4, 2): obj("door", "yellow", "locked")}, fill=UNSEEN)
    assert describe(image) == ["You see a locked yellow door 1 step right and 4 steps forward"]


# --- walls ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "sentence"),
    [
        ((3, 5), "You see a wall 1 step forward"),
        ((3, 4), "You see a wall 2 steps forward"),
        ((3, 0), "You see a wall 6 steps forward"),
        ((2, 6), "You see a wall 1 step left"),
        ((0, 6), "You see a wall 3 steps left"),
        ((4, 6), "You see a wall 1 step right"),
        ((5, 6), "You see a wall 2 steps right"),
        ((6, 6), "You see a wall 3 steps right"),
    ],
)
def test_wall_on_each_line_and_distance(cell: tuple[int, int], sentence: str) -> None:
    assert describe(view({cell: WALL})) == [sentence]


def test_walls_in_order_forward_left_right_only_nearest() -> None:
    image = view(
        {
            (6, 6): WALL,
            (5, 6): WALL,  # nearer one wins on the right line
            (0, 6): WALL,
            (3, 1): WALL,
            (3, 0): WALL,
        }
    )
    assert describe(image) == [
        "You see a wall 5 steps forward",
        "You see a wall 3 steps left",
        "You see a wall 2 steps right",
    ]


def test_unseen_cells_are_skipped_by_the_wall_scan() -> None:
    image = view({(3, 5): UNSEEN, (3, 4): UNSEEN, (3, 3): WALL}, fill=UNSEEN)
    assert describe(image) == ["You see a wall 3 steps forward"]


def test_wall_hidden_behind_object_or_door_is_not_described() -> None:
    image = view(
        {
            (3, 5): obj("key", "red"),
            (3, 4): WALL,
            (2, 6): obj("door", "blue", "closed"),
            (1, 6): WALL,
            (4, 6): (OBJECT_TO_IDX["floor"], COLOR_TO_IDX["blue"], 0),  # floor also stops it
            (5, 6): WALL,
        }
    )
    assert describe(image) == [
        "You see a closed blue door 1 step left",
        "You see a red key 1 step forward",
        "You see a blue floor 1 step right",
    ]


def test_walls_off_the_three_lines_are_never_described() -> None:
    image = view({(i, j): WALL for i in range(7) for j in range(7) if i != 3 and j != 6})
    assert describe(image) == []


def test_wall_in_agent_cell_or_behind_is_ignored() -> None:
    # The agent cell is not on any scan line (scans start at distance 1).
    assert describe(view({(3, 6): WALL})) == []


# --- objects -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "sentence"),
    [
        ((3, 5), "You see a red ball 1 step forward"),
        ((3, 1), "You see a red ball 5 steps forward"),
        ((2, 6), "You see a red ball 1 step left"),
        ((0, 6), "You see a red ball 3 steps left"),
        ((4, 6), "You see a red ball 1 step right"),
        ((6, 6), "You see a red ball 3 steps right"),
        ((2, 5), "You see a red ball 1 step left and 1 step forward"),
        ((0, 0), "You see a red ball 3 steps left and 6 steps forward"),
        ((4, 5), "You see a red ball 1 step right and 1 step forward"),
        ((6, 3), "You see a red ball 3 steps right and 3 steps forward"),
    ],
)
def test_object_clauses(cell: tuple[int, int], sentence: str) -> None:
    assert describe(view({cell: obj("ball", "red")})) == [sentence]


@pytest.mark.parametrize("type_name", ["key", "ball", "box"])
@pytest.mark.parametrize("color", ["red", "green", "blue", "purple", "yellow", "grey"])
def test_every_object_and_color(type_name: str, color: str) -> None:
    sentence = f"You see a {color} {type_name} 2 steps forward"
    assert describe(view({(3, 4): obj(type_name, color)})) == [sentence]


def test_objects_in_column_major_order() -> None:
    image = view(
        {
            (4, 0): obj("key", "blue"),
            (0, 6): obj("ball", "red"),
            (4, 5): obj("box", "grey"),
            (0, 1): obj("box", "green"),
            (3, 3): obj("key", "yellow"),
        }
    )
    assert describe(image) == [
        "You see a green box 3 steps left and 5 steps forward",
        "You see a red ball 3 steps left",
        "You see a yellow key 3 steps forward",
        "You see a blue key 1 step right and 6 steps forward",
        "You see a grey box 1 step right and 1 step forward",
    ]


def test_agent_cell_object_is_not_described_even_without_carrying() -> None:
    assert describe(view({(3, 6): obj("key", "red")})) == []


@pytest.mark.parametrize(
    ("state", "fix_grammar", "sentence"),
    [
        ("open", False, "You see a open purple door 2 steps forward"),  # upstream parity quirk
        ("open", True, "You see an open purple door 2 steps forward"),
        ("closed", False, "You see a closed purple door 2 steps forward"),
        ("closed", True, "You see a closed purple door 2 steps forward"),
        ("locked", False, "You see a locked purple door 2 steps forward"),
        ("locked", True, "You see a locked purple door 2 steps forward"),
    ],
)
def test_doors(state: str, fix_grammar: bool, sentence: str) -> None:
    image = view({(3, 4): obj("door", "purple", state)})
    assert describe(image, fix_grammar=fix_grammar) == [sentence]


def test_door_with_wall_neighbours_as_in_a_room_wall() -> None:
    # A closed door straight ahead in a wall row: the door stops the forward scan.
    image = view({**{(i, 3): WALL for i in range(7)}, (3, 3): obj("door", "red", "closed")})
    image[:, :3] = UNSEEN
    assert describe(image) == ["You see a closed red door 3 steps forward"]


def test_carrying_sentence_comes_first() -> None:
    image = view({(3, 5): WALL, (3, 6): obj("key", "grey"), (0, 0): obj("box", "blue")})
    assert describe(image, carrying=("key", "grey")) == [
        "You carry a grey key",
        "You see a wall 1 step forward",
        "You see a blue box 3 steps left and 6 steps forward",
    ]


@pytest.mark.parametrize("fill", [EMPTY, UNSEEN])
def test_empty_observation(fill: tuple[int, int, int]) -> None:
    assert describe(view({}, fill=fill)) == []


def test_fix_grammar_does_not_change_parity_text_elsewhere() -> None:
    image = view({(3, 5): WALL, (1, 2): obj("ball", "green")})
    assert describe(image, ("box", "red"), fix_grammar=True) == describe(image, ("box", "red"))


# --- French --------------------------------------------------------------------------------------


def test_french_walls() -> None:
    image = view({(3, 5): WALL, (0, 6): WALL, (5, 6): WALL})
    assert describe(image, language="french") == [
        "Tu vois un mur à 1 pas devant",
        "Tu vois un mur à 3 pas à gauche",
        "Tu vois un mur à 2 pas à droite",
    ]


def test_french_objects_and_doors() -> None:
    image = view(
        {
            (0, 6): obj("key", "red"),
            (1, 3): obj("ball", "green"),
            (3, 2): obj("box", "blue"),
            (4, 1): obj("door", "purple", "open"),
            (5, 5): obj("door", "yellow", "closed"),
            (6, 0): obj("door", "grey", "locked"),
        }
    )
    assert describe(image, language="french") == [
        "Tu vois une clef rouge 3 pas à gauche",
        "Tu vois une balle verte 2 pas à gauche et 3 pas devant",
        "Tu vois une boîte bleue 4 pas devant",
        "Tu vois une porte violette ouverte 1 pas à droite et 5 pas devant",
        "Tu vois une porte jaune fermée 2 pas à droite et 1 pas devant",
        "Tu vois une porte grise fermée à clef 3 pas à droite et 6 pas devant",
    ]


def test_french_carrying_keeps_english_words() -> None:
    image = view({(3, 6): obj("ball", "blue")})
    assert describe(image, ("ball", "blue"), language="french") == ["Tu portes une ball blue"]


FR_NOUN = {"key": "clef", "ball": "balle", "box": "boîte"}
FR_COLOR = {
    "red": "rouge",
    "green": "verte",
    "blue": "bleue",
    "purple": "violette",
    "yellow": "jaune",
    "grey": "grise",
}


@pytest.mark.parametrize("color", sorted(FR_COLOR))
@pytest.mark.parametrize("type_name", sorted(FR_NOUN))
def test_carrying_sentence_every_object_both_modes(type_name: str, color: str) -> None:
    image = view({(3, 6): obj(type_name, color)})
    held = (type_name, color)
    assert describe(image, held, "french") == [f"Tu portes une {type_name} {color}"]
    assert describe(image, held, "french", fix_grammar=True) == [
        f"Tu portes une {FR_NOUN[type_name]} {FR_COLOR[color]}"
    ]
    english = [f"You carry a {color} {type_name}"]
    assert describe(image, held) == describe(image, held, fix_grammar=True) == english


def test_french_fix_grammar_changes_only_the_carrying_sentence() -> None:
    # Upstream's French walls, objects and doors are already correct: the flag leaves them.
    image = view(
        {
            (3, 5): WALL,
            (0, 6): WALL,
            (1, 3): obj("ball", "green"),
            (3, 4): obj("door", "red", "open"),
            (5, 1): obj("door", "grey", "locked"),
        }
    )
    parity = describe(image, ("key", "purple"), language="french")
    fixed = describe(image, ("key", "purple"), language="french", fix_grammar=True)
    assert parity[0] == "Tu portes une key purple"
    assert fixed[0] == "Tu portes une clef violette"
    assert fixed[1:] == parity[1:]
    assert parity[1:] == [
        "Tu vois un mur à 1 pas devant",
        "Tu vois un mur à 3 pas à gauche",
        "Tu vois une balle verte 2 pas à gauche et 3 pas devant",
        "Tu vois une porte rouge ouverte 2 pas devant",
        "Tu vois une porte grise fermée à clef 2 pas à droite et 5 pas devant",
    ]


# --- input handling ------------------------------------------------------------------------------


def test_unknown_language() -> None:
    with pytest.raises(ValueError, match="english"):
        describe(view({}), language="german")


@pytest.mark.parametrize("shape", [(7, 7), (7, 7, 2), (5, 5, 3), (3, 7, 7)])
def test_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        describe(np.ones(shape, dtype=np.uint8))


@pytest.mark.parametrize("code", [(11, 0, 0), (6, 6, 0), (4, 0, 3), (255, 255, 255)])
def test_invalid_encoding_is_rejected(code: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="invalid encoding"):
        describe(view({(2, 2): code}))


def test_out_of_byte_range_is_rejected() -> None:
    image = view({}).astype(np.int64)
    image[1, 1] = (-1, 0, 0)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        describe(image)


def test_int64_and_non_contiguous_inputs_match_uint8() -> None:
    image = view({(3, 5): WALL, (1, 2): obj("ball", "green"), (5, 0): obj("door", "red", "locked")})
    expected = describe(image)
    assert describe(image.astype(np.int64)) == expected
    transposed_back = np.ascontiguousarray(image.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not transposed_back.flags.c_contiguous
    assert describe(transposed_back) == expected


def test_real_minigrid_observations_match_reference() -> None:
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI ids)

    env = gym.make("BabyAI-GoToLocal-v0")
    try:
        obs, _ = env.reset(seed=3)
        for step in range(30):
            carrying = env.unwrapped.carrying
            held = None if carrying is None else (carrying.type, carrying.color)
            assert describe(obs["image"], held) == reference_describe(obs["image"], held)
            obs, *_ = env.step([0, 2, 2, 1, 3][step % 5])
    finally:
        env.close()


# --- properties against a slow, literal reading of the spec --------------------------------------

TYPES = {v: k for k, v in OBJECT_TO_IDX.items()}
COLORS = {v: k for k, v in COLOR_TO_IDX.items()}
STATES = {v: k for k, v in STATE_TO_IDX.items()}


def reference_describe(image: np.ndarray, carrying: tuple[str, str] | None) -> list[str]:
    """Spec section 2 transcribed as directly as possible (slow loops, no tables)."""

    def steps(d: int, word: str) -> str:
        return f"{d} step{'s' if d > 1 else ''} {word}"

    out = []
    if carrying is not None:
        out.append(f"You carry a {carrying[1]} {carrying[0]}")
    lines = {
        "forward": [(3, j) for j in range(5, -1, -1)],
        "left": [(i, 6) for i in range(2, -1, -1)],
        "right": [(i, 6) for i in range(4, 7)],
    }
    for direction, cells in lines.items():
        for d, (i, j) in enumerate(cells, start=1):
            kind = TYPES[int(image[i, j, 0])]
            if kind in ("unseen", "empty"):
                continue
            if kind == "wall":
                out.append(f"You see a wall {steps(d, direction)}")
            break
    for i in range(7):
        for j in range(7):
            kind = TYPES[int(image[i, j, 0])]
            if kind in ("unseen", "empty", "wall") or (i, j) == (3, 6):
                continue
            dx, dy = i - 3, 6 - j
            clauses = []
            if dx:
                clauses.append(steps(abs(dx), "left" if dx < 0 else "right"))
            if dy:
                clauses.append(steps(dy, "forward"))
            color = COLORS[int(image[i, j, 1])]
            if kind == "door":
                what = f"{STATES[int(image[i, j, 2])]} {color} door"
            else:
                what = f"{color} {kind}"
            out.append(f"You see a {what} {' and '.join(clauses)}")
    return out


cell_codes = st.one_of(
    # Mostly see-through cells, so scan lines reach past their first cell.
    st.sampled_from([EMPTY, UNSEEN, EMPTY, WALL]),
    st.tuples(st.integers(0, 10), st.integers(0, 5), st.integers(0, 2)),
)
images = st.lists(cell_codes, min_size=49, max_size=49).map(
    lambda cells: np.array(cells, dtype=np.uint8).reshape(7, 7, 3)
)
carried = st.none() | st.tuples(
    st.sampled_from(["key", "ball", "box"]), st.sampled_from(list(COLOR_TO_IDX))
)
_POSITION = re.compile(
    r"(?:(\d+) steps? (left|right))?(?: and )?(?:(\d+) steps? forward)?$", re.ASCII
)


def _view_cell(sentence: str) -> tuple[int, int]:
    """(i, j) of the cell an English object sentence talks about."""
    match = _POSITION.search(sentence)
    assert match is not None and match.group(0), sentence
    lateral = int(match[1] or 0) * (-1 if match[2] == "left" else 1)
    return 3 + lateral, 6 - int(match[3] or 0)


@settings(max_examples=200, deadline=None)
@given(image=images, carrying=carried)
def test_matches_reference_and_ordering_rules(
    image: np.ndarray, carrying: tuple[str, str] | None
) -> None:
    sentences = describe(image, carrying)
    assert sentences == reference_describe(image, carrying)

    rest = sentences
    if carrying is not None:
        assert sentences[0].startswith("You carry a ")
        rest = sentences[1:]
    assert not any(s.startswith("You carry") for s in rest)
    walls = [s for s in rest if s.startswith("You see a wall ")]
    assert len(walls) <= 3
    assert rest[: len(walls)] == walls  # walls come before every object
    directions = [s.rsplit(" ", 1)[1] for s in walls]
    assert directions == sorted(directions, key=["forward", "left", "right"].index)
    assert len(set(directions)) == len(directions)
    objects = rest[len(walls) :]
    cells = [_view_cell(s) for s in objects]
    assert cells == sorted(cells)  # column i first, then row j: column-major
    expected_count = sum(
        1
        for i in range(7)
        for j in range(7)
        if image[i, j, 0] > OBJECT_TO_IDX["wall"] and (i, j) != (3, 6)
    )
    assert len(objects) == expected_count


@settings(max_examples=100, deadline=None)
@given(image=images, carrying=carried)
def test_french_has_the_same_structure(image: np.ndarray, carrying: tuple[str, str] | None) -> None:
    english = describe(image, carrying)
    french = describe(image, carrying, language="french")
    assert len(french) == len(english)
    prefixes = {
        "You carry a ": "Tu portes une ",
        "You see a wall ": "Tu vois un mur à ",
        "You see a ": "Tu vois une ",
    }
    for en, fr in zip(english, french, strict=True):
        prefix = next(p for p in prefixes if en.startswith(p))
        assert fr.startswith(prefixes[prefix])
