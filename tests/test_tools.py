"""rlcore.tools: tool schemas, the hermes tool-call parser and the Qwen2.5-style tool chat template."""

import pytest

from rlcore.tools import (
    QWEN_TOOL_TEMPLATE,
    TOOL_PARSERS,
    TOOL_TAGS,
    ParsedTurn,
    ToolCall,
    ToolError,
    parse_hermes,
    public_tools,
    tool_schema,
)


def tool_tokenizer():
    """The local model's BPE tokenizer with Qwen2.5's tool tags as added, non-special tokens and the tool template."""
    from tokenizers import AddedToken

    from rlcore.reasoning_model import build_tokenizer

    tok = build_tokenizer()
    tok.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in TOOL_TAGS])
    tok.chat_template = QWEN_TOOL_TEMPLATE
    return tok


@pytest.fixture(scope="module")
def tok():
    return tool_tokenizer()


def multiply(a: int, b: int):
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


def add(a: int, b: int):
    """Add two integers.

    Args:
        a: A number.
        b: Another number.
    """
    return a + b


def scale(factor: int, offset: float, unit: str, values: list[int], label: str | None = None) -> list[float]:
    """Scale a list of integers.

    Each value is multiplied, then shifted.

    Args:
        factor: How many times larger.
        offset: Added after scaling.
        unit: The unit of the values.
        values: The numbers to scale.
        label: A name for the result.

    Returns:
        The scaled numbers.
    """
    return [v * factor + offset for v in values]


class Calculator:
    """An environment in TRL's ``environment_factory`` shape: ``reset``, two tools, a helper and attributes."""

    def __init__(self):
        self.memory = 0
        self.log = print  # a callable attribute, not a method: no tool

    def reset(self, **row) -> None:
        self.memory = 0

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers and remember the product.

        Args:
            a: The first factor.
            b: The second factor.
        """
        self.memory = self._product(a, b)
        return self.memory

    def recall(self) -> int:
        """The last product."""
        return self.memory

    def get_reward(self) -> float:  # TRL's episode score: not a tool
        return float(self.memory == 408)

    @property
    def last(self) -> int:
        raise AssertionError("public_tools must not run properties")

    def _product(self, a: int, b: int) -> int:
        return a * b


def test_schema_from_type_hints_and_docstring():
    assert tool_schema(scale) == {"type": "function", "function": {
        "name": "scale",
        "description": "Scale a list of integers.\n\nEach value is multiplied, then shifted.",
        "parameters": {"type": "object", "properties": {
            "factor": {"type": "integer", "description": "How many times larger."},
            "offset": {"type": "number", "description": "Added after scaling."},
            "unit": {"type": "string", "description": "The unit of the values."},
            "values": {"type": "array", "items": {"type": "integer"}, "description": "The numbers to scale."},
            "label": {"type": "string", "nullable": True, "description": "A name for the result."},
        }, "required": ["factor", "offset", "unit", "values"]},
        "return": {"type": "array", "items": {"type": "number"}, "description": "The scaled numbers."},
    }}


def test_a_methods_schema_has_no_self():
    env = Calculator()
    assert tool_schema(env.multiply)["function"]["parameters"] == {"type": "object", "properties": {
        "a": {"type": "integer", "description": "The first factor."},
        "b": {"type": "integer", "description": "The second factor."},
    }, "required": ["a", "b"]}
    assert tool_schema(env.recall)["function"]["parameters"] == {"type": "object", "properties": {}}


def no_hint(a, b: int):
    """Lacks a type hint.

    Args:
        a: Something.
        b: Something else.
    """


def undocumented(a: int):
    return a


def half_documented(a: int, b: int):
    """Documents only one argument.

    Args:
        a: Something.
    """


@pytest.mark.parametrize("fn, missing", [
    (no_hint, "Argument a is missing a type hint"),
    (undocumented, "it has no docstring"),
    (half_documented, "no description for the argument 'b'"),
])
def test_an_undescribable_function_is_a_one_line_error_naming_it(fn, missing):
    with pytest.raises(ToolError) as err:
        tool_schema(fn)
    message = str(err.value)
    assert message.startswith(f"tool tests.test_tools.{fn.__name__} cannot be described to the model: ")
    assert missing in message and "\n" not in message


def test_public_tools_are_the_public_methods_but_reset_and_get_reward_bound_to_the_environment():
    env = Calculator()
    tools = public_tools(env)
    assert list(tools) == ["multiply", "recall"]
    assert tools["multiply"](a=12, b=34) == 408 and tools["recall"]() == 408 and env.memory == 408
    assert public_tools(Calculator())["recall"]() == 0  # each instance's tools act on that instance


CALL = '<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 34}}\n</tool_call>'


@pytest.mark.parametrize("text, content, calls, malformed", [
    (CALL, "", [ToolCall("multiply", {"a": 12, "b": 34})], []),
    (CALL + '\n<tool_call>\n{"name": "add", "arguments": {"a": 408, "b": 5}}\n</tool_call>', "",
     [ToolCall("multiply", {"a": 12, "b": 34}), ToolCall("add", {"a": 408, "b": 5})], []),
    ("First the product.\n" + CALL + "\nThen the sum.", "First the product.\n\nThen the sum.",
     [ToolCall("multiply", {"a": 12, "b": 34})], []),
    ('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1, \\"b\\": 2}"}</tool_call>', "",
     [ToolCall("add", {"a": 1, "b": 2})], []),
    ('<tool_call>{"name": "recall"}</tool_call>', "", [ToolCall("recall", {})], []),
    ("The answer is 413.", "The answer is 413.", [], []),
])
def test_hermes_reads_calls_and_the_text_around_them(text, content, calls, malformed):
    assert parse_hermes(text) == ParsedTurn(content=content, calls=calls, malformed=malformed)


@pytest.mark.parametrize("body, reason", [
    ('{"name": "add", "arguments": {"a": 1}', "not JSON (Expecting ',' delimiter at character 37)"),
    ('["add", 1]', "JSON list, not an object"),
    ('{"arguments": {"a": 1}}', '"name" is missing or not a string'),
    ('{"name": 7, "arguments": {}}', '"name" is missing or not a string'),
    ('{"name": "add", "arguments": [1, 2]}', '"arguments" is not an object'),
    ('{"name": "add", "arguments": "[1, 2]"}', '"arguments" is not an object'),
    ('{"name": "add", "arguments": "a=1"}', '"arguments" is a string that is not JSON'),
])
def test_hermes_reports_each_bad_block_and_keeps_the_good_ones(body, reason):
    parsed = parse_hermes(f"Trying.\n{CALL}\n<tool_call>{body}</tool_call>")
    assert parsed == ParsedTurn(content="Trying.", calls=[ToolCall("multiply", {"a": 12, "b": 34})],
                                malformed=[f"tool call 2: {reason}"])


def test_hermes_reports_an_unclosed_block_and_drops_its_text():
    assert parse_hermes('Let me see. <tool_call>\n{"name": "add", "arguments": {') == ParsedTurn(
        content="Let me see.", calls=[], malformed=["tool call 1: <tool_call> is never closed by </tool_call>"])


def test_parsers_are_registered_by_format_name():
    assert TOOL_PARSERS == {"hermes": parse_hermes}


def test_tool_tags_are_single_tokens_that_decoding_keeps(tok):
    ids = tok.encode("".join(TOOL_TAGS), add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == TOOL_TAGS
    assert tok.decode(ids, skip_special_tokens=True) == "".join(TOOL_TAGS)


MULTIPLY_JSON = ('{"type": "function", "function": {"name": "multiply", "description": "Multiply two integers.", '
                 '"parameters": {"type": "object", "properties": {"a": {"type": "integer", "description": '
                 '"The first factor."}, "b": {"type": "integer", "description": "The second factor."}}, '
                 '"required": ["a", "b"]}}}')
ADD_JSON = ('{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
            '{"type": "object", "properties": {"a": {"type": "integer", "description": "A number."}, "b": '
            '{"type": "integer", "description": "Another number."}}, "required": ["a", "b"]}}}')
TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
                f"{MULTIPLY_JSON}\n{ADD_JSON}\n</tools>\n\n"
                "For each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n"
                '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')
# Both shapes of a call an assistant message may hold: OpenAI's nested one and a flat one with JSON-string arguments.
CONVERSATION = [
    {"role": "system", "content": "Be exact."},
    {"role": "user", "content": "What are 12*34 and 5+6?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "multiply", "arguments": {"a": 12, "b": 34}}},
        {"name": "add", "arguments": '{"a": 5, "b": 6}'}]},
    {"role": "tool", "content": "408"},
    {"role": "tool", "content": "11"},
    {"role": "assistant", "content": "408 and 11."},
]
RENDERED = (
    "<|im_start|>system\nBe exact.\n\n" + TOOLS_HEADER
    + "<|im_start|>user\nWhat are 12*34 and 5+6?<|im_end|>\n"
    + '<|im_start|>assistant\n<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 34}}\n</tool_call>\n'
    + '<tool_call>\n{"name": "add", "arguments": {"a": 5, "b": 6}}\n</tool_call><|im_end|>\n'
    + "<|im_start|>user\n<tool_response>\n408\n</tool_response>\n<tool_response>\n11\n</tool_response><|im_end|>\n"
)


def render(tok, messages, generation_prompt=False, tools=(multiply, add)):
    schemas = [tool_schema(t) for t in tools] or None
    return tok.apply_chat_template(messages, tools=schemas, tokenize=False, add_generation_prompt=generation_prompt)


def test_template_renders_tools_calls_and_grouped_answers_as_qwen25(tok):
    assert render(tok, CONVERSATION[:5], generation_prompt=True) == RENDERED + "<|im_start|>assistant\n"
    assert render(tok, CONVERSATION) == RENDERED + "<|im_start|>assistant\n408 and 11.<|im_end|>\n"


def test_template_adds_no_default_system_message(tok):
    user = CONVERSATION[1:2]
    assert render(tok, user) == "<|im_start|>system\n" + TOOLS_HEADER + (
        "<|im_start|>user\nWhat are 12*34 and 5+6?<|im_end|>\n")
    assert render(tok, user, tools=()) == "<|im_start|>user\nWhat are 12*34 and 5+6?<|im_end|>\n"


def test_a_rendered_call_is_what_the_model_writes_and_the_parser_reads(tok):
    written = CONVERSATION[2]
    as_text = {"role": "assistant", "content": (
        '<tool_call>\n{"name": "multiply", "arguments": {"a": 12, "b": 34}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 5, "b": 6}}\n</tool_call>')}
    assert render(tok, CONVERSATION[:2] + [written]) == render(tok, CONVERSATION[:2] + [as_text])
    assert parse_hermes(as_text["content"]).calls == [ToolCall("multiply", {"a": 12, "b": 34}),
                                                      ToolCall("add", {"a": 5, "b": 6})]


@pytest.mark.parametrize("tools", [(multiply, add), ()], ids=["tools", "no-tools"])
def test_template_is_prefix_stable_at_turn_boundaries(tok, tools):
    whole = render(tok, CONVERSATION, tools=tools)
    for k in (1, 2, 3, 5, 6):  # after each turn; the two tool answers share one turn
        assert whole.startswith(render(tok, CONVERSATION[:k], tools=tools)), k
    for k in (2, 5):  # before each assistant turn, with its header
        assert whole.startswith(render(tok, CONVERSATION[:k], generation_prompt=True, tools=tools)), k
