"""The batch that moves between roles.

One ``RolloutBatch`` holds B samples: every prompt of a step times ``n``
samples each. Rollout workers create it; the reward worker fills ``scores``
and ``reward_terms``; the reference worker fills ``ref_logprobs``; the
algorithm fills ``advantages``; the learner fills ``old_logprobs``. Shapes:

* ``B``: samples in the batch, ``T``: the longest response in the batch.
* Per-token tensors are ``[B, T]``, right-padded, with ``response_mask`` 1 on
  real response tokens. Padded positions hold 0.
* Token ids stay as Python lists (``prompt_ids``, ``response_ids``): prompts
  and responses have different lengths, and the learner packs them itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


@dataclass(kw_only=True)
class RolloutBatch:
    prompt_ids: list[list[int]]
    """B lists of prompt token ids."""
    response_ids: list[list[int]]
    """B lists of generated token ids (the stop token included when one was generated)."""
    group_ids: torch.Tensor
    """[B] int64: index of the prompt (in the data set) the sample answers; samples of one prompt form a group."""
    rollout_logprobs: torch.Tensor
    """[B, T] fp32: the sampler's log-probs of the generated tokens."""
    response_mask: torch.Tensor
    """[B, T] fp32: 1 on response tokens, 0 on padding."""
    policy_version: torch.Tensor
    """[B] int64: weight version of the policy that generated the sample (0 = initial)."""
    prompts: list[str]
    """B prompt texts."""
    responses: list[str]
    """B response texts."""
    answers: list[str]
    """B ground truths from the data set."""
    truncated: torch.Tensor
    """[B] bool: generation hit ``rollout.max_new_tokens`` before a stop token."""
    metadata: list[dict]
    """B dicts: the data row's extra fields, passed to rewards."""

    scores: torch.Tensor | None = None
    """[B] fp32: total (weighted) reward. Set by the reward worker."""
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> [B] fp32: each reward term, unweighted. Set by the reward worker."""
    ref_logprobs: torch.Tensor | None = None
    """[B, T] fp32: reference policy log-probs. Set by the reference worker."""
    advantages: torch.Tensor | None = None
    """[B] or [B, T] fp32. Set by the algorithm."""
    old_logprobs: torch.Tensor | None = None
    """[B, T] fp32: the learner's log-probs before its update (PPO ratio denominator). Set by the learner."""
    values: torch.Tensor | None = None
    """[B, T] fp32: the critic's value estimates before its update (PPO). Set by the critic."""
    returns: torch.Tensor | None = None
    """[B, T] fp32: value-function targets (PPO). Set by the algorithm."""

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())

    def select(self, index: list[int] | torch.Tensor) -> RolloutBatch:
        """A new batch with the samples at ``index`` (per-token tensors keep width T)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        items = idx.tolist()
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif isinstance(value, torch.Tensor):
                out[f.name] = value[idx]
            elif isinstance(value, dict):
                out[f.name] = {k: v[idx] for k, v in value.items()}
            else:
                out[f.name] = [value[i] for i in items]
        return RolloutBatch(**out)

    def chunks(self, count: int) -> list[RolloutBatch]:
        """``count`` contiguous, equal-sized parts (B must divide evenly)."""
        if len(self) % count:
            raise ValueError(f"cannot split {len(self)} samples into {count} equal parts")
        size = len(self) // count
        return [self.select(range(i * size, (i + 1) * size)) for i in range(count)]

    @staticmethod
    def concat(batches: list[RolloutBatch]) -> RolloutBatch:
        """Join batches, right-padding per-token tensors to the widest T."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        width = max(b.response_mask.shape[1] for b in batches)
        out = {}
        for f in dataclasses.fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            first = values[0]
            if first is None:
                if any(v is not None for v in values):
                    raise ValueError(f"field '{f.name}' is set in some batches and not others")
                out[f.name] = None
            elif isinstance(first, torch.Tensor):
                out[f.name] = torch.cat([_pad_to(v, width) for v in values])
            elif isinstance(first, dict):
                out[f.name] = {k: torch.cat([v[k] for v in values]) for k in first}
            else:
                out[f.name] = [x for v in values for x in v]
        return RolloutBatch(**out)


def group_runs(group_ids: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive group ids: the groups of a batch, in order."""
    starts = [i for i in range(len(group_ids)) if i == 0 or group_ids[i] != group_ids[i - 1]]
    return list(zip(starts, starts[1:] + [len(group_ids)]))


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    if t.dim() < 2 or t.shape[1] == width:
        return t
    return torch.nn.functional.pad(t, (0, width - t.shape[1]))


def pad_2d(rows: list[list[float]], dtype: torch.dtype = torch.float32, width: int | None = None) -> torch.Tensor:
    """Right-pad ragged rows with zeros into a [len(rows), width] tensor."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = torch.zeros(len(rows), width, dtype=dtype)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.as_tensor(r, dtype=dtype)
    return out
