"""BabyAI-Text levels (Mixed, compositions, French) built on minigrid's BabyAI core.

minigrid 3.x ships BabyAI's room grid, instruction language and verifier but not the GLAM levels,
so they are generated here (contract: shared/docs/BABYAI_TEXT_SPEC.md, section 5). Importing this
module registers the gymnasium ids ``BabyAI-MixedTrainLocal-v0`` and friends (idempotently).

Task kinds (``env.unwrapped.task_kind`` after reset):

- ``goto`` / ``pickup``: one 8x8 room, 9 objects, the target is one of them (64 steps).
- ``putnext``: one 8x8 room, 10 objects, move one next to another of a different description
  (128 steps).
- ``open``: two 8x8 rooms side by side, the locked door between them, its key among the agent's
  room's objects plus 8 distractors (128 steps).
- ``pickup_then_goto``: one 8x8 room, 10 objects, "pick up A, then go to B" or
  "go to B after you pick up A" (128 steps).
- ``pickup_then_pickup``: like the above with two pick-ups (composition test level only).

max_steps is not fixed per level: minigrid's ``RoomGridLevel.reset`` derives it from the
instruction and the grid (``num_navs * room_size**2 * rooms``), and minigrid truncates on it, so
a Mixed level's limit follows the kind drawn for the episode.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import gymnasium as gym
import minigrid  # noqa: F401  (importing minigrid registers its own BabyAI-* ids)
import numpy as np
from minigrid.core.roomgrid import RoomGrid
from minigrid.core.world_object import WorldObj
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling, RoomGridLevel
from minigrid.envs.babyai.core.verifier import (
    AfterInstr,
    BeforeInstr,
    GoToInstr,
    Instr,
    ObjDesc,
    OpenInstr,
    PickupInstr,
    PutNextInstr,
)

from glamhpc.envs import catalog

__all__ = [
    "EXTRA_MINIGRID_IDS",
    "HELD_OUT_COMBOS",
    "LEVEL_IDS",
    "MAX_STEPS",
    "TASK_KINDS",
    "GoToAfterPickUpLocal",
    "GoToFrench",
    "LocalTaskLevel",
    "MixedTestLocal",
    "MixedTrainLocal",
    "PickUpSeqGoToLocal",
    "PickUpSeqPickUpLocal",
    "PickUpThenGoToLocal",
    "known_levels",
    "level_language",
    "register_levels",
    "resolve_level",
    "silence_generation",
]

TaskSampling = Literal["per_episode", "per_instance"]
HeldOutRule = Literal["exclude", "only", "none"]

#: Task kinds of the MixedTrainLocal / MixedTestLocal generator, drawn uniformly.
TASK_KINDS: tuple[str, ...] = ("goto", "pickup", "putnext", "open", "pickup_then_goto")

#: Step limit per task kind (spec section 4). Documentation and test oracle only: the real limit
#: is computed by minigrid from the generated instruction and grid.
MAX_STEPS: dict[str, int] = {
    "goto": 64,
    "pickup": 64,
    "putnext": 128,
    "open": 128,
    "pickup_then_goto": 128,
    "pickup_then_pickup": 128,
}

#: Colour-type pairs never named in a training mission (the objects may still appear).
HELD_OUT_COMBOS: frozenset[str] = frozenset(
    {"yellow box", "red key", "red door", "green ball", "grey door"}
)

#: Door colours of the open task: training avoids the held-out door colours.
_TRAIN_DOOR_COLORS = ("yellow", "green", "blue", "purple")
_TEST_DOOR_COLORS = ("red", "grey")

# Generation retries are cheap (~0.1 ms each) but a buggy constraint must not hang a trainer.
_MAX_GENERATION_TRIES = 10_000


def _descs(instr: Instr) -> Iterator[ObjDesc]:
    """Yield every object description named by an instruction tree."""
    if isinstance(instr, (BeforeInstr, AfterInstr)):
        yield from _descs(instr.instr_a)
        yield from _descs(instr.instr_b)
    elif isinstance(instr, PutNextInstr):
        yield instr.desc_move
        yield instr.desc_fixed
    else:
        yield instr.desc  # type: ignore[attr-defined]


def _named_combos(instr: Instr) -> list[str]:
    """The ``"{color} {type}"`` pairs a mission names; a colourless description names none.

    Checking descriptors instead of the rendered text avoids an extra grid scan per candidate
    (``surface`` re-matches objects) and is equivalent: every mission names its objects as
    ``[a|the] [color] type`` and a colourless description cannot contain a held-out pair.
    """
    return [f"{d.color} {d.type}" for d in _descs(instr) if d.color is not None]


class LocalTaskLevel(RoomGridLevel):
    """Single-room (two for ``open``) BabyAI level with a per-episode or per-instance task kind.

    Subclasses set ``KINDS`` (the task kinds to draw from), ``SEQ_ORDERS`` (surface orders of
    two-step tasks: ``"then"`` = BeforeInstr, ``"after"`` = AfterInstr), ``HELD_OUT`` (reject
    missions naming a held-out pair, keep only those, or ``none``: no filter) and ``LANGUAGE`` (of
    the descriptions the text layer should produce; missions stay English).

    Args:
        task_sampling: ``"per_episode"`` (default) draws the kind from the env's seeded RNG at every
            reset, so episodes are reproducible from their seed. ``"per_instance"`` reproduces
            upstream GLAM: one kind per env instance, drawn at construction.
        instance_seed: seeds the per-instance draw; ``None`` draws from OS entropy like upstream.
        task_kinds: restrict the kinds drawn (e.g. ``["open"]`` to evaluate one kind).
        room_size: side of a room in cells, walls included.
        num_dists: distractors of the ``open`` task; the one-room tasks place ``num_dists + 1``
            (goto, pickup) or ``num_dists + 2`` (two-object tasks) objects, as upstream.
    """

    KINDS: ClassVar[tuple[str, ...]] = TASK_KINDS
    SEQ_ORDERS: ClassVar[tuple[str, ...]] = ("then", "after")
    HELD_OUT: ClassVar[HeldOutRule] = "exclude"
    LANGUAGE: ClassVar[str] = "english"

    def __init__(
        self,
        task_sampling: TaskSampling = "per_episode",
        instance_seed: int | None = None,
        task_kinds: Sequence[str] | None = None,
        room_size: int = 8,
        num_dists: int = 8,
        **kwargs: Any,
    ) -> None:
        if task_sampling not in ("per_episode", "per_instance"):
            raise ValueError(
                f"task_sampling must be 'per_episode' or 'per_instance', not {task_sampling!r}"
            )
        kinds = tuple(task_kinds) if task_kinds is not None else self.KINDS
        unknown = [k for k in kinds if k not in self.KINDS]
        if not kinds or unknown:
            raise ValueError(f"task_kinds {list(kinds)} must be a non-empty subset of {self.KINDS}")
        self.task_sampling: TaskSampling = task_sampling
        self.task_kinds: tuple[str, ...] = kinds
        self.num_dists = num_dists
        self.task_kind: str = kinds[0]
        self._instance_kind: str | None = None
        if task_sampling == "per_instance":
            rng = np.random.default_rng(instance_seed)
            self._instance_kind = kinds[int(rng.integers(len(kinds)))]
            self.task_kind = self._instance_kind
        # The grid size is set per episode in _gen_grid (the open task needs two rooms).
        super().__init__(room_size=room_size, num_rows=1, num_cols=1, **kwargs)

    @property
    def language(self) -> str:
        """Language of the text descriptions for this level."""
        return self.LANGUAGE

    # ------------------------------------------------------------------ generation

    def _gen_grid(self, width: int, height: int) -> None:
        """Draw the episode's task kind, then rejection-sample a grid and mission for it.

        Replaces RoomGridLevel's loop, which prints every rejection to stdout (many lines per
        reset here). The kind is drawn once per episode before the loop, so rejections cannot bias
        the kind distribution towards kinds that are easy to generate.
        """
        kind = self._instance_kind or self._rand_elem(self.task_kinds)
        self.task_kind = kind
        self.num_cols = 2 if kind == "open" else 1
        self.width = (self.room_size - 1) * self.num_cols + 1
        self.height = self.room_size
        for _ in range(_MAX_GENERATION_TRIES):
            RoomGrid._gen_grid(self, self.width, self.height)
            try:
                self.instrs = self._gen_instr(kind)
                # Cheapest test first: the accepted distribution is the same in any order, and
                # test levels reject most candidates on the held-out rule alone.
                if not self._accept(self.instrs):
                    continue
                self.validate_instrs(self.instrs)
                self.check_objs_reachable()
            except (RejectSampling, RecursionError):
                continue
            break
        else:  # pragma: no cover - only reachable with inconsistent constraints
            raise RuntimeError(f"{type(self).__name__}: no valid {kind!r} mission generated")
        self.surface = self.instrs.surface(self)
        self.mission = self.surface

    def gen_mission(self) -> None:
        """Generate grid content and instruction for the current kind (BabyAI's hook)."""
        self.instrs = self._gen_instr(self.task_kind)

    def _accept(self, instr: Instr) -> bool:
        """Held-out rule: training levels never name a held-out pair; test levels only those."""
        if self.HELD_OUT == "none":
            return True
        combos = _named_combos(instr)
        if self.HELD_OUT == "only":
            return bool(combos) and all(c in HELD_OUT_COMBOS for c in combos)
        return not any(c in HELD_OUT_COMBOS for c in combos)

    def _one_room(self, num_objs: int) -> list[WorldObj]:
        """Agent first (random cell and direction), then objects (none adjacent to the agent)."""
        self.place_agent(0, 0)
        return self.add_distractors(0, 0, num_distractors=num_objs, all_unique=False)

    def _unique(self, obj: WorldObj) -> bool:
        """Whether ``obj`` is the only object in the grid with its colour and type."""
        matches, _ = ObjDesc(obj.type, obj.color).find_matching_objs(self)
        return len(matches) == 1

    def _other(self, objs: list[WorldObj], first: WorldObj, allow_same: bool) -> WorldObj:
        """Draw a second object; a same-description one only if allowed and not unique.

        Uniform over the eligible objects, i.e. the distribution of redrawing until eligible.
        """
        same_ok = allow_same and not self._unique(first)
        options = [o for o in objs if same_ok or o.type != first.type or o.color != first.color]
        if not options:  # every object looks like the first one: regenerate the grid
            raise RejectSampling("no second object with another description")
        return self._rand_elem(options)

    def _seq(self, first: Instr, second: Instr) -> Instr:
        """Sequence two instructions in one of the level's surface orders."""
        if self._rand_elem(self.SEQ_ORDERS) == "then":
            return BeforeInstr(first, second)
        return AfterInstr(second, first)

    def _gen_instr(self, kind: str) -> Instr:
        """Populate the (fresh, walled) grid for ``kind`` and return its instruction."""
        if kind == "open":
            return self._gen_open()
        if kind in ("goto", "pickup"):
            target = self._rand_elem(self._one_room(self.num_dists + 1))
            desc = ObjDesc(target.type, target.color)
            return GoToInstr(desc) if kind == "goto" else PickupInstr(desc)
        objs = self._one_room(self.num_dists + 2)
        first = self._rand_elem(objs)
        if kind == "putnext":
            # Same-description pairs are always rejected by validate_instrs (the sets overlap),
            # so drawing a different one directly saves a full regeneration.
            fixed = self._other(objs, first, allow_same=False)
            return PutNextInstr(ObjDesc(first.type, first.color), ObjDesc(fixed.type, fixed.color))
        pick = PickupInstr(ObjDesc(first.type, first.color))
        if kind == "pickup_then_goto":
            # "pick up a red ball, then go to a red ball" is valid only with two red balls.
            goal = self._other(objs, first, allow_same=True)
            return self._seq(pick, GoToInstr(ObjDesc(goal.type, goal.color)))
        if kind == "pickup_then_pickup":
            # Two pick-ups of the same description could be solved by re-picking the same
            # object, so the second one always differs.
            goal = self._other(objs, first, allow_same=False)
            return self._seq(pick, PickupInstr(ObjDesc(goal.type, goal.color)))
        raise ValueError(f"unknown task kind {kind!r}")

    def _gen_open(self) -> Instr:
        """Two rooms; a locked door between them; its key and distractors in the agent's room."""
        test = self.HELD_OUT == "only"
        color = self._rand_elem(_TEST_DOOR_COLORS if test else _TRAIN_DOOR_COLORS)
        agent_i = self._rand_int(0, 2)
        locked_i = 1 - agent_i
        # add_door marks the room it is called on as locked, so call it on the far room, with the
        # wall facing the agent's room (0 = right, 2 = left).
        self.add_door(locked_i, 0, door_idx=2 if locked_i == 1 else 0, color=color, locked=True)
        self.add_object(agent_i, 0, "key", color)
        self.add_distractors(agent_i, 0, num_distractors=self.num_dists, all_unique=False)
        self.place_agent(agent_i, 0)
        # Test missions always state the (held-out) colour; training omits it half the time.
        stated = color if test else self._rand_elem([None, color])
        return OpenInstr(ObjDesc("door", stated))


class MixedTrainLocal(LocalTaskLevel):
    """GLAM's training mix: goto, pickup, putnext, open, pick-up-then-go-to; held-out excluded."""


class MixedTestLocal(LocalTaskLevel):
    """Same generator, missions naming only held-out pairs (open: red/grey door, colour stated)."""

    HELD_OUT: ClassVar[HeldOutRule] = "only"


class PickUpSeqPickUpLocal(LocalTaskLevel):
    """New composition: "pick up A, then pick up B" / "pick up B after you pick up A"."""

    KINDS: ClassVar[tuple[str, ...]] = ("pickup_then_pickup",)


class PickUpSeqGoToLocal(LocalTaskLevel):
    """Pick-up-then-go-to in both surface orders."""

    KINDS: ClassVar[tuple[str, ...]] = ("pickup_then_goto",)


class PickUpThenGoToLocal(LocalTaskLevel):
    """Only "pick up A, then go to B"."""

    KINDS: ClassVar[tuple[str, ...]] = ("pickup_then_goto",)
    SEQ_ORDERS: ClassVar[tuple[str, ...]] = ("then",)


class GoToAfterPickUpLocal(LocalTaskLevel):
    """Only "go to B after you pick up A"."""

    KINDS: ClassVar[tuple[str, ...]] = ("pickup_then_goto",)
    SEQ_ORDERS: ClassVar[tuple[str, ...]] = ("after",)


class GoToFrench(LocalTaskLevel):
    """Upstream's GoToFrench: go to one of ``num_dists`` (8) objects in an 8x8 room, described in
    French (the mission itself stays English).

    As upstream (babyai-text's ``Level_GoToFrench``), the target is one of the 8 objects (the
    Mixed goto task places 9) and there is no held-out filter: a mission may name a held-out pair
    such as "yellow box", so this test mixes the language shift with unseen combinations.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("goto",)
    HELD_OUT: ClassVar[HeldOutRule] = "none"
    LANGUAGE: ClassVar[str] = "french"

    def _gen_instr(self, kind: str) -> Instr:
        target = self._rand_elem(self._one_room(self.num_dists))
        return GoToInstr(ObjDesc(target.type, target.color))


#: Our gymnasium ids and their classes.
LEVEL_IDS: dict[str, type[LocalTaskLevel]] = {
    "BabyAI-MixedTrainLocal-v0": MixedTrainLocal,
    "BabyAI-MixedTestLocal-v0": MixedTestLocal,
    "BabyAI-PickUpSeqPickUpLocal-v0": PickUpSeqPickUpLocal,
    "BabyAI-PickUpThenGoToLocal-v0": PickUpThenGoToLocal,
    "BabyAI-GoToAfterPickUpLocal-v0": GoToAfterPickUpLocal,
    "BabyAI-PickUpSeqGoToLocal-v0": PickUpSeqGoToLocal,
    "BabyAI-GoToFrench-v0": GoToFrench,
}


#: minigrid level variants the paper uses that minigrid 3.2 does not register: the 16-distractor
#: end of the GoToLocal distractor sweep (minigrid stops at S8N7). Its generator is minigrid's;
#: with 16 objects in a 6x6 room most candidates fail the reachability check, so a reset takes
#: ~0.1 s.
EXTRA_MINIGRID_IDS: dict[str, tuple[str, dict[str, Any]]] = {
    "BabyAI-GoToLocalS8N16-v0": (
        "minigrid.envs.babyai:GoToLocal",
        {"room_size": 8, "num_dists": 16},
    ),
}


def register_levels() -> None:
    """Register our ids with gymnasium; calling it again is a no-op."""
    for env_id, cls in LEVEL_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=f"{__name__}:{cls.__name__}")
    for env_id, (entry_point, kwargs) in EXTRA_MINIGRID_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, kwargs=kwargs)


register_levels()


def known_levels() -> list[str]:
    """Every registered ``BabyAI-*`` gymnasium id (ours and minigrid's), sorted."""
    return sorted(env_id for env_id in gym.registry if env_id.startswith("BabyAI-"))


def resolve_level(name: str) -> str:
    """The full id of a level name (see `glamhpc.envs.catalog.resolve_level`)."""
    return catalog.resolve_level(name)


def level_language(env_id: str) -> str:
    """Description language a level asks for (``french`` for GoToFrench, else ``english``)."""
    cls = LEVEL_IDS.get(env_id)
    return cls.LANGUAGE if cls is not None else "english"


class _Discard(io.TextIOBase):
    """A text sink: cheaper than opening os.devnull and needs no file descriptor."""

    def write(self, s: str) -> int:
        return len(s)


_DISCARD = _Discard()


@contextlib.contextmanager
def silence_generation() -> Iterator[None]:
    """Swallow stdout while minigrid's own BabyAI levels generate (they print each rejection).

    Our levels never print; this covers minigrid's, whose ``RoomGridLevel._gen_grid`` calls
    ``print``. It costs ~1 us, paid once per reset.
    """
    with contextlib.redirect_stdout(_DISCARD):
        yield
