"""The corpus-derived tables a Poet reads lazily, on first use and once, from any thread.

`lines` (corpus-line hashes, for `avoid_copies`), the full copy index of the corpus file (the
longest shared span and the nearest poem), the couplet table's 对仗 partners, the theme index and
the adjacent-line PMI table (themes' plans, the coherence score, the characters' unigram
frequencies of the breadth score), and the prosody engine's masks
over the vocabulary. An optional file that is missing costs its feature; a damaged one warns and
costs its feature too, never the service.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from ..corpus_index import CorpusIndex
from ..couplets import CoupletTable
from ..novelty import CORPUS_FILE, LineIndex
from ..prosody import FormMasks
from ..themes import LinePairs, ThemeIndex, ThemePlan
from ..vocab import Vocab
from .ranking import couplet_scores
from .states import han_tokens


class Indexes:
    """The lazily read tables of a Poet (its base class): see the module docstring."""

    def __init__(self, vocab: Vocab, *, lines: LineIndex | None = None, corpus: str | Path | None = None,
                 couplets: CoupletTable | None = None, themes: str | Path | None = None):
        self.vocab = vocab
        self.lines, self.corpus_path = lines, Path(corpus) if corpus else None
        self._corpus: CorpusIndex | None | bool = False  # False: not loaded yet
        self._corpus_lock = threading.Lock()  # building takes seconds: other lazy parts must not wait on it
        self._form_masks = None
        self._lazy = threading.RLock()  # the lazy indexes may be first asked for from several threads
        self.couplets = couplets
        self._partners = None
        self.themes, self._theme_index = themes, False  # corpus.npz to plan themes from; False: not read yet
        self._line_pairs: LinePairs | None | bool = False
        self._rarity: np.ndarray | None | bool = False

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

    def couplet_partners(self):
        """For each token id, its 对仗 partners' ids and aligned PMI (None without a couplet table)."""
        if self._partners is None and self.couplets is not None:
            with self._lazy:
                if self._partners is None:
                    self._partners = self.couplets.partners(self.vocab.tokens)
        return self._partners

    def couplet_scores(self, lines: list[str]) -> list[float] | None:
        """Each couplet's parallelism (mean aligned PMI of lines 1-2, 3-4, … under the couplet table) of a
        绝句 or 律诗 in the model's script (`lines` with their punctuation)."""
        return couplet_scores(self.couplets, lines)

    def theme_index(self) -> ThemeIndex | None:
        """What themes are planned from: the `themes` corpus file (else the copy report's corpus.npz), read once."""
        if self._theme_index is False:
            with self._lazy:
                if self._theme_index is False:
                    self._theme_index = read_theme_index(self._themes_path())
        return self._theme_index

    def _themes_path(self) -> Path | None:
        return self.themes or (self.corpus_path if self.corpus_path and self.corpus_path.name == CORPUS_FILE else None)

    def coherence(self, lines: list[str]) -> float:
        """Mean adjacent-line PMI of a poem's lines (model script, no punctuation); 0 without a corpus."""
        if self._line_pairs is False:
            with self._lazy:
                if self._line_pairs is False:
                    self._line_pairs = read_line_pairs(self._themes_path(), self._theme_index or None)
        return self._line_pairs.coherence(lines) if self._line_pairs is not None else 0.0

    def char_log_prob(self, text: str) -> float:
        """Mean natural-log unigram probability (add-one) of a text's Han characters in the themes corpus's
        training split (the ranking's breadth part); 0 without a corpus or a Han character."""
        index = self.theme_index()
        cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        cp = cp[cp >= 0x3400]
        if index is None or not len(cp):
            return 0.0
        return float(np.mean(_log_unigram(index, cp)))

    def rarity(self) -> np.ndarray | None:
        """Per token, how much rarer than usual it is in the themes corpus's training split: the mean
        log unigram probability of a character (add-one, weighted by frequency) minus the token's own, 0 for
        tokens other than Han characters (what the `Breadth` constraint leans toward); None without a corpus."""
        if self._rarity is False:
            with self._lazy:
                if self._rarity is False:
                    self._rarity = self._build_rarity()
        return self._rarity

    def _build_rarity(self) -> np.ndarray | None:
        index = self.theme_index()
        if index is None:
            return None
        tokens = self.vocab.tokens
        han = han_tokens(tokens)
        cp = np.array([ord(t) if h else 0 for t, h in zip(tokens, han)], np.uint32)
        usual = float(np.sum(index.counts * _log_unigram(index, index.points)) / index.total)
        out = np.where(han, usual - _log_unigram(index, cp), 0.0).astype(np.float32)
        out.flags.writeable = False
        return out

    def theme_plan(self, theme: str, lines: int) -> ThemePlan:
        """The theme's plan (related characters, a keyword per line); only the theme itself without a corpus."""
        index = self.theme_index()
        if index is None:
            chars = tuple(dict.fromkeys(theme))
            return ThemePlan(theme, "theme only (no corpus)", 0, chars, (1.0,) * len(chars), chars[:lines])
        return index.plan(theme, lines)

    def form_masks(self):
        """The prosody engine's masks over this vocabulary (built once)."""
        if self._form_masks is None:
            with self._lazy:
                if self._form_masks is None:
                    self._form_masks = FormMasks(self.vocab)
        return self._form_masks


def read_theme_index(path: Path | None) -> ThemeIndex | None:
    """The theme index of a corpus file; None without one, or (with a warning) when it is damaged."""
    if path is None:
        return None
    try:
        return ThemeIndex.from_corpus_file(path)
    except ValueError as error:  # a damaged optional file costs the plan, not the service
        warnings.warn(f"themes without a plan: {error}", stacklevel=2)
        return None


def read_line_pairs(path: Path | None, index: ThemeIndex | None) -> LinePairs | None:
    """The adjacent-line PMI table of a corpus file (reusing the texts an already read theme index holds);
    None without one, or (with a warning) when it is damaged."""
    if path is None:
        return None
    try:
        return LinePairs.for_corpus_file(path, index.texts if index is not None else None)
    except ValueError as error:
        warnings.warn(f"coherence not scored: {error}", stacklevel=2)
        return None


def read_couplets(path: Path | None) -> CoupletTable | None:
    """The model folder's couplet table; a damaged one costs the parallelism weights, not the load."""
    if path is None:
        return None
    try:
        return CoupletTable.load(path)
    except Exception as error:  # noqa: BLE001 - any damage: warn and decode without it
        warnings.warn(f"{path}: couplet table not used ({type(error).__name__}: {error})", stacklevel=3)
        return None


def _log_unigram(index: ThemeIndex, cp: np.ndarray) -> np.ndarray:
    """Add-one log unigram probability of each code point in the theme index's counts."""
    at = np.minimum(np.searchsorted(index.points, cp), len(index.points) - 1)
    counts = np.where(index.points[at] == cp, index.counts[at], 0)
    return np.log((counts + 1.0) / (index.total + len(index.points)))
