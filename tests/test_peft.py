"""regime=peft: any peft method on the tiny backbone (VeRA, LoKr, OFT, and DoRA as peft_method=lora with
use_dora), each saved as a plain peft folder that plain peft loads back to the same outputs."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from adapterxfer.bank import ModuleBank
from adapterxfer.cli import main
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from test_regimes import STEPS, train as train_module

METHODS = {"vera": ["peft_method=vera", "peft.r=4"], "lokr": ["peft_method=lokr", "peft.r=4"],
           "oft": ["peft_method=oft", "peft.oft_block_size=8", "peft.target_modules=query,value,key"],
           "dora": ["peft_method=lora", "peft.use_dora=true", "peft.r=4"]}
PEFT_TYPES = {"vera": "VERA", "lokr": "LOKR", "oft": "OFT", "dora": "LORA"}


def train(folder, *extra, backbone):
    return train_module(folder, "regime=peft", *extra, backbone=backbone)


@pytest.fixture(scope="module")
def modules(tmp_path_factory, tiny_backbone, fixture_home):
    """A verses-xref module of each method, trained once."""
    root = tmp_path_factory.mktemp("peft")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        return {name: train(root / name, "task=verses-xref", *keys, backbone=tiny_backbone)
                for name, keys in METHODS.items()}


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def batch(backbone):
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    return tokenizer(["alpha beta", "gamma delta epsilon"], ["one", "two three"], return_tensors="pt", padding=True)


def plain_peft(folder, backbone):
    base = AutoModelForSequenceClassification.from_pretrained(backbone.path, num_labels=2)
    model = PeftModel.from_pretrained(base, folder).eval()
    model.get_base_model().load_state_dict(load_file(folder / "head.safetensors"), strict=False)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_a_peft_method_saves_a_plain_peft_folder_that_loads_to_the_same_outputs(modules, tiny_backbone, method):
    folder = modules[method]
    record = manifest(folder)
    assert record["regime"] == "peft" and record["module_kind"] == {"dora": "lora"}.get(method, method)
    saved = json.loads((folder / "adapter_config.json").read_text())
    assert saved["peft_type"] == PEFT_TYPES[method] and saved.get("use_dora", False) == (method == "dora")
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"} <= set(record["files"])
    ours = get_regime("peft").load(folder, get_task("verses-xref"), tiny_backbone).eval()
    inputs = batch(tiny_backbone)
    bare = AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path, num_labels=2).roberta.eval()
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits, plain_peft(folder, tiny_backbone)(**inputs).logits, atol=1e-6)
        changed = ours.get_base_model().roberta(**inputs).last_hidden_state - bare(**inputs).last_hidden_state
        assert changed.abs().max() > 1e-4  # the trained module changes the encoder's states


def test_a_target_starts_from_a_vera_intermediate_and_a_bank_swaps_vera_modules(modules, tiny_backbone, tmp_path):
    vera = modules["vera"]
    target = train(tmp_path / "target", "task=verses-genre", *METHODS["vera"], f"init_from={vera}", "eval_langs=fr",
                   backbone=tiny_backbone)
    assert manifest(target)["parents"][0]["task"] == "verses-xref"
    assert main(["evaluate", "--model", str(target), "--task", "verses-genre", "--langs", "fr",
                 "--output", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert evaluated == json.loads((target / "scores.json").read_text())
    second = train(tmp_path / "second", "task=verses-xref", *METHODS["vera"], "seed=5", backbone=tiny_backbone)
    bank = ModuleBank(get_task("verses-xref"), tiny_backbone, "peft")
    folders = {"first": vera, "second": second}
    for name, folder in folders.items():
        bank.attach(name, folder)
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        for name in ("first", "second", "first"):
            expected = plain_peft(folders[name], tiny_backbone)(**inputs).logits
            assert torch.allclose(bank.activate(name)(**inputs).logits, expected, atol=1e-6), name
    with pytest.raises(Exception, match="a lokr module cannot join a bank of vera modules"):
        bank.attach("lokr", modules["lokr"])


def run(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("keys, message", [
    (["peft_method=verra"], "unknown peft_method 'verra'; did you mean 'vera'"),
    (["peft_method=vera", "peft.rank=4"], "peft_method=vera has no field 'rank' (allowed: r, target_modules, "),
    (["peft_method=vera", "peft.r=four"], "peft.r expects int, got 'four'"),
    (["peft_method=lora", "peft.modules_to_save=classifier"],
     "peft.modules_to_save is adapterxfer's to set: the head is kept apart, saved beside the module"),
    (["peft_method=oft", "peft.r=4", "peft.oft_block_size=4"], "peft_method=oft: peft refuses peft.r=4, "
                                                               "peft.oft_block_size=4: "),
    (["peft_method=ln_tuning"], "peft_method=ln_tuning has no default target modules for xlm-roberta"),
    (["peft_method=miss"], "peft_method=miss on "),  # its default r=64 exceeds the tiny backbone's 32 features
])
def test_a_bad_peft_method_or_field_is_one_line_and_trains_nothing(capsys, tiny_backbone, tmp_path, keys, message):
    code, err = run(capsys, "train", "task=verses-xref", "regime=peft", f"backbone={tiny_backbone.path}", *keys,
                    *STEPS, f"output_dir={tmp_path / 'out'}")
    err = [line for line in err if not line.startswith("Loading weights")]  # miss: refused once peft sees the layers
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_merges_are_refused_where_peft_would_get_them_wrong(capsys, modules, tmp_path):
    common = ["train", "task=verses-genre", "regime=peft", "transfer=merge", f"output_dir={tmp_path / 'out'}"]
    code, err = run(capsys, *common, *METHODS["vera"], f"init_from={modules['vera']},{modules['vera']}")
    assert code == 2 and err == ["adapterxfer: error: transfer=merge: peft merges lora modules, not vera"]
    code, err = run(capsys, *common, *METHODS["dora"], f"init_from={modules['dora']},{modules['dora']}")
    assert code == 2 and "is a LoRA with use_dora=true, which peft merges wrongly (peft #3761)" in err[0]
    code, err = run(capsys, *common, *METHODS["lokr"], f"init_from={modules['vera']},{modules['vera']}")
    assert code == 2 and "is a vera module, not lokr: pass peft_method=vera" in err[0]
    assert not (tmp_path / "out").exists()


def test_train_help_lists_a_methods_own_fields(capsys):
    assert main(["train", "--help", "peft_method=vera"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "regime=peft peft_method=vera: peft's VeraConfig; its fields, as peft.<field>=value:"
    fields = [line.split()[0] for line in shown[1:]]
    assert fields[:2] == ["peft.r", "peft.target_modules"] and "peft.d_initial" in fields
    assert "peft.modules_to_save" not in fields and "peft.peft_type" not in fields
