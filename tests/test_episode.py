"""rlcore.episode: environment messages spliced onto sampled ids, and the trajectory's mask and cap."""

import copy

import pytest

from rlcore.chat import ChatError, encode_conversation, render_prompt
from rlcore.episode import Trajectory, message_delta
from rlcore.tools import tool_schema
from tests.test_chat import REVERSED
from tests.test_tools import add, multiply, tool_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tool_tokenizer()


TOOLS = [tool_schema(multiply), tool_schema(add)]
PROMPT = [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "What are 12*34 and 5+6?"}]
# What the model writes in its two turns: two calls, then the answer.
FIRST = ('<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 34}}\n</tool_call>\n'
         '<tool_call>\n{"name": "add", "arguments": {"a": 5, "b": 6}}\n</tool_call>')
SECOND = "12*34 is 408 and 5+6 is 11."
ANSWERS = [{"role": "tool", "content": "408"}, {"role": "tool", "content": "11"}]
ANSWERS_TEXT = ("\n<|im_start|>user\n<tool_response>\n408\n</tool_response>\n<tool_response>\n11\n</tool_response>"
                "<|im_end|>\n<|im_start|>assistant\n")


def sampled(tok, text):
    """The ids an engine samples when the model writes ``text`` and ends its turn."""
    return tok.encode(text, add_special_tokens=False) + [tok.eos_token_id]


def prompt_ids(tok, tools=TOOLS):
    text = tok.apply_chat_template(PROMPT, tools=tools, tokenize=False, add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False)


def test_delta_of_tool_answers_closes_the_turn_groups_them_and_opens_the_next(tok):
    delta = message_delta(tok, ANSWERS, TOOLS)
    assert tok.decode(delta) == ANSWERS_TEXT
    # The newline Qwen's template writes after <|im_end|> comes first: the model never samples it.
    assert tok.convert_ids_to_tokens(delta[:5]) == ["Ċ", "<|im_start|>", "user", "Ċ", "<tool_response>"]
    assert message_delta(tok, ANSWERS) == delta  # the tools block is in the prompt, not in the delta


def test_delta_of_a_user_reply(tok):
    delta = message_delta(tok, [{"role": "user", "content": "Check it."}], TOOLS)
    assert tok.decode(delta) == "\n<|im_start|>user\nCheck it.<|im_end|>\n<|im_start|>assistant\n"


def two_turns(tok, max_total_tokens=1000):
    traj = Trajectory(prompt_ids=prompt_ids(tok), max_total_tokens=max_total_tokens, messages=list(PROMPT))
    first = sampled(tok, FIRST)
    traj.add_model_turn(first, [-0.5] * len(first), FIRST)
    assert traj.add_env(message_delta(tok, ANSWERS, TOOLS), ANSWERS)
    second = sampled(tok, SECOND)
    traj.add_model_turn(second, [-0.25] * len(second), SECOND)
    return traj


def test_splicing_gives_the_ids_of_the_whole_conversation_rendered_at_once(tok):
    traj = two_turns(tok)
    whole = tok.apply_chat_template(traj.messages, tools=TOOLS, tokenize=False)
    assert traj.messages == PROMPT + [{"role": "assistant", "content": FIRST}, *ANSWERS,
                                      {"role": "assistant", "content": SECOND}]
    # The rendering ends with the newline after the last <|im_end|>; the trajectory ends with the EOS sampled.
    assert traj.context() + tok.encode("\n", add_special_tokens=False) == tok.encode(whole, add_special_tokens=False)


def test_the_mask_is_one_exactly_on_each_turn_up_to_its_eos(tok):
    traj = two_turns(tok)
    trained = [t for t, m in zip(traj.ids, traj.mask) if m == 1.0]
    untrained = [t for t, m in zip(traj.ids, traj.mask) if m == 0.0]
    assert tok.decode(trained) == FIRST + "<|im_end|>" + SECOND + "<|im_end|>"
    assert tok.decode(untrained) == ANSWERS_TEXT
    assert set(traj.mask) == {0.0, 1.0} and len(traj.mask) == len(traj.ids) == len(traj.logprobs)
    assert {lp for lp, m in zip(traj.logprobs, traj.mask) if m == 0.0} == {0.0}
    assert {lp for lp, m in zip(traj.logprobs, traj.mask) if m == 1.0} == {-0.5, -0.25}
    assert (traj.turns, traj.tool_calls, traj.model_tokens + traj.env_tokens) == (2, 2, len(traj.ids))
    assert traj.env_tokens == len(message_delta(tok, ANSWERS, TOOLS))


def test_splicing_agrees_with_encode_conversation_on_ids_and_mask(tok):
    one_call = '<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 34}}\n</tool_call>'
    answer = [{"role": "tool", "content": "408"}]
    reply = [{"role": "assistant", "content": one_call}, *answer, {"role": "assistant", "content": "408."}]
    want_prompt, want_ids, want_mask = encode_conversation(PROMPT, reply, tok)

    text, _ = render_prompt(PROMPT, tok)
    traj = Trajectory(prompt_ids=tok.encode(text, add_special_tokens=False), max_total_tokens=1000)
    for turn in (one_call, "408."):
        ids = sampled(tok, turn)
        traj.add_model_turn(ids, [0.0] * len(ids), turn)
        if turn == one_call:
            traj.add_env(message_delta(tok, answer), answer)
    assert (traj.prompt_ids, traj.ids, traj.mask) == (want_prompt, want_ids, want_mask)


def test_a_template_that_rewrites_earlier_turns_is_reported(tok):
    reversed_tok = copy.copy(tok)
    reversed_tok.chat_template = REVERSED
    with pytest.raises(ChatError, match="not prefix-stable .*when tool, tool messages follow"):
        message_delta(reversed_tok, ANSWERS)


def test_a_template_without_an_end_of_turn_token_is_reported(tok):
    plain = copy.copy(tok)
    plain.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(ChatError, match=r"writes no EOS \('<\|im_end\|>'\)"):
        message_delta(plain, ANSWERS)
    plain.chat_template = None
    with pytest.raises(ChatError, match="has no chat template"):
        message_delta(plain, ANSWERS)


def test_the_cap_cuts_environment_ids_and_ends_the_episode():
    traj = Trajectory(prompt_ids=[1, 2], max_total_tokens=10)
    traj.add_model_turn([5, 6, 7], [-0.1, -0.2, -0.3], "first")
    assert traj.remaining() == 7 and traj.context() == [1, 2, 5, 6, 7]
    assert traj.add_env([8, 9], [{"role": "tool", "content": "a"}])
    traj.add_model_turn([10, 11, 12], [-0.4, -0.5, -0.6], "second")
    assert traj.remaining() == 2 and not traj.truncated

    answers = [{"role": "tool", "content": "b"}, {"role": "tool", "content": "c"}]
    assert traj.add_env([13, 14, 15, 16], answers) is False
    assert traj.ids == [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert traj.mask == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert traj.logprobs == [-0.1, -0.2, -0.3, 0.0, 0.0, -0.4, -0.5, -0.6, 0.0, 0.0]
    assert traj.truncated and traj.done and traj.remaining() == 0
    assert (traj.model_tokens, traj.env_tokens, traj.turns, traj.tool_calls) == (6, 4, 2, 3)
    assert [m["content"] for m in traj.messages] == ["first", "a", "second", "b", "c"]


def test_environment_ids_that_fill_the_cap_exactly_end_the_episode_truncated():
    """Nothing was cut, but no room is left for the model's next turn (vLLM refuses max_tokens=0)."""
    traj = Trajectory(prompt_ids=[1], max_total_tokens=3)
    assert traj.add_env([4, 5, 6], [{"role": "user", "content": "go"}])
    assert traj.truncated and traj.done and traj.remaining() == 0 and traj.tool_calls == 0


def test_a_model_turn_must_fit_the_cap_and_carry_a_logprob_per_token():
    traj = Trajectory(prompt_ids=[1], max_total_tokens=2)
    with pytest.raises(ValueError, match="2 token ids but 1 log-probs"):
        traj.add_model_turn([5, 6], [-0.1], "x")
    with pytest.raises(ValueError, match=r"3 tokens passes max_total_tokens \(2, 2 left\)"):
        traj.add_model_turn([5, 6, 7], [-0.1, -0.2, -0.3], "x")
    assert traj.ids == [] and traj.messages == [] and Trajectory(prompt_ids=[], max_total_tokens=1).messages == []
