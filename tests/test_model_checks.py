"""Model folders and prompt budgets are checked before Ray starts (issue 24): one line naming the key, exit code 2.

``launch.build.load`` checks every model folder a run names (``model.path``, ``reference.path``, a learner group's
own weights, and the fields an algorithm's or a reward's ``Options`` mark with ``model_folder`` metadata: the
judge's, the ORM's and PRM's, in ``reward.terms`` and ``eval.verifier``) with ``rlcore.assets.check_model_dir``,
and ``data.max_prompt_tokens`` against the model's context. ``configure`` resolves a reward that another reward's options name (L1's
``accuracy``). None of these tests starts Ray: the command-line ones fail if ``init_ray`` is reached.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from launch.build import configure, load
from rlcore.assets import AssetError
from rlcore.config import ConfigError
from tests.test_config import ScaledAdvantage, ScaledOptions

REPO = Path(__file__).resolve().parents[1]
NEEDS = "(a Hugging Face model folder needs config.json, tokenizer files and weights)"


def model_dir(path: Path, *, config: str | dict | None = None, tokenizer: bool = True, weights: bool = True,
              context: int = 256) -> str:
    """A folder shaped like a Hugging Face model (the files' contents are not a loadable model: nothing here loads
    one). ``config`` replaces config.json's text (a dict: its JSON); None writes a Qwen2 config."""
    path.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": context}
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
        (path / "tokenizer_config.json").write_text("{}")
    if weights:
        (path / "model.safetensors").write_bytes(b"\0" * 16)
    return str(path)


@pytest.fixture
def no_ray(monkeypatch):
    """``launch.train.main`` may not reach ``init_ray``: every check under test runs before Ray starts."""
    def refuse(cfg):
        raise AssertionError("init_ray was reached: the check did not run before Ray starts")
    monkeypatch.setattr("launch.train.init_ray", refuse)


def run_cli(capsys, tmp_path, *overrides: str) -> tuple[int, list[str]]:
    """``python -m launch.train`` in this process; its exit code and its stderr's lines."""
    from launch.train import main

    code = main([f"trainer.cache_dir={tmp_path}/cache", f"trainer.output_dir={tmp_path}/run", *overrides])
    return code, capsys.readouterr().err.strip().splitlines()


# --- rlcore.assets.check_model_dir ----------------------------------------------------------------------------------


def test_check_model_dir_accepts_complete_folders(tmp_path):
    from rlcore.assets import check_model_dir

    assert check_model_dir(model_dir(tmp_path / "m"), "model.path")["model_type"] == "qwen2"
    # Sharded weights: an index whose shards are all there; a critic's folder needs no tokenizer.
    sharded = Path(model_dir(tmp_path / "sharded", weights=False, tokenizer=False))
    (sharded / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    for i in (1, 2):
        (sharded / f"model-0000{i}-of-00002.safetensors").write_bytes(b"\0" * 8)
    check_model_dir(str(sharded), "algorithm.critic_path", tokenizer=False)
    # PyTorch weights and a sentencepiece vocabulary
    legacy = Path(model_dir(tmp_path / "legacy", weights=False, tokenizer=False))
    (legacy / "pytorch_model.bin").write_bytes(b"\0" * 8)
    (legacy / "tokenizer.model").write_bytes(b"\0" * 8)
    check_model_dir(str(legacy), "model.path")


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir() or str(p), "{p} has no config.json"),
    (lambda p: model_dir(p, config="{not json"), "{p}/config.json is not valid JSON"),
    (lambda p: model_dir(p, config="[1, 2]"), "{p}/config.json is not a JSON object"),
    (lambda p: model_dir(p, config={"hidden_size": 8}), "{p}/config.json has no model_type"),
    (lambda p: model_dir(p, tokenizer=False), "{p} has no tokenizer files"),
    (lambda p: model_dir(p, weights=False), "{p} has no weights"),
    (lambda p: (Path(model_dir(p)) / "model.safetensors").write_bytes(b"") or str(p), "{p}/model.safetensors is empty"),
    (lambda p: (Path(model_dir(p)) / "config.json").unlink() or (p / "config.json").mkdir() or str(p),
     "{p}/config.json is not a file"),
    (lambda p: (Path(model_dir(p)) / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-2.safetensors"}})) and str(p),
     "{p}/model.safetensors.index.json names model-2.safetensors, which is missing"),
    (lambda p: (Path(model_dir(p)) / "model.safetensors.index.json").write_text("{}") and str(p),
     "{p}/model.safetensors.index.json has no weight_map"),
    (lambda p: (p.parent / "file").write_text("x") and str(p.parent / "file"), "{p} is not a folder"),
])
def test_check_model_dir_refuses_with_one_line_naming_the_key(tmp_path, make, problem):
    from rlcore.assets import check_model_dir

    path = make(tmp_path / "m")
    with pytest.raises(AssetError) as info:
        check_model_dir(path, "model.path")
    text = str(info.value)
    assert text.startswith(f"model.path: {problem.format(p=path)}") and "\n" not in text, text


# --- model.path, reference.path, a learner group's own weights: exit 2 before Ray starts --------------------------


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir() or str(p), "{p} has no config.json " + NEEDS),
    (lambda p: model_dir(p, config='{"model_type": "qwen2",'), "{p}/config.json is not valid JSON"),
    (lambda p: model_dir(p, weights=False), "{p} has no weights"),
])
def test_cli_bad_model_folder_exits_2_before_ray(tmp_path, capsys, no_ray, make, problem):
    path = make(tmp_path / "model")
    code, lines = run_cli(capsys, tmp_path, f"model.path={path}")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"input error: model.path: {problem.format(p=path)}"), lines


def test_cli_process_prints_only_the_line(tmp_path):
    """The real command: an empty model folder is the one line on stderr, exit code 2 (it used to be a traceback of
    some 40 lines once Ray had started)."""
    (tmp_path / "model").mkdir()
    proc = subprocess.run([sys.executable, "-m", "launch.train", f"model.path={tmp_path}/model",
                           f"trainer.cache_dir={tmp_path}/cache", f"trainer.output_dir={tmp_path}/run"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == f"input error: model.path: {tmp_path}/model has no config.json {NEEDS}"


def test_cli_bad_reference_folder_exits_2_before_ray(tmp_path, capsys, no_ray):
    policy, teacher = model_dir(tmp_path / "policy"), model_dir(tmp_path / "teacher", weights=False)
    code, lines = run_cli(capsys, tmp_path, f"model.path={policy}", f"reference.path={teacher}")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"input error: reference.path: {teacher} has no weights"), lines


def test_critic_folder_is_checked_without_a_tokenizer(tmp_path):
    policy = model_dir(tmp_path / "policy")
    critic = tmp_path / "critic"
    critic.mkdir()
    overrides = [f"model.path={policy}", "algorithm.name=ppo", f"trainer.cache_dir={tmp_path}/cache"]
    plan = configure(None, [*overrides, f"algorithm.critic_path={critic}"])
    with pytest.raises(AssetError, match=rf"^the model path of learner group 'critic': {critic} has no config.json"):
        load(plan)
    # A critic exported by training (a value model) has no tokenizer of its own: that is fine.
    plan = configure(None, [*overrides, f"algorithm.critic_path={model_dir(critic, tokenizer=False)}"])
    load(plan)
    assert plan.learners["critic"].spec.model_path == str(critic)


@dataclass
class TeacherOptions(ScaledOptions):
    teacher: Optional[str] = field(default=None, metadata={"model_folder": True})  # noqa: UP045
    """A model folder the algorithm reads (as distill_sft's teacher_path)."""


class WithTeacher(ScaledAdvantage):
    """A user's algorithm whose options name a model folder: ``load`` checks it, knowing nothing of the algorithm."""

    Options = TeacherOptions


def test_model_folders_in_an_algorithms_options_are_checked(tmp_path):
    empty = tmp_path / "teacher"
    empty.mkdir()
    base = [f"model.path={model_dir(tmp_path / 'policy')}", f"trainer.cache_dir={tmp_path}/cache",
            f"algorithm.name={__name__}:WithTeacher"]
    with pytest.raises(AssetError, match=rf"^algorithm\.teacher: {empty} has no config.json"):
        load(configure(None, [*base, f"algorithm.teacher={empty}"]))
    load(configure(None, [*base, f"algorithm.teacher={model_dir(empty)}"]))
    load(configure(None, base))  # unset: nothing to check


# --- reward terms' model folders ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reward", ["orm", "prm", "judge"])
def test_reward_options_declare_their_model_folders(reward):
    """The judge's, ORM's and PRM's ``model`` is marked as a model folder in their Options: ``load`` finds it there,
    knowing no reward by name."""
    from rewards.registry import REWARDS
    from rlcore.plugins import options_class

    fields = {f.name: f for f in dataclasses.fields(options_class(REWARDS.resolve(reward, "reward")))}
    assert fields["model"].metadata.get("model_folder")


EXPORT = "; export a reward model with algorithm.name=orm or prm"


@pytest.mark.parametrize("term, key, hint", [
    ("{name: orm, args: {model: MODEL}}", "reward.terms[1].args.model", EXPORT),
    ("{name: prm, args: {model: MODEL, delimiter: '. '}}", "reward.terms[1].args.model", EXPORT),
    ("{name: judge, args: {model: MODEL}}", "reward.terms[1].args.model", ""),
    ("{name: confidence, args: {model: MODEL}}", "reward.terms[1].args.model",
     "; name the policy's export (trainer.output_dir/final) or a Hugging Face causal LM folder"),
    # a reward named by another's options (L1's accuracy), with the folder in its own args
    ("{name: l1, args: {accuracy: orm, accuracy_args: {model: MODEL}}}", "reward.terms[1].args.accuracy_args.model",
     EXPORT),
])
def test_cli_reward_model_folder_exits_2_before_ray(tmp_path, capsys, no_ray, term, key, hint):
    """A missing ORM/PRM/judge folder used to surface only when the reward actor started, after Ray."""
    policy, empty = model_dir(tmp_path / "policy"), tmp_path / "rm"
    empty.mkdir()
    terms = f"reward.terms=[{{name: exact_match}}, {term.replace('MODEL', str(empty))}]"
    code, lines = run_cli(capsys, tmp_path, f"model.path={policy}", terms)
    assert code == 2
    assert lines == [f"input error: {key}: {empty} has no config.json {NEEDS}{hint}"], lines
    # and one that is not there at all, given relative to where the run starts
    code, lines = run_cli(capsys, tmp_path, f"model.path={policy}",
                          f"reward.terms=[{{name: exact_match}}, {term.replace('MODEL', 'outputs/no-such-rm')}]")
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(f"input error: {key}: path not found: outputs/no-such-rm"), lines


def test_a_relative_reward_model_path_is_kept_as_given(tmp_path, monkeypatch):
    """The reward actors read a relative ``model`` from their own working directory (the ORM's docs): ``load`` checks
    it from here and leaves it as written."""
    monkeypatch.chdir(tmp_path)
    policy = model_dir(tmp_path / "policy")
    model_dir(tmp_path / "outputs" / "orm")
    plan = configure(None, [f"model.path={policy}", f"trainer.cache_dir={tmp_path}/cache", "reward.accuracy_term=orm",
                            "reward.terms=[{name: orm, args: {model: outputs/orm}}]"])
    load(plan)
    assert plan.reward_terms[0].args["model"] == "outputs/orm"


def test_a_local_judge_model_is_built_then_checked(tmp_path, monkeypatch):
    """``local://`` names a judge as it names a policy: built (here a stand-in builder), checked, its path written
    back where the reward actor reads it."""
    import rlcore.assets as assets

    built = []
    monkeypatch.setitem(assets.BUILDERS, "tiny-qwen2-arith", lambda path: built.append(model_dir(path)))
    judge = "{name: judge, args: {model: 'local://tiny-qwen2-arith'}}"
    plan = configure(None, [f"trainer.cache_dir={tmp_path}/cache", "reward.accuracy_term=exact_match",
                            f"reward.terms=[{{name: exact_match}}, {judge}]"])
    load(plan)
    path = str((tmp_path / "cache" / "tiny-qwen2-arith").resolve())
    assert plan.cfg.model.path == path and plan.reward_terms[1].args["model"] == path
    assert plan.cfg.reward.terms[1].args["model"] == path  # config.yaml shows the folder in use
    assert built == [path, path]


def test_eval_verifier_model_folders_are_checked(tmp_path):
    from launch.evaluate import for_evaluation

    policy, orm = model_dir(tmp_path / "policy"), model_dir(tmp_path / "orm")
    prm = tmp_path / "prm"
    prm.mkdir()
    overrides = [f"model.path={policy}", f"trainer.cache_dir={tmp_path}/cache", f"eval.verifier.args.model={orm}",
                 f"eval.search_verifier.args.model={prm}"]
    plan = configure(REPO / "launch/configs/tts_reasoning.yaml", overrides)
    for_evaluation(plan)
    with pytest.raises(AssetError, match=rf"^eval\.search_verifier\.args\.model: {prm} has no config.json"):
        load(plan)


def test_eval_models_are_checked_before_ray_and_the_first_starts_the_engines(tmp_path, local_model):
    """``eval.models``: each a complete folder with the first one's architecture, each name a folder name; the
    first replaces model.path, and each name is a results folder an earlier evaluation's may not be mixed with."""
    import shutil

    from launch.evaluate import for_evaluation

    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(local_model, first)
    shutil.copytree(local_model, second)

    def plan_for(models: str):
        return configure(None, [f"trainer.cache_dir={tmp_path}/cache", "data.eval_files=[x.jsonl]",
                                f"eval.models={{{models}}}"])

    plan = plan_for(f"a: {first}, b: {second}")
    outputs = for_evaluation(plan)
    assert plan.cfg.model.path == str(first) and dict(plan.cfg.eval.models) == {"a": str(first), "b": str(second)}
    assert outputs.results[-2:] == ("a", "b") and "eval_results.json" in outputs.results
    with pytest.raises(AssetError, match=rf"^eval\.models\.b: path not found: {tmp_path / 'nope'}$"):
        for_evaluation(plan_for(f"a: {first}, b: {tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match=r"^eval\.models\.a/b: a model's name is the folder its results go to"):
        for_evaluation(plan_for(f"'a/b': {first}"))
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 7}))
    with pytest.raises(ConfigError, match=rf"^eval\.models\.b: {second} has num_hidden_layers=7, eval\.models\.a has "
                                          rf"{config['num_hidden_layers']}; the rollout engines load"):
        for_evaluation(plan_for(f"a: {first}, b: {second}"))


# --- data.max_prompt_tokens against the model's context --------------------------------------------------------------


def test_cli_max_prompt_tokens_over_the_context_exits_2_before_ray(tmp_path, capsys, no_ray):
    policy = model_dir(tmp_path / "policy", context=64)
    code, lines = run_cli(capsys, tmp_path, f"model.path={policy}", "data.max_prompt_tokens=100")
    assert code == 2
    assert lines == [f"config error: data.max_prompt_tokens=100 is more than the context of model.path {policy}: "
                     f"max_position_embeddings=64 in its config.json; vLLM refuses a prompt that long: set "
                     f"data.max_prompt_tokens below 64"], lines


def test_max_model_len_limits_the_prompt_budget(tmp_path):
    policy = model_dir(tmp_path / "policy", context=64)
    base = [f"model.path={policy}", f"trainer.cache_dir={tmp_path}/cache"]
    with pytest.raises(ConfigError, match=r"^data\.max_prompt_tokens=40 is more than rollout\.max_model_len=32"):
        load(configure(None, [*base, "data.max_prompt_tokens=40", "rollout.max_model_len=32"]))
    with pytest.raises(ConfigError, match=rf"^rollout\.max_model_len=128 is more than the context of model.path "
                                          rf"{policy}: max_position_embeddings=64"):
        load(configure(None, [*base, "data.max_prompt_tokens=40", "rollout.max_model_len=128"]))
    # within the context (the default budget equal to it is accepted, as the built-in model's presets have it)
    load(configure(None, [*base, "data.max_prompt_tokens=64"]))
    load(configure(None, [*base, "data.max_prompt_tokens=20", "rollout.max_model_len=32"]))


# --- L1's accuracy reward ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    ("{accuracy: exact_mtch}", "reward.terms[1].args.accuracy='exact_mtch' is not a registered reward; registered: "
                               "answer_match, confidence, env_return, exact_match, genrm, judge, l1"),
    ("{accuracy: numeric_match, accuracy_args: {tol: 1}}",
     "unknown key 'reward.terms[1].args.accuracy_args.tol'; allowed under 'reward.terms[1].args.accuracy_args': "
     "tolerance"),
    ("{accuracy: numeric_match, accuracy_args: {tolerance: x}}", "reward.terms[1].args.accuracy_args.tolerance: "
                                                                 "Value 'x' of type 'str' could not be converted"),
    ("{accuracy: 'rewards.api:RewardSample'}", "reward.terms[1].args.accuracy: reward 'rewards.api:RewardSample': "
                                               "class RewardSample has no score(samples) method"),
])
def test_l1_accuracy_reward_is_checked_at_configure(args, message):
    """A misspelt L1 ``accuracy`` used to fail only when the reward actor started."""
    with pytest.raises(ConfigError) as info:
        configure(None, [f"reward.terms=[{{name: exact_match}}, {{name: l1, args: {args}}}]"])
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_l1_accuracy_args_are_parsed_with_every_option_in_force():
    """As a term's own args are: config.yaml shows the accuracy reward's defaults in force too."""
    plan = configure(None, ["reward.terms=[{name: exact_match}, {name: l1, args: {accuracy: numeric_match}}]"])
    args = plan.reward_terms[1].args
    assert args["accuracy"] == "numeric_match" and args["accuracy_args"] == {"tolerance": 1e-6}
    assert plan.cfg.reward.terms[1].args["accuracy_args"] == {"tolerance": 1e-6}


def test_a_prompt_that_fills_the_context_is_named_by_its_row(tmp_path, local_model):
    """vLLM refuses a prompt of the context's length (no room for a response), which data.max_prompt_tokens equal
    to the context lets through: ``render`` names the row, as for a prompt over the budget."""
    import shutil

    from transformers import AutoTokenizer

    from launch.build import prepare
    from rlcore.chat import encode_prompt
    from rlcore.data import DataError

    policy = tmp_path / "policy"
    shutil.copytree(local_model, policy)
    prompt = "12+34="
    count = len(encode_prompt(prompt, False, AutoTokenizer.from_pretrained(policy)))
    config = json.loads((policy / "config.json").read_text())
    (policy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": count}))
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"prompt": prompt, "answer": "46"}) + "\n")
    plan = configure(None, [f"model.path={policy}", f"data.train_files=[{train}]", "data.eval_files=[]",
                            f"data.max_prompt_tokens={count}", f"trainer.cache_dir={tmp_path}/cache"])
    with pytest.raises(DataError) as refused:
        prepare(plan)
    assert str(refused.value) == (f"{train} line 1: prompt has {count} tokens, all of the context of model.path "
                                  f"{policy}: max_position_embeddings={count} in its config.json: no room is left for "
                                  "a response (vLLM refuses it); shorten the prompt or drop the row")
    (policy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": count + 1}))
    prepare(configure(None, [f"model.path={policy}", f"data.train_files=[{train}]", "data.eval_files=[]",
                             f"data.max_prompt_tokens={count}", f"trainer.cache_dir={tmp_path}/cache"]))
