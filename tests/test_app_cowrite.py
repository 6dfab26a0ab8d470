"""Writing with the poet through the API: the poem card (`/card`), permalinks, couplet marks.

A real `python app.py` serving the shipped model (conftest's `shipped_server`), driven by gradio_client.
The card's PNG is read back with Pillow: its ink must form one column per line, right to left,
each as tall as its line is long.
"""
from __future__ import annotations

import io
import urllib.request
from urllib.parse import parse_qsl

import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

INK = 60  # grey level: the card's ink (30) and its anti-aliasing; frame, seal, tone marks and footer are lighter


@pytest.fixture(scope="module")
def client(shipped_server):
    return Client(shipped_server.url, verbose=False, download_files=False)


def fetch_png(file: dict, mode: str = "L") -> Image.Image:
    """The PNG a file output points at, downloaded over HTTP like any client would."""
    with urllib.request.urlopen(file["url"], timeout=30) as r:
        data = r.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert(mode)


def ink_columns(img: Image.Image) -> list[tuple[int, int, int, int]]:
    """Runs of x that hold ink, right to left, each as (x0, x1, top, bottom) of its ink."""
    grey = img.convert("L")
    w, h = grey.size
    px = grey.load()
    inked = [[y for y in range(0, h, 2) if px[x, y] < INK] for x in range(w)]
    runs, start = [], None
    for x in range(w + 1):
        has = x < w and bool(inked[x])
        if has and start is None:
            start = x
        elif not has and start is not None:
            ys = [y for col in inked[start:x] for y in col]
            runs.append((start, x - 1, min(ys), max(ys)))
            start = None
    merged: list[list[int]] = []
    for run in runs:  # a character's strokes leave small gaps inside its column: close those
        if merged and run[0] - merged[-1][1] <= 12:
            merged[-1] = [merged[-1][0], run[1], min(merged[-1][2], run[2]), max(merged[-1][3], run[3])]
        else:
            merged.append(list(run))
    return [tuple(m) for m in reversed(merged)]


def test_card_is_a_vertical_right_to_left_png(client):
    text = "白日依山尽黄河，入海流，欲穷千里，目。"   # lines of 7, 3, 4 and 1 characters
    img = fetch_png(client.predict(text, "登楼", "", False, api_name="/card"))
    assert 300 < img.width < 1200 and 300 < img.height < 1200
    columns = ink_columns(img)
    assert len(columns) == 5, columns                 # the title, then one column per line
    heights = [bottom - top for _, _, top, bottom in columns]
    title, lines = heights[0], heights[1:]
    assert title > lines[3] and lines[0] > lines[2] > lines[1] > lines[3]   # 7 > 4 > 3 > 1, right to left
    assert all(h > (x1 - x0) for (x0, x1, _, _), h in zip(columns[1:3], lines[:2]))  # taller than wide


def test_card_tone_marks_add_marks_beside_the_characters(client):
    text = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"
    plain, marked = (fetch_png(client.predict(text, "", "五绝", flag, api_name="/card"), mode="RGB")
                     for flag in (False, True))
    assert plain.size == marked.size and len(ink_columns(plain)) == len(ink_columns(marked)) == 4

    def blue(img):  # the 平 marks' colour; nothing else on a card is blue
        rgb = np.asarray(img, dtype=np.int16)
        return int(((rgb[..., 2] - rgb[..., 0]) > 80).sum())

    assert blue(plain) == 0 and blue(marked) > 200


@pytest.mark.parametrize("args, words", [
    (("", "", "", True), "text: a poem is needed"),
    (("hello，world。", "", "", True), "only Chinese characters"),
    (('<img src=x onerror="alert(1)">', "", "", True), "only Chinese characters"),
    (("春" * 60 + "。", "", "", True), "at most 40 lines of 40 characters"),
    (("春眠不觉晓。", "x" * 2000, "", True), "title is too long"),
])
def test_card_bad_inputs_are_named_and_the_server_keeps_serving(client, args, words):
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name="/card")
    assert words in str(err.value) and "<img" not in str(err.value)
    assert fetch_png(client.predict("明月。", "", "", True, api_name="/card")).height > 100


def test_permalink_round_trip_reproduces_the_poem(client):
    import app

    settings = dict(acrostic="春夏秋冬", form="七绝", temperature=0.9, tones=False, num_candidates=2)
    first = client.predict(api_name="/generate", **settings)
    query = app.permalink_query(first["request"])
    assert "seed=" in query and "tones=0" in query and "rhyme" not in query  # defaults are left out
    values, problems = app.parse_permalink(dict(parse_qsl(query)))
    assert problems == [] and values["seed"] == first["request"]["seed"]
    again = client.predict(api_name="/generate", **values)
    assert [p["text"] for p in again["poems"]] == [p["text"] for p in first["poems"]]


def test_bad_permalink_values_are_named_and_dropped():
    import app

    values, problems = app.parse_permalink({"seed": "x1", "form": "<b>", "top_k": "9999", "rhyme": "maybe",
                                            "acrostic": "春夏", "utm_source": "feed"})
    assert values == {"acrostic": "春夏"}
    assert len(problems) == 4 and any(p.startswith("seed must be a number") for p in problems)
    assert any("top_k must be an integer from 0 to 500" in p for p in problems)


def test_couplet_marks_show_each_couplets_parallelism(client):
    values = ["", "", "七律", True, 1.0, True, 1.0, 0.85, 0, 0.95, "", 1, 5, "auto"]
    page, result = client.predict(*values, api_name="/generate_page")
    scores = result["poems"][0]["parallelism"]
    assert len(scores) == 4  # lines 1-2, 3-4, 5-6, 7-8
    for i, score in enumerate(scores, 1):
        assert f"data-couplet='{i}'" in page and f"对仗 {score:.2f}</span>" in page


# ---------------------------------------------------------------------------------------------
# Locked lines, alternatives, replacing a character (the library's Poet.generate(locked=...),
# Poet.alternatives and Poet.replace, run in the server's generator process)

LOCKED = "明月何时照我还"


def test_locked_line_is_kept_verbatim(client):
    result = client.predict(form="七绝", seed=5, locked={"1": LOCKED}, api_name="/generate")
    poem = result["poems"][0]
    assert poem["lines"][1] == LOCKED + "。" and len(poem["lines"]) == 4
    assert result["request"]["locked"] == {"1": LOCKED} and poem["prosody"]["violations"] == []
    assert all(len(line) == 8 for line in poem["lines"])


def test_a_locked_line_that_breaks_the_tones_is_named_and_can_be_relaxed(client):
    with pytest.raises(AppError) as err:
        client.predict(form="七绝", seed=5, locked={"1": "一月入夜落日去"}, api_name="/generate")
    assert "locked line 1: character 4 '夜' is 仄" in str(err.value) and "relax_locked" in str(err.value)
    poem = client.predict(form="七绝", seed=5, locked={"1": "一月入夜落日去"}, relax_locked=True,
                          api_name="/generate")["poems"][0]
    assert poem["lines"][1] == "一月入夜落日去。" and any("relax_locked" in r for r in poem["relaxations"])


@pytest.mark.parametrize("locked, words", [
    ({"1": "明月"}, "locked line 1: 2 characters, 七绝 lines have 7"),
    ({"1": "hello世界你好呀"}, "outside the model's vocabulary"),
    ({"9": LOCKED}, "a line index must be an integer from 0 to 3"),
    (["明月何时照我还"], "locked must be an object"),
    ({str(i): LOCKED for i in range(9)}, "locked: at most 8 lines"),
])
def test_bad_locked_lines_are_named(client, locked, words):
    with pytest.raises(AppError) as err:
        client.predict(form="七绝", seed=5, locked=locked, api_name="/generate")
    assert words in str(err.value)


@pytest.fixture(scope="module")
def qijue(client) -> dict:
    """A 七绝 to edit (seed 5)."""
    return client.predict(form="七绝", seed=5, api_name="/generate")


def test_alternatives_keep_the_rules_and_replace_says_kept_or_recontinued(client, qijue):
    result = qijue
    text, request = result["poems"][0]["text"], result["request"]
    found = client.predict(text, 3, 6, request, api_name="/alternatives")
    alts = found["alternatives"]
    assert found["char"] == text[3] and 1 <= len(alts) <= 6
    assert [a["prob"] for a in alts] == sorted((a["prob"] for a in alts), reverse=True) and sum(a["prob"] for a in alts) <= 1.0001
    head = client.predict(text, 0, 5, {**request, "acrostic": text[0] + text[8] + text[16] + text[24]},
                          api_name="/alternatives")["alternatives"]
    assert head == [{"char": text[0], "prob": 1.0}]  # an acrostic head allows one character

    for alt in alts[:2]:
        edited = client.predict(text, 3, alt["char"], request, api_name="/replace")
        poem = edited["poems"][0]
        assert poem["text"][3] == alt["char"] and edited["edit"] in ("kept", "recontinued")
        assert poem["text"][:3] == text[:3] and len(poem["text"]) == len(text)
        if edited["edit"] == "kept":
            assert poem["text"][4:] == text[4:]
        else:  # the same settings with the text up to the new character as the prompt give it again
            assert edited["request"]["prompt"] == poem["text"][:4]
            again = client.predict(api_name="/generate", **edited["request"])["poems"][0]["text"]
            assert again == poem["text"]


@pytest.mark.parametrize("endpoint, args, words", [
    ("/alternatives", (99, 5), "position must be an integer from 0 to 31"),
    ("/alternatives", (-1, 5), "position must be an integer from 0 to 31"),
    ("/alternatives", (7, 5), "is the punctuation '，'"),
    ("/alternatives", (3, 10**9), "k must be an integer from 1 to 20"),
    ("/alternatives", (3, 0), "k must be an integer from 1 to 20"),
    ("/replace", (3, "xy"), "char must be one character"),
    ("/replace", (3, "a"), "outside the model's vocabulary"),
    ("/replace", (3, "<"), "outside the model's vocabulary: '<'"),
    ("/replace", (3, "<b>"), "char must be one character, got '&lt;b>'"),
])
def test_bad_edit_inputs_are_named_and_the_server_keeps_serving(client, qijue, endpoint, args, words):
    result = qijue
    text = result["poems"][0]["text"]
    with pytest.raises(AppError) as err:
        client.predict(text, *args, result["request"], api_name=endpoint)
    assert words in str(err.value)
    assert client.predict(text, 3, 2, result["request"], api_name="/alternatives")["alternatives"]


def test_bad_edit_texts_and_settings_are_named(client):
    for args, words in [(("hello", 1, 5, None), "text has 4 character(s) outside the model's vocabulary"),
                        (("春眠不觉晓，", 1, 5, {"nope": 1}), "unknown parameter(s): nope"),
                        (("春眠不觉晓，", 1, 5, {"form": "七绝"}), "text does not fit"),
                        (("春眠不觉晓，", 1, 5, {"locked": "x"}), "locked must be an object")]:
        with pytest.raises(AppError) as err:
            client.predict(*args, api_name="/alternatives")
        assert words in str(err.value), (args, str(err.value))
    assert client.predict("春眠不觉晓，", 1, 3, None, api_name="/alternatives")["alternatives"]


def test_theme_through_the_api_plans_the_poem_and_reports_its_words(client):
    themed = client.predict(api_name="/generate", form="五律", theme="秋夜", seed=3)
    plain = client.predict(api_name="/generate", form="五律", seed=3)
    poem = themed["poems"][0]
    assert themed["request"]["theme"] == "秋夜" and poem["theme"]["theme"] == "秋夜"
    planned, used = set(poem["theme"]["planned"]), poem["theme"]["used"]
    assert used and set(used) <= planned and all(ch in poem["text"] for ch in used)
    # the same seed without a theme: fewer of the theme's characters, and no theme report
    assert plain["poems"][0].get("theme") is None
    assert sum(ch in planned for ch in poem["text"]) > sum(ch in planned for ch in plain["poems"][0]["text"])
    with pytest.raises(AppError, match="theme"):
        client.predict(api_name="/generate", theme="秋夜" * 20)
