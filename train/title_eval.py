"""How much a title-taking model follows its title: likelihood and content, against a random title.

    python -m train.title_eval --model checkpoints/tang-lstm --out runs/title-eval

Two measures on the validation poems of the de-duplicated split that have a title:
  nats/char of the poem tokens read untitled, after their own title, and after a random title
      (the titles of those poems shuffled among them, no poem keeping its own). Own-title minus
      random-title is what the title tells the model about the poem; random minus untitled is what a
      wrong title costs.
  title-character share of sampled poems: for each title a poem is sampled after that title and one
      untitled with the same seed; the share of the title's distinct characters that appear in the
      poem is compared with the share of a random other title's characters in the same poem. Real
      validation poems give the same numbers for reference (how much real poets reuse their titles).
And a few poems for fixed titles, to read. Sampling here is plain (temperature 0.8, top-k 40, only
Han characters, line punctuation and <EOP>; a character first), the same for every model, independent of the app's engine.
Writes OUT/title_eval.json and OUT/title_eval.md.
"""
from __future__ import annotations

import argparse
import json
import math
import time
import unicodedata
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from poetry_model.data import PoemDataset, dedup_split, load_npz, title_context, title_ids
from poetry_model.files import write_text_atomic
from poetry_model.model import PoetryLSTM
from train.batches import Batches, TrainConfig, evaluate

SHOWN_TITLES = ("春望", "送友人", "秋夜", "边塞", "江上送别", "登高", "咏梅", "夜雨寄北")
PUNCTUATION = "，。？！"


def shuffled_titles(titles: list[str], seed: int) -> list[str]:
    """The titles shuffled so that no poem keeps its own: a random cyclic shift of a random order."""
    n = len(titles)
    if n < 2:
        return list(titles)
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(n)
    out = list(titles)
    for a, b in zip(order, np.roll(order, 1)):
        out[a] = titles[b]
    return out


def nats(model: PoetryLSTM, ds: PoemDataset, idx: np.ndarray, titled: bool) -> float:
    cfg = TrainConfig(data="", out="", batch_size=128)
    batches = Batches(ds, idx, cfg, 0, 1, model.vocab.title_end_id)
    try:
        return evaluate(model, batches, torch.device("cpu"), bf16=False, titled=titled)
    finally:
        model.eval()


def allowed_mask(vocab) -> torch.Tensor:
    """Tokens a sampled poem may use: Han characters, line punctuation and <EOP>."""
    keep = [len(t) == 1 and (unicodedata.category(t) == "Lo" or t in PUNCTUATION) for t in vocab.tokens]
    keep[vocab.eop_id] = True
    return torch.tensor(keep)


@torch.no_grad()
def sample(model: PoetryLSTM, contexts: list[list[int]], seed: int, max_new: int = 80,
           temperature: float = 0.8, top_k: int = 40) -> list[str]:
    """One poem per context, all in one batch (contexts are left-padded by running them one by one)."""
    vocab = model.vocab
    gen = torch.Generator().manual_seed(seed)
    mask = allowed_mask(vocab)
    states, last = [], []
    for ctx in contexts:  # contexts differ in length: prefill each, then step them together
        feats, (h, c) = model.features(torch.tensor([ctx]))
        states.append((h, c))
        last.append(feats[:, -1])
    h = torch.cat([s[0] for s in states], 1)
    c = torch.cat([s[1] for s in states], 1)
    feats = torch.cat(last, 0)
    out = [[] for _ in contexts]
    done = torch.zeros(len(contexts), dtype=torch.bool)
    first = mask.clone()
    first[vocab.eop_id] = False
    first[[vocab.index[p] for p in PUNCTUATION if p in vocab.index]] = False  # a poem opens with a character
    for step in range(max_new):
        logp = model.scores(feats).float()
        logp[:, ~(first if step == 0 else mask)] = -math.inf
        top, ids = logp.topk(top_k, dim=-1)
        choice = torch.multinomial(torch.softmax(top / temperature, -1), 1, generator=gen)
        tok = ids.gather(1, choice).squeeze(1)
        for i, t in enumerate(tok.tolist()):
            if not done[i]:
                if t == vocab.eop_id:
                    done[i] = True
                else:
                    out[i].append(t)
        if done.all():
            break
        f, (h, c) = model.features(tok[:, None], (h, c))
        feats = f[:, -1]
    return [vocab.decode(ids) for ids in out]


def title_share(title: str, poem: str) -> float:
    """Share of the title's distinct Han characters that appear in the poem."""
    chars = {ch for ch in title if unicodedata.category(ch) == "Lo"}
    return sum(ch in poem for ch in chars) / len(chars) if chars else 0.0


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads) if args.threads else None
    started = time.perf_counter()
    model = PoetryLSTM.from_pretrained(args.model).eval()
    if not model.config.takes_titles:
        raise SystemExit(f"error: {args.model} does not take titles (config.json takes_titles is false)")
    ds = load_npz(args.data)
    _, val, _ = dedup_split(ds)
    titles = [model.vocab.decode(title_ids(model.vocab, str(ds.titles[i]))) for i in val]
    keep = np.array([bool(t) for t in titles])
    val, titles = val[keep], [t for t, k in zip(titles, keep) if k]
    if args.limit:
        val, titles = val[:args.limit], titles[:args.limit]
    wrong = shuffled_titles(titles, args.seed)
    own_titles = ds.titles.copy()
    random_titles = ds.titles.copy().astype(object)
    random_titles[val] = wrong
    lm = {"poems": int(len(val)),
          "untitled": nats(model, ds, val, titled=False),
          "own_title": nats(model, replace(ds, titles=own_titles), val, titled=True),
          "random_title": nats(model, replace(ds, titles=np.array(random_titles, dtype=str)), val, titled=True)}
    lm["own_minus_random"] = lm["own_title"] - lm["random_title"]
    lm["random_minus_untitled"] = lm["random_title"] - lm["untitled"]

    n = min(args.samples, len(val))
    pick = np.random.Generator(np.random.PCG64(args.seed + 1)).choice(len(val), n, replace=False)
    own = [titles[i] for i in pick]
    other = [wrong[i] for i in pick]
    with_title = sample(model, [title_context(model.vocab, t) for t in own], args.seed)
    untitled = sample(model, [[model.vocab.start_id] for _ in own], args.seed)
    real = [ds.poem_text(int(val[i])) for i in pick]
    share = lambda ts, ps: float(np.mean([title_share(t, p) for t, p in zip(ts, ps)]))  # noqa: E731
    content = {"samples": n,
               "titled_poem_own_title": share(own, with_title), "titled_poem_random_title": share(other, with_title),
               "untitled_poem_own_title": share(own, untitled),
               "real_poem_own_title": share(own, real), "real_poem_random_title": share(other, real)}
    shown = {t: sample(model, [title_context(model.vocab, t)] * args.shown, args.seed) for t in SHOWN_TITLES}
    return {"model": str(args.model), "seed": args.seed, "lm": lm, "content": content, "shown": shown,
            "seconds": round(time.perf_counter() - started, 1)}


def markdown(r: dict) -> str:
    lm, c = r["lm"], r["content"]
    lines = [f"Validation poems with a title (de-duplicated split): {lm['poems']}", "",
             "| poem read | nats/char |", "|---|---|",
             f"| untitled | {lm['untitled']:.4f} |", f"| after its own title | {lm['own_title']:.4f} |",
             f"| after a random other title | {lm['random_title']:.4f} |", "",
             f"Own title vs random title: {lm['own_minus_random']:+.4f} nats/char.", "",
             f"Share of the title's characters found in the poem ({c['samples']} titles):", "",
             "| poem | its own title | a random title |", "|---|---|---|",
             f"| sampled after the title | {100 * c['titled_poem_own_title']:.1f}% | {100 * c['titled_poem_random_title']:.1f}% |",
             f"| sampled untitled (same seed) | {100 * c['untitled_poem_own_title']:.1f}% | |",
             f"| the real poem | {100 * c['real_poem_own_title']:.1f}% | {100 * c['real_poem_random_title']:.1f}% |",
             "", "Samples:", ""]
    for title, poems in r["shown"].items():
        lines += [f"- **{title}**: " + " / ".join(poems)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/tang.npz")
    p.add_argument("--out", default="runs/title-eval")
    p.add_argument("--samples", type=int, default=300, help="titles sampled for the content measure")
    p.add_argument("--shown", type=int, default=2, help="poems shown per fixed title")
    p.add_argument("--limit", type=int, default=0, help="first N titled validation poems only (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("title_eval.json", json.dumps(result, ensure_ascii=False, indent=1)),
                       ("title_eval.md", markdown(result))):
        write_text_atomic(out / name, text)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
