"""A synthetic arithmetic task: prompts like ``"17+28="`` whose answer is ``"45"``.

The built-in task lets the whole pipeline run without a dataset hub. Rows are
written as JSONL with the fields the data loader expects (``prompt``,
``answer``), so the task is also an example of the dataset format. Every
problem ``a+b`` with operands in ``[0, max_operand]`` is enumerated once and
split into disjoint train and test sets, so the test accuracy is held out.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

# Every character a prompt or answer of this task can contain.
ALPHABET = "0123456789+-*= "


@dataclass(frozen=True, slots=True)
class Problem:
    prompt: str
    answer: str


def split_problems(max_operand: int = 30, test_size: int = 200, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """All ``a+b`` problems with operands in ``[0, max_operand]``, shuffled and split into (train, test)."""
    problems = [Problem(f"{a}+{b}=", str(a + b)) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed).shuffle(problems)
    if not 0 < test_size < len(problems):
        raise ValueError(f"test_size={test_size} must be between 1 and {len(problems) - 1}")
    return problems[test_size:], problems[:test_size]


def preference_rows(problems: list[Problem], seed: int = 0) -> list[dict[str, str]]:
    """Offline DPO pairs: the right answer is chosen, a near miss (off by 1, 2 or 10) rejected."""
    rng = random.Random(seed)
    rows = []
    for p in problems:
        wrong = int(p.answer) + rng.choice((-10, -2, -1, 1, 2, 10))
        wrong = wrong if wrong >= 0 else int(p.answer) + 1
        rows.append({"prompt": p.prompt, "chosen": p.answer, "rejected": str(wrong)})
    return rows


def write_jsonl(problems: list[Problem] | list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for p in problems:
            row = p if isinstance(p, dict) else {"prompt": p.prompt, "answer": p.answer}
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path
