"""How much the rollout worker costs on top of a bare vLLM engine.

Generates the same prompts (n samples each) through a bare ``vllm.LLM`` in
this process, then through ``RolloutGroup`` (Ray actors wrapping
``RolloutWorker``), and prints the throughput of each and their ratio. Both
are measured in this one run, on this machine, after a warm-up call.

    .venv/bin/python bench/rollout_overhead.py [--prompts 64 --n 8 --repeats 5 --workers 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1


def timed(fn, repeats: int) -> tuple[float, int]:
    """(median seconds per call, tokens per call), after one warm-up call."""
    tokens = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", default="local://tiny-qwen2-arith")
    args = parser.parse_args()

    from rlcore.assets import resolve
    from rlcore.config import load_config
    from rlcore.data import load_prompts

    cfg = load_config(None, [f"rollout.n={args.n}", f"rollout.max_new_tokens={args.max_new_tokens}",
                             f"rollout.num_workers={args.workers}"])
    model = resolve(args.model, cfg.trainer.cache_dir, "--model")
    rows = load_prompts([resolve("local://arithmetic-train.jsonl", cfg.trainer.cache_dir, "data")])[: args.prompts]

    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype=cfg.rollout.dtype, seed=0, enforce_eager=True, logprobs_mode="processed_logprobs")
    tok = llm.get_tokenizer()
    params = SamplingParams(n=args.n, temperature=1.0, max_tokens=args.max_new_tokens, logprobs=0)
    inputs = [{"prompt_token_ids": tok.encode(r.prompt)} for r in rows]

    def bare() -> int:
        outs = llm.generate(inputs, params, use_tqdm=False)
        return sum(len(s.token_ids) for o in outs for s in o.outputs)

    bare_s, bare_tokens = timed(bare, args.repeats)
    llm = None  # free the bare engine before the rollout workers start theirs
    gc.collect()

    import ray

    from actors.groups import RolloutGroup

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        group = RolloutGroup(cfg, model)
        # Seeded per prompt, as in training (a resumed run then repeats its samples).
        worker_s, worker_tokens = timed(lambda: group.generate(rows, args.n, seed=0).num_response_tokens, args.repeats)
    finally:
        ray.shutdown()

    bare_tps, worker_tps = bare_tokens / bare_s, worker_tokens / worker_s
    print(f"prompts={args.prompts} n={args.n} max_new_tokens={args.max_new_tokens} workers={args.workers} repeats={args.repeats}")
    print(f"bare vllm.LLM      : {bare_s * 1000:8.1f} ms/call  {bare_tps:9.0f} tok/s")
    print(f"RolloutGroup (Ray) : {worker_s * 1000:8.1f} ms/call  {worker_tps:9.0f} tok/s")
    print(f"ratio worker/bare  : time x{worker_s / bare_s:.2f}, throughput x{worker_tps / bare_tps:.2f}")


if __name__ == "__main__":
    main()
