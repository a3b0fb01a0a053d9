"""L1 length control (LCPO): rewards that trade correctness against a target token count.

Source: Aggarwal and Welleck, "L1: Controlling How Long A Reasoning Model Thinks With
Reinforcement Learning" (arXiv:2503.04697), section 3. Length Controlled Policy
Optimization (LCPO) appends a target length ``n_gold`` to each training prompt and
trains with GRPO on a reward that mixes answer correctness with adherence to it:

* LCPO-Exact (prompt ends "Think for n_gold tokens."):
  ``r = I(y = y_gold) - alpha * |n_gold - n_y|``
* LCPO-Max (prompt ends "Think for maximum n_gold tokens."):
  ``r = I(y = y_gold) * clip(alpha * (n_gold - n_y) + delta, 0, 1)``

with ``n_y`` the number of generated tokens and, in the paper, ``alpha = 0.0003``,
``delta = 0.5`` and ``n_gold`` drawn uniformly from [100, 4000]. The functions here
are pure arithmetic on token counts; counting tokens needs the tokenizer and is the
caller's job.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

EXACT_SUFFIX = "Think for {n} tokens."
MAX_SUFFIX = "Think for maximum {n} tokens."
_SUFFIXES = {"exact": EXACT_SUFFIX, "max": MAX_SUFFIX}
_COUNTS = ("response", "thinking")


def _check_mode(mode: str) -> str:
    """``mode`` itself if it is ``"exact"`` or ``"max"``; a ``ValueError`` naming both otherwise."""
    if mode not in _SUFFIXES:
        raise ValueError(f"unknown L1 mode {mode!r}: use 'exact' or 'max'")
    return mode


def l1_exact(correct: float, target_tokens: int, response_tokens: int, alpha: float = 0.0003) -> float:
    """LCPO-Exact reward: ``correct - alpha * |target_tokens - response_tokens|``.

    L1 paper, section 3, eq. for L1-Exact. The penalty is symmetric, so too short is
    punished like too long, and it is not clipped: a wrong answer far off the target
    scores below 0 (with the default alpha, 1000 tokens off costs 0.3).
    """
    return correct - alpha * abs(target_tokens - response_tokens)


def l1_max(
    correct: float,
    target_tokens: int,
    response_tokens: int,
    alpha: float = 0.0003,
    delta: float = 0.5,
) -> float:
    """LCPO-Max reward: ``correct * clip(alpha * (target_tokens - response_tokens) + delta, 0, 1)``.

    L1 paper, section 3, eq. for L1-Max. Exactly at the budget a correct answer gets
    ``delta`` (0.5); each token under the budget adds ``alpha`` up to 1.0 (at
    ``(1 - delta) / alpha`` tokens under, about 1667 by default), and each token over
    takes ``alpha`` away down to 0.0, so small overruns are tolerated but cost reward.
    The paper's ``delta`` keeps a correct answer slightly over budget ahead of a wrong
    one. A wrong answer (``correct = 0``) scores 0.0 whatever its length.
    """
    return correct * min(1.0, max(0.0, alpha * (target_tokens - response_tokens) + delta))


def add_length_target(
    prompt: str | list[dict[str, str]], rng: random.Random, low: int, high: int, mode: str
) -> tuple[str | list[dict[str, str]], int]:
    """``(prompt + " " + suffix, n)`` with ``n`` drawn uniformly from ``[low, high]``, both inclusive.

    L1 paper, section 3: each prompt gets a target drawn uniformly (the paper uses
    [100, 4000]) and the instruction "Think for n tokens." (``mode="exact"``) or
    "Think for maximum n tokens." (``mode="max"``). The suffix is joined with a single
    space, as the L1 data scripts do (the instruction follows the question's last
    sentence); trailing whitespace of ``prompt`` is dropped first so there is exactly
    one, and an empty prompt becomes the suffix alone. A message-list prompt gets
    the suffix at the end of its last user message, by the same rule (a new list;
    the input is not changed). ``rng`` is the caller's, so a
    seeded ``random.Random`` gives the same targets on every run. Raises
    ``ValueError`` for another mode, for a message list without a user message, or
    unless ``1 <= low <= high`` (a target of 0 tokens cannot be met, and relative
    deviations divide by it).
    """
    template = _SUFFIXES[_check_mode(mode)]
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high for the L1 length target, got low={low}, high={high}")
    if isinstance(prompt, str):
        n = rng.randint(low, high)
        return _append(prompt, template.format(n=n)), n
    users = [i for i, m in enumerate(prompt) if m.get("role") == "user"]
    if not users:
        raise ValueError("the prompt has no user message to add the L1 length target to")
    n = rng.randint(low, high)
    messages = [dict(m) for m in prompt]
    messages[users[-1]]["content"] = _append(messages[users[-1]]["content"], template.format(n=n))
    return messages, n


def _append(text: str, suffix: str) -> str:
    head = text.rstrip()
    return f"{head} {suffix}" if head else suffix


@dataclass
class LengthTargetOptions:
    mode: str = "exact"
    """exact appends "Think for N tokens.", max appends "Think for maximum N tokens."."""
    low: int = 1
    """Smallest target N (tokens), drawn uniformly per prompt."""
    high: int = 8
    """Largest target N (tokens)."""

    def __post_init__(self):
        _check_mode(self.mode)
        if not 1 <= self.low <= self.high:
            raise ValueError(f"need 1 <= low <= high, got low={self.low}, high={self.high}")


class LengthTarget:
    """L1's data transform: append the target-length instruction to every prompt, N in ``metadata["target_tokens"]``.

    A message-list prompt gets it at the end of its last user message (``add_length_target``).

    The targets are a pure function of the seed (the train and eval splits get different seeds).
    """

    Options = LengthTargetOptions

    def __init__(self, mode: str = "exact", low: int = 1, high: int = 8):
        self.options = LengthTargetOptions(mode, low, high)

    def __call__(self, rows: list, seed: int) -> list:
        o, rng = self.options, random.Random(seed)
        out = []
        for row in rows:
            try:
                prompt, target = add_length_target(row.prompt, rng, o.low, o.high, o.mode)
            except ValueError as exc:
                # imported here: importing rewards stays standard-library only
                from rlcore.data import DataError

                raise DataError(f"{row.source}: {exc}") from None
            out.append(dataclasses.replace(row, prompt=prompt, metadata={**row.metadata, "target_tokens": target}))
        return out


@dataclass
class L1Options:
    mode: str = "exact"
    """LCPO-Exact (exact) or LCPO-Max (max); the prompts must carry the matching target (data transform length_target)."""
    accuracy: str = field(default="exact_match", metadata={"reward_args": "accuracy_args"})
    """The reward that decides correctness (a built-in name or an import path)."""
    alpha: float = 0.0003
    """Reward per token of deviation from the target."""
    delta: float = 0.5
    """LCPO-Max: the reward of a correct answer exactly at its budget."""
    accuracy_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the accuracy reward."""
    count: str = "response"
    """What n_y counts: response (every generated token, the stop token included, as in the paper) or thinking (the tokens inside <think>…</think>; a response without a think block counts as 0)."""

    def __post_init__(self):
        _check_mode(self.mode)
        if self.count not in _COUNTS:
            raise ValueError(f"unknown L1 count {self.count!r}: use 'response' or 'thinking'")


class L1Reward:
    """LCPO as a reward term: correctness from another reward, length from the response's tokens.

    Each sample must carry its target in ``metadata["target_tokens"]`` (set by the
    ``length_target`` data transform); ``n_y`` is the number of generated tokens,
    the stop token included. Besides the reward (part ``score``), it returns
    logged-only parts, averaged over the batch into ``reward/l1/<part>``:
    ``abs_deviation`` (``|N - n_y|`` in tokens), ``rel_deviation``
    (``|N - n_y| / N``) and, for ``mode=max``, ``violation`` (``n_y > N``: the
    share of responses over budget).
    """

    Options = L1Options

    def __init__(self, mode: str = "exact", accuracy: str = "exact_match", alpha: float = 0.0003,
                 delta: float = 0.5, accuracy_args: dict | None = None, count: str = "response"):
        from rewards.api import load_reward

        self.mode, self.alpha, self.delta = _check_mode(mode), alpha, delta
        self.count = L1Options(mode=mode, count=count).count
        self.accuracy_name = accuracy
        self.accuracy = load_reward(accuracy, accuracy_args)

    def score(self, samples: list) -> list[dict[str, float]]:
        from rewards.api import call_score, check_scores, term_value

        correct = [term_value(row) for row in
                   check_scores(self.accuracy_name, call_score(self.accuracy, samples), len(samples))]
        out = []
        for sample, right in zip(samples, correct):
            target = sample.metadata.get("target_tokens")
            if target is None:
                raise ValueError("sample has no metadata['target_tokens']: add the data transform "
                                 "{name: length_target} to data.transforms")
            n = len(sample.response_ids) if self.count == "response" else (sample.thinking_tokens or 0)
            reward = (l1_exact(right, target, n, self.alpha) if self.mode == "exact"
                      else l1_max(right, target, n, self.alpha, self.delta))
            # "_" parts are logged, not added to the term's value (rewards.api).
            parts = {"score": reward, "_abs_deviation": float(abs(target - n)),
                     "_rel_deviation": abs(target - n) / target}
            if self.mode == "max":
                parts["_violation"] = float(n > target)
            out.append(parts)
        return out
