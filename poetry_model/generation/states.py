"""Where a candidate stands in its poem, and the token masks its constraints are made of.

`FreeState` tracks free verse and `prosody.FormState` the fixed forms, behind one `LineState`
protocol; `TokenClasses` are the vocabulary's fixed masks (characters, line ends, <EOP>);
`MaskVectors` sums the cached layers of the constraints once per combination.
"""
from __future__ import annotations

import math
import unicodedata
from typing import Any, Protocol

import numpy as np

from ..prosody import FormMasks, FormState, StepMasks
from ..prosody.masks import _template_codes
from ..text import LINE_ENDS, SENTENCE_ENDS
from ..vocab import EOP

MAX_FREE_LINE = 12      # longest free-verse line, in characters
MIN_FREE_LINES = 4      # free verse without an acrostic or a form ends no earlier than a quatrain


def _frozen(mask: np.ndarray) -> np.ndarray:
    mask.flags.writeable = False
    return mask


def han_tokens(tokens: list[str]) -> np.ndarray:
    """Which tokens are one Han character (not punctuation, not <EOP> or another special token)."""
    return np.array([len(t) == 1 and unicodedata.category(t) == "Lo" for t in tokens])


class TokenClasses:
    """Boolean masks over a vocabulary: Han characters, line ends, sentence ends, <EOP>; built once."""

    def __init__(self, tokens: list[str]):
        self.eop_id = tokens.index(EOP)
        self.char = _frozen(han_tokens(tokens))
        self.line_end = _frozen(np.isin(tokens, list(LINE_ENDS)))
        self.sentence_end = _frozen(np.isin(tokens, list(SENTENCE_ENDS)))
        self.eop = _frozen(np.arange(len(tokens)) == self.eop_id)
        # What a generated token may ever be: no <START>, padding, the lost-character mark or stray marks.
        self.keep = _frozen(self.char | self.line_end | self.eop)
        self.start = self.char
        self.start_or_eop = _frozen(self.char | self.eop)
        self.within = {False: _frozen(self.char | self.line_end), True: _frozen(self.char | self.sentence_end)}
        self.close = {False: self.line_end, True: self.sentence_end}


# ---------------------------------------------------------------------------------------------
# Line states: where a candidate stands in its poem


class LineState(Protocol):
    """What a candidate's structure tracks: prosody.FormState for the forms, FreeState for free verse."""

    relaxations: list[str]

    def step_masks(self) -> StepMasks:
        """Structure, tone and rhyme masks of the next token (the same arrays until `advance`)."""

    def advance(self, token_id: int) -> None: ...

    def closes_after_char(self) -> bool:
        """Whether one more character would have to end the current line (so it completes the line)."""


class FreeState:
    """Free-verse line state: lines of Han characters, a budget, and the end of the poem."""

    def __init__(self, classes: TokenClasses, lines: int | None, budget: int):
        self.tc, self.lines, self.budget = classes, lines, budget
        self.used, self.line_len, self.lines_done, self.last_sentence = 0, 0, 0, False
        self.relaxations: list[str] = []
        self.done = False

    def step_masks(self) -> StepMasks:
        tc, remaining = self.tc, self.budget - self.used
        if self.done or remaining < (2 if self.line_len == 0 else 1):
            return StepMasks(tc.eop, None, None)
        if self.line_len == 0:
            if self.lines is not None and self.lines_done >= self.lines:
                return StepMasks(tc.eop, None, None)
            # A poem ends after a full sentence and at least MIN_FREE_LINES lines: the model alone
            # tends to stop after one couplet, far shorter than the corpus (7.9 lines on average).
            can_end = self.lines is None and self.lines_done >= MIN_FREE_LINES and self.last_sentence
            return StepMasks(tc.start_or_eop if can_end else tc.start, None, None)
        # End with a full stop on the last line, or when no further line fits in the budget.
        sentence = self._lines_left() == 1 and (self.lines is not None or remaining < 3)
        full = self._line_full(self.line_len, remaining)
        return StepMasks((tc.close if full else tc.within)[sentence], None, None)

    def _lines_left(self) -> int:
        return self.lines - self.lines_done if self.lines is not None else 1

    def _line_full(self, line_len: int, remaining: int) -> bool:
        """Whether a line this long must end now: at most MAX_FREE_LINE, and room left for the lines to come."""
        return line_len >= MAX_FREE_LINE or remaining < 2 * self._lines_left()

    def closes_after_char(self) -> bool:
        return self._line_full(self.line_len + 1, self.budget - self.used - 1)

    def advance(self, token_id: int) -> None:
        if self.done:
            return
        if token_id == self.tc.eop_id:
            self.done = True
            return
        self.used += 1
        if self.tc.line_end[token_id]:
            self.lines_done += self.line_len > 0
            self.last_sentence, self.line_len = bool(self.tc.sentence_end[token_id]), 0
        else:
            self.line_len += 1


class LockedFormState(FormState):
    """A FormState whose tone templates and rhyme group are fixed in advance by locked lines.

    The decoder writes left to right, so a line written before a locked one must already follow
    the template and rhyme group that the locked line implies: the templates are narrowed to those
    every locked character fits, the rhyme group to the locked rhyme characters' common group, and
    those rhyme characters are kept out of the other lines' rhymes. A locked line that breaks the
    tone pattern or the rhyme raises ValueError naming the character and the rule, unless `relax`
    names a reason for that rule (relax_locked, or a strength below 1): then each break is listed
    in `relaxations`."""

    def __init__(self, fm: FormMasks, form: str, names: list[str], *, rhyme: bool, tones: bool,
                 locked: dict[int, list[int]], relax: dict[str, str | None]):
        super().__init__(fm, form, names, rhyme=rhyme, tones=tones)
        self.locked = locked
        self.reserved: set[int] = set()      # locked rhyme characters: no other line rhymes with them
        self._open_cache: dict[frozenset, np.ndarray] = {}
        self._unreserved: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(rhyme mask) -> (it, it minus reserved)
        if tones:
            self._fit_templates(relax["tone"])
        if rhyme:
            self._fix_rhyme(relax["rhyme"])

    # -- set up -------------------------------------------------------------------------------------

    def _breaks(self, name: str) -> list[str]:
        """The tone breaks of the locked lines under one template."""
        out = []
        c = self.length - 5
        for line, toks in sorted(self.locked.items()):
            codes, lone_level_risk = _template_codes(self.form, name)[line]
            for pos, tok in enumerate(toks):
                code = codes[pos]
                if lone_level_risk and pos == c + 2 and self._surely_ze(toks[c]):
                    code = "P"  # 孤平: a surely-仄 first character of the core needs a 平 third
                if not self._fits(code, tok):
                    want, has = ("平", "仄") if code == "P" else ("仄", "平")
                    out.append(f"locked line {line}: character {pos + 1} {self.fm.vocab[tok]!r} is {has}, "
                               f"the tone pattern ({name}) wants {want} there")
        return out

    def _fit_templates(self, relax: str | None) -> None:
        breaks = {name: self._breaks(name) for name in self.alive}
        fewest = min(len(b) for b in breaks.values())
        if fewest:
            best = next(b for b in breaks.values() if len(b) == fewest)
            self._broken(f"no {self.form} tone pattern fits every locked line: {'; '.join(best)}", relax)
        self.alive = [name for name in self.alive if len(breaks[name]) == fewest]

    def _fix_rhyme(self, relax: str | None) -> None:
        """The rhyme group from the locked lines that must rhyme (every even line; the first when it must)."""
        must = [line for line in self.locked if line % 2 == 1]
        if 0 in self.locked and all(n.endswith("首句入韵") for n in self.alive):
            must.insert(0, 0)
        groups: frozenset[int] | None = None
        for line in sorted(must):
            tok = self.locked[line][-1]
            level, name = self.fm.level[tok], self.fm.vocab[tok]
            if not level or not self.fm.can_ping[tok]:
                self._broken(f"locked line {line} ends with {name!r}, which is not a 平声 rhyme character "
                             f"(a {self.form} rhymes its even lines in 平声)", relax)
            elif groups is not None and not level & groups:
                self._broken(f"locked line {line} ends with {name!r}, outside the rhyme group of the locked "
                             "lines before it", relax)
            else:
                groups = level if groups is None else level & groups
            self.reserved.add(tok)
        if groups:
            self.groups = groups & self.fm.common or groups
        if 0 in self.locked and 0 not in must and self.groups is not None:
            tok = self.locked[0][-1]  # an open first line joins the rhyme only with a character of its group
            if not self.fm.level[tok] & self.groups:
                self.alive = [n for n in self.alive if not n.endswith("首句入韵")] or self.alive

    def _broken(self, note: str, relax: str | None) -> None:
        """A locked line breaks a rule: ValueError, or (relaxed: `relax` says why) a note in `relaxations`."""
        if relax is None:
            raise ValueError(f"{note} (relax_locked=True accepts it, listed in the poem's relaxations)")
        self._relax(f"accepted ({relax}): {note}")

    # -- decoding -----------------------------------------------------------------------------------

    def _choose_first_line(self, names: list[str], token: int) -> list[str]:
        """An open first line rhymes only in the locked rhyme group (a polyphone read 仄 stays unrhymed)."""
        if self.groups and not self.fm.level[token] & self.groups:
            return [n for n in names if not n.endswith("首句入韵")] or names
        return super()._choose_first_line(names, token)

    def _rhyme_mask(self) -> np.ndarray | None:
        if self.pos == self.length - 1 and self._first_line_rhyme_open() and self.groups:
            mask = self._open_cache.get(self.groups)  # the rhyme is known: an open first line may join it
            if mask is None:
                mask = self._open_cache[self.groups] = _frozen(self.fm.group_mask(self.groups) | self.fm.ze)
            return mask
        base = super()._rhyme_mask()
        if base is None or self.line in self.locked or not self.reserved:
            return base
        hit = self._unreserved.get(id(base))  # the same base array step after step: one copy each
        if hit is None or hit[0] is not base:
            mask = base.copy()
            mask[list(self.reserved)] = False
            hit = self._unreserved[id(base)] = (base, _frozen(mask))
        if not hit[1].any():
            self._relax(f"第{self.line + 1}句韵脚：本韵字已用尽，允许用锁定句的韵字")
            return base
        return hit[1]


class MaskVectors:
    """Additive float32 vectors for boolean masks (0 allowed, log(1 - strength) or -inf not), cached per mask.

    The prosody engine hands out the same read-only arrays step after step, so each vector is
    built once; the cache keeps the masks alive so that their ids cannot be reused by other arrays."""

    LIMIT = 512  # fresh masks (rhyme masks minus used rhymes) are rare; a full cache is simply emptied

    def __init__(self, keep: np.ndarray):
        self.keep = keep
        self.cache: dict[tuple, tuple[tuple, Any]] = {}

    def _cached(self, key: tuple, masks: tuple, make):
        hit = self.cache.get(key)
        if hit is not None:
            kept = hit[0]
            if all(a is b for a, b in zip(kept, masks)):
                return hit[1]
        if len(self.cache) >= self.LIMIT:
            self.cache.clear()
        value = make()
        self.cache[key] = (masks, value)
        return value

    def structure(self, mask: np.ndarray) -> np.ndarray:
        """Hard vector of a structure mask, without the tokens never generated."""
        return self._cached(("s", id(mask)), (mask,),
                            lambda: np.where(mask & self.keep, np.float32(0), np.float32(-np.inf)))

    def penalty(self, mask: np.ndarray, strength: float) -> np.ndarray:
        """Vector lowering characters outside the mask by log(1 - strength) nats (-inf at strength 1)."""
        off = np.float32(-np.inf if strength >= 1 else math.log1p(-strength))
        return self._cached(("p", id(mask), strength), (mask,), lambda: np.where(mask, np.float32(0), off))

    def single(self, mask: np.ndarray) -> int | None:
        """The only token a structure mask allows, if it allows exactly one (a forced token)."""
        def make():
            ids = np.flatnonzero(mask & self.keep)
            return int(ids[0]) if len(ids) == 1 else None
        return self._cached(("1", id(mask)), (mask,), make)

    def total(self, vectors: list[np.ndarray]) -> np.ndarray:
        """The sum of cached vectors, in order (built once per combination)."""
        if len(vectors) == 1:
            return vectors[0]

        def make():
            vec = vectors[0].copy()
            for v in vectors[1:]:
                vec += v
            return _frozen(vec)
        return self._cached(("t", *map(id, vectors)), tuple(vectors), make)
