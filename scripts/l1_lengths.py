"""Target against actual length of L1 evaluations: one scatter per run, the mean relative deviation printed.

Each argument is a ``launch.evaluate`` output folder of a greedy evaluation on an L1 preset (its
``eval_samples.jsonl``: every prompt's ``metadata.target_tokens`` and the response's counted tokens), named
``label=folder`` or by the folder alone. The length is the one the preset's ``l1`` term counts: the thinking
tokens (``count: thinking``) or, with ``--count response``, the response's.

    python -m launch.evaluate --config launch/configs/l1_reasoning.yaml model.path=M eval.methods=[greedy] \\
        trainer.output_dir=outputs/l1-eval
    .venv/bin/python scripts/l1_lengths.py "GRPO step 60=outputs/l1-eval" [...] --out docs/img/l1_lengths.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(folder: Path, count: str) -> tuple[list[int], list[int], list[bool]]:
    """``(targets, lengths, correct)`` of the folder's greedy responses."""
    records = [json.loads(line) for line in (folder / "eval_samples.jsonl").read_text().splitlines()]
    if not records or "target_tokens" not in records[0]["metadata"]:
        raise SystemExit(f"{folder}/eval_samples.jsonl: no metadata.target_tokens; evaluate an L1 preset (data "
                         "transform length_target) with eval.methods=[greedy]")
    key = "thinking_tokens" if count == "thinking" else "response_tokens"
    correct = [bool(r["rewards"].get("answer_match", r["rewards"].get("exact_match", 0.0)) >= 1.0) for r in records]
    return [r["metadata"]["target_tokens"] for r in records], [r[key] for r in records], correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="label=folder, or a folder")
    parser.add_argument("--count", choices=("thinking", "response"), default="thinking")
    parser.add_argument("--out", default="l1_lengths.png")
    args = parser.parse_args()

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(args.runs), 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    for i, run in enumerate(args.runs):
        label, _, folder = run.rpartition("=")
        targets, lengths, correct = load(Path(folder), args.count)
        deviation = statistics.mean(abs(t - n) / t for t, n in zip(targets, lengths))
        accuracy = sum(correct) / len(correct)
        name = label or folder
        print(f"{name}: {len(targets)} problems, mean relative deviation {deviation:.1%}, accuracy {accuracy:.2f}")
        ax = fig.add_subplot(1, len(args.runs), i + 1)
        low, high = min(targets + lengths), max(targets + lengths)
        ax.plot([low, high], [low, high], color="grey", linewidth=1, label="actual = target")
        for ok, colour, what in ((True, "C0", "right answer"), (False, "C3", "wrong answer")):
            points = [(t, n) for t, n, c in zip(targets, lengths, correct) if c == ok]
            if points:
                ax.scatter(*zip(*points), s=14, alpha=0.7, color=colour, label=what)
        ax.set_title(f"{name}: deviation {deviation:.1%}, accuracy {accuracy:.2f}", fontsize="medium")
        ax.set_xlabel("target (tokens)")
        ax.set_ylabel(f"actual {args.count} tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.savefig(args.out, dpi=100)
    print(f"plot written to {args.out}")


if __name__ == "__main__":
    main()
