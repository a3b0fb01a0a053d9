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

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: the caller owns (and seeds) the rng
    import random

EXACT_SUFFIX = "Think for {n} tokens."
MAX_SUFFIX = "Think for maximum {n} tokens."
_SUFFIXES = {"exact": EXACT_SUFFIX, "max": MAX_SUFFIX}


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
    prompt: str, rng: random.Random, low: int, high: int, mode: str
) -> tuple[str, int]:
    """``(prompt + " " + suffix, n)`` with ``n`` drawn uniformly from ``[low, high]``, both inclusive.

    L1 paper, section 3: each prompt gets a target drawn uniformly (the paper uses
    [100, 4000]) and the instruction "Think for n tokens." (``mode="exact"``) or
    "Think for maximum n tokens." (``mode="max"``). The suffix is joined with a single
    space, as the L1 data scripts do (the instruction follows the question's last
    sentence); trailing whitespace of ``prompt`` is dropped first so there is exactly
    one, and an empty prompt becomes the suffix alone. ``rng`` is the caller's, so a
    seeded ``random.Random`` gives the same targets on every run. Raises
    ``ValueError`` for another mode, or unless ``1 <= low <= high`` (a target of 0
    tokens cannot be met, and relative deviations divide by it).
    """
    template = _SUFFIXES[_check_mode(mode)]
    if not 1 <= low <= high:
        raise ValueError(f"need 1 <= low <= high for the L1 length target, got low={low}, high={high}")
    n = rng.randint(low, high)
    head = prompt.rstrip()
    suffix = template.format(n=n)
    return (f"{head} {suffix}" if head else suffix), n


def length_metrics(targets: list[int], lengths: list[int], mode: str) -> dict[str, float]:
    """How well a batch kept to its L1 length targets.

    ``l1/abs_deviation``: mean ``|N - n_y|`` in tokens; ``l1/rel_deviation``: mean
    ``|N - n_y| / N`` as a fraction (0.1 = 10 %), comparable across budgets; for
    ``mode="max"`` also ``l1/violation_rate``: the share of responses longer than
    their budget (``n_y > N``; exactly ``N`` is within it).
    Raises ``ValueError`` for an unknown mode, lists of different or zero length
    (a mean of nothing is not 0), or a target below 1.
    """
    _check_mode(mode)
    if len(targets) != len(lengths):
        raise ValueError(f"length_metrics: {len(targets)} targets but {len(lengths)} lengths")
    if not targets:
        raise ValueError("length_metrics: no samples")
    if min(targets) < 1:
        raise ValueError(f"length_metrics: targets must be >= 1 token, got {min(targets)}")
    count = len(targets)
    deviations = [abs(t - n) for t, n in zip(targets, lengths)]
    metrics = {
        "l1/abs_deviation": sum(deviations) / count,
        "l1/rel_deviation": sum(d / t for d, t in zip(deviations, targets)) / count,
    }
    if mode == "max":
        metrics["l1/violation_rate"] = sum(n > t for t, n in zip(targets, lengths)) / count
    return metrics


class L1Reward:
    """LCPO as a reward term: correctness from another reward, length from the response's tokens.

    Each sample must carry its target in ``metadata["target_tokens"]`` (set by
    ``data.length_target_mode``); ``n_y`` is the number of generated tokens, the
    stop token included. Config: ``{name: l1, args: {mode: exact, accuracy: exact_match}}``.
    """

    def __init__(self, mode: str = "exact", accuracy: str = "exact_match", alpha: float = 0.0003,
                 delta: float = 0.5, accuracy_args: dict | None = None):
        from rewards.api import load_reward

        self.mode, self.alpha, self.delta = _check_mode(mode), alpha, delta
        self.accuracy_name = accuracy
        self.accuracy = load_reward(accuracy, accuracy_args)

    def score(self, samples: list) -> list[float]:
        from rewards.api import call_score, check_scores, term_value

        correct = [term_value(row) for row in
                   check_scores(self.accuracy_name, call_score(self.accuracy, samples), len(samples))]
        out = []
        for sample, right in zip(samples, correct):
            target = sample.metadata.get("target_tokens")
            if target is None:
                raise ValueError("sample has no metadata['target_tokens']: set data.length_target_mode to exact or max")
            n = len(sample.response_ids)
            out.append(l1_exact(right, target, n, self.alpha) if self.mode == "exact"
                       else l1_max(right, target, n, self.alpha, self.delta))
        return out
