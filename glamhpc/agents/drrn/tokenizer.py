"""DRRN's own tokenizer: a unigram-LM (sentencepiece-style) vocabulary built offline from the
text the environments generate, saved as JSON.

Upstream's DRRN loads ``unigram_8k.model``, a sentencepiece model it inherited from the text-game
DRRN code (its pieces are interactive-fiction English: "rulebook", "transcript", ...). Here the
tokenizer is built from BabyAI-Text itself: seeded random-action episodes on the run's level
(prompts, with the run's history, language and action space) plus the candidate action texts.

Why not `tokenizers`' UnigramTrainer: it seeds pieces from substrings repeated ACROSS distinct
whitespace words; BabyAI-Text has ~40 distinct words, so the trainer ends near a character-level
vocabulary (63 pieces, 323 tokens for one history-3 prompt on GoToRedBallNoDists), whatever
the requested size. With so few words the unigram model's maximum-likelihood vocabulary needs no
EM pruning: every word (``▁word``, sentencepiece's whitespace marker, pieces never cross a
space) and every character is a piece scored by its log relative frequency in the corpus. The
``vocab_size`` cap (upstream: 8k) is far above what the corpus supports; when it binds, the
rarest words go first and are spelt in characters. Unseen words (the generalisation tests) are
spelt in characters; unseen characters become ``<unk>``.

Deterministic: the corpus comes from fixed seeds and pieces are ordered by (count, text).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from glamhpc.fsutil import atomic_write_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from glamhpc.config import Config

PAD, UNK = "<pad>", "<unk>"
SPACE = "\u2581"  # sentencepiece's "▁": marks a word's start
TOKENIZER_FILE = "tokenizer.json"
#: Corpus: envs x steps of random play. Fixed seed: every seed of a config shares one tokenizer.
CORPUS_ENVS, CORPUS_STEPS, CORPUS_SEED = 16, 64, 0


def corpus_counts(texts: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """(word counts as ``▁word`` pieces, character counts) of ``texts`` split on spaces (as the
    Metaspace pre-tokenizer splits: a newline stays inside its word)."""
    words: Counter[str] = Counter()
    chars: Counter[str] = Counter()
    for text in texts:
        for word in filter(None, text.split(" ")):
            words[SPACE + word] += 1
            chars.update(word)
    chars[SPACE] += sum(words.values())
    return words, chars


def unigram_vocab(
    words: Counter[str], chars: Counter[str], vocab_size: int
) -> list[tuple[str, float]]:
    """The unigram model's pieces with log-probability scores: specials, every character, then
    the most frequent words up to ``vocab_size`` pieces in all (ties broken by text).

    Raises:
        ValueError: the cap cannot hold the specials and every character.
    """
    floor = 2 + len(chars)
    if vocab_size < floor:
        raise ValueError(
            f"drrn.vocab_size={vocab_size} cannot hold the corpus's {len(chars)} characters "
            f"and 2 special tokens; use at least {floor}"
        )
    kept = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))[: vocab_size - floor]
    pieces = sorted(chars.items(), key=lambda kv: (-kv[1], kv[0])) + [
        (w, c) for w, c in kept if w not in chars
    ]
    total = float(sum(c for _, c in pieces))
    return [(PAD, 0.0), (UNK, 0.0)] + [(p, float(np.log(c / total))) for p, c in pieces]


def build_tokenizer(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """A `tokenizers` Unigram tokenizer over the corpus ``texts`` (see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    words, chars = corpus_counts(normalizers.NFKC().normalize_str(t) for t in texts)
    tokenizer = Tokenizer(models.Unigram(unigram_vocab(words, chars, vocab_size), unk_id=1))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE)
    tokenizer.decoder = decoders.Metaspace(replacement=SPACE)
    return tokenizer


def env_corpus(cfg: Config) -> list[str]:
    """Prompts of seeded random-action episodes on the run's level, and its action texts."""
    from glamhpc.envs.batch import EnvBatch

    envs = EnvBatch(
        level=cfg.env.level,
        num_envs=CORPUS_ENVS,
        seed=CORPUS_SEED,
        action_space=cfg.env.action_space,
        history=cfg.env.history,
        language=cfg.env.language,
        task_sampling=cfg.env.task_sampling,
        fix_grammar=cfg.env.fix_grammar,
    )
    rng = np.random.default_rng(CORPUS_SEED)
    texts = list(envs.action_texts)
    try:
        for _ in range(CORPUS_STEPS):
            texts += envs.prompts()
            envs.step(rng.integers(0, len(envs.action_texts), CORPUS_ENVS))
    finally:
        envs.close()
    return texts


def save_tokenizer(tokenizer: Tokenizer, path: Path) -> None:
    atomic_write_text(path, tokenizer.to_str())


def load_tokenizer(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(path.read_text())


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (never empty: an empty text is one ``<unk>``)."""
    return [enc.ids or [1] for enc in tokenizer.encode_batch(list(texts))]
