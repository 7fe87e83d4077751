"""Policy-evolution probes: a fixed prompt set, scored without touching training, kept on resume.

Runs real tiny-T5 training on a real env and a real SQLite MLflow store: probes on and off give
bit-identical weights, a resumed run matches an uninterrupted one (probe metrics included), and
the probabilities reach the history, the journal and MLflow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from glamhpc.config import EnvConfig, load_config
from glamhpc.envs.textenv import TextEnv
from glamhpc.rl.probes import (
    NUM_PROBES,
    PROBE_SEED,
    PROBES_FILE,
    ProbeScorer,
    build_probes,
    load_probes,
    parse_probe_key,
    probe_key,
)
from glamhpc.rl.trainer import train

TINY = [
    "env.level=BabyAI-GoToRedBallNoDists-v0",
    "env.num_envs=2",
    "env.history=2",
    "ppo.steps_per_env=4",
    "ppo.minibatch_size=8",
    "ppo.epochs=1",
    "ppo.lr=1e-3",
    "train.progress=false",
    "train.checkpoint_every=10",
    "model.device=cpu",
]


def _cfg(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            *TINY,
            f"train.run_root={tmp_path / 'runs'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            *extra,
        ],
    )


def _state(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    from safetensors.torch import load_file

    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    history = json.loads((latest / "state.json").read_text())["history"]
    return load_file(str(latest / "model.safetensors")), history


def _training_only(history: list[dict]) -> list[dict]:
    """Everything but timings, memory and the probes themselves."""
    drop = ("time/", "_per_s", "tflops", "mfu", "memory", "probe/")
    return [{k: v for k, v in h.items() if not any(d in k for d in drop)} for h in history]


def _probe_updates(history: list[dict]) -> list[int]:
    return [int(h["update"]) for h in history if any(k.startswith("probe/") for k in h)]


# --- the probe set ---------------------------------------------------------------------------


def test_probe_set_is_fixed_and_built_from_the_level() -> None:
    env_cfg = EnvConfig(level="GoToLocal", history=3)
    probes, actions = build_probes(env_cfg)
    assert (probes, actions) == build_probes(env_cfg)
    assert len(probes) == NUM_PROBES and actions == ["turn left", "turn right", "go forward",
                                                     "pick up", "drop", "toggle"]  # fmt: skip
    assert [p.seed for p in probes] == [PROBE_SEED + k for k in range(NUM_PROBES)]
    # One to three observations: k % 3 actions before the prompt (fewer if the episode ended).
    assert all(p.steps <= k % 3 for k, p in enumerate(probes))
    assert sum(p.steps for p in probes) >= 8
    for p in probes:
        assert p.prompt.endswith(f"\n Action {p.steps}: ")
        assert f"Goal of the agent: {p.mission} \n" in p.prompt
    assert len({p.prompt for p in probes}) == NUM_PROBES
    # Probe 0 is the first prompt of the episode at its seed, as any TextEnv shows it.
    env = TextEnv("GoToLocal", seed=PROBE_SEED, history=3)
    env.reset()
    assert probes[0].prompt == env.prompt


def test_probe_set_follows_language_and_action_space() -> None:
    probes, actions = build_probes(EnvConfig(level="GoToFrench"))
    assert actions[0] == "tourner à gauche"
    assert all(p.prompt.startswith("Actions possibles pour l'agent:") for p in probes)
    _, augmented = build_probes(EnvConfig(level="GoToLocal", action_space="augmented"), count=1)
    assert len(augmented) == 9


def test_probe_keys_round_trip() -> None:
    assert probe_key(3, "turn left") == "probe/03/turn left"
    assert parse_probe_key(probe_key(10, "tourner à gauche")) == (10, "tourner à gauche")
    for other in ("policy_loss", "probe/", "probe/x/turn left", "probe/03", "probe/03/"):
        assert parse_probe_key(other) is None


def test_the_scorer_reads_probes_json_back(tmp_path: Path) -> None:
    cfg = load_config(None, ["env.level=GoToLocal"])
    writer = ProbeScorer(cfg, tmp_path, nn.Identity(), is_main=True)
    built = writer.probes()
    assert load_probes(tmp_path / PROBES_FILE) == build_probes(cfg.env)
    # Whatever the file holds is what a later scorer (a resumed run) uses.
    data = json.loads((tmp_path / PROBES_FILE).read_text())
    data["probes"][0]["prompt"] = "edited"
    (tmp_path / PROBES_FILE).write_text(json.dumps(data))
    assert ProbeScorer(cfg, tmp_path, nn.Identity(), is_main=True).probes()[0].prompt == "edited"
    assert built[0].prompt != "edited"
    # Only rank 0 writes; the others build the same set themselves.
    other = tmp_path / "rank1"
    other.mkdir()
    assert ProbeScorer(cfg, other, nn.Identity(), is_main=False).probes() == built
    assert not (other / PROBES_FILE).exists()
    for bad in ('{"format": 99}', "{not json", '{"format": 1, "probes": [{}]}'):
        (other / PROBES_FILE).write_text(bad)
        with pytest.raises(ValueError, match=r"not a glamhpc probe file|malformed probe file"):
            ProbeScorer(cfg, other, nn.Identity(), is_main=False).probes()


# --- training ----------------------------------------------------------------------------------


def test_due_every_n_updates_and_at_the_end() -> None:
    every_2 = ProbeScorer(load_config(None, ["train.probe_every=2"]), Path(), nn.Identity(), True)
    assert [u for u in range(1, 6) if every_2.due(u, last=u == 5)] == [2, 4, 5]
    off = ProbeScorer(load_config(None, ["train.probe_every=0"]), Path(), nn.Identity(), True)
    assert not any(off.due(u, last=True) for u in range(1, 4))
    assert off(3, True, None) == {}


def test_probes_change_nothing_and_resume_exactly(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    off = train(_cfg(tmp_path, "train.max_updates=3", "tracking.enabled=false",
                     "train.probe_every=0"), "off")  # fmt: skip
    on = train(_cfg(tmp_path, "train.max_updates=3", "train.probe_every=1"), "on")
    # Stopped after 1 update (probed as its last), then resumed to 3 with probes every 2 updates
    # and at the end: the same updates 1, 2, 3 as the uninterrupted run probes.
    half = train(_cfg(tmp_path, "train.max_updates=1", "tracking.enabled=false",
                      "train.probe_every=2"), "resumed")  # fmt: skip
    (half / "DONE").unlink()
    written = (half / PROBES_FILE).read_text()
    resumed = train(_cfg(tmp_path, "train.max_updates=3", "tracking.enabled=false",
                         "train.probe_every=2"), "resumed")  # fmt: skip
    assert (resumed / PROBES_FILE).read_text() == written
    (w_off, h_off), (w_on, h_on), (w_res, h_res) = _state(off), _state(on), _state(resumed)
    assert all(torch.equal(w_off[k], w_on[k]) and torch.equal(w_on[k], w_res[k]) for k in w_on)
    assert _training_only(h_off) == _training_only(h_on) == _training_only(h_res)
    assert _probe_updates(h_off) == [] and not (off / PROBES_FILE).exists()
    assert _probe_updates(h_on) == _probe_updates(h_res) == [1, 2, 3]
    probes_on = [{k: v for k, v in h.items() if k.startswith("probe/")} for h in h_on]
    probes_res = [{k: v for k, v in h.items() if k.startswith("probe/")} for h in h_res]
    assert probes_on == probes_res
    # A distribution over the 6 actions per probe, and it moves as the policy learns.
    last = probes_on[-1]
    assert len(last) == NUM_PROBES * 6
    for k in range(NUM_PROBES):
        total = sum(v for key, v in last.items() if key.startswith(f"probe/{k:02d}/"))
        assert math.isclose(total, 1.0, rel_tol=1e-5)
    assert probes_on[0] != probes_on[-1]
    # MLflow has the same numbers at the update's frames, each probe's mission and the file.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = (on / "mlflow_run_id").read_text().strip()
    points = client.get_metric_history(run_id, "probe/00/go forward")
    assert [m.step for m in points] == [8, 16, 24]
    assert [m.value for m in points] == [h["probe/00/go forward"] for h in h_on]
    tags = client.get_run(run_id).data.tags
    probes, _ = load_probes(on / PROBES_FILE)
    assert tags["probe.00"].startswith(probes[0].mission)
    assert {a.path for a in client.list_artifacts(run_id, "probes")} == {"probes/probes.json"}
