"""Step-level search, budget forcing and Monte-Carlo step labels, with a fake policy and a fake PRM."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlcore.search import Node, Piece, TreeNode, force_budget, keep_best, mcts, select_leaf, spent, tree_search
from rlcore.test_time import aggregate_steps, encode_steps, split_steps


class FakePolicy:
    """Steps are ``"g."`` (good) or ``"b."`` (bad), one token per character; a response ends after ``depth`` steps.

    The i-th continuation ever made of a node is good when ``(i + node.steps + node.problem) % good_every == 0``,
    so good steps are rare and a search must find them. Every call is recorded.
    """

    def __init__(self, depth: int = 3, good_every: int = 3):
        self.depth, self.good_every, self.calls, self.made = depth, good_every, [], {}

    def __call__(self, nodes: list[Node], n: int, last: bool) -> list[list[Piece]]:
        self.calls.append((len(nodes), n, last))
        out = []
        for node in nodes:
            pieces, made = [], self.made.get((node.problem, node.text), 0)
            self.made[(node.problem, node.text)] = made + n
            for i in range(made, made + n):
                remaining = self.depth - node.steps if last else 1
                text = "".join("g." if (i + node.steps + node.problem + j) % self.good_every == 0 else "b."
                               for j in range(remaining))
                pieces.append(Piece([ord(ch) for ch in text], text, node.steps + remaining >= self.depth))
            out.append(pieces)
        return out


def fake_prm(nodes: list[Node]) -> list[float]:
    """The share of good steps so far: a process reward that prefers good partial solutions."""
    return [node.text.count("g") / max(node.text.count("."), 1) for node in nodes]


def test_keep_best_keeps_the_top_width_of_each_problem_and_subtree_in_order():
    nodes = [Node(0, 0, score=0.1), Node(0, 0, score=0.9), Node(0, 1, score=0.5), Node(1, 0, score=0.3),
             Node(0, 0, score=0.9), Node(0, 0, score=0.7)]
    kept = keep_best(nodes, 2)
    assert kept == [nodes[1], nodes[2], nodes[3], nodes[4]]  # ties keep the earlier; each (problem, tree) apart
    assert keep_best(nodes, 1) == [nodes[1], nodes[2], nodes[3]]


def test_beam_search_follows_the_prm_to_the_all_good_path_and_counts_every_token():
    policy = FakePolicy(depth=3, good_every=3)
    result = tree_search(problems=2, trees=1, width=2, expansions=3, max_steps=5, expand=policy, score=fake_prm)
    assert [node.text for node in result.best] == ["g.g.g.", "g.g.g."]
    assert all(node.done and node.score == 1.0 for node in result.best)
    # round 0: width × expansions from the root; then each of the 2 kept beams is continued 3 times
    assert policy.calls == [(2, 6, False), (4, 3, False), (4, 3, False)]
    assert result.tokens == [(6 + 6 + 6) * 2] * 2  # 18 pieces of 2 tokens per problem


def test_random_choice_would_not_find_the_good_path():
    """The same fake policy, the PRM replaced by one that prefers bad steps: the search then ends on them."""
    result = tree_search(1, 1, 2, 3, 5, FakePolicy(3, 3), lambda nodes: [1 - s for s in fake_prm(nodes)])
    assert result.best[0].text == "b.b.b."


def test_dvts_keeps_one_beam_per_subtree():
    policy = FakePolicy(depth=3, good_every=2)
    result = tree_search(problems=1, trees=4, width=1, expansions=2, max_steps=5, expand=policy, score=fake_prm)
    assert policy.calls == [(4, 2, False), (4, 2, False), (4, 2, False)]  # 4 subtrees × 2 candidates per round
    assert result.best[0].score == 1.0


def test_the_last_round_finishes_every_open_beam():
    policy = FakePolicy(depth=10, good_every=2)
    result = tree_search(problems=1, trees=1, width=1, expansions=2, max_steps=2, expand=policy, score=fake_prm)
    assert policy.calls == [(1, 2, False), (1, 2, True)]
    assert result.best[0].done and result.best[0].text.count(".") == 10


def test_mcts_finds_the_good_path_and_backs_values_up():
    policy = FakePolicy(depth=3, good_every=2)
    result = mcts(problems=1, simulations=30, expansions=2, max_steps=5, c=0.5, expand=policy, score=fake_prm)
    assert result.best[0].text == "g.g.g."
    assert sum(result.tokens) == 2 * sum(n for n, _, _ in policy.calls)  # one piece of 2 tokens per request


def test_mcts_selection_and_backup_bookkeeping():
    root = TreeNode(Node(0), visits=1)
    assert select_leaf(root, expansions=2, c=1.0) is root  # room for children
    a, b = TreeNode(Node(0, steps=1, done=True), root), TreeNode(Node(0, steps=1), root)
    root.children = [a, b]
    assert spent(a, 2) and not spent(root, 2)
    assert select_leaf(root, 2, 1.0) is b  # the finished child is never selected
    b.children = [TreeNode(Node(0, steps=2, done=True), b), TreeNode(Node(0, steps=2, done=True), b)]
    assert spent(root, 2) and select_leaf(root, 2, 1.0) is None
    from rlcore.search import backup

    backup(b.children[0], 0.5)
    assert (b.children[0].visits, b.visits, root.visits) == (1, 1, 2) and b.value == root.value == 0.5


END, WAIT = [9], [7, 7]


def test_budget_forcing_replaces_an_early_end_by_wait():
    ids, waits, over = force_budget([1, 2], [3, 9], True, 10, 10, waits=0, max_waits=2, end_ids=END, wait_ids=WAIT)
    assert (ids, waits, over) == ([1, 2, 3, 7, 7], 1, False)


def test_budget_forcing_keeps_the_end_once_the_waits_are_used_the_minimum_is_reached_or_no_wait_fits():
    assert force_budget([1, 2], [3, 9], True, 10, 10, 2, 2, END, WAIT) == ([1, 2, 3, 9], 2, True)  # no Wait left
    assert force_budget([1, 2], [3, 9], True, 3, 10, 0, 2, END, WAIT) == ([1, 2, 3, 9], 0, True)  # 3 tokens >= low
    assert force_budget([1, 2], [3, 9], True, 5, 5, 0, 2, END, WAIT) == ([1, 2, 3, 9], 0, True)  # 3 + 2 reach high


def test_budget_forcing_forces_the_end_at_the_budget():
    assert force_budget([1, 2], [3, 4, 5, 6], False, 5, 5, 0, 2, END, WAIT) == ([1, 2, 3, 4, 5, 9], 0, True)
    assert force_budget([1], [2], False, 5, 5, 0, 2, END, WAIT) == ([1, 2], 0, False)  # below the budget: think on


def test_steps_split_encode_and_aggregate():
    steps = split_steps("5+8=13. 4+7=11. Write 1.", ". ")
    assert steps == ["5+8=13. ", "4+7=11. ", "Write 1."] and "".join(steps) == "5+8=13. 4+7=11. Write 1."
    ids, ends = encode_steps(steps, lambda s: [ord(c) for c in s])
    assert ends == [7, 15, 23] and len(ids) == 24
    assert [aggregate_steps([0.9, 0.2, 0.6], how) for how in ("min", "last", "mean")] == [0.2, 0.6, pytest.approx(1.7 / 3)]
    assert aggregate_steps([0.5, 0.5], "prod") == 0.25
    with pytest.raises(ValueError, match="not one of"):
        aggregate_steps([1.0], "max")


def test_step_labels_soft_and_hard():
    from launch.label_steps import outcome_pairs, step_labels

    soft, hard = step_labels([True, False, False, False, False, False, True, True, True], 3, min_correct=1)
    assert soft == [pytest.approx(1 / 3), 0.0, 1.0] and hard == [1, 0, 1]
    assert step_labels([True, False, True, False], 2, min_correct=2) == ([0.5, 0.5], [0, 0])
    assert outcome_pairs(["a", "b", "c", "d"], [False, True, True, False]) == [("b", "a"), ("b", "d"), ("c", "a"),
                                                                                ("c", "d")]


class FakeRollout:
    """Two responses per prompt, "g. b. x" (wrong) and "g. g. x" (right); a completion after a prefix is right
    ("ok") iff the prefix has no bad step (no "b", token 98)."""

    def __init__(self):
        self.batch = None

    def generate(self, rows, n, seed=None):
        responses = ["g. b. x", "g. g. x"] * len(rows)
        self.batch = SimpleNamespace(responses=responses, response_ids=[[ord(c) for c in r] for r in responses])
        return self.batch

    def complete(self, requests, seed=None):
        return [[SimpleNamespace(token_ids=[0], text="no" if 98 in r.prompt_ids else "ok")] * r.n for r in requests]


def fake_labelling(completions: int):
    rollout = FakeRollout()
    evaluation = SimpleNamespace(
        tokenizer=SimpleNamespace(encode=lambda s, add_special_tokens=False: [ord(c) for c in s],
                                  decode=lambda ids, skip_special_tokens=True: "".join(map(chr, ids))),
        prompt_ids=[[1], [2]], rollout=rollout,
        batch=lambda problems, ids, texts: SimpleNamespace(responses=texts),
        correct=lambda batch: [False, True] * 2 if batch is rollout.batch else [t.endswith("ok") for t in batch.responses])
    cfg = SimpleNamespace(label=SimpleNamespace(samples=2, completions=completions, min_correct=1, seed=0),
                          eval=SimpleNamespace(step_delimiter=". "),
                          rollout=SimpleNamespace(max_new_tokens=64, temperature=1.0, top_p=1.0))
    rows = [SimpleNamespace(prompt="p0", answer="1", index=10), SimpleNamespace(prompt="p1", answer="2", index=11)]
    return rollout, evaluation, cfg, rows


def test_monte_carlo_labels_with_a_fake_rollout():
    """Steps after a bad one ("b. ") lead nowhere: their completions fail and they are labelled 0."""
    from launch.label_steps import label

    _, evaluation, cfg, rows = fake_labelling(completions=3)
    steps, pairs = label(evaluation, cfg, rows)
    first = steps[0]
    assert first["steps"] == ["g. ", "b. ", "x"]
    assert first["soft_labels"] == [1.0, 0.0, 0.0] and first["hard_labels"] == [1, 0, 0]  # last: the response was wrong
    assert steps[1]["hard_labels"] == [1, 1, 1] and steps[1]["correct"]
    assert pairs == [{"prompt": "p0", "chosen": "g. g. x", "rejected": "g. b. x", "index": 10},
                     {"prompt": "p1", "chosen": "g. g. x", "rejected": "g. b. x", "index": 11}]


def test_zero_completions_label_every_step_with_the_outcome_and_complete_nothing():
    from launch.label_steps import label

    rollout, evaluation, cfg, rows = fake_labelling(completions=0)
    rollout.complete = None  # never called
    steps, pairs = label(evaluation, cfg, rows)
    assert [s["hard_labels"] for s in steps[:2]] == [[0, 0, 0], [1, 1, 1]]
    assert steps[0]["soft_labels"] == [0.0, 0.0, 0.0] and not steps[0]["correct"]
    assert len(pairs) == 2  # the outcome pairs as with completions

