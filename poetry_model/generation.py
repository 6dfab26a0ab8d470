"""Poet: a loaded model plus vocabulary, and the generation engine behind the CLI and the app.

    poet = load()                                   # the shipped model (or load("runs/x/best"), load("user/repo"))
    poems = poet.generate(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5)
    print(poems[0].text, poems[0].to_dict()["score_parts"])
    many = poet.generate_many([dict(form="五绝", seed=1), dict(acrostic="春夏", seed=2)])  # decoded together
    server = Batcher(poet); server.generate(form="七律")  # from any thread: concurrent calls share steps

How a poem is made: the context `<START>` + style + prompt runs through the LSTM once; then all
candidates advance together, one token per step, as one batch of LSTM states (and so do the
candidates of other requests decoded with them: `generate_many`, `Batcher`; each request keeps its
own random generator, and a row's numbers never depend on the other rows, so a seed gives the same
poems alone or batched). At each step every candidate's next-token log-probabilities are shaped
by, in this order:

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

import logging
import math
import warnings
import queue
import re
import secrets
import threading
import unicodedata
from collections import OrderedDict, deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .model import ModelLoadError, PoetryLSTM
from .novelty import LINE_ENDS, CorpusIndex, LineIndex, copy_report, find_corpus, find_line_index
from .prosody import FORMS as FORM_LINES  # form -> (lines, characters per line)
from .prosody import FormMasks, StepMasks, analyze
from .vocab import EOP, to_script

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "tang-lstm"
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "tang.npz"
MODEL_CORPUS = "model"  # load(corpus=...): the model folder's own corpus.npz (else DEFAULT_CORPUS if built)

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
MIN_FREE_LINES = 4  # free verse without an acrostic or a form ends no earlier than a quatrain
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
        return {name: getattr(self, name) for name in _SETTINGS_FIELDS}  # = asdict: all values immutable


_SETTINGS_FIELDS = tuple(f.name for f in fields(Settings))


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


@lru_cache(maxsize=4096)
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
            # A poem ends after a full sentence and at least MIN_FREE_LINES lines: the model alone
            # tends to stop after one couplet, far shorter than the corpus (7.9 lines on average).
            can_end = self.lines is None and self.lines_done >= MIN_FREE_LINES and self.last_sentence
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

    def combined(self, masks: StepMasks, rhyme_strength: float, tone_strength: float) -> np.ndarray:
        """Structure, rhyme and tone vectors of one step added up (what a candidate's scores get)."""
        rhyme = masks.rhyme if rhyme_strength > 0 else None
        tone = masks.tone if tone_strength > 0 else None

        def make():
            vec = self.structure(masks.structure).copy()
            if rhyme is not None:
                vec += self.penalty(rhyme, rhyme_strength)
            if tone is not None:
                vec += self.penalty(tone, tone_strength)
            return _frozen(vec)
        key = ("c", id(masks.structure), id(rhyme), id(tone), rhyme_strength, tone_strength)
        return self._cached(key, (masks.structure, rhyme, tone), make)


ROW_BLOCK = 4  # BLAS rounds a row the same in every batch whose row count is a multiple of this (see _mm)


def _mm(bias: torch.Tensor | None, x: torch.Tensor, weight_t: torch.Tensor, tile: bool = False) -> torch.Tensor:
    """bias + x @ weight_t, computed so that each row's result is the same in any batch.

    MKL picks its sgemm kernels by the number of rows M: fewer than 4 rows, and the last M % 4
    rows of a larger batch, go to small kernels that round differently from the 4-row blocks
    (seen on every instruction set it dispatches to: AVX-512, AVX2, SSE4.2, at 1 or 2 threads).
    So rows are padded with zero rows to a multiple of ROW_BLOCK, and every row of any batch, at
    any position, gets the block kernel's bits: a request decodes to the same poem alone or
    batched with others. Where a BLAS is found to round differently across such batches too
    (`rows_agree`), `tile` makes every call exactly ROW_BLOCK rows, the same shape always, at the
    price of reading the weights once per tile."""
    rows = x.shape[0]
    per_row = bias is not None and bias.dim() == 2  # the first layer's bias is a looked-up row per token
    if tile and rows > ROW_BLOCK:
        return torch.cat([_mm(bias[i:i + ROW_BLOCK] if per_row else bias, x[i:i + ROW_BLOCK], weight_t)
                          for i in range(0, rows, ROW_BLOCK)])
    if rows % ROW_BLOCK:
        x = _pad_rows(x)
        bias = _pad_rows(bias) if per_row else bias
    out = torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)
    return out[:rows]


def _pad_rows(t: torch.Tensor) -> torch.Tensor:
    """`t` with zero rows appended up to the next multiple of ROW_BLOCK."""
    return torch.cat([t, t.new_zeros(-t.shape[0] % ROW_BLOCK, t.shape[1])])


def rows_agree(weight_t: torch.Tensor, sizes: tuple[int, ...] = (ROW_BLOCK, 8, 16, 64)) -> bool:
    """Whether this BLAS gives a row the same bits in every batch of a multiple of ROW_BLOCK rows.

    The kernels' order of operations depends on shapes, never on values, so one random row
    placed first and last in batches of several sizes settles it for this weight's shape."""
    gen = torch.Generator().manual_seed(0)
    probe = torch.randn(weight_t.shape[0], generator=gen)
    want = None
    for size in sizes:
        batch = torch.randn(size, weight_t.shape[0], generator=gen)
        for position in (0, size - 1):
            batch[position] = probe
            got = torch.mm(batch, weight_t)[position]
            if want is None:
                want = got
            elif not torch.equal(got, want):
                return False
    return True


def _lstm_gates(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New (h, c) from an LSTM layer's pre-activation gates (B, 4H) in PyTorch's i, f, g, o order."""
    hidden = c.shape[-1]
    act = torch.sigmoid(gates)
    c = torch.addcmul(act[:, hidden:2 * hidden] * c, act[:, :hidden], torch.tanh(gates[:, 2 * hidden:3 * hidden]))
    return act[:, 3 * hidden:] * torch.tanh(c), c


class Stepper:
    """The network laid out for one-token steps of many rows at once (inference only).

    nn.LSTM and the output layer cost more in per-call setup than in arithmetic for one token, so
    the weights are copied once into the shapes the steps need: the embedding and the first
    layer's input weights (and both biases) become one (V, 4H) table, so the first layer's input
    product is a row lookup; the other layers take [x, h] times one fused (2H, 4H) matrix; the
    output layer gives full log-probabilities (an adaptive softmax head is expanded to every token).
    The copies follow the model: they are rebuilt when a parameter changes (its version counter).
    Prefills (the context before the poem) are cached, since most requests start alike."""

    PREFILL_CACHE = 64

    def __init__(self, model: PoetryLSTM):
        self.model = model
        self._key: tuple | None = None
        self._prefills: OrderedDict[tuple[int, ...], tuple] = OrderedDict()
        self._lock = threading.RLock()

    def sync(self) -> "Stepper":
        """Rebuild the step weights if the model's parameters changed since they were made."""
        key = tuple((p.data_ptr(), p._version, p.device) for p in self.model.parameters())
        if key != self._key:
            with self._lock, torch.inference_mode():
                if key != self._key:
                    self._build()
                    self._prefills.clear()
                    self._key = key
        return self

    def _build(self) -> None:
        model, lstm = self.model, self.model.lstm
        f32 = lambda t: t.detach().float()  # noqa: E731

        def weights(k: int):
            return [f32(getattr(lstm, f"{w}_l{k}")) for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

        w_ih, w_hh, b_ih, b_hh = weights(0)
        self.table = torch.addmm(b_ih + b_hh, f32(model.embedding.weight), w_ih.t())  # (V, 4H)
        self.w_hh0 = w_hh.t().contiguous()
        self.upper = []
        for k in range(1, lstm.num_layers):
            w_ih, w_hh, b_ih, b_hh = weights(k)
            self.upper.append((b_ih + b_hh, torch.cat([w_ih, w_hh], 1).t().contiguous()))
        self.proj = f32(model.proj.weight).t().contiguous() if model.proj is not None else None
        head = model.head
        if isinstance(head, nn.Linear):
            self.adaptive = None
            self.head_w, self.head_b = f32(head.weight).t().contiguous(), f32(head.bias)
        else:
            self.head_w = f32(head.head.weight).t().contiguous()
            self.head_b = f32(head.head.bias) if head.head.bias is not None else None
            bounds = list(zip(head.cutoffs, head.cutoffs[1:]))
            self.adaptive = (head.shortlist_size, head.n_classes,
                             [(lo, hi, f32(t[0].weight).t().contiguous(), f32(t[1].weight).t().contiguous())
                              for (lo, hi), t in zip(bounds, head.tail)])
        weights_t = [self.w_hh0, *(w for _, w in self.upper), self.head_w]
        weights_t += ([self.proj] if self.proj is not None else []) + \
            [w for tail in (self.adaptive[2] if self.adaptive else []) for w in tail[2:]]
        self.tile = not all(rows_agree(w) for w in weights_t)  # see _mm: fixed-shape tiles only where needed

    # -- steps ------------------------------------------------------------------------------------

    def prefill(self, ids: list[int], batch: int = 1, device: torch.device | str | None = None):
        """Features after the whole context, and the LSTM state, repeated for `batch` rows.

        Runs nn.LSTM over the context (one row, so the same bits whatever else is being decoded)."""
        self.sync()
        key = tuple(ids)
        with self._lock:  # requests may be decoded from several threads (Batcher and direct calls)
            hit = self._prefills.get(key)
            if hit is None:
                dev = next(self.model.parameters()).device if device is None else torch.device(device)
                with torch.inference_mode():
                    out, (h, c) = self.model.features(torch.tensor([ids], device=dev))
                    hit = (out[:, -1].float(), [(h[k].float(), c[k].float()) for k in range(len(h))])
                self._prefills[key] = hit
                if len(self._prefills) > self.PREFILL_CACHE:
                    self._prefills.popitem(last=False)
            else:
                self._prefills.move_to_end(key)
        feats, state = hit
        return feats.expand(batch, -1), [(h.expand(batch, -1), c.expand(batch, -1)) for h, c in state]

    def step(self, tokens: torch.Tensor, state: list) -> tuple[torch.Tensor, list]:
        """Features (B, D) after feeding one token per row, and the new state."""
        (h, c), new = state[0], []
        h, c = _lstm_gates(_mm(self.table.index_select(0, tokens), h, self.w_hh0, self.tile), c)
        new.append((h, c))
        for (bias, w), (h_k, c_k) in zip(self.upper, state[1:]):
            h, c = _lstm_gates(_mm(bias, torch.cat([h, h_k], 1), w, self.tile), c_k)
            new.append((h, c))
        return (h if self.proj is None else _mm(None, h, self.proj, self.tile)), new

    def log_probs(self, feats: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities (B, V) for features (B, D)."""
        head = torch.log_softmax(_mm(self.head_b, feats, self.head_w, self.tile), -1)
        if self.adaptive is None:
            return head
        shortlist, n_classes, tails = self.adaptive
        out = feats.new_empty((feats.shape[0], n_classes))
        out[:, :shortlist] = head[:, :shortlist]
        for i, (lo, hi, w1, w2) in enumerate(tails):
            cluster = torch.log_softmax(_mm(None, _mm(None, feats, w1, self.tile), w2, self.tile), -1)
            torch.add(cluster, head[:, shortlist + i:shortlist + i + 1], out=out[:, lo:hi])
        return out


def _largest(scores: torch.Tensor, k: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest scores of each row and their ids, largest first (k None: every score, sorted).

    On the CPU numpy's introselect and sort are 2-7x faster than torch.topk and torch.sort; equal
    scores may come in another order, which no draw can tell apart (only -inf ever ties)."""
    if scores.device.type != "cpu":
        return scores.topk(k, -1) if k is not None else scores.sort(-1, descending=True)
    neg = -scores.numpy()  # smallest first: masked tokens (+inf here) pile up where introselect never looks
    if k is None:
        ids = np.argsort(neg, axis=-1, kind="stable")
    else:
        ids = np.argpartition(neg, k - 1, axis=-1)[:, :k]
        ids = np.take_along_axis(ids, np.argsort(np.take_along_axis(neg, ids, -1), axis=-1, kind="stable"), -1)
    ids = torch.from_numpy(ids)
    return scores.gather(-1, ids), ids


def sample(scores: torch.Tensor, temperature: float, top_k: int | None, top_p: float,
           generator: torch.Generator | list[tuple[torch.Generator, int, int]]) -> torch.Tensor:
    """One token per row of (n, V) scores: greedy at temperature 0, else top-k, then top-p, then a draw.

    `generator` draws for every row, or is a list of (generator, first row, end row): rows of
    several requests sampled together, each request with its own generator. The draw is
    torch.multinomial's own (probabilities over exponential noise, argmax), done here so that one
    call serves many requests; a request's rows consume its generator exactly as a multinomial would."""
    if temperature == 0:
        return scores.argmax(-1)
    ids = None
    if top_k is not None and top_k < scores.shape[-1]:
        logits, ids = _largest(scores, top_k)
        logits = logits / temperature
    elif top_p < 1:
        logits, ids = _largest(scores / temperature, None)
    else:
        logits = scores / temperature
    if top_p < 1:
        probs = torch.softmax(logits, -1)
        # Keep the smallest head of the sorted list whose mass reaches top_p (the first always stays).
        logits = logits.masked_fill(probs.cumsum(-1) - probs >= top_p, -math.inf)
    probs = torch.softmax(logits, -1)
    noise = torch.empty_like(probs)
    spans = [(generator, 0, len(probs))] if isinstance(generator, torch.Generator) else generator
    for gen, lo, hi in spans:
        noise[lo:hi].exponential_(1, generator=gen)
    pick = probs.div_(noise).argmax(-1, keepdim=True)
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
    """One request's candidates while they are written: constraints, sampling, bookkeeping.

    The model is not called here: `Engine` runs the LSTM and the output layer for the rows of
    every request it decodes, and hands each decoder the log-probabilities of its rows."""

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
        self.sampling = (s.temperature, s.top_k, s.top_p)
        prompt_ids = self.vocab.encode(s.prompt)
        context = [self.vocab.start_id] + self.vocab.encode(s.style)
        if s.style and s.style[-1] not in LINE_ENDS:
            context.append(self.vocab.index["。"])  # the style reads as a finished sentence before the poem
        for i, row in enumerate(self.rows):
            for tok in prompt_ids:
                self._check_prompt_token(row, tok)
                self.advance(i, tok)
        self.context = context + prompt_ids
        self.steps_left = s.max_length - len(prompt_ids) + 1  # choices per candidate, at most
        self.finished = False
        self.future: Any = None  # set by Batcher

    def _state(self):
        s = self.s
        if s.form == "free":
            return FreeState(self.tc, s.lines, s.max_length)
        return self.poet.form_masks().start(s.form, rhyme=s.rhyme, tones=s.tones)

    def _check_prompt_token(self, row: Row, tok: int) -> None:
        """A prompt must fit the form's line lengths and punctuation."""
        if self.s.form != "free" and not row.state.step_masks().structure[tok]:
            n = len(row.tokens) + 1
            raise ValueError(f"prompt does not fit a {self.s.form} ({self.line_len} characters a line, "
                             f"，and 。 alternating): character {n} {self.vocab.tokens[tok]!r} cannot stand there")

    def finish(self) -> None:
        """End decoding: a candidate still open has hit the step cap (and says so)."""
        self.finished = True
        for row in self.rows:
            if not row.done:
                row.notes.append(f"stopped at max_length={self.s.max_length}")

    # -- one step ---------------------------------------------------------------------------------

    def forced(self, row: Row) -> int | None:
        """A token the structure or the acrostic dictates (then the model is not consulted)."""
        single = self.vectors.single(row.state.step_masks().structure)
        if single is not None:
            return single
        if not row.line and row.lines_done < len(self.heads):
            return self.heads[row.lines_done]
        return None

    def bias(self, free: list[int], out: np.ndarray) -> None:
        """Write the (n, V) additive constraints of the candidates that sample this step into `out`."""
        s = self.s
        for k, i in enumerate(free):
            row = self.rows[i]
            np.add(self.penalty[i], self.vectors.combined(row.state.step_masks(), s.rhyme_strength, s.tone_strength),
                   out=out[k])
            repeats = row.pairs.get(row.prev) if row.prev is not None else None
            if repeats:
                out[k, list(repeats)] = -np.inf

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

    def relaxed(self, i: int) -> np.ndarray:
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

    def guard(self, i: int, scores: torch.Tensor, tok: int) -> int:
        """Resample while the token would complete a corpus line (scores: candidate i's (1, V) row)."""
        if self.lines_index is None:
            return tok
        row = self.rows[i]
        for attempt in range(COPY_RETRIES + 1):
            line = self._completed_line(row, tok)
            if line is None or line not in self.lines_index:
                return tok
            row.avoided += 1
            scores[0, tok] = -math.inf
            if attempt == COPY_RETRIES or torch.isneginf(scores.amax()):
                break
            tok = int(sample(scores, *self.sampling, self.generator)[0])
        row.notes.append(f"line {row.lines_done + 1} equals a corpus line: no other choice was left")
        return tok

    def _completed_line(self, row: Row, tok: int) -> str | None:
        """The line that token would complete, if it completes one (a line end, or a last character)."""
        if self.tc.line_end[tok]:
            return row.line or None
        if self.line_len is not None:
            last = len(row.line) == self.line_len - 1
        else:
            last = row.state.closes_after_char()
        return row.line + self.vocab.tokens[tok] if last and self.tc.char[tok] else None

    def record(self, i: int, log_prob: float) -> None:
        """Count a sampled token's log-probability under the model."""
        row = self.rows[i]
        row.log_prob += log_prob
        row.sampled += 1

    def advance(self, i: int, tok: int) -> None:
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


class Engine:
    """Decodes the candidates of any number of requests together, one batched model step per token.

    Every step: each request names its forced tokens (form punctuation, acrostic heads); one
    matrix product gives the log-probabilities of all the rows that sample; requests with the same
    sampling settings are sampled in one set of tensor operations, each from its own generator;
    then one LSTM step advances every unfinished row. Requests can join between steps (`add`)
    and leave when done (`step` returns them). A row's numbers never depend on the other rows, so
    a request gives the same poems alone or in any batch."""

    def __init__(self, poet: "Poet"):
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
            for (dec, rows, _, _), (lo, a, b) in zip(members, offsets):
                for j, i in enumerate(rows):
                    tokens[lo + j] = dec.guard(i, sub[a + j:a + j + 1], drawn[a + j])
        picked = logp.gather(-1, torch.tensor(tokens, device=dev)[:, None]).flatten().tolist()
        for k, r in enumerate(free):
            dec, i = slots[r]
            dec.record(i, picked[k])
            chosen[r] = tokens[k]


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
        return {**{name: getattr(self, name) for name in _POEM_FIELDS}, "prosody": self.prosody}


_POEM_FIELDS = tuple(f.name for f in fields(Poem) if f.name != "report")


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
    """Run a block with n torch threads (None: leave as is), restoring the previous count.

    Only a real change touches the thread pool: a server that set the count once pays nothing."""
    before = torch.get_num_threads()
    change = bool(n) and n != before
    if change:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if change:
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
        self._corpus_lock = threading.Lock()  # building takes seconds: other lazy parts must not wait on it
        self._form_masks = None
        self._lazy = threading.RLock()  # the lazy indexes may be first asked for from several threads
        self.token_classes = TokenClasses(self.vocab.tokens)
        self.mask_vectors = MaskVectors(self.token_classes.keep)
        self.stepper = Stepper(self.model)

    # -- indexes, loaded lazily -----------------------------------------------------------------

    def corpus_index(self) -> CorpusIndex | None:
        """The full copy index of the corpus file, or None without one (built and cached on first use)."""
        if self._corpus is False:
            with self._corpus_lock:
                if self._corpus is False:
                    self._corpus = self._read_corpus()
        return self._corpus

    def _read_corpus(self) -> CorpusIndex | None:
        if self.corpus_path is None:
            return None
        try:
            return CorpusIndex.for_file(self.corpus_path)
        except ValueError as error:  # a damaged optional file costs the full report, not the service
            warnings.warn(f"copy report without the nearest corpus poem: {error}", stacklevel=2)
            return None

    def line_index(self) -> LineIndex | None:
        """Corpus-line hashes: the model folder's, else derived from the corpus index."""
        if self.lines is None and self.corpus_index() is not None:
            self.lines = self.corpus_index().line_index()
        return self.lines

    def form_masks(self):
        """The prosody engine's masks over this vocabulary (built once)."""
        if self._form_masks is None:
            with self._lazy:
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
        return self._poems(s, self._decode(s))

    def generate_many(self, requests: list[dict[str, Any]]) -> list[list[Poem] | Exception]:
        """Several `generate` calls decoded together (one model step per token for all of them).

        Each request is a dict of `generate`'s keyword arguments and keeps its own seed, so it
        gives exactly the poems it gives alone. Returns, in order, each request's poems, or the
        exception (ValueError for bad arguments) that it alone raised."""
        results: list[Any] = [None] * len(requests)
        decoders: list[tuple[int, Decoder]] = []
        with self._decoding():
            engine = Engine(self)
            for k, kwargs in enumerate(requests):
                try:
                    dec = Decoder(self, validate(self.vocab, **kwargs))
                    engine.add(dec)
                except Exception as exc:  # noqa: BLE001 - returned to that request only
                    results[k] = exc
                    continue
                decoders.append((k, dec))
            engine.run()
        for k, dec in decoders:
            try:
                results[k] = self._poems(dec.s, dec.rows)
            except Exception as exc:  # noqa: BLE001
                results[k] = exc
        return results

    @contextmanager
    def _decoding(self):
        with torch.inference_mode(), torch_threads(self.threads):
            yield

    def _decode(self, s: Settings) -> list[Row]:
        with self._decoding():
            dec = Decoder(self, s)
            engine = Engine(self)
            engine.add(dec)
            engine.run()
        return dec.rows

    def _poems(self, s: Settings, rows: list[Row]) -> list[Poem]:
        """Finished candidates as ranked poems; the reports of identical texts are made once."""
        settings, reports = s.to_dict(), {}
        return self._ranked([self._poem(s, settings, i, row, reports) for i, row in enumerate(rows)])

    def _poem(self, s: Settings, settings: dict, i: int, row: Row, reports: dict | None = None) -> Poem:
        """A finished candidate with its prosody and copy reports and its score."""
        model_text = _finished_text(self.vocab.decode(row.tokens))
        known = reports.get(model_text) if reports is not None else None
        if known is None:
            text = model_text if s.script == self.vocab.script else to_script(model_text, s.script)
            report = analyze(text) if text else None
            known = (text, report, copy_report(model_text, self.line_index(), self.corpus_index(),
                                               self.vocab.script, s.script))
            if reports is not None:
                reports[model_text] = known
        text, report, copy = known
        copy = {**copy, "avoided": row.avoided}  # a duplicate text shares the rest (and is dropped when ranked)
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


class Batcher:
    """Continuous batching for servers: requests may come from many threads at once.

    One thread decodes every waiting request together (`Engine`): requests join between two
    steps and leave as soon as they are done, so a request never waits for a longer one to end.
    Arguments, results and errors are those of `Poet.generate`, and so are the poems (a request's
    rows never depend on the others'). `submit` checks the arguments in the calling thread (bad
    ones raise there) and returns a Future of the ranked poems; `generate` waits for it.
    `max_rows` caps the candidates decoded at once; more requests wait for room. The decoding
    thread runs with `poet.threads` torch threads (a process-wide setting: a server sets it once)."""

    def __init__(self, poet: Poet, max_rows: int = 256):
        self.poet, self.max_rows = poet, max(1, max_rows)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="poet-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str = "", **kwargs) -> Future:
        """Queue one `generate` call; the Future gives its poems (or its exception)."""
        dec = Decoder(self.poet, validate(self.poet.vocab, prompt=prompt, **kwargs))  # bad input raises here
        dec.future = Future()
        self._queue.put(dec)
        return dec.future

    def generate(self, prompt: str = "", **kwargs) -> list[Poem]:
        return self.submit(prompt, **kwargs).result()

    def _loop(self) -> None:
        waiting: deque[Decoder] = deque()
        engine: Engine | None = None
        with self.poet._decoding():
            while True:
                if not engine:  # idle: sleep until a request comes
                    waiting.append(self._queue.get())
                while True:
                    try:
                        waiting.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                try:
                    engine = engine or Engine(self.poet)
                    while waiting and (not engine or len(engine) + len(waiting[0].rows) <= self.max_rows):
                        dec = waiting.popleft()
                        try:
                            engine.add(dec)
                        except Exception as exc:  # noqa: BLE001 - that request fails, the others go on
                            dec.future.set_exception(exc)
                    for dec in engine.step():
                        self._resolve(dec)
                except Exception as exc:  # noqa: BLE001 - a bug: fail the requests being decoded, keep serving
                    log.exception("decoding failed")
                    failed = engine.decoders if engine is not None else list(waiting)
                    if engine is None:
                        waiting.clear()
                    for dec in failed:
                        if not dec.future.done():
                            dec.future.set_exception(exc)
                    engine = None

    def _resolve(self, dec: Decoder) -> None:
        try:
            poems = self.poet._poems(dec.s, dec.rows)
        except Exception as exc:  # noqa: BLE001 - reported to that request
            dec.future.set_exception(exc)
        else:
            dec.future.set_result(poems)


def load(path_or_repo_id: str | Path | None = None, device: str | None = None,
         corpus: str | Path | None = MODEL_CORPUS) -> Poet:
    """A ready Poet from a model folder or Hub repo id (default: the shipped checkpoint).

    The folder's `corpus_lines.npy` feeds `avoid_copies`. The full copy report (nearest corpus poem,
    longest shared span) reads `corpus`: by default the folder's own `corpus.npz`, else data/tang.npz
    if built; a path names a `corpus.npz` or tang.npz; None turns it off."""
    if path_or_repo_id is None:
        if not (DEFAULT_MODEL / "config.json").is_file():
            raise ModelLoadError(f"no default model at {DEFAULT_MODEL}; train one with "
                                 "`python -m train.train --data data/tang.npz --out runs/mine` and "
                                 "pass `load('runs/mine/best')`")
        path_or_repo_id = DEFAULT_MODEL
    dev = pick_device(device)
    model = PoetryLSTM.from_pretrained(path_or_repo_id, map_location=str(dev))
    if corpus == MODEL_CORPUS:
        corpus = find_corpus(path_or_repo_id) or (DEFAULT_CORPUS if DEFAULT_CORPUS.is_file() else None)
    return Poet(model, dev, lines=find_line_index(path_or_repo_id), corpus=corpus)
