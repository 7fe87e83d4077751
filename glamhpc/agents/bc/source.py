"""Where a behaviour-cloning run's demonstrations come from (``bc.dataset``).

A folder written by `glamhpc demos`, or ``bot:N``: N episodes of the BabyAI bot on the run's own
level and env settings, written into ``<run dir>/demos`` by rank 0 before the first step (once:
a resumed run finds them there). The bot plays through `glamhpc demos` in a child process, so
the writer is the very command a user runs, with evaluation's player, which this layer may not
import. Every rank then validates the dataset (manifest, sha256 of every shard) and checks it
was recorded with the run's level, action space, history and grammar: its prompts must be the
prompts the run's envs write.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from glamhpc.agents.bc.dataset import MANIFEST, DatasetError, check_matches, read_rows, validate
from glamhpc.config import Config
from glamhpc.distributed import DistContext
from glamhpc.rundir import RunDir

BOT = re.compile(r"bot:([1-9][0-9]*)")
DEMOS = "demos"


def dataset_folder(cfg: Config, rundir: RunDir) -> Path:
    """The dataset ``bc.dataset`` names (``<run dir>/demos`` for ``bot:N``)."""
    if BOT.fullmatch(cfg.bc.dataset):
        return rundir.path / DEMOS
    return Path(cfg.bc.dataset).expanduser()


def bot_command(cfg: Config, episodes: int, out: Path) -> list[str]:
    """The `glamhpc demos` command that writes ``bot:N`` for ``cfg``."""
    env = cfg.env
    cmd = [sys.executable, "-m", "glamhpc", "demos", "--agent", "bot", "--level", env.level]
    cmd += ["--episodes", str(episodes), "--seed", str(cfg.seed), "--history", str(env.history)]
    cmd += ["--action-space", env.action_space, "--out", str(out)]
    return [*cmd, "--fix-grammar"] if env.fix_grammar else cmd


def _write_bot(cfg: Config, episodes: int, out: Path) -> None:
    print(f"writing {episodes} bot episodes into {out}", flush=True)
    done = subprocess.run(bot_command(cfg, episodes, out), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DatasetError(f"could not write the bot demonstrations into {out}: {last}")


def load_pairs(cfg: Config, rundir: RunDir, ctx: DistContext, envs: Any) -> list[tuple[str, str]]:
    """(prompt, action text) of every demonstration, on every rank (collective).

    Raises:
        DatasetError (on every rank): a missing, damaged or mismatching dataset.
    """
    folder = dataset_folder(cfg, rundir)
    problem: str | None = None
    bot = BOT.fullmatch(cfg.bc.dataset)
    if ctx.is_main and bot and not (folder / MANIFEST).is_file():
        try:
            _write_bot(cfg, int(bot.group(1)), folder)
        except DatasetError as exc:
            problem = str(exc)
    problem = ctx.broadcast_object(problem)
    if problem is not None:
        raise DatasetError(problem)
    manifest = validate(folder)
    check_matches(
        manifest,
        folder,
        level=cfg.env.level,
        candidates=list(envs.action_texts),
        history=cfg.env.history,
        fix_grammar=cfg.env.fix_grammar,
    )
    if manifest.rows == 0:
        raise DatasetError(f"dataset {str(folder)!r} holds no rows (no successful episode)")
    return [(row["prompt"], row["action_text"]) for row in read_rows(folder, manifest)]
