"""The full copy report out of the box: the model folder's compact corpus, its cache, and a fresh clone."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poetry_model.corpus_index import CorpusIndex, read_corpus, write_corpus
from poetry_model.data import load_npz
from poetry_model.generation import load
from poetry_model.novelty import CORPUS_FILE

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "tang-lstm"
POEM = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("POETRY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_compact_corpus_indexes_like_the_dataset(small_npz, tmp_path, cache):
    dataset = load_npz(small_npz)
    path = write_corpus(dataset, tmp_path)
    texts, titles, authors, script = read_corpus(path)
    assert len(texts) == len(titles) == len(authors) == len(dataset.data) and script == dataset.vocab.script
    from_file, from_dataset = CorpusIndex.for_file(path), CorpusIndex.build(dataset)
    assert from_file.text == from_dataset.text and np.array_equal(from_file.sa, from_dataset.sa)
    poem = texts[7]
    assert from_file.nearest(poem) == from_dataset.nearest(poem) and from_file.nearest(poem)[0] == 7
    assert from_file.longest_span(poem) == from_dataset.longest_span(poem)
    assert from_file.poem_ref(7, script)["title"] == str(dataset.titles[7]).replace("\n", " ")


def test_the_built_index_is_cached_by_content_and_reused(small_npz, tmp_path, cache):
    path = write_corpus(load_npz(small_npz), tmp_path)
    first = CorpusIndex.for_file(path)
    cached = list(cache.glob("*.copyindex.npz"))
    assert len(cached) == 1 and first.source == str(path)
    again = CorpusIndex.for_file(path)
    assert again.source == str(cached[0]) and again.text == first.text  # loaded, not rebuilt


def test_a_damaged_corpus_file_costs_the_full_report_not_the_poem(tiny_model_dir, tmp_path, cache):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / CORPUS_FILE).write_bytes(b"PK\x03\x04 truncated")
    poet = load(model, device="cpu")
    with pytest.warns(UserWarning, match=f"{CORPUS_FILE}: not a readable corpus file"):
        poem = poet.generate(seed=1, max_length=20)[0]
    assert poem.text and poem.copy["checked"] != "full" and poem.copy["nearest"] is None


def test_the_shipped_folder_carries_its_corpus_within_20_mb():
    assert (SHIPPED / CORPUS_FILE).is_file()
    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) <= 20 * 10**6
    texts, titles, authors, _ = read_corpus(SHIPPED / CORPUS_FILE)
    assert POEM in texts and authors[texts.index(POEM)] == "孟浩然" and titles[texts.index(POEM)] == "春晓"


def test_a_fresh_clone_names_the_nearest_corpus_poem(tmp_path):
    """Only the package and the shipped folder, no data/ and an empty cache: the CLI still names the poem."""
    clone = tmp_path / "clone"
    for part in ("poetry_model", "checkpoints"):
        shutil.copytree(REPO / part, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
    assert not (clone / "data").exists()
    env = {**os.environ, "POETRY_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(clone)}
    result = subprocess.run([sys.executable, "-m", "poetry_model", "generate", "--form", "五绝", "--seed", "3",
                             "--json"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    copy = json.loads(result.stdout)[0]["copy"]
    assert copy["checked"] == "full" and copy["note"] == ""
    assert copy["nearest"]["title"] and copy["nearest"]["author"] and 0 < copy["similarity"] <= 1
