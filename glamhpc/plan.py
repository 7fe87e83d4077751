"""Dry-run planning: ranks, env shards and per-GPU memory before a GPU hour is spent.

Memory model (bytes per parameter P, world size W, Adam):
- fp32 weights 4P, fp32 grads 4P, Adam moments 8P: 16 bytes/param in total (XL: ~46 GB);
- bf16 weights/grads with fp32 master copy and moments: 2 + 2 + 4 + 8 = 16 bytes/param too, but
  FSDP mixed precision keeps fp32 sharded params (4P/W) plus bf16 gathered blocks transiently;
- DDP replicates everything; FSDP2 shards weights, grads and optimizer state over W and
  gathers one T5 block at a time (plus the root's embeddings/lm_head);
- LoRA trains adapters only: frozen base weights, grads and Adam state for the adapters.
Activations (update phase, per rank) follow Korthikanti et al.'s ~34 bytes x d_model per token and
layer at 16-bit (x2 in fp32), or only each layer's input with activation checkpointing.
"""

from __future__ import annotations

from dataclasses import dataclass

from glamhpc.config import Config, env_split_problem

GB = 1e9
# Typical prompt length in tokens at the paper's 3-observation history (measured on MixedTrainLocal
# with the Flan-T5 tokenizer: ~150-250); used only for the activation estimate.
PROMPT_TOKENS = 256
ACTION_TOKENS = 4


@dataclass(frozen=True)
class RankPlan:
    node: int
    local_rank: int
    rank: int
    env_start: int
    env_count: int


@dataclass(frozen=True)
class MemoryPlan:
    params: int
    trainable: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.grads_gb + self.optimizer_gb + self.activations_gb


@dataclass(frozen=True)
class Plan:
    world_size: int
    ranks: list[RankPlan]
    memory: MemoryPlan
    gpu_mem_gb: float
    problems: list[str]

    @property
    def feasible(self) -> bool:
        return not self.problems


def model_shape(name: str) -> tuple[int, object]:
    """(parameter count, config) of a model built from its config on the meta device."""
    import torch

    from glamhpc.policy.models import build_from_config, count_params, t5_config_for

    config = t5_config_for(name)
    with torch.device("meta"):
        model = build_from_config(config)
    return count_params(model), config


def lora_params(config: object, r: int, targets: list[str]) -> int:
    d = config.d_model  # type: ignore[attr-defined]
    inner = config.num_heads * config.d_kv  # type: ignore[attr-defined]
    d_ff = config.d_ff  # type: ignore[attr-defined]
    layers = config.num_layers + config.num_decoder_layers  # type: ignore[attr-defined]
    shapes = {"q": (d, inner), "k": (d, inner), "v": (d, inner), "o": (inner, d)}
    shapes |= {"wi_0": (d, d_ff), "wi_1": (d, d_ff), "wo": (d_ff, d), "wi": (d, d_ff)}
    per_layer = sum(r * (a + b) for t, (a, b) in shapes.items() if t in targets)
    # Self-attention in every layer, plus cross-attention in decoder layers.
    attn = sum(r * (a + b) for t, (a, b) in shapes.items() if t in targets and t in "qkvo")
    return layers * per_layer + config.num_decoder_layers * attn  # type: ignore[attr-defined]


def estimate_memory(cfg: Config, params: int, config: object, world_size: int) -> MemoryPlan:
    bf16 = cfg.model.dtype == "bf16" or cfg.dist.mixed_precision == "bf16"
    weight_bytes = 2 if cfg.model.dtype == "bf16" else 4
    shard = world_size if cfg.dist.strategy == "fsdp" else 1
    d = config.d_model  # type: ignore[attr-defined]
    if cfg.model.lora.enabled:
        trainable = lora_params(config, cfg.model.lora.r, cfg.model.lora.target_modules)
        weights = params * weight_bytes / shard + trainable * 4
        grads = trainable * 4
        optim = trainable * 8
    else:
        trainable = params
        weights = params * 4 / shard
        if cfg.dist.strategy == "fsdp":
            # One gathered block at a time (+ the root's embedding/lm_head) in compute precision.
            layers = config.num_layers + config.num_decoder_layers  # type: ignore[attr-defined]
            weights += params / layers * (2 if bf16 else 4) * 2
        elif cfg.model.dtype == "bf16":
            weights = params * 2 + params * 4  # bf16 compute copy + fp32 master
        grads = params * 4 / shard
        optim = params * 8 / shard
    mb_local = max(cfg.ppo.minibatch_size // world_size, 1)
    k = 6
    enc_layers = config.num_layers  # type: ignore[attr-defined]
    dec_layers = config.num_decoder_layers  # type: ignore[attr-defined]
    token_layers = PROMPT_TOKENS * enc_layers + (1 + k * (ACTION_TOKENS - 1)) * dec_layers
    per_token_layer = (2 * d * 2) if cfg.dist.activation_checkpointing else 34 * d
    act = mb_local * token_layers * per_token_layer * (1 if bf16 else 2)
    return MemoryPlan(
        params=params,
        trainable=trainable,
        weights_gb=weights / GB,
        grads_gb=grads / GB,
        optimizer_gb=optim / GB,
        activations_gb=act / GB,
    )


def make_plan(cfg: Config, nodes: int, gpus_per_node: int, gpu_mem_gb: float = 80.0) -> Plan:
    per_node = gpus_per_node if gpus_per_node > 0 else cfg.launch.nproc_per_node
    world = nodes * per_node
    problems: list[str] = []
    split = env_split_problem(cfg.env.num_envs, world) if world else None
    if split:
        problems.append(split)
    per_rank = cfg.env.num_envs // world if world else 0
    ranks = [
        RankPlan(n, lr, n * per_node + lr, (n * per_node + lr) * per_rank, per_rank)
        for n in range(nodes)
        for lr in range(per_node)
    ]
    if cfg.model.name == "tiny-t5":
        from glamhpc.policy.models import count_params, load_model

        model, _ = load_model("tiny-t5", device="cpu")
        params, config = count_params(model), model.config
    else:
        params, config = model_shape(cfg.model.name)
    memory = estimate_memory(cfg, params, config, world)
    if gpus_per_node > 0 and memory.total_gb > 0.9 * gpu_mem_gb:
        static = memory.weights_gb + memory.grads_gb + memory.optimizer_gb
        fix = (
            "use dist.strategy=fsdp on more GPUs, model.lora.enabled=true"
            if cfg.dist.strategy == "ddp"
            else "use more GPUs, model.lora.enabled=true"
        )
        if static < 0.9 * gpu_mem_gb:
            fix = "lower ppo.minibatch_size, set dist.activation_checkpointing=true, or " + fix
        problems.append(
            f"{cfg.model.name} with {cfg.dist.strategy} in "
            f"{'bf16' if cfg.model.dtype == 'bf16' else 'fp32'} needs ~{memory.total_gb:.0f} GB "
            f"per GPU (~{static:.0f} GB for weights+grads+optimizer) but a GPU has "
            f"{gpu_mem_gb:.0f} GB: {fix}"
        )
    return Plan(world, ranks, memory, gpu_mem_gb, problems)
