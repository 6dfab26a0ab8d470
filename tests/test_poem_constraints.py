"""The 叠字-aware repetition rule and the 对仗 constraint on the shipped model's own poems (20 seeds each)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from poetry_model import load
from poetry_model.couplets import COUPLETS_FILE, CoupletTable, lu_lines
from poetry_model.generation.config import BREADTH_BY_FORM, REPETITION_BY_FORM
from train.quality import accidental_repeat, poem_lines

MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "tang-lstm"
SEEDS = range(20)


@pytest.fixture(scope="module")
def poet():
    if not (MODEL / COUPLETS_FILE).is_file():
        pytest.skip(f"no shipped model with a couplet table at {MODEL}")
    return load(MODEL, device="cpu", corpus=None)


def texts(poet, **kw) -> list[str]:
    return [r[0].text for r in poet.generate_many([dict(seed=s, **kw) for s in SEEDS])]


def dieci_count(poems: list[str]) -> int:
    return sum(a == b for p in poems for line in poem_lines(p) for a, b in zip(line, line[1:]))


def test_dieci_exempt_repeats_drop_and_dieci_stays(poet):
    plain = texts(poet, form="七律", repetition_penalty=0.0, parallelism="off")
    strict = texts(poet, form="七律", repetition_penalty=10.0, dieci=True, parallelism="off")
    no_dieci = texts(poet, form="七律", repetition_penalty=10.0, dieci=False, parallelism="off")
    rate = lambda poems: np.mean([accidental_repeat(p) for p in poems])  # noqa: E731
    assert rate(strict) <= 0.1 < rate(plain)          # repeats outside 叠字 all but banned
    assert dieci_count(no_dieci) == 0                  # without the exemption a doubling is a repeat, banned too
    assert dieci_count(strict) >= 1                    # with it, the model still writes 萧萧, 悠悠


def test_dieci_alone_allows_doubling_once(poet):
    for p in texts(poet, form="七律", repetition_penalty=10.0):
        for line in poem_lines(p):
            assert not any(a == b == c for a, b, c in zip(line, line[1:], line[2:])), p


def test_parallelism_raises_couplet_pmi_and_shares_no_character(poet):
    table = CoupletTable.load(MODEL / COUPLETS_FILE)
    off = poet.generate_many([dict(seed=s, form="五律", parallelism="off") for s in SEEDS])
    on = poet.generate_many([dict(seed=s, form="五律") for s in SEEDS])

    def middle(poems):
        lines = [lu_lines(p[0].text) for p in poems]
        return np.mean([table.score(ls[k], ls[k + 1]) for ls in lines for k in (2, 4)]), lines
    score_off, _ = middle(off)
    score_on, lines = middle(on)
    assert score_on > score_off + 0.3
    for ls in lines:
        for k in (2, 4):
            assert not set(ls[k]) & set(ls[k + 1]), ls
    for p in on:
        assert len(p[0].parallelism) == 4
        assert p[0].parallelism[1] == pytest.approx(table.score(*lu_lines(p[0].text)[2:4]), abs=1e-3)


def test_parallelism_is_optional_for_jueju(poet):
    off = poet.generate_many([dict(seed=s, form="七绝") for s in SEEDS])
    on = poet.generate_many([dict(seed=s, form="七绝", parallelism="on") for s in SEEDS])
    mean = lambda poems: np.mean([p[0].parallelism for p in poems])  # noqa: E731
    assert mean(on) > mean(off) + 0.3
    assert [p[0].settings["parallelism"] for p in off[:1]] == ["auto"]


def test_season_named_once_keeps_its_opposite_away(poet):
    from train.quality import season_clash

    # Poems begun with 秋: without the constraint some 七律 bring in 春 as well (5 of these 20 did), with it none.
    off = texts(poet, form="七律", prompt="秋", season_strength=0.0)
    on = texts(poet, form="七律", prompt="秋", season_strength=10.0)
    assert sum(map(season_clash, on)) == 0 < sum(map(season_clash, off))
    # A prompt naming both seasons asks for them: the pair is left alone.
    both = poet.generate(prompt="春去又秋来，", form="五绝", seed=1, season_strength=10.0)[0].text
    assert "春" in both and "秋" in both


def test_no_rhyme_position_repeats_an_earlier_line_end(poet):
    """重韵: a rhyme character that already ended a line would make the poem not rhyme (this themed
    五绝 once ended lines 1 and 4 with 长); every poem here must rhyme, with distinct rhyme characters."""
    requests = [dict(form=form, seed=s, theme=theme) for form in ("五绝", "七律") for s in SEEDS
                for theme in ("", "边塞")] + [dict(form="五绝", theme="边塞", seed=1094)]
    for result in poet.generate_many(requests):
        poem = result[0]
        ends = [line[-1] for line in poem_lines(poem.text)]
        rhymes = [ends[k] for k in range(1, len(ends), 2)]
        assert poem.report.rhymes, poem.text
        assert len(set(rhymes)) == len(rhymes) and ends[0] not in rhymes, poem.text


def test_breadth_draws_rarer_characters_and_keeps_the_form(poet):
    """`breadth` leans the draw toward characters rarer than the corpus's usual one: over the same seeds
    the poems use more distinct characters and rarer ones, and keep form, rhyme and tones."""
    rarity, index = poet.rarity(), poet.vocab.index
    assert rarity is not None, "the shipped model folder has a themes corpus"
    assert rarity[index["，"]] == 0 and rarity[index["不"]] < 0 < rarity[index["鹧"]]
    off = poet.generate_many([dict(seed=s, form="五律", breadth=0.0) for s in SEEDS])
    on = poet.generate_many([dict(seed=s, form="五律", breadth=0.5) for s in SEEDS])
    chars = lambda poems: [c for p in poems for line in poem_lines(p[0].text) for c in line]  # noqa: E731
    mean_rarity = lambda poems: np.mean([rarity[index[c]] for c in chars(poems)])  # noqa: E731
    assert mean_rarity(on) > mean_rarity(off) + 0.2
    assert len(set(chars(on))) > len(set(chars(off)))
    for [poem, *_] in on:
        report = poem.report
        assert report.form == "五律" and report.rhymes and report.tone_score == 1.0 and not report.violations, poem.text
    assert on[0][0].settings["breadth"] == 0.5


def test_breadth_and_repetition_penalty_by_form_unless_given(poet):
    """Left unset, breadth and the repetition penalty are the form's (a 律诗 narrows more than a 绝句, so it
    gets more breadth; real 五律 repeat least, so they get the strongest penalty); 五言 with eight acrostic
    heads is a 五律 and takes its values; a given value holds for any form."""
    requests = [dict(form=form, seed=1) for form in BREADTH_BY_FORM] + [dict(form="五言", acrostic="春夏秋冬东南西北", seed=1)]
    results = poet.generate_many(requests)
    for name, by_form in (("breadth", BREADTH_BY_FORM), ("repetition_penalty", REPETITION_BY_FORM)):
        assert [result[0].settings[name] for result in results] == [*by_form.values(), by_form["五律"]]
    assert BREADTH_BY_FORM["五绝"] < BREADTH_BY_FORM["五律"] < BREADTH_BY_FORM["七律"]
    assert REPETITION_BY_FORM["五律"] > max(REPETITION_BY_FORM["七律"], REPETITION_BY_FORM["五绝"])
    given = poet.generate(form="五律", seed=1, breadth=0.1, repetition_penalty=1.0)[0].settings
    assert (given["breadth"], given["repetition_penalty"]) == (0.1, 1.0)
    for name in ("breadth", "repetition_penalty"):
        with pytest.raises(ValueError, match=name):
            poet.generate(form="七律", **{name: -1})
