"""Load or build the seq2seq models and tokenizers used as GLAM policies.

Three sources, one loading path (`AutoTokenizer` / `AutoModelForSeq2SeqLM.from_pretrained`):

- `"tiny-t5"`: a small T5 built offline from a BabyAI-Text corpus, cached on disk (the default
  model: runs on a laptop, needs no download);
- a Hugging Face hub id (`google/flan-t5-large`, ...): offline-first from the local HF cache, with a
  clear `ModelNotAvailableError` when the weights are not there;
- a local folder (`path=`) holding `config.json`, weights and tokenizer files.

`pretrained=False` builds the same architecture with random weights (the paper's non-pretrained
ablation). `t5_config_for` gives the exact FLAN-T5 shapes without any file, for tests and
memory planning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glamhpc.policy import tiny_corpus

__all__ = [
    "FLAN_T5_SHAPES",
    "TINY_T5",
    "ModelNotAvailableError",
    "build_from_config",
    "build_tiny_t5",
    "count_params",
    "hf_offline",
    "is_cached_locally",
    "load_model",
    "pick_device",
    "resolve_dtype",
    "t5_config_for",
    "tiny_t5_config",
    "tiny_t5_dir",
    "tiny_t5_version",
]

TINY_T5 = "tiny-t5"

# The published FLAN-T5 shapes (config.json of each hub repo). All share vocab 32128, gated-GELU
# feed-forward, d_kv 64, 32 relative-position buckets and an untied lm_head.
FLAN_T5_SHAPES: dict[str, dict[str, int]] = {
    "google/flan-t5-small": {"d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6},
    "google/flan-t5-base": {"d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12},
    "google/flan-t5-large": {"d_model": 1024, "d_ff": 2816, "num_layers": 24, "num_heads": 16},
    "google/flan-t5-xl": {"d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32},
}

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# ---------------------------------------------------------------------------------------------
# tiny-t5 design (see the module docstring of tiny_corpus.py for the corpus).
#
# Sizes: d_model 64, d_ff 256 (gated-GELU, like FLAN-T5), 4 heads of 16, 2 encoder + 2 decoder
# layers, untied lm_head: ~0.4 M parameters. The shape follows FLAN-T5 (gated-GELU, untied head,
# no output scaling) so every code path exercised by tiny-t5 is the one the real models take.
# d_model 64 rather than 128: it is the width whose learning speed is calibrated (a d_model-64
# prototype learned GoToRedBallNoDists to ~0.99 success in ~6 CPU minutes, GLAM_ALGORITHM.md),
# and the PPO update dominates CPU wall time: a forward+backward over 64 prompts (~107 tokens,
# 6 actions, 1 core) took 1.3 s at d_model 64 against 4.5 s at 128, measured side by side.
# Dropout is 0: PPO's first minibatch must see a ratio of exactly 1, and dropout noise in the
# policy makes the clipped objective act on noise.
#
# Action-length bias remedy: every action string of every action space is ONE token (an added
# token matched on word boundaries), so every candidate is scored over exactly two decoder
# positions (action token, then </s>). On top, the untied lm_head starts small (logit std ~0.05),
# so the untrained policy is near-uniform over any set of single-token actions instead of
# favouring whichever token happens to have a large random logit.
_TINY_BUILD_VERSION = "1"
_TINY_SHAPE: dict[str, Any] = {
    "d_model": 64,
    "d_ff": 256,
    "d_kv": 16,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}
_TINY_SEED = 1234
_TINY_LOGIT_STD = 0.05
_TINY_BPE_VOCAB = 2048  # an upper bound: merges stop earlier when the corpus runs out of pairs
_TINY_VOCAB_MULTIPLE = 64
_TINY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Characters always present in the vocabulary, so unseen words split into known pieces; anything
# else falls back to byte tokens (<0xNN>), so nothing ever becomes a bare <unk>.
_TINY_ALPHABET = sorted(
    set(string.ascii_letters + string.digits + string.punctuation)
    | set("àâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ")
)
_SPECIALS = ("<pad>", "</s>", "<unk>")


class ModelNotAvailableError(RuntimeError):
    """The requested model's files are not on this machine and may not be downloaded."""


# ---------------------------------------------------------------------------------------------
# devices, dtypes, parameter counts


def pick_device(pref: str | torch.device = "auto") -> torch.device:
    """`"auto"` -> cuda when available, else cpu; anything else is passed to `torch.device`."""
    if isinstance(pref, torch.device):
        return pref
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """`"fp32"`/`"bf16"` (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of fp32, bf16") from None


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters (tied/shared weights counted once, as `parameters()` does)."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# configs and random-init models


def t5_config_for(name: str, **overrides: Any) -> Any:
    """The exact `T5Config` of a FLAN-T5 size, built without any file.

    `overrides` replace fields (e.g. `num_layers=2` for a fast test that keeps the per-layer shape).
    """
    from transformers import T5Config

    key = name if name in FLAN_T5_SHAPES else f"google/{name}"
    if key not in FLAN_T5_SHAPES:
        raise ValueError(f"no built-in shape for {name!r}; known: {', '.join(FLAN_T5_SHAPES)}")
    fields: dict[str, Any] = {
        "vocab_size": 32128,
        "d_kv": 64,
        "feed_forward_proj": "gated-gelu",
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "pad_token_id": 0,
        "eos_token_id": 1,
        # transformers 5 has no default: without it a forward with labels fails.
        "decoder_start_token_id": 0,
        # FLAN-T5 (T5 v1.1) has an untied lm_head and no d_model**-0.5 output scaling.
        "tie_word_embeddings": False,
        **FLAN_T5_SHAPES[key],
        **overrides,
    }
    if "num_decoder_layers" not in overrides:
        fields["num_decoder_layers"] = fields["num_layers"]
    return T5Config(**fields)


def _untie_lm_head(model: nn.Module, std: float) -> None:
    """Give a T5 v1.1-style model its own lm_head weight.

    transformers 5 always ties `lm_head` to `shared` when a T5 is built from a config, but FLAN-T5
    checkpoints carry a separate head (and never scale the decoder output): a random-init model
    must have the same parameters as the real one. The tie mapping is dropped too, otherwise
    `save_pretrained` would omit the head as a duplicate and a reload would tie it again.
    """
    lm_head = model.get_output_embeddings()
    shared = model.get_input_embeddings()
    if lm_head is None or lm_head.weight is not shared.weight:
        return
    weight = torch.empty_like(shared.weight)
    if weight.device.type != "meta":
        nn.init.normal_(weight, mean=0.0, std=std)
    lm_head.weight = nn.Parameter(weight)
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


def build_from_config(config: Any, lm_head_std: float | None = None) -> nn.Module:
    """A random-init seq2seq model from `config` (`AutoModelForSeq2SeqLM.from_config`).

    For T5 configs without output scaling (v1.1 / FLAN-T5) the lm_head is untied, as in the real
    checkpoints, and initialised with std `lm_head_std` (default d_model**-0.5: unit-variance
    logits, since the decoder output is RMS-normalised).
    """
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_config(config)
    if getattr(config, "model_type", None) == "t5" and not getattr(
        config, "scale_decoder_outputs", True
    ):
        std = lm_head_std if lm_head_std is not None else config.d_model**-0.5
        _untie_lm_head(model, std)
    _ensure_decoder_start(model)
    return model


def _ensure_decoder_start(model: nn.Module) -> None:
    # transformers 5 no longer defaults decoder_start_token_id; T5 uses the pad id.
    config = model.config
    if getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = config.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "decoder_start_token_id", None) is None:
        gen.decoder_start_token_id = config.decoder_start_token_id


# ---------------------------------------------------------------------------------------------
# tiny-t5


def tiny_t5_config(vocab_size: int) -> Any:
    """The tiny-t5 `T5Config` for a tokenizer of `vocab_size` ids (padded to a multiple of 64)."""
    from transformers import T5Config

    padded = -(-vocab_size // _TINY_VOCAB_MULTIPLE) * _TINY_VOCAB_MULTIPLE
    return T5Config(
        vocab_size=padded,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
        **_TINY_SHAPE,
    )


def tiny_t5_version() -> str:
    """Hash of everything that determines the tiny-t5 files (corpus, tokenizer, shape, seed)."""
    spec = {
        "build": _TINY_BUILD_VERSION,
        "shape": _TINY_SHAPE,
        "seed": _TINY_SEED,
        "logit_std": _TINY_LOGIT_STD,
        "bpe_vocab": _TINY_BPE_VOCAB,
        "alphabet": "".join(_TINY_ALPHABET),
        "actions": tiny_corpus.all_action_texts(),
        "corpus": tiny_corpus.build_corpus(),
    }
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GLAMHPC_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "glamhpc"


def tiny_t5_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the current tiny-t5 build lives (it may not exist yet)."""
    return _cache_root(cache_dir) / f"tiny-t5-{tiny_t5_version()}"


def _build_tiny_tokenizer() -> Any:
    """Train the tiny BPE tokenizer on the BabyAI-Text corpus (deterministic, ~0.1 s)."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=_TINY_BPE_VOCAB,
        min_frequency=2,
        special_tokens=list(_SPECIALS),
        initial_alphabet=_TINY_ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus.build_corpus(), trainer)

    # Byte fallback: append the 256 <0xNN> byte tokens to the BPE vocabulary so that characters
    # outside the alphabet (CJK, emoji, ...) become bytes instead of a bare <unk>.
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    # The action-length bias remedy: each action string is one token. `single_word` keeps them
    # from matching inside longer words ("dropped", "mistake").
    tok.add_tokens(
        [AddedToken(a, single_word=True, normalized=False) for a in tiny_corpus.all_action_texts()]
    )
    # T5 convention: every sequence ends with </s> (the scored action includes it).
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    for idx, special in enumerate(_SPECIALS):
        if tok.token_to_id(special) != idx:
            raise RuntimeError(f"tiny tokenizer: {special} should have id {idx}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=4096,
    )


def _build_tiny_model(vocab_size: int) -> nn.Module:
    config = tiny_t5_config(vocab_size)
    # A private RNG scope: the build is reproducible and leaves the caller's RNG untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_TINY_SEED)
        return build_from_config(config, lm_head_std=_TINY_LOGIT_STD / config.d_model**0.5)


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _TINY_FILES)


def build_tiny_t5(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Build (once) and cache tiny-t5; return its folder.

    The files are written to a temporary folder next to the final one and renamed into place:
    the rename is atomic, so a reader sees either nothing or a complete build, and concurrent
    builders (several ranks, several jobs) cannot corrupt each other: the first rename wins and
    the others discard their identical copy.
    """
    final = tiny_t5_dir(cache_dir)
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        # Something incomplete that no builder of ours produced: move it aside, never delete it
        # in place (another process could be reading it).
        with contextlib.suppress(OSError):
            final.rename(final.with_name(f"{final.name}.broken-{os.getpid()}"))
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        tokenizer = _build_tiny_tokenizer()
        model = _build_tiny_model(len(tokenizer))
        with _quiet_loading():
            tokenizer.save_pretrained(tmp)
            model.save_pretrained(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---------------------------------------------------------------------------------------------
# loading


def hf_offline() -> bool:
    """Whether the Hugging Face hub must not be contacted (HF_HUB_OFFLINE set)."""
    from huggingface_hub import constants

    # The environment is read now (it may have changed since huggingface_hub was imported).
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().lower() in {"1", "true", "yes", "on"} or bool(constants.HF_HUB_OFFLINE)


class _DropTieWarning(logging.Filter):
    """Hide transformers' warning about an untied lm_head in an untied (T5 v1.1) checkpoint.

    transformers 5 forces `tie_word_embeddings=True` on every T5 config, then notices that
    `lm_head.weight` and `shared.weight` differ in the checkpoint and keeps them apart, which is
    the right outcome; the warning it prints on every load is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "both are present in the checkpoints with different values" not in str(record.msg)


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """No tie warning and no progress bars ("Loading weights", "Writing model shards").

    Training logs are files and Slurm outputs, where a tqdm bar is a screenful of carriage
    returns; the previous progress-bar settings are restored afterwards.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers.modeling_utils")
    flt = _DropTieWarning()
    logger.addFilter(flt)
    bars_on = hf_logging.is_progress_bar_enabled()
    hub_bars_off = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(flt)
        if bars_on:
            hf_logging.enable_progress_bar()
            if hub_bars_off:
                disable_progress_bars()


def _not_available(name: str, cache_dir: str | os.PathLike[str] | None, err: Exception) -> str:
    from huggingface_hub import constants

    where = cache_dir if cache_dir is not None else constants.HF_HUB_CACHE
    return (
        f"model {name!r} is not available on this machine: its files are not in the Hugging Face "
        f"cache ({where}) and downloads are off. Fix: run `glamhpc models prefetch {name}` on a "
        f"machine with internet (and share or copy its HF cache / HF_HOME here), or set "
        f"model.path=/path/to/folder to a local copy with config.json, weights and tokenizer "
        f"files. (cause: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    )


def is_cached_locally(name: str, cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether config, weights and tokenizer of hub model `name` are in the local HF cache."""
    from huggingface_hub import try_to_load_from_cache

    def has(filename: str) -> bool:
        hit = try_to_load_from_cache(name, filename, cache_dir=cache_dir)
        return isinstance(hit, str)

    weights = has("model.safetensors") or has("model.safetensors.index.json")
    weights = weights or has("pytorch_model.bin") or has("pytorch_model.bin.index.json")
    tokenizer = has("tokenizer.json") or has("spiece.model")
    return has("config.json") and weights and tokenizer


def _from_pretrained(
    source: str,
    *,
    pretrained: bool,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike[str] | None,
    local_only: bool,
    fallback_config: Any | None = None,
) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if pretrained:
        with _quiet_loading():
            model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=dtype, **kwargs)
    else:
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
        except OSError:
            # The non-pretrained ablation needs no weights: the built-in FLAN-T5 shapes suffice.
            if fallback_config is None:
                raise
            config = fallback_config
        model = build_from_config(config).to(dtype)
    _ensure_decoder_start(model)
    return model, tokenizer


def load_model(
    name: str,
    path: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
) -> tuple[nn.Module, Any]:
    """Return `(model, tokenizer)` for `name`, in eval mode, on `device`, in `dtype`.

    Args:
        name: `"tiny-t5"`, a hub id (`google/flan-t5-small|base|large|xl`, any seq2seq model) or a
            local folder.
        path: a local folder to load from instead of the hub cache (`model.path` in configs).
        pretrained: False builds the same architecture with random weights (the tokenizer is
            still the model's own). tiny-t5 is always a random init, so the flag changes nothing.
        dtype: `"fp32"` or `"bf16"`.
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, or `"auto"` (see `pick_device`).
        cache_dir: tiny-t5: the glamhpc cache root (default `$GLAMHPC_CACHE` or
            `~/.cache/glamhpc`); hub ids: the Hugging Face cache folder.
        allow_download: fetch missing hub files; honoured only when HF_HUB_OFFLINE is unset.

    Raises:
        ModelNotAvailableError: the files are not on this machine and no download is allowed.
    """
    torch_dtype = resolve_dtype(dtype)
    target = pick_device(device)
    if name == TINY_T5 and path is None:
        folder = build_tiny_t5(cache_dir)
        model, tokenizer = _from_pretrained(
            str(folder), pretrained=True, dtype=torch_dtype, cache_dir=None, local_only=True
        )
    else:
        local = Path(path).expanduser() if path is not None else Path(name).expanduser()
        fallback = t5_config_for(name) if _is_flan(name) else None
        if path is not None or local.is_dir():
            if not local.is_dir():
                raise ModelNotAvailableError(f"model.path {str(local)!r} is not a folder")
            try:
                model, tokenizer = _from_pretrained(
                    str(local),
                    pretrained=pretrained,
                    dtype=torch_dtype,
                    cache_dir=None,
                    local_only=True,
                    fallback_config=fallback,
                )
            except (OSError, ValueError) as err:
                raise ModelNotAvailableError(
                    f"folder {str(local)!r} does not hold a loadable seq2seq model (config.json, "
                    f"weights and tokenizer files are needed): {type(err).__name__}: {err}"
                ) from err
        else:
            model, tokenizer = _load_hub(
                name,
                pretrained=pretrained,
                dtype=torch_dtype,
                cache_dir=cache_dir,
                allow_download=allow_download,
                fallback_config=fallback,
            )
    model.to(target)
    model.eval()
    return model, tokenizer


def _is_flan(name: str) -> bool:
    return name in FLAN_T5_SHAPES or f"google/{name}" in FLAN_T5_SHAPES


def _load_hub(
    name: str,
    *,
    pretrained: bool,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike[str] | None,
    allow_download: bool,
    fallback_config: Any | None,
) -> tuple[nn.Module, Any]:
    try:
        return _from_pretrained(
            name,
            pretrained=pretrained,
            dtype=dtype,
            cache_dir=cache_dir,
            local_only=True,
            fallback_config=fallback_config,
        )
    except (OSError, ValueError) as err:
        # transformers reports missing cache entries as OSError (EnvironmentError) or ValueError.
        if not allow_download or hf_offline():
            raise ModelNotAvailableError(_not_available(name, cache_dir, err)) from err
    return _from_pretrained(
        name,
        pretrained=pretrained,
        dtype=dtype,
        cache_dir=cache_dir,
        local_only=False,
        fallback_config=fallback_config,
    )
