"""Sharing on the Hub: push, pull (pinned, verified), lineage, model card, plain-library loading.

The Hugging Face Hub cannot be reached here, so every test runs the real huggingface_hub client
(through HF_ENDPOINT) against a stand-in for the Hub's HTTP API on 127.0.0.1 (tests/hub_standin.py),
on the tiny backbone and the fixture corpus.
"""

import json
import re
import socket

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard, constants, file_download
from peft import PeftModel
from transformers import AutoModel, AutoTokenizer

from adapterxfer import sharing
from adapterxfer.backbones import resolve
from adapterxfer.cli import main
from adapterxfer.errors import UserError
from adapterxfer.regimes import get_regime
from adapterxfer.tasks import get_task
from extras import ADAPTERHUB, adapterhub
from hub_standin import HubStandIn

STEPS = ["max_steps=3", "eval_every=3", "batch_size=4", "max_length=48", "precision=fp32", "lr=1e-2"]
TOKENS = {"lab-token": "lab", "someone-token": "someone"}
ENGLISH, FRENCH = "en-4", "fr-o"  # the fixture corpus' default translation ids


def train(folder, *extra, backbone):
    assert main(["train", f"backbone={backbone.path}", f"output_dir={folder}", *STEPS, *extra]) == 0
    return folder


def scores(folder):
    return json.loads((folder / "scores.json").read_text())


def manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def point_client_at(patch, endpoint: str, cache) -> None:
    """HF_ENDPOINT and HF_HUB_CACHE, as the client applies them when it is imported: this process
    imported huggingface_hub before any test ran, so the constants it derives are set here too."""
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    patch.setenv("HF_ENDPOINT", endpoint)
    patch.setenv("HF_HUB_CACHE", str(cache))
    for module, name, value in ((constants, "ENDPOINT", endpoint), (constants, "HF_HUB_CACHE", str(cache)),
                                (constants, "HUGGINGFACE_CO_URL_TEMPLATE", template),
                                (file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)):
        if hasattr(module, name):  # huggingface_hub 2 reads the template from constants only
            patch.setattr(module, name, value)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The Hub stand-in, with the client pointed at it (no xet, no telemetry) and the lab's token."""
    with HubStandIn(tmp_path_factory.mktemp("hub-standin"), TOKENS) as standin, pytest.MonkeyPatch.context() as patch:
        point_client_at(patch, standin.endpoint, tmp_path_factory.mktemp("hf-cache"))
        patch.setenv("HF_TOKEN", "lab-token")
        patch.setenv("HF_HUB_DISABLE_XET", "1")
        patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield standin


@pytest.fixture(autouse=True)
def fresh_cache(hub, tmp_path, monkeypatch):
    """Each test downloads into its own empty HF cache."""
    point_client_at(monkeypatch, hub.endpoint, tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def setups(tmp_path_factory, tiny_backbone, fixture_home, hub):
    """One composed setup per module kind (the AdapterHub ones where the extra is installed), trained once and
    pushed once (repo lab/<setup>)."""
    root = tmp_path_factory.mktemp("setups")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTERXFER_HOME", str(fixture_home))
        bb = {"backbone": tiny_backbone}
        folders = {"lora": train(root / "lora", "task=verses-xref", "regime=lora", **bb),
                   "ia3": train(root / "ia3", "task=verses-xref", "regime=ia3", **bb),
                   "vera": train(root / "vera", "task=verses-xref", "regime=peft", "peft_method=vera", "peft.r=4", **bb)}
        if ADAPTERHUB:
            parts = [train(root / f"bn-{task}", f"task=verses-{task}", "regime=bottleneck", **bb)
                     for task in ("xref", "next")]
            langs = [train(root / f"lang-{lang}", "task=verses-text", "regime=madx", f"language={lang}", **bb)
                     for lang in ("en", "fr")]
            folders |= {"bottleneck": parts[0],
                        "fusion": train(root / "fusion", "task=verses-genre", "regime=bottleneck", "transfer=fusion",
                                        f"init_from={parts[0]},{parts[1]}", "eval_langs=en,fr", **bb),
                        "madx": train(root / "madx", "task=verses-xref", "regime=madx",
                                      f"lang_adapters={langs[0]},{langs[1]}", **bb)}
    commits = {name: sharing.push_artifact(folder, f"lab/{name}") for name, folder in folders.items()}
    return {"folders": folders, "commits": {name: info.oid for name, info in commits.items()}}


# -- the round trip: push, pull, verify, train a target from the pulled module --

TARGET = {"lora": ["regime=lora"], "bottleneck": ["regime=bottleneck"],
          "madx": ["regime=madx", "lang_adapters={en},{fr}"]}


@pytest.mark.parametrize("setup", ["lora", adapterhub("bottleneck"), adapterhub("madx")])
def test_standin_target_from_a_pulled_module_scores_as_one_from_the_local_folder(setup, setups, tiny_backbone,
                                                                                 tmp_path):
    """A target trained from ``hf://lab/<setup>`` (pulled from the stand-in) equals one trained from the
    local folder, and its lineage records the repo and commit; madx takes its language adapters from
    inside the pushed repo."""
    local, commit = setups["folders"][setup], setups["commits"][setup]
    ref = f"hf://lab/{setup}"
    langs = {"local": {}, "hub": {}}
    if setup == "madx":
        langs["local"] = {"en": manifest(local)["config"]["lang_adapters"][0],
                          "fr": manifest(local)["config"]["lang_adapters"][1]}
        langs["hub"] = {"en": f"{ref}/lang_adapters/{ENGLISH}", "fr": f"{ref}@{commit}/lang_adapters/{FRENCH}"}
    runs = {}
    for where, init in (("local", local), ("hub", ref)):
        extra = [arg.format(**langs[where]) for arg in TARGET[setup]]
        runs[where] = train(tmp_path / where, "task=verses-genre", f"init_from={init}", "eval_langs=en,fr", *extra,
                            backbone=tiny_backbone)
    assert scores(runs["hub"]) == scores(runs["local"])
    parent = manifest(runs["hub"])["parents"][0]
    assert parent["hub"] == {"repo_id": f"lab/{setup}", "commit": commit}
    assert parent["manifest_sha256"] == manifest(runs["local"])["parents"][0]["manifest_sha256"]
    assert "hub" not in manifest(runs["local"])["parents"][0]


@pytest.mark.adapters
def test_standin_a_fusion_setup_comes_down_whole_and_scores_as_pushed(setups, tmp_path):
    """One pull of ``hf://lab/fusion`` brings both adapters, the fusion layer and the head; evaluating
    it gives the scores the run wrote before it was pushed."""
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "hf://lab/fusion", "--task", "verses-genre", "--langs", "en,fr",
                 "--output", str(out)]) == 0
    assert scores(out) == scores(setups["folders"]["fusion"])
    folder = sharing.pull("hf://lab/fusion")
    assert sorted(p.name for p in (folder / "adapters").iterdir()) == ["parent0", "parent1"]
    assert (folder / "fusion" / "model_adapter_fusion.safetensors").is_file()


@pytest.mark.parametrize("setup", ["lora", "ia3", "vera", adapterhub("bottleneck"), adapterhub("fusion"),
                                   adapterhub("madx")])
def test_standin_the_pushed_repo_holds_the_artifact_unchanged_plus_a_card(setups, hub, setup):
    folder = setups["folders"][setup]
    record = manifest(folder)
    repo = hub.repos[f"lab/{setup}"]
    files = set(repo.commits[setups["commits"][setup]])
    bundled = {f for f in files if f.startswith("lang_adapters/")}
    assert files - bundled == {".gitattributes", "README.md", "manifest.json", *record["files"]}
    for name in record["files"]:
        assert hub.stored_file(f"lab/{setup}", name).read_bytes() == (folder / name).read_bytes()
    if setup == "madx":
        langs = {path.split("/")[1] for path in bundled}
        assert langs == {ENGLISH, FRENCH}
        assert f"lang_adapters/{FRENCH}/adapter.safetensors" in bundled
    else:
        assert not bundled


# -- loading a pulled folder with plain peft / adapters code: the card's own snippet --

def card_snippet(folder):
    text = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    download = re.search(r"^folder = snapshot_download\(.*$", code, re.M)
    assert download, "the card downloads the repo by id"
    return code.replace(download.group(0), f"folder = {str(folder)!r}")


@pytest.mark.parametrize("setup, task", [("lora", "verses-xref"), ("ia3", "verses-xref"), ("vera", "verses-xref"),
                                         adapterhub("bottleneck", "verses-xref"), adapterhub("fusion", "verses-genre"),
                                         adapterhub("madx", "verses-xref")])
def test_standin_pulled_module_loads_in_plain_libraries_with_its_head_and_on_the_bare_encoder(setup, task, setups,
                                                                                    tiny_backbone):
    """The card's snippet, run as written on the pulled folder, gives adapterxfer's logits (module and
    head) and its encoder states (module on AutoModel), which differ from the bare backbone's."""
    folder = sharing.pull(f"hf://lab/{setup}")
    namespace = {}
    exec(card_snippet(folder), namespace)
    plain, plain_encoder = namespace["model"].eval(), namespace["encoder"].eval()
    regime = get_regime(manifest(folder)["regime"])
    ours = regime.load(folder, get_task(task), tiny_backbone).eval()
    ours_encoder = regime.load_encoder(folder, get_task(task), tiny_backbone).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    inputs = tokenizer(["alpha beta", "gamma delta epsilon"], ["one", "two three"], return_tensors="pt", padding=True)
    bare = AutoModel.from_pretrained(tiny_backbone.path, add_pooling_layer=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(**inputs).logits, ours(**inputs).logits, atol=1e-5, rtol=1e-5)
        states = plain_encoder(**inputs).last_hidden_state
        torch.testing.assert_close(states, ours_encoder(**inputs).last_hidden_state, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(states, bare(**inputs).last_hidden_state, atol=1e-4)


def test_a_lora_trained_by_adapterxfer_loads_onto_the_bare_encoder(setups, tiny_backbone):
    """PeftModel.from_pretrained(AutoModel...) finds the target modules (the saved pattern no longer
    needs a prefix before ``encoder``); with peft's key_mapping every LoRA weight is loaded."""
    folder = setups["folders"]["lora"]
    config = json.loads((folder / "adapter_config.json").read_text())
    assert re.fullmatch(config["target_modules"], "encoder.layer.0.attention.self.query")
    assert re.fullmatch(config["target_modules"], "roberta.encoder.layer.1.attention.self.value")
    assert not re.fullmatch(config["target_modules"], "classifier.dense")
    encoder = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_backbone.path, add_pooling_layer=False),
                                        folder, key_mapping={r"^roberta\.": ""})
    ours = get_regime("lora").load_encoder(folder, get_task("verses-xref"), tiny_backbone)
    inputs = {"input_ids": torch.tensor([[0, 5, 6, 7, 2]])}
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(**inputs).last_hidden_state,
                                   ours.eval()(**inputs).last_hidden_state, atol=1e-5, rtol=1e-5)
    assert not (folder / "README.md").exists(), "peft's placeholder card is not part of the artifact"


# -- the model card --

@pytest.mark.adapters
def test_standin_card_metadata_parses_with_huggingface_hub_and_holds_the_scores(setups):
    card = ModelCard.load(sharing.pull("hf://lab/fusion") / "README.md")
    assert card.data.library_name == "adapters"
    assert card.data.base_model is None  # the tiny backbone is a local folder, not a Hub model
    assert card.data.language == ["en", "fr"]
    assert {"adapterxfer", "bottleneck", "seq_bn", "cross-lingual-transfer", "zero-shot"} <= set(card.data.tags)
    results = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    expected = {(lang, metric): value for lang, values in scores(setups["folders"]["fusion"]).items()
                for metric, value in values.items()}
    assert results == expected and card.data.eval_results[0].task_type == "text-classification"
    assert card.data.model_name == "fusion"
    text = card.text
    assert "transfer=fusion" in text and manifest(setups["folders"]["fusion"])["backbone"]["weight_hash"] in text
    assert ModelCard.load(sharing.pull("hf://lab/lora") / "README.md").data.library_name == "peft"
    madx = ModelCard.load(sharing.pull("hf://lab/madx") / "README.md")
    assert madx.data.language == ["en", "fr"] and madx.data.eval_results is None  # bundled adapters: en, fr


def test_card_names_the_hub_dataset_and_base_model_of_a_hub_backbone(setups):
    record = manifest(setups["folders"]["lora"])
    record = {**record, "backbone": {"name": "FacebookAI/xlm-roberta-large", "weight_hash": "sha256:0"},
              "tasks": ["xnli"], "task": "xnli", "parents": [{"task": "mnli", "regime": "lora",
                                                               "manifest_sha256": "sha256:1", "path": "x"}]}
    card = sharing.model_card(setups["folders"]["lora"], record, "lab/xnli-lora")
    data = ModelCard(str(card)).data
    assert data.base_model == "FacebookAI/xlm-roberta-large"
    assert data.datasets == ["facebook/xnli", "nyu-mll/glue"]
    assert 'from_pretrained("FacebookAI/xlm-roberta-large", num_labels=3)' in card.text


# -- pins, branches, private repos and someone else's repo --

def test_standin_push_to_a_branch_and_pull_it_by_name_or_commit(setups, hub, capsys):
    assert main(["push", str(setups["folders"]["lora"]), "lab/branched", "--revision", "v1"]) == 0
    out = capsys.readouterr().out
    commit = re.search(r"hf://lab/branched@([0-9a-f]{40})", out).group(1)
    assert hub.repos["lab/branched"].branches["v1"] == commit != hub.repos["lab/branched"].branches["main"]
    assert sharing.pull("hf://lab/branched@v1").name == commit
    assert sharing.pull(f"hf://lab/branched@{commit}") == sharing.pull("hf://lab/branched@v1")
    assert sharing.origin(sharing.pull("hf://lab/branched@v1")) == {"hub": {"repo_id": "lab/branched",
                                                                          "commit": commit}}


def test_standin_a_private_repo_reads_like_a_missing_one_without_the_owners_token(setups, tmp_path, monkeypatch):
    sharing.push_artifact(setups["folders"]["lora"], "lab/private-lora", private=True)
    assert (sharing.pull("hf://lab/private-lora") / "adapter_model.safetensors").is_file()
    monkeypatch.setenv("HF_TOKEN", "someone-token")
    point_client_at(monkeypatch, constants.ENDPOINT, tmp_path / "someone-cache")
    with pytest.raises(UserError, match="no repo lab/private-lora on http://127.0.0.1"):
        sharing.pull("hf://lab/private-lora")
    assert not (tmp_path / "someone-cache" / "models--lab--private-lora" / "snapshots").exists()


def test_standin_someone_elses_repo_without_manifest_is_used_with_a_warning(tiny_backbone, tmp_path, monkeypatch,
                                                                            capsys):
    """A plain transformers repo (no adapterxfer manifest) serves as the encoder for retrieval."""
    monkeypatch.setenv("HF_TOKEN", "someone-token")
    api = HfApi()
    api.create_repo("someone/tiny-encoder")
    api.upload_folder(repo_id="someone/tiny-encoder", folder_path=str(tiny_backbone.path))
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", "hf://someone/tiny-encoder", "--task", "verses-retrieval", "--langs", "fr",
                 "--output", str(out)]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "unverified" in line]
    assert len(warning) == 1 and re.search(r"hf://someone/tiny-encoder@[0-9a-f]{40} has no manifest", warning[0])
    local = tmp_path / "local"
    assert main(["evaluate", "--model", str(tiny_backbone.path), "--task", "verses-retrieval", "--langs", "fr",
                 "--output", str(local)]) == 0
    assert scores(out) == scores(local)


def test_standin_a_hub_backbone_is_pinned_to_the_commit_it_resolved_to(tiny_backbone, tmp_path, monkeypatch):
    """A backbone named by its Hub id trains at the commit it resolved to, which the lineage records; a study
    hands its phases that pinned name (``Backbone.pinned``), so a push to the repo mid-study changes none."""
    monkeypatch.setenv("HF_TOKEN", "someone-token")
    api = HfApi()
    api.create_repo("someone/tiny-backbone")
    commit = api.upload_folder(repo_id="someone/tiny-backbone", folder_path=str(tiny_backbone.path)).oid
    backbone = resolve("someone/tiny-backbone")
    assert backbone.pinned == f"someone/tiny-backbone@{commit}" and backbone.weight_hash == tiny_backbone.weight_hash
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="extra.json", repo_id="someone/tiny-backbone")
    assert resolve("someone/tiny-backbone").path.name != commit and resolve(backbone.pinned).path.name == commit
    out = tmp_path / "xref"
    assert main(["train", "task=verses-xref", f"backbone={backbone.pinned}", f"output_dir={out}", *STEPS]) == 0
    assert manifest(out)["backbone"] == {"name": backbone.pinned, "weight_hash": tiny_backbone.weight_hash,
                                         "hub": {"repo_id": "someone/tiny-backbone", "commit": commit}}


def test_standin_a_pulled_model_whose_config_names_a_kernel_is_refused(tiny_backbone, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "someone-token")
    api = HfApi()
    api.create_repo("someone/kernel-encoder")
    config = json.loads((tiny_backbone.path / "config.json").read_text()) | {"attn_implementation": "attacker/kernel"}
    api.upload_folder(repo_id="someone/kernel-encoder", folder_path=str(tiny_backbone.path))
    api.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json",
                    repo_id="someone/kernel-encoder")
    assert main(["evaluate", "--model", "hf://someone/kernel-encoder", "--task", "verses-retrieval", "--langs", "fr",
                 "--output", str(tmp_path / "out")]) == 2
    assert re.fullmatch(r"adapterxfer: error: hf://someone/kernel-encoder@[0-9a-f]{40} refused: \S+/config\.json: field "
                        r"attn_implementation = 'attacker/kernel' names code on the Hub to load and run .*",
                        error_line(capsys))
    assert not (tmp_path / "out").exists()


# -- errors: one line each, exit 2, nothing half-written --

def error_line(capsys) -> str:
    """The CLI's one-line error: the last line on stderr (after any download progress), no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("adapterxfer: error: "), err
    return err.strip().splitlines()[-1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("env, argv, message", [
    ({"HF_TOKEN": None}, ["push", "{lora}", "lab/new"], "no Hugging Face token; run `hf auth login`"),
    ({"HF_TOKEN": "not-a-token"}, ["push", "{lora}", "lab/new"], "the token was refused (401)"),
    ({"HF_TOKEN": "someone-token"}, ["push", "{lora}", "lab/new"], "the token may not write to lab/new (403)"),
    ({}, ["train", "task=verses-genre", "regime=lora", "init_from=hf://lab/missing"],
     "no repo lab/missing on http://127.0.0.1"),
    ({}, ["train", "task=verses-genre", "regime=lora", "init_from=hf://lab/lora@v9"], "lab/lora has no revision 'v9'"),
    ({}, ["evaluate", "--model", "hf://lab/lora/nowhere", "--task", "verses-xref"],
     "no folder 'nowhere' in hf://lab/lora@"),
    ({}, ["evaluate", "--model", "hf://lab", "--task", "verses-xref"], "'hf://lab' is not a Hub ref"),
    ({}, ["evaluate", "--model", "hf://lab/lora//etc", "--task", "verses-xref"], "'hf://lab/lora//etc' is not a Hub ref"),
    ({"HF_ENDPOINT": "http://127.0.0.1:{port}"}, ["train", "task=verses-genre", "init_from=hf://lab/lora"],
     "the Hugging Face Hub (http://127.0.0.1:{port}) is unreachable, and no copy is in the cache"),
    ({"HF_ENDPOINT": "http://127.0.0.1:{port}"}, ["push", "{lora}", "lab/new"],
     "the Hugging Face Hub (http://127.0.0.1:{port}) is unreachable"),
])
def test_standin_hub_errors_are_one_line(env, argv, message, setups, tiny_backbone, tmp_path, monkeypatch, capsys):
    port = closed_port()
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key)
        elif key == "HF_ENDPOINT":
            point_client_at(monkeypatch, value.format(port=port), tmp_path / "hf-cache")
        else:
            monkeypatch.setenv(key, value)
    argv = [arg.format(lora=setups["folders"]["lora"]) for arg in argv]
    if argv[0] == "train":
        argv += [f"backbone={tiny_backbone.path}", f"output_dir={tmp_path / 'out'}", *STEPS]
    else:
        argv += ["--output", str(tmp_path / "out")] if argv[0] == "evaluate" else []
    assert main(argv) == 2
    assert message.format(port=port) in error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.adapters
def test_standin_a_file_tampered_with_on_the_hub_is_refused(setups, hub, tiny_backbone, tmp_path, capsys):
    sharing.push_artifact(setups["folders"]["madx"], "lab/tampered")
    weights = hub.stored_file("lab/tampered", f"lang_adapters/{FRENCH}/adapter.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size: only the hash tells
    weights.write_bytes(bytes(data))
    code = main(["train", "task=verses-genre", "regime=madx", "init_from=hf://lab/tampered",
                 f"lang_adapters=hf://lab/tampered/lang_adapters/{ENGLISH},hf://lab/tampered/lang_adapters/{FRENCH}",
                 "eval_langs=en,fr", f"backbone={tiny_backbone.path}", f"output_dir={tmp_path / 'out'}", *STEPS])
    err = error_line(capsys)
    assert code == 2
    assert re.search(r"hf://lab/tampered@[0-9a-f]{40} refused: .*file adapter\.safetensors does not match its "
                     r"sha256 in manifest\.json \(corrupt or tampered\)", err), err
    assert not (tmp_path / "out").exists()


def test_standin_study_push_sends_every_intermediate_with_its_card(tiny_backbone, tmp_path, capsys, hub):
    """`adapterxfer study push` after a tiny study (stand-in Hub): one repo per intermediate, each pulled
    back equal to the study's folder; a study not run yet is refused before anything is pushed."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "backbone": str(tiny_backbone.path), "output": str(tmp_path / "study"), "seeds": [3],
        "targets": ["verses-genre"], "intermediates": ["verses-xref"], "regimes": ["lora", "ia3"],
        "phase": {"max_steps": 2, "eval_every": 2, "batch_size": 4, "max_length": 32, "precision": "fp32"},
        "target_phase": {"eval_langs": ["en", "fr"]},
        "contrasts": [{"name": "xref", "run": "lora/verses-xref", "versus": "lora/baseline", "primary": True}],
        "statistics": {"effect": 0.02}}))
    assert main(["study", "push", str(plan), "--prefix", "lab/tiny"]) == 2
    assert "intermediates not current: seed3/lora/verses-xref (to run)" in capsys.readouterr().err
    assert main(["study", "run", str(plan)]) == 0
    capsys.readouterr()
    assert main(["study", "push", str(plan), "--prefix", "lab/tiny"]) == 0
    pushed = dict(line.removeprefix("pushed ").split(": ") for line in capsys.readouterr().out.splitlines()
                  if line.startswith("pushed "))
    assert set(pushed) == {"seed3/lora/verses-xref", "seed3/ia3/verses-xref"}
    for key, ref in pushed.items():
        assert ref.startswith(f"hf://lab/tiny-{key.replace('/', '-')}@")
        assert manifest(sharing.pull(ref))["files"] == manifest(tmp_path / "study" / key)["files"]
