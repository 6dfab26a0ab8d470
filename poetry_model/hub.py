"""Hugging Face Hub helpers: a model card with evaluation results, and pushing a saved model folder.

    write_model_card("runs/mine/best", {"cross_entropy": 5.1, "perplexity": 164.0})
    push_folder("runs/mine/best", "user/tang-lstm")

`PoetryLSTM.push_to_hub` re-saves the in-memory model; `push_folder` uploads a folder written by
`save_pretrained` exactly as it is on disk (with the model card written here), after checking that
it loads.
"""
from __future__ import annotations

import math
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .model import CONFIG_FILE, MODEL_CARD, WEIGHTS_FILE, ModelLoadError, PoetryLSTM
from .vocab import VOCAB_FILE

REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE)
# Pretty names for the metrics the trainer and evaluator report; other numeric keys keep their own name.
METRIC_NAMES = {
    "cross_entropy": "Validation cross-entropy (nats per character)",
    "perplexity": "Validation perplexity",
    "bits_per_char": "Validation bits per character",
    "accuracy": "Validation next-character accuracy",
}
DATASET = ("chinese-poetry", "chinese-poetry 全唐诗 (Tang poems), de-duplicated validation split")


def write_model_card(model_dir: str | Path, metrics: dict, *, model_name: str = "tang-lstm",
                     repo_id: str | None = None, description: str = "") -> Path:
    """Write `model_dir/README.md` (a saved model folder): the mixin's metadata plus a `model-index` with the
    validation metrics."""
    model_dir = Path(model_dir)
    values = {k: float(v) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if not values:
        raise ValueError(f"no finite numeric metrics to put in the model card: {metrics!r}")
    results = [EvalResult(task_type="text-generation", task_name="Tang poem generation",
                          dataset_type=DATASET[0], dataset_name=DATASET[1], dataset_split="validation",
                          metric_type=key, metric_name=METRIC_NAMES.get(key, key), metric_value=value)
               for key, value in values.items()]
    base = PoetryLSTM.from_pretrained(model_dir).generate_model_card().data.to_dict()  # the mixin's metadata
    data = ModelCardData(**base, model_name=model_name, eval_results=results)
    table = "\n".join(f"| {METRIC_NAMES.get(k, k)} | {v:.4g} |" for k, v in values.items())
    text = f"## Validation results\n\n| metric | value |\n|---|---|\n{table}\n\n{description}".rstrip() + "\n"
    card = ModelCard.from_template(data, template_str=MODEL_CARD, title=model_name, repo_id=repo_id, description=text)
    path = model_dir / "README.md"
    card.save(path)
    return path


def push_folder(model_dir: str | Path, repo_id: str, token: str | None = None,
                commit_message: str = "Upload Tang poetry LSTM", private: bool | None = None,
                revision: str | None = None) -> str:
    """Upload a model folder as-is (after checking it loads) to `repo_id`; returns the commit URL."""
    model_dir = Path(model_dir)
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelLoadError(f"{model_dir}: not a saved model folder (missing {', '.join(missing)})")
    PoetryLSTM.from_pretrained(model_dir)  # refuse to publish a folder that would not load
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    info = api.upload_folder(repo_id=repo_id, folder_path=model_dir, commit_message=commit_message,
                             revision=revision, ignore_patterns=[".*", "*.tmp", "*.tmp.*"])
    return info.commit_url
