"""A user's data transform, written outside the packages (docs/rewards.md)."""

import dataclasses
from dataclasses import dataclass


@dataclass
class InstructionOptions:
    text: str = "Answer with a number."
    """The instruction added to every prompt."""
    where: str = "before"
    """before or after the prompt."""

    def __post_init__(self):
        if self.where not in ("before", "after"):
            raise ValueError(f"where='{self.where}' is not one of before, after")


class Instruction:
    """Adds an instruction to every prompt and records it in the row's metadata."""

    Options = InstructionOptions

    def __init__(self, text: str = "Answer with a number.", where: str = "before"):
        self.text, self.where = text, where

    def __call__(self, rows, seed):
        def prompt(row):
            return f"{self.text} {row.prompt}" if self.where == "before" else f"{row.prompt} {self.text}"

        return [dataclasses.replace(row, prompt=prompt(row), metadata={**row.metadata, "instruction": self.text})
                for row in rows]
