"""Writing with the poet on the shipped model: locked lines, per-character alternatives, edits, streaming."""
from __future__ import annotations

from pathlib import Path

import pytest

from poetry_model import load
from poetry_model.prosody import analyze, char_rhyme_groups, char_tones
from poetry_model.vocab import UnknownCharactersError

MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "tang-lstm"


@pytest.fixture(scope="module")
def poet():
    if not (MODEL / "config.json").is_file():
        pytest.skip(f"no shipped model at {MODEL}")
    return load(MODEL, device="cpu", corpus=None)


def assert_regulated(text: str, form: str) -> None:
    """The prosody checker's verdict on a whole poem: the form, rhymed, no tone fault."""
    report = analyze(text)
    assert report.form == form and report.rhymes and report.tone_score == 1.0 and not report.violations, \
        (text, report.violations)


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
            assert_regulated(poem.text, form)
            assert poem.settings["locked"] == {str(k): v for k, v in locked.items()}


def test_no_line_written_before_a_locked_one_ends_on_its_rhyme_character(poet):
    """重韵 across a locked line: the lines written before it cannot see it, so its last character is
    reserved from the start and no earlier rhyme position takes it."""
    results = poet.generate_many([dict(form="七绝", seed=seed, locked={3: "明月何时照我还"}) for seed in range(16)])
    for [poem] in results:
        assert all(not line[:-1].endswith("还") for line in poem.lines[:3]), poem.text
        assert_regulated(poem.text, "七绝")


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


# -- alternatives and edits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qijue(poet):
    poems = [poet.generate(form="七绝", seed=seed)[0] for seed in (7, 8)]
    assert all(p.report.regulated for p in poems)
    return poems


@pytest.mark.parametrize("position", [25, 30])  # the last line: its 2nd character (a 二四六 tone), its rhyme
def test_alternatives_keep_every_rule_and_are_ranked_probabilities(poet, qijue, position):
    for poem in qijue:
        alts = poet.alternatives(poem.text, position, k=8, form="七绝")
        assert 1 <= len(alts) <= 8
        probs = [a["prob"] for a in alts]
        assert probs == sorted(probs, reverse=True) and all(p > 0 for p in probs) and sum(probs) <= 1 + 1e-6
        assert len({a["char"] for a in alts}) == len(alts)
        for a in alts:  # each one, put in its place, leaves the poem regulated (checked by the prosody engine)
            edited = poem.text[:position] + a["char"] + poem.text[position + 1:]
            assert_regulated(edited, "七绝")


def test_alternatives_follow_the_locked_lines_rhyme(poet):
    poem = poet.generate(form="七绝", seed=4, locked={3: "明月何时照我还"})[0]
    alts = poet.alternatives(poem.text, 14, k=10, form="七绝", locked={3: "明月何时照我还"})
    groups = set(char_rhyme_groups("还"))
    assert alts and all(set(char_rhyme_groups(a["char"])) & groups for a in alts)
    assert "还" not in {a["char"] for a in alts}  # the locked rhyme character is not used twice


@pytest.mark.parametrize("kwargs,message", [
    (dict(position=7), "position 7 is the punctuation '，'"),
    (dict(position=32), "position must be an integer from 0 to 31"),
    (dict(position=-1), "position must be an integer"),
    (dict(k=51), "k must be an integer from 1 to 50, got 51"),
    (dict(k=10**9), "k must be an integer from 1 to 50"),
    (dict(k=0), "k must be an integer from 1 to 50"),
    (dict(form="五绝"), "text does not fit"),
    (dict(locked={3: "明月何时照我还"}), "locked line 3 is '明月何时照我还' but the prompt writes"),
])
def test_bad_alternatives_requests_are_named(poet, qijue, kwargs, message):
    request = {"text": qijue[0].text, "position": 3, "k": 5, "form": "七绝", **kwargs}
    with pytest.raises(ValueError, match=message):
        poet.alternatives(**request)


def test_a_partial_poem_and_a_locked_position_are_refused(poet, qijue):
    with pytest.raises(ValueError, match="text is not a whole 七绝: 24 characters"):
        poet.alternatives(qijue[0].text[:24], 3, form="七绝")
    text = qijue[0].text
    with pytest.raises(ValueError, match="position 9 is in locked line 1"):
        poet.alternatives(text, 9, form="七绝", locked={1: text[8:15]})


def test_replace_keeps_a_fitting_edit_and_recontinues_a_breaking_one(poet, qijue):
    poem = qijue[0]
    # A 2nd-line character changed to one of its alternatives: every later rule still holds.
    alt = next(a["char"] for a in poet.alternatives(poem.text, 12, k=5, form="七绝", seed=poem.seed)
               if a["char"] != poem.text[12])
    kept = poet.replace(poem.text, 12, alt, form="七绝", seed=poem.seed)
    assert kept.edit == "kept" and kept.text == poem.text[:12] + alt + poem.text[13:]
    assert kept.to_dict()["edit"] == "kept" and kept.score_parts["lm"] < 0
    # The first rhyme moved to another group: the later rhymes no longer fit, the rest is written again.
    # The first rhyme ends line 1 if the report reads that line as rhymed (a polyphone such as 望 or 亲 may
    # stand either way), else line 2; the new character is one read 平 alone.
    group = set(char_rhyme_groups(poem.text[30]))
    first = 6 if poem.report.first_line == "入韵" else 14
    other = next(a["char"] for a in poet.alternatives(poem.text, first, k=50, form="七绝")
                 if char_tones(a["char"]) == {"平"} and not set(char_rhyme_groups(a["char"])) & group)
    redone = poet.replace(poem.text, first, other, form="七绝", seed=poem.seed)
    assert redone.edit == "recontinued" and redone.text[:first + 1] == poem.text[:first] + other
    assert redone.text != poem.text[:first] + other + poem.text[first + 1:]
    assert_regulated(redone.text, "七绝")
    with pytest.raises(ValueError, match="cannot stand at position 30: excluded by the rhyme"):
        poet.replace(poem.text, 30, "月", form="七绝")
    assert "edit" not in poem.to_dict()


# -- streaming ------------------------------------------------------------------------------------


def test_stream_yields_lines_as_decoded_then_the_poems_of_generate(poet):
    events = list(poet.stream(form="七律", seed=3, num_candidates=2))
    lines = [e["lines"] for e in events if e["event"] == "line"]
    assert [e["event"] for e in events] == ["line"] * 8 + ["poems"]
    assert [len(x) for x in lines] == list(range(1, 9)) and all(x[:-1] == y for x, y in zip(lines[1:], lines))
    poems = events[-1]["poems"]
    assert [p.to_dict() for p in poems] == [p.to_dict() for p in poet.generate(form="七律", seed=3, num_candidates=2)]
    single = list(poet.stream(form="五绝", seed=9))
    assert single[-2]["lines"] == single[-1]["poems"][0].lines  # one candidate: its lines are the poem's
    with pytest.raises(ValueError, match="temperature"):
        next(poet.stream(temperature=-1))


def test_batcher_streams_lines_before_the_future_resolves(poet):
    from poetry_model.generation import Batcher

    server = Batcher(poet)
    seen: list[tuple[list[str], bool]] = []
    held: dict = {}  # the Future, once submit returned (a line may come before)

    def listen(event: dict) -> None:
        seen.append((event["lines"], "future" in held and held["future"].done()))

    streamed = held["future"] = server.submit(form="五律", seed=6, on_line=listen)
    quiet = server.submit(form="五绝", seed=6)  # decoded alongside, without a listener
    poems = streamed.result(120)
    assert [len(lines) for lines, _ in seen] == list(range(1, 9)) and not any(done for _, done in seen)
    assert seen[-1][0] == poems[0].lines
    assert [p.to_dict() for p in poems] == [p.to_dict() for p in poet.generate(form="五律", seed=6)]
    assert quiet.result(120)[0].text == poet.generate(form="五绝", seed=6)[0].text
    events = list(server.stream(form="五律", seed=6))
    assert [e["lines"] for e in events[:-1]] == [lines for lines, _ in seen]
    assert [p.to_dict() for p in events[-1]["poems"]] == [p.to_dict() for p in poems]


def test_edits_keep_the_poems_script(poet):
    poem = poet.generate(form="七绝", seed=31, script="traditional")[0]
    assert poem.script == "traditional"
    alts = poet.alternatives(poem.text, 5, k=10, form="七绝")  # "auto": the whole text's script, not the prefix's
    simplified = poet.alternatives(poem.text, 5, k=10, form="七绝", script="simplified")
    assert [a["prob"] for a in alts] == [a["prob"] for a in simplified]
    assert any(a["char"] != b["char"] for a, b in zip(alts, simplified))  # the same characters, each script's form
    edited = poet.replace(poem.text, 5, alts[1]["char"], form="七绝", seed=31)
    assert edited.script == "traditional" and edited.text[:6] == poem.text[:5] + alts[1]["char"]


def test_the_command_line_takes_locked_lines(capsys):
    from poetry_model.__main__ import main

    assert main(["generate", "--form", "七绝", "--seed", "1", "--locked", "3=明月何时照我还", "--json",
                 "--model", str(MODEL)]) == 0
    assert '"明月何时照我还。"' in capsys.readouterr().out
    assert main(["generate", "--form", "七绝", "--locked", "2=明月何时照我还", "--model", str(MODEL)]) == 2
    assert "locked line 2: character 7 '还' is 平" in capsys.readouterr().err


def test_alternatives_apply_the_couplet_rule_as_the_decoder_does(poet):
    poem = poet.generate(form="七律", seed=11)[0]
    position = 3 * 8 + 2  # the 4th line answers the 3rd (对仗): its 3rd character
    paired = poet.alternatives(poem.text, position, k=20, form="七律")
    plain = poet.alternatives(poem.text, position, k=20, form="七律", parallelism="off")
    assert not {a["char"] for a in paired} & set(poem.lines[2])  # no character of the line it answers
    assert [a["char"] for a in paired] != [a["char"] for a in plain]  # drawn toward the opposite characters
