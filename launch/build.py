"""The composition root: the one place that resolves plug-ins, validates the config and builds the parts.

``configure`` turns a preset and overrides into a ``Plan``: the core config,
checked, and every plug-in resolved by name (or import path) with its options
parsed into its own dataclass. ``prepare`` then resolves model and data paths
(building ``local://`` assets) and loads the rows through the source and the
data transforms. Both run before any actor starts and raise one-line errors
(``ConfigError``, ``AssetError``, ``DataError``) naming the key, file or row.
Everything after receives built objects: the driver, the sources and the roles
never look a plug-in up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.models import MODELS, CausalLM
from algorithms.base import Algorithm, LearnerSpec
from algorithms.registry import ALGORITHMS
from launch.sources import SOURCES
from rewards.api import RewardTerm, check_reward
from rewards.registry import REWARDS, TRANSFORMS
from rlcore.assets import AssetError, resolve
from rlcore.config import Config, ConfigError, RewardTermConfig, load_config, single_line, validate_learner
from rlcore.data import check_prompt_lengths, render_prompts
from rlcore.plugins import options_class, parse_options


@dataclass
class Group:
    """One learner group, resolved: the algorithm's spec and its model kind's class."""

    spec: LearnerSpec
    model: type


@dataclass
class Plan:
    """Everything a run is made of, resolved and checked before any actor starts."""

    cfg: Config
    algorithm: Algorithm
    source: type
    learners: dict[str, Group]
    reward_terms: list[RewardTerm]
    transforms: list[Any] = field(default_factory=list)
    verifiers: dict[str, RewardTerm] = field(default_factory=dict)
    """``eval.verifier`` and ``eval.search_verifier`` resolved, by key, where set (``launch.evaluate`` only)."""


@dataclass
class Data:
    train: list
    eval: list


def configure(path: str | Path | None = None, overrides: list[str] | None = None) -> Plan:
    """The core config (defaults, preset, overrides) and every plug-in named in it. Raises ``ConfigError``."""
    cfg = load_config(path, overrides)
    algorithm = build_algorithm(cfg)
    learners = {name: Group(spec, MODELS.resolve(spec.model, f"{type(algorithm).__name__}.learners()['{name}'].model"))
                for name, spec in algorithm.learners().items()}
    check_batch_shapes(cfg, algorithm, learners)
    check_colocation(cfg, algorithm, learners)
    source = SOURCES.resolve(algorithm.source, f"{type(algorithm).__name__}.source")
    return Plan(cfg, algorithm, source, learners, reward_terms(cfg), data_transforms(cfg))


def build_algorithm(cfg: Config) -> Algorithm:
    node = dict(cfg.algorithm)
    name = node.pop("name")
    cls = ALGORITHMS.resolve(name, "algorithm.name")
    options = parse_options(options_class(cls), node, "algorithm")
    cls.validate(cfg, options)
    cfg.algorithm = {"name": name, **dataclasses.asdict(options)}  # config.yaml shows every option in force
    return cls(cfg, options)


def check_batch_shapes(cfg: Config, algorithm: Algorithm, learners: dict[str, Group]) -> None:
    """Every learner group's mini-batches and ranks must divide the step's batch evenly."""
    group = algorithm.group_size()
    samples = cfg.data.prompts_per_step * group
    per_group = "rollout.n" if group == cfg.rollout.n else f"{group} (samples per group of {cfg.algorithm['name']})"
    for g in learners.values():
        key, s = g.spec.settings_key, g.spec.settings
        validate_learner(s, key)
        if samples % s.mini_batch_size:
            raise ConfigError(f"{key}.mini_batch_size={s.mini_batch_size} must divide data.prompts_per_step × "
                              f"{per_group} = {samples}")
        if s.lora_rank:
            check_lora(key, g.model)


def check_colocation(cfg: Config, algorithm: Algorithm, learners: dict[str, Group]) -> None:
    """``trainer.placement=colocated`` runs the rollout source, and every learner group within the policy's ranks."""
    if cfg.trainer.placement != "colocated":
        return
    if algorithm.source != "rollout":
        raise ConfigError(f"trainer.placement=colocated runs with the rollout source; algorithm.name="
                          f"{cfg.algorithm['name']} uses '{algorithm.source}': use trainer.placement=separate")
    for g in learners.values():
        if g.spec.settings.world_size > cfg.learner.world_size:
            raise ConfigError(f"trainer.placement=colocated: {g.spec.settings_key}.world_size="
                              f"{g.spec.settings.world_size} must be at most learner.world_size="
                              f"{cfg.learner.world_size} (one GPU per policy rank)")


def check_lora(key: str, model_cls: type) -> None:
    """LoRA needs peft, and a causal LM: a critic's or reward model's new head must train whole."""
    if not issubclass(model_cls, CausalLM):
        raise ConfigError(f"{key}.lora_rank: LoRA is for a causal LM policy, not a {model_cls.__name__}; "
                          f"set {key}.lora_rank=0")
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError(f"{key}.lora_rank needs the peft package: pip install -e '.[lora]'") from None


def reward_term(term: RewardTermConfig, key: str) -> RewardTerm:
    """One reward term's config (at ``key``: ``reward.terms[0]``, ``eval.verifier``) resolved, its args parsed."""
    target = REWARDS.resolve(term.name, f"{key}.name")
    try:
        check_reward(term.name, target)
    except ValueError as exc:
        raise ConfigError(f"{key}.name: {exc}") from None
    term.args = as_kwargs(parse_options(options_class(target), term.args, f"{key}.args"))
    return RewardTerm(term, target, term.args)


def reward_terms(cfg: Config) -> list[RewardTerm]:
    terms = [reward_term(term, f"reward.terms[{i}]") for i, term in enumerate(cfg.reward.terms)]
    names = [t.name for t in terms]
    if cfg.reward.accuracy_term not in names:
        raise ConfigError(f"reward.accuracy_term='{cfg.reward.accuracy_term}' is not among reward.terms: "
                          f"{', '.join(names)}")
    return terms


def data_transforms(cfg: Config) -> list[Any]:
    transforms = []
    for i, node in enumerate(cfg.data.transforms):
        node = dict(node)
        cls = TRANSFORMS.resolve(node.pop("name"), f"data.transforms[{i}].name")
        kwargs = as_kwargs(parse_options(options_class(cls), node, f"data.transforms[{i}]"))
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"data.transforms[{i}]: {single_line(str(exc))}") from None
    return transforms


def as_kwargs(options: Any) -> dict[str, Any]:
    """A parsed options dataclass (or a plain dict of args) as keyword arguments."""
    if dataclasses.is_dataclass(options):
        return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return dict(options)


def check_same_vocab(model_path: str, other_path: str, key: str) -> None:
    """Token-level roles (a reference, a teacher's log-probs) must share the policy's vocabulary. Raises ``AssetError``."""
    from transformers import AutoTokenizer

    if model_path == other_path:
        return
    if AutoTokenizer.from_pretrained(model_path).get_vocab() != AutoTokenizer.from_pretrained(other_path).get_vocab():
        raise AssetError(f"{key}: the tokenizer of {other_path} differs from that of model.path={model_path}; "
                         "token log-probs can only be compared under one vocabulary")


def prepare(plan: Plan) -> Data:
    """Resolve model and data paths (building ``local://`` assets), load the rows and apply the transforms
    (``load``), then render the prompts with the model's tokenizer (``render``).

    Resolved paths are written back into the plan, so every part receives a real path.
    """
    return render(plan, load(plan))


def load(plan: Plan) -> Data:
    """``prepare``'s first half: every path resolved (``local://`` assets built), the rows loaded and transformed.
    Raises ``AssetError`` or ``DataError`` for a missing file or a malformed row; needs no tokenizer."""
    cfg, cache = plan.cfg, plan.cfg.trainer.cache_dir
    cfg.model.path = resolve(cfg.model.path, cache, "model.path")
    if cfg.reference.path is not None:
        cfg.reference.path = resolve(cfg.reference.path, cache, "reference.path")
    for name, group in plan.learners.items():
        if group.spec.model_path:
            path = resolve(group.spec.model_path, cache, f"the model path of learner group '{name}'")
            group.spec = dataclasses.replace(group.spec, model_path=path)
    dc = cfg.data
    train = plan.source.load(cfg, [resolve(f, cache, "data.train_files") for f in dc.train_files])
    evals = plan.source.load(cfg, [resolve(f, cache, "data.eval_files") for f in dc.eval_files]) if dc.eval_files else []
    for transform in plan.transforms:
        train, evals = transform(train, cfg.trainer.seed), transform(evals, cfg.trainer.seed + 1)
    return Data(train, evals)


def render(plan: Plan, data: Data) -> Data:
    """``prepare``'s second half: the prompts rendered with the model's tokenizer (a chat template, the system
    prompt) and their lengths checked; a reference model's vocabulary checked against the policy's."""
    from transformers import AutoTokenizer

    cfg, dc = plan.cfg, plan.cfg.data
    if cfg.reference.path is not None:
        check_same_vocab(cfg.model.path, cfg.reference.path, "reference.path")
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    train = render_prompts(data.train, tokenizer, dc.system_prompt)
    evals = render_prompts(data.eval, tokenizer, dc.system_prompt)
    check_prompt_lengths(train + evals[: dc.max_eval_prompts], tokenizer, dc.max_prompt_tokens)
    return Data(train, evals)
