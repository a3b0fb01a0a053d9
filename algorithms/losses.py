"""Policy / value / preference losses.

References:
* PPO clipped surrogate -- Schulman et al. 2017, arXiv:1707.06347; code follows verl
  ``core_algos.compute_policy_loss_vanilla`` (itself adapted from TRL's PPO trainer).
* Clip-higher (separate low/high epsilon) -- DAPO, Yu et al. 2025, arXiv:2503.14476.
* Dual clip -- Ye et al. 2020, arXiv:1912.09729.
* GSPO -- Zheng et al. 2025, arXiv:2507.18071; verl ``compute_policy_loss_gspo``.
* DPO and variants -- Rafailov et al. 2023; TRL ``DPOTrainer.dpo_loss``.
* SFT -- the masked negative log-likelihood of TRL's ``SFTTrainer`` with ``assistant_only_loss``.
* On-policy distillation -- Agarwal et al. 2024 (GKD), arXiv:2306.13649; Lu and Thinking Machines Lab 2025,
  "On-Policy Distillation" (the per-token reverse KL as a policy-gradient reward, as in Tinker's cookbook).
* Outcome reward model -- the Bradley-Terry pairwise loss of Ouyang et al. 2022 (InstructGPT), arXiv:2203.02155
  (Bradley and Terry 1952); TRL ``RewardTrainer``.
* Process reward model -- per-step binary cross-entropy, Lightman et al. 2023 ("Let's Verify Step by Step"),
  arXiv:2305.20050, with the soft labels of Math-Shepherd, Wang et al. 2023, arXiv:2312.08935.
* Token-level knowledge distillation -- Hinton et al. 2015, "Distilling the Knowledge in a Neural Network",
  arXiv:1503.02531 (forward KL between temperature-softened distributions, scaled by T^2); the generalized
  Jensen-Shannon divergence of GKD, Agarwal et al. 2024, arXiv:2306.13649.

Policy/value losses return ``(loss, metrics)`` where ``loss`` is a scalar tensor
and ``metrics`` maps names to python floats (detached).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlcore.functional import aggregate_loss, masked_mean

__all__ = ["KD_DIVERGENCES", "KD_TAILS", "bradley_terry_loss", "dpo_loss", "gspo_policy_loss", "kd_distributions",
           "kd_divergence", "kd_loss", "policy_loss", "reverse_kl_loss", "sequence_log_ratio", "sft_loss",
           "step_label_loss", "value_loss"]

DPO_KINDS: tuple[str, ...] = ("sigmoid", "robust", "hinge", "ipo")
KD_TAILS: tuple[str, ...] = ("bucket", "renormalize")
KD_DIVERGENCES: tuple[str, ...] = ("forward", "reverse", "jsd")


def _token_advantages(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # Outcome estimators give one advantage per sequence [B]; every token shares it.
    return advantages.unsqueeze(-1) if advantages.dim() == like.dim() - 1 else advantages


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with clip-higher and optional dual clip.

    Per token, with r = exp(clamp(lp - lp_old, -20, 20)) and advantage A:

        L = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))          (PPO / DAPO)
        L = min(L, -A * c)  where A < 0, if ``dual_clip=c`` (c > 1)       (dual clip)

    The dual clip bounds the loss when A < 0 and r is huge (stale off-policy
    tokens), which the plain PPO max() leaves unbounded. verl always applies it
    (c=3); here it is opt-in.

    ``weights`` (``[B, T]``, no gradient), when given, multiply each token's
    loss after the clipping: the off-policy correction (``truncated_is_weights``).

    Shapes: ``logprobs``/``old_logprobs``/``mask`` ``[B, T]``; ``advantages`` ``[B]`` or ``[B, T]``.
    Metrics: ``clip_frac`` (share of masked tokens where the clipped branch is
    larger, verl ``pg_clipfrac``), ``approx_kl`` (masked mean of -log r, verl
    ``ppo_kl``), ``dual_clip_frac`` (verl ``pg_clipfrac_lower``) when dual clip is on.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    adv = _token_advantages(advantages, logprobs)  # [B, T] or [B, 1]
    log_ratio = torch.clamp(logprobs - old_logprobs, min=-20.0, max=20.0)  # [B, T]; exp stays finite
    ratio = torch.exp(log_ratio)  # [B, T]

    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)  # [B, T]
    losses = torch.maximum(unclipped, clipped)  # [B, T]; pessimistic bound

    metrics: dict[str, float] = {}
    with torch.no_grad():
        metrics["clip_frac"] = masked_mean(torch.gt(clipped, unclipped).float(), mask).item()
        metrics["approx_kl"] = masked_mean(-log_ratio, mask).item()

    if dual_clip is not None:
        lower_bound = -adv * dual_clip  # [B, T]
        negative = (adv < 0).expand_as(losses)  # [B, T]
        with torch.no_grad():
            metrics["dual_clip_frac"] = masked_mean(
                (torch.gt(losses, lower_bound) & negative).float(), mask
            ).item()
        losses = torch.where(negative, torch.minimum(losses, lower_bound), losses)
    if weights is not None:
        losses = losses * weights

    return aggregate_loss(losses, mask, agg), metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.5,
    agg: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss, all inputs ``[B, T]`` (verl ``compute_value_loss``, from TRL).

        L = 0.5 * max((v - R)^2, (clip(v, v_old - clip, v_old + clip) - R)^2)

    The clipped term stops the critic moving far from the values used to build
    the advantages. ``clip=None`` disables clipping. Metric ``vf_clip_frac``.
    """
    losses_unclipped = (values - returns) ** 2  # [B, T]
    if clip is None:
        losses_clipped = losses_unclipped
    else:
        v_clipped = torch.clamp(values, old_values - clip, old_values + clip)  # [B, T]
        losses_clipped = (v_clipped - returns) ** 2  # [B, T]
    losses = 0.5 * torch.maximum(losses_unclipped, losses_clipped)  # [B, T]
    with torch.no_grad():
        clip_frac = masked_mean(torch.gt(losses_clipped, losses_unclipped).float(), mask).item()
    return aggregate_loss(losses, mask, agg), {"vf_clip_frac": clip_frac}


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    kind: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO-family losses per pair, as in TRL ``DPOTrainer.dpo_loss``. All inputs ``[B]``.

    logits = (chosen - ref_chosen) - (rejected - ref_rejected), eps = label_smoothing:

    * ``sigmoid`` (DPO, Rafailov et al. 2023; cDPO when eps > 0):
      -logsigmoid(beta*logits)(1-eps) - logsigmoid(-beta*logits) eps
    * ``robust`` (rDPO, Chowdhury et al. 2024):
      (-logsigmoid(beta*logits)(1-eps) + logsigmoid(-beta*logits) eps) / (1 - 2 eps)
    * ``hinge`` (SLiC, Zhao et al. 2023): relu(1 - beta*logits)
    * ``ipo`` (Azar et al. 2023): (logits - 1/(2 beta))^2. TRL feeds IPO
      *length-averaged* log-probs; the caller must do the same.

    Returns ``(losses [B], chosen_rewards [B], rejected_rewards [B])``; rewards are
    beta * (logp - ref_logp), detached (they are for logging only).
    """
    logits = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)  # [B]
    eps = label_smoothing
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif kind == "robust":
        if not 0.0 <= eps < 0.5:
            raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {eps}")
        losses = (-F.logsigmoid(beta * logits) * (1 - eps) + F.logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    elif kind == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif kind == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss kind {kind!r}; expected one of {DPO_KINDS}")
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps).detach()  # [B]
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps).detach()  # [B]
    return losses, chosen_rewards, rejected_rewards


def sequence_log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's log sequence ratio: log s_i = mean over response tokens of (lp - lp_old), ``[B]``.

    s_i = (pi(y_i|x) / pi_old(y_i|x)) ** (1/|y_i|) -- length-normalised so that
    ratios of long and short answers live on the same scale (Zheng et al. 2025).
    A fully masked row gives 0 (ratio 1).
    """
    return masked_mean(logprobs - old_logprobs, mask, dim=-1)  # [B]


def gspo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    agg: str = "seq-mean-token-mean",
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO clipped surrogate on the sequence-level ratio (Zheng et al. 2025, arXiv:2507.18071).

    Per token the ratio is s_i,t = sg(s_i) * pi(y_t) / sg(pi(y_t)), i.e. in log
    space ``sg(log s_i) + lp_t - sg(lp_t)``: its value equals s_i for every token of
    the sequence, while its gradient is s_i * grad lp_t, so with the default
    ``seq-mean-token-mean`` aggregation the gradient is exactly the paper's
    A_i * grad s_i. The log ratio is clamped at 10 as verl does.

    Defaults ``clip_low=3e-4, clip_high=4e-4`` are the paper's; sequence ratios
    sit much closer to 1 than token ratios, hence the tiny range. ``weights`` as in ``policy_loss``.
    Metrics: ``clip_frac`` and ``approx_kl`` (token-level, as in verl).
    """
    adv = _token_advantages(advantages, logprobs)  # [B, T] or [B, 1]
    log_seq_ratio = sequence_log_ratio(logprobs, old_logprobs, mask)  # [B]
    log_ratio = logprobs - logprobs.detach() + log_seq_ratio.detach().unsqueeze(-1)  # [B, T]
    ratio = torch.exp(torch.clamp(log_ratio, max=10.0))  # [B, T]

    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)  # [B, T]
    losses = torch.maximum(unclipped, clipped)  # [B, T]
    if weights is not None:
        losses = losses * weights
    with torch.no_grad():
        metrics = {
            "clip_frac": masked_mean(torch.gt(clipped, unclipped).float(), mask).item(),
            "approx_kl": masked_mean(old_logprobs - logprobs, mask).item(),
        }
    return aggregate_loss(losses, mask, agg), metrics


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Supervised fine-tuning: the mean negative log-likelihood of the trained tokens (token-mean).

        L = -sum_{i,t} lp[i, t] * m[i, t] / sum_{i,t} m[i, t]

    ``logprobs`` ``[B, T]`` are the model's log-probs of the target tokens, ``mask`` ``[B, T]`` is 1 exactly
    on the tokens to learn (what the assistant wrote, ``rlcore.chat.encode_conversation``) and 0 on template
    tokens, other roles' turns and padding, which never reach the loss, not even as NaN. An all-zero mask gives 0.
    Metrics: ``sft_loss`` and ``tokens`` (trained tokens in the batch).
    """
    loss = -aggregate_loss(logprobs, mask, "token-mean")
    return loss, {"sft_loss": loss.item(), "tokens": float(mask.sum())}


def reverse_kl_loss(
    logprobs: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """On-policy distillation: the policy gradient of the reverse KL to a teacher, on the student's own samples.

    With lp the student's log-prob of its sampled token and lp_t the teacher's, k = lp - lp_t is the
    per-token estimate of KL(student || teacher) (Schulman's k1), and

        L = sum_{i,t} sg(k[i, t]) * lp[i, t] * w[i, t] * m[i, t] / sum_{i,t} m[i, t]      (token-mean)

    with sg the stop-gradient: dL/dlp = sg(k) w / N, the REINFORCE gradient with the per-token reward -k
    (no discount: each token is pushed by its own KL, as Tinker's on-policy distillation does). The value of L is
    not the KL; the metric ``reverse_kl`` is (the token mean of k). ``weights`` (``[B, T]``, no gradient), when
    given, multiply each token's loss: importance weights of the current student over the one that sampled
    (``rlcore.functional.truncated_is_weights``) when the update goes off-policy. All tensors ``[B, T]``.
    """
    kl = (logprobs - teacher_logprobs).detach()  # [B, T]
    losses = kl * logprobs  # [B, T]
    if weights is not None:
        losses = losses * weights
    with torch.no_grad():
        reverse_kl = masked_mean(kl, mask).item()
    return aggregate_loss(losses, mask, "token-mean"), {"reverse_kl": reverse_kl}


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Outcome reward model: the Bradley-Terry negative log-likelihood of each preference, ``[P]`` per pair.

        L = -log sigmoid(r_c - r_r)

    with ``r_c`` and ``r_r`` the reward model's scores (``[P]``) of the chosen and the rejected response
    (Ouyang et al. 2022, eq. 1; TRL ``RewardTrainer``). Only the difference is trained: the scores are
    defined up to a constant.
    """
    return -F.logsigmoid(chosen - rejected)


def step_label_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Process reward model: binary cross-entropy of each step's logit against its label, mean over the steps.

        L = sum_{i,t} m[i, t] * BCE(sigmoid(z[i, t]), y[i, t]) / sum_{i,t} m[i, t]

    ``logits`` ``z`` are the model's scores, ``mask`` ``m`` is 1 at each step's last token (where the step is
    scored) and 0 elsewhere, ``labels`` ``y`` are the steps' labels there: hard (1 a correct step, 0 an incorrect
    one; Lightman et al. 2023) or soft, in [0, 1] (the share of completions from the step that reach the right
    answer; Math-Shepherd, Wang et al. 2023). All ``[B, T]``; an all-zero mask gives 0.
    """
    losses = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")  # [B, T]
    return masked_mean(losses, mask)


def kd_distributions(
    student_topk: torch.Tensor,
    student_tail: torch.Tensor,
    teacher_topk: torch.Tensor,
    tail: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two distributions that token-level distillation compares, as log-probs ``(student, teacher)``, ``[B, T, m]``.

    ``teacher_topk`` ``[B, T, k]`` are the teacher's log-probs (full vocabulary, at temperature T) of its k most
    likely ids, ``student_topk`` ``[B, T, k]`` the student's at the same ids and ``student_tail`` ``[B, T]`` the
    log of the student's mass on every other id (-inf when k is the vocabulary size).

    * ``bucket`` (m = k + 1): the k ids plus one "other" outcome holding the rest of the mass. The teacher's is
      log(1 - sum_j exp(teacher_topk_j)) = log(-expm1(logsumexp(teacher_topk))), floored at log(tiny) so it is
      never NaN or -inf when the top-k mass rounds to 1; where ``student_tail`` is -inf (k = vocab, the outcome is
      empty) it is -inf, dropping the rounding residue.
    * ``renormalize`` (m = k): both restricted to the k ids, p_j / sum_i p_i (a log_softmax over the k).

    The teacher's side is detached.
    """
    teacher_topk = teacher_topk.detach()
    if tail == "renormalize":
        return torch.log_softmax(student_topk, dim=-1), torch.log_softmax(teacher_topk, dim=-1)
    if tail != "bucket":
        raise ValueError(f"unknown KD tail rule {tail!r}; expected one of {KD_TAILS}")
    log_mass = torch.logsumexp(teacher_topk, dim=-1).clamp(max=0.0)  # [B, T]; log of the teacher's top-k mass
    floor = math.log(torch.finfo(teacher_topk.dtype).tiny)
    teacher_other = torch.log(-torch.expm1(log_mass)).clamp(min=floor)  # [B, T]; log(1 - mass)
    teacher_other = torch.where(torch.isneginf(student_tail), -math.inf, teacher_other)  # [B, T]
    student_logp = torch.cat([student_topk, student_tail.unsqueeze(-1)], dim=-1)  # [B, T, k + 1]
    teacher_logp = torch.cat([teacher_topk, teacher_other.unsqueeze(-1)], dim=-1)  # [B, T, k + 1]
    return student_logp, teacher_logp


def _kl_terms(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    # p * (log p - log q) per outcome with 0 log 0 = 0: where p = 0 both logs become 0, so the term is
    # exactly 1 * (0 - 0) = 0 and no inf * 0 is formed, in the value or the gradient.
    pos = ~torch.isneginf(logp)
    logp, logq = torch.where(pos, logp, 0.0), torch.where(pos, logq, 0.0)
    return logp.exp() * (logp - logq)


def kd_divergence(
    student_logp: torch.Tensor,
    teacher_logp: torch.Tensor,
    divergence: str,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence between two distributions given as log-probs ``[B, T, m]``, summed over m: ``[B, T]``.

    With p_t, p_s the teacher's and the student's probabilities:

        forward: KL(p_t || p_s) = sum p_t (log p_t - log p_s)        (Hinton et al. 2015; mean-seeking)
        reverse: KL(p_s || p_t) = sum p_s (log p_s - log p_t)        (mode-seeking)
        jsd:     beta KL(p_t || M) + (1 - beta) KL(p_s || M),  M = beta p_t + (1 - beta) p_s   (GKD, 0 < beta < 1)

    with 0 log 0 = 0: an outcome of zero probability on the weighting side adds exactly 0, and an outcome that
    both sides give zero probability (the bucket's "other" when k = vocab) is dropped; neither yields NaN, in the
    value or the gradient. log M = logaddexp(log beta + log p_t, log(1 - beta) + log p_s). At beta = 0.5 the JSD
    is symmetric and at most log 2. Gradients reach ``student_logp`` only (the teacher's side is detached).
    """
    if divergence not in KD_DIVERGENCES:
        raise ValueError(f"unknown KD divergence {divergence!r}; expected one of {KD_DIVERGENCES}")
    if divergence == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"jsd needs 0 < beta < 1, got {beta}")
    teacher_logp = teacher_logp.detach()
    empty = torch.isneginf(teacher_logp) & torch.isneginf(student_logp)  # [B, T, m]
    t = torch.where(empty, 0.0, teacher_logp)  # [B, T, m]; finite stand-ins, their terms are zeroed below
    s = torch.where(empty, 0.0, student_logp)  # [B, T, m]
    if divergence == "forward":
        terms = _kl_terms(t, s)
    elif divergence == "reverse":
        terms = _kl_terms(s, t)
    else:
        log_m = torch.logaddexp(t + math.log(beta), s + math.log1p(-beta))  # [B, T, m]
        terms = beta * _kl_terms(t, log_m) + (1 - beta) * _kl_terms(s, log_m)
    return torch.where(empty, 0.0, terms).sum(dim=-1)  # [B, T]


def kd_loss(
    student_topk: torch.Tensor,
    student_tail: torch.Tensor,
    teacher_topk: torch.Tensor,
    mask: torch.Tensor,
    *,
    divergence: str = "forward",
    beta: float = 0.5,
    tail: str = "bucket",
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-level knowledge distillation on the teacher's top k: the token-mean divergence times T^2.

        L = T^2 * sum_{i,t} D(p_s[i, t], p_t[i, t]) * m[i, t] / sum_{i,t} m[i, t]

    with D = ``kd_divergence(*kd_distributions(...), divergence, beta)``. The inputs are log-probs at
    temperature T (log_softmax(logits / T)); the T^2 factor keeps the gradient's size independent of T
    (Hinton et al. 2015). Shapes: ``student_topk``/``teacher_topk`` ``[B, T, k]``, ``student_tail``/``mask``
    ``[B, T]``. Padding (mask 0) may hold any finite values: it is replaced by zeros before any math, so it
    changes nothing and gets zero gradient; an all-zero mask gives 0. The teacher gets no gradient.
    Metrics: ``kd_loss``, ``kd_divergence`` (the token mean of D, without T^2), ``topk_mass`` and
    ``teacher_topk_mass`` (token means of the student's / teacher's mass on the teacher's k ids), ``temperature``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    keep = mask.bool()  # [B, T]
    student_topk = torch.where(keep.unsqueeze(-1), student_topk, 0.0)  # [B, T, k]
    teacher_topk = torch.where(keep.unsqueeze(-1), teacher_topk.detach(), 0.0)  # [B, T, k]
    student_tail = torch.where(keep, student_tail, 0.0)  # [B, T]
    div = kd_divergence(*kd_distributions(student_topk, student_tail, teacher_topk, tail), divergence, beta)  # [B, T]
    loss = aggregate_loss(div, mask, "token-mean") * temperature**2
    with torch.no_grad():
        metrics = {
            "kd_loss": loss.item(),
            "kd_divergence": masked_mean(div, mask).item(),
            "topk_mass": masked_mean(student_topk.exp().sum(dim=-1), mask).item(),
            "teacher_topk_mass": masked_mean(teacher_topk.exp().sum(dim=-1), mask).item(),
            "temperature": float(temperature),
        }
    return loss, metrics


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Hidden-state alignment (TinyBERT, Jiao et al. 2020): the token mean of the squared error between the student's
    hidden states (projected to the teacher's width) and the teacher's, averaged over the L layer pairs and the H
    dimensions:

        L = sum_{i,t} m[i, t] * mean_{l,h} (s[i, t, l, h] - t[i, t, l, h])^2 / sum_{i,t} m[i, t]

    Shapes: ``student``/``teacher`` ``[B, T, L, H]``, ``mask`` ``[B, T]``. Computed in fp32 (the teacher's states
    arrive in bf16); padding may hold any finite values and changes nothing; an all-zero mask gives 0. The teacher
    gets no gradient. Metric: ``hidden_mse``.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student hidden states {tuple(student.shape)} and the teacher's {tuple(teacher.shape)} "
                         "differ in shape")
    keep = mask.bool()[..., None, None]  # [B, T, 1, 1]
    diff = torch.where(keep, student.float() - teacher.detach().float(), 0.0)
    loss = aggregate_loss(diff.pow(2).mean(dim=(-2, -1)), mask, "token-mean")
    return loss, {"hidden_mse": loss.item()}
