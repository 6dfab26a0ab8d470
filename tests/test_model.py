"""Model packaging (save_pretrained/from_pretrained), its error messages, `load()`, and the vocabulary."""
from __future__ import annotations

import json
import math
import pickle
import re
import shutil
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model

from poetry_model.data import load_npz
from poetry_model.model import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, PoetryConfig, PoetryLSTM
from poetry_model.vocab import EOP, PAD, START, TITLE_END, VOCAB_FILE, UnknownCharactersError, Vocab, VocabError

POEM = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


@pytest.fixture(scope="module")
def dataset(full_npz):
    return load_npz(full_npz)


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """A private copy of the saved tiny model, free to tamper with."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _rows(dataset, n=2):
    return torch.as_tensor(dataset.data[:n], dtype=torch.long)


# --- save_pretrained -> from_pretrained ---------------------------------------------------------
@pytest.mark.parametrize("sizes", [
    dict(embedding_dim=16, hidden_dim=24, num_layers=2, dropout=0.1),
    dict(embedding_dim=16, hidden_dim=24, num_layers=1, tie_weights=True),
    dict(embedding_dim=16, hidden_dim=16, num_layers=1, softmax_cutoffs=[200, 2000]),
], ids=["plain", "tied", "adaptive-softmax"])
def test_round_trip_gives_identical_logits(dataset, tmp_path, sizes):
    torch.manual_seed(1)
    model = PoetryLSTM(PoetryConfig.for_vocab(dataset.vocab, **sizes)).eval()
    model.vocab = dataset.vocab
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, "README.md"}
    assert json.loads((tmp_path / "m" / CONFIG_FILE).read_text()) == json.loads(json.dumps(asdict(model.config)))
    card = (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and "library_name: poetry_model" in card

    loaded = PoetryLSTM.from_pretrained(tmp_path / "m")
    assert not loaded.training and loaded.config == model.config
    assert loaded.vocab.tokens == dataset.vocab.tokens and loaded.vocab.script == "simplified"
    x = _rows(dataset)
    with torch.no_grad():
        (a, state_a), (b, state_b) = model(x), loaded(x)
        assert torch.equal(a, b) and all(torch.equal(s, t) for s, t in zip(state_a, state_b))
        assert torch.equal(model(x[:, :3], state_a)[0], loaded(x[:, :3], state_b)[0])


def test_weights_packed_in_one_buffer_save_and_round_trip(dataset, tmp_path):
    """On a GPU cuDNN packs an LSTM's weights into one buffer, which safetensors refuses to save as views;
    packing them on the CPU the same way reproduces that refusal, and the folder must still be written."""
    torch.manual_seed(2)
    model = PoetryLSTM(PoetryConfig.for_vocab(dataset.vocab, embedding_dim=16, hidden_dim=24, num_layers=2)).eval()
    model.vocab = dataset.vocab
    weights = list(model.lstm.parameters())
    packed = torch.cat([w.detach().flatten() for w in weights])
    start = 0
    for w in weights:
        w.data = packed[start:start + w.numel()].view_as(w)
        start += w.numel()
    assert weights[0].untyped_storage().data_ptr() == weights[-1].untyped_storage().data_ptr()
    with pytest.raises(RuntimeError):
        save_model(model, str(tmp_path / "refused.safetensors"))

    model.save_pretrained(tmp_path / "m")
    loaded = PoetryLSTM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert weights[0].untyped_storage().data_ptr() == packed.untyped_storage().data_ptr()  # the model is untouched


def test_classic_size_is_one_config_away(dataset):
    config = PoetryConfig.for_vocab(dataset.vocab)
    assert (config.embedding_dim, config.hidden_dim, config.num_layers) == (128, 256, 2)
    shapes = {k: tuple(v.shape) for k, v in PoetryLSTM(config).state_dict().items()}
    v = len(dataset.vocab)
    assert shapes["embedding.weight"] == (v, 128) and shapes["lstm.weight_hh_l1"] == (1024, 256)
    assert shapes["head.weight"] == (v, 256)


def test_loading_never_unpickles(tiny_model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a model")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert PoetryLSTM.from_pretrained(tiny_model_dir).vocab is not None


# --- damaged or inconsistent model folders ------------------------------------------------------
def _flip(path, positions):
    raw = bytearray(path.read_bytes())
    for i in positions:
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _edit_state(path, change):
    state = load_file(path)
    change(state)
    save_file(state, path)


def _nan(state):
    state["lstm.weight_hh_l0"][0, 0] = float("nan")


TAMPERINGS = {
    "header-length-flipped": (lambda p: _flip(p, range(0, 8)), r"corrupt or unreadable safetensors file"),
    "header-json-flipped": (lambda p: _flip(p, range(10, 14)), r"corrupt or unreadable safetensors file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), r"corrupt or unreadable safetensors"),
    "empty": (lambda p: p.write_bytes(b""), r"corrupt or unreadable safetensors file"),
    "missing": (lambda p: p.unlink(), r"missing file"),
    "extra-tensor": (lambda p: _edit_state(p, lambda s: s.update(extra=torch.zeros(2))),
                     r"weights do not match config\.json \(missing none, unexpected \['extra'\]\)"),
    "missing-tensor": (lambda p: _edit_state(p, lambda s: s.pop("lstm.bias_hh_l1")),
                       r"weights do not match config\.json \(missing \['lstm\.bias_hh_l1'\]"),
    "nan-weights": (lambda p: _edit_state(p, _nan), r"tensor\(s\) \['lstm\.weight_hh_l0'\] hold NaN"),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_weights_are_rejected(model_copy, name):
    tamper, problem = TAMPERINGS[name]
    weights = model_copy / WEIGHTS_FILE
    tamper(weights)
    with pytest.raises(ModelLoadError, match=re.escape(str(weights)) + r": .*" + problem):
        PoetryLSTM.from_pretrained(model_copy)


def _edit_json(path, change):
    raw = json.loads(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")


def _swap_specials(vocab):
    tokens = vocab["tokens"]
    i, j = tokens.index(START), tokens.index(PAD)
    tokens[i], tokens[j] = tokens[j], tokens[i]


MISMATCHES = {
    "config-hidden-dim": (CONFIG_FILE, lambda c: c.update(hidden_dim=64), WEIGHTS_FILE,
                          r"tensor shapes do not match config\.json: lstm\.weight_ih_l0 \(192, 32\) vs \(256, 32\)"),
    "config-vocab-size": (CONFIG_FILE, lambda c: c.update(vocab_size=c["vocab_size"] + 1), WEIGHTS_FILE,
                          r"tensor shapes do not match config\.json: embedding\.weight"),
    "config-unknown-key": (CONFIG_FILE, lambda c: c.update(hiden_dim=48), CONFIG_FILE, r"unknown config key\(s\) \['hiden_dim'\]"),
    "config-bad-value": (CONFIG_FILE, lambda c: c.update(hidden_dim="48"), CONFIG_FILE, r"hidden_dim must be a positive integer"),
    "vocab-too-short": (VOCAB_FILE, lambda v: v["tokens"].pop(5), VOCAB_FILE,
                        r"\d+ tokens but config\.json says vocab_size=\d+"),
    "vocab-special-ids": (VOCAB_FILE, _swap_specials, VOCAB_FILE, r"special token ids .* disagree with config\.json"),
    "vocab-no-specials": (VOCAB_FILE, lambda v: v["tokens"].remove(EOP), VOCAB_FILE, r"lacks special token.*<EOP>"),
}


@pytest.mark.parametrize("name", list(MISMATCHES))
def test_mismatched_config_or_vocab_is_rejected(model_copy, name):
    edited, change, named, problem = MISMATCHES[name]
    _edit_json(model_copy / edited, change)
    with pytest.raises(ModelLoadError, match=re.escape(str(model_copy / named)) + r": .*" + problem):
        PoetryLSTM.from_pretrained(model_copy)


@pytest.mark.parametrize("name, text, problem", [
    (CONFIG_FILE, "{not json", "not valid JSON"),
    (CONFIG_FILE, "[1, 2]", "config must be a JSON object"),
    (VOCAB_FILE, "{not json", "not a valid vocabulary JSON file"),
    (VOCAB_FILE, '{"tokens": "abc"}', "'tokens' must be a list of non-empty strings"),
])
def test_unreadable_json_is_rejected(model_copy, name, text, problem):
    (model_copy / name).write_text(text, encoding="utf-8")
    with pytest.raises(ModelLoadError, match=re.escape(f"{model_copy / name}: {problem}")):
        PoetryLSTM.from_pretrained(model_copy)


def test_missing_folder_or_config(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json in this folder"):
        PoetryLSTM.from_pretrained(tmp_path)
    missing = tmp_path / "runs" / "mine" / "best"  # not a folder, and not a repo id either: no network call
    with pytest.raises(ModelLoadError, match=re.escape(str(missing)) + r": model folder not found"):
        PoetryLSTM.from_pretrained(missing)


# --- load() and the Poet it returns -------------------------------------------------------------
def test_load_scores_and_continues(tiny_model_dir):
    from poetry_model import Poet, load

    poet = load(tiny_model_dir, device="cpu")
    assert isinstance(poet, Poet) and poet.device.type == "cpu"
    score = poet.log_likelihood(POEM)
    assert math.isfinite(score) and score < 0
    # The same score, step by step through the LSTM state (checks the state is carried correctly).
    ids = [poet.vocab.start_id] + poet.vocab.encode(POEM) + [poet.vocab.eop_id]
    state, total = None, 0.0
    with torch.no_grad():
        for prev, nxt in zip(ids, ids[1:]):
            logits, state = poet.model(torch.tensor([[prev]]), state)
            total += float(torch.log_softmax(logits[0, -1], -1)[nxt])
    assert total == pytest.approx(score, abs=1e-3)
    # Traditional input is scored through the OpenCC fallback as the simplified text.
    assert poet.log_likelihood("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。") == pytest.approx(score, abs=1e-6)

    text = poet.continue_text("春眠", max_new_tokens=20, seed=3)
    assert text == poet.continue_text("春眠", max_new_tokens=20, seed=3)
    assert text.startswith("春眠") and len(text) <= 22 and all(c in poet.vocab for c in text)
    assert poet.continue_text("春", max_new_tokens=5, temperature=0) == poet.continue_text("春", max_new_tokens=5, temperature=0)
    with pytest.raises(UnknownCharactersError, match=r"seed text has 2 character\(s\).*'x' 'y'"):
        poet.continue_text("春xyx", max_new_tokens=2)


def test_load_without_default_model_says_how_to_train(tmp_path, monkeypatch):
    from poetry_model import load
    from poetry_model.generation import poet

    monkeypatch.setattr(poet, "DEFAULT_MODEL", tmp_path / "checkpoints" / "tang-lstm")
    with pytest.raises(ModelLoadError, match=r"no default model at .*tang-lstm.*python -m train\.train"):
        load()


# --- vocabulary ---------------------------------------------------------------------------------
def test_vocab_reports_every_unknown_character(dataset):
    vocab = dataset.vocab
    assert vocab.encode("春风") == vocab.encode("春風")  # traditional 風 falls back to simplified 风
    with pytest.raises(UnknownCharactersError) as err:
        vocab.encode("春x風y☃x", what="prompt")
    assert err.value.chars == ["x", "y", "☃"]
    assert "prompt has 3 character(s) outside the model's vocabulary: 'x' 'y' '☃'" in str(err.value)
    assert vocab.unknown("春x風") == ["x"] and vocab.unknown(POEM) == []
    assert vocab.decode(vocab.encode(POEM)) == POEM
    assert vocab.decode([vocab.start_id, *vocab.encode("春"), vocab.eop_id], keep_special=True) == f"{START}春{EOP}"


def test_traditional_vocab_falls_back_to_traditional_forms():
    vocab = Vocab(list("風花雪月，") + [EOP, START, PAD], script="traditional")
    assert vocab.encode("风花雪月") == [0, 1, 2, 3]
    assert vocab.unknown("风花雪月夜") == ["夜"]


def test_vocab_json_round_trip_and_errors(dataset, tmp_path):
    path = dataset.vocab.save(tmp_path)
    assert path.name == VOCAB_FILE and json.loads(path.read_text(encoding="utf-8"))["tokens"] == dataset.vocab.tokens
    assert Vocab.load(tmp_path) == dataset.vocab and Vocab.load(path).script == "simplified"
    with pytest.raises(VocabError, match=r"nothing/vocab\.json: vocabulary file not found"):
        Vocab.load(tmp_path / "nothing" / VOCAB_FILE)
    path.write_text(json.dumps({"tokens": ["a", "a", EOP, START, PAD]}), encoding="utf-8")
    with pytest.raises(VocabError, match=r"vocab\.json: vocabulary has duplicate tokens"):
        Vocab.load(path)


# --- growing the vocabulary ----------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [
    dict(embedding_dim=16, hidden_dim=24, num_layers=2),
    dict(embedding_dim=16, hidden_dim=16, num_layers=1, tie_weights=True),
    dict(embedding_dim=16, hidden_dim=24, num_layers=2, softmax_cutoffs=[200, 2000]),
], ids=["plain", "tied", "adaptive-softmax"])
def test_extended_vocabulary_keeps_old_predictions_and_round_trips(dataset, tmp_path, sizes):
    torch.manual_seed(2)
    model = PoetryLSTM(PoetryConfig.for_vocab(dataset.vocab, **sizes)).eval()
    model.vocab = dataset.vocab
    x = _rows(dataset)
    with torch.no_grad():
        before = model(x)[0]
    grown = dataset.vocab.extended([TITLE_END])
    assert model.extend_vocab(grown) == [len(dataset.vocab)]
    assert model.config.vocab_size == len(grown) and model.embedding.weight.shape[0] == len(grown)
    new = len(dataset.vocab)
    # The rule: the new input row is the mean of the old ones.
    assert torch.allclose(model.embedding.weight[new], model.embedding.weight[:new].mean(0))
    with torch.no_grad():
        after = model(x)[0]
        probs = after.float().log_softmax(-1).exp() if not sizes.get("softmax_cutoffs") else after.exp()
    assert after.shape[-1] == len(grown)
    assert torch.allclose(probs.sum(-1), torch.ones(()), atol=1e-4)
    if sizes.get("softmax_cutoffs"):  # log-probabilities: the old ones move only by the new row's small share
        assert (before - after[..., :new]).abs().max() < 0.05
    else:  # logits: the old ones do not move at all
        assert torch.equal(before, after[..., :new])
    model.config.takes_titles = True
    model.save_pretrained(tmp_path / "m")
    loaded = PoetryLSTM.from_pretrained(tmp_path / "m")
    assert loaded.config.takes_titles and loaded.vocab.title_end_id == new
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], after)
    with pytest.raises(ValueError, match="appended"):
        loaded.extend_vocab(Vocab(list(reversed(grown.tokens))))


def test_titles_flag_needs_the_title_token(model_copy):
    config = json.loads((model_copy / CONFIG_FILE).read_text())
    assert "takes_titles" not in config or config["takes_titles"] is False
    (model_copy / CONFIG_FILE).write_text(json.dumps({**config, "takes_titles": True}))
    with pytest.raises(ModelLoadError, match="<TITLE_END>"):
        PoetryLSTM.from_pretrained(model_copy)


def test_shipped_config_without_the_titles_field_still_loads():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "tang-lstm"
    raw = json.loads((shipped / CONFIG_FILE).read_text())
    model = PoetryLSTM.from_pretrained(shipped)
    assert model.config.takes_titles == raw.get("takes_titles", False)
