"""rlvr.data.rows: the arithmetic task, JSONL/Parquet loading, rendering and the prompt sampler."""

import copy
import dataclasses
import json

import pytest

from rlvr.data import prompts as data_prompts
from rlvr.data import rows as data
from rlvr.types import Prompt
from rlvr.config import ArithmeticConfig, DataConfig


@pytest.fixture(scope="module")
def tokenizer():
    from rlvr.models.tiny import build_tokenizer

    return build_tokenizer()


def _pairs(rows):
    return [(r["metadata"]["a"], r["metadata"]["b"]) for r in rows]


# --- built-in arithmetic task --------------------------------------------------------------

def test_arithmetic_is_deterministic_from_its_own_seed():
    cfg = ArithmeticConfig(num_train=300, num_eval=50)
    assert data.arithmetic_rows(cfg, "train") == data.arithmetic_rows(cfg, "train")
    assert data.arithmetic_rows(cfg, "eval") == data.arithmetic_rows(cfg, "eval")
    other = ArithmeticConfig(num_train=300, num_eval=50, seed=cfg.seed + 1)
    assert _pairs(data.arithmetic_rows(other, "eval")) != _pairs(data.arithmetic_rows(cfg, "eval"))


def test_arithmetic_splits_are_disjoint_and_correct():
    cfg = ArithmeticConfig()  # 10,000 pairs, 500 held out, 20,000 train rows (with repeats)
    train, held_out = data.arithmetic_rows(cfg, "train"), data.arithmetic_rows(cfg, "eval")
    assert len(train) == cfg.num_train and len(held_out) == cfg.num_eval
    assert len(set(_pairs(held_out))) == cfg.num_eval  # eval pairs are distinct
    assert not set(_pairs(train)) & set(_pairs(held_out))
    assert len(set(_pairs(train))) == 10_000 - cfg.num_eval  # every other pair is used for training
    for row in train[:50] + held_out[:50]:
        a, b = row["metadata"]["a"], row["metadata"]["b"]
        assert row["prompt"] == f"{a:02d}+{b:02d}=" and row["answer"] == str(a + b)
    assert len({len(r["prompt"]) for r in train + held_out}) == 1  # zero-padded: equal length


def test_arithmetic_sparse_space_and_too_many_eval_pairs():
    cfg = ArithmeticConfig(min_operand=100, max_operand=999, num_train=1000, num_eval=100)
    train, held_out = data.arithmetic_pairs(cfg)
    assert len(set(train)) == 1000 and not set(train) & set(held_out)
    assert all(100 <= x <= 999 for pair in train + held_out for x in pair)
    with pytest.raises(ValueError, match="num_eval"):
        data.arithmetic_pairs(ArithmeticConfig(min_operand=0, max_operand=2, num_eval=9))


# --- user files ----------------------------------------------------------------------------

def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return str(path)


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_load_prompt_and_messages_rows(tmp_path, fmt):
    write = _write_jsonl if fmt == "jsonl" else _write_parquet
    prompt_file = write(tmp_path / f"p.{fmt}", [{"prompt": "1+1=", "answer": "2", "level": 3},
                                                  {"prompt": "2+2=", "answer": "4", "level": 1}])
    rows = data.load_rows(prompt_file, DataConfig())
    assert [r["prompt"] for r in rows] == ["1+1=", "2+2="] and rows[0]["answer"] == "2"
    assert rows[0]["metadata"]["level"] == 3 and prompt_file in rows[0]["metadata"]["source"]

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "3+4="}]
    messages_file = write(tmp_path / f"m.{fmt}", [{"messages": chat, "answer": "7"}])
    (row,) = data.load_rows(messages_file, DataConfig())
    assert row["messages"] == chat and row["answer"] == "7" and "prompt" not in row


def test_load_custom_keys_and_numeric_answers(tmp_path):
    path = _write_jsonl(tmp_path / "c.jsonl", [{"question": "5+5=", "solution": 10},
                                               {"chat": [{"role": "user", "content": "hi"}], "solution": 1.5}])
    cfg = DataConfig(prompt_key="question", messages_key="chat", answer_key="solution")
    rows = data.load_rows(path, cfg)
    assert rows[0]["prompt"] == "5+5=" and rows[0]["answer"] == "10"
    assert rows[1]["messages"][0]["content"] == "hi" and rows[1]["answer"] == "1.5"


@pytest.mark.parametrize("line, match", [
    ("{not json", "not valid JSON"),
    ('{"prompt": "x"}', "missing field 'answer'"),
    ('{"prompt": "x", "answer": [1]}', "'answer' must be a string or a number"),
    ('{"answer": "1"}', "needs a 'prompt' string or a 'messages' list"),
    ('{"prompt": 5, "answer": "1"}', "'prompt' must be a string"),
    ('{"messages": [{"role": "user"}], "answer": "1"}', "'role' and 'content'"),
    ('{"messages": "hello", "answer": "1"}', "non-empty list"),
    ('[1, 2]', "expected an object"),
])
def test_bad_jsonl_row_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "ok", "answer": "1"}\n' + line + "\n")
    with pytest.raises(data.DatasetError, match=match) as err:
        data.load_rows(str(path), DataConfig())
    assert str(err.value).startswith(f"{path}:2: ") and (err.value.path, err.value.line) == (str(path), 2)


def test_bad_lines_are_counted_and_the_first_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": 1}\n\n{oops\n{"prompt": "b"}\n\xff\xfe\n'
                     b'{"prompt": "c", "answer": 3}\n')
    with pytest.raises(data.DatasetError) as err:
        data.load_rows(str(path), DataConfig())
    # lines 3, 4 and 5 are bad; line 2 is blank (skipped, not counted): 5 non-blank lines
    assert str(err.value).startswith(f"{path}:3: not valid JSON")
    assert "[3 of 5 lines are bad; the first is shown]" in str(err.value)


def test_utf8_byte_order_mark_and_non_utf8_bytes(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "answer": 1}\n')
    assert data.load_rows(str(path), DataConfig())[0]["prompt"] == "a"
    # line 2 has a latin-1 e-acute as its 16th byte
    path.write_bytes(b'{"prompt": "a", "answer": 1}\n{"prompt": "caf\xe9", "answer": 2}\n')
    with pytest.raises(data.DatasetError, match=r"bom\.jsonl:2: not UTF-8 text \(byte 0xe9 at byte 16 of the line\)"):
        data.load_rows(str(path), DataConfig())


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[{"prompt": "a", "answer": 1},\n {"prompt": "b", "answer": 2}]\n')
    with pytest.raises(data.DatasetError, match=r"array\.json:1: not valid JSON .*one JSON object per line, not an"):
        data.load_rows(str(path), DataConfig())


def test_bad_parquet_row_names_row(tmp_path):
    path = _write_parquet(tmp_path / "bad.parquet", [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}])
    with pytest.raises(data.DatasetError, match=r"bad\.parquet row 1: 'answer' is null") as err:
        data.load_rows(path, DataConfig())
    assert err.value.row == 1
    no_column = _write_parquet(tmp_path / "q.parquet", [{"question": "a", "answer": "1"}])
    with pytest.raises(data.DatasetError, match=r"q\.parquet row 0: needs a 'prompt' string .*'question'"):
        data.load_rows(no_column, DataConfig())
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(data.DatasetError, match=r"junk\.parquet: not a readable Parquet file"):
        data.load_rows(str(tmp_path / "junk.parquet"), DataConfig())


def test_unknown_extension_empty_file_folder_and_missing_file(tmp_path):
    with pytest.raises(data.DatasetError, match=r"expected a \.jsonl, \.json \(JSON Lines\) or \.parquet file"):
        data.load_rows(str(tmp_path / "x.csv"), DataConfig())
    (tmp_path / "empty.jsonl").write_text("\n  \n")
    with pytest.raises(data.DatasetError, match="empty.jsonl: no rows"):
        data.load_rows(str(tmp_path / "empty.jsonl"), DataConfig())
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(data.DatasetError, match="dir.jsonl: is a folder"):
        data.load_rows(str(tmp_path / "dir.jsonl"), DataConfig())
    with pytest.raises(data.DatasetError, match="gone.jsonl: no such file"):
        data.load_rows(str(tmp_path / "gone.jsonl"), DataConfig())


# --- rendering -----------------------------------------------------------------------------

def test_render_with_chat_template_and_system_prompt(tokenizer):
    rows = [{"prompt": "07+48=", "answer": "55", "metadata": {"i": 0}},
            {"messages": [{"role": "user", "content": "1+2="}], "answer": "3"}]
    p1, p2 = data_prompts.render_prompts(rows, tokenizer, DataConfig(system_prompt="Add."))
    assert p1.text == ("<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n07+48=<|im_end|>\n"
                       "<|im_start|>assistant\n")
    assert tokenizer.decode(p1.token_ids) == p1.text
    assert p1.answer == "55" and p1.metadata == {"i": 0}
    assert p2.text.startswith("<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n1+2=")


# the switch as Qwen3's chat template writes it (its generation prompt, abridged)
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}")


@pytest.mark.parametrize("enable_thinking, empty_think", [(None, False), (True, False), (False, True)])
def test_render_passes_enable_thinking_to_the_template(tokenizer, enable_thinking, empty_think):
    qwen3ish = copy.deepcopy(tokenizer)
    qwen3ish.chat_template = THINKING_TEMPLATE
    cfg = DataConfig(enable_thinking=enable_thinking, chat_template_kwargs={"unused_by_template": 1})
    (p,) = data_prompts.render_prompts([{"prompt": "1+2=", "answer": "3"}], qwen3ish, cfg)
    assert p.text.startswith("<|im_start|>user\n1+2=<|im_end|>\n<|im_start|>assistant\n")
    assert p.text.endswith("<think>\n\n</think>\n\n") == empty_think


def test_render_raw_prompt(tokenizer):
    rows = [{"prompt": "07+48=", "answer": "55"}, {"messages": [{"role": "user", "content": "a"},
                                                                {"role": "user", "content": "b"}], "answer": "x"}]
    p1, p2 = data_prompts.render_prompts(rows, tokenizer, DataConfig(apply_chat_template=False))
    assert p1.text == "07+48=" and tokenizer.decode(p1.token_ids) == "07+48="
    assert p2.text == "a\n\nb"


@pytest.mark.parametrize("template", [True, False])
def test_render_tokenizes_in_batches_as_one_text_at_a_time(tokenizer, monkeypatch, template):
    """Batched tokenization (`TOKENIZE_BATCH` texts per call) gives each prompt the ids of its own
    text, in row order, across batch boundaries and lengths."""
    monkeypatch.setattr(data_prompts, "TOKENIZE_BATCH", 2)
    rows = [{"prompt": "1" * n + "+2=", "answer": "3"} for n in (1, 7, 2, 12, 4)]
    prompts = data_prompts.render_prompts(rows, tokenizer, DataConfig(apply_chat_template=template))
    assert [p.text.count("1") for p in prompts] == [1, 7, 2, 12, 4]
    assert [p.token_ids for p in prompts] == [tokenizer(p.text, add_special_tokens=not template)["input_ids"]
                                              for p in prompts]


def test_render_needs_a_chat_template(tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template"):
        data_prompts.render_prompts([{"prompt": "x", "answer": "1"}], NoTemplate(), DataConfig())


def test_load_falls_back_to_raw_prompts_without_a_chat_template(tokenizer, capsys):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    cfg = DataConfig(arithmetic=ArithmeticConfig(num_train=4, num_eval=2))
    train, held_out = data_prompts.load_train_and_eval(cfg, bare)
    raw_train, _ = data_prompts.load_train_and_eval(dataclasses.replace(cfg, apply_chat_template=False), bare)
    assert [p.text for p in train] == [p.text for p in raw_train] and "<|im_start|>" not in train[0].text
    err = capsys.readouterr().err
    assert err.count("[rlvr] warning") == 1 and "data.apply_chat_template: false" in err  # once, both splits


def test_drop_too_long():
    prompts = [Prompt(str(n), [0] * n, "1") for n in (3, 10, 6, 7)]
    # max length 16 - 10 new tokens = 6 prompt tokens at most: 3 and 6 fit, 10 and 7 do not
    kept, skipped = data_prompts.drop_too_long(prompts, max_new_tokens=10, max_model_len=16, source="t.jsonl")
    assert [p.text for p in kept] == ["3", "6"] and skipped == 2
    assert data_prompts.drop_too_long([], 10, 16, "t.jsonl") == ([], 0)
    with pytest.raises(data.DatasetError, match=r"t\.jsonl: all 4 prompts are too long .* longer than 2 tokens "
                                                r"\(the shortest has 3\); lower rollout\.max_tokens"):
        data_prompts.drop_too_long(prompts, max_new_tokens=14, max_model_len=16, source="t.jsonl")
    with pytest.raises(data.DatasetError, match=r"eval\.max_tokens=16 leaves no room"):
        data_prompts.drop_too_long(prompts, 16, 16, "e.jsonl", tokens_key="eval.max_tokens")


def test_load_train_and_eval(tmp_path, tokenizer):
    small = ArithmeticConfig(num_train=40, num_eval=10)
    train, held_out = data_prompts.load_train_and_eval(DataConfig(arithmetic=small), tokenizer)
    assert len(train) == 40 and len(held_out) == 10
    assert all(isinstance(p, Prompt) and p.token_ids for p in train + held_out)

    path = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "1+1=", "answer": "2"}])
    train, held_out = data_prompts.load_train_and_eval(DataConfig(train_path=path, eval_path=None), tokenizer)
    assert [p.answer for p in train] == ["2"] and held_out == []


# --- sampler -------------------------------------------------------------------------------

def test_sampler_is_deterministic_and_covers_each_epoch():
    a, b = data_prompts.PromptSampler(10, seed=3), data_prompts.PromptSampler(10, seed=3)
    draws = [a.next_batch(4) for _ in range(5)]
    assert draws == [b.next_batch(4) for _ in range(5)]
    flat = sum(draws, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert flat[:10] != flat[10:20]  # a fresh permutation per epoch
    assert data_prompts.PromptSampler(10, seed=4).next_batch(10) != flat[:10]
    assert len(data_prompts.PromptSampler(3, seed=0).next_batch(7)) == 7  # a batch may span several epochs


def test_sampler_without_shuffle_takes_file_order_every_epoch():
    s = data_prompts.PromptSampler(5, seed=3, shuffle=False)
    assert s.next_batch(3) + s.next_batch(4) == [0, 1, 2, 3, 4, 0, 1]


def test_sampler_resume_equals_uninterrupted():
    straight = data_prompts.PromptSampler(7, seed=11)
    expected = [straight.next_batch(3) for _ in range(8)]

    first = data_prompts.PromptSampler(7, seed=11)
    got = [first.next_batch(3) for _ in range(4)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    resumed = data_prompts.PromptSampler(7, seed=11)
    resumed.load_state_dict(state)
    got += [resumed.next_batch(3) for _ in range(4)]
    assert got == expected


def test_sampler_rejects_state_of_another_dataset():
    state = data_prompts.PromptSampler(7, seed=0).state_dict()
    with pytest.raises(ValueError, match="7 items"):
        data_prompts.PromptSampler(8, seed=0).load_state_dict(state)
