"""Config schema: defaults, YAML files, dotted overrides and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from glamhpc.config import (
    Config,
    ConfigError,
    apply_overrides,
    describe_fields,
    flatten,
    load_config,
    parse_override,
    training_precision_problem,
)

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_defaults_are_the_paper_values():
    cfg = load_config()
    assert cfg.ppo.lr == 1e-6 and cfg.ppo.epochs == 4 and cfg.ppo.minibatch_size == 64
    assert cfg.env.num_envs == 32 and cfg.ppo.steps_per_env == 40 and cfg.env.reward_scale == 20
    assert cfg.model.name == "tiny-t5" and cfg.launch.executor == "local"
    assert cfg.env.level == "BabyAI-MixedTrainLocal-v0"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_validate(path):
    load_config(path)


def test_every_field_documented():
    rows = describe_fields()
    assert len(rows) > 50
    missing = [key for key, _, doc in rows if not doc]
    assert missing == []


def test_overrides_parse_yaml_values():
    assert parse_override("ppo.lr=1e-4") == (["ppo", "lr"], 1e-4)
    assert parse_override("train.progress=false") == (["train", "progress"], False)
    assert parse_override("model.lora.target_modules=[q,v]") == (
        ["model", "lora", "target_modules"],
        ["q", "v"],
    )
    cfg = load_config(None, ["env.num_envs=8", "ppo.minibatch_size=16", "env.level=GoToLocal"])
    assert cfg.env.num_envs == 8 and cfg.env.level == "BabyAI-GoToLocal-v0"


def test_overrides_do_not_mutate_input():
    data = {"env": {"num_envs": 4}}
    apply_overrides(data, ["env.num_envs=8"])
    assert data == {"env": {"num_envs": 4}}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["env.num_env=4"], "unknown key 'env.num_env': did you mean 'env.num_envs'"),
        (["envs.num_envs=4"], "unknown key 'envs'"),
        (["env.num_envs=abc"], "bad value for 'env.num_envs': 'abc'"),
        (["env.num_envs=0"], "greater than or equal to 1"),
        (["env.action_space=big"], "allowed: 'standard', 'restricted', 'augmented' or 'synonyms'"),
        (["env.level=GoToNowhere"], "GoToNowhere"),
        (["env.history=12"], "env.history"),
        (["ppo.minibatch_size=99999"], "larger than a rollout"),
        (["novalue"], "expected KEY=VALUE"),
        (["env..x=1"], "empty key part"),
        (["env.num_envs=4", "env.num_envs.x=1"], "is a value, not a section"),
        (["model.precision=bf16"], "allowed: 'fp32' or 'bf16-mixed'"),
    ],
)
def test_errors_name_key_value_and_fix(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_flatten():
    flat = flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}})
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    assert "ppo.lr" in flatten(Config().model_dump())


def test_slurm_times_stay_text_in_files_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("launch:\n  time: 04:00:00\n")
    assert load_config(path).launch.time == "04:00:00"  # YAML 1.1 would read 14400
    path.write_text("launch:\n  time: 30\n")
    assert load_config(path).launch.time == "30"
    assert load_config(None, ["launch.time=1-12:00:00"]).launch.time == "1-12:00:00"
    assert load_config(None, ["launch.time=45"]).launch.time == "45"


@pytest.mark.parametrize(
    "overrides",
    [["dist.mixed_precision=bf16"], ["dist.mixed_precision=none", "env.num_env=4"]],
)
def test_removed_mixed_precision_key_names_its_replacement(overrides):
    # The removed key is reported first, even beside other problems, with the fix to apply.
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert message.startswith("'dist.mixed_precision' was removed: use model.precision=bf16-mixed")
    assert "unknown key" not in message and "\n" not in message


def test_bf16_weights_cannot_be_trained_except_a_frozen_lora_base():
    assert training_precision_problem(load_config(None, [])) is None
    assert training_precision_problem(load_config(None, ["model.precision=bf16-mixed"])) is None
    problem = training_precision_problem(load_config(None, ["model.dtype=bf16"]))
    assert problem is not None and "\n" not in problem
    assert "use model.dtype=fp32 with model.precision=bf16-mixed" in problem
    lora = load_config(None, ["model.dtype=bf16", "model.lora.enabled=true"])
    assert training_precision_problem(lora) is None
