"""(IA)^3, the regime added through the Regime interface alone: it trains and saves a plain peft
folder, a target phase starts from it, its modules swap in a bank, and a study plan runs it.

The tiny random XLM-R stands in for XLM-R and the fixture corpus for the real bible.db; the card's
plain-peft snippet is tested with the other regimes' in test_sharing.py (the Hub stand-in).
"""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from adapterxfer.bank import ModuleBank
from adapterxfer.cli import main
from adapterxfer.study.plan import expand, read_plan
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from test_regimes import STEPS as REGIME_STEPS, train as train_in_regime

STEPS = [*REGIME_STEPS, "regime=ia3"]


def train(folder, *extra, backbone):
    return train_in_regime(folder, "regime=ia3", *extra, backbone=backbone)


@pytest.fixture(scope="module")
def intermediates(tmp_path_factory, tiny_backbone, fixture_home):
    root = tmp_path_factory.mktemp("ia3")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        return {seed: train(root / f"xref-{seed}", "task=verses-xref", f"seed={seed}", backbone=tiny_backbone)
                for seed in (1, 2)}


def batch(backbone):
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    return tokenizer(["alpha beta", "gamma delta epsilon"], ["one", "two three"], return_tensors="pt", padding=True)


def test_artifact_is_a_plain_peft_ia3_folder_that_loads_with_its_head(intermediates, tiny_backbone):
    folder = intermediates[1]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["regime"], manifest["module_kind"]) == ("ia3", "ia3")
    assert set(manifest["files"]) >= {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"}
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "IA3"
    assert manifest["trainable_parameters"] < 2000  # 3 vectors a layer (2 x 32 + 64) and the head
    task = get_task("verses-xref")
    plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path),
                                      folder).eval()
    ours = get_regime("ia3").load(folder, task, tiny_backbone).eval()
    bare = AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path).eval()
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        encoded = ours.get_base_model().roberta(**inputs).last_hidden_state
        torch.testing.assert_close(plain.get_base_model().roberta(**inputs).last_hidden_state, encoded)
        assert not torch.allclose(encoded, bare.roberta(**inputs).last_hidden_state, atol=1e-4)


def test_target_phase_starts_from_the_intermediates_vectors(intermediates, tiny_backbone, tmp_path):
    out = train(tmp_path / "genre", "task=verses-genre", f"init_from={intermediates[1]}", "eval_langs=en,fr",
                backbone=tiny_backbone)
    assert set(json.loads((out / "scores.json").read_text())) == {"en", "fr"}
    assert json.loads((out / "manifest.json").read_text())["transfer"] == "sequential"
    assert main(["train", f"backbone={tiny_backbone.path}", f"output_dir={tmp_path / 'stacked'}", *STEPS,
                 "task=verses-genre", "transfer=stack", f"init_from={intermediates[1]}"]) == 2


def test_multitask_intermediate_trains_one_set_of_vectors_with_a_head_per_task(tiny_backbone, tmp_path):
    out = train(tmp_path / "joint", "task=verses-xref+verses-next", backbone=tiny_backbone)
    assert json.loads((out / "manifest.json").read_text())["tasks"] == ["verses-xref", "verses-next"]
    assert (out / "adapter_model.safetensors").is_file() and (out / "heads" / "verses-next" / "head.safetensors").is_file()


def test_bank_swaps_ia3_modules_on_one_backbone(intermediates, tiny_backbone):
    task = get_task("verses-xref")
    bank = ModuleBank(task, tiny_backbone, "ia3")
    for seed, folder in intermediates.items():
        bank.attach(f"seed{seed}", folder)
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        logits = {}
        for seed in (1, 2, 1):
            expected = get_regime("ia3").load(intermediates[seed], task, tiny_backbone).eval()(**inputs).logits
            logits[seed] = bank.activate(f"seed{seed}")(**inputs).logits
            torch.testing.assert_close(logits[seed], expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(logits[1], logits[2])


def test_a_study_plan_runs_ia3_arms(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("backbone: me5-small\nseeds: [1]\ntargets: [verses-genre]\n"
                    "intermediates: [verses-xref, verses-next]\nregimes: [ia3]\n"
                    "transfers: {sequential: [ia3], multitask: [ia3]}\n")
    graph = expand(read_plan(str(plan)))
    assert {arm.label for arm in graph.arms} == {"ia3/baseline", "ia3/verses-xref", "ia3/verses-next",
                                                 "ia3/multitask(verses-xref+verses-next)"}
    assert all(phase.settings["regime"] == "ia3" for phase in graph.phases.values())
