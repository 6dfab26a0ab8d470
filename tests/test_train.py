"""The trainer on a slice of the real data: learning, crash and resume, files, DDP under torchrun, errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from poetry_model.model import PoetryLSTM
from train.batches import TrainConfig
from train.train import parse_args, train

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints" / "tang-lstm"
TINY = ["--embedding-dim", "32", "--hidden-dim", "48", "--batch-size", "32", "--limit-poems", "600"]


def run_cli(args: list[str], env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m train.train ARGS` in a fresh process, as a user runs it."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "train.train", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def train_poems(npz: Path, limit: int = 600) -> int:
    """Training poems of the de-duplicated split of the first `limit` poems, as the trainer sees them."""
    from poetry_model.data import dedup_split, load_npz

    ds = load_npz(npz)
    ds.data = ds.data[:limit]
    return len(dedup_split(ds)[0])


def summaries(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def config(npz: Path, out: Path, *extra: str) -> TrainConfig:
    cfg, _ = parse_args(["--data", str(npz), "--out", str(out), *TINY, *extra])
    return cfg


def test_a_few_steps_lower_the_validation_loss(small_npz, tmp_path):
    cfg = config(small_npz, tmp_path / "run", "--epochs", "3", "--lr", "3e-3")
    summary = train(cfg)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] < 9.1  # ln(8928) = 9.1 is a uniform guess
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["best_val"] == min(r["val_loss"] for r in rows)
    for key in ("val_ppl", "val_bits_per_char", "tokens_per_s", "lr", "wall_s"):
        assert all(isinstance(r[key], (int, float)) for r in rows)
    png = (tmp_path / "run" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "epoch 3" in (tmp_path / "run" / "samples.txt").read_text(encoding="utf-8")


def test_best_checkpoint_loads_strictly_and_matches_the_best_epoch(small_npz, tmp_path):
    cfg = config(small_npz, tmp_path / "run", "--epochs", "2", "--lr", "3e-3")
    train(cfg)
    best = PoetryLSTM.from_pretrained(tmp_path / "run" / "best")
    card = (tmp_path / "run" / "best" / "README.md").read_text(encoding="utf-8")
    assert "model-index" in card
    from poetry_model.generation import Poet

    assert Poet(best).log_likelihood("床前明月光") < 0
    assert not list((tmp_path / "run").glob("*.tmp"))


def checkpoint_state(out: Path) -> dict | None:
    """The trainer state a resume would read: `last`, or `last.old` when a kill caught a checkpoint
    mid-swap (between moving the old folder aside and the new one into place); None before the first."""
    from train.train import last_checkpoint

    path = last_checkpoint(out)
    try:
        return json.loads((path / "trainer_state.json").read_text()) if path else None
    except FileNotFoundError:  # swapped away between finding and reading it, while the run goes on
        return None


def test_kill_9_then_resume_continues_from_the_saved_step(small_npz, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(small_npz), "--out", str(out), *TINY, "--epochs", "2", "--checkpoint-every", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "train.train", *args], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and (checkpoint_state(out) or {}).get("global_step", 0) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = checkpoint_state(out)
    assert saved["global_step"] >= 6 and saved["epoch"] == 0  # killed mid-epoch 1
    result = run_cli(args + ["--resume"])
    assert result.returncode == 0, result.stderr
    assert f"resuming at epoch 1 step {saved['step_in_epoch']}" in result.stdout
    [summary] = summaries(result.stdout)
    steps_per_epoch = -(-train_poems(small_npz) // 32)  # training poems in batches of 32
    assert summary["steps"] == 2 * steps_per_epoch  # nothing repeated, nothing skipped
    PoetryLSTM.from_pretrained(out / "best")


def test_resume_reproduces_an_uninterrupted_run(small_npz, tmp_path):
    common = [*TINY, "--epochs", "2", "--checkpoint-every", "0", "--precision", "fp32"]
    straight = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "a"), *common])
    first = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "b"), *common, "--max-steps", "17"])
    # --max-steps stops mid-epoch; its checkpoint is the end-of-epoch one, then resume finishes the run.
    second = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "b"), *common, "--resume"])
    assert straight.returncode == first.returncode == second.returncode == 0, second.stderr
    assert summaries(straight.stdout)[0]["steps"] == summaries(second.stdout)[0]["steps"]


def test_a_resumed_epoch_counts_all_its_steps_and_is_written_once(small_npz, tmp_path):
    """Killed mid-epoch after a checkpoint: the resumed epoch's train loss covers the whole epoch (as an
    uninterrupted run's does), its line is marked, and replaying an epoch never doubles its line."""
    common = [*TINY, "--epochs", "2", "--checkpoint-every", "3", "--precision", "fp32"]
    straight = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "a"), *common])
    args = ["--data", str(small_npz), "--out", str(tmp_path / "b"), *common]
    proc = subprocess.Popen([sys.executable, "-m", "train.train", *args], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while time.time() < deadline and not ((state := checkpoint_state(tmp_path / "b")) and state["epoch"] == 1
                                          and state["step_in_epoch"] >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = checkpoint_state(tmp_path / "b")
    assert saved["epoch"] == 1 and saved["step_in_epoch"] >= 3 and saved["epoch_count"] > 0  # mid-epoch 2, sums kept
    second = run_cli(args + ["--resume"])
    assert straight.returncode == second.returncode == 0, second.stderr
    rows_a, rows_b = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                      for run in ("a", "b"))
    assert [r["epoch"] for r in rows_b] == [1, 2]
    assert [r["resumed"] for r in rows_b] == [False, True] and not any(r["resumed"] for r in rows_a)
    assert rows_b[1]["train_loss"] == pytest.approx(rows_a[1]["train_loss"], rel=1e-6)
    # A kill between an epoch's metrics line and its checkpoint: the replayed epoch replaces the line.
    from train.train import record_epoch

    record_epoch(tmp_path / "b", {**rows_b[1], "train_loss": 1.0})
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["train_loss"] == 1.0


def test_torchrun_two_processes_end_with_identical_weights(small_npz, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "train.train", "--data", str(small_npz),
           "--out", str(tmp_path / "ddp"), *TINY, "--epochs", "1"]
    result = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = {s["rank"]: s for s in summaries(result.stdout)}
    assert set(ranks) == {0, 1}
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["best_val"] == ranks[1]["best_val"]  # validation reduced across ranks
    steps_single = -(-train_poems(small_npz) // 32)
    assert ranks[0]["steps"] == steps_single // 2  # each rank saw half of the batches
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 only writes
    PoetryLSTM.from_pretrained(tmp_path / "ddp" / "best")


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(small_npz, tmp_path):
    out = tmp_path / "run"
    good = run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--epochs", "1"])
    assert good.returncode == 0
    before = (out / "last" / "model.safetensors").read_bytes()
    bad = run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--epochs", "2", "--resume", "--lr", "1e30", "--clip", "0"])
    assert bad.returncode == 1
    assert "loss became" in bad.stderr and "last good checkpoint" in bad.stderr
    assert (out / "last" / "model.safetensors").read_bytes() == before
    PoetryLSTM.from_pretrained(out / "last")


@pytest.mark.parametrize("problem", ["missing", "corrupt", "wrong_keys"])
def test_bad_data_is_refused_and_nothing_is_written(tmp_path, problem):
    data = tmp_path / "tang.npz"
    if problem == "corrupt":
        data.write_bytes(b"PK\x03\x04 not really a zip")
    elif problem == "wrong_keys":
        import numpy as np

        np.savez(data, poems=np.zeros((3, 125), dtype=np.int32))
    result = run_cli(["--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    assert result.returncode != 0
    assert str(data) in result.stderr and "error:" in result.stderr
    assert not (tmp_path / "run").exists()


def test_resume_with_other_data_or_model_size_is_refused(small_npz, full_npz, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--epochs", "1", "--max-steps", "2"]).returncode == 0
    before = sorted(p.name for p in out.iterdir())
    other_size = run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--hidden-dim", "64", "--resume"])
    assert other_size.returncode != 0 and "hidden_dim" in other_size.stderr
    from poetry_model.data import load_npz
    from poetry_model.vocab import Vocab

    # Same file format, different vocabulary: the traditional-script build of the same poems.
    trad = tmp_path / "trad.npz"
    from train.prepare import prepare

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinese-poetry" / "tang"
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "poet.tang.0.json").write_bytes((src / "poet.tang.0.json").read_bytes())
    prepare(tmp_path / "json", trad, "traditional")
    assert load_npz(trad).vocab.tokens != Vocab.load(out / "last").tokens
    other_vocab = run_cli(["--data", str(trad), "--out", str(out), *TINY, "--resume"])
    assert other_vocab.returncode != 0 and "vocab.json differs" in other_vocab.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_new_run_refuses_to_overwrite_an_existing_one(small_npz, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--max-steps", "1"]).returncode == 0
    again = run_cli(["--data", str(small_npz), "--out", str(out), *TINY, "--max-steps", "1"])
    assert again.returncode != 0 and "--resume" in again.stderr


def test_push_to_hub_uploads_the_best_folder(small_npz, tmp_path):
    from fake_hub import running_hub

    with running_hub() as hub:
        env = hub.env(tmp_path / "hf_home")
        result = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "run"), *TINY, "--epochs", "1",
                          "--push-to-hub", "tester/tang-tiny"], env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        pushed = {f for commit in hub.commits for f in commit["files"]}
    assert {"config.json", "model.safetensors", "vocab.json", "README.md"} <= pushed


def test_device_flag_and_precision_choice(small_npz, tmp_path):
    cfg = config(small_npz, tmp_path / "run", "--device", "cpu", "--max-steps", "2", "--precision", "fp32")
    summary = train(cfg)
    assert summary["bf16"] is False and summary["steps"] == 2
    assert torch.device("cpu").type == "cpu"


def test_patience_stops_when_validation_stops_improving(small_npz, tmp_path):
    # With a zero learning rate the validation loss cannot improve after the first epoch.
    cfg = config(small_npz, tmp_path / "run", "--epochs", "5", "--lr", "0", "--patience", "1")
    summary = train(cfg)
    assert summary["stopped"] == "patience" and summary["epochs"] == 2
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["best"] for r in rows] == [True, False]


# --- titles, --init-from, lineage ------------------------------------------------------------

def test_titled_batches_score_the_same_poem_tokens(small_npz, tmp_path):
    import numpy as np

    from poetry_model.data import load_npz, title_ids
    from train.batches import IGNORE, Batches
    from train.train import training_vocab

    cfg = config(small_npz, tmp_path / "run", "--titles", "--title-dropout", "0.3")
    ds = load_npz(small_npz)
    vocab = training_vocab(cfg, ds.vocab)
    idx = np.arange(200)
    b = Batches(ds, idx, cfg, 0, 1, vocab.title_end_id)
    batch = np.arange(8)
    flags = b.all_titled()[batch]
    assert flags.all()  # every poem of the first file has a title
    plain_in, plain_t = b.tensors(batch, False)
    titled_in, titled_t = b.tensors(batch, False, flags)
    for i in range(len(batch)):
        title = title_ids(ds.vocab, str(ds.titles[i]))
        assert titled_in[i, :len(title) + 2].tolist() == [vocab.start_id, *title, vocab.title_end_id]
        # Title and <TITLE_END> are never targets; the poem's targets are exactly the untitled ones.
        assert (titled_t[i, :len(title) + 1] == IGNORE).all()
        assert titled_t[i][titled_t[i] != IGNORE].tolist() == plain_t[i][plain_t[i] != IGNORE].tolist()
    draw = b.title_draw(3)
    assert np.array_equal(draw, b.title_draw(3)) and not np.array_equal(draw, b.title_draw(4))
    assert 0.6 < draw.mean() < 0.8  # about 1 - title dropout
    assert not Batches(ds, idx, cfg, 0, 1, None).title_draw(0).any()  # titles off: never titled


def test_init_from_the_shipped_model_with_titles_resumes_anywhere_and_keeps_lineage(full_npz, tmp_path):
    import shutil

    out = tmp_path / "run"
    common = ["--data", str(full_npz), *TINY, "--titles", "--epochs", "1", "--lr", "1e-4", "--precision", "fp32"]
    first = run_cli([*common, "--out", str(out), "--init-from", str(SHIPPED), "--max-steps", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    [summary] = summaries(first.stdout)
    # Started from trained weights: far below a random model's ln(8929) = 9.1 on the first validation.
    assert summary["best_val"] < 5.8
    best = PoetryLSTM.from_pretrained(out / "best")
    assert best.config.takes_titles and best.config.vocab_size == 8929 and best.vocab.tokens[-1] == "<TITLE_END>"
    assert (best.config.embedding_dim, best.config.hidden_dim, best.config.softmax_cutoffs) == (256, 384, [2000, 5000])
    shipped = json.loads((SHIPPED / "training.json").read_text())
    record = json.loads((out / "best" / "training.json").read_text())
    shipped_has_titles = "<TITLE_END>" in json.loads((SHIPPED / "vocab.json").read_text(encoding="utf-8"))["tokens"]
    assert record["init_from"]["path"] == "checkpoints/tang-lstm"
    assert record["init_from"]["tokens_added"] == ([] if shipped_has_titles else ["<TITLE_END>"])
    assert record["init_from"]["training"]["train_seconds"] == shipped["train_seconds"]
    assert record["total_train_seconds"] == pytest.approx(record["train_seconds"] + shipped.get(
        "total_train_seconds", shipped["train_seconds"]), abs=0.2)
    assert record["titles"] and record["split"] == "dedup" and record["best_val_titled"] > 0

    # Carried to another place (another machine needs only the repository, the data and this folder).
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    second = run_cli([*common, "--out", str(moved), "--resume", "--max-steps", "4", "--epochs", "2"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming at epoch 2" in second.stdout and summaries(second.stdout)[0]["steps"] == 4
    again = json.loads((moved / "last" / "trainer_state.json").read_text())
    assert again["init_from"]["path"] == "checkpoints/tang-lstm" and again["config"]["hidden_dim"] == 384

    # A child of that run: the lineage nests and the compute adds up.
    child = run_cli(["--data", str(full_npz), *TINY, "--titles", "--out", str(tmp_path / "child"),
                     "--init-from", str(out / "best"), "--max-steps", "1", "--epochs", "1"])
    assert child.returncode == 0, child.stderr[-3000:]
    grand = json.loads((tmp_path / "child" / "best" / "training.json").read_text())
    assert grand["init_from"]["tokens_added"] == []  # the parent already had <TITLE_END>
    assert grand["init_from"]["training"]["init_from"]["path"] == "checkpoints/tang-lstm"
    assert grand["init_from"]["path"] == "run/best" and str(tmp_path) not in json.dumps(grand)
    assert grand["total_train_seconds"] == pytest.approx(grand["train_seconds"] + record["total_train_seconds"], abs=0.2)


def test_init_from_a_model_of_another_vocabulary_is_refused(small_npz, tiny_model_dir, tmp_path):
    result = run_cli(["--data", str(small_npz), "--out", str(tmp_path / "run"), *TINY, "--init-from", str(tiny_model_dir)])
    assert result.returncode != 0 and "--init-from" in result.stderr and "vocabulary" in result.stderr


def test_time_schedule_and_time_checkpoints(small_npz, tmp_path, monkeypatch):
    import train.train as trainer
    from train.train import lr_at

    cfg = config(small_npz, tmp_path / "run", "--schedule", "cosine_time", "--time-budget", "100", "--lr", "1e-3")
    assert lr_at(cfg, 50, 10, seconds=0) == pytest.approx(1e-3)
    assert lr_at(cfg, 50, 10, seconds=50) == pytest.approx(1e-3 * 0.55)
    assert lr_at(cfg, 50, 10, seconds=100) == lr_at(cfg, 50, 10, seconds=500) == pytest.approx(1e-4)
    saves = []
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint", lambda out, net, opt, state: (saves.append(state["global_step"]),
                                                                                  real(out, net, opt, state)))
    cfg = config(small_npz, tmp_path / "run2", "--checkpoint-every", "0", "--checkpoint-seconds", "1e-6",
                 "--max-steps", "4", "--epochs", "1")
    train(cfg)
    assert saves[:3] == [1, 2, 3]  # one after every step here, then the end-of-run one
