"""Pretraining an LS-EMVAE (paper 002) with Lightning: unlabelled ECGs in, each loss term logged.

:class:`LSVAEPretrainModule` wraps :class:`cardiofusion.models.lsvae.LSEMVAE`.  It takes the library's
batches (``ecg`` ``(B, L, T)`` with rows in the VAE's lead order, ``ecg_mask`` ``(B, L)``, optional
``has_ecg`` ``(B,)``; labels are not used) and logs ``train_loss``, ``train_recon``, ``train_kl``,
``train_align`` and ``beta`` every epoch (``val_*`` likewise, on the posterior mean, so validation is
deterministic).  ``beta`` follows :func:`~cardiofusion.models.lsvae.beta_schedule` on the trainer's epoch.

The paper's optimisation: AdamW (lr 5e-4, weight decay 1e-5) here; gradient clipping 1.0, gradient
accumulation and fp16 / bf16 are Trainer settings (``gradient_clip_val=1.0``,
``accumulate_grad_batches=k``, ``precision="16-mixed"`` / ``"bf16-mixed"``): Lightning's accumulation
zeroes gradients once per optimiser step, not once per micro-batch as the original code did.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ..models.lsvae import LSEMVAE, LSVAEConfig, beta_schedule

__all__ = ["LSVAEPretrainModule"]


class LSVAEPretrainModule(L.LightningModule):
    """Lightning wrapper for LS-EMVAE pretraining.

    Args:
        vae: the :class:`~cardiofusion.models.lsvae.LSVAEConfig` as a dict (stored in every checkpoint, so a
            checkpoint alone rebuilds the model; the encoders load into the fine-tuning face by lead name).
        lr, weight_decay: AdamW settings.
    """

    def __init__(self, vae: dict[str, Any], lr: float = 5e-4, weight_decay: float = 1e-5):
        super().__init__()
        self.save_hyperparameters()
        self.vae_config = LSVAEConfig.from_dict(vae)
        self.vae = LSEMVAE(self.vae_config)
        self.lr, self.weight_decay = float(lr), float(weight_decay)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["ecg"]
        mask = batch.get("ecg_mask")
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask.bool()
        has = batch.get("has_ecg")
        if has is not None:  # rows without an ECG are left out (they would only dilute the per-sample means)
            keep = has.bool().to(x.device)
            x, mask = x[keep], mask[keep]
        return x, mask

    def beta(self) -> float:
        """The KL weight of the current epoch."""
        return beta_schedule(self.current_epoch, self.vae_config.beta_anneal_epochs)

    def _step(self, batch: dict[str, Any], stage: str, sample: bool) -> torch.Tensor | None:
        x, mask = self._inputs(batch)
        if x.shape[0] == 0:
            return None
        terms = self.vae.loss(self.vae(x, mask, sample=sample), x, beta=self.beta())
        n = int(x.shape[0])
        for name, value in terms.items():
            key = "beta" if name == "beta" else f"{stage}_{name}"
            if name == "beta" and stage != "train":
                continue
            self.log(key, value, on_step=False, on_epoch=True, prog_bar=name == "loss", batch_size=n,
                     sync_dist=stage != "train")
        return terms["loss"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train", sample=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val", sample=False)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
