"""`glamhpc demos`: write a behaviour-cloning dataset from the bot or a trained agent, or check one.

The episodes are played by evaluation's player (`glamhpc.evaluate.episodes.play_episodes`, the
bot and checkpoint agents of `glamhpc.evaluate.agents`) on training-side seeds of their own:
env streams from `DEMO_STREAM_OFFSET` up, away from a run's training envs (streams 0..N-1) and
from the test seeds of `glamhpc eval`. The writer is `glamhpc.agents.bc.dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail

if TYPE_CHECKING:
    from glamhpc.agents.bc.dataset import Manifest

#: First global env stream of a demonstration run (its reset seeds derive from it).
DEMO_STREAM_OFFSET = 1 << 30


@app.command()
def demos(
    agent: str = typer.Option("bot", "--agent", help="bot, or a finished run dir / model folder."),
    level: str = typer.Option(None, "--level", help="Level (default: the run's; bot: required)."),
    episodes: int = typer.Option(100, "--episodes", min=1, help="Episodes to play."),
    seed: int = typer.Option(1, "--seed", min=0, help="Seed of the envs and of the sampling."),
    out: Path = typer.Option(None, "--out", help="Dataset folder to create (must not exist)."),
    history: int = typer.Option(None, "--history", help="Observations per prompt (run's / 3)."),
    action_space: str = typer.Option(None, "--action-space", help="Candidates (run's/standard)."),
    fix_grammar: bool = typer.Option(False, "--fix-grammar", help="Bot: the fixed grammar."),
    num_envs: int = typer.Option(16, "--num-envs", min=1, help="Envs played in parallel."),
    all_episodes: bool = typer.Option(
        False, "--all-episodes", help="Keep failed episodes too (default: successes only)."
    ),
    greedy: bool = typer.Option(False, "--greedy", help="A trained agent's argmax actions."),
    check: Path = typer.Option(None, "--check", help="Only validate this dataset folder."),
) -> None:
    """Write (prompt, candidates, action) rows of N episodes as a dataset for `agent: bc`."""
    from glamhpc.agents.bc.dataset import DatasetError, validate

    try:
        if check is not None:
            typer.echo(_describe(check, validate(check)))
            return
        if out is None:
            fail("give --out DIR (the dataset folder to create) or --check DIR")
        manifest = _write(
            agent,
            level,
            episodes,
            seed,
            out,
            history,
            action_space,
            fix_grammar,
            num_envs,
            not all_episodes,
            greedy,
        )
    except DatasetError as exc:
        fail(str(exc))
    typer.echo(_describe(out, manifest))


def _describe(path: Path, m: Manifest) -> str:
    return (
        f"dataset {path}: {m.rows} rows from {m.kept_episodes}/{m.episodes} episodes "
        f"({m.source}, {m.level}, seed {m.seed}, history {m.history}, {len(m.shards)} shard(s))"
    )


def _spec(agent: str, history: int | None, fix_grammar: bool) -> Any:
    from glamhpc.evaluate.agents import EvalError, baseline_spec, checkpoint_spec, with_options

    try:
        if agent == "bot":
            return with_options(baseline_spec("bot", history or 3), fix_grammar=fix_grammar)
        spec = checkpoint_spec(agent, device="cpu")
        return with_options(spec, history=history)
    except EvalError as exc:
        fail(str(exc))


def _write(
    agent: str,
    level: str | None,
    episodes: int,
    seed: int,
    out: Path,
    history: int | None,
    action_space: str | None,
    fix_grammar: bool,
    num_envs: int,
    only_success: bool,
    greedy: bool,
) -> Manifest:
    from glamhpc.agents.bc.dataset import DatasetWriter, Manifest
    from glamhpc.agents.bc.recorder import Recorder, Rows
    from glamhpc.envs.batch import EnvBatch
    from glamhpc.envs.catalog import resolve_level
    from glamhpc.envs.suites import SuiteItem
    from glamhpc.evaluate.agents import EvalError, load_agent, training_level
    from glamhpc.evaluate.episodes import play_episodes, stream_quotas
    from glamhpc.ui.progress import progress_bar

    spec = _spec(agent, history, fix_grammar)
    level = level or training_level(spec)
    if level is None:
        fail("give --level (the bot plays any level; a model folder without its run names none)")
    try:
        level = resolve_level(level)
    except ValueError as exc:
        fail(str(exc))
    space = action_space or spec.trained_action_space or "standard"
    num_envs = max(1, min(num_envs, episodes))
    try:
        envs = EnvBatch(
            level=level,
            num_envs=num_envs,
            seed=seed,
            action_space=space,
            history=spec.history,
            env_seed_offset=DEMO_STREAM_OFFSET,
            fix_grammar=spec.fix_grammar,
        )
    except ValueError as exc:
        fail(f"cannot build {level} with the {space!r} action space: {exc}")
    item = SuiteItem(name="demos", level=level, action_space=space, language=envs.language)
    writer = DatasetWriter(out)
    kept = [0]

    def keep(rows: Rows, success: bool) -> None:
        if success or not only_success:
            writer.write_episode(rows)
            kept[0] += 1

    try:
        loaded = load_agent(spec)
        player = Recorder(loaded.policy_for(list(envs.action_texts), item), keep)
        with progress_bar("episodes", transient=True) as bar:
            task = bar.add_task("demos", total=episodes)
            play_episodes(
                player,
                envs,
                stream_quotas(episodes, num_envs),
                seed,
                greedy=greedy,
                on_episode=lambda n: bar.update(task, completed=n),
            )
        manifest = Manifest(
            source="bot" if spec.kind == "bot" else f"run:{spec.model}",
            level=level,
            seed=seed,
            episodes=episodes,
            kept_episodes=kept[0],
            rows=0,
            action_space=space,
            history=spec.history,
            language=envs.language,
            fix_grammar=spec.fix_grammar,
            candidates=list(envs.action_texts),
            only_success=only_success,
        )
        return writer.finish(manifest)
    except EvalError as exc:
        writer.abort()
        fail(str(exc))
    except BaseException:
        writer.abort()
        raise
    finally:
        envs.close()
