"""Text action spaces (spec section 3): the strings the LLM scores and the minigrid ids they run.

Every space maps each candidate string to a minigrid action id (0 left, 1 right, 2 forward,
3 pickup, 4 drop, 5 toggle, 6 done). The "augmented" space adds distractor actions that all map
to `done` (id 6), which BabyAI levels treat as a no-op, so they only cost a step.

The language of the candidates is orthogonal to the space: `action_texts(name, "french")` gives
the French words (spec section 6) that the French prompt header lists and the policy scores.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTION_SPACES",
    "FRENCH_ACTION_TEXTS",
    "ActionSpec",
    "action_texts",
    "env_actions",
    "get_action_space",
]


@dataclass(frozen=True)
class ActionSpec:
    """One candidate action: the text the policy scores and the minigrid action it triggers."""

    text: str
    env_action: int


def _space(*pairs: tuple[str, int]) -> tuple[ActionSpec, ...]:
    return tuple(ActionSpec(text, env_action) for text, env_action in pairs)


_STANDARD = _space(
    ("turn left", 0),
    ("turn right", 1),
    ("go forward", 2),
    ("pick up", 3),
    ("drop", 4),
    ("toggle", 5),
)
# minigrid's `done` action: BabyAI levels ignore it (no movement, no success check side effect).
_NO_OP = 6

ACTION_SPACES: dict[str, tuple[ActionSpec, ...]] = {
    "standard": _STANDARD,
    "restricted": _STANDARD[:3],
    "augmented": _STANDARD + _space(("sleep", _NO_OP), ("do nothing", _NO_OP), ("think", _NO_OP)),
    "synonyms": _space(
        ("rotate left", 0),
        ("rotate right", 1),
        ("move ahead", 2),
        ("take", 3),
        ("release", 4),
        ("switch", 5),
    ),
}

# French words of the standard actions (spec section 6, GoToFrench). Only these six are defined
# upstream; other spaces have no French version and are rejected rather than half-translated.
FRENCH_ACTION_TEXTS: dict[str, str] = {
    "turn left": "tourner à gauche",
    "turn right": "tourner à droite",
    "go forward": "aller tout droit",
    "pick up": "attraper",
    "drop": "lâcher",
    "toggle": "basculer",
}

_LANGUAGES = ("english", "french")


def get_action_space(name: str) -> tuple[ActionSpec, ...]:
    """The action space called `name`; ValueError listing the known names otherwise."""
    try:
        return ACTION_SPACES[name]
    except KeyError:
        raise ValueError(
            f"unknown action space {name!r}; expected one of {sorted(ACTION_SPACES)}"
        ) from None


def action_texts(name: str, language: str = "english") -> list[str]:
    """Candidate strings of space `name`, in action-index order, in `language`.

    Raises:
        ValueError: unknown space or language, or a space with no French words (only standard
            and restricted have them).
    """
    texts = [spec.text for spec in get_action_space(name)]
    if language == "english":
        return texts
    if language == "french":
        missing = [t for t in texts if t not in FRENCH_ACTION_TEXTS]
        if missing:
            raise ValueError(
                f"action space {name!r} has no French words for {missing}; "
                f"French is defined for the standard actions {list(FRENCH_ACTION_TEXTS)}"
            )
        return [FRENCH_ACTION_TEXTS[t] for t in texts]
    raise ValueError(f"unknown language {language!r}; expected one of {list(_LANGUAGES)}")


def env_actions(name: str) -> list[int]:
    """minigrid action id of each candidate of space `name`, in action-index order."""
    return [spec.env_action for spec in get_action_space(name)]
