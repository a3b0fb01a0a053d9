"""The env actor's role class and the env section's checks, in this process (no Ray): tools that work, fail, hang
or do not exist; both environment contracts; rewards that read an episode; the episode metrics."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from actors.env import BAD_ARGS, ERROR, OK, TIMEOUT, UNKNOWN, EnvWorker, ToolResult
from launch.sources import episode_metrics
from rewards.api import FunctionReward, RewardSample, build_reward, wants_environments
from rlcore.batch import RolloutBatch
from rlcore.config import ConfigError, EnvConfig, load_config
from rlcore.episode import FAULTS
from rlcore.tools import ToolCall, load_toolbox

ENVS = "tests.plugins.agent_envs"


def worker(**settings) -> EnvWorker:
    return EnvWorker(EnvConfig(**settings))


def call(w: EnvWorker, requests) -> list[list[ToolResult]]:
    return asyncio.run(w.call(requests))


def test_stateless_tools_answer_fail_and_time_out_as_tool_messages():
    w = worker(tools=["rlcore.tasks.multiply:multiply", f"{ENVS}:boom", f"{ENVS}:slow", f"{ENVS}:shout"],
               timeout_s=0.3)
    w.open([1], [{"answer": "1"}], [0])
    start = time.perf_counter()
    [results] = call(w, [(1, [ToolCall("multiply", {"a": 347, "b": 58}), ToolCall("boom", {"x": 3}),
                              ToolCall("slow", {"seconds": 5.0}), ToolCall("shout", {"text": "hi"}),
                              ToolCall("divide", {"a": 1}), ToolCall("multiply", {"a": 1})])])
    assert time.perf_counter() - start < 3  # the hung call did not hold the turn up
    assert [(r.name, r.status) for r in results] == [("multiply", OK), ("boom", ERROR), ("slow", TIMEOUT),
                                                     ("shout", OK), ("divide", UNKNOWN), ("multiply", BAD_ARGS)]
    assert results[0].content == "20126" and results[3].content == "HI"
    assert results[1].content == "{'error': 'boom on 3'}"  # TRL's form: the model reads the message
    assert results[4].content == "{'error': 'Tool divide not found.'}"
    assert "timed out after 0.3 s" in results[2].content and "missing a required argument: 'b'" in results[5].content


def test_a_trl_environment_per_episode_reset_with_its_row_and_scored_by_get_reward():
    w = worker(path=f"{ENVS}:Counter")
    observations = w.open([7, 8], [{"start": 5, "prompt": "p"}, {"start": 1}], [0, 0])
    assert observations == [" The counter starts at 5.", " The counter starts at 1."]
    results = call(w, [(7, [ToolCall("add", {"n": 2}), ToolCall("add", {"n": 3})]), (8, [ToolCall("add", {"n": 10})])])
    assert [[r.content for r in rs] for rs in results] == [["7", "10"], ["11"]]  # in order, each its own instance
    assert w.episodes[7].row == {"start": 5, "prompt": "p"}
    closed = w.close([7, 8], ship=True)
    assert [c["return"] for c in closed] == [10.0, 11.0]
    assert closed[0]["environment"].total == 10 and not w.episodes  # shipped for rewards, then forgotten


def test_a_gym_environment_takes_whole_turns_and_sums_its_step_rewards():
    w = worker(path=f"{ENVS}:Guess", contract="gym")
    assert w.open([1], [{"answer": "42"}], [123]) == [" Guess the number."]
    assert w.episodes[1].seed == 123
    first, second = w.step([(1, "41")]), w.step([(1, "42<|im_end|>")])
    assert (first[0].observation, first[0].reward, first[0].done) == ("Wrong, guess again.", 0.0, False)
    assert (second[0].reward, second[0].done) == (1.0, True)
    assert w.close([1], ship=False) == [{"return": 1.0}]


@pytest.mark.parametrize("settings, message", [
    ({"tools": [f"{ENVS}:undocumented"]}, f"env.tools[0]='{ENVS}:undocumented': tool {ENVS}.undocumented cannot be "
                                          "described to the model"),
    ({"tools": [f"{ENVS}:nope"]}, f"env.tools[0]='{ENVS}:nope': module '{ENVS}' has no attribute 'nope'"),
    ({"tools": [f"{ENVS}:boom", f"{ENVS}:boom"]}, "a second tool named 'boom'"),
    ({"path": f"{ENVS}:Counter", "tools": [f"{ENVS}:boom", "rlcore.tasks.multiply:multiply"]}, None),
    ({"path": f"{ENVS}:NoReset"}, f"env.path='{ENVS}:NoReset': NoReset has no reset method (TRL's contract)"),
    ({"path": "rlcore.tasks.multiply:multiply"}, "env.path='rlcore.tasks.multiply:multiply': multiply() failed: "),
])
def test_the_toolbox_names_the_key_and_the_function(settings, message):
    if message is None:
        box = load_toolbox(EnvConfig(**settings))
        assert [s["function"]["name"] for s in box.schemas] == ["boom", "multiply", "add"]
        assert list(box.functions) == ["boom", "multiply"] and box.env_class.__name__ == "Counter"
        return
    with pytest.raises(ConfigError) as info:
        load_toolbox(EnvConfig(**settings))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_env_actor_takes_its_tools_without_describing_them():
    """The driver describes and checks the tools; an env actor only calls them, so it imports neither transformers
    nor torch (1.6 s and 200 MB of each actor): in a fresh interpreter, an ``EnvWorker`` with a function tool and a
    ``trl`` environment class calls the tool, and neither library was imported."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import sys\nfrom actors.env import EnvWorker\nfrom rlcore.config import EnvConfig\n"
              f"worker = EnvWorker(EnvConfig(tools=['rlcore.tasks.multiply:multiply'], path='{ENVS}:Counter'))\n"
              "print(worker.tools['multiply'](a=6, b=7), worker.env_class.__name__, "
              "sorted({'torch', 'transformers'} & set(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["42", "Counter", "[]"], proc.stdout + proc.stderr[-2000:]


def test_a_tool_by_file_path_is_the_module_by_that_name():
    box = load_toolbox(EnvConfig(tools=["tests/plugins/agent_envs.py:boom"]))
    assert box.functions["boom"].__module__ == ENVS


@pytest.mark.parametrize("overrides, message", [
    (["env.contract=game"], "env.contract='game' is not one of trl, gym"),
    (["env.tool_parser=json"], "env.tool_parser='json' is not one of hermes"),
    (["env.max_turns=0"], "env.max_turns=0 must be > 0"),
    (["env.contract=gym"], "env.contract=gym needs env.path"),
    ([f"env.path={ENVS}:Guess", "env.contract=gym", f"env.tools=[{ENVS}:boom]"], "env.tools cannot be used with"),
])
def test_bad_env_settings_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def sample(**fields) -> RewardSample:
    return RewardSample(prompt="q", response="20126", response_ids=[1], ground_truth="20126", **fields)


def test_reward_functions_read_the_episode_they_ask_for():
    messages = [{"role": "assistant", "content": "call"}, {"role": "tool", "content": "20127"}]

    def follows(prompt, response, ground_truth, messages=None):
        return float(response == messages[-1]["content"])

    def scored(prompt, response, ground_truth, env_return=None):
        return env_return

    assert FunctionReward(follows).score([sample(messages=messages)]) == [0.0]
    assert FunctionReward(scored).score([sample(env_return=2.5)]) == [2.5]
    assert not wants_environments(follows)


def test_a_trl_reward_gets_the_environments_batched():
    class Env:
        def __init__(self, total):
            self.total = total

    def trl_reward(environments, completions, **kwargs):  # TRL's signature, and a data column
        return [env.total * k for env, k in zip(environments, kwargs["weight"])]

    assert wants_environments(trl_reward)
    samples = [sample(environment=Env(2), metadata={"weight": 3}), sample(environment=Env(5), metadata={"weight": 1})]
    assert build_reward("t", trl_reward, {}).score(samples) == [6, 5]


def test_episode_metrics():
    stats = {"turns": [2, 1, 3, 1], "tool_calls": [1, 0, 2, 0], "model_tokens": [30, 10, 50, 12],
             "env_tokens": [20, 0, 40, 0], "env_seconds": [0.1] * 4,
             **{k: [0, 0, 0, 0] for k in FAULTS}}
    stats["tool_errors"] = [0, 0, 1, 0]
    stats["malformed_calls"] = [1, 0, 0, 0]
    batch = RolloutBatch(truncated=torch.tensor([False, False, True, False]),
                         episode_stats={k: torch.tensor(v, dtype=torch.float32) for k, v in stats.items()},
                         env_returns=torch.tensor([1.0, float("nan"), 3.0, float("nan")]))
    m = episode_metrics(batch)
    assert m["env/turns/mean"] == 1.75 and m["env/tool_calls/mean"] == 0.75 and m["env/tool_call_frac"] == 0.5
    assert m["env/valid_call_frac"] == pytest.approx(1 / 3)  # 3 calls, one raised, one malformed
    assert m["env/truncated_frac"] == 0.25 and m["env/tool_errors"] == 1 and m["env/malformed_calls"] == 1
    assert m["response_length/model_tokens/mean"] == 25.5 and m["response_length/env_tokens/mean"] == 15
    assert m["env/return/mean"] == 2.0 and m["time/env"] == pytest.approx(0.4)
