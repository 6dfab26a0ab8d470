"""Build tang.npz from the raw chinese-poetry JSON files.

    python -m train.prepare --source ../shared/data/chinese-poetry/tang --out data/tang.npz

Cleaning follows the classic preprocessing of the PyTorch book: editorial notes in （…）, {…},
《…》 and square brackets go, as do digits and '-', and '。。' collapses to '。'. Text is converted
to simplified characters with OpenCC unless `--script traditional`.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

from poetry_model.data import SEQ_LEN, save_npz
from poetry_model.vocab import EOP, PAD, START, Vocab, to_script

NOTE_PATTERNS = [re.compile(p) for p in (r"（[^（）]*）", r"\([^()]*\)", r"\{[^{}]*\}", r"《[^《》]*》", r"[\[\]［］]")]
DROPPED_CHARS = str.maketrans("", "", "0123456789-")


def clean_poem(paragraphs: list[str]) -> str:
    """The poem body with editorial notes, digits and dashes removed and doubled '。' collapsed."""
    text = "".join(p.strip() for p in paragraphs if isinstance(p, str))
    previous = None
    while text != previous:  # notes nest, e.g. （見《永樂大典》卷三（五函））: peel the innermost until none is left
        previous = text
        for pattern in NOTE_PATTERNS:
            text = pattern.sub("", text)
    text = re.sub(r"（[^）]*$", "", text)  # a note the source cut off before its closing bracket
    text = re.sub(r"\s+", "", text.translate(DROPPED_CHARS))
    return re.sub("。{2,}", "。", text)


def read_poems(source: Path) -> list[dict]:
    """All poems of the `poet.tang.*.json` files, in numeric file order."""
    files = sorted(source.glob("poet.tang.*.json"), key=lambda p: int(p.stem.rsplit(".", 1)[-1]))
    if not files:
        raise SystemExit(f"error: no poet.tang.*.json files in {source}")
    poems = []
    for f in files:
        poems.extend(json.loads(f.read_text(encoding="utf-8")))
    return poems


def build_vocab(texts: list[str], script: str) -> Vocab:
    """Tokens by descending frequency (ties by code point), `<EOP>` counted once per poem; then `<START>`, `</s>`.

    Frequency order lets an adaptive softmax put the common characters in its cheap head cluster.
    """
    counts = Counter(ch for t in texts for ch in t)
    counts[EOP] = len(texts)
    tokens = sorted(counts, key=lambda c: (-counts[c], c))
    return Vocab(tokens + [START, PAD], script)


def encode_rows(texts: list[str], vocab: Vocab, seq_len: int = SEQ_LEN) -> tuple[np.ndarray, int]:
    """Left-padded (N, seq_len) id rows, each <START> text <EOP> cut at the end; also how many were cut."""
    rows = np.full((len(texts), seq_len), vocab.pad_id, dtype=np.int32)
    truncated = 0
    for i, text in enumerate(texts):
        ids = [vocab.start_id] + [vocab.index[c] for c in text] + [vocab.eop_id]
        if len(ids) > seq_len:
            ids, truncated = ids[:seq_len], truncated + 1
        rows[i, seq_len - len(ids):] = ids
    return rows, truncated


def prepare(source: Path, out: Path, script: str = "simplified") -> dict:
    """Read, clean, convert, encode and save; returns the counts it printed."""
    raw = read_poems(source)
    kept_texts, titles, authors = [], [], []
    for poem in raw:
        text = clean_poem(poem.get("paragraphs") or [])
        if not text.strip("，。？！；：、"):
            continue
        kept_texts.append(text)
        titles.append(poem.get("title") or "")
        authors.append(poem.get("author") or "")
    if script == "simplified":
        # One OpenCC call per field over joined text is far faster than one call per poem.
        sep = "\n"
        kept_texts = to_script(sep.join(kept_texts), script).split(sep)
        titles = to_script(sep.join(titles), script).split(sep)
        authors = to_script(sep.join(authors), script).split(sep)
    vocab = build_vocab(kept_texts, script)
    rows, truncated = encode_rows(kept_texts, vocab)
    save_npz(out, rows, vocab, titles, authors)
    stats = {"poems_read": len(raw), "poems_kept": len(kept_texts), "poems_skipped": len(raw) - len(kept_texts),
             "vocab_size": len(vocab), "truncated": truncated,
             "truncated_share": round(truncated / max(1, len(kept_texts)), 4), "script": script, "out": str(out)}
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("../shared/data/chinese-poetry/tang"),
                        help="folder with poet.tang.*.json files")
    parser.add_argument("--out", type=Path, default=Path("data/tang.npz"))
    parser.add_argument("--script", choices=["simplified", "traditional"], default="simplified")
    args = parser.parse_args(argv)
    stats = prepare(args.source, args.out, args.script)
    print(f"read {stats['poems_read']} poems; kept {stats['poems_kept']}, skipped {stats['poems_skipped']} empty; "
          f"vocabulary {stats['vocab_size']} tokens; {stats['truncated']} poems "
          f"({stats['truncated_share']:.1%}) cut at {SEQ_LEN} tokens; script {stats['script']}; wrote {stats['out']}")


if __name__ == "__main__":
    main()
