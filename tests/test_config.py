"""RunConfig parsing: YAML + key=value, types, unknown keys, broken files."""

import pytest

from adapterxfer.config import from_dict, load_config
from adapterxfer.errors import UserError


def test_overrides_parse_types_and_win_over_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: verses-genre\nmax_steps: 10\nlr: 1.0e-5\n")
    config = load_config(str(recipe), ["max_steps=20", "eval_langs=fr,de", "init_from=none", "lr=2e-5"])
    assert (config.task, config.max_steps, config.eval_langs, config.init_from) == ("verses-genre", 20, ["fr", "de"], [])
    assert config.lr == pytest.approx(2e-5)
    assert str(config.resolved_output_dir()) == "artifacts/verses-genre-full-seed42"


def test_key_value_alone_suffices():
    config = load_config(None, ["task=verses-xref", "seed=7", "precision=fp32"])
    assert (config.task, config.seed, config.precision) == ("verses-xref", 7, "fp32")


def test_a_default_of_none_is_allowed_among_choices():
    """A study passes every key of a phase's block, defaults included: merge=None means the regime's first."""
    config = from_dict({"task": "verses-genre", "regime": "lora", "transfer": "merge", "merge": None})
    assert config.merge is None
    with pytest.raises(UserError, match="key 'precision' expects str, got None"):
        from_dict({"task": "verses-genre", "precision": None})  # its default is auto: None is no choice


@pytest.mark.parametrize("args, message", [
    (["task=x", "max_stpes=3"], "unknown key 'max_stpes'"),
    (["task=x", "max_steps=many"], "key 'max_steps' expects int"),
    (["task=x", "precision=fp8"], "key 'precision' must be one of auto, bf16, fp16, fp32, got 'fp8'"),
    (["task=x", "regime=qlora"], "key 'regime' must be one of full, lora, bottleneck, madx, ia3, peft, got 'qlora'"),
    (["task=x", "seed"], "not of the form key=value"),
    (["max_steps=3"], "key 'task' is required"),
    (["task=x", "max_steps=-1"], "key 'max_steps' must be a finite number >= 0, got -1"),
    (["task=x", "batch_size=0"], "key 'batch_size' must be a finite number >= 1, got 0"),
    (["task=x", "lr=nan"], "key 'lr' must be a finite number > 0, got nan"),
    (["task=x", "lr=-1e-5"], "key 'lr' must be a finite number > 0, got -1e-05"),
    (["task=x", "head_lr=0"], "key 'head_lr' must be a finite number > 0, got 0.0"),
    (["task=x", "warmup_ratio=1.5"], "key 'warmup_ratio' must be a finite number >= 0 and <= 1, got 1.5"),
    (["task=x", "lr=inf"], "key 'lr' must be a finite number > 0, got inf"),
    (["task=x", "max_steps=0"], "max_steps=0 trains nothing; set max_steps >= 1, or probe_steps >= 1"),
])
def test_bad_overrides_are_one_line_errors(args, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(None, args)
    assert "\n" not in str(err.value)


def test_broken_yaml_names_file_and_line(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("task: verses-genre\nmax_steps: [1, 2\n")
    with pytest.raises(UserError, match=r"broken.yaml: invalid YAML at line \d"):
        load_config(str(recipe), [])


def test_missing_and_non_mapping_yaml(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"), [])
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="expected a mapping"):
        load_config(str(listing), [])


def test_key_table_holds_every_registered_regimes_section():
    from dataclasses import fields

    from adapterxfer.config import KEYS, SECTIONS, help_text
    from adapterxfer.regimes import all_regimes

    for regime in all_regimes():
        own = [spec.name for spec in fields(regime.section)] if regime.section else []
        assert set(own) <= set(KEYS)
        if own:
            assert SECTIONS[regime.name] == regime.section.__doc__
            listed = help_text().split(f"\n{regime.name}: ")[1].split("\n")
            assert [line.split()[0] for line in listed[1:len(own) + 1]] == own
    assert len(KEYS) == len(set(KEYS))


@pytest.mark.parametrize("args, message", [
    (["lora_r=0"], "key 'lora_r' must be a finite number >= 1, got 0"),
    (["lora_dropout=1.5"], "key 'lora_dropout' must be a finite number >= 0 and <= 1, got 1.5"),
    (["merge=average"], "key 'merge' must be one of cat, svd, ties, ties_svd, dare_linear, dare_linear_svd, "
                        "dare_ties, dare_ties_svd, magnitude_prune, magnitude_prune_svd, linear, got 'average'"),
    (["merge_density=0"], "key 'merge_density' must be a finite number > 0 and <= 1, got 0.0"),
    (["merge_weights=1,two"], "key 'merge_weights' expects float, got 'two'"),
    (["reduction_factor=0"], "key 'reduction_factor' must be a finite number >= 1, got 0"),
    (["lang_reduction_factor=-2"], "key 'lang_reduction_factor' must be a finite number >= 1, got -2"),
    (["lang_adapter_at_test=both"], "key 'lang_adapter_at_test' must be one of target, source, got 'both'"),
])
def test_a_regime_section_refuses_values_outside_its_bounds(args, message):
    with pytest.raises(UserError) as err:
        load_config(None, ["task=x", *args])
    assert str(err.value) == f"command line: {message}"


def test_the_path_keys_of_a_regime_and_of_a_transfer_are_its_inputs():
    from adapterxfer.config import INPUT_PATHS
    from adapterxfer.regimes import get_regime

    config = load_config(None, ["task=x", "regime=madx", "lang_adapters=a,b"])
    assert get_regime("madx").input_refs(config) == ["a", "b"]
    assert get_regime("lora").input_refs(config) == []
    config = load_config(None, ["task=x", "regime=lora", "transfer=arithmetic", "lang_modules=c,d"])
    assert get_regime("lora").input_refs(config) == ["c", "d"]
    assert INPUT_PATHS == ("backbone", "init_from", "lang_adapters", "lang_modules")


def test_importing_the_key_table_loads_no_training_library():
    import subprocess
    import sys

    code = ("import sys, adapterxfer.config; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'adapters') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_key_of_another_regime_is_refused_in_one_line(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(None, ["task=x", "regime=full", "lora_r=64"])
    assert str(err.value) == ("command line: key 'lora_r' belongs to regime lora, not full (regime full reads the "
                              "general keys and freeze_word_embeddings)")
    with pytest.raises(UserError, match="key 'reduction_factor' belongs to regime bottleneck and madx, not ia3 "
                                        r"\(regime ia3 reads the general keys, none of its own\)"):
        load_config(None, ["task=x", "regime=ia3", "reduction_factor=4"])
    recipe = tmp_path / "full.yaml"
    recipe.write_text("task: x\nfreeze_word_embeddings: false\n")  # a full-regime recipe, run as LoRA
    with pytest.raises(UserError, match="full.yaml: key 'freeze_word_embeddings' belongs to regime full, not lora"):
        load_config(str(recipe), ["regime=lora"])


def test_a_phase_identity_holds_the_keys_its_regime_reads_and_no_other_regimes():
    """Retuning a LoRA default leaves a full phase (and a bottleneck one) the same phase; a LoRA phase changes."""
    import dataclasses

    from adapterxfer.config import phase_identity

    def identity(regime, **changes):
        config = dataclasses.replace(load_config(None, ["task=verses-xref", f"regime={regime}"]), **changes)
        return phase_identity(vars(config), "sha256:backbone", [])

    assert identity("full", lora_r=64) == identity("full") and identity("bottleneck", lora_r=64) == identity("bottleneck")
    assert identity("lora", lora_r=64) != identity("lora")
    assert identity("full", freeze_word_embeddings=False) != identity("full")
    assert "lora_r" not in identity("full")["settings"] and "reduction_factor" in identity("madx")["settings"]


def test_a_recipes_backbone_yields_to_the_one_init_from_implies(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: verses-genre\nbackbone: me5-small\n")
    assert load_config(str(recipe), []).backbone == "me5-small"
    assert load_config(str(recipe), ["init_from=artifacts/xref"]).backbone is None  # init_from's, when validated
    assert load_config(str(recipe), ["init_from=artifacts/xref", "backbone=tiny-xlmr"]).backbone == "tiny-xlmr"


def test_a_transfers_keys_count_in_the_identity_of_its_phases_only():
    from adapterxfer.config import identity_change, phase_identity

    def identity(*args):
        return phase_identity(vars(load_config(None, ["task=verses-genre", "regime=lora", *args])), "sha256:0", [])

    sequential = identity("merge=svd")
    assert not [name for name in sequential["settings"] if name.startswith("merge")]
    written_before = {**sequential, "settings": {**sequential["settings"], "merge": "cat"}}  # merge was lora's key
    assert identity_change(written_before, sequential) is None
    svd = identity("transfer=merge", "merge=svd")
    assert {name: svd["settings"][name] for name in svd["settings"] if name.startswith("merge")} == {
        "merge": "svd", "merge_weights": [], "merge_normalize": True, "merge_density": None}
    assert identity_change(identity("transfer=merge"), svd) == "settings changed: merge none -> svd"
