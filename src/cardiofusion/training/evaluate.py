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
    """Mean of ``values`` (B_w,) or (B_w, k) per group ``index`` (B_w,) -> (n,) or (n, k)."""
    values = values.detach().float()
    shape = (n, *values.shape[1:])
    total = torch.zeros(shape, dtype=torch.float32, device=values.device).index_add_(0, index, values)
    count = torch.zeros(shape, dtype=torch.float32, device=values.device).index_add_(0, index, torch.ones_like(values))
    return total / count.clamp_min(1)


def aggregate_windows(output: Any, record_index: torch.Tensor, n_records: int) -> dict[str, torch.Tensor]:
    """Average a window-level ``FusionOutput`` per record.

    Returns ``score``, ``prob``, ``score_ecg``, ``score_cxr`` (NaN where the branch gave no score), each
    ``(n_records,)`` float32 for the binary head and ``(n_records, k)`` / ``(n_records, m)`` for heads with k
    outputs (class probabilities are averaged, so they still sum to 1), and ``used`` ``(n_records, 2)`` bool
    (any window used the modality).
    """
    index = record_index.to(output.score.device).long()
    out = {"score": _mean_by_index(output.score, index, n_records),
           "prob": _mean_by_index(output.prob, index, n_records)}
    branches = getattr(output, "branch_scores", None) or {}
    for name in ("ecg", "cxr"):
        branch = branches.get(name)
        out[f"score_{name}"] = (_mean_by_index(branch, index, n_records) if branch is not None
                                else torch.full(tuple(out["score"].shape), math.nan, device=index.device))
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
def evaluate_scores(model: torch.nn.Module, dataloader: Iterable[dict[str, Any]], task: Any = None) -> pd.DataFrame:
    """Deterministic record-level scores of a model over an evaluation loader.

    Each record's scores are the means over its evaluation windows (``cardiofusion.data.dataset``).

    Args:
        task: the run's :class:`~cardiofusion.tasks.Task`; None or a binary task gives the binary table.

    Returns:
        One row per record: ``record_id``, ``patient_id``, ``label``, ``score``, ``prob``,
        ``score_ecg``, ``score_cxr`` (NaN where a branch gave no score); for other tasks the columns of
        ``task.score_columns()`` (``Task.table_from_outputs``).
    """
    if task is not None and not task.is_binary:
        return _task_scores(model, dataloader, task)
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


@torch.no_grad()
def _task_scores(model: torch.nn.Module, dataloader: Iterable[dict[str, Any]], task: Any) -> pd.DataFrame:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    ids: list[str] = []
    patients: list[str] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "score", "prob", "score_ecg", "score_cxr")}
    try:
        for batch in dataloader:
            batch = move_batch(batch, device)
            output = model(model_batch(batch))
            agg = aggregate_windows(output, batch["record_index"], int(batch["n_records"]))
            first = record_rows(batch)
            ids += [batch["record_id"][i] for i in first]
            patients += [batch["patient_id"][i] for i in first]
            parts["label"].append(batch["label"][torch.as_tensor(first, device=batch["label"].device)].float().cpu().numpy())
            for k in ("score", "prob", "score_ecg", "score_cxr"):
                parts[k].append(agg[k].float().cpu().numpy())
    finally:
        model.train(was_training)
    n_out, n_prob = task.n_outputs, len(task.prediction_columns())
    widths = {"label": task.label_width, "score": n_out, "prob": n_prob, "score_ecg": n_out, "score_cxr": n_out}
    arrays = {k: (np.concatenate([p.reshape(len(p), -1) for p in v]) if v else np.zeros((0, widths[k])))
              for k, v in parts.items()}
    has_branch = {b: bool(np.isfinite(arrays[f"score_{b}"]).any()) for b in ("ecg", "cxr")}
    columns = task.table_from_outputs(arrays["label"], arrays["score"], arrays["prob"],
                                      {b: arrays[f"score_{b}"] if has_branch[b] else None for b in ("ecg", "cxr")})
    table = pd.DataFrame({"record_id": ids, "patient_id": patients, **columns})
    return table[task.score_columns()]


def task_metrics(task: Any, labels: np.ndarray, probs: np.ndarray, scores: np.ndarray | None = None) -> dict[str, float]:
    """Validation metrics of a task from record-level labels and head outputs (scikit-learn).

    Binary: ``auroc`` (of ``scores`` when given, else ``probs``).  Multiclass: ``macro_auroc`` (one-vs-rest,
    the mean over classes present with both values); ordinal also ``quadratic_kappa`` (Cohen's kappa with
    quadratic weights of the most probable class).  Multilabel: ``macro_auroc`` over the labels with both
    classes present.  Regression: ``mae`` in the targets' units (``probs`` standardised, as the heads output
    them; the mean over targets of each target's MAE) and ``mae_<target>`` per target.  NaN when undefined.

    Args:
        labels: encoded labels ``(N,)`` or ``(N, L)`` (regression in units), NaN unknown.
        probs: the heads' ``prob`` per record ``(N,)`` / ``(N, m)``.
    """
    labels = np.asarray(labels, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if task.kind == "binary":
        return {"auroc": auroc(labels.reshape(-1), (probs if scores is None else np.asarray(scores)).reshape(-1))}
    n = len(labels)
    if task.kind == "regression":
        pred = task.unstandardize(probs.reshape(n, -1))
        lab = labels.reshape(n, -1)
        out = {}
        for j, name in enumerate(task.target_names):
            keep = np.isfinite(lab[:, j]) & np.isfinite(pred[:, j])
            out[f"mae_{name}"] = float(np.mean(np.abs(pred[keep, j] - lab[keep, j]))) if keep.any() else math.nan
        values = [v for v in out.values() if math.isfinite(v)]
        return {"mae": float(np.mean(values)) if values else math.nan, **out}
    p = probs.reshape(n, -1)
    if task.kind == "multilabel":
        lab = labels.reshape(n, -1)
        per = [auroc(lab[:, j], p[:, j]) for j in range(lab.shape[1])]
    else:
        y = labels.reshape(-1)
        per = [auroc(np.where(np.isfinite(y), (y == c).astype(float), np.nan), p[:, c]) for c in range(p.shape[1])]
    per = [v for v in per if math.isfinite(v)]
    out = {"macro_auroc": float(np.mean(per)) if per else math.nan}
    if task.kind == "multiclass" and task.ordinal:
        from sklearn.metrics import cohen_kappa_score

        y = labels.reshape(-1)
        keep = np.isfinite(y) & np.isfinite(p).all(axis=1)
        if keep.sum() >= 2 and len(np.unique(y[keep])) >= 2:
            out["quadratic_kappa"] = float(cohen_kappa_score(y[keep].astype(int), np.argmax(p[keep], axis=1),
                                                             weights="quadratic", labels=list(range(task.n_classes))))
        else:
            out["quadratic_kappa"] = math.nan
    return out


def metric_names(task: Any) -> list[str]:
    """The per-epoch validation metrics logged for a task (``val_<name>``), primary first."""
    if task is None or task.kind == "binary":
        return ["auroc"]
    primary = task.primary_metric[0]
    extra = {"multiclass": ["macro_auroc"], "multilabel": [], "regression": []}[task.kind]
    return [primary] + [m for m in extra if m != primary]


def task_labels(task: Any, manifest: Any, *, allow_unlabelled: bool = False):
    """The ``labels`` callable of :class:`~cardiofusion.data.dataset.CohortDataModule` for a task (None: the
    manifest's ``label`` column, today's binary behaviour); errors name the manifest and the column.

    ``allow_unlabelled``: a manifest with none of the task's columns gives unknown (NaN) labels instead of an
    error (scoring new data); one with only some of them is still an error.
    """
    if task is None:
        return None
    where = str(manifest) if not hasattr(manifest, "columns") else "manifest"

    def labels(records):
        if allow_unlabelled and not any(c in records.columns for c in task.columns):
            shape = (len(records),) if task.label_width == 1 else (len(records), task.label_width)
            return np.full(shape, np.nan, dtype=np.float32)
        return task.encode_labels(records, where=where)

    return labels


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC over records with a known label and a finite score; NaN when a class is missing."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    keep = np.isfinite(labels) & np.isfinite(scores)
    labels, scores = labels[keep], scores[keep]
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


__all__ = ["BATCH_KEYS", "SCORE_COLUMNS", "aggregate_windows", "auroc", "evaluate_scores", "metric_names",
           "model_batch", "task_labels", "task_metrics"]
