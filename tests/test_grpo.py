import torch

from algorithms import ALGORITHMS, get_algorithm_class
from algorithms.grpo import GRPO
from rlcore.config import load_config
from tests.test_batch import make


def test_registry():
    assert ALGORITHMS["grpo"] is GRPO and get_algorithm_class("grpo") is GRPO


def test_advantages_are_group_relative():
    batch = make([[1]] * 4)
    batch.group_ids = torch.tensor([7, 7, 9, 9])
    batch.scores = torch.tensor([1.0, 0.0, 1.0, 1.0])
    GRPO(load_config()).compute_advantages(batch)
    # group 7: mean 0.5, unbiased std sqrt(0.5) -> ±0.5/0.7071; group 9: all equal -> 0
    s = 0.5 / (0.5 ** 0.5 + 1e-6)
    assert torch.allclose(batch.advantages, torch.tensor([s, -s, 0.0, 0.0]))


def test_dr_grpo_skips_std():
    batch = make([[1]] * 2)
    batch.group_ids = torch.tensor([0, 0])
    batch.scores = torch.tensor([1.0, 0.0])
    GRPO(load_config(None, ["algorithm.norm_by_std=false"])).compute_advantages(batch)
    assert batch.advantages.tolist() == [0.5, -0.5]


def test_loss_on_policy_is_minus_mean_advantage_plus_kl():
    cfg = load_config(None, ["algorithm.kl_coef=0.5", "algorithm.kl_kind=k1"])
    batch = make([[1, 2], [3]])
    batch.advantages = torch.tensor([1.0, -2.0])
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    batch.old_logprobs = lp.clone()
    batch.ref_logprobs = lp - 0.1  # k1 = lp - ref = 0.1 on every token
    loss, metrics = GRPO(cfg).loss(lp, torch.zeros_like(lp), batch)
    # token-mean over 3 tokens of -A*ratio (ratio 1): -(1 + 1 - 2)/3 = 0; plus 0.5 * 0.1
    assert abs(loss.item() - 0.05) < 1e-6
    assert abs(metrics["kl"] - 0.1) < 1e-6 and metrics["clip_frac"] == 0.0
