"""The batch that moves between roles.

One ``RolloutBatch`` holds B samples: every prompt of a step times ``n``
samples each. A source creates it (rollout workers, or a preference data set);
the reward workers fill ``scores`` and ``reward_terms``; the reference worker
fills ``ref_logprobs``; learner groups fill what their algorithm asks of them
before the update (``old_logprobs``, ``values``); the algorithm fills
``advantages`` (and ``returns``). Shapes:

* ``B``: samples in the batch, ``T``: the longest response in the batch.
* Per-token tensors are ``[B, T]``, right-padded, with ``response_mask`` 1 on
  real response tokens. Padded positions hold 0.
* Token ids stay as Python lists (``prompt_ids``, ``response_ids``): prompts
  and responses have different lengths, and the learner packs them itself.

Every field may be None: a role gets only the fields it needs (``only``), and
the texts never travel to the learners.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

TOKEN_FIELDS = ("prompt_ids", "response_ids", "response_mask")
"""What a forward pass over the responses needs: the reference's and every learner group's."""
TRAIN_FIELDS = TOKEN_FIELDS + ("group_ids", "scores", "rollout_logprobs", "ref_logprobs", "old_logprobs", "values",
                               "advantages", "returns", "step_labels", "step_mask", "teacher_topk_logprobs",
                               "teacher_topk_ids", "teacher_temperature", "teacher_hidden")
"""What a learner group's update may read: never the texts, which only the driver and the reward workers use."""


@dataclass(kw_only=True)
class RolloutBatch:
    prompt_ids: list[list[int]] | None = None
    """B lists of prompt token ids."""
    response_ids: list[list[int]] | None = None
    """B lists of generated token ids (the stop token included when one was generated)."""
    response_mask: torch.Tensor | None = None
    """[B, T] fp32: 1 on response tokens, 0 on padding."""
    group_ids: torch.Tensor | None = None
    """[B] int64: the sample's group in this batch. Samples of one prompt (or one chosen/rejected pair) share
    an id, ids are unique within the batch, and ``concat`` renumbers them so they stay so."""
    prompt_index: torch.Tensor | None = None
    """[B] int64: position of the sample's prompt in the data set."""
    rollout_logprobs: torch.Tensor | None = None
    """[B, T] fp32: the sampler's log-probs of the generated tokens."""
    policy_version: torch.Tensor | None = None
    """[B] int64: weight version of the policy that generated the sample (0 = initial)."""
    prompts: list[str] | None = None
    """B prompt texts as the policy saw them (chat template applied): for logs, and learned reward models."""
    user_prompts: list[str] | None = None
    """B prompts as the user wrote them (``PromptRow.user_text``): what rewards judge (``RewardSample.prompt``).
    None: the same as ``prompts``."""
    responses: list[str] | None = None
    """B response texts."""
    answers: list[str] | None = None
    """B ground truths from the data set."""
    truncated: torch.Tensor | None = None
    """[B] bool: generation hit ``rollout.max_new_tokens`` before a stop token."""
    thinking_tokens: torch.Tensor | None = None
    """[B] int64: tokens inside the response's ``<think>`` block (all after ``<think>`` if it never closes); -1 when
    there is none."""
    metadata: list[dict] | None = None
    """B dicts: the data row's extra fields, passed to rewards."""
    prompt_messages: list[list[dict] | None] | None = None
    """B prompts as message lists, for conversational data rows (None for a string prompt), what TRL's reward
    functions read as ``prompts``. None: no row of the batch was conversational."""
    messages: list[list[dict]] | None = None
    """B conversations after the prompt, for multi-turn episodes (``actors.episodes``): each model turn as an
    assistant message and what the environment answered (``tool`` or ``user`` messages). None: single-turn."""
    episode_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> [B] fp32, per multi-turn episode: ``turns``, ``tool_calls``, ``model_tokens``, ``env_tokens``, its
    faults (``actors.episodes.FAULTS``) and ``env_seconds`` (its share of the time its rollout call waited on the env
    actors). Empty: single-turn."""
    env_returns: torch.Tensor | None = None
    """[B] fp32: an episode's score from its environment (a ``gym`` environment's summed step rewards, a ``trl`` one's
    ``get_reward()``), NaN where it has none. None: single-turn."""
    environments: list | None = None
    """B environment instances after their episodes, for rewards that read them (TRL's ``environments``); None
    unless a reward asks."""

    scores: torch.Tensor | None = None
    """[B] fp32: total (weighted) reward. Set by the reward workers."""
    reward_terms: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> [B] fp32: each reward term (and named part), unweighted. Set by the reward workers."""
    ref_logprobs: torch.Tensor | None = None
    """[B, T] fp32: reference policy log-probs. Set by the reference worker."""
    old_logprobs: torch.Tensor | None = None
    """[B, T] fp32: the policy's log-probs before its update (the PPO ratio's denominator). Set by the actor group."""
    values: torch.Tensor | None = None
    """[B, T] fp32: the critic's value estimates before its update (PPO). Set by the critic group."""
    advantages: torch.Tensor | None = None
    """[B] or [B, T] fp32. Set by the algorithm."""
    returns: torch.Tensor | None = None
    """[B, T] fp32: value-function targets (PPO). Set by the algorithm."""
    step_labels: torch.Tensor | None = None
    """[B, T] fp32: a process reward model's target at each step's last token (1 a good step, 0 a bad one, or a soft
    label in between), 0 elsewhere. Set by the reward-model sources (``launch/rm_sources.py``)."""
    step_mask: torch.Tensor | None = None
    """[B, T] fp32: 1 at the last token of each step, where a reward model's score is read (an outcome reward model:
    the response's last token), 0 elsewhere. Set by the reward-model sources."""

    teacher_topk_logprobs: torch.Tensor | None = None
    """[B, T, k] fp32: a teacher's k largest log-probs at each response position, of its whole-vocabulary
    distribution at ``teacher_temperature`` (token-level distillation). Set by the ``kd`` source."""
    teacher_topk_ids: torch.Tensor | None = None
    """[B, T, k] int32: the token ids of ``teacher_topk_logprobs``."""
    teacher_temperature: torch.Tensor | None = None
    """[B] fp32: the distillation temperature the teacher's top-k were computed at."""
    teacher_hidden: torch.Tensor | None = None
    """[B, T, L, H] bf16: the teacher's hidden states of the L layers that hidden-state alignment names, at the same
    positions as its top-k; 0 on padding. Set by the ``kd`` source when ``algorithm.hidden_layers`` is set."""

    def __len__(self) -> int:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and not isinstance(value, dict):
                return len(value)
        return 0

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())

    def only(self, names: tuple[str, ...] | list[str]) -> RolloutBatch:
        """The same samples with only the fields ``names`` set (the others None or empty)."""
        return RolloutBatch(**{name: getattr(self, name) for name in names})

    def select(self, index: list[int] | range | torch.Tensor) -> RolloutBatch:
        """A new batch with the samples at ``index`` (per-token tensors keep width T)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        items = idx.tolist()
        return RolloutBatch(**{f.name: take(getattr(self, f.name), idx, items) for f in dataclasses.fields(self)})

    def chunks(self, count: int) -> list[RolloutBatch]:
        """``count`` contiguous, equal-sized parts (B must divide evenly)."""
        return [self.select(part) for part in equal_parts(len(self), count)]

    @staticmethod
    def concat(batches: list[RolloutBatch]) -> RolloutBatch:
        """Join batches, right-padding per-token tensors to the widest T and renumbering group ids."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        width = max(b.response_mask.shape[1] for b in batches)
        out = {}
        for f in dataclasses.fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            first = values[0]
            present = [v is not None and (not isinstance(v, dict) or bool(v)) for v in values]
            if any(present) and not all(present):
                raise ValueError(f"field '{f.name}' is set in some batches and not others")
            if not present[0]:
                out[f.name] = first
            elif isinstance(first, torch.Tensor):
                out[f.name] = torch.cat([_pad_to(v, width) for v in values])
            elif isinstance(first, dict):
                if any(set(v) != set(first) for v in values):
                    raise ValueError(f"field '{f.name}' has different keys in different batches")
                out[f.name] = {k: torch.cat([v[k] for v in values]) for k in first}
            else:
                out[f.name] = [x for v in values for x in v]
        if out["group_ids"] is not None:  # each part's groups after the previous parts'
            numbered, offset = [], 0
            for b in batches:
                numbered.append(run_ids(b.group_ids) + offset)
                offset += len(group_runs(b.group_ids.tolist()))
            out["group_ids"] = torch.cat(numbered)
        return RolloutBatch(**out)


def micro_batches(batch: RolloutBatch, size: int):
    """Consecutive parts of at most ``size`` samples, in order (the last may be smaller)."""
    return (batch.select(range(start, min(start + size, len(batch)))) for start in range(0, len(batch), size))


def sequence_lengths(batch: RolloutBatch) -> list[int]:
    """Prompt + response tokens of each sample: the row a forward pass packs for it."""
    return [len(p) + len(r) for p, r in zip(batch.prompt_ids, batch.response_ids)]


def token_budget_parts(lengths: list[int], budget: int, packed: bool = False,
                       count: int | None = None) -> list[list[int]]:
    """Sample indices sorted by length, longest first (ties in index order), cut into consecutive parts whose size is
    at most ``budget``: padded, samples × the part's longest; ``packed``, the sum of the lengths. A sample longer
    than ``budget`` is a part of its own.

    Sorting first keeps the padding small: each part holds samples of about the same length. With ``count`` (at
    least the number of parts the budget needs), the largest parts are halved until there are ``count``: the ranks
    of a learner group agree on one count, as each pass is a collective.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    parts: list[list[int]] = []
    size = 0  # of the last part
    for i in order:
        if parts:
            # a part's first sample is its longest
            grown = size + lengths[i] if packed else (len(parts[-1]) + 1) * lengths[parts[-1][0]]
            if grown <= budget:
                parts[-1].append(i)
                size = grown
                continue
        parts.append([i])
        size = lengths[i]
    return parts if count is None else halved(parts, count, lengths, packed)


def halved(parts: list[list[int]], count: int, lengths: list[int], packed: bool = False) -> list[list[int]]:
    """``parts`` with the largest (``_part_size``) of those holding two or more samples cut in two, in place, until
    there are ``count``. Raises ValueError when too few samples are left to cut."""
    parts = list(parts)
    while len(parts) < count:
        halvable = [k for k, part in enumerate(parts) if len(part) > 1]
        if not halvable:
            raise ValueError(f"cannot cut {sum(map(len, parts))} samples into {count} micro-batches")
        k = max(halvable, key=lambda k: (_part_size(parts[k], lengths, packed), -k))
        part = parts[k]
        parts[k:k + 1] = [part[:len(part) // 2], part[len(part) // 2:]]
    return parts


def _part_size(part: list[int], lengths: list[int], packed: bool) -> int:
    """Tokens a part takes: the sum of its lengths packed, its samples × its longest (the first) padded."""
    return sum(lengths[i] for i in part) if packed else len(part) * lengths[part[0]]


def rank_parts(lengths: list[int], group_ids: list[int], count: int) -> list[list[int]]:
    """Sample indices for each of ``count`` ranks: whole groups (runs of equal ids), the same number of samples on
    each rank, and about the same tokens (``lengths``), so that no rank waits for another.

    Heaviest group first, each goes to the lightest rank with room for it; each rank's samples stay in batch order.
    When groups of mixed sizes do not fill the ranks that way, contiguous equal slices (``equal_parts``).
    """
    contiguous = [list(r) for r in equal_parts(len(lengths), count)]  # raises unless the samples divide evenly
    room = len(contiguous[0])
    runs = sorted(((sum(lengths[a:b]), a, b) for a, b in group_runs(group_ids)), key=lambda r: (-r[0], r[1]))
    parts: list[list[int]] = [[] for _ in range(count)]
    load = [0] * count
    for tokens, a, b in runs:
        fits = [k for k in range(count) if len(parts[k]) + b - a <= room]
        if not fits:
            return contiguous
        k = min(fits, key=lambda k: (load[k], k))
        parts[k] += range(a, b)
        load[k] += tokens
    return [sorted(part) for part in parts]


def trim(batch: RolloutBatch) -> RolloutBatch:
    """The batch with its per-token tensors (``[B, T]``) cut to its own longest response."""
    width = max((len(r) for r in batch.response_ids), default=0)
    cut = {}
    for f in dataclasses.fields(batch):
        value = getattr(batch, f.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:  # [B, T] and [B, T, k]
            cut[f.name] = value[:, :width]
    return dataclasses.replace(batch, **cut)


def take(value, idx: torch.Tensor, items: list[int]):
    """The rows ``idx`` of one field's value (a tensor, a dict of tensors, a list, or None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value[idx]
    if isinstance(value, dict):
        return {k: v[idx] for k, v in value.items()}
    return [value[i] for i in items]


def equal_parts(size: int, count: int) -> list[range]:
    """``count`` contiguous, equal ranges covering ``range(size)``; ``size`` must divide evenly."""
    if size % count:
        raise ValueError(f"cannot split {size} samples into {count} equal parts")
    step = size // count
    return [range(i * step, (i + 1) * step) for i in range(count)]


def group_runs(group_ids: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive group ids: the groups of a batch, in order."""
    starts = [i for i in range(len(group_ids)) if i == 0 or group_ids[i] != group_ids[i - 1]]
    return list(zip(starts, starts[1:] + [len(group_ids)]))


def run_ids(group_ids: torch.Tensor) -> torch.Tensor:
    """``[B]``: 0, 1, 2, … numbering the runs of equal consecutive ids (each run one group)."""
    out = torch.empty_like(group_ids)
    for number, (a, b) in enumerate(group_runs(group_ids.tolist())):
        out[a:b] = number
    return out


def _pad_to(t: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T, ...]`` right-padded with zeros along T to ``width``."""
    if t.dim() < 2 or t.shape[1] == width:
        return t
    return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]))


def pad_2d(rows: list[list[float]], dtype: torch.dtype = torch.float32, width: int | None = None) -> torch.Tensor:
    """Right-pad ragged rows with zeros into a [len(rows), width] tensor."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    out = torch.zeros(len(rows), width, dtype=dtype)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.as_tensor(r, dtype=dtype)
    return out
