"""RolloutWorker.generate without an engine: what it seeds, with a stand-in for vLLM's ``LLM``."""

import sys
from types import SimpleNamespace

import numpy as np
import torch

from actors.rollout import RolloutWorker
from rlcore.config import RolloutConfig
from rlcore.data import PromptRow


class RandomEngine:
    """Samples as vLLM does for requests without a seed of their own: the CPU runner from torch's default
    generator, the GPU model runner (V2) a seed per request from numpy's global one."""

    def generate(self, inputs, params, use_tqdm=False):
        outputs = []
        for x in inputs:
            ids = [int(torch.randint(3, 100, ())), int(np.random.randint(3, 100))]
            sample = SimpleNamespace(token_ids=ids, text="x", finish_reason="stop",
                                     logprobs=[{t: SimpleNamespace(logprob=-1.0)} for t in ids])
            outputs.append(SimpleNamespace(prompt_token_ids=x["prompt_token_ids"], outputs=[sample]))
        return outputs


def test_a_seeded_generate_repeats_its_samples_on_either_runner(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(SamplingParams=lambda **kw: kw))
    worker = RolloutWorker.__new__(RolloutWorker)
    worker.llm, worker.asleep, worker.version, worker.cfg = RandomEngine(), False, 0, RolloutConfig()
    worker.tokenizer = SimpleNamespace(encode=lambda text, add_special_tokens=True: [1, 2])
    worker.thinking_tokens = lambda text: -1
    rows = [PromptRow(0, "1+1=", "2"), PromptRow(1, "2+2=", "4")]
    first, again, other = (worker.generate(rows, n=1, seed=s).response_ids for s in (7, 7, 8))
    assert first == again
    assert [ids[1] for ids in first] != [ids[1] for ids in other]  # the numpy draws follow the seed too
