"""RunConfig parsing: YAML + key=value, types, unknown keys, broken files."""

import pytest

from adapterxfer.config import load_config
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


@pytest.mark.parametrize("args, message", [
    (["task=x", "max_stpes=3"], "unknown key 'max_stpes'"),
    (["task=x", "max_steps=many"], "key 'max_steps' expects int"),
    (["task=x", "precision=fp8"], "key 'precision' must be one of auto, bf16, fp16, fp32, got 'fp8'"),
    (["task=x", "regime=qlora"], "key 'regime' must be one of full, lora, bottleneck, madx, ia3, got 'qlora'"),
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
