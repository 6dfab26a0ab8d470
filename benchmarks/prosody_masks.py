"""Cost of one decoding step's prosody masks, against numpy references measured in the same run.

    python benchmarks/prosody_masks.py [--vocab-size 8000] [--poems 300]

A step is `step_masks()` plus `advance()` on a FormState. The references are one numpy `&` of two
vocabulary-size boolean arrays and one `np.flatnonzero` on such an array; ratios make the figures
comparable across machines. The masks are precomputed arrays, so a step should cost a few
microseconds, a handful of `&`s at most.
"""
from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poetry_model import prosody  # noqa: E402


def benchmark_vocab(size: int) -> list[str]:
    """Special tokens, punctuation and the first characters of the lexicon's simplified index."""
    lex = prosody.lexicon()
    chars = [c for c in lex.characters("simplified") if len(c) == 1 and c != prosody.LOST_CHAR]
    specials = ["</s>", "<START>", "<EOP>", "，", "。", "？", "！", "；", "："]
    return specials + chars[: size - len(specials)]


def draw_poems(fm: prosody.FormMasks, n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """Token sequences drawn under the masks (done outside the timed loop)."""
    rng = np.random.default_rng(seed)
    poems = []
    for k in range(n):
        form = list(prosody.FORMS)[k % len(prosody.FORMS)]
        state, ids = fm.start(form), []
        while not state.done:
            allowed = state.step_masks().structure.copy()
            for mask in state.step_masks()[1:]:
                if mask is not None:
                    allowed &= mask
            ids.append(int(rng.choice(np.flatnonzero(allowed))))
            state.advance(ids[-1])
        poems.append((form, ids))
    return poems


def time_steps(fm: prosody.FormMasks, poems: list[tuple[str, list[int]]], repeat: int = 5) -> float:
    """Best-of-`repeat` seconds per step (step_masks + advance), replaying the drawn sequences."""
    steps = sum(len(ids) for _, ids in poems)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for form, ids in poems:
            state = fm.start(form)
            for token in ids:
                state.step_masks()
                state.advance(token)
        best = min(best, time.perf_counter() - start)
    return best / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--poems", type=int, default=300)
    args = parser.parse_args()
    vocab = benchmark_vocab(args.vocab_size)
    start = time.perf_counter()
    fm = prosody.FormMasks(vocab)
    build_ms = (time.perf_counter() - start) * 1e3
    poems = draw_poems(fm, args.poems)
    step = time_steps(fm, poems)
    a, b = np.random.default_rng(1).random((2, len(vocab))) < 0.5
    n = 20000
    and_s = min(timeit.repeat(lambda: a & b, number=n, repeat=5)) / n
    nz_s = min(timeit.repeat(lambda: np.flatnonzero(a), number=n, repeat=5)) / n
    print(f"vocabulary: {len(vocab)} tokens; FormMasks built once in {build_ms:.0f} ms")
    print(f"mask step (step_masks + advance): {step * 1e6:.2f} µs over {sum(len(i) for _, i in poems)} steps")
    print(f"reference numpy a & b:            {and_s * 1e6:.2f} µs  -> step = {step / and_s:.1f} x")
    print(f"reference np.flatnonzero(a):      {nz_s * 1e6:.2f} µs  -> step = {step / nz_s:.1f} x")


if __name__ == "__main__":
    main()
