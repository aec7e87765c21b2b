"""MAD-X on the tiny backbone and the fixture corpus: language adapters by MLM, Stack(lang, task),
the test language's adapter swapped in at zero-shot evaluation, and the source-adapter ablation."""

import json

import pytest
import torch
from safetensors.torch import load_file

from adapterxfer.backbones import build_tiny_xlmr
from adapterxfer.cli import main
from adapterxfer.config import from_dict
from adapterxfer.errors import UserError
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from conftest import TINY_CORPUS

pytestmark = pytest.mark.adapters
STEPS = ["max_steps=3", "eval_every=3", "batch_size=4", "max_length=48", "precision=fp32", "lr=1e-2"]
LANGS = ("en", "fr", "de")
ENGLISH = "en-4"  # the fixture corpus' default English translation id


def train(folder, *extra, backbone):
    assert main(["train", "regime=madx", f"backbone={backbone.path}", f"output_dir={folder}", *STEPS, *extra]) == 0
    return folder


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def madx(tmp_path_factory, tiny_backbone, fixture_home):
    """Language adapters for en, fr, de; a verses-xref task adapter; a verses-genre target after it."""
    root = tmp_path_factory.mktemp("madx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        langs = {lang: train(root / f"lang-{lang}", "task=verses-text", f"language={lang}", backbone=tiny_backbone)
                 for lang in LANGS}
        adapters_arg = "lang_adapters=" + ",".join(str(langs[lang]) for lang in LANGS)
        xref = train(root / "xref", "task=verses-xref", adapters_arg, backbone=tiny_backbone)
        target = train(root / "target", "task=verses-genre", adapters_arg, f"init_from={xref}",
                       "eval_langs=en,fr,de", backbone=tiny_backbone)
    return {"langs": langs, "xref": xref, "target": target, "adapters_arg": adapters_arg}


def test_a_studys_source_adapter_ablation_scores_as_evaluate_does(tiny_backbone, fixture_home, tmp_path,
                                                                   monkeypatch):
    """The plan's ablation reaches the evaluation phase as the regime's test-time key (``Regime.at_test``): the
    language switch sees it (the tiny model's scores alone may not tell the adapters apart)."""
    import yaml

    from adapterxfer.regimes.madx import Madx

    seen, switch = [], Madx.language_switch
    monkeypatch.setattr(Madx, "language_switch", lambda self, model, task, config: (
        seen.append(config["lang_adapter_at_test"]), switch(self, model, task, config))[1])
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "backbone": str(tiny_backbone.path), "output": str(tmp_path / "study"), "seeds": [1],
        "targets": ["verses-genre"], "regimes": ["madx"],
        "madx": {"lang_adapter_task": "verses-text", "ablation": True},
        "target_phase": {"eval_langs": ["en", "fr"]},
        "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32"}}))
    assert main(["study", "run", str(plan)]) == 0
    assert seen == ["target", "source"]  # the target phase's own scores, then its ablation's
    target = tmp_path / "study/seed1/madx/verses-genre/baseline"
    (ablation,) = target.parent.glob("baseline.*")
    assert main(["evaluate", "--model", str(target), "--task", "verses-genre", "--langs", "en,fr", "--max-length",
                 "32", "--precision", "fp32", "--lang-adapter", "source", "--output", str(tmp_path / "source")]) == 0
    source = json.loads((tmp_path / "source" / "scores.json").read_text())
    assert json.loads((ablation / "scores.json").read_text()) == source and seen[-1] == "source"


def test_language_adapter_is_invertible_and_never_saves_the_tied_decoder(madx):
    folder = madx["langs"]["fr"]
    record = manifest(folder)
    assert (record["regime"], record["module_kind"], record["language"]) == ("madx", "seq_bn_inv", "fr-o")
    config = json.loads((folder / "adapter_config.json").read_text())["config"]
    assert config["inv_adapter"] == "nice" and config["reduction_factor"] == 2
    assert any(".invertible_adapters." in key for key in load_file(folder / "adapter.safetensors"))
    head = load_file(folder / "head.safetensors")
    assert "lm_head.dense.weight" in head and not any("decoder" in key for key in head)
    assert 0.0 <= record["dev"]["best"] <= 1.0


def test_task_adapter_trains_stacked_on_the_source_language_adapter(madx, tiny_backbone):
    from adapters.composition import Stack

    record = manifest(madx["xref"])
    assert (record["module_kind"], record["language"]) == ("seq_bn", ENGLISH)
    assert not any("invertible" in key for key in load_file(madx["xref"] / "adapter.safetensors"))  # not copied
    task = get_task("verses-xref")
    model = get_regime("madx").load(madx["xref"], task, tiny_backbone)
    assert model.active_adapters == Stack(ENGLISH, "target")
    assert set(model.adapters_config.adapters) == {ENGLISH, "target"}  # other languages load when tested

    config = from_dict({"task": task.name, "regime": "madx", "lang_adapters": [str(madx["langs"]["en"])]})
    model = get_regime("madx").build(task, tiny_backbone, [], config)
    assert model.active_adapters == Stack(ENGLISH, "target")
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(".target." in name or name.startswith("classifier.") for name in trainable)


def test_zero_shot_swaps_in_each_test_languages_adapter(madx, tiny_backbone, tmp_path):
    """The target phase's scores equal an evaluation with the language adapter of each language,
    and differ from the ablation that keeps the English adapter (except for English itself)."""
    from adapters.composition import Stack

    target = madx["target"]
    assert manifest(target)["transfer"] == "sequential"
    trained = json.loads((target / "scores.json").read_text())
    assert set(trained) == {"en", "fr", "de"}
    assert main(["evaluate", "--model", str(target), "--task", "verses-genre", "--langs", "en,fr,de",
                 "--output", str(tmp_path / "target")]) == 0
    assert json.loads((tmp_path / "target" / "scores.json").read_text()) == trained
    assert main(["evaluate", "--model", str(target), "--task", "verses-genre", "--langs", "en,fr,de",
                 "--lang-adapter", "source", "--output", str(tmp_path / "source")]) == 0
    ablation = json.loads((tmp_path / "source" / "scores.json").read_text())
    assert ablation["en"] == trained["en"]

    task, regime = get_task("verses-genre"), get_regime("madx")
    model = regime.load(target, task, tiny_backbone).eval()
    inputs = {"input_ids": torch.tensor([[0, 5, 6, 7, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    logits = {}
    with torch.no_grad():
        for lang, at_test in (("fr-o", "target"), ("fr-o", "source"), ("de-s", "target")):
            regime.language_switch(model, task, {"lang_adapter_at_test": at_test})(lang)
            logits[(lang, at_test)] = model(**inputs).logits
    assert model.active_adapters == Stack("de-s", "target")
    assert not torch.allclose(logits[("fr-o", "target")], logits[("fr-o", "source")])
    assert not torch.allclose(logits[("fr-o", "target")], logits[("de-s", "target")])


def test_language_adapter_loads_in_plain_adapters(madx, tiny_backbone):
    import adapters
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(tiny_backbone.path)
    adapters.init(model)
    name = model.load_adapter(str(madx["langs"]["de"]), with_head=False, use_safetensors=True)
    model.set_active_adapters(name)
    assert name in model.base_model.invertible_adapters


@pytest.mark.parametrize("extra, message", [
    ([], "needs lang_adapters="),
    (["eval_langs=en,fr,es"], "no language adapter for es"),
])
def test_missing_language_adapters_are_refused_before_training(madx, tiny_backbone, tmp_path, capsys, extra, message):
    adapters_arg = [madx["adapters_arg"]] if extra else []
    code = main(["train", "regime=madx", "task=verses-genre", f"backbone={tiny_backbone.path}",
                 f"output_dir={tmp_path / 'out'}", *STEPS, *adapters_arg, *extra])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_source_adapter_must_come_first_and_only_mlm_phases_take_a_language(madx, tiny_backbone, tmp_path, capsys):
    langs = madx["langs"]
    common = ["train", "regime=madx", f"backbone={tiny_backbone.path}", f"output_dir={tmp_path / 'out'}", *STEPS]
    assert main([*common, "task=verses-xref", f"lang_adapters={langs['fr']},{langs['en']}"]) == 2
    assert f"the first must be the source language's ({ENGLISH}), got fr-o" in capsys.readouterr().err
    assert main([*common, "task=verses-xref", "language=fr", f"lang_adapters={langs['en']}"]) == 2
    assert "only plain-text (mlm) phases train on another language" in capsys.readouterr().err
    assert main([*common, "task=verses-xref", f"lang_adapters={madx['xref']}"]) == 2
    assert "is not a madx language adapter" in capsys.readouterr().err


def test_language_adapters_of_another_backbone_are_refused_before_the_output_is_touched(madx, tmp_path, capsys):
    """A second tiny backbone (another seed) stands in for a different XLM-R."""
    lines = [line for line in TINY_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    other = build_tiny_xlmr(tmp_path / "other-xlmr", lines, seed=1)
    leftover = tmp_path / ".out.tmp-killed"  # what a killed run left: cleaned up only once the run is valid
    leftover.mkdir()
    code = main(["train", "regime=madx", "task=verses-genre", f"backbone={other}", f"output_dir={tmp_path / 'out'}",
                 *STEPS, madx["adapters_arg"], "eval_langs=en,fr"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert f"lang_adapters: {madx['langs']['en']} was trained on backbone" in err
    assert leftover.is_dir() and "left by an interrupted run" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-killed", "other-xlmr"]


def test_madx_refuses_multitask(madx, tiny_backbone):
    from adapterxfer.pipeline import validate

    config = from_dict({"task": "verses-xref+verses-next", "regime": "madx", "backbone": str(tiny_backbone.path),
                        "lang_adapters": [str(madx["langs"]["en"])]})
    with pytest.raises(UserError, match="not available in regime madx"):
        validate(config)
