"""transfer=arithmetic on the tiny backbone and the fixture corpus: LoRA language modules trained by MLM on each
language's verses, a verses-genre task module, and each test language scored with task + λ·(lang_L − lang_en)."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from adapterxfer.cli import main
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from test_regimes import STEPS

LANGS = ("en", "fr", "de")
WEIGHT = 0.5  # λ: not 1, so a module scaled wrongly cannot pass


def train(folder, *extra, backbone, regime="lora"):
    assert main(["train", f"regime={regime}", f"backbone={backbone.path}", f"output_dir={folder}", *STEPS,
                 *extra]) == 0
    return folder


def arithmetic_keys(task, *langs):
    return ["task=verses-genre", "transfer=arithmetic", f"init_from={task}", "eval_langs=en,fr,de",
            "lang_modules=" + ",".join(map(str, langs)), f"arithmetic_lambda={WEIGHT}"]


@pytest.fixture(scope="module")
def modules(tmp_path_factory, tiny_backbone, fixture_home):
    """LoRA language modules for en, fr, de; a verses-genre task module; the arithmetic phase over them."""
    root = tmp_path_factory.mktemp("arithmetic")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        langs = {lang: train(root / f"lang-{lang}", "task=verses-text", f"language={lang}", backbone=tiny_backbone)
                 for lang in LANGS}
        task = train(root / "task", "task=verses-genre", "eval_langs=en,fr,de", backbone=tiny_backbone)
        composed = train(root / "arithmetic", *arithmetic_keys(task, *langs.values()), backbone=tiny_backbone)
    return {"langs": langs, "task": task, "arithmetic": composed}


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def deltas(folder):
    """{layer: the LoRA's weight delta there (scaling · B @ A)} of a plain peft folder."""
    config = json.loads((folder / "adapter_config.json").read_text())
    weights = load_file(folder / "adapter_model.safetensors")
    scaling = config["lora_alpha"] / config["r"]
    return {name.removesuffix(".lora_A.weight"): scaling * weights[name.replace("lora_A", "lora_B")] @ weights[name]
            for name in weights if name.endswith(".lora_A.weight")}


def language_of(modules, lang):
    return manifest(modules["langs"][lang])["language"]


def test_each_languages_module_is_task_plus_lambda_times_the_language_difference(modules):
    record = manifest(modules["arithmetic"])
    assert (record["transfer"], record["trainable_parameters"]) == ("arithmetic", 0)
    task, english = deltas(modules["task"]), deltas(modules["langs"]["en"])
    for lang in ("fr", "de"):
        language = deltas(modules["langs"][lang])
        composed = deltas(modules["arithmetic"] / f"arithmetic-{language_of(modules, lang)}")
        assert composed.keys() == task.keys() == language.keys() and len(task) == 4  # query, value; 2 layers
        for layer, delta in composed.items():
            expected = task[layer] + WEIGHT * (language[layer] - english[layer])
            assert torch.allclose(delta, expected, atol=1e-6), (lang, layer)
            assert (language[layer] - english[layer]).abs().max() > 1e-4  # the languages' modules differ
    assert sorted(path.name for path in modules["arithmetic"].glob("arithmetic-*")) == sorted(
        f"arithmetic-{language_of(modules, lang)}" for lang in ("fr", "de"))  # none for the source language


def test_verify_notices_a_language_module_retrained_since(modules, tiny_backbone, fixture_home, tmp_path, monkeypatch,
                                                         capsys):
    """The lineage of an arithmetic artifact covers its language modules, after its task module."""
    import shutil

    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    langs = {lang: shutil.copytree(modules["langs"][lang], tmp_path / f"lang-{lang}") for lang in LANGS}
    composed = train(tmp_path / "arithmetic", *arithmetic_keys(modules["task"], *langs.values()),
                     backbone=tiny_backbone)
    assert main(["artifacts", "verify", str(composed)]) == 0
    assert "lineage checked against 4 input(s)" in capsys.readouterr().out
    train(langs["fr"], "task=verses-text", "language=fr", "seed=7", "overwrite=true", backbone=tiny_backbone)
    assert main(["artifacts", "verify", str(composed)]) == 2
    assert f"its lineage names {langs['fr']}, which has been retrained since" in capsys.readouterr().err


def plain_peft(folder, head_folder, backbone):
    labels = len(get_task("verses-genre").labels)
    base = AutoModelForSequenceClassification.from_pretrained(backbone.path, num_labels=labels)
    model = PeftModel.from_pretrained(base, folder).eval()
    model.get_base_model().load_state_dict(load_file(head_folder / "head.safetensors"), strict=False)
    return model


def test_a_languages_module_loads_in_plain_peft_and_english_is_the_task_module_alone(modules, tiny_backbone):
    task = get_task("verses-genre")
    regime = get_regime("lora")
    ours = regime.load(modules["arithmetic"], task, tiny_backbone).eval()
    switch = regime.language_switch(ours, task, {})
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    inputs = tokenizer(["alpha beta gamma", "delta epsilon"], return_tensors="pt", padding=True)
    head = modules["task"]  # the task module's head, kept apart from the arithmetic
    with torch.no_grad():
        switch("fr")
        french = plain_peft(modules["arithmetic"] / f"arithmetic-{language_of(modules, 'fr')}", head, tiny_backbone)
        assert torch.allclose(ours(**inputs).logits, french(**inputs).logits, atol=1e-6)
        switch("en")
        alone = plain_peft(modules["task"], head, tiny_backbone)(**inputs).logits
        assert torch.allclose(ours(**inputs).logits, alone, atol=1e-6)
        switch("de")
        assert not torch.allclose(ours(**inputs).logits, alone, atol=1e-4)


def test_english_scores_equal_the_task_modules_and_an_evaluation_reproduces_the_phases(modules, tmp_path):
    composed, task = modules["arithmetic"], modules["task"]
    scores = json.loads((composed / "scores.json").read_text())
    alone = json.loads((task / "scores.json").read_text())
    assert scores["en"] == alone["en"] and set(scores) == set(LANGS)
    assert manifest(composed)["dev"]["best"] == manifest(task)["dev"]["best"]  # English dev: blind to λ
    assert main(["evaluate", "--model", str(composed), "--task", "verses-genre", "--langs", "en,fr,de",
                 "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "scores.json").read_text()) == scores


def test_an_arithmetic_artifact_is_not_pushed_with_a_card_that_would_load_english_only(capsys, modules):
    code, err = run(capsys, "push", str(modules["arithmetic"]), "lab/arithmetic")
    assert code == 2 and err == [f"adapterxfer: error: {modules['arithmetic']}: a transfer=arithmetic artifact holds a "
                                 "module per test language, which its model card cannot load yet; push its task "
                                 "module (init_from) instead"]


def run(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def odd_modules(tmp_path_factory, tiny_backbone, fixture_home):
    """A German language module with LoRAs in other layers than the task module's, and one in regime ia3."""
    root = tmp_path_factory.mktemp("odd")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        return {"targets": train(root / "targets", "task=verses-text", "language=de", "lora_targets=query,key",
                                 backbone=tiny_backbone),
                "ia3": train(root / "ia3", "task=verses-text", "language=de", regime="ia3", backbone=tiny_backbone)}


def test_bad_language_modules_are_one_line_and_nothing_is_written(capsys, modules, odd_modules, tiny_backbone,
                                                                   tmp_path):
    langs, task, out = modules["langs"], modules["task"], tmp_path / "out"
    common = ["train", "regime=lora", f"backbone={tiny_backbone.path}", *STEPS, f"output_dir={out}"]
    german = language_of(modules, "de")
    cases = [
        (arithmetic_keys(task, langs["en"], langs["fr"]), f"lang_modules: no language module for {german} (have: "),
        (arithmetic_keys(task, langs["fr"], langs["de"]), "lang_modules: no language module for "),
        (arithmetic_keys(task, langs["en"], langs["fr"], langs["de"], langs["de"]),
         f"are both language modules for {german!r}"),
        (arithmetic_keys(task, langs["en"], langs["fr"], task),
         f"lang_modules: {task} is not a lora language module (it is a lora classification module of verses-genre)"),
        (arithmetic_keys(task, langs["en"], langs["fr"], odd_modules["ia3"]),
         f"lang_modules: {odd_modules['ia3']} is not a lora language module (it is a ia3 mlm module"),
        (arithmetic_keys(task, langs["en"], langs["fr"], odd_modules["targets"]),
         f"lang_modules: {odd_modules['targets']} puts its LoRA into other layers"),
        (arithmetic_keys(langs["en"], *langs.values()),
         f"init_from {langs['en']} is a verses-text module; transfer=arithmetic adds language modules to one "
         "plain module of verses-genre itself"),
        (arithmetic_keys(task, langs["en"], langs["fr"], tmp_path / "nowhere"), str(tmp_path / "nowhere")),
    ]
    for keys, message in cases:
        code, err = run(capsys, *common, *keys)
        assert code == 2 and len(err) == 1 and message in err[0], (keys, err)
        assert not out.exists()


@pytest.fixture(scope="module")
def madx(tmp_path_factory, tiny_backbone, fixture_home):
    """MAD-X language adapters for en, fr, de; a verses-genre task adapter stacked on English's; the arithmetic
    phase over them."""
    root = tmp_path_factory.mktemp("madx-arithmetic")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        langs = {lang: train(root / f"lang-{lang}", "task=verses-text", f"language={lang}", regime="madx",
                             backbone=tiny_backbone) for lang in LANGS}
        task = train(root / "task", "task=verses-genre", "eval_langs=en,fr,de", regime="madx",
                     backbone=tiny_backbone, *["lang_adapters=" + ",".join(str(langs[lang]) for lang in LANGS)])
        composed = train(root / "arithmetic", *arithmetic_keys(task, *langs.values()), regime="madx",
                         backbone=tiny_backbone)
    return {"langs": langs, "task": task, "arithmetic": composed}


def adapter_weights(folder):
    """A saved adapter's tensors, named without the adapter's own name."""
    name = json.loads((folder / "adapter_config.json").read_text())["name"]
    return {key.replace(f".{name}.", ".*."): value for key, value in load_file(folder / "adapter.safetensors").items()}


@pytest.mark.adapters
def test_madx_stacks_the_task_adapter_on_english_plus_lambda_times_the_language_difference(madx):
    english = adapter_weights(madx["langs"]["en"])
    assert any(".invertible_adapters." in key for key in english)
    for lang in LANGS:
        language = adapter_weights(madx["langs"][lang])
        composed = adapter_weights(madx["arithmetic"] / f"arithmetic-{manifest(madx['langs'][lang])['language']}")
        assert composed.keys() == english.keys()
        for key, value in composed.items():
            assert torch.allclose(value, english[key] + WEIGHT * (language[key] - english[key]), atol=1e-6), key


@pytest.mark.adapters
def test_madx_arithmetic_loads_in_plain_adapters_and_english_is_madx_alone(madx, tiny_backbone, tmp_path):
    import adapters
    from adapters.composition import Stack

    scores = json.loads((madx["arithmetic"] / "scores.json").read_text())
    alone = json.loads((madx["task"] / "scores.json").read_text())
    assert scores["en"] == alone["en"] and set(scores) == set(LANGS)
    task = get_task("verses-genre")
    ours = get_regime("madx").load(madx["arithmetic"], task, tiny_backbone).eval()
    get_regime("madx").language_switch(ours, task, {})("fr")
    french = f"arithmetic-{manifest(madx['langs']['fr'])['language']}"
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_backbone.path, num_labels=len(task.labels))
    adapters.init(plain)
    for folder, name in ((madx["arithmetic"] / french, french), (madx["arithmetic"], "target")):
        plain.load_adapter(str(folder), load_as=name, with_head=False, use_safetensors=True)
    plain.active_adapters = Stack(french, "target")
    plain.load_state_dict(load_file(madx["arithmetic"] / "head.safetensors"), strict=False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    inputs = tokenizer(["alpha beta gamma", "delta epsilon"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits, plain.eval()(**inputs).logits, atol=1e-6)
    assert main(["evaluate", "--model", str(madx["arithmetic"]), "--task", "verses-genre", "--langs", "en,fr,de",
                 "--output", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "scores.json").read_text()) == scores


@pytest.mark.adapters
def test_madx_arithmetic_refuses_another_english_adapter_than_the_task_adapters(capsys, madx, tiny_backbone,
                                                                                tmp_path):
    langs, out = madx["langs"], tmp_path / "out"
    other = train(tmp_path / "other-en", "task=verses-text", "language=en", "seed=7", regime="madx",
                  backbone=tiny_backbone)
    code, err = run(capsys, "train", "regime=madx", f"backbone={tiny_backbone.path}", *STEPS, f"output_dir={out}",
                    *arithmetic_keys(madx["task"], other, langs["fr"], langs["de"]))
    assert code == 2 and len(err) == 1, err
    assert (f"lang_modules: {other} is not the {manifest(other)['language']} language adapter init_from "
            f"{madx['task']} was trained on ({langs['en']})") in err[0]
    assert not out.exists()


def test_a_study_runs_the_arithmetic_arm_beside_the_english_task_module_matched(tiny_backbone, tmp_path):
    """A plan's arithmetic(baseline) arm: the LoRA language modules train, the arm composes the baseline's task
    module with them, scores English as the baseline does, and its contrast with the baseline is matched."""
    import yaml

    from adapterxfer.study.matching import check
    from adapterxfer.study.plan import expand, read_plan

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "backbone": str(tiny_backbone.path), "output": str(tmp_path / "study"), "seeds": [1],
        "targets": ["verses-genre"], "regimes": ["lora"], "transfers": {"sequential": ["lora"], "arithmetic": ["lora"]},
        "lora": {"lang_module_task": "verses-text"}, "target_phase": {"eval_langs": ["en", "fr"]},
        "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32"},
        "contrasts": [{"name": "arithmetic", "run": "lora/arithmetic(baseline)", "versus": "lora/baseline",
                       "primary": True}]}))
    assert main(["study", "run", str(plan)]) == 0
    root = tmp_path / "study"
    composed, alone = root / "seed1/lora/verses-genre/arithmetic-baseline", root / "seed1/lora/verses-genre/baseline"
    scores = json.loads((composed / "scores.json").read_text())
    assert scores["en"] == json.loads((alone / "scores.json").read_text())["en"] and set(scores) == {"en", "fr"}
    assert manifest(composed)["parents"][0]["path"] == str(alone)
    assert (composed / f"arithmetic-{manifest(root / 'seed1/lora/lang/fr')['language']}").is_dir()
    graph = expand(read_plan(str(plan)))
    matched = check(graph, root, graph.arm("lora/arithmetic(baseline)", "verses-genre").keys,
                    graph.arm("lora/baseline", "verses-genre").keys)
    assert not matched.problems and matched.summary.startswith("matched: same items"), matched.summary
