"""Hand-computed checks for algorithms.advantages (verl core_algos semantics)."""

from collections import defaultdict

import torch

import algorithms
from algorithms.advantages import gae, group_advantages, last_token, reinforce_pp_returns, rloo_advantages


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# group "a": [1, 0, 1, 0]; group "b": singleton 5; group "c": all equal [2, 2, 2]
SCORES = torch.tensor([1.0, 0.0, 5.0, 1.0, 2.0, 0.0, 2.0, 2.0])
IDS = ["a", "a", "b", "a", "c", "a", "c", "c"]


def test_package_exports():
    for name in ["group_advantages", "gae", "rloo_advantages", "reinforce_pp_returns",
                 "policy_loss", "value_loss", "dpo_loss", "gspo_policy_loss"]:
        assert name in algorithms.__all__ and callable(getattr(algorithms, name))


# ---------------------------------------------------------------- GRPO


def test_group_advantages_hand_computed():
    adv = group_advantages(SCORES, IDS)
    # a: mean .5, unbiased var (4 * .25) / 3 = 1/3, std .5773503 -> +-.5 / .5773503 = +-.8660254
    # b: singleton -> mean 0, std 1 -> 5 / (1 + 1e-6)
    # c: all equal -> 0 / (0 + eps) = 0
    expected = [0.8660254, -0.8660254, 5.0 / (1 + 1e-6), 0.8660254, 0.0, -0.8660254, 0.0, 0.0]
    assert close(adv, expected)
    assert adv.shape == (8,) and adv.dtype == torch.float32
    assert not torch.isnan(adv).any()


def test_group_advantages_dr_grpo():
    adv = group_advantages(SCORES, IDS, norm_by_std=False)
    # s - mean: a -> +-.5, singleton b -> 5 - 0, c -> 0
    assert close(adv, [0.5, -0.5, 5.0, 0.5, 0.0, -0.5, 0.0, 0.0])


def test_group_advantages_all_equal_group_is_exactly_zero():
    adv = group_advantages(torch.tensor([0.3, 0.3, 0.3, 0.3]), [7, 7, 7, 7])
    assert torch.equal(adv, torch.zeros(4))


def test_group_advantages_tensor_ids_and_int_scores():
    ids = torch.tensor([10, 10, 3, 10, 4, 10, 4, 4])
    assert close(group_advantages(SCORES, ids), group_advantages(SCORES, IDS))
    out = group_advantages(torch.tensor([1, 0, 1, 0]), [0, 0, 0, 0])
    assert out.dtype == torch.float32  # int rewards become float
    assert close(out, [0.8660254, -0.8660254, 0.8660254, -0.8660254])


def _verl_grpo_reference(scores, index, eps=1e-6, norm=True):
    # Loop transcription of verl compute_grpo_outcome_advantage (per-sequence part).
    scores = scores.clone()
    id2score = defaultdict(list)
    for i in range(len(scores)):
        id2score[index[i]].append(scores[i])
    id2mean, id2std = {}, {}
    for k, v in id2score.items():
        if len(v) == 1:
            id2mean[k], id2std[k] = torch.tensor(0.0), torch.tensor(1.0)
        else:
            t = torch.stack(v)
            id2mean[k], id2std[k] = t.mean(), t.std()
    for i in range(len(scores)):
        s = scores[i] - id2mean[index[i]]
        scores[i] = s / (id2std[index[i]] + eps) if norm else s
    return scores


def test_group_advantages_matches_verl_loop():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, generator=g)
    index = [f"uid{int(i)}" for i in torch.randint(0, 15, (40,), generator=g)]  # some singletons
    for norm in (True, False):
        assert close(group_advantages(scores, index, norm_by_std=norm), _verl_grpo_reference(scores, index, norm=norm))


# ---------------------------------------------------------------- RLOO


def test_rloo_advantages():
    adv = rloo_advantages(SCORES, IDS)
    # a: s_i - mean(others): 1 - (0+1+0)/3 = 2/3 ; 0 - (1+1+0)/3 = -2/3
    # b: singleton -> the score itself (verl); c: all equal -> 0
    assert close(adv, [2 / 3, -2 / 3, 5.0, 2 / 3, 0.0, -2 / 3, 0.0, 0.0])
    assert adv.shape == (8,)


# ---------------------------------------------------------------- GAE


def _verl_gae_reference(rewards, values, mask, gamma, lam):
    # verl compute_gae_advantage_return, before its final masked_whiten.
    nextvalues, lastgaelam, out = 0, 0, []
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam_ = delta + gamma * lam * lastgaelam
        nextvalues = values[:, t] * mask[:, t] + (1 - mask[:, t]) * nextvalues
        lastgaelam = lastgaelam_ * mask[:, t] + (1 - mask[:, t]) * lastgaelam
        out.append(lastgaelam)
    adv = torch.stack(out[::-1], dim=1)
    return adv, adv + values


def test_gae_hand_computed_with_carried_values():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[2.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)  # gamma * lam = 0.25
    # row 0 (positions 1 and 3 masked; V_next / A_next carried through them):
    #   t=3 masked: delta = 0 - 4 = -4 discarded, carry (V_next=0, A=0)      -> A3 = 0
    #   t=2: delta = 1 + .5*0 - 3 = -2;  A2 = -2               (V_next := 3) -> A2 = -2
    #   t=1 masked: carry A = -2, V_next = 3                                  -> A1 = -2
    #   t=0: delta = 0 + .5*3 - 2 = -.5; A0 = -.5 + .25*(-2) = -1             -> A0 = -1
    # row 1 (no mask):
    #   t=3: delta = -4, A3 = -4; t=2: delta = 1 + .5*4 - 3 = 0, A2 = .25*(-4) = -1
    #   t=1: delta = 0 + .5*3 - 2 = -.5, A1 = -.5 + .25*(-1) = -.75
    #   t=0: delta = 0 + .5*2 - 2 = -1,  A0 = -1 + .25*(-.75) = -1.1875
    assert close(adv, [[-1.0, -2.0, -2.0, 0.0], [-1.1875, -0.75, -1.0, -4.0]])
    # returns = A + V (advantages are *not* whitened)
    assert close(ret, [[1.0, 0.0, 1.0, 4.0], [0.8125, 1.25, 2.0, 0.0]])
    assert adv.shape == ret.shape == (2, 4)


def test_gae_gamma_lam_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert close(ret, [[6.0, 5.0, 3.0]])  # reward-to-go: 1+2+3, 2+3, 3
    assert close(adv, [[5.5, 4.5, 2.5]])


def test_gae_matches_verl_exactly():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    mask = (torch.rand(4, 9, generator=g) > 0.3).float()
    adv, ret = gae(rewards, values, mask.bool(), gamma=0.99, lam=0.95)
    ref_adv, ref_ret = _verl_gae_reference(rewards, values, mask, 0.99, 0.95)
    assert torch.equal(adv, ref_adv) and torch.equal(ret, ref_ret)


def test_gae_no_grad():
    values = torch.zeros(1, 2, requires_grad=True)
    adv, ret = gae(torch.ones(1, 2), values, torch.ones(1, 2), 1.0, 1.0)
    assert not adv.requires_grad and not ret.requires_grad


# ---------------------------------------------------------------- REINFORCE++


def test_last_token_is_the_last_one_in_a_holed_mask():
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0] * 6])
    assert last_token(mask).tolist() == [4, 2, 0]  # not mask.sum(-1) - 1 = [2, 2, -1]


def test_reinforce_pp_returns():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = reinforce_pp_returns(rewards, mask, gamma=0.5)
    # row 0: G = [.25, .5, 1]
    # row 1: position 2 is padding, skipped (its 5 is no response token's reward): G2 = 0 carried, G1 = 2, G0 = 1
    assert close(ret, [[0.25, 0.5, 1.0], [1.0, 2.0, 0.0]])
    # whiten the 5 masked returns [.25, .5, 1, 1, 2]: mean .95,
    # unbiased var (.49 + .2025 + .0025 + .0025 + 1.1025) / 4 = .45, std .6708204
    # padding position -> 0
    assert close(adv, [[-1.0434984, -0.6708204, 0.0745356], [0.0745356, 1.5652476, 0.0]])
