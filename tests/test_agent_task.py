"""The tool-use task (rlcore.tasks.multiply), its environments and its model (rlcore.agent_model)."""

import json
from itertools import groupby

import pytest

from rewards.api import check_scores, term_value
from rewards.arithmetic import exact_match
from rlcore.agent_model import (
    AgentModelSpec,
    build_tokenizer,
    is_built,
    make_agent_model,
    rendered_tokens,
)
from rlcore.chat import encode_conversation
from rlcore.reasoning_model import IM_END
from rlcore.tasks.multiply import (
    ErrorMultiplyEnv,
    Multiplication,
    MultiplyEnv,
    OffByOneMultiplyEnv,
    TaskSpec,
    follows_tool,
    multiply,
    prompt_rows,
    sft_rows,
    split_problems,
    tool_use,
)
from rlcore.tools import QWEN_TOOL_TEMPLATE, TOOL_TAGS, parse_hermes, public_tools, tool_schema

SPEC = AgentModelSpec()
TINY = AgentModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
SMALL_TASK = TaskSpec(train_size=300, test_size=50, seed=3)
CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 347, "b": 58}}\n</tool_call>'
"""The hermes call of multiply(347, 58); 347 * 58 = 17350 + 2776 = 20126."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(SPEC)


# --- problems and rows -------------------------------------------------------------------


def test_split_is_disjoint_seeded_and_in_range():
    train, test = split_problems(SMALL_TASK)
    assert len(train) == 300 and len(test) == 50
    pairs = [frozenset((p.a, p.b)) for p in train + test]
    assert len(set(pairs)) == len(pairs)  # no problem twice, not even as b * a
    assert all(100 <= p.a <= 999 and 10 <= p.b <= 99 for p in train + test)
    assert all(p.answer == str(p.a * p.b) for p in train + test)
    assert split_problems(SMALL_TASK) == (train, test)
    assert split_problems(TaskSpec(train_size=10, test_size=50, seed=3))[1] == test  # independent of train_size
    assert split_problems(TaskSpec(train_size=300, test_size=50, seed=4)) != (train, test)


def test_split_rejects_too_many_problems_for_the_digits():
    with pytest.raises(ValueError, match="a_digits or b_digits"):
        split_problems(TaskSpec(a_digits=1, b_digits=1, train_size=100, test_size=10))


def test_hand_picked_problem():
    assert multiply(347, 58) == 20126
    problem = Multiplication(347, 58)
    assert problem.answer == "20126" and problem.question() == "What is 347 times 58?"


@pytest.mark.parametrize(("a", "b"), [("347", 58), (347.0, 58), (True, 58), (347, [58])])
def test_multiply_rejects_what_is_not_an_integer(a, b):
    with pytest.raises(TypeError, match="multiply takes two integers"):
        multiply(a, b)


def test_prompt_row_is_a_chat_prompt():
    assert prompt_rows([Multiplication(347, 58)]) == [
        {"prompt": [{"role": "user", "content": "What is 347 times 58?"}], "answer": "20126"}]


def test_sft_row_is_a_tool_use_trace():
    assert sft_rows([Multiplication(347, 58)]) == [{"messages": [
        {"role": "user", "content": "What is 347 times 58?"},
        {"role": "assistant", "content": CALL},
        {"role": "tool", "content": "20126"},
        {"role": "assistant", "content": "20126"},
    ], "answer": "20126"}]
    json.dumps(sft_rows([Multiplication(347, 58)]))  # a JSONL row


def test_every_sft_call_parses_and_its_answer_scores():
    train, test = split_problems(SMALL_TASK)
    for p, row in zip(train + test, sft_rows(train + test)):
        user, call, tool, final = row["messages"]
        parsed = parse_hermes(call["content"])
        assert parsed.content == "" and parsed.malformed == []
        [c] = parsed.calls
        assert c.name == "multiply" and c.arguments == {"a": p.a, "b": p.b}
        assert tool["content"] == str(multiply(**c.arguments)) == row["answer"]
        assert exact_match(user["content"], final["content"], row["answer"]) == 1.0
        assert exact_match(user["content"], str(p.a * p.b + 1), row["answer"]) == 0.0
        assert exact_match(user["content"], call["content"], row["answer"]) == 0.0  # ending on a call scores 0


# --- rewards that read the episode ---------------------------------------------------------


def episode(tool_answer: str, final: str) -> list[dict]:
    """The conversation after the prompt of an episode that called multiply(347, 58) once."""
    return [{"role": "assistant", "content": CALL}, {"role": "tool", "name": "multiply", "content": tool_answer},
            {"role": "assistant", "content": final}]


def test_follows_tool_compares_the_answer_with_the_last_tool_answer():
    assert follows_tool("q", "20126", "20126", messages=episode("20126", "20126")) == 1.0
    assert follows_tool("q", " 20127\n", "20126", messages=episode("20127", " 20127\n")) == 1.0  # a lying tool
    assert follows_tool("q", "20126", "20126", messages=episode("20127", "20126")) == 0.0  # right, but not the tool's
    two_calls = episode("1", "2")[:2] + episode("20126", "20126")
    assert follows_tool("q", "20126", "20126", messages=two_calls) == 1.0  # the last answer counts
    assert follows_tool("q", "20126", "20126", messages=[{"role": "assistant", "content": "20126"}]) == 0.0
    assert follows_tool("q", "20126", "20126") == 0.0  # no episode, no tool answer to follow


def test_tool_use_counts_calls_and_errors_and_adds_nothing():
    error = str({"error": "the calculator is offline"})  # what the env actor sends back when the tool raises
    assert tool_use("q", "20126", "20126", messages=episode("20126", "20126")) == {"_called": 1.0, "_valid": 1.0}
    assert tool_use("q", "x", "20126", messages=episode(error, "x")) == {"_called": 1.0, "_valid": 0.0}
    assert tool_use("q", "20126", "20126", messages=episode("1", "2")[:2] + episode(error, "20126")) == {
        "_called": 1.0, "_valid": 0.0}
    assert tool_use("q", "20126", "20126", messages=[{"role": "assistant", "content": "20126"}]) == {
        "_called": 0.0, "_valid": 0.0}
    assert term_value(tool_use("q", "20126", "20126", messages=episode("20126", "20126"))) == 0.0  # logged only


def test_episode_rewards_fit_the_reward_contract():
    from rewards.api import FunctionReward, RewardSample

    samples = [RewardSample("q", "20127", [], "20126", messages=episode("20127", "20127")),
               RewardSample("q", "20126", [], "20126")]
    follows = FunctionReward(follows_tool)
    assert follows.extras == ["messages"] and follows.score(samples) == [1.0, 0.0]
    rows = check_scores("tool_use", FunctionReward(tool_use).score(samples), 2)
    assert rows == [{"_called": 1.0, "_valid": 1.0}, {"_called": 0.0, "_valid": 0.0}]


# --- tokenizer and chat template -----------------------------------------------------------


def test_sft_row_masks_exactly_the_two_assistant_turns(tokenizer):
    messages = sft_rows([Multiplication(347, 58)])[0]["messages"]
    prompt_ids, response_ids, mask = encode_conversation(messages[:1], messages[1:], tokenizer)
    assert tokenizer.decode(prompt_ids) == "<|im_start|>user\nWhat is 347 times 58?<|im_end|>\n<|im_start|>assistant\n"
    runs = [[t for t, _ in run] for trained, run in groupby(zip(response_ids, mask), key=lambda tm: tm[1]) if trained]
    assert [tokenizer.decode(r) for r in runs] == [CALL + IM_END, "20126" + IM_END]
    unmasked = tokenizer.decode([t for t, m in zip(response_ids, mask) if not m])
    assert unmasked == "\n<|im_start|>user\n<tool_response>\n20126\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def test_digits_and_tool_tags_are_single_tokens(tokenizer):
    messages = sft_rows([Multiplication(347, 58)])[0]["messages"]
    text = tokenizer.apply_chat_template(messages, tools=[tool_schema(multiply)], tokenize=False)
    tokens = tokenizer.tokenize(text)
    assert all(len(t) == 1 for t in tokens if any(c.isdigit() for c in t))
    for tag in TOOL_TAGS:
        assert len(tokenizer.encode(tag, add_special_tokens=False)) == 1
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    kept = tokenizer.decode(ids, skip_special_tokens=True)  # the tags are not special: decoding keeps them
    assert all(tag in kept for tag in TOOL_TAGS) and "<|im_end|>" not in kept


def test_specials_and_template(tokenizer):
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.chat_template == QWEN_TOOL_TEMPLATE


def test_prompt_with_tools_lists_the_schema_and_fits(tokenizer):
    row = prompt_rows([Multiplication(347, 58)])[0]
    text = tokenizer.apply_chat_template(row["prompt"], tools=[tool_schema(multiply)], tokenize=False,
                                         add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert json.dumps(tool_schema(multiply)) in text
    assert text.endswith("<|im_start|>user\nWhat is 347 times 58?<|im_end|>\n<|im_start|>assistant\n")
    trace = rendered_tokens(tokenizer, sft_rows([Multiplication(347, 58)])[0]["messages"])
    assert rendered_tokens(tokenizer, row["prompt"], generation_prompt=True) < trace
    assert trace <= SPEC.max_position_embeddings // 2  # room for more turns than the trace's three


# --- environments --------------------------------------------------------------------------


@pytest.mark.parametrize("env_class", [MultiplyEnv, ErrorMultiplyEnv, OffByOneMultiplyEnv])
def test_envs_offer_multiply_with_the_traces_schema(env_class):
    env = env_class()
    assert env.reset(**prompt_rows([Multiplication(347, 58)])[0]) is None
    tools = public_tools(env)
    assert list(tools) == ["multiply"]
    assert tool_schema(tools["multiply"]) == tool_schema(multiply)  # the broken ones look the same to the model


def test_env_answers():
    assert MultiplyEnv().multiply(347, 58) == 20126
    assert OffByOneMultiplyEnv().multiply(347, 58) == 20127
    with pytest.raises(RuntimeError, match="^the calculator is offline$"):
        ErrorMultiplyEnv().multiply(347, 58)
    with pytest.raises(TypeError):  # the env's tool checks its arguments as the function does
        MultiplyEnv().multiply("347", 58)


# --- the model asset ---------------------------------------------------------------------


def test_make_agent_model_is_a_cached_hf_folder(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = make_agent_model(tmp_path / "m", TINY)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "qwen2" and model.config.eos_token_id == tok.eos_token_id
    assert GenerationConfig.from_pretrained(path).eos_token_id == tok.convert_tokens_to_ids(IM_END)
    assert json.loads((path / "tokenizer_config.json").read_text())["chat_template"] == QWEN_TOOL_TEMPLATE
    assert all(len(tok.encode(tag, add_special_tokens=False)) == 1 for tag in TOOL_TAGS)
    assert model.config.vocab_size >= len(tok) and model.config.vocab_size % 64 == 0
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert make_agent_model(tmp_path / "m", TINY) == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    (path / "agent_model.json").unlink()  # an interrupted build: redone
    assert not is_built(path, TINY)
    make_agent_model(tmp_path / "m", TINY)
    assert is_built(path, TINY) and not is_built(path, AgentModelSpec(seed=1))
    prompt = tok.apply_chat_template(prompt_rows([Multiplication(347, 58)])[0]["prompt"],
                                     tools=[tool_schema(multiply)], add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode(prompt, add_special_tokens=False)])).logits
    assert logits.shape[-1] == model.config.vocab_size


def test_cache_key_is_stable_and_spec_dependent():
    assert TINY.cache_key() == AgentModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                              intermediate_size=64).cache_key()
    assert TINY.cache_key() != SPEC.cache_key() and SPEC.cache_key().startswith("tiny-qwen2-agent-")
