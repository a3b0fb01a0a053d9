"""SFT and distillation end to end: real Ray (one local cluster for the module), vLLM rollout workers and FSDP
learners. The student is a fresh random model with the local model's tokenizer; the teacher is the local model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.build import configure, prepare
from rlcore.tasks.arithmetic import split_problems

pytestmark = pytest.mark.slow


def mean(values):
    values = list(values)
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> str:
    """Random weights (no warm start), the local model's architecture and tokenizer."""
    from rlcore.local_model import LocalModelSpec, make_local_model

    return str(make_local_model(tmp_path_factory.mktemp("student") / "model", LocalModelSpec(warmup_steps=0)))


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory) -> tuple[str, str]:
    """Arithmetic SFT rows: the prompt, its answer as the response, and the answer for the accuracy."""
    folder = tmp_path_factory.mktemp("sft-data")
    train, test = split_problems()
    paths = []
    for name, problems in (("train.jsonl", train[:256]), ("test.jsonl", test[:64])):
        path = folder / name
        path.write_text("".join(json.dumps({"prompt": p.prompt, "response": p.answer, "answer": p.answer}) + "\n"
                                for p in problems))
        paths.append(str(path))
    return paths[0], paths[1]


def run(out: Path, cache_dir: str, *overrides: str) -> list[dict]:
    """Configure, prepare and train in this process, on the module's Ray cluster; the step records."""
    from actors.groups import end_models
    from launch.trainer import Trainer

    plan = configure(None, [f"trainer.output_dir={out}", f"trainer.cache_dir={cache_dir}", "trainer.loggers=[jsonl]",
                            "trainer.export=false", "trainer.save_every=0", "rollout.max_new_tokens=6", *overrides])
    trainer = Trainer(plan, prepare(plan))
    trainer.fit()
    end_models()  # as launch.train does when a run has succeeded
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sft_lowers_the_held_out_loss(local_ray, tmp_path, cache_dir, student, sft_files):
    records = run(tmp_path / "sft", cache_dir, f"model.path={student}", "algorithm.name=sft", "reference.enabled=false",
                  f"data.train_files=[{sft_files[0]}]", f"data.eval_files=[{sft_files[1]}]", "data.prompts_per_step=32",
                  "learner.mini_batch_size=32", "learner.lr=1e-3", "algorithm.max_tokens_per_micro_batch=128",
                  "trainer.total_steps=6", "trainer.eval_every=3")
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[2]["eval/loss"] < evals[1]["eval/loss"] < evals[0]["eval/loss"]
    assert all(0 <= r["eval/accuracy"] <= 1 for r in evals)  # greedy answers of the synced policy, scored
    steps = [r for r in records if r["step"] > 0]
    assert steps[-1]["actor/sft_loss"] < steps[0]["actor/sft_loss"]
    # 32 examples of about 9 tokens in micro-batches of at most 128 padded tokens: several per step
    assert all(r["actor/tokens"] < r["sft/tokens"] for r in steps)
    assert "time/rollout" not in steps[-1] and "actor/kl" not in steps[-1]  # no sampling, no reference


def test_distill_sft_teaches_a_random_student(local_ray, tmp_path, cache_dir, student, arithmetic_files):
    records = run(tmp_path / "distill", cache_dir, f"model.path={student}", "algorithm.name=distill_sft",
                  "algorithm.teacher_path=local://tiny-qwen2-arith", "algorithm.only_correct=true",
                  "reference.enabled=false", f"data.train_files=[{arithmetic_files[0]}]",
                  f"data.eval_files=[{arithmetic_files[1]}]", "data.max_eval_prompts=64", "data.prompts_per_step=16",
                  "rollout.n=4", "learner.mini_batch_size=16", "learner.lr=1e-3", "trainer.total_steps=6",
                  "trainer.eval_every=3")
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert evals[0]["eval/teacher_accuracy"] > 0.1  # the warm-started teacher solves some held-out problems
    assert evals[2]["eval/loss"] < evals[0]["eval/loss"] - 0.5  # the student imitates its greedy answers
    steps = [r for r in records if r["step"] > 0]
    for r in steps:
        assert 0 < r["sampling/kept_frac"] <= r["sampling/passed_frac"] <= 1
        assert r["teacher/accuracy"] > 0 and "staleness/max" not in r  # the teacher's samples: never stale
    assert steps[-1]["actor/sft_loss"] < steps[0]["actor/sft_loss"]


def test_on_policy_distill_lowers_the_reverse_kl(local_ray, tmp_path, cache_dir, student, arithmetic_files):
    records = run(tmp_path / "opd", cache_dir, f"model.path={student}", "algorithm.name=on_policy_distill",
                  "reference.path=local://tiny-qwen2-arith", f"data.train_files=[{arithmetic_files[0]}]",
                  "data.prompts_per_step=16", "rollout.n=4", "learner.mini_batch_size=64", "learner.lr=1e-3",
                  "trainer.total_steps=6", "trainer.eval_every=0")
    kl = [r["actor/reverse_kl"] for r in records]
    assert len(kl) == 6 and mean(kl[-2:]) < mean(kl[:2])
    assert all("actor/is/mean_weight" not in r for r in records)  # on-policy: no importance weights
    assert [r["policy_version"] for r in records] == list(range(1, 7))
