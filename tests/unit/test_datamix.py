"""Data sources and mixing (rlvr.data.sources): JSONL + a real `datasets` save_to_disk folder, counts,
weights, upsampling, a deterministic mixture and a disjoint held-out split."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from rlvr.config import DataConfig, load_recipe
from rlvr.config.data import split_count
from rlvr.data import sources as datamix
from rlvr.data.rows import DatasetError

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "recipes", "tiny-cpu.yaml")


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    import datasets

    root = tmp_path_factory.mktemp("sources")
    paths = {}
    for name, n in (("a", 30), ("b", 10)):
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"{name}{i}", "answer": str(i)}) + "\n" for i in range(n)))
        paths[name] = str(path)
    ds = datasets.Dataset.from_list([{"question": f"hf{i}", "solution": i} for i in range(20)])
    ds.save_to_disk(str(root / "hf_single"))
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5))}).save_to_disk(str(root / "hf_dict"))
    paths["hf"], paths["hf_dict"] = str(root / "hf_single"), str(root / "hf_dict")
    return paths


def _by_source(rows) -> Counter:
    return Counter(r["metadata"]["source"].split(" row ")[0].split(":")[0].rsplit("/", 1)[-1] for r in rows)


def test_split_count_and_shares():
    assert split_count("x.jsonl#12") == ("x.jsonl", 12)
    assert split_count("hf:a/b:main:train") == ("hf:a/b:main:train", None)
    assert datamix.mix_counts([10, 10, 10], [None] * 3, [1.0, 1.0, 1.0], 10) == [4, 3, 3]  # sums exactly
    assert datamix.mix_counts([100, 5], [None, 20], [None, None], None) == [100, 20]


def test_a_datasets_folder_is_a_source_with_field_mapping(sources):
    cfg = DataConfig(prompt_key="question", answer_key="solution")
    rows = datamix.source_rows(sources["hf"], cfg)
    assert len(rows) == 20 and rows[3]["prompt"] == "hf3" and rows[3]["answer"] == "3"
    assert len(datamix.source_rows(f"hf:{sources['hf_dict']}:test", cfg)) == 5
    assert len(datamix.source_rows(sources["hf_dict"] + "#7", cfg)) == 7  # a DatasetDict's train split
    with pytest.raises(DatasetError, match="no split 'dev'"):
        datamix.source_rows(f"hf:{sources['hf_dict']}:dev", cfg)
    with pytest.raises(DatasetError, match="needs a 'prompt' string"):  # default keys do not fit
        datamix.source_rows(sources["hf"], DataConfig())


def test_mix_by_counts_is_deterministic_and_upsamples(sources):
    cfg = DataConfig(train_mix=[sources["a"] + "#12", {"path": sources["b"], "count": 25}], eval_path=None)
    train, held = datamix.train_and_eval_rows(cfg)
    assert held is None and len(train) == 37
    assert _by_source(train) == {"a.jsonl": 12, "b.jsonl": 25}
    assert Counter(r["prompt"] for r in train if r["prompt"].startswith("b")).most_common(1)[0][1] == 3  # 25 of 10
    again, _ = datamix.train_and_eval_rows(cfg)
    assert [r["prompt"] for r in again] == [r["prompt"] for r in train]
    other, _ = datamix.train_and_eval_rows(DataConfig(train_mix=cfg.train_mix, eval_path=None, mix_seed=1))
    assert [r["prompt"] for r in other] != [r["prompt"] for r in train]


def test_mix_by_weights_and_held_out_fraction(sources):
    cfg = DataConfig(train_mix=[{"path": sources["a"], "weight": 3}, {"path": sources["b"], "weight": 1}],
                     mix_size=40, eval_fraction=0.25)
    train, held = datamix.train_and_eval_rows(cfg)
    assert len(train) == 30 and len(held) == 10
    assert _by_source(train + held) == {"a.jsonl": 30, "b.jsonl": 10}
    assert not {id(r) for r in train} & {id(r) for r in held}
    _, held_again = datamix.train_and_eval_rows(cfg)
    assert [r["prompt"] for r in held_again] == [r["prompt"] for r in held]


@pytest.mark.parametrize("overrides, fragment", [
    (["data.train_mix=[{path: nope.jsonl, count: 3}]"], "data.train_mix[0]: nope.jsonl: no such file"),
    (["data.train_mix=[{path: builtin:arithmetic, count: 3, weight: 1}]"], "data.train_mix[0]: give count or weight"),
    (["data.train_mix=[{path: builtin:arithmetic, count: 0}]"], "data.train_mix[0].count: must be an integer >= 1"),
    (["data.eval_fraction=1.0"], "data.eval_fraction: must be in [0, 1)"),
    (["data.train_path='hf:'"], "data.train_path: hf: needs a dataset name"),
])
def test_bad_mix_recipes_name_the_key(overrides, fragment):
    from rlvr.config import RecipeError

    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPE, overrides)
    assert fragment in str(e.value)
