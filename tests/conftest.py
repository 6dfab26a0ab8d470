"""Shared fixtures: real datasets built from ../shared/data, and small real models saved to disk."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "chinese-poetry"
TANG_JSON = SHARED_DATA / "tang"

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def require_corpus() -> Path:
    """The raw corpus folder; skips the test only where ../shared is absent (CI always has it)."""
    if not TANG_JSON.is_dir():
        pytest.skip(f"corpus not found at {TANG_JSON}")
    return TANG_JSON


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one intra-op thread avoids oversubscription stalls on a small shared machine (~3x faster)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def full_npz(tmp_path_factory) -> Path:
    """tang.npz built from the whole corpus (simplified), once per test session (~5 s)."""
    from train.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "tang.npz"
    prepare(require_corpus(), out)
    return out


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory) -> Path:
    """tang.npz built from two of the corpus files (2,000 poems): quick to train on."""
    from train.prepare import prepare

    src = tmp_path_factory.mktemp("json")
    for name in ("poet.tang.0.json", "poet.tang.1000.json"):
        (src / name).write_bytes((require_corpus() / name).read_bytes())
    out = tmp_path_factory.mktemp("data") / "small.npz"
    prepare(src, out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, full_npz) -> Path:
    """A small randomly initialised PoetryLSTM over the full vocabulary, saved with save_pretrained."""
    import torch

    from poetry_model.data import load_npz
    from poetry_model.model import PoetryConfig, PoetryLSTM

    torch.manual_seed(0)
    vocab = load_npz(full_npz).vocab
    model = PoetryLSTM(PoetryConfig.for_vocab(vocab, embedding_dim=32, hidden_dim=48, num_layers=2))
    model.vocab = vocab
    out = tmp_path_factory.mktemp("model") / "tiny"
    model.save_pretrained(out)
    return out


SHIPPED_MODEL = REPO / "checkpoints" / "tang-lstm"


@pytest.fixture(scope="session")
def shipped_server(tmp_path_factory):
    """`python app.py` serving the shipped model (it has the 对仗 table the tiny one lacks), once per
    session for the co-writing tests (gradio_client and browser alike)."""
    from test_app import Server, free_port, server_env

    if not (SHIPPED_MODEL / "config.json").is_file():
        pytest.skip(f"shipped model not found at {SHIPPED_MODEL}")
    port = free_port()
    args = ["--model", str(SHIPPED_MODEL), "--host", "127.0.0.1", "--port", str(port)]
    srv = Server(args, server_env(), port, tmp_path_factory.mktemp("shipped") / "server.log").wait_ready()
    yield srv
    srv.close()
