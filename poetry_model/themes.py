"""Themes: what a poem on 秋夜, 送友人, 边塞 or 月 is made of, learned from the corpus, and a plan per line.

A theme (keywords or a title) is expanded Jiuge-style into the characters real poets use far more
often under it than in poems overall, and each line gets its own sub-topic keyword from them. The
generation constraint `Theme` leans decoding toward that plan, and the ranking counts how much of
it a poem uses.

Which real poems are "under" a theme: those whose title holds the whole theme; when fewer than
MIN_POEMS do, those whose title holds one of its characters (边塞 is in one title, 塞 in hundreds);
when titles still say too little, those whose text holds it (poem-level co-occurrence). Statistics
come from the model folder's `corpus.npz`, the training split only (`data.split_indices`), so that
measurements against held-out poems stay honest. Reading and counting take about a second, once
per process.

    index = ThemeIndex.from_corpus_file(folder / "corpus.npz")
    plan = index.plan("边塞", lines=8)
    plan.chars[:8], plan.keywords           # related characters, strongest first; one keyword per line
"""
from __future__ import annotations

import hashlib
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus_index import cache_dir, read_corpus
from .data import split_indices
from .files import atomic_path

MIN_POEMS = 30          # fewer themed poems than this say too little: widen to title characters, then text
MIN_COUNT = 5           # a character seen fewer times under the theme may be a fluke of a few poems
MIN_LIFT = 2.0          # "typical": at least twice as frequent under the theme as in poems overall
FULL_LIFT = 4.0         # a related character this much more frequent under the theme gets the full bias
MAX_PLANNED = 48        # related characters kept (strongest first)
# Opposites a theme's plan never holds both of, unless the theme itself names both: one season and
# one time of day per poem (the Season and TimeOfDay constraints keep the same pairs apart).
SEASON_GROUPS = (("春", "秋"), ("夏", "冬"))
TIME_GROUPS = (("晓晨曙", "夜宵"),)


@dataclass(frozen=True)
class ThemePlan:
    """A theme expanded: related characters (strongest first, weight in (0, 1]) and one keyword per line."""

    theme: str
    source: str                     # which poems taught it: "title", "title characters" or "text"
    poems: int                      # how many
    chars: tuple[str, ...]
    weights: tuple[float, ...]
    keywords: tuple[str, ...]       # line k's sub-topic: keywords[k]

    def used(self, text: str) -> list[str]:
        """The planned characters a poem uses, in plan order."""
        return [c for c in self.chars if c in text]

    def share(self, text: str) -> float:
        """Distinct planned characters a poem uses, per Han character of it (the theme part of the
        ranking). A planned character counts once however often it occurs, so a repeat never scores."""
        chars = [c for c in text if _is_han(c)]
        return len(set(chars) & set(self.chars)) / len(chars) if chars else 0.0

    def to_dict(self, text: str) -> dict:
        return {"theme": self.theme, "source": self.source, "poems": self.poems, "planned": list(self.chars),
                "keywords": list(self.keywords), "used": self.used(text)}


def _is_han(ch: str) -> bool:
    return unicodedata.category(ch) == "Lo"


def _counts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted code points of the Han characters of the texts, and their counts."""
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32)
    cp = cp[(cp >= 0x3400)]  # CJK ideographs and beyond: punctuation and ASCII out
    return np.unique(cp, return_counts=True)


class ThemeIndex:
    """The training split's poems and titles with their character counts: what plans are learned from."""

    def __init__(self, texts: list[str], titles: list[str]):
        self.texts, self.titles = texts, titles
        self.points, self.counts = _counts(texts)
        self.total = float(self.counts.sum())
        self._plans: dict[tuple[str, int], ThemePlan] = {}

    @classmethod
    def from_corpus_file(cls, path: str | Path) -> ThemeIndex:
        """The index of a model folder's `corpus.npz` (its training split); ValueError when it is damaged."""
        texts, titles, _, _ = read_corpus(path)
        train, _ = split_indices(len(texts))
        return cls([texts[i] for i in train], [titles[i] for i in train])

    def parts(self, theme: str) -> list[str]:
        """The theme cut into the longest pieces that head enough titles, left to right (江南春 -> 江南 + 春,
        边塞 -> 边 + 塞); a character no title holds often enough is a piece of its own."""
        out, i = [], 0
        while i < len(theme):
            j = next((j for j in range(len(theme), i + 1, -1) if self._titled(theme[i:j]) >= MIN_POEMS), i + 1)
            out.append(theme[i:j])
            i = j
        return [p for p in out if any(_is_han(c) for c in p)]

    def _titled(self, word: str) -> int:
        return sum(word in t for t in self.titles)

    def themed_poems(self, word: str) -> tuple[list[int], str]:
        """The poems under one piece of a theme: those whose title holds it, else those whose text does."""
        found = [i for i, t in enumerate(self.titles) if word in t]
        if len(found) >= MIN_POEMS:
            return found, "title"
        return [i for i, t in enumerate(self.texts) if word in t], "text"

    def related_to(self, word: str) -> tuple[list[tuple[str, float]], str, int]:
        """Characters typical of one piece's poems, strongest first, with log-lift weights in (0, 1]."""
        found, source = self.themed_poems(word)
        if not found:
            return [], source, 0
        points, counts = _counts([self.texts[i] for i in found])
        n = float(counts.sum())
        overall = self.counts[np.searchsorted(self.points, points)]
        lift = (counts / n) / (overall / self.total)
        keep = (counts >= MIN_COUNT) & (lift >= MIN_LIFT)
        # Ranked by count x log-lift: frequent under the theme AND specific to it (月 over a one-off rarity).
        strength = counts[keep] * np.log(lift[keep])
        order = np.argsort(-strength, kind="stable")
        chars = [chr(int(c)) for c in points[keep][order]]
        # Weight: log-lift, full from FULL_LIFT on (half at MIN_LIFT), so that a theme whose own words have
        # a huge lift (边, 塞) does not shrink the weight of everything else it is made of.
        weights = np.minimum(1.0, np.log(lift[keep][order]) / math.log(FULL_LIFT))
        return list(zip(chars, weights.round(4).tolist())), source, len(found)

    def related(self, theme: str) -> tuple[list[tuple[str, float]], str, int]:
        """The related characters of every piece, taken in turn (each piece's strongest first), so that
        each sub-topic is represented; also which poems taught them and how many."""
        found = [(part, *self.related_to(part)) for part in self.parts(theme)]
        merged: dict[str, float] = {}
        for rank in range(max((len(r) for _, r, _, _ in found), default=0)):
            for _, r, _, _ in found:
                if rank < len(r):
                    c, w = r[rank]
                    merged[c] = max(w, merged.get(c, 0.0))
        source = "; ".join(f"{source}: {part}" for part, _, source, _ in found)
        return list(merged.items()), source, sum(n for *_, n in found)

    def plan(self, theme: str, lines: int) -> ThemePlan:
        """The theme's related characters (no opposite seasons or times of day unless the theme names both)
        and one keyword per line: the strongest characters, spread over the lines in order."""
        key = (theme, lines)
        if key not in self._plans:
            related, source, poems = self.related(theme)
            related = _consistent(related, theme)[:MAX_PLANNED]
            chars = tuple(c for c, _ in related)
            keywords = chars[:lines] if chars else ()
            self._plans[key] = ThemePlan(theme, source, poems, chars, tuple(w for _, w in related), keywords)
        return self._plans[key]


def _consistent(related: list[tuple[str, float]], theme: str) -> list[tuple[str, float]]:
    """Drop one side of each opposite pair (seasons, dawn/night): the side the theme does not name, else
    the weaker one; both stay only when the theme names both."""
    drop: set[str] = set()
    rank = {c: k for k, (c, _) in enumerate(related)}
    for groups in (SEASON_GROUPS, TIME_GROUPS):
        for a, b in groups:
            in_a, in_b = any(c in theme for c in a), any(c in theme for c in b)
            if in_a and in_b:
                continue
            if in_a or in_b:
                drop.update(b if in_a else a)
                continue
            best_a = min((rank[c] for c in a if c in rank), default=math.inf)
            best_b = min((rank[c] for c in b if c in rank), default=math.inf)
            drop.update(b if best_a <= best_b else a)
    return [(c, w) for c, w in related if c not in drop]


# ---------------------------------------------------------------------------------------------
# Coherence: which characters real poets put in adjacent lines


class LinePairs:
    """Smoothed PMI of character pairs across adjacent lines of real 绝句 and 律诗 (as `couplets.PairPMI`
    defines it): lines of one poem share a scene (月 near 霜, 舟 near 江). A poem's coherence is the mean
    PMI of its adjacent-line pairs, which the ranking rewards. Only the COMMON most frequent characters
    get a row (they carry almost every pair, and a dense table is one `bincount`, under a second to
    build); the rest count as unknown and are skipped."""

    COMMON = 2000
    VERSION = 1

    def __init__(self, points: np.ndarray, pmi: np.ndarray):
        self.points, self.pmi = points, pmi

    @classmethod
    def for_corpus_file(cls, path: str | Path, texts: list[str] | None = None) -> LinePairs:
        """The table of a model folder's `corpus.npz` (training split): from the user cache when built
        before (keyed by the file's hash, like the copy index), else built from `texts` (read from the
        file when not given) and cached there if writable."""
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:32]
        cache = cache_dir() / f"{digest}.linepairs.npz"
        try:
            with np.load(cache, allow_pickle=False) as z:
                if int(z["version"]) == cls.VERSION:
                    return cls(z["points"], z["pmi"])
        except (OSError, KeyError, ValueError):
            pass
        table = cls.learn(texts if texts is not None else ThemeIndex.from_corpus_file(path).texts)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                np.savez(tmp, version=np.int64(cls.VERSION), points=table.points, pmi=table.pmi)
        except OSError:
            pass  # no writable cache: the table still works, it is just rebuilt next time
        return table

    @classmethod
    def learn(cls, texts: list[str]) -> LinePairs:
        """The table of the 绝句 and 律诗 of exact shape among `texts`."""
        grids = [g for g in (_grid(texts, n, L) for n in (4, 8) for L in (5, 7)) if len(g)]
        points, counts = _counts(texts)
        table = cls(np.sort(points[np.argsort(-counts, kind="stable")[:cls.COMMON]]), np.zeros((0, 0), np.float16))
        size = len(table.points) + 1
        pairs = np.zeros(size * size, np.int64)
        for g in grids:
            ids = table.ids(g)
            a = np.broadcast_to(ids[:, :-1, :, None], ids[:, :-1].shape + (ids.shape[2],))
            b = np.broadcast_to(ids[:, 1:, None, :], a.shape)
            keep = (a != b) & (a > 0) & (b > 0)  # a character repeated on the next line is repetition
            pairs += np.bincount(a[keep] * size + b[keep], minlength=size * size)
        pairs = pairs.reshape(size, size)
        pairs = pairs + pairs.T  # unordered pairs
        marginal = pairs.sum(axis=1).astype(np.float64)
        expected = np.outer(marginal, marginal) / max(marginal.sum(), 1.0)
        table.pmi = np.log((pairs + 1.0) / (expected + 1.0)).astype(np.float16)  # 8 MB
        return table

    def ids(self, cp: np.ndarray) -> np.ndarray:
        """Table ids of code points (0: not a common character)."""
        pos = np.clip(np.searchsorted(self.points, cp), 0, len(self.points) - 1)
        return np.where(self.points[pos] == cp, pos + 1, 0)

    def coherence(self, lines: list[str]) -> float:
        """Mean PMI of the common-character pairs across adjacent lines (0 when there are none)."""
        ids = [self.ids(np.array([ord(c) for c in line], np.int64)) for line in lines]
        total, n = 0.0, 0
        for x, y in zip(ids, ids[1:]):
            block = self.pmi[np.ix_(x, y)]
            keep = (x[:, None] != y[None, :]) & (x[:, None] > 0) & (y[None, :] > 0)
            total += float(block[keep].sum(dtype=np.float64))
            n += int(keep.sum())
        return total / n if n else 0.0


def _grid(texts: list[str], lines: int, chars: int) -> np.ndarray:
    """(poems, lines, chars) code points of the texts of exactly that shape (，。 alternating)."""
    size = lines * (chars + 1)
    marks = "，。" * (lines // 2)
    rows = [t for t in texts if len(t) == size and t[chars::chars + 1] == marks]
    if not rows:
        return np.zeros((0, lines, chars), np.int64)
    cp = np.frombuffer("".join(rows).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return cp.reshape(len(rows), lines, chars + 1)[:, :, :chars]
