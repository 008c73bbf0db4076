"""Stage 4 of paper 003: training and judging the ECG -> X-ray generator
(:class:`~cardiofusion.models.ecg_to_image.ECGToImageDiffusion`) as a LightningModule.

The condition is the aligned ECG embedding of an alignment checkpoint (stage 2), L2-normalised, from the
ECG encoder and projection kept frozen in eval mode; only the diffusion model trains, with condition
dropout (classifier-free guidance is then valid).  Images are the batch's X-rays with the preprocessing's
normalisation undone (``[0, 1]``), resized to ``image_size``.  :func:`generation_table` scores the test split:
per record SSIM and PSNR of the generated image against the patient's real X-ray, and of two baselines (the
mean training X-ray; an unconditional sample, guidance 0, same noise).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .ecg_pretrain import _from_dict

__all__ = ["GenerateConfig", "GenerationModule", "generation_table", "image_quality"]


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

        aligned = AlignmentModule.load_from_checkpoint(cfg.align_checkpoint, map_location="cpu", load_weights=False,
                                                       weights_only=False)
        if tuple(aligned.config.leads) != cfg.leads:
            raise ConfigError(f"{cfg.align_checkpoint}: aligned on leads {aligned.config.leads}, not {cfg.leads}")
        self.ecg_encoder = aligned.aligner.ecg_encoder
        self.ecg_projection = aligned.aligner.ecg_projection
        for module in (self.ecg_encoder, self.ecg_projection):
            module.requires_grad_(False)
            module.eval()
        self.diffusion = ECGToImageDiffusion(int(aligned.config.embed_dim), cfg.image_size, cfg.block_out_channels,
                                             cfg.layers_per_block, cfg.num_train_timesteps, cfg.cond_dropout)

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


def image_quality(pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image SSIM and PSNR (data range 1) of ``pred`` against ``target``, both ``(B, 1, H, W)`` in [0, 1]
    (torchmetrics' implementations)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    pred, target = pred.float().clamp(0, 1), target.float().clamp(0, 1)
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return ssim.detach().cpu().numpy().reshape(-1), psnr.detach().cpu().numpy().reshape(-1)


@torch.no_grad()
def generation_table(module: GenerationModule, datamodule: Any, *, split: str = "test", guidance: float = 3.0,
                     steps: int = 50, seed: int = 0, max_records: int | None = None) -> Any:
    """Per record of ``split``: SSIM / PSNR of the generated X-ray (``gen_*``), of the mean training X-ray
    (``mean_*``) and of an unconditional sample with the same noise (``uncond_*``) against the real one.

    The condition of a record is its first ECG window's embedding.  Returns a DataFrame with ``record_id``,
    ``patient_id`` and those columns; ``module.generated`` keeps the first images for figures.
    """
    import pandas as pd

    module.eval()
    total, n = None, 0
    for batch in datamodule.train_dataloader():
        if "has_cxr" in batch and not bool(batch["has_cxr"].any()):
            continue
        keep = batch["has_cxr"].bool() if "has_cxr" in batch else slice(None)
        imgs = module.images(batch["cxr"][keep])
        total = imgs.sum(0) if total is None else total + imgs.sum(0)
        n += imgs.shape[0]
    if not n:
        raise ConfigError("no training X-rays to average for the mean-image baseline")
    mean_image = total / n
    rows, shown = [], []
    for batch in datamodule.eval_dataloader(split):
        index = batch["record_index"]
        first = torch.full((int(batch["n_records"]),), index.numel(), dtype=torch.long)
        first = first.scatter_reduce(0, index, torch.arange(index.numel()), "amin")
        has = torch.ones(first.numel(), dtype=torch.bool)
        for key in ("has_ecg", "has_cxr"):
            if key in batch:
                has &= torch.as_tensor(batch[key])[first].bool()
        first = first[has]
        if not first.numel():
            continue
        mask = batch.get("ecg_mask")
        cond = module.condition(batch["ecg"][first], None if mask is None else mask[first])
        real = module.images(batch["cxr"][first])
        batch_seed = seed * 1_000_003 + len(rows)
        gen = module.diffusion.generate(cond, guidance=guidance, steps=steps, seed=batch_seed)
        unc = module.diffusion.generate(cond, guidance=0.0, steps=steps, seed=batch_seed)
        scores = {"gen": image_quality(gen, real), "mean": image_quality(mean_image.expand_as(real), real),
                  "uncond": image_quality(unc, real)}
        ids = [batch["record_id"][int(i)] for i in first]
        pids = [batch["patient_id"][int(i)] for i in first]
        for j in range(len(ids)):
            row = {"record_id": ids[j], "patient_id": pids[j]}
            for name, (ssim, psnr) in scores.items():
                row[f"{name}_ssim"], row[f"{name}_psnr"] = float(ssim[j]), float(psnr[j])
            rows.append(row)
        if len(shown) < 8:
            shown += [(ids[j], real[j, 0].numpy(), gen[j, 0].numpy(), unc[j, 0].numpy())
                      for j in range(min(len(ids), 8 - len(shown)))]
        if max_records is not None and len(rows) >= max_records:
            break
    module.generated = shown
    module.mean_image = mean_image[0].numpy()
    return pd.DataFrame(rows)


def save_samples(module: GenerationModule, path: str | os.PathLike) -> None:
    """A PNG of the first generated records: rows real | generated | unconditional | mean training X-ray
    (all labelled: the generated images are not the patient's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = getattr(module, "generated", [])
    if not shown:
        return
    fig, axes = plt.subplots(4, len(shown), figsize=(1.6 * len(shown), 6.6), squeeze=False)
    for j, (rid, real, gen, unc) in enumerate(shown):
        for i, (img, label) in enumerate(((real, "real"), (gen, "GENERATED"), (unc, "unconditional"),
                                          (module.mean_image, "mean train"))):
            ax = axes[i][j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[0][j].set_title(str(rid)[-10:], fontsize=7)
    fig.suptitle("ECG -> X-ray: generated images are synthetic, not the patient's radiograph", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ += ["save_samples"]
