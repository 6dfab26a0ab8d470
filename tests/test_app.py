"""The Gradio app (app.py) against a real server: `python app.py` in a subprocess, driven by gradio_client.

Each control changes the result as promised, 50 concurrent requests are all answered correctly,
more than 30 kinds of bad input each get a clear message while the server keeps serving, and the
HTML rendering escapes everything. The server runs the tiny random model of conftest.py, which
writes gibberish but obeys every hard constraint (forms, acrostics, rhyme and tone masks).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180  # seconds for `python app.py` to answer (imports are slow on a busy 2-core box)
FORM_SHAPES = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}
ENDS = "，。？！；："


# ---------------------------------------------------------------------------------------------
# A real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT")}
    env.update(GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", PYTHONUNBUFFERED="1", **extra)
    return env


class Server:
    """`python app.py ...` as a subprocess, its output in a log file; stopped by `close()`."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path):
        self.url, self.log = f"http://127.0.0.1:{port}/", log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), *args], cwd=REPO, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout: float = START_TIMEOUT) -> "Server":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.close()
        raise RuntimeError(f"app.py did not answer within {timeout} s:\n{self.tail()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._out.close()


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """Started the Space way: model, host and port from MODEL_ID / GRADIO_SERVER_* (no flags)."""
    port = free_port()
    env = server_env(MODEL_ID=str(tiny_model_dir), GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    srv = Server([], env, port, tmp_path_factory.mktemp("app") / "server.log").wait_ready()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, download_files=False)


def generate(client, **kw) -> dict:
    return client.predict(api_name="/generate", **kw)


def poem(client, **kw) -> dict:
    return generate(client, **kw)["poems"][0]


def heads(p: dict) -> str:
    return "".join(line[0] for line in p["lines"])


def body(line: str) -> str:
    return line.rstrip(ENDS)


def raw_call(url: str, data: str, timeout: float = 60) -> tuple[str, dict | None]:
    """POST a raw JSON body to /gradio_api/call/generate (for what gradio_client cannot send, like NaN);
    returns (event, payload) of the result stream, or ("http <code>", None)."""
    req = urllib.request.Request(url + "gradio_api/call/generate", data=data.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            event_id = json.loads(r.read())["event_id"]
    except urllib.error.HTTPError as exc:
        return f"http {exc.code}", None
    with urllib.request.urlopen(f"{url}gradio_api/call/generate/{event_id}", timeout=timeout) as r:
        text = r.read().decode()
    event = payload = None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event in ("complete", "error"):
            payload = json.loads(line.split(":", 1)[1])
            break
    return event, payload


# ---------------------------------------------------------------------------------------------
# The endpoint


def test_generate_endpoint_is_named_and_documented(client):
    info = client.view_api(return_format="dict", print_info=False)
    assert "/generate" in info["named_endpoints"]
    names = [p["parameter_name"] for p in info["named_endpoints"]["/generate"]["parameters"]]
    assert names == ["prompt", "acrostic", "form", "rhyme", "rhyme_strength", "tones", "tone_strength",
                     "temperature", "top_k", "top_p", "style", "num_candidates", "seed", "script", "theme",
                     "locked", "relax_locked"]


def test_result_is_structured_json(client):
    result = generate(client, acrostic="春夏秋冬", form="七绝", seed=7)
    assert set(result) >= {"poems", "request", "settings", "elapsed_ms"}
    p = result["poems"][0]
    assert set(p) >= {"text", "lines", "score", "score_parts", "log_prob", "prosody", "copy", "seed", "settings"}
    assert "".join(p["lines"]) == p["text"] and p["seed"] == 7 and result["request"]["seed"] == 7
    chars = p["prosody"]["chars"]
    assert "".join(c["char"] for c in chars) == "".join(body(line) for line in p["lines"])
    assert all({"tones", "rhyme", "violation"} <= set(c) for c in chars)
    assert {"nearest", "longest_span", "copied_lines"} <= set(p["copy"])
    json.dumps(result)  # plain JSON all the way down


# ---------------------------------------------------------------------------------------------
# Every control does what it says


def test_prompt_is_continued(client):
    p = poem(client, prompt="春风又绿", seed=1)
    assert p["text"].startswith("春风又绿") and len(p["text"]) > len("春风又绿")


@pytest.mark.parametrize("form", list(FORM_SHAPES))
def test_form_and_acrostic(client, form):
    n_lines, n_chars = FORM_SHAPES[form]
    acrostic = "春夏秋冬江山风月"[:n_lines]
    p = poem(client, acrostic=acrostic, form=form, seed=3)
    assert len(p["lines"]) == n_lines and heads(p) == acrostic
    assert all(len(body(line)) == n_chars for line in p["lines"]), p["lines"]
    assert p["prosody"]["form"] == form


def test_free_verse_acrostic_sets_the_lines(client):
    p = poem(client, acrostic="长安月", form="自由", seed=11)
    assert heads(p) == "长安月" and len(p["lines"]) == 3 and p["form"] == "free"


def test_rhyme_switch_and_strength(client):
    on = [poem(client, form="五律", seed=s) for s in (1, 2, 3)]
    assert all(p["prosody"]["rhymes"] for p in on)
    off = [poem(client, form="五律", seed=s, rhyme=False) for s in (1, 2, 3)]
    weak = [poem(client, form="五律", seed=s, rhyme_strength=0.0) for s in (1, 2, 3)]
    assert not all(p["prosody"]["rhymes"] for p in off) and not all(p["prosody"]["rhymes"] for p in weak)
    assert off[0]["settings"]["rhyme"] is False and weak[0]["settings"]["rhyme_strength"] == 0.0


def test_tone_switch_and_strength(client):
    on = [poem(client, form="七绝", seed=s) for s in (1, 2)]
    assert all(p["prosody"]["tone_score"] == 1.0 and not p["prosody"]["violations"] for p in on)
    off = [poem(client, form="七绝", seed=s, tones=False) for s in (1, 2)]
    weak = [poem(client, form="七绝", seed=s, tone_strength=0.0) for s in (1, 2)]
    assert min(p["prosody"]["tone_score"] for p in off) < 1.0
    assert min(p["prosody"]["tone_score"] for p in weak) < 1.0


def test_temperature_zero_top_k_one_and_tiny_top_p_are_greedy(client):
    # The test model is nearly flat: over its whole vocabulary a 1% nucleus holds dozens of characters,
    # so tiny top_p is greedy within a top-k shortlist (the library's default has none).
    for kw in (dict(temperature=0.0), dict(top_k=1), dict(top_p=0.01, top_k=50)):
        assert poem(client, seed=1, **kw)["text"] == poem(client, seed=2, **kw)["text"], kw
    assert poem(client, seed=1, temperature=1.0)["text"] != poem(client, seed=2, temperature=1.0)["text"]
    assert poem(client, seed=1, top_k=0)["settings"]["top_k"] is None  # 0 = no limit


def test_style_steers_without_being_printed(client):
    plain = poem(client, form="七绝", seed=4)
    styled = poem(client, form="七绝", seed=4, style="大漠孤烟直，长河落日圆。")
    assert styled["text"] != plain["text"] and not styled["text"].startswith("大漠")
    assert styled["settings"]["style"] == "大漠孤烟直，长河落日圆。"


def test_candidates_are_ranked(client):
    result = generate(client, form="五绝", num_candidates=4, seed=3)
    poems = result["poems"]
    assert 1 <= len(poems) <= 4 and [p["rank"] for p in poems] == list(range(1, len(poems) + 1))
    assert [p["score"] for p in poems] == sorted((p["score"] for p in poems), reverse=True)
    assert len({p["text"] for p in poems}) == len(poems) and len(poems) >= 2


def test_seed_reproduces_and_random_seed_is_reported(client):
    assert poem(client, seed=5)["text"] == poem(client, seed=5)["text"]
    assert poem(client, seed=5)["text"] != poem(client, seed=6)["text"]
    drawn = generate(client, seed=-1)
    seed = drawn["request"]["seed"]
    assert isinstance(seed, int) and seed >= 0 and drawn["poems"][0]["seed"] == seed
    assert poem(client, seed=seed)["text"] == drawn["poems"][0]["text"]
    assert isinstance(generate(client, seed=None)["request"]["seed"], int)


def test_script_switch(client):
    from poetry_model.vocab import to_script

    simp = poem(client, acrostic="春夏秋冬", seed=1, script="simplified")
    trad = poem(client, acrostic="春夏秋冬", seed=1, script="traditional")
    assert trad["script"] == "traditional" and simp["script"] == "simplified"
    assert trad["text"] == to_script(simp["text"], "traditional") and trad["text"] != simp["text"]
    assert poem(client, acrostic="東南西北", seed=1)["script"] == "traditional"  # auto follows the input


def test_page_endpoint_renders_annotated_html(client):
    values = ["春风", "春夏秋冬", "七绝", True, 1.0, True, 1.0, 0.8, 50, 0.95, "", 2, 9, "auto"]
    page, result = client.predict(*values, api_name="/generate_page")
    assert page.count("class='poem-card'") == len(result["poems"])
    for p in result["poems"]:
        for line in p["lines"]:
            assert f"data-text='{line}'" in page
    assert page.count("<ruby") == sum(len(p["prosody"]["chars"]) for p in result["poems"])
    assert "seed=<b>9</b>" in page and "<script" not in page.lower()


# ---------------------------------------------------------------------------------------------
# Bad input: a message each, and the server keeps serving

LONG = "春" * 101
BAD_INPUTS = [  # (id, kwargs, words the message must contain)
    ("prompt-latin", dict(prompt="hello"), "outside the model's vocabulary"),
    ("prompt-script-tag", dict(prompt="<script>alert(1)</script>"), "outside the model's vocabulary"),
    ("prompt-img-tag", dict(prompt='<img src=x onerror="alert(1)">'), "outside the model's vocabulary"),
    ("prompt-emoji", dict(prompt="明月🌙"), "outside the model's vocabulary"),
    ("prompt-control-char", dict(prompt="明月\x00光"), "outside the model's vocabulary"),
    ("prompt-too-long", dict(prompt=LONG), "prompt is too long"),
    ("prompt-huge", dict(prompt="春" * 5_000), "prompt is too long"),
    ("prompt-number", dict(prompt=123), "prompt must be a string"),
    ("prompt-list", dict(prompt=["春"]), "prompt must be a string"),
    ("prompt-breaks-form", dict(prompt="床前明月光，", form="七绝"), "does not fit"),
    ("acrostic-latin", dict(acrostic="abcd"), "acrostic has"),
    ("acrostic-too-long", dict(acrostic="春" * 17), "acrostic is too long"),
    ("acrostic-only-punctuation", dict(acrostic="，。！"), "no characters"),
    ("acrostic-longer-than-form", dict(acrostic="春夏秋冬雪", form="五绝"), "only 4 lines"),
    ("acrostic-prompt-mismatch", dict(prompt="明月", acrostic="春夏秋冬"), "acrostic asks for"),
    ("form-unknown", dict(form="haiku"), "form must be one of"),
    ("form-number", dict(form=5), "form must be a string"),
    ("rhyme-string", dict(rhyme="yes"), "rhyme must be true or false"),
    ("tones-number", dict(tones=2), "tones must be true or false"),
    ("rhyme-strength-high", dict(rhyme_strength=1.5), "rhyme_strength must be"),
    ("rhyme-strength-negative", dict(rhyme_strength=-0.1), "rhyme_strength must be"),
    ("tone-strength-string", dict(tone_strength="high"), "tone_strength must be"),
    ("temperature-negative", dict(temperature=-1.0), "temperature must be"),
    ("temperature-too-high", dict(temperature=50.0), "temperature must be"),
    ("top-k-negative", dict(top_k=-5), "top_k must be"),
    ("top-k-fraction", dict(top_k=2.5), "top_k must be"),
    ("top-k-huge", dict(top_k=10**12), "top_k must be"),
    ("top-p-zero", dict(top_p=0.0), "top_p must be"),
    ("top-p-high", dict(top_p=1.5), "top_p must be"),
    ("style-latin", dict(style="<b>bold</b>"), "style has"),
    ("style-too-long", dict(style="春" * 65), "style is too long"),
    ("candidates-zero", dict(num_candidates=0), "num_candidates must be"),
    ("candidates-too-many", dict(num_candidates=1000), "num_candidates must be"),
    ("candidates-fraction", dict(num_candidates=1.5), "num_candidates must be"),
    ("candidates-string", dict(num_candidates="3"), "num_candidates must be"),
    ("seed-negative", dict(seed=-2), "seed must be"),
    ("seed-huge", dict(seed=2**60), "seed must be"),
    ("seed-string", dict(seed="abc"), "seed must be"),
    ("seed-bool", dict(seed=True), "seed must be"),
    ("script-unknown", dict(script="klingon"), "script must be one of"),
]
RAW_BAD_INPUTS = [  # JSON values gradio_client refuses to send: straight over HTTP
    ("temperature-nan", 7, "NaN", "temperature must be"),
    ("top-p-infinity", 9, "Infinity", "top_p must be"),
    ("rhyme-strength-minus-infinity", 4, "-Infinity", "rhyme_strength must be"),
    ("seed-object", 12, '{"a": 1}', "seed must be"),
]
DEFAULT_DATA = ["", "", "自由", True, 1.0, True, 1.0, 0.85, 0, 0.95, "", 1, -1, "auto"]


def test_the_server_refuses_30_kinds_of_bad_input_and_keeps_serving(server, client):
    """Every bad request, one after the other against one server: each refused with its own message."""
    refused = []
    for _, kwargs, words in BAD_INPUTS:
        with pytest.raises(AppError) as info:
            generate(client, **kwargs)
        refused.append(words in str(info.value))
    for _, index, value, words in RAW_BAD_INPUTS:
        data = [json.dumps(v, ensure_ascii=False) for v in DEFAULT_DATA]
        data[index] = value
        event, payload = raw_call(server.url, '{"data": [' + ", ".join(data) + "]}")
        refused.append(event == "error" and words in payload["error"])
    assert len(refused) >= 30 and all(refused)
    assert heads(poem(client, acrostic="春夏", seed=3)) == "春夏"  # and the server still writes poems


@pytest.mark.parametrize("kwargs,words", [(kw, w) for _, kw, w in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS])
def test_bad_input_gets_a_message(client, kwargs, words):
    with pytest.raises(AppError) as info:
        generate(client, **kwargs)
    message = str(info.value)
    assert words in message, message
    assert "Traceback" not in message and len(message) < 600


@pytest.mark.parametrize("index,value,words", [r[1:] for r in RAW_BAD_INPUTS], ids=[r[0] for r in RAW_BAD_INPUTS])
def test_bad_raw_json_gets_a_message(server, index, value, words):
    data = [json.dumps(v, ensure_ascii=False) for v in DEFAULT_DATA]
    data[index] = value
    event, payload = raw_call(server.url, '{"data": [' + ", ".join(data) + "]}")
    assert event == "error" and words in payload["error"], (event, payload)


def test_protocol_abuse_is_refused_and_the_server_keeps_serving(server, client):
    assert raw_call(server.url, "not json")[0].startswith("http 4")
    assert raw_call(server.url, '{"data": "x"}')[0].startswith("http 4")
    assert raw_call(server.url, '{"data": []}')[0] == "http 422"  # too few values: named by the server
    assert poem(client, acrostic="春夏秋冬", form="七绝", seed=1)["lines"][0][0] == "春"


def test_server_survives_bad_inputs(server, client):
    for _, kwargs, _ in BAD_INPUTS[:10]:
        with pytest.raises(AppError):
            generate(client, **kwargs)
    assert heads(poem(client, acrostic="江山", seed=2)) == "江山"
    with urllib.request.urlopen(server.url, timeout=30) as r:
        assert r.status == 200
    assert server.proc.poll() is None


# ---------------------------------------------------------------------------------------------
# Load


def test_50_concurrent_requests_all_answered_correctly(server, client):
    forms = list(FORM_SHAPES)
    requests = [dict(acrostic="春夏秋冬江山风月"[:FORM_SHAPES[forms[i % 4]][0]], form=forms[i % 4], seed=1000 + i,
                     num_candidates=1 + i % 3) for i in range(50)]
    t0 = time.monotonic()
    jobs = [client.submit(api_name="/generate", **kw) for kw in requests]
    # While the 50 are queued or running, the server still answers page requests.
    with urllib.request.urlopen(server.url + "config", timeout=60) as r:
        assert r.status == 200
    results = [job.result(timeout=180) for job in jobs]
    elapsed = time.monotonic() - t0
    for kw, result in zip(requests, results):
        n_lines, n_chars = FORM_SHAPES[kw["form"]]
        assert result["request"]["seed"] == kw["seed"] and 1 <= len(result["poems"]) <= kw["num_candidates"]
        for p in result["poems"]:
            assert p["seed"] == kw["seed"] and p["form"] == kw["form"] and heads(p) == kw["acrostic"]
            assert [len(body(line)) for line in p["lines"]] == [n_chars] * n_lines
    # Answers are the deterministic ones: the same request alone gives the same poems.
    assert generate(client, **requests[7])["poems"] == results[7]["poems"]
    print(f"\n50 concurrent requests answered in {elapsed:.1f} s")


def test_many_threads_with_their_own_clients(server):
    def one(i: int) -> bool:
        c = Client(server.url, verbose=False, download_files=False)
        return heads(poem(c, acrostic="明月", seed=i)) == "明月"

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(8)))


# ---------------------------------------------------------------------------------------------
# In-process pieces: rendering, messages, command line


@pytest.fixture(scope="module")
def app_module():
    sys.path.insert(0, str(REPO))
    import app

    return app


@pytest.fixture(scope="module")
def render():
    sys.path.insert(0, str(REPO))
    from ui import render

    return render


def test_rendering_escapes_every_text(render):
    evil = "<script>alert(1)</script>"
    note = dict(char="<", line=1, pos=1, tones="平", rhyme_groups=[evil], required="仄", rhyme=True,
                violation=evil, note=evil)
    poem_dict = dict(text=evil, lines=[evil + "，"], score=1.0, score_parts={evil: 1.0}, rank=1, form=evil,
                     prosody=dict(form=evil, chars=[note], violations=[evil], warnings=[evil], rhymes=True,
                                  rhyme_group=evil, tone_score=1.0, template=evil),
                     copy=dict(nearest=dict(title=evil, author=evil), longest_span=evil, longest_span_chars=3,
                               span_poem=dict(title=evil, author=evil), copied_lines=[evil], note=evil,
                               similarity=0.5),
                     relaxations=[evil], seed=1, candidate=0,
                     settings=dict(prompt=evil, acrostic=evil, style=evil, form=evil, num_candidates=1))
    out = render.render_result({"poems": [poem_dict]})
    assert "<script" not in out.lower() and "&lt;script&gt;" in out
    assert "class='ping rhyme bad note'" in out  # the annotation classes survive


def test_toast_text_neutralises_markup(render):
    t = render.toast_text
    assert t("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)>"
    assert t("</b><!-- x --><?php") == "&lt;/b>&lt;!-- x -->&lt;?php"
    assert t("&lt;script&gt;") == "&amp;lt;script&amp;gt;"
    assert t("x must be >= 0 and <= 1, got '<'") == "x must be >= 0 and <= 1, got '<'"


def test_command_line_and_environment(app_module, monkeypatch):
    for name in ("MODEL_ID", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = app_module.parse_args([])
    assert (args.model, args.host, args.port) == (None, "127.0.0.1", 7860)
    monkeypatch.setenv("MODEL_ID", "user/tang-lstm")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8080")
    args = app_module.parse_args([])
    assert (args.model, args.host, args.port) == ("user/tang-lstm", "0.0.0.0", 8080)
    args = app_module.parse_args(["--model", "runs/x/best", "--host", "127.0.0.2", "--port", "9000"])
    assert (args.model, args.host, args.port) == ("runs/x/best", "127.0.0.2", 9000)


def test_missing_default_model_says_how_to_get_one(app_module, monkeypatch, tmp_path):
    monkeypatch.setattr(app_module, "DEFAULT_MODEL_DIR", tmp_path / "checkpoints" / "tang-lstm")
    monkeypatch.delenv("MODEL_ID", raising=False)
    with pytest.raises(SystemExit) as info:
        app_module.start_generator(app_module.parse_args([]))
    message = str(info.value)
    assert "no model at" in message and "--model" in message and "MODEL_ID" in message
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as info:
        app_module.wait_for_generator(app_module.start_generator(app_module.parse_args(["--model", nowhere])), nowhere)
    assert "cannot load model" in str(info.value) and "nowhere" in str(info.value)


def test_app_exits_with_a_message_when_the_model_is_missing(tmp_path):
    port = free_port()
    env = server_env(MODEL_ID=str(tmp_path / "no-such-model"))
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--port", str(port)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    assert done.returncode != 0
    assert "cannot load model" in done.stderr and "no-such-model" in done.stderr, done.stderr[-2000:]


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of pid, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                out.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, IndexError):
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_generation_runs_in_a_child_process_that_ends_with_the_server(tiny_model_dir, tmp_path):
    port = free_port()
    srv = Server(["--model", str(tiny_model_dir), "--port", str(port)], server_env(), port, tmp_path / "log").wait_ready()
    try:
        workers = [pid for pid, cmd in _children(srv.proc.pid) if "poetry_model.worker" in cmd]
        assert len(workers) == 1, _children(srv.proc.pid)
        assert Client(srv.url, verbose=False).predict(form="五绝", seed=1, api_name="/generate")["poems"]
    finally:
        srv.close()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{workers[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    status = Path(f"/proc/{workers[0]}/stat")
    # gone, or a zombie that its (now dead) parent left for init to reap
    assert not status.exists() or status.read_text().rsplit(")", 1)[1].split()[0] == "Z"
