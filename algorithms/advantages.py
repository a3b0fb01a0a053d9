"""Advantage estimators: GRPO / Dr.GRPO, RLOO, REINFORCE++ and GAE.

Reference implementation: verl ``verl/trainer/ppo/core_algos.py``
(``compute_grpo_outcome_advantage``, ``compute_rloo_outcome_advantage``,
``compute_reinforce_plus_plus_outcome_advantage``, ``compute_gae_advantage_return``).
Outcome estimators here take one scalar score per sequence ``[B]`` and return
``[B]``; broadcast to tokens with ``adv[:, None] * mask`` (``policy_loss`` also
accepts ``[B]`` directly).

All estimators run under ``torch.no_grad()``: advantages are targets, never
something to differentiate through.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from rlcore.functional import masked_whiten

__all__ = ["gae", "group_advantages", "reinforce_pp_returns", "rloo_advantages"]

GroupIds = Sequence[Hashable] | torch.Tensor


def _group_index(group_ids: GroupIds, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Map arbitrary group ids (prompt uids, ints, a tensor) to dense indices 0..G-1, ``[B]``."""
    if isinstance(group_ids, torch.Tensor):
        _, index = torch.unique(group_ids.reshape(-1), return_inverse=True)
        num_groups = int(index.max().item()) + 1 if index.numel() else 0
    else:
        dense: dict[Hashable, int] = {}
        # setdefault assigns ids in first-seen order; the order itself does not matter.
        index = torch.tensor([dense.setdefault(g, len(dense)) for g in group_ids], dtype=torch.long)
        num_groups = len(dense)
    if index.numel() != batch_size:
        raise ValueError(f"got {index.numel()} group ids for {batch_size} scores")
    return index.to(device), num_groups


def _group_stats(
    scores: torch.Tensor, index: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group count, mean and *unbiased* std, each ``[G]`` (std is 0 for singletons)."""
    zeros = scores.new_zeros(num_groups)  # [G]
    count = zeros.index_add(0, index, torch.ones_like(scores))  # [G]
    mean = zeros.index_add(0, index, scores) / count  # [G]; every group has >= 1 member
    sq_dev = (scores - mean[index]) ** 2  # [B]
    # Bessel correction n-1 to match torch.std (what verl calls); clamp avoids 0/0 for singletons.
    var = zeros.index_add(0, index, sq_dev) / (count - 1).clamp(min=1)  # [G]
    return count, mean, var.sqrt()


def _as_float_scores(scores: torch.Tensor | Sequence[float]) -> torch.Tensor:
    scores = torch.as_tensor(scores)
    return scores if scores.is_floating_point() else scores.float()


@torch.no_grad()
def group_advantages(
    scores: torch.Tensor | Sequence[float],
    group_ids: GroupIds,
    norm_by_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO group-relative advantage, ``[B]`` (DeepSeekMath, Shao et al. 2024, arXiv:2402.03300).

    A_i = (s_i - mean_g) / (std_g + eps), with the unbiased (n-1) std of the
    group, as in verl ``compute_grpo_outcome_advantage``. ``norm_by_std=False``
    gives Dr.GRPO (Liu et al. 2025, arXiv:2503.20783): A_i = s_i - mean_g.

    A group of one gets mean 0 and std 1 (verl's convention), so its advantage
    is its raw score (divided by 1 + eps). A group whose scores are all equal
    gets advantage exactly 0 (0 / (0 + eps)), never NaN.
    """
    scores = _as_float_scores(scores)  # [B]
    index, num_groups = _group_index(group_ids, scores.shape[0], scores.device)
    count, mean, std = _group_stats(scores, index, num_groups)  # [G] each
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    centered = scores - mean[index]  # [B]
    if not norm_by_std:
        return centered
    return centered / (std[index] + eps)


@torch.no_grad()
def rloo_advantages(scores: torch.Tensor | Sequence[float], group_ids: GroupIds) -> torch.Tensor:
    """RLOO leave-one-out advantage, ``[B]`` (Ahmadian et al. 2024, arXiv:2402.14740).

    A_i = s_i - mean_{j != i} s_j = n/(n-1) * (s_i - mean_g), written the way
    verl ``compute_rloo_outcome_advantage`` computes it. A group of one has no
    baseline, so (as in verl) its advantage is the score itself.
    """
    scores = _as_float_scores(scores)  # [B]
    index, num_groups = _group_index(group_ids, scores.shape[0], scores.device)
    count, mean, _ = _group_stats(scores, index, num_groups)  # [G]
    n = count[index]  # [B]
    loo = scores * n / (n - 1).clamp(min=1) - mean[index] * n / (n - 1).clamp(min=1)  # [B]
    return torch.where(n > 1, loo, scores)


@torch.no_grad()
def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, arXiv:1506.02438).

    Same recursion as verl ``compute_gae_advantage_return`` (itself from TRL's
    PPO trainer), step by step, so results agree to float precision:

        delta_t = r_t + gamma * V_next - V_t
        A_t     = delta_t + gamma * lam * A_next

    where masked (non-response) positions are skipped by *carrying* V_next and
    A_next through them unchanged. Consequently padding positions hold the
    running value rather than 0; losses must mask them.

    Unlike verl, the advantages are **not** whitened here; call
    ``masked_whiten(adv, mask)`` if wanted. ``returns = advantages + values``
    (the value-function target, identical to verl's since verl whitens after).

    Returns ``(advantages [B, T], returns [B, T])``.
    """
    m = mask.to(values.dtype)  # [B, T]
    next_values = torch.zeros_like(values[:, 0])  # [B]; V after the last token is 0
    last_gae = torch.zeros_like(values[:, 0])  # [B]
    reversed_adv = []
    for t in reversed(range(rewards.shape[-1])):
        delta = rewards[:, t] + gamma * next_values - values[:, t]  # [B]
        gae_t = delta + gamma * lam * last_gae  # [B]
        # Where mask is 0 keep the previous running quantities (skip this position).
        next_values = values[:, t] * m[:, t] + (1 - m[:, t]) * next_values
        last_gae = gae_t * m[:, t] + (1 - m[:, t]) * last_gae
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1)  # [B, T]
    return advantages, advantages + values


def last_token(mask: torch.Tensor) -> torch.Tensor:
    """[B] int64: the position of each row's last 1 in ``mask`` [B, T] (0 for an empty row). Not ``mask.sum(-1) - 1``:
    a multi-turn episode's mask has holes, the environment's tokens, before its last model token."""
    width = mask.shape[-1]
    return (width - 1 - (mask.flip(-1) > 0).float().argmax(-1)) * (mask > 0).any(-1)  # [B]


@torch.no_grad()
def reinforce_pp_returns(
    token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): discounted returns, globally whitened.

    G_t = r_t + gamma * G_{t+1} over the response tokens; a masked position (an
    environment's tokens between model turns, padding) is skipped: the running
    return is carried through it, undiscounted, so an earlier turn is credited
    with the episode's outcome. This is verl 0.9.1's
    ``compute_reinforce_plus_plus_outcome_advantage`` (tests/test_verl_parity.py,
    right-padded and holed masks); advantages = masked_whiten(G) * mask over the
    whole batch.

    Returns ``(advantages [B, T], returns [B, T])``.
    """
    m = mask.to(token_rewards.dtype)  # [B, T]
    returns = torch.zeros_like(token_rewards)  # [B, T]
    running = torch.zeros_like(token_rewards[:, 0])  # [B]
    for t in reversed(range(token_rewards.shape[-1])):
        running = torch.where(m[:, t] > 0, token_rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    advantages = masked_whiten(returns, m) * m  # [B, T]
    return advantages, returns


@torch.no_grad()
def zero_variance_groups(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[B] bool: the sample's group has all-equal scores (no learning signal under group baselines)."""
    _, index = torch.unique(group_ids, return_inverse=True)  # [B]
    groups = int(index.max()) + 1 if len(index) else 0
    lo = torch.full((groups,), float("inf")).scatter_reduce(0, index, scores, "amin")
    hi = torch.full((groups,), float("-inf")).scatter_reduce(0, index, scores, "amax")
    return (hi - lo)[index] == 0
