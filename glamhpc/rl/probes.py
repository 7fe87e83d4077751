"""Policy-evolution probes (the paper's appendix): the action distribution on fixed prompts.

Upstream scored a fixed set of 11 prompts after every update and wrote the distributions to
``distrib.csv``. Here the 11 prompts come from the run's own level (and action space, history,
language, grammar flag), built from a text env at fixed seeds that do not depend on the run's
seed, so every seed of a sweep probes the same prompts and the report can average them. Probe
k resets at seed ``PROBE_SEED + k`` and takes ``k % 3`` actions from a generator of its own, so
the set holds prompts with one to three observations.

The set is written once to ``<run dir>/probes.json`` and read back from there, so a resumed run
(and a reader of the run directory) scores exactly the prompts the run started with. Every
``train.probe_every`` updates and after the last one, the current policy scores them under
``torch.no_grad``; the probabilities go into the update's metrics as ``probe/<kk>/<action>``
(the local history, the journal and MLflow), and rank 0 tags the MLflow run with each probe's
mission (``probe.<kk>``) and logs the file under ``probes/``.

Scoring consumes no random numbers and changes no state the training reads (no dropout, no
gradients, the sampler's uniforms are keyed by (seed, update, step, env)), so a run with probes
is bit-identical to one without, and resume stays exact. Every rank scores the probes: an FSDP
forward gathers shards from all ranks (with DDP it is a local forward, no collective).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from glamhpc.config import Config, EnvConfig
from glamhpc.fsutil import atomic_write_json

# torch and the envs load only when probes are built or scored: `glamhpc report` reads the keys
# (probe_key, parse_probe_key) on login nodes without them.
if TYPE_CHECKING:
    from torch import nn

    from glamhpc.tracking import Tracker

__all__ = [
    "METRIC_PREFIX",
    "NUM_PROBES",
    "PROBES_FILE",
    "Probe",
    "ProbeScorer",
    "build_probes",
    "load_probes",
    "parse_probe_key",
    "probe_key",
]

NUM_PROBES = 11
#: Far from any training seed (EnvBatch derives those from the run seed), and fixed: the same
#: prompts for every seed of a sweep.
PROBE_SEED = 1_000_003
PROBES_FILE = "probes.json"
METRIC_PREFIX = "probe/"
_FORMAT = 1


@dataclass(frozen=True)
class Probe:
    """One fixed prompt: the episode seed it comes from and the actions taken before it."""

    seed: int
    steps: int
    mission: str
    prompt: str


def probe_key(index: int, action: str) -> str:
    """The metric key of one probe's probability of one action: ``probe/03/turn left``."""
    return f"{METRIC_PREFIX}{index:02d}/{action}"


def parse_probe_key(key: str) -> tuple[int, str] | None:
    """(probe index, action text) of a ``probe_key``; None for any other metric."""
    if not key.startswith(METRIC_PREFIX):
        return None
    index, sep, action = key[len(METRIC_PREFIX) :].partition("/")
    if not sep or not index.isdigit() or not action:
        return None
    return int(index), action


def build_probes(env_cfg: EnvConfig, count: int = NUM_PROBES) -> tuple[list[Probe], list[str]]:
    """The probe prompts of a level, and the candidate action texts they are scored against.

    Deterministic: a function of ``env_cfg``'s level, action space, history, language and grammar
    flag only. Tasks are drawn per episode (seeded) whatever ``env.task_sampling`` says, since the
    per-instance draw would come from OS entropy.
    """
    from glamhpc.envs.textenv import TextEnv

    env = TextEnv(
        env_cfg.level,
        action_space=env_cfg.action_space,
        history=env_cfg.history,
        language=env_cfg.language,
        fix_grammar=env_cfg.fix_grammar,
    )
    probes = []
    for k in range(count):
        seed = PROBE_SEED + k
        env.reset(seed=seed)
        # A generator of its own: the global numpy/torch generators stay untouched.
        rng = np.random.default_rng(seed)
        steps = 0
        for _ in range(k % 3):
            _, _, terminated, truncated, _ = env.step(int(rng.integers(len(env.action_texts))))
            steps += 1
            if terminated or truncated:
                break
        probes.append(Probe(seed, steps, env.mission, env.prompt))
    env.close()
    return probes, list(env.action_texts)


def load_probes(path: Path) -> tuple[list[Probe], list[str]]:
    """Read a probes.json (plain JSON; nothing from a run directory is unpickled).

    Raises:
        ValueError: not a probe file of this format.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a glamhpc probe file (format {_FORMAT})")
    try:
        probes = [Probe(int(p["seed"]), int(p["steps"]), str(p["mission"]), str(p["prompt"]))
                  for p in data["probes"]]  # fmt: skip
        actions = [str(a) for a in data["action_texts"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: malformed probe file ({exc})") from None
    return probes, actions


def _write(path: Path, env_cfg: EnvConfig, probes: list[Probe], actions: list[str]) -> None:
    atomic_write_json(
        path,
        {
            "format": _FORMAT,
            "level": env_cfg.level,
            "action_space": env_cfg.action_space,
            "action_texts": actions,
            "probes": [asdict(p) for p in probes],
        },
    )


class ProbeScorer:
    """Scores a run's probe set every ``train.probe_every`` updates (0: never) and after the last.

    Args:
        cfg: the run's config: its ``env`` section builds the probes, ``train.probe_every`` is
            ``every``.
        run_dir: where probes.json lives.
        policy: the policy as the trainer calls it: ``policy(prompts) -> (logprobs, values)``.
        is_main: this rank writes probes.json and talks to the tracker.
    """

    def __init__(self, cfg: Config, run_dir: Path, policy: nn.Module, is_main: bool) -> None:
        self.env_cfg = cfg.env
        self.path = Path(run_dir) / PROBES_FILE
        self.policy = policy
        self.every = cfg.train.probe_every
        self.is_main = is_main
        self._probes: list[Probe] | None = None
        self._actions: list[str] = []
        self._announced = False

    def probes(self) -> list[Probe]:
        """The probe set: read from probes.json, or built and (rank 0) written there."""
        if self._probes is None:
            if self.path.is_file():
                self._probes, self._actions = load_probes(self.path)
            else:
                # Other ranks build the same set themselves: no barrier, no half-read file
                # (the write is atomic).
                self._probes, self._actions = build_probes(self.env_cfg)
                if self.is_main:
                    _write(self.path, self.env_cfg, self._probes, self._actions)
        return self._probes

    def due(self, update: int, last: bool) -> bool:
        return self.every > 0 and (last or update % self.every == 0)

    def score(self) -> dict[str, float]:
        """``probe_key(k, action)`` -> pi(action | probe k) under the current policy."""
        import torch

        probes = self.probes()
        with torch.no_grad():
            logprobs, _ = self.policy([p.prompt for p in probes])
        probs = logprobs.detach().float().exp().cpu()
        if probs.shape != (len(probes), len(self._actions)):
            raise ValueError(
                f"{self.path} lists {len(self._actions)} actions but the policy scores "
                f"{probs.shape[-1]}: delete the file to rebuild it for this run's action space"
            )
        return {
            probe_key(k, action): float(probs[k, a])
            for k in range(len(probes))
            for a, action in enumerate(self._actions)
        }

    def __call__(self, update: int, last: bool, tracker: Tracker | None) -> dict[str, float]:
        """The trainer's hook after each update: the probe metrics when due, else {}."""
        if not self.due(update, last):
            return {}
        metrics = self.score()
        if tracker is not None and not self._announced:
            self._announced = True
            tracker.set_tags(probe_tags(self.probes()))
            tracker.log_artifact(self.path, "probes")
        return metrics


def probe_tags(probes: list[Probe]) -> dict[str, Any]:
    """MLflow tags naming each probe's situation (the report's panel titles)."""
    return {
        f"probe.{k:02d}": f"{p.mission} (after {p.steps} action{'s' if p.steps != 1 else ''})"
        for k, p in enumerate(probes)
    }
