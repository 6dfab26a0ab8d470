"""The tang.npz dataset: reading and checking it, the fixed train/validation split, and poem batches.

Layout (the classic one from the PyTorch book): `data` is an (N, 125) integer array, each row
`<START>` + characters + `<EOP>`, left-padded with `</s>`; `ix2word` and `word2ix` map ids and
characters. The project's own files store both maps as plain unicode/structured arrays, so they
load with `allow_pickle=False`; the book's file pickles them and needs an explicit opt-in.
Our files also carry `title` and `author` per poem and the `script`, used by the novelty index.
"""
from __future__ import annotations

import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_path
from .vocab import Vocab, VocabError

SEQ_LEN = 125
SPLIT_SEED = 20240611  # fixed forever: train and evaluation must see the same validation poems
VAL_FRACTION = 0.1
WORD2IX_DTYPE = np.dtype([("word", "<U8"), ("ix", "<i4")])


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or not in the tang.npz layout."""


@dataclass
class PoemDataset:
    """Token rows plus vocabulary (and, for the project's own files, titles and authors)."""

    data: np.ndarray           # (N, SEQ_LEN) int32, left-padded
    vocab: Vocab
    titles: np.ndarray | None = None
    authors: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.data)

    def poem_ids(self, i: int) -> np.ndarray:
        """Token ids of poem i without padding (starts with <START>, normally ends with <EOP>)."""
        row = self.data[i]
        return row[row != self.vocab.pad_id]

    def poem_text(self, i: int) -> str:
        """Characters of poem i, special tokens removed."""
        return self.vocab.decode(self.poem_ids(i))


def save_npz(path: str | Path, data: np.ndarray, vocab: Vocab, titles: list[str], authors: list[str]) -> None:
    """Write the dataset without any pickled object, atomically (poetry_model.files.atomic_path)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    word2ix = np.array(list(zip(vocab.tokens, range(len(vocab)))), dtype=WORD2IX_DTYPE)
    # An open file, not a name: np.savez would append `.npz` to a name without it.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, data=data.astype(np.int32), ix2word=np.array(vocab.tokens), word2ix=word2ix,
                            title=np.array(titles), author=np.array(authors), script=np.array(vocab.script))


def load_npz(path: str | Path, trust_pickle: bool = False) -> PoemDataset:
    """Read and check a tang.npz file; pickled vocabularies (the book's file) need `trust_pickle=True`."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found (build it with `python -m train.prepare`)")
    try:
        with np.load(path, allow_pickle=trust_pickle) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DatasetError(f"{path}: holds pickled objects; loading them can run arbitrary code, so it is "
                               "refused unless you trust the file and pass trust_pickle=True (--trust-pickle)") from None
        raise DatasetError(f"{path}: not a readable .npz file ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz file ({e})") from None
    missing = {"data", "ix2word"} - set(arrays)
    if missing:
        raise DatasetError(f"{path}: missing array(s) {sorted(missing)}; expected data, ix2word, word2ix")
    vocab = _vocab_from_arrays(path, arrays)
    data = _checked_data(path, arrays["data"], len(vocab))
    titles, authors = arrays.get("title"), arrays.get("author")
    if titles is not None and (len(titles) != len(data) or authors is None or len(authors) != len(data)):
        raise DatasetError(f"{path}: title/author arrays do not match the {len(data)} poems")
    return PoemDataset(data, vocab, titles, authors, path)


def _vocab_from_arrays(path: Path, arrays: dict) -> Vocab:
    ix2word = arrays["ix2word"]
    if ix2word.dtype == object:
        # The book's file stores dicts pickled inside 0-d object arrays.
        ix2word = ix2word.item() if ix2word.shape == () else ix2word
        if isinstance(ix2word, dict):
            try:
                ix2word = [ix2word[i] for i in range(len(ix2word))]
            except KeyError:
                raise DatasetError(f"{path}: ix2word ids are not 0..{len(ix2word) - 1}") from None
    tokens = [str(t) for t in ix2word]
    script = str(arrays["script"]) if "script" in arrays else "simplified"
    try:
        return Vocab(tokens, script)
    except VocabError as e:
        raise DatasetError(f"{path}: {e}") from None


def _checked_data(path: Path, data: np.ndarray, vocab_size: int) -> np.ndarray:
    if data.ndim != 2 or data.shape[0] == 0 or data.shape[1] < 2:
        raise DatasetError(f"{path}: 'data' must be a non-empty 2-D (poems, steps) array, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        raise DatasetError(f"{path}: 'data' must hold integer token ids, got dtype {data.dtype}")
    lo, hi = int(data.min()), int(data.max())
    if lo < 0 or hi >= vocab_size:
        raise DatasetError(f"{path}: token ids span {lo}..{hi} but the vocabulary has {vocab_size} entries")
    return data.astype(np.int64, copy=False)


def split_indices(n: int, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """The fixed 90/10 split: (train, validation) poem indices, identical on every run and machine."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def strip_padding(data: np.ndarray, pad_id: int) -> list[np.ndarray]:
    """Each row without its padding, as a list of 1-D id arrays."""
    return [row[row != pad_id] for row in data]



# --- the de-duplicated split ---------------------------------------------------------------
# The corpus holds the same poem more than once: exact copies, and variant copies filed under two
# authors or two titles that differ in a character or a line. With the plain random split about 7%
# of validation poems had a copy in training, so validation rewarded memorising. The de-duplicated
# split refines the fixed split above rather than drawing a new one: a validation poem stays one of
# the original 10%, so the models already trained on the original training 90% (the shipped one
# included) have never seen a validation poem and can be measured, and continued, fairly.

LINE_BREAKS = re.compile(r"[，。？！；：、,.?!;:]+")
NEAR_COPY_SHARE = 0.5  # two poems are copies when more than half the lines of the shorter one are shared


def poem_lines(text: str) -> frozenset[str]:
    """A poem's distinct lines (clauses between punctuation), the unit copies are detected by."""
    return frozenset(line for line in LINE_BREAKS.split(text) if line)


def near_copies(line_sets: list[frozenset[str]]) -> list[set[int]]:
    """For each poem, the other poems it is a copy of: identical, or sharing more than half the
    distinct lines of the shorter poem. Symmetric; found through an inverted index of lines."""
    postings: dict[str, list[int]] = {}
    for i, lines in enumerate(line_sets):
        for line in lines:
            postings.setdefault(line, []).append(i)
    result: list[set[int]] = []
    for i, lines in enumerate(line_sets):
        shared: dict[int, int] = {}
        for line in lines:
            for j in postings[line]:
                if j != i:
                    shared[j] = shared.get(j, 0) + 1
        n = len(lines)
        result.append({j for j, c in shared.items() if c > NEAR_COPY_SHARE * min(n, len(line_sets[j]))})
    return result


def dedup_split(ds: PoemDataset, seed: int = SPLIT_SEED, val_fraction: float = VAL_FRACTION
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """The de-duplicated (train, validation) split and its counts.

    Validation: poems of the fixed validation split that are a copy of no poem of the fixed training
    split, and of no earlier validation poem. Training: poems of the fixed training split, each kept
    unless it is a copy of an earlier kept training poem. So no poem is kept twice and no validation
    poem is a copy of a training poem; the result depends only on the data, never on the machine.
    """
    old_train, old_val = split_indices(len(ds), seed, val_fraction)
    line_sets = [poem_lines(ds.poem_text(i)) for i in range(len(ds))]
    copies = near_copies(line_sets)
    in_val = np.zeros(len(ds), dtype=bool)
    in_val[old_val] = True
    val, train, kept = [], [], np.zeros(len(ds), dtype=bool)
    val_copies_train = 0
    for i in old_val:
        if any(not in_val[j] for j in copies[i]):
            val_copies_train += 1
        elif not any(kept[j] for j in copies[i]):
            kept[i] = True
            val.append(i)
    for i in old_train:
        if not any(kept[j] and not in_val[j] for j in copies[i]):
            kept[i] = True
            train.append(i)
    stats = {"poems": len(ds), "train": len(train), "validation": len(val),
             "train_copies_dropped": len(old_train) - len(train),
             "validation_copies_of_train_dropped": val_copies_train,
             "validation_copies_within_dropped": len(old_val) - len(val) - val_copies_train,
             "near_copy_share": NEAR_COPY_SHARE}
    return np.array(train, dtype=np.int64), np.array(val, dtype=np.int64), stats


# --- titles --------------------------------------------------------------------------------

MAX_TITLE = 16  # title characters kept; longer titles (long dedications) are cut


def title_ids(vocab: Vocab, title: str) -> list[int]:
    """Ids of a title's Han characters that the vocabulary knows, at most MAX_TITLE of them.

    Spaces, digits, punctuation and editorial marks are dropped ("帝京篇十首 一" -> 帝京篇十首一), so
    a title is a plain run of characters, the same at training time and when a user types one."""
    ids = []
    for ch in vocab.normalize(str(title)):
        if ch in vocab.index and unicodedata.category(ch) == "Lo":
            ids.append(vocab.index[ch])
    return ids[:MAX_TITLE]


def title_context(vocab: Vocab, title: str) -> list[int]:
    """What a title-taking model reads before the poem: <START> title <TITLE_END> (just <START> untitled)."""
    ids = title_ids(vocab, title) if vocab.title_end_id is not None else []
    return [vocab.start_id] + (ids + [vocab.title_end_id] if ids else [])
