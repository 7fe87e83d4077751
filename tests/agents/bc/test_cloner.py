"""The cloning objective on the real tiny-t5: labels, token sums, agreement with HF's loss."""

from __future__ import annotations

import torch

from glamhpc.agents.bc.cloner import IGNORE, Cloner, encode_pairs, label_tokens
from glamhpc.policy.models import load_model
from glamhpc.policy.scoring import encode_candidates

PROMPTS = ["Goal of the agent: go to the red ball", "Observation 0: a wall 1 step left"]
ACTIONS = ["go forward", "turn left"]


def test_labels_are_the_candidate_tokens_with_one_eos_then_ignored():
    _, tok = load_model("tiny-t5")
    _, mask, labels = encode_pairs(tok, PROMPTS, ACTIONS, torch.device("cpu"))
    cands = encode_candidates(tok, ACTIONS)
    for row, action in enumerate(ACTIONS):
        kept = labels[row][labels[row] != IGNORE]
        expected = cands.ids[row][cands.mask[row]]
        assert torch.equal(kept, expected), action
        assert int(kept[-1]) == tok.eos_token_id
        assert int((kept == tok.eos_token_id).sum()) == 1
    assert int(mask.sum()) == sum(len(x) for x in tok(PROMPTS)["input_ids"])
    assert label_tokens(tok, ACTIONS) == int((labels != IGNORE).sum())


def test_cloner_sums_match_hugging_face_mean_loss():
    torch.manual_seed(0)
    model, tok = load_model("tiny-t5")
    model.eval()
    cloner = Cloner(model)
    ids, mask, labels = encode_pairs(tok, PROMPTS, ACTIONS, torch.device("cpu"))
    sums = cloner(ids, mask, labels).detach()
    reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert int(sums[3]) == label_tokens(tok, ACTIONS)
    assert torch.allclose(sums[0] / sums[3], reference, rtol=1e-5)
    assert 0 <= float(sums[1]) <= float(sums[3])
    vocab = float(model.get_output_embeddings().weight.shape[0])
    assert 0 < float(sums[2]) / float(sums[3]) <= float(torch.log(torch.tensor(vocab))) + 1e-4


def test_cloning_steps_make_the_demonstrated_action_the_best_scored_candidate():
    from glamhpc.policy.glam import GlamPolicy

    torch.manual_seed(0)
    model, tok = load_model("tiny-t5")
    candidates = ["turn left", "turn right", "go forward"]
    policy = GlamPolicy(model, tok, candidates, value_hidden=4)
    cloner = Cloner(model)
    optimizer = torch.optim.AdamW(cloner.parameters(), lr=3e-3)
    batch = encode_pairs(tok, PROMPTS, ACTIONS, torch.device("cpu"))
    for _ in range(60):
        sums = cloner(*batch)
        optimizer.zero_grad()
        (sums[0] / sums[3]).backward()
        optimizer.step()
    with torch.no_grad():
        logprobs, _ = policy(PROMPTS)
    assert logprobs.argmax(1).tolist() == [candidates.index(a) for a in ACTIONS]
