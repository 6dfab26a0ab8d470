"""Poet: a loaded model plus vocabulary, and the generation engine behind the CLI and the app.

    poet = load()                                   # the shipped model (or load("runs/x/best"), load("user/repo"))
    poems = poet.generate(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5)
    print(poems[0].text, poems[0].to_dict()["score_parts"])

How a poem is made: the context `<START>` + style + prompt runs through the LSTM once; then all
candidates advance together, one token per step, as one batch of LSTM states. At each step every
candidate's next-token log-probabilities are shaped by, in this order:

* structure (hard): for 五绝/七绝/五律/七律 the prosody engine's FormState masks force the line
  length and the punctuation, so forms are exact by construction; free verse gets lines of Han
  characters closed by ，。？！；：, at most 12 characters long, and a budget that always ends it;
* acrostic heads: at the start of each line the next head character is forced (free verse then
  has as many lines as heads);
* rhyme and tone masks of the form: strength 1 bans off-pattern characters, a strength s < 1
  multiplies their probability by (1 - s), 0 ignores them;
* repetition: every earlier use of a character subtracts `repetition_penalty` nats, and a pair
  of characters never repeats (so the text cannot loop);
* novelty (`avoid_copies`): when the sampled token would complete a line that exists in the
  corpus (a hash lookup), that token is banned and the step resampled for that candidate; the
  poem reports how often this happened;
then temperature (0 = greedy), top-k and top-p pick the token. A hard constraint that would leave
no character at all is dropped for that step (repetition bans first, then tone, then rhyme; never
the structure) and the drop is listed in the poem's `relaxations`. No loop can hang: the number
of steps is capped by `max_length`. Input in either script is mapped to the model's (OpenCC);
characters it cannot represent raise UnknownCharactersError, which lists them.

Score (higher is better), each part returned in `score_parts`:
  lm       mean natural-log probability per sampled token, under the model's own unconstrained
           distribution (forced tokens such as heads and form punctuation are not counted);
  prosody  PROSODY_WEIGHT * (0.5 * rhymes + 0.5 * tone_score) from the prosody checker;
  novelty  -(COPIED_LINE_WEIGHT * lines equal to a corpus line
             + SPAN_WEIGHT * characters of the longest span shared with the corpus beyond FREE_SPAN).
"""
from __future__ import annotations

import math
import re
import secrets
import unicodedata
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import ModelLoadError, PoetryLSTM
from .novelty import LINE_ENDS, CorpusIndex, LineIndex, copy_report, find_line_index
from .prosody import FORMS as FORM_LINES  # form -> (lines, characters per line)
from .prosody import FormMasks, StepMasks, analyze
from .vocab import EOP, to_script

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "tang-lstm"
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "tang.npz"

FORMS = ("free", *FORM_LINES, "五言", "七言")
FORM_ALIASES = {"自由": "free", "五絕": "五绝", "七絕": "七绝", "wujue": "五绝", "qijue": "七绝", "wulv": "五律",
                "qilv": "七律", "wuyan": "五言", "qiyan": "七言"}
SCRIPTS = ("auto", "simplified", "traditional")
SENTENCE_ENDS = "。？！"
ASCII_PUNCTUATION = str.maketrans(",.?!;:", "，。？！；：")

MAX_PROMPT, MAX_ACROSTIC, MAX_STYLE = 100, 16, 64
MAX_CANDIDATES, MAX_LENGTH, DEFAULT_MAX_LENGTH = 64, 512, 124
MAX_TEMPERATURE, MAX_REPETITION_PENALTY = 10.0, 10.0
MAX_FREE_LINE = 12      # longest free-verse line, in characters
COPY_RETRIES = 8        # resamples per step before a corpus line is let through (and reported)

PROSODY_WEIGHT, COPIED_LINE_WEIGHT, SPAN_WEIGHT, FREE_SPAN = 1.0, 1.0, 0.25, 4


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else cuda, then mps, then cpu."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# Settings: every argument checked in one place


@dataclass(frozen=True)
class Settings:
    """The resolved arguments of one `generate` call (texts in the model's script)."""

    prompt: str
    acrostic: str           # the heads only: punctuation and spaces removed
    form: str               # "free" or one of FORM_LINES
    lines: int | None       # line count when fixed (forms, or free verse with an acrostic)
    rhyme: bool
    tones: bool
    rhyme_strength: float
    tone_strength: float
    temperature: float
    top_k: int | None
    top_p: float
    repetition_penalty: float
    style: str
    num_candidates: int
    seed: int
    max_length: int
    script: str             # the output script
    avoid_copies: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fail(name: str, value: Any, rule: str) -> ValueError:
    return ValueError(f"{name} must be {rule}, got {value!r}")


def _number(name: str, value: Any, lo: float, hi: float, *, open_low: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with open_low)."""
    rule = f"a number {'>' if open_low else '>='} {lo:g} and <= {hi:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, value, rule)
    x = float(value)
    if not math.isfinite(x) or x > hi or x < lo or (open_low and x == lo):
        raise _fail(name, value, rule)
    return x


def _integer(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise _fail(name, value, f"an integer from {lo} to {hi}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, value, "True or False")
    return bool(value)


def _text(name: str, value: Any, limit: int) -> str:
    """A string without spaces, ASCII ,.?!;: turned into their Chinese forms."""
    if not isinstance(value, str):
        raise _fail(name, value, "a string")
    text = "".join(ch for ch in value if not ch.isspace()).translate(ASCII_PUNCTUATION)
    if len(text) > limit:
        raise ValueError(f"{name} is too long: {len(text)} characters, at most {limit}")
    return text


def clean_acrostic(text: str) -> str:
    """The head characters of an acrostic: punctuation, spaces and invisible characters removed."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def _script_of(text: str) -> str | None:
    """'simplified' or 'traditional' when the text shows it, None when it reads the same in both."""
    if not text:
        return None
    as_simplified, as_traditional = to_script(text, "simplified"), to_script(text, "traditional")
    if as_simplified != text and as_traditional == text:
        return "traditional"
    if as_traditional != text and as_simplified == text:
        return "simplified"
    return None


def _resolve_form(form: Any, heads: int) -> tuple[str, int | None]:
    """Form name and fixed line count; 五言/七言 take 绝句 or 律诗 from the acrostic length."""
    name = FORM_ALIASES.get(form, form) if isinstance(form, str) else form
    if name not in FORMS:
        raise _fail("form", form, f"one of {', '.join(FORMS)}")
    if name in ("五言", "七言"):
        kind = {0: "绝", 4: "绝", 8: "律"}.get(heads)
        if kind is None:
            raise ValueError(f"acrostic has {heads} characters but {name} needs 4 (绝句) or 8 (律诗)")
        name = name[0] + kind
    if name == "free":
        return name, heads or None
    lines = FORM_LINES[name][0]
    if heads > lines:
        raise ValueError(f"acrostic has {heads} characters but a {name} has only {lines} lines")
    return name, lines


def _check_heads_in_prompt(prompt: str, heads: str) -> None:
    """Every line the prompt starts must start with its acrostic head."""
    line, at_start = 0, True
    for ch in prompt:
        if at_start and line < len(heads) and ch != heads[line]:
            raise ValueError(f"prompt line {line + 1} starts with {ch!r} but the acrostic asks for {heads[line]!r}")
        if ch in LINE_ENDS:
            line, at_start = line + (not at_start), True
        else:
            at_start = False
    if heads and line > len(heads):
        raise ValueError(f"prompt has {line} lines but the acrostic only {len(heads)}")


def validate(vocab, *, prompt: str = "", acrostic: str = "", form: str = "free", rhyme: bool = True,
             tones: bool = True, rhyme_strength: float = 1.0, tone_strength: float = 1.0,
             temperature: float = 0.8, top_k: int | None = 50, top_p: float = 0.95,
             repetition_penalty: float = 1.0, style: str = "", num_candidates: int = 1, seed: int | None = None,
             max_length: int = DEFAULT_MAX_LENGTH, script: str = "auto", avoid_copies: bool = True) -> Settings:
    """Check every argument of `generate`; ValueErrors name the parameter and the bad value.

    Documented clamping: top_k above the vocabulary size means all of it; seed None draws one."""
    prompt, style = _text("prompt", prompt, MAX_PROMPT), _text("style", style, MAX_STYLE)
    if not isinstance(acrostic, str):
        raise _fail("acrostic", acrostic, "a string")
    heads = clean_acrostic(acrostic)
    if acrostic.strip() and not heads:
        raise ValueError(f"acrostic {acrostic!r} has no characters once punctuation and spaces are removed")
    if len(heads) > MAX_ACROSTIC:
        raise ValueError(f"acrostic is too long: {len(heads)} characters, at most {MAX_ACROSTIC}")
    if script not in SCRIPTS:
        raise _fail("script", script, f"one of {', '.join(SCRIPTS)}")
    out_script = script if script != "auto" else _script_of(prompt + heads + style) or vocab.script
    # Texts become the model's script; unknown characters raise with the list of them.
    prompt, heads, style = (vocab.decode(vocab.encode(t, name)) for t, name in
                            ((prompt, "prompt"), (heads, "acrostic"), (style, "style")))
    name, lines = _resolve_form(form, len(heads))
    _check_heads_in_prompt(prompt, heads)
    max_length = _integer("max_length", max_length, 1, MAX_LENGTH)
    need = lines * (FORM_LINES[name][1] + 1) if name in FORM_LINES else len(prompt) + 1 + 2 * len(heads)
    if max_length < need:
        raise ValueError(f"max_length={max_length} is too short: this request needs at least {need} characters")
    if top_k is not None:
        top_k = min(_integer("top_k", top_k, 1, 2**62), len(vocab))
    return Settings(
        prompt=prompt, acrostic=heads, form=name, lines=lines, rhyme=_flag("rhyme", rhyme), tones=_flag("tones", tones),
        rhyme_strength=_number("rhyme_strength", rhyme_strength, 0, 1),
        tone_strength=_number("tone_strength", tone_strength, 0, 1),
        temperature=_number("temperature", temperature, 0, MAX_TEMPERATURE), top_k=top_k,
        top_p=_number("top_p", top_p, 0, 1, open_low=True),
        repetition_penalty=_number("repetition_penalty", repetition_penalty, 0, MAX_REPETITION_PENALTY),
        style=style, num_candidates=_integer("num_candidates", num_candidates, 1, MAX_CANDIDATES),
        seed=secrets.randbelow(2**31) if seed is None else _integer("seed", seed, 0, 2**63 - 1),
        max_length=max_length, script=out_script, avoid_copies=_flag("avoid_copies", avoid_copies))


# ---------------------------------------------------------------------------------------------
# Free-verse structure (the forms' structure comes from the prosody engine)


def _free(structure: np.ndarray) -> StepMasks:
    """Step masks of free verse: structure only."""
    return StepMasks(structure, None, None)


def _frozen(mask: np.ndarray) -> np.ndarray:
    mask.flags.writeable = False
    return mask


class TokenClasses:
    """Boolean masks over a vocabulary: Han characters, line ends, sentence ends, <EOP>; built once."""

    def __init__(self, tokens: list[str]):
        is_char = np.array([len(t) == 1 and unicodedata.category(t) == "Lo" for t in tokens])
        self.eop_id = tokens.index(EOP)
        self.char = _frozen(is_char)
        self.line_end = _frozen(np.isin(tokens, list(LINE_ENDS)))
        self.sentence_end = _frozen(np.isin(tokens, list(SENTENCE_ENDS)))
        self.eop = _frozen(np.arange(len(tokens)) == self.eop_id)
        # What a generated token may ever be: no <START>, padding, □ (lost character) or stray marks.
        self.keep = _frozen(self.char | self.line_end | self.eop)
        self.start = self.char
        self.start_or_eop = _frozen(self.char | self.eop)
        self.within = {False: _frozen(self.char | self.line_end), True: _frozen(self.char | self.sentence_end)}
        self.close = {False: self.line_end, True: self.sentence_end}


class FreeState:
    """Free-verse decoding state with the FormState interface: lines, budget and the end of the poem."""

    def __init__(self, classes: TokenClasses, lines: int | None, budget: int):
        self.tc, self.lines, self.budget = classes, lines, budget
        self.used, self.line_len, self.lines_done, self.last_sentence = 0, 0, 0, False
        self.relaxations: list[str] = []
        self.done = False

    def step_masks(self) -> StepMasks:
        tc, remaining = self.tc, self.budget - self.used
        if self.done or remaining < (2 if self.line_len == 0 else 1):
            return _free(tc.eop)
        if self.line_len == 0:
            if self.lines is not None and self.lines_done >= self.lines:
                return _free(tc.eop)
            can_end = self.lines is None and self.lines_done > 0 and self.last_sentence
            return _free(tc.start_or_eop if can_end else tc.start)
        # End with a full stop on the last line, or when no further line fits in the budget.
        sentence = self._lines_left() == 1 and (self.lines is not None or remaining < 3)
        full = self._line_full(self.line_len, remaining)
        return _free((tc.close if full else tc.within)[sentence])

    def _lines_left(self) -> int:
        return self.lines - self.lines_done if self.lines is not None else 1

    def _line_full(self, line_len: int, remaining: int) -> bool:
        """Whether a line this long must end now: at most MAX_FREE_LINE, and room left for the lines to come."""
        return line_len >= MAX_FREE_LINE or remaining < 2 * self._lines_left()

    def closes_after_char(self) -> bool:
        """Whether one more character would have to end the current line (so it completes the line)."""
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


# ---------------------------------------------------------------------------------------------
# Decoding machinery


class MaskVectors:
    """Additive float32 vectors for boolean masks (0 allowed, log(1 - strength) or -inf not), cached per mask.

    The prosody engine hands out the same read-only arrays step after step, so each vector is
    built once; the cache keeps the mask alive so that its id cannot be reused by another array."""

    LIMIT = 512  # fresh masks (rhyme masks minus used rhymes) are rare; a full cache is simply emptied

    def __init__(self, keep: np.ndarray):
        self.keep = keep
        self.cache: dict[tuple, tuple[np.ndarray, Any]] = {}

    def _cached(self, kind: str, mask: np.ndarray, arg: float, make):
        key = (kind, id(mask), arg)
        hit = self.cache.get(key)
        if hit is None or hit[0] is not mask:
            if len(self.cache) >= self.LIMIT:
                self.cache.clear()
            hit = self.cache[key] = (mask, make())
        return hit[1]

    def structure(self, mask: np.ndarray) -> np.ndarray:
        """Hard vector of a structure mask, without the tokens never generated."""
        return self._cached("s", mask, 1.0, lambda: np.where(mask & self.keep, np.float32(0), np.float32(-np.inf)))

    def penalty(self, mask: np.ndarray, strength: float) -> np.ndarray:
        """Vector lowering characters outside the mask by log(1 - strength) nats (-inf at strength 1)."""
        off = np.float32(-np.inf if strength >= 1 else math.log1p(-strength))
        return self._cached("p", mask, strength, lambda: np.where(mask, np.float32(0), off))

    def single(self, mask: np.ndarray) -> int | None:
        """The only token a structure mask allows, if it allows exactly one (a forced token)."""
        def make():
            ids = np.flatnonzero(mask & self.keep)
            return int(ids[0]) if len(ids) == 1 else None
        return self._cached("1", mask, 0.0, make)


class Stepper:
    """One-token LSTM steps through fused `torch.lstm_cell` calls: for a single step nn.LSTM's own
    per-call setup costs more than the arithmetic."""

    def __init__(self, model: PoetryLSTM):
        self.model = model
        lstm = model.lstm
        self.layers = [tuple(getattr(lstm, f"{w}_l{k}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                       for k in range(lstm.num_layers)]

    def prefill(self, ids: list[int], batch: int, device: torch.device):
        """Features after the whole context, and the LSTM state, repeated for `batch` candidates."""
        out, (h, c) = self.model.features(torch.tensor([ids], device=device))
        state = [(h[k].expand(batch, -1).contiguous(), c[k].expand(batch, -1).contiguous()) for k in range(len(h))]
        return out[:, -1].expand(batch, -1), state

    def step(self, tokens: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        x, new = self.model.embedding(tokens), []
        for (w_ih, w_hh, b_ih, b_hh), (h, c) in zip(self.layers, state):
            h, c = torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
            new.append((h, c))
            x = h
        if self.model.proj is not None:
            x = self.model.proj(x)
        return x, new


def sample(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float,
           generator: torch.Generator) -> torch.Tensor:
    """One token per row of (n, V) scores: greedy at temperature 0, else top-k, then top-p, then a draw."""
    if temperature == 0:
        return scores.argmax(-1)
    logits, ids = scores / temperature, None
    if top_k is not None and top_k < logits.shape[-1]:
        logits, ids = logits.topk(top_k, -1)
    elif top_p < 1:
        logits, ids = logits.sort(-1, descending=True)
    if top_p < 1:
        probs = torch.softmax(logits, -1)
        # Keep the smallest head of the sorted list whose mass reaches top_p (the first always stays).
        logits = logits.masked_fill(probs.cumsum(-1) - probs >= top_p, -math.inf)
    pick = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
    return (ids.gather(-1, pick) if ids is not None else pick).squeeze(-1)


@dataclass
class Row:
    """One candidate while it is being written."""

    state: Any                      # prosody.FormState or FreeState
    tokens: list[int] = field(default_factory=list)
    line: str = ""                  # the current line so far
    lines_done: int = 0
    prev: int | None = None         # the previous token when it is a character (for the pair ban)
    pairs: dict[int, set[int]] = field(default_factory=dict)
    log_prob: float = 0.0
    sampled: int = 0
    avoided: int = 0
    notes: list[str] = field(default_factory=list)
    done: bool = False


class Decoder:
    """Writes all candidates of one request together, one batched LSTM step per token."""

    def __init__(self, poet: "Poet", s: Settings):
        self.poet, self.s = poet, s
        self.tc, self.vectors = poet.token_classes, poet.mask_vectors
        self.vocab = poet.vocab
        self.heads = [self.vocab.index[h] for h in s.acrostic]
        self.line_len = FORM_LINES[s.form][1] if s.form in FORM_LINES else None
        self.lines_index = poet.line_index() if s.avoid_copies else None
        self.rows = [Row(self._state()) for _ in range(s.num_candidates)]
        self.penalty = np.zeros((s.num_candidates, len(self.vocab)), np.float32)  # repetition, in nats
        self.generator = torch.Generator(device=poet.device).manual_seed(s.seed)

    def _state(self):
        s = self.s
        if s.form == "free":
            return FreeState(self.tc, s.lines, s.max_length)
        return self.poet.form_masks().start(s.form, rhyme=s.rhyme, tones=s.tones)

    def run(self) -> list[Row]:
        """Decode until every candidate has ended or the step cap is reached."""
        s, vocab = self.s, self.vocab
        prompt_ids = vocab.encode(s.prompt)
        context = [vocab.start_id] + vocab.encode(s.style)
        if s.style and s.style[-1] not in LINE_ENDS:
            context.append(vocab.index["。"])  # the style reads as a finished sentence before the poem
        for i, row in enumerate(self.rows):
            for tok in prompt_ids:
                self._check_prompt_token(row, tok)
                self._advance(i, tok)
        feats, state = self.poet.stepper.prefill(context + prompt_ids, len(self.rows), self.poet.device)
        for _ in range(s.max_length - len(prompt_ids) + 1):
            chosen = self._choose(feats)
            if all(row.done for row in self.rows):
                break
            tokens = torch.tensor(chosen, device=self.poet.device)
            feats, state = self.poet.stepper.step(tokens, state)
        for row in self.rows:
            if not row.done:
                row.notes.append(f"stopped at max_length={s.max_length}")
        return self.rows

    def _check_prompt_token(self, row: Row, tok: int) -> None:
        """A prompt must fit the form's line lengths and punctuation."""
        if self.s.form != "free" and not row.state.step_masks().structure[tok]:
            n = len(row.tokens) + 1
            raise ValueError(f"prompt does not fit a {self.s.form} ({self.line_len} characters a line, "
                             f"，and 。 alternating): character {n} {self.vocab.tokens[tok]!r} cannot stand there")

    def _choose(self, feats: torch.Tensor) -> list[int]:
        """The next token of every candidate (padding for finished ones), advancing their states."""
        chosen = [self.vocab.pad_id] * len(self.rows)
        free = []
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            forced = self._forced(row)
            if forced is None:
                free.append(i)
            else:
                chosen[i] = forced
        if free:
            for i, tok in zip(free, self._sample(free, feats)):
                chosen[i] = tok
        for i, row in enumerate(self.rows):
            if not row.done:
                self._advance(i, chosen[i])
        return chosen

    def _forced(self, row: Row) -> int | None:
        """A token the structure or the acrostic dictates (then the model is not consulted)."""
        single = self.vectors.single(row.state.step_masks().structure)
        if single is not None:
            return single
        if not row.line and row.lines_done < len(self.heads):
            return self.heads[row.lines_done]
        return None

    def _layers(self, i: int) -> list[tuple[str, Any]]:
        """The constraints on candidate i's next token, hardest first: (name, vector or banned ids)."""
        s, row = self.s, self.rows[i]
        masks = row.state.step_masks()
        layers: list[tuple[str, Any]] = [("structure", self.vectors.structure(masks.structure))]
        if masks.rhyme is not None and s.rhyme_strength > 0:
            layers.append(("rhyme", self.vectors.penalty(masks.rhyme, s.rhyme_strength)))
        if masks.tone is not None and s.tone_strength > 0:
            layers.append(("tone", self.vectors.penalty(masks.tone, s.tone_strength)))
        repeats = row.pairs.get(row.prev) if row.prev is not None else None
        if repeats:
            layers.append(("no-repeat", np.fromiter(repeats, np.int64)))
        return layers

    def _bias(self, free: list[int]) -> np.ndarray:
        """(n, V) additive constraints of the candidates that sample this step."""
        bias = self.penalty[free] if len(free) < len(self.rows) else self.penalty.copy()
        for k, i in enumerate(free):
            for _, layer in self._layers(i):
                if layer.dtype.kind == "i":
                    bias[k, layer] = -np.inf
                else:
                    bias[k] += layer
        return bias

    def _relaxed(self, i: int) -> np.ndarray:
        """Candidate i's bias with each hard layer that would leave no token dropped (and noted)."""
        layers = self._layers(i)
        row = layers[0][1] + self.penalty[i]
        for name, layer in layers[1:]:
            trial = row.copy()
            if layer.dtype.kind == "i":
                trial[layer] = -np.inf
            else:
                trial += layer
            if np.isfinite(trial).any():
                row = trial
            else:
                self.rows[i].notes.append(f"line {self.rows[i].lines_done + 1}: dropped the {name} constraint "
                                          "(no character met all of them)")
        return row

    def _sample(self, free: list[int], feats: torch.Tensor) -> list[int]:
        """Sample the candidates that the structure leaves free, with the copy guard."""
        s, dev = self.s, self.poet.device
        if len(free) < len(self.rows):
            feats = feats[torch.tensor(free, device=dev)]
        logp = torch.log_softmax(self.poet.model.scores(feats).float(), -1)
        scores = logp + torch.from_numpy(self._bias(free)).to(dev)
        for k in torch.nonzero(torch.isneginf(scores.amax(-1))).flatten().tolist():
            scores[k] = logp[k] + torch.from_numpy(self._relaxed(free[k])).to(dev)
        tokens = sample(scores, s.temperature, s.top_k, s.top_p, self.generator).tolist()
        if self.lines_index is not None:
            tokens = [self._guard(free[k], scores[k:k + 1], tok) for k, tok in enumerate(tokens)]
        picked = logp.gather(-1, torch.tensor(tokens, device=dev)[:, None]).flatten().tolist()
        for i, lp in zip(free, picked):
            self.rows[i].log_prob += lp
            self.rows[i].sampled += 1
        return tokens

    def _completed_line(self, row: Row, tok: int) -> str | None:
        """The line that token would complete, if it completes one (a line end, or a last character)."""
        if self.tc.line_end[tok]:
            return row.line or None
        if self.line_len is not None:
            last = len(row.line) == self.line_len - 1
        else:
            last = row.state.closes_after_char()
        return row.line + self.vocab.tokens[tok] if last and self.tc.char[tok] else None

    def _guard(self, i: int, scores: torch.Tensor, tok: int) -> int:
        """Resample while the token would complete a corpus line (scores: candidate i's (1, V) row)."""
        row = self.rows[i]
        for attempt in range(COPY_RETRIES + 1):
            line = self._completed_line(row, tok)
            if line is None or line not in self.lines_index:
                return tok
            row.avoided += 1
            scores[0, tok] = -math.inf
            if attempt == COPY_RETRIES or torch.isneginf(scores.amax()):
                break
            tok = int(sample(scores, self.s.temperature, self.s.top_k, self.s.top_p, self.generator)[0])
        row.notes.append(f"line {row.lines_done + 1} equals a corpus line: no other choice was left")
        return tok

    def _advance(self, i: int, tok: int) -> None:
        """Record candidate i's token: state, line, repetition memory."""
        row = self.rows[i]
        row.state.advance(tok)
        row.tokens.append(tok)
        if tok == self.vocab.eop_id:
            row.done = True
        elif self.tc.line_end[tok]:
            row.lines_done += bool(row.line)
            row.line, row.prev = "", None
        else:
            row.line += self.vocab.tokens[tok]
            if row.prev is not None:
                row.pairs.setdefault(row.prev, set()).add(tok)
            row.prev = tok if self.tc.char[tok] else None
            self.penalty[i, tok] -= self.s.repetition_penalty


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Poem:
    """One generated poem with its scores and reports; `to_dict()` is the JSON form (CLI, app)."""

    text: str
    lines: list[str]            # each line with its closing punctuation; "".join(lines) == text
    score: float
    score_parts: dict[str, float]
    log_prob: float             # natural log-probability of the sampled tokens
    mean_log_prob: float
    sampled_tokens: int
    copy: dict                  # novelty.copy_report: copied lines, longest shared span, nearest poem
    form: str
    script: str
    seed: int
    candidate: int              # index in the batch (the same seed and settings give it again)
    rank: int
    relaxations: list[str]
    settings: dict
    report: Any = field(default=None, repr=False, compare=False)  # prosody.PoemReport

    @cached_property
    def prosody(self) -> dict | None:
        """The prosody engine's JSON report (built on first use: it is a deep copy of the report)."""
        return self.report.to_dict() if self.report is not None else None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "report"}
        return {**out, "prosody": self.prosody}


LINE_RE = re.compile(f"[^{LINE_ENDS}]+[{LINE_ENDS}]?")


def split_with_punctuation(text: str) -> list[str]:
    """Lines with their closing punctuation."""
    return LINE_RE.findall(text)


def score_parts(mean_log_prob: float, report, copy: dict) -> dict[str, float]:
    """The documented score: lm + prosody + novelty (see the module docstring)."""
    prosody = PROSODY_WEIGHT * (0.5 * bool(report.rhymes) + 0.5 * float(report.tone_score)) if report else 0.0
    span = copy.get("longest_span_chars") or 0
    novelty = -(COPIED_LINE_WEIGHT * len(copy["copied_lines"]) + SPAN_WEIGHT * max(0, span - FREE_SPAN))
    parts = {"lm": mean_log_prob, "prosody": prosody, "novelty": novelty}
    return {k: round(v, 4) + 0.0 for k, v in parts.items()}


def _finished_text(text: str) -> str:
    """A poem cut by its budget after a comma ends with a full stop instead."""
    return text[:-1] + "。" if text and text[-1] in LINE_ENDS and text[-1] not in SENTENCE_ENDS else text


# ---------------------------------------------------------------------------------------------
# Poet


@contextmanager
def torch_threads(n: int | None):
    """Run a block with n torch threads (None: leave as is), restoring the previous count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Poet:
    """A ready generator: model and vocabulary on one device, plus the copy indexes.

    `lines` is the corpus-line hash index (for `avoid_copies`); `corpus` the tang.npz whose full
    index gives the longest shared span and the nearest poem (loaded on first use). `threads`:
    torch threads while generating; one-token steps are too small to share, and on a busy CPU
    every multi-threaded op waits for its slowest thread (measured 20x slower here)."""

    def __init__(self, model: PoetryLSTM, device: torch.device | str = "cpu", *, lines: LineIndex | None = None,
                 corpus: str | Path | None = None, threads: int = 1):
        if model.vocab is None:
            raise ModelLoadError("model has no vocabulary attached")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.vocab = model.vocab
        self.lines, self.corpus_path = lines, Path(corpus) if corpus else None
        self.threads = threads
        self._corpus: CorpusIndex | None | bool = False  # False: not loaded yet
        self._form_masks = None
        self.token_classes = TokenClasses(self.vocab.tokens)
        self.mask_vectors = MaskVectors(self.token_classes.keep)
        self.stepper = Stepper(self.model)

    # -- indexes, loaded lazily -----------------------------------------------------------------

    def corpus_index(self) -> CorpusIndex | None:
        """The full copy index of the corpus file, or None without one (built and cached on first use)."""
        if self._corpus is False:
            self._corpus = CorpusIndex.for_npz(self.corpus_path) if self.corpus_path else None
        return self._corpus

    def line_index(self) -> LineIndex | None:
        """Corpus-line hashes: the model folder's, else derived from the corpus index."""
        if self.lines is None and self.corpus_index() is not None:
            self.lines = self.corpus_index().line_index()
        return self.lines

    def form_masks(self):
        """The prosody engine's masks over this vocabulary (built once)."""
        if self._form_masks is None:
            self._form_masks = FormMasks(self.vocab)
        return self._form_masks

    # -- scoring ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def log_likelihood(self, text: str) -> float:
        """Natural-log probability of `<START>` + text + `<EOP>` under the model."""
        ids = [self.vocab.start_id] + self.vocab.encode(text) + [self.vocab.eop_id]
        x = torch.tensor([ids], device=self.device)
        logp = torch.log_softmax(self.model(x[:, :-1])[0].float(), dim=-1)
        return float(logp.gather(-1, x[:, 1:, None]).sum())

    # -- generation -------------------------------------------------------------------------------

    def generate(self, prompt: str = "", *, acrostic: str = "", form: str = "free", rhyme: bool = True,
                 tones: bool = True, rhyme_strength: float = 1.0, tone_strength: float = 1.0,
                 temperature: float = 0.8, top_k: int | None = 50, top_p: float = 0.95,
                 repetition_penalty: float = 1.0, style: str = "", num_candidates: int = 1,
                 seed: int | None = None, max_length: int = DEFAULT_MAX_LENGTH, script: str = "auto",
                 avoid_copies: bool = True) -> list[Poem]:
        """Poems ranked best first (identical candidates merged, so possibly fewer than asked).

        prompt: the poem's beginning, continued; acrostic: one head character per line
        (punctuation and spaces ignored); form: free, 五绝, 七绝, 五律, 七律, or 五言/七言 (绝句 or
        律诗 by the acrostic's length); rhyme/tones: the form's constraints, with strengths in
        [0, 1] (1 = hard); temperature 0 = greedy; top_k None = no limit (above the vocabulary
        size = all); top_p in (0, 1]; repetition_penalty: nats per earlier use of a character;
        style: text fed to the model first to set the mood, never printed; seed None = drawn and
        reported; max_length: characters of the poem, prompt included; script: auto (that of the
        prompt/acrostic/style, else the model's), simplified or traditional; avoid_copies: no
        generated line equals a corpus line. Bad values raise ValueError naming the parameter."""
        s = validate(self.vocab, prompt=prompt, acrostic=acrostic, form=form, rhyme=rhyme, tones=tones,
                     rhyme_strength=rhyme_strength, tone_strength=tone_strength, temperature=temperature,
                     top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, style=style,
                     num_candidates=num_candidates, seed=seed, max_length=max_length, script=script,
                     avoid_copies=avoid_copies)
        rows = self._decode(s)
        settings = s.to_dict()
        return self._ranked([self._poem(s, settings, i, row) for i, row in enumerate(rows)])

    def _decode(self, s: Settings) -> list[Row]:
        with torch.inference_mode(), torch_threads(self.threads):
            return Decoder(self, s).run()

    def _poem(self, s: Settings, settings: dict, i: int, row: Row) -> Poem:
        """A finished candidate with its prosody and copy reports and its score."""
        model_text = _finished_text(self.vocab.decode(row.tokens))
        text = model_text if s.script == self.vocab.script else to_script(model_text, s.script)
        report = analyze(text) if text else None
        copy = copy_report(model_text, self.line_index(), self.corpus_index(), self.vocab.script, s.script)
        copy["avoided"] = row.avoided
        mean = row.log_prob / row.sampled if row.sampled else 0.0
        parts = score_parts(mean, report, copy)
        return Poem(text=text, lines=split_with_punctuation(text), score=round(sum(parts.values()), 4),
                    score_parts=parts, log_prob=round(row.log_prob, 4), mean_log_prob=round(mean, 4),
                    sampled_tokens=row.sampled, copy=copy,
                    form=s.form, script=s.script, seed=s.seed, candidate=i, rank=0,
                    relaxations=list(getattr(row.state, "relaxations", [])) + row.notes, settings=dict(settings),
                    report=report)

    @staticmethod
    def _ranked(poems: list[Poem]) -> list[Poem]:
        """Best score first (ties: batch order), duplicates dropped, ranks numbered from 1."""
        seen, out = set(), []
        for poem in sorted(poems, key=lambda p: (-p.score, p.candidate)):
            if poem.text not in seen:
                seen.add(poem.text)
                poem.rank = len(out) + 1
                out.append(poem)
        return out

    def continue_text(self, seed_text: str = "", max_new_tokens: int = 128, temperature: float = 1.0,
                      top_k: int | None = None, seed: int | None = None) -> str:
        """Seed text continued as free verse until `<EOP>` or `max_new_tokens`: text only, no reports (the
        trainer's samples need neither the prosody nor the copy index)."""
        self.vocab.encode(seed_text, "seed text")  # unknown characters named as the trainer's callers expect
        s = validate(self.vocab, prompt=seed_text, temperature=temperature, top_k=top_k, top_p=1.0, seed=seed,
                     max_length=len(seed_text) + max_new_tokens, avoid_copies=False)
        return _finished_text(self.vocab.decode(self._decode(s)[0].tokens))


def load(path_or_repo_id: str | Path | None = None, device: str | None = None,
         corpus: str | Path | None = DEFAULT_CORPUS) -> Poet:
    """A ready Poet from a model folder or Hub repo id (default: the shipped checkpoint).

    The folder's `corpus_lines.npy` feeds `avoid_copies`; `corpus` (a tang.npz) the full copy report."""
    if path_or_repo_id is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise ModelLoadError(f"no default model at {DEFAULT_MODEL}; train one with "
                                 "`python -m train.train --data data/tang.npz --out runs/mine` and "
                                 "pass `load('runs/mine/best')`")
        path_or_repo_id = DEFAULT_MODEL
    dev = pick_device(device)
    model = PoetryLSTM.from_pretrained(path_or_repo_id, map_location=str(dev))
    return Poet(model, dev, lines=find_line_index(path_or_repo_id), corpus=corpus)
