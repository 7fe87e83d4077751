"""A deterministic BabyAI-Text corpus for training the built-in tiny-t5 tokenizer.

The tiny model is trained from scratch, so its tokenizer only has to cover the language the
environment produces (docs BABYAI_TEXT_SPEC.md): the prompt templates, every colour / object /
door state / distance, the missions of every level family, and the action names of every action
space (standard, restricted, augmented, synonyms, French). The word lists are written out here
instead of imported from `glamhpc.envs` so that the policy package never depends on the
environment stack (and the tokenizer of a cached build does not silently change when the envs
evolve: the corpus text is part of the cache key).

The generalisation-test vocabulary (spec section 7: vermilion, golden, dax, xolo, "I would like the
agent to", ...) is deliberately NOT in the corpus: those words must reach the model as unseen
subword pieces, exactly like a real held-out word would.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from glamhpc.envs.vocab import COLORS, DOOR_STATES, OBJECTS
from glamhpc.envs.vocab import FR_COLORS as COLORS_FR
from glamhpc.envs.vocab import FR_NOUNS as OBJECTS_FR
from glamhpc.envs.vocab import FR_STATES as DOOR_STATES_FR

# Action spaces, in env-action order (spec section 3). The French names are those of the French
# prompt header. Every one of these strings becomes a single token of the tiny tokenizer (see
# tiny.py: the action-length bias remedy), so this tuple is the contract with the envs.
ACTION_SPACES: dict[str, tuple[str, ...]] = {
    "standard": ("turn left", "turn right", "go forward", "pick up", "drop", "toggle"),
    "restricted": ("turn left", "turn right", "go forward"),
    "augmented": (
        "turn left",
        "turn right",
        "go forward",
        "pick up",
        "drop",
        "toggle",
        "sleep",
        "do nothing",
        "think",
    ),
    "synonyms": ("rotate left", "rotate right", "move ahead", "take", "release", "switch"),
    "french": (
        "tourner à gauche",
        "tourner à droite",
        "aller tout droit",
        "attraper",
        "lâcher",
        "basculer",
    ),
}


def all_action_texts() -> list[str]:
    """Every distinct action string of every action space, in first-seen order."""
    seen: dict[str, None] = {}
    for texts in ACTION_SPACES.values():
        for text in texts:
            seen.setdefault(text, None)
    return list(seen)


def _steps(d: int, unit: str = "step") -> str:
    return f"{d} {unit}{'s' if d > 1 else ''}"


def _clauses_en(dx: int, dy: int) -> str:
    """Relative position clause, spec section 2.3 (lateral first, then forward)."""
    if dx == 0:
        return f"{_steps(dy)} forward"
    side = "right" if dx > 0 else "left"
    lateral = f"{_steps(abs(dx))} {side}"
    return lateral if dy == 0 else f"{lateral} and {_steps(dy)} forward"


def _clauses_fr(dx: int, dy: int) -> str:
    if dx == 0:
        return f"{dy} pas devant"
    side = "à droite" if dx > 0 else "à gauche"
    lateral = f"{abs(dx)} pas {side}"
    return lateral if dy == 0 else f"{lateral} et {dy} pas devant"


def _positions() -> Iterator[tuple[int, int]]:
    # The 7x7 egocentric view: dx in -3..3, dy in 0..6, minus the agent's own cell.
    for dx in range(-3, 4):
        for dy in range(0, 7):
            if (dx, dy) != (0, 0):
                yield dx, dy


def observation_sentences(language: str = "english") -> list[str]:
    """Every sentence the text layer can emit for one cell, for `language`."""
    out: list[str] = []
    if language == "english":
        for direction in ("forward", "left", "right"):
            for d in range(1, 7):
                out.append(f"You see a wall {_steps(d)} {direction}")
        for color in COLORS:
            for obj in OBJECTS:
                out.append(f"You carry a {color} {obj}")
        for dx, dy in _positions():
            where = _clauses_en(dx, dy)
            for color in COLORS:
                for obj in OBJECTS:
                    out.append(f"You see a {color} {obj} {where}")
                for state in DOOR_STATES:
                    # Parity quirk "a open" kept; the fixed grammar "an open" is a flag.
                    out.append(f"You see a {state} {color} door {where}")
                out.append(f"You see an open {color} door {where}")
    elif language == "french":
        for direction in ("devant", "à gauche", "à droite"):
            for d in range(1, 7):
                out.append(f"Tu vois un mur à {d} pas {direction}")
        for color in COLORS:
            for obj in OBJECTS:
                # Parity quirk: the French carrying sentence keeps the English words.
                out.append(f"Tu portes une {obj} {color}")
        for dx, dy in _positions():
            where = _clauses_fr(dx, dy)
            for color in COLORS:
                for obj in OBJECTS:
                    out.append(f"Tu vois une {OBJECTS_FR[obj]} {COLORS_FR[color]} {where}")
                for state in DOOR_STATES:
                    door = f"porte {COLORS_FR[color]} {DOOR_STATES_FR[state]}"
                    out.append(f"Tu vois une {door} {where}")
    else:
        raise ValueError(f"unknown language {language!r}")
    return out


def missions() -> list[str]:
    """The missions of every level family (spec section 5), all colour/object combinations."""
    out: list[str] = []
    descs = [f"{c} {o}" for c in COLORS for o in OBJECTS]
    # Colour-less descriptors occur too ("go to the ball" when the colour is not needed).
    for desc in [*descs, *OBJECTS]:
        for det in ("the", "a"):
            out.append(f"go to {det} {desc}")
            out.append(f"pick up {det} {desc}")
    out.append("open the door")
    out.extend(f"open the {c} door" for c in COLORS)
    out.extend(f"go to the {c} door" for c in COLORS)
    # Pairs: a rotation over the descriptors keeps the corpus small but covers every word in
    # every slot of every two-object template.
    for i, first in enumerate(descs):
        second = descs[(i * 7 + 5) % len(descs)]
        out.append(f"put the {first} next to the {second}")
        out.append(f"put a {first} next to a {second}")
        out.append(f"pick up the {first}, then go to the {second}")
        out.append(f"go to the {second} after you pick up the {first}")
        out.append(f"pick up a {first}, then pick up a {second}")
        out.append(f"pick up the {second} after you pick up the {first}")
    return out


def french_goals() -> list[str]:
    """Translated GoTo goals of the French prompt (`But de l'agent: aller à la balle rouge`)."""
    out: list[str] = []
    for obj in (*OBJECTS, "door"):
        for det in ("la", "une"):
            out.append(f"aller à {det} {OBJECTS_FR[obj]}")
            for color in COLORS:
                out.append(f"aller à {det} {OBJECTS_FR[obj]} {COLORS_FR[color]}")
    return out


def _header(actions: tuple[str, ...], language: str) -> str:
    if language == "french":
        return "Actions possibles pour l'agent: " + ", ".join(actions)
    return "Possible action of the agent: " + ", ".join(actions)


def _prompt(
    header: str,
    goal_line: str,
    observations: list[list[str]],
    actions: list[str],
) -> str:
    """A prompt with the exact upstream whitespace (spec section 6)."""
    text = header + f" \n {goal_line}"
    for k, descriptions in enumerate(observations):
        text += f" \n Observation {k}: " + "".join(f"{d}, " for d in descriptions)
        text += f"\n Action {k}: "
        if k < len(actions):
            text += actions[k]
    return text


def sample_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` synthetic prompts with 1-3 observations, drawn from a fixed-seed RNG."""
    rng = random.Random(seed)
    en_obs = observation_sentences("english")
    fr_obs = observation_sentences("french")
    en_missions = missions()
    fr_goals = french_goals()
    spaces = [s for s in ACTION_SPACES if s != "french"]
    out: list[str] = []
    for i in range(n):
        french = i % 5 == 4
        space = "french" if french else spaces[i % len(spaces)]
        actions = ACTION_SPACES[space]
        header = _header(actions, "french" if french else "english")
        goal = (
            f"But de l'agent: {rng.choice(fr_goals)}"
            if french
            else f"Goal of the agent: {rng.choice(en_missions)}"
        )
        pool = fr_obs if french else en_obs
        n_obs = rng.randint(1, 3)
        observations = [rng.sample(pool, rng.randint(0, 5)) for _ in range(n_obs)]
        taken = [rng.choice(actions) for _ in range(n_obs - 1)]
        out.append(_prompt(header, goal, observations, taken))
    return out


def build_corpus(n_prompts: int = 400) -> list[str]:
    """The full deterministic tokenizer-training corpus, one text per element."""
    lines: list[str] = []
    for space, actions in ACTION_SPACES.items():
        lines.append(_header(actions, "french" if space == "french" else "english"))
        lines.extend(actions)
    lines.extend(f"Goal of the agent: {m}" for m in missions())
    lines.extend(f"But de l'agent: {g}" for g in french_goals())
    lines.extend(observation_sentences("english"))
    lines.extend(observation_sentences("french"))
    lines.extend(f"Observation {k}: \n Action {k}: " for k in range(10))
    lines.extend(sample_prompts(n_prompts))
    return lines
