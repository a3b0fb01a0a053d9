"""Hand-computed checks for rlcore.functional."""

import math

import pytest
import torch

from rlcore.functional import (
    LOSS_AGG_MODES,
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
)

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # [2, 3]
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # [2, 3]


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# ---------------------------------------------------------------- masked reductions


def test_masked_sum_and_mean():
    assert masked_sum(X, M).item() == 7.0  # 1 + 2 + 4
    assert close(masked_mean(X, M), 7.0 / 3)  # 7 / 3 tokens
    assert close(masked_sum(X, M, dim=-1), [3.0, 4.0])  # [1+2, 4]
    assert close(masked_mean(X, M, dim=-1), [1.5, 4.0])  # [3/2, 4/1]
    assert close(masked_mean(X, M, dim=0), [2.5, 2.0, 0.0])  # [(1+4)/2, 2/1, 0/clamp(0)=0]


def test_masked_mean_bool_mask_matches_float():
    assert close(masked_mean(X, M.bool()), masked_mean(X, M))
    assert close(masked_mean(X, M.bool(), dim=-1), [1.5, 4.0])


def test_masked_mean_all_zero_mask_is_zero_not_nan():
    zero = torch.zeros_like(M)
    assert masked_mean(X, zero).item() == 0.0
    row = masked_mean(X, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), dim=-1)
    assert close(row, [1.5, 0.0])  # fully masked row -> 0
    assert not torch.isnan(row).any()


def test_masked_var_is_unbiased():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])  # the 100 is padding
    m = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    # mean 2.5; squared deviations 2.25 + .25 + .25 + 2.25 = 5
    assert close(masked_var(x, m), 5.0 / 3)  # unbiased: 5 / (4 - 1)
    assert close(masked_var(x, m, unbiased=False), 1.25)  # biased: 5 / 4


def test_masked_whiten_uses_unbiased_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    # (x - 2.5) / sqrt(5/3) = [-1.5, -.5, .5, 1.5] * 0.7745967
    assert close(w[0, :4], [-1.1618950, -0.3872983, 0.3872983, 1.1618950])
    # a biased variance would give +-1.5/sqrt(1.25) = +-1.3416 instead
    assert not close(w[0, 0], -1.5 / math.sqrt(1.25), tol=1e-3)
    # shift_mean=False only rescales: mean 2.5 added back
    w2 = masked_whiten(x, m, shift_mean=False)
    assert close(w2[0, :4], [1.3381050, 2.1127017, 2.8872983, 3.6618950])


def test_masked_whiten_single_token_no_nan():
    w = masked_whiten(torch.tensor([[3.0, 7.0]]), torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(w).all()
    assert w[0, 0].item() == 0.0  # (3 - 3) * rsqrt(0 + 1e-8)


# ---------------------------------------------------------------- KL estimators


def test_kl_penalty_kinds():
    lp = torch.tensor([[0.0, 1.0, -1.0]])
    ref = torch.zeros(1, 3)
    assert close(kl_penalty(lp, ref, "k1"), [[0.0, 1.0, -1.0]])  # lp - ref
    assert close(kl_penalty(lp, ref, "abs"), [[0.0, 1.0, 1.0]])  # |lp - ref|
    assert close(kl_penalty(lp, ref, "k2"), [[0.0, 0.5, 0.5]])  # 0.5 * d^2
    # k3: d = ref - lp = [0, -1, 1]; exp(d) - d - 1 = [0, e^-1, e - 2]
    assert close(kl_penalty(lp, ref, "k3"), [[0.0, 0.3678794, 0.7182818]])
    assert kl_penalty(lp, ref, "k3").shape == (1, 3)


def test_kl_penalty_verl_aliases():
    lp, ref = torch.tensor([0.5]), torch.tensor([0.0])
    assert close(kl_penalty(lp, ref, "low_var_kl"), kl_penalty(lp, ref, "k3"))
    assert close(kl_penalty(lp, ref, "kl"), kl_penalty(lp, ref, "k1"))
    assert close(kl_penalty(lp, ref, "mse"), kl_penalty(lp, ref, "k2"))


def test_k3_clamping():
    ref = torch.zeros(5)
    lp = torch.tensor([-2.0, -3.0, 15.0, -1000.0, 1000.0], requires_grad=True)
    kl = kl_penalty(lp, ref, "k3")
    # d = ref - lp = [2, 3, -15, 1000->20, -1000->-20]
    # e^2 - 3 = 4.389056 (inside); e^3 - 4 = 16.09 -> 10; e^-15 + 14 -> 10;
    # e^20 - 21 -> 10; e^-20 + 19 -> 10
    assert close(kl, [4.3890561, 10.0, 10.0, 10.0, 10.0])
    kl.sum().backward()
    # without the +-20 clamp on d, exp(1000) = inf and the grad would be 0 * inf = NaN
    assert torch.isfinite(lp.grad).all()
    assert close(lp.grad[1:], [0.0, 0.0, 0.0, 0.0])  # clamped outputs pass no gradient
    assert close(lp.grad[0], 1.0 - math.exp(2.0))  # d/dlp (e^d - d - 1) = -(e^d - 1)


def test_kl_penalty_unknown_kind():
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


# ---------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 7.0 / 3),  # (1 + 2 + 4) / 3 tokens
        ("seq-mean-token-sum", 3.5),  # ((1+2) + 4) / 2 seqs
        ("seq-mean-token-mean", 2.75),  # ((1+2)/2 + 4/1) / 2 = (1.5 + 4) / 2
        ("seq-mean-token-sum-norm", 7.0 / 6),  # 7 / (2 seqs * 3 max tokens)
    ],
)
def test_aggregate_loss_modes(mode, expected):
    assert close(aggregate_loss(X, M, mode), expected)


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 1.5),  # (1 + 2) / 2 tokens
        # verl 0.9.1 agg_loss: seq-means divide by the rows with >= 1 token (here 1, not B = 2)
        ("seq-mean-token-sum", 3.0),  # (1+2) / 1 row
        ("seq-mean-token-mean", 1.5),  # ((1+2)/2) / 1 row
        ("seq-mean-token-sum-norm", 1.0),  # 3 / (1 row * T=3)
    ],
)
def test_aggregate_loss_fully_masked_row(mode, expected):
    m = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = aggregate_loss(X, m, mode)
    assert not torch.isnan(out)
    assert close(out, expected)


# Three rows of lengths 3, 0, 1 (the empty row in the middle); padding holds large values that must not count.
X3 = torch.tensor([[1.0, 2.0, 6.0, 50.0], [7.0, 8.0, 9.0, 10.0], [4.0, 60.0, 70.0, 80.0]])  # [3, 4]
M3 = torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])  # [3, 4]


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token-mean", 13.0 / 4),  # (1+2+6 + 4) / 4 tokens = 3.25
        ("seq-mean-token-sum", 6.5),  # (9 + 4) / 2 non-empty rows (all-B would give 13/3)
        ("seq-mean-token-mean", 3.5),  # (9/3 + 4/1) / 2 = (3 + 4) / 2 (all-B would give 7/3)
        ("seq-mean-token-sum-norm", 13.0 / 8),  # 13 / (2 rows * T=4) = 1.625 (all-B: 13/12)
    ],
)
def test_aggregate_loss_ragged_with_empty_row(mode, expected):
    assert close(aggregate_loss(X3, M3, mode), expected)
    assert close(aggregate_loss(X3, M3.bool(), mode), expected)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_all_rows_masked_is_zero(mode):
    x = X3.clone().requires_grad_(True)
    out = aggregate_loss(x, torch.zeros_like(M3), mode)
    assert out.item() == 0.0  # verl gives 0/0 = NaN here; we give exactly 0
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))  # finite, and nothing flows into padding


def test_aggregate_loss_seq_mean_grad_ignores_empty_row():
    x = X3.clone().requires_grad_(True)
    aggregate_loss(x, M3, "seq-mean-token-mean").backward()
    # d/dx of (row0_sum/3 + row2_sum/1) / 2: 1/6 on row 0's tokens, 1/2 on row 2's token, 0 elsewhere
    expected = torch.tensor([[1 / 6, 1 / 6, 1 / 6, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]])
    assert close(x.grad, expected)


def test_aggregate_loss_modes_tuple_and_error():
    assert LOSS_AGG_MODES == ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        aggregate_loss(X, M, "token-sum")


def test_aggregate_loss_bool_mask_and_grad():
    x = X.clone().requires_grad_(True)
    aggregate_loss(x, M.bool(), "token-mean").backward()
    assert close(x.grad, M / 3)  # d(sum/3)/dx = mask / 3


# ---------------------------------------------------------------- logits helpers


def test_logprobs_from_logits_known_values():
    logits = torch.log(torch.tensor([[[1.0, 2.0, 1.0]]]))  # probs [.25, .5, .25]
    tokens = torch.tensor([[1]])
    assert close(logprobs_from_logits(logits, tokens), [[math.log(0.5)]])
    # temperature 2: probs ∝ sqrt([1, 2, 1]) -> p1 = 1.41421 / 3.41421 = 0.414214
    assert close(logprobs_from_logits(logits, tokens, temperature=2.0), [[math.log(0.41421356)]])


def test_logprobs_from_logits_matches_log_softmax_and_is_fp32():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    tokens = torch.randint(0, 11, (2, 5), generator=g)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    out = logprobs_from_logits(logits, tokens, temperature=0.7)
    assert out.shape == (2, 5) and out.dtype == torch.float32
    assert close(out, ref, tol=1e-5)
    out16 = logprobs_from_logits(logits.bfloat16(), tokens)
    assert out16.dtype == torch.float32 and out16.shape == (2, 5)


def test_entropy_from_logits():
    uniform = torch.zeros(1, 2, 4)
    assert close(entropy_from_logits(uniform), [[math.log(4), math.log(4)]])  # ln 4 = 1.386294
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert close(entropy_from_logits(peaked), [[0.0]], tol=1e-5)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 7, generator=g)
    p = torch.softmax(logits / 1.5, -1)
    ref = -(p * p.log()).sum(-1)  # textbook -sum p log p
    out = entropy_from_logits(logits, temperature=1.5)
    assert out.shape == (3, 4) and out.dtype == torch.float32
    assert close(out, ref, tol=1e-5)
    assert entropy_from_logits(logits.bfloat16()).dtype == torch.float32
