"""Decoding: the candidates of many requests written together, one batched model step per token.

`Decoder` holds one request's candidates (`Row`s) and applies its constraints; `Engine` runs the
LSTM for the rows of every decoder it holds (continuous batching: requests join between two
steps and leave when done). A row's numbers never depend on the other rows, so a request gives
the same poems alone or in any batch.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data import title_context
from ..prosody import FORMS as FORM_LINES
from ..prosody import TEMPLATE_NAMES, StepMasks
from ..text import LINE_ENDS, split_with_punctuation, to_script
from .config import Settings
from .constraints import Constraint, build_constraints, locked_ids, parallel_lines
from .sampling import sample
from .states import FreeState, LineState, LockedFormState

if TYPE_CHECKING:
    from .poet import Poet

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One candidate while it is being written."""

    state: LineState
    tokens: list[int] = field(default_factory=list)
    line: str = ""                  # the current line so far
    lines_done: int = 0
    log_prob: float = 0.0
    sampled: int = 0
    avoided: int = 0                # tokens refused by a constraint's `rejects` (corpus lines avoided)
    notes: list[str] = field(default_factory=list)
    done: bool = False
    _masks: StepMasks | None = field(default=None, repr=False)

    def masks(self) -> StepMasks:
        """The line state's masks for the next token (asked once per step)."""
        if self._masks is None:
            self._masks = self.state.step_masks()
        return self._masks


def _overrides(c: Constraint, hook: str) -> bool:
    return getattr(type(c), hook) is not getattr(Constraint, hook)


class Decoder:
    """One request's candidates while they are written: constraints, sampling, bookkeeping.

    The model is not called here: `Engine` runs the LSTM and the output layer for the rows of
    every request it decodes, and hands each decoder the log-probabilities of its rows."""

    def __init__(self, poet: Poet, s: Settings):
        self.s, self.vocab = s, poet.vocab
        self.tc = poet.token_classes
        self.vectors = poet.mask_vectors
        self.rows = [Row(self._state(poet)) for _ in range(s.rows)]
        self.plan = poet.theme_plan(s.theme, s.lines or 8) if s.theme else None  # themes.ThemePlan
        self.constraints = build_constraints(
            s, s.rows, vectors=self.vectors, classes=self.tc, tokens=self.vocab.tokens,
            index=self.vocab.index, lines=poet.line_index() if s.avoid_copies else None,
            partners=poet.couplet_partners() if parallel_lines(s) and s.parallel_strength > 0 else None,
            plan=self.plan, rarity=poet.rarity() if s.breadth > 0 else None)
        cs = self.constraints
        self._forcing = [c for c in cs if _overrides(c, "forced")]
        self._cached = [c for c in cs if c.cached]
        self._other = [c for c in cs if not c.cached and _overrides(c, "layer")]
        self._kept = [c for c in cs if c.priority is None and _overrides(c, "layer")]
        self._droppable = sorted((c for c in cs if c.priority is not None), key=lambda c: -c.priority)
        self._guards = [c for c in cs if _overrides(c, "rejects")]
        self._advancing = [c for c in cs if _overrides(c, "advance")]
        self.generator = torch.Generator(device=poet.device).manual_seed(s.seed)
        self.sampling = (s.temperature, s.top_k, s.top_p)
        prompt_ids = self.vocab.encode(s.prompt)
        # A model trained on titles reads the theme as the poem's title: <START> theme <TITLE_END>.
        context = title_context(self.vocab, s.theme) if s.theme and poet.takes_titles else [self.vocab.start_id]
        context += self.vocab.encode(s.style)
        if s.style and s.style[-1] not in LINE_ENDS:
            context.append(self.vocab.index["。"])  # the style reads as a finished sentence before the poem
        self.head = context  # what the model reads before the poem (the rows' tokens follow it)
        for i, row in enumerate(self.rows):
            for tok in prompt_ids:
                self._check_prompt_token(row, tok)
                self.advance(i, tok)
        self.context = context + prompt_ids
        self.steps_left = s.max_length - len(prompt_ids) + 1  # choices per candidate, at most
        self.finished = False
        self.future: Any = None  # set by Batcher
        self.on_line: Any = None  # called with {"lines": [...]} when candidate 0 finishes a line (streaming)
        self.lines_sent = 0

    def _state(self, poet: Poet) -> LineState:
        s = self.s
        if s.form == "free":
            return FreeState(self.tc, s.lines, s.max_length)
        if s.locked:
            fm = poet.form_masks()
            relax = {rule: "relax_locked" if s.relax_locked else f"{rule}_strength < 1" if strength < 1 else None
                     for rule, strength in (("tone", s.tone_strength), ("rhyme", s.rhyme_strength))}
            return LockedFormState(fm, s.form, list(TEMPLATE_NAMES), rhyme=s.rhyme and s.rhyme_strength > 0,
                                   tones=s.tones and s.tone_strength > 0,
                                   locked=locked_ids(s, self.vocab.index), relax=relax)
        return poet.form_masks().start(s.form, rhyme=s.rhyme, tones=s.tones)

    def _check_prompt_token(self, row: Row, tok: int) -> None:
        """A prompt must fit the form's line lengths and punctuation."""
        if self.s.form != "free" and not row.masks().structure[tok]:
            n = len(row.tokens) + 1
            raise ValueError(f"prompt does not fit a {self.s.form} ({FORM_LINES[self.s.form][1]} characters a "
                             f"line, ，and 。 alternating): character {n} {self.vocab.tokens[tok]!r} cannot stand there")

    def report_lines(self) -> None:
        """Hand `on_line` candidate 0's finished lines (in the output script) when it has finished another
        one; an error in the callback is logged and ends the reports, never the decoding."""
        row = self.rows[0]
        if row.lines_done <= self.lines_sent:
            return
        self.lines_sent = row.lines_done
        text = self.vocab.decode(row.tokens)
        text = text if self.s.script == self.vocab.script else to_script(text, self.s.script)
        try:
            self.on_line({"lines": split_with_punctuation(text)[:row.lines_done]})
        except Exception:  # noqa: BLE001 - a listener's bug must not cost the poem
            log.exception("on_line callback failed; no more line reports for this request")
            self.on_line = None

    def finish(self) -> None:
        """End decoding: a candidate still open has hit the step cap (and says so)."""
        self.finished = True
        for row in self.rows:
            if not row.done:
                row.notes.append(f"stopped at max_length={self.s.max_length}")

    # -- one step ---------------------------------------------------------------------------------

    def forced(self, row: Row) -> int | None:
        """A token a constraint dictates (then the model is not consulted); the first one wins."""
        for c in self._forcing:
            tok = c.forced(row)
            if tok is not None:
                return tok
        return None

    def bias(self, free: list[int], out: np.ndarray) -> None:
        """Write the (n, V) additive constraints of the candidates that sample this step into `out`."""
        for k, i in enumerate(free):
            row = self.rows[i]
            vectors = [v for v in (c.layer(i, row) for c in self._cached) if v is not None]
            out[k] = self.vectors.total(vectors)
            for c in self._other:
                layer = c.layer(i, row)
                if layer is None:
                    continue
                if layer.dtype.kind == "i":
                    out[k, layer] = -np.inf
                else:
                    np.add(layer, out[k], out=out[k])

    def refused(self, i: int, tok: int) -> bool:
        """Whether a constraint's `rejects` refuses candidate i's token (the copy guard)."""
        return any(c.rejects(self.rows[i], tok) for c in self._guards)

    def excluding(self, i: int, tok: int) -> list[str]:
        """The names of the constraints whose layers ban candidate i's token now (hard rules only)."""
        out = []
        for c in self.constraints:
            layer = c.layer(i, self.rows[i]) if _overrides(c, "layer") else None
            if layer is not None and (tok in layer if layer.dtype.kind == "i" else np.isneginf(layer[tok])):
                out.append(c.name)
        return out

    def relaxed(self, i: int) -> np.ndarray:
        """Candidate i's bias with each droppable layer that would leave no token dropped (and noted)."""
        row = self.rows[i]
        acc = None
        for c in self._kept:
            layer = c.layer(i, row)
            if layer is not None:
                acc = layer.copy() if acc is None else acc + layer
        for c in self._droppable:
            layer = c.layer(i, row)
            if layer is None:
                continue
            trial = acc.copy()
            if layer.dtype.kind == "i":
                trial[layer] = -np.inf
            else:
                trial += layer
            if np.isfinite(trial).any():
                acc = trial
            else:
                row.notes.append(f"line {row.lines_done + 1}: dropped the {c.name} constraint "
                                 "(no character met all of them)")
        return acc

    def guard(self, i: int, scores: torch.Tensor, tok: int) -> int:
        """Resample while a constraint rejects the token (scores: candidate i's (1, V) row)."""
        row = self.rows[i]
        for c in self._guards:
            for attempt in range(c.retries + 1):
                if not c.rejects(row, tok):
                    break
                scores[0, tok] = -math.inf
                if attempt == c.retries or torch.isneginf(scores.amax()):
                    row.notes.append(c.rejected(row))
                    break
                tok = int(sample(scores, *self.sampling, self.generator)[0])
        return tok

    def record(self, i: int, log_prob: float) -> None:
        """Count a sampled token's log-probability under the model."""
        row = self.rows[i]
        row.log_prob += log_prob
        row.sampled += 1

    def advance(self, i: int, tok: int) -> None:
        """Record candidate i's token: line state, line, and every constraint's memory."""
        row = self.rows[i]
        row.state.advance(tok)
        row._masks = None
        row.tokens.append(tok)
        if tok == self.vocab.eop_id:
            row.done = True
        elif self.tc.line_end[tok]:
            row.lines_done += bool(row.line)
            row.line = ""
        else:
            row.line += self.vocab.tokens[tok]
        for c in self._advancing:
            c.advance(i, row, tok)


class Engine:
    """Decodes the candidates of any number of requests together, one batched model step per token.

    Every step: each request names its forced tokens (form punctuation, acrostic heads); one
    matrix product gives the log-probabilities of all the rows that sample; requests with the same
    sampling settings are sampled in one set of tensor operations, each from its own generator;
    then one LSTM step advances every unfinished row. Requests can join between steps (`add`)
    and leave when done (`step` returns them). A row's numbers never depend on the other rows, so
    a request gives the same poems alone or in any batch."""

    def __init__(self, poet: Poet):
        self.poet = poet
        self.net = poet.stepper.sync()
        self.vocab_size = len(poet.vocab)
        self.decoders: list[Decoder] = []
        self.slots: list[tuple[Decoder, int]] = []  # (request, candidate) of each row of the state
        self.feats: torch.Tensor | None = None
        self.state: list | None = None
        self._bias = np.empty((0, self.vocab_size), np.float32)

    def __len__(self) -> int:
        return len(self.slots)

    def add(self, dec: Decoder) -> None:
        """Start decoding a request (its context runs through the LSTM now)."""
        n, dev = len(dec.rows), self.poet.device
        feats, state = self.net.prefill(dec.context, n, dev)
        if self.slots:
            self.feats = torch.cat([self.feats, feats])
            self.state = [(torch.cat([h0, h]), torch.cat([c0, c])) for (h0, c0), (h, c) in zip(self.state, state)]
        else:
            self.feats, self.state = feats.contiguous(), [(h.contiguous(), c.contiguous()) for h, c in state]
        self.decoders.append(dec)
        self.slots += [(dec, i) for i in range(n)]

    def run(self) -> None:
        """Step until every request has finished."""
        while self.slots:
            self.step()

    def step(self) -> list[Decoder]:
        """One token for every unfinished row; returns the requests that finished with it."""
        slots = self.slots
        chosen = [0] * len(slots)
        free: list[int] = []
        for r, (dec, i) in enumerate(slots):
            tok = dec.forced(dec.rows[i])
            if tok is None:
                free.append(r)
            else:
                chosen[r] = tok
        if free:
            self._sample(free, chosen)
        for r, (dec, i) in enumerate(slots):
            dec.advance(i, chosen[r])
        for dec in self.decoders:
            if dec.on_line is not None:
                dec.report_lines()
        finished = []
        for dec in self.decoders:
            dec.steps_left -= 1
            if dec.steps_left <= 0 or all(row.done for row in dec.rows):
                dec.finish()
                finished.append(dec)
        if finished:
            self.decoders = [dec for dec in self.decoders if not dec.finished]
        keep = [r for r, (dec, i) in enumerate(slots) if not (dec.finished or dec.rows[i].done)]
        self.slots = [slots[r] for r in keep]
        if not keep:
            self.feats = self.state = None
            return finished
        dev = self.poet.device
        state = self.state
        if len(keep) < len(slots):
            idx = torch.tensor(keep, device=dev)
            state = [(h.index_select(0, idx), c.index_select(0, idx)) for h, c in state]
        self.feats, self.state = self.net.step(torch.tensor([chosen[r] for r in keep], device=dev), state)
        return finished

    def _sample(self, free: list[int], chosen: list[int]) -> None:
        """Sample the rows that the structure leaves free (`free`: row numbers) into `chosen`."""
        dev, slots, n = self.poet.device, self.slots, len(free)
        feats = self.feats if n == len(slots) else self.feats.index_select(0, torch.tensor(free, device=dev))
        logp = self.net.log_probs(feats)
        # A request's rows are consecutive: [request, its candidates, first and end position in `free`].
        spans: list[list] = []
        for k, r in enumerate(free):
            dec, i = slots[r]
            if spans and spans[-1][0] is dec:
                spans[-1][1].append(i)
                spans[-1][3] = k + 1
            else:
                spans.append([dec, [i], k, k + 1])
        if len(self._bias) < n:
            self._bias = np.empty((max(n, 2 * len(self._bias)), self.vocab_size), np.float32)
        bias = self._bias[:n]
        for dec, rows, lo, hi in spans:
            dec.bias(rows, bias[lo:hi])
        scores = logp + torch.from_numpy(bias).to(dev)
        for k in np.flatnonzero(np.isneginf(bias.max(axis=1))).tolist():  # no token meets every constraint
            dec, i = slots[free[k]]
            scores[k] = logp[k] + torch.from_numpy(dec.relaxed(i)).to(dev)
        groups: dict[tuple, list] = {}
        for span in spans:
            groups.setdefault(span[0].sampling, []).append(span)
        tokens = [0] * n
        for setting, members in groups.items():
            if len(groups) == 1:
                sub, offsets = scores, [(lo, lo, hi) for _, _, lo, hi in members]
            else:
                idx = [k for _, _, lo, hi in members for k in range(lo, hi)]
                sub = scores.index_select(0, torch.tensor(idx, device=dev))
                offsets, at = [], 0
                for _, _, lo, hi in members:
                    offsets.append((lo, at, at + hi - lo))
                    at += hi - lo
            drawn = sample(sub, *setting, [(m[0].generator, a, b) for m, (_, a, b) in zip(members, offsets)]).tolist()
            for (dec, rows, _, _), (lo, a, _end) in zip(members, offsets):
                for j, i in enumerate(rows):
                    tokens[lo + j] = dec.guard(i, sub[a + j:a + j + 1], drawn[a + j])
        picked = logp.gather(-1, torch.tensor(tokens, device=dev)[:, None]).flatten().tolist()
        for k, r in enumerate(free):
            dec, i = slots[r]
            dec.record(i, picked[k])
            chosen[r] = tokens[k]
