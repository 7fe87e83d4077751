"""One GPU check of the training path: rollout and PPO update speed, MFU and memory, fp32 vs bf16.

Random-init flan-t5-small/base/large shapes (no hub), each in fp32 and bf16-mixed (fp32 weights,
bf16 autocast), run one PPO update of the paper's geometry as the trainer does: 32
MixedTrainLocal envs x 40 steps (`rl.rollout.collect`: real prompts, no_grad scoring, the keyed
sampler, real env steps), then `rl.ppo.update_from_rollout` (4 epochs, minibatch 64) with the
update-health snapshot. Reported: env steps/s of the rollout, the update and both (the trainer's
`env_steps_per_s`); update MFU from `policy.flops.update_cost` (acting FLOPs left out; against
the bf16 peak, for fp32 too, as the trainer does); peak memory against
`launch.plan.estimate_memory`. Last, one FSDP2 bf16-mixed update of a flan-t5-xl shape cut to 2+2
layers on a 1-rank process group; parameters and Adam state must stay fp32.

The tokenizer is tiny-t5's (offline): its BPE was trained on BabyAI text, so prompts have fewer
tokens than with FLAN-T5's SentencePiece (~150-250; the table shows the mean) and actions are one
token + </s>. Trainer defaults hold (`train.deterministic=true`, fp32 matmuls without TF32).

    .venv/bin/python benchmarks/gpu_check.py [--shapes small,base,large,xl]   # one GPU, < 8 min
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke    # same code, tiny shapes, CPU, gloo

The last line is `RESULT gpu_check large_env_steps_per_s=X large_update_mfu=Y` (flan-t5-large
shape, bf16-mixed; n/a where not measured). Exit code 1 when a case failed or weights left fp32.
"""

from __future__ import annotations

import argparse
import gc
import io
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from glamhpc.config import Config, load_config
from glamhpc.distributed import DistContext, init_distributed, shutdown, wrap_policy
from glamhpc.envs.batch import EnvBatch
from glamhpc.launch.plan import estimate_memory
from glamhpc.policy.flops import peak_flops, update_cost
from glamhpc.policy.models import count_params, load_model
from glamhpc.policy.shapes import T5Shape, flan_t5_shape, param_count
from glamhpc.policy.t5 import build_from_config, t5_config_for
from glamhpc.rl.build import build_policy, seed_everything
from glamhpc.rl.health import UpdateHealth
from glamhpc.rl.ppo import RankSlice, update_from_rollout
from glamhpc.rl.rollout import RolloutKey, collect

if TYPE_CHECKING:
    from transformers import T5Config

LEVEL = "BabyAI-MixedTrainLocal-v0"
SHAPES = ("small", "base", "large", "xl")  # xl: the FSDP2 check (2+2 layers of the XL shape)
# Run order: the RESULT shape and the riskiest check first, so a session cut short has them.
RUN_ORDER = ("large", "xl", "base", "small")
TARGET_STEPS, MILESTONE_STEPS, TARGET_MFU = 80.0, 40.0, 0.35
# The smoke run keeps every code path but shrinks each shape to 2 layers of width 64.
SMOKE_SHAPE = {"d_model": 64, "d_ff": 128, "num_heads": 2, "d_kv": 32, "num_layers": 2}


@dataclass(frozen=True)
class Geometry:
    num_envs: int
    steps: int
    epochs: int
    minibatch: int


PAPER = Geometry(num_envs=32, steps=40, epochs=4, minibatch=64)
SMOKE = Geometry(num_envs=4, steps=4, epochs=1, minibatch=8)


@dataclass
class Case:
    label: str
    precision: str
    params: int
    transitions: int
    prompt_tokens: float
    rollout_s: float
    update_s: float
    update_flops: float
    mfu: float | None
    peak_gb: float | None
    plan_gb: float
    fp32_ok: bool = True
    sharded: bool = False

    @property
    def overall_sps(self) -> float:
        return self.transitions / (self.rollout_s + self.update_s)


def run_config(geo: Geometry, precision: str, strategy: str, smoke: bool) -> Config:
    overrides = (
        f"env.level={LEVEL} env.num_envs={geo.num_envs} ppo.steps_per_env={geo.steps} "
        f"ppo.epochs={geo.epochs} ppo.minibatch_size={geo.minibatch} model.dtype=fp32 "
        f"model.precision={precision} dist.strategy={strategy}"
    ).split()
    # One thread on CPU: on a shared 2-core machine two OpenMP threads spin against each other
    # and a tiny case took 5x longer.
    return load_config(None, [*overrides, *(["train.threads=1"] if smoke else [])])


def model_config(name: str, smoke: bool, **overrides: int) -> T5Config:
    if smoke:
        overrides = {**overrides, **SMOKE_SHAPE, "num_decoder_layers": 2}
    return t5_config_for(f"google/flan-t5-{name}", vocab_size=32128, **overrides)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    label: str,
    model: nn.Module,
    tokenizer: Any,
    shape: T5Shape,
    cfg: Config,
    device: torch.device,
    ctx: DistContext | None = None,
) -> Case:
    """One rollout + one PPO update as the trainer runs them (rl/build.py, rl/trainer.py)."""
    seed_everything(cfg)
    envs = EnvBatch(LEVEL, cfg.env.num_envs, seed=cfg.seed, history=cfg.env.history)
    glam = build_policy(cfg, model, tokenizer, envs.action_texts, device)
    policy = glam if ctx is None else wrap_policy(glam, ctx, cfg.dist, cfg.model.precision)
    reduce: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda t: t) if ctx is None else ctx.all_reduce_sum
    )
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params, lr=cfg.ppo.lr, betas=cfg.ppo.adam_betas, eps=cfg.ppo.adam_eps
    )
    health = UpdateHealth(glam.named_parameters())

    def score(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        logprobs, values = policy(prompts)
        return logprobs.float().cpu(), values.float().cpu()

    # Warm-up (kernels, cuBLAS handles, allocator blocks) on one minibatch of real prompts; the
    # peak-memory counter starts after it.
    first = envs.prompts()
    warm = (first * (-(-cfg.ppo.minibatch_size // len(first))))[: cfg.ppo.minibatch_size]
    with torch.no_grad():
        score(first)
    logprobs, values = score(warm)
    (logprobs.sum() * 0.0 + values.sum() * 0.0).backward()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    sync(device)
    start = time.perf_counter()
    key = RolloutKey(cfg.seed, 0, 0, cfg.env.num_envs)
    rollout = collect(score, envs, cfg.ppo.steps_per_env, cfg.env.num_envs, key, lambda: False)
    assert rollout is not None  # nothing requests a stop
    sync(device)
    rollout_s = time.perf_counter() - start
    health.snapshot()
    update_from_rollout(
        score,
        params,
        optimizer,
        rollout.buffer,
        rollout.last_values,
        cfg.ppo,
        seed=cfg.seed,
        update=0,
        ranks=RankSlice(0, cfg.env.num_envs, cfg.env.num_envs, world_size=1),
        all_reduce_sum=reduce,
    )
    health.measure(reduce)
    sync(device)
    update_s = time.perf_counter() - start - rollout_s

    prompts = rollout.buffer.flat_prompts()
    prompt_tokens = float(np.mean([len(ids) for ids in glam.tokenize(prompts)]))
    action_tokens = float(np.mean([len(tokenizer(a)["input_ids"]) for a in envs.action_texts]))

    cost = partial(
        update_cost, shape, prompt_tokens=prompt_tokens, action_tokens=action_tokens,
        num_actions=len(envs.action_texts), transitions=len(prompts),
    )  # fmt: skip
    # update_cost counts acting too; the update's share is the difference with 0 epochs.
    update_flops = cost(epochs=cfg.ppo.epochs).flops - cost(epochs=0).flops
    peak = peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    world = 1 if ctx is None else ctx.world_size
    plan = estimate_memory(cfg, param_count(shape), shape, world).total_gb
    fp32_ok = all(p.dtype == torch.float32 for p in policy.parameters()) and all(
        t.dtype == torch.float32
        for state in optimizer.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0
    )
    mem = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None
    sharded = any(hasattr(p, "to_local") for p in policy.parameters())  # DTensor shards
    return Case(
        label, cfg.model.precision, count_params(model), len(prompts), prompt_tokens, rollout_s,
        update_s, update_flops, update_flops / update_s / peak if peak else None, mem, plan,
        fp32_ok, sharded,
    )  # fmt: skip


def build(config: T5Config, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    # Initialised on the device itself (transformers honours the device context): a CPU init of
    # the large shape takes ~30 s of the GPU session.
    with device:
        model = build_from_config(config)
    return model.to(device)


def shape_cases(
    name: str, tokenizer: Any, geo: Geometry, device: torch.device, smoke: bool
) -> tuple[list[Case], list[str]]:
    """Both precisions on one model (fp32 weights either way); a failed case spares the other."""
    config = model_config(name, smoke)
    shape = T5Shape.from_config(config) if smoke else flan_t5_shape(name)
    start = time.perf_counter()
    model = build(config, device)
    check_count(name, model, shape)
    print(
        f"built {name} ({count_params(model) / 1e6:.1f} M) in {time.perf_counter() - start:.1f} s"
    )
    cases, failed = [], []
    for precision in ("fp32", "bf16-mixed"):
        try:
            cfg = run_config(geo, precision, "ddp", smoke)
            cases.append(measure(name, model, tokenizer, shape, cfg, device))
            report(cases[-1])
        except Exception:  # e.g. out of memory in fp32: the bf16-mixed numbers still count
            traceback.print_exc()
            failed.append(f"{name} {precision}")
        cleanup(device)
    return cases, failed


def check_count(name: str, model: nn.Module, shape: T5Shape) -> None:
    # The plan's estimate and the FLOPs come from `shape`: it must be the model that runs.
    if count_params(model) != param_count(shape):
        raise RuntimeError(f"{name}: {count_params(model)} params, formula {param_count(shape)}")


def fsdp_case(tokenizer: Any, geo: Geometry, device: torch.device, smoke: bool) -> Case:
    """One FSDP2 bf16-mixed rollout + update on a 1-rank process group (nccl, gloo on CPU)."""
    # A real one-rank process group, so wrap_policy applies FSDP2 on the one device there is.
    cfg = run_config(geo, "bf16-mixed", "fsdp", smoke)
    ctx = init_distributed(cfg.dist, device.type, group_of_one=True)
    try:
        config = model_config("xl", smoke, num_layers=2, num_decoder_layers=2)
        xl = replace(flan_t5_shape("flan-t5-xl"), enc_layers=2, dec_layers=2)
        shape = T5Shape.from_config(config) if smoke else xl
        model = build(config, device)
        check_count("xl 2+2L", model, shape)
        case = measure("xl 2+2L fsdp", model, tokenizer, shape, cfg, device, ctx)
        if not case.sharded:
            raise RuntimeError("wrap_policy returned an unsharded policy: FSDP2 was not applied")
        return case
    finally:
        shutdown()


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def report(case: Case) -> None:
    # One line per finished case (stdout is line-buffered): a run cut short keeps what it got.
    mfu = fmt(case.mfu, ".3f", "n/a (CPU)" if case.peak_gb is None else "n/a (peak?)")
    print(
        f"done {case.label} {case.precision}: rollout {case.rollout_s:.2f} s, update "
        f"{case.update_s:.2f} s, {case.overall_sps:.1f} env steps/s, update MFU {mfu}"
    )


def fmt(value: float | None, spec: str, missing: str = "n/a (CPU)") -> str:
    return missing if value is None else format(value, spec)


def table(title: str, columns: str, rows: list[list[str]], left: int) -> Table:
    out = Table(title=title)
    for i, col in enumerate(columns.split("|")):
        out.add_column(col, justify="left" if i < left else "right")
    for row in rows:
        out.add_row(*row)
    return out


def tables(cases: list[Case], console: Console, missing: str) -> None:
    cases = sorted(cases, key=lambda c: SHAPES.index(c.label.split()[0]))
    rows = []
    for c in cases:
        ratio = None if c.peak_gb is None else c.peak_gb / c.plan_gb
        rows.append(
            [c.label, c.precision, f"{c.params / 1e6:.1f}", f"{c.prompt_tokens:.0f}"]
            + [f"{c.transitions / t:.1f}" for t in (c.rollout_s, c.update_s)]
            + [f"{c.overall_sps:.1f}", f"{c.update_flops / c.update_s / 1e12:.2f}"]
            + [fmt(c.mfu, ".3f", missing), fmt(c.peak_gb, ".2f", missing), f"{c.plan_gb:.2f}"]
            + [fmt(ratio, ".2f", missing), "yes" if c.fp32_ok else "NO"]
        )
    columns = "shape|precision|params M|prompt tok|rollout steps/s|update steps/s|overall steps/s"
    columns += "|update TFLOP/s|update MFU (bf16 peak)|peak GB|plan GB|peak/plan|fp32 state"
    title = "one PPO update per case (rollout + update, the trainer's path)"
    console.print(table(title, columns, rows, left=2))
    by_key = {(c.label, c.precision): c for c in cases}
    pairs = []
    for label in dict.fromkeys(c.label for c in cases):
        fp32, mixed = by_key.get((label, "fp32")), by_key.get((label, "bf16-mixed"))
        if fp32 is None or mixed is None:
            continue
        mem = None
        if fp32.peak_gb is not None and mixed.peak_gb is not None:
            mem = mixed.peak_gb / fp32.peak_gb
        speed = mixed.overall_sps / fp32.overall_sps
        ratios = (fp32.rollout_s / mixed.rollout_s, fp32.update_s / mixed.update_s, speed)
        pairs.append([label, *(f"{r:.2f}" for r in ratios), fmt(mem, ".2f", missing)])
    columns = "shape|rollout speed-up|update speed-up|overall speed-up|peak memory ratio"
    title = "bf16-mixed over fp32 (speed-up: fp32 time / bf16-mixed time), side by side"
    console.print(table(title, columns, pairs, left=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU, < 1 min")
    parser.add_argument(
        "--shapes",
        default=None,
        help=f"subset of {','.join(SHAPES)} (default: all; --cpu-smoke: large,xl, since every "
        "shape shrinks to the same tiny one there)",
    )
    args = parser.parse_args()
    smoke = bool(args.cpu_smoke)
    chosen = args.shapes or ("large,xl" if smoke else ",".join(SHAPES))
    names = [s.strip() for s in chosen.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SHAPES))
    if unknown or not names:
        parser.error(f"--shapes: unknown {unknown}; choose from {','.join(SHAPES)}")
    if isinstance(sys.stdout, io.TextIOWrapper):  # lines and torch's warnings in their order
        sys.stdout.reconfigure(line_buffering=True)
    if not smoke and not torch.cuda.is_available():
        print("error: no CUDA device; run with --cpu-smoke on a CPU machine", file=sys.stderr)
        return 2
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    geo = SMOKE if smoke else PAPER
    start = time.perf_counter()
    _, tokenizer = load_model("tiny-t5")
    name = "CPU (smoke: 2-layer 64-wide shapes)" if smoke else torch.cuda.get_device_name(device)
    peak = None if smoke else peak_flops(name)
    tflops = fmt(None if peak is None else peak / 1e12, ".0f", "unknown")
    print(f"device: {name}; torch {torch.__version__}; peak bf16 {tflops} TFLOP/s; {geo}; {LEVEL}")
    cases: list[Case] = []
    failed: list[str] = []
    for shape in sorted(names, key=RUN_ORDER.index):
        try:
            if shape == "xl":
                cases.append(fsdp_case(tokenizer, geo, device, smoke))
                report(cases[-1])
            else:
                done, lost = shape_cases(shape, tokenizer, geo, device, smoke)
                cases += done
                failed += lost
        except Exception:  # keep the other shapes' numbers: a GPU session is short
            traceback.print_exc()
            failed.append(shape)
        cleanup(device)
    console = Console(width=200)
    if cases:
        # On a GPU the only gap is MFU on a device missing from policy.flops.PEAK_TFLOPS.
        tables(cases, console, "n/a (CPU)" if smoke else "n/a (peak?)")
    large = next((c for c in cases if c.label == "large" and c.precision == "bf16-mixed"), None)
    steps = None if large is None else large.overall_sps
    mfu = None if large is None else large.mfu
    print(
        f"targets (flan-t5-large shape, bf16-mixed, one H100): >= {TARGET_STEPS:.0f} env steps/s "
        f"(first milestone {MILESTONE_STEPS:.0f}), update MFU >= {TARGET_MFU}; measured "
        f"{fmt(steps, '.1f', 'n/a')} env steps/s, MFU {fmt(mfu, '.3f', 'n/a')}"
    )
    bad_state = [f"{c.label} {c.precision}" for c in cases if not c.fp32_ok]
    if bad_state:
        print(f"error: parameters or Adam state not fp32 after: {', '.join(bad_state)}")
    if failed:
        print(f"error: failed: {', '.join(failed)} (tracebacks above)")
    print(f"total {time.perf_counter() - start:.1f} s")
    print(
        f"RESULT gpu_check large_env_steps_per_s={fmt(steps, '.1f', 'n/a')} "
        f"large_update_mfu={fmt(mfu, '.3f', 'n/a')}"
    )
    return 1 if failed or bad_state else 0


if __name__ == "__main__":
    sys.exit(main())
