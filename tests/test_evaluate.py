"""train.evaluate and train.kneser_ney: every metric on a tiny model and a data slice, Kneser-Ney
correctness, the model card and the push, and the shipped checkpoint."""
from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from fake_hub import fake_hub, run_python  # noqa: F401  (fake_hub is a fixture)
from huggingface_hub import ModelCard

from poetry_model.data import dedup_split, load_npz, split_indices, strip_padding
from poetry_model.generation.config import BREADTH_BY_FORM, REPETITION_BY_FORM
from poetry_model.model import PoetryLSTM
from poetry_model.prosody import analyze
from train.evaluate import LM_KEYS, MODES, SAMPLE_KEYS, SHARE_KEYS, main
from train.kneser_ney import KneserNey, fit_and_score
from train.quality import main as quality_main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "tang-lstm"
SAMPLES = 4


@pytest.fixture(scope="module")
def evaluation(tiny_model_dir, full_npz, tmp_path_factory):
    """One run of the evaluator on the tiny model (and the same model again as the baseline), 300 poems,
    its card with the tables of a small real train.quality run."""
    tmp = tmp_path_factory.mktemp("evaluate")
    model = shutil.copytree(tiny_model_dir, tmp / "model")
    out = tmp / "eval"
    quality_main(["--data", str(full_npz), "--num-poems", "10", "--forms", "五绝", "--out", str(tmp / "quality")])
    results = main(["--model", str(model), "--baseline", str(tiny_model_dir), "--data", str(full_npz),
                    "--limit-poems", "300", "--samples", str(SAMPLES), "--batch-size", "3", "--out", str(out),
                    "--write-card", "--quality", str(tmp / "quality" / "quality.json"), "--threads", "1"])
    return results, out, model


def _in_unit(value) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


# --- the evaluator -------------------------------------------------------------------------------

def test_every_metric_is_present_and_in_range(evaluation):
    results, out, _ = evaluation
    ds = load_npz(results["data"]["path"])
    ds.data = ds.data[:300]
    train_idx, val_idx, _ = dedup_split(ds)  # the default split: de-duplicated
    n_val = len(val_idx)
    assert results["data"] == {"path": results["data"]["path"], "poems": 300, "train_poems": len(train_idx),
                               "val_poems": n_val, "split": "dedup",
                               "limit_poems": 300}
    assert set(results["models"]) == {"model", "baseline"}
    for entry in results["models"].values():
        lm = entry["validation"]
        assert set(LM_KEYS) <= set(lm)
        assert 8.0 < lm["cross_entropy"] < 10.0  # a random model: about ln(8928) = 9.1
        assert lm["bits_per_char"] == pytest.approx(lm["cross_entropy"] / math.log(2))
        assert lm["perplexity"] == pytest.approx(math.exp(lm["cross_entropy"]))
        assert lm["poems"] == n_val and lm["tokens"] > n_val * 10 and lm["cross_entropy_titled"] is None
        assert list(entry["samples"]) == list(MODES)
        for mode, s in entry["samples"].items():
            assert set(SAMPLE_KEYS) <= set(s), mode
            assert s["samples"] == SAMPLES
            for key in SHARE_KEYS:
                if s[key] is None:  # documented n/a: free verse has no asked form; no uniform lines, no template
                    assert (key == "form_exact" and mode == "free") or \
                        (key == "tone_conformity" and mode in ("free", "acrostic")), (mode, key)
                else:
                    assert _in_unit(float(s[key])), (mode, key, s[key])
            assert s["mean_length"] > 0 and s["mean_lines"] >= 1 and 0 <= s["whole_poem_copies"] <= SAMPLES
            assert s["duplicates_merged"] >= 0 and s["copies_avoided"] == 0  # copy guard off by default
        for form in ("五绝", "七绝", "五律", "七律"):  # the engine's masks make forms exact; the checker agrees
            s = entry["samples"][form]
            assert s["form_exact"] == 1.0 and s["rhyme_rate"] == 1.0 and s["tone_conformity"] == 1.0
            assert s["mean_length"] == {"五绝": 20, "七绝": 28, "五律": 40, "七律": 56}[form]
        assert entry["samples"]["acrostic"]["form_exact"] == 1.0
    kn = results["kn"]
    assert kn["order"] == 5 and kn["discount"] == 0.75 and kn["tokens"] == results["models"]["model"]["validation"]["tokens"]
    assert 4.0 < kn["cross_entropy"] < results["models"]["model"]["validation"]["cross_entropy"]
    assert set(results["reference"]) == {"free", "五绝", "七绝", "五律", "七律"}
    assert results["reference"]["free"]["samples"] == SAMPLES


def test_same_seeds_for_every_model(evaluation):
    results, _, _ = evaluation
    strip = lambda entry: {m: {k: v for k, v in s.items() if k != "seconds"} for m, s in entry["samples"].items()}  # noqa: E731
    model, baseline = results["models"]["model"], results["models"]["baseline"]
    assert strip(model) == strip(baseline)  # the same weights, seeds and heads give the same poems
    assert model["validation"]["cross_entropy"] == baseline["validation"]["cross_entropy"]


def test_output_files(evaluation):
    results, out, _ = evaluation
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(results))
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "5-gram Kneser-Ney" in table and "validation poems" in table
    for mode in MODES:
        assert f"| model | {mode} |" in table and f"| baseline | {mode} |" in table
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * len(MODES) * SAMPLES
    acrostic = [r for r in rows if r["mode"] == "acrostic"]
    assert all(len(r["heads"]) == 4 and analyze(r["text"]).lines[0][0] == r["heads"][0] for r in acrostic)
    assert not list(out.glob("*.tmp"))


def test_write_card_has_model_index_with_the_metrics(evaluation):
    results, _, model = evaluation
    card = ModelCard.load(model / "README.md")
    [entry] = card.data.to_dict()["model-index"]
    [result] = entry["results"]
    assert result["dataset"]["split"] == "validation"
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    lm = results["models"]["model"]["validation"]
    assert metrics == pytest.approx({k: lm[k] for k in ("cross_entropy", "bits_per_char", "perplexity")})
    assert "5-gram Kneser-Ney" in card.text and "| model | 七律 |" in card.text
    quality = card.text.split("## Poems against real poems", 1)[1]
    assert "1 candidate per poem" in quality and f"breadth 五绝 {BREADTH_BY_FORM['五绝']}" in quality
    assert f"repetition_penalty 五绝 {REPETITION_BY_FORM['五绝']}" in quality
    assert "#### 五绝 (n = 10 generated and 10 real)" in quality and "| classifier accuracy" in quality
    assert "\n- no theme, 五绝: " in quality  # a sample poem of the run
    PoetryLSTM.from_pretrained(model)  # the card does not disturb loading


def test_a_card_is_refused_a_quality_file_that_is_not_a_report(tiny_model_dir, full_npz, tmp_path):
    bad = tmp_path / "quality.json"
    bad.write_text('{"forms": {}}')
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    card_before = (model / "README.md").read_bytes() if (model / "README.md").exists() else None
    with pytest.raises(SystemExit, match="--quality .*quality.json: not a train.quality report"):
        main(["--model", str(model), "--data", str(full_npz), "--limit-poems", "300", "--lm-only",
              "--out", str(tmp_path / "eval"), "--write-card", "--quality", str(bad), "--threads", "1"])
    after = (model / "README.md").read_bytes() if (model / "README.md").exists() else None
    assert after == card_before and not (tmp_path / "eval").exists()  # refused before any work or write


def test_push_to_hub_uploads_the_folder_with_the_card(fake_hub, tiny_model_dir, full_npz, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    run_python(f"""
import sys
from train.evaluate import main
main(["--model", {str(model)!r}, "--data", {str(full_npz)!r}, "--limit-poems", "100", "--samples", "1",
      "--kn-order", "3", "--out", {str(tmp_path / 'eval')!r}, "--push-to-hub", "tester/tang-eval", "--threads", "1"])
""", fake_hub.env(tmp_path / "hf_home"), timeout=180)
    files = fake_hub.files("tester/tang-eval")
    assert {"README.md", "config.json", "model.safetensors", "vocab.json"} <= set(files)
    card = ModelCard(files["README.md"].decode("utf-8"))
    assert {r.metric_type for r in card.data.eval_results} == {"cross_entropy", "bits_per_char", "perplexity"}
    assert "3-gram Kneser-Ney" in card.text


def test_a_model_of_another_vocabulary_is_refused(tiny_model_dir, small_npz, tmp_path):
    with pytest.raises(SystemExit, match="another vocabulary"):
        main(["--model", str(tiny_model_dir), "--data", str(small_npz), "--samples", "1", "--out", str(tmp_path)])


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "train.evaluate", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--baseline" in proc.stdout and "repetition_rate" in proc.stdout


# --- Kneser-Ney ----------------------------------------------------------------------------------

S, PAD, EOP, V = 0, 1, 2, 9


def reference_kn(train: list[list[int]], order: int, discount: float = 0.75):
    """A direct, dict-based interpolated Kneser-Ney (KenLM's adjusted counts): P(w | history)."""
    raw = defaultdict(int)
    for poem in train:
        for t in range(1, len(poem)):
            for k in range(1, min(order, t + 1) + 1):
                raw[tuple(poem[t - k + 1:t + 1])] += 1
    left = defaultdict(set)
    for gram in raw:
        if len(gram) > 1:
            left[gram[1:]].add(gram[0])
    targets = [w for w in range(V) if w not in (S, PAD)]

    def a(gram):
        return raw.get(gram, 0) if len(gram) == order or gram[0] == S else len(left.get(gram, ()))

    def prob(history, w):
        counts = [a((u,)) for u in targets]
        p = max(a((w,)) - discount, 0) / sum(counts) + discount * sum(c > 0 for c in counts) / sum(counts) / len(targets)
        for k in range(2, order + 1):
            if len(history) < k - 1:
                break
            ctx = tuple(history[len(history) - (k - 1):])
            counts = [a(ctx + (u,)) for u in targets]
            if sum(counts):
                p = (max(a(ctx + (w,)) - discount, 0) + discount * sum(c > 0 for c in counts) * p) / sum(counts)
        return p
    return prob


def toy_poems(n: int, rng: random.Random) -> list[list[int]]:
    return [[S] + [rng.choice([3, 4, 5, 6, 7]) for _ in range(rng.randint(1, 8))] + [EOP] for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_kn_matches_a_direct_implementation_and_sums_to_one(order):
    rng = random.Random(order)
    train, held_out = toy_poems(40, rng), toy_poems(10, rng) + [[S, 8, 3, EOP]]  # 8: never seen in training
    model = KneserNey(V, S, (PAD,), order=order).fit([np.array(p) for p in train])
    prob = reference_kn(train, order)
    got = model.position_log_probs([np.array(p) for p in held_out])
    want = [math.log(prob(p[max(0, t - order + 1):t], p[t])) for p in held_out for t in range(1, len(p))]
    assert got == pytest.approx(want, abs=1e-12)
    for history in ([S], [S, 3], [3, 4, 5, 6], [8, 8, 8, 8], [S, 3, 4, 5, 6, 7], []):
        dist = model.distribution(history)
        assert dist.sum() == pytest.approx(1.0, abs=1e-12) and dist[S] == 0 and dist[PAD] == 0 and (dist[2:] > 0).all()
        assert dist[2:] == pytest.approx([prob(history[-(order - 1):] if order > 1 else [], w) for w in range(2, V)])


def test_kn_on_real_poems_sums_to_one_and_beats_a_unigram(small_npz):
    ds = load_npz(small_npz)
    train_idx, val_idx = split_indices(len(ds))
    vocab = ds.vocab
    model = KneserNey(len(vocab), vocab.start_id, (vocab.pad_id,)).fit(strip_padding(ds.data[train_idx], vocab.pad_id))
    poem = strip_padding(ds.data[val_idx[:1]], vocab.pad_id)[0]
    for history in (poem[:1], poem[:3], poem[:12], [vocab.index["，"]] * 4):
        dist = model.distribution(list(history))
        assert dist.sum() == pytest.approx(1.0, abs=1e-9) and dist[vocab.start_id] == dist[vocab.pad_id] == 0
    result = fit_and_score(ds, train_idx, val_idx)
    # Add-one unigram over the same targets (every token but <START> and padding).
    train_tokens = np.concatenate([r[1:] for r in strip_padding(ds.data[train_idx], vocab.pad_id)])
    counts = np.bincount(train_tokens, minlength=len(vocab)) + 1.0
    counts[[vocab.start_id, vocab.pad_id]] = 0
    val_tokens = np.concatenate([r[1:] for r in strip_padding(ds.data[val_idx], vocab.pad_id)])
    unigram = float(-np.log(counts[val_tokens] / counts.sum()).mean())
    assert result["tokens"] == len(val_tokens)
    assert result["cross_entropy"] < unigram - 0.3, (result, unigram)


# --- the shipped checkpoint ----------------------------------------------------------------------

@pytest.mark.skipif(not SHIPPED.is_dir(), reason=f"no shipped checkpoint yet at {SHIPPED.relative_to(REPO)}/ "
                                                  "(it is added when the release run finishes)")
def test_shipped_checkpoint_loads_strictly_and_writes_a_valid_wujue():
    from poetry_model.generation import Poet

    model = PoetryLSTM.from_pretrained(SHIPPED, strict=True)
    assert model.vocab is not None and not model.training
    poem = Poet(model, "cpu").generate(form="五绝", seed=7)[0]
    report = analyze(poem.text)
    assert report.form == "五绝" and report.rhymes, poem.text
    assert [len(line) for line in report.lines] == [5, 5, 5, 5]


# --- a model that takes titles -------------------------------------------------------------------

@pytest.fixture(scope="module")
def titled_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model grown by <TITLE_END> and marked as taking titles (random weights)."""
    from poetry_model.vocab import TITLE_END

    model = PoetryLSTM.from_pretrained(tiny_model_dir)
    model.extend_vocab(model.vocab.extended([TITLE_END]))
    model.config.takes_titles = True
    out = tmp_path_factory.mktemp("titled") / "model"
    model.save_pretrained(out)
    return out


def test_titled_model_reports_both_readings_and_title_following(titled_model_dir, full_npz, tmp_path):
    from train.title_eval import main as title_main
    from train.title_eval import shuffled_titles

    results = main(["--model", str(titled_model_dir), "--data", str(full_npz), "--limit-poems", "300",
                    "--lm-only", "--out", str(tmp_path / "eval"), "--threads", "1"])
    lm = results["models"]["model"]["validation"]
    assert 8.0 < lm["cross_entropy"] < 10.0 and 8.0 < lm["cross_entropy_titled"] < 10.0
    assert lm["titled_poems"] > 0.9 * lm["poems"] and "reference" not in results
    assert "nats/char after the title" in (tmp_path / "eval" / "results.md").read_text(encoding="utf-8")

    r = title_main(["--model", str(titled_model_dir), "--data", str(full_npz), "--limit", "40", "--samples", "6",
                    "--shown", "1", "--out", str(tmp_path / "titles"), "--threads", "1"])
    assert r["lm"]["poems"] == 40 and all(8.0 < r["lm"][k] < 10.0 for k in ("untitled", "own_title", "random_title"))
    c = r["content"]
    assert c["samples"] == 6 and all(0.0 <= c[k] <= 1.0 for k in c if k != "samples")
    assert c["real_poem_own_title"] > c["real_poem_random_title"]  # real poets do reuse their titles' words
    assert all(len(poems) == 1 and poems[0] for poems in r["shown"].values())
    assert (tmp_path / "titles" / "title_eval.md").is_file()
    titles = [f"t{i}" for i in range(9)]
    assert all(a != b for a, b in zip(titles, shuffled_titles(titles, 0)))
    assert sorted(shuffled_titles(titles, 0)) == titles


def test_title_eval_refuses_an_untitled_model(tiny_model_dir, full_npz, tmp_path):
    from train.title_eval import main as title_main

    with pytest.raises(SystemExit, match="does not take titles"):
        title_main(["--model", str(tiny_model_dir), "--data", str(full_npz), "--out", str(tmp_path)])
