"""Record-level scores from window-level model outputs (deterministic evaluation)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

#: Keys of the model batch (``docs/model_contract.md``); loaders add ``record_index`` / ``n_records``.
BATCH_KEYS = ("ecg", "ecg_mask", "cxr", "has_ecg", "has_cxr", "label", "record_id", "patient_id")

SCORE_COLUMNS = ("record_id", "patient_id", "label", "score", "prob", "score_ecg", "score_cxr")


def model_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The contract keys of a loader batch (drops the window bookkeeping)."""
    return {k: batch[k] for k in BATCH_KEYS if k in batch}


def _mean_by_index(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of ``values`` (B_w,) per group ``index`` (B_w,) -> (n,)."""
    values = values.detach().float()
    total = torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, index, values)
    count = torch.zeros(n, dtype=torch.float32, device=values.device).index_add_(0, index, torch.ones_like(values))
    return total / count.clamp_min(1)


def aggregate_windows(output: Any, record_index: torch.Tensor, n_records: int) -> dict[str, torch.Tensor]:
    """Average a window-level ``FusionOutput`` per record.

    Returns ``score``, ``prob``, ``score_ecg``, ``score_cxr`` (NaN where the branch gave no score), each
    ``(n_records,)`` float32, and ``used`` ``(n_records, 2)`` bool (any window used the modality).
    """
    index = record_index.to(output.score.device).long()
    out = {"score": _mean_by_index(output.score, index, n_records),
           "prob": _mean_by_index(output.prob, index, n_records)}
    branches = getattr(output, "branch_scores", None) or {}
    for name in ("ecg", "cxr"):
        branch = branches.get(name)
        out[f"score_{name}"] = (_mean_by_index(branch, index, n_records) if branch is not None
                                else torch.full((n_records,), math.nan, device=index.device))
    used = getattr(output, "used", None)
    if used is not None:
        out["used"] = _any_by_index(used, index, n_records)
    return out


def _any_by_index(used: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    counts = torch.zeros(n, used.shape[1], dtype=torch.float32, device=index.device)
    counts.index_add_(0, index, used.to(index.device).float())
    return counts > 0


def record_rows(batch: dict[str, Any]) -> np.ndarray:
    """Row of each record's first window in a window-level batch (for per-record identifiers)."""
    index = batch["record_index"].cpu().numpy()
    first = np.full(int(batch["n_records"]), -1, dtype=np.int64)
    for row in range(len(index) - 1, -1, -1):
        first[index[row]] = row
    return first


def move_batch(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@torch.no_grad()
def evaluate_scores(model: torch.nn.Module, dataloader: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Deterministic record-level scores of a model over an evaluation loader.

    Each record's scores are the means over its evaluation windows (``cardiofusion.data.dataset``).

    Returns:
        One row per record: ``record_id``, ``patient_id``, ``label``, ``score``, ``prob``,
        ``score_ecg``, ``score_cxr`` (NaN where a branch gave no score).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    parts: list[pd.DataFrame] = []
    try:
        for batch in dataloader:
            batch = move_batch(batch, device)
            output = model(model_batch(batch))
            agg = aggregate_windows(output, batch["record_index"], int(batch["n_records"]))
            first = record_rows(batch)
            parts.append(pd.DataFrame({
                "record_id": [batch["record_id"][i] for i in first],
                "patient_id": [batch["patient_id"][i] for i in first],
                "label": batch["label"][torch.as_tensor(first, device=batch["label"].device)].float().cpu().numpy(),
                **{k: agg[k].float().cpu().numpy() for k in ("score", "prob", "score_ecg", "score_cxr")},
            }))
    finally:
        model.train(was_training)
    if not parts:
        return pd.DataFrame({c: [] for c in SCORE_COLUMNS})
    return pd.concat(parts, ignore_index=True)[list(SCORE_COLUMNS)]


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC over records with a known label and a finite score; NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    keep = np.isfinite(labels) & np.isfinite(scores)
    labels, scores = labels[keep], scores[keep]
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


__all__ = ["BATCH_KEYS", "SCORE_COLUMNS", "aggregate_windows", "auroc", "evaluate_scores", "model_batch"]
