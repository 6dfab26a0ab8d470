"""Evaluate a PoetryLSTM: validation cross-entropy, sample quality per form, a baseline and a 5-gram model.

    python -m train.evaluate --model runs/NAME/best                          # or a Hub repo id
    python -m train.evaluate --model runs/NAME/best --baseline runs/classic/best --write-card
    python -m train.evaluate --model runs/NAME/best --push-to-hub user/tang-lstm
    python -m train.evaluate --model checkpoints/tang-lstm --baseline runs/NAME/best --lm-only   # the table only

Writes OUT/results.json, OUT/results.md (the tables) and OUT/samples.jsonl (every sampled poem),
and prints the tables. OUT defaults to runs/eval-<model folder name>.

Language-model metrics, on the de-duplicated validation split of --data (poetry_model.data.dedup_split;
`--split random` for the original 10%, poetry_model.data.split_indices), computed by the trainer's own
`evaluate` over its `Batches` (train/batches.py): every real target token of the poem counts (characters, punctuation
and <EOP>); <START> is only input and padding never counts.
  cross_entropy_titled  for a model that takes titles: the same poem tokens, each poem read after
                  its title (<START> title <TITLE_END>); cross_entropy is always the untitled reading
  cross_entropy   mean negative log-likelihood, nats per token ("per character")
  bits_per_char   cross_entropy / ln 2
  perplexity      exp(cross_entropy)
The same number for a character n-gram model with interpolated Kneser-Ney smoothing (absolute
discount 0.75, order --kn-order, train/kneser_ney.py) fitted on the training split: the cheap model
a user could pick instead.

Sample metrics, per mode, over --samples poems written by Poet.generate with its default sampling
settings (GenerationConfig's defaults; rhyme and tone masks on for the forms). Modes:
free (free verse, no prompt), 五绝, 七绝, 五律, 七律, and acrostic (free verse, or --acrostic-form, with
4 head characters drawn with a fixed seed from the 200 most frequent characters of the training
split). The copy guard (avoid_copies) is OFF unless --avoid-copies, so that the copy metrics measure
what the model itself reproduces. The same seeds and heads are used for every model.
  form_exact          share of poems whose form, as the prosody checker detects it (analyze().form),
                      equals the form asked for; acrostic: share with exactly one line per head,
                      each line starting with its head (and, with --acrostic-form, of that form);
                      free: n/a (null)
  rhyme_rate          share of poems the checker says rhyme (analyze().rhymes: the even lines share
                      one 平水韵 group, no rhyme character repeated); note that a two-line poem
                      "rhymes" whenever its second line ends on a level-tone rhyme character
  tone_conformity     over all poems of the mode pooled: among the strict positions (二四六 and the
                      line end, prosody.strict_positions) whose character has a known tone, the share
                      whose tone is the one the best-fitting template requires (from the report's
                      per-character annotation: a char note with `required` set and `tones`
                      non-empty; a polyphone matches if either reading does). Only poems with a
                      template (uniform lines of 5 or 7) have strict positions; null when none.
  tone_score_mean     the report's own per-poem tone_score averaged over those poems (it also counts
                      孤平 and 三平尾 and accepts 拗救 licences)
  copied_line_share   lines (split on ，。？！；：) equal to a line of a training-split poem, as a share
                      of all lines (novelty.LineIndex hash check over the training split)
  whole_poem_copies   poems whose sequence of lines equals that of a training-split poem (count;
                      whole_poem_copy_rate is the share)
  distinct_1/2        distinct character unigrams/bigrams over total, pooled over all poems of the
                      mode; bigrams never span punctuation
  repetition_rate     pooled share of characters that repeat a character already used earlier in the
                      same poem (a poem of n characters with u distinct ones has n - u repetitions)
  mean_length         mean characters per poem, punctuation excluded
  mean_lines          mean lines per poem (runs of characters between punctuation)
  duplicates_merged   candidates Poet.generate merged as identical to another in their batch (topped
                      up with more seeds, so every mode still has --samples poems)
A reference row, "validation poems", applies the same metrics to real poems of the validation split
(free: a random sample; each form: poems of that shape), to read the model's numbers against.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from poetry_model.data import DatasetError, PoemDataset, dedup_split, load_npz, split_indices
from poetry_model.files import atomic_path, write_text_atomic
from poetry_model.generation.config import BY_FORM, MAX_CANDIDATES, GenerationConfig, by_form_text
from poetry_model.novelty import LineIndex, hash_lines, line_hash
from poetry_model.prosody import FORMS, analyze, shape_form
from poetry_model.text import LOST_CHAR, han_lines
from poetry_model.text import split_lines as copy_lines
from poetry_model.vocab import TITLE_END
from train.batches import Batches, TrainConfig, evaluate
from train.kneser_ney import DISCOUNT, ORDER, fit_and_score
from train.run_info import training_info

MODES = ("free", *FORMS, "acrostic")
ACROSTIC_HEADS, HEAD_POOL, ACROSTIC_BATCH = 4, 200, 10
MAX_BATCH = MAX_CANDIDATES  # candidates of one Poet.generate call
SHARE_KEYS = ("form_exact", "rhyme_rate", "tone_conformity", "copied_line_share", "whole_poem_copy_rate",
              "distinct_1", "distinct_2", "repetition_rate")
SAMPLE_KEYS = ("samples", *SHARE_KEYS, "tone_score_mean", "tone_checked_poems", "whole_poem_copies",
               "mean_length", "mean_lines", "duplicates_merged", "copies_avoided", "seconds")
GENERATION_KEYS = ("temperature", "top_k", "top_p", "repetition_penalty", "rhyme", "tones", "rhyme_strength",
                   "tone_strength")
LM_KEYS = ("cross_entropy", "bits_per_char", "perplexity", "tokens", "poems")


# --- data and models ---------------------------------------------------------------------------

def load_data(path: str, limit_poems: int = 0, split: str = "dedup") -> tuple[PoemDataset, np.ndarray, np.ndarray]:
    """The dataset and its fixed split (de-duplicated or the original random one); --limit-poems
    slices first, exactly as the trainer does."""
    try:
        ds = load_npz(path)
    except DatasetError as e:
        raise SystemExit(f"error: {e}") from None
    if limit_poems:
        ds.data = ds.data[:limit_poems]
    train_idx, val_idx = dedup_split(ds)[:2] if split == "dedup" else split_indices(len(ds))
    return ds, train_idx, val_idx


def load_poet(source: str, ds: PoemDataset, device: torch.device):
    """A Poet for a model folder or repo id, loaded strictly; its vocabulary must be the dataset's."""
    from poetry_model.generation import load
    from poetry_model.model import ModelLoadError

    try:
        poet = load(source, device=str(device), corpus=None)
    except ModelLoadError as e:
        raise SystemExit(f"error: {e}") from None
    if poet.vocab.tokens[:len(ds.vocab)] != ds.vocab.tokens or \
            any(t != TITLE_END for t in poet.vocab.tokens[len(ds.vocab):]):
        raise SystemExit(f"error: {source} has another vocabulary than {ds.path} ({len(poet.vocab)} vs "
                         f"{len(ds.vocab)} tokens); evaluate it on the data it was trained on")
    return poet


def lm_metrics(model, ds: PoemDataset, val_idx: np.ndarray, device: torch.device, batch_size: int = 128) -> dict:
    """Validation cross-entropy exactly as the trainer computes it (its Batches and evaluate, fp32)."""
    cfg = TrainConfig(data=str(ds.path or ""), out="", batch_size=batch_size)
    titles = bool(model.config.takes_titles and model.vocab is not None and model.vocab.title_end_id is not None)
    batches = Batches(ds, val_idx, cfg, rank=0, world=1, title_end=model.vocab.title_end_id if titles else None)
    model.to(device)
    try:
        ce = evaluate(model, batches, device, bf16=False)
        ce_titled = evaluate(model, batches, device, bf16=False, titled=True) if titles else None
    finally:
        model.eval()  # the trainer's evaluate hands the model back in train mode
    tokens = int((batches.lengths - 1).sum())  # every token after <START>
    return {"cross_entropy": ce, "bits_per_char": ce / math.log(2), "perplexity": math.exp(ce),
            "cross_entropy_titled": ce_titled, "tokens": tokens, "poems": int(len(val_idx)),
            "titled_poems": int(batches.all_titled().sum()) if titles else 0}


# --- sample metrics ----------------------------------------------------------------------------

class CopyCheck:
    """Lines and whole poems of the training split, by hash."""

    def __init__(self, train_texts: list[str]):
        self.lines = LineIndex(hash_lines(train_texts), "training split")
        self.poems = {self._key(t) for t in train_texts}

    @staticmethod
    def _key(text: str) -> int:
        return line_hash("\n".join(copy_lines(text)))

    def copied(self, text: str) -> tuple[int, int, bool]:
        """(lines found in the training split, lines, whole poem found)."""
        lines = copy_lines(text)
        return sum(line in self.lines for line in lines), len(lines), bool(lines) and self._key(text) in self.poems


def poem_record(text: str, report, asked: str, copies: CopyCheck, heads: str = "",
                acrostic_form: str = "free") -> dict:
    """Everything the mode metrics need from one poem."""
    lines = han_lines(text)
    chars = "".join(lines)
    if asked == "acrostic":
        n_lines = FORMS[acrostic_form][0] if acrostic_form in FORMS else len(heads)
        exact = len(lines) == n_lines and all(line[:1] == h for line, h in zip(lines, heads))
        exact = exact and (acrostic_form == "free" or (report is not None and report.form == acrostic_form))
    else:
        exact = None if asked == "free" else bool(report is not None and report.form == asked)
    required = [c for c in (report.chars if report is not None else []) if c.required and c.tones]
    copied, n_lines, whole = copies.copied(text)
    return {"text": text, "heads": heads, "form": report.form if report else None, "form_exact": exact,
            "rhymes": bool(report is not None and report.rhymes),
            "templated": bool(report is not None and report.template),
            "tone_score": report.tone_score if report is not None else None,
            "tone_positions": len(required), "tone_matches": sum(c.required in c.tones for c in required),
            "copied_lines": copied, "lines": n_lines, "whole_copy": whole, "chars": chars,
            "line_texts": lines}


def _share(num: float, den: float) -> float | None:
    return num / den if den else None


def mode_metrics(records: list[dict]) -> dict:
    """Aggregate poem records into the documented metrics of one mode."""
    n = len(records)
    exact = [r["form_exact"] for r in records if r["form_exact"] is not None]
    templated = [r for r in records if r["templated"]]
    chars = sum(len(r["chars"]) for r in records)
    unigrams = Counter(ch for r in records for ch in r["chars"])
    bigrams = Counter(line[i:i + 2] for r in records for line in r["line_texts"] for i in range(len(line) - 1))
    whole = sum(r["whole_copy"] for r in records)
    return {
        "samples": n,
        "form_exact": _share(sum(exact), len(exact)),
        "rhyme_rate": _share(sum(r["rhymes"] for r in records), n),
        "tone_conformity": _share(sum(r["tone_matches"] for r in records), sum(r["tone_positions"] for r in records)),
        "tone_score_mean": _share(sum(r["tone_score"] for r in templated), len(templated)),
        "tone_checked_poems": len(templated),
        "copied_line_share": _share(sum(r["copied_lines"] for r in records), sum(r["lines"] for r in records)),
        "whole_poem_copies": whole,
        "whole_poem_copy_rate": _share(whole, n),
        "distinct_1": _share(len(unigrams), chars),
        "distinct_2": _share(len(bigrams), sum(bigrams.values())),
        "repetition_rate": _share(sum(len(r["chars"]) - len(set(r["chars"])) for r in records), chars),
        "mean_length": _share(chars, n),
        "mean_lines": _share(sum(len(r["line_texts"]) for r in records), n),
    }


def frequent_heads(ds: PoemDataset, train_idx: np.ndarray, pool: int = HEAD_POOL) -> list[str]:
    """The most frequent Han characters of the training split, most frequent first."""
    ids = ds.data[train_idx].ravel()
    counts = np.bincount(ids, minlength=len(ds.vocab))
    order = np.argsort(-counts, kind="stable")
    heads = [ds.vocab.tokens[i] for i in order
             if counts[i] and len(ds.vocab.tokens[i]) == 1 and unicodedata.category(ds.vocab.tokens[i]) == "Lo"
             and ds.vocab.tokens[i] != LOST_CHAR]
    return heads[:pool]


def _seed(base: int, *parts: int) -> int:
    return int(np.random.SeedSequence([base, *parts]).generate_state(1, np.uint64)[0] % (2**62))


def sample_mode(poet, mode: str, n: int, seed: int, batch: int, head_pool: list[str], copies: CopyCheck,
                avoid_copies: bool, acrostic_form: str = "free") -> tuple[list[dict], dict]:
    """n poems of one mode (same seeds for every model), their records and the mode's metrics."""
    t0 = time.perf_counter()
    m = MODES.index(mode)
    heads_rng = np.random.Generator(np.random.PCG64(_seed(seed, m, 1)))
    records, merged, avoided, call = [], 0, 0, 0
    while len(records) < n:
        if call > 4 * n + 10:
            raise RuntimeError(f"{mode}: could not collect {n} distinct poems")
        want = min(ACROSTIC_BATCH if mode == "acrostic" else batch, n - len(records), MAX_BATCH)
        kwargs = {"form": acrostic_form if mode == "acrostic" else mode, "num_candidates": want,
                  "seed": _seed(seed, m, 0, call), "avoid_copies": avoid_copies}
        heads = ""
        if mode == "acrostic":
            heads = "".join(heads_rng.choice(head_pool, ACROSTIC_HEADS, replace=False))
            kwargs["acrostic"] = heads
        poems = poet.generate(**kwargs)
        merged += want - len(poems)
        for poem in sorted(poems, key=lambda p: p.candidate):
            avoided += int(poem.copy.get("avoided") or 0)
            rec = poem_record(poem.text, poem.report, mode, copies, heads, acrostic_form)
            rec.update(seed=poem.seed, candidate=poem.candidate)
            records.append(rec)
        call += 1
    metrics = mode_metrics(records)
    metrics.update(duplicates_merged=merged, copies_avoided=avoided, seconds=round(time.perf_counter() - t0, 1))
    return records, metrics


def reference_metrics(ds: PoemDataset, val_idx: np.ndarray, n: int, seed: int, copies: CopyCheck) -> dict:
    """The sample metrics of real validation poems: a random sample (free), and poems of each form's shape."""
    rng = np.random.Generator(np.random.PCG64(_seed(seed, 99)))
    texts = [ds.poem_text(int(i)) for i in rng.permutation(val_idx)]
    out = {}
    free = [poem_record(t, analyze(t), "free", copies) for t in texts[:n]]
    out["free"] = {**mode_metrics(free), "duplicates_merged": None, "copies_avoided": None, "seconds": None}
    for form in FORMS:
        chosen = [t for t in texts if shape_form(han_lines(t)) == form][:n]
        recs = [poem_record(t, analyze(t), form, copies) for t in chosen]
        out[form] = {**mode_metrics(recs), "duplicates_merged": None, "copies_avoided": None, "seconds": None}
    return out


# --- tables ------------------------------------------------------------------------------------

def _fmt(value, kind: str = "share") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "share":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.{kind}f}"


def markdown_tables(results: dict) -> str:
    """The language-model table and the sample table, as Markdown."""
    split = results["data"].get("split", "random")
    out = [f"### Validation cross-entropy ({'de-duplicated' if split == 'dedup' else 'random 10%'} split, "
           "real tokens: characters, punctuation, <EOP>)", "",
           "| model | nats/char | bits/char | perplexity | nats/char after the title | tokens | training |",
           "|---|---|---|---|---|---|---|"]
    for name, m in results["models"].items():
        lm, tr = m["validation"], m.get("training") or {}
        trained = "unknown"
        if tr.get("train_seconds"):
            trained = f"{tr.get('recipe')} recipe, {tr['train_seconds'] / 60:.1f} min"
            if tr.get("best_train_seconds") is not None:
                trained += f" (best: epoch {tr['best_epoch']}, {tr['best_train_seconds'] / 60:.1f} min)"
            if tr.get("total_train_seconds") and tr["total_train_seconds"] != tr["train_seconds"]:
                trained += f"; {tr['total_train_seconds'] / 60:.1f} min with its ancestors"
        out.append(f"| {name} ({m['source_name']}) | {lm['cross_entropy']:.4f} | {lm['bits_per_char']:.3f} | "
                   f"{lm['perplexity']:.1f} | {_fmt(lm.get('cross_entropy_titled'), '4')} | {lm['tokens']} | "
                   f"{trained} |")
    kn = results["kn"]
    out.append(f"| {kn['order']}-gram Kneser-Ney (D={kn['discount']}) | {kn['cross_entropy']:.4f} | "
               f"{kn['bits_per_char']:.3f} | {kn['perplexity']:.1f} | n/a | {kn['tokens']} | "
               f"counts, {kn['seconds']:.0f} s |")
    if "reference" not in results:  # --lm-only
        return "\n".join(out) + "\n"
    out += ["", f"### Samples ({results['settings']['samples']} per mode; copy guard "
                f"{'on' if results['settings']['avoid_copies'] else 'off'})", "",
            "| model | mode | form exact | rhyme | tone (strict pos.) | copied lines | whole copies | "
            "distinct-1 | distinct-2 | repetition | mean length | mean lines |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(name, m["samples"]) for name, m in results["models"].items()]
    rows.append(("validation poems", results["reference"]))
    for name, modes in rows:
        for mode, s in modes.items():
            out.append(f"| {name} | {mode} | {_fmt(s['form_exact'])} | {_fmt(s['rhyme_rate'])} | "
                       f"{_fmt(s['tone_conformity'])} | {_fmt(s['copied_line_share'])} | "
                       f"{s['whole_poem_copies']}/{s['samples']} | {_fmt(s['distinct_1'])} | "
                       f"{_fmt(s['distinct_2'])} | {_fmt(s['repetition_rate'])} | {_fmt(s['mean_length'], '1')} | "
                       f"{_fmt(s['mean_lines'], '1')} |")
    out += ["", "form exact: the prosody checker's detected form equals the one asked (acrostic: one line per "
                "head, each starting with it); tone: share of strict positions (二四六 and line ends) whose known "
                "tone fits the best template; copied lines / whole copies: against the training split; "
                "repetition: share of characters repeating one used earlier in the same poem; mean length in "
                "characters without punctuation. Definitions in `train/evaluate.py`."]
    return "\n".join(out) + "\n"


# --- the run -----------------------------------------------------------------------------------

def evaluate_model(source: str, ds, train_idx, val_idx, args, device, copies, head_pool,
                   sample_file) -> dict:
    """Validation metrics and per-mode sample metrics of one model."""
    poet = load_poet(source, ds, device)
    if args.avoid_copies and poet.line_index() is None:
        poet.lines = copies.lines  # no corpus_lines.npy with the model: guard against the training split
    name = source
    if Path(source).exists():  # a folder by its name, with its run's for a trainer's best/ or last/
        name = "/".join(Path(source).resolve().parts[-2 if Path(source).name in ("best", "last") else -1:])
    n_params = sum(p.numel() for p in poet.model.parameters())
    print(f"[{name}] validation cross-entropy on {len(val_idx)} poems ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    lm = lm_metrics(poet.model, ds, val_idx, device)
    lm["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {lm['cross_entropy']:.4f} nats/char ({lm['seconds']} s)", file=sys.stderr, flush=True)
    samples = {}
    for mode in () if args.lm_only else MODES:
        records, metrics = sample_mode(poet, mode, args.samples, args.seed, args.batch_size, head_pool, copies,
                                       args.avoid_copies, args.acrostic_form)
        samples[mode] = metrics
        for r in records:
            sample_file.write(json.dumps({"model": source, "mode": mode, "seed": r["seed"],
                                          "candidate": r["candidate"], "heads": r["heads"], "text": r["text"],
                                          "form": r["form"], "rhymes": r["rhymes"], "tone_score": r["tone_score"],
                                          "copied_lines": r["copied_lines"], "whole_copy": r["whole_copy"]},
                                         ensure_ascii=False) + "\n")
        print(f"[{name}] {mode}: {metrics['samples']} poems in {metrics['seconds']} s", file=sys.stderr, flush=True)
    return {"source": source, "source_name": name, "parameters": n_params, "config": asdict(poet.model.config),
            "training": training_info(source), "validation": lm, "samples": samples}


def local_model_dir(source: str, out: Path) -> Path:
    """A writable folder holding the model: the folder itself, or a download of the Hub repo into OUT/model."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=source, local_dir=out / "model"))


def card_metrics(results: dict) -> dict:
    """The numbers that go into the model card's model-index: the evaluated model's validation metrics."""
    lm = results["models"]["model"]["validation"]
    return {k: lm[k] for k in ("cross_entropy", "bits_per_char", "perplexity")}


def read_quality(path: str) -> dict:
    """A `python -m train.quality` report (its quality.json; read as JSON, never unpickled)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(report["markdown"], str) or not isinstance(report["settings"], dict) \
                or not isinstance(report["generation"], dict):
            raise TypeError("markdown, settings or generation of the wrong type")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(f"error: --quality {path}: not a train.quality report ({error})") from None
    return report


def quality_section(paths: list[str]) -> str:
    """The card's section of poems against real poems: the first report's tables, then one sample poem
    per form of every report (the others are typically the same defaults with a theme)."""
    reports = [read_quality(p) for p in paths]
    tables, settings = reports[0]["markdown"], reports[0]["settings"]
    candidates = settings.get("num_candidates", 1)
    intro = (f"From `python -m train.quality`: {candidates} candidate{'s' if candidates != 1 else ''} per poem "
             "against held-out real poems of the same shape (validation split), with shuffled and real-vs-real "
             "baselines; the targets in the last column. The measures are explained in the project's "
             "docs/quality.md.")
    body = tables.split("\n", 2)[2] if tables.startswith("settings:") else tables  # the settings line as a list
    body = body.replace("\n### ", "\n#### ").removeprefix("### ")
    listed = ", ".join(f"{k} {v}" for k, v in settings.items() if v not in (None, ""))
    samples = [f"- {r['settings'].get('theme') or 'no theme'}, {form}: {g['poems'][0]}"
               for r in reports for form, g in r["generation"].items() if g.get("poems")]
    return (f"## Poems against real poems\n\n{intro}\n\nSettings: {listed}.\n\n#### {body}\n\n"
            "### Samples (the first poem of each run and form)\n\n" + "\n".join(samples))


def write_card(model_dir: Path, results: dict, tables: str, repo_id: str | None, quality: str = "") -> Path:
    """The model card: the evaluation's tables, then `quality` (a `quality_section`) when given."""
    from poetry_model.hub import write_model_card

    description = ("## Evaluation\n\nFrom `python -m train.evaluate` (seed "
                   f"{results['settings']['seed']}, data `{Path(results['data']['path']).name}`, "
                   f"{results['data']['train_poems']} training / {results['data']['val_poems']} validation poems).\n\n"
                   + tables)
    if quality:
        description += "\n\n" + quality
    return write_model_card(model_dir, card_metrics(results), repo_id=repo_id, description=description)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (save_pretrained) or Hub repo id")
    p.add_argument("--data", default="data/tang.npz", help="tang.npz the model was trained on")
    p.add_argument("--baseline", default=None, help="a second model (the classic-recipe run) for the same table")
    p.add_argument("--samples", type=int, default=200, help="poems per mode (default 200)")
    p.add_argument("--out", default=None, help="output folder (default runs/eval-<model name>)")
    p.add_argument("--write-card", action="store_true", help="rewrite README.md of the model folder from the results")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="write the card, then upload the folder")
    p.add_argument("--kn-order", type=int, default=ORDER, help="order of the Kneser-Ney n-gram model (default 5)")
    p.add_argument("--limit-poems", type=int, default=0, help="use the first N poems only, as train --limit-poems")
    p.add_argument("--seed", type=int, default=0, help="base seed of the samples and acrostic heads")
    p.add_argument("--batch-size", type=int, default=50, help=f"candidates per generate call (at most {MAX_BATCH})")
    p.add_argument("--avoid-copies", action="store_true", help="sample with the copy guard on (default off)")
    p.add_argument("--acrostic-form", default="free", choices=["free", *FORMS],
                   help="form of the acrostic samples (default free verse, one line per head)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--split", default="dedup", choices=["dedup", "random"],
                   help="validation split: de-duplicated (default) or the original random 10%%")
    p.add_argument("--lm-only", action="store_true", help="cross-entropy table only, no samples")
    p.add_argument("--quality", nargs="+", default=None, metavar="JSON",
                   help="with --write-card: the tables of a train.quality run (its quality.json) and a sample "
                        "poem per form of it and of any further runs (e.g. with a theme), added to the card")
    args = p.parse_args(argv)
    if args.samples < 1 or not 1 <= args.batch_size <= MAX_BATCH or args.kn_order < 1 or args.limit_poems < 0:
        p.error(f"--samples and --kn-order must be >= 1, --batch-size 1..{MAX_BATCH}, --limit-poems >= 0")
    return args


def run(args: argparse.Namespace) -> dict:
    """Evaluate, write OUT/results.json, results.md and samples.jsonl; optionally the card and the push."""
    from poetry_model.generation import pick_device

    started = time.perf_counter()
    quality = quality_section(args.quality) if args.quality else ""  # a bad file is named before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    ds, train_idx, val_idx = load_data(args.data, args.limit_poems, args.split)
    name = Path(args.model).name if Path(args.model).exists() else args.model.replace("/", "--")
    out = Path(args.out or Path("runs") / f"eval-{name}")
    out.mkdir(parents=True, exist_ok=True)
    train_texts = [ds.poem_text(int(i)) for i in train_idx]
    copies = CopyCheck(train_texts)
    head_pool = frequent_heads(ds, train_idx)
    results = {
        "data": {"path": str(args.data), "poems": len(ds), "train_poems": int(len(train_idx)),
                 "val_poems": int(len(val_idx)), "limit_poems": args.limit_poems, "split": args.split},
        "settings": {"samples": args.samples, "seed": args.seed, "batch_size": args.batch_size,
                     "avoid_copies": args.avoid_copies, "device": str(device),
                     "generation": "Poet.generate defaults: " + ", ".join(
                         f"{k} {GenerationConfig.default(k) if k not in BY_FORM else 'by form (' + by_form_text(k) + ')'}"
                         for k in GENERATION_KEYS),
                     "acrostic_form": args.acrostic_form,
                     "acrostic_heads": f"{ACROSTIC_HEADS} distinct characters from the {len(head_pool)} most "
                                       "frequent of the training split"},
        "models": {},
    }
    with atomic_path(out / "samples.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as sample_file:
        for key, source in (("model", args.model), ("baseline", args.baseline)):
            if source:
                results["models"][key] = evaluate_model(source, ds, train_idx, val_idx, args, device, copies,
                                                        head_pool, sample_file)
    print(f"{args.kn_order}-gram Kneser-Ney on {len(train_idx)} training poems ...", file=sys.stderr, flush=True)
    results["kn"] = fit_and_score(ds, train_idx, val_idx, order=args.kn_order, discount=DISCOUNT)
    if not args.lm_only:
        results["reference"] = reference_metrics(ds, val_idx, args.samples, args.seed, copies)
    results["seconds"] = round(time.perf_counter() - started, 1)
    tables = markdown_tables(results)
    write_text_atomic(out / "results.json", json.dumps(results, ensure_ascii=False, indent=1))
    write_text_atomic(out / "results.md", tables)
    print(tables, flush=True)
    if args.write_card or args.push_to_hub:
        model_dir = local_model_dir(args.model, out)
        repo_id = args.push_to_hub or (None if Path(args.model).is_dir() else args.model)
        card = write_card(model_dir, results, tables, repo_id, quality)
        print(f"model card: {card}")
    if args.push_to_hub:
        from poetry_model.hub import push_folder

        print(f"pushed: {push_folder(model_dir, args.push_to_hub, commit_message='Evaluation results and model card')}")
    print(f"results: {out / 'results.json'}, {out / 'results.md'} ({results['seconds']:.0f} s)")
    return results


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
