"""The learner's speed and peak memory on CPU under its memory settings.

Builds a random-weight Qwen2-shaped model (large vocabulary, so the logits
matter) in a temporary folder and a synthetic GRPO batch (random token ids,
fixed-length prompts, response lengths uniform in a range, random scores), then
trains ``LearnerRank`` on it without Ray, once per setting, each in a fresh
process: one warm-up ``train_step``, then ``--steps`` timed ones. Prints the
median seconds per step, the real (prompt + response) tokens per second and the
peak resident memory above the resident memory just before the first
``train_step``, each setting against the baseline measured in the same run.

    .venv/bin/python bench/learner_memory.py [--steps 3 --prompts 1 --n 8 --micro-batch 8 --hidden 256 --layers 4 --vocab 32000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS: dict[str, list[str]] = {
    "baseline": [],
    "logits_chunk_tokens=0": ["learner.logits_chunk_tokens=0"],
    "activation_checkpointing": ["learner.activation_checkpointing=true"],
    "packing=packed": ["learner.packing=packed"],
    "lora_rank=16": ["learner.lora_rank=16", "learner.lora_alpha=32"],
    "lora_rank=16 + checkpointing": ["learner.lora_rank=16", "learner.lora_alpha=32",
                                     "learner.activation_checkpointing=true"],
}
"""Setting name -> config overrides on top of the baseline (the learner's defaults)."""

CHILD_ARGS = ("steps", "prompts", "n", "micro_batch", "prompt_tokens", "min_response", "max_response", "vocab",
              "threads", "seed")
"""The flags a setting's process reads (the model it loads is already built)."""
RESULT = "RESULT "
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
"""A fixed mmap threshold makes glibc give every large freed buffer back (its default adapts the threshold and keeps
freed buffers in the heap), so the resident peak follows the live tensors (as in tests/test_sequences.py)."""


def build_model(out_dir: Path, args) -> int:
    """A random-weight Qwen2 model and the local tokenizer saved in ``out_dir``; returns its parameter count."""
    from rlcore.local_model import LocalModelSpec, build_random_model, build_tokenizer

    spec = LocalModelSpec(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers,
                          num_heads=args.heads, num_kv_heads=args.kv_heads, intermediate_size=args.intermediate,
                          max_position_embeddings=args.prompt_tokens + args.max_response, warmup_steps=0)
    tokenizer = build_tokenizer()
    model = build_random_model(spec, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


def synthetic_batch(args):
    """``--prompts`` groups of ``--n`` samples: random ids (past the special tokens), one prompt of
    ``--prompt-tokens`` per group, response lengths uniform in [``--min-response``, ``--max-response``]."""
    import torch

    from rlcore.batch import RolloutBatch, pad_2d

    gen = torch.Generator().manual_seed(args.seed)

    def ids(k: int) -> list[int]:
        return torch.randint(3, args.vocab, (k,), generator=gen).tolist()

    prompt_ids, response_ids = [], []
    for _ in range(args.prompts):
        prompt = ids(args.prompt_tokens)
        for _ in range(args.n):
            prompt_ids.append(prompt)
            length = int(torch.randint(args.min_response, args.max_response + 1, (1,), generator=gen))
            response_ids.append(ids(length))
    b = len(response_ids)
    return RolloutBatch(
        prompt_ids=prompt_ids, response_ids=response_ids,
        group_ids=torch.arange(args.prompts).repeat_interleave(args.n),
        response_mask=pad_2d([[1.0] * len(r) for r in response_ids]),
        policy_version=torch.zeros(b, dtype=torch.long), truncated=torch.zeros(b, dtype=torch.bool),
        metadata=[{}] * b, scores=torch.rand(b, generator=gen))


def rss_kib() -> int:
    """The resident memory of this process now, in KiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def busy_seconds() -> float:
    """CPU seconds all processes of the machine have run (user, nice, system, irq, softirq), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args) -> None:
    """One setting in this (fresh) process: build the learner, fill the batch, time ``train_step``."""
    import torch

    torch.set_num_threads(args.threads)
    from actors.learner import LearnerRank, free_address
    from launch.build import configure
    from rlcore.batch import sequence_lengths

    samples = args.prompts * args.n
    plan = configure(None, [f"model.path={args.model_dir}", f"data.prompts_per_step={args.prompts}",
                            f"rollout.n={args.n}", f"learner.mini_batch_size={samples}",
                            f"learner.micro_batch_size={args.micro_batch}", f"learner.num_threads={args.threads}",
                            "algorithm.old_logprobs=recompute", *SETTINGS[args.child]])
    group = plan.learners["actor"]
    learner = LearnerRank(plan.cfg, plan.algorithm, "actor", group.spec, group.model, 0, 1)
    learner.setup(free_address())
    try:
        batch = synthetic_batch(args)
        batch.old_logprobs = learner.forward(batch, "logprobs")  # as the driver fills what the group provides
        batch.ref_logprobs = batch.old_logprobs.clone()  # the initial weights are the reference's
        batch.rollout_logprobs = batch.old_logprobs.clone()
        plan.algorithm.compute_advantages(batch)
        state = plan.algorithm.state_dict()
        lengths = sequence_lengths(batch)
        tokens = sum(lengths)
        parts = [lengths[i:i + args.micro_batch] for i in range(0, len(lengths), args.micro_batch)]
        padded = sum(len(part) * max(part) for part in parts)  # as padded rows (micro-batches in batch order)
        before, peak_before = rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        learner.train_step(batch, 0, state)  # warm-up
        times, busy, own = [], busy_seconds(), own_seconds()
        for step in range(1, args.steps + 1):
            start = time.perf_counter()
            metrics = learner.train_step(batch, step, state)
            times.append(time.perf_counter() - start)
        others = (busy_seconds() - busy - (own_seconds() - own)) / sum(times)  # cores other processes kept busy
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        learner.shutdown()
    print(RESULT + json.dumps({
        "seconds": statistics.median(times), "tokens": tokens, "padded": padded, "extra_mib": (peak - before) / 1024,
        "rss_before_mib": before / 1024, "others": others, "peak_mib": peak / 1024,
        "peak_not_raised": peak <= peak_before,  # set-up or the log-prob pass peaked higher: extra_mib is a floor
        "packed": learner.kind.packed, "pg_loss": metrics.get("pg_loss"),
        "trained_params": sum(p.numel() for g in learner.optimizer.param_groups for p in g["params"])}), flush=True)


def run_setting(name: str, model_dir: str, args) -> dict:
    """``name`` measured in a fresh process; ``{"error": ...}`` if it failed."""
    cmd = [sys.executable, __file__, "--child", name, "--model-dir", model_dir, *args.passthrough]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, **CHILD_ENV},
                          cwd=Path(__file__).resolve().parents[1])
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return {**json.loads(line[len(RESULT):]), "wall": time.perf_counter() - start}
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return {"error": lines[-1] if lines else f"exit status {proc.returncode}", "stderr": proc.stderr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed train_steps after one warm-up")
    parser.add_argument("--prompts", type=int, default=1, help="groups per batch (data.prompts_per_step)")
    parser.add_argument("--n", type=int, default=8, help="samples per group (rollout.n)")
    parser.add_argument("--micro-batch", type=int, default=8, help="learner.micro_batch_size")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--min-response", type=int, default=32)
    parser.add_argument("--max-response", type=int, default=448)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (learner.num_threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"comma-separated, of: {', '.join(SETTINGS)} (baseline always runs)")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    names = ["baseline"] + [s for s in args.settings.split(",") if s and s != "baseline"]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    args.passthrough = [item for dest in CHILD_ARGS for item in (f"--{dest.replace('_', '-')}", str(vars(args)[dest]))]

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="learner-memory-") as model_dir:
        params = build_model(Path(model_dir), args)
        samples = args.prompts * args.n
        print(f"model: random Qwen2, hidden {args.hidden}, {args.layers} layers, {args.heads} heads "
              f"({args.kv_heads} kv), intermediate {args.intermediate}, vocab {args.vocab}, tied embeddings, "
              f"{params / 1e6:.1f}M parameters, float32")
        print(f"batch: {args.prompts} prompts x {args.n} samples = {samples}, prompt {args.prompt_tokens} tokens, "
              f"response uniform {args.min_response}..{args.max_response}; one mini-batch of {samples}, "
              f"micro-batches of {args.micro_batch}; GRPO; {args.threads} torch threads; "
              f"1 warm-up + {args.steps} timed train_steps per setting, each setting in a fresh process")
        results = {}
        for name in names:
            results[name] = run_setting(name, model_dir, args)
            r = results[name]
            status = r["error"] if "error" in r else f"{r['seconds']:.2f} s/step ({r['wall']:.0f} s in all)"
            print(f"  {name}: {status}", file=sys.stderr, flush=True)

    base = results["baseline"]
    print()
    print("| setting | s/step | tokens/s | peak extra RSS (MiB) | time vs baseline | memory vs baseline | "
          "other CPU load |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | failed: {r['error']} | | | | | |")
            continue
        mark = "*" if r["peak_not_raised"] else ""
        if "error" in base:
            ratios = " | "
        else:
            ratios = f"{r['seconds'] / base['seconds']:.2f}x | {r['extra_mib'] / base['extra_mib']:.2f}x"
        print(f"| {name} | {r['seconds']:.2f} | {r['tokens'] / r['seconds']:,.0f} | {r['extra_mib']:,.0f}{mark} | "
              f"{ratios} | {max(r['others'], 0.0):.2f} |")
    print("\nother CPU load: cores that other processes kept busy during the timed steps (0 to the core count); "
          "above about 0.1 the timings are slowed by them")
    if any(r.get("peak_not_raised") for r in results.values()):
        print("\n* the peak was reached before the first train_step: the figure is a lower bound")
    done = next((r for r in results.values() if "tokens" in r), {"tokens": 0, "padded": 0})
    print(f"\n{done['tokens']} real tokens per step (prompt + response), {done['padded']} as padded rows; "
          f"whole run {time.perf_counter() - start:.0f} s")
    for name, r in results.items():
        if "error" in r:
            print(f"\n{name} failed:\n{r['stderr'][-3000:]}", file=sys.stderr)


if __name__ == "__main__":
    main()
