"""`glamhpc train CONFIG --smoke`: the config's real code paths, on a model small enough for a
minute, with a verdict.

The config runs as shipped (precision, parallel strategy, ranks through torchrun where it
distributes, activation checkpointing, LoRA, lr and PPO settings) with three things shrunk: the
model (a random-init stand-in of the same family, written as a hub cache entry and loaded by
the real offline loader: `glamhpc.policy.shrink`), the env counts and the length (2 updates).
Then the run is resumed from its first update into a second run directory, and:

- ``llm_param_change_frac`` / ``value_head_change_frac``: over the 2 updates, among trainable
  elements that received a non-zero gradient at least once (Adam's second moment is non-zero),
  the fraction whose value changed. A frozen LLM (bf16 weights rounding lr * update away, a
  wrong requires_grad) shows up here, where losses would look healthy.
- ``finite``: every weight and every logged loss is finite.
- ``resume_exact``: the resumed second update equals the uninterrupted one bit for bit.
- ``memory_ratio``: the launch plan's per-rank estimate (`launch.plan.estimate_memory`, for this
  shrunk config and world size) of weights + gradients + optimizer + update-health snapshot,
  over what the trained run's last update really held (its ``memory/*_gb`` metrics). Within
  ``MEMORY_TOLERANCE`` of 1 passes: `glamhpc plan`'s numbers describe the code that runs.

A baseline agent (`glamhpc.agents`) runs the same way; its checkpoint's state.json ``smoke``
entry names its second parameter group (read as the value head) and its memory plan, and a
network with nothing to shrink (DRRN, Symbolic-PPO) runs as shipped on one rank.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from glamhpc.checkpoint import LATEST, checkpoint_name, read_global_state
from glamhpc.config import Config, config_from_dict, to_dict
from glamhpc.rundir import RunDir

#: Both change fractions must reach this, as must finite and resume_exact, for a pass.
MIN_CHANGE_FRAC = 0.9
#: |memory_ratio - 1| at most this passes.
MEMORY_TOLERANCE = 0.10
#: The held parts the plan's static estimate models, as the trainer logs them.
HELD_METRICS = ("memory/weights_gb", "memory/grads_gb", "memory/optimizer_gb", "memory/health_gb")
_ENVS_PER_RANK = 2
_STEPS = 4


class SmokeError(RuntimeError):
    """A smoke phase could not run at all (the config's run crashed)."""


@dataclass(frozen=True)
class SmokeVerdict:
    config: str
    world_size: int
    llm_change_frac: float
    value_change_frac: float
    finite: bool
    resume_exact: bool
    memory_ratio: float
    """Planned / held bytes (weights, grads, optimizer, snapshot); NaN when nothing was held."""

    @property
    def memory_ok(self) -> bool:
        # NaN compares False: a run that logged no memory fails.
        return abs(self.memory_ratio - 1.0) <= MEMORY_TOLERANCE

    @property
    def ok(self) -> bool:
        return (
            self.llm_change_frac >= MIN_CHANGE_FRAC
            and self.value_change_frac >= MIN_CHANGE_FRAC
            and self.finite
            and self.resume_exact
            and self.memory_ok
        )

    def result_line(self) -> str:
        return (
            f"RESULT smoke llm_param_change_frac={self.llm_change_frac:.4f} "
            f"value_head_change_frac={self.value_change_frac:.4f} "
            f"finite={int(self.finite)} resume_exact={int(self.resume_exact)} "
            f"memory_ratio={self.memory_ratio:.4f}"
        )

    def rows(self) -> list[tuple[str, str, str]]:
        def mark(good: bool) -> str:
            return "pass" if good else "FAIL"

        llm, head = self.llm_change_frac, self.value_change_frac
        return [
            ("ranks", str(self.world_size), "pass"),
            ("LLM elements changed", f"{llm:.4f}", mark(llm >= MIN_CHANGE_FRAC)),
            ("value-head elements changed", f"{head:.4f}", mark(head >= MIN_CHANGE_FRAC)),
            ("weights and losses finite", str(self.finite).lower(), mark(self.finite)),
            ("resume bit-exact", str(self.resume_exact).lower(), mark(self.resume_exact)),
            ("memory plan vs held", f"{self.memory_ratio:.3f}", mark(self.memory_ok)),
        ]


def smoke_world_size(cfg: Config) -> int:
    """2 ranks where the config distributes (DDP/FSDP over several devices), else 1."""
    from glamhpc.agents import ONE_RANK_AGENTS
    from glamhpc.launch.resources import resolve

    if cfg.agent in ONE_RANK_AGENTS:
        return 1
    return 2 if resolve(cfg).world_size > 1 else 1


def smoke_config(cfg: Config, run_root: Path, cache_dir: Path | None, world: int) -> Config:
    """The config as shipped, with the env counts, the length and the storage shrunk."""
    data = to_dict(cfg)
    num_envs = _ENVS_PER_RANK * world
    rollout = num_envs * _STEPS
    data["env"]["num_envs"] = num_envs
    data["ppo"]["steps_per_env"] = _STEPS
    # Several minibatches per epoch where the shipped size allows, never more than a rollout.
    data["ppo"]["minibatch_size"] = min(cfg.ppo.minibatch_size, max(rollout // 2, 1))
    data["train"].update(
        max_updates=2,
        checkpoint_every=1,
        keep_checkpoints=10,
        progress=False,
        save_initial=True,
        run_root=str(run_root),
    )
    data["tracking"]["enabled"] = False
    if cache_dir is not None:
        data["model"]["cache_dir"] = str(cache_dir)
    if cfg.agent == "bc":  # a few bot episodes written by the run, in batches of a few pairs
        data["bc"]["batch_size"] = min(cfg.bc.batch_size, 8)
        if cfg.bc.dataset.startswith("bot:"):
            data["bc"]["dataset"] = "bot:4"
    if cfg.agent == "symbolic":  # one BPTT chunk per env and update
        data["ppo"].update(
            steps_per_env=cfg.symbolic.recurrence, minibatch_size=cfg.symbolic.recurrence
        )
    return config_from_dict(data)


@contextmanager
def _offline_hub(cache_dir: Path | None) -> Iterator[None]:
    """The stand-in is read from its own hub cache, offline, in this process and its ranks."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    if cache_dir is not None:
        os.environ["HF_HUB_CACHE"] = str(cache_dir)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _train(cfg: Config, name: str, world: int) -> None:
    if world > 1:
        from glamhpc.launch.local import run_local

        code = run_local(cfg, name, world)
        if code != 0:
            raise SmokeError(f"the {world}-rank smoke run {name!r} failed (exit code {code})")
        return
    from glamhpc.agents import train_agent

    train_agent(cfg, name)


def _clone_until(src: RunDir, dst: RunDir, update: int) -> None:
    """A run directory holding ``src``'s config and its checkpoint of ``update`` as latest."""
    name = checkpoint_name(update)
    (dst.checkpoints).mkdir(parents=True)
    shutil.copyfile(src.config_file, dst.config_file)
    shutil.copytree(src.checkpoints / name, dst.checkpoints / name)
    (dst.checkpoints / LATEST).write_text(f"{name}\n")


def run_smoke(cfg: Config, config_label: str, workdir: Path | None = None) -> SmokeVerdict:
    """Run the smoke check of ``cfg`` in a private folder (removed afterwards)."""
    world = smoke_world_size(cfg)
    root = Path(tempfile.mkdtemp(prefix="glamhpc-smoke-", dir=workdir))
    try:
        with _offline_hub(root / "hub"):
            cache_dir = _stand_in(cfg, root / "hub")
            small = smoke_config(cfg, root / "runs", cache_dir, world)
            trained = RunDir.of(small, "trained")
            _train(small, "trained", world)
            resumed = RunDir.of(small, "resumed")
            _clone_until(trained, resumed, 1)
            _train(small, "resumed", world)
            planned = _planned_static_bytes(small, world)
            return _verdict(config_label, world, trained, resumed, planned)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stand_in(cfg: Config, cache_dir: Path) -> Path | None:
    from glamhpc.policy.hubcache import TINY_T5
    from glamhpc.policy.shrink import write_shrunk_hub_model

    if cfg.model.name == TINY_T5 and cfg.model.path is None:
        return None  # already tiny and built locally: it runs as it is
    write_shrunk_hub_model(cfg.model.name, cache_dir, seed=cfg.seed)
    return cache_dir


def _planned_static_bytes(cfg: Config, world: int) -> float:
    """The plan's per-rank weights + grads + optimizer + snapshot for the shrunk ``cfg``, from
    the stand-in's cached shape (read while its hub cache still exists)."""
    from glamhpc.launch.plan import GB, estimate_memory, model_shape

    params, shape = model_shape(cfg.model.name, cfg.model.cache_dir)
    return estimate_memory(cfg, params, shape, world).static_gb * GB


def memory_ratio(planned_bytes: float, history: list[dict[str, float]]) -> float:
    """Planned over held bytes, held from the last logged update (NaN when none was logged)."""
    from glamhpc.launch.plan import GB

    last = history[-1] if history else {}
    if not all(key in last for key in HELD_METRICS):
        return math.nan
    held = sum(last[key] for key in HELD_METRICS) * GB
    return planned_bytes / held if held > 0 else math.nan


def _verdict(
    label: str, world: int, trained: RunDir, resumed: RunDir, planned_bytes: float
) -> SmokeVerdict:
    import torch

    from glamhpc.distributed import read_checkpoint_tensors

    end = trained.checkpoints / checkpoint_name(2)
    saved = read_global_state(end)
    names, tied = saved["trainable"], saved["tied"]
    start_model, _ = read_checkpoint_tensors(trained.checkpoints / checkpoint_name(0), names, tied)
    end_model, end_optim = read_checkpoint_tensors(end, names, tied)
    again_model, again_optim = read_checkpoint_tensors(
        resumed.checkpoints / checkpoint_name(2), names, tied
    )
    # A baseline names its second parameter group and its memory plan (AgentRun.extra_state).
    own = saved.get("smoke") or {}
    second = tuple(own.get("second", ("value_head.",)))
    planned_bytes = float(own.get("planned_static_bytes", planned_bytes))
    counts = {"model.": [0, 0], "value_head.": [0, 0]}
    for name in names:
        prefix = "value_head." if name.startswith(second) else "model."
        got_grad = end_optim[name]["exp_avg_sq"] > 0
        changed = (end_model[name] != start_model[name]) & got_grad
        counts[prefix][0] += int(changed.sum())
        counts[prefix][1] += int(got_grad.sum())
    history = saved.get("history", [])
    losses = [h[k] for h in history for k in ("policy_loss", "value_loss", "td_loss") if k in h]
    finite = all(bool(torch.isfinite(t.float()).all()) for t in end_model.values()) and all(
        math.isfinite(x) for x in losses
    )
    exact = _equal(end_model, again_model) and all(
        _equal(end_optim[n], again_optim[n]) for n in names
    )
    return SmokeVerdict(
        config=label,
        world_size=world,
        llm_change_frac=counts["model."][0] / max(counts["model."][1], 1),
        value_change_frac=counts["value_head."][0] / max(counts["value_head."][1], 1),
        finite=finite,
        resume_exact=exact,
        memory_ratio=memory_ratio(planned_bytes, history),
    )


def _equal(a: Mapping[str, object], b: Mapping[str, object]) -> bool:
    import torch

    if a.keys() != b.keys():
        return False
    for key, x in a.items():
        y = b[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or not torch.equal(x, y):
                return False
        elif x != y:
            return False
    return True


__all__ = [
    "MEMORY_TOLERANCE",
    "MIN_CHANGE_FRAC",
    "SmokeError",
    "SmokeVerdict",
    "memory_ratio",
    "run_smoke",
    "smoke_config",
]
