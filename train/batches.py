"""What training and evaluation share: the run's options, its batches and its validation loss.

train.train trains with these; train.evaluate and train.title_eval score a model exactly as the
trainer does, through the same `Batches` and `evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from poetry_model.data import PoemDataset, title_ids
from poetry_model.model import PoetryLSTM

IGNORE = -100  # target id ignored by the loss (padding)


# --- options -------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Every option of a run; saved in the checkpoint so `--resume` continues the same run."""

    data: str
    out: str
    recipe: str = "fast"            # fast | classic (padded 125 steps, unmasked loss, fp32)
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    schedule: str = "constant"      # constant | cosine (over the epochs) | cosine_time (over --time-budget)
    warmup_steps: int = 0
    weight_decay: float = 0.0
    clip: float = 1.0               # max gradient norm; 0 disables
    embedding_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    softmax_cutoffs: str = ""       # e.g. "2000,5000" for an adaptive softmax
    precision: str = "auto"         # auto | bf16 | fp32
    seed: int = 0
    split: str = "dedup"            # dedup (poetry_model.data.dedup_split) | random (the original 90/10 split)
    titles: bool = False            # train on <START> title <TITLE_END> poem <EOP>
    title_dropout: float = 0.5      # share of titled poems shown without their title each epoch
    init_from: str = ""             # start from this model folder's weights (vocabulary extended if needed)
    threads: int = 0                # torch intra-op threads; 0 = torch's default
    checkpoint_seconds: float = 0.0  # also checkpoint after this many seconds of training; 0 = by steps only
    patience: int = 0               # epochs without validation gain before stopping; 0 = never
    checkpoint_every: int = 500     # steps between mid-epoch checkpoints
    time_budget: float = 0.0        # seconds of training before stopping cleanly; 0 = none
    limit_poems: int = 0            # train on the first N poems only (tests, quick trials)
    max_steps: int = 0              # stop after this many optimizer steps in total (tests); 0 = none
    trust_pickle: bool = False
    push_to_hub: str = ""
    device: str = ""


# --- device helpers --------------------------------------------------------------------------

def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when `bf16`; otherwise a context that changes nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# --- batches -------------------------------------------------------------------------------

class Batches:
    """Deterministic per-epoch batches of poem indices, length-bucketed (fast) or shuffled (classic)."""

    def __init__(self, ds: PoemDataset, indices: np.ndarray, cfg: TrainConfig, rank: int, world: int,
                 title_end: int | None = None):
        self.pad = ds.vocab.pad_id
        self.rows = ds.data[indices]
        self.lengths = (self.rows != self.pad).sum(1)
        self.cfg, self.rank, self.world = cfg, rank, world
        # Titles: a second copy of every row reads <START> title <TITLE_END> poem <EOP>; title_len counts
        # the title and its <TITLE_END> (0 for a poem without a usable title). Only poem tokens are ever
        # targets, so a titled and an untitled reading of a poem are scored on the same tokens.
        titles = [title_ids(ds.vocab, str(ds.titles[i])) if title_end is not None and ds.titles is not None
                  else [] for i in indices]
        self.title_len = np.array([len(t) + 1 if t else 0 for t in titles], dtype=np.int64)
        width = self.rows.shape[1] + int(self.title_len.max(initial=0))
        # Right-aligned copy: poems start at column 0, so a batch only needs its longest poem's width.
        self.right = np.full((len(self.rows), width), self.pad, dtype=self.rows.dtype)
        self.titled = np.full_like(self.right, self.pad) if self.title_len.any() else None
        for i, (row, n) in enumerate(zip(self.rows, self.lengths)):
            poem = row[row != self.pad]
            self.right[i, :n] = poem
            if self.titled is not None:
                self.titled[i, :n + self.title_len[i]] = np.concatenate(
                    [poem[:1], titles[i], [title_end] if titles[i] else [], poem[1:]]).astype(self.rows.dtype)

    def title_draw(self, epoch: int) -> np.ndarray:
        """Which poems are shown with their title this epoch (title dropout), the same on every run."""
        if self.titled is None:
            return np.zeros(len(self.rows), dtype=bool)
        rng = np.random.Generator(np.random.PCG64([self.cfg.seed, epoch, 1]))
        return (rng.random(len(self.rows)) >= self.cfg.title_dropout) & (self.title_len > 0)

    def all_titled(self) -> np.ndarray:
        """Every poem that has a title shown with it (evaluation)."""
        return self.title_len > 0

    def order(self, epoch: int, shuffle: bool = True) -> list[np.ndarray]:
        """This rank's batches for an epoch: the same on every run with the same seed."""
        n, bs = len(self.rows), self.cfg.batch_size
        rng = np.random.Generator(np.random.PCG64([self.cfg.seed, epoch]))
        idx = rng.permutation(n) if shuffle else np.arange(n)
        if self.cfg.recipe == "fast":
            pool = bs * 50  # sort within pools of 50 batches: similar lengths, still random batches
            idx = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in np.split(idx, range(pool, n, pool))])
        batches = [idx[i:i + bs] for i in range(0, n, bs)]
        if shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world if len(batches) >= self.world else len(batches)
        return batches[self.rank:usable:self.world] if self.world > 1 else batches

    def tensors(self, b: np.ndarray, classic: bool, titled: np.ndarray | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for a batch; padding targets become IGNORE unless the classic loss wants them.

        `titled` (one flag per poem of the batch) reads those poems with their title; the title and
        <TITLE_END> are inputs only, their targets IGNORE."""
        if classic:
            rows = torch.from_numpy(self.rows[b])
            return rows[:, :-1], rows[:, 1:]
        if titled is None or not titled.any():
            width = int(self.lengths[b].max())
            rows = torch.from_numpy(self.right[b, :width])
            targets = rows[:, 1:].clone()
            targets[targets == self.pad] = IGNORE
            return rows[:, :-1], targets
        shift = np.where(titled, self.title_len[b], 0)
        width = int((self.lengths[b] + shift).max())
        rows = torch.from_numpy(np.where(titled[:, None], self.titled[b, :width], self.right[b, :width]))
        targets = rows[:, 1:].clone()
        targets[targets == self.pad] = IGNORE
        targets[torch.arange(width - 1)[None, :] < torch.from_numpy(shift)[:, None]] = IGNORE
        return rows[:, :-1], targets


@torch.no_grad()
def evaluate(model: PoetryLSTM, batches: Batches, device: torch.device, bf16: bool, titled: bool = False) -> float:
    """Validation cross-entropy in nats per real target token, summed over all ranks; with `titled`,
    every poem that has a title is read after it (the same poem tokens are scored either way)."""
    net = model.module if hasattr(model, "module") else model
    net.eval()
    nll, count = 0.0, 0
    flags = batches.all_titled() if titled else None
    for b in batches.order(0, shuffle=False):
        inputs, targets = (t.to(device) for t in batches.tensors(b, False, None if flags is None else flags[b]))
        with autocast(device, bf16):
            feats, _ = net.features(inputs)
            mask = targets != IGNORE
            nll += float(net.loss(feats[mask], targets[mask])) * int(mask.sum())
        count += int(mask.sum())
    net.train()
    nll, count = all_sum([nll, count], device)
    return nll / max(1, count)
