"""Reward functions as a TRL user writes them for ``GRPOTrainer(reward_funcs=[...])``: a format reward and an
accuracy reward on conversational data. Nothing here knows about this framework."""

import re

FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.DOTALL)


def format_reward(completions, **kwargs):
    """1.0 when the completion is a think block then an answer block, 0.0 otherwise."""
    contents = [completion[0]["content"] for completion in completions]
    return [1.0 if FORMAT.match(content) else 0.0 for content in contents]


def accuracy_reward(completions, solution, **kwargs):
    """1.0 when the answer block holds the solution's number; None (skip the sample) when the solution is not a
    number, as TRL's own accuracy reward does for a gold answer it cannot parse."""
    rewards, parsed = [], 0
    for completion, sol in zip(completions, solution):
        try:
            gold = float(sol)
        except (TypeError, ValueError):
            rewards.append(None)
            continue
        parsed += 1
        found = re.search(r"<answer>\s*(-?[\d.]+)\s*</answer>", completion[0]["content"])
        rewards.append(1.0 if found and float(found.group(1)) == gold else 0.0)
    kwargs["log_metric"]("gold_parsed", parsed / len(rewards))  # TRL's hook for a scalar metric
    return rewards
