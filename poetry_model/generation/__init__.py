"""Generation: a loaded model writes ranked poems under composable constraints.

    poet = load()                                   # the shipped model (or load("runs/x/best"), load("user/repo"))
    poems = poet.generate(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5)
    many = poet.generate_many([dict(form="五绝", seed=1), dict(acrostic="春夏", seed=2)])  # decoded together
    server = Batcher(poet); server.generate(form="七律")  # from any thread: concurrent calls share steps

Modules: `config` (GenerationConfig: every argument's default, range and help; `validate`),
`constraints` (one class per rule on the next token), `sampling` (top-k/top-p per request
generator), `stepper` (the LSTM laid out for one-token steps), `engine` (a request's candidates,
and continuous batching of many requests), `poet` (Poet, Poem, scoring, `load`), `batcher`
(Batcher: requests from many threads). The decoding itself is described in `poet`.
"""
from __future__ import annotations

from ..prosody import FORMS as FORM_LINES
from ..text import LINE_ENDS, SENTENCE_ENDS, split_with_punctuation
from .batcher import Batcher
from .config import (
                     DEFAULT_MAX_LENGTH,
                     FORM_ALIASES,
                     FORMS,
                     MAX_ACROSTIC,
                     MAX_CANDIDATES,
                     MAX_LENGTH,
                     MAX_PROMPT,
                     MAX_REPETITION_PENALTY,
                     MAX_STYLE,
                     MAX_TEMPERATURE,
                     GenerationConfig,
                     Settings,
                     clean_acrostic,
                     validate,
)
from .constraints import (
                     COPY_RETRIES,
                     MAX_FREE_LINE,
                     MIN_FREE_LINES,
                     Acrostic,
                     Constraint,
                     CopyGuard,
                     FreeState,
                     LineState,
                     MaskVectors,
                     NoRepeatPairs,
                     Repetition,
                     Rhyme,
                     Structure,
                     TokenClasses,
                     Tone,
                     build_constraints,
)
from .engine import Decoder, Engine, Row
from .poet import DEFAULT_CORPUS, DEFAULT_MODEL, Poem, Poet, load, pick_device, score_parts, torch_threads
from .sampling import sample
from .stepper import Stepper

__all__ = [
    "Acrostic", "Batcher", "COPY_RETRIES", "Constraint", "CopyGuard", "DEFAULT_CORPUS", "DEFAULT_MAX_LENGTH",
    "DEFAULT_MODEL", "Decoder", "Engine", "FORMS", "FORM_ALIASES", "FORM_LINES", "FreeState", "GenerationConfig",
    "LINE_ENDS", "LineState", "MAX_ACROSTIC", "MAX_CANDIDATES", "MAX_FREE_LINE", "MAX_LENGTH", "MAX_PROMPT",
    "MAX_REPETITION_PENALTY", "MAX_STYLE", "MAX_TEMPERATURE", "MIN_FREE_LINES", "MaskVectors", "NoRepeatPairs",
    "Poem", "Poet", "Repetition", "Rhyme", "Row", "SENTENCE_ENDS", "Settings", "Stepper", "Structure",
    "TokenClasses", "Tone", "build_constraints", "clean_acrostic", "load", "pick_device", "sample", "score_parts",
    "split_with_punctuation", "torch_threads", "validate",
]
