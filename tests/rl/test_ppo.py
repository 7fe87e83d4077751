"""PPO terms on hand-computed cases; minibatch schedules are world-size independent."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glamhpc.config import PPOConfig
from glamhpc.rl.ppo import RolloutBatch, minibatch_schedule, ppo_losses, ppo_update


def _terms(ratio: float, adv: float, new_v=0.0, old_v=0.0, ret=0.0, **cfg):
    c = PPOConfig(**cfg)
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    new = torch.tensor([math.log(ratio)])
    return ppo_losses(
        new,
        lp,
        torch.tensor([new_v]),
        torch.tensor([0.0]),
        torch.tensor([old_v]),
        torch.tensor([adv]),
        torch.tensor([ret]),
        c,
    )


def test_surrogate_clips_positive_advantage():
    assert _terms(1.5, 1.0)["policy_loss"].item() == pytest.approx(-1.2)
    assert _terms(1.1, 1.0)["policy_loss"].item() == pytest.approx(-1.1)


def test_surrogate_clips_negative_advantage():
    assert _terms(0.5, -1.0)["policy_loss"].item() == pytest.approx(0.8)
    assert _terms(1.5, -1.0)["policy_loss"].item() == pytest.approx(1.5)


def test_value_loss_clipped_and_unclipped():
    # value_loss is the bare squared error (clipped or not); value_coef is its only weight.
    clipped = _terms(1.0, 0.0, new_v=1.0, old_v=0.0, ret=1.0)["value_loss"].item()
    # clipped prediction 0 + clamp(1 - 0, -0.2, 0.2) = 0.2 -> (0.2 - 1)^2 = 0.64 beats (1 - 1)^2
    assert clipped == pytest.approx(0.64)
    plain = _terms(1.0, 0.0, new_v=1.0, old_v=0.0, ret=1.0, clip_value=False)["value_loss"]
    assert plain.item() == pytest.approx(0.0)


def test_value_term_weighs_as_upstream():
    """Upstream GLAM's loss is ``policy - 0.01 * entropy + 0.5 * mean(max(sq, sq_clipped))``.

    We once applied CleanRL's 0.5 inside the value loss AND the paper's value coefficient 0.5,
    training the value head with half of upstream's weight (issue 13). Hand computation, one
    sample, clip 0.2: ratio 1 and advantage 0 give a zero surrogate; uniform over 2 actions gives
    entropy log 2; new value 3, old value 1, return 0: sq = 3^2 = 9, the clipped prediction
    1 + clamp(2, -0.2, 0.2) = 1.2 gives 1.44; max 9. Loss = 0 + 0.5 * 9 - 0.01 * log 2.
    """
    terms = _terms(1.0, 0.0, new_v=3.0, old_v=1.0, ret=0.0)
    assert terms["policy_loss"].item() == pytest.approx(0.0)
    assert terms["value_loss"].item() == pytest.approx(9.0)
    assert terms["loss"].item() == pytest.approx(0.5 * 9.0 - 0.01 * math.log(2))
    # The clipped error wins when the new value jumped onto the return: return 3 gives sq = 0,
    # clipped (1.2 - 3)^2 = 3.24, max 3.24.
    other = _terms(1.0, 0.0, new_v=3.0, old_v=1.0, ret=3.0)
    assert other["loss"].item() == pytest.approx(0.5 * 3.24 - 0.01 * math.log(2))
    # The coefficient is the config's: value_coef 1.0 doubles the value term.
    doubled = _terms(1.0, 0.0, new_v=3.0, old_v=1.0, ret=0.0, value_coef=1.0)
    assert doubled["loss"].item() == pytest.approx(9.0 - 0.01 * math.log(2))


def test_entropy_kl_clipfrac():
    t = _terms(1.5, 1.0)
    assert t["entropy"].item() == pytest.approx(math.log(2))
    assert t["clip_fraction"].item() == 1.0
    assert t["approx_kl"].item() == pytest.approx(0.5 - math.log(1.5))


def test_value_shapes_enforced():
    c = PPOConfig()
    lp = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="1-D"):
        ppo_losses(
            torch.zeros(2),
            lp,
            torch.zeros(2, 1),
            torch.zeros(2),
            torch.zeros(2),
            torch.zeros(2),
            torch.zeros(2),
            c,
        )


@pytest.mark.parametrize("world", [1, 2, 4])
def test_minibatch_schedule_is_world_size_independent(world):
    steps, n, mb = 5, 8, 6
    single = minibatch_schedule(steps, n, 0, n, mb, 2, seed=3, update=7)
    per_rank = [
        minibatch_schedule(steps, n, r * n // world, n // world, mb, 2, 3, 7) for r in range(world)
    ]
    for e, epoch in enumerate(single):
        for b, batch in enumerate(epoch):
            want = set()
            for i in batch.local_indices:
                t, env = divmod(int(i), n)
                want.add((t, env))
            got = set()
            for r in range(world):
                local_n = n // world
                for i in per_rank[r][e][b].local_indices:
                    t, env = divmod(int(i), local_n)
                    got.add((t, env + r * local_n))
            assert got == want
            assert all(per_rank[r][e][b].global_count == batch.global_count for r in range(world))
    covered = np.sort(np.concatenate([b.local_indices for b in single[0]]))
    assert covered.tolist() == list(range(steps * n))


def test_schedule_changes_with_update_and_epoch():
    a = minibatch_schedule(4, 4, 0, 4, 4, 2, 1, 0)
    b = minibatch_schedule(4, 4, 0, 4, 4, 2, 1, 1)
    assert a[0][0].local_indices.tolist() != b[0][0].local_indices.tolist()
    assert a[0][0].local_indices.tolist() != a[1][0].local_indices.tolist()


class _ToyPolicy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(3))
        self.v = torch.nn.Parameter(torch.zeros(1))

    def forward(self, prompts):
        n = len(prompts)
        return torch.log_softmax(self.logits, -1).expand(n, 3), self.v.expand(n)


def test_update_moves_policy_towards_advantaged_action():
    policy = _ToyPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    n = 16
    batch = RolloutBatch(
        prompts=["p"] * n,
        actions=torch.tensor([0, 1] * (n // 2)),
        logprobs=torch.full((n,), math.log(1 / 3)),
        values=torch.zeros(n),
        advantages=torch.tensor([1.0, -1.0] * (n // 2)),
        returns=torch.ones(n),
    )
    cfg = PPOConfig(epochs=3, minibatch_size=8)
    schedule = minibatch_schedule(1, n, 0, n, 8, 3, 0, 0)
    stats = ppo_update(policy, list(policy.parameters()), opt, batch, schedule, cfg)
    probs = torch.softmax(policy.logits, -1)
    assert probs[0] > probs[1]
    assert stats["gradient_steps"] == 6
    assert stats["value_loss"] > 0
    assert policy.v.item() > 0


def test_empty_local_minibatch_still_steps():
    policy = _ToyPolicy()
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    batch = RolloutBatch(
        ["p"], torch.tensor([0]), torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1)
    )
    from glamhpc.rl.ppo import Minibatch

    schedule = [[Minibatch(local_indices=np.array([], dtype=int), global_count=4)]]
    before = [p.detach().clone() for p in policy.parameters()]
    ppo_update(policy, list(policy.parameters()), opt, batch, schedule, PPOConfig())
    for b, p in zip(before, policy.parameters(), strict=True):
        assert torch.equal(b, p)  # zero weight: participates, changes nothing


def _nan_after(policy: torch.nn.Module, calls: int):
    """The toy policy, whose log-probs turn NaN from its ``calls``-th call on."""
    seen = []

    def score(prompts):
        seen.append(1)
        logprobs, values = policy(prompts)
        return (logprobs * math.nan if len(seen) >= calls else logprobs), values

    return score


def test_non_finite_loss_stops_before_the_optimizer_step():
    from glamhpc.rl.ppo import NonFiniteError

    policy = _ToyPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    n = 8
    batch = RolloutBatch(
        ["p"] * n,
        torch.zeros(n, dtype=torch.long),
        torch.full((n,), math.log(1 / 3)),
        torch.zeros(n),
        torch.ones(n),
        torch.ones(n),
    )
    schedule = minibatch_schedule(1, n, 0, n, 4, 1, 0, 0)  # two minibatches
    after_first = {}

    def snapshot_after_first_step(optimizer, args, kwargs):
        after_first.update({k: v.detach().clone() for k, v in policy.named_parameters()})

    opt.register_step_post_hook(snapshot_after_first_step)
    params = list(policy.parameters())
    with pytest.raises(NonFiniteError, match=r"non-finite loss and gradient norm .*minibatch 2"):
        ppo_update(_nan_after(policy, 2), params, opt, batch, schedule, PPOConfig())
    assert after_first, "the first (finite) minibatch was applied"
    for name, p in policy.named_parameters():
        assert torch.equal(p, after_first[name]), name  # the NaN gradients were not


def test_every_rank_stops_when_one_rank_saw_a_non_finite_loss():
    from glamhpc.rl.ppo import NonFiniteError

    policy = _ToyPolicy()
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    batch = RolloutBatch(
        ["p"], torch.tensor([0]), torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1)
    )
    schedule = minibatch_schedule(1, 1, 0, 1, 1, 1, 0, 0)
    before = [p.detach().clone() for p in policy.parameters()]

    def other_rank_bad(t: torch.Tensor) -> torch.Tensor:
        # This rank is finite; the flags summed over ranks say another rank's loss was not.
        return t + torch.tensor([1.0, 0.0], dtype=t.dtype) if t.numel() == 2 else t

    with pytest.raises(NonFiniteError, match="non-finite loss"):
        ppo_update(
            policy,
            list(policy.parameters()),
            opt,
            batch,
            schedule,
            PPOConfig(normalize_advantages=False),
            all_reduce_sum=other_rank_bad,
        )
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))
