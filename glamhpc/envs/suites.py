"""Generalization test suites of the GLAM paper (spec section 7), and a distractor-transfer suite.

A suite is a list of `SuiteItem`s; each names a level, an action space, a language and optionally
a prompt *modifier*: a pure `str -> str` function applied to the whole prompt right before the
policy scores it (the environment itself is unchanged, so success is still judged on the real
objects).

Modifiers replace whole words, all at once: a single regex pass maps every match through the
table, so "key -> chair" can never be re-mapped by a later rule, and word boundaries keep "box"
from matching inside "boxes" or "red" inside "colored".

Whole prompt, header included (parity: upstream did `prompt.replace(...)` on the full string).
With every action space of `glamhpc.envs.actions` this makes no difference to the header and the
"Action k:" lines, since no candidate contains a noun or colour word; a test pins that down. Had
a candidate contained one (e.g. "pick up the key"), the header would list the modified word
while the scored continuation keeps the original, which is what upstream did too. The candidate
strings themselves are never modified.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "ADJECTIVE_SYNONYMS",
    "COMPOSITION_SUITE",
    "DISTRACTOR_TRANSFER_SUITE",
    "GOAL_REPHRASE_1",
    "GOAL_REPHRASE_2",
    "INVENTED_ADJECTIVES",
    "INVENTED_NOUNS",
    "MODIFIERS",
    "OTHER_NOUNS",
    "PAPER_SUITE",
    "RENAMED_SUITES",
    "SUITES",
    "Modifier",
    "SuiteItem",
    "WordReplacement",
    "get_modifier",
    "get_suite",
]

Modifier = Callable[[str], str]

OTHER_NOUNS: Mapping[str, str] = MappingProxyType({"key": "chair", "ball": "table", "box": "car"})
ADJECTIVE_SYNONYMS: Mapping[str, str] = MappingProxyType(
    {
        "red": "vermilion",
        "green": "jade",
        "blue": "cyan",
        "purple": "violet",
        "yellow": "golden",
        "grey": "silver",
    }
)
INVENTED_NOUNS: Mapping[str, str] = MappingProxyType({"key": "dax", "ball": "xolo", "box": "afze"})
INVENTED_ADJECTIVES: Mapping[str, str] = MappingProxyType(
    {
        "red": "faze",
        "green": "jatu",
        "blue": "croh",
        "purple": "vurst",
        "yellow": "gakul",
        "grey": "sil",
    }
)
GOAL_REPHRASE_1: Mapping[str, str] = MappingProxyType(
    {"Goal of the agent": "I would like the agent to"}
)
GOAL_REPHRASE_2: Mapping[str, str] = MappingProxyType({"Goal of the agent": "You have to"})


@dataclass(frozen=True)
class WordReplacement:
    """Simultaneous, case-sensitive, whole-word replacement (a `Modifier`).

    A dataclass rather than a closure so a modifier is comparable, printable and picklable
    (suite items travel to evaluation workers and into run metadata).
    """

    mapping: Mapping[str, str]
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.mapping or not all(self.mapping):
            raise ValueError("a WordReplacement needs at least one non-empty word to replace")
        # Longest first so a phrase wins over any word it contains.
        words = sorted(self.mapping, key=len, reverse=True)
        pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\b")
        object.__setattr__(self, "mapping", MappingProxyType(dict(self.mapping)))
        object.__setattr__(self, "_pattern", pattern)

    def __call__(self, prompt: str) -> str:
        return self._pattern.sub(self._substitute, prompt)

    def __hash__(self) -> int:
        # The generated hash would hash the (unhashable) mappingproxy.
        return hash(tuple(sorted(self.mapping.items())))

    def _substitute(self, match: re.Match[str]) -> str:
        return self.mapping[match.group(0)]

    def __reduce__(self) -> tuple[type[WordReplacement], tuple[dict[str, str]]]:
        # mappingproxy cannot be pickled; rebuild from a plain dict.
        return (WordReplacement, (dict(self.mapping),))


#: Modifiers by name (spec section 7, tests 1-7).
MODIFIERS: Mapping[str, WordReplacement] = MappingProxyType(
    {
        "other_nouns": WordReplacement(OTHER_NOUNS),
        "adjective_synonyms": WordReplacement(ADJECTIVE_SYNONYMS),
        "invented_nouns": WordReplacement(INVENTED_NOUNS),
        "invented_adjectives": WordReplacement(INVENTED_ADJECTIVES),
        # Test 5 = 3 + 4: nouns and adjectives are disjoint, so one simultaneous pass is the
        # same as applying one after the other.
        "invented_both": WordReplacement({**INVENTED_NOUNS, **INVENTED_ADJECTIVES}),
        "goal_rephrase_1": WordReplacement(GOAL_REPHRASE_1),
        "goal_rephrase_2": WordReplacement(GOAL_REPHRASE_2),
    }
)


def get_modifier(name: str) -> WordReplacement:
    """The modifier called `name`; ValueError listing the known names otherwise."""
    try:
        return MODIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown modifier {name!r}; expected one of {list(MODIFIERS)}") from None


@dataclass(frozen=True)
class SuiteItem:
    """One test of a suite: where to run the policy and how its prompts are altered.

    Attributes:
        name: short identifier, unique within the suites (used in result tables and CLI).
        level: gymnasium id of the level (registered by minigrid or `glamhpc.envs.levels`).
        modifier: applied to every prompt before scoring; None leaves prompts untouched.
        action_space: name in `glamhpc.envs.actions.ACTION_SPACES`.
        language: "english" or "french": descriptions, prompt header and candidate words.
    """

    name: str
    level: str
    modifier: Modifier | None = None
    action_space: str = "standard"
    language: str = "english"

    def modify(self, prompt: str) -> str:
        """The prompt the policy sees for this item."""
        return prompt if self.modifier is None else self.modifier(prompt)


_TRAIN = "BabyAI-MixedTrainLocal-v0"


def _modified(name: str) -> SuiteItem:
    return SuiteItem(name, _TRAIN, modifier=MODIFIERS[name])


COMPOSITION_SUITE: tuple[SuiteItem, ...] = (
    SuiteItem("pickup_seq_pickup", "BabyAI-PickUpSeqPickUpLocal-v0"),
    SuiteItem("pickup_then_goto", "BabyAI-PickUpThenGoToLocal-v0"),
    SuiteItem("goto_after_pickup", "BabyAI-GoToAfterPickUpLocal-v0"),
    SuiteItem("pickup_seq_goto", "BabyAI-PickUpSeqGoToLocal-v0"),
)

# GoTo in one 8x8 room with 4, 8 and 16 distractors. minigrid registers S8N4 and GoToLocal
# (= S8N8); S8N16 is not a minigrid id and must be registered by `glamhpc.envs.levels`.
# Transfer of ONE trained agent across distractor counts: not the paper's Fig. 3b, which trains a
# separate agent per count (configs/paper/sweeps/distractors.yaml), hence not in PAPER_SUITE.
DISTRACTOR_TRANSFER_SUITE: tuple[SuiteItem, ...] = (
    SuiteItem("goto_local_n4", "BabyAI-GoToLocalS8N4-v0"),
    SuiteItem("goto_local_n8", "BabyAI-GoToLocal-v0"),
    SuiteItem("goto_local_n16", "BabyAI-GoToLocalS8N16-v0"),
)

PAPER_SUITE: tuple[SuiteItem, ...] = (
    SuiteItem("no_modification", _TRAIN),
    SuiteItem("mixed_test", "BabyAI-MixedTestLocal-v0"),
    *(_modified(name) for name in MODIFIERS),
    SuiteItem("synonym_actions", _TRAIN, action_space="synonyms"),
    SuiteItem("french", "BabyAI-GoToFrench-v0", language="french"),
    *COMPOSITION_SUITE,
)

#: Named groups of items; `get_suite` also accepts any single item's name.
SUITES: Mapping[str, tuple[SuiteItem, ...]] = MappingProxyType(
    {
        "paper": PAPER_SUITE,
        "compositions": COMPOSITION_SUITE,
        "distractor_transfer": DISTRACTOR_TRANSFER_SUITE,
    }
)
_ITEMS: Mapping[str, SuiteItem] = MappingProxyType(
    {item.name: item for items in SUITES.values() for item in items}
)
#: Old suite names -> why they went and what to use (one line each, for the CLI's error).
RENAMED_SUITES: Mapping[str, str] = MappingProxyType(
    {
        "distractors": (
            "suite 'distractors' is now 'distractor_transfer': it evaluates ONE trained agent on "
            "4/8/16 distractors, while the paper's Fig. 3b trains one agent per count "
            "(glamhpc sweep configs/paper/sweeps/distractors.yaml)"
        )
    }
)


def get_suite(name: str) -> list[SuiteItem]:
    """Items of suite `name` (a group from `SUITES` or a single item's name), in order.

    Raises:
        ValueError: unknown name; the message lists every known suite and item.
    """
    if name in SUITES:
        return list(SUITES[name])
    if name in _ITEMS:
        return [_ITEMS[name]]
    if name in RENAMED_SUITES:
        raise ValueError(RENAMED_SUITES[name])
    raise ValueError(
        f"unknown suite {name!r}; expected a suite {list(SUITES)} or an item {list(_ITEMS)}"
    )
