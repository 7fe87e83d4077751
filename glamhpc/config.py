"""Typed configuration: one YAML file per experiment, dotted overrides, one-line errors.

Every field has a default and a docstring next to it (CleanRL style: each hyperparameter named and
documented once). The schema is pydantic with ``extra="forbid"`` so that a misspelt key fails
loudly instead of silently running the default. All errors are turned into ``ConfigError`` whose
message names the key, the bad value and what is allowed; the CLI prints it on one line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from glamhpc.inputs.errors import MESSAGE_MAX, cut, format_error
from glamhpc.inputs.errors import ConfigError as ConfigError
from glamhpc.inputs.names import BASE_NAME_MAX, control_problem, name_problem, sbatch_key_problem
from glamhpc.inputs.overrides import apply_overrides as apply_overrides
from glamhpc.inputs.overrides import flatten as flatten
from glamhpc.inputs.overrides import parse_override as parse_override
from glamhpc.inputs.yamlfile import read_yaml as read_yaml
from glamhpc.inputs.yamlfile import yaml_load as yaml_load


def _plain_name(value: str) -> str:
    # The one name rule (glamhpc.inputs.names): these names become folders and job names.
    problem = name_problem(value, BASE_NAME_MAX)
    if problem:
        raise ValueError(problem)
    return value


def _batch_text(value: str) -> str:
    # Reaches an #SBATCH line (or a path inside one): a newline would start a shell line.
    problem = control_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Name = Annotated[str, AfterValidator(_plain_name)]
BatchText = Annotated[str, AfterValidator(_batch_text)]
Unit = Annotated[float, Field(ge=0, lt=1)]
#: Bounds shared by fields of the same kind (what no real run comes near).
MAX_ENVS = 16384
MAX_SECONDS = 7 * 86400


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


class EnvConfig(_Section):
    level: str = "BabyAI-MixedTrainLocal-v0"
    """BabyAI-Text level: a glamhpc id (MixedTrainLocal, GoToFrench, ...) or any BabyAI-* id."""
    num_envs: int = Field(32, ge=1, le=MAX_ENVS)
    """Global number of parallel environments (split evenly across ranks)."""
    action_space: Literal["standard", "restricted", "augmented", "synonyms"] = "standard"
    """Candidate action strings scored by the LLM (BABYAI_TEXT_SPEC section 3)."""
    history: int = Field(3, ge=1, le=9)
    """Observations kept in the prompt (the paper uses 3; ablations 1/6/9)."""
    reward_scale: float = Field(20.0, gt=0, le=1e6)
    """Multiplier on the environment reward used for training (the paper trains on 20x)."""
    language: Literal["english", "french"] | None = None
    """Description language; None derives it from the level (GoToFrench is French)."""
    task_sampling: Literal["per_episode", "per_instance"] = "per_episode"
    """Mixed levels: draw the task kind per episode (seeded) or once per env (upstream parity)."""
    fix_grammar: bool = False
    """Correct upstream's text quirks (off: parity): "an open door" for "a open door"; French goals
    with the mission's article ("aller à la balle rouge", not upstream's "une" picked by substring)
    and no trailing space when colourless; the French carried object in French words."""

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        from glamhpc.envs.catalog import resolve_level

        try:
            return resolve_level(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None


class LoraConfig(_Section):
    enabled: bool = False
    """Train LoRA adapters (peft) instead of all weights: the single-GPU way for large models."""
    r: int = Field(16, ge=1, le=4096)
    """LoRA rank."""
    alpha: int = Field(32, ge=1, le=65536)
    """LoRA scaling numerator (effective scale alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch."""
    target_modules: list[str] = Field(
        default_factory=lambda: ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]
    )
    """T5 linear layers that get adapters."""


class ModelConfig(_Section):
    name: str = "tiny-t5"
    """google/flan-t5-small|base|large|xl, any seq2seq hub id or local folder, or tiny-t5."""
    path: str | None = None
    """Local folder with the weights (overrides the hub cache lookup; for offline nodes)."""
    init: Literal["pretrained", "random", "embeddings_only"] = "pretrained"
    """Weights: pretrained; random (the config's architecture, NPA/NPE); embeddings_only (random
    with the pretrained input embeddings copied in: the paper's NPAE)."""
    dtype: Literal["fp32", "bf16"] = "fp32"
    """dtype the LLM's weights are LOADED in; bf16 only where no optimizer updates them (eval,
    zero-shot, LoRA's frozen base). Training: fp32, with model.precision=bf16-mixed for speed."""
    precision: Literal["fp32", "bf16-mixed"] = "fp32"
    """Training numerics. fp32: all fp32 (upstream GLAM). bf16-mixed: fp32 master weights, grads,
    Adam; bf16 LLM forward (autocast, FSDP2 bf16 gathers); fp32 log-softmax, value head, reduce."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks CUDA when present; under torchrun the GPU comes from LOCAL_RANK."""
    cache_dir: str | None = None
    """Model cache (HF_HOME-style); None uses the default Hugging Face cache."""
    value_hidden: int = Field(1024, ge=1, le=65536)
    """Hidden width of the value head MLP, and of the action head's (paper: 1024 for both)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA adapters (off by default; the paper fine-tunes everything)."""


class PolicyConfig(_Section):
    scoring: Literal["glam", "paper"] = "glam"
    """glam: softmax over summed log-probs; paper: upstream's softmax(P / max P) (parity runs)."""
    head: Literal["scoring", "action"] = "scoring"
    """scoring: the LLM scores the candidate texts (GLAM); action: an MLP on the decoder's
    position-0 state gives one logit per action (NPAE, AFlan-T5, NPA; policy.scoring unused)."""
    max_batch_tokens: int = Field(65536, ge=64, le=1 << 24)
    """Upper bound on prompt tokens scored in one forward (bounds activation memory)."""


class PPOConfig(_Section):
    total_frames: int = Field(1_500_000, ge=1, le=10**12)
    """Environment steps (frames) summed over all envs and ranks before training stops."""
    steps_per_env: int = Field(40, ge=1, le=100_000)
    """Rollout length per env per update (the paper: 40, so 32 x 40 = 1280 transitions)."""
    lr: float = Field(1e-6, gt=0, le=1)
    """Adam learning rate (paper: 1e-6 for Flan-T5 large)."""
    adam_betas: tuple[Unit, Unit] = (0.9, 0.999)
    """Adam betas, each in [0, 1)."""
    adam_eps: float = Field(1e-5, gt=0, le=1)
    """Adam epsilon."""
    epochs: int = Field(4, ge=1, le=1000)
    """Passes over the rollout per update."""
    minibatch_size: int = Field(64, ge=1, le=1 << 24)
    """Transitions per gradient step (global, across ranks)."""
    gamma: float = Field(0.99, ge=0, le=1)
    """Discount factor."""
    gae_lambda: float = Field(0.99, ge=0, le=1)
    """GAE lambda."""
    clip: float = Field(0.2, gt=0, le=1)
    """PPO clip range for the policy ratio (and the value function when clip_value)."""
    clip_value: bool = True
    """Clip the value update around the old values (as upstream)."""
    entropy_coef: float = Field(0.01, ge=0, le=100)
    """Entropy bonus coefficient."""
    value_coef: float = Field(0.5, ge=0, le=100)
    """Weight of the squared value error, its only factor (paper and upstream: 0.5)."""
    max_grad_norm: float = Field(0.5, gt=0, le=1e6)
    """Global gradient-norm clip."""
    normalize_advantages: bool = False
    """Normalise advantages per minibatch (the paper does not)."""
    target_kl: float | None = Field(None, gt=0, le=10)
    """Stop the update's epochs early when the approximate KL exceeds this (None: never)."""


class TrainConfig(_Section):
    run_root: BatchText = Field("runs", min_length=1)
    """Folder holding runs/<experiment>/<run-name>/."""
    checkpoint_every: int = Field(10, ge=1, le=10**9)
    """Save a checkpoint every N updates (and always at the end and on SIGTERM/SIGUSR2)."""
    keep_checkpoints: int = Field(3, ge=1, le=1000)
    """Checkpoints kept on disk (older ones are deleted after a newer one is complete)."""
    threads: int | None = Field(None, ge=1, le=4096)
    """torch intra-op threads per rank (None: torch's default)."""
    progress: bool = True
    """Show a rich progress bar (frames, success rate, steps/s, ETA)."""
    deterministic: bool = True
    """Deterministic torch algorithms (CPU results reproduce bit for bit)."""
    max_updates: int | None = Field(None, ge=1, le=10**9)
    """Stop after this many updates in total (handy for tests); None: until total_frames."""
    probe_every: int = Field(10, ge=0, le=10**9)
    """Score the fixed probe prompts (glamhpc.rl.probes) every N updates and at the end; 0: off."""
    save_initial: bool = False
    """Also checkpoint the state before the first update (u0000000): a baseline to compare the
    trained weights with (`glamhpc train --smoke` uses it)."""
    peak_tflops: float | None = Field(None, gt=0, le=1e6)
    """Peak FLOP/s of one device for MFU; None: known GPUs are looked up, CPUs report none."""
    run_dir_mode: int = Field(0o700, ge=0o700, le=0o777)
    """Permissions of run directories (octal, e.g. 0o750 to share with the group); they hold
    configs, checkpoints and logs, so by default only their owner can enter them."""

    @field_validator("run_dir_mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        # `0o750` is a string to YAML 1.1 (and `750` would be decimal): read text as octal.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = int(value.removeprefix("0o"), 8)
        if isinstance(value, int) and not 0o700 <= value <= 0o777:
            raise ValueError(
                "use an octal mode from 0o700 to 0o777 (its owner keeps rwx), e.g. 0o750"
            )
        return value

    @field_serializer("run_dir_mode")
    def _octal_text(self, value: int) -> str:
        return f"0o{value:o}"


class TrackingConfig(_Section):
    enabled: bool = True
    """Log to MLflow (rank 0 only)."""
    uri: str | None = None
    """Tracking URI; None: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db in the working folder."""
    experiment: Name | None = None
    """MLflow experiment (and runs/<experiment>/ folder); None: the config's name."""
    system_metrics: bool = False
    """Also log CPU/GPU utilisation and memory."""
    log_checkpoints: bool = False
    """Upload checkpoints as artifacts (small models only; large ones get a path tag)."""
    log_model: bool = True
    """Upload the final model (safetensors + tokenizer) as an artifact."""
    offline_ok: bool = False
    """Start training even when the tracking server is unreachable at start: metrics are
    journaled in the run dir and sent later (automatically, or by `glamhpc sync RUN_DIR`)."""
    system_metrics_interval_s: float = Field(10.0, ge=0.5, le=MAX_SECONDS)
    """Seconds between system-metric samples (when system_metrics is on)."""
    retry_max_s: float = Field(30.0, gt=0, le=MAX_SECONDS)
    """Longest wait between retries while the tracking server is down."""
    flush_timeout_s: float = Field(60.0, ge=0, le=MAX_SECONDS)
    """At the end of a run, wait at most this long for undelivered metrics (the rest is kept in
    the run dir's journal and replayed by the next start or `glamhpc sync`)."""


class DistConfig(_Section):
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Replicate (DDP) or shard (FSDP2 fully_shard per T5 block) the model across ranks."""
    activation_checkpointing: bool = False
    """Recompute T5 block activations in backward to save memory."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend; auto: nccl on GPUs, gloo on CPU."""
    timeout_s: int = Field(1800, ge=10, le=MAX_SECONDS)
    """Collective timeout (long PPO updates need generous values)."""
    max_restarts: int = Field(0, ge=0, le=100)
    """torchrun worker restarts; restarted workers resume from the latest checkpoint."""


class LaunchConfig(_Section):
    executor: Literal["local", "slurm"] = "local"
    """local: real subprocesses via submitit's LocalExecutor; slurm: sbatch via submitit."""
    nodes: int = Field(1, ge=1, le=10_000)
    """Nodes per job (one torchrun agent per node)."""
    gpus_per_node: int = Field(0, ge=0, le=64)
    """GPUs per node; 0 means CPU ranks (nproc_per_node of them)."""
    nproc_per_node: int = Field(1, ge=1, le=1024)
    """Ranks per node when gpus_per_node is 0."""
    cpus_per_task: int | None = Field(None, ge=1, le=4096)
    """CPUs for the per-node task."""
    mem: BatchText | None = None
    """Memory per node, Slurm syntax (e.g. 64G)."""
    time: BatchText | None = None
    """Time limit, Slurm syntax (e.g. 04:00:00, 2-00:00:00, or minutes)."""

    @field_validator("time", mode="before")
    @classmethod
    def _time_text(cls, value: Any) -> Any:
        # `time: 30` in YAML is an int: Slurm reads a bare number as minutes, so keep it as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    partition: BatchText | None = None
    """Slurm partition."""
    account: BatchText | None = None
    """Slurm account."""
    qos: BatchText | None = None
    """Slurm QoS."""
    constraint: BatchText | None = None
    """Slurm node constraint."""
    container: str | None = None
    """Apptainer .sif or Docker image to run each node's command in."""
    max_requeues: int = Field(3, ge=0, le=1000)
    """Requeues allowed after time limits/preemption."""
    extra_sbatch: dict[str, BatchText] = Field(default_factory=dict)
    """Additional sbatch options (long option name without dashes -> value), e.g. mail-type."""
    signal_delay_s: int = Field(120, ge=10, le=86400)
    """Seconds before the time limit at which Slurm sends USR2 (ranks checkpoint, the job is
    requeued). Slurm checks limits about every 30 s, so the signal may come up to ~60 s early."""
    setup: list[str] = Field(default_factory=list)
    """Shell lines run in the batch script before the nodes start (module load, conda activate)."""

    @field_validator("extra_sbatch")
    @classmethod
    def _sbatch_keys(cls, value: dict[str, str]) -> dict[str, str]:
        # Keys are written unquoted as `#SBATCH --KEY=...`: only an option's name may pass.
        for key in value:
            problem = sbatch_key_problem(key)
            if problem:
                raise ValueError(problem)
        return value


class BCConfig(_Section):  # agent: bc (glamhpc.agents.bc; docs/BASELINES.md)
    dataset: str = Field("bot:200", description="A `glamhpc demos` folder, or bot:N (N episodes).")
    epochs: int = Field(1, ge=1, le=10**6, description="Passes over the dataset (upstream: 1).")
    batch_size: int = Field(32, ge=1, le=1 << 20, description="Pairs per step, over all ranks.")
    lr: float = Field(5e-5, gt=0, le=1, description="AdamW peak learning rate (cosine to 0).")
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(0, ge=0, le=10**9, description="Linear warm-up steps before cosine.")
    eval_every: int = Field(10, ge=1, le=10**9, description="Quick success-rate eval every N.")
    eval_steps: int = Field(16, ge=1, le=10**6, description="Env steps per env in a quick eval.")


class SymbolicConfig(_Section):  # agent: symbolic (glamhpc.agents.symbolic; docs/BASELINES.md)
    recurrence: int = Field(20, ge=1, le=10**4, description="BPTT steps per chunk (BabyAI: 20).")
    image_dim: int = Field(128, ge=1, le=4096, description="FiLM-CNN feature width (BabyAI: 128).")
    memory_dim: int = Field(128, ge=1, le=4096, description="LSTM memory width (BabyAI: 128).")
    instr_dim: int = Field(128, ge=1, le=4096, description="Word/GRU width (BabyAI: 128).")


class DRRNConfig(_Section):  # agent: drrn (glamhpc.agents.drrn; docs/BASELINES.md)
    hidden: int = Field(128, ge=1, le=4096, description="Embedding and GRU width (upstream: 128).")
    vocab_size: int = Field(8000, ge=8, le=32767, description="Tokenizer cap (upstream: 8k).")
    memory_size: int = Field(5_000_000, ge=1, le=10**9, description="Replay size (upstream: 5M).")
    priority_fraction: float = Field(0.0, ge=0, lt=1, description="Batch share of reward>0 replay.")
    grad_steps: int = Field(1, ge=1, le=10**4, description="Q steps per update (upstream: 1).")


class EvalConfig(_Section):
    episodes: int = Field(100, ge=1, le=10**7)
    """Episodes per suite item (the paper: 1000)."""
    greedy: bool = False
    """Argmax actions instead of sampling (the paper samples)."""
    num_envs: int = Field(16, ge=1, le=MAX_ENVS)
    """Parallel envs during evaluation."""


class Config(_Section):
    name: Name = "quickstart"
    """Experiment name (default MLflow experiment and runs/<name>/ folder)."""
    seed: int = Field(1, ge=0, lt=2**63)
    """Master seed: envs, torch, sampling. Same seed, same results on CPU."""
    agent: Literal["glam", "bc", "symbolic", "drrn"] = "glam"
    """What is trained: glam (the paper's agent: PPO on the LLM's action scores); bc: behaviour
    cloning of demonstrations (`bc:`); symbolic: Symbolic-PPO (`symbolic:`); drrn (`drrn:`)."""
    env: EnvConfig = Field(default_factory=EnvConfig)
    """Environments."""
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The LLM."""
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    """Action scoring."""
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    """PPO hyperparameters (paper values by default)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """Training loop, checkpoints."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow."""
    dist: DistConfig = Field(default_factory=DistConfig)
    """torchrun distribution."""
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    """Where and how jobs run."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation defaults."""
    bc: BCConfig = Field(default_factory=BCConfig)
    """Behaviour cloning (agent: bc)."""
    symbolic: SymbolicConfig = Field(default_factory=SymbolicConfig)
    """Symbolic-PPO: BabyAI's FiLM-CNN + LSTM on the symbolic view (agent: symbolic)."""
    drrn: DRRNConfig = Field(default_factory=DRRNConfig)
    """DRRN (agent: drrn); also reads ppo.total_frames, steps_per_env, lr, gamma, adam_betas,
    adam_eps, minibatch_size (its batch) and max_grad_norm (its clip)."""

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.ppo.minibatch_size > self.env.num_envs * self.ppo.steps_per_env:
            raise ValueError(
                f"ppo.minibatch_size={self.ppo.minibatch_size} is larger than a rollout "
                f"(env.num_envs x ppo.steps_per_env = "
                f"{self.env.num_envs * self.ppo.steps_per_env}); lower it"
            )
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name


# ----------------------------------------------------------------------------- errors

# Keys older configs may still set, with their fix (instead of a generic 'unknown key').
REMOVED_KEYS: dict[str, str] = {
    "dist.mixed_precision": "use model.precision=bf16-mixed",
    "model.pretrained": "use model.init=pretrained (was true) or model.init=random (was false)",
}


def _validate(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A removed key is reported first: its fix usually explains the other problems too.
        errors.sort(key=lambda e: ".".join(map(str, e["loc"])) not in REMOVED_KEYS)
        first = format_error(errors[0], Config, REMOVED_KEYS)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(cut(first, MESSAGE_MAX - len(more)) + more) from None


# ----------------------------------------------------------------------------- loading


def env_split_problem(num_envs: int, ranks: int) -> str | None:
    """Why ``num_envs`` envs cannot be split into ``ranks`` equal env slices; None when they can."""
    if num_envs % ranks == 0:
        return None
    return (
        f"env.num_envs={num_envs} does not divide evenly over {ranks} ranks; "
        f"use a multiple of {ranks}"
    )


def training_precision_problem(cfg: Config) -> str | None:
    """Why ``cfg`` cannot be trained (bf16 weights under Adam); None when it can. Not a schema
    rule: bf16 weights suit eval, zero-shot and LoRA's frozen base (peft keeps adapters fp32)."""
    if cfg.model.dtype != "bf16" or cfg.model.lora.enabled:
        return None
    return (
        "model.dtype=bf16 cannot be trained (Adam's updates round away in bf16 weights): "
        "use model.dtype=fp32 with model.precision=bf16-mixed"
    )


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()
) -> Config:
    """Load YAML (or the embedded defaults when path is None), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return _validate(apply_overrides(data, overrides))


def config_from_dict(data: Mapping[str, Any]) -> Config:
    return _validate(data)


def to_dict(cfg: Config) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def describe_fields(
    model: type[BaseModel] = Config, prefix: str = ""
) -> list[tuple[str, Any, str]]:
    """(dotted key, default, docstring) for every leaf field: used by `glamhpc config --doc`."""
    rows: list[tuple[str, Any, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_fields(annotation, f"{prefix}{name}."))
        else:
            default = field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", default, field.description or ""))
    return rows
