"""Typed configuration: one dataclass per component, a docstring under every field.

A run's config is built in three layers, later ones winning:

1. the defaults written here,
2. a YAML preset (``launch/configs/*.yaml``),
3. ``key=value`` overrides from the command line (OmegaConf dotlist).

``load_config`` merges them through OmegaConf's structured configs, so an
unknown key or a value of the wrong type is caught before anything starts, and
``validate`` then checks the combinations. Both raise ``ConfigError`` with a
one-line message that names the key; ``launch.train`` turns it into exit
code 2. ``docs/config.md`` is generated from the docstrings below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A config problem, with a one-line message naming the key."""


@dataclass
class ModelConfig:
    path: str = "local://tiny-qwen2-arith"
    """Hugging Face model folder (config, weights, tokenizer) of the initial policy. ``local://tiny-qwen2-arith`` is the small model the project builds and caches itself."""
    dtype: str = "float32"
    """Parameter dtype of the learner and reference: float32, bfloat16 or float16."""
    critic_path: Optional[str] = None
    """Initial weights of the PPO critic (a Hugging Face folder of the same architecture). None: the policy's weights, with a new value head."""


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=lambda: ["local://arithmetic-train.jsonl"])
    """JSONL or Parquet files of prompts, read in order. ``local://arithmetic-train.jsonl`` is the built-in task."""
    eval_files: list[str] = field(default_factory=lambda: ["local://arithmetic-test.jsonl"])
    """Held-out prompts scored with greedy decoding every ``trainer.eval_every`` steps. Empty list: no evaluation."""
    prompt_key: str = "prompt"
    """Row field holding the prompt text."""
    answer_key: str = "answer"
    """Row field holding the ground truth that rewards compare against."""
    chosen_key: str = "chosen"
    """Preference rows (offline DPO): field holding the preferred response."""
    rejected_key: str = "rejected"
    """Preference rows (offline DPO): field holding the dispreferred response."""
    prompts_per_step: int = 32
    """Prompts drawn per training step. Each yields ``rollout.n`` samples."""
    shuffle: bool = True
    """Shuffle prompts every epoch (the order depends only on ``trainer.seed`` and the epoch, so resumes repeat it)."""
    max_prompt_tokens: int = 256
    """Longer prompts are an error naming the file and row."""
    length_target_mode: str = "none"
    """L1 length control: append "Think for N tokens." (exact) or "Think for maximum N tokens." (max) to every prompt, N stored in the row's metadata as target_tokens; none: off."""
    length_target_min: int = 1
    """Smallest target N (tokens), drawn uniformly per prompt."""
    length_target_max: int = 8
    """Largest target N (tokens)."""
    max_eval_prompts: int = 200
    """Evaluate on at most this many eval prompts (the first ones)."""


@dataclass
class RolloutConfig:
    num_workers: int = 1
    """vLLM rollout actors. Prompts are spread over them; independent of every other count."""
    n: int = 8
    """Samples per prompt (the GRPO group size)."""
    temperature: float = 1.0
    """Sampling temperature. The learner divides logits by the same value, so log-probs agree."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    max_new_tokens: int = 8
    """Response length limit, in tokens."""
    dtype: str = "float32"
    """vLLM weight dtype: float32, bfloat16 or float16."""
    kv_cache_gib: int = 1
    """KV-cache size per worker on CPU (``VLLM_CPU_KVCACHE_SPACE``), in whole GiB."""
    gpu_memory_utilization: float = 0.5
    """Share of GPU memory vLLM may take per worker (GPU only)."""
    max_model_len: Optional[int] = None
    """Longest prompt + response vLLM accepts (None: the model's own limit)."""
    enforce_eager: bool = True
    """Skip CUDA-graph capture / compilation: faster start, slower steady state."""
    num_cpus: float = 0.25
    """Ray CPUs per rollout actor (fractional: several roles share few cores)."""
    num_gpus: float = 0.0
    """Ray GPUs per rollout actor."""


@dataclass
class ReferenceConfig:
    enabled: bool = True
    """Run a reference worker (frozen initial policy) for the KL term and the KL metric."""
    micro_batch_size: int = 64
    """Sequences per forward pass."""
    num_cpus: float = 0.25
    """Ray CPUs for the reference actor."""
    num_gpus: float = 0.0
    """Ray GPUs for the reference actor."""


@dataclass
class RewardTermConfig:
    name: str = "exact_match"
    """A built-in reward (exact_match, numeric_match, math_accuracy, r1_format, r1_tag_count, language_consistency, l1, judge) or an import path ``module:function`` / ``module:Class``."""
    weight: float = 1.0
    """Weight of this term in the total reward."""
    args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments: passed to a function on every call, or to a reward class's constructor."""
    num_workers: int = 1
    """Ray actors hosting this reward; each batch is spread over them."""
    num_cpus: float = 0.1
    """Ray CPUs per actor of this reward."""
    num_gpus: float = 0.0
    """Ray GPUs per actor of this reward (a judge model on its own GPU)."""
    timeout_s: float = 60.0
    """Seconds a batch may take; past it the actor is replaced and its samples get failure_score."""
    failure_score: float = 0.0
    """Score of a sample whose reward raised, timed out or returned a malformed value."""


@dataclass
class RewardConfig:
    terms: list[RewardTermConfig] = field(default_factory=lambda: [RewardTermConfig()])
    """Reward functions, summed with their weights; each term is also logged on its own."""
    accuracy_term: str = "exact_match"
    """Term whose value 1.0 counts as a correct answer for the ``accuracy`` metric."""


@dataclass
class LearnerConfig:
    world_size: int = 1
    """FSDP ranks, each its own Ray actor, forming one torch.distributed group."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    lr: float = 1e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up, in optimizer steps."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (global norm)."""
    micro_batch_size: int = 64
    """Sequences per forward/backward pass on one rank (gradient accumulation inside a mini-batch)."""
    num_cpus: float = 0.25
    """Ray CPUs per learner rank."""
    num_gpus: float = 0.0
    """Ray GPUs per learner rank (1 for a GPU each)."""


@dataclass
class AlgorithmConfig:
    name: str = "grpo"
    """Registered algorithm (see ``algorithms.ALGORITHMS``)."""
    norm_by_std: bool = True
    """Divide group-centred scores by the group's std (GRPO). False gives Dr.GRPO."""
    clip_low: float = 0.2
    """PPO clip epsilon below 1."""
    clip_high: float = 0.2
    """PPO clip epsilon above 1 (raise it for DAPO's clip-higher)."""
    ppo_epochs: int = 1
    """Passes over each rollout batch."""
    mini_batch_size: int = 128
    """Samples per optimizer step (all ranks together). Must divide prompts_per_step × n."""
    kl_coef: float = 0.001
    """Weight of the KL-to-reference term in the loss (0 disables the term; the KL is still logged)."""
    kl_kind: str = "k3"
    """KL estimator in the loss: k1, k2, k3 or abs."""
    loss_agg: str = "token-mean"
    """Loss aggregation: token-mean, seq-mean-token-sum, seq-mean-token-mean or seq-mean-token-sum-norm."""
    advantage: str = "grpo"
    """Advantage estimator: grpo (group-normalised), rloo (leave-one-out baseline) or reinforce_pp (REINFORCE++: batch-whitened returns)."""
    ratio: str = "token"
    """Importance ratio: token (PPO/GRPO) or sequence (GSPO's length-normalised sequence ratio; use clip_low=3e-4 clip_high=4e-4)."""
    dual_clip: Optional[float] = None
    """Dual-clip constant c > 1, bounding the loss of negative-advantage tokens (None: off)."""
    entropy_coef: float = 0.0
    """Entropy bonus: subtracts this times the aggregated entropy from the loss."""
    overlong_buffer: int = 0
    """DAPO overlong shaping: responses longer than rollout.max_new_tokens minus this many tokens are penalised linearly, up to overlong_penalty at the limit (0: off)."""
    overlong_penalty: float = 1.0
    """Largest overlong penalty, reached at rollout.max_new_tokens."""
    gamma: float = 1.0
    """PPO: GAE discount."""
    lam: float = 1.0
    """PPO: GAE lambda."""
    value_clip: float = 0.5
    """PPO: value clipping range around the old values."""
    critic_warmup_steps: int = 0
    """PPO: steps in which only the critic trains (the policy and its weights stay fixed)."""
    kl_target: Optional[float] = None
    """PPO: target KL per token for the adaptive KL coefficient (Ziegler et al. 2019); None keeps kl_coef fixed."""
    kl_horizon: int = 10000
    """PPO: horizon, in samples, of the adaptive KL controller."""
    dpo_beta: float = 0.1
    """DPO: beta, the strength of the implicit KL constraint."""
    dpo_loss: str = "sigmoid"
    """DPO: loss variant, sigmoid (with label_smoothing: cDPO), robust, hinge or ipo."""
    label_smoothing: float = 0.0
    """DPO: assumed share of flipped preference labels (cDPO, robust)."""
    dynamic_sampling: bool = False
    """DAPO dynamic sampling: drop groups whose rewards are all equal and sample more prompts until the batch is full."""
    max_sampling_rounds: int = 4
    """Most generation rounds per step under dynamic sampling; a batch still short after them is topped up with dropped groups (counted in dynamic_sampling/filled_groups)."""


@dataclass
class TrainerConfig:
    total_steps: int = 30
    """Training steps (one rollout batch and its updates each)."""
    output_dir: str = "outputs/grpo-arithmetic"
    """Metrics, checkpoints and the exported model go here."""
    seed: int = 0
    """Seeds data order, sampling and initialisation."""
    eval_every: int = 10
    """Evaluate every N steps, and before the first and after the last (0 = never)."""
    save_every: int = 10
    """Checkpoint every N steps, and after the last (0 = only after the last)."""
    keep_checkpoints: int = 2
    """Newest checkpoints to keep on disk."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir, with the same step counter and data order."""
    export: bool = True
    """Write the final policy as a Hugging Face folder (output_dir/final)."""
    tensorboard: bool = True
    """Also log to TensorBoard (output_dir/tensorboard) when the package is installed."""
    cache_dir: str = "~/.cache/rlcore"
    """Where ``local://`` models and datasets are built and cached."""


@dataclass
class RayConfig:
    address: Optional[str] = None
    """Cluster to join. None: the job's cluster when run under ``ray job submit`` (RAY_ADDRESS), else a new local one on 127.0.0.1."""
    num_cpus: Optional[int] = None
    """CPUs of a new local cluster (None: all cores)."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    critic: LearnerConfig = field(default_factory=lambda: LearnerConfig(lr=1e-4))
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def _one_line(exc: OmegaConfBaseException) -> str:
    """OmegaConf's messages span several lines; keep the first and name the key."""
    first = str(exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    if isinstance(exc, ConfigKeyError) and key:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return f"unknown key '{key}'" + (f"; allowed under '{parent}': {_allowed_keys(parent)}" if parent else
                                         f"; allowed sections: {_allowed_keys('')}")
    return f"{key}: {first}" if key else first


def _allowed_keys(section: str) -> str:
    node = OmegaConf.structured(Config)
    for part in filter(None, section.split(".")):
        node = node[int(part)] if isinstance(node, list) or part.isdigit() else node[part]
    return ", ".join(node.keys()) if hasattr(node, "keys") else "?"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML at ``path``, then dotlist ``overrides``; validated. Raises ConfigError."""
    merged = OmegaConf.structured(Config)
    try:
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                loaded = OmegaConf.load(path)
            except Exception as exc:  # yaml's errors share no base class worth naming
                problem = " ".join(str(exc).split())
                raise ConfigError(f"{path}: not a valid YAML config ({problem})") from None
            merged = OmegaConf.merge(merged, loaded)
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value")
            try:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
            except OmegaConfBaseException:
                raise  # reported below, with the key
            except (TypeError, ValueError) as exc:  # e.g. a dict merged into a list
                raise ConfigError(f"override '{item}': {str(exc).splitlines()[0]}") from None
        cfg: Config = OmegaConf.to_object(merged)
    except (ValidationError, ConfigKeyError, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line(exc)) from None
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: Config, *keys: str) -> None:
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value > 0, f"{key}={value} must be > 0")


def validate(cfg: Config) -> None:
    """Checks that no single field's type can express. Raises ConfigError naming the key."""
    from rlcore.functional import KL_KINDS, LOSS_AGG_MODES

    _positive(cfg, "data.prompts_per_step", "rollout.num_workers", "rollout.n", "rollout.max_new_tokens",
              "rollout.kv_cache_gib", "learner.world_size", "learner.lr",
              "learner.micro_batch_size", "critic.world_size", "critic.lr", "critic.micro_batch_size", "algorithm.ppo_epochs", "algorithm.mini_batch_size",
              "trainer.total_steps", "reference.micro_batch_size")
    _check(cfg.rollout.temperature >= 0, f"rollout.temperature={cfg.rollout.temperature} must be >= 0")
    _check(0 < cfg.rollout.top_p <= 1, f"rollout.top_p={cfg.rollout.top_p} must be in (0, 1]")
    for key, value in (("model.dtype", cfg.model.dtype), ("rollout.dtype", cfg.rollout.dtype)):
        _check(value in DTYPES, f"{key}='{value}' is not one of {', '.join(DTYPES)}")
    _check(cfg.learner.backend in ("auto", "gloo", "nccl"),
           f"learner.backend='{cfg.learner.backend}' is not one of auto, gloo, nccl")
    _check(cfg.algorithm.kl_kind in KL_KINDS, f"algorithm.kl_kind='{cfg.algorithm.kl_kind}' is not one of {', '.join(KL_KINDS)}")
    _check(cfg.algorithm.loss_agg in LOSS_AGG_MODES,
           f"algorithm.loss_agg='{cfg.algorithm.loss_agg}' is not one of {', '.join(LOSS_AGG_MODES)}")
    _check(cfg.algorithm.kl_coef >= 0, f"algorithm.kl_coef={cfg.algorithm.kl_coef} must be >= 0")
    _check(cfg.algorithm.kl_coef == 0 or cfg.reference.enabled,
           f"algorithm.kl_coef={cfg.algorithm.kl_coef} needs reference.enabled=true (or set algorithm.kl_coef=0)")
    _check(cfg.data.prompts_per_step >= cfg.rollout.num_workers,
           f"data.prompts_per_step={cfg.data.prompts_per_step} leaves some of rollout.num_workers="
           f"{cfg.rollout.num_workers} idle; use at most {cfg.data.prompts_per_step} workers")
    _check(cfg.data.length_target_mode in ("none", "exact", "max"),
           f"data.length_target_mode='{cfg.data.length_target_mode}' is not one of none, exact, max")
    _check(1 <= cfg.data.length_target_min <= cfg.data.length_target_max,
           f"data.length_target_min={cfg.data.length_target_min} and data.length_target_max="
           f"{cfg.data.length_target_max} must satisfy 1 <= min <= max")
    _check(len(cfg.data.train_files) > 0, "data.train_files is empty: give at least one JSONL or Parquet file")

    from algorithms import get_algorithm_class  # the algorithm checks its own combinations

    algorithm = get_algorithm_class(cfg.algorithm.name)
    algorithm.validate(cfg)

    group = algorithm.group_size(cfg)
    samples = cfg.data.prompts_per_step * group
    mini = cfg.algorithm.mini_batch_size
    per_group = "rollout.n" if group == cfg.rollout.n else f"{group} (samples per group of {cfg.algorithm.name})"
    _check(samples % mini == 0,
           f"algorithm.mini_batch_size={mini} must divide data.prompts_per_step × {per_group} = {samples}")
    _check(mini % cfg.learner.world_size == 0,
           f"algorithm.mini_batch_size={mini} must be divisible by learner.world_size={cfg.learner.world_size}")
    _check(mini % cfg.critic.world_size == 0,
           f"algorithm.mini_batch_size={mini} must be divisible by critic.world_size={cfg.critic.world_size}")
    _check(samples % cfg.learner.world_size == 0,
           f"data.prompts_per_step × rollout.n = {samples} must be divisible by learner.world_size={cfg.learner.world_size}")

    from rewards import resolve_reward

    for i, term in enumerate(cfg.reward.terms):
        try:
            resolve_reward(term.name)
        except ValueError as exc:
            raise ConfigError(f"reward.terms[{i}].name: {exc}") from None
        _check(term.num_workers > 0, f"reward.terms[{i}].num_workers={term.num_workers} must be > 0")
        _check(term.timeout_s > 0, f"reward.terms[{i}].timeout_s={term.timeout_s} must be > 0")

    names = [t.name for t in cfg.reward.terms]
    _check(len(names) > 0, "reward.terms is empty: give at least one reward function")
    _check(len(set(names)) == len(names), f"reward.terms lists a reward twice: {names}")
    _check(cfg.reward.accuracy_term in names,
           f"reward.accuracy_term='{cfg.reward.accuracy_term}' is not among reward.terms: {', '.join(names)}")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def field_docs() -> dict[str, list[tuple[str, str, str, str]]]:
    """{section: [(field, type, default, docstring)]}, read from this module's source.

    Python keeps no attribute docstrings at run time, so they are read with ``ast``;
    ``docs/config.md`` is generated from this and a test checks every field has one.
    """
    import ast
    import dataclasses

    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(Path(__file__).read_text()).body:
        if isinstance(node, ast.ClassDef):
            pairs = zip(node.body, node.body[1:])
            docs[node.name] = {a.target.id: " ".join(str(b.value.value).split()) for a, b in pairs
                               if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr)
                               and isinstance(b.value, ast.Constant)}
    sections = {f.name: type(f.default_factory()) for f in dataclasses.fields(Config)}
    sections["reward.terms[]"] = RewardTermConfig
    out = {}
    for section, cls in sections.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(cls))
        out[section] = [(f.name, str(f.type), repr(defaults[f.name]), docs[cls.__name__].get(f.name, ""))
                        for f in dataclasses.fields(cls)]
    return out
