"""Names and batch-script strings (issue 12): nothing a user types escapes the run root or
ends an ``#SBATCH`` line.

Every case runs the real CLI and checks the filesystem: a refused command writes nothing at all
(the working folder sits three levels deep, so ``../../..`` would land where the test looks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glamhpc.config import ConfigError, load_config
from glamhpc.rundir import RunDir, check_run_name

from .one_line import fails_with_one_line, sandbox, tree

__all__ = ["sandbox"]

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")

#: A run that would finish in seconds if a bad name slipped through (so the test sees the files).
TINY = [
    "--set", "tracking.enabled=false", "--set", "train.progress=false",
    "--set", "env.num_envs=2", "--set", "ppo.steps_per_env=2", "--set", "ppo.minibatch_size=4",
    "--set", "train.max_updates=1",
]  # fmt: skip

BAD_NAMES = ["../../x", "..", ".hidden", "a/b", "/abs", "a\nb", "a\rb", "tab\there", "x" * 300, ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_one_rule_for_run_experiment_and_config_names(name: str) -> None:
    with pytest.raises(ConfigError):
        check_run_name(name)
    for key in ("name", "tracking.experiment"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{key}={name}"])
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["quickstart", "glam-flan-t5-large", "lr_1e-4.v2", "A" * 100])
def test_good_names_pass_everywhere(name: str) -> None:
    assert check_run_name(name) == name
    assert load_config(None, [f"name={name}"]).experiment == name


def _train_cases(tmp: Path) -> list[list[str]]:
    return [
        ["--run-name", "../../x"],
        ["--run-name", str(tmp / "abs-run")],
        ["--run-name", "r", "--set", f"tracking.experiment={tmp / 'abs-exp'}"],
        ["--run-name", "r", "--set", "name=../../.."],
        ["--run-name", "r", "--set", "train.run_root=runs\n#SBATCH --x"],
    ]


@pytest.mark.parametrize("case", range(5))
def test_train_refuses_names_outside_the_run_root(sandbox: Path, case: int) -> None:
    tmp = sandbox.parents[2]
    before = tree(tmp)
    fails_with_one_line("train", *TINY, *_train_cases(tmp)[case])
    assert tree(tmp) == before


def test_train_refuses_a_run_dir_that_a_symlink_moves_out(sandbox: Path) -> None:
    tmp = sandbox.parents[2]
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (sandbox / "runs").mkdir()
    os.symlink(elsewhere, sandbox / "runs" / "quickstart")
    line = fails_with_one_line("train", *TINY, "--run-name", "r")
    assert "outside" in line
    assert list(elsewhere.iterdir()) == []


def test_run_dir_resolves_inside_its_root(tmp_path: Path) -> None:
    cfg = load_config(None, [])
    (tmp_path / "runs").mkdir()
    os.symlink("/tmp", tmp_path / "runs" / "quickstart")
    with pytest.raises(ConfigError, match="outside"):
        RunDir.of(cfg, "r", tmp_path)
    # A run root that is itself a link (runs -> /scratch/...) is the user's choice: fine.
    os.unlink(tmp_path / "runs" / "quickstart")
    (tmp_path / "scratch").mkdir()
    os.symlink(tmp_path / "scratch", tmp_path / "linked")
    linked = load_config(None, [f"train.run_root={tmp_path / 'linked'}"])
    assert RunDir.of(linked, "r", tmp_path).path == tmp_path / "scratch" / "quickstart" / "r"


@pytest.mark.parametrize(
    "args",
    [
        ["--run-name", "r", "--set", "name=../../.."],
        ["--run-name", "../../r"],
        ["--run-name", "/abs/r"],
        ["--run-name", "r", "--set", "tracking.experiment=/abs"],
    ],
)
def test_submit_refuses_names_outside_the_run_root(sandbox: Path, args: list[str]) -> None:
    tmp = sandbox.parents[2]
    before = tree(tmp)
    for mode in (["--dry-run"], []):
        fails_with_one_line("submit", QUICKSTART, "--executor", "local", *mode, *args)
    assert tree(tmp) == before


NEWLINE = "x\n#SBATCH --wrap=touch /tmp/pwned"


@pytest.mark.parametrize(
    "args",
    [
        ["--partition", NEWLINE],
        ["--account", NEWLINE],
        ["--qos", NEWLINE],
        ["--constraint", NEWLINE],
        ["--mem", "4G\nid"],
        ["--time", "30\nid"],
        ["--run-name", NEWLINE],
        ["--set", f"tracking.experiment={NEWLINE}"],
        ["--set", f"name={NEWLINE}"],
        ["--set", 'launch.extra_sbatch={"comment": "a\\nid"}'],
        ["--set", 'launch.extra_sbatch={"comment\\nid": "a"}'],
        ["--set", 'launch.extra_sbatch={"--comment": "a"}'],
        ["--set", 'launch.extra_sbatch={"comment x": "a"}'],
        ["--set", 'launch.partition="gpu\\rid"'],
    ],
)
def test_no_control_character_reaches_a_batch_script(sandbox: Path, args: list[str]) -> None:
    tmp = sandbox.parents[2]
    before = tree(tmp)
    fails_with_one_line("submit", QUICKSTART, "--executor", "slurm", "--dry-run", *args)
    assert tree(tmp) == before


def _sweep_file(folder: Path, body: str) -> str:
    path = folder / "sweep.yaml"
    path.write_text(f"base: {QUICKSTART}\n{body}")
    return str(path)


@pytest.mark.parametrize(
    ("body", "args"),
    [
        ("name: s\nset: ['name=../../..']\nseeds: [1]\n", []),
        ("name: s\ngrid: {name: ['../../a', b]}\n", []),
        ("name: s\nset: ['tracking.experiment=/abs']\nseeds: [1]\n", []),
        ("name: /abs\nseeds: [1]\n", []),
        ("name: s\nseeds: [1]\n", ["--name", "../../s"]),
        ("name: s\nseeds: [1]\n", ["--name", NEWLINE]),
        ("name: s\nseeds: [1]\n", ["--executor", "slurm", "--partition", NEWLINE]),
        ("name: s\nseeds: [1]\nset: ['launch.qos=\"a\\nb\"']\n", ["--executor", "slurm"]),
    ],
)
def test_sweep_refuses_bad_names_and_strings(sandbox: Path, body: str, args: list[str]) -> None:
    tmp = sandbox.parents[2]
    path = _sweep_file(tmp, body)
    before = tree(tmp)
    fails_with_one_line("sweep", path, "--dry-run", *args)
    if "--executor" not in args:
        fails_with_one_line("sweep", path, "--executor", "local", *args)
    assert tree(tmp) == before


@pytest.mark.parametrize(
    "body",
    [
        'tracking:\n  experiment: "x\\n#SBATCH --wrap=id"\n',
        'name: "q\\rid"\n',
        'launch:\n  partition: "gpu\\nid"\n',
        'launch:\n  mem: "4G\\u2028id"\n',
        'launch:\n  extra_sbatch:\n    "mail-type\\nid": ALL\n',
        'launch:\n  extra_sbatch:\n    comment: "a\\x0bb"\n',
        'train:\n  run_root: "runs\\n#SBATCH --wrap=id"\n',
    ],
)
def test_config_files_cannot_smuggle_control_characters(sandbox: Path, body: str) -> None:
    tmp = sandbox.parents[2]
    path = tmp / "cfg.yaml"
    path.write_text(body)
    before = tree(tmp)
    fails_with_one_line("submit", str(path), "--executor", "slurm", "--dry-run")
    fails_with_one_line("train", str(path), "--run-name", "r")
    assert tree(tmp) == before
