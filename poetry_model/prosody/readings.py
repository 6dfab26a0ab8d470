"""The 平水韵 lexicon: each character's rhyme groups and tones, in either script."""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..text import HAN

if TYPE_CHECKING:  # numpy is imported where masks are built, so that the CLI starts fast
    pass

LEXICON_PATH = Path(__file__).resolve().parent.parent / "prosody_lexicon.json"
LEXICON_FORMAT = "prosody-lexicon/1"

PING, ZE = "平", "仄"
FORMS = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}  # lines, chars per line
FORM_NAMES = ("五绝", "七绝", "五律", "七律", "五排", "七排", "古体", "杂言")
TEMPLATE_NAMES = ("平起首句入韵", "平起首句不入韵", "仄起首句入韵", "仄起首句不入韵")
# The six narrow (险韵) level-tone groups: few characters, and each is the rhyme of under 0.4% of the
# rhymed Tang 近体 in the corpus (every other level group: 1.1-8.5%, 98.9% in all). A rhyme still free
# to choose takes any other level group; offering only the eight widest (东支虞真先阳庚尤, half of real
# poems) had left out rhymes such as 来开回, 归飞, 云闻, 心 and 家花.
NARROW_GROUPS = ("上平三江", "上平九佳", "下平三肴", "下平十三覃", "下平十四盐", "下平十五咸")
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
        self.common_groups = frozenset(i for i in self.level_groups if self.groups[i] not in NARROW_GROUPS)
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
