"""The generation engine: forms, acrostic, rhyme and tones, sampling controls, novelty, scripts, bad input, CLI."""
from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

from poetry_model.__main__ import main
from poetry_model.corpus_index import CorpusIndex
from poetry_model.data import load_npz, save_npz
from poetry_model.generation import FORM_LINES, LINE_ENDS, MAX_CANDIDATES, MAX_FREE_LINE, MaskVectors, Poet, load
from poetry_model.model import PoetryConfig, PoetryLSTM
from poetry_model.novelty import LineIndex, find_line_index, hash_lines, line_hash, write_line_hashes
from poetry_model.prosody import analyze
from poetry_model.vocab import UnknownCharactersError, to_script

POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
SENTENCE_ENDS = "。？！"


@pytest.fixture(scope="module")
def poet(tiny_model_dir) -> Poet:
    """The tiny random model, with no copy index (tests that need one set it)."""
    return load(tiny_model_dir, device="cpu", corpus=None)


def check_form(poem, form: str) -> None:
    """Exact shape, and the prosody checker's own verdict: rhymes, no tone fault."""
    n_lines, length = FORM_LINES[form]
    assert len(poem.lines) == n_lines and "".join(poem.lines) == poem.text
    for i, line in enumerate(poem.lines):
        assert len(line) == length + 1 and line[-1] == "，。"[i % 2], poem.text
    report = analyze(poem.text)
    assert report.form == form and report.rhymes and report.tone_score == 1.0 and not report.violations, poem.text
    assert poem.prosody["form"] == form and poem.relaxations == []


# --- forms, rhyme, tones ------------------------------------------------------------------------
@pytest.mark.parametrize("form", list(FORM_LINES))
def test_forms_are_exact_and_regulated_over_many_seeds(poet, form):
    for seed in range(3):
        poems = poet.generate(form=form, num_candidates=8, seed=seed)
        assert 1 <= len(poems) <= 8
        for poem in poems:
            check_form(poem, form)


def test_rhyme_and_tones_can_be_switched_off(poet):
    free_rhyme = poet.generate(form="五律", rhyme=False, tones=False, num_candidates=16, seed=1)
    assert all(len(p.lines) == 8 for p in free_rhyme)
    assert not all(p.report.rhymes for p in free_rhyme)  # a random model rarely rhymes on its own
    assert min(p.report.tone_score for p in free_rhyme) < 1.0
    # A soft strength only lowers off-pattern characters (top_k off: near-uniform random logits would
    # otherwise leave only on-pattern ones in the top 50).
    soft = poet.generate(form="五律", rhyme_strength=0.5, tone_strength=0.5, num_candidates=16, seed=1, top_k=None,
                         top_p=1.0)
    assert not all(p.report.rhymes and p.report.tone_score == 1.0 for p in soft)


def test_soft_strength_multiplies_probability_by_one_minus_strength():
    mask = np.array([True, False, True])
    vectors = MaskVectors(np.ones(3, bool))
    assert vectors.penalty(mask, 0.5)[1] == pytest.approx(math.log(0.5))
    assert vectors.penalty(mask, 1.0)[1] == -math.inf and vectors.penalty(mask, 1.0)[0] == 0
    assert vectors.single(np.array([False, True, False])) == 1 and vectors.single(mask) is None


# --- acrostic -----------------------------------------------------------------------------------
@pytest.mark.parametrize("form, acrostic, n_lines", [
    ("七绝", "春夏秋冬", 4), ("五律", "春夏秋冬花鸟风月", 8), ("七言", "春, 夏 秋。冬", 4),
    ("五言", "一二三四五六七八", 8), ("七律", "春夏", 8)])
def test_acrostic_heads_with_every_form(poet, form, acrostic, n_lines):
    heads = re.sub(r"[\s,。]", "", acrostic)
    for poem in poet.generate(acrostic=acrostic, form=form, num_candidates=4, seed=3):
        assert len(poem.lines) == n_lines
        assert [line[0] for line in poem.lines[:len(heads)]] == list(heads)
        assert poem.report.rhymes and poem.report.tone_score == 1.0 and not poem.report.violations


def test_free_verse_acrostic_sets_the_line_count(poet):
    for temperature in (0.0, 0.8):
        for poem in poet.generate(acrostic="春？夏 秋！冬", temperature=temperature, num_candidates=3, seed=5):
            assert [line[0] for line in poem.lines] == list("春夏秋冬")
            assert poem.text[-1] in SENTENCE_ENDS


# --- free verse, sampling controls, the step cap ------------------------------------------------
def test_free_verse_is_clean_and_never_loops(poet):
    for poem in poet.generate(num_candidates=4, seed=11, max_length=80):
        assert 2 <= len(poem.text) <= 80 and poem.text[-1] in SENTENCE_ENDS
        assert all(1 <= len(line) - 1 <= MAX_FREE_LINE and line[-1] in LINE_ENDS for line in poem.lines)
        assert all(ch in LINE_ENDS or poet.token_classes.char[poet.vocab.index[ch]] for ch in poem.text)


@pytest.fixture
def looping_poet(tiny_model_dir) -> Poet:
    """A model that wants to say 风月 forever: the classic failure of greedy decoding."""
    poet = load(tiny_model_dir, device="cpu", corpus=None)
    with torch.no_grad():
        for ch in "风月":
            poet.model.head.bias[poet.vocab.index[ch]] += 30.0
    return poet


def test_repetition_guard_stops_loops(looping_poet):
    text = looping_poet.generate(temperature=0, max_length=60, seed=0)[0].text
    pairs = [line[j:j + 2] for line in re.split(f"[{LINE_ENDS}]", text) for j in range(len(line) - 1)]
    assert len(pairs) == len(set(pairs)), text  # no pair of characters twice
    assert len(set(text)) > 20


def test_free_verse_runs_to_at_least_a_quatrain_even_when_the_model_wants_to_stop(tiny_model_dir):
    eager = load(tiny_model_dir, device="cpu", corpus=None)
    with torch.no_grad():  # a model that would end the poem at the first chance
        eager.model.head.bias[eager.vocab.eop_id] += 30.0
        for ch in "。":
            eager.model.head.bias[eager.vocab.index[ch]] += 10.0
    for poem in eager.generate(num_candidates=4, seed=5, max_length=80):
        assert len(poem.lines) >= 4 and poem.text[-1] in SENTENCE_ENDS, poem.text
    short = eager.generate(seed=5, max_length=8)[0]  # the length limit still wins
    assert len(short.text) <= 8


def test_prompt_is_continued(poet):
    poem = poet.generate("床前明月光，", form="五绝", seed=2)[0]
    assert poem.text.startswith("床前明月光，")
    check_form(poem, "五绝")
    free = poet.generate("春眠", seed=2, max_length=20)[0]
    assert free.text.startswith("春眠") and len(free.text) <= 20
    assert poet.continue_text("春眠", max_new_tokens=20, seed=3) == poet.continue_text("春眠", max_new_tokens=20, seed=3)


def test_temperature_zero_is_greedy(poet):
    a = poet.generate(form="七绝", temperature=0, seed=1)[0]
    b = poet.generate(form="七绝", temperature=0, seed=2)[0]
    assert a.text == b.text  # no randomness left


def test_candidates_are_ranked_by_the_documented_score(poet):
    poems = poet.generate(form="五绝", num_candidates=6, seed=4)
    assert [p.rank for p in poems] == list(range(1, len(poems) + 1))
    assert [p.score for p in poems] == sorted((p.score for p in poems), reverse=True)
    for p in poems:
        assert set(p.score_parts) == {"lm", "prosody", "novelty", "coherence", "parallelism", "theme", "repeats", "breadth"}
        assert p.score == pytest.approx(sum(p.score_parts.values()), abs=1e-3)
        assert p.score_parts["lm"] == pytest.approx(p.log_prob / p.sampled_tokens, abs=1e-3)
        assert p.score_parts["prosody"] == pytest.approx(1.0)


def test_same_arguments_and_seed_give_the_same_poems(poet):
    kwargs = dict(acrostic="春夏秋冬", form="七绝", num_candidates=4, style="大漠孤烟直")
    first = [p.to_dict() for p in poet.generate(seed=7, **kwargs)]
    assert first == [p.to_dict() for p in poet.generate(seed=7, **kwargs)]
    assert [p["text"] for p in first] != [p.text for p in poet.generate(seed=8, **kwargs)]
    drawn = poet.generate(**kwargs)
    assert [p.text for p in drawn] == [p.text for p in poet.generate(seed=drawn[0].seed, **kwargs)]


def test_style_sets_the_mood_but_is_not_printed(poet):
    plain = poet.generate(form="五绝", seed=3, num_candidates=2)
    styled = poet.generate(form="五绝", seed=3, num_candidates=2, style="大漠孤烟直")
    assert [p.text for p in plain] != [p.text for p in styled]
    assert all(not p.text.startswith("大漠") for p in styled) and styled[0].settings["style"] == "大漠孤烟直"


def test_stepper_matches_the_model(poet):
    ids = poet.vocab.encode(POEM)[:10]
    with torch.inference_mode():
        feats, state = poet.stepper.prefill([poet.vocab.start_id], 1, poet.device)
        logits, _ = poet.model(torch.tensor([[poet.vocab.start_id] + ids]))
        for t, tok in enumerate(ids):
            assert torch.allclose(poet.model.scores(feats), logits[:, t], atol=1e-4)
            feats, state = poet.stepper.step(torch.tensor([tok]), state)


def test_stepper_log_probs_are_the_models(poet, tiny_model_dir):
    """The step weights give the model's own log-probabilities, with a full or an adaptive softmax head."""
    adaptive = PoetryLSTM(PoetryConfig.for_vocab(poet.vocab, embedding_dim=32, hidden_dim=48,
                                                  softmax_cutoffs=[2000, 5000]))
    adaptive.vocab = poet.vocab
    ids = [poet.vocab.start_id] + poet.vocab.encode(POEM)[:12]
    for p in (poet, Poet(adaptive)):
        with torch.inference_mode():
            want = torch.log_softmax(p.model(torch.tensor([ids]))[0][0].float(), -1)
            feats, state = p.stepper.prefill(ids[:1], 1, p.device)
            for t, tok in enumerate(ids[1:]):
                assert torch.allclose(p.stepper.log_probs(feats)[0], want[t], atol=1e-4)
                feats, state = p.stepper.step(torch.tensor([tok]), state)


def test_a_row_gets_the_same_numbers_alone_or_in_any_batch(poet):
    """What makes batched requests reproducible: every row's step and log-probabilities are bitwise
    those it gets alone, whatever else is in the batch."""
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        feats, state = poet.stepper.prefill([poet.vocab.start_id], 1, poet.device)
        rows = [(feats, state)]
        for _ in range(9):  # a few different states: batches up to 10 rows, past BLAS's 4-row blocks
            tok = torch.tensor([int(rng.integers(len(poet.vocab)))])
            feats, state = poet.stepper.step(tok, state)
            rows.append((feats, state))
        tokens = torch.tensor(rng.integers(len(poet.vocab), size=len(rows)))
        alone = [poet.stepper.step(tokens[i:i + 1], st) for i, (_, st) in enumerate(rows)]
        for n in (2, 3, 5, len(rows)):
            batch_state = [(torch.cat([st[k][0] for _, st in rows[:n]]), torch.cat([st[k][1] for _, st in rows[:n]]))
                           for k in range(len(rows[0][1]))]
            feats_n, _ = poet.stepper.step(tokens[:n], batch_state)
            assert all(torch.equal(feats_n[i], alone[i][0][0]) for i in range(n))
            logp_n = poet.stepper.log_probs(torch.cat([f for f, _ in rows[:n]]))
            assert all(torch.equal(logp_n[i], poet.stepper.log_probs(rows[i][0])[0]) for i in range(n))


def test_step_weights_follow_changes_to_the_model(tiny_model_dir):
    poet = load(tiny_model_dir, device="cpu", corpus=None)
    before = poet.generate(temperature=0, max_length=20)[0].text
    with torch.no_grad():
        poet.model.head.bias[poet.vocab.index["月"]] += 50.0  # in place: the copies must be rebuilt
    poet.refresh()
    after = poet.generate(temperature=0, max_length=20)[0].text
    assert "月" in after and after != before


REQUESTS = [dict(form="七律", seed=1), dict(acrostic="春夏秋冬", form="七绝", num_candidates=3, seed=2),
            dict(prompt="春风", max_length=30, seed=3), dict(form="五绝", temperature=0, seed=4),
            dict(form="五律", top_k=None, top_p=0.9, num_candidates=2, seed=5),
            dict(style="大漠孤烟直", form="五绝", rhyme_strength=0.5, tone_strength=0.5, seed=6),
            dict(acrostic="长安月", top_k=None, top_p=1.0, seed=7, script="traditional"),
            dict(form="七绝", temperature=1.2, top_k=5, repetition_penalty=3.0, seed=8)]


def test_generate_many_gives_each_request_its_own_poems(poet):
    """Requests decoded together (different forms, lengths, candidates and sampling settings) give
    exactly what each gives alone; a bad request gets its own error and the others are unaffected."""
    bad = dict(form="sonnet")
    results = poet.generate_many(REQUESTS[:4] + [bad] + REQUESTS[4:])
    assert isinstance(results[4], ValueError) and "form must be" in str(results[4])
    del results[4]
    for kwargs, poems in zip(REQUESTS, results):
        assert [p.to_dict() for p in poems] == [p.to_dict() for p in poet.generate(**kwargs)], kwargs
    assert poet.generate_many([]) == []


def test_batcher_serves_many_threads_with_the_poems_of_generate(poet):
    from concurrent.futures import ThreadPoolExecutor

    from poetry_model.generation import Batcher

    batcher = Batcher(poet, max_rows=4)  # small: requests also wait for room
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        results = list(pool.map(lambda kw: batcher.generate(**kw), REQUESTS * 2))
    for kwargs, poems in zip(REQUESTS * 2, results):
        assert [p.to_dict() for p in poems] == [p.to_dict() for p in poet.generate(**kwargs)], kwargs
    with pytest.raises(ValueError, match="temperature must be"):
        batcher.generate(temperature=-1)
    with pytest.raises(ValueError, match="prompt does not fit"):
        batcher.generate("床前明月光，", form="七绝")
    assert batcher.generate(form="五绝", seed=9)[0].text == poet.generate(form="五绝", seed=9)[0].text


# --- scripts ------------------------------------------------------------------------------------
def test_output_script_follows_the_input_or_the_request(poet):
    trad = poet.generate(acrostic="風花雪月", form="五绝", seed=1)[0]
    assert trad.script == "traditional" and to_script(trad.text, "traditional") == trad.text
    assert [line[0] for line in trad.lines] == list("風花雪月")
    simp = poet.generate(acrostic="風花雪月", form="五绝", seed=1, script="simplified")[0]
    assert [line[0] for line in simp.lines] == list("风花雪月") and simp.script == "simplified"
    assert poet.generate(acrostic="风花雪月", form="五绝", seed=1, script="traditional")[0].text == trad.text
    assert poet.generate(form="五绝", seed=1)[0].script == poet.vocab.script


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-0.1), "temperature must be"), (dict(temperature=float("nan")), "temperature must be"),
    (dict(temperature="hot"), "temperature must be"), (dict(top_k=0), "top_k must be"),
    (dict(top_k=-3), "top_k must be"), (dict(top_p=0.0), "top_p must be"), (dict(top_p=1.5), "top_p must be"),
    (dict(top_p=float("nan")), "top_p must be"), (dict(num_candidates=0), "num_candidates must be"),
    (dict(num_candidates=MAX_CANDIDATES + 1), "num_candidates must be"), (dict(num_candidates=10**9), "num_candidates"),
    (dict(seed=-1), "seed must be"), (dict(seed=1.5), "seed must be"), (dict(form="sonnet"), "form must be"),
    (dict(script="latin"), "script must be"), (dict(rhyme_strength=2), "rhyme_strength must be"),
    (dict(max_length=0), "max_length must be"), (dict(max_length=10, form="七律"), "max_length=10 is too short"),
    (dict(prompt="春" * 101), "prompt is too long"), (dict(acrostic="春" * 17), "acrostic is too long"),
    (dict(acrostic="，。 !"), "no characters once punctuation"),
    (dict(acrostic="春夏秋冬花", form="七绝"), "only 4 lines"), (dict(acrostic="春夏秋", form="七言"), "needs 4"),
    (dict(prompt="床前明月光，疑是", acrostic="春夏"), "prompt line 1 starts with '床'"),
    (dict(prompt="床前明月光，", form="七绝"), "prompt does not fit a 七绝"),
    (dict(prompt=123), "prompt must be a string"), (dict(avoid_copies="yes"), "avoid_copies must be"),
])
def test_bad_arguments_name_the_parameter(poet, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        poet.generate(**kwargs)


def test_unknown_characters_are_listed(poet):
    with pytest.raises(UnknownCharactersError, match=r"acrostic has 2 character\(s\).*'😀' 'A'"):
        poet.generate(acrostic="春😀A冬")
    with pytest.raises(UnknownCharactersError, match=r"prompt has 1 character\(s\).*'x'"):
        poet.generate("春x")


def test_documented_clamping_and_blank_input(poet):
    poem = poet.generate("  ", top_k=10**12, seed=1, max_length=30)[0]
    assert poem.settings["top_k"] == len(poet.vocab) and poem.settings["prompt"] == ""
    assert poet.generate("床前明月光,", form="五绝", seed=1)[0].text.startswith("床前明月光，")  # ASCII comma


# --- novelty ------------------------------------------------------------------------------------
def test_line_hashes_are_stable_and_ship_with_the_model(tiny_model_dir, small_npz, tmp_path):
    assert line_hash("床前明月光") == 0x4411C7F9F256FF12  # BLAKE2b-64: the same on every run and machine
    dataset = load_npz(small_npz)
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    write_line_hashes(dataset, model_dir)
    index = find_line_index(model_dir)
    first = re.split(f"[{LINE_ENDS}]", dataset.poem_text(0))[0]
    assert first in index and "不在语料中的句子" not in index
    assert find_line_index(tiny_model_dir) is None
    poet = load(model_dir, device="cpu", corpus=None)
    report = poet.generate(form="五绝", seed=1)[0].copy
    assert report["checked"] == "lines" and "python -m train.prepare" in report["note"]


def test_copy_guard_rejects_a_planted_corpus_line(tiny_model_dir):
    poet = load(tiny_model_dir, device="cpu", corpus=None)
    for form in ("五绝", "free"):
        greedy = poet.generate(form=form, temperature=0, avoid_copies=False, max_length=40)[0]
        planted = re.split(f"[{LINE_ENDS}]", greedy.text)[1]
        poet.lines = LineIndex(hash_lines([planted + "。"]))
        guarded = poet.generate(form=form, temperature=0, max_length=40)[0]
        assert planted not in re.split(f"[{LINE_ENDS}]", guarded.text)
        assert guarded.copy["avoided"] >= 1 and guarded.copy["copied_lines"] == []
        assert guarded.relaxations == []
        poet.lines = None


@pytest.fixture(scope="module")
def planted_corpus(tmp_path_factory, poet):
    """A tiny tang.npz holding a known poem with title and author."""
    vocab = poet.vocab
    texts = [POEM, "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"]
    rows = np.full((2, 125), vocab.pad_id, np.int32)
    for i, text in enumerate(texts):
        ids = [vocab.start_id] + vocab.encode(text) + [vocab.eop_id]
        rows[i, -len(ids):] = ids
    path = tmp_path_factory.mktemp("corpus") / "tang.npz"
    save_npz(path, rows, vocab, ["静夜思", "登鹳雀楼"], ["李白", "王之涣"])
    return path


def test_full_copy_report_names_the_nearest_poem(tiny_model_dir, planted_corpus):
    poet = load(tiny_model_dir, device="cpu", corpus=planted_corpus)
    poem = poet.generate("举头望明月，低头", form="五绝", seed=1, avoid_copies=False)[0]
    report = poem.copy
    assert report["checked"] == "full" and report["longest_span"].startswith("举头望明月，低头")
    assert report["span_poem"]["title"] == "静夜思" and report["nearest"]["author"] == "李白"
    assert report["copied_lines"] == ["举头望明月"] and poem.score_parts["novelty"] < 0
    # The cached index loads again without rebuilding.
    assert planted_corpus.with_name("tang.copyindex.npz").is_file()
    assert CorpusIndex.for_npz(planted_corpus).longest_span("黄河入海流")[0] == "黄河入海流"


def test_corpus_queries_agree_with_a_plain_search(planted_corpus):
    """The suffix-array search (packed two-character keys, then narrowing) against str.find."""
    index = CorpusIndex.for_npz(planted_corpus)
    text = index.text

    def count(s: str) -> int:
        n, at = 0, text.find(s)
        while at >= 0:
            n, at = n + 1, text.find(s, at + 1)
        return n

    pieces = {p[i:j] for p in text.split("\n") for i in range(len(p)) for j in range(i + 1, min(len(p), i + 12) + 1)}
    pieces |= {"", "月光", "明月光，疑是地上霜", "光，疑", "海流。欲", "黄河入海流。", "x", "春x", "明月x", "𧯆"}
    for s in sorted(pieces):
        lo, hi = index._range(s)
        assert max(hi - lo, 0) == (count(s) if s else len(index.sa)), s
        assert all(text.startswith(s, int(index.sa[r])) for r in range(lo, hi)), s
    assert index.longest_span("低头思故乡，白日依山") == ("低头思故乡", 0)
    assert index.longest_span("春风") == ("", None)
    nearest, similarity = index.nearest("黄河入海流，千里目")
    assert nearest == 1 and 0 < similarity <= 1


# --- command line -------------------------------------------------------------------------------
def test_cli_prints_poems_and_json(tiny_model_dir, planted_corpus, capsys):
    args = ["generate", "--model", str(tiny_model_dir), "--corpus", str(planted_corpus), "--acrostic", "春夏秋冬",
            "--form", "七绝", "--seed", "7"]
    assert main(args + ["-n", "2", "--json"]) == 0
    poems = json.loads(capsys.readouterr().out)
    assert 1 <= len(poems) <= 2
    for poem in poems:
        assert {"text", "lines", "score", "prosody", "copy", "settings", "seed"} <= set(poem)
        assert [line[0] for line in poem["lines"]] == list("春夏秋冬") and poem["prosody"]["form"] == "七绝"
    assert main(args) == 0
    assert "#1  score" in capsys.readouterr().out
    assert main(args + ["--temperature", "-1"]) == 2
    assert "error: temperature must be" in capsys.readouterr().err


def test_top_p_keeps_the_nucleus_of_a_full_sort_whatever_head_is_sorted():
    """The sampler sorts only a head of each row when the nucleus fits in it: the tokens it keeps (and
    their order) must equal those of sorting the whole row, for peaked, Zipf-like and flat rows."""
    from poetry_model.generation.sampling import NUCLEUS_HEADS, sample, truncated

    gen = torch.Generator().manual_seed(0)
    vocab = 9000
    zipf = -torch.log(torch.arange(1, vocab + 1, dtype=torch.float32))[torch.randperm(vocab, generator=gen)]
    rows = torch.stack([zipf * 3, zipf * 1.2, zipf * 0.6, torch.randn(vocab, generator=gen) * 0.1,
                        torch.randn(vocab, generator=gen) * 4])
    rows[1, :4000] = -math.inf  # masked tokens, as the constraints leave them
    lengths = set()
    for top_p in (0.5, 0.9, 0.95, 0.999):
        for row in rows:
            logits, ids = truncated(row[None], 0.85, None, top_p)
            kept = ids[0][logits[0] > -math.inf].tolist()
            order = torch.sort(row / 0.85, descending=True, stable=True).indices
            assert kept == order[:len(kept)].tolist()  # the most probable tokens, most probable first
            # ...and as many as the nucleus needs: in float64, the mass before the last kept token is
            # below top_p and all kept tokens reach it, up to float32 rounding (a token whose mass-before
            # lies within 1e-6 of top_p may fall either way, as CPUs round sums differently).
            probs = torch.softmax(row.double() / 0.85, -1)[order]
            before = probs.cumsum(0) - probs
            assert before[len(kept) - 1] < top_p + 1e-6 and before[len(kept)] >= top_p - 1e-6
            lengths.add(ids.shape[-1])
    assert lengths & set(NUCLEUS_HEADS) and vocab in lengths  # both a head and the whole row were sorted
    # The draw: a row's token comes from its nucleus with its probability, whoever shares the batch.
    picks = sample(rows[:1].repeat(4000, 1), 0.85, None, 0.9, torch.Generator().manual_seed(1))
    nucleus = set(truncated(rows[:1], 0.85, None, 0.9)[1][0][:64].tolist())
    assert set(picks.tolist()) <= nucleus and len(set(picks.tolist())) > 1
