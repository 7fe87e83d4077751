"""BabyAI-Text words shared by the environment text layer and the tiny model's corpus.

A leaf module without imports, so `policy` can use it without depending on `envs` (minigrid).
"""

from __future__ import annotations

COLORS: tuple[str, ...] = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS: tuple[str, ...] = ("key", "ball", "box")
DOOR_STATES: tuple[str, ...] = ("locked", "closed", "open")

# French words of the upstream French descriptions (BABYAI_TEXT_SPEC section 2).
FR_NOUNS: dict[str, str] = {"key": "clef", "ball": "balle", "box": "boîte", "door": "porte"}
FR_COLORS: dict[str, str] = {
    "red": "rouge",
    "green": "verte",
    "blue": "bleue",
    "purple": "violette",
    "yellow": "jaune",
    "grey": "grise",
}
FR_STATES: dict[str, str] = {"open": "ouverte", "closed": "fermée", "locked": "fermée à clef"}
