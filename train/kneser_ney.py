"""Character n-gram language model with interpolated Kneser-Ney smoothing: the cheap baseline
(`python -m train.kn_baseline` scores it; train/evaluate.py reports it beside the LSTM).

It sees exactly what the LSTM sees: each poem is the token stream `<START>` c1 ... cn `<EOP>`;
every token after `<START>` is a target (characters, punctuation and `<EOP>`), `<START>` is only
ever context, padding never appears. Histories are truncated at `<START>` (they never reach into
the previous poem). The distribution is over the target vocabulary: every token except `<START>`
and the padding token.

Smoothing (Chen & Goodman's interpolated Kneser-Ney with one absolute discount D at every order,
counts adjusted as in KenLM):

    a(h w)   = c(h w), the raw count, for the highest order and for n-grams starting with <START>
               (nothing can precede <START>); otherwise N1+(. h w), the number of distinct tokens
               seen right before `h w`
    P(w | h) = max(a(h w) - D, 0) / A(h)  +  D * N(h) / A(h) * P(w | h')     if A(h) > 0
             = P(w | h')                                                     if h was never seen
    A(h) = sum_w a(h w),  N(h) = number of w with a(h w) > 0,  h' = h without its first token;
    the recursion ends in the unigram of adjusted counts, interpolated with the uniform
    distribution over the target vocabulary, so that unseen characters keep some probability.

Since every positive a(h w) is at least 1 and D < 1, each level sums to exactly 1 over the
vocabulary. Counting is vectorised with numpy: an n-gram is identified by the id of its prefix
(n-1)-gram and its last token, so ids stay small integers at every order.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

DISCOUNT = 0.75
ORDER = 5


def token_stream(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """All poems (each starting with <START>) concatenated: tokens, and each token's position in its poem."""
    rows = [np.asarray(r, np.int64) for r in rows if len(r)]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    tokens = np.concatenate(rows)
    lengths = np.array([len(r) for r in rows])
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tokens, np.arange(len(tokens)) - starts


@dataclass
class _Level:
    """The n-grams of one order: their keys, adjusted counts, and per-context totals."""

    keys: np.ndarray        # sorted unique (context id * V + token) codes; order 1: the token id
    adjusted: np.ndarray    # a(h w) per key (float64)
    ctx_total: np.ndarray   # A(h) per context id (the previous order's ids); order 1: one entry
    ctx_types: np.ndarray   # N(h) per context id


class KneserNey:
    """Interpolated Kneser-Ney n-gram model over token ids; `fit` it on poems, then score or query it."""

    def __init__(self, vocab_size: int, start_id: int, excluded: tuple[int, ...] = (), order: int = ORDER,
                 discount: float = DISCOUNT):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if not 0 < discount < 1:
            raise ValueError(f"discount must be in (0, 1), got {discount}")
        self.V, self.start_id, self.order, self.D = vocab_size, start_id, order, discount
        self.target = np.ones(vocab_size, bool)
        self.target[[start_id, *excluded]] = False   # tokens never predicted
        self.n_targets = int(self.target.sum())
        self.levels: list[_Level] = []

    # -- fitting ----------------------------------------------------------------------------------

    def fit(self, rows: list[np.ndarray]) -> "KneserNey":
        """Count n-grams of every poem (id arrays starting with <START>, padding removed)."""
        tokens, pos = token_stream(rows)
        if len(tokens) and not (tokens[pos == 0] == self.start_id).all():
            raise ValueError("every poem must start with <START>")
        if (~self.target[tokens[pos > 0]]).any():
            raise ValueError("a poem holds <START> or an excluded token after its first position")
        ids = self._ngram_ids(tokens, pos, fit=True)
        self.levels = []
        for k in range(1, self.order + 1):
            at = np.flatnonzero((pos >= k - 1) & (pos >= 1))         # targets with k-1 tokens of history
            grams = ids[k - 1][at]
            keys = self._keys[k - 1]
            counts = np.bincount(grams, minlength=len(keys)).astype(np.float64)
            if k < self.order:
                # N1+(. g): distinct (k+1)-grams ending at the same place whose suffix is g.
                longer = np.flatnonzero(pos >= k)
                pairs = np.unique(ids[k - 1][longer] * np.int64(len(self._keys[k])) + ids[k][longer])
                left = np.bincount(pairs // len(self._keys[k]), minlength=len(keys)).astype(np.float64)
                # n-grams that start with <START> (those ending at position k-1) keep raw counts.
                starts_with_start = np.zeros(len(keys), bool)
                starts_with_start[ids[k - 1][at[pos[at] == k - 1]]] = True
                adjusted = np.where(starts_with_start, counts, left)
            else:
                adjusted = counts
            # Keys that never end a target (e.g. the unigram <START>) have a = 0 and drop out.
            ctx = keys // self.V if k > 1 else np.zeros(len(keys), np.int64)
            n_ctx = len(self._keys[k - 2]) if k > 1 else 1
            total = np.bincount(ctx, weights=adjusted, minlength=n_ctx)
            types = np.bincount(ctx, weights=(adjusted > 0).astype(np.float64), minlength=n_ctx)
            self.levels.append(_Level(keys, adjusted, total, types))
        return self

    def _ngram_ids(self, tokens: np.ndarray, pos: np.ndarray, fit: bool) -> list[np.ndarray]:
        """ids[k-1][t]: id of the k-gram ending at t (-1 where the poem is too short or, when
        scoring, the n-gram was never seen in training). Fitting builds the key tables."""
        if fit:
            self._keys = []
        ids = []
        prev = None
        for k in range(1, self.order + 1):
            if k == 1:
                code = tokens.copy()
            else:
                code = np.full(len(tokens), -1, np.int64)
                ok = np.flatnonzero(pos >= k - 1)
                ok = ok[prev[ok - 1] >= 0]
                code[ok] = prev[ok - 1] * self.V + tokens[ok]
            valid = code >= 0
            if fit:
                keys, inverse = np.unique(code[valid], return_inverse=True)
                self._keys.append(keys)
                kid = np.full(len(tokens), -1, np.int64)
                kid[valid] = inverse
            else:
                keys = self._keys[k - 1]
                kid = np.full(len(tokens), -1, np.int64)
                where = np.searchsorted(keys, code[valid])
                found = where < len(keys)
                found[found] = keys[where[found]] == code[valid][found]
                kid[np.flatnonzero(valid)[found]] = where[found]
            ids.append(kid)
            prev = kid
        return ids

    # -- scoring ----------------------------------------------------------------------------------

    def _unigram(self) -> np.ndarray:
        """P(w) over the whole vocabulary (0 for <START> and excluded tokens)."""
        lv = self.levels[0]
        a = np.zeros(self.V)
        a[lv.keys] = lv.adjusted
        a[~self.target] = 0
        total, types = a.sum(), (a > 0).sum()
        uniform = self.target / self.n_targets
        if total == 0:
            return uniform
        return np.maximum(a - self.D, 0) / total + self.D * types / total * uniform

    def position_log_probs(self, rows: list[np.ndarray]) -> np.ndarray:
        """Natural-log probability of every target token (each token after <START>) of the poems."""
        self._check_fitted()
        tokens, pos = token_stream(rows)
        ids = self._ngram_ids(tokens, pos, fit=False)
        at = np.flatnonzero(pos >= 1)
        if (~self.target[tokens[at]]).any():
            raise ValueError("a poem holds <START> or an excluded token after its first position")
        p = self._unigram()[tokens[at]]
        for k in range(2, self.order + 1):
            lv = self.levels[k - 1]
            ctx = np.where(pos[at] >= k - 1, ids[k - 2][at - 1], -1)   # the (k-1)-token history
            seen = ctx >= 0
            total = np.zeros(len(at))
            total[seen] = lv.ctx_total[ctx[seen]]
            use = total > 0
            gram = ids[k - 1][at]
            a = np.where(gram >= 0, lv.adjusted[np.maximum(gram, 0)], 0.0)
            p[use] = (np.maximum(a[use] - self.D, 0) + self.D * lv.ctx_types[ctx[use]] * p[use]) / total[use]
        return np.log(p)

    def cross_entropy(self, rows: list[np.ndarray]) -> tuple[float, int]:
        """(mean nats per target token, number of target tokens)."""
        lp = self.position_log_probs(rows)
        return float(-lp.mean()) if len(lp) else math.nan, len(lp)

    def distribution(self, history: list[int]) -> np.ndarray:
        """P(. | history) over the whole vocabulary; history: ids before the predicted token (it may
        start with <START>; only its last order-1 tokens count)."""
        self._check_fitted()
        history = [int(t) for t in history][-(self.order - 1):] if self.order > 1 else []
        p = self._unigram()
        for k in range(2, self.order + 1):
            if len(history) < k - 1:
                break
            ctx_id = self._lookup(history[len(history) - (k - 1):])
            lv = self.levels[k - 1]
            if ctx_id is None or lv.ctx_total[ctx_id] == 0:
                continue
            total = lv.ctx_total[ctx_id]
            lo, hi = np.searchsorted(lv.keys, [ctx_id * self.V, (ctx_id + 1) * self.V])
            p = self.D * lv.ctx_types[ctx_id] / total * p
            p[lv.keys[lo:hi] % self.V] += np.maximum(lv.adjusted[lo:hi] - self.D, 0) / total
        return p

    def _lookup(self, gram: list[int]) -> int | None:
        """The id of an n-gram seen in training, or None."""
        kid = None
        for k, tok in enumerate(gram, 1):
            code = tok if k == 1 else kid * self.V + tok
            keys = self._keys[k - 1]
            i = int(np.searchsorted(keys, code))
            if i >= len(keys) or keys[i] != code:
                return None
            kid = i
        return kid

    def _check_fitted(self) -> None:
        if not self.levels:
            raise RuntimeError("fit the model first")


def fit_and_score(dataset, train_idx: np.ndarray, val_idx: np.ndarray, order: int = ORDER,
                  discount: float = DISCOUNT) -> dict:
    """Fit on the training poems, score the validation poems: nats/char, bits/char, perplexity, seconds."""
    from poetry_model.data import strip_padding

    vocab = dataset.vocab
    t0 = time.perf_counter()
    model = KneserNey(len(vocab), vocab.start_id, (vocab.pad_id,), order=order, discount=discount)
    model.fit(strip_padding(dataset.data[train_idx], vocab.pad_id))
    fit_s = time.perf_counter() - t0
    ce, n = model.cross_entropy(strip_padding(dataset.data[val_idx], vocab.pad_id))
    return {"order": order, "discount": discount, "cross_entropy": ce, "bits_per_char": ce / math.log(2),
            "perplexity": math.exp(ce), "tokens": n, "fit_seconds": round(fit_s, 2),
            "seconds": round(time.perf_counter() - t0, 2)}
