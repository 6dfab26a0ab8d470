"""Prosody of Tang verse: 平水韵 lexicon, form / rhyme / tone checking and decoding masks.

    python -m poetry_model.prosody "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    python -m poetry_model.prosody --json --strict "..."

The lexicon (`prosody_lexicon.json`, built by `python -m train.build_lexicon`) gives every
character its 平水韵 groups; tones and level-tone rhyme groups follow from them. Text in either
script works: a traditional text is read through the traditional keys, anything else through the
simplified index (the union of the readings of every traditional character that simplifies to it).
This module needs only the standard library and numpy (never torch), so the CLI starts fast.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

from .text import COUPLET_ENDS, HAN, LOST_CHAR, han_lines

if TYPE_CHECKING:  # numpy is imported where masks are built, so that the CLI starts fast
    import numpy as np

LEXICON_PATH = Path(__file__).with_name("prosody_lexicon.json")
LEXICON_FORMAT = "prosody-lexicon/1"

PING, ZE = "平", "仄"
FORMS = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}  # lines, chars per line
FORM_NAMES = ("五绝", "七绝", "五律", "七律", "五排", "七排", "古体", "杂言")
TEMPLATE_NAMES = ("平起首句入韵", "平起首句不入韵", "仄起首句入韵", "仄起首句不入韵")
# Wide (宽) level-tone groups, preferred when the rhyme is still free to choose.
WIDE_GROUPS = ("上平一东", "上平四支", "上平七虞", "上平十一真", "下平一先", "下平七阳", "下平八庚", "下平十一尤")
# Level-tone groups that Tang poets let a rhymed first line borrow from one another (首句借邻韵).
NEIGHBOUR_CLUSTERS = ("东冬", "江阳", "支微齐灰", "鱼虞", "佳灰", "真文元", "元寒删先", "萧肴豪", "佳麻", "庚青蒸", "覃盐咸")
EOP = "<EOP>"
HAN_RE = re.compile(f"[{HAN}]")


# ---------------------------------------------------------------------------------------------
# Lexicon


class Entry(NamedTuple):
    """One character's readings: 平水韵 group indices, tones, dominant Tang tone, Mandarin-guess flag."""

    groups: tuple[int, ...]
    tones: frozenset[str]
    dominant: str  # "平" / "仄" for a polyphone with a clear majority in Tang regulated verse, else ""
    guessed: bool  # no rhyme dictionary had it: the tone is a modern-Mandarin guess, no group


class Lexicon:
    """The shipped lexicon: 106 group names, the traditional table and the simplified index."""

    def __init__(self, raw: dict[str, Any]):
        if raw.get("format") != LEXICON_FORMAT:
            raise ValueError(f"unsupported prosody lexicon format {raw.get('format')!r}")
        self.groups: list[str] = raw["groups"]
        self.group_tone: list[str] = [g[0] if g[1] == "声" else PING for g in self.groups]
        self.level_groups = [i for i, t in enumerate(self.group_tone) if t == PING]
        self._tables = {"traditional": raw["traditional"], "simplified": raw["simplified"]}
        self._marks = {"traditional": frozenset(raw["traditional_marks"]),
                       "simplified": frozenset(raw["simplified_marks"])}

    def script_of(self, text: str) -> str:
        """'traditional' if the text has more traditional-only than simplified-only characters."""
        trad = sum(ch in self._marks["traditional"] for ch in text)
        simp = sum(ch in self._marks["simplified"] for ch in text)
        return "traditional" if trad > simp else "simplified"

    @cache  # noqa: B019 - one Lexicon per process (lexicon()), kept for the process's life
    def entry(self, ch: str, script: str = "simplified") -> Entry | None:
        """The readings of one character read in the given script (the other table as a fallback)."""
        first, second = (("traditional", "simplified") if script == "traditional"
                         else ("simplified", "traditional"))
        raw = self._tables[first].get(ch) or self._tables[second].get(ch)
        return None if raw is None else self._decode(raw)

    def characters(self, script: str) -> list[str]:
        """Keys of the traditional table or of the simplified index, in code point order."""
        return list(self._tables[script])

    def level(self, entry: Entry | None) -> tuple[int, ...]:
        """The level-tone (平声) groups among an entry's groups."""
        return () if entry is None else tuple(g for g in entry.groups if self.group_tone[g] == PING)

    def _decode(self, raw: list) -> Entry:
        """A JSON entry `[groups, dominant?, guessed_tone?]` as an Entry."""
        groups = tuple(raw[0])
        dominant = raw[1] if len(raw) > 1 else ""
        guess = raw[2] if len(raw) > 2 else ""
        tones = frozenset(PING if self.group_tone[g] == PING else ZE for g in groups) or frozenset(guess)
        return Entry(groups, tones, dominant, bool(guess))


@cache
def lexicon() -> Lexicon:
    """The shipped lexicon, loaded once."""
    return Lexicon(json.loads(LEXICON_PATH.read_text(encoding="utf-8")))


def _tones_of(entry: Entry | None, strict: bool) -> frozenset[str]:
    """Tones of an entry; in strict mode a polyphone keeps only its dominant Tang reading."""
    if entry is None:
        return frozenset()
    return frozenset(entry.dominant) if strict and entry.dominant else entry.tones


def char_tones(ch: str, strict: bool = False, script: str | None = None) -> frozenset[str]:
    """Tones of a character, a subset of {"平", "仄"}; empty if unknown. Script guessed if not given."""
    lex = lexicon()
    return _tones_of(lex.entry(ch, script or lex.script_of(ch)), strict)


def char_rhyme_groups(ch: str, script: str | None = None) -> tuple[str, ...]:
    """Level-tone (平声) 平水韵 groups of a character, e.g. ("下平七阳",); () if none."""
    lex = lexicon()
    return tuple(lex.groups[g] for g in lex.level(lex.entry(ch, script or lex.script_of(ch))))


def _short(group: str) -> str:
    """The rhyme word of a group name: "下平七阳" -> "阳"."""
    return group[-1]


# ---------------------------------------------------------------------------------------------
# Lines, forms and templates


split_lines = han_lines  # the lines of a poem: runs of Han characters, editorial notes dropped


def shape_form(lines: list[str]) -> str | None:
    """五绝/七绝/五律/七律/五排/七排 from the shape alone (uniform lines of 5 or 7), else None."""
    lengths = {len(line) for line in lines}
    if len(lengths) != 1 or (length := lengths.pop()) not in (5, 7):
        return None
    n_lines = len(lines)
    kind = {4: "绝", 8: "律"}.get(n_lines) or ("排" if n_lines >= 10 and n_lines % 2 == 0 else None)
    return None if kind is None else ("五" if length == 5 else "七") + kind


def _form(lines: list[str], tones: list[list[frozenset[str]]]) -> str:
    """Form from the shape; uniform lines rhymed only in oblique tones are 古体."""
    if len({len(line) for line in lines}) != 1:
        return "杂言"
    shaped = shape_form(lines)
    even_ends = [t[-1] for t in tones[1::2]]
    if shaped is None or (even_ends and all(t and PING not in t for t in even_ends)):
        return "古体"
    return shaped


def detect_form(lines: list[str]) -> str:
    """One of FORM_NAMES for a poem given as its lines (punctuation, if any, is ignored)."""
    lines = ["".join(split_lines(line)) for line in lines]
    lex = lexicon()
    script = lex.script_of("".join(lines))
    return _form(lines, [[_tones_of(lex.entry(c, script), False) for c in line] for line in lines])


def templates(form: str) -> list[str]:
    """Names of the four standard tone templates of a regulated form; [] for 古体 and 杂言."""
    return list(TEMPLATE_NAMES) if form in FORM_NAMES[:6] else []


_CORES = {(ZE, ZE): "仄仄平平仄", (PING, PING): "平平仄仄平", (PING, ZE): "平平平仄仄", (ZE, PING): "仄仄仄平平"}


def _opposite(tone: str) -> str:
    return ZE if tone == PING else PING


def template_lines(name: str, n_lines: int, length: int) -> list[str]:
    """Per-line 平/仄 patterns of a template for n lines of 5 or 7 characters (粘对 rules)."""
    if name not in TEMPLATE_NAMES or length not in (5, 7):
        raise ValueError(f"no template {name!r} for lines of {length}")
    second = PING if name.startswith("平") else ZE  # tone of the 2nd character of line 1
    core_second = second if length == 5 else _opposite(second)
    lines = []
    for i in range(n_lines):
        pivot = core_second if i % 4 in (0, 3) else _opposite(core_second)
        end = PING if i % 2 or (i == 0 and name.endswith("首句入韵")) else ZE
        core = _CORES[(pivot, end)]
        lines.append(core if length == 5 else _opposite(pivot) * 2 + core)
    return lines


@cache
def form_template_lines(form: str, name: str) -> tuple[str, ...]:
    """Per-line patterns of a template for one of FORMS."""
    n_lines, length = FORMS[form]
    return tuple(template_lines(name, n_lines, length))


@cache
def strict_positions(length: int) -> tuple[int, ...]:
    """0-based positions whose tone is fixed: 二四六分明 plus the line end (一三五不论)."""
    return tuple(sorted({1, 3, 5} & set(range(length)) | {length - 1}))


def _can(tones: frozenset[str], tone: str) -> bool:
    """Whether a character may take a tone (unknown characters may take either)."""
    return not tones or tone in tones


def _only(tones: frozenset[str], tone: str) -> bool:
    """Whether a character surely has that tone."""
    return tones == {tone}


# ---------------------------------------------------------------------------------------------
# Tone check


@dataclass
class LineCheck:
    """Tone issues of one line against one pattern: position -> message; notes are accepted licences."""

    issues: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)


def check_line(pattern: str, tones: list[frozenset[str]], next_tones: list[frozenset[str]] | None = None) -> LineCheck:
    """Issues of one line: strict positions, 特拗 and 对句救 licences, 孤平 and 三平尾."""
    out = LineCheck()
    for j in strict_positions(len(pattern)):
        if not _can(tones[j], pattern[j]):
            out.issues[j] = f"应{pattern[j]}"
    c = len(pattern) - 5  # start of the five-character core
    core = pattern[c:]
    if c + 3 in out.issues and core == "平平平仄仄" and _can(tones[c + 2], ZE) and _can(tones[c], PING):
        out.notes[c + 3] = "特拗（平平仄平仄）"
        del out.issues[c + 3]
    if c + 3 in out.issues and core == "仄仄平平仄" and next_tones and _can(next_tones[c + 2], PING):
        out.notes[c + 3] = f"拗，对句第{c + 3}字救"
        del out.issues[c + 3]
    if core == "平平仄仄平" and sum(_can(t, PING) for t in tones[c:c + 4]) <= 1:
        out.issues.setdefault(c, "孤平")
    if pattern[-1] == PING and all(_only(t, PING) for t in tones[-3:]):
        out.issues.setdefault(len(pattern) - 3, "三平尾")
    return out


@dataclass
class ToneFit:
    """How a poem fits one template."""

    template: str
    patterns: list[str]
    lines: list[LineCheck]
    checked: int

    @property
    def n_issues(self) -> int:
        return sum(len(line.issues) for line in self.lines)

    @property
    def score(self) -> float:
        return max(0.0, 1.0 - self.n_issues / self.checked) if self.checked else 1.0


def fit_template(name: str, tones: list[list[frozenset[str]]]) -> ToneFit:
    """Check uniform lines of 5 or 7 characters against one template."""
    length = len(tones[0])
    patterns = template_lines(name, len(tones), length)
    checks = [check_line(p, t, tones[i + 1] if i % 2 == 0 and i + 1 < len(tones) else None)
              for i, (p, t) in enumerate(zip(patterns, tones))]
    checked = sum(bool(t[j]) for t in tones for j in strict_positions(length))
    return ToneFit(name, patterns, checks, checked)


def best_template(tones: list[list[frozenset[str]]]) -> ToneFit:
    """The template with the fewest issues (ties: the first in TEMPLATE_NAMES)."""
    return min((fit_template(name, tones) for name in TEMPLATE_NAMES), key=lambda f: f.n_issues)


# ---------------------------------------------------------------------------------------------
# Rhyme check


@dataclass
class RhymeCheck:
    """Rhyme verdict: tone and group shared by the even lines, and per-position issues."""

    tone: str | None = None
    group: str | None = None
    rhymes: bool = False
    chars: list[str] = field(default_factory=list)
    first_line: str = "不入韵"  # 入韵 / 借邻韵 / 不入韵
    issues: dict[tuple[int, int], str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@cache
def _neighbours(short: str) -> frozenset[str]:
    """Rhyme words a first line rhymed on `short` may borrow from."""
    return frozenset(c for cluster in NEIGHBOUR_CLUSTERS if short in cluster for c in cluster) - {short}


def _best_group(ends: list[Entry | None], first: Entry | None, tone: str, lex: Lexicon) -> tuple[int | None, int]:
    """The group of that tone (平, or any oblique) shared by most even-line ends.

    Ties go to the group line 1 rhymes on, then to a wide group."""
    counts: dict[int, int] = {}
    for entry in ends:
        for g in set(entry.groups if entry else ()):
            if (lex.group_tone[g] == PING) == (tone == PING):
                counts[g] = counts.get(g, 0) + 1
    if not counts:
        return None, 0
    wide = {lex.groups.index(w) for w in WIDE_GROUPS}
    first_groups = first.groups if first else ()
    group = max(counts, key=lambda g: (counts[g], g in first_groups, g in wide, -g))
    return group, counts[group]


def check_rhyme(lines: list[str], entries: list[list[Entry | None]], tones: list[list[frozenset[str]]]) -> RhymeCheck:
    """Even lines share one group (level, or oblique for 古体); line 1 may rhyme or borrow; no 重韵."""
    lex, out = lexicon(), RhymeCheck()
    even = list(range(1, len(lines), 2))
    if not even:
        return out
    out.tone = ZE if all(tones[i][-1] and PING not in tones[i][-1] for i in even) else PING
    group, count = _best_group([entries[i][-1] for i in even], entries[0][-1], out.tone, lex)
    out.group = None if group is None else lex.groups[group]
    for i in even:
        entry = entries[i][-1]
        if group is None or entry is None or group not in entry.groups:
            out.issues[(i, len(lines[i]) - 1)] = "出韵" if entry else "韵字不明"
    _check_first_line(lines, entries, tones, group, out)
    rhyme_lines = ([0] if out.first_line != "不入韵" else []) + even
    out.chars = [lines[i][-1] for i in rhyme_lines]
    _flag_repeats(lines, rhyme_lines, out)
    out.rhymes = group is not None and count == len(even) and not any(m == "重韵" for m in out.issues.values())
    return out


def _check_first_line(lines: list[str], entries: list[list[Entry | None]], tones: list[list[frozenset[str]]],
                      group: int | None, out: RhymeCheck) -> None:
    """Whether line 1 rhymes (入韵), borrows a neighbouring group (借邻韵, warned) or ends oblique."""
    lex, entry, end = lexicon(), entries[0][-1], tones[0][-1]
    if group is None or entry is None:
        return
    if group in entry.groups:
        out.first_line = "入韵"
    elif out.tone == PING and _only(end, PING):
        main = _short(lex.groups[group])
        borrowed = [lex.groups[g] for g in entry.groups if _short(lex.groups[g]) in _neighbours(main)]
        if borrowed:
            out.first_line = "借邻韵"
            out.warnings.append(f"首句借邻韵：「{lines[0][-1]}」属{borrowed[0]}，全诗押{lex.groups[group]}")
        else:
            out.warnings.append(f"首句以平声「{lines[0][-1]}」收而不押韵")


def _flag_repeats(lines: list[str], rhyme_lines: list[int], out: RhymeCheck) -> None:
    """Flag a rhyme character used twice (重韵)."""
    seen: set[str] = set()
    for i in rhyme_lines:
        ch = lines[i][-1]
        if ch in seen:
            out.issues[(i, len(lines[i]) - 1)] = "重韵"
        seen.add(ch)


# ---------------------------------------------------------------------------------------------
# Report


_SCALARS = (str, int, float, bool, type(None))
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _plain(value: Any) -> Any:
    """What `dataclasses.asdict` makes of a value: dataclasses become dicts, containers are copied,
    immutable scalars kept, anything else deep-copied; without asdict's per-value overhead."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_plain(v) for v in value]
    names = _FIELD_NAMES.get(kind)
    if names is None and is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if kind is dict:
        return {_plain(k): _plain(v) for k, v in value.items()}
    if kind is tuple:
        return tuple(_plain(v) for v in value)
    return copy.deepcopy(value)


@dataclass
class CharNote:
    """Per-character annotation."""

    char: str
    line: int  # 1-based
    pos: int  # 1-based
    tones: str  # "平", "仄", "平仄" (polyphone) or "" (unknown)
    rhyme_groups: list[str]
    required: str  # template tone at a strict position, else ""
    rhyme: bool  # a rhyme position
    violation: str | None = None
    note: str | None = None


@dataclass
class PoemReport:
    """Result of `analyze`; `to_dict()` is the CLI's --json object."""

    text: str
    script: str
    strict: bool
    lines: list[str]
    form: str
    rhymes: bool
    rhyme_group: str | None
    rhyme_tone: str | None
    rhyme_chars: list[str]
    first_line: str
    template: str | None
    tone_score: float
    violations: list[str]
    warnings: list[str]
    chars: list[CharNote]

    def to_dict(self) -> dict[str, Any]:
        """A deep, plain copy of the report, equal to `dataclasses.asdict(self)` (several times faster)."""
        return _plain(self)

    @property
    def regulated(self) -> bool:
        """A regulated form that rhymes and follows its template without a fault."""
        return self.form in FORM_NAMES[:6] and self.rhymes and not self.violations


def analyze(text: str, strict: bool = False) -> PoemReport:
    """Form, rhyme and tone report of a poem in either script; strict = polyphones take their Tang reading."""
    lex = lexicon()
    script = lex.script_of(text)
    lines = split_lines(text)
    entries = [[lex.entry(c, script) for c in line] for line in lines]
    lenient = [[_tones_of(e, False) for e in row] for row in entries]  # a rhyme reads a polyphone 平
    tones = [[_tones_of(e, True) for e in row] for row in entries] if strict else lenient
    form = _form(lines, lenient)
    rhyme = check_rhyme(lines, entries, lenient)
    uniform = bool(lines) and len({len(line) for line in lines}) == 1 and len(lines[0]) in (5, 7)
    fit = best_template(tones) if uniform else None
    chars = _annotate(lines, entries, tones, rhyme, fit, form in FORM_NAMES[:6])
    violations = [f"第{c.line}句第{c.pos}字「{c.char}」{c.violation}" for c in chars if c.violation]
    warnings = rhyme.warnings + [f"第{c.line}句第{c.pos}字「{c.char}」{c.note}" for c in chars if c.note]
    return PoemReport(text, script, strict, lines, form, rhyme.rhymes, rhyme.group, rhyme.tone, rhyme.chars,
                      rhyme.first_line, fit.template if fit else None, round(fit.score, 4) if fit else 0.0,
                      violations, warnings, chars)


def _annotate(lines: list[str], entries: list[list[Entry | None]], tones: list[list[frozenset[str]]],
              rhyme: RhymeCheck, fit: ToneFit | None, regulated: bool) -> list[CharNote]:
    """Per-character notes; tone issues count as violations only for regulated forms."""
    lex, notes = lexicon(), []
    rhyme_lines = set(range(1, len(lines), 2)) | ({0} if rhyme.first_line != "不入韵" else set())
    for i, line in enumerate(lines):
        check = fit.lines[i] if fit else LineCheck()
        strict_pos = strict_positions(len(line))
        for j, ch in enumerate(line):
            entry, t = entries[i][j], tones[i][j]
            violation = rhyme.issues.get((i, j)) or (check.issues.get(j) if regulated else None)
            note = check.notes.get(j) or ("声调据今音推测" if entry and entry.guessed else None)
            notes.append(CharNote(
                ch, i + 1, j + 1, "".join(x for x in (PING, ZE) if x in t),
                [lex.groups[g] for g in lex.level(entry)],
                fit.patterns[i][j] if fit and j in strict_pos else "",
                j == len(line) - 1 and i in rhyme_lines, violation, note))
    return notes


# ---------------------------------------------------------------------------------------------
# Decoding masks


class StepMasks(NamedTuple):
    """Masks over the vocabulary for the next token (read-only arrays; None = no preference)."""

    structure: np.ndarray  # hard: characters vs line-end punctuation vs <EOP>
    tone: np.ndarray | None  # the tone the template wants here (with 孤平/三平尾 guards)
    rhyme: np.ndarray | None  # the rhyme group wanted at a rhyme position, rhyme characters not repeated


def _frozen(mask: np.ndarray) -> np.ndarray:
    """Mark a precomputed mask read-only so that callers cannot corrupt it."""
    mask.flags.writeable = False
    return mask


class FormMasks:
    """Boolean arrays over a vocabulary, computed once; `start` opens a FormState per poem."""

    def __init__(self, vocab: Sequence[str] | Any, *, script: str | None = None, strict: bool = False):
        tokens = list(getattr(vocab, "tokens", vocab))
        lex = lexicon()
        self.vocab, self.strict = tokens, strict
        self.script = script or getattr(vocab, "script", None) or lex.script_of("".join(
            t for t in tokens if len(t) == 1))
        self.index = {tok: i for i, tok in enumerate(tokens)}
        self._group_cache: dict[frozenset[int], np.ndarray] = {}
        self._build_token_tables(lex)
        self._build_masks(lex)

    def _build_token_tables(self, lex: Lexicon) -> None:
        """Per token: is a Han character, tones (lenient or strict) and level-tone groups.

        Tones guessed from Mandarin count when judging a token, but such tokens are left out of
        the tone masks, which offer only characters whose tone a rhyme dictionary gives."""
        self.is_char = [len(t) == 1 and t != LOST_CHAR and bool(HAN_RE.match(t)) for t in self.vocab]
        entries = [lex.entry(t, self.script) if c else None for t, c in zip(self.vocab, self.is_char)]
        tones = [_tones_of(e, self.strict) for e in entries]
        self.can_ping = [PING in t for t in tones]
        self.can_ze = [ZE in t for t in tones]
        self.known = [bool(t) for t in tones]
        self.reliable = [e is not None and not e.guessed for e in entries]
        self.level = [frozenset(lex.level(e)) for e in entries]
        self.wide = frozenset(lex.groups.index(w) for w in WIDE_GROUPS)

    def _build_masks(self, lex: Lexicon) -> None:
        """The read-only arrays that steps hand out."""
        import numpy as np

        v = len(self.vocab)
        for tok in (*COUPLET_ENDS, EOP):
            if tok not in self.index:
                raise ValueError(f"vocabulary lacks {tok!r}, needed to shape a poem")

        def one_hot(tok: str) -> np.ndarray:
            m = np.zeros(v, bool)
            m[self.index[tok]] = True
            return _frozen(m)

        self.chars = _frozen(np.array(self.is_char, bool))
        self.line_end = tuple(one_hot(t) for t in COUPLET_ENDS)
        self.eop = one_hot(EOP)
        reliable = np.array(self.reliable, bool) & self.chars
        self.ping = _frozen(np.array(self.can_ping, bool) & reliable)
        self.ze = _frozen(np.array(self.can_ze, bool) & reliable)
        self.has_tone = {"P": bool(self.ping.any()), "Z": bool(self.ze.any())}
        self.in_group = np.zeros((len(lex.groups), v), bool)
        for i, groups in enumerate(self.level):
            self.in_group[list(groups), i] = self.can_ping[i]  # strict: a polyphone read 仄 cannot rhyme
        self.in_group.flags.writeable = False
        self.first_line_open = _frozen(self.group_mask(self.wide) | self.ze)

    def group_mask(self, groups: frozenset[int]) -> np.ndarray:
        """Characters in any of the groups (cached per set of groups)."""
        mask = self._group_cache.get(groups)
        if mask is None:
            mask = self._group_cache[groups] = _frozen(self.in_group[sorted(groups)].any(axis=0))
        return mask

    def start(self, form: str, template: str | None = None, *, rhyme: bool = True, tones: bool = True,
              rng: Any = None) -> FormState:
        """A decoding state for one poem; template None = drawn with rng, or left open without one."""
        if form not in FORMS:
            raise ValueError(f"form must be one of {list(FORMS)}, got {form!r}")
        if template is None and rng is not None:
            template = TEMPLATE_NAMES[_draw(rng, len(TEMPLATE_NAMES))]
        if template is not None and template not in TEMPLATE_NAMES:
            raise ValueError(f"template must be one of {TEMPLATE_NAMES}, got {template!r}")
        names = [template] if template else list(TEMPLATE_NAMES)
        return FormState(self, form, names, rhyme=rhyme, tones=tones)


def _draw(rng: Any, n: int) -> int:
    """An index in range(n) from a numpy Generator or a random.Random."""
    return int(rng.integers(n)) if hasattr(rng, "integers") else rng.randrange(n)


@cache
def _template_codes(form: str, name: str) -> tuple[tuple[str, bool], ...]:
    """Per line: the static requirement per position ('P' 平, 'Z' 仄, '.' free) and whether 孤平 can occur.

    Strict positions take the template tone; the third-last character of a line ending 平平
    must be able to be 仄 (三平尾 guard); lines shaped 平平仄仄平 get the 孤平 guard while decoding."""
    out = []
    for pattern in form_template_lines(form, name):
        strict = strict_positions(len(pattern))
        code = [("P" if tone == PING else "Z") if j in strict else "." for j, tone in enumerate(pattern)]
        if pattern[-2:] == PING * 2:
            code[-3] = "Z"
        out.append(("".join(code), pattern[-5:] == "平平仄仄平"))
    return tuple(out)


class FormState:
    """Decoding state of one poem: templates still possible, rhyme group, used rhyme characters."""

    def __init__(self, masks: FormMasks, form: str, names: list[str], *, rhyme: bool, tones: bool):
        self.fm, self.form = masks, form
        self.n_lines, self.length = FORMS[form]
        self.alive = names
        self.use_rhyme, self.use_tones = rhyme, tones
        self.line, self.pos = 0, 0
        self.line_tokens: list[int] = []
        self.groups: frozenset[int] | None = None
        self.used_rhymes: set[int] = set()
        self.relaxations: list[str] = []
        self.done = False
        self._cached: StepMasks | None = None

    # -- masks ------------------------------------------------------------------------------

    def closes_after_char(self) -> bool:
        """Whether one more character completes the current line."""
        return self.pos == self.length - 1

    def step_masks(self) -> StepMasks:
        """Masks for the next token (computed once per step)."""
        if self._cached is None:
            self._cached = self._compute()
        return self._cached

    def _compute(self) -> StepMasks:
        fm = self.fm
        if self.done or self.line >= self.n_lines:
            return StepMasks(fm.eop, None, None)
        if self.pos == self.length:
            return StepMasks(fm.line_end[self.line % 2], None, None)
        tone = self._tone_mask() if self.use_tones else None
        rhyme = self._rhyme_mask() if self.use_rhyme else None
        return StepMasks(fm.chars, tone, rhyme)

    def _code(self, name: str) -> str:
        """Requirement of one template at the current position, with the 孤平 guard."""
        codes, lone_level_risk = _template_codes(self.form, name)[self.line]
        c = self.length - 5
        if lone_level_risk and self.pos == c + 2 and self._surely_ze(self.line_tokens[c]):
            return "P"
        return codes[self.pos]

    def _surely_ze(self, token: int) -> bool:
        return self.fm.known[token] and not self.fm.can_ping[token]

    def _tone_mask(self) -> np.ndarray | None:
        """The tone all alive templates agree on here, else None."""
        codes = {self._code(name) for name in self.alive}
        if len(codes) != 1 or "." in codes:
            return None
        (code,) = codes
        if not self.fm.has_tone[code]:
            self._relax(f"第{self.line + 1}句第{self.pos + 1}字：词表无合律字，放宽声调")
            return None
        return self.fm.ping if code == "P" else self.fm.ze

    def _first_line_rhyme_open(self) -> bool:
        return self.line == 0 and len({n.endswith("首句入韵") for n in self.alive}) == 2

    def _is_rhyme_position(self) -> bool:
        if self.pos != self.length - 1:
            return False
        return self.line % 2 == 1 or (self.line == 0 and all(n.endswith("首句入韵") for n in self.alive))

    def _rhyme_mask(self) -> np.ndarray | None:
        """Characters of the rhyme group (wide groups while free), no rhyme character twice."""
        if self.pos == self.length - 1 and self._first_line_rhyme_open():
            return self.fm.first_line_open
        if not self._is_rhyme_position():
            return None
        base = self.fm.group_mask(self.groups if self.groups else self.fm.wide)
        mask = base
        if self.used_rhymes:
            mask = base.copy()
            mask[list(self.used_rhymes)] = False
            mask.flags.writeable = False
        if not mask.any():
            self._relax(f"第{self.line + 1}句韵脚：本韵字已用尽，允许重韵")
            mask = base
        if not mask.any():
            self._relax(f"第{self.line + 1}句韵脚：词表无本韵字，放宽韵部")
            return None
        return mask

    def _relax(self, note: str) -> None:
        self.relaxations.append(note)

    # -- advancing --------------------------------------------------------------------------

    def advance(self, token_id: int) -> None:
        """Take the next token, even one outside the masks (noted in `relaxations`)."""
        self._cached = None
        tok = self.fm.vocab[token_id]
        if self.done:
            return
        if tok == EOP:
            if self.line < self.n_lines:
                self._relax(f"第{self.line + 1}句处提前结束")
            self.done = True
        elif self.line >= self.n_lines:
            self._relax(f"诗已完，忽略「{tok}」")
        elif self.pos == self.length:
            self._advance_line_end(token_id)
        elif self.fm.is_char[token_id]:
            self._advance_char(token_id)
        elif not tok.startswith("<"):  # punctuation or another symbol ends the line early
            self._relax(f"第{self.line + 1}句只有{self.pos}字")
            self._next_line()
        # any other special token (<START>, padding) carries no text and is skipped

    def _advance_line_end(self, token_id: int) -> None:
        tok = self.fm.vocab[token_id]
        if self.fm.is_char[token_id]:
            self._relax(f"第{self.line + 1}句超出{self.length}字，忽略「{tok}」")
            return
        if tok != COUPLET_ENDS[self.line % 2]:
            self._relax(f"第{self.line + 1}句末用了「{tok}」")
        self._next_line()

    def _next_line(self) -> None:
        self.line, self.pos, self.line_tokens = self.line + 1, 0, []

    def _advance_char(self, token: int) -> None:
        """Narrow the templates and the rhyme group to what this character allows."""
        fits = [n for n in self.alive if self._fits(self._code(n), token)]
        if not fits:
            self._relax(f"第{self.line + 1}句第{self.pos + 1}字「{self.fm.vocab[token]}」不合平仄")
            fits = self.alive
        if self.pos == self.length - 1 and self._first_line_rhyme_open():
            fits = self._choose_first_line(fits, token)
        self.alive = fits
        if self.use_rhyme and self._is_rhyme_position():
            self._take_rhyme(token)
        self.line_tokens.append(token)
        self.pos += 1

    def _fits(self, code: str, token: int) -> bool:
        fm = self.fm
        return code == "." or not fm.known[token] or (fm.can_ping[token] if code == "P" else fm.can_ze[token])

    def _choose_first_line(self, names: list[str], token: int) -> list[str]:
        """Line 1 rhymes if its last character can, preferring a wide group; else it is left oblique."""
        rhymed = [n for n in names if n.endswith("首句入韵")]
        unrhymed = [n for n in names if not n.endswith("首句入韵")]
        groups = self.fm.level[token]
        if rhymed and groups and (not unrhymed or groups & self.fm.wide or not self.fm.can_ze[token]):
            return rhymed
        return unrhymed or rhymed

    def _take_rhyme(self, token: int) -> None:
        """Fix or narrow the rhyme group with a character at a rhyme position."""
        groups = self.fm.level[token]
        name = self.fm.vocab[token]
        if token in self.used_rhymes:
            self._relax(f"韵字「{name}」重复")
        self.used_rhymes.add(token)
        if self.groups is None:
            self.groups = (groups & self.fm.wide or groups) or None
            if not groups:
                self._relax(f"第{self.line + 1}句韵脚「{name}」非平声韵字")
        elif groups & self.groups:
            self.groups = groups & self.groups
        else:
            self._relax(f"第{self.line + 1}句韵脚「{name}」出韵")


# ---------------------------------------------------------------------------------------------
# CLI


def format_report(report: PoemReport) -> str:
    """The annotated poem as text: header, each line with its tones, then faults and warnings."""
    rhyme = (f"押{report.rhyme_group}（{'、'.join(report.rhyme_chars)}）" if report.rhymes
             else f"不押韵（{report.rhyme_group or '无韵部'}）")
    template = report.template if report.form in FORM_NAMES[:6] else f"近体参照：{report.template or '无'}"
    out = [f"{report.form} · {template} · {rhyme} · 平仄得分 {report.tone_score:.2f}"]
    for i, line in enumerate(report.lines, 1):
        notes = [c for c in report.chars if c.line == i]
        marks = "".join("✗" if c.violation else ("韵" if c.rhyme else "　") for c in notes)
        tones = "".join(c.tones if len(c.tones) == 1 else "？" if not c.tones else "◐" for c in notes)
        need = "".join(c.required or "中" for c in notes)
        out.append(f"{line}{COUPLET_ENDS[(i - 1) % 2]}  {tones}  律:{need}  {marks}")
    out += [f"  ✗ {v}" for v in report.violations] + [f"  ! {w}" for w in report.warnings]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Print the annotated poem (or --json the report) for each poem given."""
    parser = argparse.ArgumentParser(prog="python -m poetry_model.prosody", description=__doc__.split("\n")[0])
    parser.add_argument("poem", nargs="*", help="poem text, simplified or traditional (default: stdin)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--strict", action="store_true", help="polyphones take their dominant Tang reading")
    args = parser.parse_args(argv)
    text = "".join(args.poem) or sys.stdin.read()
    if not split_lines(text):
        parser.error("no Chinese characters in the input")
    report = analyze(text, strict=args.strict)
    print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
