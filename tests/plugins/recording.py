"""A rollout worker that records every engine call: what it continued and what it sampled."""

from __future__ import annotations

from actors.rollout import RolloutWorker


class RecordingRolloutWorker(RolloutWorker):
    """``RolloutWorker``, its engine's ``generate`` wrapped: each request's context ids, and each sample's ids and
    log-probs, kept for ``recorded``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[list[int], list[int], list[float]]] = []
        engine = self.llm.generate

        def generate(inputs, params, use_tqdm=False):
            outputs = engine(inputs, params, use_tqdm=use_tqdm)
            for request, out in zip(inputs, outputs):
                for sample in out.outputs:
                    ids = list(sample.token_ids)
                    self.seen.append((list(request["prompt_token_ids"]), ids,
                                      [lp[t].logprob for lp, t in zip(sample.logprobs, ids)]))
            return outputs

        self.llm.generate = generate

    def recorded(self) -> list[tuple[list[int], list[int], list[float]]]:
        return self.seen
