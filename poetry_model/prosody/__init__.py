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
import json
import sys

from ..text import COUPLET_ENDS, LOST_CHAR, han_lines
from .masks import FormMasks, FormState, StepMasks
from .readings import (
    EOP,
    FORM_NAMES,
    FORMS,
    HAN_RE,
    LEXICON_FORMAT,
    LEXICON_PATH,
    NARROW_GROUPS,
    NEIGHBOUR_CLUSTERS,
    PING,
    TEMPLATE_NAMES,
    ZE,
    Entry,
    Lexicon,
    char_rhyme_groups,
    char_tones,
    lexicon,
)
from .rules import (
    CharNote,
    LineCheck,
    PoemReport,
    RhymeCheck,
    ToneFit,
    analyze,
    best_template,
    check_line,
    check_rhyme,
    detect_form,
    fit_template,
    form_template_lines,
    shape_form,
    strict_positions,
    template_lines,
    templates,
)

__all__ = ["EOP", "FORM_NAMES", "FORMS", "HAN_RE", "LEXICON_FORMAT", "LEXICON_PATH", "LOST_CHAR", "NARROW_GROUPS", "NEIGHBOUR_CLUSTERS",
           "PING", "TEMPLATE_NAMES", "ZE", "CharNote", "Entry", "FormMasks", "FormState", "Lexicon",
           "LineCheck", "PoemReport", "RhymeCheck", "StepMasks", "ToneFit", "analyze", "best_template", "char_rhyme_groups",
           "char_tones", "check_line", "check_rhyme", "detect_form", "fit_template", "form_template_lines",
           "format_report", "han_lines", "lexicon", "main", "shape_form", "strict_positions", "template_lines",
           "templates"]


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
    if not han_lines(text):
        parser.error("no Chinese characters in the input")
    report = analyze(text, strict=args.strict)
    print(json.dumps(report.to_dict(), ensure_ascii=False) if args.json else format_report(report))
    return 0

