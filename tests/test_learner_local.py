"""The learner and reference roles without Ray: plain objects in this process (world size 1, gloo)."""

import torch

from actors.learner import Learner, free_address
from actors.reference import ReferenceWorker
from algorithms.grpo import GRPO
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.config import load_config


def sampled_batch(model_path: str) -> RolloutBatch:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    prompt = tok.encode("12+7=")
    torch.manual_seed(0)
    out = model.generate(torch.tensor([prompt] * 8), do_sample=True, max_new_tokens=4, top_k=0,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    responses = [[t for t in row[len(prompt):].tolist() if t != tok.pad_token_id] for row in out]
    return RolloutBatch(
        prompt_ids=[prompt] * 8, response_ids=responses, group_ids=torch.zeros(8, dtype=torch.long),
        rollout_logprobs=pad_2d([[0.0] * len(r) for r in responses]),
        response_mask=pad_2d([[1.0] * len(r) for r in responses]), policy_version=torch.zeros(8, dtype=torch.long),
        prompts=["12+7="] * 8, responses=[tok.decode(r) for r in responses], answers=["19"] * 8,
        truncated=torch.zeros(8, dtype=torch.bool), metadata=[{}] * 8, scores=torch.linspace(0, 1, 8))


def test_learner_and_reference_run_without_ray(local_model, tmp_path):
    cfg = load_config(None, ["learner.lr=1e-3", "algorithm.mini_batch_size=8", "data.prompts_per_step=1",
                             "learner.micro_batch_size=4"])
    batch = sampled_batch(local_model)
    reference = ReferenceWorker(local_model)
    batch.ref_logprobs = reference.logprobs(batch)
    GRPO(cfg).compute_advantages(batch)

    learner = Learner(cfg, local_model, rank=0, world_size=1)
    learner.setup(*free_address())
    try:
        before = learner.logprobs(batch)
        assert torch.allclose(before, batch.ref_logprobs, atol=1e-5)  # same initial weights
        metrics = learner.train_step(batch)
        assert {"pg_loss", "kl", "entropy", "clip_frac", "grad_norm", "lr"} <= set(metrics)
        after = learner.logprobs(batch)
        # The update raised the log-prob of the best-scored sample relative to the worst.
        gain = ((after - before) * batch.response_mask).sum(-1)
        assert gain[-1] > gain[0]
        sd = learner.full_state_dict()
        assert "model.layers.0.self_attn.q_proj.weight" in sd and not any("_fsdp" in k for k in sd)
        learner.export(str(tmp_path / "final"))
        exported = ReferenceWorker(str(tmp_path / "final"))
        assert torch.allclose(exported.logprobs(batch), after, atol=1e-5)
    finally:
        learner.shutdown()
