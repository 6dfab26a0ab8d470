"""Writing with the poet on the shipped model: locked lines, per-character alternatives, edits, streaming."""
from __future__ import annotations

from pathlib import Path

import pytest

from poetry_model import load
from poetry_model.prosody import analyze, char_rhyme_groups
from poetry_model.vocab import UnknownCharactersError

MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "tang-lstm"


@pytest.fixture(scope="module")
def poet():
    if not (MODEL / "config.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    return load(MODEL, device="cpu", corpus=None)


def assert_regulated(poem, form: str) -> None:
    """The prosody checker's verdict on the whole poem: the form, rhymed, no tone fault."""
    report = analyze(poem.text)
    assert report.form == form and report.rhymes and report.tone_score == 1.0 and not report.violations, \
        (poem.text, report.violations)


# -- locked lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form,locked", [("七绝", {3: "明月何时照我还"}), ("五律", {"0": "床前明月光"}),
                                         ("七律", {2: "无边落木萧萧下", 5: "百年多病独登台"})])
def test_locked_lines_appear_verbatim_and_the_rest_keeps_the_form(poet, form, locked):
    for seed in (1, 2):
        poems = poet.generate(form=form, seed=seed, locked=locked, num_candidates=2)
        assert 1 <= len(poems) <= 2
        for poem in poems:
            for index, text in locked.items():
                assert poem.lines[int(index)][:-1] == text
            assert_regulated(poem, form)
            assert poem.settings["locked"] == {str(k): v for k, v in locked.items()}


def test_lines_before_a_locked_line_are_ranked_by_how_well_it_follows(poet):
    last = poet.generate(form="七绝", seed=5, locked={3: "明月何时照我还"})
    first = poet.generate(form="七绝", seed=5, locked={0: "明月何时照我还"})
    assert len(last) == len(first) == 1
    # A locked last line has written lines before it: prefixes decoded and ranked by its likelihood.
    assert last[0].score_parts["locked_fit"] < 0
    assert last[0].score == pytest.approx(sum(last[0].score_parts.values()), abs=1e-3)
    # A locked first line is simply continued: nothing to rank, no such part.
    assert "locked_fit" not in first[0].score_parts
    assert first[0].lines[0] == "明月何时照我还，" and last[0].lines[3] == "明月何时照我还。"
    # The written lines rhyme with the locked line's last character (its group was fixed before they were written).
    assert last[0].report.rhyme_group in char_rhyme_groups("还")


@pytest.mark.parametrize("locked,message", [
    ({2: "明月何时照我"}, "locked line 2: 6 characters, 七绝 lines have 7"),
    ({4: "明月何时照我还"}, "locked line 4: a line index must be an integer from 0 to 3"),
    ({"x": "明月何时照我还"}, "locked line 'x': a line index"),
    ({1: "明月何时照我😀"}, "locked line 1 has 1 character"),
    ({1: "明月何时照我月"}, "locked line 1: character 7 '月' is 仄, the tone pattern .* wants 平"),
    ({1: 7}, "locked line 1 must be a string"),
])
def test_bad_locked_lines_are_named(poet, locked, message):
    with pytest.raises(ValueError, match=message):
        poet.generate(form="七绝", seed=1, locked=locked)


def test_unknown_characters_in_a_locked_line_are_listed(poet):
    with pytest.raises(UnknownCharactersError) as info:
        poet.generate(form="五绝", locked={0: "床前明月x"})
    assert info.value.chars == ["x"]


def test_locked_lines_need_a_fixed_form_and_agree_with_prompt_and_acrostic(poet):
    with pytest.raises(ValueError, match="locked lines need a fixed form"):
        poet.generate(locked={0: "床前明月光"})
    with pytest.raises(ValueError, match="acrostic asks for '春'"):
        poet.generate(form="五绝", acrostic="春夏秋冬", locked={0: "床前明月光"})
    with pytest.raises(ValueError, match="prompt writes that line"):
        poet.generate(form="五绝", prompt="床前明月光，疑是", locked={1: "举头望明月"})


def test_a_tone_break_is_accepted_only_when_relaxed_and_then_listed(poet):
    with pytest.raises(ValueError, match="relax_locked=True accepts it"):
        poet.generate(form="七绝", seed=3, locked={1: "明月何时照我月"})
    poem = poet.generate(form="七绝", seed=3, locked={1: "明月何时照我月"}, relax_locked=True)[0]
    assert poem.lines[1] == "明月何时照我月。"
    accepted = [note for note in poem.relaxations if note.startswith("accepted (relax_locked)")]
    assert any("'月' is 仄" in note for note in accepted) and any("not a 平声 rhyme" in note for note in accepted)
    assert poem.settings["relax_locked"] is True
