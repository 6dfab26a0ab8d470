"""Gradio app (and Hugging Face Space) for the Tang poetry generator.

    python app.py                                 # the shipped model at http://127.0.0.1:7860
    python app.py --model runs/mine/best          # another folder, or a Hub repo id ("user/tang-lstm")
    MODEL_ID=user/tang-lstm GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=8080 python app.py

Only UI wiring lives here: generation, prosody and copy checks are `poetry_model`'s. The same
request runs behind the page's button and behind the JSON endpoint `/generate`:

    from gradio_client import Client
    poems = Client("http://127.0.0.1:7860/").predict(acrostic="春夏秋冬", form="七绝", seed=7, api_name="/generate")

Writing with the poet: the page streams lines as they are decoded, locks edited or ticked lines
and regenerates the rest (`/generate`'s `locked`), lists a clicked character's alternatives
(`/alternatives`) and puts one in (`/replace`); `/card` draws a poem as a PNG (app_card.py); the
address bar's query string holds the settings and seed of the poem shown (a permalink).

Every user-derived text that reaches the page is HTML-escaped; bad input becomes a gr.Error
with the library's message, never a stack trace, and the server keeps serving.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
# Gradio's queue rebuilds a pandas summary of up to 10,000 past events after every event (for its
# monitoring page): several ms of CPU per request at load. Every 100 events over the last 1,000 is plenty.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "100")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")

log = logging.getLogger("poetry_app")
STARTED = time.perf_counter()  # start-up is timed from here: the model loads while gradio is imported

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = HERE / "checkpoints" / "tang-lstm"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860

FORM_CHOICES = ["自由", "五绝", "七绝", "五律", "七律"]
SCRIPT_CHOICES = [("自动 auto", "auto"), ("简体 simplified", "simplified"), ("繁體 traditional", "traditional")]
# Limits of this app (a free 2-vCPU Space); the library checks everything else.
APP_MAX_CANDIDATES = 8
APP_MAX_TEMPERATURE = 2.0
MAX_TOP_K = 500
MAX_SEED = 2**53 - 1          # exact in the browser's numbers, so a shown seed always reproduces
MAX_TEXT = 1000               # characters; a cheap guard before the library's own limits
# Work per request (GenerationConfig's cost model: candidates x (style + poem) characters): 8 candidates
# of free verse (124 characters), or 8 七律 after a 60-character style. Bigger requests are refused.
APP_MAX_COST = 1000
CONCURRENCY = 128             # requests handed to the generator at once; it schedules them (cheapest first)
QUEUE_SIZE = 256              # more requests wait in gradio's queue; beyond that they are refused
MAX_ROWS = 32                 # candidates decoded at once (a step costs ~1 ms per row): 8 kept for light requests
MAX_BODY = 64 * 1024          # bytes of one HTTP request body (a full request is under 10 kB)
SESSIONS_KEPT = 64            # sessions whose state gradio keeps (the app has none worth keeping)
HOLD_S = 10.0                 # how long a request waits for a restarting generator before it is told to retry


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the Tang poetry generator (Gradio).")
    p.add_argument("--model", default=os.environ.get("MODEL_ID") or None,
                   help="model folder or Hub repo id (env MODEL_ID; default: checkpoints/tang-lstm)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST,
                   help="address to bind (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT),
                   help="port (env GRADIO_SERVER_PORT; default 7860)")
    p.add_argument("--corpus", default=os.environ.get("POETRY_CORPUS") or None,
                   help="corpus.npz or tang.npz for the copy report's nearest poem (env POETRY_CORPUS; default: the model folder's corpus.npz)")
    p.add_argument("--device", default=None, help="torch device (default: cuda, mps, else cpu)")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("POET_CONCURRENCY") or CONCURRENCY),
                   help=f"requests generated at once, decoded together in one batch (default {CONCURRENCY})")
    p.add_argument("--threads", type=int, default=int(os.environ.get("POET_THREADS") or 1),
                   help="torch CPU threads per process (default 1: concurrent requests share the cores)")
    return p.parse_args(argv)


def start_generator(args: argparse.Namespace):
    """Start the generator process (it loads the model meanwhile), or exit saying how to get a model."""
    from poetry_model.worker import PoetWorker

    if args.model is None and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        sys.exit(f"error: no model at {DEFAULT_MODEL_DIR}.\n"
                 "Get one: train it (`python -m train.train --data data/tang.npz --out runs/mine`) and run "
                 "`python app.py --model runs/mine/best`, or point MODEL_ID / --model at a Hub repo id.")
    return PoetWorker(args.model if args.model is not None else DEFAULT_MODEL_DIR, device=args.device,
                      corpus=args.corpus, threads=max(1, args.threads), max_rows=MAX_ROWS, hold_s=HOLD_S)


def wait_for_generator(worker, model: str | None):
    """The started generator once its model is loaded, or exit with the reason it could not load."""
    from poetry_model.worker import WorkerError

    try:
        worker.wait_ready()
    except WorkerError as exc:
        worker.close()
        sys.exit(f"error: cannot load model {model or DEFAULT_MODEL_DIR}: {exc}")
    return worker


_early: tuple = ()  # (args, generator) when run as a script
if __name__ == "__main__":
    # `python app.py`: the generator process starts before gradio is imported, so that its torch
    # import and model load (2-3 s) run beside that import instead of after it.
    _args = parse_args()
    _early = _args, start_generator(_args)

import gradio as gr  # noqa: E402

from app_render import POEM_CSS, render_partial, render_result, toast_text  # noqa: E402
from poetry_model.generation.config import (  # noqa: E402  (light: no torch)
    DEFAULT_MAX_LENGTH,
    GenerationConfig,
    check_cost,
    check_flag,
    check_integer,
    check_number,
    check_string,
    poem_length,
    request_cost,
)

PAGE_PARAMS = ("prompt", "acrostic", "form", "rhyme", "rhyme_strength", "tones", "tone_strength", "temperature",
               "top_k", "top_p", "style", "num_candidates", "seed", "script", "theme")  # the page's controls, in order
APP_PARAMS = (*PAGE_PARAMS, "locked", "relax_locked")                           # /generate's arguments
# The library's defaults, in this app's conventions: the form by its Chinese name, seed -1 = random, top_k 0 = no limit.
# Four candidates: ranked by coherence, 对仗 and theme, the best of four reads measurably better than one
# at about twice one's latency (docs/quality.md, "Ranking"); the library's default stays one.
DEFAULTS: dict[str, Any] = {**{k: GenerationConfig.default(k) for k in APP_PARAMS}, "form": "自由", "seed": -1,
                            "top_k": GenerationConfig.default("top_k") or 0, "num_candidates": 4}
MAX_LINES = 8                 # a 律诗: the most lines that can be locked (locking needs a fixed form)
D = DEFAULTS
PARAMS = APP_PARAMS

EXAMPLES = [  # prompt, acrostic, form, style, seed, theme
    ["", "春夏秋冬", "七绝", "", 7, ""],
    ["床前明月光，", "", "五绝", "", 42, ""],
    ["", "", "五律", "", 3, "秋夜"],
    ["", "", "七绝", "", 5, "边塞"],
    ["", "长安月", "自由", "", 11, ""],
    ["", "", "七律", "", 2024, "送友人"],
]

CARD_PARAMS = ("text", "title", "form", "tone_marks")
CARD_DIR = Path(tempfile.gettempdir()) / "poem-cards"  # this app's PNGs, before gradio copies them to its cache
CARDS_KEPT = 200                                       # older ones are deleted
CARD_DOC = ("A PNG of a poem typeset vertically (竖排, first line at the right). Args: text: the poem, lines "
            "closed by ，。？！；：; title: the title or theme shown in the first column (may be empty); form: shown "
            "under it (may be empty); tone_marks: 平/仄/中 beside each character. Returns the PNG file.")
# JS: put the settings and the seed of the poem on screen into the address bar (no reload, no history entry).
PERMALINK_JS = """(query) => { if (typeof query === 'string' && query)
    history.replaceState(null, '', location.pathname + '?' + query + location.hash); return []; }"""
# JS: the best poem's text, one line per line, onto the clipboard (a hidden textarea where the
# Clipboard API is missing).
COPY_JS = """() => {
  const lines = [...document.querySelectorAll('#poems .poem-card:first-child .poem-line')].map(l => l.dataset.text);
  const text = lines.join('\\n');
  if (!text) return [];
  const fallback = () => { const t = document.createElement('textarea'); t.value = text; document.body.appendChild(t);
                           t.select(); document.execCommand('copy'); t.remove(); };
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).catch(fallback); else fallback();
  return []; }"""

# The API page: each parameter's help is the library's (GenerationConfig), with this app's conventions.
APP_CONVENTIONS = {"form": "自由 (free), 五绝, 七绝, 五律, 七律", "top_k": "0 or null = no limit",
                   "seed": "-1 or null = a random seed (reported with the poems)",
    "locked": 'e.g. {"1": "白日依山尽"}: line 1 (from 0) kept verbatim, the others written around it'}
API_DOC = "\n".join([
    'Write poems. Returns {"poems": [...], "request", "settings", "elapsed_ms"}; each poem has text, lines, '
    "score and score_parts, prosody (per-character tones, rhyme, violations), copy (nearest corpus poem, "
    "longest shared span), seed and settings.", "", "Args:",
    *(f"    {k}: {GenerationConfig.meta(k)['help']}" + (f"; {APP_CONVENTIONS[k]}" if k in APP_CONVENTIONS else "")
      for k in APP_PARAMS)])


PUBLIC_ENDPOINTS = ("alternatives", "card", "generate", "replace")
ENDPOINT_PARAMS = {  # api_name -> its inputs' names, for messages (default: APP_PARAMS)
    "card": CARD_PARAMS, "generate_page": PAGE_PARAMS,
    "alternatives": ("text", "position", "k", "settings"), "replace": ("text", "position", "char", "settings")}
# Arguments added to an endpoint after its first version: a call without them gets these defaults.
OPTIONAL_TAIL = {"generate": {"theme": "", "locked": None, "relax_locked": False}, "generate_page": {"theme": ""}}
MAX_ALTERNATIVES = 20         # characters one /alternatives call lists at most
PAGE_ALTERNATIVES = 8         # shown on the page
ALTERNATIVES_DOC = (
    "The k most probable characters at one position of a poem that keep every rule active there (form, rhyme, "
    "tones, acrostic, locked lines, 对仗 bias; the copy guard), with the model's probability after those rules. "
    'Returns {"text", "position", "char" (the one there now), "alternatives": [{"char", "prob"}, ...]}. Args: '
    "text: the poem's text (punctuation included, no spaces); position: an index into it (a character, not "
    f"punctuation); k: 1 to {MAX_ALTERNATIVES}; settings: the `request` of a /generate result (form, acrostic, "
    "locked, ...; null = defaults).")
REPLACE_DOC = (
    "A poem with one character replaced (pick it from /alternatives). The poem is kept when every later "
    'character still fits the rules (edit "kept"), else the rest is written again from the new character under '
    'the same settings and seed (edit "recontinued"). Returns a /generate-like result with one poem and "edit". '
    "Args: text, position, char (one character), settings (the `request` of a /generate result).")
# JS: a click on a character of the first poem puts its position in the Position box and asks for alternatives.
CLICK_JS = """() => {
  document.addEventListener('click', (e) => {
    const ch = e.target.closest && e.target.closest('#poems .poems:not(.streaming) .poem-card:first-child ruby[data-pos]');
    if (!ch) return;
    document.querySelectorAll('#poems ruby.picked').forEach(r => r.classList.remove('picked'));
    ch.classList.add('picked');
    const box = document.querySelector('#alt_position input');
    box.value = ch.dataset.pos;
    box.dispatchEvent(new Event('input', {bubbles: true}));
    box.dispatchEvent(new Event('change', {bubbles: true}));
    setTimeout(() => document.querySelector('#alt_show').click(), 50);
  });
  return [];
}"""


class BadInput(ValueError):
    """A request this app refuses before it reaches the library."""


# ---------------------------------------------------------------------------------------------
# Request: the API's (or the page's) raw values -> poet.generate keyword arguments


def _string(name: str, value: Any) -> str:
    return "" if value is None else check_string(name, value, MAX_TEXT)


def _range(name: str, value: Any, hi: float | None = None) -> float:
    """A number in the library's range for `name` (capped at `hi`, this app's own limit)."""
    meta = GenerationConfig.meta(name)
    return check_number(name, value, meta["lo"], min(meta["hi"], hi or meta["hi"]), open_low=meta["open_low"])


def _locked(value: Any) -> dict[str, str] | None:
    """Locked lines {line index: text} as JSON gives them (keys strings); the library checks the lines."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise BadInput(f"locked must be an object {{line index: line text}}, got {type(value).__name__}")
    if len(value) > MAX_LINES:
        raise BadInput(f"locked: at most {MAX_LINES} lines, got {len(value)}")
    return {str(k)[:20]: _string(f"locked line {str(k)[:20]}", v) for k, v in value.items()}


def request_kwargs(**raw: Any) -> dict[str, Any]:
    """Check the values this app owns and map its conventions onto `Poet.generate`'s arguments.

    Conventions: top_k 0 or null = no limit; seed null or -1 = a fresh random seed,
    reported with the poem; texts null = empty. The library checks the rest (vocabulary,
    form and acrostic consistency, lengths) and its ValueErrors are shown as they are."""
    unknown = sorted(set(raw) - set(PARAMS))
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(unknown)}")
    v = {**DEFAULTS, **raw}
    top_k = None if v["top_k"] is None else check_integer("top_k", v["top_k"], 0, MAX_TOP_K, hint=" (0 = no limit)",
                                                           whole_floats=True)
    seed = None if v["seed"] is None else check_integer("seed", v["seed"], -1, MAX_SEED, hint=" (-1 = random)",
                                                        whole_floats=True)
    kwargs = dict(
        prompt=_string("prompt", v["prompt"]), acrostic=_string("acrostic", v["acrostic"]),
        form=_string("form", v["form"]) or "free",
        rhyme=check_flag("rhyme", v["rhyme"]), rhyme_strength=_range("rhyme_strength", v["rhyme_strength"]),
        tones=check_flag("tones", v["tones"]), tone_strength=_range("tone_strength", v["tone_strength"]),
        temperature=_range("temperature", v["temperature"], APP_MAX_TEMPERATURE),
        top_k=top_k or None, top_p=_range("top_p", v["top_p"]),
        style=_string("style", v["style"]), theme=_string("theme", v["theme"]),
        num_candidates=check_integer("num_candidates", v["num_candidates"], 1, APP_MAX_CANDIDATES, whole_floats=True),
        seed=None if seed is None or seed < 0 else seed,
        script=_string("script", v["script"]) or "auto",
        locked=_locked(v["locked"]), relax_locked=check_flag("relax_locked", v["relax_locked"]),
    )
    context = len(kwargs["style"]) + (len(kwargs["theme"]) + 1 if kwargs["theme"] else 0)  # the title: theme + 1
    check_cost(request_cost(kwargs["num_candidates"], context,
                            poem_length(kwargs["form"], DEFAULT_MAX_LENGTH)), APP_MAX_COST)
    return kwargs


def _message(exc: BaseException) -> str:
    return toast_text(str(exc) or type(exc).__name__)


def _failed(exc: BaseException, raw: dict[str, Any]) -> gr.Error:
    from poetry_model.worker import WorkerError

    if isinstance(exc, ValueError):  # BadInput, the library's ValueError and its subclasses
        return gr.Error("invalid input: " + _message(exc), title="输入有误 · Invalid input", print_exception=False)
    if isinstance(exc, WorkerError):  # a restart: the worker logs it once, not once per request
        return gr.Error(f"生成器重启中 · {_message(exc)}", title="稍候 · Restarting", print_exception=False)
    # a bug: logged here, reported briefly there, the server carries on
    log.error("generation failed for %s", _short(raw), exc_info=exc)
    return gr.Error(f"生成失败 · generation failed ({type(exc).__name__}); please try other settings",
                    title="出错 · Error", print_exception=False)


def _short(raw: dict[str, Any]) -> str:
    """A request for the log: long texts cut, so one request cannot fill the log."""
    return repr({k: (v[:40] + f"...({len(v)})" if isinstance(v, str) and len(v) > 40 else v) for k, v in raw.items()})


def _result(poems, kwargs: dict[str, Any], t0: float) -> dict[str, Any]:
    out = [p if isinstance(p, dict) else p.to_dict() for p in poems]  # a worker sends dicts already
    settings = dict(out[0]["settings"]) if out else {}
    request = {k: kwargs[k] for k in PARAMS}
    request["seed"] = settings.get("seed", kwargs["seed"])
    return {"poems": out, "request": request, "settings": settings,
            "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1)}


async def run_request(generator, raw: dict[str, Any]) -> dict[str, Any]:
    """One generation through a `Batcher` or `PoetWorker` (anything with `submit`); returns the JSON
    result. Bad input -> gr.Error with a clear message. Awaited in gradio's event loop: no thread waits."""
    t0 = time.perf_counter()
    try:
        kwargs = request_kwargs(**raw)
        poems = await asyncio.wrap_future(generator.submit(**kwargs))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message
        raise _failed(exc, raw) from None
    return _result(poems, kwargs, t0)


# ---------------------------------------------------------------------------------------------
# Poem card and permalink


def make_card(text: str, title: str = "", form: str = "", tone_marks: bool = True,
              tones: list[str] | None = None, footer: str = "") -> str:
    """The PNG card of a poem, written under CARD_DIR; its path. Bad input -> gr.Error."""
    from app_card import CardFontError, poem_card

    try:
        text = _string("text", text)
        title, form = _string("title", title), _string("form", form)
        image = poem_card(text, title=title, form=form, tones=tones,
                          tone_marks=check_flag("tone_marks", tone_marks), footer=footer)
    except ValueError as exc:
        raise gr.Error("invalid input: " + _message(exc), title="输入有误 · Invalid input", print_exception=False) from None
    except CardFontError as exc:
        raise gr.Error(_message(exc), title="缺字体 · No Chinese font", print_exception=False) from None
    CARD_DIR.mkdir(parents=True, exist_ok=True)
    old = sorted(CARD_DIR.glob("*.png"), key=lambda f: f.stat().st_mtime)[:-CARDS_KEPT]
    for f in old:
        f.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile(dir=CARD_DIR, prefix="poem-", suffix=".png", delete=False) as f:
        image.save(f, format="PNG", optimize=True)
    return f.name


def permalink_query(request: dict[str, Any]) -> str:
    """The query string of a result's request: the seed used and every setting that is not the default."""
    values = {**request, "top_k": request.get("top_k") or 0}  # the library's None is this app's 0
    shown = {k: v for k, v in values.items() if k in PARAMS and (k == "seed" or v != DEFAULTS[k])}
    return "&".join(f"{k}={_query_value(v)}" for k, v in shown.items())


def _query_value(value: Any) -> str:
    """A value in a query string, readable: Chinese characters as they are (browsers encode them),
    everything else that is not a letter or digit percent-encoded."""
    text = ("1" if value is True else "0" if value is False else
            json.dumps(value, ensure_ascii=False, separators=(",", ":")) if isinstance(value, dict) else str(value))
    return "".join(c if c.isalnum() else quote(c, safe="") for c in text)


def parse_permalink(query: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The settings in a page's query string, and a message per bad value (that setting keeps its default).
    Keys this app does not know (gradio's own, trackers') are ignored."""
    values, problems = {}, []
    for key in PARAMS:
        if key not in query:
            continue
        raw, default = query[key], DEFAULTS[key]
        try:
            if key == "locked":
                try:
                    value: Any = json.loads(raw)
                except ValueError:
                    raise ValueError(f'locked must be JSON like {{"1":"白日依山尽"}}, got {raw[:40]!r}') from None
            elif isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false"):
                    raise ValueError(f"{key} must be 1 or 0, got {raw[:40]!r}")
                value = raw.lower() in ("1", "true")
            elif isinstance(default, (int, float)):
                try:
                    value = int(raw) if isinstance(default, int) else float(raw)
                except ValueError:
                    raise ValueError(f"{key} must be a number, got {raw[:40]!r}") from None
            else:
                value = raw
            if key == "form" and value not in FORM_CHOICES:
                raise ValueError(f"form must be one of {', '.join(FORM_CHOICES)}, got {raw[:40]!r}")
            if key == "script" and value not in [v for _, v in SCRIPT_CHOICES]:
                raise ValueError(f"script must be auto, simplified or traditional, got {raw[:40]!r}")
            request_kwargs(**{key: value})  # this app's and the library's cheap checks of that one value
        except ValueError as exc:
            problems.append(str(exc))
            continue
        values[key] = value
    return values, problems


def card_inputs(result: dict | None) -> tuple[str, str, str, list[str] | None, str]:
    """(text, title, form, tone marks, footer) of a result's best poem for its card ("" when none)."""
    from app_card import TONE_MARK

    poems = (result or {}).get("poems") or []
    if not poems:
        return "", "", "", None, ""
    best = poems[0]
    settings = best.get("settings") or {}
    title = str(settings.get("title") or settings.get("theme") or "")
    prosody = best.get("prosody") or {}
    tones = [TONE_MARK.get(c.get("tones") or "", "") for c in prosody.get("chars") or []] or None
    form = str(prosody.get("form") or best.get("form") or "")
    return best["text"], title, form, tones, f"唐诗生成器 seed {best.get('seed', '')}"


# ---------------------------------------------------------------------------------------------
# Writing with the poet: locked lines, alternatives, replacing a character


def request_of(settings: dict | None) -> dict[str, Any]:
    """A result's `request` (this app's conventions) checked, with defaults for what it leaves out."""
    if settings is not None and not isinstance(settings, dict):
        raise BadInput(f"settings must be an object (a /generate result's request), got {type(settings).__name__}")
    request_kwargs(**(settings or {}))  # unknown names and bad values are refused here
    return {**DEFAULTS, **(settings or {})}


def edit_args(text: Any, position: Any, settings: dict | None) -> dict[str, Any]:
    """Keyword arguments of Poet.alternatives / Poet.replace: the text, the position and the settings
    (the library's names; no prompt: the edited text is the poem)."""
    kwargs = request_kwargs(**request_of(settings))
    del kwargs["prompt"]
    text = _string("text", text)
    return {"text": text, "position": check_integer("position", position, 0, max(0, len(text) - 1),
                                                     whole_floats=True), **kwargs}


async def edit_call(generator, method: str, **kwargs: Any) -> Any:
    """Poet.alternatives / Poet.replace through the generator: in the worker's child process
    (PoetWorker.alternatives / .replace), or with a Batcher, its Poet in process. Returns JSON."""
    target = generator if hasattr(generator, method) else generator.poet  # a PoetWorker, else a Batcher's Poet
    try:
        out = await asyncio.to_thread(getattr(target, method), **kwargs)  # blocking calls: off the event loop
        return out.to_dict() if hasattr(out, "to_dict") else out
    except ValueError as exc:  # the library reads the edited text as a prompt: name it as this API does
        message = str(exc)
        raise ValueError("text" + message[len("prompt"):] if message.startswith("prompt ") else message) from None


def line_and_column(lines: list[str], position: int) -> tuple[int, int]:
    """1-based line and character of a text index."""
    for i, line in enumerate(lines):
        if position < len(line):
            return i + 1, position + 1
        position -= len(line)
    return len(lines), position + 1


def edit_rows(result: dict) -> list:
    """The edit rows (shown for fixed forms only), their lock boxes (ticked where the request locked
    the line) and line boxes (the best poem's lines)."""
    poem = result["poems"][0]
    locked = {str(k) for k in (result.get("request") or {}).get("locked") or {}}
    fixed = (poem.get("settings") or {}).get("form") in ("五绝", "七绝", "五律", "七律")
    lines = poem["lines"] if fixed else []
    rows = [gr.update(visible=i < len(lines)) for i in range(MAX_LINES)]
    ticks = [str(i) in locked for i in range(MAX_LINES)]
    boxes = [lines[i] if i < len(lines) else "" for i in range(MAX_LINES)]
    return rows + ticks + boxes


# ---------------------------------------------------------------------------------------------
# The Blocks


def escape_choice_errors(radio: gr.Radio) -> None:
    """Make `radio` refuse a value outside its choices with that value shown as text: Gradio's own
    message echoes the value into a toast, and toasts render HTML. Wrapped on the instance, as a
    gr.Radio subclass would make Gradio write a .pyi stub beside this file."""
    check = radio.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return check(payload)
        except gr.Error as exc:
            raise gr.Error(f"invalid input: {radio.elem_id}: {toast_text(exc.message)}",
                           title="输入有误 · Invalid input", print_exception=False) from None

    radio.preprocess = preprocess


def new_seed() -> int:
    return secrets.randbelow(2**31)


def build_app(generator, *, model_name: str = "", concurrency: int = CONCURRENCY) -> gr.Blocks:
    """The whole UI and the `/generate` API around a generator: a `poetry_model.worker.PoetWorker`
    (what `main` starts), a `Batcher`, or a loaded `Poet` (then wrapped in a Batcher here).

    Concurrent requests (up to `concurrency`) are decoded together: one model step per token for
    all of them, each with its own seed, so every answer is the one the request gives alone."""
    if not hasattr(generator, "submit"):  # a Poet
        from poetry_model.generation import Batcher

        generator = Batcher(generator, max_rows=MAX_ROWS)

    async def generate(prompt: str = D["prompt"], acrostic: str = D["acrostic"], form: str = D["form"],
                       rhyme: bool = D["rhyme"], rhyme_strength: float = D["rhyme_strength"], tones: bool = D["tones"],
                       tone_strength: float = D["tone_strength"], temperature: float = D["temperature"],
                       top_k: int | None = D["top_k"], top_p: float = D["top_p"], style: str = D["style"],
                       num_candidates: int = D["num_candidates"], seed: int | None = D["seed"],
                       script: str = D["script"], theme: str = D["theme"], locked: dict | None = D["locked"],
                       relax_locked: bool = D["relax_locked"]) -> dict:
        return await run_request(generator, dict(
            prompt=prompt, acrostic=acrostic, form=form, rhyme=rhyme, rhyme_strength=rhyme_strength, tones=tones,
            tone_strength=tone_strength, temperature=temperature, top_k=top_k, top_p=top_p, style=style,
            num_candidates=num_candidates, seed=seed, script=script, theme=theme, locked=locked,
            relax_locked=relax_locked))

    generate.__doc__ = API_DOC

    async def alternatives(text: str, position: int, k: int = 5, settings: dict | None = None) -> dict:
        t0 = time.perf_counter()
        raw = dict(text=text, position=position, k=k, settings=settings)
        try:
            args = edit_args(text, position, settings)
            args["k"] = check_integer("k", k, 1, MAX_ALTERNATIVES, whole_floats=True)
            found = await edit_call(generator, "alternatives", **args)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise _failed(exc, raw) from None
        return {"text": args["text"], "position": args["position"], "char": args["text"][args["position"]],
                "alternatives": found, "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1)}

    alternatives.__doc__ = ALTERNATIVES_DOC

    async def replace(text: str, position: int, char: str, settings: dict | None = None) -> dict:
        t0 = time.perf_counter()
        raw = dict(text=text, position=position, char=char, settings=settings)
        try:
            args = edit_args(text, position, settings)
            poem = await edit_call(generator, "replace", char=_string("char", char), **args)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise _failed(exc, raw) from None
        request = {**request_of(settings), "seed": poem["seed"]}
        if poem.get("edit") == "recontinued":  # the same settings with the edited text up to the new character
            request["prompt"] = poem["text"][:args["position"] + 1]
        result = {"poems": [poem], "request": request, "settings": poem.get("settings") or {},
                  "edit": poem.get("edit"), "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1)}
        return result

    replace.__doc__ = REPLACE_DOC

    def page_outputs(result: dict) -> tuple[str, dict]:
        for poem in result["poems"]:
            for note in poem.get("relaxations") or []:
                gr.Warning(toast_text(str(note)))
        asked = result["request"]["num_candidates"]
        if len(result["poems"]) < asked:
            gr.Warning(f"{asked - len(result['poems'])} 首重复已合并 · duplicate candidate(s) merged")
        return render_result(result), result

    async def stream_page(raw: dict[str, Any]):
        """(HTML, JSON) of the poem so far each time a line is decoded, then the ranked poems."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue = asyncio.Queue()
        try:
            kwargs = request_kwargs(**raw)
            done = asyncio.wrap_future(generator.submit(
                **kwargs, on_line=lambda event: loop.call_soon_threadsafe(lines.put_nowait, event["lines"])))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise _failed(exc, raw) from None
        while not done.done():
            line = asyncio.ensure_future(lines.get())
            await asyncio.wait({line, done}, return_when=asyncio.FIRST_COMPLETED)
            if line.done():
                yield render_partial(line.result()), gr.update()
            else:
                line.cancel()
        try:
            poems = done.result()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message
            raise _failed(exc, raw) from None
        yield page_outputs(_result(poems, kwargs, t0))

    async def generate_page(*values):
        async for out in stream_page(dict(zip(PAGE_PARAMS, values))):
            yield out

    async def regenerate_page(*values):
        """Generate again with the ticked or edited lines locked (as they read now), the page's settings and seed."""
        n = len(PAGE_PARAMS)
        page, relax, result, ticks, texts = (values[:n], values[n], values[n + 1], values[-2 * MAX_LINES:-MAX_LINES],
                                             values[-MAX_LINES:])
        shown = (((result or {}).get("poems") or [{}])[0]).get("lines") or []
        edited = [i < len(shown) and (text or "").strip() != shown[i] for i, text in enumerate(texts)]
        locked = {str(i): text for i, (tick, text, changed) in enumerate(zip(ticks, texts, edited))
                  if (tick or changed) and i < len(shown)}
        if not locked:
            gr.Warning("没有锁定的句子 · no line is locked: tick 锁 beside the lines to keep")
        raw = {**dict(zip(PAGE_PARAMS, page)), "locked": locked or None, "relax_locked": relax}
        try:
            async for out in stream_page(raw):
                yield out
        except gr.Error as exc:
            if "relax_locked" in exc.message:
                raise gr.Error(exc.message + " · 勾选「放宽」可保留此句 · tick 'Relax' to keep the line anyway",
                               title=exc.title, print_exception=False) from None
            raise

    async def show_alternatives(result: dict | None, position: Any):
        """The alternatives at a character of the best poem, as choices to pick from."""
        poem = ((result or {}).get("poems") or [None])[0]
        if poem is None:
            raise gr.Error("先作诗 · write a poem first", print_exception=False)
        found = await alternatives(poem["text"], position, PAGE_ALTERNATIVES, result.get("request"))
        line, column = line_and_column(poem["lines"], found["position"])
        choices = [(f"{a['char']}  {100 * a['prob']:.1f}%", a["char"]) for a in found["alternatives"]]
        note = (f"第{line}句第{column}字「{found['char']}」: {len(choices)} 个合律的候选字 · alternative(s) that keep "
                "every rule here (model probability after the rules); pick one and press 换上 Use it")
        return gr.update(choices=choices, value=None), note

    async def apply_alternative(result: dict | None, position: Any, char: str | None):
        poem = ((result or {}).get("poems") or [None])[0]
        if poem is None or not char:
            raise gr.Error("先点一个字，再选候选 · click a character, then pick an alternative", print_exception=False)
        edited = await replace(poem["text"], position, char, result.get("request"))
        kept = edited["edit"] == "kept"
        note = (f"「{toast_text(char)}」 换上 · put in: " + ("保留 kept — every later character still fits the rules"
                if kept else "重写 re-continued — the rest was written again from that character"))
        return (*page_outputs(edited), gr.update(choices=[], value=None), note)

    async def card(text: str, title: str = "", form: str = "", tone_marks: bool = True) -> str:
        return await asyncio.to_thread(make_card, text, title, form, tone_marks)

    card.__doc__ = CARD_DOC

    async def after_generate(result: dict | None, tone_marks: bool):
        """The best poem's card, its text for the card's options, the permalink of the poem (none for a
        hand-kept edit: no settings write it) and its lines in the edit rows."""
        text, title, form, tones, footer = card_inputs(result)
        if not text:
            return [gr.update()] * (5 + 3 * MAX_LINES)
        path = await asyncio.to_thread(make_card, text, title, form, tone_marks, tones, footer)
        link = "" if result.get("edit") == "kept" else permalink_query(result["request"])
        return [text, title, form, gr.update(value=path, interactive=True), link, *edit_rows(result)]

    async def from_permalink(request: gr.Request):
        """Opening the page with settings in its query string: fill them in and write that poem."""
        query = dict(request.query_params) if request is not None else {}
        values, problems = parse_permalink(query)
        for problem in problems:
            gr.Warning(toast_text(f"链接参数有误 · bad link parameter: {problem}; the default is used"))
        if not values:
            return [gr.update() for _ in inputs] + [gr.update(), gr.update()]
        filled = {**DEFAULTS, **values}
        try:
            html, result = page_outputs(await generate(**filled))
        except gr.Error as exc:  # the settings together are refused: the page shows them and says why
            gr.Warning(exc.message)
            html, result = gr.update(), gr.update()
        return [filled[k] for k in PAGE_PARAMS] + [html, result]

    # Cards handed out are copied into gradio's cache; files there older than an hour go, hourly.
    with gr.Blocks(title="唐诗生成器 · Tang poetry generator", delete_cache=(3600, 3600)) as demo:
        gr.Markdown("# 唐诗生成器 · Tang poetry generator\n"
                    "字符级 LSTM 按体裁、押韵、平仄作诗。 A character LSTM trained on Tang poems writes verse "
                    "with form, rhyme and tone control; every character is annotated with its tone."
                    + (f"  \nModel: `{model_name.replace('`', '')}`" if model_name else ""))
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                prompt = gr.Textbox(label="开头 Prompt", placeholder="床前明月光，", elem_id="prompt",
                                    info="诗的开头，由模型续写 · the opening, continued by the model")
                acrostic = gr.Textbox(label="藏头 Acrostic", placeholder="春夏秋冬", elem_id="acrostic",
                                      info="每句首字 · one head character per line")
                theme = gr.Textbox(label="主题 Theme", placeholder="秋夜 · 送友人 · 边塞 · 月", elem_id="theme",
                                   info="关键词或题目，全诗围绕它 · keywords or a title the whole poem keeps to")
                form = gr.Radio(FORM_CHOICES, value=D["form"], label="体裁 Form", elem_id="form",
                                info="自由 = free verse; 绝句 4 lines, 律诗 8 lines of 5 or 7 characters")
                with gr.Row():
                    rhyme = gr.Checkbox(D["rhyme"], label="押韵 Rhyme", elem_id="rhyme", info="even lines rhyme", scale=1)
                    rhyme_strength = gr.Slider(0, 1, D["rhyme_strength"], step=0.05, label="押韵强度 Rhyme strength", scale=2,
                                               info="1 = strict, 0 = off", elem_id="rhyme_strength")
                with gr.Row():
                    tones = gr.Checkbox(D["tones"], label="平仄 Tones", elem_id="tones", info="level/oblique pattern",
                                        scale=1)
                    tone_strength = gr.Slider(0, 1, D["tone_strength"], step=0.05, label="平仄强度 Tone strength", scale=2,
                                              info="1 = strict, 0 = off", elem_id="tone_strength")
                with gr.Accordion("采样 Sampling", open=False):
                    temperature = gr.Slider(0, APP_MAX_TEMPERATURE, D["temperature"], step=0.05, label="温度 Temperature",
                                            info="0 = greedy; higher = bolder", elem_id="temperature")
                    top_k = gr.Slider(0, MAX_TOP_K, D["top_k"], step=1, label="Top-k",
                                      info="只从最可能的 k 字中选 · 0 = no limit", elem_id="top_k")
                    top_p = gr.Slider(0.05, 1, D["top_p"], step=0.01, label="Top-p",
                                      info="累计概率截断 · nucleus sampling", elem_id="top_p")
                    style = gr.Textbox(label="风格 Style", placeholder="大漠孤烟直，长河落日圆。", elem_id="style",
                                       info="先读给模型定基调，不输出 · read first to set the mood, not printed")
                num_candidates = gr.Slider(1, APP_MAX_CANDIDATES, D["num_candidates"], step=1, label="候选数 Candidates",
                                           info="写几首，按分数排序 · poems written and ranked", elem_id="num_candidates")
                with gr.Row(equal_height=True):
                    seed = gr.Number(D["seed"], label="随机种子 Seed", precision=0, minimum=-1, maximum=MAX_SEED,
                                     info="-1 = 每次随机 · random each time; the seed used is shown with the poem",
                                     elem_id="seed", scale=3)
                    reseed = gr.Button("新种子 New seed", elem_id="new_seed", scale=1)
                script = gr.Radio(SCRIPT_CHOICES, value=D["script"], label="简/繁 Script", elem_id="script",
                                  info="输出字体 · output script")
                go = gr.Button("作诗 Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3, min_width=360):
                poems_html = gr.HTML("<div class='poem-empty'>点击「作诗」· press Generate</div>",
                                     css_template=POEM_CSS, elem_id="poems", js_on_load=None)
                with gr.Row():
                    card_download = gr.DownloadButton("下载诗笺 Download card (PNG)", value=None, interactive=False,
                                                      elem_id="card_download")
                    copy_text = gr.Button("复制诗句 Copy text", elem_id="copy_text")
                permalink = gr.Textbox(label="链接参数 Permalink (also in the address bar)", interactive=False,
                                       elem_id="permalink", max_lines=1,
                                       info="打开带此参数的网址即得同一首诗 · the page URL with it gives this poem again")
                with gr.Accordion("同写 Write with the poet", open=True, elem_id="cowrite"):
                    gr.Markdown("点诗中任一字看合律的候选字 · click a character of the first poem for alternatives "
                                "that keep every rule. 改句并锁定，再「重写其余」· edit lines, lock them, and "
                                "regenerate the rest (fixed forms).", elem_id="cowrite_help")
                    with gr.Row(equal_height=True):
                        alt_position = gr.Number(None, label="字位 Position", precision=0, minimum=0, scale=1,
                                                 elem_id="alt_position", info="index in the poem's text")
                        alt_show = gr.Button("候选字 Alternatives", elem_id="alt_show", scale=1)
                    alt_choices = gr.Radio([], label="候选 Alternatives", elem_id="alt_choices")
                    alt_apply = gr.Button("换上 Use it", elem_id="alt_apply")
                    edit_status = gr.Markdown("", elem_id="edit_status")
                    locks, line_boxes, line_rows = [], [], []
                    for i in range(MAX_LINES):
                        with gr.Row(equal_height=True, visible=False) as row:
                            locks.append(gr.Checkbox(False, label=f"锁 {i + 1}", elem_id=f"lock_{i}", scale=0,
                                                     min_width=80, interactive=True))
                            line_boxes.append(gr.Textbox(show_label=False, elem_id=f"line_{i}", max_lines=1,
                                                         scale=4, interactive=True))
                        line_rows.append(row)
                    relax_locked = gr.Checkbox(False, label="放宽 Relax: keep locked lines that break tone or rhyme",
                                               elem_id="relax_locked")
                    gr.Markdown("改过的句子自动锁定 · an edited line is locked too", elem_id="lock_help")
                    regenerate = gr.Button("重写其余 Regenerate the rest", elem_id="regenerate")
                with gr.Accordion("诗笺 Poem card", open=False, elem_id="card_options"):
                    card_text = gr.Textbox(label="诗 Poem", elem_id="card_text", lines=2,
                                           info="第一首（可改）· the best poem (editable)")
                    with gr.Row():
                        card_title = gr.Textbox(label="题 Title", elem_id="card_title", max_lines=1)
                        card_form = gr.Textbox(label="体 Form", elem_id="card_form", max_lines=1)
                    card_marks = gr.Checkbox(True, label="标平仄 Tone marks", elem_id="card_marks",
                                             info="平 level, 仄 oblique, 中 either, beside each character")
                    redraw = gr.Button("重绘诗笺 Redraw card", elem_id="card_redraw")
                with gr.Accordion("JSON（与 /generate API 相同 · same as the API）", open=False):
                    poems_json = gr.JSON(label="result", elem_id="result_json")
        for radio in (form, script):
            escape_choice_errors(radio)
        inputs = [prompt, acrostic, form, rhyme, rhyme_strength, tones, tone_strength, temperature, top_k, top_p,
                  style, num_candidates, seed, script, theme]
        gr.Examples(EXAMPLES, inputs=[prompt, acrostic, form, style, seed, theme], label="示例 Examples (click to fill)",
                    elem_id="examples")
        after = dict(fn=after_generate, inputs=[poems_json, card_marks], api_visibility="private",
                     outputs=[card_text, card_title, card_form, card_download, permalink, *line_rows, *locks,
                              *line_boxes])
        done = go.click(generate_page, inputs, [poems_html, poems_json], api_name="generate_page",
                        api_visibility="undocumented", concurrency_id="poet", concurrency_limit=concurrency)
        done.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        again = regenerate.click(regenerate_page, [*inputs, relax_locked, poems_json, *locks, *line_boxes],
                                 [poems_html, poems_json],
                                 api_visibility="private", concurrency_id="poet", concurrency_limit=concurrency)
        again.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        alt_show.click(show_alternatives, [poems_json, alt_position], [alt_choices, edit_status],
                       api_visibility="private", concurrency_id="poet", concurrency_limit=concurrency)
        picked = alt_apply.click(apply_alternative, [poems_json, alt_position, alt_choices],
                                 [poems_html, poems_json, alt_choices, edit_status], api_visibility="private",
                                 concurrency_id="poet", concurrency_limit=concurrency)
        picked.success(**after).success(None, permalink, None, js=PERMALINK_JS)
        demo.load(None, None, None, js=CLICK_JS)
        gr.api(alternatives, api_name="alternatives", concurrency_id="poet", concurrency_limit=concurrency)
        gr.api(replace, api_name="replace", concurrency_id="poet", concurrency_limit=concurrency)
        # A permalink (?form=七绝&seed=7...): gradio hands the page's query string to this load event.
        loaded = demo.load(from_permalink, None, [*inputs, poems_html, poems_json], api_visibility="private",
                           concurrency_id="poet", concurrency_limit=concurrency)
        loaded.success(**after)
        redraw.click(card, [card_text, card_title, card_form, card_marks], card_download, api_name="card",
                     concurrency_limit=4)
        copy_text.click(None, None, None, js=COPY_JS)
        reseed.click(new_seed, None, seed, queue=False, api_visibility="private")
        gr.api(generate, api_name="generate", concurrency_id="poet", concurrency_limit=concurrency)
    return demo


# ---------------------------------------------------------------------------------------------
# The HTTP server: gradio mounted in this app's own FastAPI app, behind its request limits


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


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args, generator = _early if argv is None and _early else (parse_args(argv), None)
    # The model loads and decodes in a child process: beside this one's event loop, not taking turns with it.
    generator = wait_for_generator(generator or start_generator(args), args.model)
    if not generator.info.get("corpus"):
        log.warning("no corpus file (%s): copy reports will lack the nearest corpus poem; export the model "
                    "with `python -m train.export` or pass --corpus", args.corpus or "the model folder's corpus.npz")
    log.info("model %s ready %.1f s after start", args.model or DEFAULT_MODEL_DIR, time.perf_counter() - STARTED)
    shown = args.model or str(DEFAULT_MODEL_DIR)  # a folder by its name only: no server paths on the page
    concurrency = max(1, args.concurrency)
    demo = build_app(generator, model_name=Path(shown).name if Path(shown).is_dir() else shown,
                     concurrency=concurrency)
    demo.queue(default_concurrency_limit=concurrency, max_size=QUEUE_SIZE)
    import uvicorn

    try:
        log.info("serving on http://%s:%d (health: /health)", args.host, args.port)
        uvicorn.run(server_app(demo, generator), host=args.host, port=args.port, log_level="warning",
                    timeout_keep_alive=5, access_log=False)
    finally:
        generator.close()


if __name__ == "__main__":
    main()
