import json

import pytest

from rlcore.config import DataConfig
from rlcore.data import (
    DataError,
    PreferenceRow,
    PromptRow,
    PromptSampler,
    SFTRow,
    check_prompt_lengths,
    field_value,
    load_preferences,
    load_prompts,
    load_sft,
    render_prompts,
    split_conversation,
)
from tests.test_chat import chat_tokenizer, tokens

NOT_A_PROMPT = "expected a non-empty string in 'prompt' or a list of {role, content} messages"


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loads_jsonl_rows_with_metadata(tmp_path):
    f = write(tmp_path / "d.jsonl", [json.dumps({"prompt": "1+1=", "answer": 2, "level": "easy"}), "",
                                      json.dumps({"prompt": "2+2=", "answer": "4"})])
    rows = load_prompts([f])
    assert [(r.index, r.prompt, r.answer) for r in rows] == [(0, "1+1=", "2"), (1, "2+2=", "4")]
    assert rows[0].metadata == {"answer": 2, "level": "easy"}  # the answer column kept as it is (TRL's rewards)
    assert rows[1].source == f"{f} line 3"


def test_custom_keys(tmp_path):
    f = write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "gold": "a"})])
    assert load_prompts([f], prompt_key="question", answer_key="gold")[0].answer == "a"


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a", "b"]', "line 2: expected an object with 'prompt' and 'answer', got list"),
        ('{"prompt": "", "answer": "1"}', f"line 2: {NOT_A_PROMPT}, got ''"),
        ('{"answer": "1"}', f"line 2: {NOT_A_PROMPT}, got None"),
        ('{"prompt": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}], "answer": "1"}',
         "line 2: 'prompt[1].role' is 'bot'; expected one of system, user, assistant, tool"),
        ('{"prompt": [{"role": "user"}], "answer": "1"}', "line 2: 'prompt[0].content' must be a string, got None"),
        ('{"prompt": {"role": "user", "content": "hi"}, "answer": "1"}', f"line 2: {NOT_A_PROMPT}, got {{'role'"),
        ('{"prompt": "x"}', "line 2: expected a string or number in 'answer', got None"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, line, message):
    f = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ok", "answer": "1"}), line])
    with pytest.raises(DataError) as info:
        load_prompts([f])
    assert str(info.value).startswith(f"{f} {message}") and "\n" not in str(info.value)


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
        def encode(self, text, add_special_tokens=True):
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


ROWS_FOR = {  # algorithm -> a row of its source's data
    "sft": {"prompt": "What is 1 + 2?", "response": "<think>1 + 2 = 3</think><answer>3</answer>"},
    "orm": {"prompt": "What is 1 + 2?", "chosen": "<answer>3</answer>", "rejected": "<answer>4</answer>"},
    "prm": {"prompt": "What is 1 + 2?", "steps": ["1 + 2 = 3. ", "<answer>3</answer>"], "hard_labels": [1, 1]},
}


@pytest.mark.parametrize("algorithm", ["grpo", *ROWS_FOR])
def test_load_needs_no_tokenizer_and_render_checks_the_rows_with_it(algorithm, cache_dir, tmp_path, monkeypatch):
    """``load`` runs before Ray starts, so it takes no tokenizer (importing transformers' AutoTokenizer alone is
    3-4 s on 2 cores); the rows' checks that need one (SFT conversations, reward-model inputs) run in ``render``,
    while Ray starts, and still name the row."""
    import transformers

    from launch.build import configure, load, render
    from rlcore.data import DataError

    files = []
    if algorithm in ROWS_FOR:
        files = [f"data.train_files=[{write(tmp_path / 'rows.jsonl', [json.dumps(ROWS_FOR[algorithm])] * 8)}]",
                 "data.eval_files=[]", "reference.enabled=false", "learner.mini_batch_size=8",
                 "data.prompts_per_step=8"]
    plan = configure(None, ["model.path=local://tiny-qwen2-reason", f"trainer.cache_dir={cache_dir}",
                            f"algorithm.name={algorithm}", *files])
    real, asked = transformers.AutoTokenizer.from_pretrained, []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *args, **kwargs: asked.append(args[0]) or real(*args, **kwargs))
    data = load(plan)
    assert asked == [] and len(data.train) > 0
    render(plan, data)
    assert asked == [plan.cfg.model.path]
    if algorithm in ROWS_FOR:  # a row the tokenizer cannot take is found in render, named by file and line
        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                            lambda *args, **kwargs: _without_template(real(*args, **kwargs)))
        chat = write(tmp_path / "chat.jsonl", [json.dumps({**ROWS_FOR[algorithm], "prompt": USER})])
        plan = configure(None, ["model.path=local://tiny-qwen2-reason", f"trainer.cache_dir={cache_dir}",
                                f"algorithm.name={algorithm}", *files, f"data.train_files=[{chat}]"])
        data = load(plan)
        with pytest.raises(DataError, match="chat.jsonl line 1: .*chat template"):
            render(plan, data)


def _without_template(tokenizer):
    tokenizer.chat_template = None
    return tokenizer


# ---- chat data: message lists, nested keys, Parquet and datasets folders, SFT rows (issue 9) ----

USER = [{"role": "user", "content": "what is 2+2"}]
REPLY = [{"role": "assistant", "content": "4"}]
USER_HEADER = "<|im_start|>user\nwhat is 2+2<|im_end|>\n<|im_start|>assistant\n"


def verl_rows(n=5):
    """verl's layout: a message-list prompt, the ground truth under reward_model, more fields beside it."""
    return [{"data_source": "arith", "prompt": [{"role": "user", "content": f"{i}+1="}],
             "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
            for i in range(n)]


def write_jsonl(path, rows):
    return write(path, [json.dumps(r) for r in rows])


def content(rows):
    return [(r.index, r.prompt, r.answer, r.metadata) for r in rows]


def test_message_prompts_and_a_nested_answer(tmp_path):
    f = write_jsonl(tmp_path / "verl.jsonl", verl_rows(2))
    rows = load_prompts([f], answer_key="reward_model.ground_truth")
    assert [(r.prompt, r.answer) for r in rows] == [([{"role": "user", "content": "0+1="}], "1"),
                                                    ([{"role": "user", "content": "1+1="}], "2")]
    assert rows[1].metadata == {"data_source": "arith", "reward_model": {"style": "rule", "ground_truth": "2"},
                                "extra_info": {"index": 1}}  # the other top-level fields, the nested key's parent too
    assert not rows[0].templated  # rendered later, by render_prompts


def test_dotted_keys_reach_nested_fields_and_a_literal_key_wins():
    row = {"a.b": "top", "a": {"b": "nested", "c": {"d": 4}}, "x": None}
    assert field_value(row, "a.b") == "top"
    assert field_value(row, "a.c.d") == 4 and field_value({"a": {"b": "nested"}}, "a.b") == "nested"
    assert field_value(row, "a.z") is None and field_value(row, "x.y") is None and field_value(row, "a.b.c") is None


def test_custom_nested_keys_for_prompt_and_answer(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{"extra": {"question": "1+1="}, "meta": {"gold": 2}, "id": 7}])
    [row] = load_prompts([f], prompt_key="extra.question", answer_key="meta.gold")
    assert (row.prompt, row.answer, row.metadata) == ("1+1=", "2", {"extra": {"question": "1+1="},
                                                                    "meta": {"gold": 2}, "id": 7})


@pytest.mark.parametrize("bad", [{"style": "rule"}, "4", None])
def test_a_bad_nested_row_names_file_row_and_field(tmp_path, bad):
    rows = verl_rows(2)
    rows[1]["reward_model"] = bad
    f = write_jsonl(tmp_path / "verl.jsonl", rows)
    with pytest.raises(DataError, match=rf"^{f} line 2: expected a string or number in 'reward_model.ground_truth', "
                                        r"got None$"):
        load_prompts([f], answer_key="reward_model.ground_truth")


@pytest.mark.parametrize(
    "row, field",
    [
        ({"prompt": "What is \ud800?", "answer": "1"}, "prompt"),
        ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\udfff"}], "answer": "1"},
         "prompt[1].content"),
        ({"prompt": "p", "answer": "1", "reward_model": {"ground_truth": "4\udc00"}}, "reward_model.ground_truth"),
        ({"prompt": "p", "answer": "1", "tags": ["ok", "\ud83d"]}, "tags[1]"),
        ({"prompt": "p", "answer": "1", "extra": {"\ud800": 1}}, "extra"),
    ],
)
def test_a_lone_surrogate_names_file_line_and_field(tmp_path, row, field):
    """A JSON escape of half a UTF-16 pair (``\\ud800``) loads as a string no tokenizer can encode: every string of
    the row, nested ones and field names included, is checked as the rows are read."""
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok", "answer": "1"}, row])
    assert "\\ud" in f.read_text()  # json.dumps writes the escape, as a user's file would hold it
    with pytest.raises(DataError) as info:
        load_prompts([f])
    assert str(info.value) == f"{f} line 2: invalid Unicode in '{field}'"


def test_every_loader_checks_for_invalid_unicode(tmp_path):
    prefs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b\ud800"}])
    with pytest.raises(DataError, match=r"p.jsonl line 1: invalid Unicode in 'rejected'$"):
        load_preferences([prefs])
    sft = write_jsonl(tmp_path / "s.jsonl", [{"messages": [{"role": "user", "content": "\udbff"},
                                                           {"role": "assistant", "content": "a"}]}])
    with pytest.raises(DataError, match=r"s.jsonl line 1: invalid Unicode in 'messages\[0\].content'$"):
        load_sft([sft], DataConfig())


def test_parquet_shard_folders_and_save_to_disk_load_the_jsonl_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    datasets = pytest.importorskip("datasets")
    rows = verl_rows(5)

    def load(path):
        return load_prompts([path], answer_key="reward_model.ground_truth")

    expected = content(load(write_jsonl(tmp_path / "d.jsonl", rows)))

    single = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), single)
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[3:]), shards / "part-01.parquet")  # written first, read second
    pq.write_table(pa.Table.from_pylist(rows[:3]), shards / "part-00.parquet")
    (shards / "README.md").write_text("not data\n")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved), num_shards=2)

    for path in (single, shards, saved):
        assert content(load(path)) == expected, path
    assert load(single)[1].source == f"{single} row 2"
    assert [r.source for r in load(shards)][2:4] == [f"{shards / 'part-00.parquet'} row 3",
                                                     f"{shards / 'part-01.parquet'} row 1"]
    arrow = sorted(saved.glob("*.arrow"))
    assert [p.name for p in arrow] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert load(saved)[0].source == f"{arrow[0]} row 1" and load(saved)[-1].source.startswith(f"{arrow[1]} row ")
    # The row number names the bad row within its shard.
    rows[4]["prompt"] = []
    pq.write_table(pa.Table.from_pylist(rows[3:]), shards / "part-01.parquet")
    with pytest.raises(DataError, match=rf"^{shards / 'part-01.parquet'} row 2: expected a non-empty string in "
                                        "'prompt' or a list of"):
        load(shards)


def test_folder_problems_are_one_line(tmp_path):
    datasets = pytest.importorskip("datasets")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"^{empty}: a folder with no .parquet shards and no state.json"):
        load_prompts([empty])
    splits = tmp_path / "splits"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(verl_rows(2))}).save_to_disk(str(splits))
    with pytest.raises(DataError, match=rf"^{splits}: a DatasetDict folder \(splits: train\); name one split's "
                                        rf"folder, e.g. {splits / 'train'}$"):
        load_prompts([splits])
    saved = splits / "train"
    assert len(load_prompts([saved], answer_key="reward_model.ground_truth")) == 2
    shard = next(saved.glob("*.arrow"))
    shard.unlink()
    with pytest.raises(DataError, match=rf"^data file not found: {shard} \(listed in {saved / 'state.json'}\)$"):
        load_prompts([saved])
    (saved / "state.json").write_text("{}")
    with pytest.raises(DataError, match=rf"^{saved / 'state.json'}: not a datasets save_to_disk state") as info:
        load_prompts([saved])
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match=rf"^data file not found: {tmp_path / 'nope'}$"):
        load_prompts([tmp_path / "nope"])


def test_load_sft_conversations_and_prompt_response_pairs(tmp_path):
    system = {"role": "system", "content": "be brief"}
    later = [{"role": "user", "content": "and 3+3"}, {"role": "assistant", "content": "6"}]
    f = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [system, *USER, *REPLY, *later, {"role": "user", "content": "thanks"}], "answer": 4, "id": 1},
        {"prompt": "1+1=", "response": "2"},
        {"prompt": USER, "response": REPLY, "answer": "4"},
    ])
    rows = load_sft([f], DataConfig())
    assert rows[0] == SFTRow(0, [system, *USER], [*REPLY, *later], "4", f"{f} line 1", {"id": 1})  # "thanks" dropped
    assert rows[1] == SFTRow(1, "1+1=", "2", None, f"{f} line 2")
    assert rows[2] == SFTRow(2, USER, REPLY, "4", f"{f} line 3")


def test_load_sft_with_nested_keys(tmp_path):
    f = write_jsonl(tmp_path / "sft.jsonl", [{"chat": {"turns": USER + REPLY}, "meta": {"gold": "4"}}])
    cfg = DataConfig(messages_key="chat.turns", answer_key="meta.gold")
    assert load_sft([f], cfg) == [SFTRow(0, USER, REPLY, "4", f"{f} line 1", {"chat": {"turns": USER + REPLY},
                                                                              "meta": {"gold": "4"}})]


@pytest.mark.parametrize("row, message", [
    ({"messages": USER}, "'messages' has no assistant message to learn from"),
    ({"messages": REPLY + USER}, "'messages' starts with an assistant message"),
    ({"messages": "hi"}, "expected a list of {role, content} messages in 'messages', got 'hi'"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "'messages[0].role' is 'bot'"),
    ({"prompt": "hi", "response": USER}, "'response' must start and end with an assistant message, got roles [user]"),
    ({"prompt": "hi"}, "expected a non-empty string in 'response' or a list of {role, content} messages, got None"),
    ({"text": "hi"}, "expected 'messages' (a conversation) or 'prompt' and 'response', got fields ['text']"),
    ({"prompt": "hi", "response": "x", "answer": [1]}, "expected a string or number in 'answer', got [1]"),
    ([1], "expected an object with 'messages' or 'prompt' and 'response', got list"),
])
def test_a_bad_sft_row_names_file_row_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "ok", "response": "fine"}, row])
    with pytest.raises(DataError) as info:
        load_sft([f], DataConfig())
    assert str(info.value).startswith(f"{f} line 2: {message}"), str(info.value)


def test_split_conversation_keeps_tool_turns_between_replies():
    tool = {"role": "tool", "content": "4"}
    convo = [*USER, {"role": "assistant", "content": "calc"}, tool, *REPLY, {"role": "user", "content": "thanks"}]
    assert split_conversation(convo) == (USER, [{"role": "assistant", "content": "calc"}, tool, *REPLY])


def test_conversational_preference_pairs(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": USER, "chosen": REPLY, "rejected": [{"role": "assistant", "content": "6"}], "id": 3},
        {"prompt": "1+1=", "chosen": "2", "rejected": REPLY},  # the forms mix
    ])
    rows = load_preferences([f])
    assert rows[0] == PreferenceRow(0, USER, REPLY, [{"role": "assistant", "content": "6"}], f"{f} line 1", {"id": 3})
    assert (rows[1].prompt, rows[1].chosen, rows[1].rejected) == ("1+1=", "2", REPLY)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "chosen": USER + REPLY, "rejected": REPLY}])
    with pytest.raises(DataError, match=rf"^{bad} line 1: 'chosen' must start and end with an assistant message, got "
                                        r"roles \[user, assistant\]; the turns before the first reply belong in "
                                        r"'prompt'$"):
        load_preferences([bad])


def test_render_prompts_templates_message_lists_not_strings():
    tok = chat_tokenizer()
    pair, sft = PreferenceRow(2, USER, REPLY, "6", "f line 3"), SFTRow(3, USER, REPLY, source="f line 4")
    rows = [PromptRow(0, "1+1=", "2", "f line 1"), PromptRow(1, USER, "4", "f line 2", {"k": 1}), pair, sft]
    out = render_prompts(rows, tok)
    assert out[0] == rows[0] and not out[0].templated  # a string stays as it is
    assert out[1] == PromptRow(1, USER_HEADER, "4", "f line 2", {"k": 1}, templated=True, user_prompt="what is 2+2")
    assert out[0].user_text() == "1+1=" and out[1].user_text() == "what is 2+2"  # what the rewards judge
    assert out[2] is pair and out[3] is sft  # other rows are the source's to encode
    assert rows[1].prompt == USER  # the input rows are untouched


def test_render_prompts_adds_the_system_prompt():
    tok = chat_tokenizer()
    out = render_prompts([PromptRow(0, "1+1=", "2"), PromptRow(1, USER, "4"),
                          PromptRow(2, [{"role": "system", "content": "hi"}, *USER], "4")], tok, "be brief")
    system = "<|im_start|>system\nbe brief<|im_end|>\n"
    assert out[0].prompt == system + "<|im_start|>user\n1+1=<|im_end|>\n<|im_start|>assistant\n" and out[0].templated
    assert out[1].prompt == system + USER_HEADER and out[1].templated
    assert out[2].prompt == "<|im_start|>system\nhi<|im_end|>\n" + USER_HEADER  # the row's own system message wins
    assert [r.user_text() for r in out] == ["1+1=", "what is 2+2", "what is 2+2"]  # never the system prompt


def test_render_prompts_names_the_row_when_the_tokenizer_has_no_template():
    rows = [PromptRow(0, "1+1=", "2", "f line 1"), PromptRow(1, USER, "4", "f line 2")]
    assert render_prompts(rows[:1], chat_tokenizer(template=None)) == rows[:1]  # strings need no template
    with pytest.raises(DataError, match=r"^f line 2: the tokenizer of .* has no chat template"):
        render_prompts(rows, chat_tokenizer(template=None))


def test_prompt_length_counts_templated_prompts_without_added_special_tokens():
    tok = chat_tokenizer(bos=True)
    [templated] = render_prompts([PromptRow(0, USER, "4", "f line 1")], tok)
    assert len(tok.encode(templated.prompt)) == 12  # with the BOS a plain encode would add
    check_prompt_lengths([templated], tok, 11)  # as the rollout worker encodes it: 11 tokens
    with pytest.raises(DataError, match=r"^f line 2: prompt has 2 tokens, more than data.max_prompt_tokens=1$"):
        check_prompt_lengths([PromptRow(1, "hi", "x", "f line 2")], tok, 1)  # a string gets its BOS
    pair = PreferenceRow(2, USER, REPLY, "6", "f line 3")  # a message list the source renders: counted templated
    check_prompt_lengths([pair], tok, 11)
    with pytest.raises(DataError, match=r"^f line 3: prompt has 11 tokens, more than data.max_prompt_tokens=10$"):
        check_prompt_lengths([pair], tok, 10)


def test_prepare_renders_prompts_after_the_transforms(tmp_path):
    from launch.build import configure, prepare

    model = tmp_path / "model"
    chat_tokenizer().save_pretrained(model)  # prepare reads the tokenizer; the folder check wants the rest too
    (model / "config.json").write_text('{"model_type": "qwen2"}')
    (model / "model.safetensors").write_bytes(b"\0" * 8)
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": USER, "answer": "4"}])
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": "1+1=", "answer": "2"}])
    plan = configure(None, [f"model.path={model}", f"data.train_files=[{train}]", f"data.eval_files=[{evals}]",
                            "data.system_prompt=be brief",
                            "data.transforms=[{name: length_target, mode: exact, low: 3, high: 3}]"])
    data = prepare(plan)
    system = "<|im_start|>system\nbe brief<|im_end|>\n"
    assert data.train[0].prompt == (system + "<|im_start|>user\nwhat is 2+2 Think for 3 tokens.<|im_end|>\n"
                                    "<|im_start|>assistant\n")
    assert data.eval[0].prompt == (system + "<|im_start|>user\n1+1= Think for 3 tokens.<|im_end|>\n"
                                   "<|im_start|>assistant\n")
    assert data.train[0].templated and data.eval[0].templated
    from transformers import AutoTokenizer

    rendered = "<|im_start|>user\nwhat is 2+2<|im_end|>\n<|im_start|>assistant\n"
    count = len(AutoTokenizer.from_pretrained(model).encode(rendered, add_special_tokens=False))
    plan = configure(None, [f"model.path={model}", f"data.train_files=[{train}]", "data.eval_files=[]",
                            f"data.max_prompt_tokens={count - 1}"])
    with pytest.raises(DataError, match=rf"^{train} line 1: prompt has {count} tokens"):  # counted after rendering
        prepare(plan)


def test_length_target_on_message_prompts():
    from rewards.l1 import LengthTarget

    convo = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2+2  "}, *REPLY,
             {"role": "user", "content": "and 3+3\n"}]
    rows = [PromptRow(0, convo, "6", "f line 1"), PromptRow(1, [{"role": "user", "content": " "}], "1", "f line 2")]
    out = LengthTarget(mode="max", low=2, high=9)(rows, 0)
    n = out[0].metadata["target_tokens"]
    assert out[0].prompt == [*convo[:3], {"role": "user", "content": f"and 3+3 Think for maximum {n} tokens."}]
    assert out[1].prompt == [{"role": "user", "content": f"Think for maximum {out[1].metadata['target_tokens']} "
                                                         "tokens."}]  # an empty message gets the suffix alone
    assert rows[0].prompt[3]["content"] == "and 3+3\n"  # the input rows are untouched
    strings = LengthTarget(mode="max", low=2, high=9)([PromptRow(0, "a", "6"), PromptRow(1, "b", "1")], 0)
    assert [r.metadata for r in out] == [r.metadata for r in strings]  # the same draws as for strings
    with pytest.raises(DataError, match=r"^f line 3: the prompt has no user message to add the L1 length target to$"):
        LengthTarget()([PromptRow(2, [{"role": "system", "content": "x"}], "1", "f line 3")], 0)


def test_preference_pairs_in_message_form_are_masked_to_the_assistant():
    from launch.sources import PreferenceSource

    tok = chat_tokenizer()
    source = PreferenceSource.__new__(PreferenceSource)  # pairs() needs only the tokenizer and the config
    source.tokenizer, source.cfg = tok, type("Cfg", (), {"data": DataConfig()})()
    multi = [*REPLY, {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "bye"}]
    rows = [PreferenceRow(0, USER, multi, [{"role": "assistant", "content": "6"}], "f line 1"),
            PreferenceRow(1, "1+1=", "2", "3", "f line 2")]
    batch = source.pairs(rows)
    header = tok.encode(USER_HEADER, add_special_tokens=False)
    assert batch.prompt_ids[:2] == [header, header]
    mask = batch.response_mask.tolist()
    assert list(zip(tokens(tok, batch.response_ids[0]), mask[0])) == [
        ("4", 1), ("<|im_end|>", 1), ("\n", 0), ("<|im_start|>", 0), ("user", 0), ("\n", 0), ("thanks", 0),
        ("<|im_end|>", 0), ("\n", 0), ("<|im_start|>", 0), ("assistant", 0), ("\n", 0), ("bye", 1), ("<|im_end|>", 1)]
    assert tokens(tok, batch.response_ids[1]) == ["6", "<|im_end|>"] and mask[1][:3] == [1, 1, 0]
    # Plain strings: exactly as before the chat formats, prompt and response encoded as they are, all trained.
    eos = tok.eos_token_id
    assert batch.prompt_ids[2:] == [tok.encode("1+1="), tok.encode("1+1=")]
    assert batch.response_ids[2:] == [tok.encode("2") + [eos], tok.encode("3") + [eos]]
    assert mask[2][:2] == [1, 1] and mask[3][:2] == [1, 1] and sum(mask[2]) == 2
    assert batch.prompts == [USER_HEADER, USER_HEADER, "1+1=", "1+1="]  # strings, for logs
    assert batch.responses == ["4\n\nthanks\n\nbye", "6", "2", "3"]
    assert batch.group_ids.tolist() == [0, 0, 1, 1] and batch.scores.tolist() == [1, 0, 1, 0]


def test_row_messages_repeat_each_conversational_row_and_are_none_without_one():
    from rlcore.data import PromptRow, row_messages

    chat = [{"role": "user", "content": "hi"}]
    rows = [PromptRow(0, "rendered", "1", messages=chat), PromptRow(1, "plain", "2")]
    assert row_messages(rows, 2) == [chat, chat, None, None]
    assert row_messages([PromptRow(0, "plain", "2")], 3) is None
