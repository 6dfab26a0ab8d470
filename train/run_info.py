"""What a training run says about itself: the summary a model folder carries (`training.json`), else
the trainer's state and metrics in the run folder. Shared by evaluation and export."""
from __future__ import annotations

import json
from pathlib import Path

TRAINING_FILE = "training.json"  # the run's summary, kept by train/export.py in a shipped folder


def training_info(source: str) -> dict:
    """What the run that wrote a model folder says about itself: its exported summary, else the
    trainer_state.json here or in ../last (recipe, compute seconds, epochs, best epoch)."""
    folder = Path(source)
    try:
        return json.loads((folder / TRAINING_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        pass
    for state_file in (folder / "trainer_state.json", folder.parent / "last" / "trainer_state.json"):
        if state_file.is_file():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            cfg = state.get("config", {})
            info = {"recipe": cfg.get("recipe"), "train_seconds": state.get("train_seconds"),
                    "time_budget": cfg.get("time_budget"), "epochs": state.get("epoch"),
                    "steps": state.get("global_step"), "best_val": state.get("best_val")}
            return {**info, **_best_record(state_file.parent.parent / "metrics.jsonl")}
    return {}


def _best_record(path: Path) -> dict:
    """Epoch and training seconds at which the run's best checkpoint was saved (its metrics.jsonl)."""
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return {}
    best = [r for r in rows if r.get("best")]
    return {"best_epoch": best[-1].get("epoch"), "best_train_seconds": best[-1].get("wall_s")} if best else {}


# --- language-model metrics --------------------------------------------------------------------
