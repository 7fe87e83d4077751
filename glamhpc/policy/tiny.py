"""tiny-t5: the default policy model, built offline from a BabyAI-Text corpus and cached.

Runs on a laptop and needs no download: a small BPE tokenizer is trained on `tiny_corpus`, a
~0.4 M-parameter T5 is initialised from a fixed seed, and both are saved (atomically) into
`<glamhpc cache>/tiny-t5-<version>` where `policy.models.load_model` reads them back with
`from_pretrained`. The version hashes everything that determines the files, so a change of
corpus or shape gets a new folder instead of a stale build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from glamhpc.policy import tiny_corpus
from glamhpc.policy.hubcache import TINY_T5, tiny_t5_folder
from glamhpc.policy.shapes import TINY_T5_SHAPE, TINY_VOCAB_MULTIPLE
from glamhpc.policy.t5 import build_from_config, quiet_loading

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast, T5Config

__all__ = ["TINY_T5", "build_tiny_t5", "tiny_t5_config", "tiny_t5_dir", "tiny_t5_version"]

# ---------------------------------------------------------------------------------------------
# Design (see the module docstring of tiny_corpus.py for the corpus).
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
_TINY_SEED = 1234
_TINY_LOGIT_STD = 0.05
_TINY_BPE_VOCAB = 2048  # an upper bound: merges stop earlier when the corpus runs out of pairs
_TINY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Characters always present in the vocabulary, so unseen words split into known pieces; anything
# else falls back to byte tokens (<0xNN>), so nothing ever becomes a bare <unk>.
_TINY_ALPHABET = sorted(
    set(string.ascii_letters + string.digits + string.punctuation)
    | set("àâäçéèêëîïôöùûüÿœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸŒÆ")
)
_SPECIALS = ("<pad>", "</s>", "<unk>")


def tiny_t5_config(vocab_size: int) -> T5Config:
    """The tiny-t5 `T5Config` for a tokenizer of `vocab_size` ids (padded to a multiple of 64)."""
    from transformers import T5Config

    padded = -(-vocab_size // TINY_VOCAB_MULTIPLE) * TINY_VOCAB_MULTIPLE
    # T5Config accepts extra keywords (huggingface_hub's strict(accept_kwargs=True)), which its
    # dataclass_transform cannot express.
    return T5Config(  # type: ignore[call-arg]
        vocab_size=padded,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
        **TINY_T5_SHAPE,
    )


def tiny_t5_version() -> str:
    """Hash of everything that determines the tiny-t5 files (corpus, tokenizer, shape, seed)."""
    spec = {
        "build": _TINY_BUILD_VERSION,
        "shape": TINY_T5_SHAPE,
        "seed": _TINY_SEED,
        "logit_std": _TINY_LOGIT_STD,
        "bpe_vocab": _TINY_BPE_VOCAB,
        "alphabet": "".join(_TINY_ALPHABET),
        "actions": tiny_corpus.all_action_texts(),
        "corpus": tiny_corpus.build_corpus(),
    }
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def tiny_t5_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the current tiny-t5 build lives (it may not exist yet)."""
    return tiny_t5_folder(tiny_t5_version(), cache_dir)


def _build_tiny_tokenizer() -> PreTrainedTokenizerFast:
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
        with quiet_loading():
            tokenizer.save_pretrained(tmp)
            cast("PreTrainedModel", model).save_pretrained(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
