"""Evaluation on real environments: the bot and random baselines, the prompts each suite item
shows the policy, action-space compatibility, split == unsplit, and item resolution."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from glamhpc.envs.levels import TASK_KINDS
from glamhpc.envs.suites import PAPER_SUITE, SuiteItem, get_suite
from glamhpc.evaluate.agents import (
    AgentSpec,
    EvalError,
    LoadedAgent,
    baseline_spec,
    check_compatible,
)
from glamhpc.evaluate.runner import (
    EvalWork,
    PartTask,
    evaluate,
    level_item,
    resolve_items,
    run_part,
)
from glamhpc.launch import eval_array, registry
from glamhpc.launch.eval_array import EvalArrayOptions

# Spec section 7, written out here independently of glamhpc.envs.suites.
SPEC_WORDS = {
    "other_nouns": {"key": "chair", "ball": "table", "box": "car"},
    "adjective_synonyms": {
        "red": "vermilion",
        "green": "jade",
        "blue": "cyan",
        "purple": "violet",
        "yellow": "golden",
        "grey": "silver",
    },
    "invented_nouns": {"key": "dax", "ball": "xolo", "box": "afze"},
    "invented_adjectives": {
        "red": "faze",
        "green": "jatu",
        "blue": "croh",
        "purple": "vurst",
        "yellow": "gakul",
        "grey": "sil",
    },
}
SPEC_WORDS["invented_both"] = {**SPEC_WORDS["invented_nouns"], **SPEC_WORDS["invented_adjectives"]}
SPEC_GOALS = {"goal_rephrase_1": "I would like the agent to", "goal_rephrase_2": "You have to"}


def _spec_prompt(name: str, prompt: str) -> str:
    """What spec section 7 says the policy sees for item ``name``."""
    if name in SPEC_WORDS:
        table = SPEC_WORDS[name]
        return re.sub(r"\b[a-z]+\b", lambda m: table.get(m.group(0), m.group(0)), prompt)
    if name in SPEC_GOALS:
        return prompt.replace("Goal of the agent", SPEC_GOALS[name])
    return prompt


def _work(
    items: Sequence[str], episodes: int, num_envs: int, levels: Sequence[str] = ()
) -> EvalWork:
    return EvalWork(tuple(resolve_items(items, levels)), episodes, num_envs, seed=1)


@dataclass
class _Recorder:
    """An EnvAgent recording (prompt the env built, prompt the policy was shown); uniform."""

    texts: list[str]
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def begin(self, envs: Any) -> None:
        pass

    def logprobs(self, envs: Any, active: list[int], prompts: list[str]) -> np.ndarray:
        built = envs.prompts()
        self.pairs += [(built[i], shown) for i, shown in zip(active, prompts, strict=True)]
        return np.zeros((len(active), len(self.texts)))

    def after_step(self, actions: Sequence[int], step: Any) -> None:
        pass


@dataclass
class _RecordingAgent(LoadedAgent):
    recorders: dict[str, _Recorder] = field(default_factory=dict)

    def policy_for(self, texts: Sequence[str], item: SuiteItem) -> Any:
        self.recorders[item.name] = _Recorder(list(texts))
        return self.recorders[item.name]


def test_each_item_shows_the_policy_the_spec_prompt() -> None:
    names = [i.name for i in PAPER_SUITE if "Mixed" in i.level or i.name == "french"]
    agent = _RecordingAgent(AgentSpec(kind="glam", label="recorder"))
    run_part(PartTask(agent.spec, _work(names, episodes=2, num_envs=2)), agent)
    assert set(agent.recorders) == set(names)
    for name, rec in agent.recorders.items():
        assert rec.pairs, name
        for built, shown in rec.pairs:
            assert shown == _spec_prompt(name, built), name
        if name in SPEC_WORDS or name in SPEC_GOALS:
            # Every mission names an object or the goal line: each prompt really changed.
            assert sum(b != s for b, s in rec.pairs) >= len(rec.pairs) // 2, name
    goal = agent.recorders["goal_rephrase_2"].pairs[0][1]
    assert " \n You have to: " in goal and "Goal of the agent" not in goal
    synonyms = agent.recorders["synonym_actions"]
    assert synonyms.texts == [
        "rotate left",
        "rotate right",
        "move ahead",
        "take",
        "release",
        "switch",
    ]
    assert synonyms.pairs[0][1].startswith(
        "Possible action of the agent: rotate left, rotate right, move ahead, take, release, "
        "switch \n Goal of the agent: "
    )
    french = agent.recorders["french"]
    assert french.texts[:3] == ["tourner à gauche", "tourner à droite", "aller tout droit"]
    assert french.pairs[0][1].startswith("Actions possibles pour l'agent: tourner à gauche, ")
    assert " \n But de l'agent: aller à " in french.pairs[0][1]
    shown = " ".join(s for _, s in agent.recorders["invented_both"].pairs)
    assert re.search(r"\b(dax|xolo|afze)\b", shown) and not re.search(r"\b(key|ball|box)\b", shown)


def test_bot_solves_goto_local_and_every_mixed_task_kind() -> None:
    work = EvalWork(
        tuple(resolve_items([], ["GoToLocal", "MixedTrainLocal", "MixedTestLocal"])),
        episodes=120,
        num_envs=10,
        seed=1,
    )
    result = evaluate(baseline_spec("bot"), work)
    for row in result.rows():
        assert row.episodes == 120 and row.success_rate >= 0.95, row
    for item in ("MixedTrainLocal", "MixedTestLocal"):
        kinds = {k.task_kind: k for k in result.kinds() if k.item == item}
        assert set(kinds) == set(TASK_KINDS), item
        for kind in kinds.values():
            # ~24 episodes per kind; the bot is an upper bound, failures would be bugs.
            assert kind.episodes >= 12 and kind.success_rate >= 0.95, kind


def test_random_agent_success_is_in_its_expected_range() -> None:
    result = evaluate(baseline_spec("random"), _work([], 200, 16, ["GoToRedBallNoDists"]))
    (row,) = result.rows()
    # Calibration (GLAM_ALGORITHM.md): ~0.25; the Wilson half-width at n=200 is ~0.06.
    assert 0.14 <= row.success_rate <= 0.38, row
    assert row.ci95_low < row.success_rate < row.ci95_high
    assert 0 < row.mean_return < row.success_rate  # a success earns 1 - 0.9 t/T < 1


def test_split_evaluation_equals_the_unsplit_one() -> None:
    work = _work(["other_nouns"], 9, 6, ["GoToLocalS8N4"])
    for spec in (baseline_spec("random"), baseline_spec("bot")):
        whole = evaluate(spec, work)
        assert evaluate(spec, work, parts=4).episodes == whole.episodes
        assert evaluate(spec, work).rows() == whole.rows()  # same seed, same table
    # Another seed is another set of episodes (the bot is deterministic given the layout).
    other = EvalWork(work.items, work.episodes, work.num_envs, seed=2)
    assert evaluate(baseline_spec("bot"), other).episodes != whole.episodes


@dataclass
class _InlineArray:
    """submitit's executor replaced by one that plays every array task at submission, in the
    job environment a local submitit task sees (its id and folder: where results go)."""

    names: list[str] = field(default_factory=list)
    folder: Path | None = None

    def __call__(self, res: Any, folder: Path, name: str, **extra: Any) -> _InlineArray:
        self.names.append(name)
        self.folder = folder
        return self

    def map_array(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> list[Any]:
        jobs = []
        for i, task in enumerate(tasks):
            env = {"_TEST_CLUSTER_": "local", "SUBMITIT_FOLDER": str(self.folder)}
            env |= {"SUBMITIT_LOCAL_JOB_ID": f"7_{i}", "SUBMITIT_LOCAL_GLOBALID": "0"}
            with pytest.MonkeyPatch.context() as patch:
                for key, value in env.items():
                    patch.setenv(key, value)
                fn(task)
            jobs.append(_Done(f"7_{i}"))
        return jobs


@dataclass
class _Done:
    job_id: str

    def wait(self) -> None:
        pass


def test_slurm_executor_submits_a_registered_array_and_merges_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GLAMHPC_STATE_DIR", str(tmp_path / "state"))
    array = _InlineArray()
    monkeypatch.setattr(eval_array, "make_executor", array)
    work = _work([], 6, 4, ["GoToRedBallNoDists"])
    spec = baseline_spec("random")
    options = EvalArrayOptions(tmp_path / "slurm")
    merged = evaluate(spec, work, parts=2, executor="slurm", slurm=options)
    assert merged.episodes == evaluate(spec, work).episodes
    assert "submitted 2 array tasks (job 7); waiting" in capsys.readouterr().out
    assert array.names == ["glamhpc-eval:random"]
    (record,) = registry.load()
    assert (record.job_id, record.kind, record.runs) == (
        "7",
        "eval",
        ["random/part0", "random/part1"],
    )


def test_checkpoint_action_space_must_match_the_item() -> None:
    items = {i.name: i for i in PAPER_SUITE}
    restricted = AgentSpec(kind="glam", label="r", trained_action_space="restricted")
    with pytest.raises(EvalError, match="trained on the 'restricted' action space"):
        check_compatible(restricted, items["no_modification"])
    standard = AgentSpec(kind="glam", label="s", trained_action_space="standard")
    for name in ("no_modification", "synonym_actions", "french"):
        check_compatible(standard, items[name])
    check_compatible(standard, get_suite("goto_local_n16")[0])
    # The French item uses the standard space in French: fine for a synonyms-trained model
    # (same minigrid actions); its own space has no French words.
    synonyms = AgentSpec(kind="glam", label="y", trained_action_space="synonyms")
    check_compatible(synonyms, items["french"])
    with pytest.raises(EvalError, match="no French words"):
        check_compatible(synonyms, level_item("GoToFrench", "synonyms"))
    with pytest.raises(EvalError, match="--parts 7"):
        evaluate(baseline_spec("random"), _work([], 4, 4, ["GoToLocal"]), parts=7)


def test_resolve_items() -> None:
    paper = resolve_items(["paper"], [])
    assert [e.item for e in paper] == list(PAPER_SUITE)
    assert {e.suite for e in paper} == {"paper"}
    # Group or item name: the namespace is the item's first suite, so metric keys are stable.
    assert resolve_items(["compositions"], [])[0].key == "paper/pickup_seq_pickup"
    both = resolve_items(
        ["paper", "distractor_transfer", "french"], ["GoToLocal", "BabyAI-GoToLocal-v0"]
    )
    assert len(both) == len(PAPER_SUITE) + 3 + 1 and both[-1].key == "level/GoToLocal"
    assert resolve_items(["goto_local_n4"], [])[0].key == "distractor_transfer/goto_local_n4"
    with pytest.raises(EvalError, match="now 'distractor_transfer'"):
        resolve_items(["distractors"], [])
    french = resolve_items([], ["GoToFrench"], action_space="restricted")[0].item
    assert (french.language, french.action_space) == ("french", "restricted")
    assert resolve_items([], [], default_level="GoToRedBallNoDists")[0].key == (
        "level/GoToRedBallNoDists"
    )
    with pytest.raises(EvalError, match="unknown suite 'nope'"):
        resolve_items(["nope"], [])
    with pytest.raises(EvalError, match="unknown level 'GoToNowhere'"):
        resolve_items([], ["GoToNowhere"])
    with pytest.raises(EvalError, match="nothing to evaluate"):
        resolve_items([], [])
