"""SFT, rejection-sampling SFT and distillation (algorithms/sft.py, launch/sft_sources.py), without Ray:
hand-computed losses, token-budget micro-batches on a tiny model, and the sources with in-process fakes."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch

import actors.groups as groups_module
from actors.learner import LearnerRank
from actors.models import MODELS, CausalLM, UntemperedCausalLM
from algorithms.base import LearnerSpec
from algorithms.losses import reverse_kl_loss, sft_loss
from algorithms.sft import (
    SFT,
    DistillSFT,
    OnPolicyDistill,
    RejectionSFT,
    fill,
    keep_samples,
)
from launch.build import configure, load, render
from launch.sft_sources import (
    EvalRollout,
    SampledSFTSource,
    SFTSource,
    TeacherSFTSource,
)
from launch.sources import SOURCES, Roles
from rlcore.assets import AssetError
from rlcore.batch import RolloutBatch, micro_batches, pad_2d, sequence_lengths, token_budget_parts, trim
from rlcore.config import ConfigError
from rlcore.data import DataError, PromptRow

NO_REF = "reference.enabled=false"
SMALL = "learner.mini_batch_size=32"  # divides the default data.prompts_per_step


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=0)


# ---------------------------------------------------------------- losses


def test_sft_loss_is_the_token_mean_nll_and_ignores_masked_tokens():
    logprobs = torch.tensor([[-1.0, -2.0, -100.0], [-0.5, float("nan"), -7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, metrics = sft_loss(logprobs, mask)
    # -( -1 - 2 - 0.5 ) / 3 trained tokens; the -100, the NaN and the -7 are not trained
    assert close(loss, 3.5 / 3) and metrics == {"sft_loss": pytest.approx(3.5 / 3), "tokens": 3.0}
    loss.backward()
    third = 1 / 3
    assert close(logprobs.grad, [[-third, -third, 0.0], [-third, 0.0, 0.0]])
    empty, _ = sft_loss(torch.full((1, 2), -3.0), torch.zeros(1, 2))
    assert empty.item() == 0.0  # nothing to learn: 0, not NaN


def test_reverse_kl_loss_value_and_gradient_by_hand():
    student = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    teacher = torch.tensor([[-1.5, -1.0], [-0.5, -9.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, metrics = reverse_kl_loss(student, teacher, mask)
    # k = lp_s - lp_t = [[0.5, -1.0], [0.0, (pad)]]; reverse KL = (0.5 - 1 + 0) / 3
    assert metrics["reverse_kl"] == pytest.approx(-0.5 / 3)
    # L = (0.5 * -1 + (-1) * (-2) + 0 * (-0.5)) / 3 = 1.5 / 3
    assert close(loss, 0.5)
    loss.backward()
    # dL/dlp_s = sg(k) / 3 on trained tokens: the policy gradient with reward -k, not the gradient of k itself
    assert close(student.grad, [[0.5 / 3, -1.0 / 3], [0.0, 0.0]])

    student.grad = None
    weights = torch.tensor([[2.0, 0.5], [1.0, 1.0]])
    loss, _ = reverse_kl_loss(student, teacher, mask, weights)
    assert close(loss, (0.5 * -1.0 * 2.0 + (-1.0) * (-2.0) * 0.5 + 0.0) / 3)  # = 0
    loss.backward()
    assert close(student.grad, [[1.0 / 3, -0.5 / 3], [0.0, 0.0]])


# ---------------------------------------------------------------- rejection filtering


def test_keep_samples_takes_exactly_the_passing_ones_per_prompt():
    passed = torch.tensor([True, True, False, True, True, True, False])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    texts = ["a", "a", "b", "c", "d", "e", "f"]
    assert keep_samples(passed, groups, texts, per_group=2, distinct=True) == [0, 3, 4]  # "a" twice: once; cap 2
    assert keep_samples(passed, groups, texts, per_group=2, distinct=False) == [0, 1, 3, 4]
    assert keep_samples(passed, groups, texts, per_group=1, distinct=True) == [0, 3]
    assert keep_samples(passed, groups, texts, per_group=5, distinct=True) == [0, 3, 4, 5]
    assert keep_samples(torch.zeros(3, dtype=torch.bool), groups[:3], texts[:3], 2, True) == []


def test_fill_repeats_in_order_when_short():
    assert fill(3, 7) == [0, 1, 2, 0, 1, 2, 0]
    assert fill(5, 3) == [0, 1, 2]
    with pytest.raises(ValueError):
        fill(0, 2)


def scored(responses, answers, truncated, groups):
    correct = torch.tensor([float(r == a) for r, a in zip(responses, answers)])
    return RolloutBatch(group_ids=torch.tensor(groups), responses=responses, answers=answers,
                        truncated=torch.tensor(truncated), scores=correct * 2 - 0.5,
                        reward_terms={"exact_match": correct})


def test_rejection_keeps_correct_finished_samples_or_a_min_score():
    plan = configure(None, ["algorithm.name=rejection_sft", NO_REF, "rollout.n=4", "algorithm.samples_per_prompt=2",
                            "learner.mini_batch_size=32"])
    algo = plan.algorithm
    batch = scored(["3", "3", "4", "3", "5", "6", "5", "5"], ["3"] * 4 + ["5"] * 4,
                   [False, False, False, True, False, False, False, False], [0] * 4 + [1] * 4)
    # prompt 0: "3" twice (distinct: once), "3" truncated never; prompt 1: the two "5"s are one response
    assert algo.passes(batch).tolist() == [True, True, False, False, True, False, True, True]
    assert algo.keep(batch) == [0, 4]
    lenient = configure(None, ["algorithm.name=rejection_sft", NO_REF, "rollout.n=4", "algorithm.min_score=-1",
                               "algorithm.distinct=false", "algorithm.samples_per_prompt=3",
                               "learner.mini_batch_size=32"]).algorithm
    assert lenient.keep(batch) == [0, 1, 2, 4, 5, 6]  # score >= -1: the wrong "4" too; 3 per prompt
    distill = configure(None, ["algorithm.name=distill_sft", NO_REF, "algorithm.teacher_path=local://tiny-qwen2-arith",
                               "rollout.n=4", "algorithm.samples_per_prompt=4", "algorithm.distinct=false"]).algorithm
    assert distill.keep(batch) == [0, 1, 2, 4, 5, 6, 7]  # only_correct=false: every finished sample
    assert distill.teacher_path.startswith("/")  # resolved at configure time


# ---------------------------------------------------------------- token-budget micro-batches


def test_token_budget_parts_sort_longest_first_within_the_budget():
    assert token_budget_parts([3, 10, 4, 10, 2], 20) == [[1, 3], [2, 0, 4]]
    assert token_budget_parts([30, 5], 20) == [[0], [1]]  # too long for the budget: a part of its own
    assert token_budget_parts([], 8) == []
    # packed, a part's size is its tokens, not samples × the longest: [10, 4] fits 20 where padded [10, 4, 4] would not
    assert token_budget_parts([3, 10, 4, 10, 2], 20, packed=True) == [[1, 3], [2, 0, 4]]
    assert token_budget_parts([10, 4, 4, 3], 20, packed=True) == [[0, 1, 2], [3]]
    assert token_budget_parts([10, 4, 4, 3], 20) == [[0, 1], [2, 3]]


def variable_batch() -> RolloutBatch:
    prompts = [[5, 6], [7, 8, 9, 10], [11], [12, 13, 14], [15, 16], [17]]
    responses = [[20, 21, 22, 23, 24], [25, 26], [27, 28, 29], [30], [31, 32, 33, 34, 35, 36], [37, 38]]
    masks = [[1, 1, 0, 1, 1], [1, 1], [0, 1, 1], [1], [1, 0, 0, 1, 1, 1], [1, 1]]  # template tokens inside too
    return RolloutBatch(prompt_ids=prompts, response_ids=responses, response_mask=pad_2d(masks),
                        group_ids=torch.arange(6), rollout_logprobs=pad_2d([[-1.0] * len(r) for r in responses]))


def test_micro_batches_by_budget_cover_each_sample_once_trimmed():
    batch = variable_batch()
    parts = [trim(batch.select(part)) for part in token_budget_parts(sequence_lengths(batch), 16)]
    seen = sorted(p for m in parts for p in m.group_ids.tolist())
    assert seen == list(range(6))
    for m in parts:
        lengths = [len(p) + len(r) for p, r in zip(m.prompt_ids, m.response_ids)]
        assert len(m) * max(lengths) <= 16 or len(m) == 1
        assert m.response_mask.shape[1] == max(map(len, m.response_ids))  # cut to its own longest response
        assert m.rollout_logprobs.shape == m.response_mask.shape
    fixed = list(micro_batches(batch, 4))  # the fixed-count path: in order, full width
    assert [m.group_ids.tolist() for m in fixed] == [[0, 1, 2, 3], [4, 5]]
    assert all(m.response_mask.shape[1] == 6 for m in fixed)


@pytest.fixture(scope="module")
def tiny_model():
    from rlcore.local_model import LocalModelSpec, build_random_model, build_tokenizer

    spec = LocalModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return build_random_model(spec, build_tokenizer())


def gradients(tiny_model, budget, weight, micro_batch_size=64):
    plan = configure(None, ["algorithm.name=sft", NO_REF, "data.prompts_per_step=6", "learner.mini_batch_size=6",
                            f"learner.micro_batch_size={micro_batch_size}"])
    spec = LearnerSpec("causal_lm_untempered", plan.cfg.learner, loss_weight=weight,
                       max_tokens_per_micro_batch=budget)
    rank = LearnerRank(plan.cfg, plan.algorithm, "actor", spec, UntemperedCausalLM, 0, 1)
    rank.model = tiny_model
    tiny_model.zero_grad(set_to_none=True)
    batch = variable_batch()
    metrics, _, finite = rank.accumulate(batch, plan.algorithm.loss)
    assert finite
    grads = torch.cat([p.grad.flatten() for p in tiny_model.parameters() if p.grad is not None]).clone()
    return grads, len(metrics), rank


def test_token_budget_micro_batches_give_the_gradient_of_one_big_batch(tiny_model):
    whole, count, _ = gradients(tiny_model, None, "tokens")
    assert count == 1
    budget, count, rank = gradients(tiny_model, 16, "tokens")
    assert count == 3  # [[4, 0], [1, 2], [3, 5]]: lengths 8 and 7, 6 and 4, 4 and 3, within 16 padded tokens
    assert torch.allclose(budget, whole, atol=1e-6, rtol=1e-4)
    pairs, _, _ = gradients(tiny_model, None, "tokens", micro_batch_size=2)
    assert torch.allclose(pairs, whole, atol=1e-6, rtol=1e-4)
    by_samples, _, _ = gradients(tiny_model, 16, "samples")  # weighting by samples is not the token mean
    assert not torch.allclose(by_samples, whole, atol=1e-4, rtol=1e-3)
    # The forward pass under a budget puts every sample's values back in its place.
    fixed = LearnerRank(rank.cfg, rank.algorithm, "actor", LearnerSpec("causal_lm_untempered", rank.settings),
                        UntemperedCausalLM, 0, 1)
    fixed.model = tiny_model
    batch = variable_batch()
    assert torch.allclose(rank.forward(batch, "logprobs"), fixed.forward(batch, "logprobs"), atol=1e-5)


def test_learner_spec_checks_its_batching_fields():
    settings = configure(None, []).cfg.learner
    with pytest.raises(ValueError, match="loss_weight='rows'"):
        LearnerSpec("causal_lm", settings, loss_weight="rows")
    with pytest.raises(ValueError, match="max_tokens_per_micro_batch=0"):
        LearnerSpec("causal_lm", settings, max_tokens_per_micro_batch=0)


# ---------------------------------------------------------------- algorithms, validation


def test_sft_trains_the_untempered_distribution_and_distillation_the_tempered_one():
    cfg = configure(None, ["rollout.temperature=0.5"]).cfg
    assert CausalLM(cfg).temperature == 0.5 and UntemperedCausalLM(cfg).temperature == 1.0
    assert MODELS.resolve("causal_lm_untempered", "x") is UntemperedCausalLM
    for name in ("sft", "rejection_sft"):
        plan = configure(None, [f"algorithm.name={name}", NO_REF, SMALL, "rollout.temperature=0.5",
                                "algorithm.max_tokens_per_micro_batch=512"])
        spec = plan.learners["actor"].spec
        assert (spec.model, spec.loss_weight, spec.max_tokens_per_micro_batch, spec.provides) == \
            ("causal_lm_untempered", "tokens", 512, {})
        assert plan.learners["actor"].model is UntemperedCausalLM
    plan = configure(None, ["algorithm.name=on_policy_distill", "reference.path=/teacher"])
    assert type(plan.algorithm) is OnPolicyDistill
    assert plan.learners["actor"].model is CausalLM and plan.source is SOURCES.entries["rollout"]
    assert {SFT.source, RejectionSFT.source, DistillSFT.source} == {"sft", "sampled_sft", "teacher_sft"}


def test_sample_counts_per_step():
    plan = configure(None, ["algorithm.name=sft", NO_REF, "data.prompts_per_step=8", "learner.mini_batch_size=4"])
    assert plan.algorithm.group_size() == 1
    plan = configure(None, ["algorithm.name=rejection_sft", NO_REF, "data.prompts_per_step=8", "rollout.n=4",
                            "algorithm.samples_per_prompt=3", "learner.mini_batch_size=24"])
    assert plan.algorithm.group_size() == 3 and plan.algorithm.max_sampling_rounds() == 4


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=sft"], "sft trains without a reference policy: set reference.enabled=false"),
    (["algorithm.name=sft", NO_REF, "algorithm.max_tokens_per_micro_batch=0"],
     "algorithm.max_tokens_per_micro_batch=0 must be > 0"),
    (["algorithm.name=sft", NO_REF, "data.prompts_per_step=6", "learner.mini_batch_size=4"],
     "learner.mini_batch_size=4 must divide data.prompts_per_step"),
    (["algorithm.name=rejection_sft"], "rejection_sft trains without a reference policy"),
    (["algorithm.name=rejection_sft", NO_REF, "rollout.n=4", "algorithm.samples_per_prompt=5"],
     "algorithm.samples_per_prompt=5 must be in [1, rollout.n=4]"),
    (["algorithm.name=rejection_sft", NO_REF, "algorithm.max_sampling_rounds=0"],
     "algorithm.max_sampling_rounds=0 must be >= 1"),
    (["algorithm.name=distill_sft", NO_REF], "algorithm.teacher_path is not set"),
    (["algorithm.name=on_policy_distill"], "set reference.enabled=true and reference.path=<teacher model>"),
    (["algorithm.name=on_policy_distill", "reference.enabled=false", "reference.path=/t"], "reference.path"),
    (["algorithm.name=on_policy_distill", "reference.path=/t", "algorithm.off_policy_correction=seq"],
     "algorithm.off_policy_correction='seq' is not one of auto, token, none"),
    (["algorithm.name=on_policy_distill", "reference.path=/t", "algorithm.is_cap=0.5"], "algorithm.is_cap=0.5"),
])
def test_validation_errors_are_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        configure(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_teacher_stops_the_run_at_configure_time():
    with pytest.raises(AssetError, match="^algorithm.teacher_path: path not found: /no/teacher$"):
        configure(None, ["algorithm.name=distill_sft", NO_REF, "algorithm.teacher_path=/no/teacher"])


def test_on_policy_distill_weighs_by_importance_only_off_policy():
    base = ["algorithm.name=on_policy_distill", "reference.path=/t", "data.prompts_per_step=4", "rollout.n=2",
            "learner.mini_batch_size=8"]
    assert not configure(None, base).algorithm.correct
    assert configure(None, base + ["learner.epochs=2"]).algorithm.correct
    assert configure(None, base + ["rollout.max_staleness=1"]).algorithm.correct
    algo = configure(None, base + ["algorithm.off_policy_correction=token", "algorithm.is_cap=2"]).algorithm
    assert algo.correct
    logprobs = torch.tensor([[-1.0, -2.0]])
    batch = RolloutBatch(response_mask=torch.ones(1, 2), ref_logprobs=torch.tensor([[-1.5, -1.0]]),
                         rollout_logprobs=torch.tensor([[-2.0, -2.0]]))
    loss, metrics = algo.loss({"logprobs": logprobs, "entropy": torch.zeros(1, 2)}, batch)
    # weights min(exp(lp - lp_rollout), 2) = [min(e, 2), 1] = [2, 1]; k = [0.5, -1]
    assert close(loss, (0.5 * -1.0 * 2.0 + (-1.0) * (-2.0) * 1.0) / 2)
    assert metrics["reverse_kl"] == pytest.approx(-0.25) and metrics["is/clipped_frac"] == pytest.approx(0.5)


# ---------------------------------------------------------------- the sources, with fake workers


class FakeRollout:
    """Answers prompt ``a+1=``: sample 0 and 1 right, 2 right but cut off, 3 wrong (n=4)."""

    made: ClassVar[list] = []

    def __init__(self, cfg, model_path, env=None):
        self.model_path, self.ready, self.updates, self.calls = model_path, [], [], []
        FakeRollout.made.append(self)

    def reply(self, row, j):
        return (row.answer, False) if j < 2 else (row.answer, True) if j == 2 else ("x", False)

    def generate(self, prompts, n, seed=None, greedy=False):
        self.calls.append((len(prompts), n, greedy))
        rows = []
        for g, row in enumerate(prompts):
            for j in range(1 if greedy else n):
                text, cut = self.reply(row, 0 if greedy else j)
                rows.append((g, row, text, cut))
        responses = [[ord(c) % 50 for c in text] + [1] for _, _, text, _ in rows]
        return RolloutBatch(
            prompt_ids=[[2, 3] for _ in rows], response_ids=responses,
            response_mask=pad_2d([[1.0] * len(r) for r in responses]),
            group_ids=torch.tensor([g for g, _, _, _ in rows]), prompt_index=torch.tensor([r.index for _, r, _, _ in rows]),
            rollout_logprobs=pad_2d([[-0.1] * len(r) for r in responses]),
            policy_version=torch.zeros(len(rows), dtype=torch.long), prompts=[r.prompt for _, r, _, _ in rows],
            responses=[t for _, _, t, _ in rows], answers=[r.answer for _, r, _, _ in rows],
            truncated=torch.tensor([c for _, _, _, c in rows]), metadata=[{} for _ in rows])

    def update_weights(self, ref, version):
        self.updates.append(version)


class WrongRollout(FakeRollout):
    def reply(self, row, j):
        return ("x", False)


class FakeRewards:
    def __init__(self, terms):
        self.ready = []

    def score(self, batch):
        right = torch.tensor([float(r == a) for r, a in zip(batch.responses, batch.answers)])
        batch.scores, batch.reward_terms = right, {"exact_match": right}
        return {}


class FakeActor:
    def __init__(self):
        self.forwarded = []

    def forward(self, shipment, output):
        self.forwarded.append(len(shipment.batch))
        return torch.full_like(shipment.batch.response_mask, -2.0)

    def state_dict_ref(self):
        return "weights"


class FakeShipment:
    def __init__(self, batch):
        self.batch = batch


@pytest.fixture
def fakes(monkeypatch):
    FakeRollout.made = []
    monkeypatch.setattr(groups_module, "RolloutGroup", FakeRollout)
    monkeypatch.setattr(groups_module, "RewardGroup", FakeRewards)
    monkeypatch.setattr(groups_module, "Shipment", FakeShipment)
    return Roles(reward_terms=[], learners={"actor": FakeActor()}, reference=None)


class AlwaysTwoRollout(FakeRollout):
    def reply(self, row, j):
        return ("2", False)


class PartRewards(FakeRewards):
    """exact_match, plus a logged part whose value is the response's length in characters."""

    def score(self, batch):
        super().score(batch)
        batch.reward_terms["l1/abs_deviation"] = torch.tensor([float(len(r)) for r in batch.responses])
        return {}


def test_greedy_eval_reports_every_reward_term_and_part(local_model):
    from launch.sources import greedy_eval

    rows = [PromptRow(0, "1+1=", "2"), PromptRow(1, "9+1=", "10")]
    rollout = AlwaysTwoRollout(None, local_model)
    metrics = greedy_eval(rollout, PartRewards([]), rows, "exact_match")
    assert rollout.calls == [(2, 1, True)]
    assert metrics["eval/accuracy"] == 0.5 and metrics["eval/reward"] == 0.5
    assert metrics["eval/reward/exact_match"] == 0.5 and metrics["eval/reward/l1/abs_deviation"] == 1.0
    assert metrics["eval/response_length"] == 2.0  # "2" and the stop token


def prompt_rows(count):
    return [PromptRow(i, f"{i}+1=", str(i + 1)) for i in range(count)]


def sampled(local_model, roles, *overrides, source=SampledSFTSource, name="rejection_sft", eval_rows=()):
    plan = configure(None, [f"model.path={local_model}", f"algorithm.name={name}", NO_REF, "data.prompts_per_step=3",
                            "rollout.n=4", "learner.mini_batch_size=3", "trainer.eval_every=1", *overrides])
    return source(plan.cfg, plan.algorithm, roles, prompt_rows(12), list(eval_rows))


def test_rejection_source_fills_a_step_with_correct_samples_only(local_model, fakes):
    src = sampled(local_model, fakes)
    out = src.collect(1)
    batch = out.batch
    assert len(batch) == 3 and batch.group_ids.tolist() == [0, 1, 2]
    assert batch.responses == batch.answers  # only correct answers
    assert batch.rollout_logprobs is None and batch.policy_version is not None  # the policy's, untempered training
    assert out.stats["sampling/rounds"] == 1 and out.stats["sampling/repeated"] == 0
    assert out.stats["sampling/passed_frac"] == 0.5 and out.stats["sampling/kept_frac"] == 0.25  # 2 of 4 pass, 1 kept
    assert out.stats["accuracy"] == 0.75 and out.stats["sft/tokens"] == float(batch.num_response_tokens)
    src.sync(fakes.learners["actor"], 1)
    assert FakeRollout.made[0].updates == [1]  # the sampler is the policy: synced after every update


def test_rejection_source_draws_more_rounds_then_repeats_in_order(local_model, fakes):
    two = sampled(local_model, fakes, "algorithm.samples_per_prompt=2", "learner.mini_batch_size=6")
    out = two.collect(1)
    assert out.stats["sampling/rounds"] == 2 and out.stats["sampling/repeated"] == 0  # distinct: 1 per prompt
    assert len(out.batch) == 6 and out.batch.responses == out.batch.answers
    short = sampled(local_model, fakes, "algorithm.samples_per_prompt=2", "learner.mini_batch_size=6",
                    "algorithm.max_sampling_rounds=1")
    out = short.collect(1)
    assert out.stats["sampling/repeated"] == 3
    assert out.batch.prompts[:3] == out.batch.prompts[3:] and len(set(out.batch.prompts)) == 3
    assert out.batch.prompts == short.collect(1).batch.prompts  # the same step fills the same way
    repeats = sampled(local_model, fakes, "algorithm.samples_per_prompt=2", "learner.mini_batch_size=6",
                      "algorithm.distinct=false")
    assert repeats.collect(1).stats["sampling/rounds"] == 1  # the two right samples of each prompt both count


def test_rejection_source_with_nothing_correct_says_so(local_model, fakes, monkeypatch):
    monkeypatch.setattr(groups_module, "RolloutGroup", WrongRollout)
    src = sampled(local_model, fakes, "algorithm.max_sampling_rounds=2")
    with pytest.raises(RuntimeError, match="none of the 24 samples of 2 sampling rounds passed"):
        src.collect(1)


def test_teacher_source_retokenizes_the_teacher_texts_and_syncs_the_student_lazily(local_model, fakes):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(local_model)
    src = sampled(local_model, fakes, f"algorithm.teacher_path={local_model}", source=TeacherSFTSource,
                  name="distill_sft", eval_rows=prompt_rows(5))
    teacher, student = FakeRollout.made
    assert teacher.model_path == local_model and src.sampler_path() == local_model
    out = src.collect(1)
    batch = out.batch
    for prompt, ids, response, mask in zip(batch.prompts, batch.response_ids, batch.responses,
                                           batch.response_mask.tolist()):
        assert ids == tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]  # the student's tokens
        assert mask[:len(ids)] == [1.0] * len(ids)
    assert batch.prompt_ids == [tok.encode(p) for p in batch.prompts]
    assert batch.policy_version is None and batch.rollout_logprobs is None  # not the policy's samples
    assert "teacher/accuracy" in out.stats and "accuracy" not in out.stats
    for version in (1, 2, 3):
        src.sync(fakes.learners["actor"], version)
    assert teacher.updates == [] and student.updates == []  # nothing pushed yet
    metrics = src.evaluate()
    assert student.updates == [3] and teacher.updates == []  # the newest weights, once, to the student only
    assert metrics["eval/teacher_accuracy"] == 1.0 and metrics["eval/loss"] == pytest.approx(2.0)
    assert metrics["eval/accuracy"] == 1.0
    src.evaluate()
    assert student.updates == [3] and teacher.calls.count((5, 1, True)) == 1  # teacher's answers made once


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sft_source_batches_rows_and_evaluates_loss_and_accuracy(local_model, fakes, tmp_path):
    from transformers import AutoTokenizer

    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"{i}+2=", "response": str(i + 2)} for i in range(6)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "7+2=", "response": "9", "answer": "9"},
                                                 {"prompt": "8+2=", "response": "10"}])
    plan = configure(None, [f"model.path={local_model}", "algorithm.name=sft", NO_REF, "data.prompts_per_step=4",
                            "learner.mini_batch_size=4", "trainer.eval_every=1", "data.shuffle=false"])
    rows, evals = SFTSource.load(plan.cfg, [train]), SFTSource.load(plan.cfg, [test])
    src = SFTSource(plan.cfg, plan.algorithm, fakes, rows, evals)
    tok = AutoTokenizer.from_pretrained(local_model)
    out = src.collect(1)
    assert out.batch.prompt_ids[0] == tok.encode("0+2=")
    assert out.batch.response_ids[0] == tok.encode("2", add_special_tokens=False) + [tok.eos_token_id]
    assert out.batch.group_ids.tolist() == [0, 1, 2, 3] and out.batch.responses[:2] == ["2", "3"]
    assert out.stats["sft/tokens"] == float(out.batch.num_response_tokens)
    (rollout,) = FakeRollout.made  # for the one held-out row with an answer
    src.sync(fakes.learners["actor"], 1)
    src.sync(fakes.learners["actor"], 2)
    assert rollout.updates == []
    metrics = src.evaluate()
    assert metrics["eval/loss"] == pytest.approx(2.0)  # the fake actor's log-prob is -2 everywhere
    assert fakes.learners["actor"].forwarded == [2]  # both held-out rows
    assert metrics["eval/accuracy"] == 1.0 and rollout.calls == [(1, 1, True)] and rollout.updates == [2]


def test_sft_rows_the_template_cannot_render_fail_at_render(local_model, tmp_path):
    bad = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "1+1="},
                                                              {"role": "assistant", "content": "2"}]}])
    plan = configure(None, [f"model.path={local_model}", "algorithm.name=sft", NO_REF, SMALL,
                            f"data.train_files=[{bad}]", "data.eval_files=[]"])
    data = load(plan)  # no tokenizer yet: Ray starts meanwhile
    with pytest.raises(DataError, match="chat.jsonl line 1: .*no chat template"):
        render(plan, data)


def test_eval_rollout_pushes_only_the_newest_weights_when_asked(fakes, monkeypatch):
    plan = configure(None, ["algorithm.name=sft", NO_REF, SMALL])
    ev = EvalRollout(plan.cfg, fakes)
    ev.sync(fakes.learners["actor"], 4)
    ev.sync(fakes.learners["actor"], 5)
    ev.evaluate([PromptRow(0, "1+1=", "2")])
    ev.evaluate([PromptRow(0, "1+1=", "2")])
    assert FakeRollout.made[0].updates == [5]
