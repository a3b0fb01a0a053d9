import random

import pytest
import torch

from actors.fsdp import shuffled_groups
from algorithms.dpo import DPO, OnlineDPO, best_worst_pairs
from algorithms.ppo import PPO, adaptive_kl_coef, token_rewards
from rlcore.config import ConfigError, load_config
from tests.test_batch import make


def test_token_rewards_put_score_on_last_token_minus_kl():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    r = token_rewards(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    assert torch.allclose(r, torch.tensor([[-0.05, -0.1, -0.15 + 1.0], [-0.25 + 2.0, 0.0, 0.0]]))


def test_adaptive_kl_moves_towards_target_within_20_percent():
    assert adaptive_kl_coef(0.1, kl=0.2, target=0.1, samples=100, horizon=100) == pytest.approx(0.12)  # error clipped to +0.2
    assert adaptive_kl_coef(0.1, kl=0.09, target=0.1, samples=50, horizon=100) == pytest.approx(0.1 * (1 - 0.1 * 0.5))


def test_ppo_advantages_are_whitened_gae_and_returns_target_values():
    cfg = load_config("launch/configs/ppo_arithmetic.yaml", ["algorithm.kl_target=0.01", "algorithm.lam=1.0"])
    batch = make([[1, 2], [3, 4]])
    batch.scores = torch.tensor([1.0, 0.0])
    batch.ref_logprobs = batch.rollout_logprobs.clone()  # KL 0
    batch.values = torch.zeros(2, 2)
    ppo = PPO(cfg)
    metrics = ppo.compute_advantages(batch)
    # gamma = lam = 1, values 0: returns are the score on every token
    assert batch.returns.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert torch.allclose(batch.advantages.mean(), torch.tensor(0.0), atol=1e-6)
    assert batch.advantages[0, 0] > 0 > batch.advantages[1, 0]
    assert metrics["kl_coef"] == 0.01 and ppo.kl_coef < 0.01  # observed KL 0 < target: the coefficient shrinks
    assert ppo.updates_policy(2) is False and ppo.updates_policy(3) is True  # critic_warmup_steps=2
    restored = PPO(cfg)
    restored.load_state_dict(ppo.state_dict())
    assert restored.kl_coef == ppo.kl_coef


def test_best_worst_pairs_skip_ties():
    scores = torch.tensor([0.0, 1.0, 0.5, 1.0, 1.0, 0.2, 0.9, 0.1])
    ids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    assert best_worst_pairs(scores, ids) == [1, 0, 6, 7]


def test_online_dpo_filter_builds_pairs():
    batch = make([[1]] * 4)
    batch.group_ids, batch.scores = torch.tensor([0, 0, 1, 1]), torch.tensor([0.0, 1.0, 1.0, 1.0])
    cfg = load_config("launch/configs/online_dpo_arithmetic.yaml")
    kept, dropped = OnlineDPO(cfg).filter_groups(batch)
    assert kept.scores.tolist() == [1.0, 0.0] and kept.group_ids.tolist() == [0, 0] and dropped is None


def test_dpo_loss_on_pairs():
    cfg = load_config("launch/configs/dpo_arithmetic.yaml", ["algorithm.dpo_beta=1.0"])
    batch = make([[1], [1], [1], [1]])
    batch.ref_logprobs = torch.zeros(4, 1)
    logprobs = torch.tensor([[1.0], [0.0], [0.0], [1.0]])  # pair 0 prefers chosen, pair 1 the rejected
    loss, metrics = DPO(cfg).loss(logprobs, torch.zeros(4, 1), batch)
    # sigmoid loss: mean(-logsigmoid(1), -logsigmoid(-1))
    expected = (-torch.nn.functional.logsigmoid(torch.tensor(1.0)) - torch.nn.functional.logsigmoid(torch.tensor(-1.0))) / 2
    assert loss.item() == pytest.approx(expected.item())
    assert metrics["reward_accuracy"] == 0.5 and metrics["margin"] == pytest.approx(0.0)


def test_dpo_validation():
    with pytest.raises(ConfigError, match="algorithm.dpo_loss='x' is not one of sigmoid"):
        load_config("launch/configs/dpo_arithmetic.yaml", ["algorithm.dpo_loss=x"])
    with pytest.raises(ConfigError, match="learner.micro_batch_size must keep chosen/rejected pairs whole"):
        load_config("launch/configs/dpo_arithmetic.yaml", ["learner.micro_batch_size=3"])
    with pytest.raises(ConfigError, match=r"must divide data.prompts_per_step × 2 \(samples per group of dpo\) = 64"):
        load_config("launch/configs/dpo_arithmetic.yaml", ["algorithm.mini_batch_size=48"])


def test_shuffled_groups_keeps_groups_whole():
    order = shuffled_groups(torch.tensor([5, 5, 7, 7, 9, 9]), random.Random(0))
    assert sorted(order) == list(range(6))
    assert all(order[i] // 2 == order[i + 1] // 2 for i in range(0, 6, 2))


def test_preference_loading_errors(tmp_path):
    from rlcore.data import DataError, load_preferences

    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3"}\n{"prompt": "2+2=", "chosen": "4"}\n')
    with pytest.raises(DataError, match=r"p.jsonl line 2: expected a non-empty string in 'rejected'"):
        load_preferences([f])
