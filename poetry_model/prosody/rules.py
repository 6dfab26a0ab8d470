"""Forms, templates, rhyme and tone checks, and the poem report."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any

from ..text import han_lines
from .readings import FORM_NAMES, FORMS, NEIGHBOUR_CLUSTERS, PING, TEMPLATE_NAMES, ZE, Entry, Lexicon, _short, _tones_of, lexicon

# ---------------------------------------------------------------------------------------------
# Lines, forms and templates


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
    lines = ["".join(han_lines(line)) for line in lines]
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

    Ties go to the group line 1 rhymes on, then to a common (not 险韵) group."""
    counts: dict[int, int] = {}
    for entry in ends:
        for g in set(entry.groups if entry else ()):
            if (lex.group_tone[g] == PING) == (tone == PING):
                counts[g] = counts.get(g, 0) + 1
    if not counts:
        return None, 0
    first_groups = first.groups if first else ()
    group = max(counts, key=lambda g: (counts[g], g in first_groups, g in lex.common_groups, -g))
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
    lines = han_lines(text)
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
