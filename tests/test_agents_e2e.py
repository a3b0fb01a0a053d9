"""Multi-turn episodes end to end on the agent task (real Ray, vLLM, FSDP): a short cold start teaches the tiny model
the tool-call format once for the module; then the ids the learner gets are the engine's, span by span; GRPO, and
PPO with a staleness bound (stopped and resumed), train on episodes with tool calls; the elastic rollout pool grows
and replaces a killed worker; ``launch.evaluate`` plays episodes for greedy, pass@k and maj@k; and tools that raise,
hang or kill their actor do not stop a LoRA run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.test_e2e import read_jsonl, venv_env
from tests.zygote import python

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_ray")]  # its runs join the session's Ray cluster

REPO = Path(__file__).resolve().parents[1]
GRPO = "launch/configs/agent_grpo.yaml"
SHORT = ["data.prompts_per_step=8", "rollout.n=4", "learner.mini_batch_size=32", "learner.micro_batch_size=32",
         "trainer.eval_every=0", "trainer.save_every=0", "trainer.export=false"]


def run(out: Path, *overrides: str, preset: str = GRPO) -> subprocess.CompletedProcess:
    proc = subprocess.run([python(), "-m", "launch.train", "--config", preset, f"trainer.output_dir={out}",
                           *overrides], cwd=REPO, env=venv_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def cold_start(tmp_path_factory) -> str:
    """The agent task's SFT stage, shortened: enough steps for the model to write hermes tool calls."""
    out = tmp_path_factory.mktemp("agent") / "sft"
    run(out, "trainer.total_steps=60", "trainer.eval_every=0", "trainer.save_every=0",
        preset="launch/configs/agent_sft.yaml")
    return str(out / "final")


def test_the_learner_gets_exactly_the_ids_the_engine_sampled_span_by_span(local_ray, cold_start, cache_dir):
    """Every span of model tokens (mask 1) is one engine call's sample, continued from exactly the ids before it, with
    its log-probs; every span between them is the chat template's delta for the environment's messages."""
    import ray
    from transformers import AutoTokenizer

    from actors.groups import EnvPool, remote
    from launch.build import configure, prepare
    from rlcore.episode import message_delta
    from tests.plugins.recording import RecordingRolloutWorker

    plan = configure("launch/configs/agent_grpo.yaml", [f"model.path={cold_start}", f"trainer.cache_dir={cache_dir}"])
    rows = prepare(plan).eval[:6]
    pool = EnvPool(plan.cfg.env, plan.tools, ship=False)
    worker = remote(RecordingRolloutWorker, plan.cfg.rollout).remote(cold_start, plan.cfg.rollout, env=pool.client)
    batch = ray.get(worker.generate.remote(rows, 4, seed=3))
    samples: dict[tuple, list] = {}
    for context, ids, logprobs in ray.get(worker.recorded.remote()):
        samples.setdefault(tuple(context), []).append((ids, logprobs))
    tokenizer = AutoTokenizer.from_pretrained(cold_start)
    multi_turn = 0
    for i in range(len(batch)):
        ids, mask = batch.response_ids[i], batch.response_mask[i, :len(batch.response_ids[i])].tolist()
        spans = runs(mask)
        answers: list[list[dict]] = []  # the environment's messages after each model turn
        for message in batch.messages[i]:
            answers.append([]) if message["role"] == "assistant" else answers[-1].append(message)
        answers = [a for a in answers if a]
        model_spans = [(a, b) for a, b, on in spans if on]
        env_spans = [(a, b) for a, b, on in spans if not on]
        assert len(model_spans) == batch.episode_stats["turns"][i] and len(env_spans) <= len(answers)
        for a, b in model_spans:  # a model turn: one sample of the engine, continued from everything before it
            context = tuple(batch.prompt_ids[i] + ids[:a])
            sampled = [(s, lp) for s, lp in samples[context] if s == ids[a:b]]
            assert sampled, f"episode {i}: the ids at {a}:{b} are no sample the engine drew from that context"
            assert batch.rollout_logprobs[i, a:b].tolist() == pytest.approx(sampled[0][1], abs=1e-6)
        for (a, b), messages in zip(env_spans, answers):  # the environment's answer, rendered once (maybe cut)
            assert ids[a:b] == message_delta(tokenizer, messages, plan.tools)[:b - a]
            multi_turn += 1
    assert multi_turn > 0, "no episode called a tool: the test saw no environment span"


def runs(mask: list[float]) -> list[tuple[int, int, bool]]:
    """``(start, stop, is_model)`` of each maximal run of equal mask values."""
    out, start = [], 0
    for k in range(1, len(mask) + 1):
        if k == len(mask) or mask[k] != mask[start]:
            out.append((start, k, mask[start] == 1.0))
            start = k
    return out


def test_grpo_trains_on_episodes_with_tool_calls(tmp_path, cold_start):
    out = tmp_path / "grpo"
    run(out, f"model.path={cold_start}", "trainer.total_steps=3", *SHORT)
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert min(m["env/tool_call_frac"] for m in metrics) > 0
    assert all(m["response_length/env_tokens/mean"] > 0 and m["env/turns/mean"] > 1 for m in metrics)
    # the learner's log-probs of the sampled turns match the sampler's, as in single-turn runs
    assert max(m["actor/rollout_gap/abs_diff_max"] for m in metrics) < 1e-3
    logged = [json.loads(line) for line in (out / "rollouts.jsonl").read_text().splitlines()]
    conversation = logged[0]["samples"][0]["messages"]
    assert conversation[0]["role"] == "assistant" and "<tool_call>" in conversation[0]["content"]
    assert any(m["role"] == "tool" for s in logged[0]["samples"] for m in s["messages"])


def test_ppo_with_a_staleness_bound_trains_on_episodes_and_resumes(tmp_path, cold_start):
    out = tmp_path / "ppo"
    ppo = [f"model.path={cold_start}", "algorithm.name=ppo", "algorithm.critic.mini_batch_size=32",
           "rollout.max_staleness=1", *SHORT, "trainer.save_every=2"]
    run(out, *ppo, "trainer.total_steps=2")
    run(out, *ppo, "trainer.total_steps=4", "trainer.resume=true")  # from the step-2 checkpoint
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # each step once across the two runs
    assert min(m["env/tool_call_frac"] for m in metrics) > 0 and "critic/value_loss" in metrics[-1]
    assert max(m["staleness/max"] for m in metrics) == 1  # a step trained on the samples of the policy before it
    fresh = [m for m in metrics if m["staleness/max"] == 0]  # on-policy steps: the learner sees the sampler's log-probs
    assert fresh and max(m["actor/rollout_gap/abs_diff_max"] for m in fresh) < 1e-3


def test_a_grown_pool_and_a_replaced_rollout_worker_play_episodes(local_ray, cold_start, cache_dir):
    """The elastic rollout pool with an env section: a worker added mid-run and one that replaces a killed worker
    both get the env pool, and the killed worker's episodes are played again."""
    import ray

    from actors.groups import EnvPool, RolloutGroup, wait_ready
    from launch.build import configure, prepare

    plan = configure(GRPO, [f"model.path={cold_start}", f"trainer.cache_dir={cache_dir}", "rollout.balance=even"])
    rows = prepare(plan).eval[:8]
    pool = EnvPool(plan.cfg.env, plan.tools, ship=False)
    group = RolloutGroup(plan.cfg, cold_start, env=pool.client)
    wait_ready([pool, group])
    group.resize(2)
    ray.kill(group.members()[1])  # the newcomer dies before its first call
    batch = group.generate(rows, 4, seed=1)
    assert len(batch) == 32 and batch.group_ids.tolist() == [g for g in range(8) for _ in range(4)]
    assert group.faults["restarts"] == 1 and group.faults["regenerated"] > 0
    assert batch.episode_stats["tool_calls"].sum() > 0 and len(batch.messages) == 32
    group._admit(wait=True)  # the replacement's engine is up: it joins, and plays its share of the next call
    assert len(group.members()) == 2
    batch = group.generate(rows, 4, seed=2)  # a share without episodes would not join the others' (concat)
    assert len(batch.messages) == 32 and batch.episode_stats["tool_calls"].sum() > 0
    for w in group.members():
        ray.kill(w)


def test_evaluate_plays_episodes_for_greedy_pass_at_k_and_maj_at_k(tmp_path, cold_start):
    """``launch.evaluate`` on the same path: greedy, pass@k and maj@k over multi-turn answers; the searches, which
    continue a single response, are refused in one line."""
    from tests.test_evaluate_e2e import evaluate, rows_of

    result = evaluate(tmp_path / "eval", "--config", GRPO, f"model.path={cold_start}", "eval.n=4",
                      "eval.methods=[greedy,pass_at_k,maj_at_k]", "data.max_eval_prompts=16",
                      "reward.terms=[{name: exact_match}, {name: 'rlcore.tasks.multiply:tool_use', weight: 0}]")
    assert result["problems"] == 16
    greedy = rows_of(result, "greedy")[1]
    assert greedy["rlcore.tasks.multiply:tool_use/called"] > 0  # the answers came after tool calls
    pass_at = [rows_of(result, "pass_at_k")[k]["accuracy"] for k in (1, 2, 4)]
    assert pass_at == sorted(pass_at)
    assert rows_of(result, "maj_at_k")[4]["accuracy"] <= pass_at[-1]
    refused = subprocess.run([python(), "-m", "launch.evaluate", "--config", GRPO, f"model.path={cold_start}",
                              "eval.methods=[beam_search]", f"trainer.output_dir={tmp_path / 'refused'}"], cwd=REPO,
                             env=venv_env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "config error: eval.methods: beam_search cannot run multi-turn episodes"), refused.stderr[-2000:]


def test_tools_that_raise_hang_or_kill_their_actor_do_not_stop_the_run(tmp_path, cold_start, cache_dir):
    from rlcore.assets import resolve

    rows = read_jsonl(Path(resolve("local://multiply-train.jsonl", cache_dir, "data.train_files")))[:64]
    data = tmp_path / "train.jsonl"
    marker = tmp_path / "died"
    data.write_text("".join(json.dumps({**row, "die_marker": str(marker)}) + "\n" for row in rows))
    out = tmp_path / "faults"
    proc = run(out, f"model.path={cold_start}", f"data.train_files=[{data}]", "data.eval_files=[]",
               "env.tools=[]", "env.path=tests.plugins.agent_envs:FaultyMultiply", "env.timeout_s=1",
               "learner.lora_rank=4", "trainer.total_steps=3", *SHORT)  # a LoRA learner: its merged weights sampled
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]  # every step, despite the faults
    assert marker.is_file() and "env worker 0 died; its" in proc.stdout
    assert sum(m["env/redone"] for m in metrics) > 0
    assert sum(m["env/tool_errors"] for m in metrics) > 0 and sum(m["env/tool_timeouts"] for m in metrics) > 0
    assert max(m["actor/rollout_gap/abs_diff_max"] for m in metrics) < 1e-3  # the adapter merged into what vLLM has
