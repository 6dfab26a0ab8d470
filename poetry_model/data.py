"""The tang.npz dataset: reading and checking it, the fixed train/validation split, and poem batches.

Layout (the classic one from the PyTorch book): `data` is an (N, 125) integer array, each row
`<START>` + characters + `<EOP>`, left-padded with `</s>`; `ix2word` and `word2ix` map ids and
characters. The project's own files store both maps as plain unicode/structured arrays, so they
load with `allow_pickle=False`; the book's file pickles them and needs an explicit opt-in.
Our files also carry `title` and `author` per poem and the `script`, used by the novelty index.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    """Write the dataset without any pickled object, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    word2ix = np.array(list(zip(vocab.tokens, range(len(vocab)))), dtype=WORD2IX_DTYPE)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, data=data.astype(np.int32), ix2word=np.array(vocab.tokens), word2ix=word2ix,
                        title=np.array(titles), author=np.array(authors), script=np.array(vocab.script))
    tmp.replace(path)


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

