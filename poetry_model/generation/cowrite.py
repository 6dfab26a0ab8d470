"""Writing with the poet: lines streamed as they are decoded, the characters that fit one position,
an edited character, and how well written lines lead into locked ones.

`stream` yields candidate 0's lines as they are decoded, then the poems; `alternatives(text,
position, k)` lists the most probable characters that keep every rule at one position of a poem;
`replace(text, position, char)` puts one there and keeps the poem, or writes the rest again when a
later rule no longer holds (`poem.edit`). `locked_fit` scores candidates whose written lines come
before a locked line (the LSTM reads left to right, so those lines cannot see it while written).
Each is a function of the Poet; `Poet.stream`, `Poet.alternatives`, `Poet.replace` and
`Poet.locked_fit` are the public names and carry the full documentation.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..prosody import FORMS as FORM_LINES
from ..text import LINE_ENDS, to_script
from ..vocab import UnknownCharactersError
from .config import GenerationConfig, validate
from .engine import Decoder, Engine

if TYPE_CHECKING:
    from .poet import Poem, Poet

MAX_ALTERNATIVES = 50   # Poet.alternatives: at most this many characters per position


def stream(poet: Poet, prompt: str = "", **options: Any) -> Iterator[dict[str, Any]]:
    """Poet.stream: decode one step at a time, yielding candidate 0's lines as it finishes them, then the poems."""
    request = poet.request(GenerationConfig(prompt=prompt, **options))
    events: list[dict[str, Any]] = []
    request.on_line = events.append
    engine = None
    while engine is None or engine:
        with poet.decoding():  # entered per step, so the caller's code never runs under it
            if engine is None:
                engine = Engine(poet)
                engine.add(request)
            engine.step()
        while events:
            lines = events.pop(0)["lines"]
            yield {"event": "line", "lines": lines, "text": "".join(lines)}
    yield {"event": "poems", "poems": poet.poems(request)}


def alternatives(poet: Poet, text: str, position: int, k: int = 5, **settings: Any) -> list[dict[str, Any]]:
    """Poet.alternatives: the k most probable characters the constraints allow at `position`, renormalised."""
    k = check_k(k)
    dec, text = edit_request(poet, text, position, dict(settings))
    scores, forced = constrained_scores(poet, dec)
    if forced is not None:
        return [{"char": shown(poet, dec, forced), "prob": 1.0}]
    picked, refused = [], []
    for tok in torch.argsort(scores, descending=True).tolist():
        if math.isinf(scores[tok]) or len(picked) == k:
            break
        (refused if dec.refused(0, tok) else picked).append(tok)
    scores[refused] = -math.inf
    probs = torch.softmax(scores, dim=-1)
    return [{"char": shown(poet, dec, tok), "prob": round(float(probs[tok]), 6)} for tok in picked]


def replace(poet: Poet, text: str, position: int, char: str, **settings: Any) -> Poem:
    """Poet.replace: the poem with `char` at `position`, kept when every later character still fits, else
    written again from there."""
    settings = dict(settings)
    dec, text = edit_request(poet, text, position, settings)  # fixes settings["script"] from the whole text
    name = "char"
    if not isinstance(char, str) or len(char.strip()) != 1:
        raise ValueError(f"{name} must be one character, got {char!r}")
    (tok,) = poet.vocab.encode(poet.vocab.decode(poet.vocab.encode(char.strip(), name)), name)
    if not poet.token_classes.char[tok]:
        raise ValueError(f"{name} must be a Han character, got {char!r}")
    scores, forced = constrained_scores(poet, dec)
    if (forced is not None and forced != tok) or math.isinf(scores[tok]) or dec.refused(0, tok):
        rules = ["acrostic or locked line"] if forced is not None and forced != tok else \
            dec.excluding(0, tok) or ["copy guard (it would complete a corpus line)"]
        raise ValueError(f"{name} {char!r} cannot stand at position {position}: excluded by the "
                         f"{', '.join(rules)} rule(s); Poet.alternatives lists the characters that can")
    edited = text[:position] + shown(poet, dec, tok) + text[position + 1:]
    poem = kept(poet, edited, position, settings)
    if poem is None:
        poem = poet.generate(prompt=edited[:position + 1], **settings)[0]
        poem.edit = "recontinued"
    return poem


def locked_fit(poet: Poet, request: Decoder) -> list[float]:
    """Poet.locked_fit: per candidate, the mean log-probability of the locked characters after a written line."""
    s, tc = request.s, poet.token_classes
    held = dict(s.locked)
    first = min(i for i in range(max(held)) if i not in held and i >= sum(ch in LINE_ENDS for ch in s.prompt))
    seqs = [request.head + row.tokens for row in request.rows]
    width = max(map(len, seqs))
    with poet.decoding():
        x = torch.tensor([seq + [poet.vocab.eop_id] * (width - len(seq)) for seq in seqs], device=poet.device)
        logp = torch.log_softmax(poet.model(x[:, :-1])[0].float(), dim=-1)
        logp = logp.gather(-1, x[:, 1:, None])[..., 0].tolist()
    out = []
    for k, row in enumerate(request.rows):
        line, total, count = 0, 0.0, 0
        for j, tok in enumerate(row.tokens):
            if line in held and line > first and tc.char[tok]:
                total += logp[k][len(request.head) + j - 1]
                count += 1
            line += bool(tc.line_end[tok])
        out.append(total / count if count else 0.0)
    return out


def check_k(k: Any) -> int:
    """`alternatives`' k as an int from 1 to MAX_ALTERNATIVES (ValueError otherwise)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_ALTERNATIVES:
        raise ValueError(f"k must be an integer from 1 to {MAX_ALTERNATIVES}, got {k!r}")
    return int(k)


def edit_request(poet: Poet, text: Any, position: Any, settings: dict[str, Any]) -> tuple[Decoder, str]:
    """The checked poem text and a one-candidate request whose prompt is the text before `position`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text must be a poem's text, got {text!r}")
    text = text.strip()
    if any(ch.isspace() for ch in text):
        raise ValueError("text must be the poem's text without spaces or line breaks (positions index it)")
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 0 <= position < len(text):
        raise ValueError(f"position must be an integer from 0 to {len(text) - 1} (an index into the poem's "
                         f"text, punctuation included), got {position!r}")
    if text[position] in LINE_ENDS or not text[position].isalpha():
        raise ValueError(f"position {position} is the punctuation {text[position]!r}: choose a character")
    options = {**settings, "num_candidates": 1}
    options.pop("script", None)
    try:
        whole = validate(poet.vocab, GenerationConfig(prompt=text, **options, script=settings.get("script", "auto")))
    except UnknownCharactersError as error:
        raise UnknownCharactersError(error.chars, "text" if error.what == "prompt" else error.what) from None
    try:
        Decoder(poet, whole)  # the text must fit the form
    except ValueError as error:
        raise ValueError(f"text does not fit: {error}") from None
    if len(whole.prompt) != len(text):
        raise ValueError("text changes length in the model's script; give it in that script")
    if whole.form in FORM_LINES:
        lines, chars = FORM_LINES[whole.form]
        if len(text) != lines * (chars + 1):
            raise ValueError(f"text is not a whole {whole.form}: {len(text)} characters with punctuation, "
                             f"a {whole.form} has {lines * (chars + 1)}")
    if whole.form in FORM_LINES and position // (chars + 1) in dict(whole.locked):
        line = position // (chars + 1)
        raise ValueError(f"position {position} is in locked line {line}: unlock it to change it")
    settings["script"] = whole.script  # the whole text's script ("auto" would read only the part before)
    return poet.request(GenerationConfig(prompt=text[:position], **options, script=whole.script)), text


def constrained_scores(poet: Poet, dec: Decoder) -> tuple[torch.Tensor, int | None]:
    """Candidate 0's next-token scores (model log-probabilities plus every constraint's layer) and the
    token a constraint forces there, if any."""
    forced = dec.forced(dec.rows[0])
    with poet.decoding():
        engine = Engine(poet)
        engine.add(dec)
        logp = engine.net.log_probs(engine.feats[:1])[0].float()
    bias = np.empty((1, len(poet.vocab)), np.float32)
    dec.bias([0], bias)
    if not np.isfinite(bias).any():
        bias[0] = dec.relaxed(0)
    return logp + torch.from_numpy(bias[0]), forced


def shown(poet: Poet, dec: Decoder, tok: int) -> str:
    """A token in the request's output script."""
    ch = poet.vocab.tokens[tok]
    return ch if dec.s.script == poet.vocab.script else to_script(ch, dec.s.script)


def kept(poet: Poet, text: str, position: int, settings: dict[str, Any]) -> Poem | None:
    """The edited poem as it stands when every character from `position` on meets the hard rules, else None."""
    request = poet.request(GenerationConfig(**{**settings, "prompt": text, "num_candidates": 1}))
    tokens = poet.vocab.encode(request.s.prompt)
    walk = poet.request(GenerationConfig(**{**settings, "num_candidates": 1}))
    row, unforced = walk.rows[0], []
    bias = np.empty((1, len(poet.vocab)), np.float32)
    for j, tok in enumerate(tokens):
        forced = walk.forced(row)
        if forced is None:
            unforced.append(j)
        if j >= position:
            if forced is not None:
                if forced != tok:
                    return None
            else:
                walk.bias([0], bias)
                if math.isinf(bias[0, tok]) or walk.refused(0, tok):
                    return None
        walk.advance(0, tok)
    with poet.decoding():
        x = torch.tensor([request.head + tokens], device=poet.device)
        logp = torch.log_softmax(poet.model(x[:, :-1])[0].float(), dim=-1)[0]
    start = len(request.head) - 1
    chosen = [j for j in unforced if poet.token_classes.char[tokens[j]]]
    request.rows[0].log_prob = float(sum(logp[start + j, tokens[j]] for j in chosen))
    request.rows[0].sampled = len(chosen)
    poem = poet.poems(request)[0]
    poem.edit = "kept"
    return poem
