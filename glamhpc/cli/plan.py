"""`glamhpc plan`: the launch plan's ranks, env slices and per-GPU memory; refuses combinations
that cannot fit (`glamhpc submit --dry-run` prints the same ranks and memory with the job)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from glamhpc.cli import app
from glamhpc.cli.common import fail, load_or_exit


@app.command()
def plan(
    config: str = typer.Argument(None, help="YAML config (omit for the embedded defaults)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Dotted override, repeatable."),
    nodes: int = typer.Option(None, "--nodes", help="Nodes (default: launch.nodes)."),
    gpus_per_node: int = typer.Option(
        None, "--gpus-per-node", help="GPUs per node (default: launch.gpus_per_node)."
    ),
    gpu_mem_gb: float = typer.Option(80.0, "--gpu-mem-gb", help="Memory of one GPU (H100: 80)."),
) -> None:
    """Dry run: print the ranks, env slices and per-GPU memory, and check they fit."""
    from glamhpc.launch.plan import check_capacity

    cfg = load_or_exit(config, set_)
    n = nodes if nodes is not None else cfg.launch.nodes
    g = gpus_per_node if gpus_per_node is not None else cfg.launch.gpus_per_node
    result = check_capacity(cfg, n, g, gpu_mem_gb)
    console = Console()
    ranks = Table("node", "local rank", "rank", "envs", title=f"{result.world_size} rank(s)")
    for r in result.ranks:
        envs = f"{r.env_start}..{r.env_start + r.env_count - 1}" if r.env_count else "-"
        ranks.add_row(str(r.node), str(r.local_rank), str(r.rank), envs)
    console.print(ranks)
    m = result.memory
    mem = Table("item", "per GPU", title=f"{cfg.model.name}: {m.params / 1e6:.1f} M parameters")
    mem.add_row("trainable parameters", f"{m.trainable / 1e6:.1f} M")
    for label, value in (
        ("weights", m.weights_gb),
        ("gradients", m.grads_gb),
        ("optimizer (Adam)", m.optimizer_gb),
        ("update-health snapshot", m.health_gb),
        ("working buffers", m.buffers_gb),
        ("activations (estimate)", m.activations_gb),
        ("total", m.total_gb),
    ):
        mem.add_row(label, f"{value:.2f} GB")
    console.print(mem)
    if not result.feasible:
        for problem in result.problems:
            fail(problem) if problem is result.problems[-1] else console.print(f"error: {problem}")
    console.print(
        f"[green]feasible[/green]: strategy {cfg.dist.strategy}, {result.world_size} rank(s)"
    )
