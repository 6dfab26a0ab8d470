"""Train a PoetryLSTM on tang.npz: fast on a CPU, resumable after any crash, observable, DDP-ready.

    python -m train.train --data data/tang.npz --out runs/NAME              # the user's recipe
    torchrun --nproc_per_node=2 -m train.train --data data/tang.npz --out runs/NAME
    python -m train.train --data data/tang.npz --out runs/NAME --resume     # after a crash or kill -9
    python -m train.train --data data/tang.npz --out runs/NAME --init-from checkpoints/tang-lstm --titles

Why it is fast: poems are batched by similar length and right-padded, so almost no compute goes
to padding (the classic recipe pads every poem to 125 steps); the loss and softmax run only on
real tokens; bf16 autocast is used where it measures faster; an adaptive softmax is one flag away.
`--recipe classic` reproduces the book's padded, unmasked fp32 step for baselines and benchmarks.

Metrics count every real target token: characters, punctuation and `<EOP>`; `<START>` is only
ever an input and padding never counts. Files (rank 0 only), each written atomically:
  runs/NAME/last/        weights + optimizer + trainer state, after every epoch and every N steps
  runs/NAME/best/        save_pretrained folder of the best validation loss so far, with training.json
                         (compute, recipe and the lineage of every run its weights descend from)
  runs/NAME/metrics.jsonl, loss.png, samples.txt
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from poetry_model.data import DatasetError, PoemDataset, dedup_split, load_npz, split_indices
from poetry_model.files import atomic_path, replace_dir, write_text_atomic
from poetry_model.model import PoetryConfig, PoetryLSTM
from poetry_model.vocab import TITLE_END, Vocab
from train.batches import IGNORE, Batches, TrainConfig, all_sum, autocast, evaluate
from train.precision import PRECISIONS, PrecisionError, use_bf16

SAMPLE_SEEDS = (1, 2, 3)


# --- options -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    """Command-line options -> (TrainConfig, resume flag)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = TrainConfig(data="", out="")
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(value), default=value, required=name in ("data", "out"))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    ns = vars(p.parse_args(argv))
    resume = ns.pop("resume")
    cfg = TrainConfig(**ns)
    if cfg.recipe not in ("fast", "classic") or cfg.schedule not in ("constant", "cosine", "cosine_time") \
            or cfg.precision not in PRECISIONS or cfg.split not in ("dedup", "random"):
        p.error("--recipe is fast|classic, --schedule constant|cosine|cosine_time, --precision auto|bf16|fp32, "
                "--split dedup|random")
    if cfg.schedule == "cosine_time" and not cfg.time_budget:
        p.error("--schedule cosine_time needs --time-budget")
    if cfg.titles and cfg.recipe == "classic":
        p.error("--titles needs the fast recipe")
    return cfg, resume


# --- distributed ---------------------------------------------------------------------------

def setup_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        return dist.get_rank(), world
    return 0, 1


# --- model, optimizer, schedule ------------------------------------------------------------

def training_vocab(cfg: TrainConfig, data_vocab: Vocab) -> Vocab:
    """The dataset's vocabulary, with <TITLE_END> appended when the run trains on titles."""
    return data_vocab.extended([TITLE_END]) if cfg.titles else data_vocab


def build_model(cfg: TrainConfig, vocab: Vocab) -> PoetryLSTM:
    """A fresh model sized by the options, carrying the training vocabulary."""
    cutoffs = [int(c) for c in cfg.softmax_cutoffs.split(",") if c.strip()]
    config = PoetryConfig.for_vocab(vocab, embedding_dim=cfg.embedding_dim, hidden_dim=cfg.hidden_dim,
                                    num_layers=cfg.num_layers, dropout=cfg.dropout, tie_weights=cfg.tie_weights,
                                    softmax_cutoffs=cutoffs, takes_titles=cfg.titles)
    model = PoetryLSTM(config)
    model.vocab = vocab
    return model


def init_model(cfg: TrainConfig, vocab: Vocab) -> tuple[PoetryLSTM, dict]:
    """The model of `--init-from DIR`: its weights, grown to the training vocabulary, with this run's
    dropout; and a lineage record of the folder (its path, weight digest and its own training.json).

    The folder's sizes win over the size options, which are rewritten into `cfg` so that the
    checkpoint records what was trained. Its vocabulary must be the data's, possibly already with the
    tokens this run appends (see Vocab.extended)."""
    from train.run_info import training_info

    try:
        model = PoetryLSTM.from_pretrained(cfg.init_from)
    except Exception as e:  # noqa: BLE001 - ModelLoadError, or any Hub error for a repo id: reported, then stop
        raise SystemExit(f"error: --init-from {cfg.init_from}: {e}") from None
    if not (vocab.tokens[:len(model.vocab)] == model.vocab.tokens or model.vocab.tokens == vocab.tokens):
        raise SystemExit(f"error: --init-from {cfg.init_from}: its vocabulary ({len(model.vocab)} tokens) is not the "
                         f"data's vocabulary ({len(vocab)} tokens) or a prefix of it")
    parent = {"path": portable_path(cfg.init_from), "weights_sha256": weights_digest(model),
              "training": training_info(str(cfg.init_from))}
    added = model.extend_vocab(vocab)
    parent["tokens_added"] = [vocab.tokens[i] for i in added]
    mc = model.config
    cfg.embedding_dim, cfg.hidden_dim, cfg.num_layers = mc.embedding_dim, mc.hidden_dim, mc.num_layers
    cfg.tie_weights, cfg.softmax_cutoffs = mc.tie_weights, ",".join(str(c) for c in mc.softmax_cutoffs)
    mc.dropout, mc.takes_titles = cfg.dropout, cfg.titles or mc.takes_titles
    model.drop.p = cfg.dropout
    if mc.num_layers > 1:
        model.lstm.dropout = cfg.dropout
    return model.train(), parent


def lr_at(cfg: TrainConfig, step: int, total: int, seconds: float = 0.0) -> float:
    """Learning rate at an optimizer step: linear warm-up, then constant or cosine decay to 10%.

    `cosine` decays over the epochs' steps; `cosine_time` over the seconds of --time-budget, for a
    run whose length is set by the compute it may use rather than by epochs."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    if cfg.schedule == "cosine_time":
        progress = min(1.0, seconds / cfg.time_budget)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    return cfg.lr


class LossModel(torch.nn.Module):
    """Wraps the model so that DDP sees the whole step, loss included, in one forward call."""

    def __init__(self, net: PoetryLSTM, bf16: bool, classic: bool):
        super().__init__()
        self.net, self.bf16, self.classic = net, bf16, classic

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor):
        """(loss to optimise, summed NLL over real tokens as a float, real token count)."""
        with autocast(inputs.device, self.bf16):
            feats, _ = self.net.features(inputs)
            if not self.classic:
                mask = targets != IGNORE
                loss = self.net.loss(feats[mask], targets[mask])
                n = int(mask.sum())
                return loss, float(loss.detach()) * n, n
            # The book's loss: every position, padding included, full softmax over all of them.
            flat_f, flat_t = feats.reshape(-1, feats.shape[-1]), targets.reshape(-1)
            # Metrics stay honest: real targets only; left padding makes <START> a target here, never in ours.
            real = (flat_t != self.net.config.pad_id) & (flat_t != self.net.config.start_id)
            n = int(real.sum())
            if isinstance(self.net.head, torch.nn.Linear):  # one head pass serves loss and metrics, as in the book
                nll = torch.nn.functional.cross_entropy(self.net.head(flat_f).float(), flat_t, reduction="none")
                return nll.mean(), float(nll.detach()[real].sum()), n
            loss = self.net.loss(flat_f, flat_t)
            with torch.no_grad():
                return loss, float(self.net.loss(flat_f[real], flat_t[real])) * n, n


def choose_bf16(cfg: TrainConfig, model: PoetryLSTM, batches: Batches, device: torch.device) -> bool:
    """bf16 autocast if asked (and runnable here), or under `auto` if it runs and measures faster than fp32."""
    if cfg.recipe == "classic" and cfg.precision == "auto":
        return False  # the book's step is fp32; bf16 only when asked for by name
    inputs, targets = (t.to(device) for t in batches.tensors(batches.order(0)[0], classic=False))

    def time_step(bf16: bool) -> float:
        start = time.perf_counter()
        LossModel(model, bf16, classic=False)(inputs, targets)[0].backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    try:
        return use_bf16(cfg.precision, device, time_step if device.type == "cpu" else None)
    except PrecisionError as error:
        raise SystemExit(f"error: {error}") from None


# --- checkpoints ---------------------------------------------------------------------------

def fresh_tmp(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(out: Path, model: PoetryLSTM, opt: torch.optim.Optimizer, state: dict) -> None:
    """Weights, optimizer tensors and trainer state (JSON) into out/last, atomically; no pickle."""
    tmp = fresh_tmp(out / "last")
    model.save_pretrained(tmp)
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.contiguous() for pid, s in sd["state"].items() for k, v in s.items()}
    tensors["torch_rng"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta = {**state, "param_groups": sd["param_groups"]}
    (tmp / "trainer_state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    replace_dir(tmp, out / "last")


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder (a crash mid-swap leaves `last.old`)."""
    for name in ("last", "last.old"):
        if (out / name / "trainer_state.json").is_file():
            return out / name
    return None


def load_checkpoint(path: Path, model: PoetryLSTM, opt: torch.optim.Optimizer, device: torch.device) -> dict:
    """Restore weights, optimizer and RNG from a checkpoint folder; returns the trainer state."""
    loaded = PoetryLSTM.from_pretrained(path, map_location=str(device))
    model.load_state_dict(loaded.state_dict())
    meta = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    tensors = load_file(str(path / "optimizer.safetensors"), device=str(device))
    torch.set_rng_state(tensors.pop("torch_rng").cpu())
    state: dict = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    return meta


def check_resume_matches(path: Path, cfg: TrainConfig, vocab: Vocab) -> None:
    """Refuse to resume when the data's vocabulary or the model options differ from the checkpoint.

    The size options of an --init-from run come from the checkpoint itself, so they need not be repeated."""
    saved = Vocab.load(path)
    if saved.tokens != vocab.tokens:
        raise SystemExit(f"error: {path}/vocab.json differs from the vocabulary of {cfg.data} (titles "
                         f"{'on' if cfg.titles else 'off'}); resume with the data and --titles the run started with")
    old = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))["config"]
    if old.get("init_from"):
        for k in ("embedding_dim", "hidden_dim", "num_layers", "tie_weights", "softmax_cutoffs", "init_from"):
            setattr(cfg, k, old[k])
    fixed = ("embedding_dim", "hidden_dim", "num_layers", "tie_weights", "softmax_cutoffs", "recipe", "titles",
             "split")
    diff = [f"{k}: {old[k]!r} -> {getattr(cfg, k)!r}" for k in fixed if old.get(k) != getattr(cfg, k)]
    if diff:
        raise SystemExit(f"error: {path} was trained with other model options ({'; '.join(diff)})")


def save_best(out: Path, model: PoetryLSTM, metrics: dict, training: dict | None = None) -> None:
    """The best model so far as a loadable save_pretrained folder with a model card and, when given,
    training.json (what it cost and where its weights come from), atomically."""
    from poetry_model.hub import write_model_card

    tmp = fresh_tmp(out / "best")
    model.save_pretrained(tmp)
    write_model_card(tmp, metrics)
    if training is not None:
        (tmp / "training.json").write_text(json.dumps(training, indent=1) + "\n", encoding="utf-8")
    replace_dir(tmp, out / "best")


def training_record(cfg: TrainConfig, state: dict, epoch: int, val: float, val_titled: float | None) -> dict:
    """training.json of a best/ folder: this run's summary, the compute of the whole lineage, and the
    lineage itself (each ancestor's own record, nested, as its folder's training.json had it)."""
    parent = state.get("init_from") or {}
    parent_total = float((parent.get("training") or {}).get("total_train_seconds")
                         or (parent.get("training") or {}).get("train_seconds") or 0.0)
    return {"recipe": cfg.recipe, "train_seconds": round(state["train_seconds"], 1),
            "total_train_seconds": round(state["train_seconds"] + parent_total, 1),
            "time_budget": cfg.time_budget, "epochs": epoch, "steps": state["global_step"],
            "best_val": val, "best_val_titled": val_titled, "best_epoch": epoch,
            "best_train_seconds": round(state["train_seconds"], 1), "split": cfg.split, "titles": cfg.titles,
            "config": {**{k: v for k, v in asdict(cfg).items() if k not in ("data", "out")},  # no machine paths
                       "init_from": portable_path(cfg.init_from) if cfg.init_from else ""},
            "init_from": parent or None}


def portable_path(path: str) -> str:
    """A model folder's path as the lineage records it: relative to the working directory (the
    repository) when inside it, else its last two parts (e.g. NAME/best); Hub repo ids as they are."""
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return "/".join(p.parts[-2:])


# --- observability -------------------------------------------------------------------------

def record_epoch(out: Path, record: dict) -> None:
    """Write an epoch's line into metrics.jsonl, dropping any line of that epoch or later first.

    A kill after the metrics but before the checkpoint makes the resumed run train that epoch
    again; its new line then replaces the old one instead of doubling it. Rewritten atomically."""
    path = out / "metrics.jsonl"
    rows = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in rows if line and json.loads(line)["epoch"] < record["epoch"]]
    write_text_atomic(path, "".join(line + "\n" for line in [*kept, json.dumps(record)]))


def plot_losses(out: Path) -> None:
    """loss.png from metrics.jsonl: train and validation nats/char per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["epoch"] for r in rows], [r["train_loss"] for r in rows], "o-", label="train")
    ax.plot([r["epoch"] for r in rows], [r["val_loss"] for r in rows], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "loss.png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def write_samples(out: Path, model: PoetryLSTM, epoch: int) -> list[str]:
    """A few poems from fixed seeds, printed and appended to samples.txt to watch quality grow."""
    from poetry_model.generation import Poet

    poet = Poet(model, next(model.parameters()).device)
    texts = [poet.continue_text("", max_new_tokens=80, temperature=0.8, top_k=40, seed=s) for s in SAMPLE_SEEDS]
    model.train()
    with open(out / "samples.txt", "a", encoding="utf-8") as f:
        f.write(f"epoch {epoch}\n" + "".join(f"  seed {s}: {t}\n" for s, t in zip(SAMPLE_SEEDS, texts)))
    return texts


# --- the run -------------------------------------------------------------------------------

def load_dataset(cfg: TrainConfig) -> PoemDataset:
    try:
        ds = load_npz(cfg.data, trust_pickle=cfg.trust_pickle)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    if cfg.limit_poems:
        ds.data = ds.data[: cfg.limit_poems]
    return ds


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run (or continue) training; returns the final summary (best validation loss and more)."""
    from poetry_model.generation import pick_device

    device = pick_device(cfg.device or None)
    rank, world = setup_distributed(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    out = Path(cfg.out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(cfg)
    train_idx, val_idx = dedup_split(ds)[:2] if cfg.split == "dedup" else split_indices(len(ds))
    vocab = training_vocab(cfg, ds.vocab)
    checkpoint = last_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise SystemExit(f"error: --resume given but {out} has no checkpoint to continue from")
    if checkpoint:
        check_resume_matches(checkpoint, cfg, vocab)
    elif rank == 0 and out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} already holds a run; pass --resume to continue it or pick a new --out")
    torch.manual_seed(cfg.seed)
    parent = None
    if cfg.init_from and not checkpoint:
        model, parent = init_model(cfg, vocab)
        model = model.to(device)
    else:  # a resumed run gets its weights, sizes included, from the checkpoint
        model = build_model(cfg, vocab).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) if cfg.weight_decay \
        else torch.optim.Adam(model.parameters(), lr=cfg.lr)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val": math.inf, "bad_epochs": 0,
             "train_seconds": 0.0, "config": asdict(cfg), "init_from": parent}
    if checkpoint:
        state.update(load_checkpoint(checkpoint, model, opt, device))
        state["config"] = asdict(cfg)
        model.config.dropout = cfg.dropout
    title_end = vocab.title_end_id if cfg.titles else None
    train_b = Batches(ds, train_idx, cfg, rank, world, title_end)
    val_b = Batches(ds, val_idx, cfg, rank, world, title_end)
    classic = cfg.recipe == "classic"
    bf16 = choose_bf16(cfg, model, train_b, device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{len(train_idx)} train / {len(val_idx)} validation poems; {n_params / 1e6:.2f}M parameters; "
              f"device {device}{f' x{world}' if world > 1 else ''}; {'bf16 autocast' if bf16 else 'fp32'}; "
              f"recipe {cfg.recipe}" + (f"; resuming at epoch {state['epoch'] + 1} step {state['step_in_epoch']}"
                                        if checkpoint else ""), flush=True)
    net = model
    step_model = LossModel(net, bf16, classic)
    if world > 1:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model, find_unused_parameters=bool(cfg.softmax_cutoffs))
    steps_per_epoch = len(train_b.order(0))
    total_steps = steps_per_epoch * cfg.epochs
    summary = {"stopped": "epochs"}
    for epoch in range(state["epoch"], cfg.epochs):
        stop = run_epoch(cfg, step_model, net, opt, train_b, state, epoch, total_steps, device, rank, out)
        if stop == "nan":
            summary["stopped"] = "nan"
            break
        val = evaluate(net, val_b, device, bf16)
        val_titled = evaluate(net, val_b, device, bf16, titled=True) if cfg.titles else None
        if not math.isfinite(val) or val > 50:  # diverged: keep the last good checkpoint untouched
            if rank == 0:
                print(f"\nerror: validation loss became {val} after epoch {epoch + 1}; stopping. The last good "
                      f"checkpoint is kept in {out / 'last'}; lower --lr or set --clip.", file=sys.stderr)
            summary["stopped"] = "nan"
            break
        state.update(epoch=epoch + 1, step_in_epoch=0)
        improved = val < state["best_val"]
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        state["best_val"] = min(val, state["best_val"])
        if rank == 0:
            record = {"epoch": epoch + 1, "step": state["global_step"], "train_loss": state["epoch_train_loss"],
                      "val_loss": val, "val_loss_titled": val_titled, "val_ppl": math.exp(val),
                      "val_bits_per_char": val / math.log(2),
                      "tokens_per_s": state["epoch_tokens_per_s"], "lr": opt.param_groups[0]["lr"],
                      "wall_s": round(state["train_seconds"], 1), "best": improved,
                      "resumed": state["epoch_resumed"]}
            record_epoch(out, record)
            plot_losses(out)
            if improved:
                save_best(out, net, {"cross_entropy": val, "perplexity": math.exp(val),
                                     "bits_per_char": val / math.log(2)},
                          training_record(cfg, state, epoch + 1, val, val_titled))
            save_checkpoint(out, net, opt, state)
            for t in write_samples(out, net, epoch + 1):
                print("   ", t)
            print(f"epoch {epoch + 1}: train {record['train_loss']:.4f}  val {val:.4f} nats/char "
                  f"(ppl {math.exp(val):.1f}){f', titled {val_titled:.4f}' if val_titled is not None else ''}"
                  f"{'  *best*' if improved else ''}  {record['tokens_per_s']:.0f} tok/s", flush=True)
        if stop in ("time", "steps"):
            summary["stopped"] = stop
            break
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            summary["stopped"] = "patience"
            break
    summary.update(rank=rank, best_val=state["best_val"], epochs=state["epoch"], steps=state["global_step"],
                   train_seconds=state["train_seconds"], bf16=bf16, weights_sha256=weights_digest(net))
    if rank == 0 and cfg.push_to_hub and (out / "best").is_dir():
        from poetry_model.hub import push_folder

        summary["pushed"] = push_folder(out / "best", cfg.push_to_hub)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def run_epoch(cfg: TrainConfig, step_model: torch.nn.Module, net: PoetryLSTM, opt: torch.optim.Optimizer,
              batches: Batches, state: dict, epoch: int, total_steps: int, device: torch.device, rank: int,
              out: Path) -> str | None:
    """Train one epoch (from `state['step_in_epoch']`); returns why it stopped early, if it did."""
    order = batches.order(epoch)
    titled = batches.title_draw(epoch)
    # Resumed mid-epoch: the epoch's loss and speed also count the steps before the checkpoint.
    resumed = state["step_in_epoch"] > 0
    nll, count = (state.get("epoch_nll", 0.0), state.get("epoch_count", 0)) if resumed else (0.0, 0)
    before_s = state.get("epoch_compute_s", 0.0) if resumed else 0.0  # already in state["train_seconds"]
    compute_s = 0.0
    last_save = 0.0
    bar = tqdm(total=len(order), initial=state["step_in_epoch"], desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=rank != 0, dynamic_ncols=True, mininterval=2.0)
    stop = None
    for i in range(state["step_in_epoch"], len(order)):
        t0 = time.perf_counter()
        inputs, targets = (t.to(device) for t in batches.tensors(order[i], cfg.recipe == "classic", titled[order[i]]))
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, state["global_step"], total_steps, state["train_seconds"] + compute_s)
        loss, batch_nll, n = step_model(inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        spent = state["train_seconds"] + compute_s + time.perf_counter() - t0  # this step included
        over = float(bool(cfg.time_budget) and spent >= cfg.time_budget)
        batch_nll, n, over = all_sum([batch_nll, n, over], device)  # every rank takes the same decisions
        if not math.isfinite(batch_nll):
            if rank == 0:
                print(f"\nerror: loss became {batch_nll / max(n, 1)} at epoch {epoch + 1} step {i}; stopping. "
                      f"The last good checkpoint is kept in {out / 'last'}; lower --lr or set --clip.", file=sys.stderr)
            bar.close()
            return "nan"
        opt.step()
        compute_s += time.perf_counter() - t0
        nll, count = nll + batch_nll, count + n
        state["global_step"] += 1
        state["step_in_epoch"] = i + 1
        bar.set_postfix(loss=f"{nll / count:.3f}", tok_s=f"{count / compute_s:.0f}", refresh=False)
        bar.update(1)
        if over or (cfg.max_steps and state["global_step"] >= cfg.max_steps):
            stop = "time" if over else "steps"
            break
        due = (cfg.checkpoint_every and (i + 1) % cfg.checkpoint_every == 0) \
            or (cfg.checkpoint_seconds and compute_s - last_save >= cfg.checkpoint_seconds)
        if due and i + 1 < len(order) and rank == 0:
            last_save = compute_s
            save_checkpoint(out, net, opt, {**state, "epoch": epoch, "train_seconds": state["train_seconds"] + compute_s,
                                            "epoch_nll": nll, "epoch_count": count,
                                            "epoch_compute_s": before_s + compute_s})
    bar.close()
    state["train_seconds"] += compute_s
    state["epoch_train_loss"] = nll / max(1, count)
    state["epoch_tokens_per_s"] = count / (before_s + compute_s) if before_s + compute_s else 0.0
    state["epoch_resumed"] = resumed
    return stop


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all weights: equal on every DDP rank when training stayed in sync."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    cfg, resume = parse_args(argv)
    summary = train(cfg, resume)
    # Every rank: lets anyone compare weights across ranks. One write per line: print() writes the text and
    # the newline separately, so two ranks sharing a pipe could splice their lines together.
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    if summary["stopped"] == "nan":
        sys.exit(1)


if __name__ == "__main__":
    main()
