"""The launch plan: everything decided before a run is submitted, and whether it can fit.

A plan writes nothing and imports no torch: the resolved resources, the run name and directory
(owned by glamhpc.rundir), the per-node torchrun command, and the layout of ranks over nodes with
their env slices. `glamhpc submit --dry-run` prints all of it together with the per-rank memory
estimate and the batch script; `glamhpc plan` prints the rank layout and memory and refuses
combinations that cannot fit. The memory estimate reads the model's shape from
`glamhpc.policy.shapes` (published FLAN-T5 shapes, cached config.json files): no torch either.

Memory model (bytes per parameter P, world size W, Adam), as `model.precision` runs. P counts
the LLM and the value head (an fp32 MLP of `model.value_hidden` width, trained in every mode),
with policy.head=action also the action MLP, less the untied lm_head it leaves frozen.
Held for the whole run (`static_gb`; checked against what the trainer holds after an update,
the `memory/*_gb` metrics, by `glamhpc train --smoke`):
- trained weights are always fp32 (the optimizer's master copy), whatever the precision:
  fp32 weights 4P, fp32 grads 4P, Adam moments 8P, and the update-health snapshot (a copy of
  the trainable weights, rl.health) 4P: 20 bytes/param (XL: ~57 GB);
- DDP replicates all of it; FSDP2 shards all of it: per rank, the total / W;
- LoRA trains adapters (and the value head) only: the frozen base in model.dtype (bf16 allowed:
  no optimizer updates it), fp32 adapters with their grads, Adam state and snapshot.
Working buffers (`buffers_gb`), real on a GPU but not held between updates or not in those
tensors:
- bf16-mixed under DDP (or one rank): autocast casts each LLM weight to bf16 once per forward
  and autograd keeps those copies for backward: +2P while a minibatch is in flight, freed when
  it ends (FSDP2 gathers bf16 blocks instead, so autocast has nothing to cast there);
- FSDP2 gathers one T5 block at a time (two with prefetch), in bf16 under bf16-mixed, else
  fp32, and frees it after use;
- DDP over several ranks keeps its gradient buckets (fp32, the trainable size) for the run.
Activations: bf16 only there (Korthikanti et al.'s ~34 bytes x d_model per token and layer at
16-bit, x2 in fp32), or only each layer's input with activation checkpointing.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from glamhpc.config import Config, env_split_problem, training_precision_problem
from glamhpc.launch.executors import LaunchError, render_sbatch
from glamhpc.launch.resources import Resources, job_name, resolve
from glamhpc.launch.torchrun import Rendezvous, RunSpec, torchrun_argv
from glamhpc.policy.hubcache import TINY_T5, inspect_cached_model, tiny_t5_builds
from glamhpc.policy.shapes import T5Shape, flan_t5_shape, param_count, tiny_t5_shape
from glamhpc.rundir import DONE_MARKER, RunDir, check_run_name, default_run_name
from glamhpc.secrets import redact_text
from glamhpc.tracking import tracking_uri

GB = 1e9
# Typical prompt length in tokens at the paper's 3-observation history (measured on MixedTrainLocal
# with the Flan-T5 tokenizer: ~150-250); used only for the activation estimate.
PROMPT_TOKENS = 256
ACTION_TOKENS = 4


@dataclass(frozen=True)
class RankSlot:
    """Where one global rank runs and which envs it steps: [env_start, env_start + env_count)."""

    node: int
    local_rank: int
    rank: int
    env_start: int
    env_count: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-rank memory of the update phase (GB)."""

    params: int
    trainable: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    health_gb: float = 0.0
    """The update-health snapshot: a copy of the rank's trainable parameters (rl.health)."""
    buffers_gb: float = 0.0
    """Working buffers: autocast's bf16 weight copies, FSDP2's gathered blocks, DDP's buckets."""

    @property
    def static_gb(self) -> float:
        """What the rank holds between updates: weights, gradients, optimizer, snapshot."""
        return self.weights_gb + self.grads_gb + self.optimizer_gb + self.health_gb

    @property
    def total_gb(self) -> float:
        return self.static_gb + self.buffers_gb + self.activations_gb


@dataclass(frozen=True)
class Capacity:
    """Whether a config fits a node/GPU count: the rank layout, the memory, what does not fit."""

    world_size: int
    ranks: list[RankSlot]
    memory: MemoryEstimate
    gpu_mem_gb: float
    problems: list[str]

    @property
    def feasible(self) -> bool:
        return not self.problems


# ------------------------------------------------------------------ ranks and memory
def rank_layout(num_envs: int, nodes: int, per_node: int) -> list[RankSlot]:
    """Global rank ``n * per_node + l`` on node n; each rank steps an equal, contiguous share."""
    world = nodes * per_node
    per_rank = num_envs // world if world else 0
    return [
        RankSlot(n, lr, n * per_node + lr, (n * per_node + lr) * per_rank, per_rank)
        for n in range(nodes)
        for lr in range(per_node)
    ]


def model_shape(name: str, cache_dir: str | None = None) -> tuple[int, T5Shape]:
    """(parameter count, shape) of ``model.name``, torch-free: tiny-t5 from its cached build (or
    its vocabulary bound), hub models from the config.json in the local cache, else FLAN-T5 sizes
    from their published shapes. ValueError for a model whose shape is unknown here."""
    shape = _shape(name, cache_dir)
    return param_count(shape), shape


def _shape(name: str, cache_dir: str | None) -> T5Shape:
    if name == TINY_T5:
        builds = sorted(
            tiny_t5_builds(cache_dir), key=lambda p: (p / "config.json").stat().st_mtime
        )
        # Before its first build, the tokenizer's vocabulary bound gives an upper estimate.
        return T5Shape.from_json(builds[-1] / "config.json") if builds else tiny_t5_shape(2048)
    # The cached config.json first: it is what the loader builds (a FLAN-T5 download matches
    # the published shape; `--smoke`'s shrunk stand-in, cached under the same id, does not).
    snapshot = inspect_cached_model(name, cache_dir).snapshot
    if snapshot is not None and (snapshot / "config.json").is_file():
        return T5Shape.from_json(snapshot / "config.json")
    return flan_t5_shape(name)  # raises ValueError naming the known shapes


def lora_params(config: T5Shape, r: int, targets: list[str]) -> int:
    d = config.d_model
    inner = config.num_heads * config.d_kv
    d_ff = config.d_ff
    layers = config.layers
    shapes = {"q": (d, inner), "k": (d, inner), "v": (d, inner), "o": (inner, d)}
    shapes |= {"wi_0": (d, d_ff), "wi_1": (d, d_ff), "wo": (d_ff, d), "wi": (d, d_ff)}
    per_layer = sum(r * (a + b) for t, (a, b) in shapes.items() if t in targets)
    # Self-attention in every layer, plus cross-attention in decoder layers.
    attn = sum(r * (a + b) for t, (a, b) in shapes.items() if t in targets and t in "qkvo")
    return layers * per_layer + config.dec_layers * attn


def value_head_params(d_model: int, hidden: int) -> int:
    """Parameters of GlamPolicy's value MLP: d_model -> hidden -> hidden -> 1, with biases."""
    return d_model * hidden + hidden + hidden * hidden + hidden + hidden + 1


def action_head_params(d_model: int, hidden: int, actions: int) -> int:
    """Parameters of GlamPolicy's action MLP (policy.head=action): d_model -> hidden -> hidden ->
    actions, with biases."""
    return value_head_params(d_model, hidden) - (hidden + 1) + hidden * actions + actions


def estimate_memory(cfg: Config, params: int, config: T5Shape, world_size: int) -> MemoryEstimate:
    """Per-rank memory of the update phase of ``cfg`` (the module docstring's model).

    ``params`` counts the LLM; the value head is added here (``MemoryEstimate.params`` stays the
    LLM's count, ``trainable`` includes the head).
    """
    mixed = cfg.model.precision == "bf16-mixed"
    # 16-bit compute: bf16-mixed, or LoRA on a bf16 base (bf16 weights are refused otherwise).
    bf16 = mixed or cfg.model.dtype == "bf16"
    fsdp = cfg.dist.strategy == "fsdp"
    shard = world_size if fsdp else 1
    d = config.d_model
    head = value_head_params(d, cfg.model.value_hidden)
    frozen = 0  # held fp32 weights no optimizer updates
    if cfg.policy.head == "action":
        from glamhpc.envs.actions import ACTION_SPACES

        actions = len(ACTION_SPACES[cfg.env.action_space])
        head += action_head_params(d, cfg.model.value_hidden, actions)
        # GlamPolicy freezes an untied lm_head, which nothing reads with the action head.
        frozen = 0 if config.tied_head or cfg.model.lora.enabled else config.vocab * d
    if cfg.model.lora.enabled:
        trainable = lora_params(config, cfg.model.lora.r, cfg.model.lora.target_modules) + head
        base_bytes = 2 if cfg.model.dtype == "bf16" else 4
        weights = params * base_bytes / shard + trainable * 4 / shard
    else:
        trainable = params + head - frozen
        weights = (trainable + frozen) * 4 / shard  # fp32 master weights, whatever the precision
    buffers = 0.0
    if fsdp:
        # One gathered block at a time (+ the next, prefetched) in FSDP's param_dtype.
        buffers += params / config.layers * (2 if mixed else 4) * 2
    elif world_size > 1:
        buffers += trainable * 4  # DDP's gradient buckets
    if mixed and not fsdp and cfg.model.dtype == "fp32":
        buffers += params * 2  # autocast's bf16 weight copies, kept by autograd for backward
    mb_local = max(cfg.ppo.minibatch_size // world_size, 1)
    k = 6
    token_layers = (
        PROMPT_TOKENS * config.enc_layers + (1 + k * (ACTION_TOKENS - 1)) * config.dec_layers
    )
    per_token_layer = (2 * d * 2) if cfg.dist.activation_checkpointing else 34 * d
    act = mb_local * token_layers * per_token_layer * (1 if bf16 else 2)
    return MemoryEstimate(
        params=params,
        trainable=trainable,
        weights_gb=weights / GB,
        grads_gb=trainable * 4 / shard / GB,
        optimizer_gb=trainable * 8 / shard / GB,
        activations_gb=act / GB,
        # rl.health copies the trainable (fp32) parameters before each update to diff against.
        health_gb=trainable * 4 / shard / GB,
        buffers_gb=buffers / GB,
    )


def run_memory(cfg: Config, world_size: int) -> MemoryEstimate:
    """Per-rank memory of ``cfg`` over ``world_size`` ranks."""
    params, config = model_shape(cfg.model.name, cfg.model.cache_dir)
    return estimate_memory(cfg, params, config, world_size)


def check_capacity(
    cfg: Config, nodes: int, gpus_per_node: int, gpu_mem_gb: float = 80.0
) -> Capacity:
    """Rank layout and memory of ``cfg`` on ``nodes`` x ``gpus_per_node``, with what cannot fit
    (env slices that do not divide, memory above 90% of a GPU) and how to fix it."""
    per_node = gpus_per_node if gpus_per_node > 0 else cfg.launch.nproc_per_node
    world = nodes * per_node
    problems: list[str] = []
    precision = training_precision_problem(cfg)
    if precision:
        problems.append(precision)
    split = env_split_problem(cfg.env.num_envs, world) if world else None
    if split:
        problems.append(split)
    ranks = rank_layout(cfg.env.num_envs, nodes, per_node)
    memory = run_memory(cfg, world)
    if gpus_per_node > 0 and memory.total_gb > 0.9 * gpu_mem_gb:
        static = memory.static_gb
        fix = (
            "use dist.strategy=fsdp on more GPUs, model.lora.enabled=true"
            if cfg.dist.strategy == "ddp"
            else "use more GPUs, model.lora.enabled=true"
        )
        if static < 0.9 * gpu_mem_gb:
            fix = "lower ppo.minibatch_size, set dist.activation_checkpointing=true, or " + fix
        problems.append(
            f"{cfg.model.name} with {cfg.dist.strategy} in {cfg.model.precision} "
            f"needs ~{memory.total_gb:.0f} GB "
            f"per GPU (~{static:.0f} GB for weights+grads+optimizer+snapshot) but a GPU has "
            f"{gpu_mem_gb:.0f} GB: {fix}"
        )
    return Capacity(world, ranks, memory, gpu_mem_gb, problems)


# ------------------------------------------------------------------ one run's plan
@dataclass
class RunPlan:
    """Everything decided before a run is submitted (printed by --dry-run)."""

    cfg: Config
    resources: Resources
    run_name: str
    run_dir: Path
    folder: Path
    spec: RunSpec
    job_name: str
    ranks: list[RankSlot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def config_path(self) -> Path:
        return Path(self.spec.config_path)


def resolved_tracking(cfg: Config) -> Config:
    """``cfg`` carrying the tracking URI glamhpc.tracking resolves for it (local stores made
    absolute), so every rank on every node and every requeue writes to the store the submitter
    meant: the ranks read it from the config snapshot, whatever their working directory."""
    uri = tracking_uri(cfg)
    if uri == cfg.tracking.uri:
        return cfg
    resolved = cfg.model_copy(deep=True)
    resolved.tracking.uri = uri
    return resolved


def plan_run(
    cfg: Config,
    run_name: str | None = None,
    workdir: Path | None = None,
    extra_env: dict[str, str] | None = None,
    extra_tags: dict[str, str] | None = None,
) -> RunPlan:
    """Resolve one run: resources, run name and directory, the job's spec. Writes nothing."""
    res = resolve(cfg)
    if res.container:
        _check_container(res)
    name = check_run_name(run_name or default_run_name(cfg))
    workdir = (workdir or Path.cwd()).resolve()
    cfg = resolved_tracking(cfg)
    run = RunDir.of(cfg, name, workdir)
    tags = {"launcher": "glamhpc submit", "executor": res.executor, "nodes": str(res.nodes)}
    tags.update(extra_tags or {})
    env = {"GLAMHPC_RUN_TAGS": json.dumps(tags, sort_keys=True)}
    env.update(extra_env or {})
    spec = RunSpec(
        # The snapshot RunDir.write_launch_snapshot writes at submit.
        config_path=str(run.launch_config),
        run_name=name,
        run_dir=str(run.path),
        workdir=str(workdir),
        log_dir=str(run.torchrun_logs),
        env=env,
    )
    notes = []
    if run.is_done():
        notes.append(f"{run.path} is already finished ({DONE_MARKER}); the job will exit at once")
    elif run.has_checkpoints():
        notes.append(f"{run.path} exists: the job resumes it from its latest checkpoint")
    return RunPlan(
        cfg=cfg,
        resources=res,
        run_name=name,
        run_dir=run.path,
        folder=run.launch,
        spec=spec,
        job_name=job_name("run", name),
        ranks=rank_layout(cfg.env.num_envs, res.nodes, res.nproc_per_node),
        notes=notes,
    )


def _check_container(res: Resources) -> None:
    from glamhpc.containers import ContainerError, engine_for_image, wrap_command

    try:
        wrap_command(["true"], str(res.container), engine=engine_for_image(str(res.container)))
    except ContainerError as exc:
        raise LaunchError(f"--container {res.container}: {exc}") from None


def node_command_preview(plan: RunPlan) -> str:
    """The per-node command with the allocation-dependent parts as shell-style placeholders."""
    res = plan.resources
    rendezvous = None
    if res.nodes > 1:
        rendezvous = Rendezvous("$FIRST_NODE", 0, "glamhpc-$SLURM_JOB_ID")
    argv = torchrun_argv(
        train_argv=plan.spec.train_argv(),
        nnodes=res.nodes,
        nproc_per_node=res.nproc_per_node,
        rendezvous=rendezvous,
        log_dir=os.path.join(plan.spec.log_dir, "$JOB_ID-node$NODE"),
        max_restarts=res.max_restarts,
        shutdown_timeout_s=res.shutdown_timeout_s,
    )
    if rendezvous is not None:
        argv = [a.replace("$FIRST_NODE:0", "$FIRST_NODE:$PORT") for a in argv]
    text = shlex.join(argv)
    if res.container:
        text = f"[inside {res.container}] {text}"
    return text


def _rank_lines(ranks: list[RankSlot]) -> list[str]:
    """One line per node: its global ranks and the envs they step."""
    lines = []
    for node, group in itertools.groupby(ranks, key=lambda r: r.node):
        slots = list(group)
        first, last = slots[0], slots[-1]
        which = f"rank {first.rank}" if first is last else f"ranks {first.rank}-{last.rank}"
        envs = f"envs {first.env_start}-{last.env_start + last.env_count - 1}"
        lines.append(f"node {node}: {which}, {envs} ({first.env_count} per rank)")
    return lines


def _memory_lines(plan: RunPlan) -> list[str]:
    try:
        m = run_memory(plan.cfg, plan.resources.world_size)
    except ValueError as exc:  # a model without a known shape: the rest of the plan still holds
        return [f"memory/rank  not estimated: {exc}"]
    return [
        f"model        {plan.cfg.model.name}: {m.params / 1e6:.1f} M parameters, "
        f"{m.trainable / 1e6:.1f} M trainable",
        f"memory/rank  ~{m.total_gb:.2f} GB: weights {m.weights_gb:.2f} + gradients "
        f"{m.grads_gb:.2f} + optimizer {m.optimizer_gb:.2f} + health snapshot "
        f"{m.health_gb:.2f} + working buffers {m.buffers_gb:.2f} + activations (estimate) "
        f"{m.activations_gb:.2f}",
    ]


def format_plan(plan: RunPlan, memory: bool = False) -> str:
    """Human-readable plan: what runs where, the ranks, and the batch script for Slurm.

    ``memory`` adds the per-rank memory estimate (--dry-run asks for it). Secrets in the
    batch script's setup lines are masked (glamhpc.secrets.redact_text).
    """
    res = plan.resources
    device = (
        f"{res.gpus_per_node} GPU(s)" if res.gpus_per_node else f"{res.nproc_per_node} CPU rank(s)"
    )
    limit = f"{res.time_min} min" if res.time_min is not None else "partition default"
    lines = [
        f"run          {plan.run_name}",
        f"run dir      {plan.run_dir}",
        f"executor     {res.executor}",
        f"nodes        {res.nodes} x {device} = world size {res.world_size}",
        f"cpus/node    {res.cpus_per_task}",
        f"time limit   {limit} (USR2 {res.signal_delay_s}s before it; "
        f"at most {res.max_requeues} requeues)",
        f"tracking     {plan.cfg.tracking.uri if plan.cfg.tracking.enabled else 'disabled'}",
        f"job name     {plan.job_name}",
        f"config       {plan.config_path} (snapshot written at submit)",
        f"node command {node_command_preview(plan)}",
    ]
    lines += [
        f"{'ranks' if i == 0 else '':<12} {text}" for i, text in enumerate(_rank_lines(plan.ranks))
    ]
    if memory:
        lines += _memory_lines(plan)
    lines += [f"note         {note}" for note in plan.notes]
    if res.executor == "slurm":
        lines += ["", "# sbatch script", render_sbatch(res, plan.folder, plan.job_name)]
    # Printed (and pasted into tickets): launch.setup secrets and URI credentials masked; the
    # script sbatch receives keeps them.
    return redact_text("\n".join(lines))
