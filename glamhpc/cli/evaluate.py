"""`glamhpc eval`: a checkpoint, a zero-shot model or a baseline on the paper's suites.

Thin: parse, resolve the agents and the work (every user mistake fails here, in one line, exit
code 2, before any model is loaded or job submitted), run, print, save, log. The work lives in
`glamhpc.evaluate`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from glamhpc.cli import app
from glamhpc.cli.common import fail
from glamhpc.config import EvalConfig

if TYPE_CHECKING:
    from glamhpc.evaluate.agents import AgentSpec
    from glamhpc.evaluate.runner import EvalResult, EvalWork
    from glamhpc.launch.eval_array import EvalArrayOptions

_EVAL_DEFAULTS = EvalConfig()


class _Progress:
    """Episodes-done bar over all agents and items (progress callbacks give per-item counts)."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = progress.add_task("eval", total=total, item="") if progress else None
        self.seen: dict[str, int] = {}
        self.prefix = ""

    def __call__(self, key: str, done: int) -> None:
        if self.progress is None:
            return
        full = f"{self.prefix}{key}"
        step = done - self.seen.get(full, 0)
        self.seen[full] = done
        self.progress.update(self.task, advance=step, item=full)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[_Progress]:
    if not enabled:
        yield _Progress(None, 0)
        return
    from glamhpc.ui.progress import progress_bar

    with progress_bar("episodes", "{task.fields[item]}", transient=True) as progress:
        yield _Progress(progress, total)


def _default_out(specs: list[Any]) -> Path:
    """``<run dir>/eval`` for a training run, else ``runs/eval/<agents>``."""
    if specs[0].run_dir:
        return Path(specs[0].run_dir) / "eval"
    name = "+".join(s.label for s in specs)
    return Path("runs") / "eval" / re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


@app.command("eval")
def eval_command(
    run: str = typer.Option(None, "--run", help="MLflow run id of a finished training run."),
    checkpoint: Path = typer.Option(
        None, "--checkpoint", help="A finished run dir, or its exported model/ folder."
    ),
    model: str = typer.Option(
        None, "--model", help="Zero-shot baseline: tiny-t5, a cached hub id or a model folder."
    ),
    baseline: list[str] = typer.Option(
        [], "--baseline", help="Also evaluate a baseline: random or bot (repeatable)."
    ),
    suite: list[str] = typer.Option(
        [],
        "--suite",
        help="paper, compositions, distractor_transfer or one item name (repeatable).",
    ),
    level: list[str] = typer.Option(
        [], "--level", help="A level to play unmodified, e.g. GoToLocal (repeatable)."
    ),
    episodes: int = typer.Option(
        _EVAL_DEFAULTS.episodes, "--episodes", "-e", help="Episodes per item (paper: 1000)."
    ),
    num_envs: int = typer.Option(
        _EVAL_DEFAULTS.num_envs, "--num-envs", help="Env streams per item (results depend on it)."
    ),
    greedy: bool = typer.Option(
        _EVAL_DEFAULTS.greedy, "--greedy", help="Argmax actions (default: sampled, as the paper)."
    ),
    seed: int = typer.Option(1, "--seed", help="Test seed >= 1: env seeds are 1e9 * seed + i."),
    executor: str = typer.Option("local", "--executor", help="local (this process) or slurm."),
    parts: int = typer.Option(1, "--parts", help="Split each item's env streams into N parts."),
    partition: str = typer.Option(None, "--partition", help="Slurm partition (slurm only)."),
    time_limit: str = typer.Option(None, "--time", help="Slurm time limit per array task."),
    gpus_per_node: int = typer.Option(0, "--gpus-per-node", help="GPUs per array task."),
    cpus_per_task: int = typer.Option(None, "--cpus-per-task", help="CPUs per array task."),
    out: Path = typer.Option(
        None, "--out", help="Output folder (default: <run dir>/eval or runs/eval/<agent>)."
    ),
    uri: str = typer.Option(None, "--uri", help="MLflow tracking URI (default: as `train`)."),
    track: bool = typer.Option(True, "--track/--no-track", help="Log results to MLflow."),
    history: int = typer.Option(
        None, "--history", help="Prompt window of --model/baselines (default 3; checkpoints: own)."
    ),
    scoring: str = typer.Option(None, "--scoring", help="glam or paper (default: checkpoint's)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16."),
) -> None:
    """Evaluate on the GLAM paper's generalization suites: success rate (Wilson 95% CI), mean
    return and length per suite item; printed, saved as CSV/markdown, logged to MLflow."""
    args = _Args(**locals())  # first statement: locals() holds exactly the options here
    from glamhpc.evaluate.agents import EvalError

    try:
        _eval(args)
    except EvalError as exc:
        fail(str(exc))


@dataclass(frozen=True)
class _Args:
    """The options of `glamhpc eval`, typed (see the command's help for each)."""

    run: str | None
    checkpoint: Path | None
    model: str | None
    baseline: list[str]
    suite: list[str]
    level: list[str]
    episodes: int
    num_envs: int
    greedy: bool
    seed: int
    executor: str
    parts: int
    partition: str | None
    time_limit: str | None
    gpus_per_node: int
    cpus_per_task: int | None
    out: Path | None
    uri: str | None
    track: bool
    history: int | None
    scoring: str | None
    device: str
    dtype: str


def _eval(args: _Args) -> None:
    from rich.console import Console

    from glamhpc.evaluate import agents, report, runner
    from glamhpc.evaluate.agents import EvalError
    from glamhpc.tracking.uri import TrackingError, probe, resolve_uri, sqlite_path

    sources = [k for k in ("run", "checkpoint", "model") if getattr(args, k) is not None]
    if len(sources) > 1:
        raise EvalError(f"give one of --run, --checkpoint, --model (got {', '.join(sources)})")
    if not sources and not args.baseline:
        raise EvalError("nothing to evaluate: give --run, --checkpoint, --model or --baseline")
    if args.executor not in ("local", "slurm"):
        raise EvalError(f"unknown --executor {args.executor!r}; expected local or slurm")
    if args.scoring not in (None, "glam", "paper"):
        raise EvalError(f"unknown --scoring {args.scoring!r}; expected glam or paper")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        raise EvalError(f"unknown --device {args.device!r}; expected auto, cpu, cuda or cuda:N")
    if args.dtype not in ("fp32", "bf16"):
        raise EvalError(f"unknown --dtype {args.dtype!r}; expected fp32 or bf16")
    if args.history is not None and not 1 <= args.history <= 9:
        raise EvalError("--history must be between 1 and 9")
    uri = resolve_uri(args.uri) if (args.run or args.track) else ""
    store = sqlite_path(uri) if args.run else None
    if store is not None and not store.is_file():
        # Opening it would create an empty mlflow.db here: the run cannot be in it.
        raise EvalError(
            f"no MLflow tracking store at {store} to look up run {args.run!r}; give the store "
            "that holds the run with --uri or MLFLOW_TRACKING_URI"
        )
    options: dict[str, Any] = {"device": args.device, "dtype": args.dtype}  # -> **options
    overrides = {"history": args.history, "scoring": args.scoring}

    specs: list[agents.AgentSpec] = []
    if args.run:
        download = Path(args.out or Path("runs") / "eval") / ".models"
        specs.append(agents.run_spec(args.run, uri, download, **options))
    elif args.checkpoint is not None:
        specs.append(agents.checkpoint_spec(args.checkpoint, **options))
    elif args.model:
        specs.append(agents.model_spec(args.model, **options))
    specs = [agents.with_options(s, **overrides) for s in specs]
    main = specs[0] if specs else None
    base_history = main.history if main else (args.history or 3)
    specs += [agents.baseline_spec(name, base_history) for name in dict.fromkeys(args.baseline)]

    items = runner.resolve_items(
        args.suite,
        args.level,
        default_level=agents.training_level(main) if main else None,
        action_space=main.trained_action_space if main else None,
    )
    work = runner.EvalWork(tuple(items), args.episodes, args.num_envs, args.seed, args.greedy)
    for spec in specs:
        runner.check_work(spec, work)
    out_dir = Path(args.out) if args.out else _default_out(specs)
    _check_writable(out_dir)
    selection = list(args.suite) + list(args.level) or [items[0].item.name]
    tag = report.output_tag(selection, work.seed, work.greedy)
    if args.track:
        try:  # fail now, not after hours of episodes; only now may the store be created
            probe(uri)
        except TrackingError as exc:
            raise EvalError(str(exc)) from None

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    console = Console()
    if not console.is_terminal:
        # Logs and pipes: rich would wrap the table at 80 columns.
        console = Console(width=max(console.width, 140))
    results = []
    total = len(specs) * len(items) * work.episodes
    try:
        with _progress(console.is_terminal and rank == 0, total) as bar:
            for spec in specs:
                bar.prefix = f"{spec.label} "
                if world > 1:
                    result = _distributed(spec, work, bar)
                    if result is None:
                        continue
                else:
                    slurm = _array_options(args, out_dir) if args.executor == "slurm" else None
                    result = runner.evaluate(
                        spec, work, args.parts, args.executor, slurm=slurm, progress=bar
                    )
                results.append(result)
    finally:
        # An initialised process group left to the interpreter's exit can abort the process
        # ("terminate called without an active exception", 6 runs in 30 before this).
        if world > 1:
            from glamhpc.distributed import shutdown

            shutdown()
    if rank != 0:
        return

    header = {
        "episodes per item": work.episodes,
        "env streams": work.streams,
        "seed": work.seed,
        "actions": "greedy" if work.greedy else "sampled",
    }
    files = report.write_outputs(out_dir / tag, results, header)
    console.print(report.render_table(results, title=f"glamhpc eval ({tag})"))
    console.print(f"results: {files[0]} and {files[1]}", highlight=False)
    if not args.track:
        return
    params = {
        "suites": ",".join(selection),
        "episodes": work.episodes,
        "num_envs": work.streams,
        "seed": work.seed,
        "greedy": work.greedy,
    }
    for result in results:
        agent = result.agent
        agent_params = {**params, "agent": agent.label, "source": agent.source}
        if agent.kind == "glam":
            agent_params.update(history=agent.history, scoring=agent.scoring)
        try:
            run_id = report.log_to_mlflow(result, files, uri, tag, agent_params)
        except TrackingError as exc:
            raise EvalError(str(exc)) from None
        where = "into run" if result.agent.run_id else "new eval run"
        console.print(
            f"MLflow: {result.agent.label} logged {where} {run_id} ({uri})", highlight=False
        )


def _check_writable(out_dir: Path) -> None:
    """Refuse an --out the results could not be written to, before the evaluation runs.

    Nothing is created here: the nearest existing folder on the way must be writable."""
    from glamhpc.evaluate.agents import EvalError

    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise EvalError(
            f"cannot write results to --out {out_dir}: {existing} is a file, not a folder; "
            "choose another --out"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EvalError(
            f"cannot write results to --out {out_dir}: {existing} is not writable; choose a "
            "writable folder with --out"
        )


def _array_options(args: _Args, out_dir: Path) -> EvalArrayOptions:
    """Resources of each array task of ``--executor slurm``; files go to ``<out>/slurm``."""
    from glamhpc.launch.eval_array import EvalArrayOptions

    return EvalArrayOptions(
        folder=out_dir / "slurm",
        partition=args.partition,
        time=args.time_limit,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
    )


def _distributed(spec: AgentSpec, work: EvalWork, bar: _Progress) -> EvalResult | None:
    """This rank's part under torchrun (rank 0 returns the merged result)."""
    from glamhpc.config import DistConfig
    from glamhpc.distributed import init_distributed
    from glamhpc.evaluate.runner import evaluate_distributed

    ctx = init_distributed(DistConfig(), spec.device)
    # Each rank scores on its own GPU (LOCAL_RANK), not on the first one "auto" would pick.
    local = replace(spec, device=str(ctx.device))
    return evaluate_distributed(local, work, ctx, progress=bar)
