"""The config: the core sections (``rlcore.config``) and the plug-ins' options (``launch.build.configure``)."""

import dataclasses
import os
import re
import subprocess
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from algorithms import ALGORITHMS, AlgorithmBase, group_advantages, policy_loss
from algorithms.grpo import GRPO, GRPOOptions
from launch.build import configure
from rewards import REWARDS, TRANSFORMS
from rlcore.config import EVAL_METHODS, Config, ConfigError, load_config
from rlcore.plugins import field_docs, options_class

REPO = Path(__file__).resolve().parents[1]
EVAL_PRESETS = ("tts_reasoning.yaml",)
"""Presets of ``launch.evaluate`` and ``launch.label_steps``: no algorithm of their own."""
PRESETS = sorted(p for p in (REPO / "launch" / "configs").glob("*.yaml") if p.name not in EVAL_PRESETS)
GRPO_KEYS = ("clip_low, clip_high, dual_clip, kl_coef, kl_kind, loss_agg, entropy_coef, old_logprobs, "
             "off_policy_correction, is_cap, norm_by_std, advantage, "
             "ratio, overlong_buffer, overlong_penalty, dynamic_sampling, max_sampling_rounds")


# A user's algorithm with options of its own, named by import path (tests.test_config:ScaledAdvantage).
@dataclass
class ScaledOptions:
    factor: float = 0.5
    """Multiplies every group-centred score."""
    center: bool = True
    """Subtract the group mean first."""


class ScaledAdvantage(AlgorithmBase):
    """Group-centred scores times ``factor`` as the advantage."""

    Options = ScaledOptions

    @classmethod
    def validate(cls, cfg, options):
        if options.factor <= 0:
            raise ConfigError(f"algorithm.factor={options.factor} must be > 0")

    def compute_advantages(self, batch):
        centred = group_advantages(batch.scores, batch.group_ids, norm_by_std=False) if self.options.center \
            else batch.scores
        batch.advantages = self.options.factor * centred

    def loss(self, outputs, batch):
        return policy_loss(outputs["logprobs"], batch.old_logprobs, batch.advantages, batch.response_mask)


USER_ALGORITHM = f"{__name__}:ScaledAdvantage"


# --- defaults and presets ----------------------------------------------------------------------


def test_defaults_are_valid():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.algorithm == {"name": "grpo"}  # the core leaves the plug-in's node to the plug-in
    plan = configure()
    assert type(plan.algorithm) is GRPO and plan.algorithm.options == GRPOOptions()
    assert plan.cfg.algorithm == {"name": "grpo", **dataclasses.asdict(GRPOOptions())}  # every option written back
    assert [t.name for t in plan.reward_terms] == ["exact_match"] and plan.transforms == []


def assert_written(written, actual, where: str) -> None:
    """Every value in the YAML node ``written`` is the one in force in ``actual`` (dataclass, dict or list)."""
    if isinstance(written, dict):
        for key, value in written.items():
            child = actual[key] if isinstance(actual, dict) else getattr(actual, key)
            assert_written(value, child, f"{where}.{key}" if where else key)
    elif isinstance(written, list):
        assert len(actual) == len(written), where
        for i, (value, child) in enumerate(zip(written, actual)):
            assert_written(value, child, f"{where}[{i}]")
    else:
        assert actual == written and type(actual) in (type(written), float), f"{where}: {actual!r} != {written!r}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_with_every_value_in_force(preset):
    written = OmegaConf.to_container(OmegaConf.load(preset))
    node = written["algorithm"]
    plan = configure(preset)
    cls = ALGORITHMS.resolve(node["name"], "algorithm.name")
    assert type(plan.algorithm) is cls
    options = plan.algorithm.options
    assert type(options) is options_class(cls)
    own = {k: v for k, v in node.items() if k != "name"}
    assert own, "a preset should set some of its algorithm's options"
    assert_written(own, options, "algorithm")  # parsed into the options dataclass, nested critic included
    # config.yaml shows every option in force: the written values, the rest at their defaults
    assert set(plan.cfg.algorithm) == {"name"} | {f.name for f in dataclasses.fields(options)}
    assert plan.cfg.algorithm == {"name": node["name"], **dataclasses.asdict(options)}
    assert_written(written, plan.cfg, "")  # and the core sections as written
    for i, term in enumerate(written["reward"]["terms"]):  # the reward terms' args reach the reward as written
        assert plan.reward_terms[i].name == term["name"]
        assert_written(term.get("args", {}), plan.reward_terms[i].args, f"reward.terms[{i}].args")
    for i, transform in enumerate(written["data"].get("transforms", [])):
        assert type(plan.transforms[i]) is TRANSFORMS.resolve(transform["name"], "data.transforms")
        assert_written({k: v for k, v in transform.items() if k != "name"}, plan.transforms[i].options,
                       f"data.transforms[{i}]")


def test_presets_cover_every_algorithm():
    names = {OmegaConf.load(p).algorithm.name for p in PRESETS}
    assert names == set(ALGORITHMS.names())


def test_overrides_win_over_preset():
    cfg = load_config(PRESETS[0], ["trainer.total_steps=20", "rollout.num_workers=2", "learner.lr=3e-4"])
    assert (cfg.trainer.total_steps, cfg.rollout.num_workers, cfg.learner.lr) == (20, 2, 3e-4)
    plan = configure(REPO / "launch/configs/ppo_arithmetic.yaml", ["algorithm.critic.lr=1e-3", "algorithm.lam=0.9"])
    assert plan.algorithm.options.critic.lr == 1e-3 and plan.algorithm.options.lam == 0.9
    assert plan.algorithm.options.critic.mini_batch_size == 256  # the preset's, beside the override


def test_core_config_knows_no_plugin():
    # rlcore is a leaf: load_config checks only the core and keeps the plug-in's node as given ...
    cfg = load_config(None, ["algorithm.clip_hihg=0.3"])
    assert cfg.algorithm == {"name": "grpo", "clip_hihg": 0.3}
    with pytest.raises(ConfigError, match="unknown key 'algorithm.clip_hihg'"):  # ... the composition root checks it
        configure(None, ["algorithm.clip_hihg=0.3"])
    # (that no rlcore module imports a plug-in package is tests/test_architecture.py's)


# --- one-line errors naming the key -------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        # core
        (["trainer.bogus=1"], "unknown key 'trainer.bogus'; allowed under 'trainer': total_steps"),
        (["bogus.x=1"], "unknown key 'bogus'; allowed sections: model, data"),
        (["trainer.total_steps=abc"], "trainer.total_steps: Value 'abc' of type 'str' could not be converted to Integer"),
        (["learner.mini_batch_size=48"], "learner.mini_batch_size=48 must divide data.prompts_per_step × rollout.n = 256"),
        (["learner.world_size=3"], "must be divisible by learner.world_size=3"),
        (["learner.epochs=0"], "learner.epochs=0 must be > 0"),
        (["model.dtype=int8"], "model.dtype='int8' is not one of float32, bfloat16, float16"),
        (["reward.accuracy_term=other"], "reward.accuracy_term='other' is not among reward.terms: exact_match"),
        (["trainer.total_steps=0"], "trainer.total_steps=0 must be > 0"),
        (["label.completions=-1"], "label.completions=-1 must be >= 0"),
        (["label.completions=2", "label.min_correct=3"], "label.min_correct=3 must be <= label.completions=2"),
        (["label.samples=0"], "label.samples=0 must be > 0"),
        (["data.prompts_per_step=2", "rollout.num_workers=4", "learner.mini_batch_size=16"],
         "leaves some of rollout.num_workers=4 idle"),
        (["nonsense"], "override 'nonsense' is not key=value"),
        # keys that moved: the old ones are unknown now
        (["algorithm.mini_batch_size=48"], "unknown key 'algorithm.mini_batch_size'; allowed under 'algorithm': clip_low"),
        (["algorithm.ppo_epochs=2"], "unknown key 'algorithm.ppo_epochs'"),
        (["critic.lr=1"], "unknown key 'critic'; allowed sections: model, data"),
        (["model.critic_path=/x"], "unknown key 'model.critic_path'; allowed under 'model': path, dtype"),
        (["data.length_target_mode=exact"], "unknown key 'data.length_target_mode'; allowed under 'data': train_files"),
        # the algorithm and its options
        (["algorithm.name=nope"], "algorithm.name='nope' is not a registered algorithm; registered: distill_sft, dpo, "
                                  "grpo, kd, on_policy_distill, online_dpo, orm, ppo, prm, rejection_sft, sft (or give an "
                                  "import path 'module:Class')"),
        (["algorithm.name=no_such_pkg_xyz:Algo"], "algorithm.name='no_such_pkg_xyz:Algo': no module named 'no_such_pkg_xyz'"),
        (["algorithm.name=algorithms.grpo:Nope"], "algorithm.name='algorithms.grpo:Nope': module 'algorithms.grpo' has "
                                                  "no attribute 'Nope'"),
        (["algorithm.clip_hihg=0.3"], f"unknown key 'algorithm.clip_hihg'; allowed under 'algorithm': {GRPO_KEYS}"),
        (["algorithm.clip_high=abc"], "algorithm.clip_high: Value 'abc' of type 'str' could not be converted to Float"),
        (["algorithm.gamma=0.9"], "unknown key 'algorithm.gamma'; allowed under 'algorithm': clip_low"),  # PPO's
        (["algorithm.critic.lr=1"], "unknown key 'algorithm.critic'; allowed under 'algorithm': clip_low"),  # PPO's
        (["rollout.n=1"], "rollout.n=1: GRPO compares samples within a group"),
        (["algorithm.kl_kind=k9"], "algorithm.kl_kind='k9' is not one of k1, k2, k3, abs"),
        (["algorithm.loss_agg=sum"], "algorithm.loss_agg='sum' is not one of token-mean"),
        (["reference.enabled=false"], "algorithm.kl_coef=0.001 needs reference.enabled=true"),
        (["algorithm.name=ppo", "algorithm.critic.mini_batch_size=48"],
         "algorithm.critic.mini_batch_size=48 must divide data.prompts_per_step × rollout.n = 256"),
        (["algorithm.name=ppo", "algorithm.critic.lr=abc"], "algorithm.critic.lr: Value 'abc' of type 'str'"),
        (["algorithm.name=ppo", "algorithm.critic.lrr=1"],
         "unknown key 'algorithm.critic.lrr'; allowed under 'algorithm.critic': world_size, backend, lr"),
        (["algorithm.name=ppo", "algorithm.critic.epochs=0"], "algorithm.critic.epochs=0 must be > 0"),
        (["algorithm.name=dpo", "algorithm.norm_by_std=false"], "unknown key 'algorithm.norm_by_std'; allowed under "
                                                                "'algorithm': beta, loss, label_smoothing"),
        # rewards and their args
        (["reward.terms=[{name: nope}]", "reward.accuracy_term=nope"],
         "reward.terms[0].name='nope' is not a registered reward; registered: answer_match, confidence, env_return, exact_match, genrm, judge, l1"),
        (["reward.terms=[{name: nope}]"], "reward.terms[0].name='nope' is not a registered reward; registered: answer_match, confidence, env_return, exact_match"),
        (["reward.terms=[{name: numeric_match, args: {tolerance: x}}]", "reward.accuracy_term=numeric_match"],
         "reward.terms[0].args.tolerance: Value 'x' of type 'str' could not be converted to Float"),
        (["reward.terms=[{name: numeric_match, args: {tol: 1}}]", "reward.accuracy_term=numeric_match"],
         "unknown key 'reward.terms[0].args.tol'; allowed under 'reward.terms[0].args': tolerance"),
        (["reward.terms=[{name: exact_match}, {name: l1, args: {alpha: x}}]"], "reward.terms[1].args.alpha: Value 'x'"),
        (["reward.terms=[{name: judge}]", "reward.accuracy_term=judge"],
         "reward.terms[0].args.model: Structured config of type `JudgeOptions` has missing mandatory value: model"),
        (["reward.terms=[{name: 'rewards.api:RewardSample'}]", "reward.accuracy_term=rewards.api:RewardSample"],
         "reward.terms[0].name: reward 'rewards.api:RewardSample': class RewardSample has no score(samples) method"),
        # data transforms and their options
        (["data.transforms=[{name: nope}]"], "data.transforms[0].name='nope' is not a registered data transform; "
                                             "registered: length_target"),
        (["data.transforms=[{mode: exact}]"], "data.transforms[0].name is missing"),
        (["data.transforms=[{name: length_target, lo: 5}]"],
         "unknown key 'data.transforms[0].lo'; allowed under 'data.transforms[0]': mode, low, high"),
        (["data.transforms=[{name: length_target, low: x}]"], "data.transforms[0].low: Value 'x'"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        configure(None, overrides)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


@pytest.mark.parametrize(
    "overrides, key, problem",
    [
        (["data.transforms=[{name: length_target, mode: short}]"], "data.transforms[0]", "short"),
        (["data.transforms=[{name: length_target, low: 5, high: 2}]"], "data.transforms[0]", "low"),
        (["reward.terms=[{name: exact_match}, {name: l1, args: {mode: both}}]"], "reward.terms[1].args", "both"),
    ],
)
def test_plugin_option_checks_are_config_errors(overrides, key, problem):
    """An option value that the plug-in's own ``Options`` check refuses (``__post_init__``): one line naming the node."""
    with pytest.raises(ConfigError) as info:
        configure(None, overrides)
    text = str(info.value)
    assert key in text and problem in text and "\n" not in text


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  total_steps: 1\n  total_steps: 2\n")
    with pytest.raises(ConfigError, match=f"{bad}: not a valid YAML config"):
        load_config(bad)


# --- a user's algorithm by import path ----------------------------------------------------------


def test_user_algorithm_by_import_path_with_its_own_options(tmp_path):
    from launch.sources import SOURCES
    from tests.test_batch import make

    plan = configure(None, [f"algorithm.name={USER_ALGORITHM}", "algorithm.factor=2"])
    assert type(plan.algorithm) is ScaledAdvantage
    assert plan.algorithm.options == ScaledOptions(factor=2.0, center=True)
    assert plan.cfg.algorithm == {"name": USER_ALGORITHM, "factor": 2.0, "center": True}
    assert list(plan.learners) == ["actor"] and plan.source is SOURCES.resolve("rollout", "source")
    batch = make([[1]] * 4)
    batch.group_ids, batch.scores = torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, 0.0, 1.0, 1.0])
    plan.algorithm.compute_advantages(batch)
    assert batch.advantages.tolist() == [1.0, -1.0, 0.0, 0.0]  # 2 × (score − group mean)
    # the same from a YAML preset
    preset = tmp_path / "scaled.yaml"
    preset.write_text(f"algorithm:\n  name: {USER_ALGORITHM}\n  factor: 3\n  center: false\n")
    assert configure(preset).algorithm.options == ScaledOptions(factor=3.0, center=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["algorithm.factor=abc"], "algorithm.factor: Value 'abc' of type 'str' could not be converted to Float"),
        (["algorithm.clip_high=0.3"], "unknown key 'algorithm.clip_high'; allowed under 'algorithm': factor, center"),
        (["algorithm.factor=-1"], "algorithm.factor=-1.0 must be > 0"),  # its own validate()
        (["rollout.n=1", "learner.mini_batch_size=32"], None),  # GRPO's checks are not its checks
    ],
)
def test_user_algorithm_options_are_checked(overrides, message):
    if message is None:
        assert configure(None, [f"algorithm.name={USER_ALGORITHM}", *overrides]).algorithm.group_size() == 1
        return
    with pytest.raises(ConfigError) as info:
        configure(None, [f"algorithm.name={USER_ALGORITHM}", *overrides])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_registered_user_algorithm(monkeypatch):
    monkeypatch.setitem(ALGORITHMS.entries, "scaled", ScaledAdvantage)  # as ALGORITHMS.register would, undone after
    plan = configure(None, ["algorithm.name=scaled", "algorithm.factor=4"])
    assert type(plan.algorithm) is ScaledAdvantage and plan.algorithm.options.factor == 4.0
    with pytest.raises(ConfigError, match="registered: distill_sft, dpo, grpo, kd, on_policy_distill, online_dpo, orm, ppo, prm, rejection_sft, scaled, sft"):
        configure(None, ["algorithm.name=nope"])
    with pytest.raises(ValueError, match="algorithm 'scaled' is already registered"):
        ALGORITHMS.register("scaled", GRPO)
    assert ALGORITHMS.register("scaled", ScaledAdvantage) is ScaledAdvantage  # the same entry again is fine


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, line",
    [
        ("trainer.total_stepz=3", "config error: unknown key 'trainer.total_stepz'; allowed under 'trainer': "
                                  "total_steps, output_dir, seed, eval_every, save_every, keep_checkpoints, max_skipped_steps, max_restarts, resume, "
                                  "overwrite, export, loggers, cache_dir, placement"),
        ("algorithm.clip_hihg=1", f"config error: unknown key 'algorithm.clip_hihg'; allowed under 'algorithm': "
                                  f"{GRPO_KEYS}"),
    ],
)
def test_cli_exits_2_with_one_line(override, line):
    proc = subprocess.run([sys.executable, "-m", "launch.train", override], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [line]


def test_cli_missing_model_path_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "launch.train", f"model.path={tmp_path}/missing"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"input error: model.path: path not found: {tmp_path}/missing"


def test_cli_prompt_too_long_exits_2_with_one_line_while_ray_starts(tmp_path):
    """Prompt lengths are checked when the prompts are rendered, in a thread while the local Ray and the learners
    start: the error is still the only line, after they have started."""
    proc = subprocess.run([sys.executable, "-m", "launch.train", "data.max_prompt_tokens=3",
                           f"trainer.output_dir={tmp_path}/run"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert re.fullmatch(r"input error: \S+/arithmetic-train\.jsonl line 1: prompt has \d+ tokens, more than "
                        r"data\.max_prompt_tokens=3", proc.stderr.strip()), proc.stderr[-3000:]


@pytest.mark.parametrize("code", [0, 3])
def test_a_command_that_succeeded_exits_without_the_teardown_and_keeps_its_output(code):
    """``exit_process``: 0 skips the interpreter's teardown (atexit handlers included) after flushing every stream;
    any other code exits the usual way."""
    script = ("import atexit, logging, sys\nfrom launch.train import exit_process\n"
              "atexit.register(lambda: print('teardown ran'))\n"
              "logging.basicConfig(stream=sys.stderr); logging.warning('logged')\n"
              "sys.stdout.write('written, not flushed')\n"
              f"exit_process({code})\nprint('not reached')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code
    assert proc.stdout == ("written, not flushed" if code == 0 else "written, not flushedteardown ran\n")
    assert "logged" in proc.stderr


# --- documentation -------------------------------------------------------------------------------


def dataclasses_under(cls: type) -> list[type]:
    """``cls`` and every dataclass its fields hold (directly, in a list or Optional), depth first."""
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        for t in (hint, *typing.get_args(hint)):
            if dataclasses.is_dataclass(t) and t not in found:
                found += [c for c in dataclasses_under(t) if c not in found]
    return found


def undocumented(cls: type) -> list[str]:
    sections = {f.name for f in dataclasses.fields(cls)
                if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])}
    return [f"{cls.__name__}.{name}" for name, _, _, doc in field_docs(cls) if not doc and name not in sections]


def test_every_field_has_a_docstring():
    core = dataclasses_under(Config)
    assert {c.__name__ for c in core} >= {"ModelConfig", "DataConfig", "RolloutConfig", "ReferenceConfig",
                                          "RewardConfig", "RewardTermConfig", "LearnerConfig", "TrainerConfig",
                                          "RayConfig"}
    plugins = [options_class(p) for registry in (ALGORITHMS, REWARDS, TRANSFORMS) for p in registry.entries.values()]
    options = [c for o in plugins if o is not None for c in dataclasses_under(o)]
    assert {c.__name__ for c in options} >= {"GRPOOptions", "PPOOptions", "DPOOptions", "OnlineDPOOptions",
                                             "NumericMatchOptions", "L1Options", "JudgeOptions", "LengthTargetOptions"}
    missing = [name for cls in dict.fromkeys(core + options) for name in undocumented(cls)]
    assert missing == []


def test_config_reference_is_up_to_date():
    from launch.make_docs import render_config_reference

    assert (REPO / "docs" / "config.md").read_text() == render_config_reference(), \
        "docs/config.md is stale: run python -m launch.make_docs"


def test_naming_another_algorithm_on_the_command_line_starts_its_node_afresh():
    ppo_preset = REPO / "launch/configs/ppo_arithmetic.yaml"
    # The preset's PPO options (gamma, lam, critic, ...) are not GRPO's: switching drops them instead of failing.
    plan = configure(ppo_preset, ["algorithm.name=grpo", "algorithm.clip_high=0.3"])
    assert type(plan.algorithm) is GRPO and plan.algorithm.options == GRPOOptions(clip_high=0.3)
    # Naming the preset's own algorithm keeps its options.
    assert configure(ppo_preset, ["algorithm.name=ppo"]).algorithm.options.lam == 0.95


def test_naming_another_reward_for_a_verifier_starts_its_args_afresh():
    """The preset's search verifier is a PRM with a delimiter, which the confidence verifier does not take: another
    name drops the old args (not the node's other settings); the same name merges into them."""
    preset = REPO / "launch/configs/tts_reasoning.yaml"
    cfg = load_config(preset, ["eval.search_verifier={name: confidence, args: {model: m}}"])
    assert cfg.eval.search_verifier.name == "confidence" and cfg.eval.search_verifier.args == {"model": "m"}
    assert cfg.eval.search_verifier.timeout_s == 600  # the preset's, kept
    assert load_config(preset, ["eval.verifier.name=prm", "eval.verifier.args.model=p"]).eval.verifier.args == \
        {"model": "p"}
    kept = load_config(preset, ["eval.search_verifier={name: prm, args: {aggregate: min}}"]).eval.search_verifier.args
    assert kept == {"model": "outputs/tts/prm/final", "aggregate": "min", "delimiter": ". "}


@pytest.mark.parametrize("preset", EVAL_PRESETS)
def test_eval_presets_load_with_their_verifiers(preset):
    from launch.evaluate import for_evaluation

    plan = configure(REPO / "launch" / "configs" / preset)
    for_evaluation(plan)
    assert {key: term.name for key, term in plan.verifiers.items()} == {"verifier": "orm", "search_verifier": "prm"}
    assert plan.verifiers["search_verifier"].args["delimiter"] == plan.cfg.eval.step_delimiter == ". "
    assert set(plan.cfg.eval.methods) == set(EVAL_METHODS)


def test_eval_section_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"eval.methods: 'beam' is not one of greedy, pass_at_k"):
        load_config(None, ["eval.methods=[greedy,beam]"])
    with pytest.raises(ConfigError, match=r"eval.min_budget_fraction=1.5 must be in \[0, 1\]"):
        load_config(None, ["eval.min_budget_fraction=1.5"])
    with pytest.raises(ConfigError, match="eval.verifier.name='nope' is not a registered reward"):
        from launch.evaluate import for_evaluation

        plan = configure(None, ["eval.verifier.name=nope", "data.eval_files=[x.jsonl]"])
        for_evaluation(plan)
