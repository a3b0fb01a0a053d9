"""The ``genrm`` verifier (a causal LM answering Yes or No) and its training rows, without Ray: the rows from
Monte-Carlo step labels, the scores against a hand-computed forward pass, a verifier that learnt to tell right
from wrong, and its option errors."""

from __future__ import annotations

import math

import pytest
import torch

from rewards.api import RewardSample, check_scores
from rewards.generative_verifier import GenerativeVerifier
from rewards.registry import REWARDS
from rlcore.plugins import options_class
from rlcore.test_time import VERDICT_QUESTION, verdict_prompt, verdict_rows

PROMPT = "<|im_start|>user\nWhat is 27 + 58?<|im_end|>\n<|im_start|>assistant\n"
RIGHT = "<think>7+8=15, write 5 carry 1. 2+5+1=8, write 8.</think><answer>85</answer>"
WRONG = "<think>7+8=15, write 5 carry 1. 2+5=7, write 7.</think><answer>75</answer>"


@pytest.fixture(scope="module")
def model_path(cache_dir) -> str:
    from rlcore.assets import resolve

    return resolve("local://tiny-qwen2-reason", cache_dir, "model.path")


def test_verdict_rows_ask_after_every_prefix_with_its_last_step_label():
    steps = ["<think>7+8=15, write 5 carry 1. ", "2+5=7, write 7.</think>", "<answer>75</answer>"]
    rows = verdict_rows([{"prompt": PROMPT, "steps": steps, "hard_labels": [1, 0, 0], "index": 7}])
    assert [r["response"] for r in rows] == ["Yes", "No", "No"]
    assert [r["prompt"] for r in rows] == [PROMPT + "".join(steps[:k]) + VERDICT_QUESTION for k in (1, 2, 3)]
    assert {r["index"] for r in rows} == {7}
    assert verdict_rows([{"prompt": "p", "steps": ["a"], "hard_labels": [1], "index": 0}], "?")[0]["prompt"] == "pa?"


def by_hand(verifier: GenerativeVerifier, prompt: str, answer: str) -> float:
    """log P(answer, EOS | prompt) from one unpadded forward pass."""
    tok = verifier.tokenizer
    prompt_ids = tok.encode(prompt)
    answer_ids = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
    with torch.no_grad():
        logits = verifier.model(torch.tensor([prompt_ids + answer_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return sum(logprobs[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(answer_ids))


def sample(response: str) -> RewardSample:
    return RewardSample("What is 27 + 58?", response, [], "85", rendered_prompt=PROMPT)


def test_scores_are_p_yes_over_p_yes_plus_p_no_of_the_verdict_prompt(model_path):
    verifier = GenerativeVerifier(model_path, batch_size=2, device="cpu")  # 3 responses: a padded batch, then one
    samples = [sample(RIGHT), sample(WRONG), sample(RIGHT[:30]), sample("")]
    scores = verifier.score(samples)
    check_scores("genrm", scores, len(samples))
    expected = []
    for s in samples[:3]:
        text = verdict_prompt(PROMPT, s.response)
        yes, no = by_hand(verifier, text, "Yes"), by_hand(verifier, text, "No")
        expected.append(math.exp(yes) / (math.exp(yes) + math.exp(no)))
    assert scores == pytest.approx(expected + [0.0], rel=1e-4)
    asked = GenerativeVerifier(model_path, question="\nRight? ", device="cpu").score(samples[:1])
    assert asked != pytest.approx(scores[:1])  # the question is part of the prompt


def test_a_verifier_trained_on_verdicts_ranks_the_right_solution_first(model_path):
    """A few SFT steps on the two verdict rows (the loss ``algorithms/sft.py`` trains: the answer and EOS after
    the prompt) turn the random model's scores into Yes for the right solution and No for the wrong one."""
    from rlcore.chat import encode_conversation
    from rlcore.sequences import response_logprobs

    verifier = GenerativeVerifier(model_path, device="cpu")
    rows = verdict_rows([{"prompt": PROMPT, "steps": [RIGHT], "hard_labels": [1], "index": 0},
                         {"prompt": PROMPT, "steps": [WRONG], "hard_labels": [0], "index": 1}])
    encoded = [encode_conversation(r["prompt"], r["response"], verifier.tokenizer) for r in rows]
    optimizer = torch.optim.AdamW(verifier.model.parameters(), lr=3e-3)
    verifier.model.train()
    for _ in range(30):
        logprobs, _ = response_logprobs(verifier.model, [p for p, _, _ in encoded], [a for _, a, _ in encoded],
                                        pad_id=verifier.pad_id, width=max(len(a) for _, a, _ in encoded))
        optimizer.zero_grad()
        (-logprobs.sum()).backward()
        optimizer.step()
    verifier.model.eval()
    right, wrong = verifier.score([sample(RIGHT), sample(WRONG)])
    assert right > 0.9 and wrong < 0.1


def test_registered_with_options_that_name_the_bad_value():
    assert REWARDS.resolve("genrm", "reward.terms[0].name") is GenerativeVerifier
    options = options_class(GenerativeVerifier)
    with pytest.raises(ValueError, match="model is empty"):
        options(model="")
    with pytest.raises(ValueError, match="question is empty"):
        options(model="m", question="")
    with pytest.raises(ValueError, match="batch_size=0"):
        options(model="m", batch_size=0)
