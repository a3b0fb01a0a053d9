"""Multi-turn episodes against single-turn samples: the same model, prompts and number of generated tokens.

The agent task's chat model, after a cold start on traces of a chained product
(``chain_rows``: "What is 47 times 3 times 8 times 5?", answered by three calls
of the trivial ``multiply`` tool, each on the last one's answer, and the
product: four model turns, each ended by its end-of-turn token), or ``--model``,
plays ``--prompts`` x ``--n`` such episodes through the training path
(``RolloutGroup``, Ray actors wrapping ``RolloutWorker``, the tool in the env
pool). The baseline samples
the same prompts once each, single-turn, every sample exactly as long as the
model's tokens of its episode (``FixedLengths``: the EOS ignored, one engine
call), so both generate the same tokens in as many sequences: what differs is
only what turns cost (the engine calls one after the other, each context sent
again, the env actors' answers). Each mode has its own engine, alternately, in
this one run. Printed: model tokens per second of each, their ratio, and the
multi-turn rollout's time waiting on the env actors (``time/env``) against its
whole time.

    .venv/bin/python -m bench.multiturn [--prompts 16 --n 4 --repeats 10 --sft-steps 300 --model PATH] [OVERRIDES]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1
REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 0.5
"""A pause before each call: the other engine's OpenMP threads, which spin a while after their work, are idle."""

from actors.rollout import RolloutWorker, seed_samplers  # noqa: E402  (after the Ray setting above)
from rlcore.chat import encode_prompt  # noqa: E402
from rlcore.data import PromptRow  # noqa: E402
from rlcore.tasks.arithmetic import write_jsonl  # noqa: E402
from rlcore.tasks.multiply import Multiplication, multiply, tool_call_text  # noqa: E402

CALLS = 3
"""Tool calls per episode: with the final answer, four model turns."""


def chain_rows(count: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``count`` chained products ``a x b x c x d`` (``a`` of two digits, the others of one): their prompt rows, and
    their SFT traces, in which each of ``CALLS`` calls multiplies the last tool answer by the next factor."""
    rng = random.Random(seed)
    prompts, traces = [], []
    for _ in range(count):
        factors = [rng.randint(10, 99)] + [rng.randint(2, 9) for _ in range(CALLS)]
        user = {"role": "user", "content": "What is " + " times ".join(map(str, factors)) + "?"}
        messages, product = [user], factors[0]
        for factor in factors[1:]:
            messages.append({"role": "assistant", "content": tool_call_text(Multiplication(product, factor))})
            product = multiply(product, factor)
            messages.append({"role": "tool", "content": str(product)})
        messages.append({"role": "assistant", "content": str(product)})
        prompts.append({"prompt": [user], "answer": str(product)})
        traces.append({"messages": messages, "answer": str(product)})
    return prompts, traces


class FixedLengths(RolloutWorker):
    """The baseline: a rollout worker whose samples run to given lengths."""

    def sample(self, rows: list[PromptRow], n: int, lengths: list[int], seed: int) -> int:
        """One single-turn sample per length, ``n`` per row in row order, the EOS ignored so that each is exactly
        as long as asked (the engine call of ``RolloutWorker.generate``); returns the tokens generated."""
        from vllm import SamplingParams

        seed_samplers(seed)
        params = [SamplingParams(temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_tokens=length,
                                 ignore_eos=True, logprobs=0) for length in lengths]
        inputs = [{"prompt_token_ids": encode_prompt(row.prompt, row.templated, self.tokenizer)}
                  for row in rows for _ in range(n)]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        return sum(len(out.outputs[0].token_ids) for out in outputs)


def cold_start(out: Path, traces: Path, steps: int) -> str:
    """The agent task's SFT preset on the chained traces for ``steps`` steps: the model then writes whole turns."""
    subprocess.run([sys.executable, "-m", "launch.train", "--config", "launch/configs/agent_sft.yaml",
                    f"data.train_files=[{traces}]", f"data.eval_files=[{traces}]", f"trainer.output_dir={out}",
                    f"trainer.total_steps={steps}", "trainer.eval_every=0", "trainer.save_every=0"],
                   cwd=REPO, check=True, capture_output=True)
    return str(out / "final")


def measure(episodes, samples, rows, n: int, repeats: int) -> list[tuple[float, float, int, float]]:
    """Per repeat, after a warm-up of both: ``(episodes' seconds, the baseline's seconds, model tokens, seconds
    waiting on the env actors, mean turns, mean tool calls, share truncated)``; the two modes alternate, so that the machine's drift reaches both alike."""
    import ray

    out = []
    for i in range(repeats + 1):
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        batch = episodes.generate(rows, n, seed=i)
        multi = time.perf_counter() - start
        lengths = [int(t) for t in batch.episode_stats["model_tokens"].tolist()]
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        generated = ray.get(samples.sample.remote(rows, n, lengths, seed=i))
        single = time.perf_counter() - start
        assert generated == sum(lengths), (generated, sum(lengths))
        stats = batch.episode_stats
        out.append((multi, single, generated, stats["env_seconds"].sum().item(), stats["turns"].mean().item(),
                    stats["tool_calls"].mean().item(), batch.truncated.float().mean().item()))
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sft-steps", type=int, default=300, help="the cold start's steps (without --model)")
    parser.add_argument("--model", default=None, help="a model export cold-started on the chained traces")
    parser.add_argument("overrides", nargs="*", help="config overrides for both modes, e.g. rollout.kv_block_size=32")
    args = parser.parse_args()

    import ray

    from actors.groups import EnvPool, RolloutGroup, remote, wait_ready
    from launch.build import configure, prepare

    work = Path(tempfile.mkdtemp())
    prompts, traces = chain_rows(2000)
    model = args.model or cold_start(work / "sft", write_jsonl(traces, work / "traces.jsonl"), args.sft_steps)
    plan = configure("launch/configs/agent_grpo.yaml",
                     [f"model.path={model}", f"data.train_files=[{write_jsonl(prompts, work / 'prompts.jsonl')}]",
                      f"env.max_turns={CALLS + 1}", "env.max_total_tokens=400", *args.overrides])
    rows = prepare(plan).train[: args.prompts]
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        pool = EnvPool(plan.cfg.env, plan.tools, ship=False)
        episodes = RolloutGroup(plan.cfg, model, env=pool.client)
        samples = remote(FixedLengths, plan.cfg.rollout).remote(model, plan.cfg.rollout)
        wait_ready([pool, episodes])
        ray.get(samples.get_version.remote())
        runs = measure(episodes, samples, rows, args.n, args.repeats)
    finally:
        ray.shutdown()
    m_time, s_time, tokens, env, turns, calls, truncated = (statistics.median(r[k] for r in runs) for k in range(7))
    ratios = [r[1] / r[0] for r in runs]
    print(f"| {len(rows) * args.n} sequences | model tokens per call | seconds per call (min-max) |\n|---|---|---|\n"
          f"| single-turn | {tokens:.0f} | {s_time:.2f} ({min(r[1] for r in runs):.2f}-{max(r[1] for r in runs):.2f}) |\n"
          f"| episodes ({turns:.2f} turns, {calls:.2f} tool calls, {truncated:.0%} truncated) | {tokens:.0f} | {m_time:.2f} ({min(r[0] for r in runs):.2f}-"
          f"{max(r[0] for r in runs):.2f}) |")
    print(f"multi-turn throughput / single-turn: x{statistics.median(ratios):.2f} (x{min(ratios):.2f}-"
          f"x{max(ratios):.2f} over {len(runs)} calls); time/env {env:.2f} s of {m_time:.2f} s ({100 * env / m_time:.0f}%)")

if __name__ == "__main__":
    main()
