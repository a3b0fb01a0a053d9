"""The policy's own confidence as a verifier: the ``confidence`` reward term, which needs no training.

Self-certainty (Kang et al. 2025, "Scalable Best-of-N Selection for Large Language Models via Self-Certainty",
https://arxiv.org/abs/2502.18581; DeepConf, Fu et al. 2025, https://arxiv.org/abs/2508.15260): a response
sampled at temperature > 0 that went wrong often went wrong at a token its model thought unlikely. The term
loads a causal LM (the policy's export), reads the log-probability of every response token (the ids as sampled)
after the rendered prompt, and scores the response exp(``aggregate`` of them): ``min``, the least likely token's probability, or
``mean``, the geometric mean of all. A score is in (0, 1]; an empty response scores 0.0.

It ranks responses to one problem, what best-of-N and step-level search need, and its scores of partial
solutions are comparable at equal depth, so it serves as ``eval.search_verifier`` too. It cannot tell a wrong
answer the model is sure of from a right one.

    eval:
      verifier: {name: confidence, args: {model: outputs/r1/2-grpo/final, aggregate: min}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import MISSING

from rewards.reward_model import check_options, pick_device, rendered

AGGREGATES = ("min", "mean")
POLICY_HINT = "name the policy's export (trainer.output_dir/final) or a Hugging Face causal LM folder"


@dataclass
class ConfidenceOptions:
    model: str = field(default=MISSING, metadata={"model_folder": POLICY_HINT})
    """The causal LM whose confidence scores the responses, usually the policy that sampled them: its export (trainer.output_dir/final) or a Hugging Face model folder (required). A relative path is taken from the reward actors' working directory."""
    aggregate: str = "min"
    """How the response tokens' log-probabilities become its score, exp(aggregate): min (the least likely token) or mean (the geometric mean probability)."""
    temperature: float = 1.0
    """The log-probabilities are of the model's logits over this temperature: the one the responses were sampled at."""
    batch_size: int = 32
    """Samples per forward pass."""
    device: str = "auto"
    """Where the model runs: auto (cuda when the term's actors have a GPU, num_gpus > 0; else cpu), cpu, cuda or cuda:N."""

    def __post_init__(self):
        check_options(self.model, self.batch_size, self.device, POLICY_HINT)
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate='{self.aggregate}' is not one of {', '.join(AGGREGATES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")


class PolicyConfidence:
    """exp(min or mean) of the response tokens' log-probabilities under ``model``, after the rendered prompt."""

    Options = ConfidenceOptions

    def __init__(self, model: str, aggregate: str = "min", temperature: float = 1.0, batch_size: int = 32,
                 device: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = ConfidenceOptions(model, aggregate, temperature, batch_size, device)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id or 0

    def score(self, samples: list) -> list[float]:
        import torch

        from rlcore.sequences import response_logprobs

        encode = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        scored = [i for i, s in enumerate(samples) if s.response]
        prompts = [encode(rendered(samples[i])) for i in scored]
        # the ids as sampled (re-encoding the text may give other tokens); a sample built by hand has none
        responses = [list(samples[i].response_ids) or encode(samples[i].response) for i in scored]
        out = [0.0] * len(samples)  # an empty response has no token to judge
        size, how = self.options.batch_size, self.options.aggregate
        for start in range(0, len(scored), size):
            part = responses[start:start + size]
            with torch.no_grad():
                logprobs, _ = response_logprobs(self.model, prompts[start:start + size], part, pad_id=self.pad_id,
                                                width=max(map(len, part)), temperature=self.options.temperature)
            for row, ids, i in zip(logprobs.tolist(), part, scored[start:start + size]):
                values = row[:len(ids)]
                out[i] = math.exp(min(values) if how == "min" else sum(values) / len(values))
        return out
