"""Export a trained model folder as the shipped checkpoint: half-precision weights plus the copy guard.

    python -m train.export --model runs/mine/best --data data/tang.npz --out checkpoints/tang-lstm

Weights are stored as float16 (half the size; `from_pretrained` casts them back to float32, and
the logits move by about 1e-3), `corpus_lines.npy` holds the hashes of every corpus line so the copy
guard works where the corpus is absent, `corpus.npz` the corpus itself, compressed (about 4 MB), so
the copy report names the nearest corpus poem on any machine, `couplets.npz` the 对仗 table of the
train split's 律诗 middle couplets (poetry_model.couplets), `training.json` keeps the run's summary (recipe, compute
time, epochs) for the evaluation and the model card, and the card is kept. The new folder is written
beside the output and checked to load before it takes the output's place (`replace_dir`: at every
moment the output or its `.old` copy is a complete folder).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from poetry_model.corpus_index import write_corpus
from poetry_model.couplets import COUPLETS_FILE, CoupletTable
from poetry_model.data import load_npz, split_indices
from poetry_model.files import replace_dir, temporary_name
from poetry_model.model import WEIGHTS_FILE, PoetryLSTM
from poetry_model.novelty import write_line_hashes
from poetry_model.vocab import TITLE_END
from train.run_info import TRAINING_FILE, training_info


def write_couplets(dataset, folder: Path) -> Path:
    """The 对仗 table (`couplets.npz`, about 0.2 MB) learned from the train split's real 律诗 middle couplets."""
    train, _ = split_indices(len(dataset))
    path = folder / COUPLETS_FILE
    CoupletTable.learn([dataset.poem_text(i) for i in train]).save(path)
    return path


def export(model_dir: Path, data: Path, out: Path, dtype: torch.dtype = torch.float16) -> Path:
    """Copy `model_dir` to `out` with weights cast to `dtype` and corpus line hashes added."""
    model = PoetryLSTM.from_pretrained(model_dir)  # refuses a folder that does not load
    dataset = load_npz(data)
    extra = model.vocab.tokens[len(dataset.vocab):]
    if model.vocab.tokens[:len(dataset.vocab)] != dataset.vocab.tokens or any(t != TITLE_END for t in extra):
        raise SystemExit(f"error: {data} has another vocabulary than {model_dir}; export with the training data")
    tmp = temporary_name(out)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("*.tmp*"))
    state = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        state.pop("head.weight")  # stored once, as the embedding
    save_file(state, str(tmp / WEIGHTS_FILE))
    write_line_hashes(dataset, tmp)
    write_corpus(dataset, tmp)
    write_couplets(dataset, tmp)
    summary = training_info(str(model_dir))
    for key in ("data", "out"):  # machine paths of the run have no place in a shipped folder
        (summary.get("config") or {}).pop(key, None)
    if summary:
        (tmp / TRAINING_FILE).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    PoetryLSTM.from_pretrained(tmp)  # the new folder loads before it replaces the old one
    return replace_dir(tmp, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a save_pretrained folder, e.g. runs/NAME/best")
    parser.add_argument("--data", type=Path, default=Path("data/tang.npz"), help="the data the model was trained on")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/tang-lstm"))
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    args = parser.parse_args(argv)
    out = export(args.model, args.data, args.out, getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"wrote {out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
