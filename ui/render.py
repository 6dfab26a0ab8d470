"""HTML of generated poems for the app: each line, each character with its tone, rhyme and
violation marks, then scores, the copy report and the settings that reproduce the poem.

Input is the JSON of `Poem.to_dict()`; every text taken from it is HTML-escaped (poems hold
only vocabulary characters, but settings echo the user's input and titles come from the corpus).
`toast_text` makes a message safe for Gradio's toasts, which render HTML.
"""
from __future__ import annotations

import html
import re
from typing import Any

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")   # the only ways "<" opens markup in HTML
_ENTITY = re.compile(r"&(?=[#A-Za-z])")


def toast_text(text: str) -> str:
    """Text for gr.Error / gr.Warning, whose toasts render HTML: every tag, comment or entity the
    text could open is neutralised, so it shows as typed; plain messages ("x >= 0") stay readable
    for API clients."""
    return _TAG_START.sub("&lt;", _ENTITY.sub("&amp;", text))


POEM_CSS = """
.poems { display: flex; flex-direction: column; gap: 14px; }
.poem-card, .poem-draft { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 12px 18px;
                          background: var(--background-fill-secondary); }
.poem-head { font-size: 0.9em; color: var(--body-text-color-subdued); margin-bottom: 4px; }
.poem-head b { color: var(--body-text-color); }
.poem-line { font-family: "Noto Serif CJK SC", "Source Han Serif SC", "WenQuanYi Micro Hei", serif;
             font-size: 1.7em; line-height: 2.3; letter-spacing: 0.06em; }
.poem-line ruby { ruby-position: over; padding: 0 1px; }
.poem-line rt { font-size: 0.42em; letter-spacing: 0; color: var(--body-text-color-subdued); }
.poem-line .ping rt { color: #2f6fb0; }
.poem-line .ze rt { color: #b7701a; }
.poem-line .rhyme { border-bottom: 3px double #c0392b; }
.poem-line .bad { background: rgba(220, 53, 69, 0.18); border-radius: 4px; outline: 1px solid #dc3545; }
.poem-line .note { text-decoration: underline dotted; }
.poem-line .punct { color: var(--body-text-color-subdued); }
.poem-line .couplet { font-family: var(--font); font-size: 0.45em; letter-spacing: 0; margin-left: 0.8em;
                      padding: 1px 6px; border-radius: 8px; vertical-align: middle;
                      color: var(--body-text-color-subdued); border: 1px solid var(--border-color-primary); }
.poem-line .lock { font-family: var(--font); font-size: 0.45em; margin-left: 0.6em; padding: 1px 5px;
                   border-radius: 6px; background: #f3e2c7; color: #8a5a00; vertical-align: middle; }
.poems:not(.streaming) .poem-card:first-child ruby[data-pos] { cursor: pointer; }
.poems:not(.streaming) .poem-card:first-child ruby[data-pos]:hover { background: rgba(47, 111, 176, 0.15);
                                                                     border-radius: 4px; }
.poem-line ruby.picked { outline: 2px solid #2f6fb0; border-radius: 4px; }
.poem-meta { font-size: 0.88em; margin-top: 6px; line-height: 1.6; }
.poem-meta .bad-list { color: #c0392b; }
.poem-meta code { font-size: 0.95em; }
.poem-legend { font-size: 0.82em; color: var(--body-text-color-subdued); }
.poem-empty { color: var(--body-text-color-subdued); font-style: italic; }
"""

LEGEND = ("注 Legend: 字上 <span style='color:#2f6fb0'>平</span>/<span style='color:#b7701a'>仄</span> = tone, "
          "「平仄」 = either (polyphone); <span style='border-bottom:3px double #c0392b'>双下划线</span> = rhyme "
          "position; <span style='background:rgba(220,53,69,.18);outline:1px solid #dc3545'>红底</span> = "
          "violation (hover for details); 对仗 n = a couplet's parallelism.")

E = html.escape


def _fmt(x: Any, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else E(str(x))


def _char_html(ch: str, note: dict | None, pos: int | None = None) -> str:
    """One character with its tone above and classes for rhyme, violation and notes; `pos` (its index
    in the poem's text) lets a click on it ask for alternatives."""
    at = "" if pos is None else f" data-pos='{pos}'"
    if note is None:
        return f"<ruby{at}>{E(ch)}<rt>&nbsp;</rt></ruby>"
    tones = note.get("tones") or ""
    cls = ["ping" if tones == "平" else "ze" if tones == "仄" else "both" if tones else "unknown"]
    tips = [f"{tones or '?'}声" if tones else "声调不明 unknown tone"]
    if note.get("rhyme_groups"):
        tips.append("韵部 " + "、".join(map(str, note["rhyme_groups"])))
    if note.get("required"):
        tips.append(f"格律要求 {note['required']}")
    if note.get("rhyme"):
        cls.append("rhyme")
        tips.append("韵脚 rhyme position")
    if note.get("violation"):
        cls.append("bad")
        tips.append(f"违例 violation: {note['violation']}")
    if note.get("note"):
        cls.append("note")
        tips.append(str(note["note"]))
    return (f"<ruby class='{' '.join(cls)}'{at} title='{E(' · '.join(tips))}'>{E(ch)}"
            f"<rt>{E(tones or '?')}</rt></ruby>")


def _couplet_html(index: int, score: Any) -> str:
    """The 对仗 mark of couplet `index` (lines 2i+1 and 2i+2), shown after its second line."""
    a, b = 2 * index + 1, 2 * index + 2
    return (f"<span class='couplet' data-couplet='{index + 1}' title='对仗 parallelism of lines {a}-{b}: mean "
            f"aligned PMI of opposite characters under real couplets (higher = more parallel)'>"
            f"对仗 {_fmt(score)}</span>")


def _lines_html(poem: dict) -> str:
    """The poem line by line; prosody notes matched to characters in order (none -> plain); each
    couplet's 对仗 score (the poem's `parallelism`) after its second line."""
    notes = list((poem.get("prosody") or {}).get("chars") or [])
    couplets = poem.get("parallelism") or []
    locked = {str(i) for i in ((poem.get("settings") or {}).get("locked") or {})}
    k, pos, rows = 0, 0, []
    for i, line in enumerate(poem.get("lines") or [poem.get("text", "")]):
        parts = []
        for ch in line:
            if k < len(notes) and notes[k].get("char") == ch:
                parts.append(_char_html(ch, notes[k], pos))
                k += 1
            elif ch in "，。？！；：、":
                parts.append(f"<span class='punct'>{E(ch)}</span>")
            else:
                parts.append(_char_html(ch, None, pos))
            pos += 1
        if str(i) in locked:
            parts.append("<span class='lock' title='锁定 locked: kept verbatim'>锁</span>")
        if i % 2 == 1 and i // 2 < len(couplets):
            parts.append(_couplet_html(i // 2, couplets[i // 2]))
        cls = "poem-line locked" if str(i) in locked else "poem-line"
        rows.append(f"<div class='{cls}' data-text='{E(line)}'>{''.join(parts)}</div>")
    return "".join(rows)


def render_partial(lines: list[str]) -> str:
    """The lines of the poem being written (candidate 0), shown while the rest is decoded (a draft, not
    yet a `.poem-card`: what reads the page waits for the finished poems)."""
    rows = "".join(f"<div class='poem-line' data-text='{E(line)}'>"
                   + "".join(f"<ruby>{E(ch)}<rt>&nbsp;</rt></ruby>" for ch in line) + "</div>" for line in lines)
    return (f"<div class='poems streaming'><div class='poem-draft'><div class='poem-head'>写作中 writing… "
            f"{len(lines)} 句 line(s)</div><div class='poem'>{rows}</div></div></div>")


def _ref(ref: dict | None) -> str:
    if not ref:
        return "—"
    return f"《{E(str(ref.get('title', '')))}》 {E(str(ref.get('author', '')))}"


def _copy_html(copy: dict) -> str:
    if not copy:
        return "复制检查 copy check: —"
    bits = [f"最近的古诗 nearest: {_ref(copy.get('nearest'))}"]
    if copy.get("similarity") is not None:
        bits[-1] += f" (相似度 similarity {_fmt(copy['similarity'])})"
    if copy.get("longest_span"):
        bits.append(f"最长共享片段 longest shared span 「{E(str(copy['longest_span']))}」"
                    f" ({copy.get('longest_span_chars')} 字, {_ref(copy.get('span_poem'))})")
    copied = copy.get("copied_lines") or []
    bits.append(f"整句照抄 copied lines: {E('、'.join(map(str, copied))) if copied else '无 none'}")
    if copy.get("avoided"):
        bits.append(f"已避开 avoided {int(copy['avoided'])} corpus line(s)")
    if copy.get("note"):
        bits.append(E(str(copy["note"])))
    return "复制检查 copy report: " + " · ".join(bits)


def _settings_html(poem: dict) -> str:
    s = poem.get("settings") or {}
    shown = [f"seed=<b>{E(str(poem.get('seed', s.get('seed'))))}</b>",
             f"candidate #{E(str(poem.get('candidate', 0)))} of {E(str(s.get('num_candidates', 1)))}"]
    for key in ("form", "theme", "prompt", "acrostic", "style", "rhyme", "rhyme_strength", "tones", "tone_strength",
                "temperature", "top_k", "top_p", "script"):
        if key in s and s[key] not in ("", None):
            shown.append(f"{key}={E(str(s[key]))}")
    return "复现 reproduce: <code>" + ", ".join(shown) + "</code>"


def render_poem(poem: dict) -> str:
    pros = poem.get("prosody") or {}
    parts = poem.get("score_parts") or {}
    head = (f"<b>#{E(str(poem.get('rank', '?')))}</b> · {E(str(pros.get('form') or poem.get('form', '')))}"
            f" · 总分 score <b>{_fmt(poem.get('score'))}</b> ("
            + ", ".join(f"{E(str(k))} {_fmt(v)}" for k, v in parts.items()) + ")")
    rhyme = (f"押韵 rhyme: {'✓' if pros.get('rhymes') else '✗'} {E(str(pros.get('rhyme_group') or ''))}"
             f" · 平仄 tones {_fmt(pros.get('tone_score'))} {E(str(pros.get('template') or ''))}")
    meta = [rhyme]
    if pros.get("violations"):
        meta.append("<span class='bad-list'>违例 violations: " + "；".join(E(str(v)) for v in pros["violations"])
                    + "</span>")
    if pros.get("warnings"):
        meta.append("提示 notes: " + "；".join(E(str(w)) for w in pros["warnings"]))
    theme = poem.get("theme")
    if theme:
        meta.append(f"主题 theme 「{E(str(theme.get('theme', '')))}」: 各句关键字 line keywords "
                    f"{E(' '.join(map(str, theme.get('keywords') or [])))} · 用到 used "
                    f"{E(' '.join(map(str, theme.get('used') or []))) or '—'}")
    if poem.get("edit"):
        meta.append("改字 edit: " + ("保留 kept — the rest still fits every rule" if poem["edit"] == "kept" else
                                     "重写 re-continued — the rest was written again from the new character"))
    if poem.get("relaxations"):
        meta.append("放宽 relaxed: " + "；".join(E(str(r)) for r in poem["relaxations"]))
    meta += [_copy_html(poem.get("copy") or {}), _settings_html(poem)]
    return (f"<div class='poem-card'><div class='poem-head'>{head}</div>"
            f"<div class='poem'>{_lines_html(poem)}</div>"
            f"<div class='poem-meta'>{'<br>'.join(meta)}</div></div>")


def render_result(result: dict) -> str:
    poems = result.get("poems") or []
    if not poems:
        return "<div class='poem-empty'>没有诗 · no poem</div>"
    cards = "".join(render_poem(p) for p in poems)
    return f"<div class='poems'>{cards}<div class='poem-legend'>{LEGEND}</div></div>"
