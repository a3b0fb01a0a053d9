"""Chat data: prompts as plain strings or as ``{role, content}`` message lists, the way TRL and verl users have them.

A prompt is either

* a **string** ("standard" format in TRL's words): used as it is, no template;
* a **message list** ("conversational"): ``[{"role": "user", "content": ...}, ...]``,
  rendered with the tokenizer's own chat template and its generation prompt.

``render_prompt`` turns either into the text a rollout worker generates from.
``encode_conversation`` tokenizes a prompt and its response (a string, or the
assistant turns and anything between them) for supervised losses: the
``response_mask`` is 1 exactly on what the assistant wrote, its end-of-turn
token included, and 0 on everything the template or another role adds. The
template must be prefix-stable (rendering the first k messages gives a prefix of
rendering all of them), as Qwen's, Llama's and ChatML templates are; a template
that rewrites earlier turns is reported, not silently mis-masked.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, str]
ROLES = ("system", "user", "assistant", "tool")


class ChatError(ValueError):
    """A malformed message list, or a tokenizer that cannot render one."""


def is_messages(value: Any) -> bool:
    """True for a non-empty list (or tuple) of dicts: a conversational prompt or response."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(m, dict) for m in value)


def check_messages(value: Any, field: str) -> list[Message]:
    """``value`` as a list of ``{role, content}`` dicts, or a ``ChatError`` naming ``field`` and the bad message."""
    if not is_messages(value):
        raise ChatError(f"expected a non-empty string or a list of {{role, content}} messages in '{field}', "
                        f"got {_short(value)}")
    out = []
    for i, m in enumerate(value):
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ChatError(f"'{field}[{i}].role' is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ChatError(f"'{field}[{i}].content' must be a string, got {_short(content)}")
        out.append({"role": role, "content": content})
    return out


def with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    """``messages`` with ``system_prompt`` as a first system message, unless there is none to add or one already."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def as_messages(prompt: str | list[Message], system_prompt: str | None) -> list[Message] | None:
    """The message list a prompt is rendered from, or None for a string prompt used as it is.

    A string prompt becomes one user message only when a system prompt must be added to it.
    """
    if isinstance(prompt, str):
        return with_system([{"role": "user", "content": prompt}], system_prompt) if system_prompt else None
    return with_system(list(prompt), system_prompt)


def user_text(prompt: str | list[Message]) -> str:
    """What the user wrote in a prompt: a string as it is, or the last user message's content (every message's,
    a blank line between, when none is a user's). Rewards judge this, never the chat template's rendering."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else reply_text(prompt)


def reply_text(reply: str | list[Message]) -> str:
    """A response as one string for logs: itself, or its messages' contents, a blank line between turns."""
    return reply if isinstance(reply, str) else "\n\n".join(m["content"] for m in reply)


def render_template(tokenizer, messages: list[Message], generation_prompt: bool, tools: list[dict] | None = None) -> str:
    """The chat template's text for ``messages`` (and the JSON schemas of ``tools``, which the template lists)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatError(f"the tokenizer of {getattr(tokenizer, 'name_or_path', '?')} has no chat template, so message "
                        "lists cannot be rendered; give prompts as plain strings or use a chat model")
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def render_prompt(prompt: str | list[Message], tokenizer, system_prompt: str | None = None,
                  tools: list[dict] | None = None) -> tuple[str, bool]:
    """``(text, templated)``: the text to generate from, and whether the chat template made it.

    With ``tools`` (their JSON schemas) a string prompt is a user message too:
    the template lists the tools in the system turn. Templated text already
    holds the template's special tokens (a BOS, if the template writes one), so
    it is tokenized with ``add_special_tokens=False``.
    """
    messages = prompt_messages(prompt, system_prompt, tools)
    if messages is None:
        return prompt, False
    return render_template(tokenizer, messages, generation_prompt=True, tools=tools), True


def prompt_messages(prompt: str | list[Message], system_prompt: str | None,
                    tools: list[dict] | None = None) -> list[Message] | None:
    """``as_messages``, except that with ``tools`` a string prompt always becomes a user message."""
    if tools and isinstance(prompt, str):
        return with_system([{"role": "user", "content": prompt}], system_prompt)
    return as_messages(prompt, system_prompt)


def encode_prompt(text: str, templated: bool, tokenizer) -> list[int]:
    """Token ids of a rendered prompt (``render_prompt``'s output)."""
    return tokenizer.encode(text, add_special_tokens=not templated)


def encode_conversation(prompt: str | list[Message], response: str | list[Message], tokenizer,
                        system_prompt: str | None = None,
                        tools: list[dict] | None = None) -> tuple[list[int], list[int], list[float]]:
    """``(prompt_ids, response_ids, response_mask)`` of a prompt and its response, for supervised losses.

    * String prompt and string response: the two encoded as they are, then the
      tokenizer's EOS; every response token is trained.
    * Otherwise the conversation ``as_messages(prompt) + response messages`` (a
      string response is one assistant message) is rendered with the chat
      template. ``prompt_ids`` end with the generation prompt of the first
      assistant turn; the mask is 1 on each assistant turn's content up to and
      including the tokenizer's EOS (the end-of-turn token), 0 on template
      headers, on other roles' turns and on what follows the EOS. ``tools``
      (JSON schemas) are rendered as in ``render_prompt``: a tool-use trace
      is learnt with the prompt its episodes will see.
    """
    messages = prompt_messages(prompt, system_prompt, tools)
    if messages is None and isinstance(response, str):
        response_ids = tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]
        return tokenizer.encode(prompt), response_ids, [1.0] * len(response_ids)
    messages = messages if messages is not None else [{"role": "user", "content": prompt}]
    replies = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    if not replies or replies[0]["role"] != "assistant":
        raise ChatError("a response must start with an assistant message")
    if replies[-1]["role"] != "assistant":
        raise ChatError("a response must end with an assistant message")
    convo = messages + replies
    first = len(messages)
    head = render_template(tokenizer, convo[:first], True, tools)
    prompt_ids = tokenizer.encode(head, add_special_tokens=False)
    response_ids: list[int] = []
    mask: list[float] = []
    rendered = head
    for k in range(first, len(convo)):
        if convo[k]["role"] == "assistant":
            opened = render_template(tokenizer, convo[:k], True, tools)
            header = _suffix(opened, rendered, tokenizer)  # the assistant header ('' for the first turn)
            response_ids += tokenizer.encode(header, add_special_tokens=False)
            mask += [0.0] * (len(response_ids) - len(mask))
            rendered = opened
        full = render_template(tokenizer, convo[:k + 1], False, tools)
        ids = tokenizer.encode(_suffix(full, rendered, tokenizer), add_special_tokens=False)
        trained = convo[k]["role"] == "assistant"
        if trained and tokenizer.eos_token_id in ids:  # train up to the end-of-turn token, not what follows it
            stop = ids.index(tokenizer.eos_token_id) + 1
            mask += [1.0] * stop + [0.0] * (len(ids) - stop)
        else:
            mask += [1.0 if trained else 0.0] * len(ids)
        response_ids += ids
        rendered = full
    while mask and mask[-1] == 0.0:  # nothing after the last trained token is needed
        mask.pop()
        response_ids.pop()
    return prompt_ids, response_ids, mask


def _suffix(text: str, prefix: str, tokenizer) -> str:
    if not text.startswith(prefix):
        raise ChatError(f"the chat template of {getattr(tokenizer, 'name_or_path', '?')} is not prefix-stable (it "
                        "rewrites earlier turns), so assistant tokens cannot be masked turn by turn")
    return text[len(prefix):]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
