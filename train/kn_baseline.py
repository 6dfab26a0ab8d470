"""Score the Kneser-Ney character n-gram baseline on the fixed validation split.

    python -m train.kn_baseline --data data/tang.npz            # 5-gram, discount 0.75: nats/char
"""
from __future__ import annotations

import argparse
import json

from train.kneser_ney import DISCOUNT, ORDER, fit_and_score


def main(argv: list[str] | None = None) -> None:
    from poetry_model.data import dedup_split, load_npz, split_indices

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/tang.npz")
    p.add_argument("--order", type=int, default=ORDER)
    p.add_argument("--discount", type=float, default=DISCOUNT)
    p.add_argument("--limit-poems", type=int, default=0, help="use the first N poems only (as the trainer does)")
    p.add_argument("--split", default="dedup", choices=["dedup", "random"], help="validation split (as the trainer's)")
    args = p.parse_args(argv)
    ds = load_npz(args.data)
    if args.limit_poems:
        ds.data = ds.data[: args.limit_poems]
    train_idx, val_idx = dedup_split(ds)[:2] if args.split == "dedup" else split_indices(len(ds))
    print(json.dumps(fit_and_score(ds, train_idx, val_idx, args.order, args.discount)))


if __name__ == "__main__":
    main()
