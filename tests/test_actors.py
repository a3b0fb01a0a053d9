"""The roles as real Ray actors on a local cluster: vLLM rollout, FSDP learners (world size 2), weight sync."""

import pytest
import torch

from rlcore.config import load_config
from rlcore.data import load_prompts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def groups(local_ray, local_model, arithmetic_files):
    from actors.groups import LearnerGroup, ReferenceGroup, RewardGroup, RolloutGroup

    # world_size 2: a real 2-rank gloo group with FSDP2 sharding.
    cfg = load_config(None, ["learner.world_size=2", "learner.lr=1e-3", "data.prompts_per_step=8", "rollout.n=4",
                             "algorithm.mini_batch_size=32", "rollout.max_new_tokens=6"])
    learners = LearnerGroup(cfg, local_model)
    rollout = RolloutGroup(cfg, local_model)
    rewards = RewardGroup(cfg)
    reference = ReferenceGroup(cfg, local_model)
    rows = load_prompts([arithmetic_files[0]])[:8]
    yield cfg, learners, rollout, rewards, reference, rows
    learners.shutdown()


def test_rollout_generates_n_samples_per_prompt(groups):
    cfg, _, rollout, rewards, _, rows = groups
    batch = rollout.generate(rows, list(range(100, 108)), n=4)
    assert len(batch) == 32
    assert batch.group_ids.tolist() == [g for g in range(100, 108) for _ in range(4)]
    assert batch.prompts[:4] == [rows[0].prompt] * 4
    assert (batch.rollout_logprobs <= 0).all() and batch.response_mask.sum(-1).min() >= 1
    rewards.score(batch)
    assert batch.scores.shape == (32,) and set(batch.reward_terms) == {"exact_match"}
    expected = [float(r.strip() == a) for r, a in zip(batch.responses, batch.answers)]
    assert batch.reward_terms["exact_match"].tolist() == expected


def test_reference_matches_vllm_before_training(groups):
    _, _, rollout, _, reference, rows = groups
    batch = rollout.generate(rows, list(range(8)), n=2)
    ref = reference.logprobs(batch)
    mask = batch.response_mask.bool()
    assert (ref[mask] - batch.rollout_logprobs[mask]).abs().max() < 1e-4


def test_train_sync_then_vllm_logprobs_match_learner(groups):
    """One optimizer step on 2 FSDP ranks, a weight sync, then vLLM samples under the new weights:
    vLLM's sampling log-probs must equal the learner's log-probs of the same tokens (fp32, 1e-4)."""
    import ray

    cfg, learners, rollout, rewards, reference, rows = groups
    from algorithms.grpo import GRPO

    batch = rollout.generate(rows, list(range(8)), n=4)
    assert batch.policy_version.unique().tolist() == [0]
    rewards.score(batch)
    batch.ref_logprobs = reference.logprobs(batch)
    GRPO(cfg).compute_advantages(batch)
    batch.advantages = batch.advantages + torch.linspace(-1, 1, len(batch))  # a non-zero update for sure
    metrics = learners.train_step(batch)
    assert metrics["grad_norm"] > 0 and metrics["learner_tokens"] == batch.num_response_tokens

    rollout.update_weights(learners.state_dict_ref(), version=1)
    fresh = rollout.generate(rows, list(range(8)), n=4)
    assert fresh.policy_version.unique().tolist() == [1]
    # The learner's own log-probs of vLLM's tokens, computed on both ranks (each takes a half).
    parts = ray.get([r.logprobs.remote(p) for r, p in zip(learners.ranks, fresh.chunks(2))])
    learner_lp = torch.cat(parts)
    mask = fresh.response_mask.bool()
    diff = (learner_lp[mask] - fresh.rollout_logprobs[mask]).abs().max().item()
    assert diff < 1e-4, f"vLLM and learner log-probs differ by {diff}"
    # And the weights really changed: the reference (initial policy) now disagrees.
    ref = reference.logprobs(fresh)
    assert (ref[mask] - fresh.rollout_logprobs[mask]).abs().max().item() > 1e-3
