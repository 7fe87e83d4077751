"""T5 architectures without files: FLAN-T5 shapes, configs, random-init models, quiet loading.

Shared by the loader (`policy.models`) and the tiny-t5 builder (`policy.tiny`), so neither
depends on the other for the architecture. `t5_config_for` gives the exact FLAN-T5 shapes
without any download, for tests and memory planning.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from glamhpc.policy.shapes import FLAN_T5_D_KV, FLAN_T5_SHAPES, FLAN_T5_VOCAB

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, T5Config

__all__ = [
    "FLAN_T5_SHAPES",
    "build_from_config",
    "ensure_decoder_start",
    "is_flan",
    "quiet_loading",
    "t5_config_for",
]


def t5_config_for(name: str, **overrides: Any) -> T5Config:
    """The exact `T5Config` of a FLAN-T5 size, built without any file.

    `overrides` replace fields (e.g. `num_layers=2` for a fast test that keeps the per-layer shape).
    """
    from transformers import T5Config

    key = name if name in FLAN_T5_SHAPES else f"google/{name}"
    if key not in FLAN_T5_SHAPES:
        raise ValueError(f"no built-in shape for {name!r}; known: {', '.join(FLAN_T5_SHAPES)}")
    fields: dict[str, Any] = {
        "vocab_size": FLAN_T5_VOCAB,
        "d_kv": FLAN_T5_D_KV,
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
    hf = cast("PreTrainedModel", model)
    lm_head = hf.get_output_embeddings()
    shared = cast(nn.Embedding, hf.get_input_embeddings())  # T5's `shared`
    if lm_head is None or lm_head.weight is not shared.weight:
        return
    weight = torch.empty_like(shared.weight)
    if weight.device.type != "meta":
        nn.init.normal_(weight, mean=0.0, std=std)
    lm_head.weight = nn.Parameter(weight)
    tied = getattr(model, "all_tied_weights_keys", None)
    if isinstance(tied, dict):
        tied.pop("lm_head.weight", None)


def build_from_config(config: PretrainedConfig, lm_head_std: float | None = None) -> nn.Module:
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
    ensure_decoder_start(model)
    return model


def ensure_decoder_start(model: nn.Module) -> None:
    """Set decoder_start_token_id to the pad id where missing (transformers 5 has no default)."""
    config = cast("PretrainedConfig", model.config)
    if getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = config.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and getattr(gen, "decoder_start_token_id", None) is None:
        gen.decoder_start_token_id = config.decoder_start_token_id


class _DropTieWarning(logging.Filter):
    """Hide transformers' warning about an untied lm_head in an untied (T5 v1.1) checkpoint.

    transformers 5 forces `tie_word_embeddings=True` on every T5 config, then notices that
    `lm_head.weight` and `shared.weight` differ in the checkpoint and keeps them apart, which is
    the right outcome; the warning it prints on every load is noise.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "both are present in the checkpoints with different values" not in str(record.msg)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
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


def is_flan(name: str) -> bool:
    """Whether `name` (full or short hub id) is a FLAN-T5 size with built-in shapes."""
    return name in FLAN_T5_SHAPES or f"google/{name}" in FLAN_T5_SHAPES
