"""Tang poetry generator: a character LSTM with form, rhyme and tone control.

    from poetry_model import load
    poet = load()                      # the shipped default model
    poet.generate(acrostic="春夏秋冬", form="七绝", seed=7)

Heavy modules (torch) are imported only when `load` or the model classes are first used, so
`python -m poetry_model.prosody` starts fast.
"""
from __future__ import annotations

__all__ = ["load", "Poet", "PoetryLSTM", "PoetryConfig", "Vocab"]

_LAZY = {"load": "generation", "Poet": "generation", "PoetryLSTM": "model", "PoetryConfig": "model", "Vocab": "vocab"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
