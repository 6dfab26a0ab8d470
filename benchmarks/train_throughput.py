"""Training throughput: the classic padded step against this trainer, same data and model size, one run.

    python benchmarks/train_throughput.py [--data data/tang.npz] [--steps 20] [--budget 180] [--quick]

Both recipes train the classic size (embedding 128, hidden 256, 2 LSTM layers, batch 128) on the
training split of the same tang.npz, with Adam at lr 1e-3.

(a) classic: the PyTorch book's chapter-9 step, reimplemented here and self-contained: a seq-first
    model (embedding -> LSTM(128, 256, 2) -> Linear(256, V)), random batches of the left-padded
    125-wide rows, input rows[:, :-1], targets rows[:, 1:], `nn.CrossEntropyLoss` over every position,
    padding included, in fp32, then `loss.item()` as the book logs it.
(b) ours: the trainer's own step (`train.train`: `Batches` length-bucketed and right-padded,
    `LossModel` with the loss on real tokens only, the precision `choose_bf16` picks for the
    `--precision` option, gradient clipping as configured), here with an adaptive softmax
    (`--softmax-cutoffs`; vocabulary ids are frequency-ordered) and bf16 autocast, the settings
    that measured fastest without costing validation loss at equal time. On the 2-core CPU it was
    chosen on (1 thread, interleaved; validation after equal steps, the same batches):
        ours with                     useful tokens/s   val @150 steps   val @400 steps
        full softmax, fp32 | bf16     ~2.6k | ~5.4k     6.629 (bf16)
        cutoffs 2000,5000, bf16       ~7-12k            6.359
        cutoffs 1000,4000, fp32 | bf16  ~5.4k | ~9-12k  6.334            5.992
        cutoffs 500,3000, bf16        ~10-12k           6.348            5.985
    bf16 changes only the LSTM (the adaptive head runs in fp32) and nearly doubles throughput; the
    adaptive softmax is 2-4x faster than the full one and no worse per step this early in training.

Useful tokens are the targets a language model must predict: characters, punctuation and <EOP>.
Padding never counts, and neither does <START> (in the classic layout the position before it is
padding, so it becomes a target there; ours only ever feeds it as an input): both recipes count
the same tokens per poem. Throughput is a warm-up, then `--steps` steps of each recipe in
`--rounds` interleaved rounds (so that a busy machine slows both alike), timed from batch
preparation to the optimizer step. GFLOP/s count matrix-multiply FLOPs analytically, x3 for the
forward and backward passes: LSTM input and recurrent GEMMs over every position the LSTM runs
(124 x 128 for classic; 128 x its batch's width - 1 for ours), and the output layer over the positions it
really scores (all of them for classic; real tokens for ours, and for an adaptive softmax the
head plus the tail clusters the targets fall in). Peaks are the best `torch.matmul` of two
2048x2048 matrices in fp32 and bf16, measured in every round of the same run.

Then each recipe trains through the real trainer, `train(TrainConfig(recipe=..., time_budget=...))`,
for `--budget` seconds of training compute (evaluation and checkpoints are not counted), from the
same seed, into temporary folders; the final weights of both are evaluated in fp32 on the fixed
validation split (nats per real target token). The classic run uses recipe `classic`
(padded, unmasked, fp32, no clipping: the book does not clip).

The run uses `--threads` CPU threads for everything (default 1: on a shared machine a waiting
OpenMP thread stalls every op, which slows both recipes several-fold; use 0 for torch's default).
The last line is `speedup: X.XXx`, useful tokens per second of ours over classic.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from classic_book import ClassicPoetryModel  # noqa: E402

from poetry_model.data import split_indices  # noqa: E402
from poetry_model.generation import pick_device  # noqa: E402
from poetry_model.model import PoetryLSTM  # noqa: E402
from train.batches import IGNORE, Batches, TrainConfig, evaluate  # noqa: E402
from train.precision import PRECISIONS, bf16_unavailable  # noqa: E402
from train.train import LossModel, build_model, choose_bf16, load_dataset, lr_at, train  # noqa: E402

EMBEDDING, HIDDEN, LAYERS, BATCH, LR = 128, 256, 2, 128, 1e-3
DEFAULT_CUTOFFS = "500,3000"
DEFAULT_PRECISION = "auto"  # bf16 where the CPU runs it and it is faster, else fp32


# --- (a) the classic step, self-contained ----------------------------------------------------

class Classic:
    """The book's training step on random batches of the padded 125-wide rows."""

    name = "classic"

    def __init__(self, rows: np.ndarray, vocab_size: int, pad_id: int, start_id: int, device: torch.device,
                 seed: int):
        self.rows, self.pad_id, self.start_id, self.device = rows, pad_id, start_id, device
        torch.manual_seed(seed)
        self.model = ClassicPoetryModel(vocab_size, EMBEDDING, HIDDEN).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.criterion = nn.CrossEntropyLoss()
        order = np.random.Generator(np.random.PCG64(seed)).permutation(len(rows))
        self.batches = [order[i:i + BATCH] for i in range(0, len(rows) - BATCH + 1, BATCH)]
        self.next = 0

    def step(self) -> tuple[torch.Tensor, None]:
        """One optimizer step; returns the targets (for counting) once the step is done."""
        data_ = torch.from_numpy(self.rows[self.batches[self.next % len(self.batches)]])
        self.next += 1
        data_ = data_.long().transpose(1, 0).contiguous().to(self.device)
        self.optimizer.zero_grad()
        input_, target = data_[:-1, :], data_[1:, :]
        output, _ = self.model(input_)
        loss = self.criterion(output, target.view(-1))
        loss.backward()
        self.optimizer.step()
        loss.item()  # the book logs every step's loss (and on a GPU this waits for the step)
        return target, None

    def useful(self, target: torch.Tensor, _) -> int:
        return int(((target != self.pad_id) & (target != self.start_id)).sum())

    def flops(self, target: torch.Tensor, _) -> float:
        positions = target.numel()  # 124 x 128: the LSTM and the head run on every one
        return 3.0 * positions * (lstm_flops_per_position() + 2.0 * HIDDEN * self.model.linear1.out_features)


# --- (b) this trainer's step -----------------------------------------------------------------

class Ours:
    """The trainer's step (run_epoch's loop body) on its own length-bucketed batches."""

    name = "ours"

    def __init__(self, cfg: TrainConfig, ds, train_idx: np.ndarray, device: torch.device):
        self.cfg, self.device = cfg, device
        self.batches = Batches(ds, train_idx, cfg, 0, 1)
        torch.manual_seed(cfg.seed)
        self.net = build_model(cfg, ds.vocab).to(device)
        self.bf16 = choose_bf16(cfg, self.net, self.batches, device)
        self.step_model = LossModel(self.net, self.bf16, classic=False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.order = self.batches.order(0)
        self.next = 0

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = (t.to(self.device) for t in self.batches.tensors(self.order[self.next % len(self.order)],
                                                                           classic=False))
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, self.next, len(self.order) * self.cfg.epochs)
        self.next += 1
        loss, batch_nll, n = self.step_model(inputs, targets)  # float(): waits for the step on a GPU
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip)
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return inputs, targets

    def useful(self, inputs: torch.Tensor, targets: torch.Tensor) -> int:
        return int((targets != IGNORE).sum())

    def flops(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        real = targets[targets != IGNORE]
        return 3.0 * (inputs.numel() * lstm_flops_per_position() + head_flops(self.net.head, real))

    def settings(self) -> str:
        cfg = self.cfg
        head = (f"adaptive softmax cutoffs {cfg.softmax_cutoffs} (div 4; the head runs in fp32)"
                if cfg.softmax_cutoffs else "full softmax")
        return (f"length-bucketed right-padded batches, loss on real tokens only, {head}, "
                f"{'bf16 autocast' if self.bf16 else 'fp32'} (--precision {cfg.precision}), "
                f"clip {cfg.clip:g}, Adam lr {cfg.lr:g}")


def lstm_flops_per_position() -> float:
    """Forward matmul FLOPs of the 2-layer LSTM for one position: input and recurrent GEMMs of each layer."""
    return sum(2.0 * 4 * HIDDEN * ((EMBEDDING if layer == 0 else HIDDEN) + HIDDEN) for layer in range(LAYERS))


def head_flops(head: nn.Module, targets: torch.Tensor) -> float:
    """Forward matmul FLOPs of the output layer for these targets (one row each)."""
    n = targets.numel()
    if isinstance(head, nn.Linear):
        return 2.0 * n * head.in_features * head.out_features
    flops = 2.0 * n * head.in_features * head.head.out_features  # shortlist + one logit per cluster
    for i, tail in enumerate(head.tail):  # a cluster's projections run only for the rows that land in it
        hit = int(((targets >= head.cutoffs[i]) & (targets < head.cutoffs[i + 1])).sum())
        flops += 2.0 * hit * (tail[0].in_features * tail[0].out_features + tail[1].in_features * tail[1].out_features)
    return flops


# --- measuring -------------------------------------------------------------------------------

@dataclass
class Tally:
    seconds: float = 0.0
    useful: int = 0
    flops: float = 0.0
    steps: int = 0
    step_times: list = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.useful / self.seconds

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 3) -> float:
    """Best GFLOP/s of an n x n matmul in this dtype (one untimed call first)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best / 1e9


def measure(recipes: list, steps: int, rounds: int, warmup: int, device: torch.device) -> tuple[dict, dict]:
    """Interleaved rounds of every recipe (order alternating), with the matmul peaks taken in each round."""
    for recipe in recipes:
        for _ in range(warmup):
            recipe.step()
    tallies = {r.name: Tally() for r in recipes}
    peaks = {"fp32": 0.0, "bf16": 0.0}
    bf16_runs = bf16_unavailable(device) is None  # a bf16 matmul may run where the bf16 LSTM does not; skip both
    per_round = [steps // rounds + (1 if i < steps % rounds else 0) for i in range(rounds)]
    for rnd, k in enumerate(per_round):
        peaks["fp32"] = max(peaks["fp32"], matmul_peak(torch.float32, device))
        if bf16_runs:
            peaks["bf16"] = max(peaks["bf16"], matmul_peak(torch.bfloat16, device))
        for recipe in (recipes if rnd % 2 == 0 else recipes[::-1]):
            tally = tallies[recipe.name]
            for _ in range(k):
                sync(device)
                t = time.perf_counter()
                out = recipe.step()
                dt = time.perf_counter() - t
                tally.seconds += dt
                tally.step_times.append(dt)
                tally.steps += 1
                tally.useful += recipe.useful(*out)
                tally.flops += recipe.flops(*out)
        print(f"  round {rnd + 1}/{rounds}: " + "  ".join(
            f"{name} {t.tokens_per_s:,.0f} tok/s" for name, t in tallies.items()), flush=True)
    return tallies, peaks


def train_for_budget(base: TrainConfig, recipe: str, out: Path, val_b: Batches, device: torch.device) -> dict:
    """Train one recipe through the real trainer for the time budget; fp32 validation loss of the final weights."""
    overrides = {"recipe": recipe}
    if recipe == "classic":  # the book: full softmax, fp32, no clipping
        overrides.update(softmax_cutoffs="", precision="fp32", clip=0.0)
    cfg = TrainConfig(**{**base.__dict__, **overrides, "out": str(out)})
    log = out.with_suffix(".log")
    start = time.perf_counter()
    try:
        with open(log, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            summary = train(cfg)
    except BaseException:
        sys.stderr.write(log.read_text(encoding="utf-8")[-4000:])
        raise
    wall = time.perf_counter() - start
    net = PoetryLSTM.from_pretrained(out / "last", map_location=str(device))
    val = evaluate(net, val_b, device, bf16=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return {"val": val, "steps": summary["steps"], "train_s": summary["train_seconds"], "bf16": summary["bf16"],
            "trainer_val": rows[-1]["val_loss"], "wall_s": wall, "log": log}


# --- the run ---------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "tang.npz", help="tang.npz (train.prepare)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps of each recipe")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds the steps are split into")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each recipe first")
    parser.add_argument("--budget", type=float, default=180.0,
                        help="seconds of training for each recipe in the equal-time comparison; 0 skips it")
    parser.add_argument("--softmax-cutoffs", default=DEFAULT_CUTOFFS, help="ours: adaptive softmax cutoffs, '' = full")
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS,
                        help="ours: the trainer's --precision")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both; 0 = torch's default")
    parser.add_argument("--device", default="", help="cpu, cuda, ... (default: as the trainer picks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 steps, 1 warm-up, 20 s budget")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup, args.budget = 4, 2, 1, min(args.budget, 20.0)
    args.rounds = max(1, min(args.rounds, args.steps))
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device or None)
    base = TrainConfig(data=str(args.data), out="", recipe="fast", batch_size=BATCH, lr=LR, embedding_dim=EMBEDDING,
                       hidden_dim=HIDDEN, num_layers=LAYERS, softmax_cutoffs=args.softmax_cutoffs,
                       precision=args.precision, seed=args.seed, epochs=1000, checkpoint_every=0)
    ds = load_dataset(base)
    train_idx, val_idx = split_indices(len(ds))
    vocab = ds.vocab
    classic = Classic(ds.data[train_idx], len(vocab), vocab.pad_id, vocab.start_id, device, args.seed)
    ours = Ours(base, ds, train_idx, device)
    print(f"data: {args.data.name}, {len(train_idx)} training poems, vocabulary {len(vocab)}; model: embedding "
          f"{EMBEDDING}, hidden {HIDDEN}, {LAYERS} layers, batch {BATCH}; device {device}, "
          f"{torch.get_num_threads()} thread(s); torch {torch.__version__}")
    print(f"(a) classic: book step, padded 125-wide rows, unmasked cross-entropy over all 124 x {BATCH} positions, "
          f"fp32, Adam lr {LR:g}")
    print(f"(b) ours:    {ours.settings()}")
    print(f"throughput: {args.warmup} warm-up + {args.steps} steps each in {args.rounds} interleaved rounds", flush=True)

    tallies, peaks = measure([classic, ours], args.steps, args.rounds, args.warmup, device)
    a, b = tallies["classic"], tallies["ours"]
    ratio = b.tokens_per_s / a.tokens_per_s
    ours_peak = "bf16" if ours.bf16 else "fp32"
    bf16_peak = f"{peaks['bf16']:,.0f} GFLOP/s" if peaks["bf16"] else "not measured (no bf16 on this CPU)"
    print(f"precision: classic fp32, ours {ours_peak} (--precision {args.precision}; CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()})")
    print(f"matmul peak (2048^2, best of the run): fp32 {peaks['fp32']:,.0f} GFLOP/s, bf16 {bf16_peak}")
    for name, t, peak in (("classic", a, "fp32"), ("ours", b, ours_peak)):
        other = f" ({100 * t.gflops / peaks['fp32']:.0f}% of fp32)" if peak == "bf16" else ""
        print(f"{name:<8} {t.tokens_per_s:>9,.0f} useful tokens/s  ({t.useful / t.steps:,.0f} per step, "
              f"median step {1000 * float(np.median(t.step_times)):,.0f} ms)  {t.gflops:>7,.1f} GFLOP/s = "
              f"{100 * t.gflops / peaks[peak]:.1f}% of the {peak} peak{other}; "
              f"{t.flops / t.useful / 1e6:.2f} MFLOP per useful token")
    print(f"ratio ours/classic: {ratio:.2f}x useful tokens/s ({a.flops / a.useful / (b.flops / b.useful):.2f}x fewer "
          f"FLOPs per useful token, {b.gflops / a.gflops:.2f}x the GFLOP/s)", flush=True)

    if args.budget > 0:
        val_b = Batches(ds, val_idx, base, 0, 1)
        print(f"equal-time training: {args.budget:g} s of training each through train.train (same data, seed and "
              f"model size), then fp32 validation loss on the fixed split ({len(val_idx)} poems)", flush=True)
        with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
            runs = {}
            for recipe, label in (("classic", "classic"), ("fast", "ours")):
                r = train_for_budget(TrainConfig(**{**base.__dict__, "time_budget": args.budget}), recipe,
                                     Path(tmp) / label, val_b, device)
                runs[label] = r
                print(f"{label:<8} val {r['val']:.4f} nats/char (ppl {math.exp(r['val']):,.1f}) after {r['steps']} "
                      f"steps, {r['train_s']:.0f} s of training ({r['wall_s']:.0f} s wall with evaluation); "
                      f"{'bf16' if r['bf16'] else 'fp32'}", flush=True)
        gain = runs["classic"]["val"] - runs["ours"]["val"]
        verdict = "ours is lower" if gain > 0 else "WARNING: ours is NOT lower"
        print(f"validation loss at equal time: classic {runs['classic']['val']:.4f}, ours {runs['ours']['val']:.4f} "
              f"nats/char: {verdict} by {abs(gain):.4f}")
    print(f"speedup: {ratio:.2f}x")


if __name__ == "__main__":
    main()
