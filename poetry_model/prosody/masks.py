"""Decoding masks: what the next token of a poem in a form may be (structure, tone, rhyme)."""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from ..text import COUPLET_ENDS, LOST_CHAR
from .readings import EOP, FORMS, HAN_RE, PING, TEMPLATE_NAMES, ZE, Lexicon, _tones_of, lexicon
from .rules import form_template_lines, strict_positions

if TYPE_CHECKING:  # numpy is imported where masks are built
    import numpy as np

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
        self.common = lex.common_groups  # where a free rhyme may go (not the 险韵)

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
        self.first_line_open = _frozen(self.group_mask(self.common) | self.ze)

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
        """Characters of the rhyme group (any common group while free), no rhyme character twice."""
        if self.pos == self.length - 1 and self._first_line_rhyme_open():
            return self.fm.first_line_open
        if not self._is_rhyme_position():
            return None
        base = self.fm.group_mask(self.groups if self.groups else self.fm.common)
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
        """Line 1 rhymes if its last character can, preferring a common group; else it is left oblique."""
        rhymed = [n for n in names if n.endswith("首句入韵")]
        unrhymed = [n for n in names if not n.endswith("首句入韵")]
        groups = self.fm.level[token]
        if rhymed and groups and (not unrhymed or groups & self.fm.common or not self.fm.can_ze[token]):
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
            self.groups = (groups & self.fm.common or groups) or None
            if not groups:
                self._relax(f"第{self.line + 1}句韵脚「{name}」非平声韵字")
        elif groups & self.groups:
            self.groups = groups & self.groups
        else:
            self._relax(f"第{self.line + 1}句韵脚「{name}」出韵")
