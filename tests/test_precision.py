"""Precision on any CPU: the bf16 probe tells the truth, auto never crashes, bf16 asked for fails clearly.

A CPU without a bf16 LSTM in oneDNN (anything below AVX-512) is emulated on any machine with
ONEDNN_MAX_CPU_ISA=AVX2, in a fresh process, so both sides are tested wherever this runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poetry_model.data import load_npz
from poetry_model.model import PoetryConfig, PoetryLSTM
from train.precision import PrecisionError, bf16_unavailable, use_bf16

REPO = Path(__file__).resolve().parents[1]
NO_BF16_CPU = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
TINY = ["--embedding-dim", "32", "--hidden-dim", "48", "--batch-size", "32", "--limit-poems", "300",
        "--max-steps", "2", "--checkpoint-every", "0"]


def train_cli(npz: Path, out: Path, precision: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train.train", "--data", str(npz), "--out", str(out), *TINY,
                           "--precision", precision], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def real_bf16_step_runs(npz: Path) -> bool:
    """Whether a real PoetryLSTM step (forward and backward under bf16 autocast) runs on this CPU."""
    vocab = load_npz(npz).vocab
    model = PoetryLSTM(PoetryConfig.for_vocab(vocab, embedding_dim=32, hidden_dim=48, num_layers=2))
    ids = torch.randint(len(vocab), (4, 20))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats, _ = model.features(ids)
        model.loss(feats.reshape(-1, feats.shape[-1]).float(), ids.reshape(-1)).backward()
    except RuntimeError:
        return False
    return True


def test_the_probe_agrees_with_a_real_bf16_training_step(small_npz):
    reason = bf16_unavailable(torch.device("cpu"))
    assert (reason is None) == real_bf16_step_runs(small_npz), reason
    if reason:
        assert f"CPU capability {torch.backends.cpu.get_cpu_capability()}" in reason


def test_the_probe_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    bf16_unavailable(torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)


def test_use_bf16_resolves_each_precision(monkeypatch):
    cpu, said = torch.device("cpu"), []
    assert use_bf16("fp32", cpu) is False
    monkeypatch.setattr("train.precision.bf16_unavailable", lambda device: "CPU capability AVX2: no bf16 LSTM")
    with pytest.raises(PrecisionError, match="CPU capability AVX2.*--precision fp32"):
        use_bf16("bf16", cpu)
    assert use_bf16("auto", cpu, log=said.append) is False
    assert said == ["precision: fp32, since bf16 is unavailable (CPU capability AVX2: no bf16 LSTM)"]
    monkeypatch.setattr("train.precision.bf16_unavailable", lambda device: None)
    assert use_bf16("bf16", cpu) is True
    assert use_bf16("auto", cpu, time_step=lambda bf16: 1.0 if bf16 else 2.0) is True
    assert use_bf16("auto", cpu, time_step=lambda bf16: 2.0 if bf16 else 1.0) is False
    with pytest.raises(ValueError, match="precision must be one of"):
        use_bf16("fp16", cpu)


def test_auto_trains_in_fp32_on_a_cpu_without_bf16(small_npz, tmp_path):
    result = train_cli(small_npz, tmp_path / "run", "auto", NO_BF16_CPU)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision: fp32, since bf16 is unavailable (CPU capability AVX2:" in result.stdout
    summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    assert summary["bf16"] is False and summary["steps"] == 2
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()


def test_bf16_on_a_cpu_without_it_stops_before_training_and_suggests_fp32(small_npz, tmp_path):
    result = train_cli(small_npz, tmp_path / "run", "bf16", NO_BF16_CPU)
    assert result.returncode != 0
    assert "--precision bf16 is not available on this machine (CPU capability AVX2:" in result.stderr
    assert "use --precision fp32" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_bf16_trains_where_the_cpu_has_it(small_npz, tmp_path):
    if bf16_unavailable(torch.device("cpu")):
        pytest.skip("this CPU has no bf16 LSTM; the refusal is tested above")
    result = train_cli(small_npz, tmp_path / "run", "bf16", {})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    assert summary["bf16"] is True
