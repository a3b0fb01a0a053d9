"""TRL's side of ``bench/grpo_vs_trl.py``: one ``trl.GRPOTrainer`` run, timed, in its own process.

The parent benchmark starts this script once per workload, so TRL's threads
and memory stay apart from our trainer's. It trains on the built-in
arithmetic prompts with transformers' ``generate`` (no vLLM) and writes, per
generation batch (one "step", comparable to one step of ours), the wall
clock at its end, its sampled accuracy and the time spent generating and
scoring, to the JSON file given by ``--result``. Run by hand for a look:

    .venv/bin/python bench/_trl_run.py --model ~/.cache/rlcore/tiny-qwen2-arith \\
        --data ~/.cache/rlcore/arithmetic-train.jsonl --steps 2 --result /tmp/trl.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face model folder")
    parser.add_argument("--data", required=True, help="JSONL prompts with 'prompt' and 'answer'")
    parser.add_argument("--steps", type=int, required=True, help="generation batches to train on")
    parser.add_argument("--prompts-per-step", type=int, default=64)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=6)
    parser.add_argument("--mini-batch", type=int, default=256, help="samples per optimizer step")
    parser.add_argument("--micro-batch", type=int, default=64, help="samples per forward/backward pass")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--beta", type=float, default=0.001, help="KL coefficient")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--result", required=True, help="JSON file to write")
    return parser.parse_args()


class AccuracyReward:
    """Our ``exact_match`` as a TRL reward function; records each call's mean accuracy and end time.

    TRL scores a whole generation batch in one call, so one call is one step.
    The texts are decoded with ``skip_special_tokens=True``, so they end
    before EOS, like the texts vLLM gives our reward workers.
    """

    __name__ = "exact_match"  # TRL names reward columns after the function

    def __init__(self):
        self.accuracy: list[float] = []

    def __call__(self, prompts: list[str], completions: list[str], answer: list[str], **_) -> list[float]:
        from rewards.arithmetic import exact_match

        scores = [exact_match(p, c, a) for p, c, a in zip(prompts, completions, answer, strict=True)]
        self.accuracy.append(statistics.fmean(scores))
        return scores


def make_trainer_class():
    """``GRPOTrainer`` with per-generation-batch phase times (TRL only reports them to wandb/mlflow/trackio).

    It wraps two private methods of TRL 1.16 (pinned by the ``bench`` extra):
    ``_generate`` (prompt tokenization, ``generate``, decoding) and
    ``_generate_and_score_completions``, which adds the rewards, the
    reference and old log-probs and the advantages to it.
    """
    from trl import GRPOTrainer

    class PhaseTimedGRPOTrainer(GRPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.phases: list[dict[str, float]] = []
            self._generate_s = 0.0

        def _generate(self, prompts):
            start = time.perf_counter()
            out = super()._generate(prompts)
            self._generate_s = time.perf_counter() - start
            return out

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            total = time.perf_counter() - start
            self.phases.append({"time/generate": self._generate_s, "time/score": total - self._generate_s})
            return out

    return PhaseTimedGRPOTrainer


def make_step_clock(steps_per_generation: int):
    """A callback noting the wall clock at training start and at the end of every generation batch."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.begin = 0.0
            self.ends: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            # global_step counts optimizer steps; a generation batch feeds steps_per_generation of them.
            if state.global_step % steps_per_generation == 0:
                self.ends.append(time.time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append({"optimizer_step": state.global_step, **(logs or {})})

    return StepClock()


def grpo_config(args: argparse.Namespace, output_dir: str):
    """TRL's settings for the same work as our trainer's step (see ``bench/grpo_vs_trl.py``)."""
    from trl import GRPOConfig

    generation_batch = args.prompts_per_step * args.n
    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=True,
        seed=args.seed,
        num_generations=args.n,
        generation_batch_size=generation_batch,
        # A mini-batch is accumulated over micro-batches, as in our learner; TRL also runs its reference and
        # old log-prob passes in batches of per_device_train_batch_size, like our reference's micro-batches.
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.mini_batch // args.micro_batch,
        num_iterations=1,
        max_steps=args.steps * generation_batch // args.mini_batch,  # optimizer steps: the same samples as ours
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        use_vllm=False,
        beta=args.beta,
        epsilon=0.2,
        # Ours is token-mean per micro-batch, weighted by the micro-batch's share of the mini-batch
        # (actors/learner.py). "bnpo" is the same: each micro-batch's token sum over its own loss tokens,
        # divided by the accumulation steps. "dapo" (TRL's default) divides every micro-batch by the
        # generation batch's tokens / steps_per_generation instead, and "grpo" averages per sequence.
        loss_type="bnpo",
        scale_rewards="group",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        # TRL's defaults differ from transformers' here (trl/trainer/base_config.py): gradient checkpointing
        # on and bf16 on unless fp16; ours neither checkpoints nor casts.
        gradient_checkpointing=False,
        bf16=args.bf16,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcore.data import load_prompts

    rows = load_prompts([args.data])
    dataset = Dataset.from_list([{"prompt": r.prompt, "answer": r.answer} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)  # has <pad> and <eos>; TRL stops at every eos id
    reward = AccuracyReward()
    clock = make_step_clock(args.prompts_per_step * args.n // args.mini_batch)  # optimizer steps per batch
    with tempfile.TemporaryDirectory(prefix="trl-grpo-") as output_dir:
        trainer = make_trainer_class()(
            model=model, reward_funcs=reward, args=grpo_config(args, output_dir), train_dataset=dataset,
            processing_class=tokenizer, callbacks=[clock],
        )
        trainer.train()
    result = {"train_begin": clock.begin, "step_ends": clock.ends, "accuracy": reward.accuracy,
              "phases": trainer.phases, "logs": clock.logs, "threads": torch.get_num_threads()}
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
