"""The HTTP server: gradio mounted in this app's own FastAPI app, behind its request limits
(RequestLimits, an ASGI middleware in front of everything), with /health beside it.
"""
from __future__ import annotations

import json

import gradio as gr

from ui.request import APP_PARAMS, PAGE_PARAMS

MAX_BODY = 64 * 1024          # bytes of one HTTP request body (a full request is under 10 kB)
SESSIONS_KEPT = 64            # sessions whose state gradio keeps (the app has none worth keeping)
PUBLIC_ENDPOINTS = ("alternatives", "card", "generate", "replace")
ENDPOINT_PARAMS = {  # api_name -> its inputs' names, for messages (default: APP_PARAMS)
    "card": ("text", "title", "form", "tone_marks"), "generate_page": PAGE_PARAMS,
    "alternatives": ("text", "position", "k", "settings"), "replace": ("text", "position", "char", "settings")}
# Arguments added to an endpoint after its first version: a call without them gets these defaults.
OPTIONAL_TAIL = {"generate": {"theme": "", "locked": None, "relax_locked": False}, "generate_page": {"theme": ""}}


class RequestLimits:
    """ASGI middleware, in front of everything: request bodies over `max_body` bytes are refused
    (413) from their Content-Length header before any byte of them is read; a body without a length
    (chunked) is refused (411), so nothing unbounded is ever buffered; the upload routes answer 404
    (this app has no file input, so nothing may store files on the server).

    Calls of the API (`/gradio_api/call|run|api/<name>`, `/gradio_api/queue/join`) are checked
    against `endpoints` (api_name -> (fn_index, input names)): an unknown endpoint is a 404 and too
    few values a 422, each with an "invalid input: ..." message, before gradio sees them."""

    BLOCKED = ("/gradio_api/upload", "/upload")
    CALLS = ("/gradio_api/call/", "/gradio_api/run/", "/gradio_api/api/")

    def __init__(self, app, max_body: int = MAX_BODY, endpoints: dict[str, tuple[int, tuple[str, ...]]] | None = None):
        self.app, self.max_body = app, max_body
        self.endpoints = endpoints or {}
        self.by_index = {index: (name, inputs) for name, (index, inputs) in self.endpoints.items()}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if any(path == b or path.startswith(b + "/") for b in self.BLOCKED):
            return await _refuse(send, 404, "file uploads are disabled: this app has no file input")
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _refuse(send, 400, "invalid Content-Length")
            if int(length) > self.max_body:
                return await _refuse(send, 413, f"request body too large: {int(length)} bytes, at most {self.max_body}")
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            return await _refuse(send, 411, "a request body needs a Content-Length")
        if self.endpoints and scope["method"] == "POST" and (path.startswith(self.CALLS) or path == "/gradio_api/queue/join"):
            body = await _read_body(receive)
            problem = self._check_call(path, body)
            if isinstance(problem, bytes):  # completed with the defaults of newer optional arguments
                body = problem
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                         + [(b"content-length", str(len(body)).encode())]}
            elif problem:
                return await _refuse(send, *problem)
            receive = _replay(body, receive)
        return await self.app(scope, receive, send)

    def _check_call(self, path: str, body: bytes) -> tuple[int, str] | bytes | None:
        """(status, message) when the call names no endpoint or has too few values; the body completed
        when only arguments added later (OPTIONAL_TAIL) are missing, so older clients keep working; else None."""
        try:
            payload = json.loads(body) if body else {}
        except (ValueError, RecursionError):
            return 422, "invalid input: body: not valid JSON"
        if not isinstance(payload, dict):
            return 422, "invalid input: body: a JSON object {\"data\": [...]} is expected"
        if path == "/gradio_api/queue/join" or (path.endswith("/predict") and "fn_index" in payload):  # the page
            index = payload.get("fn_index")
            if isinstance(index, bool) or not isinstance(index, int) or index not in self.by_index:
                return 404, f"invalid input: fn_index: no such endpoint ({str(index)[:40]})"
            name, inputs = self.by_index[index]
        else:
            name = path.rstrip("/").split("/")[3]
            if name not in self.endpoints:
                public = ", ".join("/" + n for n in sorted(self.endpoints) if n in PUBLIC_ENDPOINTS) or "none"
                return 404, f"invalid input: endpoint: no endpoint /{name[:60]} (this API has {public})"
            inputs = self.endpoints[name][1]
        data = payload.get("data")
        if isinstance(data, list) and len(data) < len(inputs):
            tail = OPTIONAL_TAIL.get(name, {})
            if all(n in tail for n in inputs[len(data):]):
                return json.dumps({**payload, "data": data + [tail[n] for n in inputs[len(data):]]}).encode()
            needed = [n for n in inputs if n not in tail]
            later = f", then optionally {', '.join(tail)}" if tail else ""
            return 422, (f"invalid input: data: /{name} takes {len(needed)} values in this order "
                         f"({', '.join(needed)}){later}, got {len(data)}; missing: {', '.join(needed[len(data):])}")
        return None


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    """The whole request body (its size already checked against MAX_BODY by its Content-Length)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive callable that gives the body read already, then whatever the connection sends next."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def api_endpoints(demo: gr.Blocks) -> dict[str, tuple[int, tuple[str, ...]]]:
    """The Blocks' named events: api_name -> (fn_index, names of its inputs)."""
    out = {}
    for dep in demo.get_config_file()["dependencies"]:
        if dep.get("api_name"):
            n = len(dep.get("inputs", []))
            known = ENDPOINT_PARAMS.get(dep["api_name"], APP_PARAMS)
            names = known if n == len(known) else tuple(f"value {i + 1}" for i in range(n))
            out[dep["api_name"]] = (dep["id"], names)
    return out


def server_app(demo: gr.Blocks, generator) -> "fastapi.FastAPI":  # noqa: F821 - imported below
    """This app's ASGI app: /health (the generator's state: 200 when ready, else 503) and gradio at /."""
    import fastapi
    from fastapi.responses import JSONResponse

    api = fastapi.FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/health")
    def health() -> JSONResponse:
        state = generator.status() if hasattr(generator, "status") else {"state": "ready"}
        return JSONResponse(state, status_code=200 if state["state"] == "ready" else 503)

    api.add_middleware(RequestLimits, endpoints=api_endpoints(demo))
    # Every raw API call is a new session, and gradio keeps the state of the last N sessions (launch's
    # state_session_capacity, 10,000 by default: ~100 kB each here). This app keeps no session state.
    demo.state_session_capacity = SESSIONS_KEPT
    return gr.mount_gradio_app(api, demo, path="", footer_links=["api"], theme=gr.themes.Soft(),
                               max_file_size=1, show_error=False, mcp_server=False)
