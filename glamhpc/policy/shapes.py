"""T5 architecture facts without torch: the published FLAN-T5 shapes, tiny-t5's shape, and the
parameter count of a shape (exact for T5 v1.1: untied lm_head, gated feed-forward).

`glamhpc.policy.flops` computes FLOPs from the same `T5Shape`; the launch plan computes memory
from it on a login node, where importing torch would cost seconds per command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The published FLAN-T5 shapes (config.json of each hub repo). All share vocab 32128,
#: gated-GELU feed-forward, d_kv 64, 32 relative-position buckets and an untied lm_head.
FLAN_T5_SHAPES: dict[str, dict[str, int]] = {
    "google/flan-t5-small": {"d_model": 512, "d_ff": 1024, "num_layers": 8, "num_heads": 6},
    "google/flan-t5-base": {"d_model": 768, "d_ff": 2048, "num_layers": 12, "num_heads": 12},
    "google/flan-t5-large": {"d_model": 1024, "d_ff": 2816, "num_layers": 24, "num_heads": 16},
    "google/flan-t5-xl": {"d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32},
}
FLAN_T5_VOCAB = 32128
FLAN_T5_D_KV = 64

#: tiny-t5's architecture (its vocabulary comes from the tokenizer built with it).
TINY_T5_SHAPE: dict[str, Any] = {
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
#: tiny-t5's vocabulary is padded to a multiple of this.
TINY_VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class T5Shape:
    d_model: int
    d_ff: int
    d_kv: int
    num_heads: int
    enc_layers: int
    dec_layers: int
    vocab: int
    gated: bool = True
    tied_head: bool = False
    buckets: int = 32

    @property
    def layers(self) -> int:
        return self.enc_layers + self.dec_layers

    @classmethod
    def from_config(cls, config: Any) -> T5Shape:
        """From a transformers `T5Config` (or anything with its attribute names)."""
        return cls.from_mapping(
            {k: getattr(config, k, None) for k in _CONFIG_KEYS}  # absent keys -> defaults
        )

    @classmethod
    def from_mapping(cls, fields: dict[str, Any]) -> T5Shape:
        """From a config.json dict."""
        layers = int(fields["num_layers"])
        gated = "gated" in str(fields.get("feed_forward_proj") or "")
        return cls(
            d_model=int(fields["d_model"]),
            d_ff=int(fields["d_ff"]),
            d_kv=int(fields["d_kv"]),
            num_heads=int(fields["num_heads"]),
            enc_layers=layers,
            dec_layers=int(fields.get("num_decoder_layers") or layers),
            vocab=int(fields["vocab_size"]),
            gated=gated,
            # T5 v1.1 (gated: FLAN-T5, tiny-t5) has its own lm_head, original T5 ties it.
            # config.json's tie_word_embeddings cannot tell: transformers 5 writes true for both,
            # and glamhpc's model builder unties v1.1 heads itself (policy.t5).
            tied_head=not gated,
            buckets=int(fields.get("relative_attention_num_buckets") or 32),
        )

    @classmethod
    def from_json(cls, path: Path) -> T5Shape:
        data: dict[str, Any] = json.loads(path.read_text())
        return cls.from_mapping(data)


_CONFIG_KEYS = (
    "d_model",
    "d_ff",
    "d_kv",
    "num_heads",
    "num_layers",
    "num_decoder_layers",
    "vocab_size",
    "feed_forward_proj",
    "relative_attention_num_buckets",
)


def flan_t5_shape(name: str) -> T5Shape:
    """The shape of a FLAN-T5 size (``google/flan-t5-large`` or ``flan-t5-large``)."""
    key = name if name in FLAN_T5_SHAPES else f"google/{name}"
    if key not in FLAN_T5_SHAPES:
        raise ValueError(f"no built-in shape for {name!r}; known: {', '.join(FLAN_T5_SHAPES)}")
    return T5Shape.from_mapping(
        {
            **FLAN_T5_SHAPES[key],
            "vocab_size": FLAN_T5_VOCAB,
            "d_kv": FLAN_T5_D_KV,
            "feed_forward_proj": "gated-gelu",
        }
    )


def tiny_t5_shape(vocab_size: int) -> T5Shape:
    padded = -(-vocab_size // TINY_VOCAB_MULTIPLE) * TINY_VOCAB_MULTIPLE
    return T5Shape.from_mapping({**TINY_T5_SHAPE, "vocab_size": padded})


def param_count(shape: T5Shape) -> int:
    """Parameters of a T5 model of this shape, each shared tensor counted once."""
    d, inner, ff = shape.d_model, shape.num_heads * shape.d_kv, shape.d_ff
    attention = 4 * d * inner
    feed_forward = (3 if shape.gated else 2) * d * ff
    rel_bias = shape.buckets * shape.num_heads  # first layer of each stack only
    encoder = shape.enc_layers * (attention + feed_forward + 2 * d) + rel_bias + d
    decoder = shape.dec_layers * (2 * attention + feed_forward + 3 * d) + rel_bias + d
    embeddings = shape.vocab * d * (1 if shape.tied_head else 2)
    return embeddings + encoder + decoder
