"""Multi-turn episodes against single-turn samples: the same model, prompts and number of generated tokens.

The agent task's model, after a short cold start (or ``--model``), writes every
assistant turn as a tool call ended by its end-of-turn token. Here it plays
``--prompts`` x ``--n`` episodes of ``--turns`` turns with a trivial environment
(``Again``: a gym-style class that answers each turn with a short ``user``
message and ends the episode after ``--turns``), through the training path
(``RolloutGroup``, Ray actors wrapping ``RolloutWorker``). The baseline samples
the same prompts once each, single-turn, every sample exactly as long as the
model's tokens of its episode (``FixedLengths``: the EOS ignored, one engine
call), so both generate the same tokens in as many sequences: what differs is
only what turns cost (the engine calls one after the other, each context sent
again, the env actors' answers). Each mode has its own engine, alternately, in
this one run. Printed: model tokens per second of each, their ratio, and the
multi-turn rollout's time waiting on the env actors (``time/env``) against its
whole time.

    .venv/bin/python -m bench.multiturn [--prompts 16 --n 4 --turns 4 --repeats 10 --model PATH] [OVERRIDES]
"""

from __future__ import annotations

import argparse
import os
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


class Again:
    """A gym-style environment that accepts any turn: ``Again.`` until the ``turns``-th, then the end."""

    turns = 4

    def reset(self, seed: int | None = None, **row) -> tuple[str | None, dict]:
        self.count = 0
        return None, {}

    def step(self, text: str) -> tuple[str, float, bool, bool, dict]:
        self.count += 1
        return "Again.", 0.0, self.count >= self.turns, False, {}


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


def cold_start(out: Path) -> str:
    """The agent task's SFT preset, shortened to 60 steps: the model then writes whole, closed turns."""
    subprocess.run([sys.executable, "-m", "launch.train", "--config", "launch/configs/agent_sft.yaml",
                    f"trainer.output_dir={out}", "trainer.total_steps=60", "trainer.eval_every=0",
                    "trainer.save_every=0"], cwd=REPO, check=True, capture_output=True)
    return str(out / "final")


def measure(episodes, samples, rows, n: int, repeats: int) -> list[tuple[float, float, int, float]]:
    """Per repeat, after a warm-up of both: ``(episodes' seconds, the baseline's seconds, model tokens, seconds
    waiting on the env actors)``; the two modes alternate, so that the machine's drift reaches both alike."""
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
        out.append((multi, single, generated, batch.episode_stats["env_seconds"].sum().item()))
    return out[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--model", default=None, help="an agent model export (default: a 60-step cold start)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both modes, e.g. rollout.kv_block_size=32")
    args = parser.parse_args()

    import ray

    from actors.groups import EnvPool, RolloutGroup, remote, wait_ready
    from launch.build import configure, prepare
    from launch.train import ACTOR_ENV

    model = args.model or cold_start(Path(tempfile.mkdtemp()) / "sft")
    Again.turns = args.turns
    plan = configure("launch/configs/agent_grpo.yaml",
                     [f"model.path={model}", f"env.max_turns={args.turns}", "env.max_total_tokens=400", "env.tools=[]",
                      "env.path=bench.multiturn:Again", "env.contract=gym", *args.overrides])
    rows = prepare(plan).train[: args.prompts]
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    try:
        pool = EnvPool(plan.cfg.env, [], ship=False)
        episodes = RolloutGroup(plan.cfg, model, env=pool.client)
        samples = remote(FixedLengths, plan.cfg.rollout).remote(model, plan.cfg.rollout)
        wait_ready([pool, episodes])
        ray.get(samples.get_version.remote())
        runs = measure(episodes, samples, rows, args.n, args.repeats)
    finally:
        ray.shutdown()
    m_time, s_time, tokens, env = (statistics.median(r[k] for r in runs) for k in range(4))
    ratios = [single / multi for multi, single, _, _ in runs]
    print(f"| {len(rows) * args.n} sequences | model tokens per call | seconds per call (min-max) |\n|---|---|---|\n"
          f"| single-turn | {tokens:.0f} | {s_time:.2f} ({min(r[1] for r in runs):.2f}-{max(r[1] for r in runs):.2f}) |\n"
          f"| {args.turns}-turn episodes | {tokens:.0f} | {m_time:.2f} ({min(r[0] for r in runs):.2f}-"
          f"{max(r[0] for r in runs):.2f}) |")
    print(f"multi-turn throughput / single-turn: x{statistics.median(ratios):.2f} (x{min(ratios):.2f}-"
          f"x{max(ratios):.2f} over {len(runs)} calls); time/env {env:.2f} s of {m_time:.2f} s ({100 * env / m_time:.0f}%)")

if __name__ == "__main__":
    main()
