"""Copy detection: which generated lines exist in the corpus, and how much a poem shares with it.

Two indexes, so that the guard works everywhere:

* `LineIndex` (here): sorted 64-bit BLAKE2b hashes of every corpus line (lines split on
  ，。？！；：). It is derived data, a few MB, written next to the weights as `corpus_lines.npy` by
  `write_line_hashes(dataset, model_dir)`; `avoid_copies` needs only this file.
* `CorpusIndex` (`corpus_index.py`): the corpus text with a suffix array, titles and authors, for
  the longest span a poem shares with the corpus and the nearest corpus poem. Without it the
  copy report says that only the line check ran.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import PoemDataset
from .files import atomic_path
from .text import split_lines
from .vocab import to_script

if TYPE_CHECKING:
    from .corpus_index import CorpusIndex

LINE_HASH_FILE = "corpus_lines.npy"
CORPUS_FILE = "corpus.npz"   # the compact corpus a model folder carries for the full copy report
BUILD_HINT = ("use a model folder exported with `python -m train.export` (it carries corpus.npz) "
              "or pass a tang.npz built by `python -m train.prepare` as the corpus")


def line_hash(line: str) -> int:
    """A 64-bit hash of one line that is the same on every run and machine (unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(line.encode("utf-8"), digest_size=8).digest(), "little")


def hash_lines(texts) -> np.ndarray:
    """Sorted unique uint64 hashes of every line of the given poem texts."""
    hashes = {line_hash(line) for text in texts for line in split_lines(text)}
    return np.array(sorted(hashes), dtype=np.uint64)


class LineIndex:
    """Membership test for corpus lines by hash; a binary search, so it loads with one `np.load`."""

    def __init__(self, hashes: np.ndarray, source: str = ""):
        self.hashes = np.asarray(hashes, dtype=np.uint64)
        self.source = source

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, line: str) -> bool:
        h = np.uint64(line_hash(line))
        i = int(np.searchsorted(self.hashes, h))
        return i < len(self.hashes) and self.hashes[i] == h

    @classmethod
    def load(cls, path: str | Path) -> "LineIndex":
        """Read a `corpus_lines.npy` file (sorted uint64, no pickle)."""
        hashes = np.load(path, allow_pickle=False)
        if hashes.dtype != np.uint64 or hashes.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D uint64 array of line hashes, got {hashes.dtype} {hashes.shape}")
        return cls(hashes, str(path))


def dataset_texts(dataset: PoemDataset) -> list[str]:
    """Every poem of the dataset as text (special tokens removed)."""
    return [dataset.poem_text(i) for i in range(len(dataset))]


def write_line_hashes(dataset: PoemDataset, model_dir: str | Path) -> Path:
    """Write `corpus_lines.npy` (hashes of every corpus line) into a model folder; returns its path."""
    path = Path(model_dir) / LINE_HASH_FILE
    with atomic_path(path) as tmp:
        np.save(tmp, hash_lines(dataset_texts(dataset)), allow_pickle=False)
    return path


def _model_file(model: str | Path, name: str) -> Path | None:
    """A model folder's or Hub repo's optional file, or None when it has none."""
    local = Path(model) / name
    if local.is_file():
        return local
    if Path(model).exists():
        return None
    try:  # a Hub repo id: the file is optional there too
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=str(model), filename=name))
    except Exception:  # noqa: BLE001 - offline, missing file or not a repo: the caller reports "no index"
        return None


def find_line_index(model: str | Path) -> LineIndex | None:
    """The line index shipped with a model folder or Hub repo, or None when it has none."""
    path = _model_file(model, LINE_HASH_FILE)
    return LineIndex.load(path) if path else None


def find_corpus(model: str | Path) -> Path | None:
    """The `corpus.npz` shipped with a model folder or Hub repo, or None when it has none."""
    return _model_file(model, CORPUS_FILE)


def find_couplets(model: str | Path) -> Path | None:
    """The 对仗 table (`couplets.npz`) shipped with a model folder or Hub repo, or None when it has none."""
    from .couplets import COUPLETS_FILE

    return _model_file(model, COUPLETS_FILE)


# ---------------------------------------------------------------------------------------------
# Report


def shown_in(script: str, target: str):
    """A converter from one script to another (identity when they agree)."""
    return (lambda s: s) if script == target else (lambda s: to_script(s, target))


def copy_report(text: str, lines: LineIndex | None, corpus: CorpusIndex | None, text_script: str,
                script: str) -> dict:
    """What a poem (in `text_script`) shares with the corpus; texts and names shown in `script`.

    Keys: checked ("full", "lines" or "none"), copied_lines, longest_span, longest_span_chars,
    span_poem, nearest, similarity, note."""
    show = shown_in(text_script, script)
    copied = [line for line in split_lines(text) if lines is not None and line in lines]
    report = {"checked": "full" if corpus else "lines" if lines is not None else "none",
              "copied_lines": [show(line) for line in copied], "longest_span": None, "longest_span_chars": None,
              "span_poem": None, "nearest": None, "similarity": None, "note": ""}
    if corpus is None:
        ran = "only the corpus-line check ran" if lines is not None else "no copy check ran"
        report["note"] = (f"{ran}; for the longest shared span and the nearest corpus poem, {BUILD_HINT}")
        return report
    query = shown_in(text_script, corpus.script)(text)
    span, span_poem = corpus.longest_span(query)
    nearest, similarity = corpus.nearest(query)
    report.update(longest_span=shown_in(corpus.script, script)(span), longest_span_chars=len("".join(split_lines(span))),
                  span_poem=corpus.poem_ref(span_poem, script), nearest=corpus.poem_ref(nearest, script),
                  similarity=similarity)
    return report
