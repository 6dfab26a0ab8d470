"""Do generated poems read like real poems? Measures for issue #13, generated vs real vs baselines.

    python -m train.quality                                  # shipped model, 300 poems per form
    python -m train.quality --num-poems 60 --out runs/quality
    python -m train.quality --temperature 1.0 --top-k 0      # decoding settings (top-k 0 = no limit;
                                                             # also --top-p, --repetition-penalty)
    python -m train.quality --theme 月                       # generate(theme="月"): planned and biased
    python -m train.quality --theme 月 --theme-prompt        # baseline: the word as `prompt=` instead
    python -m train.quality --num-candidates 4               # the best-ranked of 4 candidates per poem

For each form (五绝, 七绝, 五律, 七律) it writes N poems with `Poet.generate` (seeds seed..seed+N-1)
and takes N real poems of exactly that shape (4 or 8 lines of 5 or 7 characters, ，。 alternating)
from the VALIDATION split of --data. Every statistic a measure learns from the corpus (character
frequencies, pair PMI, the 3-gram model, themed characters) is learned on the TRAIN split only, so
the real poems that are scored were never seen by the statistics nor by the model.

Measures (one small function each below; see its docstring for the why):
  repeat_any, repeat_accidental   share of poems with a repeated character; the second ignores 叠字
  season_clash, time_clash        share of poems mixing 春/秋 or 夏/冬; dawn (晓晨曙) with night (夜宵)
  distinct_chars, top50_share     vocabulary over N poems; share of characters among the 50 commonest
  parallelism                     aligned-position PMI of 律诗 middle couplets (lines 3-4, 5-6)
  primer_pairs                    share of those aligned positions holding a 聲律啓蒙 pair (云对雨)
  coherence                       PMI of character pairs across adjacent lines
  classifier_accuracy             cross-validated logistic regression on character n-grams (0.5 = can't tell)
  classifier_tfidf                the same on TF-IDF of every character and bigram: a stronger reader
  ngram_logprob                   mean log-prob per character under a Witten-Bell character 3-gram
  theme_halfway                   with --theme: how far from an average poem toward real themed poems
Baselines in the same run: "shuffled real" poems (line k taken from a different real poem for every
k), "shuffled generated" (the same for the generated poems: parallelism and coherence are judged by
what a poem adds over its own lines shuffled, see `above_chance`), and the classifier on two disjoint
halves of the real poems. Prints markdown tables, writes
OUT/quality.json and OUT/quality.md when --out is given. Everything is seeded: same run, same numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from poetry_model.couplets import PairPMI, couplet_pairs  # noqa: F401 - the measures' PMI and 对仗 pairs

FORMS = {"五绝": (4, 5), "七绝": (4, 7), "五律": (8, 5), "七律": (8, 7)}  # form -> (lines, chars per line)
PUNCT = "，。？！；：、"


@dataclass
class QualityConfig:
    """One measurement run; the command line fills it (see parse_args)."""

    data: str = "data/tang.npz"
    model: str | None = None             # None = the shipped checkpoint (poetry_model.load())
    num_poems: int = 300                 # per form, generated and real alike
    forms: tuple[str, ...] = tuple(FORMS)
    temperature: float | None = None     # None = Poet.generate's own default, so "defaults" stay current
    top_k: int | None = None             # None = default; 0 = no limit (generate's top_k=None)
    top_p: float | None = None
    repetition_penalty: float | None = None
    dieci: bool | None = None
    parallelism: str | None = None
    parallel_strength: float | None = None
    season_strength: float | None = None
    time_strength: float | None = None
    breadth: float | None = None
    theme_strength: float | None = None
    theme: str | None = None             # generate(theme=...), or prompt= with theme_prompt
    theme_prompt: bool = False           # the old baseline: the theme word as the poem's first characters
    num_candidates: int = 1              # candidates per poem; the best-ranked one is measured
    seed: int = 1000                     # generation seeds are seed, seed+1, ...; also picks real poems
    folds: int = 5                       # cross-validation folds of the classifier
    batch: int = 50                      # requests decoded together by generate_many
    out: str | None = None


# ---------------------------------------------------------------------------------------------
# Poems as lines


def poem_lines(text: str) -> list[str]:
    """The lines of a poem, punctuation removed."""
    return [s for s in re.split(f"[{PUNCT}]", text) if s]


def has_shape(text: str, form: str) -> bool:
    """Exactly the form's shape: n lines of L characters, ending ，。，。… (no ？！, no □ unknowns)."""
    n, L = FORMS[form]
    line = f"[^{PUNCT}□]{{{L}}}"
    pattern = f"(?:{line}，{line}。){{{n // 2}}}"
    return re.fullmatch(pattern, text) is not None


def shuffled_poems(poems: list[str]) -> list[str]:
    """Baseline poems: line k of poem i comes from poem i+k, so adjacent lines never share a poem.

    Same lines, same positions, same forms as the real poems; only the poem they belong to is
    lost, which is exactly what parallelism and coherence should notice."""
    lines = [poem_lines(p) for p in poems]
    n = len(lines)
    out = []
    for i in range(n):
        picked = [lines[(i + k) % n][k] for k in range(len(lines[i]))]
        out.append("".join(s + ("，" if k % 2 == 0 else "。") for k, s in enumerate(picked)))
    return out


# ---------------------------------------------------------------------------------------------
# Repetition, season and time of day


def accidental_repeat(text: str, count_dieci: bool = False) -> bool:
    """Does some character occur twice in the poem? 叠字 count only with count_dieci=True.

    叠字 (adjacent reduplication inside a line, 萧萧, 悠悠) is a device real poets use on purpose,
    so a run of one character inside a line counts once; what remains repeated is the kind of
    repetition a reader notices as a slip (the same word twice in four lines)."""
    seen: set[str] = set()
    for line in poem_lines(text):
        units = line if count_dieci else [c for k, c in enumerate(line) if k == 0 or line[k - 1] != c]
        for c in units:
            if c in seen:
                return True
            seen.add(c)
    return False


def repetition_rates(poems: list[str]) -> dict[str, float]:
    """Shares of poems with any repeated character, and with a repeat that is not 叠字."""
    return {"repeat_any": _share(accidental_repeat(p, count_dieci=True) for p in poems),
            "repeat_accidental": _share(accidental_repeat(p) for p in poems)}


SEASON_PAIRS = (("春", "秋"), ("夏", "冬"))
# Dawn against deep night. 朝 is left out because it mostly means court or "toward" (朝廷, 朝天), and
# 暮 because 朝…暮 / 晓…暮 is the conventional way to say a day passes; a line at dawn and a line in the
# dead of night is a real jump. Real poems do it too (a night watch ending at dawn), so the number
# is read against the real rate printed next to it, not against zero.
TIME_GROUPS = (frozenset("晓晨曙"), frozenset("夜宵"))


def season_clash(text: str) -> bool:
    """Does the poem name two opposite seasons (春 with 秋, or 夏 with 冬)?"""
    return any(a in text and b in text for a, b in SEASON_PAIRS)


def time_clash(text: str) -> bool:
    """Does the poem put dawn (晓晨曙) and night (夜宵) together?"""
    return all(any(c in text for c in group) for group in TIME_GROUPS)


def clash_rates(poems: list[str]) -> dict[str, float]:
    """Shares of poems with a season clash and with a time-of-day clash."""
    return {"season_clash": _share(season_clash(p) for p in poems),
            "time_clash": _share(time_clash(p) for p in poems)}


# ---------------------------------------------------------------------------------------------
# Corpus statistics (train split only)


class CharIds:
    """Characters to small integers; id 0 is 'unknown' (never seen in the train split)."""

    def __init__(self, texts: list[str]):
        self.points = np.unique(_code_points("".join(texts)))  # sorted code points of the characters
        self.size = len(self.points) + 1

    def grid(self, poems: list[str], form: str) -> np.ndarray:
        """(poems, lines, chars) id array of poems that have the form's shape."""
        n, L = FORMS[form]
        cp = _code_points("".join(poems))
        pos = np.clip(np.searchsorted(self.points, cp), 0, len(self.points) - 1)
        ids = np.where(self.points[pos] == cp, pos + 1, 0)
        return ids.reshape(len(poems), n, L)


def adjacent_pairs(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (char of line k, char of line k+1) pair, and the poem each comes from."""
    P, n, L = grid.shape
    a = np.broadcast_to(grid[:, :-1, :, None], (P, n - 1, L, L))
    b = np.broadcast_to(grid[:, 1:, None, :], (P, n - 1, L, L))
    owner = np.broadcast_to(np.arange(P)[:, None, None, None], (P, n - 1, L, L))
    same = a == b  # a character repeated on the next line is repetition, not association
    return a[~same], b[~same], owner[~same]


def parallelism(grids: list[np.ndarray] | np.ndarray, pmi: PairPMI) -> float:
    """对仗 of 律诗 middle couplets: mean PMI of the characters at the same position in lines 3/4, 5/6.

    In a real 律诗 the middle couplets are parallel: 明月 over 清泉, 松 over 石, a number over a
    number. Pairs that stand at the same position in real middle couplets far more often than
    chance (learned on the train split) are what parallel lines are made of, so a couplet whose
    aligned pairs have high PMI is parallel in that learned sense, without a hand-made word list."""
    x, y = couplet_pairs(grids)
    return float(pmi(x, y).mean()) if len(x) else float("nan")


PRIMER = Path(__file__).resolve().parents[1].parent / "shared/data/chinese-poetry/mengxue/shenglvqimeng.json"


def primer_pairs(path: str | Path) -> set[tuple[str, str]]:
    """Aligned character pairs of 聲律啓蒙, the primer of 对仗 (simplified, both orders).

    Its clauses "云对雨", "来鸿对去燕" pair words of one class (sky over sky, bird over bird), and
    its parallel lines "人间清暑殿，天上广寒宫" do the same position by position: a hand-made
    list of what may stand opposite what, independent of the Tang corpus the PMI is learned from."""
    from poetry_model.vocab import to_script

    book = json.loads(Path(path).read_text(encoding="utf-8"))
    text = "\n".join(p for volume in book["content"] for chapter in volume["content"] for p in chapter["paragraphs"])
    text = to_script(text, "simplified")
    pairs: set[tuple[str, str]] = set()

    def align(a: str, b: str) -> None:
        if len(a) == len(b):
            pairs.update((x, y) for x, y in zip(a, b) if x != y)

    for sentence in re.split("[。\n]", text):
        for clause in re.split("[，；]", sentence):
            if "对" in clause:                              # 云对雨, 晚照对晴空
                align(*clause.split("对", 1))
        if "对" in sentence:
            continue
        halves = sentence.split("；")
        if len(halves) == 2:                                # 两鬓风霜，途次早行之客；一蓑烟雨，溪边晚钓之翁
            for a, b in zip(halves[0].split("，"), halves[1].split("，")):
                align(a, b)
        elif sentence.count("，") == 1:                     # 人间清暑殿，天上广寒宫
            align(*sentence.split("，"))
    return pairs | {(y, x) for x, y in pairs}


def primer_match(poems: list[str], pairs: set[tuple[str, str]]) -> float:
    """Share of aligned positions in 律诗 middle couplets whose two characters are a 聲律啓蒙 pair:
    a word-class check of 对仗 (a few pairs per couplet in real poems, almost none by chance)."""
    aligned = [(x, y) for p in poems for i, j in ((2, 3), (4, 5))
               for x, y in zip(poem_lines(p)[i], poem_lines(p)[j])]
    return _share(xy in pairs for xy in aligned)


def coherence(grid: np.ndarray, pmi: PairPMI) -> float:
    """Inter-line coherence: mean PMI of all character pairs across adjacent lines, per poem, averaged.

    Lines of one poem share a scene (月 near 霜, 舟 near 江); lines from different poems don't. The
    PMI of cross-line pairs, learned on train-split poems, rewards that shared scene."""
    a, b, owner = adjacent_pairs(grid)
    if not len(a):
        return float("nan")
    scores = pmi(a, b)
    per_poem = np.bincount(owner, weights=scores, minlength=len(grid)) / np.maximum(
        np.bincount(owner, minlength=len(grid)), 1)
    return float(per_poem.mean())


class CharTrigram:
    """A character 3-gram with Witten-Bell interpolation, fitted on the train split (not the project's
    KN code, not the LSTM): an independent judge of how corpus-like a character sequence is.

    P(w|v,u) = (c(v,u,w) + T(v,u) P(w|u)) / (c(v,u) + T(v,u)), T = distinct types seen after the
    context; likewise for P(w|u) over an add-one unigram. No parameter to tune."""

    BOS, EOS = 1, 2  # ids 0 unknown, 1 start, 2 end; characters and punctuation from 3

    def __init__(self, texts: list[str]):
        symbols = sorted(set("".join(texts)))
        self.index = {c: i + 3 for i, c in enumerate(symbols)}
        self.V = len(symbols) + 3
        seq = self.encode_many(texts)
        t = np.nonzero(seq[2:] != self.BOS)[0] + 2  # every target except the start padding
        w, u, v = seq[t], seq[t - 1], seq[t - 2]
        V = self.V
        self.uni = np.bincount(w, minlength=V).astype(np.float64)
        self.n = float(len(w))
        self.bi = self._table(u * V + w, u, V)
        self.tri = self._table((v * V + u) * V + w, v * V + u, V)

    def encode_many(self, texts: list[str]) -> np.ndarray:
        ids: list[int] = []
        for text in texts:
            ids += [self.BOS, self.BOS] + [self.index.get(c, 0) for c in text] + [self.EOS]
        return np.array(ids, dtype=np.int64)

    @classmethod
    def _table(cls, codes: np.ndarray, contexts: np.ndarray, V: int) -> dict:
        """Sorted n-gram codes with counts; contexts with their counts and distinct continuations."""
        grams, counts = np.unique(codes, return_counts=True)
        ctx, ctx_counts = np.unique(contexts, return_counts=True)
        types = cls._lookup(ctx, *np.unique(grams // V, return_counts=True))  # a gram's context = code // V
        return {"grams": grams, "counts": counts, "ctx": ctx, "ctx_counts": ctx_counts, "types": types}

    @staticmethod
    def _lookup(keys: np.ndarray, table_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        pos = np.clip(np.searchsorted(table_keys, keys), 0, len(table_keys) - 1)
        return np.where(table_keys[pos] == keys, values[pos], 0).astype(np.float64)

    def _level(self, table: dict, gram: np.ndarray, ctx: np.ndarray, lower: np.ndarray) -> np.ndarray:
        c = self._lookup(gram, table["grams"], table["counts"])
        c_ctx = self._lookup(ctx, table["ctx"], table["ctx_counts"])
        T = self._lookup(ctx, table["ctx"], table["types"])
        return np.where(c_ctx > 0, (c + T * lower) / np.maximum(c_ctx + T, 1), lower)

    def char_logprobs(self, text: str) -> np.ndarray:
        """Natural log-probability of each non-punctuation character of the text, in context."""
        seq = self.encode_many([text])
        t = np.arange(2, len(seq) - 1)  # the characters, not the end token
        w, u, v = seq[t], seq[t - 1], seq[t - 2]
        V = self.V
        p1 = (self.uni[w] + 1) / (self.n + V)
        p2 = self._level(self.bi, u * V + w, u, p1)
        p3 = self._level(self.tri, (v * V + u) * V + w, v * V + u, p2)
        is_char = np.array([c not in PUNCT for c in text])
        return np.log(p3)[is_char]


def ngram_logprob(poems: list[str], lm: CharTrigram) -> float:
    """Mean log-prob per character (nats) under the independent 3-gram, pooled over the poems.

    Too high means bland, over-typical text (low temperature); too low means odd character
    sequences. Read as generated minus real: the issue's window is -0.25 … +0.30 nats."""
    if not poems:
        return float("nan")
    return float(np.concatenate([lm.char_logprobs(p) for p in poems]).mean())


# ---------------------------------------------------------------------------------------------
# Vocabulary


def vocabulary(poems: list[str], top50: set[str]) -> dict[str, float]:
    """Distinct characters used over the poems, and the share of characters among the corpus's 50
    most common: a generator that plays safe falls back on 不, 人, 山, 风 and uses few others."""
    chars = [c for p in poems for c in p if c not in PUNCT]
    return {"distinct_chars": len(set(chars)), "top50_share": _share(c in top50 for c in chars)}


# ---------------------------------------------------------------------------------------------
# Two-sample classifier


class NgramFeatures:
    """Character n-gram features for the two-sample classifier, chosen on the train split.

    Per poem: the relative frequency of each of the `top` commonest characters and of the `top`
    commonest within-line bigrams, plus two pooled features, the share of the poem's characters
    outside those characters and the share of its bigrams that real poets wrote fewer than twice
    (train split). A few hundred poems are far too few to learn which of 200k bigrams are odd, but
    "how much of this poem is rare" is one well-estimated number, and it gives garbled text away."""

    def __init__(self, texts: list[str], top: int = 50):
        chars = _char_counts(texts)
        bigrams = _bigram_counts(texts)
        self.known = {b for b, k in bigrams.items() if k >= 2}
        common = [c for c, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
        common += [b for b, _ in sorted(bigrams.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]
        self.index = {f: i for i, f in enumerate(common)}
        self.size = len(common) + 2

    def __call__(self, texts: list[str]) -> np.ndarray:
        X = np.zeros((len(texts), self.size))
        for row, text in enumerate(texts):
            lines = poem_lines(text)
            chars = [c for line in lines for c in line]
            bigrams = [line[k:k + 2] for line in lines for k in range(len(line) - 1)]
            for f in chars:
                if f in self.index:
                    X[row, self.index[f]] += 1 / len(chars)
                else:
                    X[row, -2] += 1 / len(chars)
            for f in bigrams:
                if f in self.index:
                    X[row, self.index[f]] += 1 / max(len(bigrams), 1)
                if f not in self.known:
                    X[row, -1] += 1 / max(len(bigrams), 1)
        return X


def _logistic_fit(X: np.ndarray, y: np.ndarray, l2: float = 10.0, steps: int = 300) -> np.ndarray:
    """L2-regularised logistic regression by gradient descent (X standardised, last column = 1).

    Few features (top=50) and a firm penalty: with 240 training poems, 1,000 features let the
    model memorise noise and cost it accuracy on the held-out fold (checked on real vs
    character-shuffled poems: top 50 ≈ 0.9 accuracy, top 500 ≈ 0.75)."""
    w = np.zeros(X.shape[1])
    lr = 1.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) / len(y) + l2 / len(y) * np.r_[w[:-1], 0.0]
        w -= lr * grad
    return w


def classifier_accuracy(a: list[str], b: list[str], features: NgramFeatures, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic regression telling set a from set b.

    A two-sample test with a readable number: 0.5 means the classifier cannot tell the sets apart
    from their character n-gram features, 1.0 means it always can. Both sets are cut to the same
    size so that guessing the bigger class is worth nothing; folds are a fixed random split, and the
    standardisation is fitted on each training fold only."""
    n = min(len(a), len(b))
    if n < folds:
        return float("nan")
    X = features(a[:n] + b[:n])
    y = np.r_[np.zeros(n), np.ones(n)]
    fold = np.random.default_rng(seed).permutation(2 * n) % folds
    correct = 0
    for k in range(folds):
        tr, te = fold != k, fold == k
        mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0) + 1e-9
        Z = np.c_[(X - mu) / sd, np.ones(len(X))]
        w = _logistic_fit(Z[tr], y[tr])
        correct += int(((Z[te] @ w > 0) == (y[te] == 1)).sum())
    return correct / (2 * n)



def tfidf_classifier_accuracy(a: list[str], b: list[str], folds: int = 5, seed: int = 0) -> float:
    """The same two-sample test with a second reader: TF-IDF of every character and bigram (lines
    joined by "|", so a bigram may hold a line's end), logistic regression, cross-validated with the
    vectoriser fitted on each training fold. It sees thousands of features, so it catches a skewed
    vocabulary (a rhyme never used, a word used too often) that the 100 commonest n-grams above miss;
    garbled word order, which their pooled share of rare bigrams gives away, it misses at a few hundred
    poems. Real against real it scores about 0.5. (scikit-learn's implementations, not a second
    hand-written one.)"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline

    n = min(len(a), len(b))
    if n < folds:
        return float("nan")
    texts = ["|".join(poem_lines(t)) for t in a[:n] + b[:n]]
    y = np.r_[np.zeros(n), np.ones(n)]
    model = make_pipeline(TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(model, texts, y, cv=split).mean())


# ---------------------------------------------------------------------------------------------
# Theme


class ThemeProfile:
    """Characters typical of real poems whose title contains the theme word (train split). A word in
    fewer than `min_titles` train titles (边塞 heads one) is read as its characters: titles holding any
    of them (塞下曲, 出塞, 边城)."""

    def __init__(self, word: str, texts: list[str], titles: list[str], min_count: int = 5, lift: float = 2.0,
                 min_titles: int = 20):
        self.parts: tuple[str, ...] = (word,)
        if sum(word in title for title in titles) < min_titles and len(word) > 1:
            self.parts = tuple(dict.fromkeys(word))
        themed = [t for t, title in zip(texts, titles) if self.matches(title)]
        all_counts = _char_counts(texts)
        themed_counts = _char_counts(themed)
        n_all, n_themed = sum(all_counts.values()), max(sum(themed_counts.values()), 1)
        # "Typical" = used at least `lift` times more often in themed poems than in poems overall,
        # and often enough (min_count) that the ratio is not a fluke of a few poems.
        self.word = word
        self.num_themed = len(themed)
        self.chars = {c for c, k in themed_counts.items()
                      if k >= min_count and (k / n_themed) >= lift * (all_counts.get(c, 0) / n_all)}

    def matches(self, title: str) -> bool:
        """Is a poem with this title a themed one?"""
        return any(part in title for part in self.parts)

    def score(self, poems: list[str], skip: int = 0) -> float:
        """Share of the poems' characters that are typical of the theme (the first `skip` characters of
        each poem, a forced prompt, are not counted: they say nothing about the model)."""
        chars = [c for p in poems for c in p[skip:] if c not in PUNCT]
        return _share(c in self.chars for c in chars)


def theme_halfway(generated: float, average: float, themed: float) -> float:
    """How far generated poems move from an average poem toward real themed poems: 0 = not at all,
    1 = as themed as real poems with the word in their title. The issue's target is 0.5."""
    return (generated - average) / (themed - average) if themed != average else float("nan")


# ---------------------------------------------------------------------------------------------
# Helpers


def _share(flags) -> float:
    flags = list(flags)
    return sum(map(bool, flags)) / len(flags) if flags else float("nan")


def _code_points(text: str) -> np.ndarray:
    """The text's characters as unicode code points, punctuation dropped."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return cp[~np.isin(cp, [ord(c) for c in PUNCT])]


def _bigram_counts(texts: list[str]) -> dict[str, int]:
    """Within-line bigram counts over the texts."""
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    is_char = ~np.isin(cp, [ord(c) for c in PUNCT])
    inside = is_char[:-1] & is_char[1:]  # both characters in one line (poems end in punctuation)
    codes, counts = np.unique((cp[:-1] << 21 | cp[1:])[inside], return_counts=True)  # code points < 2**21
    return {chr(c >> 21) + chr(c & (2 ** 21 - 1)): k for c, k in zip(codes.tolist(), counts.tolist())}


def _char_counts(texts: list[str]) -> dict[str, int]:
    """Character counts over the texts, punctuation excluded."""
    points, counts = np.unique(_code_points("".join(texts)), return_counts=True)
    return dict(zip(map(chr, points.tolist()), counts.tolist()))


# ---------------------------------------------------------------------------------------------
# Corpus and generation


@dataclass
class Corpus:
    """Train-split statistics and validation-split real poems by form."""

    train_texts: list[str]
    real: dict[str, list[str]]          # form -> held-out poems of exactly that shape, seeded order
    val_texts: list[str]
    val_titles: list[str]
    train_titles: list[str]
    primer: set[tuple[str, str]] | None = None  # 聲律啓蒙 pairs, where the book is available
    ids: CharIds = field(init=False)
    couplet_pmi: PairPMI = field(init=False)
    line_pmi: PairPMI = field(init=False)
    lm: CharTrigram = field(init=False)
    top50: set[str] = field(init=False)
    features: NgramFeatures = field(init=False)

    def __post_init__(self):
        shaped = {f: [t for t in self.train_texts if has_shape(t, f)] for f in FORMS}
        self.ids = CharIds(self.train_texts)
        # Aligned pairs come from real 律诗 middle couplets, where 对仗 is required; adjacent-line
        # pairs from every poem of the four shapes.
        lu = [self.ids.grid(shaped[f], f) for f in ("五律", "七律")]
        x, y = zip(*(couplet_pairs(g) for g in lu))
        self.couplet_pmi = PairPMI(np.concatenate(x), np.concatenate(y), self.ids.size)
        a, b, _ = zip(*(adjacent_pairs(self.ids.grid(shaped[f], f)) for f in FORMS))
        self.line_pmi = PairPMI(np.concatenate(a), np.concatenate(b), self.ids.size)
        self.lm = CharTrigram(self.train_texts)
        self.features = NgramFeatures(self.train_texts)
        self.top50 = {c for c, _ in sorted(_char_counts(self.train_texts).items(), key=lambda kv: -kv[1])[:50]}


def load_corpus(path: str | Path, seed: int = 0) -> Corpus:
    """Texts of the train split, and validation poems of each form's shape in a seeded order."""
    from poetry_model.data import load_npz, split_indices

    ds = load_npz(path)
    train, val = split_indices(len(ds))
    texts = [ds.poem_text(i) for i in range(len(ds))]
    titles = [str(t) for t in ds.titles] if ds.titles is not None else [""] * len(ds)
    rng = np.random.default_rng(seed)
    real = {}
    for form in FORMS:
        pool = [texts[i] for i in val if has_shape(texts[i], form)]
        real[form] = [pool[i] for i in rng.permutation(len(pool))]
    primer = primer_pairs(PRIMER) if PRIMER.is_file() else None
    return Corpus([texts[i] for i in train], real, [texts[i] for i in val], [titles[i] for i in val],
                  [titles[i] for i in train], primer)


def decoding_kwargs(cfg: QualityConfig) -> dict:
    """Only the settings given on the command line: the rest stay at generate's defaults."""
    kw = {}
    if cfg.temperature is not None:
        kw["temperature"] = cfg.temperature
    if cfg.top_k is not None:
        kw["top_k"] = None if cfg.top_k == 0 else cfg.top_k
    if cfg.top_p is not None:
        kw["top_p"] = cfg.top_p
    if cfg.repetition_penalty is not None:
        kw["repetition_penalty"] = cfg.repetition_penalty
    for name in ("dieci", "parallelism", "parallel_strength", "season_strength", "time_strength", "breadth",
                 "theme_strength"):
        if getattr(cfg, name) is not None:
            kw[name] = getattr(cfg, name)
    return kw


def generate_poems(poet, form: str, cfg: QualityConfig) -> tuple[list[str], dict]:
    """N poems of the form, seeds cfg.seed.. ; returns the texts of the right shape and a record of
    the settings used and of the requests that failed or came out malformed."""
    base = dict(form=form, num_candidates=cfg.num_candidates, **decoding_kwargs(cfg))
    if cfg.theme:
        base["prompt" if cfg.theme_prompt else "theme"] = cfg.theme
    requests = [dict(base, seed=cfg.seed + i) for i in range(cfg.num_poems)]
    texts, settings, failed, malformed = [], None, 0, 0
    for start in range(0, len(requests), cfg.batch):
        for result in poet.generate_many(requests[start:start + cfg.batch]):
            if isinstance(result, Exception) or not result:
                failed += 1
                continue
            poem = result[0]
            settings = settings or {k: poem.settings[k] for k in ("temperature", "top_k", "top_p",
                                                                  "repetition_penalty", "dieci", "parallelism",
                                                                  "parallel_strength", "season_strength", "time_strength",
                                                                  "breadth", "theme", "theme_strength", "num_candidates", "rhyme", "tones",
                                                                  "avoid_copies") if k in poem.settings}
            if has_shape(poem.text, form):
                texts.append(poem.text)
            else:
                malformed += 1
    return texts, {"settings": settings, "failed": failed, "malformed": malformed}


# ---------------------------------------------------------------------------------------------
# One form


TARGETS = {  # the targets, as readable text (judged in `verdicts`)
    "repeat_accidental": "within 10 points of real",
    "season_clash": "≤ 3% (≤ 5% with a theme)",
    "distinct_chars": "≥ 75% of real",
    "classifier_accuracy": "≤ 0.70 (aim 0.60)",
    "classifier_tfidf": "≤ 0.70 (aim 0.60)",
    "ngram_logprob": "gen − real in −0.25 … +0.30 nats",
    "parallelism": "≥ 70% of real (over shuffled) and above shuffled",
    "coherence": "≥ 60% of real (over shuffled) and above shuffled",
    "theme_halfway": "≥ 0.5",
}


def measure_set(poems: list[str], form: str, corpus: Corpus) -> dict[str, float]:
    """Every per-set measure of one set of poems of one form."""
    grid = corpus.ids.grid(poems, form)
    out = {**repetition_rates(poems), **clash_rates(poems), **vocabulary(poems, corpus.top50),
           "coherence": coherence(grid, corpus.line_pmi),
           "ngram_logprob": ngram_logprob(poems, corpus.lm)}
    lu = FORMS[form][0] == 8
    out["parallelism"] = parallelism(grid, corpus.couplet_pmi) if lu else None
    out["primer_pairs"] = primer_match(poems, corpus.primer) if lu and corpus.primer else None
    return out


def evaluate_form(form: str, generated: list[str], corpus: Corpus, cfg: QualityConfig,
                  theme: ThemeProfile | None = None) -> dict:
    """Generated, real and shuffled measures of one form, the classifier and the verdicts."""
    n = min(len(generated), len(corpus.real[form]))
    gen, real = generated[:n], corpus.real[form][:n]  # equal sizes: distinct counts depend on N
    shuffled = shuffled_poems(real)
    result = {"n": n, "generated": measure_set(gen, form, corpus), "real": measure_set(real, form, corpus),
              "shuffled": measure_set(shuffled, form, corpus),
              "generated_shuffled": measure_set(shuffled_poems(gen), form, corpus)}
    half = n // 2
    result["classifier"] = {
        "generated_vs_real": classifier_accuracy(gen, real, corpus.features, cfg.folds, cfg.seed),
        "real_vs_real": classifier_accuracy(real[:half], real[half:], corpus.features, cfg.folds, cfg.seed),
        "tfidf_generated_vs_real": tfidf_classifier_accuracy(gen, real, cfg.folds, cfg.seed),
        "tfidf_real_vs_real": tfidf_classifier_accuracy(real[:half], real[half:], cfg.folds, cfg.seed)}
    if theme is not None:
        average = theme.score(real)
        themed_real = theme.score([t for t, title in zip(corpus.val_texts, corpus.val_titles) if theme.matches(title)])
        generated_score = theme.score(gen, skip=len(theme.word) if cfg.theme_prompt else 0)
        result["theme"] = {"generated": generated_score, "average_real": average, "themed_real": themed_real,
                           "halfway": theme_halfway(generated_score, average, themed_real)}
    result["relative"] = relative(result)
    result["verdicts"] = verdicts(result, themed=theme is not None)
    return result


def above_chance(gen: float | None, gen_shuffled: float | None, real: float, shuffled: float) -> float | None:
    """Generated poems' margin over their own lines shuffled, as a share of real poems' margin.

    A PMI score's zero is statistical independence, not "no coherence": shuffled real lines score
    below zero and real 七律 score near zero, so "60% of real" only means something when measured
    from a shuffled baseline. And each side needs its own baseline: generated poems lean on common
    characters whose pairs have mildly positive PMI anywhere, so their lines score above zero even
    when thrown together from different poems; only what a poem adds over its own lines shuffled
    is coherence (or parallelism). 1.0 = as much as real poems, 0.0 = nothing."""
    if gen is None or gen_shuffled is None or real == shuffled:
        return None
    return (gen - gen_shuffled) / (real - shuffled)


def relative(r: dict) -> dict[str, float | None]:
    """The ratios the issue's targets are stated in."""
    g, real, sh, gs = r["generated"], r["real"], r["shuffled"], r["generated_shuffled"]
    return {"distinct_chars": g["distinct_chars"] / real["distinct_chars"],
            "parallelism": above_chance(g["parallelism"], gs["parallelism"], real["parallelism"], sh["parallelism"]),
            "coherence": above_chance(g["coherence"], gs["coherence"], real["coherence"], sh["coherence"]),
            "ngram_logprob": g["ngram_logprob"] - real["ngram_logprob"],
            "repeat_accidental": g["repeat_accidental"] - real["repeat_accidental"]}


def verdicts(r: dict, themed: bool = False) -> dict[str, bool | None]:
    """Each issue target, met (True) or not (False); None where it does not apply to the form."""
    g, sh, rel = r["generated"], r["shuffled"], r["relative"]
    v = {"repeat_accidental": abs(rel["repeat_accidental"]) <= 0.10,
         "season_clash": g["season_clash"] <= (0.05 if themed else 0.03),
         "distinct_chars": rel["distinct_chars"] >= 0.75,
         "classifier_accuracy": r["classifier"]["generated_vs_real"] <= 0.70,
         "classifier_tfidf": r["classifier"]["tfidf_generated_vs_real"] <= 0.70,
         "ngram_logprob": -0.25 <= rel["ngram_logprob"] <= 0.30,
         "coherence": rel["coherence"] is not None and rel["coherence"] >= 0.6 and g["coherence"] > sh["coherence"],
         "parallelism": None, "theme_halfway": None}
    if g["parallelism"] is not None:
        v["parallelism"] = (rel["parallelism"] is not None and rel["parallelism"] >= 0.7
                            and g["parallelism"] > sh["parallelism"])
    if "theme" in r:
        v["theme_halfway"] = r["theme"]["halfway"] >= 0.5
    return v


# ---------------------------------------------------------------------------------------------
# Report


ROWS = [  # (key, label, format)
    ("repeat_any", "any repeated character", "pct"),
    ("repeat_accidental", "repeat other than 叠字", "pct"),
    ("season_clash", "season clash (春+秋, 夏+冬)", "pct"),
    ("time_clash", "time-of-day clash (晓晨曙+夜宵)", "pct"),
    ("distinct_chars", "distinct characters", "int"),
    ("top50_share", "share of top-50 characters", "pct"),
    ("parallelism", "对仗: middle-couplet aligned PMI", "f3"),
    ("primer_pairs", "对仗: aligned 聲律啓蒙 pairs", "pct"),
    ("coherence", "adjacent-line PMI", "f3"),
    ("ngram_logprob", "3-gram log-prob / char (nats)", "f3"),
]


def _fmt(x, kind: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return {"pct": f"{100 * x:.1f}%", "int": f"{int(x)}", "f3": f"{x:.3f}"}[kind]


def _mark(v) -> str:
    return "" if v is None else ("met" if v else "NOT met")


def markdown(report: dict) -> str:
    """One table per form: generated, real, shuffled real, shuffled generated, target, met."""
    out = [f"settings: {json.dumps(report['settings'], ensure_ascii=False)}", ""]
    for form, r in report["forms"].items():
        if "error" in r:
            out += [f"### {form}", "", r["error"], ""]
            continue
        out += [f"### {form} (n = {r['n']} generated and {r['n']} real)", "",
                "| measure | generated | real | shuffled real | shuffled gen. | target | |",
                "|---|---|---|---|---|---|---|"]
        for key, label, kind in ROWS:
            g, real, sh, gs = (r[s][key] for s in ("generated", "real", "shuffled", "generated_shuffled"))
            judged = key in ("repeat_accidental", "season_clash")  # the others are judged as ratios below
            out.append(f"| {label} | {_fmt(g, kind)} | {_fmt(real, kind)} | {_fmt(sh, kind)} | {_fmt(gs, kind)} | "
                       f"{TARGETS[key] if judged else ''} | {_mark(r['verdicts'][key]) if judged else ''} |")
        rel = r["relative"]
        out.append(f"| distinct characters, generated / real | {100 * rel['distinct_chars']:.0f}% | | | | "
                   f"≥ 75% | {_mark(r['verdicts']['distinct_chars'])} |")
        for key, label in (("parallelism", "对仗"), ("coherence", "coherence")):
            if rel[key] is not None:
                out.append(f"| {label}: margin over own shuffle, share of real's | {100 * rel[key]:.0f}% | 100% | | | "
                           f"{TARGETS[key].split(' (')[0]} | {_mark(r['verdicts'][key])} |")
        c = r["classifier"]
        out.append(f"| classifier accuracy, gen vs real (real vs real) | {c['generated_vs_real']:.3f} | "
                   f"({c['real_vs_real']:.3f}) | | | {TARGETS['classifier_accuracy']} | "
                   f"{_mark(r['verdicts']['classifier_accuracy'])} |")
        out.append(f"| classifier, TF-IDF 1–2-grams, gen vs real (real vs real) | {c['tfidf_generated_vs_real']:.3f} | "
                   f"({c['tfidf_real_vs_real']:.3f}) | | | {TARGETS['classifier_tfidf']} | "
                   f"{_mark(r['verdicts']['classifier_tfidf'])} |")
        diff = r["generated"]["ngram_logprob"] - r["real"]["ngram_logprob"]
        out.append(f"| 3-gram log-prob, gen − real | {diff:+.3f} | | | | {TARGETS['ngram_logprob']} | "
                   f"{_mark(r['verdicts']['ngram_logprob'])} |")
        if "theme" in r:
            t = r["theme"]
            out.append(f"| theme share (average real → themed real) | {100 * t['generated']:.1f}% | "
                       f"{100 * t['average_real']:.1f}% → {100 * t['themed_real']:.1f}% | | | | |")
            out.append(f"| theme half-way | {t['halfway']:.2f} | | | | {TARGETS['theme_halfway']} | "
                       f"{_mark(r['verdicts']['theme_halfway'])} |")
        out.append("")
    return "\n".join(out)


def run(cfg: QualityConfig) -> dict:
    from poetry_model import load

    t0 = time.time()
    corpus = load_corpus(cfg.data, cfg.seed)
    print(f"corpus statistics ready ({time.time() - t0:.0f} s)", flush=True)
    theme = None
    if cfg.theme:
        theme = ThemeProfile(cfg.theme, corpus.train_texts, corpus.train_titles)
        print(f"theme {cfg.theme}: {theme.num_themed} train poems with it in the title, "
              f"{len(theme.chars)} typical characters", flush=True)
    poet = load(cfg.model)
    report = {"config": asdict(cfg), "settings": {}, "forms": {}, "generation": {}}
    for form in cfg.forms:
        t = time.time()
        texts, record = generate_poems(poet, form, cfg)
        report["generation"][form] = record
        report["settings"] = report["settings"] or dict(record["settings"] or {},
                                                        theme_prompt=cfg.theme if cfg.theme_prompt else None)
        if not texts:
            report["forms"][form] = {"error": f"no well-formed poem generated ({record})"}
            continue
        report["forms"][form] = evaluate_form(form, texts, corpus, cfg, theme)
        record["poems"] = texts  # every measured poem, to read the numbers against
        print(f"{form}: {len(texts)} poems, measured in {time.time() - t:.0f} s", flush=True)
    if report["settings"]:  # breadth and repetition penalty default by form (GenerationConfig): list each form's
        for name in ("breadth", "repetition_penalty"):
            report["settings"][name] = " · ".join(f"{form} {rec['settings'][name]}"
                                                  for form, rec in report["generation"].items() if rec["settings"])
    report["markdown"] = markdown(report)
    print(report["markdown"])
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "quality.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, default=_json_default))
        (out / "quality.md").write_text(report["markdown"] + "\n")
    return report


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x))


def parse_args(argv: list[str] | None = None) -> QualityConfig:
    p = argparse.ArgumentParser(prog="python -m train.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = QualityConfig()
    p.add_argument("--data", default=d.data, help="tang.npz (its validation split gives the real poems)")
    p.add_argument("--model", default=d.model, help="model folder or Hub id (default: the shipped model)")
    p.add_argument("--num-poems", type=int, default=d.num_poems, help="poems per form, generated and real")
    p.add_argument("--forms", nargs="+", default=list(d.forms), choices=list(FORMS))
    p.add_argument("--temperature", type=float, default=None, help="default: generate's default")
    p.add_argument("--top-k", type=int, default=None, help="default: generate's default; 0 = no limit")
    p.add_argument("--top-p", type=float, default=None, help="default: generate's default")
    p.add_argument("--repetition-penalty", type=float, default=None, help="default: generate's default")
    p.add_argument("--dieci", default=None, action=argparse.BooleanOptionalAction,
                   help="叠字 exempt from the repetition penalty (default: generate's default)")
    p.add_argument("--parallelism", default=None, choices=["auto", "on", "off"], help="default: generate's default")
    p.add_argument("--parallel-strength", type=float, default=None, help="default: generate's default")
    p.add_argument("--season-strength", type=float, default=None, help="default: generate's default")
    p.add_argument("--time-strength", type=float, default=None, help="default: generate's default")
    p.add_argument("--breadth", type=float, default=None, help="default: generate's default")
    p.add_argument("--theme", default=None, help="theme word, passed as theme= (see --theme-prompt)")
    p.add_argument("--theme-prompt", action="store_true", help="baseline: pass the theme word as prompt= instead")
    p.add_argument("--theme-strength", type=float, default=None, help="default: generate's default")
    p.add_argument("--num-candidates", type=int, default=d.num_candidates,
                   help="candidates per poem, the best-ranked measured (default 1)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--folds", type=int, default=d.folds)
    p.add_argument("--out", default=None, help="folder for quality.json and quality.md")
    a = p.parse_args(argv)
    if a.num_poems < 2 * a.folds:
        p.error(f"--num-poems must be at least {2 * a.folds} (two folds' worth per half)")
    return QualityConfig(data=a.data, model=a.model, num_poems=a.num_poems, forms=tuple(a.forms),
                         temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                         repetition_penalty=a.repetition_penalty, dieci=a.dieci, parallelism=a.parallelism,
                         parallel_strength=a.parallel_strength,
                         season_strength=a.season_strength, time_strength=a.time_strength, breadth=a.breadth,
                         theme_strength=a.theme_strength, theme=a.theme, theme_prompt=a.theme_prompt,
                         num_candidates=a.num_candidates,
                         seed=a.seed, folds=a.folds, out=a.out)


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
