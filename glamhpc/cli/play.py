"""`glamhpc play`: play a BabyAI-Text level by hand and see exactly what the LLM would see.

Useful to sanity-check a level, the descriptions and the prompt (whitespace included) before
spending compute on training. Input is read line by line from stdin, so the command can also be
scripted (``printf '2\\n0\\nq\\n' | glamhpc play GoToLocal``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, cast

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail

if TYPE_CHECKING:
    from minigrid.minigrid_env import MiniGridEnv
    from rich.console import Console

    from glamhpc.envs.textenv import TextEnv

_QUIT = {"q", "quit", "exit"}
_RESET = {"r", "reset"}
_HELP = {"?", "h", "help"}


def _action_list(env: TextEnv) -> str:
    return ", ".join(f"{i} {text}" for i, text in enumerate(env.action_texts))


def _parse_action(env: TextEnv, line: str) -> int | None:
    """Candidate index for a number or an action name (case-insensitive), else None."""
    if line.isdigit():
        index = int(line)
        return index if index < len(env.action_texts) else None
    names = {text.lower(): i for i, text in enumerate(env.action_texts)}
    return names.get(" ".join(line.lower().split()))


def _show_state(console: Console, env: TextEnv, episode: int, seed: int) -> None:
    from rich.panel import Panel
    from rich.text import Text

    title = f"{env.level_id} - episode {episode} (seed {seed}) - task {env.task_kind}"
    console.print(Panel(Text(env.mission), title="Mission", subtitle=title))
    observation = "\n".join(env.descriptions) or "(nothing in view)"
    console.print(Panel(Text(observation), title="Observation"))
    # Text() keeps the prompt verbatim (no markup parsing); only the terminal wraps it.
    console.print(Panel(Text(env.prompt), title="Prompt the LLM scores its actions against"))
    console.print(f"actions: {_action_list(env)}", markup=False, highlight=False)


def _show_help(console: Console, env: TextEnv) -> None:
    console.print(
        "Type an action by number or name, 'r' to start a new episode, "
        "'?' for this help, 'q' (or Ctrl-D) to quit.",
        markup=False,
    )
    console.print(f"actions: {_action_list(env)}", markup=False, highlight=False)


@app.command()
def play(
    level: str = typer.Argument(
        "MixedTrainLocal", help="Level: MixedTrainLocal, BabyAI-GoToLocal, a full gym id..."
    ),
    seed: int = typer.Option(0, "--seed", help="Episode k is reset with seed + k."),
    action_space: str = typer.Option(
        "standard", "--action-space", help="standard, restricted, augmented or synonyms."
    ),
    history: int = typer.Option(3, "--history", help="Observations kept in the prompt."),
    language: str = typer.Option(
        None, "--language", help="english or french (default: the level's own)."
    ),
    reward_scale: float = typer.Option(20.0, "--reward-scale", help="Factor on the reward."),
    fix_grammar: bool = typer.Option(False, "--fix-grammar", help="'an open door'."),
) -> None:
    """Play a level interactively: mission, text observation and the exact LLM prompt."""
    from rich.console import Console

    from glamhpc.envs.textenv import TextEnv

    try:
        env = TextEnv(
            level,
            action_space=action_space,
            history=history,
            reward_scale=reward_scale,
            language=language,
            fix_grammar=fix_grammar,
        )
    except ValueError as exc:
        fail(str(exc))
    console = Console()
    episode = 0
    env.reset(seed=seed)
    total = 0.0
    _show_state(console, env, episode, seed + episode)
    while True:
        console.print("action> ", end="", markup=False)
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C: leave like Ctrl-D, without a traceback
            line = ""
        if not line:  # EOF (Ctrl-D, or the end of piped input)
            console.print()
            break
        command = line.strip()
        if not command:
            continue
        if command.lower() in _QUIT:
            break
        if command.lower() in _HELP:
            _show_help(console, env)
            continue
        if command.lower() in _RESET:
            episode += 1
            env.reset(seed=seed + episode)
            total = 0.0
            _show_state(console, env, episode, seed + episode)
            continue
        index = _parse_action(env, command)
        if index is None:
            console.print(
                f"unknown action {command!r}; valid: {_action_list(env)}",
                markup=False,
                highlight=False,
            )
            continue
        _, reward, terminated, truncated, info = env.step(index)
        total += info["raw_reward"]
        steps = cast("MiniGridEnv", env.unwrapped).step_count
        limit = cast("MiniGridEnv", env.unwrapped).max_steps
        console.print(
            f"{env.action_texts[index]} -> reward {reward:g} (raw {info['raw_reward']:.3f}), "
            f"return {total:.3f}, step {steps}/{limit}",
            markup=False,
            highlight=False,
        )
        if terminated or truncated:
            outcome = "SUCCESS" if info["success"] else "failure (step limit)"
            console.print(
                f"episode over: {outcome}, return {total:.3f} (raw), length {steps}",
                markup=False,
                highlight=False,
            )
            episode += 1
            env.reset(seed=seed + episode)
            total = 0.0
        _show_state(console, env, episode, seed + episode)
    env.close()
