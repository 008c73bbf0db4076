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

:func:`pretrain_lsvae` is the library step: a :class:`PretrainConfig` (which caches of unlabelled 12-lead
ECGs, the VAE, the optimisation) -> a self-describing, resumable pretraining folder::

    pretrain.yaml        the PretrainConfig (reload: PretrainConfig.from_file)
    checkpoints/         last.ckpt (end of the latest epoch; a resumed run continues from it)
    metrics.csv          Lightning's per-epoch values: train_/val_ loss, recon, kl, align, and beta
    vae.pt               the final VAE state dict (``encoders.<lead>.*`` keys: the fine-tuning face
                         ``LSVAEECGEncoder(pretrained=...)`` loads its leads from it by name)
    result.json          epochs, final loss terms, seconds, records and samples per second, the caches'
                         ECG preprocessing name, library versions

The caches give the ECGs exactly as fine-tuning will see them: built with ``baseline: lsvae_paper`` (paper
002's named preprocessing, :mod:`cardiofusion.transforms.vae_preprocess`) every lead is interpolated,
cleaned and z-scored; the name is read from each cache and saved in ``result.json``.  Records of each
manifest's ``val`` split give the logged validation losses, all other usable records train (no labels are
read).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from ..configfile import SettingsFile, require_positive_ints
from ..errors import ConfigError
from ..models.lsvae import LSEMVAE, LSVAEConfig, beta_schedule

__all__ = ["PRETRAIN_YAML", "VAE_WEIGHTS", "LSVAEPretrainModule", "PretrainConfig", "PretrainResult",
           "pretrain_lsvae", "resolve_pretrain_precision"]

#: Files of a pretraining folder.
PRETRAIN_YAML = "pretrain.yaml"
VAE_WEIGHTS = "vae.pt"
PRETRAIN_RESULT = "result.json"


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
        return beta_schedule(self.current_epoch, self.vae_config.beta_anneal_epochs, self.vae_config.beta_max)

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


@dataclass
class PretrainConfig(SettingsFile):
    """Everything an LS-EMVAE pretraining depends on (saved as ``pretrain.yaml``).

    Attributes:
        sources: the unlabelled ECGs, ``[{"cache_dir": ..., "manifest": ...}, ...]``: one entry per cohort
            (PTB-XL, CinC, MIMIC through ``cardiofusion cohort from-adapter``, the synthetic export's cohort),
            every cache at the same ``fs`` and duration.  Manifest ``val`` records are validation, the rest train.
        vae: the :class:`~cardiofusion.models.lsvae.LSVAEConfig` as a mapping; its ``n_samples`` must be
            ``round(fs * window_s)``.
        window_s: seconds per training window (the paper: 10 s, a whole record).
        batch_size, max_epochs, lr, weight_decay: the paper's AdamW recipe (128, 100, 5e-4, 1e-5).
        grad_clip: gradient-norm clipping (1.0).
        accumulate_grad_batches: micro-batches per optimiser step (Lightning's accumulation).
        precision: ``auto`` = ``bf16-mixed`` on a CUDA device that supports it, else ``16-mixed`` on CUDA,
            ``32-true`` on CPU; or any Lightning precision.
        seed, num_workers, accelerator, devices: as in :class:`~cardiofusion.training.TrainConfig`.
        limit_train_batches: Lightning's per-epoch limit (fraction or count), for quick runs.
    """

    sources: list[dict[str, str]] = field(default_factory=list)
    vae: dict[str, Any] = field(default_factory=dict)
    window_s: float = 10.0
    batch_size: int = 128
    max_epochs: int = 100
    lr: float = 5e-4
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    accumulate_grad_batches: int = 1
    precision: str = "auto"
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str | list = "auto"
    limit_train_batches: int | float = 1.0

    SETTINGS_NAME = "pretraining"

    def __post_init__(self) -> None:
        if isinstance(self.vae, LSVAEConfig):
            self.vae = self.vae.to_dict()
        self.vae = LSVAEConfig.from_dict(dict(self.vae)).to_dict()  # validated, every field explicit
        srcs = []
        for i, src in enumerate(self.sources or []):
            if not isinstance(src, dict) or set(src) != {"cache_dir", "manifest"}:
                raise ConfigError(f"pretraining sources[{i}] must be {{cache_dir, manifest}}, got {src!r}")
            srcs.append({"cache_dir": str(src["cache_dir"]), "manifest": str(src["manifest"])})
        self.sources = srcs
        require_positive_ints(self, ("batch_size", "max_epochs", "accumulate_grad_batches"), "pretraining")
        if not (float(self.window_s) > 0 and float(self.lr) > 0):
            raise ConfigError(f"pretraining window_s and lr must be positive, got {self.window_s}, {self.lr}")
        self.window_s, self.lr = float(self.window_s), float(self.lr)
        self.weight_decay, self.grad_clip = float(self.weight_decay), float(self.grad_clip)
        from .config import PRECISIONS, parse_devices

        if self.precision not in PRECISIONS:
            raise ConfigError(f"pretraining precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        self.devices = parse_devices(self.devices)

    @property
    def vae_config(self) -> LSVAEConfig:
        return LSVAEConfig.from_dict(self.vae)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))



@dataclass
class PretrainResult:
    """A finished pretraining: its folder, the VAE weights file and ``result.json``'s contents."""

    run_dir: Path
    weights: Path
    info: dict[str, Any]


def resolve_pretrain_precision(config: PretrainConfig) -> str:
    """``auto`` -> ``bf16-mixed`` on a CUDA device with bf16, ``16-mixed`` on other CUDA devices, else ``32-true``."""
    if config.precision != "auto":
        return config.precision
    on_cuda = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    if not on_cuda:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def _pretrain_loaders(config: PretrainConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Train and val loaders over every source (all 12-lead rows of the VAE's leads, labels unused)."""
    import numpy as np
    from torch.utils.data import ConcatDataset, DataLoader

    from ..cache import open_cache
    from ..data.dataset import CohortDataset, EpochSampler, collate
    from ..transforms.preprocess import PreprocessConfig

    vae = config.vae_config
    if not config.sources:
        raise ConfigError("pretraining needs at least one source {cache_dir, manifest}")
    train_parts, val_parts, info = [], [], {"sources": [], "ecg_preprocessing": set()}
    for src in config.sources:
        cache = open_cache(src["cache_dir"])
        prep = PreprocessConfig(fs=cache.fs, leads=vae.leads, window_s=config.window_s,
                                eval_stride_s=config.window_s, noise_mv=0.0)
        want = int(round(cache.fs * config.window_s))
        if want != vae.n_samples:
            raise ConfigError(f"{src['cache_dir']}: {config.window_s:g} s at {cache.fs:g} Hz is {want} samples but "
                              f"the VAE's n_samples is {vae.n_samples}")
        records = cache.records(src["manifest"])
        records = records[records["ecg_row"] >= 0].reset_index(drop=True)
        is_val = (records["split"].astype(str) == "val").to_numpy() if "split" in records else np.zeros(len(records), bool)
        zeros = np.zeros(len(records), dtype=np.float32)  # unlabelled
        for part, keep, train in ((train_parts, ~is_val, True), (val_parts, is_val, False)):
            if keep.any():
                part.append(CohortDataset(cache, records[keep].reset_index(drop=True), prep, train=train,
                                          modalities=("ecg",), seed=config.seed, labels=zeros[keep]))
        info["ecg_preprocessing"].add(str(cache.config.baseline))
        info["sources"].append({**src, "train_records": int((~is_val).sum()), "val_records": int(is_val.sum())})
    if not train_parts:
        raise ConfigError("pretraining: no usable training ECGs in the sources")
    info["ecg_preprocessing"] = sorted(info["ecg_preprocessing"])
    train_set = _Concat(train_parts)
    n = len(train_set)
    train = DataLoader(train_set, batch_size=config.batch_size, collate_fn=collate, num_workers=config.num_workers,
                       sampler=EpochSampler(n, config.seed), drop_last=n > config.batch_size)
    val = (DataLoader(ConcatDataset(val_parts), batch_size=config.batch_size, collate_fn=collate,
                      num_workers=config.num_workers) if val_parts else None)
    info["train_records"], info["val_records"] = n, sum(len(v) for v in val_parts)
    return train, val, info


class _Concat(torch.utils.data.ConcatDataset):
    """ConcatDataset that also takes the ``(index, epoch)`` items of :class:`~cardiofusion.data.dataset.EpochSampler`."""

    def __getitem__(self, item: Any) -> Any:
        import bisect

        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), None)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        local = index - (self.cumulative_sizes[part - 1] if part else 0)
        return self.datasets[part][(local, epoch) if epoch is not None else local]


def pretrain_lsvae(config: PretrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                   progress: bool = False) -> PretrainResult:
    """Pretrain an LS-EMVAE into ``run_dir`` (layout in the module docstring); ``resume`` continues from
    ``checkpoints/last.ckpt``.  Reuse of a finished folder is the recipe step's business
    (:func:`cardiofusion.recipes.steps.ensure_pretrain`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from .fit import library_versions

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    config.save(run / PRETRAIN_YAML)
    last = run / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        resume = False
    L.seed_everything(config.seed, workers=True, verbose=False)
    train, val, info = _pretrain_loaders(config)
    module = LSVAEPretrainModule(config.vae, lr=config.lr, weight_decay=config.weight_decay)
    precision = resolve_pretrain_precision(config)
    ckpt = ModelCheckpoint(dirpath=run / "checkpoints", save_last=True, save_top_k=0)
    trainer = L.Trainer(default_root_dir=run, max_epochs=config.max_epochs, accelerator=config.accelerator,
                        devices=config.devices, precision=precision, gradient_clip_val=config.grad_clip or None,
                        accumulate_grad_batches=config.accumulate_grad_batches, callbacks=[ckpt],
                        logger=CSVLogger(run / "logs", name="lightning"), enable_progress_bar=progress,
                        enable_model_summary=False, limit_train_batches=config.limit_train_batches,
                        log_every_n_steps=1, num_sanity_val_steps=0, deterministic=False)
    t0 = time.perf_counter()
    trainer.fit(module, train, val, ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - t0
    metrics_src = Path(trainer.logger.log_dir) / "metrics.csv"
    final: dict[str, float] = {}
    if metrics_src.is_file():
        import pandas as pd

        frame = pd.read_csv(metrics_src)
        frame.to_csv(run / "metrics.csv", index=False)
        for col in frame.columns:
            if col.startswith(("train_", "val_")) or col == "beta":
                values = frame[col].dropna()
                if len(values):
                    final[col] = float(values.iloc[-1])
    weights = run / VAE_WEIGHTS
    tmp = weights.with_suffix(".tmp")
    torch.save({k: v.detach().cpu() for k, v in module.vae.state_dict().items()}, tmp)
    os.replace(tmp, weights)
    epochs = int(trainer.current_epoch)
    n_train = int(info["train_records"])
    batches = trainer.num_training_batches if trainer.num_training_batches != float("inf") else None
    samples = (min(n_train, int(batches) * config.batch_size) if batches is not None else n_train) * epochs
    result = {"epochs": epochs, "final": final, "seconds": seconds, "precision": precision,
              "records_per_s": samples / seconds if seconds > 0 else None, "resumed": bool(resume),
              "parameters": int(sum(p.numel() for p in module.vae.parameters())), **info,
              "versions": library_versions()}
    tmp = run / (PRETRAIN_RESULT + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, run / PRETRAIN_RESULT)
    return PretrainResult(run, weights, result)
