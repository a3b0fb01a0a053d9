"""Old log-probs (recomputed or the sampler's), the rollout/learner gap, and truncated importance sampling."""

from __future__ import annotations

import math

import pytest
import torch

import algorithms.policy as policy_module
from launch.build import configure
from rlcore.batch import RolloutBatch
from rlcore.config import ConfigError
from rlcore.functional import logprob_gap, truncated_is_weights

MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
LEARNER = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
SAMPLER = torch.tensor([[-1.5, -1.0, -9.0], [-1.0, -1.0, -0.5]])  # d = lp - lp_rollout: [0.5, -1.0, pad], [.5, .5, 0]


def test_token_level_weights_match_hand_computed_numbers():
    weights, metrics = truncated_is_weights(LEARNER, SAMPLER, MASK, "token", cap=1.5)
    e = math.exp
    expected = torch.tensor([[min(e(0.5), 1.5), e(-1.0), 0.0], [min(e(0.5), 1.5), min(e(0.5), 1.5), 1.0]])
    assert torch.allclose(weights, expected)
    assert metrics["clipped_frac"] == pytest.approx(3 / 5)  # e^0.5 = 1.649 > 1.5 on three of five tokens
    assert metrics["mean_weight"] == pytest.approx((1.5 + e(-1.0) + 1.5 + 1.5 + 1.0) / 5)


def test_sequence_level_weights_share_the_sequence_ratio():
    weights, metrics = truncated_is_weights(LEARNER, SAMPLER, MASK, "sequence", cap=2.0)
    e = math.exp
    # row 0: sum d = 0.5 - 1.0 = -0.5 -> e^-0.5 on its two tokens; row 1: sum d = 1.0 -> e^1 = 2.718, capped at 2.
    assert torch.allclose(weights, torch.tensor([[e(-0.5), e(-0.5), 0.0], [2.0, 2.0, 2.0]]))
    assert metrics["clipped_frac"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="unknown importance-sampling level 'tokens'"):
        truncated_is_weights(LEARNER, SAMPLER, MASK, "tokens", cap=2.0)


def test_logprob_gap_matches_hand_computed_numbers():
    gap = logprob_gap(LEARNER, SAMPLER, MASK)
    d = [0.5, -1.0, 0.5, 0.5, 0.0]  # the five response tokens; the padded position (gap 9) is left out
    assert gap["abs_diff_mean"] == pytest.approx(sum(map(abs, d)) / 5)
    assert gap["abs_diff_max"] == pytest.approx(1.0)
    assert gap["prob_ratio_mean"] == pytest.approx(sum(math.exp(x) for x in d) / 5)
    assert gap["token_mult_prob_error"] == pytest.approx(sum(math.exp(abs(x)) for x in d) / 5)
    pairs = [(-1.0, -1.5), (-2.0, -1.0), (-0.5, -1.0), (-0.5, -1.0), (-0.5, -0.5)]
    assert gap["prob_diff_mean"] == pytest.approx(sum(abs(math.exp(a) - math.exp(b)) for a, b in pairs) / 5)
    same = logprob_gap(SAMPLER, SAMPLER, MASK)
    assert same["abs_diff_max"] == 0.0 and same["token_mult_prob_error"] == pytest.approx(1.0)


def plan_with(*overrides: str):
    # 4 prompts x 2 samples = a batch of 8.
    return configure(None, ["data.prompts_per_step=4", "rollout.n=2", *overrides])


@pytest.mark.parametrize("overrides, recompute, level", [
    (["learner.mini_batch_size=8"], False, None),  # one epoch, one mini-batch, no staleness: on-policy
    (["learner.mini_batch_size=4"], True, None),  # the second mini-batch trains on moved weights
    (["learner.mini_batch_size=8", "learner.epochs=2"], True, None),
    (["learner.mini_batch_size=8", "rollout.max_staleness=1"], True, "token"),
    (["learner.mini_batch_size=8", "algorithm.old_logprobs=recompute"], True, None),
    (["learner.mini_batch_size=4", "algorithm.old_logprobs=rollout"], False, None),
    (["learner.mini_batch_size=4", "algorithm.off_policy_correction=sequence"], True, "sequence"),
    (["learner.mini_batch_size=8", "rollout.max_staleness=2", "algorithm.off_policy_correction=none"], True, None),
])
def test_auto_resolves_to_recompute_only_off_policy(overrides, recompute, level):
    plan = plan_with(*overrides)
    assert plan.algorithm.recompute is recompute and plan.algorithm.is_level == level
    provides = plan.learners["actor"].spec.provides
    assert provides == ({"old_logprobs": "logprobs"} if recompute else {})  # no extra forward pass otherwise


def test_ppo_shares_the_choice():
    plan = configure(None, ["algorithm.name=ppo", "data.prompts_per_step=4", "rollout.n=2",
                            "learner.mini_batch_size=8", "algorithm.critic.mini_batch_size=8"])
    assert plan.algorithm.recompute is False and plan.learners["actor"].spec.provides == {}
    assert plan.learners["critic"].spec.provides == {"values": "values"}


def test_a_correction_without_recomputed_old_logprobs_is_a_config_error():
    with pytest.raises(ConfigError, match="algorithm.off_policy_correction=token weighs by recomputed old log-probs"):
        plan_with("algorithm.old_logprobs=rollout", "algorithm.off_policy_correction=token")
    with pytest.raises(ConfigError, match="algorithm.old_logprobs='fresh' is not one of auto, recompute, rollout"):
        plan_with("algorithm.old_logprobs=fresh")
    with pytest.raises(ConfigError, match="rollout.max_staleness=-1 must be >= 0"):
        plan_with("rollout.max_staleness=-1")


def batch() -> RolloutBatch:
    return RolloutBatch(response_mask=MASK, advantages=torch.tensor([1.0, -1.0]), rollout_logprobs=SAMPLER.clone(),
                        old_logprobs=torch.full_like(SAMPLER, -0.7))


def spy_policy_loss(monkeypatch) -> list[dict]:
    calls, real = [], policy_module.policy_loss

    def spy(logprobs, old_logprobs, advantages, mask, **kwargs):
        calls.append({"old": old_logprobs, **kwargs})
        return real(logprobs, old_logprobs, advantages, mask, **kwargs)

    monkeypatch.setattr(policy_module, "policy_loss", spy)
    return calls


def test_rollout_old_logprobs_feed_the_loss_exactly_the_samplers_numbers(monkeypatch):
    calls = spy_policy_loss(monkeypatch)
    algorithm = plan_with("learner.mini_batch_size=8", "reference.enabled=false", "algorithm.kl_coef=0").algorithm
    b = batch()
    outputs = {"logprobs": LEARNER, "entropy": torch.zeros_like(MASK)}
    loss, metrics = algorithm.loss(outputs, b)
    assert calls[0]["old"] is b.rollout_logprobs and calls[0]["weights"] is None  # vLLM's tensor itself, no copy
    # exp(lp - lp_rollout) is the ratio: token 2 of row 0 has ratio e^-1, unclipped below 0.8 -> clipped branch.
    assert metrics["approx_kl"] == pytest.approx(-sum([0.5, -1.0, 0.5, 0.5, 0.0]) / 5)


def test_recomputed_old_logprobs_with_token_correction_weigh_the_loss(monkeypatch):
    calls = spy_policy_loss(monkeypatch)
    algorithm = plan_with("learner.mini_batch_size=8", "rollout.max_staleness=1", "reference.enabled=false",
                          "algorithm.kl_coef=0", "algorithm.is_cap=1.2").algorithm
    b = batch()
    outputs = {"logprobs": LEARNER, "entropy": torch.zeros_like(MASK)}
    loss, metrics = algorithm.loss(outputs, b)
    assert calls[0]["old"] is b.old_logprobs
    expected, _ = truncated_is_weights(b.old_logprobs, b.rollout_logprobs, MASK, "token", cap=1.2)
    assert torch.equal(calls[0]["weights"], expected)
    assert metrics["is/mean_weight"] == pytest.approx(expected.sum().item() / 5)
    unweighted, _ = policy_module.policy_loss(LEARNER, b.old_logprobs, b.advantages, MASK)
    assert loss.item() != pytest.approx(unweighted.item())  # the weights change the loss
