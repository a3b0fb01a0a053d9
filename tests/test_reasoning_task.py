"""The reasoning task (rlcore.tasks.reasoning), its model (rlcore.reasoning_model) and its reward (rewards.reasoning)."""

import json
import random
from pathlib import Path

import pytest
import torch

from rewards import REWARDS, answer_match, r1_format
from rlcore.assets import resolve
from rlcore.chat import encode_conversation
from rlcore.reasoning_model import (
    IM_END,
    ReasoningModelSpec,
    build_tokenizer,
    is_built,
    make_reasoning_model,
    thinking_tokens,
)
from rlcore.tasks.reasoning import (
    LEVELS,
    Addition,
    TaskSpec,
    l1_sft_rows,
    mixed_scratchpad,
    rl_rows,
    scratchpad,
    sft_rows,
    solution,
    split_problems,
    teacher_sft_rows,
    teacher_solution,
)

TINY = ReasoningModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
SMALL_TASK = TaskSpec(train_size=300, test_size=50, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TINY)


# --- problems and rows -------------------------------------------------------------------


def test_split_is_disjoint_seeded_and_in_range():
    train, test = split_problems(SMALL_TASK)
    assert len(train) == 300 and len(test) == 50
    pairs = [frozenset((p.a, p.b)) for p in train + test]
    assert len(set(pairs)) == len(pairs)  # no problem twice, not even as b + a
    assert all(10 <= n <= 999 for p in train + test for n in (p.a, p.b))
    assert split_problems(SMALL_TASK) == (train, test)
    assert split_problems(TaskSpec(train_size=10, test_size=50, seed=3))[1] == test  # test split independent of train_size


def test_split_rejects_too_many_problems_for_the_digits():
    with pytest.raises(ValueError, match="max_digits"):
        split_problems(TaskSpec(min_digits=1, max_digits=1, train_size=100, test_size=10))


@pytest.mark.parametrize(("level", "expected"), [
    ("terse", "5+8=13. 4+7+1=12. 3+6+1=10."),
    ("write", "5+8=13, write 3. 4+7+1=12, write 2. 3+6+1=10, write 0. Write 1."),
    ("carry", "5+8=13, write 3 carry 1. 4+7+1=12, write 2 carry 1. 3+6+1=10, write 0 carry 1. Write 1."),
    ("so_far", ("5+8=13, write 3 carry 1, so far 3. 4+7+1=12, write 2 carry 1, so far 23. "
                "3+6+1=10, write 0 carry 1, so far 023. Write 1, so far 1023.")),
    ("check", ("5+8=13, write 3 carry 1, so far 3. 4+7+1=12, write 2 carry 1, so far 23. "
               "3+6+1=10, write 0 carry 1, so far 023. Write 1, so far 1023. So 345+678=1023.")),
])
def test_scratchpad_of_a_hand_picked_problem(level, expected):
    assert scratchpad(Addition(345, 678), level) == expected


def test_mixed_scratchpad_sets_each_columns_verbosity():
    assert mixed_scratchpad(Addition(345, 678), ["terse", "so_far", "write"], check=False) == \
        "5+8=13. 4+7+1=12, write 2 carry 1, so far 23. 3+6+1=10, write 0. Write 1."
    assert mixed_scratchpad(Addition(345, 678), ["so_far", "terse", "carry"], check=True) == \
        "5+8=13, write 3 carry 1, so far 3. 4+7+1=12. 3+6+1=10, write 0 carry 1. Write 1. So 345+678=1023."
    for level in LEVELS:  # the five levels are its uniform cases
        uniform = [level if level != "check" else "so_far"] * 3
        assert mixed_scratchpad(Addition(345, 678), uniform, level == "check") == scratchpad(Addition(345, 678), level)
    with pytest.raises(ValueError, match="3 column levels"):
        mixed_scratchpad(Addition(345, 678), ["terse", "write"], check=False)
    with pytest.raises(ValueError, match="3 column levels"):
        mixed_scratchpad(Addition(345, 678), ["terse", "write", "check"], check=False)


def test_scratchpad_pads_the_shorter_operand_with_zeros():
    assert scratchpad(Addition(56, 1234)) == "6+4=10, write 0 carry 1. 5+3+1=9, write 9. 0+2=2, write 2. 0+1=1, write 1."


def test_every_sft_solution_is_right_and_in_r1_format():
    train, test = split_problems(SMALL_TASK)
    for level in LEVELS:
        for row in sft_rows(train + test, level):
            user, assistant = row["messages"]
            assert user["role"] == "user" and assistant["role"] == "assistant"
            assert answer_match(user["content"], assistant["content"], row["answer"]) == 1.0
            assert r1_format(user["content"], assistant["content"], row["answer"]) == 1.0


def test_the_teacher_is_right_except_for_the_carry_into_the_tens_it_often_forgets():
    train, _ = split_problems()
    rows = teacher_sft_rows(train)
    carries = [(p.a % 10 + p.b % 10) >= 10 for p in train]
    right = [answer_match("", row["messages"][1]["content"], row["answer"]) == 1.0 for row in rows]
    assert all(r for r, c in zip(right, carries) if not c)  # no carry out of the ones column: right
    kept = [r for r, c in zip(right, carries) if c]
    assert 0.30 < sum(kept) / len(kept) < 0.40  # the carry added about 35% of the time
    assert all(r1_format("", row["messages"][1]["content"], "") == 1.0 for row in rows)
    assert all(row["answer"] == p.answer for row, p in zip(rows, train))  # the ground truth stays the true sum
    problem = Addition(345, 678)
    # the slip, and every column after it computed from the wrong sum, to the answer they write
    wrong = ("<think>5+8=13, write 3 carry 1. 4+7=11, write 1 carry 1. 3+6+1=10, write 0 carry 1. Write 1.</think>"
             "<answer>1013</answer>")
    assert teacher_solution(problem, random.Random(0), carry_rate=0.0) == wrong
    assert teacher_solution(problem, random.Random(0), carry_rate=1.0) == solution(problem)
    assert teacher_solution(Addition(341, 678), random.Random(0), carry_rate=0.0) == solution(Addition(341, 678))
    assert teacher_sft_rows(train[:50]) == teacher_sft_rows(train[:50])  # seeded


def test_rl_rows_are_verl_style_chat_prompts():
    row = rl_rows([Addition(345, 678)])[0]
    assert row["prompt"] == [{"role": "user", "content": "What is 345 + 678? Think in <think> </think>, "
                                                          "answer in <answer> </answer>."}]
    assert row["reward_model"] == {"ground_truth": "1023"}
    json.dumps(row)  # a JSONL row


# --- tokenizer and chat template -----------------------------------------------------------


def test_tokenizer_splits_digits_and_round_trips(tokenizer):
    text = "What is 345 + 678? <think>5+8=13, write 3 carry 1.</think><answer>1023</answer> Think for 12 tokens."
    tokens = tokenizer.tokenize(text)
    assert all(len(t) == 1 for t in tokens if any(c.isdigit() for c in t))
    assert {"<think>", "</think>", "<answer>", "</answer>"} <= set(tokens)  # one token each
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    odd = "Ünïcode 中文, tabs\tand\nnewlines"  # byte-level: any text survives
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd
    assert 300 < len(tokenizer) <= TINY.bpe_vocab_size + 4


def test_specials_and_eos(tokenizer):
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi"


def test_chat_template_renders_system_user_and_generation_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    no_system = tokenizer.apply_chat_template(messages[1:], tokenize=False, add_generation_prompt=False)
    assert no_system == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"  # no default system message


def test_sft_row_masks_exactly_the_assistant_answer(tokenizer):
    row = sft_rows([Addition(345, 678)])[0]
    prompt_ids, response_ids, mask = encode_conversation(row["messages"][:1], row["messages"][1:], tokenizer)
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(response_ids) == solution(Addition(345, 678)) + IM_END and all(mask)


def test_l1_rows_state_their_thinking_token_count(tokenizer):
    problems = split_problems(SMALL_TASK)[1]
    rows = l1_sft_rows(problems, lambda text: thinking_tokens(tokenizer, text), seed=0)
    assert {row["level"] for row in rows} == set(LEVELS)
    for row in rows:
        user, assistant = row["messages"]
        n = row["target_tokens"]
        assert user["content"].endswith(f"</answer>. Think for {n} tokens.")
        think = assistant["content"].split("<think>")[1].split("</think>")[0]
        ids = tokenizer.encode(assistant["content"], add_special_tokens=False)
        inside = ids[ids.index(tokenizer.convert_tokens_to_ids("<think>")) + 1:
                     ids.index(tokenizer.convert_tokens_to_ids("</think>"))]
        assert n == thinking_tokens(tokenizer, think) == len(inside)
    lengths = [thinking_tokens(tokenizer, scratchpad(problems[0], level)) for level in LEVELS]
    assert lengths == sorted(lengths) and lengths[-1] - lengths[0] >= 30  # tens of tokens of range


def test_mixed_l1_rows_fill_the_lengths_between_the_levels(tokenizer):
    """Per-column levels: every row's stated count is its thinking's, and the problems' lengths take many more values
    than the five levels give."""
    problems = split_problems(SMALL_TASK)[1]
    count = lambda text: thinking_tokens(tokenizer, text)  # noqa: E731
    rows = l1_sft_rows(problems, count, seed=0, mixed=True)
    for row in rows:
        think = row["messages"][1]["content"].split("<think>")[1].split("</think>")[0]
        assert row["level"] == "mixed" and row["target_tokens"] == count(think)
        assert row["messages"][1]["content"].endswith(f"<answer>{row['answer']}</answer>")
    three = [p for p in problems if len(str(max(p.a, p.b))) == 3][:50]
    per_level = {count(scratchpad(p, level)) for p in three for level in LEVELS}
    mixed = {row["target_tokens"] for row in l1_sft_rows(three * 4, count, seed=1, mixed=True)}
    assert len(mixed - per_level) >= 10


# --- the model asset ---------------------------------------------------------------------


def test_make_reasoning_model_is_a_cached_hf_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = make_reasoning_model(tmp_path / "m", TINY)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "qwen2" and model.config.eos_token_id == tok.eos_token_id
    assert GenerationConfig.from_pretrained(path).eos_token_id == tok.convert_tokens_to_ids(IM_END)
    assert json.loads((path / "tokenizer_config.json").read_text())["chat_template"] == tok.chat_template
    assert model.config.vocab_size >= len(tok) and model.config.vocab_size % 64 == 0
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert make_reasoning_model(tmp_path / "m", TINY) == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    (path / "reasoning_model.json").unlink()  # an interrupted build: redone
    assert not is_built(path, TINY)
    make_reasoning_model(tmp_path / "m", TINY)
    assert is_built(path, TINY) and not is_built(path, ReasoningModelSpec(seed=1))
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 12 + 34?"}], add_generation_prompt=True,
                                     tokenize=False)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode(prompt, add_special_tokens=False)])).logits
    assert logits.shape[-1] == model.config.vocab_size


def test_cache_key_is_stable_and_spec_dependent():
    assert TINY.cache_key() == ReasoningModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                                  intermediate_size=64).cache_key()
    assert TINY.cache_key() != ReasoningModelSpec().cache_key()
    assert ReasoningModelSpec().cache_key().startswith("tiny-qwen2-reason-")


def read_rows(name: str, cache_dir) -> list[dict]:
    text = Path(resolve("local://" + name, str(cache_dir), "data.train_files")).read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_local_reasoning_data_assets(tmp_path):
    rows, sft = read_rows("reasoning-test.jsonl", tmp_path), read_rows("reasoning-sft-test.jsonl", tmp_path)
    train = read_rows("reasoning-train.jsonl", tmp_path)
    assert [r["reward_model"]["ground_truth"] for r in rows] == [r["answer"] for r in sft]
    assert {r["prompt"][0]["content"] for r in rows}.isdisjoint(r["prompt"][0]["content"] for r in train)


# --- the reward ----------------------------------------------------------------------------


@pytest.mark.parametrize(("response", "truth", "expected"), [
    ("<think>5+8=13</think><answer>1023</answer>", "1023", 1.0),
    ("<think>5+8=13</think><answer>1022</answer>", "1023", 0.0),
    ("<think>5+8=13</think> 1023", "1023", 0.0),  # no answer tag
    ("<answer> 1023 </answer>", "1023", 1.0),  # surrounding whitespace
    ("<answer>045</answer>", "45", 1.0),  # numbers compare by value: a leading zero is the same number
    ("<answer>45.0</answer>", "45", 1.0),
    ("<answer>4 5</answer>", "45", 0.0),  # not a plain number: compared as text
    ("<answer>4_5</answer>", "45", 0.0),  # Python's int() would accept this; the reward does not
    ("<answer>1</answer> <answer>1023</answer>", "1023", 1.0),  # the last block counts
    ("<answer>1023</answer> <answer>1</answer>", "1023", 0.0),
    ("<answer>yes</answer>", " yes ", 1.0),  # non-numeric: stripped text
    ("", "1023", 0.0),
])
def test_answer_match(response, truth, expected):
    assert answer_match("What is 345 + 678?", response, truth) == expected


def test_answer_match_is_registered():
    assert REWARDS.resolve("answer_match", "reward.terms[0].name") is answer_match
