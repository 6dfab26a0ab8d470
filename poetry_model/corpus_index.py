"""The full copy index: the corpus text with a suffix array, titles and authors.

It finds the longest span a poem shares with the corpus and the nearest corpus poem. It is built
from the model folder's `corpus.npz` (the corpus text, titles and authors, xz-compressed: about
4 MB, written by `write_corpus` at export) or from a tang.npz. Building the suffix array takes
seconds, so the built index is cached: beside a tang.npz, or for a model folder's corpus in the
user's cache directory, keyed by the file's hash.
"""
from __future__ import annotations

import hashlib
import lzma
import math
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from .data import PoemDataset, load_npz
from .files import atomic_path
from .novelty import CORPUS_FILE, LineIndex, dataset_texts, hash_lines, shown_in
from .text import split_lines

CORPUS_VERSION = 1
INDEX_SUFFIX = ".copyindex.npz"
INDEX_VERSION = 2
SEPARATOR = "\n"  # between poems in the index text; never inside a poem, sorts below every character


def write_corpus(dataset: PoemDataset, model_dir: str | Path) -> Path:
    """Write `corpus.npz` (every poem's text, title and author, xz-compressed) into a model folder."""
    texts = dataset_texts(dataset)
    empty = [""] * len(texts)
    packed = {name: np.frombuffer(lzma.compress("\n".join(_one_line(v) for v in values).encode("utf-8")), np.uint8)
              for name, values in (("texts", texts), ("titles", dataset.titles if dataset.titles is not None else empty),
                                   ("authors", dataset.authors if dataset.authors is not None else empty))}
    path = Path(model_dir) / CORPUS_FILE
    with atomic_path(path) as tmp:
        np.savez(tmp, version=np.int64(CORPUS_VERSION), script=np.array(dataset.vocab.script), **packed)
    return path


def _one_line(value) -> str:
    return str(value).replace("\n", " ")  # a newline inside a title would break the packed form


def read_corpus(path: str | Path) -> tuple[list[str], list[str], list[str], str]:
    """(texts, titles, authors, script) from a `corpus.npz`; ValueError naming the file if it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CORPUS_VERSION:
                raise ValueError(f"version {int(z['version'])}, expected {CORPUS_VERSION}")
            texts, titles, authors = (lzma.decompress(z[k].tobytes()).decode("utf-8").split("\n")
                                      for k in ("texts", "titles", "authors"))
            script = str(z["script"])
    except (OSError, KeyError, ValueError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable corpus file ({error})") from None
    if not len(texts) == len(titles) == len(authors):
        raise ValueError(f"{path}: {len(texts)} poems but {len(titles)} titles and {len(authors)} authors")
    return texts, titles, authors, script



def cache_dir() -> Path:
    """Where built indexes of model-folder corpora are kept: $POETRY_CACHE, else ~/.cache/poetry_model."""
    return Path(os.environ.get("POETRY_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "poetry_model")


# ---------------------------------------------------------------------------------------------
# Full index: suffix array over the corpus text


def suffix_array(codes: np.ndarray) -> np.ndarray:
    """Suffix array of a non-negative int array by prefix doubling (numpy sorts, a few seconds for 4M)."""
    n = len(codes)
    rank = np.unique(codes, return_inverse=True)[1].astype(np.int64)  # dense ranks < n keep the keys exact
    k = 1
    while True:
        second = np.zeros(n, np.int64)
        second[:n - k] = rank[k:] + 1  # 0 = past the end, which sorts first
        key = rank * (n + 2) + second
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        rank = np.empty(n, np.int64)
        rank[order] = np.concatenate(([0], np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        if rank[order[-1]] == n - 1 or k >= n:
            return order.astype(np.int32)
        k *= 2


def _index_codes(text: str, n_poems: int) -> np.ndarray:
    """Code points of the index text, each separator made unique (its poem number).

    Unique separators stop the doubling at the longest repeat inside one poem; since they all
    sort below every character, Python's own string comparison agrees with the array's order."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64) + n_poems
    seps = np.flatnonzero(codes == ord(SEPARATOR) + n_poems)
    codes[seps] = np.arange(len(seps))
    return codes


def _pack(strings) -> np.ndarray:
    """Strings as one UTF-8 byte array (a fixed-width unicode array would be 20x larger)."""
    return np.frombuffer("\n".join(map(str, strings)).encode("utf-8"), dtype=np.uint8)


def _unpack(packed: np.ndarray) -> list[str]:
    return packed.tobytes().decode("utf-8").split("\n")


class CorpusIndex:
    """Corpus text, suffix array and poem metadata: longest shared span and nearest poem."""

    def __init__(self, text: str, sa: np.ndarray, starts: np.ndarray, titles, authors,
                 script: str, line_hashes: np.ndarray, sa_poem: np.ndarray | None = None, source: str = "",
                 codes: np.ndarray | None = None):
        self.text, self.sa, self.starts = text, sa, starts
        self.titles, self.authors, self.script, self.source = titles, authors, script, source
        self.line_hashes = line_hashes
        # The poem of every suffix-array row, so that finding which poems hold a pair is one slice.
        self.sa_poem = (np.searchsorted(starts, sa, side="right") - 1).astype(np.int32) if sa_poem is None else sa_poem
        self._codes = codes  # the text's code points, when the caller has them
        self._search: tuple | None = None
        self._search_lock = threading.Lock()

    @classmethod
    def build(cls, dataset: PoemDataset) -> "CorpusIndex":
        """Index every poem of a dataset (titles and authors empty when the file has none)."""
        texts = dataset_texts(dataset)
        empty = [""] * len(texts)
        return cls.from_texts(texts, [_one_line(t) for t in (dataset.titles if dataset.titles is not None else empty)],
                              [_one_line(a) for a in (dataset.authors if dataset.authors is not None else empty)],
                              dataset.vocab.script, str(dataset.path or ""))

    @classmethod
    def from_texts(cls, texts: list[str], titles: list[str], authors: list[str], script: str,
                   source: str = "") -> "CorpusIndex":
        """Index poems given as texts with their titles and authors (the suffix array takes seconds)."""
        text = SEPARATOR.join(texts) + SEPARATOR
        lengths = np.array([len(t) + 1 for t in texts], np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int32)
        sa = suffix_array(_index_codes(text, len(texts)))
        return cls(text, sa, starts, titles, authors, script, hash_lines(texts), source=source)

    def save(self, path: str | Path, stamp: np.ndarray) -> None:
        """Write the index uncompressed (so it loads fast), atomically; `stamp` identifies the source file."""
        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
        with atomic_path(path) as tmp:
            np.savez(tmp, version=np.int64(INDEX_VERSION), stamp=stamp, codes=codes, sa=self.sa, starts=self.starts,
                     titles=_pack(self.titles), authors=_pack(self.authors), script=np.array(self.script),
                     line_hashes=self.line_hashes, sa_poem=self.sa_poem)

    @classmethod
    def load(cls, path: str | Path, stamp: np.ndarray | None = None) -> "CorpusIndex | None":
        """Read a cached index; None when it is missing, of another version or for another source."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["version"]) != INDEX_VERSION or (stamp is not None and not np.array_equal(z["stamp"], stamp)):
                    return None
                codes = z["codes"]
                return cls(codes.tobytes().decode("utf-32-le"), z["sa"], z["starts"], _unpack(z["titles"]),
                           _unpack(z["authors"]), str(z["script"]), z["line_hashes"], z["sa_poem"], str(path), codes)
        except (OSError, KeyError, ValueError):
            return None

    @classmethod
    def for_npz(cls, npz: str | Path) -> "CorpusIndex | None":
        """The index of a tang.npz: from its cache when fresh, else built (and cached if writable); None without npz."""
        npz = Path(npz)
        if not npz.is_file():
            return None
        st = npz.stat()
        stamp = np.array([st.st_size, st.st_mtime_ns], np.int64)
        cache = npz.with_name(npz.stem + INDEX_SUFFIX)
        index = cls.load(cache, stamp)
        if index is None:
            index = cls.build(load_npz(npz))
            try:
                index.save(cache, stamp)
            except OSError:
                pass  # a read-only data folder: the index still works, it is just rebuilt next time
        return index

    @classmethod
    def for_file(cls, path: str | Path) -> "CorpusIndex | None":
        """The index of a model folder's `corpus.npz` or of a tang.npz, told apart by their contents."""
        try:
            with np.load(path, allow_pickle=False) as z:
                compact = "texts" in z.files
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a readable corpus file ({error})") from None
        return cls.for_corpus_file(path) if compact else cls.for_npz(path)

    @classmethod
    def for_corpus_file(cls, path: str | Path) -> "CorpusIndex":
        """The index of a model folder's `corpus.npz`: from the user cache when built before, else built
        and cached there (if writable). ValueError naming the file when it is damaged."""
        path = Path(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:32]
        stamp = np.frombuffer(bytes.fromhex(digest), np.int64)
        cache = cache_dir() / f"{digest}{INDEX_SUFFIX}"
        index = cls.load(cache, stamp)
        if index is None:
            index = cls.from_texts(*read_corpus(path), source=str(path))
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                index.save(cache, stamp)
            except OSError:
                pass  # no writable cache: the index still works, it is just rebuilt next time
        return index

    def line_index(self) -> LineIndex:
        """A LineIndex over the same corpus, for models shipped without `corpus_lines.npy`."""
        return LineIndex(self.line_hashes, self.source)

    # -- queries ------------------------------------------------------------------------------

    def _searcher(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """What `_range` searches with, built on first use (a fraction of a second).

        Every character of the text gets its dense rank (0 past the end, 1 the poem separator,
        then characters in code point order), and every suffix-array row the ranks of its first
        two characters packed into one integer. Those keys are sorted like the rows (the rows that
        start with a separator aside, which no query starts with), so a query's rows are two binary
        searches, then one narrowing per further character over rows already sharing the prefix."""
        if self._search is None:
            with self._search_lock:
                if self._search is None:
                    codes = self._codes
                    if codes is None:
                        codes = np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
                    present = np.zeros(int(codes.max(initial=0)) + 2, bool)
                    present[codes] = True
                    sep = ord(SEPARATOR)
                    present[sep] = False
                    rank_of = (np.cumsum(present) + 1).astype(np.int64)  # rank of each code point present
                    rank_of[sep] = 1
                    present[sep] = True
                    bits = int(rank_of[-1]).bit_length()
                    dtype = np.uint32 if 2 * bits < 32 else np.uint64  # room for the key after the last
                    ranks = np.append(rank_of[codes], 0).astype(dtype)
                    keys = (ranks[self.sa] << dtype(bits)) | ranks[self.sa.astype(np.int64) + 1]
                    chars = np.flatnonzero(present)
                    rank = dict(zip(map(chr, chars.tolist()), rank_of[chars].tolist()))
                    self._search = (rank, ranks, keys, bits)
        return self._search

    def _range(self, s: str) -> tuple[int, int]:
        """Suffix-array rows whose suffix starts with s (an empty range when s does not occur)."""
        if len(s) < 2:
            if not s:
                return 0, len(self.sa)
            rank, _, keys, bits = self._searcher()
            r = rank.get(s)
            if r is None:
                return 0, 0  # a character the corpus lacks
            key = keys.dtype.type  # a key of the array's own type: another type would convert the whole array
            return int(keys.searchsorted(key(r << bits), "left")), int(keys.searchsorted(key((r + 1) << bits), "left"))
        lo, hi = self._pair_ranges([s[:2]])[0]
        return self._narrow(s, lo, hi)

    def _pair_ranges(self, pairs: list[str]) -> list[tuple[int, int]]:
        """The rows of many two-character strings at once."""
        rank, _, keys, bits = self._searcher()
        out = [(0, 0)] * len(pairs)
        known = [(k, rank.get(p[0]), rank.get(p[1])) for k, p in enumerate(pairs)]
        known = [(k, (a << bits) | b) for k, a, b in known if a is not None and b is not None]
        if known:
            wanted = np.array([key for _, key in known], keys.dtype)
            los, his = keys.searchsorted(wanted, "left").tolist(), keys.searchsorted(wanted, "right").tolist()
            for (k, _), lo, hi in zip(known, los, his):
                out[k] = (lo, hi)
        return out

    def _narrow(self, s: str, lo: int, hi: int) -> tuple[int, int]:
        """The rows of s, from the rows [lo, hi) of its first two characters."""
        rank, ranks, keys, _ = self._searcher()
        key, end = keys.dtype.type, len(ranks) - 1
        for j in range(2, len(s)):
            if hi - lo <= 8:  # a few rows left: compare the rest of s as text
                rest, starts = s[j:], self.sa[lo:hi].tolist()
                hits = [lo + k for k, at in enumerate(starts) if self.text[at + j:at + len(s)] == rest]
                return (hits[0], hits[-1] + 1) if hits else (lo, lo)  # matching rows are consecutive
            r = rank.get(s[j])
            if r is None:
                return lo, lo
            column = ranks[np.minimum(self.sa[lo:hi] + j, end)]  # sorted: the rows share s[:j]
            lo, hi = lo + int(column.searchsorted(key(r), "left")), lo + int(column.searchsorted(key(r), "right"))
        return lo, hi

    def poem_at(self, position: int) -> int:
        """The number of the poem holding a text position."""
        return int(np.searchsorted(self.starts, position, side="right")) - 1

    def longest_span(self, text: str) -> tuple[str, int | None]:
        """The longest substring of text found in the corpus, and the poem holding it (greedy extension)."""
        best, where = "", None
        pairs = self._pair_ranges([text[i:i + 2] for i in range(len(text) - 1)])
        for i in range(len(text)):
            while i + len(best) < len(text):
                s = text[i:i + len(best) + 1]
                lo, hi = self._range(s) if len(s) < 2 else self._narrow(s, *pairs[i])
                if hi <= lo:
                    break
                best, where = s, int(self.sa[lo])
        return best, None if where is None else self.poem_at(where)

    def nearest(self, text: str) -> tuple[int | None, float]:
        """The poem sharing the most IDF-weighted character pairs with text, and that share in [0, 1]."""
        pairs = sorted({line[j:j + 2] for line in split_lines(text) for j in range(len(line) - 1)})
        n = len(self.starts)
        ranges = self._pair_ranges(pairs)
        weights = [math.log((n + 1) / (hi - lo + 1)) + 1.0 for lo, hi in ranges]  # rare pairs say more
        found = [(k, lo, hi) for k, (lo, hi) in enumerate(ranges) if hi > lo]
        if not found:
            return None, 0.0
        # Each pair counts once per poem holding it: unique (pair, poem), pair by pair, poems ascending.
        pair_poem = np.unique(np.concatenate([k * n + self.sa_poem[lo:hi].astype(np.int64) for k, lo, hi in found]))
        scores = np.bincount(pair_poem % n, np.array(weights)[pair_poem // n], minlength=n)
        best = int(scores.argmax())
        return best, round(float(scores[best] / math.fsum(weights)), 4)

    def poem_ref(self, i: int | None, script: str) -> dict | None:
        """Title and author of poem i in the given script."""
        if i is None:
            return None
        show = shown_in(self.script, script)
        return {"index": i, "title": show(str(self.titles[i])), "author": show(str(self.authors[i]))}
