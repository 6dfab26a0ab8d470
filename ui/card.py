"""A poem card: a PNG of one poem typeset the traditional way, for people to save and share.

    from ui.card import poem_card
    poem_card("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。", title="春晓", form="五绝").save("card.png")

竖排: each line of the poem is a column read top to bottom, the first line at the right, columns
following leftwards. The rightmost column holds the title (or theme) and the form; the text is
drawn as given, so a poem in traditional script stays traditional. Tone marks (optional) stand
small at the left of each character: 平 level, 仄 oblique, 中 either (a polyphone; the usual
格律 notation), from the poem's own prosody report or, for bare text, `poetry_model.prosody.analyze`.

It lives beside the app rather than in `poetry_model`: it is presentation (like render.py)
and needs Pillow and a CJK font, which loading and generating do not. Pillow comes with gradio;
the font is Debian's fonts-wqy-microhei (packages.txt installs it on a Space), found by
`find_cjk_font`, which says how to install one when none is there.

At the end, the app's side: `make_card` (the /card endpoint: checked input, a PNG file under
CARD_DIR) and `card_inputs` (what the card of a /generate result shows).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from poetry_model.generation.config import check_flag
from poetry_model.text import HAN, LINE_ENDS, split_with_punctuation

# Fonts tried in order after $POEM_CARD_FONT: Debian/Ubuntu paths of fonts that cover both scripts.
KNOWN_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
FONT_HINT = ("install one: `apt-get install fonts-wqy-microhei` (on a Hugging Face Space it is listed in "
             "packages.txt), or set POEM_CARD_FONT to a .ttf/.ttc/.otf file with Chinese glyphs")
TONE_MARK = {"平": "平", "仄": "仄", "平仄": "中"}  # 中 = either tone (可平可仄), as in 格律 charts
MAX_LINES, MAX_LINE_CHARS = 40, 40
_NOT_DRAWN = re.compile(f"[^{HAN}{LINE_ENDS}]")  # a card bigger than this would be unreadable: refused

INK, PAPER, FRAME, SEAL = (30, 30, 30), (246, 240, 226), (150, 40, 30), (178, 34, 34)
PING_COLOUR, ZE_COLOUR, EITHER_COLOUR, SUBDUED = (47, 111, 176), (183, 112, 26), (110, 110, 110), (120, 110, 95)
CELL = 64           # pixels per character, top to bottom
COLUMN = 92         # pixels per column, right to left: the character plus its tone mark and punctuation
MARGIN = 56


class CardFontError(RuntimeError):
    """No font with Chinese glyphs is installed."""


def _covers_chinese(path: str) -> bool:
    """True when the font file draws 诗 and 詩 with real glyphs (not an empty box)."""
    try:
        font = ImageFont.truetype(path, 32)
        return all(font.getmask(ch).getbbox() is not None and font.getlength(ch) > 16 for ch in "诗詩")
    except OSError:
        return False


@lru_cache(maxsize=1)
def find_cjk_font() -> str:
    """The path of a font with Chinese glyphs: $POEM_CARD_FONT, fontconfig's choice for Chinese
    (`fc-match`), then known Debian paths; CardFontError saying how to install one if none fits."""
    candidates = [os.environ.get("POEM_CARD_FONT") or ""]
    if shutil.which("fc-match"):
        for pattern in ("WenQuanYi Micro Hei", ":lang=zh-cn", ":lang=zh-tw"):
            try:
                found = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True,
                                       timeout=10).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                found = ""
            candidates.append(found)
    candidates += KNOWN_FONTS
    for path in candidates:
        if path and Path(path).is_file() and _covers_chinese(path):
            return path
    raise CardFontError("no font with Chinese glyphs found for the poem card; " + FONT_HINT)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(find_cjk_font(), size)


def _centred(draw: ImageDraw.ImageDraw, ch: str, x: float, y: float, size: int, fill) -> None:
    """One character centred on (x, y) (glyph boxes differ: centring by the box keeps columns straight)."""
    draw.text((x, y), ch, font=_font(size), fill=fill, anchor="mm")


def tone_marks_of(text: str) -> list[str]:
    """Per Han character of `text`: 平, 仄, 中 (either) or "" (unknown), from the prosody checker."""
    from poetry_model.prosody import analyze  # light (no torch), loaded only for bare-text cards

    return [TONE_MARK.get(note.tones if isinstance(note.tones, str) else "", "") for note in analyze(text).chars]


def poem_card(text: str, *, title: str = "", form: str = "", tones: list[str] | None = None,
              tone_marks: bool = False, footer: str = "") -> Image.Image:
    """The card of `text` (lines closed by ，。？！；：): 竖排, title and form at the right.

    tones: one mark per Han character (平/仄/中/""), e.g. from a generated poem's prosody report;
    with tone_marks and no tones they are computed from the text. Bad text -> ValueError."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text: a poem is needed, got an empty text")
    text = re.sub(r"\s+", "", text)
    stray = sorted(set(_NOT_DRAWN.findall(text)))
    if stray:
        shown = "".join(stray[:10])
        raise ValueError(f"text: only Chinese characters and the line ends {LINE_ENDS} go on a card, got {shown!r}")
    lines = split_with_punctuation(text)
    if len(lines) > MAX_LINES or max(len(line) for line in lines) > MAX_LINE_CHARS:
        raise ValueError(f"text: at most {MAX_LINES} lines of {MAX_LINE_CHARS} characters fit on a card")
    title, form = (title or "").strip()[:MAX_LINE_CHARS], (form or "").strip()[:12]
    marks = list(tones) if tones is not None else (tone_marks_of(text) if tone_marks else [])
    show_marks = tone_marks and any(marks)

    bodies = [line.rstrip(LINE_ENDS) for line in lines]
    rows = max(len(b) for b in bodies) + 1                 # + half a cell of punctuation, + air
    head_rows = len(title) + (len(form) + 1) // 2 + 1       # the form in half-size characters
    height = 2 * MARGIN + CELL * max(rows, head_rows, 6)
    width = 2 * MARGIN + COLUMN * (len(lines) + 1 + (1 if footer else 0))
    img = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(img)
    draw.rectangle((12, 12, width - 13, height - 13), outline=FRAME, width=3)
    draw.rectangle((20, 20, width - 21, height - 21), outline=FRAME, width=1)

    # The head column, at the right: title in ink, form in red below it.
    x = width - MARGIN - COLUMN / 2
    y = MARGIN + CELL / 2
    for ch in title:
        _centred(draw, ch, x, y, 48, INK)
        y += CELL
    if form:
        y += CELL / 4 if title else 0
        for ch in form:
            _centred(draw, ch, x, y, 26, SEAL)
            y += CELL / 2
    rule_x = width - MARGIN - COLUMN + 4
    draw.line((rule_x, MARGIN, rule_x, height - MARGIN), fill=FRAME, width=1)

    # The poem: line i is column i from the right, top to bottom.
    k = 0
    for i, (line, body) in enumerate(zip(lines, bodies)):
        x = width - MARGIN - COLUMN * (i + 1.5)
        for j, ch in enumerate(body):
            y = MARGIN + CELL * (j + 0.5)
            _centred(draw, ch, x, y, 50, INK)
            mark = marks[k] if k < len(marks) else ""
            if show_marks and mark:
                colour = PING_COLOUR if mark == "平" else ZE_COLOUR if mark == "仄" else EITHER_COLOUR
                _centred(draw, mark, x - CELL / 2 - 6, y, 17, colour)
            k += 1
        end = line[len(body):]
        if end:  # vertical punctuation sits in the upper right of the cell after the last character
            _centred(draw, end[0], x + CELL / 4 + 4, MARGIN + CELL * len(body) + CELL / 8, 30, INK)

    if footer:  # the leftmost column, small and grey, turned to read top to bottom like Latin in 竖排
        font = _font(18)
        box = font.getbbox(footer)
        strip = Image.new("RGB", (min(box[2] + 4, height - 2 * MARGIN), box[3] + 6), PAPER)
        ImageDraw.Draw(strip).text((2, 2), footer, font=font, fill=SUBDUED)
        strip = strip.rotate(-90, expand=True)
        img.paste(strip, (int(MARGIN + COLUMN / 2 - strip.width / 2), MARGIN))
    return img


# ---------------------------------------------------------------------------------------------
# The app's /card endpoint and the card of a /generate result

CARD_DIR = Path(tempfile.gettempdir()) / "poem-cards"  # this app's PNGs, before gradio copies them to its cache
CARDS_KEPT = 200                                       # older ones are deleted
CARD_DOC = ("A PNG of a poem typeset vertically (竖排, first line at the right). Args: text: the poem, lines "
            "closed by ，。？！；：; title: the title or theme shown in the first column (may be empty); form: shown "
            "under it (may be empty); tone_marks: 平/仄/中 beside each character. Returns the PNG file.")


def make_card(text: str, title: str = "", form: str = "", tone_marks: bool = True,
              tones: list[str] | None = None, footer: str = "") -> str:
    """The PNG card of a poem, written under CARD_DIR; its path. Bad input -> gr.Error."""
    import gradio as gr  # here, not above: drawing a card needs no gradio

    from ui.request import error_text, text_value

    try:
        text = text_value("text", text)
        title, form = text_value("title", title), text_value("form", form)
        image = poem_card(text, title=title, form=form, tones=tones,
                          tone_marks=check_flag("tone_marks", tone_marks), footer=footer)
    except ValueError as exc:
        raise gr.Error("invalid input: " + error_text(exc), title="输入有误 · Invalid input", print_exception=False) from None
    except CardFontError as exc:
        raise gr.Error(error_text(exc), title="缺字体 · No Chinese font", print_exception=False) from None
    CARD_DIR.mkdir(parents=True, exist_ok=True)
    old = sorted(CARD_DIR.glob("*.png"), key=lambda f: f.stat().st_mtime)[:-CARDS_KEPT]
    for f in old:
        f.unlink(missing_ok=True)
    with tempfile.NamedTemporaryFile(dir=CARD_DIR, prefix="poem-", suffix=".png", delete=False) as f:
        image.save(f, format="PNG", optimize=True)
    return f.name


def card_inputs(result: dict | None) -> tuple[str, str, str, list[str] | None, str]:
    """(text, title, form, tone marks, footer) of a result's best poem for its card ("" when none)."""
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

