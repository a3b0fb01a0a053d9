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
import torch.utils.checkpoint

__all__ = [
    "KL_KINDS",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "chunked_logprobs",
    "IS_LEVELS",
    "entropy_from_logits",
    "kl_penalty",
    "logprob_gap",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "truncated_is_weights",
]

LOSS_AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)

KL_KINDS: tuple[str, ...] = ("k1", "k2", "k3", "abs")
IS_LEVELS: tuple[str, ...] = ("token", "sequence")
# verl's config names for the same estimators, accepted so verl configs port as-is.
_KL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # bool masks cannot be multiplied into float math without a cast; cast once here.
    return mask.to(like.dtype)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over entries where ``mask`` is 1 (all entries if ``dim`` is None).

    Masked entries are zeroed with ``torch.where`` (as verl does), so a NaN or inf
    in the padding never reaches the result.
    """
    kept = torch.where(mask.bool(), x, torch.zeros_like(x))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over masked entries (padding zeroed first, as in ``masked_sum``).

    Like verl's ``masked_mean`` but the denominator is clamped to at least one
    token instead of adding 1e-8, so an all-zero mask gives exactly 0 (never NaN),
    and a fully masked row (with ``dim=-1``) gives 0 for that row.
    """
    m = _as_mask(mask, x)
    if dim is None:
        return masked_sum(x, m) / m.sum().clamp(min=1)
    return masked_sum(x, m, dim=dim) / m.sum(dim=dim).clamp(min=1)


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
    """Reduce a per-token loss ``[B, T]`` to a scalar, as verl 0.9.1 ``core_algos.agg_loss`` (one rank).

    With m = mask, n_i = sum_t m[i, t] (tokens of row i), R = {i : n_i > 0} (rows
    with at least one token; fully masked rows are left out of every seq-mean)
    and T = loss.shape[-1] (the padded width of this batch):

    * ``token-mean``: sum_{i,t} loss*m / sum_i n_i -- every token weighs the same.
    * ``seq-mean-token-sum``: sum_{i in R} (sum_t loss[i]*m[i]) / |R|.
    * ``seq-mean-token-mean``: sum_{i in R} (sum_t loss[i]*m[i] / n_i) / |R|.
    * ``seq-mean-token-sum-norm``: sum_{i,t} loss*m / (|R| * T)
      (Dr. GRPO, Liu et al. 2025: a per-batch constant normaliser instead of the
      length). verl's default normaliser is also T = the mask's last dimension;
      its optional ``loss_scale_factor`` (a fixed constant) is not supported here.

    verl divides a row sum by n_i + 1e-8 in ``seq-mean-token-mean``; for n_i >= 1
    that equals n_i exactly in fp32. Deliberate difference from verl: when the
    divisor would be 0 (every row fully masked) the result is exactly 0, with zero
    gradient, instead of verl's 0/0 = NaN. Masked entries are multiplied by 0, so
    a NaN/inf *at a masked position* still propagates (verl's seq-mean modes do
    the same; its ``token-mean`` skips such entries). verl's ``dp_size`` /
    global-batch arguments (multi-rank normalisation) have no counterpart here.
    """
    m = _as_mask(mask, loss)
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}")
    if mode == "token-mean":
        total = m.sum()
        return masked_sum(loss, m) / torch.where(total > 0, total, torch.ones_like(total))
    row_sums = masked_sum(loss, m, dim=-1)  # [B]
    row_tokens = m.sum(dim=-1)  # [B]
    has_tokens = row_tokens > 0  # [B]; fully masked rows do not count as sequences
    num_rows = has_tokens.sum().clamp(min=1).to(loss.dtype)  # 0 rows -> every row sum is 0 -> result 0
    if mode == "seq-mean-token-sum":
        return row_sums.sum() / num_rows
    if mode == "seq-mean-token-mean":
        row_means = row_sums / torch.where(has_tokens, row_tokens, torch.ones_like(row_tokens))  # [B]
        return row_means.sum() / num_rows
    return row_sums.sum() / (num_rows * loss.shape[-1])  # seq-mean-token-sum-norm


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


def chunked_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk: int = 1024,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logprobs_from_logits`` and ``entropy_from_logits`` of ``logits = hidden @ weight.T + bias``, ``chunk`` rows
    at a time: ``([N], [N] or None)`` for ``hidden [N, H]``, ``weight [V, H]``, ``tokens [N]``.

    Only one chunk's ``[chunk, V]`` fp32 logits exist at once. With gradients on, each chunk runs under
    activation checkpointing (``torch.utils.checkpoint``, non-reentrant): its logits are recomputed in the
    backward pass instead of being kept, so the backward holds one chunk's logits at a time too.
    """
    def part(h, w, b, t):
        logits = torch.nn.functional.linear(h, w, b)
        return logprobs_from_logits(logits, t, temperature), (entropy_from_logits(logits, temperature)
                                                              if with_entropy else logits.new_zeros(0))

    grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    logprobs, entropy = [], []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], tokens[start:start + chunk]
        lp, ent = (torch.utils.checkpoint.checkpoint(part, h, weight, bias, t, use_reentrant=False) if grad
                   else part(h, weight, bias, t))
        logprobs.append(lp)
        entropy.append(ent)
    if not logprobs:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.cat(logprobs), (torch.cat(entropy) if with_entropy else None)


def topk_logprobs(logits: torch.Tensor, k: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest log-probs of ``softmax(logits / temperature)`` per row and their token ids, ``([N, k] fp32,
    [N, k] int32)`` for ``logits [N, V]``, largest first. ``k <= 0`` or ``k >= V``: the whole vocabulary. The
    log-probs are normalised over the whole vocabulary, so ``1 - sum(exp(.))`` is the mass left outside."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # [N, V]
    values, ids = logp.topk(logp.shape[-1] if k <= 0 else min(k, logp.shape[-1]), dim=-1)
    return values, ids.to(torch.int32)


def logprobs_at(logits: torch.Tensor, ids: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of ``softmax(logits / temperature)`` at given token ids and the log of the mass on every other
    id: ``([N, k], [N])`` for ``logits [N, V]`` and ``ids [N, k]`` (distinct within a row), fp32. The other mass is
    -inf (without a gradient) when the ids cover the vocabulary."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    total = torch.logsumexp(logits, dim=-1)  # [N]
    ids = ids.long()
    at = torch.gather(logits, -1, ids) - total.unsqueeze(-1)  # [N, k]
    if ids.shape[-1] >= logits.shape[-1]:
        return at, torch.full_like(total, float("-inf"))
    rest = logits.scatter(-1, ids, float("-inf"))  # every row keeps V - k > 0 finite entries
    return at, torch.logsumexp(rest, dim=-1) - total


def truncated_is_weights(
    logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor, level: str, cap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance-sampling weights of the learner's policy against the sampler's, ``[B, T]``, no gradient.

    With d = lp - lp_rollout (the log ratio of the policy the loss corrects
    towards over the one that generated the tokens):

    * ``token``: w[i, t] = min(exp(d[i, t]), cap)            (verl's token TIS)
    * ``sequence``: w[i, :] = min(exp(sum_t d[i, t]), cap)   (one weight per sample)

    The log ratio is clamped to [-20, 20] before ``exp``; padding gets weight 0.
    Metrics: ``mean_weight`` (over response tokens, after the cap) and
    ``clipped_frac`` (share of response tokens whose weight the cap lowered).
    """
    if level not in IS_LEVELS:
        raise ValueError(f"unknown importance-sampling level {level!r}; expected one of {IS_LEVELS}")
    m = _as_mask(mask, logprobs)
    with torch.no_grad():
        d = torch.where(m.bool(), logprobs - rollout_logprobs, torch.zeros_like(m))  # [B, T]
        if level == "sequence":
            d = d.sum(-1, keepdim=True).expand_as(m)  # [B, T]: the sequence's log ratio on each of its tokens
        raw = torch.exp(torch.clamp(d, min=-20.0, max=20.0))  # [B, T]
        weights = torch.clamp(raw, max=cap) * m  # [B, T]
        metrics = {"mean_weight": masked_mean(weights, m).item(),
                   "clipped_frac": masked_mean((raw > cap).to(m.dtype), m).item()}
    return weights, metrics


def logprob_gap(logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the learner's log-probs of the sampled tokens are from the sampler's, over response tokens.

    A gap that grows step after step is the sign of a broken weight sync.

    * ``abs_diff_mean`` / ``abs_diff_max``: |lp - lp_rollout|.
    * ``prob_diff_mean``: |p - p_rollout| (verl's ``rollout_probs_diff_mean``).
    * ``prob_ratio_mean``: the token probability ratio p / p_rollout.
    * ``token_mult_prob_error``: exp(|lp - lp_rollout|), whose mean is 1 for a perfect match (NeMo-RL's metric).
    """
    m = _as_mask(mask, logprobs)
    with torch.no_grad():
        d = torch.where(m.bool(), logprobs - rollout_logprobs, torch.zeros_like(logprobs))  # [B, T]
        return {"abs_diff_mean": masked_mean(d.abs(), m).item(),
                "abs_diff_max": d.abs().max().item() if d.numel() else 0.0,
                "prob_diff_mean": masked_mean((logprobs.exp() - rollout_logprobs.exp()).abs(), m).item(),
                "prob_ratio_mean": masked_mean(torch.exp(torch.clamp(d, -20.0, 20.0)), m).item(),
                "token_mult_prob_error": masked_mean(torch.exp(torch.clamp(d.abs(), max=20.0)), m).item()}
