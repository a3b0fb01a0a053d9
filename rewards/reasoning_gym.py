"""The ``reasoning_gym`` reward term: each sample scored by its own reasoning-gym dataset's verifier.

Rows from a ``reasoning_gym://`` data file (``rlcore.tasks.reasoning_gym``)
carry their entry under ``reasoning_gym``; this term reads the response's final
answer and returns ``score_answer(answer, entry)`` of the entry's dataset, a
float in [0, 1] (partial credit where the dataset gives it). One run may mix
datasets: each sample goes to its own verifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rewards.api import Answer, RewardSample
from rewards.r1 import extract_answer
from rlcore.tasks.reasoning_gym import INSTALL

ANSWER_FORMATS = ("tag", "whole")


@dataclass
class ReasoningGymOptions:
    answer: str = "tag"
    """Where the response's answer is: ``tag``, the last ``<answer>…</answer>`` block (R1's format; no block scores
    0); ``whole``, the whole response, stripped (for ``format=plain`` rows and models that answer bare)."""

    def __post_init__(self):
        if self.answer not in ANSWER_FORMATS:
            raise ValueError(f"answer={self.answer!r} is not one of {', '.join(ANSWER_FORMATS)}")


class ReasoningGymScore:
    """``score_answer`` of each sample's reasoning-gym dataset, on the response's final answer."""

    Options = ReasoningGymOptions
    answer = Answer(extract_answer, lambda a, b: a.strip() == b.strip())
    """How majority voting reads and compares answers (``launch.evaluate``'s maj@k)."""

    def __init__(self, answer: str = "tag"):
        try:
            import reasoning_gym
        except ImportError as exc:
            raise RuntimeError(f"the reasoning_gym reward needs the reasoning-gym extra ({INSTALL})") from exc
        self.score_fn = reasoning_gym.get_score_answer_fn
        self.tagged = ReasoningGymOptions(answer).answer == "tag"
        self.verifiers: dict[str, Any] = {}

    def score(self, samples: list[RewardSample]) -> list[float]:
        return [self._one(s) for s in samples]

    def _one(self, sample: RewardSample) -> float:
        carried = sample.metadata.get("reasoning_gym")
        if not isinstance(carried, dict) or "dataset" not in carried or "entry" not in carried:
            raise ValueError("the row has no reasoning_gym entry: this term scores rows of reasoning_gym:// data "
                             "files (data.train_files / data.eval_files)")
        name = carried["dataset"]
        if name not in self.verifiers:
            self.verifiers[name] = self.score_fn(name)
        answer = extract_answer(sample.response) if self.tagged else sample.response.strip()
        return 0.0 if answer is None else float(self.verifiers[name](answer, carried["entry"]))
