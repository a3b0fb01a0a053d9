"""The composition root: the one place that resolves plug-ins, validates the config and builds the parts.

``configure`` turns a preset and overrides into a ``Plan``: the core config,
checked, and every plug-in resolved by name (or import path) with its options
parsed into its own dataclass. ``prepare`` then resolves model and data paths
(building ``local://`` assets), checks every model folder the run names and the
prompt budget against the policy's context, and loads the rows through the
source and the data transforms. Both run before any actor starts and raise
one-line errors (``ConfigError``, ``AssetError``, ``DataError``) naming the key,
file or row.

Three kinds of field metadata in a plug-in's ``Options`` let this module check
what it knows nothing about: ``{"model_folder": True}`` (or a hint saying how to
make one) marks a Hugging Face model folder, resolved and checked in ``load``
like ``model.path``; ``{"same_vocab": "<algorithm>"}`` marks an algorithm's model
folder that must share the policy's vocabulary, checked in ``render`` (the error
names the algorithm to use instead: ``kd``'s teacher points to ``distill_sft``);
``{"reward_args": "<field>"}`` marks a field naming another reward, resolved in
``configure`` with its keyword arguments, held in ``<field>``, parsed into that
reward's own ``Options`` (L1's ``accuracy``).
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
from rewards.api import RewardTerm, check_kind, check_reward, wants_environments
from rewards.registry import REWARDS, TRANSFORMS
from rlcore.assets import SCHEME, AssetError, check_model_dir, model_context, resolve
from rlcore.config import Config, ConfigError, RewardTermConfig, load_config, single_line, validate_learner
from rlcore.data import check_prompt_lengths, render_prompts
from rlcore.plugins import options_class, parse_options
from rlcore.tools import Toolbox, load_toolbox


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
    context: tuple[int, str] | None = None
    """The rollout engine's context in tokens and what sets it (``prompt_context``), found by ``load`` for
    ``render`` to hold every prompt to; None while unknown."""
    toolbox: Toolbox | None = None
    """The ``env`` section resolved (its tools' schemas checked), when rollouts are multi-turn episodes."""

    @property
    def tools(self) -> list[dict] | None:
        """The JSON schemas the chat template shows the model; None without an ``env`` section."""
        return self.toolbox.schemas if self.toolbox else None

    @property
    def ship_environments(self) -> bool:
        """Whether a reward reads the episodes' environment instances (TRL's ``environments``)."""
        return any(wants_environments(term.target) for term in self.reward_terms)


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
    toolbox = load_toolbox(cfg.env) if cfg.env.enabled else None
    return Plan(cfg, algorithm, source, learners, reward_terms(cfg), data_transforms(cfg), toolbox=toolbox)


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
    target = resolve_reward(term.name, f"{key}.name")
    try:
        check_kind(term.name, target, term.kind)
    except ValueError as exc:
        raise ConfigError(f"{key}.kind: {exc}") from None
    term.args = reward_args(target, term.args, f"{key}.args")
    return RewardTerm(term, target, term.args)


def resolve_reward(name: str, key: str) -> Any:
    """The reward function or class called ``name`` (a registered name or an import path), named at ``key``."""
    target = REWARDS.resolve(name, key)
    try:
        check_reward(name, target)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return target


def reward_args(target: Any, args: dict[str, Any], where: str) -> dict[str, Any]:
    """``args`` parsed into ``target``'s ``Options`` as keyword arguments (every option in force), at ``where``.

    A field with ``{"reward_args": "<field>"}`` metadata names another reward: it is resolved here, and its
    arguments, held in ``<field>``, are parsed into that reward's ``Options`` in turn, so a misspelt name or
    argument is a one-line ``ConfigError`` now rather than when the reward actor starts.
    """
    kwargs = as_kwargs(parse_options(options_class(target), args, where))
    for f in reward_fields(target):
        inner = f.metadata["reward_args"]
        kwargs[inner] = reward_args(resolve_reward(kwargs[f.name], f"{where}.{f.name}"), kwargs[inner] or {},
                                    f"{where}.{inner}")
    return kwargs


def reward_fields(target: Any) -> list[dataclasses.Field]:
    """The fields of ``target``'s ``Options`` that name another reward (``reward_args`` metadata)."""
    options = options_class(target)
    return [f for f in dataclasses.fields(options) if f.metadata.get("reward_args")] if options else []


def model_folders(options: type | None, args: dict[str, Any], where: str):
    """``(args, field, key, hint)`` for every model folder among ``args``, parsed into the dataclass ``options``
    (fields with ``model_folder`` metadata, its value a hint when a string), and among the args of any reward those
    name (``reward_args``), for ``load`` to resolve and check."""
    for f in dataclasses.fields(options) if options else ():
        mark = f.metadata.get("model_folder")
        if mark and isinstance(args.get(f.name), str):
            yield args, f.name, f"{where}.{f.name}", mark if isinstance(mark, str) else ""
        inner = f.metadata.get("reward_args")
        if inner:
            target = REWARDS.resolve(args[f.name], f"{where}.{f.name}")
            yield from model_folders(options_class(target), args[inner], f"{where}.{inner}")


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


def check_same_vocab(model_path: str, other_path: str, key: str, instead: str = "") -> None:
    """Token-level roles (a reference, a teacher's log-probs) must share the policy's vocabulary. Raises ``AssetError``
    (naming ``instead``, an algorithm that works across tokenizers, when given)."""
    from transformers import AutoTokenizer

    if model_path == other_path:
        return
    if AutoTokenizer.from_pretrained(model_path).get_vocab() != AutoTokenizer.from_pretrained(other_path).get_vocab():
        hint = f"; use algorithm.name={instead}, which works across tokenizers" if instead else ""
        raise AssetError(f"{key}: the tokenizer of {other_path} differs from that of model.path={model_path}; "
                         f"token log-probs can only be compared under one vocabulary{hint}")


def same_vocab_folders(options: object, cache: str):
    """``(path, key, instead)`` for each model folder among an algorithm's ``options`` that must share the policy's
    vocabulary (fields with ``same_vocab`` metadata, its value the algorithm to use instead)."""
    for f in dataclasses.fields(options) if dataclasses.is_dataclass(options) else ():
        instead, value = f.metadata.get("same_vocab"), getattr(options, f.name)
        if instead and isinstance(value, str):
            yield resolve(value, cache, f"algorithm.{f.name}"), f"algorithm.{f.name}", instead


def prepare(plan: Plan) -> Data:
    """Resolve model and data paths (building ``local://`` assets), load the rows and apply the transforms
    (``load``), then render the prompts with the model's tokenizer (``render``).

    Resolved paths are written back into the plan, so every part receives a real path.
    """
    return render(plan, load(plan))


def load(plan: Plan) -> Data:
    """``prepare``'s first half: every model path resolved and checked (``resolve_models``), the data files
    resolved, the rows loaded and transformed. Raises ``AssetError`` or ``DataError`` for a missing file, an
    incomplete model folder or a malformed row, ``ConfigError`` for a prompt budget the model cannot take; needs
    no tokenizer."""
    resolve_models(plan)
    cfg, cache = plan.cfg, plan.cfg.trainer.cache_dir
    dc = cfg.data
    train = plan.source.load(cfg, [resolve(f, cache, "data.train_files") for f in dc.train_files])
    evals = plan.source.load(cfg, [resolve(f, cache, "data.eval_files") for f in dc.eval_files]) if dc.eval_files else []
    for transform in plan.transforms:
        train, evals = transform(train, cfg.trainer.seed), transform(evals, cfg.trainer.seed + 1)
    return Data(train, evals)


def resolve_models(plan: Plan) -> None:
    """Every model folder the run names resolved (``local://`` models built) and checked with ``check_model_dir``
    (config.json, tokenizer files, weights), the key that names it in every error: ``model.path`` (and the prompt
    budget against its context), ``reference.path``, a learner group's own weights, and the fields marked
    ``model_folder`` in the algorithm's options and in the args of the reward terms and ``eval`` verifiers.
    Resolved paths are written back, except a reward's path as given: its actors read a relative one from their
    own working directory."""
    cfg, cache = plan.cfg, plan.cfg.trainer.cache_dir
    cfg.model.path = resolve(cfg.model.path, cache, "model.path")
    plan.context = prompt_context(cfg, check_model_dir(cfg.model.path, "model.path"))
    check_prompt_budget(cfg.data.max_prompt_tokens, plan.context)
    if cfg.reference.path is not None:
        cfg.reference.path = resolve(cfg.reference.path, cache, "reference.path")
        check_model_dir(cfg.reference.path, "reference.path")
    for name, group in plan.learners.items():
        if group.spec.model_path:
            key = f"the model path of learner group '{name}'"
            path = resolve(group.spec.model_path, cache, key)
            # Only a kind that exports its tokenizer reads one from its folder (a critic's value model does not).
            check_model_dir(path, key, tokenizer=getattr(group.model, "with_tokenizer", False))
            group.spec = dataclasses.replace(group.spec, model_path=path)
    options = getattr(plan.algorithm, "options", None)
    if dataclasses.is_dataclass(options):  # checked only: the algorithm keeps what it resolved itself
        for args, name, where, hint in model_folders(type(options), dataclasses.asdict(options), "algorithm"):
            check_model_dir(resolve(args[name], cache, where), where, hint=hint)
    terms = [(f"reward.terms[{i}]", term) for i, term in enumerate(plan.reward_terms)]
    for key, term in terms + [(f"eval.{name}", term) for name, term in plan.verifiers.items()]:
        for args, name, where, hint in model_folders(options_class(term.target), term.args, f"{key}.args"):
            path = resolve(args[name], cache, where)
            check_model_dir(path, where, hint=hint)
            if args[name].startswith(SCHEME):
                args[name] = path


def prompt_context(cfg: Config, model_config: dict[str, Any]) -> tuple[int, str] | None:
    """The context the rollout's vLLM engine gets, and what sets it, for messages: ``rollout.max_model_len``, or
    the policy's ``max_position_embeddings`` (``model_config``: its config.json); None when neither is known.
    ``ConfigError`` when ``rollout.max_model_len`` is more than the model allows, which vLLM refuses at start."""
    context, max_len = model_context(model_config), cfg.rollout.max_model_len
    source = f"the context of model.path {cfg.model.path}: max_position_embeddings={context} in its config.json"
    if context is not None and max_len is not None and max_len > context:
        raise ConfigError(f"rollout.max_model_len={max_len} is more than {source}; vLLM refuses it: set "
                          f"rollout.max_model_len at most {context}, or leave it unset")
    if max_len is not None:
        return max_len, f"rollout.max_model_len={max_len}"
    return (context, source) if context is not None else None


def check_prompt_budget(budget: int, found: tuple[int, str] | None) -> None:
    """``data.max_prompt_tokens`` (``budget``) must fit the context (``prompt_context``). vLLM refuses a prompt of the
    context's length or more (a response is cut where the context ends, which it does not refuse). A budget equal to
    the context is let through, as the built-in model's presets have it; a prompt that long is then named by
    ``render``."""
    if found is not None and budget > found[0]:
        raise ConfigError(f"data.max_prompt_tokens={budget} is more than {found[1]}; vLLM refuses a prompt that "
                          f"long: set data.max_prompt_tokens below {found[0]}")


def render(plan: Plan, data: Data) -> Data:
    """``prepare``'s second half: the source's checks that need the tokenizer (``check``, if it has one), the prompts
    rendered with the model's tokenizer (a chat template, the system prompt) and their lengths checked; a reference
    model's vocabulary, and a teacher's that gives token log-probs (``same_vocab``), checked against the policy's."""
    from transformers import AutoTokenizer

    cfg, dc = plan.cfg, plan.cfg.data
    if cfg.reference.path is not None:
        check_same_vocab(cfg.model.path, cfg.reference.path, "reference.path")
    for path, key, instead in same_vocab_folders(getattr(plan.algorithm, "options", None), cfg.trainer.cache_dir):
        check_same_vocab(cfg.model.path, path, key, instead)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    check = getattr(plan.source, "check", None)  # a source's own checks that need the tokenizer
    if check is not None:
        check(cfg, data.train + data.eval, tokenizer)
    train = render_prompts(data.train, tokenizer, dc.system_prompt, plan.tools)
    evals = render_prompts(data.eval, tokenizer, dc.system_prompt, plan.tools)
    check_prompt_lengths(train + evals[: dc.max_eval_prompts], tokenizer, dc.max_prompt_tokens, plan.context)
    return Data(train, evals)
