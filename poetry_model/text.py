"""Text conventions shared by every module: punctuation classes, lines, scripts, the lost-character mark.

    split_lines("春眠不觉晓，处处闻啼鸟。")            # ['春眠不觉晓', '处处闻啼鸟']
    split_with_punctuation("春眠不觉晓，处处闻啼鸟。")  # ['春眠不觉晓，', '处处闻啼鸟。']
    script_of("東風")                                   # 'traditional'
"""
from __future__ import annotations

import re
from functools import lru_cache

from .vocab import SCRIPTS, to_script

__all__ = ["LINE_ENDS", "SENTENCE_ENDS", "COUPLET_ENDS", "ASCII_PUNCTUATION", "LOST_CHAR", "HAN", "SCRIPTS",
           "split_lines", "han_lines", "split_with_punctuation", "script_of", "to_script"]

LINE_ENDS = "，。？！；："          # any of these closes a line
SENTENCE_ENDS = "。？！"           # the line ends that close a sentence (a poem may stop after one)
COUPLET_ENDS = ("，", "。")        # regulated verse: odd lines end with a comma, even lines with a full stop
ASCII_PUNCTUATION = str.maketrans(",.?!;:", LINE_ENDS)
LOST_CHAR = "□"                    # the corpus's mark for a lost character: part of a line, never generated
HAN = f"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f{LOST_CHAR}"  # a regex class body

_LINE_SPLIT = re.compile(f"[{LINE_ENDS}]")
_WITH_PUNCTUATION = re.compile(f"[^{LINE_ENDS}]+[{LINE_ENDS}]?")
_HAN_RUN = re.compile(f"[{HAN}]+")
NOTE_RE = re.compile(r"（[^（）]*）|\([^()]*\)|《[^《》]*》|\{[^{}]*\}|【[^【】]*】")  # editorial notes


def split_lines(text: str) -> list[str]:
    """The non-empty lines of a poem, without their punctuation (a line ends at any of LINE_ENDS)."""
    return [line for line in _LINE_SPLIT.split(text) if line]


def han_lines(text: str) -> list[str]:
    """The lines of any text: runs of Han characters between any other characters, editorial notes dropped."""
    return _HAN_RUN.findall(NOTE_RE.sub("", text))


def split_with_punctuation(text: str) -> list[str]:
    """Lines with their closing punctuation: "".join of them is the text."""
    return _WITH_PUNCTUATION.findall(text)


@lru_cache(maxsize=4096)
def script_of(text: str) -> str | None:
    """'simplified' or 'traditional' when the text shows it, None when it reads the same in both."""
    if not text:
        return None
    as_simplified, as_traditional = to_script(text, "simplified"), to_script(text, "traditional")
    if as_simplified != text and as_traditional == text:
        return "traditional"
    if as_traditional != text and as_simplified == text:
        return "simplified"
    return None
