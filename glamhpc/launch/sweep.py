"""`glamhpc sweep SWEEP.yaml`: plan and submit a sweep (glamhpc.launch.sweep_file) as ONE job array.

Every element is a complete run with its own run directory (``<sweep>-<index>``) and MLflow child
run under one parent run, in the sweep's own MLflow experiment (its name unless the file's
``experiment:`` or --experiment says otherwise); all elements are validated before anything is
written.

Slurm: one array (submitit ``map_array``) plus a tiny finalizer job that depends on the whole
array (``afterany``) and closes the parent run as FINISHED (all children DONE) or FAILED. Local:
one driver process (glamhpc.launch.sweep_driver) keeps at most ``max_parallel`` element jobs
running, then finalizes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import submitit

from glamhpc.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    read_yaml,
    to_yaml,
    training_precision_problem,
)
from glamhpc.fsutil import atomic_write_text
from glamhpc.launch import registry
from glamhpc.launch.executors import (
    make_executor,
    render_sbatch,
    require_slurm,
    sbatch_errors,
    slurm_command,
)
from glamhpc.launch.resources import (
    Resources,
    apply_cli_options,
    check_batch_strings,
    job_name,
    resolve,
)
from glamhpc.launch.submit import private_files, refuse_if_active, stored_resources
from glamhpc.launch.sweep_driver import LocalSweepDriver, finalize_sweep
from glamhpc.launch.sweep_file import (
    MAX_SWEEP_SIZE,
    Element,
    SweepSpec,
    element_config,
    expand,
    sweep_experiment,
)
from glamhpc.launch.torchrun import JobOutcome, RunSpec, TorchrunJob
from glamhpc.rundir import RunDir, check_inside, private_dir, run_root
from glamhpc.secrets import redact_text, redacted
from glamhpc.tracking import tracking_uri


@dataclass
class SweepPlan:
    """Everything decided before a sweep is submitted (printed by --dry-run)."""

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
    max_size: int | None = None,
    **launch_options: Any,
) -> SweepPlan:
    """Resolve every element's config (all are validated before anything is written); more
    than ``max_size`` elements (default MAX_SWEEP_SIZE) are refused before any is built."""
    workdir = (workdir or Path.cwd()).resolve()
    base_data = apply_overrides(read_yaml(spec.base) if spec.base else {}, spec.overrides)
    experiment = sweep_experiment(spec)
    if experiment:
        base_data = apply_overrides(base_data, [f"tracking.experiment={experiment}"])
    base_cfg = apply_cli_options(config_from_dict(base_data), **launch_options)
    base_data = base_cfg.model_dump(mode="json")
    res = resolve(base_cfg)
    elements = expand(spec, max_size or MAX_SWEEP_SIZE)
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
        precision = training_precision_problem(cfg)
        if precision:  # elements may vary model.dtype; the base was checked by resolve()
            raise ConfigError(f"sweep element {element.index}: {precision}")
        cfg.tracking.uri = uri
        configs.append(cfg)
    folder = check_inside(
        workdir / base_cfg.train.run_root / base_cfg.experiment / "sweeps" / spec.name,
        run_root(base_cfg, workdir),
    )
    for element, cfg in zip(elements, configs, strict=True):
        name = f"{spec.name}-{element.index:03d}"
        run = RunDir.of(cfg, name, workdir)
        run_specs.append(
            RunSpec(
                config_path=str(folder / "configs" / f"{element.index:03d}.yaml"),
                run_name=name,
                run_dir=str(run.path),
                workdir=str(workdir),
                log_dir=str(run.torchrun_logs),
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
    """Human-readable sweep plan: the elements and, for Slurm, the one array's batch script."""
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
    return redact_text("\n".join(lines))  # launch.setup secrets masked, as in submit's plan


@dataclass
class SubmittedSweep:
    job_id: str
    plan: SweepPlan
    parent_run_id: str | None
    jobs: list[submitit.Job[JobOutcome]] | list[submitit.Job[str]]
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
    # Element configs, submitit's pickles and logs: as private as the runs themselves.
    private_dir(plan.folder, plan.base_cfg.train.run_dir_mode)
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
            atomic_write_text(Path(run.config_path), to_yaml(redacted(cfg)))
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
    atomic_write_text(
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
    job_fn = TorchrunJob(stored_resources(res))
    with sbatch_errors(), private_files():
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
    check_batch_strings({**params, "folder": plan.folder})
    executor.update_parameters(**params)
    with sbatch_errors():
        job = executor.submit(
            finalize_sweep, parent, plan.uri, [s.run_dir for s in specs], plan.spec.name
        )
    return str(job.job_id)


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
