"""Evaluate a model with sampling and search: ``python -m launch.evaluate --config <preset> [key=value ...]``.

It runs the preset's rollout and reward workers on ``data.eval_files`` (prompt
rows, at most ``data.max_eval_prompts``) with ``model.path`` (a policy or an
export), and every method in ``eval.methods`` (``docs/config.md``, section
``eval``):

* ``greedy``: one greedy response per problem;
* ``pass_at_k``, ``maj_at_k``, ``best_of_n``, ``weighted_best_of_n``: from one set of
  ``eval.n`` samples per problem (``rlcore.test_time``), reported at N = 1, 2, 4, ... n;
  answers are read and compared by the accuracy term's own rule (``rewards.api.Answer``);
* ``beam_search``, ``dvts``, ``mcts``: step-level search (``rlcore.search``) over steps cut
  at ``eval.step_delimiter``, the verifier scoring every partial solution;
* ``budget_forcing``: s1's budget forcing at each of ``eval.budgets`` thinking tokens.

A response is correct when its ``reward.accuracy_term`` is 1. The verifier
(``eval.verifier``, a reward term with its own workers; by default the preset's
weighted reward) judges samples for best-of-N and the searches. Written to
``trainer.output_dir``: ``eval_results.json`` (``rows``: one per method and N or
budget, ``{"method", "n", "accuracy", "tokens_per_problem", ...}``; and
``verifier_ranking``: each configured verifier's within-problem pairwise accuracy
on the sampled methods' responses), ``eval_results.md``, ``eval_scaling.png``
(accuracy against N and against generated tokens per problem, a line per method)
and, with ``greedy``, ``eval_samples.jsonl`` (each greedy response, its rewards
and its row's metadata). Like ``launch.train``, it starts
a private local Ray unless it runs in a cluster, and a bad config or input exits
with code 2 and one line.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from launch.build import Plan, check_same_vocab, reward_term
from launch.run_dir import Outputs
from launch.sources import Roles, eval_metrics, greedy_batch
from launch.train import exit_process, parse_args, plan_data_and_ray, stop_ray
from rewards.api import RewardStartError, RewardTerm, answer_reading
from rewards.text import thinking_token_count
from rlcore.assets import check_model_dir, resolve
from rlcore.batch import RolloutBatch, pad_2d
from rlcore.chat import encode_prompt
from rlcore.config import Config, ConfigError
from rlcore.data import PromptRow
from rlcore.search import Node, Piece, SearchResult, force_budget, mcts, tree_search
from rlcore.test_time import at_n, scaling_points, within_problem_accuracy

RESULTS = "eval_results.json"
SAMPLES = "eval_samples.jsonl"
"""The greedy method's responses, one JSON record per problem (``sample_records``)."""
OUTPUTS = Outputs("launch.evaluate", (RESULTS, "eval_results.md", "eval_scaling.png", SAMPLES))
"""What an evaluation writes into ``trainer.output_dir``: an earlier one's is refused unless trainer.overwrite=true."""
SAMPLED = ("pass_at_k", "maj_at_k", "best_of_n", "weighted_best_of_n")
SEARCHES = ("beam_search", "dvts", "mcts")


def markdown_table(rows: list[dict]) -> str:
    """The result rows as a Markdown table, a column per key any row has (blank where a row lacks it)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ARCHITECTURE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings")
"""The config.json keys that name and shape a model's tensors: ``eval.models`` must agree on them, since each one's
weights are loaded into engines built for the first."""


def for_evaluation(plan: Plan) -> Outputs:
    """Evaluation reads the eval files' prompt rows and generates, whatever the preset trains; the verifier is
    resolved, and ``eval.models`` checked (``check_models``). Returns what the evaluation writes."""
    from launch.sources import RolloutSource

    cfg = plan.cfg
    if cfg.eval.models:
        check_models(cfg)
    if not cfg.data.eval_files:
        raise ConfigError("data.eval_files is empty: nothing to evaluate")
    plan.source = RolloutSource
    plan.cfg.data.train_files = list(cfg.data.eval_files)
    if cfg.eval.temperature is not None:
        cfg.rollout.temperature = cfg.eval.temperature
    methods = set(cfg.eval.methods)
    needed = {"verifier": bool(methods & {"best_of_n", "weighted_best_of_n"}) or
              (bool(methods & set(SEARCHES)) and cfg.eval.search_verifier is None),
              "search_verifier": bool(methods & set(SEARCHES))}
    resolved = {key: reward_term(term, f"eval.{key}") for key, term in
                (("verifier", cfg.eval.verifier), ("search_verifier", cfg.eval.search_verifier)) if term is not None}
    plan.verifiers = {key: term for key, term in resolved.items() if needed[key]}  # one no method uses is not started
    episodic = methods - {"greedy", *SAMPLED}
    if cfg.env.enabled and episodic:
        raise ConfigError(f"eval.methods: {', '.join(sorted(episodic))} cannot run multi-turn episodes (an env "
                          f"section is set); use greedy, {', '.join(SAMPLED)}")
    if "budget_forcing" in cfg.eval.methods and max(cfg.eval.budgets) + cfg.eval.answer_tokens > cfg.rollout.max_new_tokens:
        raise ConfigError(f"eval.budgets up to {max(cfg.eval.budgets)} + eval.answer_tokens={cfg.eval.answer_tokens} "
                          f"exceed rollout.max_new_tokens={cfg.rollout.max_new_tokens}; raise it")
    return replace(OUTPUTS, results=OUTPUTS.results + tuple(cfg.eval.models))  # a folder per model


def check_models(cfg: Config) -> None:
    """``eval.models`` resolved (``local://`` models built) and checked before any actor starts, ``model.path`` set
    to the first: each name is a folder name, each model a complete folder with the first one's architecture
    (``ARCHITECTURE``) and vocabulary. A one-line ``ConfigError`` or ``AssetError`` names the model's key."""
    first = None
    for name, path in cfg.eval.models.items():
        key = f"eval.models.{name}"
        if name in ("", ".", "..") or "/" in name:
            raise ConfigError(f"{key}: a model's name is the folder its results go to in trainer.output_dir: give "
                              "one without '/'")
        path = cfg.eval.models[name] = resolve(path, cfg.trainer.cache_dir, key)
        shape = {k: check_model_dir(path, key).get(k) for k in ARCHITECTURE}
        if first is None:
            first = name, path, shape
            continue
        differs = [k for k in ARCHITECTURE if shape[k] != first[2][k]]
        if differs:
            k = differs[0]
            raise ConfigError(f"{key}: {path} has {k}={shape[k]}, eval.models.{first[0]} has {first[2][k]}; the "
                              "rollout engines load each model's weights in place of the first's, so all need its "
                              "architecture: evaluate this one in a launch of its own")
        check_same_vocab(first[1], path, key)
    cfg.model.path = first[1]


class Evaluation:
    """The roles of an evaluation (rollout workers, reward workers, the verifier's) and one method per ``eval.methods`` entry."""

    def __init__(self, cfg: Config, rows: list[PromptRow], terms: list[RewardTerm], verifiers: dict[str, RewardTerm],
                 roles: Roles):
        from transformers import AutoTokenizer

        from actors.groups import RewardGroup, RolloutGroup

        self.cfg, self.ec, self.rows = cfg, cfg.eval, rows
        self.env = roles.env_pool(cfg)  # multi-turn episodes: greedy and the sampled methods play them
        self.rollout = RolloutGroup(cfg, cfg.model.path, env=self.env.client if self.env else None)
        self.rewards = RewardGroup(terms)
        # The verifiers' own reward workers. Without eval.verifier the preset's weighted reward judges; without
        # eval.search_verifier, eval.verifier. judge_names: what each row says judged it.
        groups = {key: RewardGroup([term]) for key, term in verifiers.items()}
        names = {key: term.name for key, term in verifiers.items()}
        verifier = groups.get("verifier", self.rewards)
        self.judges = {"verifier": verifier, "search_verifier": groups.get("search_verifier", verifier)}
        first = names.get("verifier", "reward")
        self.judge_names = {"verifier": first, "search_verifier": names.get("search_verifier", first)}
        self.started_judges = list(groups)  # the configured verifiers (not the preset's reward standing in)
        self.samples: list[dict] = []
        """The greedy responses, one record per problem (``sample_records``): ``eval_samples.jsonl``."""
        self.rankings: dict[str, dict] = {}
        """Per configured verifier, how it ranks the sampled methods' responses within each problem (``sampled``)."""
        self.ready = (self.rollout.ready + self.rewards.ready + [ref for g in groups.values() for ref in g.ready]
                      + (self.env.ready if self.env else []))
        accuracy = next(t for t in terms if t.name == cfg.reward.accuracy_term)
        self.answer = answer_reading(accuracy.target)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
        self.prompt_ids = [encode_prompt(r.prompt, r.templated, self.tokenizer) for r in rows]
        self.rounds = 0

    def load_model(self, path: str) -> None:
        """Evaluate the model in ``path`` from now on (``eval.models``): its weights into the running engines, and
        what the last model left (its greedy responses, its rankings, its search rounds' seeds) cleared."""
        self.rollout.load_model(path)
        self.samples, self.rankings, self.rounds = [], {}, 0

    # ---- scoring responses ------------------------------------------------------------------
    def batch(self, problems: list[int], token_ids: list[list[int]], texts: list[str]) -> RolloutBatch:
        """A batch of responses to the given problems, ready for the reward workers."""
        rows = [self.rows[p] for p in problems]
        return RolloutBatch(
            prompt_ids=[self.prompt_ids[p] for p in problems], response_ids=token_ids,
            response_mask=pad_2d([[1.0] * len(ids) for ids in token_ids]),
            group_ids=torch.tensor(problems, dtype=torch.long),
            prompt_index=torch.tensor([r.index for r in rows], dtype=torch.long),
            prompts=[r.prompt for r in rows], user_prompts=[r.user_text() for r in rows], responses=texts,
            answers=[r.answer for r in rows],
            truncated=torch.tensor([len(ids) >= self.cfg.rollout.max_new_tokens for ids in token_ids]),
            metadata=[r.metadata for r in rows],
            thinking_tokens=torch.tensor([thinking_token_count(t, self.tokenizer) for t in texts], dtype=torch.long))

    def correct(self, batch: RolloutBatch) -> list[bool]:
        """Whether each response's accuracy term is 1 (scores the batch with the preset's rewards)."""
        self.rewards.score(batch)
        return (batch.reward_terms[self.cfg.reward.accuracy_term] >= 1.0).tolist()

    def verify(self, batch: RolloutBatch, judge: str = "verifier") -> list[float]:
        """Each response's score by ``eval.verifier`` (or ``eval.search_verifier``); without one, the preset's weighted reward."""
        self.judges[judge].score(batch)
        return batch.scores.tolist()

    # ---- the methods ------------------------------------------------------------------------
    def greedy(self) -> list[dict]:
        """One greedy response per problem, scored as training's evaluation scores it (``eval_metrics``); each kept
        in ``samples``."""
        batch = greedy_batch(self.rollout, self.rewards, self.rows)
        self.samples = sample_records(batch)
        m = eval_metrics(batch, self.cfg.reward.accuracy_term)
        row = {"method": "greedy", "n": 1, "accuracy": m["eval/accuracy"], "tokens_per_problem": m["eval/response_length"],
               "reward": m["eval/reward"]}
        if "eval/thinking_length" in m:
            row["thinking_tokens"] = m["eval/thinking_length"]
        row.update({key.removeprefix("eval/reward/"): v for key, v in m.items() if key.startswith("eval/reward/")})
        return [row]

    def sampled(self, methods: list[str]) -> list[dict]:
        """``eval.n`` samples per problem, scored once; every sampled method at every N from them."""
        n = self.ec.n
        batch = self.rollout.generate(self.rows, n=n, seed=self.ec.seed)
        self.rewards.score(batch)
        correct = (batch.reward_terms[self.cfg.reward.accuracy_term] >= 1.0).tolist()
        verified = {"best_of_n", "weighted_best_of_n"} & set(methods)
        scores = self.verify(batch) if verified else None
        self.rank(batch, correct, scores)
        answers = [self.answer.extract(text) for text in batch.responses]
        lengths = batch.response_mask.sum(-1).tolist()
        rows = []
        for k in scaling_points(n):
            sums: dict[str, float] = {}
            for p in range(len(self.rows)):
                part = slice(p * n, (p + 1) * n)
                result = at_n(correct[part], answers[part], None if scores is None else scores[part], k, self.answer.same)
                for method, value in result.items():
                    sums[method] = sums.get(method, 0.0) + value
            tokens = sum(sum(lengths[p * n:p * n + k]) for p in range(len(self.rows))) / len(self.rows)
            rows += [{"method": m, "n": k, "accuracy": sums[m] / len(self.rows), "tokens_per_problem": tokens,
                      **({"verifier": self.judge_names["verifier"]} if m in verified else {})} for m in methods]
        return rows

    def rank(self, batch: RolloutBatch, correct: list[bool], scores: list[float] | None) -> None:
        """``rankings``: each configured verifier's within-problem pairwise accuracy on the ``eval.n`` samples
        (``rlcore.test_time.within_problem_accuracy``), the share of (right, wrong) pairs of one problem it orders
        right. ``scores``: the verifier's, already computed."""
        problems = batch.group_ids.tolist()
        for judge in self.started_judges:
            judged = scores if judge == "verifier" and scores is not None else self.verify(batch, judge)
            accuracy, pairs = within_problem_accuracy(judged, problems, correct)
            self.rankings[judge] = {"name": self.judge_names[judge], "pairwise_accuracy": accuracy, "pairs": pairs}

    def expand(self, nodes: list[Node], n: int, last: bool) -> list[list[Piece]]:
        """``n`` one-step continuations of each node (to the end of the response with ``last``)."""
        from actors.rollout import Request

        limit = self.cfg.rollout.max_new_tokens
        requests = [Request(self.prompt_ids[node.problem] + node.token_ids, n=n, temperature=self.cfg.rollout.temperature,
                            top_p=self.cfg.rollout.top_p,
                            max_tokens=max(1, limit - len(node.token_ids)) if last else
                            max(1, min(self.ec.step_tokens, limit - len(node.token_ids))),
                            stop=[] if last else [self.ec.step_delimiter]) for node in nodes]
        pieces = []
        self.rounds += 1  # each round draws its own samples, reproducibly
        for node, completions in zip(nodes, self.rollout.complete(requests, seed=self.ec.seed + 7919 * self.rounds)):
            pieces.append([Piece(c.token_ids, c.text, (c.finished and c.stop is None)
                                 or len(node.token_ids) + len(c.token_ids) >= limit) for c in completions])
        return pieces

    def score_nodes(self, nodes: list[Node]) -> list[float]:
        """The search verifier's scores. An open node's text is cut after its last step delimiter: its last token,
        which completed the delimiter, may have begun the next step (``RolloutWorker.complete``)."""
        delimiter = self.ec.step_delimiter
        texts = [n.text if n.done or delimiter not in n.text else n.text[:n.text.rindex(delimiter) + len(delimiter)]
                 for n in nodes]
        batch = self.batch([n.problem for n in nodes], [n.token_ids for n in nodes], texts)
        return self.verify(batch, "search_verifier")

    def search(self, method: str, budget: int) -> dict:
        """One search over every problem at budget ``budget`` (candidates per step, or simulations per step level)."""
        ec = self.ec
        problems = len(self.rows)
        if method == "mcts":
            result = mcts(problems, budget * ec.mcts_simulations_per_n, ec.beam_expansions, ec.max_steps, ec.mcts_c,
                          self.expand, self.score_nodes)
        else:
            beams = ec.beam_width or max(1, budget // ec.beam_expansions)
            trees, width = (beams, 1) if method == "dvts" else (1, beams)
            result = tree_search(problems, trees, width, ec.beam_expansions, ec.max_steps, self.expand, self.score_nodes)
        return self.result_row(method, budget, result)

    def result_row(self, method: str, n: int, result: SearchResult) -> dict:
        found = [(p, node) for p, node in enumerate(result.best) if node is not None]
        correct = self.correct(self.batch([p for p, _ in found], [node.token_ids for _, node in found],
                                          [node.text for _, node in found])) if found else []
        return {"method": method, "n": n, "accuracy": sum(correct) / len(self.rows),
                "tokens_per_problem": sum(result.tokens) / len(self.rows), "verifier": self.judge_names["search_verifier"]}

    def budget_forcing(self, budget: int) -> dict:
        """s1 budget forcing at ``budget`` thinking tokens, greedy, every problem at once.

        ``thinking_tokens``: the mean count the budget limits, response tokens before the end of thinking.
        """
        ec, tok = self.ec, self.tokenizer
        end_ids = tok.encode(ec.think_end, add_special_tokens=False)
        wait_ids = tok.encode(ec.wait_text, add_special_tokens=False)
        problems = len(self.rows)
        low = round(budget * ec.min_budget_fraction)
        ids: list[list[int]] = [[] for _ in range(problems)]
        waits, tokens, thought = [0] * problems, [0] * problems, [0] * problems
        thinking, ended = list(range(problems)), set()  # still thinking; responses that ended (EOS) while thinking
        while thinking:
            pieces = self.greedy_pieces([(p, ids[p], budget - len(ids[p]), [ec.think_end]) for p in thinking])
            still = []
            for p, c in zip(thinking, pieces):
                tokens[p] += len(c.token_ids)
                if c.finished and c.stop is None:  # the response ended without closing its thinking
                    ids[p] += c.token_ids
                    ended.add(p)
                    thought[p] = len(ids[p])
                    continue
                wrote_end = c.stop == ec.think_end and c.token_ids[-len(end_ids):] == end_ids
                ids[p], waits[p], over = force_budget(ids[p], c.token_ids, wrote_end, low, budget, waits[p],
                                                      ec.max_waits, end_ids, wait_ids)
                if over:
                    thought[p] = len(ids[p]) - (len(end_ids) if ids[p][-len(end_ids):] == end_ids else 0)
                else:
                    still.append(p)
            thinking = still
        answering = [p for p in range(problems) if p not in ended]
        for p, c in zip(answering, self.greedy_pieces([(p, ids[p], ec.answer_tokens, []) for p in answering])):
            tokens[p] += len(c.token_ids)
            ids[p] += c.token_ids
        texts = [tok.decode(r) for r in ids]
        batch = self.batch(list(range(problems)), ids, texts)
        correct = self.correct(batch)
        return {"method": "budget_forcing", "n": budget, "accuracy": sum(correct) / problems,
                "tokens_per_problem": sum(tokens) / problems,
                "thinking_tokens": sum(thought) / problems, "waits": sum(waits) / problems,
                "min_budget_fraction": ec.min_budget_fraction}

    def greedy_pieces(self, asks: list[tuple[int, list[int], int, list[str]]]):
        """One greedy completion per ``(problem, response so far, max new tokens, stop strings)``."""
        from actors.rollout import Request

        requests = [Request(self.prompt_ids[p] + so_far, n=1, temperature=0.0, max_tokens=max(1, limit), stop=stop)
                    for p, so_far, limit, stop in asks]
        return [c[0] for c in self.rollout.complete(requests)]


def sample_records(batch: RolloutBatch) -> list[dict]:
    """One record per response of a scored batch: the prompt (the user's text), response, answer, token counts, each
    reward term's value and logged part, and the row's metadata (such as L1's ``target_tokens``)."""
    lengths = batch.response_mask.sum(-1).tolist()
    terms = {name: values.tolist() for name, values in batch.reward_terms.items()}
    return [{"prompt": batch.user_prompts[i], "response": batch.responses[i], "answer": batch.answers[i],
             "response_tokens": int(lengths[i]), "thinking_tokens": int(batch.thinking_tokens[i]),
             "rewards": {name: values[i] for name, values in terms.items()}, "metadata": batch.metadata[i]}
            for i in range(len(batch.responses))]


def run(evaluation: Evaluation, methods: list[str]) -> list[dict]:
    """Every method's rows, with a progress bar over the units of work (a method at one N or budget)."""
    from tqdm import tqdm

    ec = evaluation.ec
    sampled = [m for m in methods if m in SAMPLED]
    work = [("greedy", 1)] if "greedy" in methods else []
    work += [("sampled", ec.n)] if sampled else []
    search_points = [n for n in scaling_points(ec.n) if n >= ec.beam_expansions or ec.beam_width]
    work += [(m, n) for m in methods if m in SEARCHES for n in (search_points if m != "mcts" else scaling_points(ec.n))]
    work += [("budget_forcing", b) for b in ec.budgets] if "budget_forcing" in methods else []
    rows = []
    with tqdm(work, desc="evaluate", unit="run", file=sys.stdout, dynamic_ncols=True) as bar:
        for method, n in bar:
            bar.set_postfix_str(f"{method} n={n}")
            if method == "greedy":
                rows += evaluation.greedy()
            elif method == "sampled":
                rows += evaluation.sampled(sampled)
            elif method == "budget_forcing":
                rows.append(evaluation.budget_forcing(n))
            else:
                rows.append(evaluation.search(method, n))
    return rows


def line_name(row: dict) -> str:
    """A row's line in the plot: its method, and the verifier that judged it (budget forcing: its minimum)."""
    if "min_budget_fraction" in row:
        low = row["min_budget_fraction"]
        return f"{row['method']} ({'cap only' if low == 0 else f'Wait below {low:g}×budget'})"
    return f"{row['method']} ({row['verifier']})" if "verifier" in row else row["method"]


def draw(rows: list[dict], out: Path) -> None:
    """``eval_scaling.png``: accuracy against N (left) and against generated tokens per problem (right), a line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    by_n, by_tokens = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lines = list(dict.fromkeys(line_name(r) for r in rows))
    for i, name in enumerate(lines):
        mine = sorted((r for r in rows if line_name(r) == name), key=lambda r: r["tokens_per_problem"])
        style = {"color": f"C{i % 10}", "marker": "o", "linestyle": "-" if i < 10 else "--", "label": name}
        if mine[0]["method"] != "budget_forcing":  # its n is a thinking budget, not a sample count
            points = sorted((r["n"], r["accuracy"]) for r in mine)
            by_n.plot(*zip(*points), **style)
        by_tokens.plot([r["tokens_per_problem"] for r in mine], [r["accuracy"] for r in mine], **style)
    by_n.set_xscale("log", base=2)
    by_n.set_xlabel("N (samples, or search budget)")
    by_tokens.set_xscale("log")
    by_tokens.set_xlabel("generated tokens per problem")
    for ax in (by_n, by_tokens):
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    by_tokens.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # one legend, beside the curves
    fig.savefig(out, dpi=100)


@contextmanager
def started(plan: Plan, rows: list[PromptRow], own_ray: bool):
    """The ``Evaluation`` roles for ``rows``, started and ready, on the run's Ray (stopped after when ``own_ray``:
    ``launch.train.plan_data_and_ray`` started it)."""
    from actors.groups import end_models, wait_ready

    try:
        roles = Roles(plan.reward_terms, {}, None, tools=plan.tools, ship_environments=plan.ship_environments)
        evaluation = Evaluation(plan.cfg, rows, plan.reward_terms, plan.verifiers, roles)
        wait_ready([evaluation])
        yield evaluation
        end_models()
    finally:
        stop_ray(own_ray)


def main(argv: list[str] | None = None) -> int:
    built = plan_data_and_ray(parse_args(argv), OUTPUTS, for_evaluation)
    if built is None:
        return 2
    plan, data, own_ray, run_dir = built
    cfg = plan.cfg
    problems = data.eval[: cfg.data.max_eval_prompts]
    try:
        with started(plan, problems, own_ray) as evaluation:
            for i, (name, path) in enumerate(models(cfg)):
                if i:  # the engines started with the first
                    evaluation.load_model(path)
                print(f"evaluating {path} on {len(problems)} problems: {', '.join(cfg.eval.methods)}", flush=True)
                start = time.perf_counter()
                rows = run(evaluation, cfg.eval.methods)
                elapsed = time.perf_counter() - start
                out = run_dir.path / name if name else run_dir.path
                out.mkdir(exist_ok=True)
                write(out, cfg, path, problems, elapsed, rows, evaluation.rankings, evaluation.samples)
    except RewardStartError as exc:  # a reward's constructor raised: an input error
        print(f"input error: {exc}", file=sys.stderr)
        return 2
    finally:
        run_dir.release()
    return 0


def models(cfg: Config) -> list[tuple[str | None, str]]:
    """(name, path) of each model to evaluate, in order: ``eval.models``, or ``model.path`` alone (name None: its
    results go straight into ``trainer.output_dir``)."""
    return list(cfg.eval.models.items()) if cfg.eval.models else [(None, cfg.model.path)]


def write(out: Path, cfg, model: str, problems: list, elapsed: float, rows: list[dict],
          rankings: dict[str, dict] | None = None, samples: list[dict] | None = None) -> None:
    """``OUTPUTS`` of ``model``'s evaluation into ``out``, and the table on the console; ``rankings``:
    ``Evaluation.rankings``, under ``verifier_ranking`` and as lines below the table; ``samples``: the greedy
    responses, ``SAMPLES``."""
    result = {"model": model, "eval_files": cfg.data.eval_files, "problems": len(problems),
              "seconds": round(elapsed, 2), "rows": rows, "verifier_ranking": rankings or {}}
    (out / RESULTS).write_text(json.dumps(result, indent=2) + "\n")
    if samples:
        (out / SAMPLES).write_text("".join(json.dumps(record) + "\n" for record in samples))
    table = markdown_table(rows)
    for judge, r in (rankings or {}).items():
        table += (f"\n\n{judge} {r['name']}: ranks a right response above a wrong one to the same problem "
                  f"{r['pairwise_accuracy']:.3f} of the time ({r['pairs']} pairs of the eval.n samples)")
    (out / "eval_results.md").write_text(table + "\n")
    draw(rows, out / "eval_scaling.png")
    print(table)
    print(f"results written to {out / RESULTS}, {out / 'eval_scaling.png'}", flush=True)


if __name__ == "__main__":
    exit_process(main())
