"""Generation: a loaded model writes ranked poems under composable constraints.

    poet = load()                                   # the shipped model (or load("runs/x/best"), load("user/repo"))
    poems = poet.generate(acrostic="春夏秋冬", form="七绝", seed=7, num_candidates=5)
    many = poet.generate_many([dict(form="五绝", seed=1), dict(acrostic="春夏", seed=2)])  # decoded together
    server = Batcher(poet); server.generate(form="七律")  # from any thread: concurrent calls share steps

Modules: `config` (GenerationConfig: every argument's default, range and help; `validate`),
`constraints` (one class per rule on the next token), `sampling` (top-k/top-p per request
generator), `stepper` (the LSTM laid out for one-token steps), `engine` (a request's candidates,
and continuous batching of many requests), `indexes` (the corpus tables a Poet reads on first use),
`ranking` (the score and its parts, the order of the candidates), `cowrite` (writing with the poet:
streamed lines, alternatives, edits, locked lines' fit), `poet` (Poet, Poem, `load`), `batcher`
(Batcher: requests from many threads). The decoding itself is described in `poet`.
"""
from __future__ import annotations

from importlib import import_module

# Imported on first use (PEP 562), so that `poetry_model.generation.config` loads without torch.
_HOMES = {
    "batcher": ("Batcher",),
    "config": ("DEFAULT_MAX_LENGTH", "FORM_ALIASES", "REQUEST_FORMS", "MAX_ACROSTIC", "MAX_CANDIDATES", "MAX_LENGTH",
               "MAX_PROMPT", "MAX_REPETITION_PENALTY", "MAX_STYLE", "MAX_TEMPERATURE", "GenerationConfig", "Settings",
               "clean_acrostic", "locked_from_text", "validate"),
    "constraints": ("COPY_RETRIES", "Acrostic", "Constraint", "CopyGuard", "Locked", "NoRepeatPairs", "Parallelism",
                    "Repetition", "Rhyme", "RhymeOnce", "Season", "Structure", "Theme", "TimeOfDay", "Tone",
                    "build_constraints"),
    "states": ("MAX_FREE_LINE", "MIN_FREE_LINES", "FreeState", "LineState", "LockedFormState", "MaskVectors",
               "TokenClasses"),
    "engine": ("Decoder", "Engine", "Row"),
    "indexes": ("Indexes",),
    "ranking": ("score_parts",),
    "cowrite": ("MAX_ALTERNATIVES",),
    "poet": ("DEFAULT_CORPUS", "DEFAULT_MODEL", "MODEL_CORPUS", "Poem", "Poet", "load", "pick_device", "torch_threads"),
    "sampling": ("sample",),
    "stepper": ("Stepper",),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}
_ELSEWHERE = {"FORM_LINES": ("..prosody", "FORMS"), "LINE_ENDS": ("..text", "LINE_ENDS"),
              "SENTENCE_ENDS": ("..text", "SENTENCE_ENDS"), "split_with_punctuation": ("..text", "split_with_punctuation")}

__all__ = sorted([*_WHERE, *_ELSEWHERE])


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    if name in _ELSEWHERE:
        module, attr = _ELSEWHERE[name]
        return getattr(import_module(module, __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
