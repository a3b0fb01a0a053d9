"""A generative reward model: an LLM judge on its own vLLM engine.

``LLMJudge`` is a reward class (see ``rewards.api``): each of its actors owns a
vLLM engine for the judge model at ``model`` (any Hugging Face folder), fills
``template`` for every sample of a batch, generates for the whole batch in one
call, and parses each judgement into a score in [0, 1]:

* ``parse="number"``: the last number in the text, on the scale ``[low, high]``;
* ``parse="score"``: the number after ``Score:`` (case-insensitive), same scale;
* ``parse="yes_no"``: the last ``yes`` or ``no`` (1 or 0).

``{question}`` is the user's own text (``RewardSample.prompt``), not the
policy's chat template: the judge was not trained on that encoding, and it would
read the template's special tokens as its own when both share a chat format.

A judgement that does not parse scores ``failure_score`` and is counted in
``reward/<term>/unparseable``. The first ``show`` judgements of every batch
are printed with their responses, so they appear in the job's log.

    reward:
      terms:
        - name: judge
          num_workers: 1
          num_gpus: 1          # on a GPU machine; CPU works for small judges
          args: {model: /models/judge, parse: score, low: 1, high: 10}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from omegaconf import MISSING

DEFAULT_TEMPLATE = (
    "Question: {question}\nReference answer: {reference}\nResponse: {response}\n"
    "Rate the response from {low} to {high}. Score:"
)
PARSERS = ("number", "score", "yes_no")

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SCORE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_judgement(text: str, parse: str = "number", low: float = 0.0, high: float = 10.0) -> float | None:
    """The judgement's score normalised to [0, 1], or None when it does not parse (or is off the scale)."""
    if parse == "yes_no":
        found = _VERDICT.findall(text)
        return None if not found else float(found[-1].lower() == "yes")
    if parse == "score":
        found = _SCORE.findall(text)
    elif parse == "number":
        found = _NUMBER.findall(text)
    else:
        raise ValueError(f"unknown judge parse mode {parse!r}: use one of {', '.join(PARSERS)}")
    if not found:
        return None
    value = float(found[-1])
    if not low <= value <= high:
        return None
    return (value - low) / (high - low)


@dataclass
class JudgeOptions:
    model: str = field(default=MISSING, metadata={"model_folder": True})
    """The judge model: a Hugging Face folder vLLM can load (required)."""
    template: str = DEFAULT_TEMPLATE
    """The judge's prompt, with fields {question}, {response}, {reference}, {low}, {high}."""
    parse: str = "number"
    """How a judgement becomes a score: number (the last number), score (the number after "Score:") or yes_no."""
    low: float = 0.0
    """Lowest score of the judge's scale (maps to 0)."""
    high: float = 10.0
    """Highest score of the judge's scale (maps to 1)."""
    max_tokens: int = 16
    """Longest judgement, in tokens."""
    temperature: float = 0.0
    """The judge's sampling temperature (0: greedy)."""
    failure_score: float = 0.0
    """Score of a judgement that does not parse (counted in reward/<term>/unparseable)."""
    dtype: str = "auto"
    """The judge engine's weight dtype."""
    kv_cache_gib: int = 1
    """KV-cache size of the judge's engine on CPU, in GiB."""
    show: int = 2
    """Judgements of each batch printed to the log."""

    def __post_init__(self):
        if self.parse not in PARSERS:
            raise ValueError(f"unknown judge parse mode {self.parse!r}: use one of {', '.join(PARSERS)}")
        if not self.low < self.high:
            raise ValueError(f"judge scale needs low < high, got low={self.low} high={self.high}")


class LLMJudge:
    Options = JudgeOptions

    def __init__(self, model: str, template: str = DEFAULT_TEMPLATE, parse: str = "number", low: float = 0.0,
                 high: float = 10.0, max_tokens: int = 16, temperature: float = 0.0, failure_score: float = 0.0,
                 dtype: str = "auto", kv_cache_gib: int = 1, show: int = 2):
        JudgeOptions(model, template, parse, low, high)  # the same checks when built without the config
        # The engine lives in this actor's process (set before vLLM is imported).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=model, dtype=dtype, enforce_eager=True, seed=0)
        self.params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
        self.template, self.parse, self.low, self.high = template, parse, low, high
        self.failure_score, self.show = failure_score, show

    def prompt(self, sample) -> str:
        """The judge's prompt for ``sample``: ``template`` filled in, the user's question as written."""
        return self.template.format(question=sample.prompt, response=sample.response, reference=sample.ground_truth,
                                    low=self.low, high=self.high)

    def score(self, samples: list) -> list[dict[str, float]]:
        outputs = self.llm.generate([self.prompt(s) for s in samples], self.params, use_tqdm=False)
        rows = []
        for i, (sample, out) in enumerate(zip(samples, outputs)):
            text = out.outputs[0].text
            value = parse_judgement(text, self.parse, self.low, self.high)
            if i < self.show:
                print(f"judge: response={sample.response!r} judgement={text!r} -> {value}", flush=True)
            # "_" parts are logged, not added to the term's value (rewards.api).
            rows.append({"score": self.failure_score if value is None else value, "_unparseable": float(value is None)})
        return rows
