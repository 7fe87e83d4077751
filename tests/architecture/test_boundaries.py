"""The package's boundaries, kept by a test instead of docstrings.

Static (every import statement, lazy ones inside functions included): dependencies point down
the layers; only `glamhpc.distributed` touches `torch.distributed`; `envs` never imports torch;
`policy` never imports minigrid, gymnasium or the env implementations. Dynamic (fresh
interpreters): what a login node runs (config validation, submit, sweeps, --dry-run, jobs)
loads no torch, transformers, minigrid or gymnasium.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "glamhpc"

#: Layer of each module (most specific prefix wins); a module may import its own layer and below.
LAYERS: dict[str, int] = {
    "glamhpc": 0,
    "glamhpc.fsutil": 0,
    "glamhpc.inputs": 0,
    "glamhpc.ui": 0,
    "glamhpc.envs.catalog": 0,
    "glamhpc.envs.vocab": 0,
    "glamhpc.config": 1,
    "glamhpc.secrets": 1,
    "glamhpc.policy.hubcache": 1,
    "glamhpc.policy.shapes": 1,
    "glamhpc.rundir": 2,
    "glamhpc.checkpoint": 2,
    "glamhpc.tracking": 3,
    "glamhpc.distributed": 3,
    "glamhpc.envs": 4,
    "glamhpc.policy": 4,
    "glamhpc.containers": 5,
    "glamhpc.rl": 5,
    "glamhpc.agents": 5,
    "glamhpc.evaluate": 6,
    "glamhpc.launch": 6,
    "glamhpc.report": 6,
    "glamhpc.cli": 7,
    "glamhpc.__main__": 7,
}

HEAVY = ("torch", "transformers", "minigrid", "gymnasium")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module imported, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], base]).strip(".")
            found.append((base, node.lineno))
            # `from glamhpc.x import y` may import the submodule y.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _layer(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best[0])
        ):
            best = (prefix, layer)
    return None if best is None else best[1]


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel).is_dir()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    """A new module or package must be placed in LAYERS explicitly (the root entry only covers
    the package's own __init__)."""
    named = [k for k in LAYERS if k != "glamhpc"]
    unplaced = [
        m
        for m in map(_module_name, SOURCES)
        if m != "glamhpc" and not any(m == k or m.startswith(k + ".") for k in named)
    ]
    assert unplaced == []


def test_dependencies_point_down() -> None:
    wrong = []
    for path in SOURCES:
        me = _module_name(path)
        mine = _layer(me)
        assert mine is not None
        for target, line in _imports(path):
            if not target.startswith("glamhpc") or not _is_module(target):
                continue
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{me}:{line} imports {target} (layer {theirs} > {mine})")
    assert wrong == []


def test_only_the_distributed_package_calls_torch_distributed() -> None:
    wrong = [
        f"{_module_name(path)}:{line}"
        for path in SOURCES
        if not _module_name(path).startswith("glamhpc.distributed")
        for target, line in _imports(path)
        if target == "torch.distributed" or target.startswith("torch.distributed.")
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("glamhpc.envs", ("torch",)),
        ("glamhpc.policy", ("minigrid", "gymnasium", "glamhpc.envs.levels", "glamhpc.envs.batch")),
        ("glamhpc.ui", ("glamhpc.config", "glamhpc.tracking", "glamhpc.report")),
    ],
)
def test_package_never_imports(package: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        f"{_module_name(path)}:{line} imports {target}"
        for path in SOURCES
        if _module_name(path).startswith(package)
        for target, line in _imports(path)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert wrong == []


LOGIN_NODE = {
    "config validation": (
        "from glamhpc.config import load_config; load_config('configs/glam-flan-t5-large.yaml')"
    ),
    "submit and sweep": (
        "from glamhpc.config import load_config; load_config('configs/glam-flan-t5-large.yaml');"
        " import glamhpc.launch.submit, glamhpc.launch.sweep, glamhpc.launch.jobs"
    ),
    "dry run": (
        "from glamhpc.config import load_config\n"
        "from glamhpc.launch.plan import format_plan, plan_run\n"
        "cfg = load_config('configs/glam-flan-t5-xl.yaml', ['launch.executor=slurm'])\n"
        "format_plan(plan_run(cfg, 'contract'), memory=True)"
    ),
    "cli import": "import glamhpc.cli",
    "tracking and report": "import glamhpc.tracking, glamhpc.report, glamhpc.rundir",
    "tracking server": "import glamhpc.tracking.service, glamhpc.tracking.serverlog",
}


@pytest.mark.parametrize("code", LOGIN_NODE.values(), ids=list(LOGIN_NODE))
def test_login_node_paths_load_no_heavy_package(code: str) -> None:
    check = f"{code}\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", check],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_package_root_is_small_and_modules_are_short() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 6, loose
    long = {_module_name(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


def test_the_trainer_is_the_loop_only() -> None:
    """Building, rollout, the update, state, metrics and tracking live beside it in rl/."""
    assert len((PACKAGE / "rl" / "trainer.py").read_text().splitlines()) <= 300
