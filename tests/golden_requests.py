"""Golden generation: fixed requests to the shipped model, their poems and reports recorded per CPU ISA.

    python tests/golden_requests.py record          # (re)record this machine's ISA into generation.json
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python tests/golden_requests.py record

BLAS kernels round differently per instruction set, so a poem is only reproducible on the ISA it
was recorded on: the data are keyed by `fingerprint()`, and an unrecorded ISA is skipped. Each
request's answer is stored as the SHA-256 of its poems' JSON (every field: text, scores, prosody
and copy reports, relaxations, settings) plus the best poem's text, so the file stays small.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GOLDEN_FILE = HERE / "golden" / "generation.json"
MODEL = REPO / "checkpoints" / "tang-lstm"

# name -> Poet.generate keyword arguments
REQUESTS: dict[str, dict] = {
    "free-default": dict(seed=1),
    "free-prompt": dict(prompt="明月", seed=3, num_candidates=3),
    "free-acrostic": dict(acrostic="春夏秋冬", seed=7),
    "free-acrostic-long": dict(acrostic="长安一片月", seed=11, num_candidates=2),
    "free-style": dict(style="大漠孤烟直，长河落日圆。", seed=5),
    "free-traditional": dict(prompt="風", seed=9, script="traditional"),
    "free-greedy": dict(prompt="白日", temperature=0, seed=2),
    "free-top-k-none": dict(top_k=None, top_p=1.0, seed=13, num_candidates=2),
    "free-repetition": dict(repetition_penalty=2.0, seed=17),
    "free-copies-allowed": dict(avoid_copies=False, seed=19, max_length=40),
    "free-short": dict(seed=23, max_length=16),
    "wujue": dict(form="五绝", seed=42, num_candidates=4),
    "wujue-prompt": dict(prompt="床前明月光，", form="五绝", seed=42),
    "wujue-acrostic": dict(acrostic="花好月圆", form="五绝", seed=8),
    "qijue-acrostic": dict(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5),
    "qijue-traditional": dict(form="七绝", seed=31, script="traditional"),
    "qijue-soft": dict(form="七绝", seed=37, rhyme_strength=0.5, tone_strength=0.3, num_candidates=3),
    "qijue-no-rhyme": dict(form="七绝", seed=41, rhyme=False),
    "qijue-no-tones": dict(form="七绝", seed=43, tones=False, temperature=1.2),
    "wulv": dict(form="五律", seed=3, num_candidates=2),
    "wulv-style": dict(form="五律", style="大漠孤烟直，长河落日圆。", seed=3),
    "wulv-traditional": dict(form="五律", seed=11, script="traditional"),
    "qilv": dict(form="七律", seed=2024),
    "qilv-acrostic": dict(acrostic="一二三四五六七八", form="七律", seed=47, num_candidates=2),
    "qilv-greedy": dict(form="七律", temperature=0, seed=0),
    "wuyan-acrostic": dict(acrostic="山水田园", form="五言", seed=53),
    "qiyan-acrostic": dict(acrostic="风花雪月江山如画", form="七言", seed=59),
    "alias-qijue": dict(form="qijue", seed=61, top_p=0.8, top_k=20),
    "traditional-input": dict(acrostic="萬里長風", form="七绝", seed=67),
    "many-candidates": dict(form="五绝", seed=71, num_candidates=8, temperature=1.0),
    "wulv-theme": dict(form="五律", theme="秋夜", seed=3, num_candidates=2),
    "qijue-theme-traditional": dict(form="七绝", theme="邊塞", seed=5),
    "qilv-locked": dict(form="七律", locked={1: "明月何时照我还"}, seed=3, num_candidates=2),
    "wujue-locked-last": dict(form="五绝", locked={3: "低头思故乡"}, seed=9),
}


def fingerprint() -> str:
    """The CPU instruction sets the numbers depend on: torch's kernels, oneDNN's and MKL's caps, torch version."""
    import torch

    env = ",".join(f"{k}={os.environ.get(k, '-')}" for k in ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA"))
    return f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()} {env}"


def answer(poems) -> dict:
    """A request's golden record: the digest of every poem's JSON, and the best text for a readable diff."""
    data = json.dumps([p.to_dict() for p in poems], ensure_ascii=False, sort_keys=True)
    return {"sha256": hashlib.sha256(data.encode()).hexdigest(), "best": poems[0].text if poems else ""}


def answers(poet) -> dict[str, dict]:
    return {name: answer(poet.generate(**kwargs)) for name, kwargs in REQUESTS.items()}


def load_golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text(encoding="utf-8")) if GOLDEN_FILE.is_file() else {}


def load_poet(corpus: Path):
    import torch

    from poetry_model import load

    torch.set_num_threads(1)
    return load(MODEL, device="cpu", corpus=corpus)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Record the golden generation answers for this machine's ISA.")
    p.add_argument("command", choices=["record", "check"])
    p.add_argument("--corpus", default=None, help="tang.npz (default: built from ../shared like the tests)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else None
        if corpus is None:
            from conftest import TANG_JSON

            from train.prepare import prepare

            corpus = Path(tmp) / "tang.npz"
            prepare(TANG_JSON, corpus)
        got = answers(load_poet(corpus))
    key, golden = fingerprint(), load_golden()
    if args.command == "check":
        bad = [n for n in REQUESTS if golden.get(key, {}).get(n) != got[n]]
        print(f"{key}: {len(REQUESTS) - len(bad)}/{len(REQUESTS)} identical" + (f"; differ: {bad}" if bad else ""))
        return 1 if bad else 0
    golden[key] = got
    GOLDEN_FILE.write_text(json.dumps(golden, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"recorded {len(got)} answers for {key}")
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(REPO), str(HERE)]
    sys.exit(main())
