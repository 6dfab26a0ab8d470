"""Every argument of a generation request, declared once: GenerationConfig's fields carry the
default, the valid range and the help text; `validate` checks a request against them, the command
line (`add_arguments`) and the app's widgets are derived from them.

    cfg = GenerationConfig(form="七绝", acrostic="春夏秋冬", seed=7)
    settings = validate(poet.vocab, cfg)      # -> Settings: resolved, in the model's script
    GenerationConfig.default("temperature")   # 0.8
"""
from __future__ import annotations

import math
import secrets
import unicodedata
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np

from ..prosody import FORMS as FORM_LINES  # form -> (lines, characters per line)
from ..text import ASCII_PUNCTUATION, LINE_ENDS, SCRIPTS, script_of

REQUEST_FORMS = ("free", *FORM_LINES, "五言", "七言")
FORM_ALIASES = {"自由": "free", "五絕": "五绝", "七絕": "七绝", "wujue": "五绝", "qijue": "七绝", "wulv": "五律",
                "qilv": "七律", "wuyan": "五言", "qiyan": "七言"}
OUTPUT_SCRIPTS = ("auto", *SCRIPTS)

MAX_PROMPT, MAX_ACROSTIC, MAX_STYLE, MAX_THEME = 100, 16, 64, 16  # a theme is a title: titles are cut at 16
MAX_CANDIDATES, MAX_LENGTH, DEFAULT_MAX_LENGTH = 64, 512, 124
MAX_TEMPERATURE, MAX_REPETITION_PENALTY = 10.0, 10.0
MAX_SEED = 2**63 - 1
MAX_PARALLEL = MAX_SEASON = MAX_THEME_STRENGTH = 10.0
MAX_BREADTH = 2.0
PARALLELISM = ("auto", "on", "off")
LOCKED_PREFIXES = 8     # candidates decoded at least when generated lines come before a locked line (ranked by fit)


# Cost model: the work of a request is the characters its candidates decode. Each candidate reads
# the style and writes the poem (prompt included, up to max_length, or the form's fixed length), one
# batched model step per character, so time and memory grow with candidates x characters.
MAX_COST = MAX_CANDIDATES * (MAX_STYLE + 1 + MAX_LENGTH)   # the library's own bound (every range at its top)


def request_cost(num_candidates: int, style: int, length: int) -> int:
    """Characters decoded by a request: num_candidates x (style characters + 1 + poem characters)."""
    return num_candidates * ((style + 1 if style else 0) + length)


def poem_length(form: str, max_length: int) -> int:
    """Characters a request's poem can take: the form's fixed length (punctuation included), else max_length."""
    name = FORM_ALIASES.get(form, form)
    if name in FORM_LINES:
        lines, chars = FORM_LINES[name]
        return lines * (chars + 1)
    if name in ("五言", "七言"):  # 绝句 or 律诗 by the acrostic: count the longer
        return 8 * (int(name == "七言") * 2 + 5 + 1)
    return max_length


def check_cost(cost: int, limit: int) -> int:
    """The cost when within `limit`, else a ValueError saying what to reduce."""
    if cost > limit:
        raise ValueError(f"request is too big: {cost} characters to decode (candidates x (style + poem)), "
                         f"at most {limit}; use fewer candidates, a shorter style or a fixed form")
    return cost


# Breadth and repetition penalty by form, chosen with the temperature and top-p on held-out seeds
# (docs/quality.md, "Decoding by form"): a longer poem narrows more at a given temperature (its 3-gram
# score rises with its length), so a 律诗 needs more breadth than a 绝句; real 五律 repeat a character
# half as often as real 七律 (27% against 55%) while the model writes both alike, so 五律 takes a
# stronger penalty. Free verse is not measured against real poems (they have no one shape): it takes
# values between.
BREADTH_BY_FORM = {"五绝": 0.075, "七绝": 0.1, "五律": 0.2, "七律": 0.25, "free": 0.15}
REPETITION_BY_FORM = {"五绝": 1.2, "七绝": 1.2, "五律": 2.0, "七律": 1.2, "free": 1.2}
BY_FORM = {"breadth": BREADTH_BY_FORM, "repetition_penalty": REPETITION_BY_FORM}  # what their default None means


def by_form_text(name: str) -> str:
    """A by-form default as text: "五绝 0.075, 七绝 0.1, ..." (help texts and reports)."""
    return ", ".join(f"{form} {value}" for form, value in BY_FORM[name].items())


def option(default: Any, help: str, *, lo: float | None = None, hi: float | None = None, open_low: bool = False,
           limit: int | None = None, choices: tuple | None = None, flags: tuple[str, ...] = ()) -> Any:
    """A GenerationConfig field: its default plus metadata (help, range, text limit, choices, CLI flags)."""
    return field(default=default, metadata=dict(help=help, lo=lo, hi=hi, open_low=open_low, limit=limit,
                                                choices=choices, flags=flags))


@dataclass(frozen=True)
class GenerationConfig:
    """The arguments of `Poet.generate` as given (unchecked until `validate`)."""

    prompt: str = option("", "the poem's beginning, continued by the model", limit=MAX_PROMPT)
    acrostic: str = option("", "藏头: one head character per line (punctuation and spaces ignored)",
                           limit=MAX_ACROSTIC)
    form: str = option("free", "free, 五绝, 七绝, 五律, 七律, or 五言/七言 (绝句 or 律诗 by the acrostic's length)",
                       choices=REQUEST_FORMS)
    rhyme: bool = option(True, "the form's rhyme constraint", flags=("--no-rhyme",))
    tones: bool = option(True, "the form's tone (平仄) constraint", flags=("--no-tones",))
    rhyme_strength: float = option(1.0, "0..1: 1 = hard mask, s < 1 multiplies off-rhyme probabilities by 1 - s, "
                                        "0 = off", lo=0, hi=1)
    tone_strength: float = option(1.0, "0..1: 1 = hard mask, s < 1 multiplies off-tone probabilities by 1 - s, "
                                       "0 = off", lo=0, hi=1)
    # Decoding defaults chosen by measurement (train/quality.py, docs/quality.md: "Decoding by form").
    temperature: float = option(0.8, "0 = greedy; higher = bolder", lo=0, hi=MAX_TEMPERATURE,
                                flags=("-t", "--temperature"))
    top_k: int | None = option(None, "sample among the k most likely tokens (None = no limit; above the vocabulary "
                                   "size = all of it)", lo=1, hi=2**62)
    top_p: float = option(0.9, "nucleus sampling: the smallest head of the distribution with this mass",
                          lo=0, hi=1, open_low=True)
    repetition_penalty: float | None = option(None, "nats subtracted per earlier use of a character (叠字 exempt "
                                                    "with dieci; None = the form's: " + by_form_text("repetition_penalty") + ")",
                                              lo=0, hi=MAX_REPETITION_PENALTY)
    dieci: bool = option(True, "叠字: a character may double the one before it inside a line (萧萧) free of the "
                               "repetition penalty, the pair counting as one use", flags=("--no-dieci",))
    breadth: float | None = option(None, "vocabulary breadth: nats toward a character per nat it is rarer than the "
                                         "corpus's usual one (the draw follows p(c | poem) / p(c)^breadth; 0 = off; "
                                         "None = the form's: " + by_form_text("breadth") + ")",
                                   lo=0, hi=MAX_BREADTH)
    parallelism: str = option("auto", "对仗: auto (律诗 middle couplets), on (also a 绝句's 2nd and 4th lines) or off",
                              choices=PARALLELISM)
    parallel_strength: float = option(1.0, "对仗 bias: nats per unit of aligned-pair PMI toward the characters that "
                                           "stand opposite in real couplets (0 = off)", lo=0, hi=MAX_PARALLEL)
    season_strength: float = option(3.0, "once a poem names a season (春夏秋冬), nats taken from the opposite one "
                                         "unless the prompt, acrostic or style names both (0 = off, 10 = banned)",
                                    lo=0, hi=MAX_SEASON)
    time_strength: float = option(3.0, "once a poem names dawn (晓晨曙) or night (夜宵), nats taken from the other "
                                       "unless the prompt, acrostic, style or theme names both (0 = off)",
                                  lo=0, hi=MAX_SEASON)
    theme: str = option("", "keywords or a title (秋夜, 送友人, 边塞, 月): characters related to it in the corpus, "
                            "one planned keyword per line, lean the poem toward it; a model that takes titles also "
                            "reads it as the title", limit=MAX_THEME)
    theme_strength: float = option(0.5, "theme bias: nats toward the theme's related characters (times how typical "
                                        "each is) and toward each line's keyword until used (0 = planned, no bias)",
                                   lo=0, hi=MAX_THEME_STRENGTH)
    style: str = option("", "text fed to the model first to set the mood, never printed", limit=MAX_STYLE)
    num_candidates: int = option(1, "poems written, ranked best first (identical ones merged)",
                                 lo=1, hi=MAX_CANDIDATES, flags=("-n", "--num-candidates"))
    seed: int | None = option(None, "random seed (None = drawn, and reported with the poems)", lo=0, hi=MAX_SEED)
    max_length: int = option(DEFAULT_MAX_LENGTH, "characters of the poem, prompt included", lo=1, hi=MAX_LENGTH)
    script: str = option("auto", "output script: auto (that of the prompt/acrostic/style, else the model's), "
                                 "simplified or traditional", choices=OUTPUT_SCRIPTS)
    avoid_copies: bool = option(True, "no generated line equals a corpus line", flags=("--allow-copies",))
    locked: dict | None = option(None, "lines kept verbatim: {line index (0-based, int or digit string): text}; "
                                       "fixed forms only; the other lines keep every rule")
    relax_locked: bool = option(False, "accept locked lines that break the tone pattern or the rhyme (each break "
                                       "listed in the poem's relaxations); off: such a line is a ValueError")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return _CONFIG_NAMES

    @classmethod
    def default(cls, name: str) -> Any:
        return _CONFIG_FIELDS[name].default

    @classmethod
    def meta(cls, name: str) -> dict[str, Any]:
        """The field's metadata: help, lo, hi, open_low, limit, choices, flags."""
        return dict(_CONFIG_FIELDS[name].metadata)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: f.default for name, f in _CONFIG_FIELDS.items()}

    @classmethod
    def describe(cls) -> str:
        """One line per argument: name, default and help (for docstrings and API pages)."""
        return "\n".join(f"{n} (default {cls.default(n)!r}): {cls.meta(n)['help']}" for n in _CONFIG_NAMES)


_CONFIG_FIELDS = {f.name: f for f in fields(GenerationConfig)}
_CONFIG_NAMES = tuple(_CONFIG_FIELDS)
assert all(f.default is not MISSING for f in _CONFIG_FIELDS.values())


@dataclass(frozen=True)
class Settings:
    """The resolved arguments of one `generate` call (texts in the model's script)."""

    prompt: str
    acrostic: str           # the heads only: punctuation and spaces removed
    form: str               # "free" or one of FORM_LINES
    lines: int | None       # line count when fixed (forms, or free verse with an acrostic)
    rhyme: bool
    tones: bool
    rhyme_strength: float
    tone_strength: float
    temperature: float
    top_k: int | None
    top_p: float
    repetition_penalty: float
    dieci: bool
    breadth: float
    parallelism: str
    parallel_strength: float
    season_strength: float
    time_strength: float
    theme: str              # Han characters only, in the model's script ("" = none)
    theme_strength: float
    style: str
    num_candidates: int
    seed: int
    max_length: int
    script: str             # the output script
    avoid_copies: bool
    locked: tuple[tuple[int, str], ...] = ()  # (line index, text in the model's script), by index
    relax_locked: bool = False

    @property
    def rows(self) -> int:
        """Candidates decoded: num_candidates, at least LOCKED_PREFIXES when a generated line precedes a
        locked one (the prefixes are ranked by how well the locked line follows them; see Poet)."""
        return max(self.num_candidates, LOCKED_PREFIXES) if self.generated_before_locked else self.num_candidates

    @property
    def generated_before_locked(self) -> bool:
        """Whether the model writes a line (not given by the prompt) before some locked line."""
        held = {i for i, _ in self.locked}
        written = sum(ch in LINE_ENDS for ch in self.prompt)  # lines the prompt completes
        return any(i not in held for i in range(written, max(held, default=0)))

    @property
    def cost(self) -> int:
        """Characters this request decodes (see `request_cost`): what a scheduler orders and caps by."""
        context = len(self.style) + (len(self.theme) + 1 if self.theme else 0)  # a title ends with <TITLE_END>
        return request_cost(self.rows, context, poem_length(self.form, self.max_length))

    def to_dict(self) -> dict[str, Any]:
        """All fields (= asdict: all values immutable); locked and relax_locked only when used."""
        out = {name: getattr(self, name) for name in _SETTINGS_FIELDS}
        if not self.locked:
            del out["locked"], out["relax_locked"]
        else:
            out["locked"] = {str(i): text for i, text in self.locked}  # JSON's keys are strings
        return out


_SETTINGS_FIELDS = tuple(f.name for f in fields(Settings))


# ---------------------------------------------------------------------------------------------
# Checks (also used by the app for its own, narrower limits)


def _fail(name: str, value: Any, rule: str) -> ValueError:
    shown = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
    shown = shown if len(shown) <= 80 else shown[:60] + f"... ({len(shown)} characters)"
    return ValueError(f"{name} must be {rule}, got {shown}")


def check_number(name: str, value: Any, lo: float, hi: float, *, open_low: bool = False) -> float:
    """A finite real number in [lo, hi] (or (lo, hi] with open_low)."""
    rule = f"a number {'>' if open_low else '>='} {lo:g} and <= {hi:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, value, rule)
    try:
        x = float(value)
    except OverflowError:  # an integer too big for a float
        raise ValueError(f"{name} must be {rule}, got an integer of {len(str(abs(value)))} digits") from None
    if not math.isfinite(x) or x > hi or x < lo or (open_low and x == lo):
        raise _fail(name, value, rule)
    return x


def check_integer(name: str, value: Any, lo: int, hi: int, *, hint: str = "", whole_floats: bool = False) -> int:
    """An integer in [lo, hi]; with whole_floats a float such as 3.0 (JSON's numbers) counts as one."""
    if whole_floats and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise _fail(name, value, f"an integer from {lo} to {hi}{hint}")
    return int(value)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(name, value, "true or false")
    return bool(value)


def check_string(name: str, value: Any, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(name, value, "a string")
    if limit is not None and len(value) > limit:
        raise ValueError(f"{name} is too long: {len(value)} characters, at most {limit}")
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:  # not text: no UTF-8 form (JSON's "\ud800" escape can carry one)
        raise ValueError(f"{name} has an invalid character at position {bad + 1}: a lone surrogate "
                         f"U+{ord(value[bad]):04X}, which is not text")
    return value


def _text(name: str, value: Any, limit: int) -> str:
    """A string without spaces, ASCII ,.?!;: turned into their Chinese forms."""
    text = "".join(ch for ch in check_string(name, value) if not ch.isspace()).translate(ASCII_PUNCTUATION)
    return check_string(name, text, limit)


def _in_range(name: str, value: Any, is_int: bool = False) -> Any:
    m = GenerationConfig.meta(name)
    if is_int:
        return check_integer(name, value, m["lo"], m["hi"])
    return check_number(name, value, m["lo"], m["hi"], open_low=m["open_low"])


def _choice(name: str, value: Any, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise _fail(name, value, f"one of {', '.join(choices)}")
    return value


def clean_acrostic(text: str) -> str:
    """The head characters of an acrostic: punctuation, spaces and invisible characters removed."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PZC")


def _resolve_form(form: Any, heads: int) -> tuple[str, int | None]:
    """Form name and fixed line count; 五言/七言 take 绝句 or 律诗 from the acrostic length."""
    name = FORM_ALIASES.get(form, form) if isinstance(form, str) else form
    if name not in REQUEST_FORMS:
        raise _fail("form", form, f"one of {', '.join(REQUEST_FORMS)}")
    if name in ("五言", "七言"):
        kind = {0: "绝", 4: "绝", 8: "律"}.get(heads)
        if kind is None:
            raise ValueError(f"acrostic has {heads} characters but {name} needs 4 (绝句) or 8 (律诗)")
        name = name[0] + kind
    if name == "free":
        return name, heads or None
    lines = FORM_LINES[name][0]
    if heads > lines:
        raise ValueError(f"acrostic has {heads} characters but a {name} has only {lines} lines")
    return name, lines


def _check_heads_in_prompt(prompt: str, heads: str) -> None:
    """Every line the prompt starts must start with its acrostic head."""
    line, at_start = 0, True
    for ch in prompt:
        if at_start and line < len(heads) and ch != heads[line]:
            raise ValueError(f"prompt line {line + 1} starts with {ch!r} but the acrostic asks for {heads[line]!r}")
        if ch in LINE_ENDS:
            line, at_start = line + (not at_start), True
        else:
            at_start = False
    if heads and line > len(heads):
        raise ValueError(f"prompt has {line} lines but the acrostic only {len(heads)}")


def locked_from_text(text: str) -> dict[str, str]:
    """The command line's form of `locked`: "3=明月何时照我还;0=..." -> {"3": "明月何时照我还", "0": ...}."""
    pairs = [part.split("=", 1) for part in text.replace("；", ";").split(";") if part.strip()]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"locked must look like 3=明月何时照我还;0=..., got {text!r}")
    return {key.strip(): line.strip() for key, line in pairs}


def _check_locked(vocab, locked: Any, form: str, lines: int | None, prompt: str,
                  heads: str) -> tuple[tuple[int, str], ...]:
    """Locked lines as ((index, text in the model's script), ...): a fixed form, indices in range,
    the form's line length, known characters, agreeing with the prompt and the acrostic heads."""
    if locked is None or locked == {}:
        return ()
    if not isinstance(locked, dict):
        raise _fail("locked", locked, "a dict {line index: line text}")
    if form not in FORM_LINES:
        raise ValueError("locked lines need a fixed form (五绝, 七绝, 五律, 七律, or 五言/七言 with an acrostic): "
                         "free verse has no fixed line lengths to hold them")
    length, out = FORM_LINES[form][1], {}
    for key, text in locked.items():
        index = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < lines:
            raise ValueError(f"locked line {key!r}: a line index must be an integer from 0 to {lines - 1} "
                             f"(a {form} has {lines} lines, counted from 0)")
        index = int(index)
        if index in out:
            raise ValueError(f"locked line {index} is given twice")
        name = f"locked line {index}"
        text = _text(name, text, 2 * length).rstrip(LINE_ENDS)  # its closing punctuation may come along
        text = vocab.decode(vocab.encode(text, name))  # the model's script; unknown characters are named
        odd = next((j for j, ch in enumerate(text) if unicodedata.category(ch) != "Lo"), None)
        if odd is not None:
            raise ValueError(f"{name}: character {odd + 1} {text[odd]!r} is not a Han character")
        if len(text) != length:
            raise ValueError(f"{name}: {len(text)} characters, {form} lines have {length}")
        if index < len(heads) and text[0] != heads[index]:
            raise ValueError(f"{name} starts with {text[0]!r} but the acrostic asks for {heads[index]!r}")
        given = prompt[index * (length + 1):index * (length + 1) + length]
        if given and not text.startswith(given):
            raise ValueError(f"{name} is {text!r} but the prompt writes that line as {given!r}")
        out[index] = text
    return tuple(sorted(out.items()))


def validate(vocab, config: GenerationConfig | None = None, /, **kwargs: Any) -> Settings:
    """Check a request (a GenerationConfig, or its fields as keywords); ValueErrors name the parameter
    and the bad value, an unknown keyword is a TypeError as in any call.

    Documented clamping: top_k above the vocabulary size means all of it; seed None draws one."""
    c = GenerationConfig(**kwargs) if config is None else config
    prompt, style = _text("prompt", c.prompt, MAX_PROMPT), _text("style", c.style, MAX_STYLE)
    heads = clean_acrostic(check_string("acrostic", c.acrostic))
    if c.acrostic.strip() and not heads:
        raise ValueError(f"acrostic {c.acrostic!r} has no characters once punctuation and spaces are removed")
    if len(heads) > MAX_ACROSTIC:
        raise ValueError(f"acrostic is too long: {len(heads)} characters, at most {MAX_ACROSTIC}")
    if c.script not in OUTPUT_SCRIPTS:
        raise _fail("script", c.script, f"one of {', '.join(OUTPUT_SCRIPTS)}")
    locked_text = "".join(v for v in c.locked.values() if isinstance(v, str)) if isinstance(c.locked, dict) else ""
    theme = clean_acrostic(_text("theme", c.theme, MAX_THEME))  # keywords may come with separators: 秋夜，月
    if c.theme.strip() and not theme:
        raise ValueError(f"theme {c.theme!r} has no characters once punctuation and spaces are removed")
    out_script = c.script if c.script != "auto" else script_of(prompt + heads + style + theme + locked_text) or vocab.script
    # Texts become the model's script; unknown characters raise with the list of them.
    prompt, heads, style, theme = (vocab.decode(vocab.encode(t, name)) for t, name in
                                   ((prompt, "prompt"), (heads, "acrostic"), (style, "style"), (theme, "theme")))
    name, lines = _resolve_form(c.form, len(heads))
    _check_heads_in_prompt(prompt, heads)
    max_length = _in_range("max_length", c.max_length, is_int=True)
    need = lines * (FORM_LINES[name][1] + 1) if name in FORM_LINES else len(prompt) + 1 + 2 * len(heads)
    if max_length < need:
        raise ValueError(f"max_length={max_length} is too short: this request needs at least {need} characters")
    top_k = None if c.top_k is None else min(_in_range("top_k", c.top_k, is_int=True), len(vocab))
    return Settings(
        prompt=prompt, acrostic=heads, form=name, lines=lines, rhyme=check_flag("rhyme", c.rhyme),
        tones=check_flag("tones", c.tones), rhyme_strength=_in_range("rhyme_strength", c.rhyme_strength),
        tone_strength=_in_range("tone_strength", c.tone_strength), temperature=_in_range("temperature", c.temperature),
        top_k=top_k, top_p=_in_range("top_p", c.top_p),
        repetition_penalty=(REPETITION_BY_FORM[name] if c.repetition_penalty is None
                            else _in_range("repetition_penalty", c.repetition_penalty)),
        dieci=check_flag("dieci", c.dieci),
        breadth=BREADTH_BY_FORM[name] if c.breadth is None else _in_range("breadth", c.breadth),
        parallelism=_choice("parallelism", c.parallelism, PARALLELISM),
        parallel_strength=_in_range("parallel_strength", c.parallel_strength),
        season_strength=_in_range("season_strength", c.season_strength),
        time_strength=_in_range("time_strength", c.time_strength), theme=theme,
        theme_strength=_in_range("theme_strength", c.theme_strength), style=style,
        num_candidates=_in_range("num_candidates", c.num_candidates, is_int=True),
        seed=secrets.randbelow(2**31) if c.seed is None else _in_range("seed", c.seed, is_int=True),
        max_length=max_length, script=out_script, avoid_copies=check_flag("avoid_copies", c.avoid_copies),
        locked=_check_locked(vocab, c.locked, name, lines, prompt, heads),
        relax_locked=check_flag("relax_locked", c.relax_locked))
