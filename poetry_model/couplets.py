"""对仗: which characters stand opposite which in the middle couplets of real 律诗.

A 律诗's lines 3/4 and 5/6 are parallel: 明月 over 清泉, a number over a number. Pairs of characters
that stand at the same position in those couplets far more often than chance are what parallel
lines are made of. `PairPMI` scores such pairs (smoothed PMI); `CoupletTable` is the compact form
the model folder ships (`couplets.npz`, written at export from the train split), which the
generation constraint `Parallelism` and the quality harness (train/quality.py) both read.

    table = CoupletTable.learn(train_texts)        # 律诗 of exact shape only
    table.save(folder / COUPLETS_FILE)
    table = CoupletTable.load(folder / COUPLETS_FILE)
    table.score("明月", "清泉")                      # mean aligned PMI of two lines
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COUPLETS_FILE = "couplets.npz"
LU_SHAPES = {8: (5, 7)}      # 律诗: 8 lines of 5 or 7 characters
MIN_COUNT = 2                # pairs seen fewer times are not shipped (their smoothed PMI is near 0 anyway)


class PairPMI:
    """Smoothed PMI of unordered integer pairs counted in some relation (aligned, adjacent lines).

    pmi(x, y) = log((c(x,y) + 1) / (E(x,y) + 1)), E = c(x) c(y) / total, the count independence
    predicts. The +1 pulls rare and unseen pairs toward 0 instead of toward -inf or +inf, so a few
    chance co-occurrences in 30k poems cannot dominate a score. Id 0 means unknown and is skipped."""

    def __init__(self, x: np.ndarray, y: np.ndarray, size: int):
        keep = (x > 0) & (y > 0)
        x, y = x[keep], y[keep]
        both_x, both_y = np.concatenate([x, y]), np.concatenate([y, x])  # unordered: count both ways
        self.size = size
        self.codes, self.counts = np.unique(both_x.astype(np.int64) * size + both_y, return_counts=True)
        self.marginal = np.bincount(both_x, minlength=size).astype(np.float64)
        self.total = float(len(both_x))

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        codes = np.asarray(x, np.int64) * self.size + y
        pos = np.clip(np.searchsorted(self.codes, codes), 0, len(self.codes) - 1)
        c = np.where(self.codes[pos] == codes, self.counts[pos], 0).astype(np.float64)
        expected = self.marginal[x] * self.marginal[y] / self.total
        return np.log((c + 1.0) / (expected + 1.0))

    def pairs(self, min_count: int = MIN_COUNT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every counted pair (both orders) seen at least min_count times, with its PMI."""
        keep = self.counts >= min_count
        codes = self.codes[keep]
        x, y = codes // self.size, codes % self.size
        return x, y, self(x, y)


def couplet_pairs(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aligned character pairs of the middle couplets (lines 3-4 and 5-6) of (poems, 8, chars) 律诗 grids."""
    return (np.concatenate([grid[:, 2].ravel(), grid[:, 4].ravel()]),
            np.concatenate([grid[:, 3].ravel(), grid[:, 5].ravel()]))


def lu_lines(text: str) -> list[str] | None:
    """The 8 lines of a 律诗 of exact shape (5 or 7 characters, punctuated ，。 alternately), else None."""
    lines, start = [], 0
    for k, ch in enumerate(text):
        if ch in "，。":
            if ch != "，。"[len(lines) % 2]:
                return None
            lines.append(text[start:k])
            start = k + 1
    if start != len(text) or len(lines) != 8 or len({len(x) for x in lines}) != 1 or len(lines[0]) not in (5, 7):
        return None
    return lines


class CoupletTable:
    """Aligned-pair PMI of real 律诗 middle couplets, by character: pairs with positive PMI seen ≥ MIN_COUNT times."""

    def __init__(self, a: np.ndarray, b: np.ndarray, pmi: np.ndarray):
        order = np.lexsort((b, a))
        self.a, self.b = np.asarray(a, np.int32)[order], np.asarray(b, np.int32)[order]  # code points
        self.pmi = np.asarray(pmi, np.float32)[order]
        self._lookup = {(int(x), int(y)): float(v) for x, y, v in zip(self.a, self.b, self.pmi)}

    def __len__(self) -> int:
        return len(self.a)

    @classmethod
    def learn(cls, texts: list[str], min_count: int = MIN_COUNT) -> CoupletTable:
        """The table of the 律诗 of exact shape among `texts` (the train split's poems)."""
        grids: dict[int, list[list[str]]] = {5: [], 7: []}
        for t in texts:
            lines = lu_lines(t)
            if lines is not None:
                grids[len(lines[0])].append(lines)
        points = np.unique([ord(c) for g in grids.values() for p in g for line in p for c in line])
        xs, ys = [], []
        for g in grids.values():
            if g:
                cp = np.array([[[ord(c) for c in line] for line in p] for p in g], np.int64)
                grid = np.searchsorted(points, cp) + 1
                x, y = couplet_pairs(grid)
                xs.append(x)
                ys.append(y)
        pmi = PairPMI(np.concatenate(xs), np.concatenate(ys), len(points) + 1)
        x, y, v = pmi.pairs(min_count)
        keep = v > 0
        return cls(points[x[keep] - 1], points[y[keep] - 1], v[keep])

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, a=self.a, b=self.b, pmi=self.pmi.astype(np.float16))

    @classmethod
    def load(cls, path: str | Path) -> CoupletTable:
        with np.load(path) as z:
            return cls(z["a"], z["b"], z["pmi"].astype(np.float32))

    def pair(self, x: str, y: str) -> float:
        """The PMI of two characters standing opposite (0 when not in the table)."""
        return self._lookup.get((ord(x), ord(y)), 0.0)

    def score(self, first: str, second: str) -> float:
        """Mean aligned PMI of two lines (0 for pairs outside the table): a couplet's parallelism."""
        n = min(len(first), len(second))
        return sum(self.pair(first[k], second[k]) for k in range(n)) / n if n else 0.0

    def partners(self, tokens: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each token id: (ids of its partners in `tokens`, their PMI), for building bias vectors."""
        index = {ord(t): i for i, t in enumerate(tokens) if len(t) == 1}
        ai = np.array([index.get(int(x), -1) for x in self.a], np.int64)
        bi = np.array([index.get(int(y), -1) for y in self.b], np.int64)
        keep = (ai >= 0) & (bi >= 0)
        ai, bi, v = ai[keep], bi[keep], self.pmi[keep]
        order = np.argsort(ai, kind="stable")
        ai, bi, v = ai[order], bi[order], v[order]
        bounds = np.searchsorted(ai, np.arange(len(tokens) + 1))
        return [(bi[bounds[t]:bounds[t + 1]], v[bounds[t]:bounds[t + 1]]) for t in range(len(tokens))]
