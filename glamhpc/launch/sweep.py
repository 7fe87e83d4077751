"""`glamhpc sweep SWEEP.yaml`: a grid (and/or zipped lists) of overrides x seeds as ONE job array.

Sweep file::

    name: lr-x-epochs            # sweep name: MLflow parent run, Slurm job name, run-name prefix
    base: ../quickstart.yaml     # base config, relative to this file (optional)
    set:                         # overrides applied to every element (optional)
      - train.max_updates=50
    grid:                        # cartesian product of these lists
      ppo.lr: [1.0e-4, 5.0e-4]
    zip:                         # lists of equal length advanced together (one element per row)
      ppo.epochs: [2, 4]
      ppo.minibatch_size: [64, 128]
    seeds: [1, 2]                # each combination once per seed (sets the config's `seed`)
    max_parallel: 4              # array elements running at once (--max-parallel overrides)

Elements = grid x zip rows x seeds, in that nesting order. Every element is a complete run with
its own run directory (``<sweep>-<index>``) and MLflow child run under one parent run.

Slurm: one array (submitit ``map_array``) plus a tiny finalizer job that depends on the whole
array (``afterany``) and closes the parent run as FINISHED (all children DONE) or FAILED. Local:
one driver process keeps at most ``max_parallel`` element jobs running, then finalizes.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glamhpc.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    read_yaml,
    to_yaml,
)
from glamhpc.launch import registry
from glamhpc.launch.executors import (
    make_executor,
    render_sbatch,
    require_slurm,
    sbatch_errors,
    slurm_command,
)
from glamhpc.launch.resources import Resources, apply_cli_options, job_name, resolve
from glamhpc.launch.submit import (
    LAUNCH_FOLDER,
    _check_name,
    refuse_if_active,
    run_dir_for,
    tracking_uri,
)
from glamhpc.launch.torchrun import DONE_MARKER, RunSpec, TorchrunJob

_SWEEP_KEYS = {"name", "base", "set", "grid", "zip", "seeds", "max_parallel"}


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring)."""

    name: str
    base: Path | None = None
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zipped: dict[str, list[Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    max_parallel: int | None = None


@dataclass(frozen=True)
class Element:
    """One array element: its index and the values it sets (dotted key -> value)."""

    index: int
    values: dict[str, Any]

    def label(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.values.items())


def _lists(section: Any, what: str, path: Path) -> dict[str, list[Any]]:
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{path}: '{what}' must map dotted keys to lists of values")
    out: dict[str, list[Any]] = {}
    for key, values in section.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: {what}.{key} must be a non-empty list, got {values!r}")
        out[str(key)] = values
    return out


def load_sweep(path: str | Path, name: str | None = None) -> SweepSpec:
    """Read and check a sweep file (errors name the file and the key)."""
    path = Path(path)
    data = read_yaml(path)
    unknown = set(data) - _SWEEP_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
            + ", ".join(sorted(_SWEEP_KEYS))
        )
    base = data.get("base")
    base_path = (path.parent / str(base)).resolve() if base else None
    if base_path is not None and not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    overrides = data.get("set") or []
    if isinstance(overrides, str) or not isinstance(overrides, list):
        raise ConfigError(f"{path}: 'set' must be a list of KEY=VALUE strings")
    grid = _lists(data.get("grid"), "grid", path)
    zipped = _lists(data.get("zip"), "zip", path)
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in zipped.items())
        raise ConfigError(f"{path}: 'zip' lists must have the same length ({sizes})")
    seeds = data.get("seeds") or []
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a list of integers, got {seeds!r}")
    both = (set(grid) & set(zipped)) | ({"seed"} & (set(grid) | set(zipped)) if seeds else set())
    if both:
        raise ConfigError(f"{path}: {', '.join(sorted(both))} set twice (grid/zip/seeds)")
    max_parallel = data.get("max_parallel")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise ConfigError(f"{path}: max_parallel must be a positive integer")
    sweep_name = name or data.get("name") or path.stem
    _check_name(str(sweep_name))
    return SweepSpec(
        name=str(sweep_name),
        base=base_path,
        overrides=[str(o) for o in overrides],
        grid=grid,
        zipped=zipped,
        seeds=list(seeds),
        max_parallel=max_parallel,
    )


def expand(spec: SweepSpec) -> list[Element]:
    """grid (cartesian, keys in file order) x zip rows x seeds -> numbered elements (pure)."""
    grid_rows: list[dict[str, Any]] = [
        dict(zip(spec.grid, combo, strict=True)) for combo in itertools.product(*spec.grid.values())
    ]
    zip_rows: list[dict[str, Any]] = (
        [
            dict(zip(spec.zipped, row, strict=True))
            for row in zip(*spec.zipped.values(), strict=True)
        ]
        if spec.zipped
        else [{}]
    )
    seed_rows: list[dict[str, Any]] = [{"seed": s} for s in spec.seeds] or [{}]
    elements = []
    for g, z, s in itertools.product(grid_rows, zip_rows, seed_rows):
        elements.append(Element(len(elements), {**g, **z, **s}))
    return elements


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"sweep key '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def element_config(base: Mapping[str, Any], element: Element) -> Config:
    data = copy.deepcopy(dict(base))
    for key, value in element.values.items():
        _set_path(data, key, value)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"sweep element {element.index} ({element.label()}): {exc}") from None


@dataclass
class SweepPlan:
    spec: SweepSpec
    base_cfg: Config
    resources: Resources
    elements: list[Element]
    configs: list[Config]
    run_specs: list[RunSpec]
    folder: Path
    max_parallel: int
    job_name: str
    uri: str | None

    @property
    def experiment(self) -> str:
        return self.base_cfg.experiment


def plan_sweep(
    spec: SweepSpec,
    max_parallel: int | None = None,
    workdir: Path | None = None,
    **launch_options: Any,
) -> SweepPlan:
    """Resolve every element's config (all are validated before anything is written)."""
    workdir = (workdir or Path.cwd()).resolve()
    base_data = apply_overrides(read_yaml(spec.base) if spec.base else {}, spec.overrides)
    base_cfg = apply_cli_options(config_from_dict(base_data), **launch_options)
    base_data = base_cfg.model_dump(mode="json")
    res = resolve(base_cfg)
    elements = expand(spec)
    uri = tracking_uri(base_cfg)
    configs, run_specs = [], []
    for element in elements:
        if any(k == "launch" or k.startswith("launch.") for k in element.values):
            raise ConfigError(
                "a sweep cannot vary launch.* (one array shares one set of resources); "
                "set resources in the base config or on the command line"
            )
        cfg = element_config(base_data, element)
        if cfg.experiment != base_cfg.experiment:
            raise ConfigError(
                f"sweep element {element.index} changes the experiment to '{cfg.experiment}'; "
                "all elements must log to the parent's experiment"
            )
        cfg.tracking.uri = uri
        configs.append(cfg)
    folder = (
        workdir / base_cfg.train.run_root / base_cfg.experiment / "sweeps" / spec.name
    ).resolve()
    for element, cfg in zip(elements, configs, strict=True):
        name = f"{spec.name}-{element.index:03d}"
        run_dir = (workdir / run_dir_for(cfg, name)).resolve()
        run_specs.append(
            RunSpec(
                config_path=str(folder / "configs" / f"{element.index:03d}.yaml"),
                run_name=name,
                run_dir=str(run_dir),
                workdir=str(workdir),
                log_dir=str(run_dir / LAUNCH_FOLDER / "torchrun"),
                env={},
            )
        )
    parallel = max_parallel or spec.max_parallel or len(elements)
    return SweepPlan(
        spec=spec,
        base_cfg=base_cfg,
        resources=res,
        elements=elements,
        configs=configs,
        run_specs=run_specs,
        folder=folder,
        max_parallel=max(1, min(parallel, len(elements))),
        job_name=job_name("sweep", spec.name),
        uri=uri,
    )


def format_sweep_plan(plan: SweepPlan) -> str:
    res = plan.resources
    lines = [
        f"sweep        {plan.spec.name} ({len(plan.elements)} elements, "
        f"at most {plan.max_parallel} at once)",
        f"executor     {res.executor}; per element {res.nodes} node(s) x "
        f"{res.nproc_per_node} rank(s)",
        f"experiment   {plan.experiment} (one parent run, one child per element)",
        f"folder       {plan.folder}",
        "elements",
    ]
    for element, run in zip(plan.elements, plan.run_specs, strict=True):
        lines.append(f"  [{element.index}] {run.run_name}: {element.label() or '(base config)'}")
    if res.executor == "slurm":
        script = render_sbatch(
            res,
            plan.folder,
            plan.job_name,
            array_size=len(plan.elements),
            array_parallelism=plan.max_parallel,
        )
        lines += ["", "# sbatch script (one array)", script]
    return "\n".join(lines)


@dataclass
class SubmittedSweep:
    job_id: str
    plan: SweepPlan
    parent_run_id: str | None
    jobs: list[Any]
    finalizer_id: str | None = None


def _parent_params(plan: SweepPlan) -> dict[str, Any]:
    spec = plan.spec
    params: dict[str, Any] = {"sweep.size": len(plan.elements), "sweep.base": str(spec.base or "")}
    params.update({f"sweep.grid.{k}": v for k, v in spec.grid.items()})
    params.update({f"sweep.zip.{k}": v for k, v in spec.zipped.items()})
    if spec.seeds:
        params["sweep.seeds"] = spec.seeds
    if spec.overrides:
        params["sweep.set"] = " ".join(spec.overrides)
    return params


def submit_sweep(plan: SweepPlan) -> SubmittedSweep:
    """Parent run + one array (+ finalizer); any failure undoes what was created."""
    from glamhpc.tracking import create_parent_run, sweep_tags

    res = plan.resources
    if res.executor == "slurm":
        require_slurm()
        refuse_if_active(plan.job_name, f"sweep {plan.spec.name}")
    created = not plan.folder.exists()
    plan.folder.mkdir(parents=True, exist_ok=True)
    parent: str | None = None
    try:
        if plan.base_cfg.tracking.enabled:
            parent = create_parent_run(
                plan.experiment,
                plan.spec.name,
                plan.uri,
                params=_parent_params(plan),
                tags={"launcher": "glamhpc sweep", "executor": res.executor},
            )
        specs = []
        for element, cfg, run in zip(plan.elements, plan.configs, plan.run_specs, strict=True):
            _write(Path(run.config_path), to_yaml(cfg))
            tags = {
                **sweep_tags(element.values),
                "sweep": plan.spec.name,
                "sweep.index": str(element.index),
                "launcher": "glamhpc sweep",
                "executor": res.executor,
            }
            env = {"GLAMHPC_RUN_TAGS": json.dumps(tags, sort_keys=True)}
            if parent:
                env["GLAMHPC_PARENT_RUN_ID"] = parent
            specs.append(dataclasses.replace(run, env=env))
        if res.executor == "slurm":
            submitted = _submit_slurm_array(plan, specs, parent)
        else:
            submitted = _submit_local_driver(plan, specs, parent)
    except BaseException:
        if parent:
            _delete_run(parent, plan.uri)
        if created:
            shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    _write(
        plan.folder / "sweep.json",
        json.dumps(
            {
                "name": plan.spec.name,
                "job_id": submitted.job_id,
                "parent_run_id": parent,
                "runs": [s.run_name for s in specs],
                "submitted": datetime.now(timezone.utc).isoformat(),
            },
            indent=1,
        ),
    )
    return submitted


def _submit_slurm_array(
    plan: SweepPlan, specs: list[RunSpec], parent: str | None
) -> SubmittedSweep:
    res = plan.resources
    executor = make_executor(res, plan.folder, plan.job_name, array_parallelism=plan.max_parallel)
    job_fn = TorchrunJob(res)
    with sbatch_errors():
        jobs = executor.map_array(job_fn, specs)
    array_id = str(jobs[0].job_id).split("_")[0]
    finalizer_id = None
    try:
        finalizer_id = _submit_finalizer(plan, specs, parent, array_id)
    except BaseException:
        # Without its finalizer the parent run would stay RUNNING forever: undo the array.
        slurm_command(["scancel", array_id])
        raise
    _record(plan, array_id, specs, parent)
    if finalizer_id:
        registry.append(
            registry.JobRecord(
                job_id=finalizer_id,
                kind="finalize",
                name=plan.spec.name,
                executor="slurm",
                folder=str(plan.folder / "finalize"),
                experiment=plan.experiment,
                parent_run_id=parent,
                tracking_uri=plan.uri,
                workdir=specs[0].workdir if specs else "",
            )
        )
    return SubmittedSweep(array_id, plan, parent, list(jobs), finalizer_id)


def _submit_finalizer(
    plan: SweepPlan, specs: list[RunSpec], parent: str | None, array_id: str
) -> str | None:
    if not parent:
        return None
    import submitit

    res = plan.resources
    executor = submitit.SlurmExecutor(folder=plan.folder / "finalize", max_num_timeout=0)
    params: dict[str, Any] = {
        "job_name": job_name("finalize", plan.spec.name),
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 1,
        "time": 10,
        # afterany: runs whatever happened to the elements (failed, cancelled, finished).
        "dependency": f"afterany:{array_id}",
        "stderr_to_stdout": True,
    }
    for key in ("partition", "account", "qos"):
        value = getattr(res, key)
        if value:
            params[key] = value
    executor.update_parameters(**params)
    with sbatch_errors():
        job = executor.submit(
            finalize_sweep, parent, plan.uri, [s.run_dir for s in specs], plan.spec.name
        )
    return str(job.job_id)


def finalize_sweep(
    parent_run_id: str, uri: str | None, run_dirs: Sequence[str], sweep: str = ""
) -> str:
    """Close the parent run: FINISHED when every element wrote DONE, else FAILED."""
    from glamhpc.tracking import finalize_parent

    done = sum((Path(d) / DONE_MARKER).exists() for d in run_dirs)
    status = "FINISHED" if done == len(run_dirs) else "FAILED"
    finalize_parent(parent_run_id, status, uri)
    print(f"sweep {sweep}: {done}/{len(run_dirs)} runs finished; parent run {status}", flush=True)
    return status


class LocalSweepDriver:
    """The local executor's array: keep at most ``max_parallel`` element jobs running."""

    def __init__(self, resources: Resources, max_parallel: int) -> None:
        self.resources = resources
        self.max_parallel = max_parallel

    def __call__(
        self, folder: str, specs: list[RunSpec], parent: str | None, uri: str | None, name: str
    ) -> str:
        executor = make_executor(self.resources, Path(folder), job_name("sweep", name))
        pending = list(enumerate(specs))
        running: dict[int, Any] = {}
        try:
            while pending or running:
                while pending and len(running) < self.max_parallel:
                    index, spec = pending.pop(0)
                    job = executor.submit(TorchrunJob(self.resources), spec)
                    running[index] = job
                    registry.append(
                        registry.JobRecord(
                            job_id=str(job.job_id),
                            kind="element",
                            name=spec.run_name,
                            executor="local",
                            folder=folder,
                            runs=[spec.run_name],
                            run_dirs=[spec.run_dir],
                            parent_run_id=parent,
                            tracking_uri=uri,
                            workdir=spec.workdir,
                        )
                    )
                    print(f"element {index} ({spec.run_name}) started as {job.job_id}", flush=True)
                for index, job in list(running.items()):
                    if job.done():
                        running.pop(index)
                        print(f"element {index} ended: {job.state}", flush=True)
                time.sleep(1.0)
        except KeyboardInterrupt:
            # Cancelled: stop the elements too (they run in their own controller processes).
            for job in running.values():
                job.cancel(check=False)
            if parent:
                from glamhpc.tracking import finalize_parent

                finalize_parent(parent, "KILLED", uri)
            raise
        if parent:
            return finalize_sweep(parent, uri, [s.run_dir for s in specs], name)
        return "FINISHED"


def _submit_local_driver(
    plan: SweepPlan, specs: list[RunSpec], parent: str | None
) -> SubmittedSweep:
    # The driver itself is a light process: its controller must not kill it after the elements'
    # time limit (which applies to each element, not to the whole sweep).
    driver_res = dataclasses.replace(plan.resources, time_min=None, gpus_per_node=0)
    executor = make_executor(driver_res, plan.folder / "driver", plan.job_name)
    job = executor.submit(
        LocalSweepDriver(plan.resources, plan.max_parallel),
        str(plan.folder),
        specs,
        parent,
        plan.uri,
        plan.spec.name,
    )
    _record(plan, str(job.job_id), specs, parent, folder=plan.folder / "driver")
    return SubmittedSweep(str(job.job_id), plan, parent, [job])


def _record(
    plan: SweepPlan,
    job_id: str,
    specs: list[RunSpec],
    parent: str | None,
    folder: Path | None = None,
) -> None:
    registry.append(
        registry.JobRecord(
            job_id=job_id,
            kind="sweep",
            name=plan.spec.name,
            executor=plan.resources.executor,
            folder=str(folder or plan.folder),
            runs=[s.run_name for s in specs],
            run_dirs=[s.run_dir for s in specs],
            experiment=plan.experiment,
            parent_run_id=parent,
            tracking_uri=plan.uri,
            workdir=specs[0].workdir if specs else "",
        )
    )


def _delete_run(run_id: str, uri: str | None) -> None:
    """Remove a parent run whose array was never submitted (nothing half-created is left)."""
    try:
        from glamhpc.tracking.uri import client, resolve_uri

        client(resolve_uri(uri)).delete_run(run_id)
    except Exception as exc:  # the submit error matters more than this cleanup's
        print(f"warning: could not delete MLflow run {run_id}: {exc}")


def _write(path: Path, text: str) -> None:
    from glamhpc.fsutil import atomic_write_text

    atomic_write_text(path, text)
