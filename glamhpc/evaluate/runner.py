"""Preparing and running an evaluation: suite items x episodes, split into parts, merged back.

Seeds (deterministic, disjoint from training): every env of a suite item is an EnvBatch seeded
``TEST_SEED_BASE * seed`` (upstream's test seeds ``1e9 * seed + i``; env stream ``i`` is the
EnvBatch's global env index); action sampling uses one generator per stream seeded by
``(seed, i)``. Items on the same level therefore see the same episodes (a paired comparison of,
e.g., a modifier against no modification) and a result depends on (agent, items, episodes,
num_envs, seed, greedy) only: not on the number of parts, ranks or array tasks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glamhpc.envs.suites import SUITES, SuiteItem, get_suite
from glamhpc.evaluate.agents import AgentSpec, EvalError, LoadedAgent, check_compatible, load_agent
from glamhpc.evaluate.episodes import TEST_SEED_BASE, Episode, play_episodes, stream_quotas
from glamhpc.evaluate.parts import merge_parts, part_streams
from glamhpc.evaluate.stats import ItemSummary, KindSummary, kind_summaries, summarize
from glamhpc.fsutil import atomic_write_json

if TYPE_CHECKING:
    from glamhpc.distributed import DistContext
    from glamhpc.launch.eval_array import EvalArrayOptions

__all__ = [
    "LEVEL_SUITE",
    "EvalItem",
    "EvalResult",
    "EvalWork",
    "PartTask",
    "evaluate",
    "item_suite",
    "level_item",
    "resolve_items",
    "run_part",
    "test_env_seed",
]

#: Metric namespace of items given with --level (not part of a named suite).
LEVEL_SUITE = "level"


def test_env_seed(seed: int) -> int:
    """EnvBatch seed of the evaluation envs (upstream: test env i uses ``1e9 * seed + i``).

    ``seed`` must be >= 1: seed 0 would give EnvBatch seed 0, i.e. the training episodes of a
    run seeded 0.
    """
    if seed < 1:
        raise EvalError(f"evaluation seed must be >= 1 (got {seed}): seed 0 replays training envs")
    return TEST_SEED_BASE * seed


@dataclass(frozen=True)
class EvalItem:
    """A suite item with the namespace its metrics are logged under."""

    suite: str
    item: SuiteItem

    @property
    def key(self) -> str:
        return f"{self.suite}/{self.item.name}"


def item_suite(item: SuiteItem) -> str:
    """Namespace of an item: the first suite of `SUITES` holding it (``paper`` for all paper
    items), whatever group it was selected through, so metric keys do not depend on how the
    user asked for an item."""
    for name, items in SUITES.items():
        if item in items:
            return name
    return LEVEL_SUITE


def level_item(level: str, action_space: str = "standard") -> SuiteItem:
    """An item playing ``level`` unmodified (``--level``), named by the level's short name."""
    from glamhpc.envs.levels import level_language, resolve_level

    try:
        level_id = resolve_level(level)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    short = level_id.removeprefix("BabyAI-").rsplit("-v", 1)[0]
    return SuiteItem(short, level_id, action_space=action_space, language=level_language(level_id))


def resolve_items(
    suites: Sequence[str],
    levels: Sequence[str],
    default_level: str | None = None,
    action_space: str | None = None,
) -> list[EvalItem]:
    """Items of the named suites (groups or single items) and levels, in order, deduplicated.

    ``action_space`` is the space of ``--level`` items (a checkpoint's own; standard otherwise).
    With neither suites nor levels, ``default_level`` (a checkpoint's training level) is used.

    Raises:
        EvalError: an unknown suite or level, or nothing to evaluate.
    """
    items: list[EvalItem] = []
    for name in suites:
        try:
            chosen = get_suite(name)
        except ValueError as exc:
            raise EvalError(str(exc)) from None
        items.extend(EvalItem(item_suite(item), item) for item in chosen)
    space = action_space or "standard"
    items.extend(EvalItem(LEVEL_SUITE, level_item(level, space)) for level in levels)
    if not items:
        if default_level is None:
            raise EvalError("nothing to evaluate: give --suite (e.g. paper) and/or --level")
        items.append(EvalItem(LEVEL_SUITE, level_item(default_level, space)))
    unique: dict[str, EvalItem] = {}
    for entry in items:
        unique.setdefault(entry.key, entry)
    return list(unique.values())


@dataclass(frozen=True)
class EvalWork:
    """What to play: every item gets ``episodes`` episodes on ``num_envs`` env streams."""

    items: tuple[EvalItem, ...]
    episodes: int
    num_envs: int
    seed: int
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.num_envs < 1:
            raise EvalError("--episodes and --num-envs must be >= 1")
        test_env_seed(self.seed)

    @property
    def streams(self) -> int:
        """Env streams per item: never more than there are episodes."""
        return min(self.num_envs, self.episodes)


@dataclass(frozen=True)
class PartTask:
    """One part of an evaluation's work (the unit a rank or an array task runs; picklable)."""

    agent: AgentSpec
    work: EvalWork
    part: int = 0
    num_parts: int = 1


ProgressFn = Callable[[str, int], None]


def run_part(
    task: PartTask, loaded: LoadedAgent | None = None, progress: ProgressFn | None = None
) -> dict[str, list[Episode]]:
    """Play this part's streams of every item; episodes by item key.

    ``loaded`` reuses an already loaded agent (the local executor loads the LLM once for all
    parts); ``progress(item_key, episodes_done)`` is called after every episode.
    """
    from glamhpc.envs.batch import EnvBatch

    work, spec = task.work, task.agent
    agent = loaded if loaded is not None else load_agent(spec)
    streams = part_streams(work.streams, task.num_parts, task.part)
    quotas = stream_quotas(work.episodes, work.streams)[streams.start : streams.stop]
    out: dict[str, list[Episode]] = {}
    for entry in work.items:
        item = entry.item
        check_compatible(spec, item)
        envs = EnvBatch(
            level=item.level,
            num_envs=len(streams),
            seed=test_env_seed(work.seed),
            action_space=item.action_space,
            history=spec.history,
            language=item.language,
            env_seed_offset=streams.start,
            fix_grammar=spec.fix_grammar,
        )
        modifier = item.modifier

        def transform(prompts: list[str], _rng: Any, modify: Any = modifier) -> list[str]:
            return [modify(p) for p in prompts]

        on_episode = None
        if progress is not None:

            def on_episode(n: int, key: str = entry.key) -> None:
                progress(key, n)

        try:
            out[entry.key] = play_episodes(
                agent.policy_for(envs.action_texts, item),
                envs,
                quotas,
                seed=work.seed,
                # The bot is deterministic: its one-hot distribution needs no sampling.
                greedy=work.greedy or spec.kind == "bot",
                prompt_transform=transform if modifier is not None else None,
                on_episode=on_episode,
            )
        finally:
            envs.close()
    return out


@dataclass
class EvalResult:
    """Merged outcome of one agent on an evaluation's work."""

    agent: AgentSpec
    work: EvalWork
    episodes: dict[str, list[Episode]] = field(default_factory=dict)

    def rows(self) -> list[ItemSummary]:
        """One table row per item, in item order."""
        return [
            summarize(self.agent.label, e.suite, e.item.name, e.item.level, self.episodes[e.key])
            for e in self.work.items
        ]

    def kinds(self) -> list[KindSummary]:
        """Success per task kind per item."""
        rows: list[KindSummary] = []
        for e in self.work.items:
            rows.extend(
                kind_summaries(self.agent.label, e.suite, e.item.name, self.episodes[e.key])
            )
        return rows


def merge_results(
    agent: AgentSpec, work: EvalWork, parts: Iterable[Mapping[str, Sequence[Episode]]]
) -> EvalResult:
    """Merge part outputs into the result of the whole evaluation (validated for completeness)."""
    parts = list(parts)
    episodes = {
        e.key: merge_parts([p.get(e.key, []) for p in parts], work.episodes, work.streams)
        for e in work.items
    }
    return EvalResult(agent, work, episodes)


def check_work(agent: AgentSpec, work: EvalWork) -> None:
    """Fail before any work (or any submission) on an item the agent cannot play."""
    for entry in work.items:
        check_compatible(agent, entry.item)


def evaluate(
    agent: AgentSpec,
    work: EvalWork,
    parts: int = 1,
    executor: str = "local",
    slurm: EvalArrayOptions | None = None,
    loaded: LoadedAgent | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Evaluate ``agent`` on ``work``, split into ``parts`` parts, and merge.

    ``local`` plays the parts one after another in this process (the LLM is loaded once);
    ``slurm`` submits them as one submitit array job and waits for it.

    Raises:
        EvalError: incompatible items, more parts than env streams, an unusable model, or a
            failed submission (one-line messages).
    """
    check_work(agent, work)
    if not 1 <= parts <= work.streams:
        raise EvalError(
            f"--parts {parts}: must be between 1 and the number of env streams "
            f"({work.streams}; raise --num-envs for more parts)"
        )
    tasks = [PartTask(agent, work, p, parts) for p in range(parts)]
    if executor == "local":
        loaded = loaded if loaded is not None else load_agent(agent)
        return merge_results(agent, work, (run_part(t, loaded, progress) for t in tasks))
    if executor == "slurm":
        if slurm is None:
            raise EvalError("--executor slurm needs a job folder")
        return merge_results(agent, work, submit_slurm(tasks, slurm))
    raise EvalError(f"unknown executor {executor!r}; expected 'local' or 'slurm'")


def submit_slurm(
    tasks: Sequence[PartTask], options: EvalArrayOptions
) -> list[dict[str, list[Episode]]]:
    """Run ``tasks`` as a Slurm array job (one task per part) and return their outputs.

    submitit pickles each PartTask to the shared job folder; array tasks load the agent
    themselves and write their episodes as JSON (`run_part_to_file`), which is what is read
    back here: submitit's pickled return values (``job.result()``) are never unpickled, so a
    file planted in the job folder cannot run code in this process. `glamhpc.launch.eval_array`
    submits the array and records it, so `glamhpc jobs` lists it and `glamhpc cancel` stops it.
    """
    from glamhpc.config import ConfigError
    from glamhpc.launch.eval_array import submit_eval_array
    from glamhpc.launch.executors import LaunchError

    try:
        array = submit_eval_array(run_part_to_file, tasks, tasks[0].agent.label, options)
    except (ConfigError, LaunchError) as exc:
        raise EvalError(str(exc)) from None
    print(f"submitted {len(array.jobs)} array tasks (job {array.job_id}); waiting")
    outputs = []
    for job in array.jobs:
        job.wait()  # polls Slurm and the result file's existence; unpickles nothing
        outputs.append(read_part_file(Path(options.folder), str(job.job_id)))
    return outputs


#: Seconds a finished task's JSON may take to show up on a shared filesystem (NFS caching).
PART_FILE_GRACE_S = 30.0


def part_file(folder: Path, job_id: str) -> Path:
    return folder / f"{job_id}_episodes.json"


def run_part_to_file(task: PartTask) -> str:
    """What an evaluation array task runs: its part, written as JSON next to submitit's files."""
    import submitit

    env = submitit.JobEnvironment()
    path = part_file(env.paths.folder, str(env.job_id))
    out = run_part(task)
    atomic_write_json(path, {key: [asdict(e) for e in eps] for key, eps in out.items()})
    return str(path)


def read_part_file(
    folder: Path, job_id: str, grace_s: float = PART_FILE_GRACE_S
) -> dict[str, list[Episode]]:
    """A finished task's episodes (checked field by field).

    Raises:
        EvalError: no file (the task failed or was cancelled) or not what a task writes.
    """
    path = part_file(folder, job_id)
    deadline = time.monotonic() + grace_s
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(1.0)
    failed = f"evaluation array task {job_id} failed; its log is in {folder}"
    try:
        data = json.loads(path.read_text())
    except OSError:
        raise EvalError(f"{failed} (it wrote no {path.name})") from None
    except ValueError as exc:
        raise EvalError(f"{failed} ({path.name} is not JSON: {exc})") from None
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        return {str(key): [_episode(e) for e in eps] for key, eps in data.items()}
    except (TypeError, ValueError) as exc:
        raise EvalError(f"{path} is not an evaluation part's output ({exc})") from None


#: Episode's annotations (strings under `from __future__ import annotations`) -> JSON types.
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "bool": bool,
    "float": (int, float),
    "str": str,
}


def _episode(record: Any) -> Episode:
    if not isinstance(record, dict) or set(record) != {f.name for f in fields(Episode)}:
        raise ValueError(f"bad episode record {record!r:.80}")
    episode = Episode(**record)
    for f in fields(Episode):
        if not isinstance(getattr(episode, f.name), _FIELD_TYPES[str(f.type)]):
            raise ValueError(f"episode field {f.name}={getattr(episode, f.name)!r:.40}")
    return episode


def evaluate_distributed(
    agent: AgentSpec, work: EvalWork, ctx: DistContext, progress: ProgressFn | None = None
) -> EvalResult | None:
    """Under torchrun: rank ``r`` plays part ``r``; rank 0 gathers and returns the merged
    result, the other ranks return None. ``ctx`` is the joined process group's context
    (`glamhpc.distributed.init_distributed`)."""
    check_work(agent, work)
    if ctx.world_size > work.streams:
        raise EvalError(
            f"{ctx.world_size} ranks but only {work.streams} env streams; raise --num-envs"
        )
    mine = run_part(PartTask(agent, work, ctx.rank, ctx.world_size), progress=progress)
    gathered = ctx.gather_objects_to_main(mine)
    if gathered is None:
        return None
    return merge_results(agent, work, gathered)
