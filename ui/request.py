"""A request to the app, from the page or the API: its raw values checked against this app's limits
and mapped onto `Poet.generate`'s arguments; every failure becomes a gr.Error with a clear message.

The library checks everything else (vocabulary, form and acrostic consistency, lengths), and its
ValueErrors are shown as they are, HTML-safe.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import gradio as gr

from poetry_model.generation.config import (
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
from ui.render import toast_text

log = logging.getLogger("poetry_app")

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

PAGE_PARAMS = ("prompt", "acrostic", "form", "rhyme", "rhyme_strength", "tones", "tone_strength", "temperature",
               "top_k", "top_p", "style", "num_candidates", "seed", "script", "theme")  # the page's controls, in order
APP_PARAMS = (*PAGE_PARAMS, "locked", "relax_locked")                           # /generate's arguments
# The library's defaults, in this app's conventions: the form by its Chinese name, seed -1 = random, top_k 0 = no limit.
# One candidate, as in the library: at the sampling defaults (decoding by form) the best-ranked of four
# measures worse against real poems than one poem does (24 of 30 targets against 30), at about twice its
# latency (docs/quality.md, "Current defaults").
DEFAULTS: dict[str, Any] = {**{k: GenerationConfig.default(k) for k in APP_PARAMS}, "form": "自由", "seed": -1,
                            "top_k": GenerationConfig.default("top_k") or 0}
MAX_LINES = 8                 # a 律诗: the most lines that can be locked (locking needs a fixed form)

APP_CONVENTIONS = {"form": "自由 (free), 五绝, 七绝, 五律, 七律", "top_k": "0 or null = no limit",
                   "seed": "-1 or null = a random seed (reported with the poems)",
    "locked": 'e.g. {"1": "白日依山尽"}: line 1 (from 0) kept verbatim, the others written around it'}
API_DOC = "\n".join([
    'Write poems. Returns {"poems": [...], "request", "settings", "elapsed_ms"}; each poem has text, lines, '
    "score and score_parts, prosody (per-character tones, rhyme, violations), copy (nearest corpus poem, "
    "longest shared span), seed and settings.", "", "Args:",
    *(f"    {k}: {GenerationConfig.meta(k)['help']}" + (f"; {APP_CONVENTIONS[k]}" if k in APP_CONVENTIONS else "")
      for k in APP_PARAMS)])


class BadInput(ValueError):
    """A request this app refuses before it reaches the library."""


def text_value(name: str, value: Any) -> str:
    """A text argument: null is empty, anything else a string of at most MAX_TEXT characters."""
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
    return {str(k)[:20]: text_value(f"locked line {str(k)[:20]}", v) for k, v in value.items()}


def request_kwargs(**raw: Any) -> dict[str, Any]:
    """Check the values this app owns and map its conventions onto `Poet.generate`'s arguments.

    Conventions: top_k 0 or null = no limit; seed null or -1 = a fresh random seed,
    reported with the poem; texts null = empty. The library checks the rest (vocabulary,
    form and acrostic consistency, lengths) and its ValueErrors are shown as they are."""
    unknown = sorted(set(raw) - set(APP_PARAMS))
    if unknown:
        raise BadInput(f"unknown parameter(s): {', '.join(unknown)}")
    v = {**DEFAULTS, **raw}
    top_k = None if v["top_k"] is None else check_integer("top_k", v["top_k"], 0, MAX_TOP_K, hint=" (0 = no limit)",
                                                           whole_floats=True)
    seed = None if v["seed"] is None else check_integer("seed", v["seed"], -1, MAX_SEED, hint=" (-1 = random)",
                                                        whole_floats=True)
    kwargs = dict(
        prompt=text_value("prompt", v["prompt"]), acrostic=text_value("acrostic", v["acrostic"]),
        form=text_value("form", v["form"]) or "free",
        rhyme=check_flag("rhyme", v["rhyme"]), rhyme_strength=_range("rhyme_strength", v["rhyme_strength"]),
        tones=check_flag("tones", v["tones"]), tone_strength=_range("tone_strength", v["tone_strength"]),
        temperature=_range("temperature", v["temperature"], APP_MAX_TEMPERATURE),
        top_k=top_k or None, top_p=_range("top_p", v["top_p"]),
        style=text_value("style", v["style"]), theme=text_value("theme", v["theme"]),
        num_candidates=check_integer("num_candidates", v["num_candidates"], 1, APP_MAX_CANDIDATES, whole_floats=True),
        seed=None if seed is None or seed < 0 else seed,
        script=text_value("script", v["script"]) or "auto",
        locked=_locked(v["locked"]), relax_locked=check_flag("relax_locked", v["relax_locked"]),
    )
    context = len(kwargs["style"]) + (len(kwargs["theme"]) + 1 if kwargs["theme"] else 0)  # the title: theme + 1
    check_cost(request_cost(kwargs["num_candidates"], context,
                            poem_length(kwargs["form"], DEFAULT_MAX_LENGTH)), APP_MAX_COST)
    return kwargs


def error_text(exc: BaseException) -> str:
    """An exception's message, safe for a toast."""
    return toast_text(str(exc) or type(exc).__name__)


def failed(exc: BaseException, raw: dict[str, Any]) -> gr.Error:
    """The message a failed request shows: bad input as it is, a restart as such, a bug briefly (and logged)."""
    from poetry_model.worker import WorkerError

    if isinstance(exc, ValueError):  # BadInput, the library's ValueError and its subclasses
        return gr.Error("invalid input: " + error_text(exc), title="输入有误 · Invalid input", print_exception=False)
    if isinstance(exc, WorkerError):  # a restart: the worker logs it once, not once per request
        return gr.Error(f"生成器重启中 · {error_text(exc)}", title="稍候 · Restarting", print_exception=False)
    # a bug: logged here, reported briefly there, the server carries on
    log.error("generation failed for %s", _short(raw), exc_info=exc)
    return gr.Error(f"生成失败 · generation failed ({type(exc).__name__}); please try other settings",
                    title="出错 · Error", print_exception=False)


def _short(raw: dict[str, Any]) -> str:
    """A request for the log: long texts cut, so one request cannot fill the log."""
    return repr({k: (v[:40] + f"...({len(v)})" if isinstance(v, str) and len(v) > 40 else v) for k, v in raw.items()})


def result_json(poems, kwargs: dict[str, Any], t0: float) -> dict[str, Any]:
    """The JSON result of a request: its poems, the request as this app writes it (with the seed used), the time."""
    out = [p if isinstance(p, dict) else p.to_dict() for p in poems]  # a worker sends dicts already
    settings = dict(out[0]["settings"]) if out else {}
    request = {k: kwargs[k] for k in APP_PARAMS}
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
        raise failed(exc, raw) from None
    return result_json(poems, kwargs, t0)

