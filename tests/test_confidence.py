"""The ``confidence`` verifier (the policy's own token probabilities) on the local reasoning model, without Ray:
its scores against a hand-computed forward pass, padding, the sampled ids, and its option errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rewards.api import RewardSample, check_scores
from rewards.confidence import PolicyConfidence
from rewards.registry import REWARDS
from rlcore.data import PromptRow, render_prompts
from rlcore.plugins import options_class
from rlcore.tasks import reasoning


@pytest.fixture(scope="module")
def model_path(cache_dir) -> str:
    from rlcore.assets import resolve

    return resolve("local://tiny-qwen2-reason", cache_dir, "model.path")


@pytest.fixture(scope="module")
def verifier(model_path) -> PolicyConfidence:
    return PolicyConfidence(model_path, batch_size=2, device="cpu")


def by_hand(verifier: PolicyConfidence, prompt: str, response_ids: list[int], temperature: float = 1.0) -> list[float]:
    """The response tokens' log-probabilities from one unpadded forward pass of the whole sequence."""
    prompt_ids = verifier.tokenizer.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
        logits = verifier.model(torch.tensor([prompt_ids + response_ids])).logits[0].float() / temperature
    logprobs = torch.log_softmax(logits, -1)
    return [logprobs[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(response_ids)]


def samples_of(verifier: PolicyConfidence, problems: list[reasoning.Addition]) -> list[RewardSample]:
    rows = [PromptRow(i, [{"role": "user", "content": p.question()}], p.answer) for i, p in enumerate(problems)]
    rendered = render_prompts(rows, verifier.tokenizer)
    out = []
    for row, problem in zip(rendered, problems):
        text = reasoning.solution(problem)
        ids = verifier.tokenizer.encode(text, add_special_tokens=False)
        out.append(RewardSample(problem.question(), text, ids, problem.answer, rendered_prompt=row.prompt))
    return out


def test_scores_are_exp_of_the_min_or_mean_token_logprob_of_the_sampled_ids(verifier, model_path):
    # responses of different lengths: batches of 2 pad them; the third sample is alone in its batch
    samples = samples_of(verifier, [reasoning.Addition(27, 58), reasoning.Addition(345, 678), reasoning.Addition(5, 6)])
    samples.append(RewardSample("Q", "", [], "1"))  # empty: nothing to judge
    expected = [by_hand(verifier, s.rendered_prompt, s.response_ids) for s in samples[:3]]
    scores = verifier.score(samples)
    check_scores("confidence", scores, len(samples))
    assert scores == pytest.approx([math.exp(min(lp)) for lp in expected] + [0.0], rel=1e-4)
    mean = PolicyConfidence(model_path, aggregate="mean", temperature=0.5, device="cpu")
    cold = [by_hand(mean, s.rendered_prompt, s.response_ids, temperature=0.5) for s in samples[:3]]
    assert mean.score(samples[:3]) == pytest.approx([math.exp(sum(lp) / len(lp)) for lp in cold], rel=1e-4)


def test_the_sampled_ids_are_scored_not_the_text_re_encoded(verifier):
    """A response whose sampled ids differ from its text's encoding is scored by its ids; a sample without ids
    (built by hand) by its text."""
    sample = samples_of(verifier, [reasoning.Addition(27, 58)])[0]
    ids = sample.response_ids
    other = ids[:3] + [ids[3] + 1] + ids[4:]  # one token the model did not write: another score
    assert verifier.score([dataclasses.replace(sample, response_ids=other)]) != pytest.approx(verifier.score([sample]))
    assert verifier.score([dataclasses.replace(sample, response_ids=[])]) == pytest.approx(verifier.score([sample]))


def test_an_unlikely_token_lowers_the_min_score(verifier):
    """Replacing the answer's first digit by the token the model thinks least likely there lowers the score."""
    sample = samples_of(verifier, [reasoning.Addition(345, 678)])[0]
    ids = list(sample.response_ids)
    at = len(verifier.tokenizer.encode(sample.response[:sample.response.index("<answer>") + len("<answer>")],
                                       add_special_tokens=False))
    prompt_ids = verifier.tokenizer.encode(sample.rendered_prompt, add_special_tokens=False)
    with torch.no_grad():
        logits = verifier.model(torch.tensor([prompt_ids + ids[:at]])).logits[0, -1]
    wrong = ids[:at] + [int(logits.argmin())] + ids[at + 1:]
    right, bad = verifier.score([sample, dataclasses.replace(sample, response_ids=wrong)])
    assert bad < right


def test_options_and_registry(model_path):
    assert REWARDS.resolve("confidence", "r") is PolicyConfidence
    fields = {f.name: f for f in dataclasses.fields(options_class(PolicyConfidence))}
    assert fields["model"].metadata.get("model_folder")
    with pytest.raises(ValueError, match="aggregate='last' is not one of min, mean"):
        PolicyConfidence(model_path, aggregate="last")
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        PolicyConfidence(model_path, temperature=0)
    with pytest.raises(ValueError, match="model is empty: name the policy's export"):
        PolicyConfidence("")
    with pytest.raises(ValueError, match="batch_size=0 must be >= 1"):
        PolicyConfidence(model_path, batch_size=0)
