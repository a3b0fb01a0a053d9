"""Test-time scaling metrics (rlcore.test_time), against hand-computed numbers."""

import math

import pytest

from rlcore.test_time import at_n, best_of_n, majority_answer, pass_at_k, scaling_points, weighted_answer


def numeric_same(a: str, b: str) -> bool:
    return int(a) == int(b)


# --- pass@k ------------------------------------------------------------------------------------


def test_pass_at_k_hand_computed():
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(10, 0, 3) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0  # n - c = 1 < k: every pair holds a correct sample
    assert pass_at_k(10, 1, 1) == pytest.approx(0.1)
    assert pass_at_k(6, 2, 3) == pytest.approx(0.8)  # 1 - C(4,3)/C(6,3) = 1 - 4/20
    assert pass_at_k(7, 7, 7) == 1.0


def test_pass_at_k_matches_binomials():
    for n in range(1, 13):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


@pytest.mark.parametrize("n, c, k", [(5, 2, 0), (5, 2, -1), (5, 2, 6), (5, -1, 2), (5, 6, 2), (0, 0, 1)])
def test_pass_at_k_rejects_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# --- majority vote -----------------------------------------------------------------------------


def test_majority_ignores_none_and_strips():
    assert majority_answer(["3", None, None, None, " 4", "4 ", "3", "4"]) == " 4"  # representative: first seen
    assert majority_answer([None, None]) is None
    assert majority_answer([]) is None
    assert majority_answer([None, "x"]) == "x"


def test_majority_ties_go_to_the_group_seen_first():
    assert majority_answer(["b", "a", "a", "b"]) == "b"
    assert majority_answer(["a", "b", "c"]) == "a"
    assert majority_answer([None, "c", "b", "b", "c"]) == "c"


def test_majority_with_custom_same():
    answers = ["045", "7", "45", "007", "7"]
    assert majority_answer(answers) == "7"  # strings: "7" x2 beats the rest
    assert majority_answer(answers, same=numeric_same) == "7"  # 7 x3 against 45 x2
    assert majority_answer(answers[:4], same=numeric_same) == "045"  # 45 x2 against 7 x2: first group
    assert majority_answer(["045", "7", "45"], same=numeric_same) == "045"


# --- best-of-N and weighted vote ---------------------------------------------------------------


def test_best_of_n():
    assert best_of_n([0.1, 0.7, 0.3]) == 1
    assert best_of_n([0.5, 0.9, 0.2, 0.9]) == 1  # first on ties
    assert best_of_n([-2.0, -1.0, -1.0]) == 1
    assert best_of_n([0.0]) == 0
    with pytest.raises(ValueError):
        best_of_n([])


def test_weighted_answer_differs_from_majority():
    answers = ["a", "a", "a", "b", "b"]
    scores = [0.1, 0.1, 0.1, 0.9, 0.9]
    assert majority_answer(answers) == "a"
    assert weighted_answer(answers, scores) == "b"  # 0.3 vs 1.8


def test_weighted_answer_none_ties_and_same():
    assert weighted_answer([None, "a", "b"], [100.0, 0.2, 0.3]) == "b"  # None does not vote
    assert weighted_answer(["a", "b", "b"], [1.0, 0.5, 0.5]) == "a"  # tie at 1.0: first group
    assert weighted_answer(["045", "7", "45"], [0.4, 0.6, 0.3], same=numeric_same) == "045"  # 0.7 vs 0.6
    assert weighted_answer(["045", "7", "45"], [0.4, 0.6, 0.3]) == "7"
    assert weighted_answer([None], [1.0]) is None
    with pytest.raises(ValueError):
        weighted_answer(["a"], [0.1, 0.2])


# --- scaling points ----------------------------------------------------------------------------


@pytest.mark.parametrize("max_n, expected", [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (6, [1, 2, 4, 6]),
                                             (8, [1, 2, 4, 8]), (9, [1, 2, 4, 8, 9]),
                                             (64, [1, 2, 4, 8, 16, 32, 64])])
def test_scaling_points(max_n, expected):
    assert scaling_points(max_n) == expected


def test_scaling_points_rejects_zero():
    with pytest.raises(ValueError):
        scaling_points(0)


# --- one problem at N --------------------------------------------------------------------------

# Six samples; the right answer is 7. Votes in the first five: "5" x3, "7" x2, but the verifier likes
# the 7s (0.9 + 0.8 = 1.7 against 0.95 + 0.1 + 0.1 = 1.15) while its single best score is a wrong 5.
CORRECT = [False, True, False, True, False, False]
ANSWERS = ["5", "7", "5", "7", "5", "9"]
SCORES = [0.95, 0.9, 0.1, 0.8, 0.1, 0.99]


def test_at_n_each_metric():
    assert at_n(CORRECT, ANSWERS, SCORES, 5) == {"pass_at_k": 1.0, "maj_at_k": 0.0, "best_of_n": 0.0,
                                                  "weighted_best_of_n": 1.0}
    result = at_n(CORRECT, ANSWERS, SCORES, 3)  # "5" x2 vs "7"; weighted 1.05 vs 0.9
    assert result == pytest.approx({"pass_at_k": 0.8, "maj_at_k": 0.0, "best_of_n": 0.0,
                                    "weighted_best_of_n": 0.0})
    result = at_n(CORRECT, ANSWERS, SCORES, 2)  # vote tie: "5" seen first; pass@2 = 1 - C(4,2)/C(6,2) = 0.6
    assert result == pytest.approx({"pass_at_k": 0.6, "maj_at_k": 0.0, "best_of_n": 0.0,
                                    "weighted_best_of_n": 0.0})
    assert at_n(CORRECT, ANSWERS, SCORES, 1)["pass_at_k"] == pytest.approx(1 / 3)


def test_at_n_majority_right_verifier_wrong():
    correct = [True, True, False, True]
    answers = ["7", "7", "3", "7"]
    scores = [0.1, 0.2, 0.9, 0.3]  # "3" alone 0.9 beats the 7s' 0.6
    assert at_n(correct, answers, scores, 4) == {"pass_at_k": 1.0, "maj_at_k": 1.0, "best_of_n": 0.0,
                                                  "weighted_best_of_n": 0.0}


def test_at_n_without_scores_and_with_none_answers():
    correct = [False, True, False, False]
    answers = [None, "3", None, "4"]
    assert at_n(correct, answers, None, 2) == pytest.approx({"pass_at_k": 0.5, "maj_at_k": 1.0})
    assert at_n(correct, answers, None, 4)["maj_at_k"] == 1.0  # tie "3" vs "4": "3" seen first
    swapped = at_n([False, False, False, True], [None, "4", None, "3"], None, 4)  # now the wrong "4" is seen first
    assert swapped["maj_at_k"] == 0.0
    assert at_n(correct, [None] * 4, None, 4)["maj_at_k"] == 0.0  # no answer at all counts 0


def test_at_n_correctness_is_the_representatives():
    # "045" and "45" group together under numeric_same; the group's correctness is that of its
    # first member among the first n samples.
    correct = [False, True, False]
    answers = ["045", "45", "9"]
    assert at_n(correct, answers, None, 3, same=numeric_same)["maj_at_k"] == 0.0
    assert at_n(correct[1:], answers[1:], None, 2, same=numeric_same)["maj_at_k"] == 1.0


def test_at_n_rejects_bad_arguments():
    with pytest.raises(ValueError):
        at_n([True, False], ["1"], None, 1)
    with pytest.raises(ValueError):
        at_n([True, False], ["1", "2"], [0.5], 1)
    with pytest.raises(ValueError):
        at_n([True, False], ["1", "2"], None, 3)
    with pytest.raises(ValueError):
        at_n([True, False], ["1", "2"], None, 0)


def test_within_problem_accuracy_ranks_only_responses_to_the_same_problem():
    from rlcore.test_time import within_problem_accuracy

    # problem 0: right 0.9 vs wrong 0.2 (won), right 0.1 vs wrong 0.2 (lost); problem 1: a tie (half)
    scores, problems, correct = [0.9, 0.2, 0.1, 0.5, 0.5], [0, 0, 0, 1, 1], [True, False, True, True, False]
    assert within_problem_accuracy(scores, problems, correct) == (pytest.approx(1.5 / 3), 3)
    # a verifier that only knows which problem is easy: pooled it separates right from wrong, within it cannot
    easy_hard = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]
    assert within_problem_accuracy(easy_hard, [0, 0, 0, 1, 1, 1], [True, True, False, True, False, False])[0] == 0.5
    assert within_problem_accuracy([0.3, 0.4], [0, 1], [True, False])[1] == 0  # no pair within a problem


# ---- Monte-Carlo step labels continue from the sampled tokens (launch.label_steps) -----------------------------
SAMPLED = "<think>5+8=13. Write 3, carry 1. 1+4+7=12.</think><answer>123</answer>"


@pytest.fixture(scope="module")
def reasoning_tokenizer(cache_dir):
    from transformers import AutoTokenizer

    from rlcore.assets import resolve

    return AutoTokenizer.from_pretrained(resolve("local://tiny-qwen2-reason", cache_dir, "model.path"))


def test_sampled_step_ends_find_the_token_completing_each_step(reasoning_tokenizer):
    from rlcore.test_time import sampled_step_ends, split_steps

    tok = reasoning_tokenizer
    ids = tok.encode(SAMPLED, add_special_tokens=False) + [tok.eos_token_id]
    steps = split_steps(SAMPLED, ". ")
    ends = sampled_step_ends(ids, steps, lambda x: tok.decode(x, skip_special_tokens=True))
    assert ends == sorted(ends) and ends[-1] <= len(ids) - 1
    for s, end in enumerate(ends):
        text = "".join(steps[:s + 1])
        assert tok.decode(ids[:end + 1], skip_special_tokens=True).startswith(text)
        assert len(tok.decode(ids[:end], skip_special_tokens=True)) < len(text)  # the first token that does
    assert tok.decode(ids[ends[0]:ends[0] + 1]) == " Write"  # it straddles ". " | "Write": the step ends after it


def test_step_labels_continue_from_the_policy_sampled_ids_not_the_steps_re_encoded(reasoning_tokenizer):
    """Re-encoding "... 13. " and "Write ..." one by one gives ids the policy never wrote ("." " " "Write" against its
    "." " Write"): every Monte-Carlo continuation must start from a prefix of the sampled ids."""
    from types import SimpleNamespace

    from launch.label_steps import label
    from rlcore.config import load_config
    from rlcore.test_time import encode_steps, split_steps

    tok = reasoning_tokenizer
    sampled = tok.encode(SAMPLED, add_special_tokens=False) + [tok.eos_token_id]
    reencoded, _ = encode_steps(split_steps(SAMPLED, ". "), lambda s: tok.encode(s, add_special_tokens=False))
    assert reencoded != sampled[:len(reencoded)]  # the defect this guards against is real for this tokenizer
    prompt = [7, 8, 9]
    asked = []

    class Rollout:
        def generate(self, rows, n, seed):
            return SimpleNamespace(responses=[SAMPLED] * n, response_ids=[list(sampled)] * n)

        def complete(self, requests, seed):
            asked.extend(requests)
            return [[SimpleNamespace(token_ids=[5], text="5")] * r.n for r in requests]

    evaluation = SimpleNamespace(tokenizer=tok, rollout=Rollout(), prompt_ids=[prompt],
                                 correct=lambda batch: [True] * len(batch.responses) if hasattr(batch, "responses")
                                 else [True] * len(batch),
                                 batch=lambda problems, ids, texts: SimpleNamespace(responses=texts, ids=ids))
    cfg = load_config(None, ["label.samples=1", "label.completions=2", "eval.step_delimiter='. '"])
    rows = [SimpleNamespace(prompt="p", answer="123", index=0)]
    step_rows, _ = label(evaluation, cfg, rows)
    assert len(asked) == 2  # the two steps before the last
    for request in asked:
        continued = request.prompt_ids[len(prompt):]
        assert request.prompt_ids[:len(prompt)] == prompt and continued == sampled[:len(continued)]
    assert step_rows[0]["steps"] == split_steps(SAMPLED, ". ") and step_rows[0]["soft_labels"] == [1.0, 1.0, 1.0]
