"""Stage 4 of paper 003: training and judging the ECG -> X-ray generator
(:class:`~cardiofusion.models.ecg_to_image.ECGToImageDiffusion`) as a LightningModule.

The condition is the aligned ECG embedding of an alignment checkpoint (stage 2), L2-normalised, from the
ECG encoder and projection kept frozen in eval mode; only the diffusion model trains, with condition
dropout (classifier-free guidance is then valid).  Images are the batch's X-rays with the preprocessing's
normalisation undone (``[0, 1]``), resized to ``image_size``.  The evaluation layer judges it
(:mod:`cardiofusion.evaluation.generation`: SSIM / PSNR against the real X-ray versus the mean training X-ray
and an unconditional sample, and a frozen X-ray classifier's AUROC on the generated images).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..io.torchfile import check_torch_file
from ..records import CANONICAL_LEADS
from .ecg_pretrain import _from_dict

__all__ = ["GenerateConfig", "GenerationModule"]


@dataclass
class GenerateConfig:
    """Everything that defines a generator run (saved in every checkpoint).

    Attributes:
        align_checkpoint: the alignment checkpoint whose frozen ECG encoder + projection give the condition.
        leads: lead names of the input rows.
        image_size: generated image side (64 px on CPU).
        block_out_channels, layers_per_block, num_train_timesteps, cond_dropout: the diffusion model.
        image_mean, image_std: the preprocessing's X-ray normalisation (undone to get ``[0, 1]`` images).
        lr, weight_decay: AdamW.
        val_seed: seed of the validation noise (a comparable ``val_loss``).
    """

    align_checkpoint: str = ""
    leads: tuple[str, ...] = CANONICAL_LEADS
    image_size: int = 64
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    num_train_timesteps: int = 1000
    cond_dropout: float = 0.1
    image_mean: float = 0.449
    image_std: float = 0.226
    lr: float = 2e-4
    weight_decay: float = 0.0
    val_seed: int = 0

    def __post_init__(self):
        self.leads = tuple(self.leads)
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if not self.align_checkpoint:
            raise ConfigError("the ECG -> image generator needs align_checkpoint (a stage-2 alignment checkpoint)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"], d["block_out_channels"] = list(self.leads), list(self.block_out_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GenerateConfig:
        return _from_dict(cls, d)


class GenerationModule(L.LightningModule):
    """The diffusion generator conditioned on the frozen aligned ECG embedding.

    Args:
        config: a :class:`GenerateConfig` or its dict (stored as a hyperparameter).
        load_weights: accepted for the pretraining runner's symmetry (the ECG side always comes from
            ``align_checkpoint``; a checkpoint of this module then overwrites every weight).
    """

    def __init__(self, config: GenerateConfig | Mapping[str, Any], load_weights: bool = True):
        super().__init__()
        cfg = config if isinstance(config, GenerateConfig) else GenerateConfig.from_dict(config)
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.config = cfg
        from ..models.ecg_to_image import ECGToImageDiffusion
        from .ecg_align import AlignmentModule

        check_torch_file(cfg.align_checkpoint, what="alignment checkpoint")
        aligned = AlignmentModule.load_from_checkpoint(cfg.align_checkpoint, map_location="cpu", load_weights=False,
                                                       weights_only=False)
        if tuple(aligned.config.leads) != cfg.leads:
            raise ConfigError(f"{cfg.align_checkpoint}: aligned on leads {aligned.config.leads}, not {cfg.leads}")
        self.ecg_spec = {"ecg_encoder": aligned.config.ecg_encoder, "ecg_kwargs": dict(aligned.config.ecg_kwargs),
                         "leads": list(aligned.config.leads), "embed_dim": int(aligned.config.embed_dim),
                         "projection_hidden": aligned.config.projection_hidden,
                         "projection_norm": bool(aligned.config.projection_norm)}
        self.ecg_encoder = aligned.aligner.ecg_encoder
        self.ecg_projection = aligned.aligner.ecg_projection
        for module in (self.ecg_encoder, self.ecg_projection):
            module.requires_grad_(False)
            module.eval()
        self.diffusion = ECGToImageDiffusion(int(aligned.config.embed_dim), cfg.image_size, cfg.block_out_channels,
                                             cfg.layers_per_block, cfg.num_train_timesteps, cfg.cond_dropout)

    def generator_spec(self) -> dict[str, Any]:
        """The JSON-friendly spec that rebuilds this generator without the alignment checkpoint
        (:class:`~cardiofusion.models.ecg_to_image.ECGImageGenerator`; its state dict is this module's)."""
        cfg = self.config
        return {**self.ecg_spec, "image_size": cfg.image_size, "block_out_channels": list(cfg.block_out_channels),
                "layers_per_block": cfg.layers_per_block, "num_train_timesteps": cfg.num_train_timesteps,
                "cond_dropout": cfg.cond_dropout}

    def train(self, mode: bool = True):
        super().train(mode)
        self.ecg_encoder.eval()  # the frozen ECG side stays in eval mode
        self.ecg_projection.eval()
        return self

    @torch.no_grad()
    def condition(self, ecg: torch.Tensor, ecg_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The L2-normalised aligned ECG embedding ``(B, D)``."""
        return F.normalize(self.ecg_projection(self.ecg_encoder(ecg, ecg_mask)).float(), dim=-1)

    def images(self, cxr: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images at ``image_size`` from normalised model inputs."""
        x = (cxr.float() * self.config.image_std + self.config.image_mean).clamp(0.0, 1.0)
        if x.shape[-1] != self.config.image_size:
            x = F.interpolate(x, size=(self.config.image_size,) * 2, mode="area")
        return x

    def _paired(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        keep = torch.ones(batch["ecg"].shape[0], dtype=torch.bool, device=batch["ecg"].device)
        for key in ("has_ecg", "has_cxr"):
            if key in batch:
                keep &= torch.as_tensor(batch[key], device=keep.device).bool()
        if not bool(keep.any()):
            return None
        mask = batch.get("ecg_mask")
        return self.condition(batch["ecg"][keep], None if mask is None else mask[keep]), self.images(batch["cxr"][keep])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        pairs = self._paired(batch)
        if pairs is None:
            return None
        loss = self.diffusion.loss(pairs[1], pairs[0])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=pairs[0].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        pairs = self._paired(batch)
        if pairs is None:
            return
        gen = torch.Generator(device=pairs[0].device).manual_seed(int(self.config.val_seed) * 1_000_003 + batch_idx)
        loss = self.diffusion.loss(pairs[1], pairs[0], generator=gen)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=pairs[0].shape[0])

    def configure_optimizers(self):
        params = [p for p in self.diffusion.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
