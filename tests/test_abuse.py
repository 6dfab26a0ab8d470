"""Hold under abuse: `python app.py` (tiny model) on 127.0.0.1 against kills of its decoder, huge
bodies, uploads, malformed calls, a flood of heavy requests and a short soak. Counts and times are
bounded (two shared cores); benchmarks/abuse.py measures the same at full size."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import abuse  # noqa: E402
from abuse import App, big_bodies, body, call, kill_sequence  # noqa: E402


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    a = App(str(tiny_model_dir), tmp_path_factory.mktemp("abuse") / "server.log").wait_ready(300)
    yield a
    a.close()


def post(url: str, data: bytes, ctype: str = "application/json") -> tuple[int, dict | None]:
    req = urllib.request.Request(url, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def raw(url: str, index: int, value: str) -> tuple[str, dict | None]:
    data = json.loads(body())["data"]
    items = [json.dumps(v, ensure_ascii=False) for v in data]
    items[index] = value
    return call(url, ('{"data": [' + ", ".join(items) + "]}").encode())


def test_health_says_ready(app):
    status, state = app.health()
    assert status == 200 and state["state"] == "ready" and state["restarts"] == 0


def test_bodies_over_the_limit_are_refused_unread(app):
    result = big_bodies(app, count=3, size=50 << 20)
    assert all("413" in s for s in result["statuses"]), result
    assert result["max_s"] < 1.0 and result["rss_growth_mb"] < 20, result
    status, payload = post(app.url + "gradio_api/call/generate", b"[" + b" " * (70 * 1024) + b"]")
    assert status == 413 and "too large" in payload["error"]


def test_uploads_are_disabled(app):
    status, payload = post(app.url + "gradio_api/upload", b"--b\r\n\r\n--b--\r\n", "multipart/form-data; boundary=b")
    assert status == 404 and "uploads are disabled" in payload["error"]


@pytest.mark.parametrize("index,value,words", [
    (7, "1" + "0" * 400, "invalid input: temperature must be"),
    (9, "-" + "9" * 400, "invalid input: top_p must be"),
    (8, "9" * 400, "invalid input: top_k must be"),
    (0, '"\\ud800"', "invalid input: prompt has an invalid character"),
    (10, '"春\\udfff"', "invalid input: style has an invalid character"),
    (2, '"<img src=x onerror=alert(1)>"', "invalid input: form must be one of"),
])
def test_bad_values_are_named(app, index, value, words):
    event, payload = raw(app.url, index, value)
    assert event == "error" and payload["error"].startswith(words), payload
    assert "<img" not in payload["error"]  # markup echoed escaped
    assert len(payload["error"]) < 400


def test_malformed_calls_are_named(app):
    status, payload = post(app.url + "gradio_api/call/generate", b'{"data": ["", ""]}')
    assert status == 422 and payload["error"].startswith("invalid input: data: /generate takes 14 values")
    assert "missing: form" in payload["error"]
    status, payload = post(app.url + "gradio_api/call/nope", b'{"data": []}')
    assert status == 404 and payload["error"] == ("invalid input: endpoint: no endpoint /nope "
                                                  "(this API has /alternatives, /card, /generate, /replace)")
    status, payload = post(app.url + "gradio_api/queue/join", b'{"data": [], "fn_index": 99, "session_hash": "x"}')
    assert status == 404 and "fn_index" in payload["error"]


def test_a_request_over_the_cost_cap_is_refused_with_the_reason(app):
    event, payload = call(app.url, body(num_candidates=8, style="大漠孤烟直长河落日圆" * 6))
    assert event == "error" and "request is too big" in payload["error"] and "candidates" in payload["error"]
    event, _ = call(app.url, body(num_candidates=8, temperature=2.0, top_k=0, top_p=1.0))
    assert event == "complete"  # the worst case within the cap


def test_a_small_request_is_fast_while_heavy_ones_flood(app):
    result = abuse.flood(app, heavy=12, small=3)
    # 2 s on an idle box (benchmarks/abuse.py: 32 heavy); on a busy one, a small fraction of a heavy request's time
    assert result["small_max_s"] < max(2.0, 0.2 * result["heavy_p50_s"]), result


def test_short_soak_keeps_memory_flat(app):
    for _ in range(100):  # warm-up
        assert call(app.url, body(form="五绝", seed=1))[0] == "complete"
    before = app.rss_mb()
    result = abuse.soak(app, total=600, threads=4, every=300)
    assert result["rss_mb"][-1] - before < 10, result


def test_two_quick_kills_and_the_service_comes_back(app):
    result = kill_sequence(app, second_after=1.0)
    assert result["second_kill"] and result["back_after_s"] < 20, result  # 10 s target on an idle box
    status, state = app.health()
    assert status == 200 and state["state"] == "ready" and state["restarts"] == 2
    log = app.tail(100_000)
    assert log.count("the generator process exited") == 2  # one line per event, not per request


def test_requests_during_a_restart_wait_for_the_new_decoder(app):
    pid = app.decoder_pid()
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    event, payload = call(app.url, body(form="五绝", seed=3))
    waited = time.monotonic() - t0
    if event == "error":  # only when the new decoder took longer than the wait allowed (a busy box)
        assert "restarting, ready in ~" in payload["error"] and waited >= 9, (payload, waited)
    else:
        assert event == "complete", payload  # waited for the new decoder instead of failing at once
    assert waited < 30


def test_no_tracebacks_in_the_log(app):
    assert "Traceback" not in app.tail(1_000_000)


# ---------------------------------------------------------------------------------------------
# load(): every path named; damaged optional files degrade


def test_load_errors_name_the_path(tmp_path, monkeypatch):
    from poetry_model.generation import load
    from poetry_model.model import ModelLoadError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "a_file.txt").write_text("x")
    cases = {"a_file.txt": "is a file, not a model folder", str(tmp_path / "a_file.txt"): "is a file",
             "/no/such/model": "model folder not found", "./missing": "model folder not found",
             ".": "no config.json", "nobody-zz/none-zz": "Hub repo could not be loaded"}
    for path, words in cases.items():
        with pytest.raises(ModelLoadError) as info:
            load(path, device="cpu", corpus=None)
        message = str(info.value)
        assert words in message and (path.lstrip("./") in message or str(tmp_path) in message), message


@pytest.mark.parametrize("damage", ["truncated", "object-array"])
def test_a_damaged_line_index_degrades_with_a_warning(tiny_model_dir, tmp_path, damage):
    import shutil

    import numpy as np

    from poetry_model.generation import load

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    lines = model / "corpus_lines.npy"
    if damage == "truncated":
        lines.write_bytes(lines.read_bytes()[:100] if lines.exists() else b"\x93NUMPY")
    else:
        np.save(lines, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match="corpus_lines.npy"):
        poet = load(model, device="cpu", corpus=None)
    assert poet.generate(form="五绝", seed=1)
