"""PoetryLSTM: embedding -> multi-layer LSTM -> linear head, packaged the Hugging Face way.

`save_pretrained(dir)` writes config.json, model.safetensors, vocab.json and a README model card;
`from_pretrained(dir or repo id)` restores all of it with strict key checking and never unpickles.
"""
from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model

from .vocab import VOCAB_FILE, Vocab, VocabError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # what the Hub accepts as a repo id

MODEL_CARD = """---
{{ card_data }}
---

# {{ title | default("Tang poetry LSTM", true) }}

A character-level LSTM that writes classical Chinese poems, trained on the Tang poems of the
chinese-poetry collection. Load it with `from poetry_model import load; poet = load("{{ repo_id | default("path/to/this/folder", true) }}")`.

{{ description | default("", true) }}
"""


class ModelLoadError(ValueError):
    """A model folder or repo is missing files, has corrupt weights, or its parts disagree."""


@dataclass
class PoetryConfig:
    """Everything needed to rebuild the network; stored as config.json."""

    vocab_size: int
    start_id: int
    eop_id: int
    pad_id: int
    embedding_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False
    # Adaptive softmax (Grave et al. 2017): ids below the first cutoff form the frequent head, the
    # rest are rarer clusters with smaller projections. Needs ids ordered by frequency, which
    # train.prepare guarantees. Empty = ordinary full softmax.
    softmax_cutoffs: list[int] = field(default_factory=list)
    script: str = "simplified"
    # Trained on <START> title <TITLE_END> poem <EOP> (and, with title dropout, on untitled poems too):
    # the vocabulary then ends with <TITLE_END>. False for models trained on poems alone.
    takes_titles: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embedding_dim", "hidden_dim", "num_layers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ModelLoadError(f"config: {name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelLoadError(f"config: dropout must be in [0, 1), got {self.dropout!r}")
        cuts = list(self.softmax_cutoffs)
        if cuts and (cuts != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= self.vocab_size):
            raise ModelLoadError(f"config: softmax_cutoffs must increase within 1..{self.vocab_size - 1}, got {cuts}")
        if cuts and self.tie_weights:
            raise ModelLoadError("config: tie_weights cannot be combined with an adaptive softmax")
        for name in ("start_id", "eop_id", "pad_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ModelLoadError(f"config: {name}={getattr(self, name)} is outside the vocabulary (size {self.vocab_size})")

    @classmethod
    def for_vocab(cls, vocab: Vocab, **sizes) -> "PoetryConfig":
        """A config whose vocabulary size, special ids and script come from `vocab`."""
        return cls(vocab_size=len(vocab), start_id=vocab.start_id, eop_id=vocab.eop_id, pad_id=vocab.pad_id,
                   script=vocab.script, **sizes)


class PoetryLSTM(nn.Module, PyTorchModelHubMixin, library_name="poetry_model", license="mit", language="zh",
                 tags=["chinese-poetry", "tang-poetry", "lstm", "text-generation"], model_card_template=MODEL_CARD):
    """Character language model over Tang poems. `vocab` travels with the weights when set."""

    def __init__(self, config: PoetryConfig):
        super().__init__()
        self.config = config
        self.vocab: Vocab | None = None
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_dim, config.num_layers, batch_first=True,
                            dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        # Tying needs the head's input to match the embedding width; a projection bridges the gap.
        needs_proj = config.tie_weights and config.hidden_dim != config.embedding_dim
        self.proj = nn.Linear(config.hidden_dim, config.embedding_dim, bias=False) if needs_proj else None
        width = config.embedding_dim if needs_proj else config.hidden_dim
        if config.softmax_cutoffs:
            self.head = nn.AdaptiveLogSoftmaxWithLoss(width, config.vocab_size, list(config.softmax_cutoffs), div_value=4.0)
        else:
            self.head = nn.Linear(width, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight

    @torch.no_grad()
    def extend_vocab(self, vocab: Vocab) -> list[int]:
        """Grow the model to `vocab`, which must be its own vocabulary with tokens appended; returns the new ids.

        The rule: a new token's input embedding is the mean of the existing rows, and so is its output
        row (for an adaptive softmax, in the last cluster, where appended ids fall), so it starts as an
        average, unremarkable token and every old token's predictions are unchanged up to the tiny
        share of probability the new rows take."""
        old = self.vocab
        if old is None or vocab.tokens[:len(old)] != old.tokens:
            raise ValueError("the new vocabulary must be the model's vocabulary with tokens appended at the end")
        n_old, n_new = len(old), len(vocab)
        if n_new == n_old:
            self.vocab = vocab
            return []

        def grown(weight: torch.Tensor) -> nn.Parameter:
            extra = weight.mean(0, keepdim=True).expand(n_new - n_old, *weight.shape[1:])
            return nn.Parameter(torch.cat([weight, extra]))

        self.embedding.weight = grown(self.embedding.weight)
        self.embedding.num_embeddings = n_new
        if isinstance(self.head, nn.Linear):
            if self.config.tie_weights:
                self.head.weight = self.embedding.weight
            else:
                self.head.weight = grown(self.head.weight)
            if self.head.bias is not None:
                self.head.bias = grown(self.head.bias)
            self.head.out_features = n_new
        else:
            last = self.head.tail[-1][1]  # Linear(hidden of the last cluster -> its tokens)
            last.weight = grown(last.weight)
            last.out_features = last.weight.shape[0]
            self.head.n_classes = n_new
            self.head.cutoffs[-1] = n_new
        self.config.vocab_size = n_new
        self.vocab = vocab
        return list(range(n_old, n_new))

    def features(self, input_ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Last-layer outputs (B, T, D) ready for the head, and the new LSTM state."""
        out, state = self.lstm(self.drop(self.embedding(input_ids)), state)
        out = self.drop(out)
        if self.proj is not None:
            out = self.proj(out)
        return out, state

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Next-token logits for features (..., D): log-probabilities under an adaptive softmax."""
        if isinstance(self.head, nn.Linear):
            return self.head(features)
        flat = features.reshape(-1, features.shape[-1]).float()
        with torch.autocast(features.device.type, enabled=False):
            return self.head.log_prob(flat).reshape(*features.shape[:-1], -1)

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats) of targets (N,) given features (N, D); the adaptive head skips rare clusters."""
        if isinstance(self.head, nn.Linear):
            return nn.functional.cross_entropy(self.head(features).float(), targets)
        with torch.autocast(features.device.type, enabled=False):  # its index_copy_ rejects mixed dtypes
            return self.head(features.float(), targets).loss

    def forward(self, input_ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """Next-token logits (B, T, V) and the new state."""
        out, state = self.features(input_ids, state)
        return self.scores(out), state

    # --- Hugging Face packaging -------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        """Weights as safetensors, plus the vocabulary; config.json and README are written by the mixin."""
        # On a GPU, cuDNN packs the LSTM's weights into one buffer, and safetensors refuses to save views of
        # a buffer: save a CPU copy in which each weight owns its storage (tied weights stay one parameter).
        owned = copy.deepcopy(self).cpu()
        for param in owned.parameters():
            param.data = param.data.clone()
        save_model(owned, str(Path(save_directory) / WEIGHTS_FILE))
        if self.vocab is not None:
            self.vocab.save(save_directory)

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        """Write the model folder (config.json, model.safetensors, vocab.json, README.md)."""
        # push_to_hub calls save_pretrained(config=None): fall back to this model's own config.
        return super().save_pretrained(save_directory, config=config or asdict(self.config), **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download, local_files_only, token,
                         map_location: str = "cpu", strict: bool = True, config=None, **model_kwargs):
        """Load strictly from safetensors only (no pickle fallback) and attach the vocabulary."""
        fetch = lambda name: _fetch(model_id, name, revision=revision, cache_dir=cache_dir,  # noqa: E731
                                    force_download=force_download, local_files_only=local_files_only, token=token)
        cfg = _config_from_dict(model_kwargs.pop("config", config) or _read_json(fetch(CONFIG_FILE)), model_id)
        model = cls(cfg)
        weights_path = fetch(WEIGHTS_FILE)
        try:
            state = load_file(weights_path, device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise ModelLoadError(f"{weights_path}: corrupt or unreadable safetensors file ({e})") from None
        _load_state(model, state, weights_path, strict)
        try:
            vocab = Vocab.load(fetch(VOCAB_FILE))
        except VocabError as e:
            raise ModelLoadError(str(e)) from None
        _check_vocab(cfg, vocab, model_id)
        model.vocab = vocab
        return model.eval()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "PoetryLSTM":
        """Restore a folder written by `save_pretrained`, or a Hub repo id; errors name the file and problem."""
        path = str(pretrained_model_name_or_path)
        shown = os.path.abspath(path) if os.path.exists(path) or os.sep in path or path.startswith(".") else path
        if os.path.exists(path) and not os.path.isdir(path):
            raise ModelLoadError(f"{shown}: is a file, not a model folder (a folder with {CONFIG_FILE}, "
                                 f"{WEIGHTS_FILE} and {VOCAB_FILE})")
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, CONFIG_FILE)):
            raise ModelLoadError(f"{shown}: no {CONFIG_FILE} in this folder, so it is not a saved model")
        if not os.path.isdir(path) and (os.path.isabs(path) or path.startswith(".") or not REPO_ID.fullmatch(path)):
            raise ModelLoadError(f"{shown}: model folder not found (and not a Hub repo id like 'user/name')")
        if os.path.isdir(path):  # check config.json here: the mixin would json.load it unguarded
            _config_from_dict(_read_json(os.path.join(path, CONFIG_FILE)), path)
        try:
            return super().from_pretrained(path, **kwargs)
        except json.JSONDecodeError as e:  # a downloaded config.json that is not JSON
            raise ModelLoadError(f"{path}/{CONFIG_FILE}: not valid JSON ({e})") from None
        except ModelLoadError:
            raise
        except Exception as e:  # noqa: BLE001
            if os.path.isdir(path):
                raise  # a local folder's own errors are named where they happen
            raise ModelLoadError(f"{path}: no local model folder of that name ({os.path.abspath(path)}), and the "
                                 f"Hub repo could not be loaded ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _fetch(model_id: str, filename: str, **hub_kwargs) -> str:
    """Local path of `filename` in a model folder, downloading it from the Hub for a repo id."""
    if os.path.isdir(model_id):
        path = os.path.join(model_id, filename)
        if not os.path.isfile(path):
            raise ModelLoadError(f"{path}: missing file")
        return path
    try:
        return hf_hub_download(repo_id=model_id, filename=filename, **hub_kwargs)
    except EntryNotFoundError:
        raise ModelLoadError(f"{model_id}: repository has no {filename}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise ModelLoadError(f"{model_id}: no such local model folder, and no such Hub repository or revision "
                             f"({type(e).__name__})") from None


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e})") from None


def _config_from_dict(raw, source: str) -> PoetryConfig:
    if isinstance(raw, PoetryConfig):
        return raw
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{source}/{CONFIG_FILE}: config must be a JSON object")
    known = {f.name for f in fields(PoetryConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ModelLoadError(f"{source}/{CONFIG_FILE}: unknown config key(s) {unknown}")
    try:
        return PoetryConfig(**raw)
    except (TypeError, ModelLoadError) as e:
        raise ModelLoadError(f"{source}/{CONFIG_FILE}: {e}") from None


def _load_state(model: PoetryLSTM, state: dict, weights_path: str, strict: bool) -> None:
    """Copy tensors in, turning key and shape disagreements into one clear error."""
    expected = model.state_dict()
    if model.config.tie_weights:
        # safetensors stores a tied tensor once; the head shares the embedding.
        expected.pop("head.weight", None)
        state = {k: v for k, v in state.items() if k != "head.weight"}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if strict and (missing or unexpected):
        raise ModelLoadError(f"{weights_path}: weights do not match config.json "
                             f"(missing {missing or 'none'}, unexpected {unexpected or 'none'})")
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if k in state and state[k].shape != v.shape]
    if bad:
        raise ModelLoadError(f"{weights_path}: tensor shapes do not match config.json: {'; '.join(bad[:4])}")
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise ModelLoadError(f"{weights_path}: tensor(s) {nonfinite[:4]} hold NaN or infinite values")
    model.load_state_dict(state, strict=False)


def _check_vocab(cfg: PoetryConfig, vocab: Vocab, source: str) -> None:
    if len(vocab) != cfg.vocab_size:
        raise ModelLoadError(f"{source}/{VOCAB_FILE}: {len(vocab)} tokens but config.json says vocab_size={cfg.vocab_size}")
    ids = (vocab.start_id, vocab.eop_id, vocab.pad_id)
    if ids != (cfg.start_id, cfg.eop_id, cfg.pad_id):
        raise ModelLoadError(f"{source}/{VOCAB_FILE}: special token ids {ids} disagree with config.json "
                             f"{(cfg.start_id, cfg.eop_id, cfg.pad_id)}")
    if cfg.takes_titles and vocab.title_end_id is None:
        raise ModelLoadError(f"{source}/{VOCAB_FILE}: config.json says the model takes titles but the "
                             "vocabulary has no <TITLE_END> token")
