"""Model loading: tiny-t5 build (deterministic, atomic, offline), FLAN-T5 shapes, offline errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glamhpc.policy import tiny_corpus
from glamhpc.policy.glam import GlamPolicy
from glamhpc.policy.models import (
    ModelNotAvailableError,
    count_params,
    load_model,
    resolve_device,
    resolve_dtype,
)
from glamhpc.policy.t5 import FLAN_T5_SHAPES, build_from_config, t5_config_for
from glamhpc.policy.tiny import build_tiny_t5, tiny_t5_dir

from . import REAL_PROMPTS, STANDARD_ACTIONS, load_tiny, tiny_dir

# ---------------------------------------------------------------------------------------------
# FLAN-T5 shapes


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("google/flan-t5-small", 77.0),
        ("google/flan-t5-base", 247.6),
        ("google/flan-t5-large", 783.2),
        ("google/flan-t5-xl", 2849.8),
    ],
)
def test_flan_t5_param_counts(name: str, millions: float) -> None:
    config = t5_config_for(name)
    assert config.vocab_size == 32128
    assert config.feed_forward_proj == "gated-gelu"
    assert config.decoder_start_token_id == 0
    assert not config.scale_decoder_outputs  # T5 v1.1: no output rescaling
    with torch.device("meta"):  # shapes only: XL would need 11 GB of RAM otherwise
        model = build_from_config(config)
    assert model.lm_head.weight is not model.shared.weight  # untied head, as in the checkpoints
    assert round(count_params(model) / 1e6, 1) == millions
    assert config.d_model == FLAN_T5_SHAPES[name]["d_model"]


def test_t5_config_overrides_and_short_names() -> None:
    config = t5_config_for("flan-t5-small", num_layers=2)
    assert (config.num_layers, config.num_decoder_layers, config.d_model) == (2, 2, 512)
    with pytest.raises(ValueError, match="flan-t5"):
        t5_config_for("t5-unknown")


def test_devices_and_dtypes() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("fp32") is torch.float32
    with pytest.raises(ValueError):
        resolve_dtype("fp8")


# ---------------------------------------------------------------------------------------------
# tiny-t5


def test_tiny_build_is_deterministic(tmp_path: Path) -> None:
    first = build_tiny_t5(tmp_path / "a")
    second = build_tiny_t5(tmp_path / "b")
    assert first.name == second.name  # same version hash
    tok_a = (first / "tokenizer.json").read_bytes()
    assert tok_a == (second / "tokenizer.json").read_bytes()
    weights_a = load_file(first / "model.safetensors")
    weights_b = load_file(second / "model.safetensors")
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    # Cached: a second call returns the same folder without rebuilding.
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_t5(tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


def test_tiny_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLAMHPC_CACHE", str(tmp_path))
    assert tiny_t5_dir().parent == tmp_path
    monkeypatch.delenv("GLAMHPC_CACHE")
    assert tiny_t5_dir().parent == Path.home() / ".cache" / "glamhpc"


def test_concurrent_builders_do_not_corrupt(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        folders = list(pool.map(lambda _: build_tiny_t5(tmp_path), range(3)))
    assert len(set(folders)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [folders[0].name]  # no temp leftovers
    model, tok = load_model("tiny-t5", cache_dir=tmp_path)
    assert len(tok) <= model.config.vocab_size


def test_tiny_model_design() -> None:
    model, tok = load_tiny()
    config = model.config
    assert (config.d_model, config.num_layers, config.num_decoder_layers) == (64, 2, 2)
    assert config.dropout_rate == 0.0 and config.decoder_start_token_id == 0
    assert model.lm_head.weight is not model.shared.weight  # reloads untied
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok("go to the red ball")["input_ids"][-1] == tok.eos_token_id
    assert not model.training
    assert 0.3e6 < count_params(model) < 0.5e6


@pytest.mark.parametrize("word", ["dax", "xolo", "vermilion", "golden", "afze", "jatu", "中文"])
def test_unseen_words_split_into_pieces(word: str) -> None:
    _, tok = load_tiny()
    ids = tok(word, add_special_tokens=False)["input_ids"]
    assert len(ids) >= 2, tok.convert_ids_to_tokens(ids)
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == word


def test_every_action_is_one_token() -> None:
    _, tok = load_tiny()
    texts = set(tiny_corpus.all_action_texts())
    try:  # the env layer's own list, where it exists: the two must agree
        from glamhpc.envs.actions import ACTION_SPACES, FRENCH_ACTION_TEXTS

        texts |= {spec.text for specs in ACTION_SPACES.values() for spec in specs}
        texts |= set(FRENCH_ACTION_TEXTS.values())
    except ImportError:
        pass
    for text in sorted(texts):
        ids = tok(text)["input_ids"]
        assert len(ids) == 2 and ids[-1] == tok.eos_token_id, (text, ids)
    # Added tokens only match whole words.
    assert len(tok("dropped", add_special_tokens=False)["input_ids"]) > 1


def test_corpus_leaves_out_generalisation_words() -> None:
    text = " ".join(tiny_corpus.build_corpus()).lower()
    for word in ("vermilion", "golden", "dax", "xolo", "afze", "chair", "would like"):
        assert word not in text


def test_untrained_policy_is_not_dominated_by_one_action() -> None:
    """The action-length bias check: near-uniform over the 6 actions before any training."""
    model, tok = load_tiny()
    policy = GlamPolicy(model, tok, STANDARD_ACTIONS)
    with torch.no_grad():
        logprobs, _ = policy(REAL_PROMPTS)
    probs = logprobs.exp()
    entropy = -(probs * logprobs).sum(-1)
    assert probs.max().item() < 0.4
    assert probs.max().item() < 0.25  # measured ~0.19; 0.4 is the requirement
    assert bool((entropy > math.log(6) - 0.05).all()), entropy


def test_local_folder_and_bf16(tmp_path: Path) -> None:
    folder = tiny_dir()
    model, tok = load_model("whatever-name", path=folder, dtype="bf16")
    assert model.shared.weight.dtype == torch.bfloat16
    with torch.no_grad():
        ids = tok(["go to the red ball"], return_tensors="pt")["input_ids"]
        out = model(input_ids=ids, decoder_input_ids=torch.zeros((1, 1), dtype=torch.long))
    assert out.logits.shape[-1] == model.config.vocab_size
    with pytest.raises(ModelNotAvailableError):
        load_model("x", path=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailableError, match=r"config\.json"):
        load_model("x", path=tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# hub models, offline


def test_uncached_hub_model_raises_clear_error(tmp_path: Path) -> None:
    for init in ("pretrained", "random", "embeddings_only"):  # random needs the tokenizer files
        with pytest.raises(ModelNotAvailableError) as info:
            load_model("google/flan-t5-small", init=init, cache_dir=tmp_path)
        message = str(info.value)
        assert "glamhpc models prefetch google/flan-t5-small" in message
        assert "model.path=" in message


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    from glamhpc.policy.models import ModelNotAvailableError, load_model
    from glamhpc.policy.tiny import build_tiny_t5
    torch.set_num_threads(1)
    result = {}
    rebuilt = build_tiny_t5(sys.argv[2])  # another process, another folder: same bytes?
    for name in ("tokenizer.json", "model.safetensors"):
        result[name] = hashlib.sha256((rebuilt / name).read_bytes()).hexdigest()
    model, tok = load_model("tiny-t5", cache_dir=sys.argv[1])
    result["tiny_vocab"] = len(tok)
    result["tiny_class"] = type(model).__name__
    for allow in (False, True):
        try:
            load_model("glamhpc-test-org/no-such-t5", allow_download=allow)
        except ModelNotAvailableError as err:
            result[f"error_allow_{allow}"] = str(err)
    print(json.dumps(result))
    """
)


def test_offline_subprocess_tiny_reload_and_fake_id(tmp_path: Path) -> None:
    """Fresh interpreter, HF_HUB_OFFLINE=1 and an empty HF_HOME: tiny-t5 rebuilds to identical
    bytes and loads through from_pretrained, a hub id fails with the prefetch/model.path hint."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("GLAMHPC_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(tiny_dir().parent), str(tmp_path / "b")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("tokenizer.json", "model.safetensors"):  # deterministic across processes
        assert result[name] == hashlib.sha256((tiny_dir() / name).read_bytes()).hexdigest()
    assert result["tiny_class"] == "T5ForConditionalGeneration" and result["tiny_vocab"] > 500
    for allow in (False, True):  # allow_download is ignored while HF_HUB_OFFLINE is set
        message = result[f"error_allow_{allow}"]
        assert "glamhpc models prefetch glamhpc-test-org/no-such-t5" in message
        assert "model.path=/path/to/folder" in message
        assert str(tmp_path / "hf") in message  # names the cache it looked in


def test_random_init_is_a_random_init_of_the_same_architecture() -> None:
    model, _ = load_tiny()
    fresh, tok = load_model("tiny-t5-copy", path=tiny_dir(), init="random")
    assert type(fresh) is type(model) and fresh.config.d_model == model.config.d_model
    assert count_params(fresh) == count_params(model)
    assert fresh.lm_head.weight is not fresh.shared.weight
    assert not torch.equal(fresh.shared.weight, model.shared.weight)
    assert len(tok) == len(load_tiny()[1])


@pytest.mark.parametrize("size", ["small", "base", "large", "xl"])
def test_torch_free_parameter_count_matches_the_built_model(size: str) -> None:
    """The launch plan counts parameters from `policy.shapes` without torch: it must equal what
    the model builder really creates (meta device, no memory)."""
    from glamhpc.policy.shapes import T5Shape, flan_t5_shape, param_count
    from glamhpc.policy.t5 import build_from_config, t5_config_for

    config = t5_config_for(f"google/flan-t5-{size}")
    with torch.device("meta"):
        model = build_from_config(config)
    assert param_count(flan_t5_shape(f"flan-t5-{size}")) == count_params(model)
    assert T5Shape.from_config(config) == flan_t5_shape(f"google/flan-t5-{size}")


def test_torch_free_parameter_count_of_tiny_t5() -> None:
    from glamhpc.policy.shapes import T5Shape, param_count

    model, _ = load_model("tiny-t5", device="cpu")
    assert param_count(T5Shape.from_config(model.config)) == count_params(model)
