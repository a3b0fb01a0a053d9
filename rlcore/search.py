"""Step-level search and budget forcing at test time, over many problems at once.

The searches here know nothing of vLLM or of reward workers. They receive two
callables and batch every problem's work of a round into one call of each:

* ``expand(nodes, n, last) -> [[Piece] * n] * len(nodes)``: ``n`` continuations of each
  node's response by one step (up to the step delimiter; with ``last``, to the end);
* ``score(nodes) -> [float]``: the verifier's score of each node's response so far
  (a process reward model scores partial solutions).

``launch.evaluate`` binds them to the rollout workers (``RolloutGroup.complete``)
and a verifier's reward workers. The methods:

* **beam search** (Snell et al. 2024, "Scaling LLM Test-Time Compute Optimally can be More
  Effective than Scaling Model Parameters", https://arxiv.org/abs/2408.03314): at budget N,
  ``width = N / expansions`` beams; each round every open beam is continued by one step
  ``expansions`` times, the verifier scores every new partial solution, finished ones are
  set aside and the ``width`` best open ones go on. The answer is the best-scored finished
  response.
* **DVTS**, diverse verifier tree search (Beeching et al. 2024, Hugging Face
  "search-and-learn"): the same, but the N candidates form ``N / expansions`` independent
  subtrees that each keep their own best beam, so one strong early prefix cannot take
  over the whole budget.
* **MCTS**, step-level Monte-Carlo tree search with the verifier's score as the value:
  each simulation walks down by UCT to a node with fewer than ``expansions`` children,
  adds one child step, scores it and backs the score up the path.
* **budget forcing** (Muennighoff et al. 2025, "s1: Simple test-time scaling",
  https://arxiv.org/abs/2501.19393): ``force_budget`` is its token edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Piece:
    """One generated continuation."""

    token_ids: list[int]
    text: str
    ends: bool
    """The response ends here (end of sequence, or its length limit): no further step."""


@dataclass
class Node:
    """A partial (or, when ``done``, finished) response to problem ``problem``."""

    problem: int
    tree: int = 0
    """The subtree it grows in (DVTS); 0 for beam search."""
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    score: float = 0.0
    steps: int = 0

    def child(self, piece: Piece, force_done: bool = False) -> Node:
        return Node(self.problem, self.tree, self.token_ids + piece.token_ids, self.text + piece.text,
                    piece.ends or force_done, 0.0, self.steps + 1)


Expand = Callable[[list[Node], int, bool], list[list[Piece]]]
Score = Callable[[list[Node]], list[float]]


@dataclass
class SearchResult:
    best: list[Node | None]
    """Per problem, the finished response with the highest score (None if none finished)."""
    tokens: list[int]
    """Per problem, every token generated for it."""


def keep_best(nodes: Sequence[Node], width: int) -> list[Node]:
    """The ``width`` highest-scored nodes of every (problem, subtree), in the order given; ties keep the earlier node."""
    ranked: dict[tuple[int, int], list[int]] = {}
    for i, node in enumerate(nodes):
        ranked.setdefault((node.problem, node.tree), []).append(i)
    kept = set()
    for members in ranked.values():
        kept.update(sorted(members, key=lambda i: (-nodes[i].score, i))[:width])
    return [node for i, node in enumerate(nodes) if i in kept]


def best_finished(nodes: Sequence[Node], problems: int) -> list[Node | None]:
    """Per problem, its highest-scored finished node (the first on ties)."""
    best: list[Node | None] = [None] * problems
    for node in nodes:
        current = best[node.problem]
        if node.done and (current is None or node.score > current.score):
            best[node.problem] = node
    return best


def tree_search(problems: int, trees: int, width: int, expansions: int, max_steps: int,
                expand: Expand, score: Score) -> SearchResult:
    """Beam search (``trees=1``) or DVTS (``trees`` subtrees of ``width`` beams each) over ``problems`` problems.

    Round 0 samples ``width * expansions`` first steps per subtree; every later round
    continues each open beam ``expansions`` times. In the last round (``max_steps``) the
    open beams are finished in one go.
    """
    if min(problems, trees, width, expansions, max_steps) < 1:
        raise ValueError("problems, trees, width, expansions and max_steps must all be >= 1")
    tokens = [0] * problems
    finished: list[Node] = []
    beams = [Node(p, t) for p in range(problems) for t in range(trees)]
    for step in range(max_steps):
        last = step == max_steps - 1
        per_beam = width * expansions if step == 0 else expansions
        children = []
        for beam, pieces in zip(beams, expand(beams, per_beam, last)):
            for piece in pieces:
                tokens[beam.problem] += len(piece.token_ids)
                children.append(beam.child(piece, force_done=last))
        for child, value in zip(children, score(children)):
            child.score = value
        finished += [c for c in children if c.done]
        beams = keep_best([c for c in children if not c.done], width)
        if not beams:
            break
    return SearchResult(best_finished(finished, problems), tokens)


@dataclass
class TreeNode:
    """A node of an MCTS tree: a partial response with its visit count and summed value."""

    node: Node
    parent: TreeNode | None = None
    children: list[TreeNode] = field(default_factory=list)
    visits: int = 0
    value: float = 0.0

    def uct(self, c: float) -> float:
        """Mean value plus the exploration bonus ``c * sqrt(ln N_parent / N)``; unvisited nodes first."""
        if self.visits == 0:
            return math.inf
        return self.value / self.visits + c * math.sqrt(math.log(self.parent.visits) / self.visits)


def select_leaf(root: TreeNode, expansions: int, c: float) -> TreeNode | None:
    """Walk down by UCT to the first open node with fewer than ``expansions`` children; None if the tree is spent."""
    node = root
    while True:
        if node.node.done:
            return None
        if len(node.children) < expansions:
            return node
        open_children = [ch for ch in node.children if not spent(ch, expansions)]
        if not open_children:
            return None
        node = max(open_children, key=lambda ch: ch.uct(c))


def spent(tree: TreeNode, expansions: int) -> bool:
    """A subtree with nothing left to expand: a finished response, or full and every child spent."""
    return tree.node.done or (len(tree.children) >= expansions and all(spent(ch, expansions) for ch in tree.children))


def backup(leaf: TreeNode, value: float) -> None:
    """Add one visit with ``value`` to ``leaf`` and every node above it."""
    node = leaf
    while node is not None:
        node.visits += 1
        node.value += value
        node = node.parent


def mcts(problems: int, simulations: int, expansions: int, max_steps: int, c: float,
         expand: Expand, score: Score) -> SearchResult:
    """Step-level MCTS: ``simulations`` rounds, each adding one scored step to every problem's tree.

    A child at depth ``max_steps`` is finished in one go. After the simulations, a
    problem with no finished response finishes its best-valued path in one go. The
    answer is the best-scored finished response.
    """
    roots = [TreeNode(Node(p)) for p in range(problems)]
    for root in roots:
        root.visits = 1
    tokens = [0] * problems
    finished: list[Node] = []

    def grow(leaves: list[TreeNode], is_last: Callable[[TreeNode], bool]) -> None:
        children = []
        for last in (False, True):  # one expand call per kind of request
            group = [leaf for leaf in leaves if is_last(leaf) == last]
            if not group:
                continue
            for leaf, pieces in zip(group, expand([g.node for g in group], 1, last)):
                tokens[leaf.node.problem] += len(pieces[0].token_ids)
                child = TreeNode(leaf.node.child(pieces[0], force_done=last), parent=leaf)
                leaf.children.append(child)
                children.append(child)
        for child, value in zip(children, score([ch.node for ch in children])):
            child.node.score = value
            backup(child, value)
            if child.node.done:
                finished.append(child.node)

    for _ in range(simulations):
        leaves = [leaf for leaf in (select_leaf(root, expansions, c) for root in roots) if leaf is not None]
        if not leaves:
            break
        grow(leaves, lambda leaf: leaf.node.steps + 1 >= max_steps)
    best = best_finished(finished, problems)
    unfinished = []
    for p, root in enumerate(roots):
        if best[p] is None:
            node = root
            while node.children:
                node = max(node.children, key=lambda ch: ch.value / max(ch.visits, 1))
            unfinished.append(node)
    if unfinished:
        grow(unfinished, lambda leaf: True)
        best = best_finished(finished, problems)
    return SearchResult(best, tokens)


def force_budget(thinking: list[int], piece: list[int], wrote_end: bool, low: int, high: int, waits: int,
                 max_waits: int, end_ids: list[int], wait_ids: list[int]) -> tuple[list[int], int, bool]:
    """s1's budget forcing, one edit: ``(response tokens, waits used, thinking over)`` after ``piece``.

    ``thinking`` holds the response's tokens so far, all inside its thinking; ``piece`` was
    generated after them and ends with ``end_ids`` when ``wrote_end`` (the model closed its
    thinking). Budgets count response tokens before the end of thinking: at least ``low``,
    at most ``high``.

    * The model closed its thinking before ``low`` tokens, fewer than ``max_waits`` Waits
      were used and a Wait fits under ``high``: the end is replaced by ``wait_ids``; thinking
      goes on.
    * It closed its thinking otherwise: kept; thinking is over.
    * It reached ``high`` tokens without closing: cut there and the end forced.

    A piece that ended the whole response (end of sequence) has nothing to edit and is not passed here.
    """
    if wrote_end:
        body = thinking + piece[: len(piece) - len(end_ids)]
        if len(body) < low and waits < max_waits and len(body) + len(wait_ids) < high:
            return body + wait_ids, waits + 1, False
        return thinking + piece, waits, True
    ids = thinking + piece
    if len(ids) >= high:
        return ids[:high] + end_ids, waits, True
    return ids, waits, False
