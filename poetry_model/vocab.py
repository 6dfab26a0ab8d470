"""Character vocabulary: ids <-> characters, special tokens, and a pickle-free JSON file.

The classic tang.npz layout uses three special tokens: `<START>` opens a poem,
`<EOP>` (end of poem) closes it, and `</s>` pads rows on the left.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .files import write_text_atomic

START, EOP, PAD = "<START>", "<EOP>", "</s>"
SPECIAL_TOKENS = (START, EOP, PAD)
# Closes a poem's title in title-conditioned training: <START> title <TITLE_END> poem <EOP>. It is
# not in the dataset's vocabulary; a model that takes titles has it appended after every other token.
TITLE_END = "<TITLE_END>"
HIDDEN_TOKENS = (*SPECIAL_TOKENS, TITLE_END)  # never printed by decode
VOCAB_FILE = "vocab.json"
SCRIPTS = ("simplified", "traditional")


class VocabError(ValueError):
    """A vocabulary file is missing, malformed or does not fit the model."""


class UnknownCharactersError(ValueError):
    """Text holds characters the vocabulary cannot represent; `.chars` lists them in order."""

    def __init__(self, chars: list[str], what: str = "text"):
        self.chars, self.what = chars, what
        shown = " ".join(repr(c) for c in chars[:20]) + (" …" if len(chars) > 20 else "")
        super().__init__(f"{what} has {len(chars)} character(s) outside the model's vocabulary: {shown}")

    def __reduce__(self):
        """Pickled by its arguments (the generator process sends it to the server)."""
        return type(self), (self.chars, self.what)


@cache
def converter(direction: str):
    """An OpenCC converter ('t2s' or 's2t'), built once per process because building it reads dictionaries."""
    import opencc

    return opencc.OpenCC(direction)


def to_script(text: str, script: str) -> str:
    """Convert text to 'simplified' or 'traditional' characters with OpenCC."""
    if script not in SCRIPTS:
        raise ValueError(f"script must be one of {SCRIPTS}, got {script!r}")
    return converter("t2s" if script == "simplified" else "s2t").convert(text)


@dataclass
class Vocab:
    """Ordered list of tokens; the index of a token is its id."""

    tokens: list[str]
    script: str = "simplified"

    def __post_init__(self) -> None:
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise VocabError("vocabulary has duplicate tokens")
        missing = [t for t in SPECIAL_TOKENS if t not in self.index]
        if missing:
            raise VocabError(f"vocabulary lacks special token(s) {missing}")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    @property
    def start_id(self) -> int:
        return self.index[START]

    @property
    def eop_id(self) -> int:
        return self.index[EOP]

    @property
    def pad_id(self) -> int:
        return self.index[PAD]

    def normalize(self, text: str) -> str:
        """Map each character missing from the vocabulary to its form in the other script, when that one is known."""
        other = "traditional" if self.script == "simplified" else "simplified"
        if all(ch in self.index for ch in text):
            return text
        converted = to_script(text, self.script)
        back = to_script(text, other)
        # OpenCC converts per phrase, so lengths normally match; fall back per character when they do not.
        out = []
        for i, ch in enumerate(text):
            if ch in self.index:
                out.append(ch)
                continue
            for candidate in (converted[i] if len(converted) == len(text) else to_script(ch, self.script),
                              back[i] if len(back) == len(text) else to_script(ch, other)):
                if candidate in self.index:
                    out.append(candidate)
                    break
            else:
                out.append(ch)
        return "".join(out)

    def unknown(self, text: str) -> list[str]:
        """Characters of `text` (after script normalisation) that have no id, each once, in order of appearance."""
        return list(dict.fromkeys(ch for ch in self.normalize(text) if ch not in self.index))

    def encode(self, text: str, what: str = "text") -> list[int]:
        """Ids of each character; raises UnknownCharactersError listing every character that has none."""
        text = self.normalize(text)
        bad = list(dict.fromkeys(ch for ch in text if ch not in self.index))
        if bad:
            raise UnknownCharactersError(bad, what)
        return [self.index[ch] for ch in text]

    def decode(self, ids, keep_special: bool = False) -> str:
        """Text of a sequence of ids; special tokens are dropped unless asked for."""
        ids = ids.tolist() if hasattr(ids, "tolist") else ids  # numpy/torch ints are slow to index with
        toks = self.tokens
        return "".join(toks[i] for i in ids if keep_special or toks[i] not in HIDDEN_TOKENS)

    @property
    def title_end_id(self) -> int | None:
        """Id of <TITLE_END>, or None for a vocabulary without titles."""
        return self.index.get(TITLE_END)

    def extended(self, new_tokens: list[str]) -> "Vocab":
        """This vocabulary with the tokens it lacks appended at the end, in the order given.

        Appending is the one rule for growing a vocabulary: every existing id keeps its meaning, so a
        trained model's rows stay where they are, and the frequency order an adaptive softmax relies
        on is kept for every old token (the new ones land in its last, rarest cluster)."""
        return Vocab(self.tokens + [t for t in dict.fromkeys(new_tokens) if t not in self.index], self.script)

    def save(self, directory: str | Path) -> Path:
        """Write `vocab.json` into `directory` (atomically) and return its path."""
        return write_text_atomic(Path(directory) / VOCAB_FILE,
                                 json.dumps({"script": self.script, "tokens": self.tokens}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """Read a vocabulary file written by `save` (a folder or the file itself)."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabError(f"{path}: vocabulary file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VocabError(f"{path}: not a valid vocabulary JSON file ({e})") from None
        tokens = raw.get("tokens") if isinstance(raw, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
            raise VocabError(f"{path}: 'tokens' must be a list of non-empty strings")
        try:
            return cls(tokens, raw.get("script", "simplified"))
        except VocabError as e:
            raise VocabError(f"{path}: {e}") from None
