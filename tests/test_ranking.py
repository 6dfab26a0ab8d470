"""The ranking's repeats and breadth parts on the shipped model: counted as documented, and among real
candidates they pick poems with fewer accidental repeats and broader characters than the score without them."""
from __future__ import annotations

import numpy as np
import pytest

from poetry_model import load
from poetry_model.generation.ranking import BREADTH_WEIGHT, REPEAT_WEIGHT, accidental_repeats
from poetry_model.text import split_with_punctuation

REQUESTS = 40   # 五律 requests of 4 candidates: the form whose ranked poems repeated most


@pytest.fixture(scope="module")
def poet():
    return load()


# Sampled without the sampler's own breadth and repetition penalty (temperature 0.85): the candidates then differ
# most in repeats and in common characters, what the two ranking parts are for. At the current defaults the
# sampler already draws broad, rarely repeating candidates and the parts change few picks (1 in 40 here).
SAMPLING = dict(temperature=0.85, breadth=0.0, repetition_penalty=1.0)


@pytest.fixture(scope="module")
def candidates(poet):
    """Every candidate of REQUESTS real 五律 requests (4 each), best-ranked first."""
    return poet.generate_many([dict(form="五律", seed=500 + i, num_candidates=4, **SAMPLING) for i in range(REQUESTS)])


def han_lines(text: str) -> list[str]:
    return [line[:-1] for line in split_with_punctuation(text)]


def test_accidental_repeats_count_uses_after_the_first_but_not_dieci():
    assert accidental_repeats(["明月照高楼", "流光正徘徊"]) == 0
    assert accidental_repeats(["萧萧班马鸣", "悠悠远客情"]) == 0          # 叠字: one use
    assert accidental_repeats(["明月照高楼", "月光正徘徊"]) == 1
    assert accidental_repeats(["萧萧萧马鸣", "月月照萧楼"]) == 2          # a third in a row, and 萧 again later
    assert accidental_repeats(["山山山"]) == 1


def test_parts_are_the_documented_counts(poet, candidates):
    for poems in candidates:
        for p in poems:
            parts = p.score_parts
            assert parts["repeats"] == pytest.approx(-REPEAT_WEIGHT * accidental_repeats(han_lines(p.text)), abs=1e-3)
            assert parts["breadth"] == pytest.approx(-BREADTH_WEIGHT * poet.char_log_prob(p.text), abs=1e-3)
            assert parts["breadth"] > 0 and p.score == pytest.approx(sum(parts.values()), abs=1e-3)
    assert poet.char_log_prob("不不不不") > poet.char_log_prob("鸂鶒鸂鶒")  # common characters are more probable


def test_ranking_picks_fewer_repeats_and_broader_characters_than_without_the_parts(poet, candidates):
    def best(poems, with_parts: bool):
        def score(p):
            return p.score if with_parts else p.score - p.score_parts["repeats"] - p.score_parts["breadth"]
        return max(poems, key=lambda p: (score(p), -p.candidate))

    new = [best(poems, True).text for poems in candidates]
    old = [best(poems, False).text for poems in candidates]
    assert sum(a != b for a, b in zip(new, old)) >= REQUESTS // 10  # the parts change some choices
    repeats = [np.mean([accidental_repeats(han_lines(t)) for t in picks]) for picks in (new, old)]
    assert repeats[0] < repeats[1]
    common = [np.mean([poet.char_log_prob(t) for t in picks]) for picks in (new, old)]
    assert common[0] < common[1]  # rarer characters in the corpus
    distinct = [len({c for t in picks for c in t if c not in "，。"}) for picks in (new, old)]
    assert distinct[0] >= distinct[1]
    assert new == [poems[0].text for poems in candidates]  # what generate returns first is that choice
