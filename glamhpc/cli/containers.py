"""`glamhpc build` (container images) and `glamhpc doctor` (is this node ready for jobs?)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

import typer

from glamhpc import containers
from glamhpc.cli import app
from glamhpc.cli.common import fail, load_or_exit
from glamhpc.policy import hubcache

_ENGINES = ", ".join(containers.BUILD_PREFERENCE)


@app.command("build")
def build(
    engine: str = typer.Option(
        None,
        "--engine",
        help=f"Container engine ({_ENGINES}); default: the first of these found on PATH.",
    ),
    base_image: str = typer.Option(
        None,
        "--base-image",
        help="Base image with Python (and usually torch). "
        f"(default: {containers.DEFAULT_BASE_IMAGE})",
    ),
    tag: str = typer.Option(
        None,
        "--tag",
        help="Image tag (Docker/Podman) or SIF file (Apptainer). "
        f"(default: {containers.DEFAULT_TAG})",
    ),
    bake_model: str = typer.Option(
        None,
        "--bake-model",
        help="Put this prefetched hub model into the image's /models (for sites whose compute "
        "nodes cannot reach a shared cache). Fetch it first: glamhpc models prefetch NAME.",
    ),
    cache: str = typer.Option(
        None,
        "--cache",
        help="Cache holding --bake-model: the --cache given to `glamhpc models prefetch`, or an "
        "HF_HOME. "
        "(default: $HF_HOME or ~/.cache/huggingface)",
    ),
    from_image: str = typer.Option(
        None,
        "--from-image",
        help="Apptainer only: convert this local Docker image (docker-daemon) or `docker save` "
        "archive (*.tar) instead of building from the base image.",
    ),
    engine_args: list[str] = typer.Option(
        [],
        "--engine-arg",
        help="Extra argument for the engine's build command, repeatable "
        "(e.g. --engine-arg=--fakeroot, --engine-arg=--network=host).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command; run nothing."),
) -> None:
    """Build the glamhpc image with Docker, Podman or Apptainer; prints the exact command."""
    try:
        root = containers.project_root()
        if dry_run and engine is not None:
            chosen = engine  # a preview needs no engine on this machine
            if chosen not in containers.ENGINES:
                raise containers.ContainerError(f"unknown engine '{engine}': use one of {_ENGINES}")
        else:
            chosen = containers.choose_engine(engine, containers.BUILD_PREFERENCE)
        if bake_model == hubcache.TINY_T5:
            raise containers.ContainerError(
                "tiny-t5 is built offline on first use (about a second): there is nothing to bake"
            )
        cmd = containers.build_command(
            chosen,
            base_image,
            tag,
            bake_model,
            revision=containers.git_revision(root),
            source=containers.git_source(root),
            from_image=from_image,
            extra_args=engine_args,
        )
        model = None
        if bake_model is not None:
            model = hubcache.inspect_cached_model(bake_model, cache)
            if not model.complete:
                where = hubcache.hub_cache_dir(cache)
                raise containers.ContainerError(
                    f"--bake-model {bake_model}: not complete in {where} "
                    f"(missing: {', '.join(model.missing)}). Fetch it first: glamhpc models "
                    f"prefetch {bake_model}" + (f" --cache {cache}" if cache else "")
                )
    except containers.ContainerError as exc:
        fail(str(exc))
    typer.echo(f"(in {root})")
    if model is not None:
        typer.echo(f"# baking {model.repo_id} from {model.snapshot} into /models")
    typer.echo("$ " + containers.format_command(cmd))
    if dry_run:
        return
    try:
        if bake_model is not None:
            containers.stage_model(bake_model, cache, root)
        code = containers.run_streaming(cmd, cwd=root)
    except containers.ContainerError as exc:
        fail(str(exc))
    finally:
        containers.clear_staged(root)
    if code != 0:
        fail(f"{chosen} build failed (exit {code}); its output is above", code=code)
    image = tag or containers.DEFAULT_TAG
    built = containers.sif_name(image) if chosen in containers.APPTAINER_LIKE else image
    typer.secho(f"built {built}", fg=typer.colors.GREEN)


@app.command("doctor")
def doctor(
    config: str = typer.Argument(
        None, help="Config YAML whose needs are checked (default: the embedded defaults)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: a.b=value."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    container: str = typer.Option(
        None,
        "--container",
        help="Also validate this image here: its labels, its entrypoint and a training smoke "
        "run inside it (minutes; docs/CONTAINERS.md shows the output to compare with).",
    ),
) -> None:
    """Check this node for what jobs need (sbatch, container engine, GPUs, model cache, MLflow,
    run dir) and print the fix for anything missing. Exit code 1 if something required is."""
    from rich.console import Console
    from rich.table import Table

    from glamhpc.launch.doctor import failed, run_checks

    if container is not None:
        overrides = [*overrides, f"launch.container={container}"]
    cfg = load_or_exit(config, overrides)
    checks = run_checks(cfg)
    engine_ready = all(c.ok for c in checks if c.name == "container engine")
    if container is not None and engine_ready:
        from glamhpc.launch.doctor_image import validate_image

        def announce(command: str) -> None:
            if not as_json:
                typer.echo(f"$ {command}", err=True)

        checks += validate_image(container, announce=announce)
    bad = failed(checks)
    if as_json:
        typer.echo(json.dumps([asdict(c) | {"status": c.status} for c in checks], indent=2))
    else:
        table = Table(title="glamhpc doctor", show_lines=False)
        for column in ("check", "status", "what was found", "fix"):
            table.add_column(column, overflow="fold")
        colours = {"ok": "green", "warn": "yellow", "missing": "bold red"}
        for c in checks:
            table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", c.detail, c.fix)
        console = Console(width=max(Console().width, 120) if not sys.stdout.isatty() else None)
        console.print(table)
        if bad:
            console.print(f"[bold red]{len(bad)} required item(s) missing[/]")
        else:
            console.print("[green]ready[/]")
    if bad:
        raise typer.Exit(1)
