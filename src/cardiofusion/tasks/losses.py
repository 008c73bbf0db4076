"""The torch side of tasks: encoded labels -> the targets and masks the fusion heads' losses take.

A batch's ``label`` is the task's encoded label (:meth:`Task.encode_labels`, float, NaN unknown).  The heads
(:mod:`cardiofusion.models.fusion`) learn per output:

=====================  =======================================================  ============================
task                   target ``(B, k)``                                        mask
=====================  =======================================================  ============================
binary                 the label ``(B,)`` 0/1 (as before tasks existed)         ``~isnan``
multiclass (softmax)   one-hot of the class index, ``(B, K)``                   rows with a known class
ordinal (cumulative)   ``[y > j]`` for j = 0 .. K - 2 (CORAL), ``(B, K - 1)``   rows with a known class
multilabel             the 0/1 labels ``(B, L)``                                ``~isnan`` per entry
regression             ``(y - mean) / std`` with the task's train scaler        ``~isnan`` per entry
=====================  =======================================================  ============================

``pos_weight`` (:func:`task_pos_weight`, from ``TrainConfig.pos_weight``): binary as before (a number, or
``balanced`` = negatives / positives); multilabel a number for every label or ``balanced`` = negatives /
positives per label among the known training labels; multiclass ``balanced`` = class weights ``n / (K n_k)``
(scikit-learn's ``compute_class_weight``) for a weighted cross-entropy (a plain number is refused); ordinal
``balanced`` = the same K class weights, each row's cumulative outputs weighted by its class's weight (a number:
the positive entries of every cumulative output). Balancing each cumulative output ``[y > j]`` to 50/50 on its
own instead would drive every P(y > j) towards 0.5 for an uninformative input, i.e. probability 0 for the middle
classes (issue 15: models that only ever predicted the two extreme classes); regression none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .spec import Task

__all__ = ["encode_targets", "task_loss", "task_pos_weight"]


def encode_targets(task: Task, label: Tensor) -> tuple[Tensor, Tensor]:
    """``(target, mask)`` for the heads' losses from a batch's encoded labels (see the module docstring).

    Args:
        task: the (fitted, for regression) task.
        label: ``(B,)`` (binary, multiclass class index) or ``(B, L)`` float, NaN unknown.
    """
    label = torch.as_tensor(label)
    if not label.is_floating_point():
        label = label.float()
    if task.kind == "binary":
        label = label.reshape(-1)
        return label, ~torch.isnan(label)
    if task.kind == "multiclass":
        y = label.reshape(-1)
        known = ~torch.isnan(y)
        index = torch.where(known, y, torch.zeros_like(y)).round().long()
        k = task.n_classes
        if bool(((index < 0) | (index >= k)).any()):
            raise ConfigError(f"task {task.name!r}: class indices must lie in 0-{k - 1}")
        if task.ordinal:
            target = (index.unsqueeze(1) > torch.arange(k - 1, device=y.device)).to(y.dtype)  # (B, K-1)
        else:
            target = torch.nn.functional.one_hot(index, k).to(y.dtype)  # (B, K)
        mask = known.unsqueeze(1).expand_as(target)
        return torch.where(mask, target, torch.full_like(target, float("nan"))), mask
    y = label.reshape(len(label), -1)
    if y.shape[1] != task.n_outputs:
        raise ConfigError(f"task {task.name!r}: labels have {y.shape[1]} column(s), the task reads {task.n_outputs}")
    if task.kind == "regression":
        if task.scaler is None:
            raise ConfigError(f"task {task.name!r}: the regression scaler is not fitted (Task.fit on train labels)")
        mean = torch.as_tensor(task.scaler.mean, dtype=y.dtype, device=y.device)
        std = torch.as_tensor(task.scaler.std, dtype=y.dtype, device=y.device)
        y = (y - mean) / std
    return y, ~torch.isnan(y)


def task_loss(task: Task, model: Any, output: Any, label: Tensor,
              pos_weight: float | Tensor | list[float] | None = None) -> dict[str, Tensor]:
    """The model's loss terms for a batch of encoded labels (binary: exactly ``model.loss(output, label,
    pos_weight)``)."""
    if task.kind == "binary":
        return model.loss(output, label, pos_weight=pos_weight)
    target, mask = encode_targets(task, label)
    if pos_weight is not None:
        pos_weight = torch.as_tensor(pos_weight, dtype=output.score.dtype, device=output.score.device)
    return model.loss(output, target, pos_weight=pos_weight, mask=mask)


def task_pos_weight(task: Task, train_labels: np.ndarray, setting: None | float | str) -> float | list[float] | None:
    """The loss weight for a ``TrainConfig.pos_weight`` setting (None, a number or ``balanced``), from the
    training records' encoded labels (see the module docstring)."""
    if setting is None:
        return None
    labels = np.asarray(train_labels, dtype=np.float64)
    where = f"pos_weight {setting!r} for task {task.name!r}"
    if task.kind == "regression":
        raise ConfigError(f"{where}: regression has no positive class; leave pos_weight unset")
    if task.kind == "binary":
        if setting != "balanced":
            return float(setting)
        known = labels[np.isfinite(labels)]
        n_pos, n_neg = int((known > 0.5).sum()), int((known <= 0.5).sum())
        if n_pos == 0 or n_neg == 0:
            raise ConfigError("pos_weight 'balanced' needs both classes among the training records")
        return n_neg / n_pos
    if task.kind == "multiclass" and (setting == "balanced" or not task.ordinal):
        if setting != "balanced":
            raise ConfigError(f"{where}: a multiclass task takes 'balanced' class weights or none")
        from sklearn.utils.class_weight import compute_class_weight

        y = labels[np.isfinite(labels)].astype(int)
        return compute_class_weight("balanced", classes=np.arange(task.n_classes), y=y).tolist()
    if setting != "balanced":
        return float(setting)
    matrix = labels.reshape(len(labels), -1)
    weights = []
    for j, name in enumerate(task.output_names):
        col = matrix[:, j][np.isfinite(matrix[:, j])]
        n_pos, n_neg = int((col > 0.5).sum()), int((col <= 0.5).sum())
        if n_pos == 0 or n_neg == 0:
            raise ConfigError(f"{where}: output {name!r} needs both values among the training records")
        weights.append(n_neg / n_pos)
    return weights
