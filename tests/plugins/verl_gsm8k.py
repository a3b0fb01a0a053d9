"""A reward file as a verl user writes one for ``custom_reward_function.path``: GSM8K-style, the final answer after
``####``. Nothing here knows about this framework."""

import re

ANSWER = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_solution(solution_str: str) -> str | None:
    """The last ``#### <number>`` of the response, commas dropped; None when there is none."""
    found = ANSWER.findall(solution_str)
    return found[-1].replace(",", "") if found else None


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """1.0 for the right number, ``format_score`` from extra_info (0.1 by default) for a number in the right format,
    0.0 without one; the parsed prediction and whether it was right ride along, as verl's dict results do."""
    if data_source != "openai/gsm8k":
        raise NotImplementedError(f"no reward for data source {data_source}")
    format_score = (extra_info or {}).get("format_score", 0.1)
    pred = extract_solution(solution_str)
    correct = pred is not None and pred == ground_truth
    score = 1.0 if correct else (format_score if pred is not None else 0.0)
    return {"score": score, "acc": correct, "pred": pred or ""}
