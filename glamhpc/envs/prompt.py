"""Prompts for the LLM policy (spec section 6) and the per-episode observation window.

The exact whitespace matters: released GLAM checkpoints were trained on it and the candidate
actions are scored as the continuation of the prompt's trailing `"Action {k}: "`. Shape:

    Possible action of the agent: a0, a1 \\n Goal of the agent: {mission}
     \\n Observation 0: d1, d2, \\n Action 0: {action} \\n Observation 1: ...\\n Action 1:

(shown wrapped; the real prompt is one string ending with "Action 1: " and its trailing space,
where each `\\n` is a newline preceded by a space except before "Action"). French keeps the
structure with a French header and goal line; the "Observation k:" / "Action k:" labels are the
same words in French and stay.

The French goal line reproduces upstream's translation by default, quirks included (see
`french_goal`); `fix_grammar=True` writes the correct translation instead.
"""

from __future__ import annotations

import numbers
import re
from collections import deque
from collections.abc import Sequence

from glamhpc.envs.vocab import FR_COLORS as _FR_COLORS
from glamhpc.envs.vocab import FR_NOUNS as _FR_NOUNS

__all__ = [
    "MAX_WINDOW",
    "History",
    "build_prompt",
    "french_goal",
    "render_observation",
]

MAX_WINDOW = 9
_HEADERS = {"english": "Possible action of the agent:", "french": "Actions possibles pour l'agent:"}
_GOAL_LABELS = {"english": " \n Goal of the agent: ", "french": " \n But de l'agent: "}

# All French nouns (glamhpc.envs.vocab) are feminine, hence "la"/"une".
_FR_ARTICLES = {"the": "la", "a": "une"}
_GOTO = re.compile(
    r"go to (?P<article>the|a) (?:(?P<color>{colors}) )?(?P<noun>{nouns})".format(
        colors="|".join(_FR_COLORS), nouns="|".join(_FR_NOUNS)
    )
)
# Upstream GLAM's translation tables, in its order: each is scanned with a substring test on the
# whole mission and the last hit wins. Order matters only for the articles: "a" comes last and is
# a substring of any mission holding the letter a ("ball"), so "go to the red ball" gets "une".
# Upstream has no door; a missing word leaves an empty slot (hence the trailing space of
# colourless goals).
_UPSTREAM_TABLES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("the", "la"), ("a", "une")),
    (("box", "boîte"), ("ball", "balle"), ("key", "clef")),
    tuple((c, _FR_COLORS[c]) for c in ("red", "green", "blue", "purple", "yellow", "grey")),
)


def _upstream_french_goal(mission: str) -> str:
    words = []
    for table in _UPSTREAM_TABLES:
        word = ""
        for english, french in table:
            if english in mission:
                word = french
        words.append(word)
    return "aller à " + " ".join(words)


def french_goal(mission: str, fix_grammar: bool = False) -> str:
    """Translate a BabyAI GoTo mission into the French goal line.

    Default (parity): upstream GLAM's translation, quirks included. The article is "une" whenever
    the mission contains the letter a ("go to the red ball" -> "aller à une balle rouge"; "go to
    the red key" -> "aller à la clef rouge"), a colourless goal keeps a trailing space ("go to
    the box" -> "aller à la boîte "), and any mission is accepted (unknown words leave empty
    slots), as upstream never failed.

    `fix_grammar=True`: the correct translation ("go to the red ball" -> "aller à la balle
    rouge"; "go to a box" -> "aller à une boîte"; doors included).

    Raises:
        ValueError: (`fix_grammar=True` only) the mission is not a single GoTo (the only kind the
            French level produces); guessing a translation would silently mislead the policy.
    """
    if not fix_grammar:
        return _upstream_french_goal(mission)
    match = _GOTO.fullmatch(mission.strip())
    if match is None:
        raise ValueError(
            f"cannot translate mission {mission!r} to French: only 'go to the|a [color] "
            f"key|ball|box|door' missions have a French goal"
        )
    words = [_FR_ARTICLES[match["article"]], _FR_NOUNS[match["noun"]]]
    if match["color"]:
        words.append(_FR_COLORS[match["color"]])
    return "aller à " + " ".join(words)


def render_observation(descriptions: Sequence[str]) -> str:
    """An observation's text in the prompt: each description followed by ", " (trailing kept)."""
    return "".join(d + ", " for d in descriptions)


def _header(action_space: Sequence[str], language: str) -> str:
    try:
        header = _HEADERS[language]
    except KeyError:
        raise ValueError(
            f"unknown language {language!r}; expected one of {list(_HEADERS)}"
        ) from None
    if not action_space:
        # Upstream's "strip the last comma" would eat the header's colon; there is nothing to
        # score anyway.
        raise ValueError("action_space must list at least one candidate action")
    # Upstream appends " {a}," per action and strips the last comma.
    return header + "".join(f" {a}," for a in action_space)[:-1]


def _assemble(
    header_and_goal: str, rendered_observations: Sequence[str], actions: Sequence[str]
) -> str:
    parts = [header_and_goal]
    for k, observation in enumerate(rendered_observations):
        parts.append(f" \n Observation {k}: {observation}\n Action {k}: ")
        if k < len(actions):
            parts.append(actions[k])
    return "".join(parts)


def _check_lengths(n_observations: int, n_actions: int) -> None:
    if n_observations < 1:
        raise ValueError("a prompt needs at least one observation")
    if n_actions != n_observations - 1:
        raise ValueError(
            f"expected {n_observations - 1} actions (one between consecutive observations), "
            f"got {n_actions}"
        )


def _header_and_goal(
    mission: str, action_space: Sequence[str], language: str, fix_grammar: bool
) -> str:
    header = _header(action_space, language)
    goal = french_goal(mission, fix_grammar) if language == "french" else mission
    return header + _GOAL_LABELS[language] + goal


def build_prompt(
    mission: str,
    observations: Sequence[Sequence[str]],
    actions: Sequence[str],
    action_space: Sequence[str],
    language: str = "english",
    fix_grammar: bool = False,
) -> str:
    """The prompt for the latest observation of a window.

    Args:
        mission: BabyAI mission text (English; translated for `language="french"`).
        observations: the window's description lists, oldest first (numbered 0.. in the prompt).
        actions: the action texts taken after each observation but the last
            (`len(observations) - 1` items).
        action_space: candidate action strings listed in the header, in order.
        language: "english" or "french".
        fix_grammar: French only: the correct goal translation instead of upstream's (see
            `french_goal`); English prompts have nothing to fix.

    Raises:
        ValueError: no observation, wrong number of actions, unknown language, or (French with
            `fix_grammar`) a mission with no French translation.
    """
    _check_lengths(len(observations), len(actions))
    return _assemble(
        _header_and_goal(mission, action_space, language, fix_grammar),
        [render_observation(o) for o in observations],
        actions,
    )


class History:
    """The sliding window of an episode's last `window` observations and the actions between them.

    Observations are stored already rendered (`render_observation`), so building a prompt each
    step only joins a handful of strings. The numbering restarts at 0 as the window slides, as
    upstream does.
    """

    def __init__(self, window: int = 3) -> None:
        # numbers.Integral admits numpy integers from configs/arrays; bool is an int but a mistake.
        valid = isinstance(window, numbers.Integral) and not isinstance(window, bool)
        if not valid or not 1 <= window <= MAX_WINDOW:
            raise ValueError(
                f"history window must be an integer in 1..{MAX_WINDOW}, got {window!r}"
            )
        window = int(window)
        self.window = window
        self._observations: deque[tuple[str, ...]] = deque(maxlen=window)
        self._rendered: deque[str] = deque(maxlen=window)
        self._actions: deque[str] = deque(maxlen=window - 1)

    def reset(self, observation: Sequence[str]) -> None:
        """Start a new episode whose first observation is `observation`."""
        self._observations.clear()
        self._rendered.clear()
        self._actions.clear()
        self._append(observation)

    def push(self, action_text: str, observation: Sequence[str]) -> None:
        """Record the action just taken and the observation it led to."""
        if not self._observations:
            raise RuntimeError("History.push before History.reset: no episode started")
        # With window 1 the action deque has maxlen 0 and keeps nothing, as it should.
        self._actions.append(action_text)
        self._append(observation)

    def _append(self, observation: Sequence[str]) -> None:
        self._observations.append(tuple(observation))
        self._rendered.append(render_observation(observation))

    @property
    def observations(self) -> list[tuple[str, ...]]:
        """The window's description lists, oldest first."""
        return list(self._observations)

    @property
    def actions(self) -> list[str]:
        """The actions between the window's observations (one fewer than observations)."""
        return list(self._actions)

    def prompt(
        self,
        mission: str,
        action_space: Sequence[str],
        language: str = "english",
        fix_grammar: bool = False,
    ) -> str:
        """Same as `build_prompt(mission, self.observations, self.actions, ...)`, cheaper."""
        if not self._observations:
            raise RuntimeError("History.prompt before History.reset: no episode started")
        return _assemble(
            _header_and_goal(mission, action_space, language, fix_grammar),
            self._rendered,
            self._actions,
        )
