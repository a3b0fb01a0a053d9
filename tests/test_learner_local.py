"""The learner and reference roles without Ray: plain objects in this process (world size 1, gloo)."""

import pytest
import torch

from actors.learner import LearnerRank, free_address
from actors.models import CausalLM
from actors.reference import ReferenceWorker
from algorithms.grpo import GRPO
from launch.build import configure
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.config import ConfigError


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
    plan = configure(None, [f"model.path={local_model}", "learner.lr=1e-3", "learner.mini_batch_size=8",
                            "data.prompts_per_step=1", "learner.micro_batch_size=4", "algorithm.old_logprobs=recompute"])
    cfg, group = plan.cfg, plan.learners["actor"]
    assert type(plan.algorithm) is GRPO and group.model is CausalLM
    assert group.spec.provides == {"old_logprobs": "logprobs"}
    batch = sampled_batch(local_model)
    reference = ReferenceWorker(cfg, local_model)
    batch.ref_logprobs = reference.logprobs(batch)
    plan.algorithm.compute_advantages(batch)

    learner = LearnerRank(cfg, plan.algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    try:
        before = learner.forward(batch, "logprobs")
        assert before.shape == batch.response_mask.shape
        assert torch.allclose(before, batch.ref_logprobs, atol=1e-5)  # same initial weights
        batch.old_logprobs = learner.forward(batch, "logprobs")  # the driver fills what the group provides
        metrics = learner.train_step(batch, 1, plan.algorithm.state_dict())
        assert {"pg_loss", "kl", "entropy", "clip_frac", "grad_norm", "lr"} <= set(metrics)
        after = learner.forward(batch, "logprobs")
        # The update raised the advantage-weighted log-probs, the surrogate it ascends: Adam's first step moves each
        # weight by lr against its gradient's sign, a first-order gain of lr * |gradient|_1. Which single sample gains
        # most depends on the tokens the samples share, so on the CPU that sampled them.
        gain = (batch.advantages[:, None] * (after - before) * batch.response_mask).sum()  # GRPO: one per sample
        assert gain > 0, gain
        sd = learner.full_state_dict()
        assert "model.layers.0.self_attn.q_proj.weight" in sd and not any("_fsdp" in k for k in sd)
        learner.export(str(tmp_path / "final"))
        exported = ReferenceWorker(cfg, str(tmp_path / "final"))
        assert torch.allclose(exported.logprobs(batch), after, atol=1e-5)
    finally:
        learner.shutdown()


def test_critic_group_trains_values_towards_returns(local_model):
    """PPO's critic is a learner group like the policy: a value model trained with the algorithm's critic_loss."""
    from actors.models import ValueModel

    plan = configure(None, [f"model.path={local_model}", "algorithm.name=ppo", "data.prompts_per_step=1",
                            "learner.mini_batch_size=8", "algorithm.critic.mini_batch_size=8",
                            "algorithm.critic.micro_batch_size=4", "algorithm.critic.lr=1e-3"])
    group = plan.learners["critic"]
    assert group.model is ValueModel and group.spec.loss == "critic_loss"
    batch = sampled_batch(local_model)
    critic = LearnerRank(plan.cfg, plan.algorithm, "critic", group.spec, group.model, 0, 1)
    critic.setup(free_address())
    try:
        before = critic.forward(batch, "values")
        assert before.shape == batch.response_mask.shape
        assert torch.equal(before * (1 - batch.response_mask), torch.zeros_like(before))  # 0 on padding
        batch.values = before
        batch.returns = (before.mean() + 1.0) * batch.response_mask  # a target 1 above the current values
        metrics = critic.train_step(batch, 1, plan.algorithm.state_dict())
        assert {"value_loss", "values", "vf_clip_frac", "grad_norm", "lr"} <= set(metrics)
        after = critic.forward(batch, "values")
        error = lambda v: (((v - batch.returns) * batch.response_mask) ** 2).sum()  # noqa: E731
        assert error(after) < error(before)
    finally:
        critic.shutdown()


def test_set_threads_defaults_to_the_cores_over_the_sharers():
    import os

    from actors.models import set_threads

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        assert set_threads(3) == 3 and torch.get_num_threads() == 3
        assert set_threads(0, sharers=2) == max(1, cores // 2) == torch.get_num_threads()
        assert set_threads(0) == cores == torch.get_num_threads()
        torch.set_num_threads(1)
        assert set_threads(0, "cuda") == 1 == torch.get_num_threads()  # on a GPU, Ray's count (num_cpus) stays
        assert set_threads(2, "cuda") == 2  # an explicit count holds everywhere
    finally:
        torch.set_num_threads(before)


def test_bf16_mixed_precision_runs_the_passes_in_bf16_and_keeps_fp32_weights(local_model):
    plan = configure(None, [f"model.path={local_model}", "reference.mixed_precision=bf16"])
    batch = sampled_batch(local_model)
    fp32 = ReferenceWorker(configure(None, [f"model.path={local_model}"]).cfg, local_model).logprobs(batch)
    reference = ReferenceWorker(plan.cfg, local_model)
    bf16 = reference.logprobs(batch)
    assert next(reference.model.parameters()).dtype == torch.float32 and bf16.dtype == torch.float32
    gap = ((bf16 - fp32) * batch.response_mask).abs().max().item()
    assert 0 < gap < 0.1  # bf16 matmuls: close to fp32, not equal to it
    with pytest.raises(ConfigError, match="learner.mixed_precision='fp8' is not one of none, bf16"):
        configure(None, ["learner.mixed_precision=fp8"])


def _learner(local_model, *overrides):
    plan = configure(None, [f"model.path={local_model}", "learner.lr=1e-3", "learner.mini_batch_size=8",
                            "data.prompts_per_step=1", "learner.micro_batch_size=4",
                            "algorithm.old_logprobs=recompute", *overrides])
    group = plan.learners["actor"]
    learner = LearnerRank(plan.cfg, plan.algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    return plan, learner


def _scored(local_model, plan, learner):
    batch = sampled_batch(local_model)
    batch.ref_logprobs = torch.zeros_like(batch.response_mask)
    plan.algorithm.compute_advantages(batch)
    batch.old_logprobs = learner.forward(batch, "logprobs")
    return batch


def test_bf16_model_dtype_computes_in_bf16_over_fp32_master_weights(local_model):
    """model.dtype=bfloat16: FSDP2 casts the float32 master weights to bf16 for the passes; the weights, their
    gradients and AdamW's state stay float32, so an update far below bf16's resolution still changes them."""
    plan, learner = _learner(local_model, "model.dtype=bfloat16", "learner.lr=1e-7")
    try:
        seen = {}
        proj = learner.model.model.layers[0].self_attn.q_proj
        hook = proj.register_forward_hook(lambda m, args, out: seen.update(weight=m.weight.dtype, out=out.dtype))
        batch = _scored(local_model, plan, learner)
        hook.remove()
        assert seen == {"weight": torch.bfloat16, "out": torch.bfloat16}
        learner.model.reshard()  # the root stays gathered after a forward pass: back to its shards
        masters = {n: p.detach().to_local().clone() for n, p in learner.model.named_parameters()}
        assert {t.dtype for t in masters.values()} == {torch.float32}
        learner.train_step(batch, 1, plan.algorithm.state_dict())
        state = next(iter(learner.optimizer.state.values()))
        assert state["exp_avg"].to_local().dtype == torch.float32
        learner.model.reshard()
        moved = max((p.detach().to_local() - masters[n]).abs().max().item() for n, p in learner.model.named_parameters())
        assert 0 < moved < 1e-5  # a bf16 weight near 0.02 moves in steps of about 1e-4: this update would be lost
        reference = ReferenceWorker(plan.cfg, local_model)  # the reference computes in bf16 too
        assert next(reference.model.parameters()).dtype == torch.bfloat16
    finally:
        learner.shutdown()


def test_activation_checkpointing_keeps_the_gradients_and_saves_fewer_activations(local_model):
    def run(*overrides):
        plan, learner = _learner(local_model, *overrides)
        try:
            batch = _scored(local_model, plan, learner)
            saved = []
            learner.model.train()
            with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
                outputs = learner.kind.forward(learner.model, batch)
            metrics = learner.train_step(batch, 1, plan.algorithm.state_dict())
            return sum(saved), outputs["logprobs"].detach(), metrics
        finally:
            learner.shutdown()

    plain_saved, plain_lp, plain = run()
    saved, lp, metrics = run("learner.activation_checkpointing=true")
    assert torch.allclose(lp, plain_lp, atol=1e-6)
    for key in ("pg_loss", "grad_norm", "entropy"):
        assert metrics[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    assert saved < plain_saved / 2, (saved, plain_saved)


@pytest.mark.parametrize("packing", ["packed", "grouped"])
def test_packed_and_grouped_learners_equal_padded(local_model, packing):
    """Packed (one row) and grouped (the group's prompt once) micro-batches give the padded log-probs and update."""
    plan, padded = _learner(local_model, "learner.packing=padded")
    try:
        batch = _scored(local_model, plan, padded)
        want_lp, want = batch.old_logprobs, padded.train_step(batch, 1, plan.algorithm.state_dict())
    finally:
        padded.shutdown()
    plan, other = _learner(local_model, f"learner.packing={packing}")
    try:
        assert other.kind.layout == packing
        batch = _scored(local_model, plan, other)
        assert torch.allclose(batch.old_logprobs, want_lp, atol=1e-5)
        got = other.train_step(batch, 1, plan.algorithm.state_dict())
        for key in ("pg_loss", "grad_norm", "entropy"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
        if packing == "packed":
            other.settings.max_tokens_per_micro_batch = 40  # the learner's own budget: 5 samples of 8 tokens each
            assert [len(m) for m in other.parts(batch)] == [5, 3]
    finally:
        other.shutdown()


def test_lora_trains_only_the_adapter_and_merges_into_the_base_names(local_model, tmp_path):
    """learner.lora_rank: peft's adapter on every projection; the base weights stay frozen, the rollout workers and
    the export get W + (alpha / r) B A under the base model's own names, and the adapter loads back with peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    plan, learner = _learner(local_model, "learner.lora_rank=4", "learner.lora_alpha=8", "learner.lr=1e-2")
    try:
        trained = [p for group in learner.optimizer.param_groups for p in group["params"]]
        names = {id(p): n for n, p in learner.model.named_parameters()}
        assert trained and all("lora_" in names[id(p)] for p in trained)
        initial = learner.full_state_dict()
        base = AutoModelForCausalLM.from_pretrained(local_model).state_dict()
        assert set(initial) == set(base)  # the merged weights carry the base model's names, nothing of peft's
        assert all(torch.equal(initial[k], base[k]) for k in base)  # B starts at 0: the merge adds nothing yet

        batch = _scored(local_model, plan, learner)
        learner.train_step(batch, 1, plan.algorithm.state_dict())
        merged = learner.full_state_dict()
        changed = {k for k in base if not torch.equal(merged[k], base[k])}
        assert changed and all(k.endswith("_proj.weight") for k in changed)
        assert "model.layers.0.mlp.down_proj.weight" in changed and "model.embed_tokens.weight" not in changed
        # The merged weights compute what the learner's adapter computes: what a rollout worker samples with.
        merged_model = AutoModelForCausalLM.from_pretrained(local_model)
        merged_model.load_state_dict(merged)
        after = learner.forward(batch, "logprobs")
        assert torch.allclose(learner.kind.forward(merged_model, batch, ("logprobs",))["logprobs"], after,
                              atol=1e-5)

        learner.export(str(tmp_path / "final"))
        exported = ReferenceWorker(plan.cfg, str(tmp_path / "final"))
        assert torch.allclose(exported.logprobs(batch), after, atol=1e-5)
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(local_model),
                                            str(tmp_path / "final" / "adapter"))
        with torch.no_grad():
            lp = learner.kind.forward(adapted.get_base_model(), batch, ("logprobs",))["logprobs"]
        assert torch.allclose(lp * batch.response_mask, after, atol=1e-5)
    finally:
        learner.shutdown()


def test_lora_is_for_the_policy_only():
    with pytest.raises(ConfigError, match="algorithm.critic.lora_rank: LoRA is for a causal LM policy, not a "
                                          "ValueModel"):
        configure(None, ["algorithm.name=ppo", "algorithm.critic.lora_rank=8"])
    with pytest.raises(ConfigError, match="learner.lora_rank=-1 must be >= 0"):
        configure(None, ["learner.lora_rank=-1"])


def _uneven_sft_batch() -> RolloutBatch:
    """Eight SFT rows: four long (12 tokens) and four short (3 tokens)."""
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 15, (n,), generator=g).tolist() for n in [4, 5, 3, 4, 1, 2, 1, 1]]
    responses = [torch.randint(3, 15, (12 - len(p) if i < 4 else 3 - len(p),), generator=g).tolist()
                 for i, p in enumerate(prompts)]
    return RolloutBatch(prompt_ids=prompts, response_ids=responses, response_mask=pad_2d([[1.0] * len(r) for r in responses]),
                        group_ids=torch.arange(8))


def _sft_rank(rank: int, slices: list[list[int]], address: tuple[str, int], model_path: str, out: str) -> None:
    """One rank of an SFT learner group under a 24-token budget: its slice's log-probs, one update, the weights."""
    torch.set_num_threads(1)
    plan = configure(None, [f"model.path={model_path}", "algorithm.name=sft", "reference.enabled=false",
                            "data.prompts_per_step=8", "learner.mini_batch_size=8", "learner.lr=1e-2",
                            "learner.max_tokens_per_micro_batch=24"])
    group = plan.learners["actor"]
    learner = LearnerRank(plan.cfg, plan.algorithm, "actor", group.spec, group.model, rank, len(slices))
    learner.setup(address)
    try:
        batch = _uneven_sft_batch().select(slices[rank])
        result = {"logprobs": learner.forward(batch, "logprobs"), "parts": len(learner.parts(batch))}
        result["metrics"] = learner.train_step(batch, 1, plan.algorithm.state_dict())
        result["weights"] = learner.full_state_dict()
        torch.save(result, f"{out}.{rank}")
    finally:
        learner.shutdown()


def _run_ranks(slices: list[list[int]], model_path: str, out: str) -> list[dict]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    address = free_address()
    procs = [ctx.Process(target=_sft_rank, args=(r, slices, address, model_path, out)) for r in range(len(slices))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
        if p.is_alive():  # a rank left waiting in a collective the other never entered
            for q in procs:
                q.kill()
            pytest.fail("a rank hung in a collective")
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [torch.load(f"{out}.{r}") for r in range(len(slices))]


def test_two_ranks_with_uneven_tokens_update_as_one_rank_does(local_model, tmp_path):
    """Rank 0 holds the long rows, rank 1 the short ones: under a token budget rank 0 needs two micro-batches and
    rank 1 one, yet both run two (each pass is a collective), and the token-weighted loss counts the group's tokens,
    so the update is the one rank's on the whole batch."""
    one = _run_ranks([list(range(8))], local_model, str(tmp_path / "one"))[0]
    two = _run_ranks([[0, 1, 2, 3], [4, 5, 6, 7]], local_model, str(tmp_path / "two"))
    assert [r["parts"] for r in two] == [2, 2] and one["parts"] == 3
    assert torch.allclose(torch.cat([r["logprobs"] for r in two]), one["logprobs"], atol=1e-5)
    assert two[0]["metrics"]["grad_norm"] == pytest.approx(one["metrics"]["grad_norm"], rel=1e-4)
    for name, weight in one["weights"].items():
        # Adam's first step moves a weight by lr = 1e-2 against its gradient's sign: a wrong weighting flips signs,
        # 1e-2 and more; a gradient near Adam's eps moves by less, and summation order moved one of 2.4M by 1.1e-4
        # on an AMX machine
        assert torch.allclose(two[0]["weights"][name], weight, atol=1e-3), name


def test_cosine_schedule_ends_at_min_lr_on_the_runs_last_optimizer_step(local_model):
    """Two training steps of 8 samples in mini-batches of 4: 4 optimizer steps, so the decay is half done after the
    first step and at its floor after the second (rlcore.schedule.lr_multiplier)."""
    plan = configure(None, [f"model.path={local_model}", "learner.lr=1e-3", "learner.mini_batch_size=4",
                            "learner.micro_batch_size=4", "data.prompts_per_step=1", "rollout.n=8",
                            "trainer.total_steps=2", "learner.lr_schedule=cosine", "learner.min_lr_ratio=0.1",
                            "algorithm.old_logprobs=recompute"])
    group = plan.learners["actor"]
    batch = sampled_batch(local_model)
    batch.ref_logprobs = torch.zeros_like(batch.response_mask)
    plan.algorithm.compute_advantages(batch)
    learner = LearnerRank(plan.cfg, plan.algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    try:
        batch.old_logprobs = learner.forward(batch, "logprobs")
        lrs = [learner.train_step(batch, step, plan.algorithm.state_dict())["lr"] for step in (1, 2)]
    finally:
        learner.shutdown()
    assert lrs == pytest.approx([1e-3 * (0.1 + 0.9 * 0.5), 1e-4])
