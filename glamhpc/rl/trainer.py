"""The GLAM training loop: collect rollouts, PPO update, log, checkpoint, resume exactly.

Randomness is stateless wherever it matters: the action sampled for global env i at step t of
update u uses a uniform drawn from a generator keyed by (seed, u, t), and minibatches come from a
permutation keyed by (seed, u, epoch). The model runs without dropout (eval mode) both when acting
and when updating, so PPO's first ratio is exactly 1 and nothing consumes hidden RNG state. Hence
(a) resume is bitwise exact from (weights, optimizer, env states, counters) alone, and (b) N ranks
reproduce a single rank's run: the same global env i sees the same episodes and actions.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glamhpc import __version__
from glamhpc.checkpoint import Checkpointer, read_global_state, read_rank_states
from glamhpc.config import Config, ConfigError, config_from_dict, read_yaml, to_dict, to_yaml
from glamhpc.distributed import (
    DistContext,
    env_shard,
    full_state_dict,
    init_distributed,
    load_model_state,
    save_model_state,
    unwrap,
    wrap_policy,
)
from glamhpc.flops import T5Shape, peak_flops, scoring_flops
from glamhpc.fsutil import atomic_write_text
from glamhpc.rl.buffer import RolloutBuffer, compute_gae
from glamhpc.rl.ppo import RolloutBatch, minibatch_plan, ppo_update

DONE_MARKER = "DONE"
PREEMPTED_MARKER = "PREEMPTED"
# Config sections whose change makes a resumed run a different experiment.
_FROZEN_ON_RESUME = ("seed", "env", "model", "policy", "ppo")
# tracking.log_checkpoints uploads checkpoints of models up to this size (flan-t5-base and below).
_UPLOAD_CHECKPOINT_PARAMS = 300_000_000


@dataclass
class Counters:
    update: int = 0
    frames: int = 0
    episodes: int = 0
    wall_seconds: float = 0.0


@dataclass
class EpisodeStats:
    """Episodes finished during one rollout (all ranks after gathering)."""

    success: list[float] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def add(self, info: Any) -> None:
        self.success.append(float(info.success))
        self.returns.append(float(info.return_))
        self.lengths.append(float(info.length))
        self.kinds.append(str(info.task_kind or "all"))

    @staticmethod
    def merge(others: list[EpisodeStats]) -> EpisodeStats:
        out = EpisodeStats()
        for o in others:
            out.success += o.success
            out.returns += o.returns
            out.lengths += o.lengths
            out.kinds += o.kinds
        return out

    def metrics(self) -> dict[str, float]:
        if not self.success:
            return {"episodes": 0.0}
        m = {
            "episodes": float(len(self.success)),
            "success_rate": float(np.mean(self.success)),
            "return_mean": float(np.mean(self.returns)),
            "episode_length_mean": float(np.mean(self.lengths)),
        }
        kinds = sorted(set(self.kinds) - {"all"})
        for kind in kinds:
            vals = [s for s, k in zip(self.success, self.kinds, strict=True) if k == kind]
            m[f"success_rate/{kind}"] = float(np.mean(vals))
        return m


class SignalFlag:
    """Set by SIGUSR2/SIGTERM (Slurm's pre-timeout signal, preemption); polled at safe points."""

    def __init__(self) -> None:
        self.received: int | None = None

    @contextmanager
    def installed(self) -> Iterator[SignalFlag]:
        previous = {}
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            # Outside the main thread (some test runners) signals cannot be installed.
            with suppress(ValueError):
                previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum


def sample_actions(
    logprobs: torch.Tensor, seed: int, update: int, step: int, env_offset: int, num_envs_global: int
) -> torch.Tensor:
    """Inverse-CDF sampling with uniforms keyed by (seed, update, step, global env index)."""
    uniforms = np.random.default_rng([seed, update, step, 0x5EED]).random(num_envs_global)
    u = torch.as_tensor(uniforms[env_offset : env_offset + logprobs.shape[0]], dtype=torch.float64)
    cdf = logprobs.double().exp().cumsum(-1)
    cdf = cdf / cdf[:, -1:]
    idx = torch.searchsorted(cdf, u[:, None]).squeeze(1)
    return idx.clamp_max(logprobs.shape[1] - 1)


def default_run_name(cfg: Config) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.name}-s{cfg.seed}-{stamp}"


def run_dir_for(cfg: Config, run_name: str) -> Path:
    return Path(cfg.train.run_root) / cfg.experiment / run_name


def _check_resume_config(run_dir: Path, cfg: Config) -> None:
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = to_dict(config_from_dict(read_yaml(saved_path)))
    current = to_dict(cfg)
    changed = [k for k in _FROZEN_ON_RESUME if saved.get(k) != current.get(k)]
    if changed:
        raise ConfigError(
            f"run directory {run_dir} was started with a different config "
            f"(changed: {', '.join(changed)}); use a new --run-name to start a new run"
        )


class Trainer:
    """One rank of a GLAM run. Build with :func:`train`."""

    def __init__(self, cfg: Config, run_name: str | None, ctx: DistContext) -> None:
        from glamhpc.envs.batch import EnvBatch
        from glamhpc.policy.glam import GlamPolicy
        from glamhpc.policy.models import count_params, load_model

        self.cfg = cfg
        self.ctx = ctx
        name = ctx.broadcast_object(run_name or default_run_name(cfg))
        self.run_name = name
        self.run_dir = run_dir_for(cfg, name)
        self.env_offset, self.num_envs = env_shard(cfg.env.num_envs, ctx)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.envs = EnvBatch(
            level=cfg.env.level,
            num_envs=self.num_envs,
            seed=cfg.seed,
            action_space=cfg.env.action_space,
            history=cfg.env.history,
            reward_scale=cfg.env.reward_scale,
            language=cfg.env.language,
            task_sampling=cfg.env.task_sampling,
            env_seed_offset=self.env_offset,
            fix_grammar=cfg.env.fix_grammar,
        )
        model, tokenizer = load_model(
            cfg.model.name,
            path=cfg.model.path,
            pretrained=cfg.model.pretrained,
            dtype=cfg.model.dtype,
            device=str(ctx.device),
            cache_dir=cfg.model.cache_dir,
        )
        if cfg.model.lora.enabled:
            model = _apply_lora(model, cfg)
        self.tokenizer = tokenizer
        self.num_params = count_params(model)
        self.shape = T5Shape.from_config(model.config)
        policy = GlamPolicy(
            model,
            tokenizer,
            self.envs.action_texts,
            scoring=cfg.policy.scoring,
            max_batch_tokens=cfg.policy.max_batch_tokens,
            value_hidden=cfg.model.value_hidden,
        ).to(ctx.device)
        policy.eval()  # no dropout: see the module docstring
        self.policy = wrap_policy(policy, ctx, cfg.dist)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            self.params, lr=cfg.ppo.lr, betas=cfg.ppo.adam_betas, eps=cfg.ppo.adam_eps
        )
        self.counters = Counters()
        self.checkpointer = Checkpointer(
            self.run_dir / "checkpoints", cfg.train.keep_checkpoints, ctx.rank, ctx.barrier
        )
        self.action_tokens = float(
            np.mean([len(tokenizer(a)["input_ids"]) for a in self.envs.action_texts])
        )
        self.tracker: Any = None
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ setup / resume
    def prepare_run_dir(self) -> bool:
        """Create or validate the run dir. Returns False when the run already finished."""
        if (self.run_dir / DONE_MARKER).exists():
            return False
        if self.ctx.is_main:
            _check_resume_config(self.run_dir, self.cfg)
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", to_yaml(self.cfg))
        self.ctx.barrier()
        return True

    def resume(self) -> bool:
        latest = self.checkpointer.find_latest() if self.ctx.is_main else None
        name = self.ctx.broadcast_object(latest.name if latest else None)
        if name is None:
            return False
        folder = self.checkpointer.folder / name
        load_model_state(self.policy, self.optimizer, folder, self.ctx)
        state = read_global_state(folder)
        self.counters = Counters(**state["counters"])
        self.history = state.get("history", [])
        from glamhpc.envs.batch import merge_state_dicts

        # Each env's state carries its global index: a different world size picks its own envs.
        self.envs.load_state_dict(merge_state_dicts(r["envs"] for r in read_rank_states(folder)))
        return True

    def save(self, env_state: dict[str, Any]) -> Path:
        write_shared, write_rank = save_model_state(self.policy, self.optimizer, self.ctx)
        rank_state = {"rank": self.ctx.rank, "envs": env_state}
        global_state = {
            "counters": self.counters.__dict__,
            "history": self.history,
            "world_size": self.ctx.world_size,
            "glamhpc_version": __version__,
            "config": to_dict(self.cfg),
        }
        path = self.checkpointer.save(
            self.counters.update, write_shared, rank_state, global_state, write_rank
        )
        if self.tracker is not None:
            self.tracker.set_tags({"checkpoint.latest": str(path.resolve())})
            # Small models' checkpoints go to MLflow too; large ones are referenced by path only.
            if self.cfg.tracking.log_checkpoints and self.num_params <= _UPLOAD_CHECKPOINT_PARAMS:
                self.tracker.log_artifacts(path, f"checkpoints/{path.name}")
        return path

    # ------------------------------------------------------------------ one update
    def _score(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and values on CPU in fp32 (acting under no_grad, the update with grads)."""
        logprobs, values = self.policy(prompts)
        return logprobs.float().cpu(), values.float().cpu()

    def collect(self, flag: SignalFlag) -> tuple[RolloutBuffer, torch.Tensor, EpisodeStats] | None:
        """One rollout; None when a signal arrived (the rollout is abandoned, state untouched)."""
        cfg = self.cfg
        buffer = RolloutBuffer(cfg.ppo.steps_per_env, self.num_envs)
        stats = EpisodeStats()
        prompts = self.envs.prompts()
        with torch.no_grad():
            for t in range(cfg.ppo.steps_per_env):
                logprobs, values = self._score(prompts)
                actions = sample_actions(
                    logprobs,
                    cfg.seed,
                    self.counters.update,
                    t,
                    self.env_offset,
                    cfg.env.num_envs,
                )
                result = self.envs.step(actions.tolist())
                for info in result.episodes:
                    stats.add(info)
                buffer.add(
                    prompts,
                    actions,
                    logprobs.gather(1, actions[:, None]).squeeze(1),
                    values,
                    torch.as_tensor(result.rewards, dtype=torch.float32),
                    torch.as_tensor(result.dones),
                )
                prompts = self.envs.prompts()
                if self.ctx.any_flag(flag.received is not None):
                    return None
            _, last_values = self._score(prompts)
        return buffer, last_values, stats

    def update(self, buffer: RolloutBuffer, last_values: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        advantages, returns = compute_gae(
            buffer.rewards,
            buffer.values,
            buffer.dones,
            last_values,
            cfg.ppo.gamma,
            cfg.ppo.gae_lambda,
        )
        batch = RolloutBatch(
            prompts=buffer.flat_prompts(),
            actions=buffer.actions.reshape(-1),
            logprobs=buffer.logprobs.reshape(-1),
            values=buffer.values.reshape(-1),
            advantages=advantages.reshape(-1),
            returns=returns.reshape(-1),
        )
        plan = minibatch_plan(
            cfg.ppo.steps_per_env,
            cfg.env.num_envs,
            self.env_offset,
            self.num_envs,
            cfg.ppo.minibatch_size,
            cfg.ppo.epochs,
            cfg.seed,
            self.counters.update,
        )
        stats = ppo_update(
            self._score,
            self.params,
            self.optimizer,
            batch,
            plan,
            cfg.ppo,
            world_size=self.ctx.world_size,
            all_reduce_sum=self.ctx.all_reduce_sum,
            device="cpu",
        )
        stats["value_mean"] = float(buffer.values.mean())
        stats["advantage_mean"] = float(advantages.mean())
        stats["return_target_mean"] = float(returns.mean())
        return stats

    def _gather_episodes(self, stats: EpisodeStats) -> EpisodeStats:
        if not self.ctx.distributed:
            return stats
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(gathered, stats)
        return EpisodeStats.merge(gathered)

    def _prompt_tokens(self, prompts: list[str]) -> float:
        # The policy just tokenised these prompts: its cache answers without re-tokenising.
        return float(np.mean([len(ids) for ids in unwrap(self.policy).tokenize(prompts)]))

    # ------------------------------------------------------------------ loop
    def run(self, flag: SignalFlag | None = None) -> Path:
        """Train to the end or until a signal; ``flag`` may be installed before the model loads."""
        if flag is None:
            flag = SignalFlag()
            with flag.installed():
                return self.run(flag)
        cfg, ctx = self.cfg, self.ctx
        if not self.prepare_run_dir():
            if ctx.is_main:
                print(f"run {self.run_dir} already finished ({DONE_MARKER} present); nothing to do")
            return self.run_dir
        resumed = self.resume()
        if ctx.is_main and cfg.tracking.enabled:
            self.tracker = _start_tracker(self, resumed)
        frames_per_update = cfg.ppo.steps_per_env * cfg.env.num_envs
        max_updates = cfg.train.max_updates
        peak = _peak(cfg, ctx)
        preempted = False
        env_snapshot: dict[str, Any] = {}
        with _progress(ctx.is_main and cfg.train.progress, cfg) as bar:
            bar.advance_to(self.counters.frames)
            while self.counters.frames < cfg.ppo.total_frames and (
                max_updates is None or self.counters.update < max_updates
            ):
                env_snapshot = self.envs.state_dict()
                if ctx.any_flag(flag.received is not None):  # e.g. signalled while loading
                    preempted = True
                    break
                start = time.perf_counter()
                comm_before = ctx.comm_seconds
                collected = self.collect(flag)
                if collected is None:
                    preempted = True
                    break
                buffer, last_values, episodes = collected
                rollout_s = time.perf_counter() - start
                prompt_tokens = self._prompt_tokens(buffer.prompts[0])
                stats = self.update(buffer, last_values)
                elapsed = time.perf_counter() - start
                episodes = self._gather_episodes(episodes)
                self.counters.update += 1
                self.counters.frames += frames_per_update
                self.counters.episodes += len(episodes.success)
                self.counters.wall_seconds += elapsed
                metrics = self._metrics(
                    stats, episodes, elapsed, rollout_s, prompt_tokens, peak, comm_before
                )
                self.history.append({"frames": self.counters.frames, **metrics})
                if self.tracker is not None:
                    self.tracker.log_metrics(metrics, step=self.counters.frames)
                bar.update(self.counters.frames, metrics)
                stop_now = ctx.any_flag(flag.received is not None)
                if self.counters.update % cfg.train.checkpoint_every == 0 or stop_now:
                    self.save(self.envs.state_dict())
                if stop_now:
                    preempted = True
                    break
        finished = not preempted
        if preempted:
            # The abandoned rollout left the envs mid-way: save the state from its start.
            if not _saved_at(self):
                self.save(env_snapshot)
            if ctx.is_main:
                atomic_write_text(self.run_dir / PREEMPTED_MARKER, f"{self.counters.update}\n")
        else:
            if not _saved_at(self):
                self.save(self.envs.state_dict())
        # Gathering a sharded model's full weights is collective: all ranks, before rank 0 exports.
        full_state = full_state_dict(self.policy) if finished else {}
        if ctx.is_main:
            self._finish(finished, full_state)
        ctx.barrier()
        return self.run_dir

    def _metrics(
        self,
        stats: dict[str, float],
        episodes: EpisodeStats,
        elapsed: float,
        rollout_s: float,
        prompt_tokens: float,
        peak: float | None,
        comm_before: float,
    ) -> dict[str, float]:
        cfg = self.cfg
        n = cfg.env.num_envs * cfg.ppo.steps_per_env
        k = len(self.envs.action_texts)
        fwd = scoring_flops(self.shape, int(prompt_tokens), round(self.action_tokens), k, n)
        # Acting scores every transition once; each epoch re-scores it forward + backward (3x).
        flops = fwd * (1 + 3 * cfg.ppo.epochs)
        metrics = {
            **episodes.metrics(),
            **stats,
            "env_steps_per_s": n / elapsed,
            "tokens_per_s": n * prompt_tokens * (1 + cfg.ppo.epochs) / elapsed,
            "model_tflops_per_s": flops / elapsed / 1e12,
            "time/rollout_s": rollout_s,
            "time/update_s": elapsed - rollout_s,
            "time/comm_s": self.ctx.comm_seconds - comm_before,
            "prompt_tokens_mean": prompt_tokens,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "update": float(self.counters.update),
        }
        if peak:
            metrics["mfu"] = flops / elapsed / (peak * self.ctx.world_size)
        return metrics

    def _finish(self, finished: bool, full_state: dict[str, torch.Tensor]) -> None:
        if finished:
            export = self.run_dir / "model"
            _export_model(self, export, full_state)
            atomic_write_text(self.run_dir / DONE_MARKER, f"{self.counters.frames}\n")
        if self.tracker is not None:
            if finished and self.cfg.tracking.log_model:
                self.tracker.log_artifacts(self.run_dir / "model", "model")
            if finished:
                _log_curve(self.tracker)
            self.tracker.finish("FINISHED" if finished else "KILLED")


def _saved_at(trainer: Trainer) -> bool:
    latest = trainer.checkpointer.folder / "latest"
    from glamhpc.checkpoint import checkpoint_name

    return latest.is_file() and latest.read_text().strip() == checkpoint_name(
        trainer.counters.update
    )


def _peak(cfg: Config, ctx: DistContext) -> float | None:
    if cfg.train.peak_tflops:
        return cfg.train.peak_tflops * 1e12
    if ctx.device.type == "cuda":
        return peak_flops(torch.cuda.get_device_name(ctx.device))
    return None


def _export_model(trainer: Trainer, folder: Path, full_state: dict[str, torch.Tensor]) -> None:
    """Final model for `glamhpc eval`: HF folder (weights + tokenizer) + value head + metadata."""
    from safetensors.torch import save_file

    policy = unwrap(trainer.policy)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(policy, "model", None)
    if model is not None and hasattr(model, "merge_and_unload"):  # LoRA: ship merged weights
        model.merge_and_unload().save_pretrained(folder)
    elif model is not None:
        weights = {k[len("model.") :]: v for k, v in full_state.items() if k.startswith("model.")}
        model.save_pretrained(folder, state_dict=weights)
    trainer.tokenizer.save_pretrained(folder)
    head = {
        k[len("value_head.") :]: v.contiguous()
        for k, v in full_state.items()
        if k.startswith("value_head.")
    }
    if head:
        save_file(head, str(folder / "value_head.safetensors"))
    meta = {
        "action_space": trainer.cfg.env.action_space,
        "action_texts": trainer.envs.action_texts,
        "level": trainer.cfg.env.level,
        "scoring": trainer.cfg.policy.scoring,
        "history": trainer.cfg.env.history,
        "value_hidden": trainer.cfg.model.value_hidden,
        "frames": trainer.counters.frames,
        "glamhpc_version": __version__,
    }
    atomic_write_text(folder / "glamhpc.json", json.dumps(meta, indent=1))


def _apply_lora(model: Any, cfg: Config) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = cfg.model.lora
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="SEQ_2_SEQ_LM",
    )
    return get_peft_model(model, peft_cfg)


def _start_tracker(trainer: Trainer, resumed: bool) -> Any:
    from glamhpc.tracking import Tracker

    cfg = trainer.cfg
    tags = {
        "model": cfg.model.name,
        "level": cfg.env.level,
        "seed": str(cfg.seed),
        "run_dir": str(trainer.run_dir.resolve()),
        "checkpoints": str((trainer.run_dir / "checkpoints").resolve()),
        "world_size": str(trainer.ctx.world_size),
        "hosts": socket.gethostname(),
    }
    extra = os.environ.get("GLAMHPC_RUN_TAGS")
    if extra:
        tags.update({str(k): str(v) for k, v in json.loads(extra).items()})
    return Tracker.start(
        run_dir=trainer.run_dir,
        config=to_dict(cfg),
        experiment=cfg.experiment,
        uri=cfg.tracking.uri,
        run_name=trainer.run_name,
        tags=tags,
        parent_run_id=os.environ.get("GLAMHPC_PARENT_RUN_ID") or None,
    )


def _log_curve(tracker: Any) -> None:
    try:
        tracker.log_learning_curve()
    except Exception as exc:  # a plot must never fail a finished run
        warnings.warn(f"could not render the learning curve: {exc}", stacklevel=2)


class _Bar:
    """Rich progress bar (frames, success rate, steps/s, ETA); a no-op when disabled."""

    def __init__(self, progress: Any, total: int) -> None:
        self.progress = progress
        self.task = (
            progress.add_task("train", total=total, success="-", sps="-") if progress else None
        )

    def advance_to(self, frames: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=frames)

    def update(self, frames: int, metrics: dict[str, float]) -> None:
        if self.progress is None:
            return
        success = metrics.get("success_rate")
        self.progress.update(
            self.task,
            completed=frames,
            success=f"{success:.2f}" if success is not None else "-",
            sps=f"{metrics['env_steps_per_s']:.0f}",
        )


@contextmanager
def _progress(enabled: bool, cfg: Config) -> Iterator[_Bar]:
    if not enabled:
        yield _Bar(None, 0)
        return
    from glamhpc.progress import progress_bar

    total = cfg.ppo.total_frames
    if cfg.train.max_updates:
        total = min(total, cfg.train.max_updates * cfg.ppo.steps_per_env * cfg.env.num_envs)
    fields = ("success {task.fields[success]}", "{task.fields[sps]} steps/s")
    with progress_bar("frames", *fields) as progress:
        yield _Bar(progress, total)


def train(cfg: Config, run_name: str | None = None) -> Path:
    """Train one run (this rank's part of it); returns the run directory."""
    flag = SignalFlag()
    # Installed before the model loads: a pre-timeout signal during start-up is not lost.
    with flag.installed():
        ctx = init_distributed(cfg.dist, cfg.model.device)
        try:
            return Trainer(cfg, run_name, ctx).run(flag)
        finally:
            from glamhpc.distributed import shutdown

            shutdown()
