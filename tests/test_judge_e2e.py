"""A generative judge: a locally built model on its own vLLM engine, inside a reward pool on Ray."""

import re

import pytest

from launch.build import configure
from tests.test_batch import make

pytestmark = pytest.mark.slow


def judged_by_transformers(model_path: str, prompts: list[str], max_new_tokens: int) -> list[str]:
    """The same judge model's greedy judgements, computed without vLLM."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_path), AutoModelForCausalLM.from_pretrained(model_path)
    texts = []
    for prompt in prompts:
        ids = torch.tensor([tok.encode(prompt)])
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)
        texts.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def test_judge_scores_a_batch_through_vllm(local_ray, local_model):
    from actors.groups import RewardGroup, wait_ready

    # The tiny arithmetic model as a judge: asked "<response>+0=", it answers a number, read on [0, 60].
    terms = (f"[{{name: exact_match}}, {{name: judge, num_workers: 1, timeout_s: 300, args: {{model: '{local_model}', "
             "template: '{response}+0=', parse: number, low: 0, high: 60, max_tokens: 4, dtype: float32, "
             "failure_score: -1.0}}]")
    group = RewardGroup(configure(None, [f"reward.terms={terms}"]).reward_terms)
    wait_ready([group])
    batch = make([[1]] * 4)
    batch.responses, batch.answers = ["12", "30", "7", "banana"], ["12", "30", "7", "1"]
    metrics = group.score(batch)

    # Independently: the same model's greedy judgements, read as the last integer on the 0..60 scale.
    texts = judged_by_transformers(local_model, [f"{r}+0=" for r in batch.responses], max_new_tokens=4)
    numbers = [re.findall(r"\d+", t) for t in texts]
    expected = [int(n[-1]) / 60 if n and int(n[-1]) <= 60 else -1.0 for n in numbers]
    assert batch.reward_terms["judge"].tolist() == pytest.approx(expected), texts
    assert batch.reward_terms["judge/unparseable"].tolist() == [float(e == -1.0) for e in expected]
    # A real judgement: each number gets a number back, and not the same one. (What the warm-started model answers
    # depends on the CPU it was built on: "12+0=" gave 12 on an AVX-512 machine and 22 on an AVX2-only one.)
    assert all(e != -1.0 for e in expected[:3]) and len(set(expected[:3])) > 1, texts
    assert metrics["reward_faults/judge/errors"] == 0
