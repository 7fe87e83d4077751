"""What gets evaluated: a fine-tuned checkpoint, a zero-shot model, the random agent, the bot.

An `AgentSpec` is a small picklable description (it travels to Slurm array tasks); `load_agent`
turns it into a `LoadedAgent` inside the process that plays, which hands out one policy per
suite item (candidates differ between items: synonym actions, French).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from glamhpc.envs.actions import action_texts, env_actions
from glamhpc.envs.suites import SuiteItem
from glamhpc.evaluate.episodes import EnvAgent, PromptScorer, uniform_policy

if TYPE_CHECKING:
    from glamhpc.envs.batch import EnvBatch, StepResult

__all__ = [
    "AgentSpec",
    "BotAgent",
    "EvalError",
    "LoadedAgent",
    "baseline_spec",
    "check_compatible",
    "checkpoint_spec",
    "load_agent",
    "model_spec",
]

AgentKind = Literal["glam", "random", "bot", "symbolic", "drrn"]
BASELINES: tuple[str, ...] = ("random", "bot")
META_FILE = "glamhpc.json"


class EvalError(ValueError):
    """A user-fixable evaluation problem; the message is one line and says what to do."""


@dataclass(frozen=True)
class AgentSpec:
    """A picklable description of the agent to evaluate.

    Attributes:
        kind: ``glam`` (an LLM policy), ``random`` (uniform over candidates) or ``bot``
            (minigrid's BabyAI bot, the upper bound).
        label: name in tables and in the MLflow run name.
        model: for ``glam``: ``tiny-t5``, a hub id, or the folder of an exported model.
        trained_action_space: the action space a checkpoint was fine-tuned on; None for agents
            that accept any candidates (zero-shot models, baselines).
        history: observations in the prompt (a checkpoint's own window; the paper uses 3).
        scoring: candidate normalisation, ``glam`` or ``paper`` (a checkpoint's own).
        fix_grammar: description variant the checkpoint was trained with.
        method: scoring implementation (``fast``; ``naive`` for benchmarks and checks).
        frames: training frames of a checkpoint (the MLflow step of its eval metrics).
        run_dir: the training run's folder, when known (default output folder).
        run_id: the MLflow run the metrics go to (``--run``); None makes a new eval run.
        source: where the agent came from, for tags and messages.
    """

    kind: AgentKind
    label: str
    model: str | None = None
    trained_action_space: str | None = None
    history: int = 3
    scoring: str = "glam"
    fix_grammar: bool = False
    device: str = "auto"
    dtype: str = "fp32"
    cache_dir: str | None = None
    max_batch_tokens: int | None = 32768
    method: str = "fast"
    frames: int | None = None
    run_dir: str | None = None
    run_id: str | None = None
    source: str = ""


def baseline_spec(name: str, history: int = 3) -> AgentSpec:
    """The ``random`` or ``bot`` baseline."""
    if name not in BASELINES:
        raise EvalError(f"unknown baseline {name!r}; expected one of {list(BASELINES)}")
    kind: AgentKind = "random" if name == "random" else "bot"
    return AgentSpec(kind=kind, label=name, history=history, source=f"baseline:{name}")


def model_spec(name: str, history: int = 3, scoring: str = "glam", **options: Any) -> AgentSpec:
    """A pretrained model without fine-tuning (the zero-shot baseline).

    A folder that carries a glamhpc manifest (an export given as --model) is verified as
    --checkpoint would; a plain Hugging Face folder has none to check."""
    from glamhpc.checkpoint import MANIFEST
    from glamhpc.evaluate.verify import verify_model_folder

    if (Path(name) / MANIFEST).is_file():
        verify_model_folder(Path(name).expanduser().resolve())
    label = f"zero-shot:{Path(name).name if Path(name).is_dir() else name}"
    return AgentSpec(
        kind="glam",
        label=label,
        model=name,
        history=history,
        scoring=scoring,
        source=f"model:{name}",
        **options,
    )


def _model_folder(path: Path) -> Path:
    """The exported-model folder of ``path`` (itself, or ``path/model`` for a run dir)."""
    if not path.exists():
        raise EvalError(f"checkpoint {str(path)!r} does not exist")
    if (path / META_FILE).is_file():
        return path
    if (path / "model" / META_FILE).is_file():
        return path / "model"
    if (path / "config.yaml").is_file():
        raise EvalError(
            f"run dir {str(path)!r} has no exported model (model/{META_FILE}): the run has not "
            "finished training; resume it with `glamhpc train` until it writes DONE"
        )
    raise EvalError(
        f"{str(path)!r} is not a glamhpc model: expected a run dir with model/{META_FILE} or "
        f"an exported model folder with {META_FILE}"
    )


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml as a dict ({} when absent: a copied model folder)."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def trained_agent(folder: Path) -> AgentKind:
    """The agent an export holds: its run's ``agent`` key (the run dir's config.yaml), else its
    glamhpc.json's (a copied or downloaded export); ``glam`` when neither names one."""
    run_config = _run_config(folder.parent) if folder.name == "model" else {}
    agent = run_config.get("agent")
    if agent is None:
        try:
            meta = json.loads((folder / META_FILE).read_text())
        except (OSError, ValueError):
            meta = {}  # read_meta has already said what is wrong with it
        agent = meta.get("agent") if isinstance(meta, dict) else None
    if agent in (None, "glam", "bc"):  # bc exports the LLM that GLAM's scoring plays
        return "glam"
    if agent == "symbolic":
        return "symbolic"
    if agent == "drrn":
        return "drrn"
    raise EvalError(f"{folder}: agent {agent!r} cannot be evaluated by this glamhpc version")


def checkpoint_spec(path: str | Path, run_id: str | None = None, **options: Any) -> AgentSpec:
    """The exported model of a finished run (``run_dir`` or ``run_dir/model``).

    The folder is verified first (`glamhpc.evaluate.verify`): its manifest, finite weights and
    a well-formed ``glamhpc.json``.

    Raises:
        EvalError: missing path, an unfinished run, a folder that fails verification,
            unreadable metadata, or a model folder without weights.
    """
    from glamhpc.evaluate.verify import read_meta, verify_model_folder

    folder = _model_folder(Path(path).expanduser().resolve())
    verify_model_folder(folder)  # before anything in it is read or loaded
    meta = read_meta(folder)
    kind = trained_agent(folder)
    if kind == "glam" and not (folder / "config.json").is_file():
        raise EvalError(f"model folder {str(folder)!r} has no config.json (incomplete export)")
    space = meta.action_space
    if space is not None:
        try:
            env_actions(space)
        except ValueError as exc:
            raise EvalError(f"{folder / META_FILE}: {exc}") from None
    run_dir = folder.parent if folder.name == "model" else None
    env_cfg = _run_config(run_dir).get("env", {}) if run_dir is not None else {}
    label = run_id or (run_dir.name if run_dir is not None else folder.name)
    return AgentSpec(
        kind=kind,
        label=label,
        model=str(folder),
        trained_action_space=space,
        history=meta.history,
        scoring=meta.scoring,
        fix_grammar=bool(env_cfg.get("fix_grammar", False)),
        frames=meta.frames,
        run_dir=str(run_dir) if run_dir is not None else None,
        run_id=run_id,
        source=f"run:{run_id}" if run_id else f"checkpoint:{folder}",
        **options,
    )


def run_spec(run_id: str, uri: str, download_to: Path, **options: Any) -> AgentSpec:
    """The model of MLflow run ``run_id``: its run dir (tag ``run_dir``) when it is on this
    machine, else its ``model`` artifact downloaded into ``download_to/<run_id>``.

    Raises:
        EvalError: unknown run, unreachable store, or a run without an exported model.
    """
    from glamhpc.tracking.evals import download_artifacts, read_run
    from glamhpc.tracking.uri import TrackingError

    try:
        run = read_run(uri, run_id)
    except TrackingError as exc:
        raise EvalError(str(exc)) from None
    run_dir = run.tags.get("run_dir")
    label = run.name or run_id[:8]
    if run_dir and (Path(run_dir) / "model" / META_FILE).is_file():
        return replace(checkpoint_spec(run_dir, run_id=run_id, **options), label=label)
    target = download_to / run_id
    if not (target / "model" / META_FILE).is_file() and not download_artifacts(
        uri, run_id, "model", target
    ):
        # No such artifact: training unfinished, or tracking.log_model=false.
        raise EvalError(
            f"MLflow run {run_id!r} has no exported model: its run dir "
            f"{run_dir or '(unknown)'} has no model/ here and it logged no `model` artifact "
            "(training unfinished, or tracking.log_model=false); evaluate the run dir with "
            "--checkpoint where it lives"
        )
    spec = checkpoint_spec(target / "model", run_id=run_id, **options)
    return replace(
        spec, label=label, run_dir=run_dir if run_dir and Path(run_dir).is_dir() else None
    )


def training_level(spec: AgentSpec) -> str | None:
    """Level a checkpoint was trained on (its default evaluation level), if known."""
    if spec.model is None or spec.trained_action_space is None:
        return None
    from glamhpc.evaluate.verify import read_meta

    try:
        return read_meta(Path(spec.model)).level
    except EvalError:
        return None


def check_compatible(spec: AgentSpec, item: SuiteItem) -> None:
    """Refuse items whose candidates the agent cannot act with.

    A fine-tuned checkpoint learnt what each candidate index does; an item is compatible when
    its candidates run the same minigrid actions in the same order (standard -> synonyms or
    French is the intended test; standard -> restricted or augmented is not).

    Raises:
        EvalError: mismatching action spaces, or a space without words in the item's language.
    """
    try:
        action_texts(item.action_space, item.language)
        wanted = env_actions(item.action_space)
    except ValueError as exc:
        raise EvalError(f"suite item {item.name!r}: {exc}") from None
    trained = spec.trained_action_space
    if trained is not None and env_actions(trained) != wanted:
        raise EvalError(
            f"{spec.label} was trained on the {trained!r} action space "
            f"({len(env_actions(trained))} candidates) but suite item {item.name!r} uses "
            f"{item.action_space!r} ({len(wanted)} candidates); evaluate it on --level with its "
            "own action space or pick items of a matching space"
        )


class BotAgent:
    """minigrid's BabyAI bot as an `EnvAgent`: one bot per env, renewed at every episode.

    The bot plans on the underlying minigrid env (``env.unwrapped``: grid, agent, instruction)
    and suggests a minigrid action; it becomes a one-hot distribution over the candidate that
    runs that action. A suggestion no candidate runs (``done`` in the standard space, ``pick
    up`` in the restricted one) falls back to candidate 0 and the bot is told what was really
    done, so it replans; bot exceptions (it has a few asserts on odd layouts) are counted in
    ``errors`` and handled the same way.
    """

    def __init__(self, action_space: str) -> None:
        self.env_actions = env_actions(action_space)
        self.candidate: dict[int, int] = {}
        for index, act in enumerate(self.env_actions):
            self.candidate.setdefault(act, index)
        self.bots: list[Any] = []
        self.taken: list[int | None] = []
        self.errors = 0
        self._envs: EnvBatch | None = None

    def _new_bot(self, env: Any) -> Any:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        return BabyAIBot(env)

    def begin(self, envs: EnvBatch) -> None:
        self._envs = envs
        self.bots = [self._new_bot(env) for env in envs.envs]
        self.taken = [None] * envs.num_envs

    def logprobs(self, envs: EnvBatch, active: list[int], prompts: list[str]) -> np.ndarray:
        out = np.full((len(active), len(self.env_actions)), -np.inf)
        for row, i in enumerate(active):
            try:
                suggestion = int(self.bots[i].replan(self.taken[i]))
            except Exception:  # the bot's internal asserts (see the class docstring)
                self.errors += 1
                suggestion = -1
            out[row, self.candidate.get(suggestion, 0)] = 0.0
        return out

    def after_step(self, actions: Sequence[int], step: StepResult) -> None:
        assert self._envs is not None, "begin() first"
        self.taken = [self.env_actions[a] for a in actions]
        for info in step.episodes:
            i = info.env_index
            self.bots[i] = self._new_bot(self._envs.envs[i])
            self.taken[i] = None


@dataclass
class LoadedAgent:
    """An agent ready to play: the LLM loaded once, one policy per suite item."""

    spec: AgentSpec
    model: Any = None
    tokenizer: Any = None
    action_head: dict[str, Any] | None = None
    """A ``policy.head=action`` export's action MLP weights (its ``action_head.safetensors``)."""

    def policy_for(self, texts: Sequence[str], item: SuiteItem) -> PromptScorer | EnvAgent:
        """Policy scoring the candidates ``texts`` (the EnvBatch's action texts for ``item``)."""
        if self.spec.kind == "random":
            return uniform_policy(len(texts))
        if self.spec.kind == "bot":
            return BotAgent(item.action_space)
        if self.spec.kind == "symbolic":
            from glamhpc.agents.symbolic.play import SymbolicPlayer

            return SymbolicPlayer(self.model, len(texts))
        if self.spec.kind == "drrn":  # Q-values of any candidate texts: it reads them
            from glamhpc.agents.drrn.export import drrn_scorer

            return drrn_scorer(self.model, self.tokenizer, texts)
        import torch

        from glamhpc.policy.glam import GlamPolicy

        head = self.action_head
        policy = GlamPolicy(
            self.model,
            self.tokenizer,
            list(texts),
            scoring=self.spec.scoring,  # type: ignore[arg-type]
            max_batch_tokens=self.spec.max_batch_tokens,
            value_hidden=1,  # values are not used in evaluation: the smallest head
            method=self.spec.method,  # type: ignore[arg-type]
            head="scoring" if head is None else "action",
            action_hidden=1 if head is None else int(head["0.weight"].shape[0]),
        )
        if head is not None and policy.action_head is not None:
            try:
                policy.action_head.load_state_dict(head)
            except RuntimeError as exc:  # wrong keys or a K that is not this item's
                raise EvalError(
                    f"{self.spec.label}: its action head does not fit suite item {item.name!r} "
                    f"({len(texts)} candidates): {str(exc).splitlines()[-1].strip()[:200]}"
                ) from None

        @torch.inference_mode()
        def score(prompts: list[str]) -> torch.Tensor:
            return policy(prompts)[0]

        return score


def load_agent(spec: AgentSpec) -> LoadedAgent:
    """Load the LLM of a ``glam`` spec (baselines need nothing).

    Raises:
        EvalError: the model is not available on this machine (one line, with the fix).
    """
    if spec.kind == "symbolic":
        from glamhpc.agents.symbolic.play import load_exported

        assert spec.model is not None
        try:
            return LoadedAgent(spec, load_exported(Path(spec.model), spec.device))
        except ValueError as exc:
            raise EvalError(str(exc)) from None
    if spec.kind == "drrn":
        from glamhpc.agents.drrn.export import load_drrn

        assert spec.model is not None
        try:
            return LoadedAgent(spec, *load_drrn(Path(spec.model), spec.device))
        except ValueError as exc:
            raise EvalError(str(exc)) from None
    if spec.kind != "glam":
        return LoadedAgent(spec)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from glamhpc.policy.models import ModelNotAvailableError, load_model

    assert spec.model is not None
    folder = Path(spec.model)
    try:
        model, tokenizer = load_model(
            spec.model,
            path=str(folder) if folder.is_dir() else None,
            dtype=spec.dtype,
            device=spec.device,
            cache_dir=spec.cache_dir,
        )
        head_file = folder / "action_head.safetensors"  # exported by policy.head=action runs
        head = load_file(str(head_file)) if folder.is_dir() and head_file.is_file() else None
    except ModelNotAvailableError as exc:
        raise EvalError(str(exc)) from None
    except SafetensorError as exc:  # e.g. a truncated file in a --model folder
        raise EvalError(f"cannot load the weights of {spec.model}: {exc}") from None
    return LoadedAgent(spec, model, tokenizer, head)


def with_options(spec: AgentSpec, **options: Any) -> AgentSpec:
    """``spec`` with some fields replaced (None values keep the spec's own)."""
    return replace(spec, **{k: v for k, v in options.items() if v is not None})
