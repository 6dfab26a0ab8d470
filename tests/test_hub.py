"""Hub packaging over real HTTP: push_to_hub / push_folder to a stand-in Hub, then load by repo id."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from fake_hub import TOKEN, fake_hub, run_python  # noqa: F401  (fake_hub is a fixture)
from huggingface_hub import ModelCard
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from poetry_model.hub import push_folder, write_model_card
from poetry_model.model import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, PoetryLSTM
from poetry_model.vocab import VOCAB_FILE

SEED_IDS_TEXT = "春眠不觉晓，处处闻啼鸟。"
METRICS = {"cross_entropy": 5.25, "perplexity": math.exp(5.25), "bits_per_char": 5.25 / math.log(2)}


def _logits(model, text):
    ids = [model.vocab.start_id] + model.vocab.encode(text)
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def _check_http_traffic(hub, repo_id):
    """Everything went through the server, authenticated, with no route it does not know."""
    assert hub.unhandled == []
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in hub.requests)
    seen = {(method, path) for method, path, _ in hub.requests}
    assert ("POST", f"/api/models/{repo_id}/commit/main") in seen
    assert ("GET", f"/{repo_id}/resolve/main/{WEIGHTS_FILE}") in seen


def test_push_to_hub_then_from_pretrained_repo_id(fake_hub, tiny_model_dir, tmp_path):
    repo_id, out = "tester/tiny-lstm", tmp_path / "logits.safetensors"
    run_python(f"""
import torch
from safetensors.torch import save_file
from poetry_model.model import PoetryLSTM
model = PoetryLSTM.from_pretrained({str(tiny_model_dir)!r})
url = model.push_to_hub({repo_id!r}, commit_message="first push")
assert url.startswith({fake_hub.endpoint!r}), url
back = PoetryLSTM.from_pretrained({repo_id!r})
ids = [back.vocab.start_id] + back.vocab.encode({SEED_IDS_TEXT!r})
with torch.no_grad():
    save_file({{"logits": back(torch.tensor([ids]))[0].contiguous()}}, {str(out)!r})
""", fake_hub.env(tmp_path / "hf_home"))

    [commit] = fake_hub.commits
    assert commit["repo_id"] == repo_id and commit["summary"] == "first push"
    files = commit["files"]
    assert set(files) == {CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, "README.md"}
    for name in (CONFIG_FILE, VOCAB_FILE):
        assert files[name] == (tiny_model_dir / name).read_bytes()
    local_state = load_file(tiny_model_dir / WEIGHTS_FILE)
    pushed_state = load_safetensors(files[WEIGHTS_FILE])
    assert local_state.keys() == pushed_state.keys()
    assert all(torch.equal(local_state[k], pushed_state[k]) for k in local_state)
    _check_http_traffic(fake_hub, repo_id)

    local = PoetryLSTM.from_pretrained(tiny_model_dir)
    assert torch.equal(load_file(out)["logits"], _logits(local, SEED_IDS_TEXT))


def test_push_folder_with_model_card_then_load_repo_id(fake_hub, tiny_model_dir, tmp_path):
    from poetry_model import load

    best = shutil.copytree(tiny_model_dir, tmp_path / "run" / "best")
    write_model_card(best, METRICS, repo_id="tester/tang-best")
    repo_id, result = "tester/tang-best", tmp_path / "result.json"
    run_python(f"""
import json
from poetry_model import load
from poetry_model.hub import push_folder
from poetry_model.model import ModelLoadError
url = push_folder({str(best)!r}, {repo_id!r}, commit_message="best checkpoint")
poet = load({repo_id!r}, device="cpu")
try:
    load("tester/no-such-model")
    missing = None
except ModelLoadError as e:
    missing = str(e)
with open({str(result)!r}, "w") as f:
    json.dump({{"url": url, "score": poet.log_likelihood({SEED_IDS_TEXT!r}), "missing": missing}}, f)
""", fake_hub.env(tmp_path / "hf_home"))

    got = json.loads(result.read_text())
    assert got["url"] == f"{fake_hub.endpoint}/{repo_id}/commit/{fake_hub.commits[-1]['oid']}"
    assert got["missing"].startswith("tester/no-such-model: no such local model folder, and no such Hub repository")
    # The folder went up as-is, model card included.
    assert fake_hub.files(repo_id) == {p.name: p.read_bytes() for p in best.iterdir()}
    assert fake_hub.commits[-1]["summary"] == "best checkpoint"
    _check_http_traffic(fake_hub, repo_id)
    assert got["score"] == pytest.approx(load(best, device="cpu").log_likelihood(SEED_IDS_TEXT), abs=1e-5)
    card = ModelCard(fake_hub.files(repo_id)["README.md"].decode("utf-8"))
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == pytest.approx(METRICS)


def test_model_card_has_model_index(tiny_model_dir, tmp_path):
    best = shutil.copytree(tiny_model_dir, tmp_path / "best")
    path = write_model_card(best, {**METRICS, "epoch": 3, "note": "not a metric", "nan": float("nan")},
                            model_name="tang-lstm-small", description="Trained for a test.")
    assert path == best / "README.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n") and "\nmodel-index:\n" in text and "Trained for a test." in text
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "poetry_model" and data["license"] == "mit" and "tang-poetry" in data["tags"]
    [entry] = data["model-index"]
    assert entry["name"] == "tang-lstm-small"
    [result] = entry["results"]
    assert result["task"]["type"] == "text-generation" and result["dataset"]["split"] == "validation"
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics == pytest.approx({**METRICS, "epoch": 3})
    assert "| Validation perplexity | 190.6 |" in text
    PoetryLSTM.from_pretrained(best)  # the card does not disturb loading
    with pytest.raises(ValueError, match="no finite numeric metrics"):
        write_model_card(best, {"note": "x"})


def test_push_folder_refuses_a_broken_folder(tiny_model_dir, tmp_path):
    # Both fail before any HTTP request (no Hub is running here).
    with pytest.raises(ModelLoadError, match=r"empty: not a saved model folder \(missing config\.json, model\.safetensors"):
        push_folder(tmp_path / "empty", "tester/x")
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / WEIGHTS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(ModelLoadError, match=r"broken/model\.safetensors: corrupt"):
        push_folder(broken, "tester/x")
