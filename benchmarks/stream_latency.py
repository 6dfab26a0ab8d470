"""Streaming latency: time to the first line of a 七律 against time to the whole ranked poem, same run.

    python benchmarks/stream_latency.py [--model checkpoints/tang-lstm] [--runs 10]

For each seed, one 七律 request (every constraint on, the shipped model's copy index and corpus for
the report) is decoded twice, interleaved so that a busy machine slows both alike:
1. in process, `Poet.stream`: the clock runs from the call to the first "line" event, to the last
   line, and to the ranked poems (prosody and copy reports included);
2. through a `Batcher` (the server path), `submit(..., on_line=...)`: from `submit` to the first
   line and to the Future's poems.
The ratio first line / whole poem is what streaming buys: a reader sees the first line after that
fraction of the wait. The issue's target, the first line within 150 ms of a click, is printed as
met or not for this machine (the browser and the server's own round trip come on top:
benchmarks/browser_latency.py times the click in Chromium).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from poetry_model.generation import Batcher, load  # noqa: E402

REQUEST = dict(form="七律", num_candidates=1)
TARGET_FIRST_LINE_MS = 150.0


def in_process(poet, seed: int) -> tuple[float, float, float]:
    """Seconds to the first line, the last line and the poems of one streamed request."""
    start = time.perf_counter()
    first = last = None
    for event in poet.stream(seed=seed, **REQUEST):
        now = time.perf_counter() - start
        if event["event"] == "line":
            first = now if first is None else first
            last = now
    return first, last, time.perf_counter() - start


def through_batcher(server: Batcher, seed: int) -> tuple[float, float]:
    """Seconds to the first line and to the poems, from `submit`, on the server path."""
    seen: dict[str, float] = {}

    def listen(event: dict) -> None:
        seen.setdefault("first", time.perf_counter() - start)

    start = time.perf_counter()
    future = server.submit(seed=seed, on_line=listen, **REQUEST)
    future.result()
    return seen["first"], time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    ap.add_argument("--runs", type=int, default=10, help="seeds measured (each decoded both ways)")
    args = ap.parse_args()
    poet = load(args.model, device="cpu")
    poet.generate(seed=0, **REQUEST)  # build the lazy indexes (form masks, copy index) first, as a server does
    server = Batcher(poet)
    server.generate(seed=0, **REQUEST)
    rows = []
    for seed in range(1, args.runs + 1):
        rows.append((*in_process(poet, seed), *through_batcher(server, seed)))
    first, last, whole, b_first, b_whole = (statistics.median(col) * 1000 for col in zip(*rows))
    print(f"七律, 1 candidate, {args.runs} seeds, medians on {poet.device}:")
    print(f"  Poet.stream        first line {first:7.1f} ms   last line {last:7.1f} ms   poems {whole:7.1f} ms   "
          f"first/whole = {first / whole:.3f}")
    print(f"  Batcher on_line    first line {b_first:7.1f} ms                         poems {b_whole:7.1f} ms   "
          f"first/whole = {b_first / b_whole:.3f}")
    print(f"  first line within {TARGET_FIRST_LINE_MS:.0f} ms (library side): "
          f"{'met' if max(first, b_first) <= TARGET_FIRST_LINE_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
