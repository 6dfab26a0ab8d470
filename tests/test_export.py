"""Exporting a trained folder as the shipped checkpoint: half-size weights, copy guard, still loads strictly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poetry_model.corpus_index import read_corpus
from poetry_model.data import load_npz
from poetry_model.model import WEIGHTS_FILE, PoetryLSTM
from poetry_model.novelty import CORPUS_FILE, LINE_HASH_FILE
from train.export import export


def test_export_halves_the_weights_and_keeps_the_logits(tiny_model_dir, full_npz, tmp_path):
    out = export(tiny_model_dir, full_npz, tmp_path / "tang-lstm")
    original, exported = PoetryLSTM.from_pretrained(tiny_model_dir), PoetryLSTM.from_pretrained(out)
    assert (out / WEIGHTS_FILE).stat().st_size < 0.55 * (tiny_model_dir / WEIGHTS_FILE).stat().st_size
    x = torch.tensor([[original.config.start_id, 5, 17, 0, 40]])
    assert torch.allclose(original(x)[0], exported(x)[0], atol=5e-3)
    hashes = np.load(out / LINE_HASH_FILE, allow_pickle=False)
    assert hashes.dtype == np.uint64 and len(hashes) > 300_000 and np.all(hashes[1:] > hashes[:-1])
    assert (out / "README.md").is_file() and not list(tmp_path.glob("*.tmp"))
    texts, titles, authors, _ = read_corpus(out / CORPUS_FILE)  # the full copy report travels with the folder
    assert len(texts) == len(titles) == len(authors) == len(load_npz(full_npz).data)


def test_export_refuses_data_with_another_vocabulary(tiny_model_dir, small_npz, tmp_path):
    with pytest.raises(SystemExit, match="another vocabulary"):
        export(tiny_model_dir, small_npz, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_keeps_the_runs_summary_without_machine_paths(small_npz, tmp_path):
    from train.run_info import TRAINING_FILE, training_info
    from train.train import parse_args, train

    cfg, _ = parse_args(["--data", str(small_npz), "--out", str(tmp_path / "run"), "--embedding-dim", "32",
                         "--hidden-dim", "48", "--batch-size", "32", "--limit-poems", "600", "--epochs", "1",
                         "--max-steps", "3", "--device", "cpu", "--precision", "fp32"])
    train(cfg)
    out = export(tmp_path / "run" / "best", small_npz, tmp_path / "shipped")
    summary = (out / TRAINING_FILE).read_text(encoding="utf-8")
    assert str(tmp_path) not in summary
    info = training_info(str(out))
    assert info["recipe"] == "fast" and info["steps"] == 3 and info["epochs"] == 1 and info["train_seconds"] > 0
    assert info == training_info(str(tmp_path / "run" / "best"))  # the same summary the run folder gives
