"""rlcore.chat: message lists, chat templates and assistant-only masks, on a tiny word-level tokenizer."""

import pytest

from rlcore.chat import (
    ChatError,
    as_messages,
    check_messages,
    encode_conversation,
    encode_prompt,
    is_messages,
    render_prompt,
    with_system,
)

# Qwen's ChatML layout, without its tool and thinking branches.
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Renders the turns newest first: rendering k messages is no prefix of rendering k + 1.
REVERSED = ("{% for m in messages|reverse %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WORDS = ["be", "brief", "what", "is", "2+2", "4", "and", "3+3", "6", "hi", "hello", "thanks", "bye", "good", "bad",
         "1+1=", "2", "3"]


def chat_tokenizer(template: str | None = CHATML, bos: bool = False):
    """A word-level tokenizer: ChatML specials, "\\n" as a token of its own, EOS ``<|im_end|>``.

    With ``bos``, ``encode`` adds ``<s>`` in front unless ``add_special_tokens=False`` (as Llama's does).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "<s>", "<|im_start|>", "<|im_end|>", "\n", "system", "user",
                                         "assistant", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    # Pieces are "\n" or runs of anything but space and newline.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n|[^ \n]+"), behavior="removed", invert=True)
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", bos_token="<s>", eos_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = template
    return tok


def tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_the_test_tokenizer_maps_words_and_newlines_to_single_tokens():
    tok = chat_tokenizer(bos=True)
    assert tokens(tok, tok.encode("<|im_start|>user\nwhat is 2+2<|im_end|>\n", add_special_tokens=False)) == [
        "<|im_start|>", "user", "\n", "what", "is", "2+2", "<|im_end|>", "\n"]
    assert tokens(tok, tok.encode("hi")) == ["<s>", "hi"]
    assert "[UNK]" not in tokens(tok, tok.encode(" ".join(WORDS)))


def test_is_and_check_messages():
    assert is_messages([{"role": "user", "content": "hi"}]) and not is_messages([]) and not is_messages("hi")
    assert not is_messages([{"role": "user", "content": "hi"}, "hi"])
    assert check_messages(({"role": "user", "content": "hi", "name": "x"},), "prompt") == [
        {"role": "user", "content": "hi"}]  # extra keys dropped, a tuple becomes a list
    with pytest.raises(ChatError, match=r"^'prompt\[1\]\.role' is 'bot'; expected one of system, user, assistant"):
        check_messages([{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "prompt")
    with pytest.raises(ChatError, match=r"^'chosen\[0\]\.content' must be a string, got None$"):
        check_messages([{"role": "assistant"}], "chosen")
    with pytest.raises(ChatError, match=r"in 'prompt', got \[\]$"):
        check_messages([], "prompt")


def test_system_prompt_goes_first_once():
    user = [{"role": "user", "content": "hi"}]
    assert with_system(user, "be brief") == [{"role": "system", "content": "be brief"}, *user]
    own = [{"role": "system", "content": "mine"}, *user]
    assert with_system(own, "be brief") == own  # a row's own system message wins
    assert with_system(user, None) == user and with_system(user, "") == user
    assert as_messages("hi", None) is None  # a string prompt stays a string
    assert as_messages("hi", "be brief") == [{"role": "system", "content": "be brief"}, *user]


def test_render_prompt_templates_messages_not_strings():
    tok = chat_tokenizer()
    assert render_prompt("1+1=", tok) == ("1+1=", False)  # a string is used as it is
    text, templated = render_prompt([{"role": "user", "content": "hi"}], tok)
    assert (text, templated) == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", True)
    text, templated = render_prompt("hi", tok, system_prompt="be brief")  # a system prompt makes it a conversation
    assert templated and text == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                                  "<|im_start|>assistant\n")
    with pytest.raises(ChatError, match="has no chat template"):
        render_prompt([{"role": "user", "content": "hi"}], chat_tokenizer(template=None))


def test_encode_prompt_adds_special_tokens_to_plain_strings_only():
    tok = chat_tokenizer(bos=True)
    assert tokens(tok, encode_prompt("hi", False, tok)) == ["<s>", "hi"]
    text, templated = render_prompt([{"role": "user", "content": "hi"}], tok)
    assert tokens(tok, encode_prompt(text, templated, tok)) == [
        "<|im_start|>", "user", "\n", "hi", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]


def test_assistant_mask_of_a_two_turn_conversation_with_a_system_prompt():
    tok = chat_tokenizer()
    prompt = [{"role": "user", "content": "what is 2+2"}]
    response = [{"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3"},
                {"role": "assistant", "content": "6"}]
    prompt_ids, response_ids, mask = encode_conversation(prompt, response, tok, system_prompt="be brief")
    assert tokens(tok, prompt_ids) == ["<|im_start|>", "system", "\n", "be", "brief", "<|im_end|>", "\n",
                                       "<|im_start|>", "user", "\n", "what", "is", "2+2", "<|im_end|>", "\n",
                                       "<|im_start|>", "assistant", "\n"]
    expected = [("4", 1), ("<|im_end|>", 1),  # the first reply and its end-of-turn token are trained
                ("\n", 0), ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("and", 0), ("3+3", 0), ("<|im_end|>", 0),
                ("\n", 0), ("<|im_start|>", 0), ("assistant", 0), ("\n", 0),  # the user's turn and the header
                ("6", 1), ("<|im_end|>", 1)]  # the second reply; the template's final "\n" is cut
    assert list(zip(tokens(tok, response_ids), mask)) == expected
    # The pieces encoded turn by turn are the whole conversation's tokens.
    full = tok.apply_chat_template([{"role": "system", "content": "be brief"}, *prompt, *response], tokenize=False)
    assert prompt_ids + response_ids == tok.encode(full, add_special_tokens=False)[:-1]


def test_a_string_response_to_a_message_prompt_is_one_assistant_turn():
    tok = chat_tokenizer()
    _, response_ids, mask = encode_conversation([{"role": "user", "content": "hi"}], "hello", tok)
    assert list(zip(tokens(tok, response_ids), mask)) == [("hello", 1.0), ("<|im_end|>", 1.0)]


def test_plain_strings_are_encoded_as_they_are():
    tok = chat_tokenizer(bos=True)
    prompt_ids, response_ids, mask = encode_conversation("1+1=", "2", tok)
    assert tokens(tok, prompt_ids) == ["<s>", "1+1="]  # the prompt as the rollout worker encodes a string
    assert tokens(tok, response_ids) == ["2", "<|im_end|>"] and mask == [1.0, 1.0]


def test_a_template_that_rewrites_earlier_turns_is_reported():
    tok = chat_tokenizer(template=REVERSED)
    response = [{"role": "assistant", "content": "4"}, {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "bye"}]
    with pytest.raises(ChatError, match="is not prefix-stable"):
        encode_conversation([{"role": "user", "content": "what is 2+2"}], response, tok)


def test_a_response_must_start_and_end_with_the_assistant():
    tok, prompt = chat_tokenizer(), [{"role": "user", "content": "hi"}]
    with pytest.raises(ChatError, match="start with an assistant message"):
        encode_conversation(prompt, [{"role": "user", "content": "hi"}], tok)
    with pytest.raises(ChatError, match="end with an assistant message"):
        encode_conversation(prompt, [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"}],
                            tok)
