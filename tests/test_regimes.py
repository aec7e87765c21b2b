"""PEFT regimes and transfer modes on the tiny backbone and the fixture corpus.

Artifacts must load with plain peft / adapters code, and every transfer mode must start
the target phase from the intermediate modules the way it says.
"""

import json
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.config import from_dict
from adapterxfer.errors import UserError
from adapterxfer.merges import METHODS
from adapterxfer.modeling import trainable_parameters
from adapterxfer.regimes import get_regime
from adapterxfer.regimes.common import Parent
from adapterxfer.tasks import get_task
from adapterxfer.transfers import get_transfer
from extras import ADAPTERHUB, adapterhub

STEPS = ["max_steps=3", "eval_every=3", "batch_size=4", "max_length=48", "precision=fp32", "lr=1e-2"]


def train(folder, *extra, backbone):
    assert main(["train", f"backbone={backbone.path}", f"output_dir={folder}", *STEPS, *extra]) == 0
    return folder


@pytest.fixture(scope="module")
def modules(tmp_path_factory, tiny_backbone, fixture_home):
    """verses-xref and verses-next as LoRA and bottleneck modules (where the extra is installed), trained once."""
    root = tmp_path_factory.mktemp("modules")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        return {(regime, task): train(root / f"{regime}-{task}", f"task=verses-{task}", f"regime={regime}",
                                      backbone=tiny_backbone)
                for regime in ("lora", "bottleneck")[:1 + ADAPTERHUB] for task in ("xref", "next")}


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def batch(backbone):
    tokenizer = AutoTokenizer.from_pretrained(backbone.path)
    return tokenizer(["alpha beta", "gamma delta epsilon"], ["one", "two three"], return_tensors="pt", padding=True)


@pytest.mark.parametrize("regime, files", [
    ("lora", {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"}),
    adapterhub("bottleneck", {"adapter_config.json", "adapter.safetensors", "head.safetensors"}),
])
def test_module_artifact_is_small_and_safetensors_only(modules, regime, files):
    folder = modules[(regime, "xref")]
    record = manifest(folder)
    assert files <= set(record["files"])
    assert not [f for f in record["files"] if f.endswith((".bin", ".pt", ".pkl"))]
    assert record["module_kind"] == {"lora": "lora", "bottleneck": "seq_bn"}[regime]
    total = sum(t.numel() for t in load_file(folder / "head.safetensors").values())
    assert 0 < record["trainable_parameters"] < 0.2 * 300_000 + total


def test_lora_artifact_loads_in_plain_peft(modules, tiny_backbone):
    folder = modules[("lora", "xref")]
    ours = get_regime("lora").load(folder, get_task("verses-xref"), tiny_backbone).eval()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path, num_labels=2)
    plain = PeftModel.from_pretrained(base, folder).eval()
    plain.get_base_model().load_state_dict(load_file(folder / "head.safetensors"), strict=False)
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits, plain(**inputs).logits, atol=1e-6)
        assert not torch.allclose(ours(**inputs).logits, base.__class__.from_pretrained(
            tiny_backbone.path, num_labels=2)(**inputs).logits)


@pytest.mark.adapters
def test_bottleneck_artifact_loads_in_plain_adapters(modules, tiny_backbone):
    import adapters

    folder = modules[("bottleneck", "xref")]
    ours = get_regime("bottleneck").load(folder, get_task("verses-xref"), tiny_backbone).eval()
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path, num_labels=2)
    adapters.init(plain)
    name = plain.load_adapter(str(folder), use_safetensors=True, set_active=True)
    plain.load_state_dict(load_file(folder / "head.safetensors"), strict=False)
    plain.eval()
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits, plain(**inputs).logits, atol=1e-6)
    assert name


def build(regime, transfer, parents, backbone, task="verses-genre", **keys):
    config = from_dict({"task": task, "regime": regime, "transfer": transfer, **keys})
    parents = [Parent(folder, manifest(folder)) for folder in parents]
    get_transfer(transfer).check(get_regime(regime), len(parents))
    get_regime(regime).check(get_task(task), config, parents, backbone)
    return get_regime(regime).build(get_task(task), backbone, parents, config)


def lora_weights(model, adapter="default"):
    return {n.replace(f".{adapter}", ""): p.detach().clone() for n, p in model.named_parameters()
            if "lora_" in n and f".{adapter}." in n}


def test_sequential_lora_starts_from_the_intermediate_lora(modules, tiny_backbone):
    folder = modules[("lora", "xref")]
    model = build("lora", "sequential", [folder], tiny_backbone)
    saved = load_file(folder / "adapter_model.safetensors")
    started = lora_weights(model)
    assert started and all(torch.equal(started[name], saved[name]) for name in saved)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)
    assert model.get_base_model().classifier.out_proj.out_features == len(get_task("verses-genre").labels)


@pytest.mark.parametrize("regime", ["lora", adapterhub("bottleneck")])
def test_stack_freezes_the_intermediate_module(modules, tiny_backbone, regime):
    model = build(regime, "stack", [modules[(regime, "xref")]], tiny_backbone)
    frozen = [n for n, p in model.named_parameters() if ".stacked." in n]
    trained = [n for n, p in model.named_parameters() if p.requires_grad and "classifier" not in n]
    assert frozen and trained and not any(model.get_parameter(n).requires_grad for n in frozen)


def test_lora_merge_cat_is_the_exact_average_of_deltas(modules, tiny_backbone):
    parents = [modules[("lora", "xref")], modules[("lora", "next")]]
    model = build("lora", "merge", parents, tiny_backbone)
    layer = "base_model.model.roberta.encoder.layer.0.attention.self.query"
    merged = dict(model.named_modules())[layer]
    delta = (merged.lora_B["default"].weight @ merged.lora_A["default"].weight) * merged.scaling["default"]
    expected = 0
    for folder in parents:
        saved = load_file(folder / "adapter_model.safetensors")
        config = json.loads((folder / "adapter_config.json").read_text())
        a, b = (saved[f"{layer}.lora_{x}.weight"] for x in "AB")
        expected = expected + 0.5 * (b @ a) * config["lora_alpha"] / config["r"]
    assert torch.allclose(delta, expected, atol=1e-6)


QUERY = "base_model.model.roberta.encoder.layer.0.attention.self.query"


def lora_delta(model, layer=QUERY, adapter="default"):
    module = dict(model.named_modules())[layer]
    return (module.lora_B[adapter].weight @ module.lora_A[adapter].weight).detach() * module.scaling[adapter]


def saved_delta(folder, layer=QUERY):
    saved = load_file(folder / "adapter_model.safetensors")
    config = json.loads((folder / "adapter_config.json").read_text())
    return saved[f"{layer}.lora_B.weight"] @ saved[f"{layer}.lora_A.weight"] * config["lora_alpha"] / config["r"]


def test_lora_task_arithmetic_by_cat_and_svd_with_negative_weights(modules, tiny_backbone):
    parents = [modules[("lora", "xref")], modules[("lora", "next")]]
    difference = saved_delta(parents[0]) - saved_delta(parents[1])
    arithmetic = {"merge_weights": [1.0, -1.0], "merge_normalize": False}
    assert torch.allclose(lora_delta(build("lora", "merge", parents, tiny_backbone, **arithmetic)), difference,
                          atol=1e-6)
    u, s, vh = torch.linalg.svd(difference)
    rank8 = u[:, :8] @ torch.diag(s[:8]) @ vh[:8]  # svd keeps the largest rank of the parents
    svd = build("lora", "merge", parents, tiny_backbone, merge="svd", **arithmetic)
    assert torch.allclose(lora_delta(svd), rank8, atol=1e-5) and not torch.allclose(rank8, difference, atol=1e-3)


@pytest.mark.parametrize("method", get_regime("lora").merges)
def test_every_lora_merge_saves_a_module_plain_peft_loads(modules, tiny_backbone, tmp_path, method):
    parents = [modules[("lora", "xref")], modules[("lora", "next")]]
    pruning = {"merge_density": 0.5} if METHODS[method].prunes else {}
    torch.manual_seed(0)  # dare_* drop at random (a phase seeds before it builds)
    ours = build("lora", "merge", parents, tiny_backbone, merge=method, merge_weights=[2.0, 1.0], **pruning).eval()
    assert [n for n, p in ours.named_parameters() if p.requires_grad and "lora_" in n]
    get_regime("lora").save(ours, None, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == (16 if method == "cat" else 8)
    assert not torch.allclose(lora_delta(ours), torch.zeros(32, 32))
    plain = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        tiny_backbone.path, num_labels=len(get_task("verses-genre").labels)), tmp_path).eval()
    plain.get_base_model().load_state_dict(load_file(tmp_path / "head.safetensors"), strict=False)
    with torch.no_grad():
        assert torch.allclose(ours(**batch(tiny_backbone)).logits, plain(**batch(tiny_backbone)).logits, atol=1e-6)


def edited_lora(folder, to, **config):
    """A copy of a LoRA artifact whose adapter_config.json says ``config`` (its manifest re-hashed): a stand-in
    for a DoRA, rsLoRA, lora_bias or other-rank LoRA, which the merge checks refuse from the config alone."""
    from adapterxfer.artifacts import sha256_file

    copy = shutil.copytree(folder, to)
    settings = json.loads((copy / "adapter_config.json").read_text()) | config
    (copy / "adapter_config.json").write_text(json.dumps(settings))
    record = manifest(copy)
    record["files"]["adapter_config.json"] = sha256_file(copy / "adapter_config.json")
    record["sizes"]["adapter_config.json"] = (copy / "adapter_config.json").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(record))
    return copy


@pytest.mark.parametrize("config, keys, message", [
    ({"use_dora": True}, [], "is a LoRA with use_dora=true, which peft merges wrongly (peft #3761)"),
    ({"use_rslora": True}, [], "is a LoRA with use_rslora=true"),
    ({"lora_bias": True}, [], "is a LoRA with lora_bias=true"),
    ({"r": 4}, ["merge=ties", "merge_density=0.5"], "merge=ties needs LoRAs of one rank, got xref: 8, edited: 4"),
    ({}, ["merge_weights=1,-1"], "merge_weights 1.0,-1.0 sum to 0, which merge_normalize=true divides by"),
    ({}, ["merge_weights=1,2,3"], "merge_weights has 3 weight(s) for 2 intermediate module(s)"),
    ({}, ["merge=dare_ties"], "merge=dare_ties needs merge_density="),
    ({}, ["merge_density=0.5"], "merge_density applies to ties, ties_svd"),
    ({}, ["merge=linear"], "merge=linear is not available in regime lora (available: cat, svd, ties, "),
])
def test_a_merge_peft_would_get_wrong_is_refused_before_training(modules, tmp_path, capsys, config, keys, message):
    xref = shutil.copytree(modules[("lora", "xref")], tmp_path / "xref")
    other = edited_lora(modules[("lora", "next")], tmp_path / "edited", **config)
    capsys.readouterr()
    assert main(["train", "task=verses-genre", "regime=lora", "transfer=merge", f"init_from={xref},{other}",
                 f"output_dir={tmp_path / 'out'}", *keys]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "out").exists()


def test_a_merged_target_trains_and_records_its_merge(modules, tiny_backbone, tmp_path):
    parents = [modules[("lora", "xref")], modules[("lora", "next")]]
    out = train(tmp_path / "merged", "task=verses-genre", "regime=lora", "transfer=merge", "merge=dare_ties",
                "merge_density=0.5", "merge_weights=1,0.5", f"init_from={parents[0]},{parents[1]}", "eval_langs=fr",
                backbone=tiny_backbone)
    record = manifest(out)
    assert {k: record["config"][k] for k in ("merge", "merge_density", "merge_weights", "merge_normalize")} == {
        "merge": "dare_ties", "merge_density": 0.5, "merge_weights": [1.0, 0.5], "merge_normalize": True}
    assert record["identity"]["settings"]["merge"] == "dare_ties"
    assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "fr",
                 "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["fr"] == \
        json.loads((out / "scores.json").read_text())["fr"]


@pytest.mark.adapters
def test_bottleneck_merge_sums_the_adapters_with_negative_weights(modules, tiny_backbone, tmp_path):
    parents = [modules[("bottleneck", "xref")], modules[("bottleneck", "next")]]
    model = build("bottleneck", "merge", parents, tiny_backbone, merge_weights=[1.0, -1.0], merge_normalize=False)
    assert set(model.adapters_config.adapters) == {"target"}
    merged = {n: p for n, p in model.named_parameters() if ".target." in n}
    first, second = (load_file(folder / "adapter.safetensors") for folder in parents)  # saved as "target" too
    assert merged and set(merged) == set(first)
    assert all(torch.allclose(merged[n], first[n] - second[n], atol=1e-7) for n in merged)
    assert all(p.requires_grad for p in merged.values())
    with pytest.raises(UserError, match="merge=cat is not available in regime bottleneck .available: linear."):
        build("bottleneck", "merge", parents, tiny_backbone, merge="cat")
    with pytest.raises(UserError, match="sum to 0, which merge_normalize=true divides by"):
        build("bottleneck", "merge", parents, tiny_backbone, merge_weights=[1.0, -1.0])
    out = train(tmp_path / "merged", "task=verses-genre", "regime=bottleneck", "transfer=merge",
                f"init_from={parents[0]},{parents[1]}", "eval_langs=fr", backbone=tiny_backbone)
    assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "fr",
                 "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "scores.json").read_text())["fr"] == \
        json.loads((out / "scores.json").read_text())["fr"]


@pytest.mark.adapters
def test_fusion_over_two_bottleneck_adapters_trains_only_fusion_and_head(modules, tiny_backbone, tmp_path):
    parents = [modules[("bottleneck", "xref")], modules[("bottleneck", "next")]]
    model = build("bottleneck", "fusion", parents, tiny_backbone)
    trained = {n.split(".")[0] if "classifier" in n else "fusion" if "fusion" in n else n
               for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"classifier", "fusion"}
    out = train(tmp_path / "fused", "task=verses-genre", "regime=bottleneck", "transfer=fusion",
                f"init_from={parents[0]},{parents[1]}", "eval_langs=fr,zh", backbone=tiny_backbone)
    assert set(json.loads((out / "scores.json").read_text())) == {"fr", "zh"}
    assert (out / "fusion").is_dir() and len(list((out / "adapters").iterdir())) == 2
    shutil.copytree(out / "adapters" / "parent0", out / "adapters" / "planted")  # not in the manifest: never loaded
    loaded = get_regime("bottleneck").load(out, get_task("verses-genre"), tiny_backbone)
    assert set(loaded.adapters_config.adapters) == {"parent0", "parent1"}
    assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "de-s",
                 "--output", str(tmp_path / "eval")]) == 0


@pytest.mark.parametrize("regime, transfer, message", [
    ("lora", "fusion", "transfer=fusion is not available in regime lora"),
])
def test_unsupported_transfer_is_refused(modules, tiny_backbone, regime, transfer, message):
    with pytest.raises(UserError, match=message):
        build(regime, transfer, [modules[(regime, "xref")], modules[(regime, "next")]], tiny_backbone)


@pytest.mark.adapters
def test_regimes_cannot_be_mixed(modules, tiny_backbone):
    with pytest.raises(UserError, match="is a bottleneck artifact, not lora"):
        build("lora", "sequential", [modules[("bottleneck", "xref")]], tiny_backbone)


@pytest.mark.parametrize("regime", ["lora", adapterhub("bottleneck")])
def test_target_phase_and_retrieval_through_the_cli(modules, tiny_backbone, tmp_path, regime):
    for transfer in ("sequential", "stack"):
        out = train(tmp_path / f"{regime}-{transfer}", "task=verses-genre", f"regime={regime}",
                    f"transfer={transfer}", f"init_from={modules[(regime, 'xref')]}", "eval_langs=en,fr",
                    backbone=tiny_backbone)
        record = manifest(out)
        assert record["transfer"] == transfer and record["parents"][0]["task"] == "verses-xref"
        assert main(["evaluate", "--model", str(out), "--task", "verses-genre", "--langs", "fr",
                     "--output", str(tmp_path / f"eval-{transfer}")]) == 0
        evaluated = json.loads((tmp_path / f"eval-{transfer}" / "scores.json").read_text())
        assert evaluated["fr"] == json.loads((out / "scores.json").read_text())["fr"]
    assert main(["evaluate", "--model", str(modules[(regime, "next")]), "--task", "verses-retrieval",
                 "--langs", "fr", "--output", str(tmp_path / "retrieval")]) == 0


def test_peft_trains_far_fewer_parameters_than_full(modules, tiny_backbone, tmp_path):
    full = train(tmp_path / "full", "task=verses-xref", backbone=tiny_backbone)
    for regime in {regime for regime, _ in modules}:
        assert manifest(modules[(regime, "xref")])["trainable_parameters"] < \
            manifest(full)["trainable_parameters"] / 2
    assert trainable_parameters(build("lora", "sequential", [], tiny_backbone)) > 0


def test_artifacts_show_and_verify_catch_tampering(modules, tiny_backbone, tmp_path, capsys):
    import shutil

    folder = modules[("lora", "xref")]
    assert main(["artifacts", "show", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "lora lora for verses-xref (intermediate phase)" in shown and "MB" in shown
    assert main(["artifacts", "verify", str(folder), "--backbone", str(tiny_backbone.path)]) == 0

    tampered = shutil.copytree(folder, tmp_path / "tampered")
    weights = tampered / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    capsys.readouterr()
    assert main(["artifacts", "verify", str(tampered)]) == 2
    assert "adapter_model.safetensors does not match its sha256" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tampered), "--task", "verses-xref", "--output", str(tmp_path / "e")]) == 2

    other = shutil.copytree(folder, tmp_path / "other-backbone")
    record = manifest(other)
    record["backbone"]["weight_hash"] = "sha256:" + "1" * 64
    (other / "manifest.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["artifacts", "verify", str(other), "--backbone", str(tiny_backbone.path)]) == 2
    assert "weight hashes differ" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(other), "--task", "verses-xref", "--output", str(tmp_path / "e")]) == 2


@pytest.mark.parametrize("regime", ["lora", adapterhub("bottleneck")])
def test_bank_swaps_modules_without_reloading_the_backbone(modules, tiny_backbone, tmp_path, regime):
    from adapterxfer.bank import ModuleBank

    task = get_task("verses-xref")
    second = train(tmp_path / "second", "task=verses-xref", f"regime={regime}", "seed=5", backbone=tiny_backbone)
    folders = {"first": modules[(regime, "xref")], "second": second}
    bank = ModuleBank(task, tiny_backbone, regime)
    for name, folder in folders.items():
        bank.attach(name, folder)
    backbone_weight = bank.model.get_input_embeddings().weight
    inputs = batch(tiny_backbone)
    with torch.no_grad():
        for name in ("first", "second", "first"):
            expected = get_regime(regime).load(folders[name], task, tiny_backbone).eval()(**inputs).logits
            assert torch.allclose(bank.activate(name)(**inputs).logits, expected, atol=1e-6), name
    assert bank.model.get_input_embeddings().weight is backbone_weight
    with pytest.raises(UserError, match="cannot join a bank"):
        bank.attach("next", modules[(regime, "next")])


@pytest.mark.parametrize("regime", ["full", "lora", adapterhub("bottleneck")])
def test_multitask_intermediate_shares_one_encoder_with_a_head_per_task(tiny_backbone, tmp_path, regime):
    out = train(tmp_path / "multi", "task=verses-xref+verses-next", f"regime={regime}", "temperature=2",
                backbone=tiny_backbone)
    record = manifest(out)
    assert record["tasks"] == ["verses-xref", "verses-next"] and record["phase"] == "intermediate"
    assert (out / "head.safetensors").is_file() and (out / "heads" / "verses-next" / "head.safetensors").is_file()
    xref_head = load_file(out / "head.safetensors")
    next_head = load_file(out / "heads" / "verses-next" / "head.safetensors")
    assert xref_head["classifier.out_proj.weight"].shape[0] == 2 and next_head["classifier.weight"].shape[0] == 1
    # the multi-task module is an ordinary phase-2 output: phase 3 and retrieval start from it
    target = train(tmp_path / "target", "task=verses-genre", f"regime={regime}", f"init_from={out}",
                   "eval_langs=fr", backbone=tiny_backbone)
    assert manifest(target)["parents"][0]["task"] == "verses-xref+verses-next"
    assert main(["evaluate", "--model", str(out), "--task", "verses-retrieval", "--langs", "fr",
                 "--output", str(tmp_path / "retrieval")]) == 0


@pytest.mark.parametrize("regime, marker", [("lora", ".lora_"), adapterhub("bottleneck", ".adapters.target.")])
def test_multitask_models_share_parameters(tiny_backbone, regime, marker):
    from adapterxfer.modeling import MultiTaskModel, unwrap
    from adapterxfer.pipeline import _phase_tasks, _task_models

    config = from_dict({"task": "verses-xref+verses-next", "regime": regime})
    models = _task_models(get_regime(regime), _phase_tasks(config.task), tiny_backbone, [], config)
    xref, nxt = models["verses-xref"], models["verses-next"]
    assert nxt.roberta is unwrap(xref).roberta
    joint = MultiTaskModel(models)
    module = {n: p for n, p in joint.named_parameters(remove_duplicate=False) if marker in n}
    assert module and all(p.requires_grad for p in module.values())
    assert len(module) == len({id(p) for p in module.values()}) * 2  # each shared weight seen through both tasks
    choices = {"input_ids": torch.tensor([[[0, 5, 6, 2], [0, 7, 8, 2]]]), "labels": torch.tensor([1])}
    joint(task="verses-next", **choices).loss.backward()  # the second task's loss trains the shared module
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.values())
    with pytest.raises(UserError, match="multi-task training is for intermediate tasks"):
        _phase_tasks("verses-xref+verses-genre")


def test_intermediate_task_with_continued_multilingual_mlm(tiny_backbone, tmp_path):
    """The paper's alternative: an intermediate task trained jointly with MLM on multilingual text."""
    out = train(tmp_path / "xref-mlm", "task=verses-xref+verses-mlm", backbone=tiny_backbone)
    record = manifest(out)
    assert record["tasks"] == ["verses-xref", "verses-mlm"]
    mlm_head = load_file(out / "heads" / "verses-mlm" / "head.safetensors")
    assert "lm_head.dense.weight" in mlm_head and "lm_head.decoder.weight" not in mlm_head  # tied, not saved
    assert 0.0 <= record["dev"]["best"] <= 1.0
