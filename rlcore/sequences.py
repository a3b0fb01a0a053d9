"""Per-response-token outputs of a model, shared by the learner, the reference and the reward-model rewards.

Each sample is ``prompt + response``. The response token ``j`` of a sample with
``P`` prompt tokens sits at position ``P + j`` and is predicted by the output at
``P + j - 1``: log-probs and a critic's values are read there. A reward model's
score of token ``j`` is read at ``P + j`` itself, once the token is written
(``response_scores``).

Two layouts feed the model the same sequences (``layout``):

* **padded**: one row per sample, right-padded to the longest, with an attention mask;
* **packed** (padding-free): all samples in one row, back to back, with position ids
  that restart at 0 for each sample. Hugging Face models read the restarts as
  sequence boundaries: flash-attn's variable-length kernel when the model was built
  with ``attn_implementation="flash_attention_2"``, a block-diagonal causal mask with
  SDPA or eager attention. No compute is spent on padding tokens.

Outputs are read only at the response tokens (``[R]`` for the R response tokens of
the batch) and scattered back to ``[B, T]``, 0 elsewhere. With ``chunk_tokens``,
log-probs and entropy are computed from the final hidden states a chunk of tokens at
a time (``rlcore.functional.chunked_logprobs``), so the ``[R, vocab]`` fp32 logits
never exist at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlcore.functional import chunked_logprobs, entropy_from_logits, logprobs_from_logits


@dataclass
class Layout:
    """A batch of ``prompt + response`` sequences laid out for one forward pass."""

    inputs: dict[str, torch.Tensor]
    """The model's keyword inputs: ``input_ids`` and ``attention_mask`` ``[B, S]`` (padded), or ``input_ids`` and
    ``position_ids`` ``[1, N]`` (packed)."""
    read: torch.Tensor
    """``[R]`` flat position (into the ``rows × S`` positions) whose output predicts each response token."""
    rows: torch.Tensor
    """``[R]`` the sample of each response token."""
    cols: torch.Tensor
    """``[R]`` its index in that sample's response."""
    targets: torch.Tensor
    """``[R]`` its token id."""
    shape: tuple[int, int]
    """``(B, T)`` of the per-token outputs."""

    def to(self, device: torch.device | str) -> Layout:
        return Layout({k: v.to(device) for k, v in self.inputs.items()}, self.read.to(device), self.rows, self.cols,
                      self.targets.to(device), self.shape)

    def scatter(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """``[R]`` values per response token as ``[B, T]``, 0 where no response token is."""
        if values is None:
            return None
        out = values.new_zeros(self.shape)
        out[self.rows.to(values.device), self.cols.to(values.device)] = values
        return out


def layout(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int, width: int | None = None,
           packed: bool = False) -> Layout:
    """The sequences ``prompt_ids[i] + response_ids[i]`` padded into rows, or ``packed`` into one row.

    ``width`` is T of the ``[B, T]`` outputs (default: the longest response).
    """
    if any(not p for p in prompt_ids):
        raise ValueError("a sample has an empty prompt: its first response token has no position that predicts it")
    seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
    lengths = [len(s) for s in seqs]
    width = max(map(len, response_ids), default=0) if width is None else width
    if packed:
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        inputs = {"input_ids": torch.tensor([[t for s in seqs for t in s]], dtype=torch.long),
                  "position_ids": torch.tensor([[i for n in lengths for i in range(n)]], dtype=torch.long)}
    else:
        seq_len = max(lengths)
        starts = [i * seq_len for i in range(len(seqs))]
        input_ids = torch.full((len(seqs), seq_len), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), seq_len), dtype=torch.long)
        for i, s in enumerate(seqs):
            input_ids[i, :len(s)] = torch.tensor(s)
            attention_mask[i, :len(s)] = 1
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    read, rows, cols, targets = [], [], [], []
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        first = starts[i] + len(p) - 1
        read += range(first, first + len(r))
        rows += [i] * len(r)
        cols += range(len(r))
        targets += r
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Layout(inputs, as_long(read), as_long(rows), as_long(cols), as_long(targets), (len(seqs), width))


def layout_on(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
              width: int | None, packed: bool) -> Layout:
    """``layout`` of the sequences, on the device of ``model``'s weights."""
    return layout(prompt_ids, response_ids, pad_id, width, packed).to(next(model.parameters()).device)


def read_outputs(module: torch.nn.Module, lay: Layout, own_position: bool = False) -> torch.Tensor:
    """``[R, D]`` outputs of ``module`` (its ``logits``, or a base model's ``last_hidden_state``) at the response
    tokens: where each is predicted, or with ``own_position`` at the token itself."""
    out = module(**lay.inputs, use_cache=False)
    values = out.logits if hasattr(out, "logits") else out.last_hidden_state  # [rows, S, D]
    return values.reshape(-1, values.shape[-1])[lay.read + int(own_position)]


def response_logprobs(
    model: torch.nn.Module,
    prompt_ids: list[list[int]],
    response_ids: list[list[int]],
    *,
    pad_id: int,
    width: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    packed: bool = False,
    chunk_tokens: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logprobs [B, T], entropy [B, T] or None)`` of the response tokens, fp32, 0 on padding.

    ``chunk_tokens > 0``: from the base model's hidden states and the output embedding (``lm_head``), that many
    tokens at a time; the model's logits must be ``hidden @ lm_head.weight.T (+ bias)``, as in Llama, Qwen and
    Mistral. 0: from the model's full logits.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packed)
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


def response_values(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int, packed: bool = False) -> torch.Tensor:
    """``[B, T]`` value estimates of a one-label token-classification model (the PPO critic), 0 on padding.

    The value of response token ``j`` is read where its log-prob is: at the
    position just before it (the state in which it is chosen), as in verl.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packed)
    return lay.scatter(read_outputs(model, lay)[:, 0].float())


def response_scores(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], *,
                    pad_id: int, width: int, packed: bool = False) -> torch.Tensor:
    """``[B, T]`` outputs of a one-label token-classification model at each response token's own position.

    Unlike ``response_values``, nothing is shifted: the score of response token ``j`` is the
    output at ``P + j``, the state after the token, so a reward model's score of a step is read
    at the step's last token, once the step is written (``rlcore.reward_inputs``). 0 on padding.
    """
    lay = layout_on(model, prompt_ids, response_ids, pad_id, width, packed)
    return lay.scatter(read_outputs(model, lay, own_position=True)[:, 0].float())
