import pytest
import torch

from algorithms import ALGORITHMS
from algorithms.grpo import GRPO, GRPOOptions
from launch.build import configure
from rlcore.config import ConfigError
from tests.test_batch import make


def grpo(*overrides: str) -> GRPO:
    """The algorithm as the composition root builds it: defaults (GRPO) plus ``overrides``."""
    algorithm = configure(None, list(overrides)).algorithm
    assert type(algorithm) is GRPO
    return algorithm


def outputs(logprobs, entropy=None):
    return {"logprobs": logprobs, "entropy": torch.zeros_like(logprobs) if entropy is None else entropy}


def test_registry():
    assert ALGORITHMS.resolve("grpo", "algorithm.name") is GRPO and GRPO.name == "grpo"
    assert ALGORITHMS.names() == ["distill_sft", "dpo", "grpo", "kd", "on_policy_distill", "online_dpo", "orm", "ppo", "prm",
                                  "rejection_sft", "sft"]
    assert ALGORITHMS.resolve("algorithms.grpo:GRPO", "algorithm.name") is GRPO  # an import path works too
    with pytest.raises(ValueError, match="algorithm 'grpo' is already registered"):
        ALGORITHMS.register("grpo", object)


def test_options_are_parsed_into_the_dataclass():
    algorithm = grpo("algorithm.clip_high=0.28", "algorithm.dynamic_sampling=true")
    assert isinstance(algorithm.options, GRPOOptions)
    assert algorithm.options == GRPOOptions(clip_high=0.28, dynamic_sampling=True)
    assert algorithm.max_sampling_rounds() == 4 and grpo().max_sampling_rounds() == 1
    assert list(algorithm.learners()) == ["actor"] and algorithm.group_size() == 8


def test_advantages_are_group_relative():
    batch = make([[1]] * 4)
    batch.group_ids = torch.tensor([7, 7, 9, 9])
    batch.scores = torch.tensor([1.0, 0.0, 1.0, 1.0])
    grpo().compute_advantages(batch)
    # group 7: mean 0.5, unbiased std sqrt(0.5) -> ±0.5/0.7071; group 9: all equal -> 0
    s = 0.5 / (0.5 ** 0.5 + 1e-6)
    assert torch.allclose(batch.advantages, torch.tensor([s, -s, 0.0, 0.0]))


def test_dr_grpo_skips_std():
    batch = make([[1]] * 2)
    batch.group_ids = torch.tensor([0, 0])
    batch.scores = torch.tensor([1.0, 0.0])
    grpo("algorithm.norm_by_std=false").compute_advantages(batch)
    assert batch.advantages.tolist() == [0.5, -0.5]


def test_loss_on_policy_is_minus_mean_advantage_plus_kl():
    batch = make([[1, 2], [3]])
    batch.advantages = torch.tensor([1.0, -2.0])
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    batch.old_logprobs = lp.clone()
    batch.ref_logprobs = lp - 0.1  # k1 = lp - ref = 0.1 on every token
    loss, metrics = grpo("algorithm.kl_coef=0.5", "algorithm.kl_kind=k1").loss(outputs(lp), batch)
    # token-mean over 3 tokens of -A*ratio (ratio 1): -(1 + 1 - 2)/3 = 0; plus 0.5 * 0.1
    assert abs(loss.item() - 0.05) < 1e-6
    assert abs(metrics["kl"] - 0.1) < 1e-6 and metrics["clip_frac"] == 0.0


def test_overlong_penalty_boundaries():
    from algorithms.shaping import overlong_penalty

    # L_max 10, L_cache 4: free up to 6, then (6 - |y|)/4, reaching -1 at 10.
    lengths = torch.tensor([3, 6, 7, 8, 10])
    assert overlong_penalty(lengths, 10, 4).tolist() == [0.0, 0.0, -0.25, -0.5, -1.0]
    assert overlong_penalty(lengths, 10, 4, penalty=2.0).tolist() == [0.0, 0.0, -0.5, -1.0, -2.0]


def test_shape_rewards_adds_overlong_term():
    batch = make([[1], [1, 2, 3], [1, 2, 3, 4]])
    batch.scores = torch.tensor([1.0, 1.0, 1.0])
    grpo("rollout.max_new_tokens=4", "algorithm.overlong_buffer=2").shape_rewards(batch)
    assert batch.scores.tolist() == [1.0, 0.5, 0.0]
    assert batch.reward_terms["overlong"].tolist() == [0.0, -0.5, -1.0]


def test_zero_variance_groups_and_dynamic_sampling_filter():
    from algorithms.advantages import zero_variance_groups

    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    assert zero_variance_groups(scores, ids).tolist() == [True, True, False, False, True, True]
    batch = make([[1]] * 6)
    batch.group_ids, batch.scores = ids, scores
    keep, drop = grpo("algorithm.dynamic_sampling=true").filter_groups(batch)
    assert keep.group_ids.tolist() == [1, 1] and drop.group_ids.tolist() == [0, 0, 2, 2]
    keep, drop = grpo().filter_groups(batch)  # off: everything kept
    assert len(keep) == 6 and drop is None


def test_rloo_and_reinforce_pp_estimators():
    batch = make([[1], [1], [1, 2], [1]])
    batch.group_ids = torch.tensor([0, 0, 0, 1])
    batch.scores = torch.tensor([1.0, 0.0, 2.0, 3.0])
    grpo("algorithm.advantage=rloo").compute_advantages(batch)
    # leave-one-out: 1 - (0+2)/2 = 0, 0 - 1.5 = -1.5, 2 - 0.5 = 1.5; a group of one keeps its score
    assert batch.advantages.tolist() == [0.0, -1.5, 1.5, 3.0]
    grpo("algorithm.advantage=reinforce_pp").compute_advantages(batch)
    adv = batch.advantages
    assert adv.shape == (4, 2) and adv[0, 1] == 0 and adv[3, 1] == 0  # padding stays 0
    # gamma 1: every token carries its sequence's score, then whitened over the 5 tokens
    returns = torch.tensor([1.0, 0.0, 2.0, 2.0, 3.0])
    expected = (returns - returns.mean()) / (returns.var() + 1e-8).sqrt()
    got = torch.stack([adv[0, 0], adv[1, 0], adv[2, 0], adv[2, 1], adv[3, 0]])
    assert torch.allclose(got, expected, atol=1e-5)


def test_entropy_bonus_dual_clip_and_sequence_ratio_paths():
    batch = make([[1, 2]])
    lp = torch.tensor([[-1.0, -1.0]])
    batch.old_logprobs, batch.advantages = lp.clone(), torch.tensor([-1.0])
    ent = torch.tensor([[0.5, 0.5]])
    base, _ = grpo("algorithm.kl_coef=0").loss(outputs(lp, ent), batch)
    bonus, _ = grpo("algorithm.kl_coef=0", "algorithm.entropy_coef=0.1").loss(outputs(lp, ent), batch)
    assert abs((base - bonus).item() - 0.05) < 1e-6
    # ratio e^3 on a negative advantage: PPO loss 1 * e^3, dual clip caps it at c = 3
    far = lp + 3.0
    capped, m = grpo("algorithm.kl_coef=0", "algorithm.dual_clip=3.0").loss(outputs(far, ent), batch)
    assert abs(capped.item() - 3.0) < 1e-5 and m["dual_clip_frac"] == 1.0
    seq, _ = grpo("algorithm.kl_coef=0", "algorithm.ratio=sequence").loss(outputs(lp, ent), batch)
    assert abs(seq.item() - 1.0) < 1e-6  # ratio 1, advantage -1: loss = -A = 1


def test_family_validation_messages():
    for overrides, message in [
        (["algorithm.advantage=gae"], "algorithm.advantage='gae' is not one of grpo, rloo, reinforce_pp"),
        (["algorithm.ratio=seq"], "algorithm.ratio='seq' is not one of token, sequence"),
        (["algorithm.dual_clip=0.5"], "algorithm.dual_clip=0.5 must be > 1"),
        (["algorithm.overlong_buffer=99"], "algorithm.overlong_buffer=99 must be in [0, rollout.max_new_tokens=8]"),
        (["algorithm.ratio=sequence", "algorithm.dual_clip=3"], "algorithm.dual_clip is for the token ratio"),
        (["algorithm.max_sampling_rounds=0"], "algorithm.max_sampling_rounds=0 must be >= 1"),
        (["rollout.temperature=0"], "rollout.temperature=0.0: GRPO needs sampling"),
        (["algorithm.kl_coef=-1"], "algorithm.kl_coef=-1.0 must be >= 0"),
    ]:
        with pytest.raises(ConfigError) as info:
            configure(None, overrides)
        assert message in str(info.value) and "\n" not in str(info.value)
    # REINFORCE++ whitens over the batch, not within groups: one sample per prompt is allowed.
    algorithm = grpo("algorithm.advantage=reinforce_pp", "rollout.n=1", "learner.mini_batch_size=32")
    assert algorithm.options.advantage == "reinforce_pp" and algorithm.group_size() == 1
