"""Writing with the poet: the characters that could stand at one position of a poem (/alternatives),
a poem with one of them put in (/replace), and the page's edit rows, where lines are locked or
rewritten before the rest is generated again (/generate's `locked`).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import gradio as gr

from poetry_model.generation.config import check_integer
from ui.request import DEFAULTS, MAX_LINES, BadInput, failed, request_kwargs, text_value

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
    text = text_value("text", text)
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


async def find_alternatives(generator, text: Any, position: Any, k: Any, settings: dict | None) -> dict:
    """/alternatives' JSON (see ALTERNATIVES_DOC). Bad input -> gr.Error."""
    t0 = time.perf_counter()
    raw = dict(text=text, position=position, k=k, settings=settings)
    try:
        args = edit_args(text, position, settings)
        args["k"] = check_integer("k", k, 1, MAX_ALTERNATIVES, whole_floats=True)
        found = await edit_call(generator, "alternatives", **args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message
        raise failed(exc, raw) from None
    return {"text": args["text"], "position": args["position"], "char": args["text"][args["position"]],
            "alternatives": found, "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1)}


async def replace_char(generator, text: Any, position: Any, char: Any, settings: dict | None) -> dict:
    """/replace's JSON (see REPLACE_DOC). Bad input -> gr.Error."""
    t0 = time.perf_counter()
    raw = dict(text=text, position=position, char=char, settings=settings)
    try:
        args = edit_args(text, position, settings)
        poem = await edit_call(generator, "replace", char=text_value("char", char), **args)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a message
        raise failed(exc, raw) from None
    request = {**request_of(settings), "seed": poem["seed"]}
    if poem.get("edit") == "recontinued":  # the same settings with the edited text up to the new character
        request["prompt"] = poem["text"][:args["position"] + 1]
    result = {"poems": [poem], "request": request, "settings": poem.get("settings") or {},
              "edit": poem.get("edit"), "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1)}
    return result
