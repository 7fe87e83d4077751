"""Resources: Slurm time syntax, CLI options over the config, submitit parameters (pure)."""

from __future__ import annotations

import pytest

from glamhpc.config import ConfigError, load_config
from glamhpc.launch.resources import (
    UNKNOWN_TIME_MIN,
    apply_cli_options,
    job_name,
    local_parameters,
    parse_job_name,
    resolve,
    slurm_parameters,
    time_to_minutes,
)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        (45, 45),
        ("1:30", 2),  # minutes:seconds rounds up
        ("00:30:00", 30),
        ("04:00:00", 240),
        ("1-0", 1440),
        ("1-02:30", 1590),
        ("2-00:00:01", 2881),
        ("0:00:20", 1),  # at least a minute
        (None, None),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_time_to_minutes(text: str | int | None, minutes: int | None) -> None:
    assert time_to_minutes(text) == minutes


@pytest.mark.parametrize("bad", ["1h", "abc", "1:2:3:4", "-5", "0", "00:00:00"])
def test_bad_times_name_the_syntax(bad: str) -> None:
    with pytest.raises(ConfigError, match="time limit"):
        time_to_minutes(bad)


def test_cli_options_override_the_launch_section_without_yaml_parsing() -> None:
    cfg = load_config(None, ["launch.partition=cpu", "launch.nodes=2"])
    out = apply_cli_options(cfg, executor="slurm", time="04:00:00", nodes=None, mem="8G")
    # "04:00:00" stays a string (YAML would read it as the sexagesimal integer 14400).
    assert out.launch.time == "04:00:00"
    assert (out.launch.executor, out.launch.nodes, out.launch.partition) == ("slurm", 2, "cpu")
    assert out.launch.mem == "8G"
    assert cfg.launch.executor == "local"  # the input is not mutated
    with pytest.raises(ValueError, match="not launch options"):
        apply_cli_options(cfg, bogus=1)
    with pytest.raises(ConfigError, match=r"launch\.nodes"):
        apply_cli_options(cfg, nodes=0)


def test_resolve_defaults_and_rank_count() -> None:
    cfg = load_config(None, ["env.num_envs=8", "launch.nproc_per_node=2", "launch.executor=slurm"])
    res = resolve(apply_cli_options(cfg, nodes=2))
    assert (res.nodes, res.nproc_per_node, res.world_size) == (2, 2, 4)
    assert res.cpus_per_task == 2  # one core per rank unless told otherwise
    assert res.time_min is None
    assert res.shutdown_timeout_s == res.signal_delay_s - 15


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["launch.nodes=2"], "needs Slurm"),
        (["launch.executor=slurm", "launch.gpus_per_node=2", "model.device=cpu"], "model.device"),
        (["launch.executor=slurm", "launch.nodes=3", "env.num_envs=4"], "split evenly"),
        (["model.dtype=bf16"], "use model.dtype=fp32 with model.precision=bf16-mixed"),
    ],
)
def test_resolve_rejects_impossible_combinations(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(load_config(None, overrides))


def test_signal_must_come_after_the_start() -> None:
    cfg = apply_cli_options(load_config(None, ["launch.signal_delay_s=120"]), time="2")
    with pytest.raises(ConfigError, match="signal_delay_s=120"):
        resolve(cfg)
    assert resolve(apply_cli_options(cfg, time="3")).time_min == 3


def test_slurm_parameters_one_task_per_node_and_no_time_when_unset() -> None:
    cfg = load_config(None, ["launch.executor=slurm", "launch.extra_sbatch={exclusive: user}"])
    params = slurm_parameters(resolve(cfg), "glamhpc:x")
    assert params["ntasks_per_node"] == 1
    assert params["time"] is None  # submitit then writes no --time: the partition default rules
    assert params["stderr_to_stdout"] is True
    assert params["additional_parameters"] == {"exclusive": "user"}
    assert "gpus_per_node" not in params and "partition" not in params
    gpu = apply_cli_options(cfg, gpus_per_node=4, time="90", partition="gpu")
    gpu.model.device = "auto"
    params = slurm_parameters(resolve(gpu), "glamhpc:x")
    assert (params["gpus_per_node"], params["time"], params["partition"]) == (4, 90, "gpu")
    assert params["cpus_per_task"] == 4


def test_local_parameters_never_use_submitits_two_minute_default() -> None:
    params = local_parameters(resolve(load_config(None, [])))
    assert params["timeout_min"] == UNKNOWN_TIME_MIN
    assert params["tasks_per_node"] == 1


@pytest.mark.parametrize("kind", ["run", "sweep", "finalize"])
def test_job_names_round_trip(kind: str) -> None:
    assert parse_job_name(job_name(kind, "my-run:1")) == (kind, "my-run:1")


@pytest.mark.parametrize("name", ["wrap", "glamhpcx:a", "train:glamhpc", "glamhpc"])
def test_foreign_job_names_are_not_ours(name: str) -> None:
    assert parse_job_name(name) is None
