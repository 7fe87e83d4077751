"""Sweep files: parsing, expansion order, per-element configs, validation before submission."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamhpc.config import ConfigError
from glamhpc.launch.sweep import plan_sweep
from glamhpc.launch.sweep_file import Element, SweepSpec, expand, load_sweep, with_experiment

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_grid_x_zip_x_seeds_in_file_order() -> None:
    spec = SweepSpec(
        name="s",
        grid={"ppo.lr": [1, 2], "ppo.epochs": [3, 4]},
        zipped={"a.x": [5, 6], "a.y": [7, 8]},
        seeds=[10, 11],
    )
    elements = expand(spec)
    assert len(elements) == 2 * 2 * 2 * 2
    assert [e.index for e in elements] == list(range(16))
    assert elements[0].values == {"ppo.lr": 1, "ppo.epochs": 3, "a.x": 5, "a.y": 7, "seed": 10}
    assert elements[1].values["seed"] == 11  # seeds vary fastest
    assert elements[2].values["a.x"] == 6 and elements[2].values["a.y"] == 8  # zip rows together
    assert elements[-1].values == {"ppo.lr": 2, "ppo.epochs": 4, "a.x": 6, "a.y": 8, "seed": 11}


def test_empty_sweep_is_one_base_run() -> None:
    assert expand(SweepSpec(name="s")) == [Element(0, {})]


def test_example_sweep_is_2x2(tmp_path: Path) -> None:
    spec = load_sweep(REPO / "configs" / "sweeps" / "example-2x2.yaml")
    plan = plan_sweep(spec, workdir=tmp_path)
    assert len(plan.elements) == 4 and plan.max_parallel == 2
    assert [c.seed for c in plan.configs] == [1, 2, 1, 2]
    assert sorted({c.ppo.lr for c in plan.configs}) == [5e-5, 5e-4]
    assert {c.train.max_updates for c in plan.configs} == {30}
    names = [r.run_name for r in plan.run_specs]
    assert names == [f"example-2x2-{i:03d}" for i in range(4)]
    assert all(Path(r.config_path).parent == plan.folder / "configs" for r in plan.run_specs)
    assert not plan.folder.exists()  # planning writes nothing


def test_max_parallel_precedence(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: s\ngrid: {ppo.lr: [1.0e-4, 2.0e-4, 3.0e-4]}\nmax_parallel: 2\n")
    spec = load_sweep(path)
    assert plan_sweep(spec, workdir=tmp_path).max_parallel == 2
    assert plan_sweep(spec, max_parallel=1, workdir=tmp_path).max_parallel == 1
    assert plan_sweep(spec, max_parallel=50, workdir=tmp_path).max_parallel == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: s\ngird: {a: [1]}\n", "unknown key"),
        ("name: s\nzip: {a.x: [1, 2], a.y: [1]}\n", "same length"),
        ("name: s\ngrid: {ppo.lr: []}\n", "non-empty list"),
        ("name: s\ngrid: {ppo.lr: 1}\n", "non-empty list"),
        ("name: s\nseeds: [1, x]\n", "seeds"),
        ("name: s\ngrid: {seed: [1]}\nseeds: [2]\n", "set twice"),
        ("name: s\nbase: nowhere.yaml\n", "base config not found"),
        ("name: s\nset: env.num_envs=2\n", "list of KEY=VALUE"),
        ("name: 'a b'\n", "bad sweep name"),
        ("name: s\nmax_parallel: 0\n", "max_parallel"),
    ],
)
def test_bad_sweep_files_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sweep(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: s\ngrid: {launch.nodes: [1, 2]}\n", "cannot vary launch"),
        ("name: s\ngrid: {tracking.experiment: [a, b]}\n", "experiment"),
        ("name: s\ngrid: {ppo.lr: [-1.0]}\n", r"element 0 \(ppo.lr=-1.0\)"),
        ("name: s\ngrid: {ppo.bogus: [1]}\n", "unknown key"),
        ("name: s\ngrid: {model.dtype: [fp32, bf16]}\n", r"element 1: model.dtype=bf16"),
    ],
)
def test_every_element_is_validated_before_submission(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_sweep(load_sweep(_write(tmp_path, text)), workdir=tmp_path)


def test_sweep_takes_cli_resources(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, "name: s\nseeds: [1, 2]\n"))
    plan = plan_sweep(spec, workdir=tmp_path, executor="slurm", time="30", partition="p")
    assert (plan.resources.executor, plan.resources.time_min) == ("slurm", 30)
    assert plan.resources.partition == "p"
    assert plan.job_name == "glamhpc-sweep:s"


def test_launcher_plans_the_run_dirs_the_trainer_writes(tmp_path: Path) -> None:
    # The trainer writes into RunDir.of(cfg, name) from its working directory: a planned run or
    # sweep element must name that same directory (resolved against the job's workdir).
    from glamhpc.config import load_config
    from glamhpc.launch.plan import plan_run
    from glamhpc.rundir import RunDir

    cfg = load_config(None, ["train.run_root=runs", "tracking.experiment=e", "seed=3"])
    plan = plan_run(cfg, "x", workdir=tmp_path)
    run = RunDir.of(cfg, "x", tmp_path)
    assert (plan.run_dir, plan.folder) == (run.path, run.launch)
    assert plan.run_dir == tmp_path.resolve() / "runs" / "e" / "x"
    assert plan_run(cfg, workdir=tmp_path).run_name.startswith(f"{cfg.name}-s3-")

    sweep = plan_sweep(load_sweep(_write(tmp_path, "name: s\nseeds: [1, 2]\n")), workdir=tmp_path)
    for run_cfg, spec in zip(sweep.configs, sweep.run_specs, strict=True):
        assert spec.run_dir == str(RunDir.of(run_cfg, spec.run_name, tmp_path).path)


def test_a_sweep_gets_its_own_experiment(tmp_path: Path) -> None:
    base = "name: s\nseeds: [1]\n"
    assert plan_sweep(load_sweep(_write(tmp_path, base)), workdir=tmp_path).experiment == "s"
    plan = plan_sweep(
        load_sweep(_write(tmp_path, base + "experiment: lr-study\n")), workdir=tmp_path
    )
    assert plan.experiment == "lr-study" and {c.experiment for c in plan.configs} == {"lr-study"}
    assert plan.folder == tmp_path / "runs" / "lr-study" / "sweeps" / "s"
    spec = with_experiment(load_sweep(_write(tmp_path, base + "experiment: x\n")), "cli")
    assert plan_sweep(spec, workdir=tmp_path).experiment == "cli"  # --experiment wins
    # An experiment the file's `set:` names is kept (the paper sweeps name theirs that way).
    spec = load_sweep(_write(tmp_path, base + "set: [tracking.experiment=mine]\n"))
    assert plan_sweep(spec, workdir=tmp_path).experiment == "mine"
    with pytest.raises(ConfigError, match="bad --experiment"):
        with_experiment(spec, "../up")
    with pytest.raises(ConfigError, match="experiment"):
        load_sweep(_write(tmp_path, base + "experiment: 'a b'\n"))
