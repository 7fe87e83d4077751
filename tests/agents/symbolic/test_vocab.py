"""The instruction vocabulary: BabyAI's tokenisation, a fixed order, JSON that checks itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glamhpc.agents.symbolic.vocab import (
    GRAMMAR_WORDS,
    PAD,
    UNKNOWN,
    VocabError,
    build_vocab,
    encode,
    load_vocab,
    save_vocab,
    words,
)
from glamhpc.envs.vocab import COLORS, DOOR_STATES, OBJECTS


@pytest.mark.parametrize(
    ("mission", "expected"),
    [
        ("go to the red ball", ["go", "to", "the", "red", "ball"]),
        ("pick up a key, then go to the grey door", ["pick", "up", "a", "key", "then", "go", "to",
                                                     "the", "grey", "door"]),
        ("Open THE door on your left", ["open", "the", "door", "on", "your", "left"]),
        ("put the box next to the ball  ", ["put", "the", "box", "next", "to", "the", "ball"]),
        ("", []),
        ("ouvre la porte fermée", ["ouvre", "la", "porte", "ferm", "e"]),  # BabyAI's [a-z]+
        ("go to 3 balls!", ["go", "to", "balls"]),
    ],
)  # fmt: skip
def test_words_reads_missions_as_babyai_does(mission: str, expected: list[str]) -> None:
    assert words(mission) == expected


def test_vocab_is_reserved_then_sorted_and_order_independent() -> None:
    missions = ["go to the red ball", "pick up the zebra", "open a door"]
    vocab = build_vocab(missions)
    assert vocab[:2] == ["<pad>", "<unk>"] and vocab[PAD] == "<pad>" and vocab[UNKNOWN] == "<unk>"
    assert vocab[2:] == sorted(vocab[2:]) and len(set(vocab)) == len(vocab)
    assert build_vocab(reversed(missions)) == vocab
    assert "zebra" in vocab  # a level's own words join BabyAI's
    assert {*GRAMMAR_WORDS, *COLORS, *OBJECTS, *DOOR_STATES} <= set(vocab)
    assert build_vocab([]) == [w for w in vocab if w != "zebra"]


def test_encode_pads_and_marks_unknown_words() -> None:
    vocab = build_vocab([])
    tokens, lengths = encode(["go to the red ball", "open the door", "go to the zebra", ""], vocab)
    assert lengths == [5, 3, 4, 1]
    assert all(len(row) == 5 for row in tokens)
    assert [vocab[i] for i in tokens[0]] == ["go", "to", "the", "red", "ball"]
    assert tokens[1][3:] == [PAD, PAD]
    assert tokens[2][3] == UNKNOWN and tokens[2][4] == PAD
    assert tokens[3] == [UNKNOWN, PAD, PAD, PAD, PAD]  # an empty mission still has a last word
    assert encode([], vocab) == ([], [])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    vocab = build_vocab(["go to the purple box"])
    save_vocab(tmp_path / "v.json", vocab)
    assert load_vocab(tmp_path / "v.json") == vocab


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps(["<pad>", "<unk>", "a"]),  # not an object
        json.dumps({"words": ["a", "b"]}),  # reserved entries missing
        json.dumps({"words": ["<pad>", "<unk>", "a", "a"]}),  # duplicate
        json.dumps({"words": ["<pad>", "<unk>", 3]}),  # not a word
        json.dumps({"format": 1}),
    ],
)
def test_a_bad_vocabulary_file_is_one_clear_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "v.json"
    path.write_text(content)
    with pytest.raises(VocabError, match=r"v\.json"):
        load_vocab(path)
    with pytest.raises(VocabError, match="cannot read"):
        load_vocab(tmp_path / "missing.json")
