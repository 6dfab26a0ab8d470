"""Themes on the shipped model: the plan is learned from the corpus and related to the theme, themed
poems use it, seasons and times of day stay consistent, bad input is named, form/rhyme/tones hold."""
from __future__ import annotations

import json

import numpy as np
import pytest

from poetry_model import load
from poetry_model.corpus_index import read_corpus
from poetry_model.data import split_indices, title_context
from poetry_model.generation import GenerationConfig
from poetry_model.generation.poet import DEFAULT_MODEL, THEME_WEIGHT

SEEDS = range(6)


@pytest.fixture(scope="module")
def poet():
    return load()


@pytest.fixture(scope="module")
def held_out():
    """Validation-split poems and titles of the shipped corpus: the plan never saw them."""
    texts, titles, _, _ = read_corpus(DEFAULT_MODEL / "corpus.npz")
    _, val = split_indices(len(texts))
    return [texts[i] for i in val], [titles[i] for i in val]


def char_rate(texts: list[str], chars: list[str]) -> np.ndarray:
    """Each character's share of all characters of the texts."""
    joined = "".join(texts)
    return np.array([joined.count(c) for c in chars]) / max(len(joined), 1)


def test_frontier_plan_is_typical_of_held_out_frontier_poems(poet, held_out):
    plan = poet.theme_plan("边塞", 8)
    assert plan.source and plan.poems > 100
    assert len(plan.chars) >= 20 and len(set(plan.keywords)) == 8 and set(plan.keywords) <= set(plan.chars)
    texts, titles = held_out
    frontier = [t for t, title in zip(texts, titles) if "塞" in title or "边" in title]
    assert len(frontier) > 20
    top = list(plan.chars[:12])
    lift = char_rate(frontier, top) / char_rate(texts, top)
    # Learned on the training split, the plan's strongest characters are still far more frequent in
    # held-out poems titled with 边 or 塞 than in poems overall.
    assert np.median(lift) > 3, dict(zip(top, lift.round(1)))


def test_plans_differ_by_theme_and_keep_one_season_and_time(poet):
    autumn_night, farewell = poet.theme_plan("秋夜", 4), poet.theme_plan("送友人", 4)
    assert set(autumn_night.chars[:10]).isdisjoint(farewell.chars[:10])
    assert "秋" in autumn_night.chars and "夜" in autumn_night.chars
    assert "春" not in autumn_night.chars and not set("晓晨曙") & set(autumn_night.chars)
    for theme in ("月", "边塞", "送友人"):
        chars = set(poet.theme_plan(theme, 8).chars)
        assert not ({"春", "秋"} <= chars or {"夏", "冬"} <= chars), theme
        assert not (chars & set("晓晨曙") and chars & set("夜宵")), theme


def test_themed_poems_use_more_typical_characters_than_untitled_ones(poet):
    plan = poet.theme_plan("秋夜", 4)
    themed = [poet.generate(theme="秋夜", form="五绝", seed=s)[0] for s in SEEDS]
    plain = [poet.generate(form="五绝", seed=s)[0] for s in SEEDS]
    share_themed = np.mean([plan.share(p.text) for p in themed])
    share_plain = np.mean([plan.share(p.text) for p in plain])
    assert share_themed > share_plain + 0.1, (share_themed, share_plain)
    for p in themed:  # the report lists the plan and the planned characters the poem uses
        t = p.to_dict()["theme"]
        assert t["theme"] == "秋夜" and t["planned"] == list(plan.chars) and t["keywords"] == list(plan.keywords)
        assert t["used"] == [c for c in plan.chars if c in p.text]
        assert p.score_parts["theme"] == pytest.approx(THEME_WEIGHT * plan.share(p.text), abs=1e-3)
    assert sum(len(p.theme["used"]) for p in themed) >= 2 * len(themed)
    assert all(p.theme is None and p.to_dict()["theme"] is None for p in plain)


def test_theme_keeps_one_season_and_one_time_of_day(poet):
    poems = poet.generate_many([dict(theme="秋夜", form="七律", seed=s, season_strength=10.0, time_strength=10.0)
                                for s in SEEDS])
    for [p] in poems:
        assert "春" not in p.text and not set("晓晨曙") & set(p.text), p.text
    # Named by the prompt, dawn keeps night out of the rest of the poem.
    for [p] in poet.generate_many([dict(prompt="晓", form="五绝", seed=s, time_strength=10.0) for s in SEEDS]):
        assert not set("夜宵") & set(p.text[1:]), p.text


def test_title_taking_model_reads_the_theme_as_its_title(poet):
    request = poet.request(GenerationConfig(theme="秋夜", form="五绝", seed=1))
    assert poet.takes_titles and request.context == title_context(poet.vocab, "秋夜")
    assert poet.request(GenerationConfig(form="五绝", seed=1)).context == [poet.vocab.start_id]


def test_form_rhyme_and_tones_hold_with_a_theme(poet):
    requests = [dict(theme=theme, form=form, seed=s) for theme in ("边塞", "月")
                for form in ("五绝", "七绝", "五律", "七律") for s in (0, 1)]
    for kwargs, [p] in zip(requests, poet.generate_many(requests)):
        assert p.report.form == kwargs["form"] and p.report.rhymes and p.report.tone_score == 1.0, p.text
        assert p == poet.generate(**kwargs)[0] if kwargs["seed"] == 0 and kwargs["form"] == "五绝" else True


@pytest.mark.parametrize("theme, words", [("abc", "theme has 3 character"), ("月" * 17, "theme is too long"),
                                          ("，。 ", "theme '，。 ' has no characters"), (5, "theme must be a string")])
def test_bad_theme_is_named(poet, theme, words):
    with pytest.raises(ValueError, match=words):
        poet.generate(theme=theme, form="五绝", seed=0)


def test_theme_strength_is_checked(poet):
    with pytest.raises(ValueError, match="theme_strength"):
        poet.generate(theme="月", theme_strength=-1)


def test_model_without_titles_still_follows_the_theme(poet):
    """The shipped weights under a config that takes no titles: the theme can only bias the decoding."""
    from dataclasses import replace

    from poetry_model.generation import Poet
    from poetry_model.model import PoetryLSTM

    model = PoetryLSTM(replace(poet.model.config, takes_titles=False))
    model.load_state_dict(poet.model.state_dict())
    model.vocab = poet.vocab
    untitled = Poet(model, themes=DEFAULT_MODEL / "corpus.npz")
    assert not untitled.takes_titles
    request = untitled.request(GenerationConfig(theme="边塞", form="五绝", seed=0))
    assert request.context == [poet.vocab.start_id]  # bias only: no title to read
    plan = untitled.theme_plan("边塞", 4)
    poems = [untitled.generate(theme="边塞", form="五绝", seed=s, theme_strength=3.0)[0] for s in SEEDS]
    plain = [untitled.generate(form="五绝", seed=s)[0] for s in SEEDS]
    assert all(p.report.form == "五绝" and p.report.rhymes for p in poems)
    assert sum(bool(p.theme["used"]) for p in poems) >= len(poems) // 2
    assert np.mean([plan.share(p.text) for p in poems]) > np.mean([plan.share(p.text) for p in plain]) + 0.1


def test_command_line_theme(capsys):
    from poetry_model.__main__ import main

    assert main(["generate", "--theme", "边塞", "--form", "五绝", "--seed", "2", "--json"]) == 0
    [poem] = json.loads(capsys.readouterr().out)
    assert poem["settings"]["theme"] == "边塞" and poem["theme"]["planned"][:2] == ["边", "塞"]
    assert main(["generate", "--theme", "xyz"]) == 2 and "theme" in capsys.readouterr().err


def test_coherence_prefers_real_poems_to_their_lines_shuffled(poet, held_out):
    from poetry_model.text import split_with_punctuation

    poems = [[line[:-1] for line in split_with_punctuation(t)] for t in held_out[0]]
    poems = [p for p in poems if len(p) == 8 and {len(x) for x in p} == {7}][:60]
    shuffled = [[poems[(i + k) % len(poems)][k] for k in range(8)] for i in range(len(poems))]
    real = np.mean([poet.coherence(p) for p in poems])
    assert real > np.mean([poet.coherence(p) for p in shuffled]) + 0.03
    ranked = poet.generate(form="七律", seed=3, num_candidates=3)
    assert all(p.score_parts["coherence"] != 0 and p.score_parts["parallelism"] > 0 for p in ranked)


def test_model_folder_without_corpus_plans_the_theme_itself(poet):
    from poetry_model.generation import Poet

    bare = Poet(poet.model)  # no corpus.npz: nothing to plan from or score coherence with
    [p] = bare.generate(theme="边塞", form="五绝", seed=1)
    assert p.theme["planned"] == ["边", "塞"] and p.theme["source"].startswith("theme only")
    assert p.report.form == "五绝" and p.score_parts["coherence"] == 0.0
