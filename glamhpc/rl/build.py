"""The parts of one rank of a run, built from its config: envs, model, policy, optimizer.

The composition root of training: the only place that maps config sections onto the library
constructors of `envs`, `policy` and `distributed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from glamhpc.config import Config, ConfigError, training_precision_problem
from glamhpc.distributed import DistContext, wrap_policy
from glamhpc.envs.batch import EnvBatch
from glamhpc.policy.flops import T5Shape
from glamhpc.policy.glam import GlamPolicy
from glamhpc.policy.models import count_params, load_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Parts:
    envs: EnvBatch
    tokenizer: PreTrainedTokenizerBase
    policy: nn.Module
    """The policy as the trainer calls it: wrapped by DDP/FSDP2 when distributed."""
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    num_params: int
    shape: T5Shape
    action_tokens: float
    """Mean token count of the candidate actions (for the FLOPs formula)."""


def seed_everything(cfg: Config) -> None:
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def build_envs(cfg: Config, env_offset: int, num_envs_local: int) -> EnvBatch:
    """This rank's training envs (shared by every agent's loop: `glamhpc.agents`)."""
    return EnvBatch(
        level=cfg.env.level,
        num_envs=num_envs_local,
        seed=cfg.seed,
        action_space=cfg.env.action_space,
        history=cfg.env.history,
        reward_scale=cfg.env.reward_scale,
        language=cfg.env.language,
        task_sampling=cfg.env.task_sampling,
        env_seed_offset=env_offset,
        fix_grammar=cfg.env.fix_grammar,
    )


def build_model(cfg: Config, ctx: DistContext) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The LLM and its tokenizer as `model:` asks (LoRA adapters applied), on this rank's device."""
    model, tokenizer = load_model(
        cfg.model.name,
        path=cfg.model.path,
        init=cfg.model.init,
        dtype=cfg.model.dtype,
        device=str(ctx.device),
        cache_dir=cfg.model.cache_dir,
    )
    if cfg.model.lora.enabled:
        model = _apply_lora(model, cfg)
    return model, tokenizer


def build_parts(cfg: Config, ctx: DistContext, env_offset: int, num_envs_local: int) -> Parts:
    # Before anything is loaded: a multi-GB model in bf16 would only be refused afterwards.
    problem = training_precision_problem(cfg)
    if problem:
        raise ConfigError(problem)
    envs = build_envs(cfg, env_offset, num_envs_local)
    model, tokenizer = build_model(cfg, ctx)
    num_params = count_params(model)
    shape = T5Shape.from_config(model.config)
    policy = build_policy(cfg, model, tokenizer, envs.action_texts, ctx.device)
    wrapped = wrap_policy(policy, ctx, cfg.dist, precision=cfg.model.precision)
    params = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params, lr=cfg.ppo.lr, betas=cfg.ppo.adam_betas, eps=cfg.ppo.adam_eps
    )
    action_tokens = float(np.mean([len(tokenizer(a)["input_ids"]) for a in envs.action_texts]))
    if cfg.policy.head == "action":
        # The FLOPs formula then counts the one decoder step per prompt that really runs.
        action_tokens = 1.0
    return Parts(envs, tokenizer, wrapped, params, optimizer, num_params, shape, action_tokens)


def build_policy(
    cfg: Config,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    action_texts: list[str],
    device: torch.device,
) -> GlamPolicy:
    """The GLAM actor-critic as the config asks for it (candidate scoring or the action head),
    on ``device``, without dropout.

    Upstream's NPAE keeps dropout on for models built from a config (their train mode); here
    every policy runs without it, deliberately: PPO's ratio must compare the policy that acted
    with the one being updated, and dropout noise makes it differ from 1 before any update.
    """
    policy = GlamPolicy(
        model,
        tokenizer,
        action_texts,
        scoring=cfg.policy.scoring,
        max_batch_tokens=cfg.policy.max_batch_tokens,
        value_hidden=cfg.model.value_hidden,
        compute_dtype=torch.bfloat16 if cfg.model.precision == "bf16-mixed" else None,
        head=cfg.policy.head,
        action_hidden=cfg.model.value_hidden,
    ).to(device)
    # No dropout, acting or updating: PPO's first ratio is exactly 1 and no hidden RNG state is
    # consumed, which resume exactness relies on.
    policy.eval()
    return policy


def _apply_lora(model: nn.Module, cfg: Config) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = cfg.model.lora
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="SEQ_2_SEQ_LM",
    )
    wrapped: nn.Module = get_peft_model(model, peft_cfg)
    return wrapped
