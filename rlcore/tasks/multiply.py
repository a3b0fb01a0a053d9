"""A task that needs a tool: multi-digit multiplication with a ``multiply`` calculator.

The task is meant for a model too small to multiply 347 by 58 in its head
(``rlcore.agent_model``, about a million parameters), which can still learn to
ask: read the question, call the tool in Qwen2.5's hermes format, read the
answer and repeat it. One episode, as the chat template
(``rlcore.tools.QWEN_TOOL_TEMPLATE``, ``tools=[tool_schema(multiply)]``) sees it::

    user       What is 347 times 58?
    assistant  <tool_call>
               {"name": "multiply", "arguments": {"a": 347, "b": 58}}
               </tool_call>
    tool       20126
    assistant  20126

The final answer is the bare product, so ``rewards.arithmetic.exact_match``
checks it unchanged: the rollout scores an episode's last model turn, and an
episode that ends on a tool call, or with any other text, scores 0.0. The GRPO
preset's accuracy term is ``exact_match``.

Rows: RL prompts ``{"prompt": [user message], "answer": product}`` (``prompt_rows``);
cold-start SFT traces ``{"messages": [user, assistant call, tool, assistant answer],
"answer": product}`` (``sft_rows``). The tool is offered either as the function
``multiply`` or by the TRL-contract environment ``MultiplyEnv``; two broken
environments with the same tool schema (``ErrorMultiplyEnv``, ``OffByOneMultiplyEnv``)
check what an evaluation reports when the tool fails or lies. Two rewards read the episode's
messages for those checks: ``follows_tool`` (the final answer is the last tool answer) and
``tool_use`` (logged only: whether the model called the tool, and without an error).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from rlcore.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

QUESTION = "What is {a} times {b}?"


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    # The arguments come from the model's JSON: "347" * 58 would repeat a string, 347.0 * 58 answer "20126.0".
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
        raise TypeError(f"multiply takes two integers, got {a!r} and {b!r}")
    return a * b


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Which problems the task has and how they are split."""

    a_digits: int = 3
    """Digits of the first factor."""
    b_digits: int = 2
    """Digits of the second factor."""
    train_size: int = 5000
    """Problems in the train split (RL prompts and cold-start SFT traces)."""
    test_size: int = 200
    """Problems in the held-out test split; no train problem has the same pair of factors, in either order."""
    seed: int = 0
    """Seed of the problem draw."""


@dataclass(frozen=True, slots=True)
class Multiplication:
    """The problem ``a * b``."""

    a: int
    """The first factor."""
    b: int
    """The second factor."""

    @property
    def answer(self) -> str:
        """The ground truth: the product as decimal text."""
        return str(multiply(self.a, self.b))

    def question(self) -> str:
        """The user message."""
        return QUESTION.format(a=self.a, b=self.b)


def split_problems(spec: TaskSpec = TaskSpec()) -> tuple[list[Multiplication], list[Multiplication]]:
    """``(train, test)``: distinct problems drawn with ``spec.seed``; no unordered pair ``{a, b}`` is in both.

    The test split is drawn first, so it does not change when ``train_size`` does.
    """
    if spec.a_digits < 1 or spec.b_digits < 1:
        raise ValueError(f"a_digits and b_digits must be at least 1, got {spec.a_digits}, {spec.b_digits}")
    pairs = 9 * 10 ** (spec.a_digits - 1) * 9 * 10 ** (spec.b_digits - 1)
    if spec.train_size + spec.test_size > pairs // 4:  # far from exhausting the pairs, so drawing ends soon
        raise ValueError(f"{spec.train_size + spec.test_size} problems asked of {pairs} possible pairs: raise "
                         "a_digits or b_digits, or lower train_size/test_size")
    rng = random.Random(spec.seed)
    seen: set[tuple[int, int]] = set()
    picked: list[Multiplication] = []
    while len(picked) < spec.test_size + spec.train_size:
        p = Multiplication(rng.randint(10 ** (spec.a_digits - 1), 10**spec.a_digits - 1),
                           rng.randint(10 ** (spec.b_digits - 1), 10**spec.b_digits - 1))
        key = (min(p.a, p.b), max(p.a, p.b))
        if key not in seen:
            seen.add(key)
            picked.append(p)
    return picked[spec.test_size:], picked[:spec.test_size]


def tool_call_text(problem: Multiplication) -> str:
    """The assistant's call of ``multiply`` on the problem's factors, in hermes format."""
    call = {"name": multiply.__name__, "arguments": {"a": problem.a, "b": problem.b}}
    return f"{TOOL_CALL_OPEN}\n{json.dumps(call)}\n{TOOL_CALL_CLOSE}"


def prompt_rows(problems: list[Multiplication]) -> list[dict]:
    """RL prompt rows: a one-message chat prompt and the product under ``answer``."""
    return [{"prompt": [{"role": "user", "content": p.question()}], "answer": p.answer} for p in problems]


def sft_rows(problems: list[Multiplication]) -> list[dict]:
    """Cold-start SFT traces: the question, the tool call, the tool's answer, and the product as the final answer."""
    return [{"messages": [{"role": "user", "content": p.question()},
                          {"role": "assistant", "content": tool_call_text(p)},
                          {"role": "tool", "content": p.answer},
                          {"role": "assistant", "content": p.answer}],
             "answer": p.answer} for p in problems]


def tool_answers(messages: list[dict] | None) -> list[str]:
    """The contents of an episode's ``tool`` messages, in order (none for a response without an episode)."""
    return [m["content"] for m in messages or [] if m["role"] == "tool"]


def follows_tool(prompt: str, response: str, ground_truth: str, messages: list[dict] | None = None) -> float:
    """1.0 when the final answer repeats the episode's last tool answer, right or wrong; 0.0 otherwise.

    With ``OffByOneMultiplyEnv`` it tells a model that trusts its calculator (it answers the product plus one)
    from one that knows the products; ``exact_match`` then scores the trusting model 0.0.
    """
    answers = tool_answers(messages)
    return float(bool(answers) and response.strip() == answers[-1].strip())


def tool_use(prompt: str, response: str, ground_truth: str, messages: list[dict] | None = None) -> dict[str, float]:
    """What an episode did with its tools, logged only (its value is 0.0): ``called``, 1.0 when the model called a
    tool (an answer came back); ``valid``, 1.0 when it called one and no answer was an error (``{'error': ...}``,
    TRL's form: a tool that raised, an unknown tool, bad arguments, a malformed call). Greedy evaluation reports
    their means as ``<term>/called`` and ``<term>/valid``.
    """
    answers = tool_answers(messages)
    valid = bool(answers) and not any(a.startswith("{'error'") for a in answers)
    return {"_called": float(bool(answers)), "_valid": float(valid)}


class MultiplyEnv:
    """The task's environment in TRL's ``environment_factory`` contract: one tool, ``multiply``, and no state.

    Its tool has the schema of the function ``multiply``, so the prompts it
    renders match the SFT traces'. Subclasses change only ``_calculate``: the
    model sees the same tool and cannot tell a broken one from the right one.
    """

    def reset(self, **row) -> None:
        """Start an episode; there is nothing to set up."""

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers.

        Args:
            a: The first factor.
            b: The second factor.
        """
        return self._calculate(a, b)

    def _calculate(self, a: int, b: int) -> int:
        return multiply(a, b)


class ErrorMultiplyEnv(MultiplyEnv):
    """A calculator that always fails: every call raises ``RuntimeError("the calculator is offline")``."""

    def _calculate(self, a: int, b: int) -> int:
        raise RuntimeError("the calculator is offline")


class OffByOneMultiplyEnv(MultiplyEnv):
    """A calculator that lies: every answer is one more than the product."""

    def _calculate(self, a: int, b: int) -> int:
        return multiply(a, b) + 1
