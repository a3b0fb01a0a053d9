"""Learned reward models as reward terms: ``orm`` (outcome) and ``prm`` (process).

The model is a folder exported by training with ``algorithm.name=orm`` or ``prm`` (``algorithms/reward_models.py``):
a one-output token-classification model and its tokenizer. Each actor of the term loads it once, when it
starts, and scores batches of ``batch_size`` samples under ``torch.no_grad``, on ``device``.

A sample is encoded as in training (``rlcore.reward_inputs``): the rendered prompt the sample carries
(``RewardSample.rendered_prompt``, chat template applied, not the user's text in ``prompt``), then
the response, cut into steps, each step encoded on its own; a step's score is the model's output at its last
token.

* ``orm``: the response is one step; its reward is sigmoid(score at the last token).
* ``prm``: the response is cut after every ``delimiter`` (``rlcore.test_time.split_steps``); its reward is
  the ``aggregate`` (min, last, mean or prod) of the steps' sigmoid(score), and ``_steps``, the step count,
  is logged (``reward/prm/steps``).

An empty response scores 0.0 (it has no step to score).

    reward:
      terms:
        - {name: answer_match, weight: 1.0}
        - {name: prm, weight: 0.5, timeout_s: 120, args: {model: outputs/prm-reasoning/final, delimiter: ". "}}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from rlcore.test_time import AGGREGATES, aggregate_steps, split_steps

DEVICES = ("auto", "cpu", "cuda")
EXPORT_HINT = "export a reward model with algorithm.name=orm or prm"
"""What a missing or incomplete ``model`` folder's one-line error ends with (``launch.build.load`` checks it)."""


def pick_device(device: str) -> str:
    """``auto``: cuda when this process sees a GPU (a term with ``num_gpus`` > 0), else cpu; anything else as given."""
    if device == "auto":
        import torch  # here, not at the top: importing the built-in rewards stays light

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_options(model: str, batch_size: int, device: str,
                  hint: str = "name a reward model folder (an export of algorithm.name=orm or prm)") -> None:
    if not model:
        raise ValueError(f"model is empty: {hint}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device='{device}' is not one of {', '.join(DEVICES)} (or cuda:N)")


@dataclass
class ORMRewardOptions:
    model: str = field(default=MISSING, metadata={"model_folder": EXPORT_HINT})
    """The reward model: a folder exported by training with algorithm.name=orm (a one-output token-classification model and its tokenizer; required). A relative path is taken from the reward actors' working directory: on a local Ray, where the run is launched."""
    batch_size: int = 32
    """Samples per forward pass."""
    device: str = "auto"
    """Where the model runs: auto (cuda when the term's actors have a GPU, num_gpus > 0; else cpu), cpu, cuda or cuda:N."""

    def __post_init__(self):
        # Not checked for existence here: a preset may name a model an earlier stage of the same recipe trains.
        # ``launch.build.load`` checks the folder (its model_folder metadata) just before the run, before Ray starts.
        check_options(self.model, self.batch_size, self.device)


@dataclass
class PRMRewardOptions(ORMRewardOptions):
    model: str = field(default=MISSING, metadata={"model_folder": EXPORT_HINT})
    """The reward model: a folder exported by training with algorithm.name=prm (a one-output token-classification model and its tokenizer; required). A relative path is taken from the reward actors' working directory: on a local Ray, where the run is launched."""
    aggregate: str = "min"
    """How the steps' scores (each sigmoid(score) at the step's last token) become the response's: min (the weakest step), last, mean or prod."""
    delimiter: str = "\n\n"
    """Where the response is cut into steps (each keeps its delimiter); use the delimiter the PRM was trained with (the reasoning task's steps end in ". ")."""

    def __post_init__(self):
        super().__post_init__()
        check_aggregate(self.aggregate, self.delimiter)


def check_aggregate(aggregate: str, delimiter: str) -> None:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate='{aggregate}' is not one of {', '.join(AGGREGATES)}")
    if not delimiter:
        raise ValueError("delimiter is empty: name the text that ends a step")


class RewardModelScorer:
    """A reward model folder, loaded once: the raw scores of each sample's steps, in batches, without gradients."""

    def __init__(self, path: str, batch_size: int = 32, device: str = "auto"):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        if not (Path(path).expanduser() / "config.json").is_file():
            raise FileNotFoundError(f"reward model {path} (from {Path.cwd()}): no config.json there; export one with "
                                    "algorithm.name=orm or prm")
        self.device, self.batch_size = pick_device(device), batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForTokenClassification.from_pretrained(path).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path} has num_labels={self.model.config.num_labels}, not a one-output reward model: "
                             "export one with algorithm.name=orm or prm")
        self.pad_id = self.model.config.pad_token_id or 0

    def step_scores(self, prompts: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """For each prompt and its response's steps (at least one), the model's score at every step's last token."""
        import torch

        from rlcore.reward_inputs import encode_reward_input
        from rlcore.sequences import response_scores

        inputs = [encode_reward_input(prompt, parts, self.tokenizer) for prompt, parts in zip(prompts, steps)]
        out = []
        for start in range(0, len(inputs), self.batch_size):
            part = inputs[start:start + self.batch_size]
            with torch.no_grad():
                scores = response_scores(self.model, [x.prompt_ids for x in part], [x.response_ids for x in part],
                                         pad_id=self.pad_id, width=max(len(x.response_ids) for x in part))  # [b, T]
            out += [scores[i, x.step_ends].tolist() for i, x in enumerate(part)]
        return out


def rendered(sample) -> str:
    """The prompt as the policy saw it (``RewardSample.rendered_prompt``): the encoding a reward model is trained on,
    chat template included, not the user's text that the other rewards read."""
    return sample.prompt if sample.rendered_prompt is None else sample.rendered_prompt


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class OutcomeRewardModel:
    """An outcome reward model: sigmoid of its score at the response's last token."""

    Options = ORMRewardOptions

    def __init__(self, model: str, batch_size: int = 32, device: str = "auto"):
        check_options(model, batch_size, device)
        self.scorer = RewardModelScorer(model, batch_size, device)

    def score(self, samples: list) -> list[float]:
        scored = [i for i, s in enumerate(samples) if s.response]
        steps = self.scorer.step_scores([rendered(samples[i]) for i in scored], [[samples[i].response] for i in scored])
        out = [0.0] * len(samples)  # an empty response has nothing to score
        for i, values in zip(scored, steps):
            out[i] = sigmoid(values[-1])
        return out


class ProcessRewardModel:
    """A process reward model: the aggregate (min, last, mean, prod) of sigmoid of its score at each step's last
    token, the response cut into steps after every ``delimiter``."""

    Options = PRMRewardOptions

    def __init__(self, model: str, batch_size: int = 32, device: str = "auto", aggregate: str = "min",
                 delimiter: str = "\n\n"):
        check_options(model, batch_size, device)
        check_aggregate(aggregate, delimiter)
        self.aggregate, self.delimiter = aggregate, delimiter
        self.scorer = RewardModelScorer(model, batch_size, device)

    def score(self, samples: list) -> list[dict[str, float]]:
        cut = [split_steps(s.response, self.delimiter) for s in samples]
        scored = [i for i, steps in enumerate(cut) if steps]
        values = self.scorer.step_scores([rendered(samples[i]) for i in scored], [cut[i] for i in scored])
        out = [{"score": 0.0, "_steps": 0.0} for _ in samples]  # an empty response has no step to score
        for i, scores in zip(scored, values):
            out[i] = {"score": aggregate_steps([sigmoid(x) for x in scores], self.aggregate),
                      "_steps": float(len(scores))}
        return out
