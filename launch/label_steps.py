"""Label steps by Monte-Carlo completion: ``python -m launch.label_steps --config <preset> [key=value ...]``.

Math-Shepherd (Wang et al. 2023, "Math-Shepherd: Verify and Reinforce LLMs
Step-by-step without Human Annotations", https://arxiv.org/abs/2312.08935) labels
a step by what follows it: from the end of the step the policy writes
``label.completions`` (k) completions, and the step is as good as the share of
them that reach the right answer. A completion goes on from the token ids the
policy sampled, up to the token that completes the step
(``rlcore.test_time.sampled_step_ends``), never from the steps re-encoded: a
boundary re-encoded on its own is a token sequence the policy does not write
(``". "`` + ``"Write"`` where it wrote ``"."`` + ``" Write"``), and its
continuations, so the labels, would be biased. For the first ``label.prompts`` prompts of
``data.train_files``, the policy at ``model.path`` samples ``label.samples``
responses each (the rollout workers), cut into steps at ``eval.step_delimiter``;
every step but the last is completed k times, the preset's accuracy term
(``reward.accuracy_term``) grading the completions; the last step's label is the
response's own correctness. Written to ``trainer.output_dir``:

* ``steps-train.jsonl`` / ``steps-test.jsonl``: ``{"prompt", "steps", "soft_labels",
  "hard_labels", "answer", "correct"}`` per response (the ``prm`` algorithm's data); the
  soft label is the share of correct completions, the hard label 1 when at least
  ``label.min_correct`` are correct (1: Math-Shepherd's hard estimation);
* ``pairs-train.jsonl`` / ``pairs-test.jsonl``: ``{"prompt", "chosen", "rejected"}``, a
  correct and a wrong response to the same prompt (the ``orm`` algorithm's data);
* ``verdicts-train.jsonl`` / ``verdicts-test.jsonl``: ``{"prompt", "response"}`` SFT rows of a
  generative verifier (``rlcore.test_time.verdict_rows``: every prefix of steps, then
  ``Yes`` or ``No`` from its last step's hard label), served by the ``genrm`` reward term.

The last ``label.eval_fraction`` of the prompts go to the ``-test`` files. Prompts
are written as the model saw them (chat-templated).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from launch.build import Plan
from launch.evaluate import Evaluation, started
from launch.run_dir import Outputs
from launch.train import exit_process, parse_args, plan_data_and_ray
from rewards.api import RewardStartError
from rlcore.config import Config
from rlcore.data import PromptRow
from rlcore.test_time import sampled_step_ends, split_steps, verdict_rows


OUTPUTS = Outputs("launch.label_steps", ("steps-train.jsonl", "steps-test.jsonl", "pairs-train.jsonl",
                                         "pairs-test.jsonl", "verdicts-train.jsonl", "verdicts-test.jsonl",
                                         "label_summary.json"))
"""What labelling writes into ``trainer.output_dir``: an earlier labelling's is refused unless trainer.overwrite=true."""


def for_labelling(plan: Plan) -> None:
    """Labelling samples the train files' prompt rows, whatever the preset trains."""
    from launch.sources import RolloutSource

    plan.source = RolloutSource


def step_labels(correct: list[bool], k: int, min_correct: int) -> tuple[list[float], list[int]]:
    """Soft and hard labels of consecutive steps from their completions' correctness, ``k`` per step in order."""
    soft = [sum(correct[i:i + k]) / k for i in range(0, len(correct), k)]
    hard = [int(sum(correct[i:i + k]) >= min_correct) for i in range(0, len(correct), k)]
    return soft, hard


def outcome_pairs(responses: list[str], correct: list[bool]) -> list[tuple[str, str]]:
    """Every (correct response, wrong response) pair to one prompt, as InstructGPT pairs all K responses it ranks."""
    return [(good, bad) for good, ok in zip(responses, correct) if ok for bad, wrong in zip(responses, correct) if not wrong]


def completed(evaluation: Evaluation, cfg: Config, samples: list[tuple], decode) -> list[bool]:
    """Whether each of the ``label.completions`` completions of every step but the last of every sample reaches the
    right answer, in order; each completion continues the ids the policy sampled, cut after the step."""
    from actors.rollout import Request

    k, limit = cfg.label.completions, cfg.rollout.max_new_tokens
    requests = [Request(evaluation.prompt_ids[p] + ids[:end + 1], n=k, temperature=cfg.rollout.temperature,
                        top_p=cfg.rollout.top_p, max_tokens=max(1, limit - end - 1))
                for p, _, _, ids, ends in samples for end in ends[:-1]]
    print(f"{len(samples)} responses, {len(requests)} steps to complete {k} times each", flush=True)
    completions = evaluation.rollout.complete(requests, seed=cfg.label.seed + 1)
    problems, token_ids, texts = [], [], []
    at = 0
    for p, _, steps, ids, ends in samples:
        for end in ends[:-1]:
            prefix = decode(ids[:end + 1])
            for c in completions[at]:
                problems.append(p)
                token_ids.append(ids[:end + 1] + c.token_ids)
                texts.append(prefix + c.text)
            at += 1
    return evaluation.correct(evaluation.batch(problems, token_ids, texts)) if problems else []


def label(evaluation: Evaluation, cfg: Config, rows: list[PromptRow]) -> tuple[list[dict], list[dict]]:
    """Step rows and pair rows for ``rows``; the rollout and reward workers do the work in two big batches."""
    lc, tok = cfg.label, evaluation.tokenizer
    batch = evaluation.rollout.generate(rows, n=lc.samples, seed=lc.seed)
    correct = evaluation.correct(batch)
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
    samples = []  # (problem, sample index, steps, the sampled ids, the token that completes each step)
    for i, text in enumerate(batch.responses):
        steps = split_steps(text, cfg.eval.step_delimiter)
        if steps:
            ids = list(batch.response_ids[i])  # continued as sampled: never re-encoded step by step
            samples.append((i // lc.samples, i, steps, ids, sampled_step_ends(ids, steps, decode)))
    finished = completed(evaluation, cfg, samples, decode) if lc.completions else []
    step_rows, at = [], 0
    for p, i, steps, _, ends in samples:
        if lc.completions:
            count = (len(ends) - 1) * lc.completions
            soft, hard = step_labels(finished[at:at + count], lc.completions, lc.min_correct)
            at += count
        else:  # outcome supervision: every step carries the response's label
            soft, hard = [float(correct[i])] * (len(ends) - 1), [int(correct[i])] * (len(ends) - 1)
        soft, hard = soft + [float(correct[i])], hard + [int(correct[i])]  # the last step: the response's own answer
        step_rows.append({"prompt": rows[p].prompt, "steps": steps, "soft_labels": soft, "hard_labels": hard,
                          "answer": rows[p].answer, "correct": bool(correct[i]), "index": rows[p].index})
    pair_rows = []
    for p, row in enumerate(rows):
        part = slice(p * lc.samples, (p + 1) * lc.samples)
        pair_rows += [{"prompt": row.prompt, "chosen": good, "rejected": bad, "index": row.index}
                      for good, bad in outcome_pairs(batch.responses[part], correct[part])]
    return step_rows, pair_rows


def write_split(out: Path, name: str, rows: list[dict], held_out: set[int]) -> tuple[int, int]:
    """``name-train.jsonl`` and ``name-test.jsonl`` (rows of the held-out prompts); returns their row counts."""
    parts = {"train": [r for r in rows if r["index"] not in held_out], "test": [r for r in rows if r["index"] in held_out]}
    for split, part in parts.items():
        (out / f"{name}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return len(parts["train"]), len(parts["test"])


def main(argv: list[str] | None = None) -> int:
    built = plan_data_and_ray(parse_args(argv), OUTPUTS, for_labelling)
    if built is None:
        return 2
    plan, data, own_ray, run_dir = built
    cfg = plan.cfg
    rows = data.train[: cfg.label.prompts]
    plan.verifiers = {}  # labelling grades with the preset's accuracy term only
    try:
        with started(plan, rows, own_ray) as evaluation:
            start = time.perf_counter()
            step_rows, pair_rows = label(evaluation, cfg, rows)
            elapsed = time.perf_counter() - start
        write(run_dir.path, cfg, rows, step_rows, pair_rows, elapsed)
    except RewardStartError as exc:  # a reward's constructor raised: an input error
        print(f"input error: {exc}", file=sys.stderr)
        return 2
    finally:
        run_dir.release()
    return 0


def write(out: Path, cfg: Config, rows: list[PromptRow], step_rows: list[dict], pair_rows: list[dict],
          elapsed: float) -> None:
    """``OUTPUTS`` into ``out``: the labels split into train and test, and a summary."""
    held_out = {r.index for r in rows[len(rows) - int(len(rows) * cfg.label.eval_fraction):]} if cfg.label.eval_fraction else set()
    steps = write_split(out, "steps", step_rows, held_out)
    pairs = write_split(out, "pairs", pair_rows, held_out)
    verdicts = write_split(out, "verdicts", verdict_rows(step_rows), held_out)
    labels = [h for r in step_rows for h in r["hard_labels"]]
    summary = {"prompts": len(rows), "responses": len(step_rows), "steps": len(labels),
               "good_step_rate": sum(labels) / max(len(labels), 1),
               "correct_rate": sum(r["correct"] for r in step_rows) / max(len(step_rows), 1),
               "step_rows": dict(zip(("train", "test"), steps)), "pairs": dict(zip(("train", "test"), pairs)),
               "verdicts": dict(zip(("train", "test"), verdicts)),
               "seconds": round(elapsed, 1)}
    (out / "label_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)
    print(f"labels written to {out}", flush=True)
    return 0


if __name__ == "__main__":
    exit_process(main())
