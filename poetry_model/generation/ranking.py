"""Ranking: the score of a finished poem, its parts, and the order candidates are returned in.

Score (higher is better), each part returned in `score_parts`:
  lm       mean natural-log probability per sampled token, under the model's own unconstrained
           distribution (forced tokens such as heads and form punctuation are not counted);
  prosody  PROSODY_WEIGHT * (0.5 * rhymes + 0.5 * tone_score) from the prosody checker;
  novelty  -(COPIED_LINE_WEIGHT * lines equal to a corpus line
             + SPAN_WEIGHT * characters of the longest span shared with the corpus beyond FREE_SPAN);
  coherence  COHERENCE_WEIGHT * mean PMI of the character pairs across adjacent lines in real 绝句 and
           律诗 (`themes.LinePairs`; 0 without the model folder's corpus);
  parallelism  PARALLEL_WEIGHT * mean aligned PMI of the couplets written parallel (a 律诗's middle
           couplets; 0 where none is);
  theme    THEME_WEIGHT * share of the poem's characters that the theme's plan holds (0 without a theme);
  repeats  -REPEAT_WEIGHT * repeated characters other than 叠字 (`accidental_repeats`: each use of a
           character after its first, a doubling inside a line such as 萧萧 counting as one use);
  breadth  -BREADTH_WEIGHT * mean natural-log unigram probability of the poem's characters in the
           model folder's corpus (`Indexes.char_log_prob`; 0 without it): with lm, a pointwise mutual
           information, so a candidate wins by characters its context predicts, not by common ones;
  locked_fit  (only when a written line comes before a locked one) LOCKED_FIT_WEIGHT * the mean
           log-probability of the locked lines' characters after the first written line.
The weights were chosen by measurement (docs/quality.md, "Ranking"): the log-probability alone
prefers bland, typical text; these parts prefer candidates that read like real poems.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..couplets import CoupletTable
from ..text import LINE_ENDS, SENTENCE_ENDS

if TYPE_CHECKING:
    from .poet import Poem

PROSODY_WEIGHT, COPIED_LINE_WEIGHT, SPAN_WEIGHT, FREE_SPAN = 1.0, 1.0, 0.25, 4
COHERENCE_WEIGHT, PARALLEL_WEIGHT, THEME_WEIGHT = 4.0, 1.0, 2.0
LOCKED_FIT_WEIGHT = 1.0
REPEAT_WEIGHT, BREADTH_WEIGHT = 0.2, 0.2


def score_parts(mean_log_prob: float, report, copy: dict, *, coherence: float = 0.0, parallelism: float = 0.0,
                theme: float = 0.0, repeats: int = 0, unigram: float = 0.0,
                locked_fit: float | None = None) -> dict[str, float]:
    """The documented score: lm + prosody + novelty + coherence + parallelism + theme + repeats + breadth
    (+ locked_fit; see the module docstring)."""
    prosody = PROSODY_WEIGHT * (0.5 * bool(report.rhymes) + 0.5 * float(report.tone_score)) if report else 0.0
    span = copy.get("longest_span_chars") or 0
    novelty = -(COPIED_LINE_WEIGHT * len(copy["copied_lines"]) + SPAN_WEIGHT * max(0, span - FREE_SPAN))
    parts = {"lm": mean_log_prob, "prosody": prosody, "novelty": novelty, "coherence": COHERENCE_WEIGHT * coherence,
             "parallelism": PARALLEL_WEIGHT * parallelism, "theme": THEME_WEIGHT * theme,
             "repeats": -REPEAT_WEIGHT * repeats, "breadth": -BREADTH_WEIGHT * unigram}
    if locked_fit is not None:
        parts["locked_fit"] = LOCKED_FIT_WEIGHT * locked_fit
    return {k: round(v, 4) + 0.0 for k, v in parts.items()}


def accidental_repeats(lines: list[str]) -> int:
    """Uses of a character after its first in a poem (`lines` without punctuation), a 叠字 (a character
    doubling the one before it inside a line) counting as one use, as the `Repetition` constraint counts."""
    seen: set[str] = set()
    count = 0
    for line in lines:
        for k, ch in enumerate(line):
            if k and line[k - 1] == ch and (k < 2 or line[k - 2] != ch):
                continue  # the second of a 叠字: one use with the first (a third in a row is a repeat)
            count += ch in seen
            seen.add(ch)
    return count


def couplet_scores(couplets: CoupletTable | None, lines: list[str]) -> list[float] | None:
    """Each couplet's parallelism (mean aligned PMI of lines 1-2, 3-4, … under the couplet table) of a
    绝句 or 律诗 in the model's script (`lines` with their punctuation); None without a table or such a poem."""
    han = [line[:-1] for line in lines]
    if couplets is None or len(han) not in (4, 8) or len({len(x) for x in han}) != 1:
        return None
    return [round(couplets.score(han[k], han[k + 1]), 3) for k in range(0, len(han), 2)]


def parallel_part(couplets: list[float] | None, parallel: list[int]) -> float:
    """The parallelism part's input: the mean score of the couplets written parallel (0 where none is)."""
    return sum(couplets[k] for k in parallel) / len(parallel) if couplets and parallel else 0.0


def ranked(poems: list[Poem]) -> list[Poem]:
    """Best score first (ties: batch order), duplicates dropped, ranks numbered from 1."""
    seen, out = set(), []
    for poem in sorted(poems, key=lambda p: (-p.score, p.candidate)):
        if poem.text not in seen:
            seen.add(poem.text)
            poem.rank = len(out) + 1
            out.append(poem)
    return out


def finished_text(text: str) -> str:
    """A poem cut by its budget after a comma ends with a full stop instead."""
    return text[:-1] + "。" if text and text[-1] in LINE_ENDS and text[-1] not in SENTENCE_ENDS else text
