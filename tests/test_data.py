import json

import pytest

from rlcore.data import DataError, PromptRow, PromptSampler, check_prompt_lengths, load_prompts


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loads_jsonl_rows_with_metadata(tmp_path):
    f = write(tmp_path / "d.jsonl", [json.dumps({"prompt": "1+1=", "answer": 2, "level": "easy"}), "",
                                      json.dumps({"prompt": "2+2=", "answer": "4"})])
    rows = load_prompts([f])
    assert [(r.index, r.prompt, r.answer) for r in rows] == [(0, "1+1=", "2"), (1, "2+2=", "4")]
    assert rows[0].metadata == {"level": "easy"}
    assert rows[1].source == f"{f} line 3"


def test_custom_keys(tmp_path):
    f = write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "gold": "a"})])
    assert load_prompts([f], prompt_key="question", answer_key="gold")[0].answer == "a"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a", "b"]', "line 2: expected an object with 'prompt' and 'answer', got list"),
        ('{"prompt": "", "answer": "1"}', "line 2: expected a non-empty string in 'prompt', got ''"),
        ('{"answer": "1"}', "line 2: expected a non-empty string in 'prompt', got None"),
        ('{"prompt": "x"}', "line 2: expected a string or number in 'answer', got None"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    f = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "answer": "1"}), line])
    with pytest.raises(DataError) as info:
        load_prompts([f])
    assert str(info.value) == f"{f} {message}" or str(info.value).startswith(f"{f} {message}")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match="data file not found: .*nope.jsonl"):
        load_prompts([tmp_path / "nope.jsonl"])
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_prompts([tmp_path / "d.csv"])


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["1+2=", ""], "answer": ["3", "0"]}), f)
    with pytest.raises(DataError, match=r"d.parquet row 2: expected a non-empty string in 'prompt'"):
        load_prompts([f])
    pq.write_table(pa.table({"prompt": ["1+2="], "answer": ["3"]}), f)
    assert load_prompts([f])[0].prompt == "1+2="


def test_prompt_length_check_names_row():
    class CharTokenizer:
        def encode(self, text):
            return list(text)

    rows = [PromptRow(0, "abc", "x", source="f.jsonl line 1"), PromptRow(1, "abcdef", "y", source="f.jsonl line 2")]
    with pytest.raises(DataError, match=r"^f.jsonl line 2: prompt has 6 tokens, more than data.max_prompt_tokens=5$"):
        check_prompt_lengths(rows, CharTokenizer(), 5)


def rows(n):
    return [PromptRow(i, f"p{i}", str(i)) for i in range(n)]


def test_sampler_is_a_function_of_the_step():
    a, b = PromptSampler(rows(10), 4, seed=3), PromptSampler(rows(10), 4, seed=3)
    first = [[r.index for r in a.batch(s)] for s in range(1, 6)]
    # A fresh sampler asked for step 4 directly (as after a resume) gets the same prompts.
    assert [r.index for r in b.batch(4)] == first[3]
    # Each epoch is a permutation: steps 1-2 plus half of step 3 cover every row once.
    epoch0 = first[0] + first[1] + first[2][:2]
    assert sorted(epoch0) == list(range(10))
    assert PromptSampler(rows(10), 4, seed=4).batch(1) != a.batch(1)


def test_sampler_without_shuffle_is_in_order():
    s = PromptSampler(rows(5), 3, seed=0, shuffle=False)
    assert [r.index for r in s.batch(1)] + [r.index for r in s.batch(2)] == [0, 1, 2, 3, 4, 0]


def test_extra_draws_differ_and_repeat():
    a, b = PromptSampler(rows(50), 5, seed=1), PromptSampler(rows(50), 5, seed=1)
    assert a.batch(3, draw=1) == b.batch(3, draw=1)
    assert a.batch(3, draw=1) != a.batch(3) and a.batch(3, draw=2) != a.batch(3, draw=1)


def test_prepare_loads_through_the_source_and_applies_the_transforms(local_model, tmp_path):
    """The composition root reads the rows with the algorithm's source, then runs each data transform on them."""
    from launch.build import configure, prepare
    from rewards.l1 import LengthTarget
    from rlcore.data import PreferenceRow

    train = write(tmp_path / "train.jsonl", [json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) for i in range(6)])
    evals = write(tmp_path / "eval.jsonl", [json.dumps({"prompt": f"{i}+2=", "answer": str(i + 2)}) for i in range(3)])
    plan = configure(None, [f"model.path={local_model}", f"data.train_files=[{train}]", f"data.eval_files=[{evals}]",
                            "data.transforms=[{name: length_target, mode: max, low: 2, high: 6}]", "trainer.seed=4"])
    data = prepare(plan)
    transform = LengthTarget(mode="max", low=2, high=6)
    assert data.train == transform(load_prompts([train]), 4)  # the train rows with trainer.seed
    assert data.eval == transform(load_prompts([evals]), 5)  # the eval rows with seed + 1
    assert all(r.prompt.endswith(f"Think for maximum {r.metadata['target_tokens']} tokens.") for r in data.train)

    pairs = write(tmp_path / "pairs.jsonl", [json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3"})])
    plan = configure(None, [f"model.path={local_model}", "algorithm.name=dpo", f"data.train_files=[{pairs}]",
                            "data.eval_files=[]", "learner.mini_batch_size=64"])
    data = prepare(plan)
    assert data.train == [PreferenceRow(0, "1+1=", "2", "3", f"{pairs} line 1")] and data.eval == []
