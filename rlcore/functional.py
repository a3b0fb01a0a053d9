"""Pure tensor helpers shared by the RL losses and advantage estimators.

Conventions (used throughout ``rlcore`` and ``algorithms``):

* ``[B]``    one value per sequence.
* ``[B, T]`` one value per response token; ``mask`` is 1 on response tokens and
  0 on padding (float or bool; it is cast to the value dtype before use).

Most functions mirror ``verl/utils/torch_functional.py`` and
``verl/trainer/ppo/core_algos.py`` (volcengine/verl). Deliberate differences are
called out in the docstrings.
"""

from __future__ import annotations

import torch

__all__ = [
    "KL_KINDS",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "entropy_from_logits",
    "kl_penalty",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
]

LOSS_AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3", "abs")
# verl's config names for the same estimators, accepted so verl configs port as-is.
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # bool masks cannot be multiplied into float math without a cast; cast once here.
    return mask.to(like.dtype)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over entries where ``mask`` is 1 (all entries if ``dim`` is None)."""
    m = _as_mask(mask, x)
    if dim is None:
        return (x * m).sum()
    return (x * m).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over masked entries.

    Like verl's ``masked_mean`` but the denominator is clamped to at least one
    token instead of adding 1e-8, so an all-zero mask gives exactly 0 (never NaN),
    and a fully masked row (with ``dim=-1``) gives 0 for that row.
    """
    m = _as_mask(mask, x)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Masked variance over all masked entries (scalar).

    ``unbiased=True`` applies Bessel's correction n / (n - 1), as verl does.
    verl raises when n <= 1; here the correction is skipped instead (variance 0
    for a single token), so whitening a one-token batch yields 0, not an error.
    """
    m = _as_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        n = m.sum()
        # Bessel factor n / (n - 1) only when n > 1; the clamp keeps the unused branch finite.
        var = torch.where(n > 1, var * n / (n - 1).clamp(min=1), var)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to zero mean / unit (unbiased) variance over masked entries.

    verl ``masked_whiten``: ``(x - mean) * rsqrt(var + 1e-8)``; with
    ``shift_mean=False`` the mean is added back (only the scale changes).
    Padding positions are transformed too; callers multiply by the mask if needed.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)  # [B, T]
    if not shift_mean:
        whitened = whitened + mean
    return whitened


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimators between the policy and a reference, ``[B, T]``.

    See J. Schulman, "Approximating KL divergence" (2020), http://joschu.net/blog/kl-approx.html
    and verl ``core_algos.kl_penalty``. With d = lp - ref:

    * ``k1``: d                      (unbiased, high variance, can be negative)
    * ``abs``: |d|
    * ``k2``: 0.5 * d**2
    * ``k3``: exp(-d) + d - 1        (verl ``low_var_kl``; unbiased, always >= 0)
      with ``-d`` clamped to [-20, 20] before exp and the result clamped to
      [-10, 10], exactly as verl does for numerical stability.

    verl's names ``kl``/``mse``/``low_var_kl`` are accepted as aliases.
    """
    kind = _KL_ALIASES.get(kind, kind)
    if kind == "k1":
        return logprobs - ref_logprobs
    if kind == "abs":
        return (logprobs - ref_logprobs).abs()
    if kind == "k2":
        return 0.5 * (logprobs - ref_logprobs).square()
    if kind == "k3":
        d = torch.clamp(ref_logprobs - logprobs, min=-20.0, max=20.0)  # log(ref/pi), bounded so exp can't overflow
        kl = torch.exp(d) - d - 1
        return torch.clamp(kl, min=-10.0, max=10.0)
    raise ValueError(f"unknown KL kind {kind!r}; expected one of {KL_KINDS} (or aliases {tuple(_KL_ALIASES)})")


def aggregate_loss(loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean") -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar (verl ``core_algos.agg_loss``).

    * ``token-mean``: sum(loss*mask) / sum(mask) -- every token weighs the same.
    * ``seq-mean-token-sum``: per-sequence masked sum, then mean over the B sequences.
    * ``seq-mean-token-mean``: per-sequence masked mean, then mean over *all* B
      sequences (verl behaviour: the divisor is B even if a row is fully masked;
      such a row contributes 0 -- its denominator is clamped to 1 -- never NaN).
    * ``seq-mean-token-sum-norm``: sum(loss*mask) / (B * T) with T = loss.shape[-1]
      (Dr. GRPO, Liu et al. 2025: a constant normaliser removes the length bias;
      matches current verl, which divides each sequence sum by T then averages over B).
    """
    m = _as_mask(mask, loss)
    if mode == "token-mean":
        return masked_mean(loss, m)
    if mode == "seq-mean-token-sum":
        return masked_sum(loss, m, dim=-1).mean()  # [B] -> scalar
    if mode == "seq-mean-token-mean":
        return masked_mean(loss, m, dim=-1).mean()  # [B] -> scalar
    if mode == "seq-mean-token-sum-norm":
        num_seqs, max_len = loss.shape[0], loss.shape[-1]
        return masked_sum(loss, m) / (num_seqs * max_len)
    raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}")


def logprobs_from_logits(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(token) under ``softmax(logits / temperature)``, in fp32, ``[B, T]``.

    Computed as ``logit[token] - logsumexp(logits)`` rather than materialising a
    full ``log_softmax`` ``[B, T, V]`` tensor (verl ``logprobs_from_logits_v2`` idea):
    only the fp32 copy of the logits is allocated.
    """
    logits = logits.float()  # [B, T, V]; bf16 log-softmax loses too much precision
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, dim=-1, index=tokens.long().unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked - torch.logsumexp(logits, dim=-1)  # [B, T]


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` per position, fp32, ``[B, T]``.

    verl ``entropy_from_logits``: H = logsumexp(z) - sum(softmax(z) * z), which avoids
    computing log(p) for tiny probabilities.
    """
    logits = logits.float()  # [B, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)  # [B, T, V]
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)  # [B, T]
