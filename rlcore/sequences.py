"""Per-response-token outputs of a model, shared by the learner, the reference and the reward-model rewards.

Prompts and responses have different lengths in every sample, so each sample
is packed as ``prompt + response``, right-padded to the longest one. The
response token ``j`` of a sample with ``P`` prompt tokens sits at position
``P + j`` and is predicted by the logits at ``P + j - 1``: log-probs and a
critic's values are read there. A reward model's score of token ``j`` is read
at ``P + j`` itself, once the token is written (``response_scores``).
"""

from __future__ import annotations

import torch

from rlcore.batch import pad_2d
from rlcore.functional import entropy_from_logits, logprobs_from_logits


def pack(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, width: int | None = None):
    """Returns ``input_ids [B, S]``, ``attention_mask [B, S]``, ``logit_index [B, T]``, ``targets [B, T]``."""
    seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
    seq_len = max(map(len, seqs))
    input_ids = torch.full((len(seqs), seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), seq_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention_mask[i, : len(s)] = 1
    targets = pad_2d(response_ids, dtype=torch.long, width=width)  # [B, T]
    steps = torch.arange(targets.shape[1])
    start = torch.tensor([len(p) - 1 for p in prompt_ids])
    logit_index = (start[:, None] + steps[None, :]).clamp(max=seq_len - 1)  # [B, T]
    return input_ids, attention_mask, logit_index, targets


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    *,
    pad_id: int,
    width: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logprobs [B, T], entropy [B, T] or None)`` of the response tokens; padding holds garbage, mask it."""
    response_logits, targets = _response_outputs(model, prompt_ids, response_ids, pad_id, width)  # [B, T, V]
    logprobs = logprobs_from_logits(response_logits, targets, temperature)
    entropy = entropy_from_logits(response_logits, temperature) if with_entropy else None
    return logprobs, entropy


def response_values(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int) -> torch.Tensor:
    """``[B, T]`` value estimates of a one-label token-classification model (the PPO critic).

    The value of response token ``j`` is read where its log-prob is: at the
    position just before it (the state in which it is chosen), as in verl.
    """
    outputs, _ = _response_outputs(model, prompt_ids, response_ids, pad_id, width)  # [B, T, 1]
    return outputs[..., 0].float()


def response_scores(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int) -> torch.Tensor:
    """``[B, T]`` outputs of a one-label token-classification model at each response token's own position.

    Unlike ``response_values``, nothing is shifted: the score of response token ``j`` is the
    output at ``P + j``, the state after the token, so a reward model's score of a step is read
    at the step's last token, once the step is written (``rlcore.reward_inputs``). Padding holds
    garbage, mask it.
    """
    outputs, _ = _response_outputs(model, prompt_ids, response_ids, pad_id, width, own_position=True)  # [B, T, 1]
    return outputs[..., 0].float()


def _response_outputs(model, prompt_ids, response_ids, pad_id, width, own_position: bool = False):
    """The model's per-position outputs at the response positions, ``[B, T, D]``, and the targets ``[B, T]``.

    Read at the position before each response token (where it is predicted), or with ``own_position`` at the
    token's own position.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, logit_index, targets = pack(prompt_ids, response_ids, pad_id, width)
    if own_position:
        logit_index = (logit_index + 1).clamp(max=input_ids.shape[1] - 1)  # [B, T]
    outputs = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
    index = logit_index.to(device)[:, :, None].expand(-1, -1, outputs.shape[-1])
    return outputs.gather(1, index), targets.to(device)
