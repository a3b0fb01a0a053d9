"""A generative verifier: the ``genrm`` reward term, a causal LM fine-tuned to answer whether a solution is right.

GenRM (Zhang et al. 2024, "Generative Verifiers: Reward Modeling as Next-Token Prediction",
https://arxiv.org/abs/2408.15240) keeps the language-model head: the verifier is the policy's model trained with
plain SFT to answer ``Yes`` or ``No`` after a (partial) solution and a question, and its score is the probability
it gives the answer ``Yes``. Its training rows are ``verdicts-train.jsonl``, which ``launch.label_steps`` writes
from its Monte-Carlo step labels (``rlcore.test_time.verdict_rows``: one row per prefix of steps, so it judges a
partial solution, what step-level search needs, and a whole one, what best-of-N needs).

The term builds the prompt as training did (``rlcore.test_time.verdict_prompt``: the rendered prompt the policy
saw, the response as written, ``question``), encodes each answer after it as SFT encodes a string prompt and
response (``rlcore.chat.encode_conversation``: the answer, then EOS), and scores the response
P(Yes) / (P(Yes) + P(No)) = sigmoid(log P(Yes) − log P(No)), each the sum of its tokens' log-probabilities. A score
is in (0, 1); an empty response scores 0.0.

    eval:
      verifier: {name: genrm, timeout_s: 600, args: {model: outputs/tts/genrm/final}}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from rewards.reward_model import check_options, pick_device, rendered, sigmoid
from rlcore.test_time import VERDICT_QUESTION, VERDICTS, verdict_prompt

HINT = "name a generative verifier's export: SFT of the policy on launch.label_steps' verdicts-train.jsonl"


@dataclass
class GenerativeVerifierOptions:
    model: str = field(default=MISSING, metadata={"model_folder": HINT})
    """The verifier, a causal LM trained to answer Yes or No: its export (trainer.output_dir/final of an SFT run on launch.label_steps' verdicts-train.jsonl) or a Hugging Face model folder (required). A relative path is taken from the reward actors' working directory."""
    question: str = VERDICT_QUESTION
    """What follows the response in the verifier's prompt: the question its training rows ask (launch.label_steps writes them with the default)."""
    batch_size: int = 32
    """Prompts per forward pass (each is read twice: once per answer)."""
    device: str = "auto"
    """Where the model runs: auto (cuda when the term's actors have a GPU, num_gpus > 0; else cpu), cpu, cuda or cuda:N."""

    def __post_init__(self):
        check_options(self.model, self.batch_size, self.device, HINT)
        if not self.question:
            raise ValueError("question is empty: name the text the verifier's training prompts end with")


class GenerativeVerifier:
    """sigmoid(log P(Yes) − log P(No)) of ``model`` after ``verdict_prompt(rendered prompt, response, question)``."""

    Options = GenerativeVerifierOptions

    def __init__(self, model: str, question: str = VERDICT_QUESTION, batch_size: int = 32, device: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = GenerativeVerifierOptions(model, question, batch_size, device)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).to(self.device).eval()
        self.pad_id = self.model.config.pad_token_id or 0

    def score(self, samples: list) -> list[float]:
        import torch

        from rlcore.chat import encode_conversation
        from rlcore.sequences import response_logprobs

        scored = [i for i, s in enumerate(samples) if s.response]
        prompts = [verdict_prompt(rendered(samples[i]), samples[i].response, self.options.question) for i in scored]
        out = [0.0] * len(samples)  # an empty response has nothing to judge
        size = self.options.batch_size
        for start in range(0, len(prompts), size):
            ids, answers = [], []  # each prompt twice: followed by Yes, then by No
            for text in prompts[start:start + size]:
                for verdict in VERDICTS:
                    prompt_ids, answer_ids, _ = encode_conversation(text, verdict, self.tokenizer)
                    ids.append(prompt_ids)
                    answers.append(answer_ids)
            with torch.no_grad():
                logprobs, _ = response_logprobs(self.model, ids, answers, pad_id=self.pad_id,
                                                width=max(map(len, answers)))
            totals = logprobs.sum(dim=1).tolist()  # 0 on padding
            for k, i in enumerate(scored[start:start + size]):
                out[i] = sigmoid(totals[2 * k] - totals[2 * k + 1])
        return out
