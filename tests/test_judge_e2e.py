"""A generative judge: a locally built model on its own vLLM engine, inside a reward pool on Ray."""

import pytest

from rlcore.config import load_config
from tests.test_batch import make

pytestmark = pytest.mark.slow


def test_judge_scores_a_batch_through_vllm(local_ray, local_model):
    from actors.groups import RewardGroup

    # The tiny arithmetic model as a judge: asked "<response>+0=", it answers a number, read on [0, 60].
    terms = (f"[{{name: exact_match}}, {{name: judge, num_workers: 1, timeout_s: 300, args: {{model: '{local_model}', "
             "template: '{response}+0=', parse: number, low: 0, high: 60, max_tokens: 4, dtype: float32}}]")
    group = RewardGroup(load_config(None, [f"reward.terms={terms}"]))
    batch = make([[1]] * 4)
    batch.responses, batch.answers = ["12", "30", "7", "banana"], ["12", "30", "7", "1"]
    metrics = group.score(batch)
    judged = batch.reward_terms["judge"]
    assert judged.shape == (4,) and ((judged >= 0) & (judged <= 1)).all()
    unparseable = batch.reward_terms["judge/unparseable"]
    assert set(unparseable.tolist()) <= {0.0, 1.0}
    assert judged.sum() > 0  # at least one judgement parsed into a score
    assert metrics["reward_faults/judge/errors"] == 0
