"""Hand-computed checks for algorithms.losses."""

import math

import pytest
import torch

from algorithms.losses import dpo_loss, gspo_policy_loss, policy_loss, sequence_log_ratio, value_loss

E = math.e


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# ---------------------------------------------------------------- PPO policy loss


def test_policy_loss_positive_advantage_clipped():
    old = torch.zeros(1, 3)
    lp = old + 1.0  # ratio will be [e, e, e]
    loss, m = policy_loss(lp, old, torch.tensor([1.0]), torch.ones(1, 3))
    # max(-1 * e, -1 * clip(e, .8, 1.2)) = max(-2.718, -1.2) = -1.2 on every token
    assert close(loss, -1.2)
    assert close(m["clip_frac"], 1.0)
    assert close(m["approx_kl"], -1.0)  # mean(-log_ratio) = -1
    assert "dual_clip_frac" not in m
    assert all(isinstance(v, float) for v in m.values())


def test_policy_loss_negative_advantage_and_dual_clip():
    old = torch.zeros(1, 3)
    lp = old + 1.0  # ratio [e, e, e]
    mask = torch.ones(1, 3)
    adv = torch.tensor([-1.0])
    # plain PPO: max(e, clip(e, .8, 1.2)) = max(2.718, 1.2) = e -- unbounded in the ratio
    loss, m = policy_loss(lp, old, adv, mask)
    assert close(loss, E) and close(m["clip_frac"], 0.0)
    # dual clip c=2: min(e, -A * c) = min(2.718, 2) = 2 on every token
    loss, m = policy_loss(lp, old, adv, mask, dual_clip=2.0)
    assert close(loss, 2.0) and close(m["dual_clip_frac"], 1.0)
    # c=3 > e: bound not reached
    loss, m = policy_loss(lp, old, adv, mask, dual_clip=3.0)
    assert close(loss, E) and close(m["dual_clip_frac"], 0.0)


def test_dual_clip_ignores_positive_advantages():
    old = torch.zeros(2, 1)
    lp = torch.tensor([[1.0], [1.0]])  # ratio e for both rows
    adv = torch.tensor([1.0, -1.0])
    loss, m = policy_loss(lp, old, adv, torch.ones(2, 1), dual_clip=2.0, agg="seq-mean-token-sum")
    # row 0 (A=+1): -1.2 (upper clip, untouched by dual clip); row 1 (A=-1): min(e, 2) = 2
    assert close(loss, (-1.2 + 2.0) / 2)
    assert close(m["dual_clip_frac"], 0.5)  # only the negative-advantage token
    with pytest.raises(ValueError):
        policy_loss(lp, old, adv, torch.ones(2, 1), dual_clip=1.0)


def test_policy_loss_clip_higher_asymmetry():
    old = torch.zeros(1, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5]]))  # ratios [1.5, 0.5]
    mask = torch.ones(1, 2)
    # A = +1: upper bound 1 + .28: max(-1.5, -1.28) = -1.28
    loss_up, m = policy_loss(lp[:, :1], old[:, :1], torch.tensor([1.0]), mask[:, :1], clip_low=0.2, clip_high=0.28)
    assert close(loss_up, -1.28) and close(m["clip_frac"], 1.0)
    # A = -1: lower bound 1 - .2: max(.5, .8) = .8
    loss_lo, m = policy_loss(lp[:, 1:], old[:, 1:], torch.tensor([-1.0]), mask[:, 1:], clip_low=0.2, clip_high=0.28)
    assert close(loss_lo, 0.8) and close(m["clip_frac"], 1.0)
    # symmetric 0.2 would have clipped the first at 1.2 instead
    loss_sym, _ = policy_loss(lp[:, :1], old[:, :1], torch.tensor([1.0]), mask[:, :1])
    assert close(loss_sym, -1.2)


def test_policy_loss_seq_and_token_advantages_agree():
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 4, generator=g) * 0.1, torch.randn(3, 4, generator=g) * 0.1
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.ones(3, 4)
    a, ma = policy_loss(lp, old, adv, mask)
    b, mb = policy_loss(lp, old, adv[:, None].expand(3, 4), mask)
    assert close(a, b) and ma == mb


def test_policy_loss_gradient_on_policy():
    old = torch.zeros(1, 4)
    lp = torch.zeros(1, 4, requires_grad=True)  # ratio 1, clip inactive
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, _ = policy_loss(lp, old, torch.tensor([2.0]), mask)
    loss.backward()
    # loss = -(2 * r) averaged over 3 tokens -> dloss/dlp = -2/3 on tokens, 0 on padding
    assert close(lp.grad, [[-2 / 3, -2 / 3, -2 / 3, 0.0]])


def test_policy_loss_fully_masked_row_and_log_ratio_clamp():
    old = torch.zeros(2, 3)
    lp = torch.tensor([[0.0, 0.0, 0.0], [50.0, -50.0, 50.0]])  # row 1 is garbage padding
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, 1.0])
    for agg, expected in [
        # verl 0.9.1 agg_loss: the fully masked row is not a sequence; the seq-means divide by 1 row, not B = 2
        ("token-mean", -1.0),  # -1 * ratio 1 on 3 tokens
        ("seq-mean-token-mean", -1.0),  # (-3 / 3) / 1 row
        ("seq-mean-token-sum", -3.0),  # -3 / 1 row
        ("seq-mean-token-sum-norm", -1.0),  # -3 / (1 row * T=3)
    ]:
        loss, m = policy_loss(lp, old, adv, mask, agg=agg)
        assert torch.isfinite(loss) and close(loss, expected), agg
        assert close(m["clip_frac"], 0.0) and close(m["approx_kl"], 0.0)
    # log ratio is clamped at +-20 before exp: exp(50) would be 5e21
    loss, m = policy_loss(lp[1:], old[1:], torch.tensor([-1.0]), torch.ones(1, 3))
    # ratios [e^20, e^-20, e^20] with A = -1 -> max(r, clip(r)) = [e^20, .8, e^20]
    assert close(loss / math.exp(20), 2 / 3, tol=1e-4)
    assert close(m["approx_kl"], -20.0 / 3)  # mean(-[20, -20, 20])


# ---------------------------------------------------------------- value loss


def test_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.2, -1.0]])
    old = torch.zeros(1, 3)
    returns = torch.tensor([[2.0, 0.5, 0.5]])
    loss, m = value_loss(values, old, returns, torch.ones(1, 3), clip=0.5)
    # clipped v = [.5, .2, -.5]; (v-R)^2 = [1, .09, 2.25]; (vc-R)^2 = [2.25, .09, 1]
    # max = [2.25, .09, 2.25]; 0.5 * mean = 0.5 * 4.59 / 3 = 0.765
    assert close(loss, 0.765)
    assert close(m["vf_clip_frac"], 1 / 3)  # only the first token used the clipped branch
    # no clipping: 0.5 * (1 + .09 + 2.25) / 3 = 0.556667
    loss_nc, m_nc = value_loss(values, old, returns, torch.ones(1, 3), clip=None)
    assert close(loss_nc, 0.5 * 3.34 / 3) and m_nc["vf_clip_frac"] == 0.0


# ---------------------------------------------------------------- DPO

# chosen -1, rejected -3, both refs -2 -> logits = (-1 + 2) - (-3 + 2) = 2; beta .5 -> beta*logits = 1
# -logsigmoid(1) = softplus(-1) = 0.3132617 ; -logsigmoid(-1) = softplus(1) = 1.3132617
DPO_IN = [torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0])]


@pytest.mark.parametrize(
    "kind, beta, eps, expected",
    [
        ("sigmoid", 0.5, 0.0, 0.3132617),  # softplus(-1)
        ("sigmoid", 0.5, 0.1, 0.4132617),  # .9 * .3132617 + .1 * 1.3132617
        ("robust", 0.5, 0.1, 0.1882617),  # (.9 * .3132617 - .1 * 1.3132617) / .8
        ("hinge", 0.5, 0.0, 0.0),  # relu(1 - 1)
        ("hinge", 0.25, 0.0, 0.5),  # relu(1 - .5)
        ("ipo", 0.5, 0.0, 1.0),  # (2 - 1/(2*.5))^2 = (2 - 1)^2
        ("ipo", 0.25, 0.0, 0.0),  # (2 - 2)^2
    ],
)
def test_dpo_loss_kinds(kind, beta, eps, expected):
    losses, cr, rr = dpo_loss(*DPO_IN, beta=beta, kind=kind, label_smoothing=eps)
    assert losses.shape == (1,)
    assert close(losses, [expected])
    assert close(cr, [beta * 1.0]) and close(rr, [beta * -1.0])  # beta * (logp - ref)


def test_dpo_rewards_detached_and_gradient():
    chosen = torch.tensor([-1.0], requires_grad=True)
    losses, cr, rr = dpo_loss(chosen, *DPO_IN[1:], beta=0.5)
    assert not cr.requires_grad and not rr.requires_grad
    losses.sum().backward()
    # d/dc softplus(-beta*logits) = -beta * sigmoid(-1) = -.5 * .2689414
    assert close(chosen.grad, [-0.1344707])


def test_dpo_errors():
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(*DPO_IN, kind="kto")
    with pytest.raises(ValueError):
        dpo_loss(*DPO_IN, kind="robust", label_smoothing=0.5)


# ---------------------------------------------------------------- GSPO


def test_sequence_log_ratio():
    lp = torch.tensor([[0.3, 0.1, 9.0], [5.0, 5.0, 5.0]])
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # row 0: (.3 + .1) / 2 = .2 (padding 9.0 ignored); row 1 fully masked -> 0
    assert close(sequence_log_ratio(lp, old, mask), [0.2, 0.0])


def test_gspo_forward_uses_sequence_ratio():
    lp = torch.tensor([[0.3, 0.1, 9.0]])
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # every token's ratio is exp(.2) = 1.2214 > 1 + 4e-4 -> clipped to 1.0004; A = 1
    loss, m = gspo_policy_loss(lp, old, torch.tensor([1.0]), mask)
    assert close(loss, -1.0004)
    assert close(m["clip_frac"], 1.0)
    assert close(m["approx_kl"], -0.2)  # token-level mean(-(lp - old)) = -(.3 + .1)/2


def test_gspo_gradient_matches_sequence_objective():
    g = torch.Generator().manual_seed(0)
    old = torch.randn(3, 5, generator=g) * 0.1
    lp0 = old + torch.randn(3, 5, generator=g) * 0.05
    mask = torch.tensor([[1.0] * 5, [1.0, 1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -2.0, 0.5])
    lp = lp0.clone().requires_grad_(True)
    loss, _ = gspo_policy_loss(lp, old, adv, mask, clip_low=10.0, clip_high=10.0)  # clipping off
    loss.backward()
    # paper objective without clipping: mean_i(-A_i * s_i), s_i = exp(mean_t(lp - old))
    lp_ref = lp0.clone().requires_grad_(True)
    s = torch.exp(sequence_log_ratio(lp_ref, old, mask))
    ref = (-adv * s).mean()
    ref.backward()
    assert close(loss, ref, tol=1e-6)
    assert close(lp.grad, lp_ref.grad, tol=1e-6)
    assert (lp.grad[mask == 0] == 0).all()


def test_losses_accept_bool_masks():
    g = torch.Generator().manual_seed(2)
    lp, old = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([0.7, -1.3])
    for fn in (policy_loss, gspo_policy_loss):
        a, ma = fn(lp, old, adv, mask)
        b, mb = fn(lp, old, adv, mask.bool())
        assert close(a, b) and ma == mb
    a, _ = value_loss(lp, old, adv[:, None], mask)
    b, _ = value_loss(lp, old, adv[:, None], mask.bool())
    assert close(a, b)
