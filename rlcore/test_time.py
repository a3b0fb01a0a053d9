"""Test-time scaling: how well a model does when it may sample N responses per problem.

Pure functions over per-sample results (correctness, extracted answers, verifier scores); no
Ray, vLLM or torch. For one problem with samples ``0 .. n_total - 1``:

* **pass@k**: the chance that at least one of k samples drawn without replacement is correct,
  with the unbiased estimator of Chen et al. 2021, "Evaluating Large Language Models Trained on
  Code" (https://arxiv.org/abs/2107.03374): ``1 - C(n - c, k) / C(n, k)``.
* **maj@k**: self-consistency (Wang et al. 2022, "Self-Consistency Improves Chain of Thought
  Reasoning in Language Models", https://arxiv.org/abs/2203.11171): the most frequent final
  answer among the first k samples, unparseable answers (None) not voting.
* **best-of-N**: the sample a verifier (reward model) scores highest.
* **weighted best-of-N**: verifier-weighted voting, the scores of samples with equal answers
  summed and the answer with the largest sum chosen, as in Li et al. 2023, "Making Large Language
  Models Better Reasoners with Step-Aware Verifier" (https://arxiv.org/abs/2206.02336) and
  Lightman et al. 2023, "Let's Verify Step by Step" (https://arxiv.org/abs/2305.20050).

Grouping of answers: two answers are equal when ``same(a, b)`` is true (by default, string
equality after ``strip``). Each new answer is compared with the representatives of the groups
seen so far, in order, and joins the first that matches; a group's representative is its first
member. Ties between groups go to the group seen first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Same = Callable[[str, str], bool]


def _default_same(a: str, b: str) -> bool:
    """String equality after stripping surrounding whitespace."""
    return a.strip() == b.strip()


def _groups(answers: Sequence[str | None], weights: Sequence[float], same: Same | None) -> list[tuple[int, float]]:
    """Group equal answers; return ``(index of the representative, summed weight)`` per group, in order seen.

    None answers are skipped. Each answer joins the first group whose representative it equals.
    """
    same = same or _default_same
    reps: list[int] = []
    totals: list[float] = []
    for i, (answer, weight) in enumerate(zip(answers, weights, strict=True)):
        if answer is None:
            continue
        for g, rep in enumerate(reps):
            if same(answers[rep], answer):  # type: ignore[arg-type]  # representatives are never None
                totals[g] += weight
                break
        else:
            reps.append(i)
            totals.append(weight)
    return list(zip(reps, totals))


def _winner(answers: Sequence[str | None], weights: Sequence[float], same: Same | None) -> int | None:
    """Index of the representative of the group with the largest summed weight (first on ties), or None."""
    best: tuple[int, float] | None = None
    for rep, total in _groups(answers, weights, same):
        if best is None or total > best[1]:
            best = (rep, total)
    return None if best is None else best[0]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021).

    ``1 - C(n - c, k) / C(n, k)``, computed as ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` to avoid
    huge binomials. It is 1.0 when ``n - c < k``: every draw of k samples holds a correct one.
    """
    if k < 1 or k > n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def majority_answer(answers: Sequence[str | None], same: Same | None = None) -> str | None:
    """Self-consistency vote: the answer given most often (None answers do not vote).

    Returns the representative (first member) of the largest group, the group seen first on ties,
    or None when no sample has an answer.
    """
    rep = _winner(answers, [1.0] * len(answers), same)
    return None if rep is None else answers[rep]


def best_of_n(scores: Sequence[float]) -> int:
    """Index of the highest verifier score; the first one on ties."""
    if not scores:
        raise ValueError("best_of_n needs at least one score")
    best = 0
    for i, score in enumerate(scores):
        if score > scores[best]:
            best = i
    return best


def weighted_answer(answers: Sequence[str | None], scores: Sequence[float], same: Same | None = None) -> str | None:
    """Verifier-weighted vote: the answer whose samples' scores sum highest (None answers excluded).

    Grouping as in ``majority_answer``; returns the group's representative, the group seen first on
    ties, or None when no sample has an answer.
    """
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    rep = _winner(answers, scores, same)
    return None if rep is None else answers[rep]


def scaling_points(max_n: int) -> list[int]:
    """The N values to report: powers of two up to ``max_n``, and ``max_n`` itself if it is not one."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    points = []
    n = 1
    while n <= max_n:
        points.append(n)
        n *= 2
    if points[-1] != max_n:
        points.append(max_n)
    return points


def at_n(correct: Sequence[bool], answers: Sequence[str | None], scores: Sequence[float] | None, n: int,
         same: Same | None = None) -> dict[str, float]:
    """Results for one problem when it may use ``n`` samples.

    * ``pass_at_k``: ``pass_at_k(len(correct), sum(correct), n)``, the unbiased estimate over all samples.
    * ``maj_at_k``: correctness of the majority answer of the first ``n`` samples.
    * ``best_of_n`` and ``weighted_best_of_n`` (only when ``scores`` is given): correctness of the
      highest-scored sample, and of the verifier-weighted answer, among the first ``n`` samples.

    A chosen answer's correctness is that of its group's representative, the first sample among
    the first ``n`` whose answer is in the group (with a consistent ``same``, all members are equally
    correct). A vote with no answer at all counts 0.0.
    """
    total = len(correct)
    if len(answers) != total or (scores is not None and len(scores) != total):
        raise ValueError("correct, answers and scores must have one entry per sample")
    if n < 1 or n > total:
        raise ValueError(f"n must be in 1..{total}, got {n}")
    first = answers[:n]

    def score_of(rep: int | None) -> float:
        return 0.0 if rep is None else float(bool(correct[rep]))

    result = {
        "pass_at_k": pass_at_k(total, sum(bool(x) for x in correct), n),
        "maj_at_k": score_of(_winner(first, [1.0] * n, same)),
    }
    if scores is not None:
        result["best_of_n"] = score_of(best_of_n(scores[:n]))
        result["weighted_best_of_n"] = score_of(_winner(first, scores[:n], same))
    return result


# ---- steps: how a response is cut for process reward models and step-level search ----------------

AGGREGATES = ("min", "last", "mean", "prod")
"""How a PRM's per-step scores become one score for the response."""


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """``text`` cut after every ``delimiter``; each step keeps its delimiter, so ``"".join(steps) == text``.

    A trailing piece without a delimiter is the last step; an empty text has no steps.
    """
    if not delimiter:
        raise ValueError("the step delimiter must not be empty")
    steps, start = [], 0
    while True:
        end = text.find(delimiter, start)
        if end < 0:
            break
        steps.append(text[start:end + len(delimiter)])
        start = end + len(delimiter)
    if start < len(text):
        steps.append(text[start:])
    return steps


def encode_steps(steps: Sequence[str], encode: Callable[[str], list[int]]) -> tuple[list[int], list[int]]:
    """Token ids of the steps, each encoded on its own and concatenated, and the index of each step's last token.

    Encoding the steps one by one (not the joined text) puts every step boundary on a token
    boundary; a PRM is trained and served with the same encoding. Empty steps are not allowed.
    """
    ids, ends = [], []
    for step in steps:
        piece = encode(step)
        if not piece:
            raise ValueError(f"step {step!r} encodes to no tokens")
        ids += piece
        ends.append(len(ids) - 1)
    return ids, ends


def sampled_step_ends(ids: Sequence[int], steps: Sequence[str], decode: Callable[[list[int]], str]) -> list[int]:
    """For each of a response's ``steps`` (its text cut by ``split_steps``), the index in the token ids the policy
    sampled, ``ids``, of the token that completes the step: the first whose decoded prefix (``decode``) holds the
    text of every step up to it. A continuation from ``ids[:end + 1]`` goes on from exactly what the policy wrote;
    where a token straddles a boundary (``"."`` then ``" Write"`` across ``". "``), it goes on after that token.
    A step the ids never complete ends at the last token."""
    ends, low, total = [], 0, 0
    for step in steps:
        total += len(step)
        lo, hi = low, max(len(ids) - 1, low)
        while lo < hi:  # decoded lengths grow with the prefix: the first long enough
            mid = (lo + hi) // 2
            if len(decode(list(ids[:mid + 1]))) >= total:
                hi = mid
            else:
                lo = mid + 1
        ends.append(lo)
        low = lo
    return ends


def aggregate_steps(scores: Sequence[float], how: str = "min") -> float:
    """One response score from its per-step scores (each in [0, 1]): ``min``, ``last``, ``mean`` or ``prod``."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r} is not one of {', '.join(AGGREGATES)}")
    if not scores:
        raise ValueError("no step scores to aggregate")
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "mean":
        return sum(scores) / len(scores)
    product = 1.0
    for s in scores:
        product *= s
    return product


# ---- a generative verifier: the policy's model asked whether the steps so far are right ----------

VERDICT_QUESTION = "\nAre the steps so far right? "
"""What follows the (partial) response in a generative verifier's prompt."""
VERDICTS = ("Yes", "No")
"""The generative verifier's two answers: a right and a wrong (partial) solution."""


def verdict_prompt(prompt: str, response: str, question: str = VERDICT_QUESTION) -> str:
    """A generative verifier's prompt: the rendered prompt, the (partial) response as written, then ``question``.

    Training (``verdict_rows``) and serving (``rewards.generative_verifier``) build it with this one function."""
    return prompt + response + question


def verdict_rows(step_rows: Sequence[dict], question: str = VERDICT_QUESTION) -> list[dict]:
    """SFT rows of a generative verifier (GenRM, Zhang et al. 2024) from Monte-Carlo step rows (``launch.label_steps``):
    one per prefix of each response's steps, ``{"prompt": verdict_prompt(...), "response": "Yes" or "No", "index"}``,
    the answer the prefix's last step's hard label gives. A whole response's is its own correctness, so one model
    serves as the outcome and the process verifier."""
    return [{"prompt": verdict_prompt(row["prompt"], "".join(row["steps"][:k + 1]), question),
             "response": VERDICTS[0] if label else VERDICTS[1], "index": row["index"]}
            for row in step_rows for k, label in enumerate(row["hard_labels"])]


def within_problem_accuracy(scores: Sequence[float], problems: Sequence[int], correct: Sequence[bool]) -> tuple[float, int]:
    """How well a verifier ranks responses to the same problem: the share of (right, wrong) response pairs of one
    problem that it scores right first (a tie counts half), and the number of such pairs.

    This is what best-of-N needs. A verifier that learnt only which problems are hard ranks every
    response to a problem alike: high accuracy on all responses pooled, 0.5 here.
    """
    by_problem: dict[int, list[tuple[float, bool]]] = {}
    for score, problem, ok in zip(scores, problems, correct):
        by_problem.setdefault(problem, []).append((score, bool(ok)))
    won, pairs = 0.0, 0
    for members in by_problem.values():
        for right, ok_r in members:
            for wrong, ok_w in members:
                if ok_r and not ok_w:
                    pairs += 1
                    won += 1.0 if right > wrong else 0.5 if right == wrong else 0.0
    return (won / pairs if pairs else float("nan")), pairs
