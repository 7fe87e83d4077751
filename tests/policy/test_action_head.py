"""The NPAE baselines' pieces: `model.init` modes (what is random, what is copied) and the action
head (`policy.head=action`): its logits, gradients, cheap position-0 path and parameter count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glamhpc.config import load_config
from glamhpc.launch.plan import GB, action_head_params, estimate_memory
from glamhpc.policy.flops import T5Shape
from glamhpc.policy.glam import GlamPolicy
from glamhpc.policy.models import ModelNotAvailableError, copy_input_embeddings, load_model
from glamhpc.policy.shrink import write_shrunk_hub_model
from glamhpc.policy.t5 import build_from_config

from . import STANDARD_ACTIONS, load_tiny, prompts, tiny_dir


def _tiny(init: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model, _ = load_model("tiny-t5", cache_dir=tiny_dir().parent, init=init)  # type: ignore[arg-type]
    return model


def _q(model: torch.nn.Module) -> torch.Tensor:
    return model.encoder.block[0].layer[0].SelfAttention.q.weight


# ---------------------------------------------------------------------------------------------
# model.init


def test_init_modes_copy_the_embeddings_only_where_they_should() -> None:
    pretrained = _tiny("pretrained", 0)
    random = _tiny("random", 0)
    npae = _tiny("embeddings_only", 0)
    # The input embeddings: pretrained ones in embeddings_only (one matrix behind both stacks).
    assert torch.equal(npae.shared.weight, pretrained.shared.weight)
    assert npae.encoder.embed_tokens.weight is npae.shared.weight
    assert npae.decoder.embed_tokens.weight is npae.shared.weight
    assert not torch.equal(random.shared.weight, pretrained.shared.weight)
    # Everything else is random in both: attention, feed-forward, the untied lm_head.
    for model in (random, npae):
        assert not torch.equal(_q(model), _q(pretrained))
        wo = model.decoder.block[1].layer[-1].DenseReluDense.wo.weight
        assert not torch.equal(wo, pretrained.decoder.block[1].layer[-1].DenseReluDense.wo.weight)
        assert model.lm_head.weight is not model.shared.weight
        assert not torch.equal(model.lm_head.weight, pretrained.lm_head.weight)
    # embeddings_only is random + the copy: the same draw as random for every other weight.
    rest = [k for k in random.state_dict() if "shared" not in k and "embed_tokens" not in k]
    assert rest and all(torch.equal(random.state_dict()[k], npae.state_dict()[k]) for k in rest)


@pytest.mark.parametrize("init", ["random", "embeddings_only"])
def test_random_inits_follow_the_seed(init: str) -> None:
    a, b, c = _tiny(init, 5), _tiny(init, 5), _tiny(init, 6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(_q(a), _q(c))
    assert torch.equal(sa["shared.weight"], sc["shared.weight"]) is (init == "embeddings_only")


def test_embeddings_only_through_the_hub_path(tmp_path: Path) -> None:
    """A FLAN-T5 id read offline from a hub cache entry (the smoke's stand-in layout): the
    embeddings come from the cached weights, the untied lm_head does not."""
    write_shrunk_hub_model("google/flan-t5-small", tmp_path, seed=3)
    cached, _ = load_model("google/flan-t5-small", cache_dir=tmp_path)
    torch.manual_seed(0)
    npae, _ = load_model("google/flan-t5-small", cache_dir=tmp_path, init="embeddings_only")
    assert torch.equal(npae.shared.weight, cached.shared.weight)
    assert not torch.equal(npae.lm_head.weight, cached.lm_head.weight)
    assert not torch.equal(_q(npae), _q(cached))
    with pytest.raises(ModelNotAvailableError):  # no weights, nothing to copy from
        load_model("google/flan-t5-small", cache_dir=tmp_path / "empty", init="embeddings_only")
    with pytest.raises(ValueError, match="unknown model init"):
        load_model("tiny-t5", init="pretrained-ish")  # type: ignore[arg-type]


def test_a_tied_lm_head_gets_the_embeddings_through_the_tie() -> None:
    """Original T5 ties lm_head to `shared`: one copy sets both, and the tie survives."""
    from transformers import T5Config

    config = T5Config(
        vocab_size=64, d_model=16, d_ff=32, d_kv=4, num_heads=2, num_layers=1,
        feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    source, target = build_from_config(config), build_from_config(config)
    assert target.lm_head.weight is target.shared.weight
    assert not torch.equal(source.shared.weight, target.shared.weight)
    copy_input_embeddings(source, target)
    assert torch.equal(target.lm_head.weight, source.shared.weight)
    assert target.lm_head.weight is target.shared.weight
    # A tied head is the embedding matrix, which the action head's model uses: not frozen.
    GlamPolicy(target, _Tok(), ["a", "b"], head="action", action_hidden=8)
    assert target.lm_head.weight.requires_grad


class _Tok:
    """The least a GlamPolicy needs from a tokenizer (ids for two one-token candidates)."""

    pad_token_id = 0
    eos_token_id = 1

    def __call__(self, texts, add_special_tokens=True):  # type: ignore[no-untyped-def]
        if isinstance(texts, str):
            return {"input_ids": [2 + (ord(texts[0]) % 10), 1]}
        return {"input_ids": [[2 + (ord(t[0]) % 10), 1] for t in texts]}


# ---------------------------------------------------------------------------------------------
# the action head


@pytest.fixture
def npae() -> GlamPolicy:
    torch.manual_seed(0)
    model, tok = load_model("tiny-t5", cache_dir=tiny_dir().parent, init="embeddings_only")
    return GlamPolicy(model, tok, STANDARD_ACTIONS, head="action", action_hidden=32)


def test_action_head_logits_shapes_and_dtypes(npae: GlamPolicy) -> None:
    batch = prompts(5)
    logprobs, values = npae(batch)
    assert logprobs.shape == (5, 6) and logprobs.dtype == torch.float32
    assert values.shape == (5,) and values.dtype == torch.float32
    torch.testing.assert_close(logprobs.logsumexp(-1), torch.zeros(5))
    assert npae.action_head is not None
    widths = [m.out_features for m in npae.action_head if isinstance(m, torch.nn.Linear)]
    assert widths == [32, 32, 6]
    assert all(p.dtype == torch.float32 for p in npae.action_head.parameters())
    # The logits ARE the head's output on the position-0 state, normalised.
    with torch.no_grad():
        expected = torch.log_softmax(npae.action_head(npae.start_state(batch)), -1)
    torch.testing.assert_close(logprobs.detach(), expected, rtol=0, atol=1e-6)
    # Different prompts, different distributions: the head reads the observation.
    assert (logprobs[0] - logprobs[1]).abs().max() > 1e-4


def test_action_head_gradients_reach_every_used_weight_and_not_the_lm_head(
    npae: GlamPolicy,
) -> None:
    batch = prompts(4, seed=2)
    actions, old_logp, _, _ = npae.act(batch, torch.Generator().manual_seed(0))
    logp, entropy, values = npae.evaluate(batch, actions)
    torch.testing.assert_close(logp.detach(), old_logp, atol=1e-6, rtol=0)
    (logp.sum() + values.sum() + 0.1 * entropy.sum()).backward()
    assert npae.action_head is not None and npae.action_head[0].weight.grad is not None
    assert npae.action_head[4].weight.grad.abs().sum() > 0
    assert npae.value_head[0].weight.grad.abs().sum() > 0
    assert _q(npae.model).grad.abs().sum() > 0
    assert npae.model.shared.weight.grad.abs().sum() > 0  # the copied embeddings are trained
    assert npae.model.decoder.block[-1].layer[-1].DenseReluDense.wo.weight.grad.abs().sum() > 0
    # Nothing reads the untied LM head: frozen, never in the optimizer.
    assert not npae.model.lm_head.weight.requires_grad and npae.model.lm_head.weight.grad is None
    trainable = [n for n, p in npae.named_parameters() if p.requires_grad]
    assert all(npae.get_parameter(n).grad is not None for n in trainable)


def test_position0_path_equals_the_scoring_state_and_ignores_chunking() -> None:
    model, tok = load_tiny()
    policy = GlamPolicy(model, tok, STANDARD_ACTIONS, head="action", action_hidden=8)
    batch = prompts(7, seed=4)
    with torch.no_grad():
        cheap = policy.start_state(batch)
        torch.testing.assert_close(cheap, policy.score(batch).hidden, rtol=0, atol=1e-5)
        policy.max_batch_tokens = 64  # one or two prompts per chunk
        torch.testing.assert_close(policy.start_state(batch), cheap, rtol=0, atol=1e-5)


def test_action_head_computes_fp32_logits_under_bf16_autocast() -> None:
    model, tok = load_tiny()
    policy = GlamPolicy(
        model, tok, STANDARD_ACTIONS, head="action", action_hidden=8,
        compute_dtype=torch.bfloat16,
    )  # fmt: skip
    logprobs, values = policy(prompts(3))
    assert logprobs.dtype == torch.float32 and values.dtype == torch.float32
    assert bool(torch.isfinite(logprobs).all())


def test_the_scoring_policy_draws_the_same_init_as_before() -> None:
    """The action head is built after the value head: a scoring policy's init is unchanged."""
    heads = []
    for head in ("scoring", "action"):
        model, tok = load_tiny()
        torch.manual_seed(11)
        policy = GlamPolicy(model, tok, STANDARD_ACTIONS, head=head, value_hidden=16)  # type: ignore[arg-type]
        heads.append(policy.value_head.state_dict())
        assert (policy.action_head is None) is (head == "scoring")
        assert model.lm_head.weight.requires_grad is (head == "scoring")
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    with pytest.raises(ValueError, match="unknown head"):
        GlamPolicy(*load_tiny(), STANDARD_ACTIONS, head="mlp")  # type: ignore[arg-type]


def test_plan_counts_the_action_head_and_leaves_out_the_frozen_lm_head() -> None:
    model, tok = load_tiny()
    policy = GlamPolicy(
        model, tok, STANDARD_ACTIONS, head="action", action_hidden=24, value_hidden=24
    )
    assert policy.action_head is not None
    real = sum(p.numel() for p in policy.action_head.parameters())
    assert action_head_params(64, 24, 6) == real
    shape = T5Shape.from_config(model.config)
    base = load_config(None, ["model.value_hidden=24"])
    npae = load_config(None, ["model.value_hidden=24", "policy.head=action"])
    params = sum(p.numel() for p in model.parameters())
    plain, head = estimate_memory(base, params, shape, 1), estimate_memory(npae, params, shape, 1)
    lm_head = model.lm_head.weight.numel()
    assert head.trainable - plain.trainable == real - lm_head
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    assert head.trainable == trainable  # the plan's count is what the optimizer holds
    assert head.weights_gb == pytest.approx(plain.weights_gb + real * 4 / GB)


def test_the_removed_pretrained_key_names_its_replacement() -> None:
    from glamhpc.config import ConfigError

    for value in ("true", "false"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"model.pretrained={value}"])
        assert str(info.value).startswith("'model.pretrained' was removed: use model.init=")
    cfg = load_config(None, ["model.init=embeddings_only", "policy.head=action"])
    assert (cfg.model.init, cfg.policy.head) == ("embeddings_only", "action")
    with pytest.raises(ConfigError, match=r"policy\.head"):
        load_config(None, ["policy.head=mlp"])
