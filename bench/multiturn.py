"""Multi-turn episodes against single-turn samples: the same model, the same number of generated tokens.

The agent task's model, after a short cold start (or ``--model``), writes every
assistant turn as a tool call ended by its end-of-turn token. Here it plays
episodes of ``--turns`` turns with a trivial environment (``Again``: a gym-style
class that answers each turn with a short ``user`` message and ends the
episode after ``--turns``), and, as the baseline, single-turn samples of
``--turns`` times as many prompts, so both generate about the same tokens.
Both run through the same path (``RolloutGroup``, Ray actors wrapping
``RolloutWorker``), each with its own engine, alternately, in this one run.
Printed: model tokens per second of each, their ratio, and the multi-turn
rollout's time waiting on the env actors (``time/env``) against its whole time.

    .venv/bin/python -m bench.multiturn [--prompts 16 --n 4 --turns 4 --repeats 3 --model PATH]
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


class Again:
    """A gym-style environment that accepts any turn: ``Again.`` until the ``turns``-th, then the end."""

    turns = 4

    def reset(self, seed: int | None = None, **row) -> tuple[str | None, dict]:
        self.count = 0
        return None, {}

    def step(self, text: str) -> tuple[str, float, bool, bool, dict]:
        self.count += 1
        return "Again.", 0.0, self.count >= self.turns, False, {}


def cold_start(out: Path) -> str:
    """The agent task's SFT preset, shortened to 60 steps: the model then writes whole, closed turns."""
    subprocess.run([sys.executable, "-m", "launch.train", "--config", "launch/configs/agent_sft.yaml",
                    f"trainer.output_dir={out}", "trainer.total_steps=60", "trainer.eval_every=0",
                    "trainer.save_every=0"], cwd=REPO, check=True, capture_output=True)
    return str(out / "final")


def measure(group, rows, n: int, repeats: int) -> tuple[float, float, float]:
    """(median seconds per call, model tokens per call, env seconds per call), after one warm-up call."""
    group.generate(rows, n, seed=0)
    times, tokens, env = [], [], []
    for i in range(repeats):
        start = time.perf_counter()
        batch = group.generate(rows, n, seed=i + 1)
        times.append(time.perf_counter() - start)
        tokens.append(batch.num_response_tokens)
        env.append(batch.episode_stats["env_seconds"].sum().item() if batch.episode_stats else 0.0)
    return statistics.median(times), statistics.median(tokens), statistics.median(env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="an agent model export (default: a 60-step cold start)")
    parser.add_argument("overrides", nargs="*", help="config overrides for both modes, e.g. rollout.kv_block_size=32")
    args = parser.parse_args()

    import ray

    from actors.groups import EnvPool, RolloutGroup, wait_ready
    from launch.build import configure, prepare
    from launch.train import ACTOR_ENV

    model = args.model or cold_start(Path(tempfile.mkdtemp()) / "sft")
    Again.turns = args.turns
    common = [f"model.path={model}", f"env.max_turns={args.turns}", "env.max_total_tokens=400", *args.overrides]
    multi = configure("launch/configs/agent_grpo.yaml",
                      [*common, "env.tools=[]", "env.path=bench.multiturn:Again", "env.contract=gym"])
    single = configure("launch/configs/agent_grpo.yaml", [*common, "env.tools=[]"])  # no env section: one turn
    rows = prepare(multi).train[: args.prompts]
    single_rows = prepare(single).train[: args.prompts * args.turns]
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": ACTOR_ENV})
    try:
        pool = EnvPool(multi.cfg.env, [], ship=False)
        episodes = RolloutGroup(multi.cfg, model, env=pool.client)
        wait_ready([pool, episodes])
        m_time, m_tokens, m_env = measure(episodes, rows, args.n, args.repeats)
        ray.kill(episodes.members()[0])
        samples = RolloutGroup(single.cfg, model)
        wait_ready([samples])
        s_time, s_tokens, _ = measure(samples, single_rows, args.n, args.repeats)
    finally:
        ray.shutdown()
    s_rate, m_rate = s_tokens / s_time, m_tokens / m_time
    print(f"| | samples | model tokens per call | seconds per call | model tokens/s |\n|---|---|---|---|---|\n"
          f"| single-turn | {len(single_rows) * args.n} | {s_tokens:.0f} | {s_time:.2f} | {s_rate:.0f} |\n"
          f"| {args.turns}-turn episodes | {len(rows) * args.n} | {m_tokens:.0f} | {m_time:.2f} | {m_rate:.0f} |")
    print(f"multi-turn throughput / single-turn: x{m_rate / s_rate:.2f}; time/env {m_env:.2f} s of "
          f"{m_time:.2f} s ({100 * m_env / m_time:.0f}%)")


if __name__ == "__main__":
    main()
