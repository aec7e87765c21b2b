"""A stand-in for the Hugging Face Hub's HTTP API, for tests: the Hub cannot be reached here.

It serves, on 127.0.0.1 at an ephemeral port, just what the real ``huggingface_hub`` client calls
to push and pull a model repo (read from huggingface_hub 0.36's and 2.4's hf_api.py, _commit_api.py,
file_download.py, _snapshot_download.py and utils/_http.py):

- ``POST /api/repos/create``                          create a repo (409 when it exists), private or public
- ``POST /api/validate-yaml``                         the README metadata check before a commit
- ``POST /api/models/{repo}/branch/{branch}``         create a branch from main
- ``POST /api/models/{repo}/preupload/{rev}``         every file is "regular": its content comes
                                                      inline (base64) in the commit, no LFS, no xet
- ``POST /api/models/{repo}/commit/{rev}``            the NDJSON commit
- ``GET  /api/models/{repo}[/revision/{rev}]``        repo info: sha and siblings
- ``GET  /api/models/{repo}/tree/{rev}``              the files of a commit (huggingface_hub 2 lists them so)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``           a file, with X-Repo-Commit, ETag, Content-Length

Writes need ``Authorization: Bearer <token>`` of the repo's owner (401 otherwise); a private repo
reads like a missing one without it. Errors carry the ``X-Error-Code`` the client turns into
RepositoryNotFoundError, RevisionNotFoundError or EntryNotFoundError. Every commit's files are
stored under ``root/<owner>/<name>/<commit>/`` so a test can tamper with one (``stored_file``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class _Repo:
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, list[str]] = field(default_factory=dict)  # commit sha -> file paths


class HubStandIn:
    """The stand-in server; ``endpoint`` is its URL, ``tokens`` maps a token to its user name."""

    def __init__(self, root: Path, tokens: dict[str, str]):
        self.root, self.tokens = Path(root), tokens
        self.repos: dict[str, _Repo] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stored_file(self, repo_id: str, path: str, revision: str = "main") -> Path:
        """The stored copy of ``path`` at ``revision``: writing to it tampers with the 'Hub' copy."""
        repo = self.repos[repo_id]
        return self.root / repo_id / repo.branches.get(revision, revision) / path

    # -- repository operations, called by the handler under self.lock --

    def create(self, repo_id: str, owner: str, private: bool) -> None:
        self.repos[repo_id] = _Repo(owner=owner, private=private)
        self.commit(repo_id, "main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                    parent=None)

    def commit(self, repo_id: str, branch: str, files: dict[str, bytes], parent: str | None) -> str:
        repo = self.repos[repo_id]
        paths = sorted(set(repo.commits.get(parent, [])) | set(files))
        digest = hashlib.sha1(f"{repo_id}\0{parent}\0{len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path])
        sha = digest.hexdigest()
        folder = self.root / repo_id / sha
        if parent:
            shutil.copytree(self.root / repo_id / parent, folder)
        for path, content in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(content)
        repo.commits[sha] = paths
        repo.branches[branch] = sha
        return sha

    def commit_of(self, repo: _Repo, revision: str) -> str | None:
        return repo.branches.get(revision) or (revision if revision in repo.commits else None)


class _Refusal(Exception):
    """An HTTP error answer: status, X-Error-Code, message."""

    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _handler(hub: HubStandIn):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            self._answer(self._get, body=True)

        def do_HEAD(self):
            self._answer(self._get, body=False)

        def do_POST(self):
            self._answer(self._post, body=True)

        def _answer(self, route, body: bool):
            try:
                with hub.lock:
                    status, headers, payload = route()
            except _Refusal as refusal:
                status, payload = refusal.status, json.dumps({"error": refusal.message}).encode()
                headers = {"Content-Type": "application/json", "X-Error-Message": refusal.message}
                if refusal.code:
                    headers["X-Error-Code"] = refusal.code
            self.send_response(status)
            for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(payload)

        # -- helpers --

        def _parts(self) -> list[str]:
            return [unquote(part) for part in urlsplit(self.path).path.strip("/").split("/")]

        def _user(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if not auth:
                return None
            user = hub.tokens.get(auth.removeprefix("Bearer ").strip())
            if user is None:
                raise _Refusal(401, None, "Invalid credentials in Authorization header")
            return user

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _repo(self, repo_id: str, write: bool = False) -> _Repo:
            user = self._user()
            if write and user is None:
                raise _Refusal(401, None, "Invalid username or password.")
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and user != repo.owner):
                raise _Refusal(404, "RepoNotFound", "Repository not found")
            if write and user != repo.owner:
                raise _Refusal(403, None, "You don't have the rights to write to this repo")
            return repo

        def _revision(self, repo: _Repo, revision: str) -> str:
            sha = hub.commit_of(repo, revision)
            if sha is None:
                raise _Refusal(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return sha

        @staticmethod
        def _json(data: dict | list, status: int = 200):
            return status, {"Content-Type": "application/json"}, json.dumps(data).encode()

        # -- routes --

        def _get(self):
            parts = self._parts()
            if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "tree":
                repo_id = "/".join(parts[2:4])
                repo = self._repo(repo_id)
                sha = self._revision(repo, parts[5])
                contents = {path: (hub.root / repo_id / sha / path).read_bytes() for path in repo.commits[sha]}
                return self._json([{"type": "file", "path": path, "size": len(content),
                                    "oid": hashlib.sha256(content).hexdigest()} for path, content in contents.items()])
            if parts[:2] == ["api", "models"] and len(parts) in (4, 6):
                repo_id = "/".join(parts[2:4])
                repo = self._repo(repo_id)
                sha = self._revision(repo, parts[5] if len(parts) == 6 else "main")
                return self._json({"id": repo_id, "sha": sha, "private": repo.private,
                                   "siblings": [{"rfilename": path} for path in repo.commits[sha]]})
            if len(parts) >= 5 and parts[2] == "resolve":
                repo_id, path = "/".join(parts[:2]), "/".join(parts[4:])
                sha = self._revision(self._repo(repo_id), parts[3])
                file = hub.root / repo_id / sha / path
                if not file.is_file():
                    raise _Refusal(404, "EntryNotFound", f"{path} does not exist at {sha}")
                content = file.read_bytes()
                return 200, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                             "Content-Type": "application/octet-stream"}, content
            raise _Refusal(404, None, f"no route for GET {self.path}")

        def _post(self):
            parts = self._parts()
            if parts == ["api", "repos", "create"]:
                return self._create(json.loads(self._body()))
            if parts == ["api", "validate-yaml"]:
                return self._validate_yaml(json.loads(self._body()))
            if parts[:2] == ["api", "models"] and len(parts) == 6:
                repo_id, action, revision = "/".join(parts[2:4]), parts[4], parts[5]
                repo = self._repo(repo_id, write=True)
                if action == "branch":
                    if revision not in repo.branches:
                        repo.branches[revision] = repo.branches["main"]
                    return self._json({})
                sha = self._revision(repo, revision)
                if action == "preupload":
                    files = json.loads(self._body())["files"]
                    return self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                 for f in files]})
                if action == "commit":
                    return self._commit(repo_id, revision, sha)
            raise _Refusal(404, None, f"no route for POST {self.path}")

        def _create(self, request: dict):
            user = self._user()
            if user is None:
                raise _Refusal(401, None, "Invalid username or password.")
            owner = request.get("organization") or user
            if owner != user:
                raise _Refusal(403, None, f"You don't have the rights to create a model under {owner}")
            repo_id = f"{owner}/{request['name']}"
            if repo_id in hub.repos:
                raise _Refusal(409, None, "You already created this model repo")
            private = request.get("private") or request.get("visibility") == "private"  # huggingface_hub 0.36 / 2
            hub.create(repo_id, owner, bool(private))
            return self._json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})

        def _validate_yaml(self, request: dict):
            text = request["content"]
            if text.startswith("---"):
                try:
                    yaml.safe_load(text.split("---")[1])
                except yaml.YAMLError as err:
                    return self._json({"errors": [{"message": str(err)}]}, status=400)
            return self._json({"errors": [], "warnings": []})

        def _commit(self, repo_id: str, branch: str, parent: str):
            if branch not in hub.repos[repo_id].branches:
                raise _Refusal(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            files = {}
            for line in self._body().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    raise _Refusal(400, None, f"the stand-in takes regular files only, not {item['key']}")
            sha = hub.commit(repo_id, branch, files, parent)
            return self._json({"commitUrl": f"{hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha})

    return Handler
