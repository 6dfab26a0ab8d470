"""A stand-in Hugging Face Hub: a small Starlette app served over real HTTP on 127.0.0.1.

It implements just the routes that `push_to_hub`, `HfApi.upload_folder` and `from_pretrained(repo_id)`
use with huggingface_hub 2.4 (repo creation, pre-upload in "regular" mode so no LFS/Xet, NDJSON
commits, and `resolve` downloads), and records every request and commit so tests can check that the
files really travelled over HTTP.

huggingface_hub reads HF_ENDPOINT/HF_HOME when it is imported, so code that talks to this Hub runs in
a subprocess whose environment points at it:

    with running_hub() as hub:                      # or the `fake_hub` fixture
        run_python("...push_to_hub('me/tiny')...", hub.env(tmp_path / "hf_home"))
        assert hub.commits[0]["files"].keys() >= {"config.json", "model.safetensors"}

Use the fixture in another test module with `from fake_hub import fake_hub  # noqa: F401`.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REPO_ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_fake_token_for_tests"


def _git_blob_sha(content: bytes) -> str:
    """The git object id the real Hub uses as the ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """In-memory model repos behind an HTTP server; `endpoint` is what HF_ENDPOINT should be."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}        # repo_id -> {"files": {path: bytes}, "commits": [oid, ...]}
        self.commits: list[dict] = []           # {"repo_id", "revision", "oid", "summary", "files": {path: bytes}}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.unhandled: list[tuple[str, str]] = []
        self.endpoint = ""
        self.app = Starlette(routes=[
            Route("/api/repos/create", self._create_repo, methods=["POST"]),
            Route("/api/agent-harnesses", self._harnesses, methods=["GET"]),
            Route("/api/validate-yaml", self._validate_yaml, methods=["POST"]),
            Route("/api/models/{ns}/{name}/preupload/{rev:path}", self._preupload, methods=["POST"]),
            Route("/api/models/{ns}/{name}/commit/{rev:path}", self._commit, methods=["POST"]),
            Route("/{ns}/{name}/resolve/{rev}/{path:path}", self._resolve, methods=["GET", "HEAD"]),
            Route("/{rest:path}", self._unhandled, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        ], middleware=[Middleware(_Recorder, hub=self)])

    # --- routes --------------------------------------------------------------------------
    async def _create_repo(self, request: Request) -> Response:
        body = await request.json()
        if body.get("type", "model") not in (None, "model"):
            return JSONResponse({"error": "only model repos here"}, status_code=400)
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if "/" not in repo_id:
            return JSONResponse({"error": "use a namespaced repo id"}, status_code=400)
        self.repos.setdefault(repo_id, {"files": {}, "commits": []})
        return JSONResponse({"url": f"{self.endpoint}/{repo_id}", "name": repo_id})

    async def _harnesses(self, request: Request) -> Response:
        # Exactly this shape: huggingface_hub caches the answer under HF_HOME.
        return JSONResponse({"standardEnvVars": [], "harnesses": {}})

    async def _validate_yaml(self, request: Request) -> Response:
        return JSONResponse({"errors": [], "warnings": []})

    async def _preupload(self, request: Request) -> Response:
        if self._repo(request) is None:
            return _not_found("RepoNotFound", "repository not found")
        body = await request.json()
        return JSONResponse({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in body.get("files", [])]})

    async def _commit(self, request: Request) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found("RepoNotFound", "repository not found")
        header, files, deleted = {}, {}, []
        for line in (await request.body()).decode("utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item.get("value", {})
            if item.get("key") == "header":
                header = value
            elif item.get("key") == "file":
                if value.get("encoding", "base64") != "base64":
                    return JSONResponse({"error": f"unsupported encoding {value.get('encoding')}"}, status_code=400)
                files[value["path"]] = base64.b64decode(value["content"])
            elif item.get("key") == "deletedFile":
                deleted.append(value["path"])
            else:
                return JSONResponse({"error": f"unsupported commit operation {item.get('key')!r}"}, status_code=400)
        for path in deleted:
            repo["files"].pop(path, None)
        repo["files"].update(files)
        repo_id = f"{request.path_params['ns']}/{request.path_params['name']}"
        oid = hashlib.sha1(f"{repo_id}:{len(self.commits)}:{sorted(repo['files'])}".encode()).hexdigest()
        repo["commits"].append(oid)
        self.commits.append({"repo_id": repo_id, "revision": request.path_params["rev"], "oid": oid,
                             "summary": header.get("summary", ""), "files": files})
        return JSONResponse({"commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}", "commitOid": oid,
                             "pullRequestUrl": None})

    async def _resolve(self, request: Request) -> Response:
        repo = self._repo(request)
        if repo is None:
            return _not_found("RepoNotFound", "repository not found")
        rev = request.path_params["rev"]
        if not repo["commits"] or (rev != "main" and rev not in repo["commits"]):
            return _not_found("RevisionNotFound", f"revision {rev} not found")
        content = repo["files"].get(request.path_params["path"])
        if content is None:
            return _not_found("EntryNotFound", f"{request.path_params['path']} does not exist")
        headers = {"ETag": f'"{_git_blob_sha(content)}"', "X-Repo-Commit": repo["commits"][-1],
                   "Content-Length": str(len(content)), "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return Response(b"", headers=headers, media_type="application/octet-stream")
        return Response(content, headers=headers, media_type="application/octet-stream")

    async def _unhandled(self, request: Request) -> Response:
        self.unhandled.append((request.method, request.url.path))
        return _not_found("NotFound", f"fake hub has no route for {request.method} {request.url.path}")

    def _repo(self, request: Request) -> dict | None:
        return self.repos.get(f"{request.path_params['ns']}/{request.path_params['name']}")

    # --- for tests -----------------------------------------------------------------------
    def env(self, hf_home: str | Path) -> dict[str, str]:
        """A full environment for a subprocess that talks to this Hub only, with its own HF_HOME."""
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith("HF_") or k.startswith("HUGGINGFACE_") or k.lower().endswith("_proxy"))}
        hf_home = Path(hf_home)
        env.update(HF_ENDPOINT=self.endpoint, HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"),
                   HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_UPDATE_CHECK="1",
                   NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),  # small test models: no oversubscription
                   PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        return env

    def files(self, repo_id: str) -> dict[str, bytes]:
        """Current files of a repo (empty when it does not exist)."""
        return self.repos.get(repo_id, {}).get("files", {})


class _Recorder:
    """ASGI middleware that logs method, path and Authorization header of each request."""

    def __init__(self, app, hub: FakeHub):
        self.app, self.hub = app, hub

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization")
            self.hub.requests.append((scope["method"], scope["path"], auth.decode() if auth else None))
        await self.app(scope, receive, send)


def _not_found(code: str, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=404, headers={"X-Error-Code": code, "X-Error-Message": message})


@contextlib.contextmanager
def running_hub():
    """Serve a fresh FakeHub on a free local port (background thread) for the duration of the block."""
    hub = FakeHub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    hub.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(hub.app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-hub")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("fake hub server did not start")
        time.sleep(0.02)
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def fake_hub():
    """A running FakeHub; pass `fake_hub.env(tmp_path / "hf")` to the subprocess that pushes or loads."""
    with running_hub() as hub:
        yield hub


def run_python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (so huggingface_hub reads `env`), failing with its stderr."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
