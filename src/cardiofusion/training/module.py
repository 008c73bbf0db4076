"""The LightningModule: a ``cardiofusion.models`` model, its loss, Adam + cosine schedule, and the
per-epoch validation metrics.

Validation is deterministic and uses the same windows as final evaluation (``cardiofusion.data.dataset``):
``val_loss`` is the model's loss over all evaluation windows of the validation records (each window a
row, weighted equally); ``val_auroc`` is the ROC AUC of the record scores, each the mean of its windows'
scores.  For other tasks (``TrainConfig.task``) the losses take the encoded targets
(:func:`cardiofusion.tasks.losses.task_loss`) and each epoch logs the task's metrics instead of ``val_auroc``
(:func:`~cardiofusion.training.evaluate.metric_names`: ``val_macro_auroc``, ``val_quadratic_kappa``,
``val_mae``), computed on the record-level outputs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import numpy as np
import torch

from .config import TrainConfig
from .evaluate import aggregate_windows, auroc, model_batch, task_metrics


class CardioFusionModule(L.LightningModule):
    """Training wrapper around ``build_model(config.model)``.

    Args:
        config: the run's :class:`TrainConfig` as a dict (``to_dict``), stored in every checkpoint so a
            checkpoint alone rebuilds the model and its preprocessing.
        pos_weight: resolved positive-class weight of the loss (None: unweighted); for other tasks a number or
            one weight per output / class (:func:`cardiofusion.tasks.losses.task_pos_weight`).
        pretrained: load the X-ray encoder's pretrained weights when building the model; False when the
            weights come from a checkpoint anyway.
    """

    def __init__(self, config: dict[str, Any], pos_weight: float | list[float] | None = None, pretrained: bool = True):
        super().__init__()
        self.save_hyperparameters()
        from ..models import build_model

        self.config = TrainConfig.from_dict(config)
        model_cfg = self.config.model
        if not pretrained and getattr(model_cfg, "cxr_pretrained", False):
            model_cfg = dataclasses.replace(model_cfg, cxr_pretrained=False)
        self.model = build_model(model_cfg)
        self.task = None if self.config.task is None else self.config.task_spec()
        if pos_weight is None or isinstance(pos_weight, (int, float)):
            self.pos_weight = None if pos_weight is None else float(pos_weight)
        else:
            self.pos_weight = [float(v) for v in pos_weight]
        self._train_loss = [0.0, 0]  # running (sum, count) of the current epoch
        self._val_scores: list[torch.Tensor] = []
        self._val_probs: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    @property
    def preprocess(self):
        """The :class:`~cardiofusion.transforms.preprocess.PreprocessConfig` this model expects."""
        return self.config.preprocess

    def forward(self, batch: dict[str, Any]):
        return self.model(model_batch(batch))

    def _loss(self, batch: dict[str, Any]):
        output = self.model(model_batch(batch))
        if self.task is None:
            losses = self.model.loss(output, batch["label"], pos_weight=self.pos_weight)
        else:
            from ..tasks.losses import task_loss

            losses = task_loss(self.task, self.model, output, batch["label"], pos_weight=self.pos_weight)
        return output, losses

    # -- training -----------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_loss = [0.0, 0]
        self.set_encoders_frozen(self.current_epoch < self.config.freeze_encoders_epochs)

    def set_encoders_frozen(self, frozen: bool) -> None:
        """Freeze (no gradients, BatchNorm/dropout in eval mode) or release the modality encoders."""
        for name in ("ecg_encoder", "cxr_encoder"):
            encoder = getattr(self.model, name, None)
            if encoder is None:
                continue
            for p in encoder.parameters():
                p.requires_grad_(not frozen)
            if frozen:
                encoder.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, losses = self._loss(batch)
        n = int(batch["label"].shape[0])
        loss = losses["loss"]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train_{name}", value, on_step=False, on_epoch=True, batch_size=n)
        if torch.isfinite(loss.detach()):
            self._train_loss[0] += float(loss.detach()) * n
            self._train_loss[1] += n
        return loss

    def epoch_train_loss(self) -> float:
        """Mean training loss of the current epoch so far (this process)."""
        total, n = self._train_loss
        return total / n if n else math.nan

    # -- validation ---------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_scores, self._val_probs, self._val_labels = [], [], []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        output, losses = self._loss(batch)
        n_windows = int(batch["label"].shape[0])
        self.log("val_loss", losses["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=n_windows,
                 sync_dist=True)
        agg = aggregate_windows(output, batch["record_index"], int(batch["n_records"]))
        # a record's windows share its label: any window's label will do
        row = torch.zeros(int(batch["n_records"]), dtype=torch.long, device=batch["label"].device)
        row.scatter_(0, batch["record_index"].to(row.device), torch.arange(n_windows, device=row.device))
        self._val_scores.append(agg["score"].detach().float())
        self._val_probs.append(agg["prob"].detach().float())
        self._val_labels.append(batch["label"][row].detach().float())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores, labels = torch.cat(self._val_scores), torch.cat(self._val_labels)  # (N_records,) or (N_records, k)
        probs = torch.cat(self._val_probs)
        if self.trainer.world_size > 1:
            scores, probs, labels = (self.all_gather(x).reshape(-1, *x.shape[1:]) for x in (scores, probs, labels))
        if self.task is None:
            value = auroc(labels.cpu().numpy(), scores.cpu().numpy())
            self.log("val_auroc", float(value) if np.isfinite(value) else math.nan, prog_bar=True, sync_dist=False)
        else:
            metrics = task_metrics(self.task, labels.cpu().numpy(), probs.cpu().numpy(), scores.cpu().numpy())
            primary = self.task.primary_metric[0] if not self.task.is_binary else "auroc"
            for name, value in metrics.items():
                self.log(f"val_{name}", float(value) if np.isfinite(value) else math.nan, prog_bar=name == primary,
                         sync_dist=False)
        self._val_scores, self._val_probs, self._val_labels = [], [], []

    # -- optimisation -------------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.config
        optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.t_max)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


__all__ = ["CardioFusionModule"]
