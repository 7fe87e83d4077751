"""Load the seq2seq models and tokenizers used as GLAM policies.

Three sources, one loading path (`AutoTokenizer` / `AutoModelForSeq2SeqLM.from_pretrained`):

- `"tiny-t5"`: a small T5 built offline from a BabyAI-Text corpus, cached on disk (the default
  model: runs on a laptop, needs no download; built by `policy.tiny`);
- a Hugging Face hub id (`google/flan-t5-large`, ...): offline-first from the local HF cache, with a
  clear `ModelNotAvailableError` when the weights are not there;
- a local folder (`path=`) holding `config.json`, weights and tokenizer files.

`init` picks the weights (the paper's pretraining ablations): `"pretrained"`; `"random"`, the same
architecture with random weights (NPA, NPE); `"embeddings_only"`, random weights with the
pretrained input embeddings copied in (NPAE, `copy_input_embeddings`). `t5_config_for` (from
`policy.t5`, re-exported here) gives the exact FLAN-T5 shapes without any file, for tests and
memory planning. Where the caches are: `policy.hubcache`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from glamhpc.policy.hubcache import TINY_T5, hf_offline, hub_cache_dir
from glamhpc.policy.t5 import (
    FLAN_T5_SHAPES,
    build_from_config,
    ensure_decoder_start,
    is_flan,
    quiet_loading,
    t5_config_for,
)
from glamhpc.policy.tiny import build_tiny_t5

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "FLAN_T5_SHAPES",
    "TINY_T5",
    "ModelInit",
    "ModelNotAvailableError",
    "build_from_config",
    "copy_input_embeddings",
    "count_params",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "t5_config_for",
]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


ModelInit = Literal["pretrained", "random", "embeddings_only"]
MODEL_INITS: tuple[str, ...] = ("pretrained", "random", "embeddings_only")


class ModelNotAvailableError(RuntimeError):
    """The requested model's files are not on this machine and may not be downloaded."""


def resolve_device(pref: str | torch.device = "auto") -> torch.device:
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


def _not_available(name: str, cache_dir: str | os.PathLike[str] | None, err: Exception) -> str:
    where = cache_dir if cache_dir is not None else hub_cache_dir()
    return (
        f"model {name!r} is not available on this machine: its files are not in the Hugging Face "
        f"cache ({where}) and downloads are off. Fix: run `glamhpc models prefetch {name}` on a "
        f"machine with internet (and share or copy its HF cache / HF_HOME here), or set "
        f"model.path=/path/to/folder to a local copy with config.json, weights and tokenizer "
        f"files. (cause: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    )


def copy_input_embeddings(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s input embedding matrix into ``target`` (same architecture), in place.

    What is copied: T5's `shared` embedding, the one matrix behind both `encoder.embed_tokens` and
    `decoder.embed_tokens` (upstream's NPAE copies exactly these). Everything else in ``target``
    keeps its random init. The lm_head follows its tie: in T5 v1.1 / FLAN-T5 (and tiny-t5) it is a
    separate matrix (config.json's `tie_word_embeddings` cannot say so, transformers 5 writes true
    for every T5), so it stays random, as upstream's; in an original T5 it IS `shared`, so it
    gets the pretrained values too, as a copy through the tie, never by a second copy.
    """
    src = cast(nn.Embedding, cast("PreTrainedModel", source).get_input_embeddings()).weight
    dst = cast(nn.Embedding, cast("PreTrainedModel", target).get_input_embeddings()).weight
    if src.shape != dst.shape:
        raise ValueError("embeddings_only: the pretrained and the built model differ in shape")
    with torch.no_grad():
        dst.copy_(src.to(dst.dtype))


def _from_pretrained(
    source: str,
    *,
    init: ModelInit,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike[str] | None,
    local_only: bool,
    fallback_config: PretrainedConfig | None = None,
) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    pretrained: nn.Module | None = None
    if init != "random":
        with quiet_loading():
            pretrained = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=dtype, **kwargs)
    if init == "pretrained":
        assert pretrained is not None
        model = pretrained
    else:
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
        except OSError:
            # A random init needs no weights: the built-in FLAN-T5 shapes suffice.
            if fallback_config is None or init != "random":
                raise
            config = fallback_config
        # The caller's torch RNG draws the weights: the run's seed makes them reproducible.
        model = build_from_config(config).to(dtype)
        if pretrained is not None:
            # Only the embedding matrix survives; the full pretrained model is dropped here
            # (loading it whole keeps one code path for every weight format and shard layout).
            copy_input_embeddings(pretrained, model)
            del pretrained
    ensure_decoder_start(model)
    return model, tokenizer


def load_model(
    name: str,
    path: str | os.PathLike[str] | None = None,
    init: ModelInit = "pretrained",
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
        init: `"pretrained"` weights; `"random"`: the same architecture, weights drawn from the
            caller's torch RNG (seed first); `"embeddings_only"`: random, then the pretrained
            input embeddings copied in (`copy_input_embeddings`). The tokenizer is always the
            model's own. tiny-t5's "pretrained" weights are its fixed-seed local build.
        dtype: `"fp32"` or `"bf16"`.
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, or `"auto"` (see `resolve_device`).
        cache_dir: tiny-t5: the glamhpc cache root (default `$GLAMHPC_CACHE` or
            `~/.cache/glamhpc`); hub ids: the Hugging Face cache folder.
        allow_download: fetch missing hub files; honoured only when HF_HUB_OFFLINE is unset.

    Raises:
        ModelNotAvailableError: the files are not on this machine and no download is allowed.
        ValueError: an unknown ``init``.
    """
    if init not in MODEL_INITS:
        raise ValueError(f"unknown model init {init!r}; expected one of {', '.join(MODEL_INITS)}")
    torch_dtype = resolve_dtype(dtype)
    target = resolve_device(device)
    if name == TINY_T5 and path is None:
        folder = build_tiny_t5(cache_dir)
        model, tokenizer = _from_pretrained(
            str(folder), init=init, dtype=torch_dtype, cache_dir=None, local_only=True
        )
    else:
        local = Path(path).expanduser() if path is not None else Path(name).expanduser()
        fallback = t5_config_for(name) if is_flan(name) else None
        if path is not None or local.is_dir():
            if not local.is_dir():
                raise ModelNotAvailableError(f"model.path {str(local)!r} is not a folder")
            try:
                model, tokenizer = _from_pretrained(
                    str(local),
                    init=init,
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
                init=init,
                dtype=torch_dtype,
                cache_dir=cache_dir,
                allow_download=allow_download,
                fallback_config=fallback,
            )
    model.to(target)
    model.eval()
    return model, tokenizer


def _load_hub(
    name: str,
    *,
    init: ModelInit,
    dtype: torch.dtype,
    cache_dir: str | os.PathLike[str] | None,
    allow_download: bool,
    fallback_config: PretrainedConfig | None,
) -> tuple[nn.Module, Any]:
    try:
        return _from_pretrained(
            name,
            init=init,
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
        init=init,
        dtype=dtype,
        cache_dir=cache_dir,
        local_only=False,
        fallback_config=fallback_config,
    )
