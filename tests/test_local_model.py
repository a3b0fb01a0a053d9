import json

import torch

from rlcore.local_model import LocalModelSpec, build_tokenizer, make_local_model
from rlcore.tasks.arithmetic import split_problems, write_jsonl


def test_tokenizer_round_trip():
    tok = build_tokenizer()
    ids = tok.encode("12+30=")
    assert len(ids) == 6 and tok.decode(ids) == "12+30="
    assert tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True) == "12+30="


def test_split_is_disjoint_and_complete(tmp_path):
    train, test = split_problems(max_operand=9, test_size=20, seed=1)
    assert len(train) + len(test) == 100 and not {p.prompt for p in train} & {p.prompt for p in test}
    path = write_jsonl(test, tmp_path / "t.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"prompt", "answer"} and str(eval(first["prompt"][:-1])) == first["answer"]


def test_make_local_model_is_a_cached_hf_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = LocalModelSpec(hidden_size=64, num_layers=1, intermediate_size=64, warmup_steps=2)
    path = make_local_model(tmp_path / "m", spec)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "qwen2" and tok.eos_token == "<eos>"
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert make_local_model(tmp_path / "m", spec) == path  # cached: not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("1+2=")])).logits
    assert logits.shape == (1, 4, spec.vocab_size)
