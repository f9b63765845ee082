"""Recipes: typed schema, overrides, and bad input failing fast with one line naming the key."""

import json
import os
import subprocess
import sys

import pytest

from rlvr.config import RecipeError, load_recipe

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "tiny-cpu.yaml")


def test_default_recipe_loads_with_overrides():
    cfg = load_recipe(RECIPE, ["trainer.total_steps=7", "rollout.engine_kwargs.max_model_len=256"])
    assert cfg.trainer.total_steps == 7
    assert cfg.rollout.engine_kwargs == {"max_model_len": 256}
    assert cfg.run.output_dir == "runs" and cfg.trainer.backend == "fsdp2"


@pytest.mark.parametrize("override,key", [
    ("trainer.nonsense=1", "trainer.nonsense"),
    ("trainer.total_steps=abc", "trainer.total_steps"),
    ("rollout.n=1", "rollout.n"),
    ("trainer.backend=megatron", "trainer.backend"),
    ("trainer.deepspeed.zero_stage=4", "trainer.deepspeed.zero_stage"),
    ("model.path=./no/such/model", "model.path"),
    ("data.train_path=/no/such/file.jsonl", "data.train_path"),
    ("reward.verifiers=[{name: nope}]", "reward.verifiers[0].name"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, [override])
    assert err.value.key == key


@pytest.mark.parametrize("args,needle", [
    (["trainer.nonsense=1"], "trainer.nonsense"),
    (["trainer.total_steps=abc"], "trainer.total_steps"),
    (["model.path=/no/such/model"], "/no/such/model"),
    (["data.train_path=/no/such/file.jsonl"], "/no/such/file.jsonl"),
    (["rollout.n=1"], "rollout.n"),
])
def test_cli_exits_2_with_one_line(args, needle):
    # (time to reject is measured in bench/, not asserted here: CI machines are noisy)
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli.main", "train", RECIPE, *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_rejecting_a_recipe_starts_nothing_heavy():
    code = ("import sys\nfrom rlvr.config import load_recipe, RecipeError\n"
            f"try:\n    load_recipe({RECIPE!r}, ['rollout.n=1'])\nexcept RecipeError:\n    pass\n"
            "print([m for m in ('vllm', 'ray', 'deepspeed', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_validate_prints_resolved_recipe():
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli.main", "validate", RECIPE, "run.seed=5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "seed: 5" in proc.stdout and "zero_stage: 2" in proc.stdout


def test_unknown_key_in_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  n: 4\n  tempreature: 0.5\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(str(bad))
    assert err.value.key == "rollout.tempreature"


def test_import_rlvr_is_cheap():
    code = ("import sys, rlvr, rlvr.config, rlvr.cli.main, rlvr.loop.train, rlvr.loop.loop, rlvr.types; "
            "heavy = [m for m in ('vllm', 'ray', 'deepspeed') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_presets_set_paper_defaults_and_recipe_keys_win():
    dapo = load_recipe(RECIPE, ["algorithm.preset=dapo"])
    assert dapo.algorithm.clip_high == 0.28 and dapo.algorithm.dynamic_sampling.enabled
    assert dapo.algorithm.overlong.enabled and dapo.algorithm.aggregation == "token_mean"
    grpo = load_recipe(RECIPE, ["algorithm.preset=grpo", "algorithm.kl.coef=0.01"])
    assert grpo.algorithm.kl.coef == 0.01 and grpo.algorithm.aggregation == "seq_mean_token_mean"
    dr = load_recipe(RECIPE, ["algorithm.preset=dr_grpo"])
    assert dr.algorithm.advantage == "dr_grpo" and dr.algorithm.aggregation == "seq_mean_token_sum_norm"
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, ["algorithm.preset=ppo2"])
    assert err.value.key == "algorithm.preset"


def test_async_rollouts_turn_on_the_off_policy_correction_unless_set():
    from rlvr.config import ASYNC_TIS_CAP

    assert load_recipe(RECIPE, ["rollout.max_staleness=1"]).algorithm.tis_cap == ASYNC_TIS_CAP
    assert load_recipe(RECIPE, ["rollout.max_staleness=1", "algorithm.tis_cap=3"]).algorithm.tis_cap == 3.0
    assert load_recipe(RECIPE, []).algorithm.tis_cap is None


def test_correction_modes_and_the_old_tis_cap_key():
    a = load_recipe(RECIPE, []).algorithm
    assert a.correction_mode() == "none"
    a = load_recipe(RECIPE, ["algorithm.tis_cap=3"]).algorithm  # the old key alone still selects TIS
    assert a.correction_mode() == "tis" and a.correction_options()["high"] == 3.0
    a = load_recipe(RECIPE, ["rollout.max_staleness=1", "algorithm.correction=icepop"]).algorithm
    assert a.correction_mode() == "icepop" and a.correction_options() == {"low": None, "high": None,
                                                                         "seq_ratio": "geo_mean"}
    assert load_recipe(RECIPE, ["rollout.max_staleness=1", "algorithm.correction=none"]).algorithm \
        .correction_mode() == "none"
    a = load_recipe(RECIPE, ["algorithm.correction=mis_seq", "algorithm.correction_seq_ratio=product",
                             "algorithm.correction_low=0.2", "algorithm.correction_high=5"]).algorithm
    assert a.correction_options() == {"low": 0.2, "high": 5.0, "seq_ratio": "product"}
    for bad, key in ((["algorithm.correction=is"], "algorithm.correction"),
                     (["algorithm.correction_low=2", "algorithm.correction_high=1"], "algorithm.correction_low")):
        with pytest.raises(RecipeError) as err:
            load_recipe(RECIPE, bad)
        assert err.value.key == key


def test_new_loss_presets():
    c = load_recipe(RECIPE, ["algorithm.preset=cispo"]).algorithm
    assert (c.loss, c.clip_low, c.clip_high, c.aggregation) == ("cispo", 1.0, 0.28, "token_mean")
    g = load_recipe(RECIPE, ["algorithm.preset=gmpo", "algorithm.clip_high=0.5"]).algorithm  # overridable
    assert (g.loss, g.clip_low, g.clip_high, g.aggregation) == ("gmpo", 0.4, 0.5, "seq_mean_token_mean")
    s = load_recipe(RECIPE, ["algorithm.preset=sapo"]).algorithm
    assert (s.loss, s.tau_pos, s.tau_neg) == ("sapo", 1.0, 1.05)
    assert s.loss_options() == {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None, "tau_pos": 1.0, "tau_neg": 1.05}
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, ["algorithm.loss=sapo", "algorithm.tau_neg=0"])
    assert err.value.key == "algorithm.tau_pos"


@pytest.mark.parametrize("overrides, key", [
    (["cluster.placement=nearby"], "cluster.placement"),
    (["cluster.placement=colocate", "rollout.num_engines=3"], "rollout.num_engines"),
    (["cluster.placement=colocate", "rollout.max_staleness=1"], "rollout.max_staleness"),
    (["sync.method=nccl"], "sync.method"),
    (["sync.bucket_mb=0"], "sync.bucket_mb"),
    (["sync.verify=sometimes"], "sync.verify"),
    (["rollout.chunks_per_engine=0"], "rollout.chunks_per_engine"),
])
def test_bad_placement_and_sync_settings_name_the_key(overrides, key):
    with pytest.raises(RecipeError) as e:
        load_recipe(RECIPE, overrides)
    assert e.value.key == key


TOOLS_RECIPE = os.path.join(REPO, "recipes", "tiny-tools-cpu.yaml")


def test_tools_recipe_loads():
    cfg = load_recipe(TOOLS_RECIPE, [])
    mt = cfg.rollout.multi_turn
    assert mt.enabled and mt.tools == [{"name": "calc"}] and mt.parser == "hermes" and mt.env == "tools"
    assert cfg.model.path == "builtin:tiny-tools" and cfg.data.train_path == "builtin:tool-arithmetic"
    names = load_recipe(TOOLS_RECIPE, ["rollout.multi_turn.tools=[calc, {name: python, timeout_s: 3}]"])
    assert [t.name for t in names.rollout.multi_turn.tool_items()] == ["calc", "python"]


@pytest.mark.parametrize("overrides, key", [
    (["rollout.multi_turn.max_turns=0"], "rollout.multi_turn.max_turns"),
    (["rollout.multi_turn.parser=xml"], "rollout.multi_turn.parser"),
    (["rollout.multi_turn.on_tool_error=ignore"], "rollout.multi_turn.on_tool_error"),
    (["rollout.multi_turn.tools=[{name: no_such_tool}]"], "rollout.multi_turn.tools[0].name"),
    (["rollout.multi_turn.tools=[{name: calc}, {name: calc}]"], "rollout.multi_turn.tools[1].name"),
    (["rollout.multi_turn.tools=[{name: calc, timeout_s: -1}]"], "rollout.multi_turn.tools[0].timeout_s"),
    (["rollout.multi_turn.tools=[1]"], "rollout.multi_turn.tools[0]"),
    (["rollout.multi_turn.env=no_such_env"], "rollout.multi_turn.env"),
    (["rollout.multi_turn.env=not a path"], "rollout.multi_turn.env"),
    (["rollout.multi_turn.tool_procs=0"], "rollout.multi_turn.tool_procs"),
    (["rollout.multi_turn.max_observation_chars=10"], "rollout.multi_turn.max_observation_chars"),
    (["data.tool_arithmetic.direct_fraction=1"], "data.tool_arithmetic.direct_fraction"),
])
def test_bad_multi_turn_settings_name_the_key(overrides, key):
    with pytest.raises(RecipeError) as e:
        load_recipe(TOOLS_RECIPE, overrides)
    assert e.value.key == key


BOMB = "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
       "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"


@pytest.mark.parametrize("override,key", [
    ("data.chat_template_kwargs.x=[1,2", "data.chat_template_kwargs.x"),  # not YAML
    ("data.chat_template_kwargs.x=@@", "data.chat_template_kwargs.x"),
    ("data.chat_template_kwargs.x=!!python/object:os.system x", "data.chat_template_kwargs.x"),
    ("data.chat_template_kwargs.x=\udcff", "data.chat_template_kwargs.x"),  # a lone surrogate
    (f"data.chat_template_kwargs.x={BOMB}", "data.chat_template_kwargs.x"),  # a billion laughs
    ("=1", "=1"),
    ("run.name=..", "run.name"),  # the run folder would be output_dir's parent
    ("run.name=.", "run.name"),
])
def test_overrides_that_cannot_be_read_name_the_key(override, key):
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, [override])
    assert err.value.key == key and "\n" not in str(err.value)


def test_a_yaml_bomb_override_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli.main", "validate", RECIPE,
                           f"data.chat_template_kwargs.x={BOMB}"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and "anchors" in proc.stderr


def test_secrets_never_reach_the_saved_recipe_or_the_api(tmp_path, monkeypatch):
    """A token given through `${oc.env:...}` (resolved when the recipe loads) is replaced in what
    `rlvr validate` prints / `recipe.yaml` holds, and in what the status API serves, also from a
    run folder written before redaction existed."""
    from rlvr.config import to_yaml
    from rlvr.run.status import read_status

    monkeypatch.setenv("PLANTED_SECRET", "s3cr3t-planted-value")
    cfg = load_recipe(RECIPE, ['reward.verifiers=[{name: math}, {name: http, url: "http://u:pw-planted@127.0.0.1:9/x", '
                               'weight: 0, headers: {Authorization: "Bearer ${oc.env:PLANTED_SECRET}"}}]',
                               "data.chat_template_kwargs={hf_token: s3cr3t-planted-value}"])
    assert cfg.reward.verifiers[1]["headers"]["Authorization"] == "Bearer s3cr3t-planted-value"  # the run uses it
    saved = to_yaml(cfg)
    assert "planted" not in saved and saved.count("<redacted>") == 3
    assert "max_tokens: 6" in saved and "token_env: RLVR_TOKEN" in saved  # counts and sources are not secrets
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "recipe.yaml").write_text(to_yaml(cfg, redact_secrets=False))  # as older versions wrote it
    assert "planted" not in json.dumps(read_status(str(run))["recipe"])
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli.main", "validate", RECIPE,
                           "data.chat_template_kwargs={api_key: s3cr3t-planted-value}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "planted" not in proc.stdout + proc.stderr and "<redacted>" in proc.stdout


def test_overrides_after_a_flag_are_kept_and_other_stray_arguments_refused(capsys):
    from rlvr.cli.main import main

    assert main(["validate", "recipes/tiny-cpu.yaml", "--scan-mb", "0", "trainer.lr=0.125"]) == 0
    assert "lr: 0.125" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["validate", "recipes/tiny-cpu.yaml", "--scan-mb", "0", "--no-such-flag"])
    assert e.value.code == 2
