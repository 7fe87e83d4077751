"""The instruction vocabulary of the Symbolic-PPO baseline: words to indices, saved as JSON.

BabyAI grows its vocabulary while training (a word gets the next index the first time a mission
shows it), so indices depend on the order episodes were seen. Here it is fixed before training:
the words of BabyAI's instruction language plus the words of the level's first missions (seeded),
sorted. A run saves it in its directory (`VOCAB_FILE`) and its export, and reads it back on
resume and in evaluation, so an index always means the same word. Pure: no torch, no envs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from glamhpc.envs.vocab import COLORS, DOOR_STATES, OBJECTS
from glamhpc.fsutil import atomic_write_text

VOCAB_FILE = "symbolic_vocab.json"
PAD, UNKNOWN = 0, 1
"""Index 0 pads a short mission (the GRU's output is read at the last real word); 1 stands for a
word the vocabulary lacks (a generalisation suite's new noun)."""
_RESERVED = ("<pad>", "<unk>")
#: Words of BabyAI's instruction grammar (minigrid's verifier: go to / pick up / open / put next
#: to, articles, locations, sequencing) besides colours, objects and door states.
GRAMMAR_WORDS: tuple[str, ...] = (
    "a", "after", "and", "behind", "door", "front", "go", "in", "left", "next", "of", "on",
    "open", "pick", "put", "right", "the", "then", "to", "up", "you", "your",
)  # fmt: skip
_WORD = re.compile(r"[a-z]+")


def words(mission: str) -> list[str]:
    """The words of a mission as BabyAI's tokenizer reads them: lower-case letter runs (commas
    and other punctuation are dropped, accented letters split a word)."""
    return _WORD.findall(mission.lower())


def build_vocab(missions: Iterable[str]) -> list[str]:
    """Index -> word: the reserved entries, then BabyAI's words and the missions' words, sorted
    (so the same missions always give the same indices, whatever their order)."""
    known = {*GRAMMAR_WORDS, *COLORS, *OBJECTS, *DOOR_STATES}
    for mission in missions:
        known.update(words(mission))
    return [*_RESERVED, *sorted(known)]


def encode(missions: list[str], vocab: list[str]) -> tuple[list[list[int]], list[int]]:
    """Token indices of each mission, padded with `PAD` to the longest, and each length (>= 1:
    an empty mission reads as one unknown word, so the GRU always has a last step to read)."""
    index = {w: i for i, w in enumerate(vocab)}
    rows = [[index.get(w, UNKNOWN) for w in words(m)] or [UNKNOWN] for m in missions]
    width = max((len(r) for r in rows), default=1)
    return [r + [PAD] * (width - len(r)) for r in rows], [len(r) for r in rows]


def save_vocab(path: Path, vocab: list[str]) -> None:
    atomic_write_text(path, json.dumps({"format": 1, "words": vocab}, indent=0))


class VocabError(ValueError):
    """A vocabulary file that cannot be used (one line, with the file)."""


def load_vocab(path: Path) -> list[str]:
    """The words of a saved vocabulary, checked (JSON only: nothing is unpickled)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VocabError(f"cannot read the instruction vocabulary {path}: {exc}") from None
    vocab = data.get("words") if isinstance(data, dict) else None
    if (
        not isinstance(vocab, list)
        or not all(isinstance(w, str) for w in vocab)
        or tuple(vocab[: len(_RESERVED)]) != _RESERVED
        or len(set(vocab)) != len(vocab)
    ):
        raise VocabError(
            f"{path} is not a glamhpc instruction vocabulary (a 'words' list starting with "
            f"{list(_RESERVED)}, no duplicates); restore it from the run's export"
        )
    return vocab
