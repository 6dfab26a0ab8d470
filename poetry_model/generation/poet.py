"""Poet: a loaded model plus vocabulary, ready to write ranked poems with their reports.

    poet = load()                                   # the shipped model (or load("runs/x/best"), load("user/repo"))
    poems = poet.generate(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5)
    print(poems[0].text, poems[0].to_dict()["score_parts"])
    many = poet.generate_many([dict(form="五绝", seed=1), dict(acrostic="春夏", seed=2)])  # decoded together
    server = Batcher(poet); server.generate(form="七律")  # batcher.py: from any thread, concurrent calls share steps

How a poem is made: the context `<START>` + style + prompt runs through the LSTM once; then all
candidates advance together, one token per step, as one batch of LSTM states (and so do the
candidates of other requests decoded with them: `generate_many`, `Batcher`; each request keeps its
own random generator, and a row's numbers never depend on the other rows, so a seed gives the same
poems alone or batched). At each step every candidate's next-token log-probabilities are shaped
by its request's constraints (one class each in `constraints.py`, listed by `build_constraints`),
in this order:

* structure (hard): for 五绝/七绝/五律/七律 the prosody engine's FormState masks force the line
  length and the punctuation, so forms are exact by construction; free verse gets lines of Han
  characters closed by ，。？！；：, at most 12 characters long, and a budget that always ends it;
* acrostic heads: at the start of each line the next head character is forced (free verse then
  has as many lines as heads);
* rhyme and tone masks of the form: strength 1 bans off-pattern characters, a strength s < 1
  multiplies their probability by (1 - s), 0 ignores them;
* repetition: every earlier use of a character subtracts `repetition_penalty` nats (a 叠字, a
  character doubling the one before it inside a line, is exempt with `dieci`), and a pair of
  characters never repeats (so the text cannot loop);
* seasons: once a poem names 春/夏/秋/冬, the opposite season loses `season_strength` nats
  (unless the prompt, acrostic, style or theme names both; a season the theme names counts from
  the start); times of day likewise: dawn 晓晨曙 against night 夜宵 (`time_strength`);
* theme (`theme`, `theme_strength`): the theme is planned from the corpus (`themes.py`: characters
  typical of real poems under it, one keyword per line); those characters gain up to
  `theme_strength` nats until used, and each line's keyword as much again until the line has it.
  A model that takes titles also reads the theme as the title (`<START>` theme `<TITLE_END>`);
* 对仗 (`parallelism`, `parallel_strength`): lines 4 and 6 of a 律诗 (and a 绝句's 2 and 4 with
  "on") lean toward the characters that stand opposite line 3/5's in real couplets (the model
  folder's `couplets.npz`) and share no character with it; each poem's `parallelism` lists its
  couplets' aligned PMI;
* novelty (`avoid_copies`): when the sampled token would complete a line that exists in the
  corpus (a hash lookup), that token is banned and the step resampled for that candidate; the
  poem reports how often this happened;
* locked lines (`locked={line index: text}`, fixed forms): their characters are forced, verbatim;
  the tone templates and the rhyme group are narrowed to what the locked characters allow before
  anything is written (`states.LockedFormState`), so every other line obeys the rules the locked
  lines imply; a locked line that itself breaks the tone pattern or the rhyme is a ValueError
  naming the character and the rule, or, with `relax_locked`, accepted and listed in `relaxations`.
  The LSTM reads left to right: lines after a locked line simply continue from it, but a line
  before one cannot see it. So when the model writes a line before a locked one, at least
  LOCKED_PREFIXES candidates are decoded and ranked with the extra score part `locked_fit` (the
  mean log-probability of the locked characters given everything before them: how well the
  written lines lead into the locked ones), and the best num_candidates are returned;
then temperature (0 = greedy), top-k and top-p pick the token. A hard constraint that would leave
no character at all is dropped for that step (对仗 first, then repetition bans, tone, rhyme; never
the structure) and the drop is listed in the poem's `relaxations`. No loop can hang: the number
of steps is capped by `max_length`. Input in either script is mapped to the model's (OpenCC);
characters it cannot represent raise UnknownCharactersError, which lists them.

The score the candidates are ranked by is described in `ranking.py`; writing with the poet (streamed
lines, alternatives, edits, locked lines' fit) in `cowrite.py`; the corpus tables read on first use
(copy index, themes, coherence, couplets, form masks) in `indexes.py`.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..couplets import CoupletTable
from ..model import ModelLoadError, PoetryLSTM
from ..novelty import LineIndex, copy_report, find_corpus, find_couplets, find_line_index
from ..prosody import analyze
from ..text import split_with_punctuation, to_script
from ..themes import ThemePlan
from . import cowrite
from .config import GenerationConfig, Settings, validate
from .constraints import parallel_lines
from .engine import Decoder, Engine, Row
from .indexes import Indexes, read_couplets
from .ranking import (
    THEME_WEIGHT,  # noqa: F401  (re-exported from its former home)
    accidental_repeats,
    finished_text,
    parallel_part,
    ranked,
    score_parts,
)
from .states import MaskVectors, TokenClasses
from .stepper import Stepper

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "checkpoints" / "tang-lstm"
DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "data" / "tang.npz"
MODEL_CORPUS = "model"  # load(corpus=...): the model folder's own corpus.npz (else DEFAULT_CORPUS if built)


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else cuda, then mps, then cpu."""
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    parallelism: list[float] | None = None  # each couplet's mean aligned PMI (lines 1-2, 3-4, …); forms only
    theme: dict | None = None   # with a theme: {"theme", "source", "poems", "planned", "keywords", "used"}
    edit: str | None = None     # Poet.replace: "kept" (the edit fits, the rest unchanged) or "recontinued"
    report: Any = field(default=None, repr=False, compare=False)  # prosody.PoemReport

    @cached_property
    def prosody(self) -> dict | None:
        """The prosody engine's JSON report (built on first use: it is a deep copy of the report)."""
        return self.report.to_dict() if self.report is not None else None

    def to_dict(self) -> dict[str, Any]:
        """Every field and the prosody report; `edit` only on an edited poem."""
        out = {**{name: getattr(self, name) for name in _POEM_FIELDS}, "prosody": self.prosody}
        if self.edit is None:
            del out["edit"]
        return out


_POEM_FIELDS = tuple(f.name for f in fields(Poem) if f.name != "report")


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


class Poet(Indexes):
    """A ready generator: model and vocabulary on one device, plus the copy indexes (`Indexes`).

    `lines` is the corpus-line hash index (for `avoid_copies`); `corpus` the tang.npz whose full
    index gives the longest shared span and the nearest poem (loaded on first use); `themes` the
    model folder's `corpus.npz` that themes are planned from and coherence is scored with (default:
    `corpus` when it is one; without either, a theme plans only its own characters). `threads`:
    torch threads while generating; one-token steps are too small to share, and on a busy CPU
    every multi-threaded op waits for its slowest thread (measured 20x slower here)."""

    def __init__(self, model: PoetryLSTM, device: torch.device | str = "cpu", *, lines: LineIndex | None = None,
                 corpus: str | Path | None = None, threads: int = 1, couplets: CoupletTable | None = None,
                 themes: str | Path | None = None):
        if model.vocab is None:
            raise ModelLoadError("model has no vocabulary attached")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        super().__init__(model.vocab, lines=lines, corpus=corpus, couplets=couplets, themes=themes)  # sets vocab
        self.threads = threads
        self.token_classes = TokenClasses(self.vocab.tokens)
        self.mask_vectors = MaskVectors(self.token_classes.keep)
        self.stepper = Stepper(self.model)
        self.takes_titles = bool(getattr(model.config, "takes_titles", False)) and self.vocab.title_end_id is not None

    def refresh(self) -> None:
        """Rebuild the decoding copies of the weights on next use: call after changing them in place."""
        self.stepper.refresh()

    # -- scoring ----------------------------------------------------------------------------------

    @torch.inference_mode()
    def log_likelihood(self, text: str) -> float:
        """Natural-log probability of `<START>` + text + `<EOP>` under the model."""
        ids = [self.vocab.start_id] + self.vocab.encode(text) + [self.vocab.eop_id]
        x = torch.tensor([ids], device=self.device)
        logp = torch.log_softmax(self.model(x[:, :-1])[0].float(), dim=-1)
        return float(logp.gather(-1, x[:, 1:, None]).sum())

    # -- generation -------------------------------------------------------------------------------

    def generate(self, prompt: str = "", **options: Any) -> list[Poem]:
        """Poems ranked best first (identical candidates merged, so possibly fewer than asked).

        `options` are GenerationConfig's fields (see `GenerationConfig.describe()`): acrostic, form,
        rhyme, tones, rhyme_strength, tone_strength, temperature, top_k, top_p,
        repetition_penalty, dieci, breadth, parallelism, parallel_strength, season_strength, time_strength, theme,
        theme_strength, style, num_candidates, seed, max_length, script, avoid_copies, locked, relax_locked.
        Bad values raise ValueError naming the parameter; an unknown name raises TypeError."""
        request = self.request(GenerationConfig(prompt=prompt, **options))
        self.decode([request])
        return self.poems(request)

    def generate_many(self, requests: list[dict[str, Any]]) -> list[list[Poem] | Exception]:
        """Several `generate` calls decoded together (one model step per token for all of them).

        Each request is a dict of `generate`'s keyword arguments and keeps its own seed, so it
        gives exactly the poems it gives alone. Returns, in order, each request's poems, or the
        exception (ValueError for bad arguments) that it alone raised."""
        results: list[Any] = [None] * len(requests)
        started: list[tuple[int, Decoder]] = []
        for k, kwargs in enumerate(requests):
            try:
                started.append((k, self.request(GenerationConfig(**kwargs))))
            except Exception as exc:  # noqa: BLE001 - returned to that request only
                results[k] = exc
        self.decode([dec for _, dec in started])
        for k, dec in started:
            try:
                results[k] = self.poems(dec)
            except Exception as exc:  # noqa: BLE001
                results[k] = exc
        return results

    def stream(self, prompt: str = "", **options: Any) -> Iterator[dict[str, Any]]:
        """`generate`, with candidate 0's lines as they are decoded: yields {"event": "line", "lines": [its
        finished lines], "text": their text} each time candidate 0 finishes a line, then {"event": "poems",
        "poems": the ranked poems} (the same poems `generate` gives for the same options and seed).
        Bad values raise ValueError before the first event."""
        return cowrite.stream(self, prompt, **options)

    # -- writing with the poet: alternatives and edits ----------------------------------------------

    def alternatives(self, text: str, position: int, k: int = 5, **settings: Any) -> list[dict[str, Any]]:
        """The k most probable characters at character `position` of the poem `text` (an index into the
        text, punctuation included) that meet every rule active there under `settings` (`generate`'s
        options: form, acrostic, locked, ...), most probable first, as [{"char": "月", "prob": 0.12}, ...].

        prob is the model's probability (temperature 1) of the character after the constraints exactly
        as the decoder applies them at that point (form, rhyme, tone masks and their strengths, the
        repetition and season penalties, the 对仗 bias, locked lines; the copy guard drops characters that
        would complete a corpus line), renormalised over the characters they leave: the k listed sum to
        at most 1. Fewer than k come back when fewer are allowed (one at an acrostic head)."""
        return cowrite.alternatives(self, text, position, k, **settings)

    def replace(self, text: str, position: int, char: str, **settings: Any) -> Poem:
        """The poem `text` with `char` put at character `position` (as in `alternatives`), under `settings`
        (`generate`'s options). When the character and every later character still meet the hard rules
        (form, rhyme, tones, locked lines, bans; the copy guard), the poem is kept as it is
        (`poem.edit == "kept"`; its lm part is the mean log-probability of its unforced characters);
        else the text up to and including the new character is kept and the rest written again with the
        same settings and seed (`poem.edit == "recontinued"`, the best of `generate(prompt=...)`).
        A character the rules exclude at that position raises ValueError naming the rules."""
        return cowrite.replace(self, text, position, char, **settings)

    # -- the seams a server uses (Batcher) --------------------------------------------------------

    def request(self, config: GenerationConfig | Settings) -> Decoder:
        """A request checked (ValueError when bad) and ready to decode: its candidates and constraints."""
        return Decoder(self, config if isinstance(config, Settings) else validate(self.vocab, config))

    @contextmanager
    def decoding(self):
        """The torch settings decoding runs under (inference mode, `threads` threads)."""
        with torch.inference_mode(), torch_threads(self.threads):
            yield

    def engine(self) -> Engine:
        """An empty engine over this model: `add` requests, `step` until they are done."""
        return Engine(self)

    def decode(self, requests: list[Decoder]) -> None:
        """Decode requests together until every one has finished."""
        with self.decoding():
            engine = Engine(self)
            for dec in requests:
                engine.add(dec)
            engine.run()

    def poems(self, request: Decoder) -> list[Poem]:
        """A decoded request's candidates as ranked poems (at most num_candidates); the reports of
        identical texts are made once."""
        s, settings, reports = request.s, request.s.to_dict(), {}
        fits = self.locked_fit(request) if s.generated_before_locked else [None] * len(request.rows)
        poems = [self._poem(s, settings, i, row, reports, request.plan, fits[i]) for i, row in enumerate(request.rows)]
        return ranked(poems)[:s.num_candidates]

    def locked_fit(self, request: Decoder) -> list[float]:
        """Per candidate: the mean log-probability of the locked lines' characters that follow a written
        line, given everything before them (the LSTM reads left to right, so this is how well the
        written lines lead into the locked ones; it ranks the candidate prefixes)."""
        return cowrite.locked_fit(self, request)

    def _poem(self, s: Settings, settings: dict, i: int, row: Row, reports: dict | None = None,
              plan: ThemePlan | None = None, locked_fit: float | None = None) -> Poem:
        """A finished candidate with its prosody and copy reports and its score."""
        model_text = finished_text(self.vocab.decode(row.tokens))
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
        model_lines = split_with_punctuation(model_text)
        couplets = self.couplet_scores(model_lines) if s.form != "free" else None
        parallel = sorted({k // 2 for k in parallel_lines(s)})
        han_lines = [line[:-1] for line in model_lines]
        unigram = self.char_log_prob(model_text)  # first: the coherence table then reuses the texts it read
        parts = score_parts(mean, report, copy, coherence=self.coherence(han_lines),
                            parallelism=parallel_part(couplets, parallel),
                            theme=plan.share(model_text) if plan is not None else 0.0,
                            repeats=accidental_repeats(han_lines), unigram=unigram,
                            locked_fit=locked_fit)
        lines = split_with_punctuation(text)
        return Poem(text=text, lines=lines, score=round(sum(parts.values()), 4),
                    score_parts=parts, log_prob=round(row.log_prob, 4), mean_log_prob=round(mean, 4),
                    sampled_tokens=row.sampled, copy=copy,
                    form=s.form, script=s.script, seed=s.seed, candidate=i, rank=0,
                    relaxations=list(getattr(row.state, "relaxations", [])) + row.notes, settings=dict(settings),
                    parallelism=couplets,
                    theme=plan.to_dict(model_text) if plan is not None else None, report=report)

    def continue_text(self, seed_text: str = "", max_new_tokens: int = 128, temperature: float = 1.0,
                      top_k: int | None = None, seed: int | None = None) -> str:
        """Seed text continued as free verse until `<EOP>` or `max_new_tokens`: text only, no reports (the
        trainer's samples need neither the prosody nor the copy index)."""
        self.vocab.encode(seed_text, "seed text")  # unknown characters named as the trainer's callers expect
        request = self.request(GenerationConfig(prompt=seed_text, temperature=temperature, top_k=top_k, top_p=1.0,
                                                seed=seed, max_length=len(seed_text) + max_new_tokens,
                                                avoid_copies=False))
        self.decode([request])
        return finished_text(self.vocab.decode(request.rows[0].tokens))


def _generate_signature() -> inspect.Signature:
    """Poet.generate's signature as GenerationConfig declares it (prompt, then every option with its default),
    so that help(), inspect and IDEs show the real parameters."""
    kind = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("prompt", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=GenerationConfig.default("prompt"), annotation="str")]
    params += [inspect.Parameter(f.name, kind, default=f.default, annotation=f.type)
               for f in fields(GenerationConfig) if f.name != "prompt"]
    return inspect.Signature(params, return_annotation="list[Poem]")


Poet.generate.__signature__ = _generate_signature()


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
    return Poet(model, dev, lines=find_line_index(path_or_repo_id), corpus=corpus,
                couplets=read_couplets(find_couplets(path_or_repo_id)), themes=find_corpus(path_or_repo_id))
