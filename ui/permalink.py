"""A permalink: the settings and seed of the poem shown, as the page's query string (?form=七绝&seed=7),
and a query string read back into the page's settings, each bad value named and left at its default.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ui.request import APP_PARAMS, DEFAULTS, FORM_CHOICES, SCRIPT_CHOICES, request_kwargs

# JS: put the settings and the seed of the poem on screen into the address bar (no reload, no history entry).
PERMALINK_JS = """(query) => { if (typeof query === 'string' && query)
    history.replaceState(null, '', location.pathname + '?' + query + location.hash); return []; }"""


def permalink_query(request: dict[str, Any]) -> str:
    """The query string of a result's request: the seed used and every setting that is not the default."""
    values = {**request, "top_k": request.get("top_k") or 0}  # the library's None is this app's 0
    shown = {k: v for k, v in values.items() if k in APP_PARAMS and (k == "seed" or v != DEFAULTS[k])}
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
    for key in APP_PARAMS:
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

