"""The rules a candidate's next token must follow, one class each, behind one interface.

A request's decoder holds a list of constraints (`build_constraints`) and applies them in order
at every step, much like transformers' LogitsProcessor list. Each may:

* `forced(row)`: dictate the token outright (form punctuation, an acrostic head): no sampling;
* `layer(i, row)`: add a float32 vector to the model's log-probabilities (0 allowed, -inf banned,
  log(1 - strength) discouraged) or return int64 ids to ban; None when it has nothing to say.
  Constraints with `cached = True` hand out the same read-only arrays step after step, so their
  sum is built once per combination (`MaskVectors`);
* `rejects(row, tok)`: refuse a sampled token afterwards (it is banned and the row resampled,
  at most `retries` times);
* `advance(i, row, tok)`: keep its own per-row memory.

When no token meets every layer, layers are dropped, lowest `priority` first (None: never
dropped), and the drop is noted in the poem's relaxations. Adding a rule = one class here plus
one line in `build_constraints`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .states import MaskVectors, TokenClasses

if TYPE_CHECKING:
    from .config import Settings
    from .engine import Row

COPY_RETRIES = 8        # resamples per step before a corpus line is let through (and reported)


# ---------------------------------------------------------------------------------------------
# The constraints


class Constraint:
    """One rule on the next token of a request's candidates (see the module docstring). Defaults: no effect."""

    name = ""
    priority: int | None = None   # dropped lowest first when no token meets every layer; None: never
    cached = False                # layer() returns shared read-only arrays (summed once per combination)
    retries = 0                   # resamples after `rejects` before the token is let through

    def forced(self, row: Row) -> int | None:
        return None

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        return None

    def rejects(self, row: Row, tok: int) -> bool:
        return False

    def rejected(self, row: Row) -> str:
        """Note for the poem when every retry was rejected and the token let through."""
        return f"line {row.lines_done + 1}: the {self.name} constraint could not be met"

    def advance(self, i: int, row: Row, tok: int) -> None:
        pass


class Structure(Constraint):
    """The form's (or free verse's) line lengths and punctuation, from the row's LineState: hard, never dropped."""

    name, cached = "structure", True

    def __init__(self, vectors: MaskVectors):
        self.vectors = vectors

    def forced(self, row: Row) -> int | None:
        return self.vectors.single(row.masks().structure)

    def layer(self, i: int, row: Row) -> np.ndarray:
        return self.vectors.structure(row.masks().structure)


class Acrostic(Constraint):
    """藏头: the head character of each line is forced."""

    name = "acrostic"

    def __init__(self, heads: list[int]):
        self.heads = heads

    def forced(self, row: Row) -> int | None:
        if not row.line and row.lines_done < len(self.heads):
            return self.heads[row.lines_done]
        return None


class Locked(Constraint):
    """Locked lines: each character of a locked line is forced, verbatim. Their tone pattern and rhyme
    are checked, and imposed on the other lines, by the row's line state (`LockedFormState`)."""

    name = "locked"

    def __init__(self, lines: dict[int, list[int]]):
        self.lines = lines

    def forced(self, row: Row) -> int | None:
        toks = self.lines.get(row.lines_done)
        if toks is not None and len(row.line) < len(toks):
            return toks[len(row.line)]
        return None


class Rhyme(Constraint):
    """The form's rhyme mask: strength 1 bans off-rhyme characters, s < 1 lowers them by log(1 - s)."""

    name, cached, priority = "rhyme", True, 3

    def __init__(self, vectors: MaskVectors, strength: float):
        self.vectors, self.strength = vectors, strength

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        mask = row.masks().rhyme
        return None if mask is None else self.vectors.penalty(mask, self.strength)


class Tone(Rhyme):
    """The form's 平仄 mask, with the same strength rule as the rhyme."""

    name, priority = "tone", 2

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        mask = row.masks().tone
        return None if mask is None else self.vectors.penalty(mask, self.strength)


class Repetition(Constraint):
    """Every earlier use of a character subtracts `penalty` nats from it (soft: never dropped).

    With `dieci` (叠字), a character may double the one just before it inside a line (萧萧, 悠悠) free
    of the penalty, as real poems do, and the doubled pair counts as one use: only repeats elsewhere
    in the poem, the ones a reader notices as slips, are discouraged (a penalty of ~10 nats bans them)."""

    name = "repetition"

    def __init__(self, rows: int, vocab_size: int, penalty: float, classes: TokenClasses, dieci: bool = False):
        self.nats = np.zeros((rows, vocab_size), np.float32)
        self.penalty, self.tc, self.dieci = penalty, classes, dieci
        self.prev: list[int | None] = [None] * rows   # the line's previous character, if it may be doubled

    def layer(self, i: int, row: Row) -> np.ndarray:
        prev = self.prev[i]
        if prev is None or not self.penalty:
            return self.nats[i]
        vec = self.nats[i].copy()
        vec[prev] += np.float32(self.penalty)  # its own use just before does not count against a 叠字
        return vec

    def advance(self, i: int, row: Row, tok: int) -> None:
        if tok == self.tc.eop_id or self.tc.line_end[tok]:
            self.prev[i] = None
            return
        if self.dieci and tok == self.prev[i]:
            self.prev[i] = None  # one doubling: a third in a row is an ordinary repeat
            return
        self.nats[i, tok] -= self.penalty
        self.prev[i] = tok if self.dieci and self.tc.char[tok] else None


class Parallelism(Constraint):
    """对仗: while writing the second line of a parallel couplet, each character is drawn toward the
    characters that stand opposite the first line's character at the same position in real 律诗
    middle couplets (`strength` nats per unit of their aligned PMI, positive PMIs only), and no
    character of the first line may appear in the second. Position alignment implies the same word
    structure. Dropped first when nothing else would be left."""

    name, priority = "parallelism", 0

    def __init__(self, rows: int, vocab_size: int, partners: list[tuple[np.ndarray, np.ndarray]],
                 second_lines: frozenset[int], strength: float, classes: TokenClasses):
        self.partners, self.second_lines, self.strength, self.tc = partners, second_lines, strength, classes
        self.vocab_size = vocab_size
        self.last: list[list[int]] = [[] for _ in range(rows)]   # the previous line's characters
        self.cur: list[list[int]] = [[] for _ in range(rows)]

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        first, j = self.last[i], len(self.cur[i])
        if row.lines_done not in self.second_lines or j >= len(first):
            return None
        vec = np.zeros(self.vocab_size, np.float32)
        ids, pmi = self.partners[first[j]]
        vec[ids] = pmi * np.float32(self.strength)
        vec[first] = -np.inf
        return vec

    def advance(self, i: int, row: Row, tok: int) -> None:
        if tok == self.tc.eop_id:
            return
        if self.tc.line_end[tok]:
            if self.cur[i]:
                self.last[i], self.cur[i] = self.cur[i], []
        elif self.tc.char[tok]:
            self.cur[i].append(tok)


class RhymeOnce(Constraint):
    """重韵: a rhyme position never takes a character that already ended a line of the poem (an open
    first line's rhyme included), nor one that ends a locked line still to come (`reserved`); the
    prosody checker counts a poem that repeats one as not rhyming."""

    name, priority = "rhyme-once", 3

    def __init__(self, rows: int, classes: TokenClasses, reserved: tuple[int, ...] = ()):
        self.tc = classes
        # the last character of each line so far, and of every locked line (forced there, so never refused)
        self.line_ends: list[list[int]] = [list(reserved) for _ in range(rows)]
        self.last: list[int | None] = [None] * rows
        self.at_rhyme = [False] * rows   # whether the row's next token ends a rhyming line

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        return np.array(self.line_ends[i], np.int64) if self.at_rhyme[i] and self.line_ends[i] else None

    def advance(self, i: int, row: Row, tok: int) -> None:
        if self.tc.char[tok]:
            self.last[i] = tok
        elif self.tc.line_end[tok] and self.last[i] is not None:
            self.line_ends[i].append(self.last[i])
            self.last[i] = None
        self.at_rhyme[i] = row.masks().rhyme is not None  # the state has moved on: this is the next position


class NoRepeatPairs(Constraint):
    """A pair of characters never occurs twice in a poem (so the text cannot loop): the next character is banned."""

    name, priority = "no-repeat", 1

    def __init__(self, rows: int, classes: TokenClasses):
        self.tc = classes
        self.prev: list[int | None] = [None] * rows      # the previous token when it is a character
        self.pairs: list[dict[int, set[int]]] = [{} for _ in range(rows)]

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        prev = self.prev[i]
        repeats = self.pairs[i].get(prev) if prev is not None else None
        return np.fromiter(repeats, np.int64) if repeats else None

    def advance(self, i: int, row: Row, tok: int) -> None:
        if tok == self.tc.eop_id:
            return
        if self.tc.line_end[tok]:
            self.prev[i] = None
            return
        prev = self.prev[i]
        if prev is not None:
            self.pairs[i].setdefault(prev, set()).add(tok)
        self.prev[i] = tok if self.tc.char[tok] else None


SEASON_OPPOSITES = {"春": "秋", "秋": "春", "夏": "冬", "冬": "夏"}


class Season(Constraint):
    """Once a poem names a season (春 夏 秋 冬, the prompt included), the opposite one is lowered by
    `strength` nats (10: in effect banned), unless the request's own text (prompt, acrostic, style,
    theme) names both of the pair. A season the theme names counts as named from the start (秋夜:
    no 春). Acrostic heads are forced and never lowered."""

    name = "season"
    groups: tuple[tuple[str, str], ...] = (("春", "秋"), ("夏", "冬"))  # opposite sides, any character of each

    def __init__(self, rows: int, vocab_size: int, strength: float, index: dict[str, int], asked: str,
                 theme: str = ""):
        self.opposite: dict[int, list[int]] = {}
        for a, b in self.groups:
            if any(c in asked for c in a) and any(c in asked for c in b):
                continue  # the request asks for both: a poem of spring and autumn
            for side, other in ((a, b), (b, a)):
                for c in side:
                    if c in index:
                        self.opposite[index[c]] = [index[o] for o in other if o in index]
        self.strength = np.float32(strength)
        self.nats = np.zeros((rows, vocab_size), np.float32)
        self.named = [False] * rows
        for c in theme:
            for i in range(rows):
                self.advance(i, None, index.get(c, -1))

    def layer(self, i: int, row: Row) -> np.ndarray | None:
        return self.nats[i] if self.named[i] else None

    def advance(self, i: int, row: Row, tok: int) -> None:
        opposite = self.opposite.get(tok)
        if opposite is not None:
            self.nats[i, opposite] = -self.strength
            self.named[i] = True


class TimeOfDay(Season):
    """Once a poem names dawn (晓 晨 曙) or deep night (夜 宵), the other is lowered by `strength` nats, as
    Season does for seasons. 朝 and 暮 are free: 朝…暮 is how a poem says a day passes."""

    name = "time of day"
    groups = (("晓晨曙", "夜宵"),)


class Theme(Constraint):
    """A theme's plan (`themes.ThemePlan`): every related character gains `strength` x its weight (0..1]
    nats until the poem has used it (a second use would fight the repetition penalty), and the line's
    planned keyword gains `strength` more until the line has used it. Soft: a bias, never a ban, so
    form, rhyme and tones are untouched."""

    name = "theme"

    def __init__(self, rows: int, vocab_size: int, plan, strength: float, index: dict[str, int],
                 classes: TokenClasses):
        base = np.zeros(vocab_size, np.float32)
        for c, w in zip(plan.chars, plan.weights):
            if c in index:
                base[index[c]] = np.float32(strength * w)
        self.nats = np.repeat(base[None], rows, axis=0)
        self.keywords = [index.get(c) for c in plan.keywords]
        self.strength, self.tc = np.float32(strength), classes
        self.used = [False] * rows   # the current line's keyword is written

    def layer(self, i: int, row: Row) -> np.ndarray:
        k = row.lines_done
        keyword = self.keywords[k] if k < len(self.keywords) else None
        if keyword is None or self.used[i]:
            return self.nats[i]
        vec = self.nats[i].copy()
        vec[keyword] += self.strength
        return vec

    def advance(self, i: int, row: Row, tok: int) -> None:
        if self.tc.line_end[tok]:
            self.used[i] = False
            return
        if row.lines_done < len(self.keywords) and tok == self.keywords[row.lines_done]:
            self.used[i] = True
        self.nats[i, tok] = 0.0


class Breadth(Constraint):
    """Vocabulary breadth: each character gains `strength` nats per nat it is rarer than the corpus's
    usual character (`Indexes.rarity`), so the draw follows p(c | poem) / p(c)^strength, a step toward
    pointwise mutual information. Temperature widens a vocabulary by lifting the whole tail, odd
    sequences with it; this lifts the characters the context already favours over the common ones
    every context allows (不 人 山 风), which real poems use far less than a sampler does."""

    name, cached = "breadth", True

    def __init__(self, rarity: np.ndarray, strength: float):
        self.vector = rarity * np.float32(strength)
        self.vector.flags.writeable = False

    def layer(self, i: int, row: Row) -> np.ndarray:
        return self.vector


class CopyGuard(Constraint):
    """`avoid_copies`: a token that would complete a corpus line is refused and the step resampled."""

    name, retries = "copy guard", COPY_RETRIES

    def __init__(self, lines, tokens: list[str], classes: TokenClasses):
        self.lines, self.tokens, self.tc = lines, tokens, classes

    def rejects(self, row: Row, tok: int) -> bool:
        line = self._completed_line(row, tok)
        if line is None or line not in self.lines:
            return False
        row.avoided += 1
        return True

    def rejected(self, row: Row) -> str:
        return f"line {row.lines_done + 1} equals a corpus line: no other choice was left"

    def _completed_line(self, row: Row, tok: int) -> str | None:
        """The line that token would complete, if it completes one (a line end, or a last character)."""
        if self.tc.line_end[tok]:
            return row.line or None
        return row.line + self.tokens[tok] if row.state.closes_after_char() and self.tc.char[tok] else None


def parallel_lines(s: Settings) -> frozenset[int]:
    """0-based indices of the lines written parallel to the line before: a 律诗's 4th and 6th lines
    (parallelism "auto" or "on"), a 绝句's 2nd and 4th ("on" only); none in free verse."""
    if s.parallelism == "off" or s.lines not in (4, 8) or s.form == "free":
        return frozenset()
    if s.lines == 8:
        return frozenset((3, 5))
    return frozenset((1, 3)) if s.parallelism == "on" else frozenset()


def locked_ids(s: Settings, index: dict[str, int]) -> dict[int, list[int]]:
    """The locked lines as {line index: token ids}."""
    return {line: [index[ch] for ch in text] for line, text in s.locked}


def build_constraints(s: Settings, rows: int, *, vectors: MaskVectors, classes: TokenClasses, tokens: list[str],
                      index: dict[str, int], lines=None, partners=None, plan=None,
                      rarity: np.ndarray | None = None) -> list[Constraint]:
    """The constraints of one request, in the order they apply (forced tokens: first one wins);
    `plan` is the theme's ThemePlan when the request has a theme, `rarity` the corpus's per-token rarity."""
    out: list[Constraint] = [Structure(vectors), Acrostic([index[h] for h in s.acrostic])]
    locked = locked_ids(s, index)
    if locked:
        out.append(Locked(locked))
    if s.rhyme_strength > 0:
        out += [Rhyme(vectors, s.rhyme_strength), RhymeOnce(rows, classes, tuple(ids[-1] for ids in locked.values()))]
    if s.tone_strength > 0:
        out.append(Tone(vectors, s.tone_strength))
    out.append(Repetition(rows, len(tokens), s.repetition_penalty, classes, s.dieci))
    if s.season_strength > 0:
        out.append(Season(rows, len(tokens), s.season_strength, index, s.prompt + s.acrostic + s.style + s.theme,
                          s.theme))
    if s.time_strength > 0:
        out.append(TimeOfDay(rows, len(tokens), s.time_strength, index, s.prompt + s.acrostic + s.style + s.theme,
                             s.theme))
    if plan is not None and s.theme_strength > 0:
        out.append(Theme(rows, len(tokens), plan, s.theme_strength, index, classes))
    second_lines = parallel_lines(s)
    if second_lines and s.parallel_strength > 0 and partners is not None:
        out.append(Parallelism(rows, len(tokens), partners, second_lines, s.parallel_strength, classes))
    if s.breadth > 0 and rarity is not None:
        out.append(Breadth(rarity, s.breadth))
    out.append(NoRepeatPairs(rows, classes))
    if lines is not None:
        out.append(CopyGuard(lines, tokens, classes))
    return out
