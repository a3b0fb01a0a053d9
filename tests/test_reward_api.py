"""The reward contract, without Ray."""

import json
import sys
from types import SimpleNamespace

import pytest

from actors.reward import RewardWorker
from rewards.api import RewardContractError, RewardSample, call_score, check_scores, load_reward
from rewards.registry import REWARDS
from rlcore.config import ConfigError


def worker(name: str, args: dict | None = None) -> RewardWorker:
    return RewardWorker(name, REWARDS.resolve(name, "reward.terms[0].name"), args or {})

SAMPLES = [RewardSample("1+1=", "2", [5, 1], "2"), RewardSample("1+2=", "4", [6, 1], "3")]


def test_function_and_class_rewards_load():
    assert call_score(load_reward("exact_match"), SAMPLES) == [1.0, 0.0]
    parts = load_reward("tests.plugins.user_rewards:Parts", {"bonus": 0.25})
    assert check_scores("parts", call_score(parts, SAMPLES), 2) == [{"correct": 1.0, "bonus": 0.25},
                                                                     {"correct": 0.0, "bonus": 0.25}]
    assert call_score(load_reward("tests.plugins.user_rewards:AsyncLength"), SAMPLES) == [2.0, 2.0]


@pytest.mark.parametrize(
    "result, message",
    [
        (1.0, "reward 'r' returned float; expected a list of 2 floats or dicts of floats"),
        ([1.0], "reward 'r' returned 1 scores for 2 samples"),
        ([1.0, "x"], "reward 'r' returned 'x' for sample 1; expected a finite float"),
        ([1.0, float("nan")], "reward 'r' returned nan for sample 1"),
        ([1.0, {"a": None}], "reward 'r' returned None for sample 1['a']"),
        ([1.0, {}], "reward 'r' returned an empty dict for sample 1"),
        ([True, 1.0], "reward 'r' returned True for sample 0"),
    ],
)
def test_contract_names_the_reward_and_the_problem(result, message):
    with pytest.raises(RewardContractError) as info:
        check_scores("r", result, 2)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_worker_isolates_failing_samples():
    samples = [RewardSample("p", "ok", [1], "x"), RewardSample("p", "boom", [1], "x")]
    rows, errors, failure = worker("tests.plugins.user_rewards:fragile").score(samples)
    assert rows == [{"": 1.0}, None] and errors == 1
    assert failure.message == "cannot score 'boom'" and "raise RuntimeError" in failure.traceback


def test_worker_reports_contract_breaks():
    rows, errors, failure = worker("tests.plugins.user_rewards:WrongShape").score(SAMPLES)
    assert rows == [None, None] and errors == 2 and "returned 3 scores for 2 samples" in failure.message


def test_class_without_score_is_a_clear_error():
    with pytest.raises(ValueError, match="has no score\\(samples\\) method"):
        load_reward("tests.test_reward_api:RewardSample")


def test_unknown_reward_name_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        load_reward("nope")
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("reward='nope' is not a registered reward; registered: answer_match, confidence, env_return, exact_match, genrm, judge, l1")


def test_l1_reward_uses_token_counts_and_the_accuracy_reward():
    from rewards.api import term_value

    exact = load_reward("l1", {"mode": "exact", "alpha": 0.1})
    samples = [RewardSample("1+1= Think for 3 tokens.", "2", [5, 1], "2", {"target_tokens": 3}),
               RewardSample("1+2= Think for 2 tokens.", "4", [6, 1], "3", {"target_tokens": 2})]
    rows = check_scores("l1", call_score(exact, samples), 2)
    # n_y = 2 tokens each; targets 3 and 2: |N - n_y| = 1 and 0
    assert [term_value(r) for r in rows] == pytest.approx([1.0 - 0.1, 0.0])
    assert rows[0]["_abs_deviation"] == 1.0 and rows[1]["_abs_deviation"] == 0.0
    capped = load_reward("l1", {"mode": "max", "alpha": 0.1, "delta": 0.5})
    rows = check_scores("l1", call_score(capped, samples), 2)
    assert [term_value(r) for r in rows] == pytest.approx([0.6, 0.0])  # 1 × clip(0.1 × (3 − 2) + 0.5)
    with pytest.raises(ValueError, match="no metadata\\['target_tokens'\\]"):
        call_score(exact, [RewardSample("p", "2", [1], "2")])


def test_l1_and_length_target_through_the_config():
    from launch.build import configure
    from rewards.l1 import LengthTarget

    plan = configure(None, ["data.transforms=[{name: length_target, mode: max, low: 2, high: 4}]",
                            "reward.terms=[{name: l1, args: {mode: max, alpha: 0.1}}]", "reward.accuracy_term=l1"])
    [transform] = plan.transforms
    assert isinstance(transform, LengthTarget)
    assert (transform.options.mode, transform.options.low, transform.options.high) == ("max", 2, 4)
    [term] = plan.reward_terms
    # every option in force is passed, the defaults included
    assert term.args == {"mode": "max", "accuracy": "exact_match", "alpha": 0.1, "delta": 0.5, "accuracy_args": {},
                         "count": "response"}
    assert plan.cfg.reward.terms[0].args == term.args
    reward = RewardWorker(term.name, term.target, term.args)
    rows, errors, _ = reward.score([RewardSample("1+1= Think for maximum 3 tokens.", "2", [5, 1], "2",
                                                 {"target_tokens": 3})])
    assert errors == 0 and rows[0]["score"] == pytest.approx(0.6)


def test_underscore_parts_are_logged_not_summed():
    from rewards.api import term_value

    assert term_value({"score": 0.5, "bonus": 0.25, "_unparseable": 1.0}) == 0.75


# --- what a reward receives, through the collection path (rollout worker -> reward group), without Ray or vLLM -------

class InProcessPool:
    """``actors.groups.RewardPool`` without Ray: the term's ``RewardWorker`` in this process, its samples kept."""

    def __init__(self, term):
        self.term, self.settings, self.workers = term, term.config, []
        self.worker, self.seen = RewardWorker(term.name, term.target, dict(term.args)), []

    def submit(self, samples):
        self.seen += samples
        return self.worker.score(samples)

    def collect(self, samples, pending):
        rows, errors, failure = pending
        return rows, {"errors": errors, "timeouts": 0, "restarts": 0}, failure


class FakeEngine:
    """vLLM's ``LLM.generate`` for ``RolloutWorker.generate``: one fixed response per prompt."""

    def __init__(self, response: str):
        self.response = response

    def generate(self, inputs, params, use_tqdm=False):
        ids = [7, 8]
        sample = SimpleNamespace(token_ids=ids, text=self.response, finish_reason="stop",
                                 logprobs=[{t: SimpleNamespace(logprob=-1.0)} for t in ids])
        return [SimpleNamespace(prompt_token_ids=x["prompt_token_ids"], outputs=[sample]) for x in inputs]


def test_rewards_get_the_users_text_not_the_chat_template(tmp_path, monkeypatch):
    """A Hebrew question rendered with the local reasoning model's ChatML template holds more Latin letters
    (im_start, user, im_end, assistant) than Hebrew ones: judged on the rendering, a Latin response would look
    consistent. The rollout worker's batch goes to the reward group, whose samples carry the user's own text as
    ``prompt`` and the rendering as ``rendered_prompt`` (for learned reward models)."""
    import actors.groups as groups
    from actors.groups import RewardGroup
    from actors.rollout import RolloutWorker
    from launch.build import configure
    from rlcore.data import load_prompts, render_prompts
    from rlcore.reasoning_model import CHAT_TEMPLATE
    from tests.test_chat import chat_tokenizer

    question = "כמה זה שתיים ועוד שתיים?"
    f = tmp_path / "he.jsonl"
    f.write_text(json.dumps({"prompt": [{"role": "user", "content": question}], "answer": "4"}) + "\n")
    tok = chat_tokenizer(template=CHAT_TEMPLATE)
    [row] = render_prompts(load_prompts([f]), tok)
    assert row.templated and row.prompt.startswith("<|im_start|>user\n")

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=lambda **kw: kw))  # the engine is fake
    worker = RolloutWorker.__new__(RolloutWorker)
    worker.llm, worker.tokenizer, worker.asleep, worker.version = FakeEngine("the answer is four"), tok, False, 0
    worker.cfg = configure(None, []).cfg.rollout
    batch = worker.generate([row], n=1)

    monkeypatch.setattr(groups, "RewardPool", InProcessPool)
    plan = configure(None, ["reward.terms=[{name: language_consistency}]", "reward.accuracy_term=language_consistency"])
    rewards = RewardGroup(plan.reward_terms)
    rewards.score(batch)
    [sample] = rewards.pools[0].seen
    assert sample.prompt == question
    assert sample.rendered_prompt == row.prompt == tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    assert batch.reward_terms["language_consistency"].tolist() == [0.0]  # Latin letters only: inconsistent


class TimingOutPool(InProcessPool):
    """Every batch past ``timeout_s``, as ``RewardPool.collect`` reports it: no rows, each sample a timeout."""

    def submit(self, samples):
        return None

    def collect(self, samples, pending):
        return [None] * len(samples), {"errors": 0, "timeouts": len(samples), "restarts": 1}, None


def test_a_terms_first_error_and_first_timeout_are_one_line_each(monkeypatch, capsys):
    """Over two faulty batches: one line for the first error (and its traceback, once) and one for the first
    timeout of each term; the later ones are only counted in the metrics."""
    import actors.groups as groups
    from actors.groups import RewardGroup
    from launch.build import configure
    from tests.test_batch import make

    fragile, sleepy = "tests.plugins.user_rewards:fragile", "tests.plugins.user_rewards:Sleepy"
    monkeypatch.setattr(groups, "RewardPool",
                        lambda term: TimingOutPool(term) if term.name == sleepy else InProcessPool(term))
    plan = configure(None, [f"reward.terms=[{{name: exact_match}}, {{name: '{fragile}', failure_score: -1.0}},"
                            f" {{name: '{sleepy}', timeout_s: 5}}]", "reward.accuracy_term=exact_match"])
    rewards = RewardGroup(plan.reward_terms)
    for _ in range(2):
        batch = make([[1, 2]] * 3)
        batch.responses, batch.answers = ["1", "boom", "2"], ["1", "1", "1"]
        metrics = rewards.score(batch)
        assert metrics[f"reward_faults/{fragile}/errors"] == 1 and metrics[f"reward_faults/{sleepy}/timeouts"] == 3
    out = capsys.readouterr()
    text = out.out + out.err
    assert [line for line in text.splitlines() if line.startswith("reward '")] == [
        f"reward '{fragile}': 1 sample failed: cannot score 'boom' (1 so far, scored failure_score=-1.0); "
        f"further errors are counted in reward_faults/{fragile}/errors; its traceback:",
        f"reward '{sleepy}': 3 samples timed out after 5 s (timeout_s=5; 3 so far, scored failure_score=0.0); "
        f"further timeouts are counted in reward_faults/{sleepy}/timeouts"]
    assert text.count("Traceback (most recent call last)") == 1


def test_a_term_of_log_only_parts_is_worth_a_float_zero():
    from rewards.api import term_value

    value = term_value({"_called": 1.0, "_valid": 0.0})
    assert value == 0.0 and isinstance(value, float)  # a tensor of these has a mean (an int tensor had none)
