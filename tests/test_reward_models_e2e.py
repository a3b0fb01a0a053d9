"""Learned reward models end to end, on one local Ray for the module: an ORM, a PRM and a generative verifier
trained on the real FSDP learner from the local reasoning model (random weights) on a synthetic data set, the ORM's
and PRM's exports served as the ``orm`` and ``prm`` reward terms of a GRPO run with real vLLM rollout workers, the
generative verifier's as the ``genrm`` term.

The data: worked solutions of the reasoning task (``rlcore.tasks.reasoning``) against the same solutions with a
wrong digit in one column sum: the sum's tens digit, which is at most 1 in any column, replaced by 2..9
("6+4+1=41"). ORM pairs are (correct, corrupted); PRM labels are 1 for the steps before the corrupted one and 0
from it on (every step of a correct solution 1). A wrong tens digit is learnt by the tiny random model in a few
dozen steps; a wrong units digit takes it hundreds.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from launch.build import configure, prepare
from rlcore.tasks import reasoning
from rlcore.test_time import split_steps, verdict_rows, within_problem_accuracy
from tests.test_e2e import read_jsonl

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DELIMITER = ". "
"""The reasoning task's steps end in ". " (one column of the written addition each)."""


def corrupted(problem: reasoning.Addition, rng: random.Random) -> tuple[str, int]:
    """The worked solution with a wrong tens digit (2..9) in one column's sum, and that column's step index."""
    cols = reasoning.columns(problem.a, problem.b)
    carried = [i for i, c in enumerate(cols) if c.total >= 10]
    k = rng.choice(carried) if carried else rng.randrange(len(cols))
    steps = split_steps(reasoning.solution(problem), DELIMITER)
    head, tail = steps[k].split("=", 1)
    units = str(cols[k].total % 10)
    rest = tail[2:] if cols[k].total >= 10 else tail[1:]  # past the sum's digits
    steps[k] = f"{head}={rng.randint(2, 9)}{units}{rest}"
    return "".join(steps), k


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def rm_data(tmp_path_factory) -> dict[str, str]:
    """ORM pairs and PRM step labels of 384 train and 64 held-out problems (the task's own split)."""
    folder = tmp_path_factory.mktemp("rm-data")
    train, test = reasoning.split_problems()
    rng = random.Random(0)
    files = {}
    for split, problems in (("train", train[:384]), ("test", test[:64])):
        pairs, labelled = [], []
        for p in problems:
            prompt = [{"role": "user", "content": p.question()}]
            good = reasoning.solution(p)
            bad, k = corrupted(p, rng)
            assert bad != good and len(split_steps(bad, DELIMITER)) == len(split_steps(good, DELIMITER))
            pairs.append({"prompt": prompt, "chosen": good, "rejected": bad})
            for text, wrong_from in ((good, None), (bad, k)):
                steps = split_steps(text, DELIMITER)
                hard = [1 if wrong_from is None or i < wrong_from else 0 for i in range(len(steps))]
                labelled.append({"prompt": prompt, "steps": steps, "hard_labels": hard,
                                 "soft_labels": [float(h) for h in hard], "answer": p.answer,
                                 "correct": wrong_from is None})
        files[f"pairs-{split}"] = write_jsonl(folder / f"pairs-{split}.jsonl", pairs)
        files[f"steps-{split}"] = write_jsonl(folder / f"steps-{split}.jsonl", labelled)
    return files


def run(preset: str | None, out: Path, cache_dir: str, *overrides: str) -> list[dict]:
    """Configure, prepare and train in this process, on the module's Ray cluster; the step records."""
    from actors.groups import end_models
    from launch.trainer import Trainer

    plan = configure(preset, [f"trainer.output_dir={out}", f"trainer.cache_dir={cache_dir}", "trainer.loggers=[jsonl]",
                              "trainer.save_every=0", *overrides])
    trainer = Trainer(plan, prepare(plan))
    trainer.fit()
    end_models()  # as launch.train does when a run has succeeded
    return read_jsonl(out / "metrics.jsonl")


TRAIN_RM = ["model.path=local://tiny-qwen2-reason", "learner.lr=1e-3", "learner.warmup_steps=0",
            "learner.mini_batch_size=32", "learner.micro_batch_size=32", "trainer.export=true"]


@pytest.fixture(scope="module")
def orm(local_ray, tmp_path_factory, cache_dir, rm_data) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("orm")
    start = time.perf_counter()
    records = run(str(REPO / "launch/configs/orm_reasoning.yaml"), out, cache_dir, *TRAIN_RM,
                  f"data.train_files=[{rm_data['pairs-train']}]", f"data.eval_files=[{rm_data['pairs-test']}]",
                  "data.prompts_per_step=16", "algorithm.center_coef=0.01", "trainer.total_steps=50",
                  "trainer.eval_every=50")
    print(f"orm: trained in {time.perf_counter() - start:.1f}s", flush=True)
    return out / "final", records


@pytest.fixture(scope="module")
def prm(local_ray, tmp_path_factory, cache_dir, rm_data) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("prm")
    start = time.perf_counter()
    records = run(str(REPO / "launch/configs/prm_reasoning.yaml"), out, cache_dir, *TRAIN_RM,
                  f"data.train_files=[{rm_data['steps-train']}]", f"data.eval_files=[{rm_data['steps-test']}]",
                  # in file order, each problem's correct and corrupted solutions share a batch: the contrast is learnt
                  # faster than from shuffled rows
                  "data.prompts_per_step=32", "data.shuffle=false", "trainer.total_steps=60", "trainer.eval_every=60")
    print(f"prm: trained in {time.perf_counter() - start:.1f}s", flush=True)
    return out / "final", records


@pytest.fixture(scope="module")
def genrm(local_ray, tmp_path_factory, cache_dir, rm_data) -> tuple[Path, list[dict]]:
    """The preset's SFT on the step labels' verdict rows (``launch.label_steps`` writes them the same way), the
    prompts rendered with the chat template as the labelling writes them."""
    from transformers import AutoTokenizer

    from rlcore.assets import resolve
    from rlcore.chat import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(resolve("local://tiny-qwen2-reason", cache_dir, "model.path"))
    out = tmp_path_factory.mktemp("genrm")
    files = {}
    for split in ("train", "test"):
        rows = read_jsonl(Path(rm_data[f"steps-{split}"]))
        rendered = [{**row, "prompt": render_prompt(row["prompt"], tokenizer)[0], "index": i}
                    for i, row in enumerate(rows)]
        files[split] = write_jsonl(out / f"verdicts-{split}.jsonl", verdict_rows(rendered))
    start = time.perf_counter()
    records = run(str(REPO / "launch/configs/genrm_reasoning.yaml"), out, cache_dir, *TRAIN_RM,
                  f"data.train_files=[{files['train']}]", f"data.eval_files=[{files['test']}]",
                  "data.prompts_per_step=32", "data.shuffle=false", "learner.lr_schedule=constant",
                  "trainer.total_steps=30", "trainer.eval_every=30")
    print(f"genrm: trained in {time.perf_counter() - start:.1f}s", flush=True)
    return out / "final", records


def test_genrm_answers_yes_to_held_out_right_solutions_and_no_to_wrong_ones(genrm, rm_data):
    """Scored by the ``genrm`` term, each held-out problem's correct solution ranks above its corrupted one, and
    the held-out verdicts' loss fell."""
    from rewards.api import RewardSample
    from rewards.generative_verifier import GenerativeVerifier
    from rlcore.chat import render_prompt

    final, records = genrm
    evals = [r["eval/loss"] for r in records if "eval/loss" in r]
    assert len(evals) == 2 and evals[-1] < evals[0] / 4
    verifier = GenerativeVerifier(str(final), device="cpu")
    held_out = read_jsonl(Path(rm_data["steps-test"]))
    samples = [RewardSample("", "".join(row["steps"]), [], row["answer"],
                            rendered_prompt=render_prompt(row["prompt"], verifier.tokenizer)[0]) for row in held_out]
    scores = verifier.score(samples)
    ranking, pairs = within_problem_accuracy(scores, [i // 2 for i in range(len(held_out))],
                                             [row["correct"] for row in held_out])
    print(f"genrm held out: eval/loss {evals}, within-problem ranking {ranking:.3f} of {pairs} pairs")
    assert pairs == len(held_out) // 2 and ranking > 0.85


def test_orm_ranks_held_out_correct_solutions_first(orm):
    final, records = orm
    evals = [r for r in records if "eval/pairwise_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 50]
    print("orm held out:", {k: round(v, 3) for k, v in evals[-1].items() if k.startswith("eval/")})
    # chance is 0.5 (a random ranking of each pair); the untrained model's random head is not far from it
    assert evals[-1]["eval/pairwise_accuracy"] > max(0.85, evals[0]["eval/pairwise_accuracy"])
    assert evals[-1]["eval/margin"] > evals[0]["eval/margin"]
    steps = [r for r in records if r["step"] > 0]
    assert {"actor/orm_loss", "actor/pairwise_accuracy", "actor/margin"} <= set(steps[-1])
    assert "time/rollout" not in steps[-1] and "time/reference" not in steps[-1]  # no sampling, no reference
    assert (final / "tokenizer.json").is_file() and (final / "config.json").is_file()


def test_prm_tells_held_out_good_steps_from_bad_ones(prm, rm_data):
    final, records = prm
    evals = [r for r in records if "eval/step_accuracy" in r]
    assert [r["step"] for r in evals] == [0, 60]
    held_out = read_jsonl(Path(rm_data["steps-test"]))
    labels = [y for row in held_out for y in row["hard_labels"]]
    good = sum(labels) / len(labels)  # most steps are good: the majority label
    always_good_f1 = 2 * good / (1 + good)  # the F1 of predicting every step good
    last = evals[-1]
    print(f"prm held out (majority {good:.3f}, its F1 {always_good_f1:.3f}):",
          {k: round(v, 3) for k, v in last.items() if k.startswith("eval/")})
    assert last["eval/step_accuracy"] > max(good, 1 - good) + 0.05  # better than always the majority label
    assert last["eval/step_f1"] > always_good_f1
    assert 0 < last["eval/step_positive_rate"] < 1
    assert {"actor/prm_loss", "actor/step_accuracy", "steps/per_response"} <= set(records[-1])
    assert (final / "tokenizer.json").is_file()


def test_grpo_rewards_with_the_trained_prm_and_orm(local_ray, tmp_path, cache_dir, orm, prm):
    terms = (f"[{{name: answer_match, weight: 1.0}}, "
             f"{{name: prm, weight: 0.5, args: {{model: '{prm[0]}', delimiter: '{DELIMITER}', aggregate: min}}}}, "
             f"{{name: orm, weight: 0.5, args: {{model: '{orm[0]}', batch_size: 4}}}}]")
    records = run(str(REPO / "launch/configs/reasoning_grpo.yaml"), tmp_path / "grpo", cache_dir,
                  "model.path=local://tiny-qwen2-reason", "data.eval_files=[]", "data.prompts_per_step=4",
                  "rollout.n=2", "rollout.max_new_tokens=24", "learner.mini_batch_size=8", "learner.micro_batch_size=8",
                  "reference.enabled=false", "algorithm.kl_coef=0", f"reward.terms={terms}",
                  "trainer.total_steps=2", "trainer.eval_every=0", "trainer.export=false")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        for term in ("prm", "orm"):
            assert 0 < r[f"reward/{term}"] < 1, (term, r[f"reward/{term}"])
            assert all(v == 0 for k, v in r.items() if k.startswith(f"reward_faults/{term}/")), r
        assert r["reward/prm/steps"] >= 1  # the mean step count of the responses
        assert "actor/pg_loss" in r
