"""A task that needs written reasoning: multi-digit addition with a column-by-column scratchpad.

The arithmetic task (``rlcore.tasks.arithmetic``) is answered in two or three
tokens, so there is nothing to think about. Here the question is put in words
and the worked solution adds the numbers column by column from the right, the
way it is taught at school, in DeepSeek-R1's response format::

    What is 345 + 678? Think in <think> </think>, answer in <answer> </answer>.
    <think>5+8=13, write 3 carry 1. 4+7+1=12, write 2 carry 1. 3+6+1=10, write 0 carry 1. Write 1.</think><answer>1023</answer>

The scratchpad is deterministic and comes at several verbosity levels (see
``LEVELS``), from the column sums alone to every step with the digits written
so far, so that the same problem can be thought through in tens of tokens more
or less: L1 length-control rows (``l1_sft_rows``) pick a level and state its
real token count in the prompt ("Think for N tokens.").

Rows are written verl-style: RL prompts are chat message lists with the answer
under ``reward_model.ground_truth``; cold-start SFT rows are ``{"messages":
[user, assistant], "answer": ...}``. The reward is ``rewards.reasoning.answer_match``,
which compares with :func:`same_answer`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

QUESTION = "What is {a} + {b}?"
INSTRUCTION = "Think in <think> </think>, answer in <answer> </answer>."
LENGTH_SUFFIX = "Think for {n} tokens."
"""L1's instruction; the same text as ``rewards.l1.EXACT_SUFFIX`` (rlcore may not import ``rewards``)."""

LEVELS = ("terse", "write", "carry", "so_far", "check")
"""Scratchpad verbosity, shortest first; each level adds to the one before it:

* ``terse``: the column sums, ``5+8=13. 4+7+1=12.``
* ``write``: the digit each column writes, ``5+8=13, write 3.``
* ``carry``: the carry it passes on, ``5+8=13, write 3 carry 1.``
* ``so_far``: the answer's digits written so far, ``5+8=13, write 3 carry 1, so far 3.``
* ``check``: a closing line restating the sum, ``So 345+678=1023.``
"""
DEFAULT_LEVEL = "carry"
"""The level of the cold-start SFT rows."""
CHECK = LEVELS.index("check")
"""The rank of ``check``, the one level that is not a column's (``mixed_scratchpad``)."""
TEACHER_CARRY_RATE = 0.35
"""How often the imperfect cold-start teacher (``teacher_solution``) adds the ones column's carry into the tens."""


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Which problems the task has and how they are split."""

    min_digits: int = 2
    """Fewest digits of each operand."""
    max_digits: int = 3
    """Most digits of each operand; the two operands' lengths are drawn independently."""
    train_size: int = 5000
    """Problems in the train split (RL prompts and cold-start SFT rows)."""
    test_size: int = 200
    """Problems in the held-out test split; no train problem has the same pair of operands, in either order."""
    seed: int = 0
    """Seed of the problem draw."""


@dataclass(frozen=True, slots=True)
class Addition:
    """The problem ``a + b``."""

    a: int
    b: int

    @property
    def answer(self) -> str:
        """The ground truth, as decimal text."""
        return str(self.a + self.b)

    def question(self, length_target: int | None = None) -> str:
        """The user message: the question in words, the format instruction and, for L1, the length target."""
        text = QUESTION.format(a=self.a, b=self.b) + " " + INSTRUCTION
        return text if length_target is None else text + " " + LENGTH_SUFFIX.format(n=length_target)


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the written addition, least significant first."""

    x: int
    """Digit of the first operand (0 past its length)."""
    y: int
    """Digit of the second operand (0 past its length)."""
    carry_in: int
    """Carry from the column to the right (0 or 1)."""

    @property
    def total(self) -> int:
        """``x + y + carry_in``."""
        return self.x + self.y + self.carry_in


def _draw(rng: random.Random, spec: TaskSpec) -> Addition:
    """One problem, each operand's length drawn uniformly from ``[min_digits, max_digits]``."""
    def operand() -> int:
        digits = rng.randint(spec.min_digits, spec.max_digits)
        return rng.randint(10 ** (digits - 1), 10**digits - 1)
    return Addition(operand(), operand())


def split_problems(spec: TaskSpec = TaskSpec()) -> tuple[list[Addition], list[Addition]]:
    """``(train, test)``: distinct problems drawn with ``spec.seed``; no unordered pair ``{a, b}`` is in both.

    The test split is drawn first, so it does not change when ``train_size`` does.
    """
    if not 1 <= spec.min_digits <= spec.max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits, got {spec.min_digits}, {spec.max_digits}")
    operands = 10**spec.max_digits - 10 ** (spec.min_digits - 1)
    if spec.train_size + spec.test_size > operands**2 // 4:  # far from exhausting the pairs, so drawing ends soon
        raise ValueError(f"{spec.train_size + spec.test_size} problems asked of {operands} possible operands: "
                         "raise max_digits or lower train_size/test_size")
    rng = random.Random(spec.seed)
    seen: set[tuple[int, int]] = set()
    picked: list[Addition] = []
    while len(picked) < spec.test_size + spec.train_size:
        p = _draw(rng, spec)
        key = (min(p.a, p.b), max(p.a, p.b))
        if key not in seen:
            seen.add(key)
            picked.append(p)
    return picked[spec.test_size:], picked[:spec.test_size]


def columns(a: int, b: int, slip: int | None = None) -> list[Column]:
    """The columns of ``a + b``, ones first, as many as the longer operand has digits. ``slip``: the index of a
    column whose carry-in is forgotten (an imperfect teacher's mistake); the columns after it follow from the
    wrong sum."""
    out, carry = [], 0
    for i in range(max(len(str(a)), len(str(b)))):
        col = Column(a // 10**i % 10, b // 10**i % 10, 0 if i == slip else carry)
        out.append(col)
        carry = col.total // 10
    return out


def written(cols: list[Column]) -> str:
    """The sum the columns write: their digits, and a leading 1 when the last one carries."""
    digits = "".join(str(col.total % 10) for col in reversed(cols))
    return ("1" if cols[-1].total >= 10 else "") + digits


def scratchpad(problem: Addition, level: str = DEFAULT_LEVEL, slip: int | None = None) -> str:
    """The worked solution's thinking at verbosity ``level`` (one of ``LEVELS``), without the tags; ``slip`` as in
    ``columns``."""
    rank = LEVELS.index(level)
    cols = columns(problem.a, problem.b, slip)
    return mixed_scratchpad(problem, [LEVELS[min(rank, CHECK - 1)]] * len(cols), rank >= CHECK, slip)


def mixed_scratchpad(problem: Addition, levels: Sequence[str], check: bool, slip: int | None = None) -> str:
    """The thinking with its own verbosity per column (``levels[i]`` for the i-th column from the right, each one
    of ``LEVELS`` but ``check``), and the closing ``check`` line or not: lengths between the levels'."""
    cols = columns(problem.a, problem.b, slip)
    ranks = [LEVELS.index(level) for level in levels]
    if len(ranks) != len(cols) or max(ranks) >= CHECK:
        raise ValueError(f"{len(cols)} column levels from {LEVELS[:CHECK]} needed, got {list(levels)}")
    steps, so_far = [], ""
    for col, rank in zip(cols, ranks):
        step = f"{col.x}+{col.y}" + ("+1" if col.carry_in else "") + f"={col.total}"
        so_far = str(col.total % 10) + so_far
        if rank >= LEVELS.index("write"):
            step += f", write {col.total % 10}"
        if rank >= LEVELS.index("carry") and col.total >= 10:
            step += " carry 1"
        if rank >= LEVELS.index("so_far"):
            step += f", so far {so_far}"
        steps.append(step + ".")
    last = ranks[-1]
    if last >= LEVELS.index("write") and cols[-1].total >= 10:  # the last carry is a new digit
        steps.append("Write 1." if last < LEVELS.index("so_far") else f"Write 1, so far 1{so_far}.")
    if check:
        steps.append(f"So {problem.a}+{problem.b}={written(cols)}.")
    return " ".join(steps)


def solution(problem: Addition, level: str = DEFAULT_LEVEL, slip: int | None = None) -> str:
    """The assistant's whole response: ``<think>scratchpad</think><answer>sum</answer>``; with a ``slip``, the
    wrong sum it leads to."""
    return response(scratchpad(problem, level, slip), written(columns(problem.a, problem.b, slip)))


def response(thinking: str, answer: str) -> str:
    """DeepSeek-R1's response format: ``<think>thinking</think><answer>answer</answer>``."""
    return f"<think>{thinking}</think><answer>{answer}</answer>"


def rl_rows(problems: list[Addition]) -> list[dict]:
    """RL prompt rows, verl-style: a one-message chat prompt, the answer under ``reward_model.ground_truth``.

    Presets read them with ``data.answer_key=reward_model.ground_truth``.
    """
    return [{"prompt": [{"role": "user", "content": p.question()}], "data_source": "reasoning-addition",
             "reward_model": {"ground_truth": p.answer}} for p in problems]


def sft_rows(problems: list[Addition], level: str = DEFAULT_LEVEL) -> list[dict]:
    """Cold-start SFT rows: ``{"messages": [user, assistant], "answer": ...}`` with the worked solution."""
    return [{"messages": [{"role": "user", "content": p.question()},
                          {"role": "assistant", "content": solution(p, level)}],
             "answer": p.answer} for p in problems]


def teacher_solution(problem: Addition, rng: random.Random, carry_rate: float = TEACHER_CARRY_RATE) -> str:
    """The worked solution of an imperfect teacher, as cold-start traces written by a weaker model are: right,
    except that where the ones column carries (345 + 678: 5+8=13) it adds that carry into the tens column only
    with probability ``carry_rate``; otherwise it forgets it (4+7=11 instead of 4+7+1=12) and carries on from the
    wrong sum, to a wrong answer (1013).

    A model that imitates it converges to its behaviour: greedy decoding forgets that carry every time (its
    probability is ``carry_rate`` < 0.5), so the SFT stage ends near the share of problems without it, whatever
    the CPU's rounding, while sampling adds it often enough for GRPO, rewarded by the verifier, to learn it.
    ``rng`` draws the slips.
    """
    first = columns(problem.a, problem.b)[0]
    slip = first.total >= 10 and len(str(max(problem.a, problem.b))) > 1 and rng.random() >= carry_rate
    return solution(problem, slip=1 if slip else None)


def teacher_sft_rows(problems: list[Addition], seed: int = 0) -> list[dict]:
    """Cold-start SFT rows whose solutions are ``teacher_solution``'s; ``answer`` is still the true sum."""
    rng = random.Random(seed)
    return [{"messages": [{"role": "user", "content": p.question()},
                          {"role": "assistant", "content": teacher_solution(p, rng)}],
             "answer": p.answer} for p in problems]


def l1_sft_rows(problems: list[Addition], count_tokens: Callable[[str], int], seed: int = 0,
                mixed: bool = False) -> list[dict]:
    """L1 length-control SFT rows: a random verbosity level per problem, its thinking length in the prompt.

    The user message ends with "Think for N tokens." where N is
    ``count_tokens(scratchpad)``, the number of tokens between ``<think>`` and
    ``</think>`` of the assistant's answer, so the instruction is honest. N is
    also stored as ``target_tokens``, as L1's ``length_target`` transform does.

    ``mixed``: a random level per column and the closing check line or not (``mixed_scratchpad``), so that the
    lengths fill the range between the five levels' (a problem has a handful of lengths otherwise, and a target
    between two of them is always missed).
    """
    rng = random.Random(seed)
    rows = []
    for p in problems:
        if mixed:
            levels = [rng.choice(LEVELS[:CHECK]) for _ in columns(p.a, p.b)]
            check = rng.random() < 0.5
            level, thinking = "mixed", mixed_scratchpad(p, levels, check)
        else:
            level = rng.choice(LEVELS)
            thinking = scratchpad(p, level)
        n = count_tokens(thinking)
        rows.append({"messages": [{"role": "user", "content": p.question(length_target=n)},
                                  {"role": "assistant", "content": response(thinking, p.answer)}],
                     "answer": p.answer, "target_tokens": n, "level": level})
    return rows


_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def same_answer(answer: str, ground_truth: str) -> bool:
    """Whether an extracted answer equals the ground truth: by value if both are plain decimals, else as stripped text.

    Numbers compare exactly by value, so ``"045"``, ``"45.0"`` and ``"+45"``
    equal ``"45"``; anything else (``"4 5"``, ``"45 apples"``, ``"4_5"``) is
    compared as text after stripping surrounding whitespace.
    """
    a, b = answer.strip(), ground_truth.strip()
    if _NUMBER.fullmatch(a) and _NUMBER.fullmatch(b):
        return Decimal(a) == Decimal(b)
    return a == b
