"""Stage 1 of paper 003: masked-autoencoder pretraining of the ECG ViT as a LightningModule.

Any single-modality ECG batch works (keys ``ecg`` ``(B, L, T)`` and optionally ``ecg_mask`` ``(B, L)``; rows
with ``has_ecg`` False are dropped).  Training masks are random; validation masks are drawn from a
generator seeded by ``val_mask_seed`` and the batch index, so ``val_loss`` is comparable across epochs.
Optimiser as the paper: AdamW (0.9, 0.95), weight decay 0.05, linear warm-up then cosine decay per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import lightning as L
import torch

from ..errors import ConfigError
from ..records import CANONICAL_LEADS

__all__ = ["MAEPretrainConfig", "MAEPretrainModule", "ecg_rows", "warmup_cosine_schedule"]


def _from_dict(cls, d: Mapping[str, Any]):
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return cls(**dict(d))


@dataclass
class MAEPretrainConfig:
    """Everything that defines an MAE pretraining run (saved in every checkpoint).

    Attributes:
        encoder: a registered ECG ViT name (``ecg_vit_base`` paper size, ``ecg_vit_tiny`` for tests).
        encoder_kwargs: architecture overrides (``patch_len``, ``max_len``, ``width``, ``depth``, ...).
        leads: lead names of the input rows.
        mask_ratio: fraction of each lead's patches hidden.
        decoder_width, decoder_depth, decoder_heads: the light decoder.
        norm_target: standardise each target patch.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear warm-up steps before the cosine decay (to 0 at the last step).
        val_mask_seed: seed of the validation masks.
    """

    encoder: str = "ecg_vit_base"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    leads: tuple[str, ...] = CANONICAL_LEADS
    mask_ratio: float = 0.75
    decoder_width: int = 256
    decoder_depth: int = 4
    decoder_heads: int = 4
    norm_target: bool = False
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    val_mask_seed: int = 0

    def __post_init__(self):
        self.leads = tuple(self.leads)
        self.betas = tuple(float(b) for b in self.betas)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"], d["betas"] = list(self.leads), list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MAEPretrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, d)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """Per-step LR factor: linear from ``1 / (warmup + 1)`` to 1 over ``warmup_steps``, then cosine to 0."""
    warmup_steps, total_steps = max(0, int(warmup_steps)), max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def ecg_rows(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(ecg, ecg_mask)`` of the rows that have an ECG (``has_ecg``; all rows when the key is absent)."""
    if "ecg" not in batch:
        raise ConfigError("ECG pretraining needs batches with an 'ecg' key")
    x, mask = batch["ecg"], batch.get("ecg_mask")
    has = batch.get("has_ecg")
    if has is not None and not bool(torch.as_tensor(has).all()):
        keep = torch.as_tensor(has, device=x.device).bool()
        x, mask = x[keep], None if mask is None else mask[keep]
    return x, mask


def _configure(module: L.LightningModule, cfg) -> dict[str, Any]:
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    total = int(module.trainer.estimated_stepping_batches) if module._trainer is not None else 1
    scheduler = warmup_cosine_schedule(optimizer, cfg.warmup_steps, total)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MAEPretrainModule(L.LightningModule):
    """An :class:`~cardiofusion.models.ecg_mae.ECGMaskedAutoencoder` trained by Lightning.

    Args:
        config: a :class:`MAEPretrainConfig` or its dict (stored as a hyperparameter: the checkpoint alone
            rebuilds the model).

    Attributes:
        mae: the masked autoencoder; ``mae.encoder`` is the pretrained ECG encoder (its state dict is what
            :class:`~cardiofusion.training.ecg_align.AlignmentModule` loads, keys ``mae.encoder.*``).
    """

    def __init__(self, config: MAEPretrainConfig | Mapping[str, Any]):
        super().__init__()
        cfg = config if isinstance(config, MAEPretrainConfig) else MAEPretrainConfig.from_dict(config)
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.config = cfg
        from ..models import create_ecg_encoder
        from ..models.ecg_mae import ECGMaskedAutoencoder

        encoder = create_ecg_encoder(cfg.encoder, leads=cfg.leads, **cfg.encoder_kwargs)
        self.mae = ECGMaskedAutoencoder(
            encoder, mask_ratio=cfg.mask_ratio, decoder_width=cfg.decoder_width, decoder_depth=cfg.decoder_depth,
            decoder_heads=cfg.decoder_heads, norm_target=cfg.norm_target,
        )

    @property
    def encoder(self) -> torch.nn.Module:
        return self.mae.encoder

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, mask = ecg_rows(batch)
        losses = self.mae(x, mask)
        self.log("train_loss", losses["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, mask = ecg_rows(batch)
        gen = torch.Generator(device=x.device).manual_seed(int(self.config.val_mask_seed) * 1_000_003 + batch_idx)
        losses = self.mae(x, mask, generator=gen)
        self.log("val_loss", losses["loss"], on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0],
                 sync_dist=True)

    def configure_optimizers(self):
        return _configure(self, self.config)
