"""K modules x L languages in one pass: LoRA modules side by side in mixed-adapter batches on one loaded tiny
backbone (``ModuleBank.forward_mixed``, ``evaluate.score_runs``), each example through its own module and head,
scoring exactly as each module alone; modules that cannot be mixed are refused in one line."""

import json

import pytest
import torch

from adapterxfer.bank import ModuleBank
from adapterxfer.backbones import load_tokenizer
from adapterxfer.cli import main
from adapterxfer.errors import UserError
from adapterxfer.evaluate import score_runs, score_split
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from test_peft import METHODS
from test_regimes import train

GENRE = get_task("verses-genre")
LANGS = ["fr", "de"]


@pytest.fixture(scope="module")
def modules(tmp_path_factory, tiny_backbone, fixture_home):
    """Two verses-genre LoRA modules (seeds 1 and 2), two verses-next ones (multiple choice), and a VeRA and a
    DoRA verses-genre module, trained once."""
    root = tmp_path_factory.mktemp("mixed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        trained = {f"genre{seed}": train(root / f"genre{seed}", "task=verses-genre", "regime=lora", f"seed={seed}",
                                         "eval_langs=fr", backbone=tiny_backbone) for seed in (1, 2)}
        trained |= {f"next{seed}": train(root / f"next{seed}", "task=verses-next", "regime=lora", f"seed={seed}",
                                         backbone=tiny_backbone) for seed in (1, 2)}
        trained |= {name: train(root / name, "task=verses-genre", "regime=peft", *METHODS[name], "eval_langs=fr",
                                backbone=tiny_backbone) for name in ("vera", "dora")}
        yield trained


def bank_of(task, backbone, regime, folders):
    bank = ModuleBank(task, backbone, regime)
    for name, folder in folders.items():
        bank.attach(name, folder)
    return bank


def alone(folder, task, backbone, langs):
    """{lang: (scores, predictions)} of the module in ``folder`` loaded by itself, as `adapterxfer evaluate`."""
    model = get_regime("lora").load(folder, task, backbone).eval()
    tokenizer = load_tokenizer(backbone.path)
    return {lang: score_split(model, tokenizer, task, "test", lang, 48, 4, "fp32") for lang in langs}


def test_k_modules_by_l_languages_in_one_pass_score_as_each_module_alone(modules, tiny_backbone, fixture_home,
                                                                         monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    folders = {name: modules[name] for name in ("genre1", "genre2")}
    bank = bank_of(GENRE, tiny_backbone, "lora", folders)
    runs = [(name, lang) for name in folders for lang in LANGS]
    together = score_runs(bank, load_tokenizer(tiny_backbone.path), GENRE, runs, 48, 4, "fp32")
    assert list(together) == runs
    for name, folder in folders.items():
        for lang, (scores, predictions) in alone(folder, GENRE, tiny_backbone, LANGS).items():
            assert together[(name, lang)] == (scores, predictions), (name, lang)
    # the two modules differ: the one pass really ran each example through its own module and head
    assert together[("genre1", "fr")][1] != together[("genre2", "fr")][1]


def test_each_language_routed_to_its_own_module_scores_as_that_module_alone(modules, tiny_backbone, fixture_home,
                                                                           monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    route = {"fr": "genre2", "de": "genre1"}
    bank = bank_of(GENRE, tiny_backbone, "lora", {name: modules[name] for name in ("genre1", "genre2")})
    routed = score_runs(bank, load_tokenizer(tiny_backbone.path), GENRE,
                        [(name, lang) for lang, name in route.items()], 48, 4, "fp32")
    for lang, name in route.items():
        assert routed[(name, lang)] == alone(modules[name], GENRE, tiny_backbone, [lang])[lang], lang


@pytest.mark.parametrize("task, names", [("verses-genre", ("genre1", "genre2")),
                                         ("verses-next", ("next1", "next2"))])
def test_a_mixed_batch_gives_each_example_its_own_modules_logits(modules, tiny_backbone, task, names):
    """Classification and multiple choice (each example's choices are rows of the encoder, all through its module)."""
    task = get_task(task)
    tokenizer = load_tokenizer(tiny_backbone.path)
    if task.kind == "classification":
        batch = dict(tokenizer(["alpha beta", "gamma delta epsilon", "one", "two three four"],
                               ["one", "two three", "alpha", "beta"], return_tensors="pt", padding=True))
    else:
        pairs = tokenizer([c for c in ("alpha beta", "gamma", "delta one", "two") for _ in range(2)],
                          ["one", "two three", "alpha", "beta", "gamma", "three", "four", "epsilon"],
                          return_tensors="pt", padding=True)
        batch = {key: value.view(4, 2, -1) for key, value in pairs.items()}
    bank = bank_of(task, tiny_backbone, "lora", {name: modules[name] for name in names})
    chosen = [names[0], names[1], names[1], names[0]]
    logits = torch.zeros(4, *bank.activate(names[0])(**batch).logits.shape[1:])
    for ids, _, output in bank.forward_mixed(batch, chosen):
        logits[ids] = output.logits
    with torch.no_grad():
        each = {name: get_regime("lora").load(modules[name], task, tiny_backbone).eval()(**batch).logits
                for name in names}
    for i, name in enumerate(chosen):
        assert torch.allclose(logits[i], each[name][i], atol=1e-5), (i, name)
    assert not torch.allclose(each[names[0]], each[names[1]], atol=1e-3)  # the modules (and heads) differ


@pytest.mark.parametrize("method, kind", [("vera", "vera"), ("dora", "lora")])
def test_modules_peft_cannot_mix_are_refused_in_one_line_and_still_swap(modules, tiny_backbone, method, kind):
    bank = bank_of(GENRE, tiny_backbone, "peft", {method: modules[method]})
    with pytest.raises(UserError) as refused:
        score_runs(bank, None, GENRE, [(method, "fr")], 48, 4, "fp32")
    assert str(refused.value) == (f"{modules[method]}: a {kind} module of regime peft cannot run beside others in one "
                                  "batch (peft mixes LoRA modules only, not DoRA); evaluate it alone")
    assert bank.activate(method) is bank.model  # one at a time, as ever


def test_evaluate_with_several_models_scores_them_in_one_pass_as_each_alone(modules, tmp_path, fixture_home,
                                                                             monkeypatch, capsys):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    common = ["--task", "verses-genre", "--langs", "fr,de", "--max-length", "48", "--batch-size", "4",
              "--precision", "fp32"]
    assert main(["evaluate", "--model", str(modules["genre1"]), "--model", str(modules["genre2"]), *common,
                 "--output", str(tmp_path / "together")]) == 0
    assert "wrote " + str(tmp_path / "together" / "genre2") + "/scores.json" in capsys.readouterr().out
    for name in ("genre1", "genre2"):
        assert main(["evaluate", "--model", str(modules[name]), *common, "--output", str(tmp_path / name)]) == 0
        files = sorted(path.relative_to(tmp_path / name) for path in (tmp_path / name).rglob("*") if path.is_file())
        assert files == sorted(path.relative_to(tmp_path / "together" / name)
                               for path in (tmp_path / "together" / name).rglob("*") if path.is_file())
        assert {"scores.json", "predictions/test-fr.jsonl", "predictions/test-de.jsonl"} <= set(map(str, files))
        for file in files:
            if file.name != "evaluation.json":  # it records the files' sizes, equal too, and the model's hash
                assert (tmp_path / name / file).read_bytes() == (tmp_path / "together" / name / file).read_bytes()
        assert (json.loads((tmp_path / name / "evaluation.json").read_text())
                == json.loads((tmp_path / "together" / name / "evaluation.json").read_text()))


@pytest.mark.parametrize("pair, message", [
    (("genre1", "dora"), "{dora}: a lora module of regime peft cannot run beside others in one batch (peft mixes "
                         "LoRA modules only, not DoRA); evaluate it alone"),
    (("genre1", "vera"), "{vera}: a vera module of regime peft cannot run beside others in one batch (peft mixes "
                         "LoRA modules only, not DoRA); evaluate it alone"),
    (("genre1", "next1"), "{next1} was trained on task 'verses-next', not 'verses-genre'"),
])
def test_evaluate_refuses_models_that_cannot_run_in_one_pass_in_one_line(modules, tmp_path, fixture_home,
                                                                         monkeypatch, capsys, pair, message):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(fixture_home))
    capsys.readouterr()
    assert main(["evaluate", *(f"--model={modules[name]}" for name in pair), "--task", "verses-genre",
                 "--langs", "fr", "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "adapterxfer: error: " + message.format(**modules) + "\n"
    assert not list((tmp_path / "out").rglob("scores.json"))
