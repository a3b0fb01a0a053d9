"""Per-response-token outputs of a model, shared by the learner, the reference and the reward-model rewards.

Each sample is ``prompt + response``. The response token ``j`` of a sample with
``P`` prompt tokens sits at position ``P + j`` and is predicted by the output at
``P + j - 1``: log-probs and a critic's values are read there. A reward model's
score of token ``j`` is read at ``P + j`` itself, once the token is written
(``response_scores``).

Three layouts feed the model the same sequences (``layout``):

* **padded**: one row per sample, right-padded to the longest, with an attention mask;
* **packed** (padding-free): all samples in one row, back to back, with position ids
  that restart at 0 for each sample. Hugging Face models read the restarts as
  sequence boundaries: flash-attn's variable-length kernel when the model was built
  with ``attn_implementation="flash_attention_2"``, a block-diagonal causal mask with
  SDPA or eager attention. No compute is spent on padding tokens.
* **grouped** (shared prompt): consecutive samples with the same prompt (a GRPO group)
  share one row: the prompt once, then each response, with a 4D attention mask in which
  a response sees the prompt and its own earlier tokens, and position ids that start
  each response where the prompt ends. The prompt's pass is computed once for the
  group instead of once per sample; every output is what the padded layout gives
  (SDPA or eager attention: flash-attn takes no 4D mask). ``grouped_pays`` says when it
  costs less than padding.

Outputs are read only at the response tokens (``[R]`` for the R response tokens of
the batch) and scattered back to ``[B, T]``, 0 elsewhere. With ``chunk_tokens``,
log-probs and entropy are computed from the final hidden states a chunk of tokens at
a time (``rlcore.functional.chunked_logprobs``), so the ``[R, vocab]`` fp32 logits
never exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcore.functional import (
    chunked_logprobs,
    entropy_from_logits,
    logprobs_at,
    logprobs_from_logits,
    topk_logprobs,
)


@dataclass
class Layout:
    """A batch of ``prompt + response`` sequences laid out for one forward pass."""

    inputs: dict[str, torch.Tensor]
    """The model's keyword inputs: ``input_ids`` and ``attention_mask`` ``[B, S]`` (padded), or ``input_ids`` and
    ``position_ids`` ``[1, N]`` (packed), or ``input_ids``, ``position_ids`` ``[G, S]`` and a boolean
    ``attention_mask`` ``[G, 1, S, S]`` (grouped)."""
    read: torch.Tensor
    """``[R]`` flat position (into the ``rows × S`` positions) whose output predicts each response token."""
    own: torch.Tensor
    """``[R]`` flat position of each response token itself."""
    rows: torch.Tensor
    """``[R]`` the sample of each response token."""
    cols: torch.Tensor
    """``[R]`` its index in that sample's response."""
    targets: torch.Tensor
    """``[R]`` its token id."""
    shape: tuple[int, int]
    """``(B, T)`` of the per-token outputs."""

    def to(self, device: torch.device | str) -> Layout:
        return Layout({k: v.to(device) for k, v in self.inputs.items()}, self.read.to(device), self.own.to(device),
                      self.rows, self.cols, self.targets.to(device), self.shape)

    def scatter(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """``[R, ...]`` values per response token as ``[B, T, ...]``, 0 where no response token is."""
        if values is None:
            return None
        out = values.new_zeros(self.shape + tuple(values.shape[1:]))
        out[self.rows.to(values.device), self.cols.to(values.device)] = values
        return out


LAYOUTS = ("padded", "packed", "grouped", "auto")
"""``layout``'s choices; ``auto`` is grouped where ``grouped_pays``, padded elsewhere."""


def layout(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, width: int | None = None,
           packing: str = "padded", hidden_size: int = 0) -> Layout:
    """The sequences ``prompt_ids[i] + response_ids[i]`` padded into rows, ``packed`` into one row, or ``grouped`` into
    a row per run of samples with the same prompt (``LAYOUTS``; ``auto`` asks ``grouped_pays`` with ``hidden_size``).

    ``width`` is T of the ``[B, T]`` outputs (default: the longest response).
    """
    if any(not p for p in prompt_ids):
        raise ValueError("a sample has an empty prompt: its first response token has no position that predicts it")
    if packing not in LAYOUTS:
        raise ValueError(f"layout '{packing}' is not one of {', '.join(LAYOUTS)}")
    width = max(map(len, response_ids), default=0) if width is None else width
    if packing == "auto":
        packing = "grouped" if grouped_pays(prompt_ids, response_ids, hidden_size) else "padded"
    if packing == "grouped":
        inputs, read, own = _grouped(prompt_ids, response_ids, pad_id)
    else:
        seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
        inputs, starts = _packed(seqs) if packing == "packed" else _padded(seqs, pad_id)
        firsts = [s + len(p) - 1 for s, p in zip(starts, prompt_ids)]  # where each response's first token is predicted
        read = [k for first, r in zip(firsts, response_ids) for k in range(first, first + len(r))]
        own = [k + 1 for k in read]
    rows = [i for i, r in enumerate(response_ids) for _ in r]
    cols = [j for r in response_ids for j in range(len(r))]
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Layout(inputs, as_long(read), as_long(own), as_long(rows), as_long(cols),
                  as_long([t for r in response_ids for t in r]), (len(prompt_ids), width))


def _padded(seqs: list[list[int]], pad_id: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One right-padded row per sequence, with its attention mask; and each sequence's first flat position."""
    seq_len = max(map(len, seqs))
    input_ids = torch.full((len(seqs), seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), seq_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, :len(s)] = torch.tensor(s)
        attention_mask[i, :len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}, [i * seq_len for i in range(len(seqs))]


def _packed(seqs: list[list[int]]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """All sequences back to back in one row, position ids restarting at each; and each one's first position."""
    starts = [0]
    for s in seqs[:-1]:
        starts.append(starts[-1] + len(s))
    return {"input_ids": torch.tensor([[t for s in seqs for t in s]], dtype=torch.long),
            "position_ids": torch.tensor([[i for s in seqs for i in range(len(s))]], dtype=torch.long)}, starts


def prompt_runs(prompt_ids: list[list[int]]) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of consecutive samples with the same prompt."""
    runs = []
    for i, p in enumerate(prompt_ids):
        if runs and prompt_ids[runs[-1][0]] == p:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return [(a, b) for a, b in runs]


def grouped_pays(prompt_ids: list[list[int]], response_ids: list[list[int]], hidden_size: int) -> bool:
    """Whether the grouped layout costs less than the padded one, by a count of positions, each weighted by
    ``1 + row length / (6 · hidden_size)``: the attention a position computes grows with its row, where a decoder
    layer's matmuls cost about ``24 · hidden²`` per position and its attention ``4 · row · hidden``. On the 2-core
    machine, 256 arithmetic samples (8 per prompt, 5-token prompts, up to 6 new tokens, hidden 256) ran their forward
    and backward 2.4x faster grouped; 64 samples of 64 new tokens on hidden 768 took as long either way."""
    if not hidden_size:
        return False
    lengths = [len(p) + len(r) for p, r in zip(prompt_ids, response_ids)]
    rows = [len(prompt_ids[a]) + sum(len(r) for r in response_ids[a:b]) for a, b in prompt_runs(prompt_ids)]
    if len(rows) == len(lengths):
        return False
    cost = lambda count, row: count * row * (1 + row / (6 * hidden_size))  # noqa: E731
    return cost(len(rows), max(rows)) < cost(len(lengths), max(lengths))


def _grouped(prompt_ids: list[list[int]], response_ids: list[list[int]],
             pad_id: int) -> tuple[dict[str, torch.Tensor], list[int], list[int]]:
    """One row per run of samples with the same prompt: the prompt, then each response (see the module's
    docstring); the inputs with a boolean ``[rows, 1, S, S]`` mask, and the flat positions that predict each response
    token and that hold it. A padding position sees the prompt and the padding before it, so no softmax row is empty."""
    runs = prompt_runs(prompt_ids)
    rows = [len(prompt_ids[a]) + sum(len(r) for r in response_ids[a:b]) for a, b in runs]
    seq_len = max(rows)
    input_ids = torch.full((len(runs), seq_len), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(runs), seq_len), dtype=torch.long)
    segment = torch.full((len(runs), seq_len), -1, dtype=torch.long)  # 0: the prompt, k + 1: response k, -1: padding
    read, own = [], []
    for g, (a, b) in enumerate(runs):
        prompt, base = prompt_ids[a], g * seq_len
        tokens, positions, segments = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        for k, response in enumerate(response_ids[a:b]):
            at = len(tokens)
            read += ([base + len(prompt) - 1] + list(range(base + at, base + at + len(response) - 1)))[:len(response)]
            own += range(base + at, base + at + len(response))
            tokens += response
            positions += range(len(prompt), len(prompt) + len(response))
            segments += [k + 1] * len(response)
        input_ids[g, :len(tokens)] = torch.tensor(tokens)
        position_ids[g, :len(tokens)] = torch.tensor(positions)
        segment[g, :len(tokens)] = torch.tensor(segments)
    query, key = segment[:, :, None], segment[:, None, :]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    mask = causal & ((key == 0) | (key == query))
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask[:, None]}, read, own


def layout_on(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
              width: int | None, packing: str) -> Layout:
    """``layout`` of the sequences, on the device of ``model``'s weights."""
    return layout(prompt_ids, response_ids, pad_id, width, packing,
                  getattr(getattr(model, "config", None), "hidden_size", 0)).to(next(model.parameters()).device)


def read_outputs(module: torch.nn.Module, lay: Layout, own_position: bool = False) -> torch.Tensor:
    """``[R, D]`` outputs of ``module`` (its ``logits``, or a base model's ``last_hidden_state``) at the response
    tokens: where each is predicted, or with ``own_position`` at the token itself."""
    out = module(**lay.inputs, use_cache=False)
    values = out.logits if hasattr(out, "logits") else out.last_hidden_state  # [rows, S, D]
    return values.reshape(-1, values.shape[-1])[lay.own if own_position else lay.read]


def read_with_hidden(model: torch.nn.Module, lay: Layout,
                     layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``([R, V] logits, [R, L, H] hidden states or None)`` at the positions that predict the response tokens: the
    hidden states for ``layers`` (indices into Hugging Face's ``hidden_states``: 0 the embeddings, ``l`` the output
    of decoder layer ``l``, the last one after the final norm; negative from the end), from the same pass."""
    if not layers:
        return read_outputs(model, lay), None
    out = model(**lay.inputs, use_cache=False, output_hidden_states=True)
    flat = lambda t: t.reshape(-1, t.shape[-1])[lay.read]  # noqa: E731
    return flat(out.logits), torch.stack([flat(out.hidden_states[layer]) for layer in layers], 1)


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    *,
    pad_id: int,
    width: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    packing: str = "padded",
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logprobs [B, T], entropy [B, T] or None)`` of the response tokens, fp32, 0 on padding.

    ``chunk_tokens > 0``: from the base model's hidden states and the output embedding (``lm_head``), that many
    tokens at a time; the model's logits must be ``hidden @ lm_head.weight.T (+ bias)``, as in Llama, Qwen and
    Mistral. 0: from the model's full logits.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packing)
    if chunk_tokens:
        head = model.get_output_embeddings()
        hidden = read_outputs(model.base_model, lay)  # [R, H]
        logprobs, entropy = chunked_logprobs(hidden, head.weight, head.bias, lay.targets, temperature,
                                             chunk_tokens, with_entropy)
    else:
        logits = read_outputs(model, lay)  # [R, V]
        logprobs = logprobs_from_logits(logits, lay.targets, temperature)
        entropy = entropy_from_logits(logits, temperature) if with_entropy else None
    return lay.scatter(logprobs), lay.scatter(entropy)


def response_topk(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *, k: int,
                  temperature: float, pad_id: int, width: int, packing: str = "padded", chunk_tokens: int = 1024,
                  hidden_layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A teacher's ``k`` most likely next tokens at every response position: ``(log-probs [B, T, k] fp32, ids
    [B, T, k] int32, hidden)`` of ``softmax(logits / temperature)`` over the whole vocabulary (``topk_logprobs``), 0
    on padding; ``chunk_tokens`` positions' fp32 logits at a time (0: all at once). ``hidden``: the hidden states of
    ``hidden_layers`` at the same positions, ``[B, T, L, H]`` (``read_with_hidden``), None without layers."""
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packing)
    logits, hidden = read_with_hidden(model, lay, hidden_layers)  # [R, V], [R, L, H]
    step = chunk_tokens or max(len(logits), 1)
    parts = [topk_logprobs(logits[a:a + step], k, temperature) for a in range(0, max(len(logits), 1), step)]
    return lay.scatter(torch.cat([v for v, _ in parts])), lay.scatter(torch.cat([i for _, i in parts])), \
        lay.scatter(hidden)


def response_logprobs_at(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]],
                         ids: torch.Tensor, *, temperature: float, pad_id: int, width: int, packing: str = "padded",
                         hidden_layers: tuple[int, ...] = ()
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A student's view of a teacher's top-k (token-level distillation): ``(logprobs [B, T], at_ids [B, T, k],
    rest [B, T], hidden)``, 0 on padding: the log-probs of the response tokens at temperature 1 (the hard labels),
    and under ``softmax(logits / temperature)`` the log-probs at ``ids`` (``[B, T, k]``, the teacher's ids at each
    position) and the log of the mass on all other ids (``rlcore.functional.logprobs_at``), fp32; ``hidden``: the
    hidden states of ``hidden_layers`` at the same positions, ``[B, T, L, H]`` (``read_with_hidden``), None without
    layers."""
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packing)
    logits, hidden = read_with_hidden(model, lay, hidden_layers)  # [R, V], [R, L, H]
    at, rest = logprobs_at(logits, ids.to(logits.device)[lay.rows.to(logits.device), lay.cols.to(logits.device)],
                           temperature)
    return (lay.scatter(logprobs_from_logits(logits, lay.targets)), lay.scatter(at), lay.scatter(rest),
            lay.scatter(hidden))


def response_values(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int, packing: str = "padded") -> torch.Tensor:
    """``[B, T]`` value estimates of a one-label token-classification model (the PPO critic), 0 on padding.

    The value of response token ``j`` is read where its log-prob is: at the
    position just before it (the state in which it is chosen), as in verl.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packing)
    return lay.scatter(read_outputs(model, lay)[:, 0].float())


def response_scores(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int, packing: str = "padded") -> torch.Tensor:
    """``[B, T]`` outputs of a one-label token-classification model at each response token's own position.

    Unlike ``response_values``, nothing is shifted: the score of response token ``j`` is the
    output at ``P + j``, the state after the token, so a reward model's score of a step is read
    at the step's last token, once the step is written (``rlcore.reward_inputs``). 0 on padding.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packing)
    return lay.scatter(read_outputs(model, lay, own_position=True)[:, 0].float())
