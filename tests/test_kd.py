"""Token-level knowledge distillation (algorithms/kd.py): the teacher's top-k, the student's view of it, the
temperature schedule, the options' checks, the vocabulary check, and real runs (a teacher actor, FSDP, vLLM).

The losses themselves are tested in tests/test_kd_losses.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlcore.batch import RolloutBatch, trim
from rlcore.functional import logprobs_at, topk_logprobs
from rlcore.schedule import anneal

TEACHER_FIXTURE_SCALE = 30.0
"""The random reasoning model's final norm times this: a teacher whose next-token distributions are peaked."""


# ---- the pure parts --------------------------------------------------------------------------------------------
def test_topk_logprobs_are_the_largest_whole_vocabulary_log_probs_at_the_temperature():
    logits = torch.randn(5, 11)
    values, ids = topk_logprobs(logits, 3, temperature=2.0)
    full = torch.log_softmax(logits / 2.0, -1)
    assert ids.dtype == torch.int32 and values.shape == ids.shape == (5, 3)
    assert torch.allclose(values, full.topk(3, -1).values)
    assert torch.allclose(values, full.gather(-1, ids.long()))
    assert (values[:, :-1] >= values[:, 1:]).all()  # largest first
    every, _ = topk_logprobs(logits, 0)
    assert every.shape == (5, 11) and torch.allclose(every.exp().sum(-1), torch.ones(5))


def test_logprobs_at_gives_the_ids_log_probs_and_the_mass_elsewhere():
    logits = torch.randn(4, 9, requires_grad=True)
    ids = torch.tensor([[0, 3], [8, 1], [2, 4], [5, 6]], dtype=torch.int32)
    at, rest = logprobs_at(logits, ids, temperature=0.5)
    full = torch.log_softmax(logits.detach() / 0.5, -1)
    assert torch.allclose(at, full.gather(-1, ids.long()))
    assert torch.allclose(rest.exp(), 1 - at.exp().sum(-1), atol=1e-6)
    (at.sum() + rest.sum()).backward()
    assert torch.isfinite(logits.grad).all()


def test_logprobs_at_over_the_whole_vocabulary_has_no_mass_elsewhere_and_finite_gradients():
    logits = torch.randn(3, 5, requires_grad=True)
    ids = torch.arange(5).repeat(3, 1)
    at, rest = logprobs_at(logits, ids)
    assert torch.isinf(rest).all() and (rest < 0).all()
    at.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_anneal_runs_from_start_to_end_linearly_or_along_a_cosine():
    assert anneal(4.0, 1.0, 1, 11) == 4.0 and anneal(4.0, 1.0, 11, 11) == 1.0 and anneal(4.0, 1.0, 30, 11) == 1.0
    assert anneal(4.0, 1.0, 6, 11) == pytest.approx(2.5)
    assert anneal(4.0, 1.0, 6, 11, "cosine") == pytest.approx(2.5)
    assert anneal(4.0, 1.0, 3, 11, "cosine") == pytest.approx(1.0 + 3.0 * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert anneal(4.0, 1.0, 3, 11, "cosine") > anneal(4.0, 1.0, 3, 11, "linear")  # slow at the start
    assert anneal(2.0, 1.0, 1, 1) == 1.0


def test_a_batch_cuts_and_joins_its_top_k_along_the_tokens():
    def batch(lengths, k=3):
        width = max(lengths)
        return RolloutBatch(prompt_ids=[[1]] * len(lengths), response_ids=[[2] * n for n in lengths],
                            response_mask=torch.tensor([[1.0] * n + [0.0] * (width + 2 - n) for n in lengths]),
                            group_ids=torch.arange(len(lengths)),
                            teacher_topk_logprobs=torch.randn(len(lengths), width + 2, k),
                            teacher_topk_ids=torch.randint(0, 9, (len(lengths), width + 2, k), dtype=torch.int32))
    cut = trim(batch([2, 4]))
    assert cut.teacher_topk_logprobs.shape == (2, 4, 3) and cut.teacher_topk_ids.shape == (2, 4, 3)
    joined = RolloutBatch.concat([batch([2]), batch([5])])
    assert joined.teacher_topk_logprobs.shape == (2, 7, 3)
    assert (joined.teacher_topk_logprobs[0, 4:] == 0).all()


# ---- the student's and the teacher's passes over real sequences ------------------------------------------------
def test_the_teacher_top_k_and_the_student_view_match_whole_sequence_forward_passes(local_model):
    from transformers import AutoModelForCausalLM

    from rlcore.sequences import response_logprobs_at, response_topk

    model = AutoModelForCausalLM.from_pretrained(local_model).eval()
    prompts, responses = [[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14, 15]]
    for packing in ("padded", "packed"):
        with torch.no_grad():
            values, ids = response_topk(model, prompts, responses, k=4, temperature=1.5, pad_id=0, width=6,
                                        packing=packing, chunk_tokens=3)
            lp, at, rest = response_logprobs_at(model, prompts, responses, ids, temperature=1.5, pad_id=0, width=6,
                                                packing=packing)
        assert values.shape == ids.shape == (2, 6, 4) and at.shape == (2, 6, 4) and rest.shape == lp.shape == (2, 6)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            with torch.no_grad():
                logits = model(torch.tensor([p + r])).logits[0, len(p) - 1:len(p) + len(r) - 1]  # [len(r), V]
            tempered = torch.log_softmax(logits / 1.5, -1)
            top = tempered.topk(4, -1)
            assert torch.allclose(values[i, :len(r)], top.values, atol=1e-5)
            assert (ids[i, :len(r)].long() == top.indices).all()
            assert torch.allclose(at[i, :len(r)], top.values, atol=1e-5)  # the same model: the same numbers
            assert torch.allclose(rest[i, :len(r)].exp(), 1 - top.values.exp().sum(-1), atol=1e-5)
            assert torch.allclose(lp[i, :len(r)], torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None])[:, 0],
                                  atol=1e-5)  # the hard labels at temperature 1
            assert (values[i, len(r):] == 0).all() and (ids[i, len(r):] == 0).all()


# ---- configuration ---------------------------------------------------------------------------------------------
KD_PRESET = "launch/configs/kd_reasoning.yaml"


def kd_plan(cache_dir, *overrides):
    from launch.build import configure

    return configure(KD_PRESET, ["algorithm.teacher_path=local://tiny-qwen2-reason", f"trainer.cache_dir={cache_dir}",
                                 *overrides])


@pytest.mark.parametrize("override, message", [
    ("algorithm.divergence=kl", "algorithm.divergence='kl' is not one of forward, reverse, jsd"),
    ("algorithm.tail=drop", "algorithm.tail='drop' is not one of bucket, renormalize"),
    ("algorithm.sequences=student", "algorithm.sequences='student' is not one of data, teacher"),
    ("algorithm.temperature_schedule=step", "algorithm.temperature_schedule='step' is not one of linear, cosine"),
    ("algorithm.alpha=1.5", "algorithm.alpha=1.5 must be in [0, 1]"),
    ("algorithm.lmbda=-0.1", "algorithm.lmbda=-0.1 must be in [0, 1]"),
    ("algorithm.temperature_end=0", "algorithm.temperature_end=0.0 must be > 0"),
    ("algorithm.top_k=-1", "algorithm.top_k=-1 must be >= 0"),
    ("algorithm.teacher_workers=3", "algorithm.teacher_workers=3 must divide the 16 sequences of a step"),
    ("reference.enabled=true", "set reference.enabled=false"),
    ("algorithm.lmbda=0.5 rollout.max_staleness=1", "set rollout.max_staleness=0"),
    ("algorithm.teacher_path=null", "algorithm.teacher_path is not set"),
])
def test_bad_options_are_one_line_errors_naming_the_key(cache_dir, override, message):
    from rlcore.config import ConfigError

    with pytest.raises(ConfigError) as err:
        kd_plan(cache_dir, *override.split())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_jsd_needs_beta_strictly_between_0_and_1(cache_dir):
    from rlcore.config import ConfigError

    kd_plan(cache_dir, "algorithm.divergence=forward", "algorithm.beta=0")  # unused by forward
    with pytest.raises(ConfigError, match=r"algorithm.beta=1.0 must be in \(0, 1\) for divergence=jsd"):
        kd_plan(cache_dir, "algorithm.divergence=jsd", "algorithm.beta=1")


def test_on_policy_steps_are_a_seeded_share_lmbda_of_the_steps(cache_dir):
    never, always = kd_plan(cache_dir).algorithm, kd_plan(cache_dir, "algorithm.lmbda=1").algorithm
    half = kd_plan(cache_dir, "algorithm.lmbda=0.5").algorithm
    draws = [half.on_policy(s) for s in range(1, 401)]
    assert not any(never.on_policy(s) for s in range(1, 401)) and all(always.on_policy(s) for s in range(1, 401))
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert draws == [kd_plan(cache_dir, "algorithm.lmbda=0.5").algorithm.on_policy(s) for s in range(1, 401)]
    other_seed = kd_plan(cache_dir, "algorithm.lmbda=0.5", "trainer.seed=7").algorithm
    assert draws != [other_seed.on_policy(s) for s in range(1, 401)]


def test_the_temperature_follows_the_schedule_over_the_run(cache_dir):
    kd = kd_plan(cache_dir, "algorithm.temperature_start=3", "algorithm.temperature_end=1",
                 "trainer.total_steps=5").algorithm
    assert [kd.temperature(s) for s in range(1, 6)] == pytest.approx([3.0, 2.5, 2.0, 1.5, 1.0])


def test_a_teacher_with_another_vocabulary_is_refused_in_one_line_pointing_to_distill_sft(cache_dir):
    from launch.build import prepare
    from rlcore.assets import AssetError

    plan = kd_plan(cache_dir, "algorithm.teacher_path=local://tiny-qwen2-arith")
    with pytest.raises(AssetError) as err:
        prepare(plan)
    text = str(err.value)
    assert text.startswith("algorithm.teacher_path: the tokenizer of") and "algorithm.name=distill_sft" in text
    assert "\n" not in text
    prepare(kd_plan(cache_dir))  # the reasoning model's tokenizer is the student's: accepted


def test_the_kd_loss_mixes_in_the_hard_labels_by_alpha(cache_dir):
    from algorithms.losses import kd_loss, sft_loss

    mask = torch.tensor([[1.0, 1.0, 0.0]])
    teacher = torch.log_softmax(torch.randn(1, 3, 4), -1)[..., :2]
    student_full = torch.log_softmax(torch.randn(1, 3, 4), -1)
    outputs = {"topk_logprobs": student_full[..., :2], "tail_logprob": student_full[..., 2:].logsumexp(-1),
               "logprobs": student_full[..., 0]}
    batch = RolloutBatch(response_mask=mask, teacher_topk_logprobs=teacher, teacher_temperature=torch.tensor([2.0]))
    kd_only, _ = kd_loss(outputs["topk_logprobs"], outputs["tail_logprob"], teacher, mask, temperature=2.0)
    nll, _ = sft_loss(outputs["logprobs"], mask)
    for alpha, expected in ((0.0, kd_only), (1.0, nll), (0.25, 0.75 * kd_only + 0.25 * nll)):
        loss, metrics = kd_plan(cache_dir, f"algorithm.alpha={alpha}").algorithm.loss(outputs, batch)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        assert metrics["nll"] == pytest.approx(nll.item(), rel=1e-5) and metrics["temperature"] == 2.0


# ---- real runs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peaked_teacher(tmp_path_factory, cache_dir) -> str:
    """The random reasoning model with its final norm scaled up: peaked next-token distributions to learn, without
    training a teacher first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcore.assets import resolve

    source = resolve("local://tiny-qwen2-reason", cache_dir, "teacher")
    out = tmp_path_factory.mktemp("kd") / "teacher"
    model = AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        model.model.norm.weight.mul_(TEACHER_FIXTURE_SCALE)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return str(out)


def received(out: Path) -> list[dict]:
    return [torch.load(f) for f in sorted((out / "received").iterdir())]


def assert_teacher_top_k_arrived_unchanged(records: list[dict], teacher_path: str, k: int) -> None:
    """Every recorded micro-batch's top-k equals the teacher's, recomputed here with one forward pass per sequence."""
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
    checked = 0
    for rec in records:
        temperature = float(rec["temperature"][0])
        for i, (p, r) in enumerate(zip(rec["prompt_ids"], rec["response_ids"])):
            with torch.no_grad():
                logits = teacher(torch.tensor([p + r])).logits[0, len(p) - 1:len(p) + len(r) - 1]
            full = torch.log_softmax(logits / temperature, -1)  # [len(r), V]
            values, ids = rec["values"][i, :len(r)], rec["ids"][i, :len(r)].long()
            assert torch.allclose(values, full.topk(k, -1).values, atol=1e-4)  # the k largest, largest first
            # each id carries its own log-prob (near-equal ones may come in either order)
            assert torch.allclose(full.gather(-1, ids), values, atol=1e-4)
            assert (ids.sort(-1).values[:, 1:] != ids.sort(-1).values[:, :-1]).all()  # k distinct ids
            checked += 1
    assert checked > 0


def run_kd(out: Path, cache_dir: str, teacher: str, *overrides: str):
    from tests.test_agents_e2e import run

    return run(out, "algorithm.name=tests.plugins.recording_kd:RecordingKD", f"algorithm.teacher_path={teacher}",
               f"trainer.cache_dir={cache_dir}", "trainer.save_every=0", "trainer.export=false", *overrides,
               preset=KD_PRESET)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_off_policy_kd_learns_the_teacher_and_its_top_k_reach_the_learner_unchanged(tmp_path, cache_dir,
                                                                                  peaked_teacher):
    """A teacher actor and an FSDP learner, 30 steps on the data's sequences: the KD loss falls, the student covers
    more of the teacher's top-k, and what the learner received is the teacher's top-k of exactly those sequences."""
    out = tmp_path / "kd"
    run_kd(out, cache_dir, peaked_teacher, "trainer.total_steps=30", "trainer.eval_every=0", "algorithm.top_k=8",
           "learner.lr_schedule=constant", "algorithm.temperature_start=2.0", "algorithm.temperature_end=1.0")
    rows = [r for r in metrics(out) if "actor/kd_loss" in r]
    assert len(rows) == 30
    first, last = (sum(r["actor/kd_loss"] for r in part) / len(part) for part in (rows[:3], rows[-5:]))
    assert last < 0.6 * first, (first, last)
    assert rows[-1]["actor/topk_mass"] > rows[0]["actor/topk_mass"] + 0.2
    assert rows[0]["kd/temperature"] == 2.0 and rows[-1]["kd/temperature"] == 1.0
    assert all(r["kd/on_policy"] == 0.0 for r in rows)
    records = received(out)
    assert {float(rec["temperature"][0]) for rec in records} >= {2.0, 1.0}
    assert_teacher_top_k_arrived_unchanged(records[:2] + records[-2:], peaked_teacher, 8)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_ray")
def test_kd_on_the_teacher_samples_and_the_student_samples_mixed_by_lmbda(tmp_path, cache_dir, peaked_teacher):
    """sequences=teacher, lmbda=0.5 (GKD's mix): with trainer.seed 0 the draws make steps 2 and 3 on-policy (the
    student sampled on vLLM, synced after each update) and steps 1 and 4 the teacher's samples (its own vLLM
    workers); the teacher actors score every sequence, and the learner receives them with the teacher's whole
    distribution (top_k=0) unchanged; the student and the teacher are evaluated greedily."""
    out = tmp_path / "gkd"
    run_kd(out, cache_dir, peaked_teacher, "trainer.total_steps=4", "trainer.eval_every=4", "data.max_eval_prompts=8",
           "algorithm.sequences=teacher", "algorithm.lmbda=0.5", "algorithm.divergence=jsd", "algorithm.top_k=0",
           "rollout.n=2", "rollout.max_new_tokens=24", "data.train_files=[local://reasoning-train.jsonl]",
           "data.eval_files=[local://reasoning-test.jsonl]", "data.answer_key=reward_model.ground_truth")
    rows = [r for r in metrics(out) if "actor/kd_loss" in r]
    assert [r["kd/on_policy"] for r in rows] == [0.0, 1.0, 1.0, 0.0]
    assert {"eval/accuracy", "eval/teacher_accuracy"} <= set(metrics(out)[-1])
    records = received(out)
    vocab = records[0]["ids"].shape[-1]
    assert vocab > 300  # top_k=0: the whole vocabulary
    assert sum(len(rec["response_ids"]) for rec in records) == 4 * 16 * 2  # 16 prompts x 2 samples a step
    assert all(len(r) <= 24 for rec in records for r in rec["response_ids"])  # sampled (the data's are longer)
    assert_teacher_top_k_arrived_unchanged(records[:1] + records[-1:], peaked_teacher, vocab)
