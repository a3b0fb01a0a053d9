"""Learned reward models on CPU, without Ray: the losses against hand-computed numbers, the shared encoding, the
step-label rows, the ``reward`` model kind's unshifted scores, the two sources' batches and evaluation, and the
``orm``/``prm`` reward terms (the aggregation with a fake model, and a real export scored as in training)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from actors.models import MODELS, RewardModel, ValueModel
from algorithms.losses import bradley_terry_loss, step_label_loss
from algorithms.reward_models import ORM, PRM, pair_metrics, step_metrics
from launch.build import configure, prepare
from launch.sources import SOURCES
from rewards.api import RewardSample, check_scores
from rewards.registry import REWARDS
from rewards.reward_model import OutcomeRewardModel, ProcessRewardModel
from rlcore.config import ConfigError, load_config
from rlcore.data import DataError, load_step_labels, render_prompts
from rlcore.reward_inputs import encode_reward_input, step_row
from rlcore.tasks import reasoning
from rlcore.test_time import split_steps

RewardPairSource, StepLabelSource = SOURCES.resolve("reward_pairs", "s"), SOURCES.resolve("step_labels", "s")


def close(actual: torch.Tensor, expected: list[float], tol: float = 1e-5) -> bool:
    return torch.allclose(actual, torch.tensor(expected), atol=tol)


@pytest.fixture(scope="module")
def reason_model(cache_dir) -> str:
    from rlcore.assets import resolve

    return resolve("local://tiny-qwen2-reason", cache_dir, "model.path")


@pytest.fixture(scope="module")
def tokenizer(reason_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(reason_model)


class CharTokenizer:
    """One token per character (its code point): every encoding below can be computed by hand."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens  # the reward-model encoding never adds special tokens
        return [ord(c) for c in text]


# --- losses --------------------------------------------------------------------------------------------------------

def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    # -log sigmoid(d) = log(1 + e^-d): d = 2, -1, 0
    expected = [math.log1p(math.exp(-2)), math.log1p(math.exp(1)), math.log(2)]
    assert close(bradley_terry_loss(chosen, rejected), expected)  # 0.126928, 1.313262, 0.693147
    assert not close(bradley_terry_loss(rejected, chosen), expected)  # a swapped sign would fail the line above
    chosen.requires_grad_(True)
    bradley_terry_loss(chosen, rejected).sum().backward()
    assert (chosen.grad < 0).all()  # descending the loss raises the chosen score


def test_step_label_loss_by_hand_hard_and_soft_labels_only_at_masked_steps():
    logits = torch.tensor([[0.0, 2.0, float("nan")], [-1.0, 5.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # BCE(z, y) = y log(1 + e^-z) + (1 - y) log(1 + e^z): (0, 1) -> log 2; (2, 0) -> log(1 + e^2);
    # (-1, 0.5, soft) -> (log(1 + e) + log(1 + e^-1)) / 2; the padding (NaN) and unmasked tokens never count
    terms = [math.log(2), math.log1p(math.exp(2)), 0.5 * (math.log1p(math.e) + math.log1p(math.exp(-1)))]
    loss = step_label_loss(logits, labels, mask)
    assert loss.item() == pytest.approx(sum(terms) / 3, abs=1e-6)  # 1.211112
    assert step_label_loss(-logits, labels, mask).item() != pytest.approx(sum(terms) / 3, abs=1e-3)  # sign matters
    assert step_label_loss(logits, labels, torch.zeros_like(mask)).item() == 0.0


def test_pair_and_step_metrics():
    assert pair_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0])) == \
        {"pairwise_accuracy": pytest.approx(0.5), "margin": pytest.approx(0.0)}  # a win, a tie (half), a loss
    logits = torch.tensor([[1.0, -1.0, 2.0, 9.0], [-2.0, 3.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # predicted good: T F T | F T ; good: T T F | F T -> right 3 of 5; tp 2, predicted 3, good 3: F1 = 4/6
    m = step_metrics(logits, labels, mask)
    assert m == {"step_accuracy": pytest.approx(0.6), "step_f1": pytest.approx(2 / 3),
                 "step_positive_rate": pytest.approx(0.6)}


# --- the shared encoding -------------------------------------------------------------------------------------------

def test_encoding_by_hand():
    x = encode_reward_input("Q:", ["ab. ", "c"], CharTokenizer())
    assert x.prompt_ids == [ord("Q"), ord(":")]
    assert x.response_ids == [ord(c) for c in "ab. c"]
    assert x.step_ends == [3, 4]  # the last token of each step: its delimiter's space, then "c"
    assert step_row(5, x.step_ends) == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert step_row(5, x.step_ends, [0.25, 0.0]) == [0.0, 0.0, 0.0, 0.25, 0.0]
    with pytest.raises(ValueError, match="at least one step"):
        encode_reward_input("Q:", [], CharTokenizer())


def test_encoding_on_the_reasoning_model_steps_end_on_their_last_tokens(tokenizer):
    problem = reasoning.Addition(345, 678)
    prompt = render_prompts([_prompt_row(problem)], tokenizer)[0].prompt
    steps = split_steps(reasoning.solution(problem), ". ")
    assert len(steps) == 4 and steps[0].endswith("carry 1. ")
    x = encode_reward_input(prompt, steps, tokenizer)
    assert x.prompt_ids == tokenizer.encode(prompt, add_special_tokens=False)
    assert x.prompt_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # the template's own special tokens
    assert x.step_ends[-1] == len(x.response_ids) - 1
    for k, end in enumerate(x.step_ends):  # each end closes exactly the first k + 1 steps
        assert tokenizer.decode(x.response_ids[:end + 1]) == "".join(steps[:k + 1])


def _prompt_row(problem):
    from rlcore.data import PromptRow

    return PromptRow(0, [{"role": "user", "content": problem.question()}], problem.answer)


# --- step-label rows -----------------------------------------------------------------------------------------------

def _write(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_step_labels_reads_rows_and_keeps_the_other_fields(tmp_path):
    row = {"prompt": [{"role": "user", "content": "2+2?"}], "steps": ["a. ", "b"], "hard_labels": [1, 0],
           "soft_labels": [0.75, 0.0], "answer": "4", "correct": False}
    rows = load_step_labels([_write(tmp_path / "s.jsonl", [row])])
    assert rows[0].steps == ["a. ", "b"] and rows[0].labels == [1.0, 0.0]
    assert rows[0].metadata == {"soft_labels": [0.75, 0.0], "answer": "4", "correct": False}
    soft = load_step_labels([str(tmp_path / "s.jsonl")], labels_key="soft_labels")
    assert soft[0].labels == [0.75, 0.0] and soft[0].source.endswith("s.jsonl line 1")


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "hard_labels": [1]}, "expected a non-empty list of steps (strings) in 'steps', got None"),
    ({"prompt": "p", "steps": [], "hard_labels": []}, "non-empty list of steps"),
    ({"prompt": "p", "steps": ["a", ""], "hard_labels": [1, 1]}, "'steps[1]' must be a non-empty string, got ''"),
    ({"prompt": "p", "steps": ["a", 3], "hard_labels": [1, 1]}, "'steps[1]' must be a non-empty string, got 3"),
    ({"prompt": "p", "steps": ["a", "b"], "hard_labels": [1]}, "'hard_labels' has 1 labels for the 2 steps of 'steps'"),
    ({"prompt": "p", "steps": ["a"], "hard_labels": 1}, "expected a list of step labels (numbers in [0, 1])"),
    ({"prompt": "p", "steps": ["a"], "hard_labels": [1.5]}, "'hard_labels[0]' must be a number in [0, 1], got 1.5"),
    ({"prompt": "p", "steps": ["a"], "hard_labels": ["1"]}, "'hard_labels[0]' must be a number in [0, 1], got '1'"),
    ({"prompt": "", "steps": ["a"], "hard_labels": [1]}, "expected a non-empty string in 'prompt'"),
])
def test_load_step_labels_errors_name_the_file_row_and_field(tmp_path, row, message):
    good = {"prompt": "p", "steps": ["a"], "hard_labels": [1]}
    path = _write(tmp_path / "steps.jsonl", [good, row])
    with pytest.raises(DataError) as info:
        load_step_labels([path])
    assert str(info.value).startswith(f"{path} line 2: ") and message in str(info.value)
    assert "\n" not in str(info.value)


# --- the model kind -------------------------------------------------------------------------------------------------

class EchoHead(torch.nn.Module):
    """A one-label token classifier whose output at every position is that position's token id."""

    config = SimpleNamespace(pad_token_id=0)

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, use_cache=False):
        return SimpleNamespace(logits=input_ids.float()[..., None])  # [B, S, 1]


def test_reward_scores_are_read_at_each_token_not_before_it():
    cfg = load_config(None, [])
    batch = SimpleNamespace(prompt_ids=[[7, 8, 9], [5]], response_ids=[[11, 12], [21, 22, 23]],
                            response_mask=torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    scores = RewardModel(cfg).forward(EchoHead(), batch)["scores"]
    assert scores.tolist()[0][:2] == [11.0, 12.0] and scores.tolist()[1] == [21.0, 22.0, 23.0]
    # the critic's values are read one position earlier (the state before the token): a shifted reward fails above
    values = ValueModel(cfg).forward(EchoHead(), batch)["values"]
    assert values.tolist()[0][:2] == [9.0, 11.0] and values.tolist()[1] == [5.0, 21.0, 22.0]
    assert MODELS.resolve("reward", "model") is RewardModel


# --- the algorithms -------------------------------------------------------------------------------------------------

def test_orm_loss_reads_each_response_at_its_step_mask():
    cfg = load_config(None, ["algorithm.name=orm"])
    orm = ORM(cfg)
    scores = torch.tensor([[0.0, 2.0, 9.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.0]], requires_grad=True)
    step_mask = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss, metrics = orm.loss({"scores": scores}, SimpleNamespace(step_mask=step_mask))
    # pairs (chosen 2, rejected 5), (chosen 1, rejected 3): mean of log(1 + e^3), log(1 + e^2)
    assert loss.item() == pytest.approx((math.log1p(math.exp(3)) + math.log1p(math.exp(2))) / 2, abs=1e-6)
    assert metrics["pairwise_accuracy"] == 0.0 and metrics["margin"] == pytest.approx(-2.5)
    loss.backward()
    assert scores.grad[0, 2] == 0 and scores.grad[0, 1] < 0  # only the marked token is trained
    centred = ORM(cfg, ORM.Options(center_coef=0.1)).loss({"scores": scores}, SimpleNamespace(step_mask=step_mask))[0]
    assert centred.item() == pytest.approx(loss.item() + 0.1 * ((2 + 5) ** 2 + (1 + 3) ** 2) / 2, abs=1e-5)


def test_prm_loss_is_the_step_label_loss():
    prm = PRM(load_config(None, ["algorithm.name=prm"]))
    logits = torch.tensor([[0.0, 2.0], [-1.0, 5.0]])
    batch = SimpleNamespace(step_labels=torch.tensor([[1.0, 0.0], [0.4, 0.0]]),
                            step_mask=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    loss, metrics = prm.loss({"scores": logits}, batch)
    assert loss.item() == pytest.approx(step_label_loss(logits, batch.step_labels, batch.step_mask).item())
    # logit 0 -> predicted bad (label 1: wrong), 2 -> good (label 0: wrong), -1 -> bad (label 0.4 < 0.5: right)
    assert metrics["step_accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("overrides, message", [
    (["algorithm.name=orm", "learner.micro_batch_size=3"], "learner.micro_batch_size must keep chosen/rejected pairs"),
    (["algorithm.name=orm", "learner.mini_batch_size=30", "learner.world_size=2", "data.prompts_per_step=15"],
     "learner.mini_batch_size must keep chosen/rejected pairs whole"),
    (["algorithm.name=orm", "learner.max_tokens_per_micro_batch=256"],
     "learner.max_tokens_per_micro_batch=256 cuts micro-batches by length, which splits chosen/rejected pairs"),
    (["algorithm.name=orm", "algorithm.center_coef=-1"], "algorithm.center_coef=-1.0 must be >= 0"),
    (["algorithm.name=prm", "algorithm.labels_key=''"], "algorithm.labels_key is empty"),
    (["reward.terms=[{name: prm, args: {model: m, aggregate: max}}]", "reward.accuracy_term=prm"],
     "reward.terms[0].args: aggregate='max' is not one of min, last, mean, prod"),
    (["reward.terms=[{name: orm, args: {model: m, device: tpu}}]", "reward.accuracy_term=orm"],
     "reward.terms[0].args: device='tpu' is not one of auto, cpu, cuda (or cuda:N)"),
    (["reward.terms=[{name: orm}]", "reward.accuracy_term=orm"],
     "reward.terms[0].args.model: Structured config of type `ORMRewardOptions` has missing mandatory value"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        configure(None, overrides)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- the sources ----------------------------------------------------------------------------------------------------

class FakeActor:
    """The actor group's forward pass, answering with fixed scores."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def forward(self, shipment, output: str) -> torch.Tensor:
        assert output == "scores"
        return self.scores


def _source(cls, cache_dir, files, algorithm, actor, *extra):
    plan = configure(None, ["model.path=local://tiny-qwen2-reason", f"algorithm.name={algorithm}",
                            f"data.train_files=[{files[0]}]", f"data.eval_files=[{files[1]}]",
                            f"trainer.cache_dir={cache_dir}", "reference.enabled=false", "data.prompts_per_step=2",
                            "learner.mini_batch_size=2", "learner.micro_batch_size=2", *extra])
    data = prepare(plan)
    return plan.source(plan.cfg, plan.algorithm, SimpleNamespace(learners={"actor": actor}), data.train, data.eval)


def test_step_label_source_batches_labels_at_step_ends_and_evaluates(tmp_path, cache_dir, tokenizer):
    problem = reasoning.Addition(345, 678)
    steps = split_steps(reasoning.solution(problem), ". ")
    message = [{"role": "user", "content": problem.question()}]
    rows = [{"prompt": message, "steps": steps, "hard_labels": [1, 1, 0, 0], "soft_labels": [1, 0.5, 0, 0]},
            {"prompt": "What is 1 + 2?", "steps": ["1+2=3. ", "<answer>3</answer>"], "hard_labels": [1, 1],
             "soft_labels": [1, 1]}]
    files = (_write(tmp_path / "train.jsonl", rows), _write(tmp_path / "test.jsonl", rows))
    width = len(encode_reward_input("x", steps, tokenizer).response_ids)
    scores = torch.full((2, width), -3.0)
    actor = FakeActor(scores)
    source = _source(StepLabelSource, cache_dir, files, "prm", actor, "algorithm.labels_key=soft_labels")
    assert type(source) is StepLabelSource
    batch = source.collect(1).batch
    first = next(i for i in range(2) if batch.prompt_index[i] == 0)
    rendered = tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    expected = encode_reward_input(rendered, steps, tokenizer)  # the serving encoding of the rendered prompt
    assert batch.prompts[first] == rendered and batch.prompt_ids[first] == expected.prompt_ids
    assert batch.response_ids[first] == expected.response_ids
    assert batch.step_mask[first].nonzero().flatten().tolist() == expected.step_ends
    assert batch.step_labels[first][expected.step_ends].tolist() == [1.0, 0.5, 0.0, 0.0]  # the soft labels
    assert batch.step_labels[first].sum() == 1.5 and batch.response_mask[first].sum() == len(expected.response_ids)
    # evaluation: the eval rows in order; every step scored -3 (bad) but the first response's first two (+3: good)
    ends = source.eval_batch.batch.step_mask[0].nonzero().flatten()
    scores[0, ends[:2]] = 3.0
    metrics = source.evaluate()
    # soft labels >= 0.5 are good: 1, 0.5, 0, 0 | 1, 1 -> predicted good good bad bad | bad bad: 4 of 6 right
    assert metrics == {"eval/step_accuracy": pytest.approx(4 / 6), "eval/step_f1": pytest.approx(2 * 2 / (2 + 4)),
                       "eval/step_positive_rate": pytest.approx(2 / 6)}


def test_reward_pair_source_puts_chosen_first_and_evaluates(tmp_path, cache_dir, tokenizer):
    rows = [{"prompt": "What is 1 + 2?", "chosen": "<answer>3</answer>", "rejected": "<answer>4</answer>"},
            {"prompt": "What is 2 + 2?", "chosen": "<answer>4</answer>", "rejected": "<answer>5</answer>"}]
    files = (_write(tmp_path / "train.jsonl", rows), _write(tmp_path / "test.jsonl", rows))
    actor = FakeActor(None)
    source = _source(RewardPairSource, cache_dir, files, "orm", actor)
    batch = source.collect(1).batch
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and batch.scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    for i in range(4):
        row = rows[int(batch.prompt_index[i])]
        reply = row["chosen"] if i % 2 == 0 else row["rejected"]
        expected = encode_reward_input(row["prompt"], [reply], tokenizer)  # a string prompt is used as it is
        assert batch.prompt_ids[i] == expected.prompt_ids and batch.response_ids[i] == expected.response_ids
        assert batch.step_mask[i].nonzero().flatten().tolist() == [len(expected.response_ids) - 1]
        assert batch.responses[i] == reply
    actor.scores = scores = torch.zeros_like(source.eval_batch.batch.response_mask)
    last = source.eval_batch.batch.step_mask.argmax(-1)
    scores[0, last[0]], scores[1, last[1]] = 2.0, 1.0  # pair 0 ranked right by 1; pair 1 a tie
    assert source.evaluate() == {"eval/pairwise_accuracy": pytest.approx(0.75), "eval/margin": pytest.approx(0.5)}


def test_reward_pairs_need_string_responses(tmp_path, cache_dir):
    rows = [{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}]
    path = _write(tmp_path / "pairs.jsonl", rows)
    plan = configure(None, ["algorithm.name=orm", f"data.train_files=[{path}]", "data.eval_files=[]",
                            "model.path=local://tiny-qwen2-reason", f"trainer.cache_dir={cache_dir}",
                            "learner.mini_batch_size=64"])
    with pytest.raises(DataError, match=r"pairs.jsonl line 1: 'chosen' must be a string for a reward model"):
        prepare(plan)


# --- the reward terms -----------------------------------------------------------------------------------------------

class FakeScorer:
    """Stands in for a loaded reward model: every step's logit is read from its text ("... =1.5. " -> 1.5)."""

    def __init__(self, path, batch_size=32, device="auto"):
        self.calls = []

    def step_scores(self, prompts, steps):
        self.calls.append((list(prompts), [list(s) for s in steps]))
        return [[float(step.split("=")[-1].rstrip(". ")) for step in parts] for parts in steps]


@pytest.mark.parametrize("aggregate, expected", [("min", -1.0), ("last", 0.5), ("mean", None), ("prod", None)])
def test_prm_aggregates_the_sigmoid_of_its_step_scores(monkeypatch, aggregate, expected):
    monkeypatch.setattr("rewards.reward_model.RewardModelScorer", FakeScorer)
    prm = ProcessRewardModel("unused", aggregate=aggregate, delimiter=". ")
    samples = [RewardSample("Q", "x=2. x=-1. x=0.5", [], ""), RewardSample("Q", "", [], "")]
    rows = prm.score(samples)
    probs = [1 / (1 + math.exp(-z)) for z in (2.0, -1.0, 0.5)]
    value = {"min": probs[1], "last": probs[2], "mean": sum(probs) / 3, "prod": probs[0] * probs[1] * probs[2]}
    assert rows[0] == {"score": pytest.approx(value[aggregate]), "_steps": 3.0}
    assert rows[1] == {"score": 0.0, "_steps": 0.0}  # an empty response has no step: 0
    assert prm.scorer.calls == [(["Q"], [["x=2. ", "x=-1. ", "x=0.5"]])]  # cut after each delimiter, kept
    check_scores("prm", rows, 2)


def test_orm_is_the_sigmoid_of_the_whole_response(monkeypatch):
    monkeypatch.setattr("rewards.reward_model.RewardModelScorer", FakeScorer)
    orm = OutcomeRewardModel("unused")
    assert orm.score([RewardSample("Q", "a. b=-2", [], ""), RewardSample("Q", "", [], "")]) == \
        [pytest.approx(1 / (1 + math.exp(2))), 0.0]
    assert orm.scorer.calls == [(["Q"], [["a. b=-2"]])]  # one step, not cut
    with pytest.raises(ValueError, match="aggregate='max' is not one of min, last, mean, prod"):
        ProcessRewardModel("unused", aggregate="max")
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="reward model /nowhere .*: no config.json there"):
        OutcomeRewardModel("/nowhere")
    assert REWARDS.resolve("orm", "r") is OutcomeRewardModel and REWARDS.resolve("prm", "r") is ProcessRewardModel


def test_reward_models_read_the_rendered_prompt_the_policy_saw(monkeypatch):
    """A learned reward model is served the encoding it was trained on (``rlcore.reward_inputs``): the chat-rendered
    prompt (``RewardSample.rendered_prompt``), not the user's text that the other rewards read (``prompt``)."""
    monkeypatch.setattr("rewards.reward_model.RewardModelScorer", FakeScorer)
    rendered = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    sample = RewardSample("Q", "x=1", [], "", rendered_prompt=rendered)
    orm, prm = OutcomeRewardModel("unused"), ProcessRewardModel("unused", delimiter=". ")
    orm.score([sample])
    prm.score([sample])
    assert orm.scorer.calls[0][0] == prm.scorer.calls[0][0] == [rendered]
    orm.score([RewardSample("Q", "x=1", [], "")])  # a sample built by hand: its prompt is what the policy saw
    assert orm.scorer.calls[1][0] == ["Q"]


def test_an_exported_reward_model_scores_as_the_learner_does(tmp_path, reason_model, tokenizer):
    """Build the ``reward`` kind from the causal LM, export it, load it as the ``prm`` reward: its step scores are the
    learner's forward pass at the step ends of the same encoding."""
    cfg = load_config(None, [])
    kind = RewardModel(cfg)
    torch.manual_seed(0)
    model = kind.build(reason_model)
    with torch.no_grad():
        model.score.weight.normal_(std=0.1)  # a head that tells steps apart
    out = tmp_path / "rm"
    kind.save(model.state_dict(), reason_model, str(out))
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()

    problem = reasoning.Addition(27, 58)
    prompt = render_prompts([_prompt_row(problem)], tokenizer)[0].prompt
    steps = split_steps(reasoning.solution(problem), ". ")
    x = encode_reward_input(prompt, steps, tokenizer)
    batch = SimpleNamespace(prompt_ids=[x.prompt_ids], response_ids=[x.response_ids],
                            response_mask=torch.ones(1, len(x.response_ids)))
    with torch.no_grad():
        learner = kind.forward(model.eval(), batch)["scores"][0, x.step_ends]
    probs = torch.sigmoid(learner).tolist()

    sample = RewardSample(prompt, "".join(steps), [], problem.answer)
    for aggregate, expected in (("min", min(probs)), ("last", probs[-1])):
        prm = ProcessRewardModel(str(out), batch_size=2, device="cpu", aggregate=aggregate, delimiter=". ")
        assert prm.score([sample])[0] == {"score": pytest.approx(expected, abs=1e-5), "_steps": float(len(steps))}
    orm = OutcomeRewardModel(str(out), device="auto")
    whole = encode_reward_input(prompt, ["".join(steps)], tokenizer)
    batch.response_ids = [whole.response_ids]
    batch.response_mask = torch.ones(1, len(whole.response_ids))
    with torch.no_grad():
        last = kind.forward(model, batch)["scores"][0, -1]
    assert orm.score([sample])[0] == pytest.approx(torch.sigmoid(last).item(), abs=1e-5)
    assert len({round(p, 4) for p in probs}) > 1  # the scores really differ per step
