"""Stage 2 of paper 003: aligning the ECG encoder to a frozen X-ray teacher (CLIP loss) as a LightningModule.

Batches are the loaders' paired batches (``ecg``, ``ecg_mask``, ``cxr``, ``has_ecg``, ``has_cxr``; optionally
``measurements`` ``(B, M)`` standardised on train for the measurement-aware negatives).  Rows missing either
modality are dropped: in-batch negatives assume real pairs.  In validation a record may come as several ECG
windows (``record_index``, ``n_records``); its ECG embedding is then the mean of its windows' normalised
embeddings and its image is encoded once.  Logged: ``train_loss``, ``val_loss`` and, per validation epoch,
retrieval top-1 / top-5 in both directions over the whole validation set with their chance levels
(``val_ecg_to_image_top1``, ..., ``val_chance_top1``).

Only the ECG encoder and the two projection heads train; the X-ray encoder is a frozen teacher in eval mode
(:class:`~cardiofusion.models.alignment.FrozenTeacher`).  A random (un-pretrained) teacher is refused
unless ``allow_random_teacher`` says it is meant (tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ReadError
from ..io.torchfile import read_torch_file
from ..records import CANONICAL_LEADS
from .ecg_pretrain import _configure, _from_dict

__all__ = ["AlignConfig", "AlignmentModule", "load_encoder_state", "save_teacher_weights"]


@dataclass
class AlignConfig:
    """Everything that defines an alignment run (saved in every checkpoint).

    Attributes:
        ecg_encoder, ecg_kwargs, leads: the ECG encoder (registered name, overrides, lead names).
        ecg_init: optional path of a checkpoint (an MAE pretraining checkpoint, or a plain state dict) whose
            ECG encoder weights start the ECG side (keys ``mae.encoder.*``, ``ecg_encoder.*`` or bare).
        cxr_encoder, cxr_kwargs, cxr_pretrained: the teacher (:func:`cardiofusion.models.create_cxr_encoder`);
            ``cxr_pretrained`` ``"timm"`` or a local weights file; False only with ``allow_random_teacher``.
        embed_dim: width of the shared embedding.
        projection_hidden: hidden width of MLP projections (None: linear).
        projection_norm: batch-standardise both sides' features before their projections (the recipe's default:
            a pooled ViT's features share one mean direction, without it the CLIP loss stays at ``log B``).
        temperature, learnable_temperature: the CLIP temperature (fixed 0.1 by default).
        measurement_sigma: sigma of the measurement-aware negative weighting.
        use_measurements: use the batch's ``measurements`` for that weighting.
        lr, weight_decay, betas, warmup_steps: AdamW with warm-up + cosine (per step).
        allow_random_teacher: accept an un-pretrained teacher (tests and smoke runs only).
    """

    ecg_encoder: str = "ecg_vit_base"
    ecg_kwargs: dict[str, Any] = field(default_factory=dict)
    leads: tuple[str, ...] = CANONICAL_LEADS
    ecg_init: str | None = None
    cxr_encoder: str = "efficientnet_b0"
    cxr_kwargs: dict[str, Any] = field(default_factory=dict)
    cxr_pretrained: bool | str = "timm"
    embed_dim: int = 256
    projection_hidden: int | None = None
    projection_norm: bool = False
    temperature: float = 0.1
    learnable_temperature: bool = False
    measurement_sigma: float = 0.5
    use_measurements: bool = False
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 0
    allow_random_teacher: bool = False

    def __post_init__(self):
        self.leads = tuple(self.leads)
        self.betas = tuple(float(b) for b in self.betas)
        if self.cxr_pretrained in (None, "", False) and not self.allow_random_teacher:
            raise ConfigError("alignment needs a pretrained X-ray teacher: set cxr_pretrained to 'timm' or a "
                              "weights file (allow_random_teacher only for tests)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["leads"], d["betas"] = list(self.leads), list(self.betas)
        if not isinstance(self.cxr_pretrained, bool):
            d["cxr_pretrained"] = str(self.cxr_pretrained)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlignConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return _from_dict(cls, d)


def load_encoder_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """ECG encoder weights from a checkpoint: a Lightning checkpoint of :class:`MAEPretrainModule` (keys
    ``mae.encoder.*``) or of :class:`AlignmentModule` (``aligner.ecg_encoder.*``), or a bare state dict."""
    path = Path(path)
    obj = read_torch_file(path, what="ECG encoder weights file", weights_only=True)
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise ReadError(path, "not a checkpoint or state dict")
    for prefix in ("mae.encoder.", "aligner.ecg_encoder.", "ecg_encoder."):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            return sub
    return dict(state)


def save_teacher_weights(run: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write the X-ray encoder of a trained run (a run folder or ``.ckpt``; e.g. an X-ray-only model) as a
    timm state dict (safetensors, byte-identical for identical weights) that ``cxr_pretrained`` can load:
    the frozen teacher of an alignment then starts from an encoder that has learned radiographs."""
    from safetensors.torch import save_file

    from .inference import load_run

    encoder = getattr(load_run(run).model, "cxr_encoder", None)
    timm_model = getattr(encoder, "model", None)
    if timm_model is None:
        raise ConfigError(f"{run}: the run has no timm X-ray encoder to use as a teacher")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in timm_model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path


class AlignmentModule(L.LightningModule):
    """An :class:`~cardiofusion.models.alignment.ECGImageAligner` trained by Lightning.

    Args:
        config: an :class:`AlignConfig` or its dict (stored as a hyperparameter).
        load_weights: load ``ecg_init`` and the teacher's pretrained weights (False when a checkpoint
            provides every weight anyway).
    """

    def __init__(self, config: AlignConfig | Mapping[str, Any], load_weights: bool = True):
        super().__init__()
        cfg = config if isinstance(config, AlignConfig) else AlignConfig.from_dict(config)
        self.save_hyperparameters({"config": cfg.to_dict(), "load_weights": load_weights})
        self.config = cfg
        from ..models import create_cxr_encoder, create_ecg_encoder
        from ..models.alignment import ClipLoss, ECGImageAligner, FrozenTeacher

        ecg = create_ecg_encoder(cfg.ecg_encoder, leads=cfg.leads, **cfg.ecg_kwargs)
        if load_weights and cfg.ecg_init:
            ecg.load_state_dict(load_encoder_state(cfg.ecg_init), strict=True)
        cxr = create_cxr_encoder(cfg.cxr_encoder, pretrained=cfg.cxr_pretrained if load_weights else False,
                                 **cfg.cxr_kwargs)
        teacher = FrozenTeacher(cxr, cfg.embed_dim, cfg.projection_hidden, cfg.projection_norm)
        loss = ClipLoss(cfg.temperature, cfg.learnable_temperature, cfg.measurement_sigma)
        self.aligner = ECGImageAligner(ecg, teacher, loss, cfg.projection_hidden, cfg.projection_norm)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def ecg_encoder(self) -> torch.nn.Module:
        return self.aligner.ecg_encoder

    @staticmethod
    def _paired_rows(batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The boolean mask of the batch rows with both an ECG and an X-ray; None when the batch says nothing."""
        keep = None
        for key in ("has_ecg", "has_cxr"):
            if key in batch:
                has = torch.as_tensor(batch[key], device=batch["ecg"].device).bool()
                keep = has if keep is None else keep & has
        return keep

    def _paired(self, batch: Mapping[str, Any]) -> dict[str, Any] | None:
        keep = self._paired_rows(batch)
        out = {k: batch[k] for k in ("ecg", "ecg_mask", "cxr", "measurements", "record_index") if k in batch}
        if keep is not None and not bool(keep.all()):
            out = {k: v[keep] for k, v in out.items()}
        return out if out["ecg"].shape[0] else None

    def _loss(self, batch: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], int] | None:
        """Loss terms and the number of paired rows; None without two paired rows (no in-batch negative)."""
        pairs = self._paired(batch)
        if pairs is None or pairs["ecg"].shape[0] < 2:
            return None
        measurements = None
        if self.config.use_measurements:
            if "measurements" not in pairs:
                raise ConfigError("use_measurements is set but the batch has no 'measurements' (B, M) key")
            measurements = pairs["measurements"]
        return self.aligner(pairs, measurements), int(pairs["ecg"].shape[0])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "record_index" in batch and int(batch.get("n_records", 0)) != batch["ecg"].shape[0]:
            raise ConfigError("alignment training needs one row per record (a training loader)")
        result = self._loss(batch)
        if result is None:
            return None
        out, n = result
        self.log("train_loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for name in ("clip_ecg_to_image", "clip_image_to_ecg", "temperature"):
            self.log(f"train_{name}", out[name], on_step=False, on_epoch=True, batch_size=n)
        return out["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = []

    @torch.no_grad()
    def record_embeddings(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Per paired record of an evaluation batch: the ECG embedding (the mean of its windows' normalised
        embeddings when it comes as several windows, ``record_index``), the image embedding (its X-ray once),
        and the batch row of the record's first window (indexes the per-row ``record_id`` / ``patient_id``).
        None without a paired row."""
        pairs = self._paired(batch)
        if pairs is None:
            return None
        device = pairs["ecg"].device
        keep = self._paired_rows(batch)
        rows = (torch.arange(batch["ecg"].shape[0], device=device) if keep is None
                else torch.nonzero(keep).reshape(-1))  # batch rows of the paired rows
        z_ecg = F.normalize(self.aligner.embed_ecg(pairs["ecg"], pairs.get("ecg_mask")), dim=-1)
        index = pairs.get("record_index")
        if index is not None:  # several windows per record: mean normalised embedding, image once
            uniq, inverse = torch.unique(torch.as_tensor(index, device=device), return_inverse=True)
            total = z_ecg.new_zeros(uniq.numel(), z_ecg.shape[1]).index_add_(0, inverse, z_ecg)
            z_ecg = total / torch.bincount(inverse, minlength=uniq.numel()).clamp_min(1).unsqueeze(1).to(z_ecg.dtype)
            first = torch.full((uniq.numel(),), inverse.numel(), dtype=torch.long, device=device)
            first = first.scatter_reduce(0, inverse, torch.arange(inverse.numel(), device=device), "amin")
        else:
            first = torch.arange(z_ecg.shape[0], device=device)
        return z_ecg, self.aligner.embed_image(pairs["cxr"][first]), rows[first]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        embedded = self.record_embeddings(batch)
        if embedded is None:
            return
        z_ecg, z_img, _ = embedded
        if z_ecg.shape[0] >= 2:
            loss = self.aligner.loss_fn(z_ecg, z_img)["loss"]
            self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=z_ecg.shape[0],
                     sync_dist=True)
        self._val.append((z_ecg.detach().float().cpu(), z_img.detach().float().cpu()))

    def on_validation_epoch_end(self) -> None:
        from ..models.alignment import retrieval_accuracy

        if not self._val:
            return
        z_ecg = torch.cat([e for e, _ in self._val])
        z_img = torch.cat([c for _, c in self._val])
        self._val = []
        if z_ecg.shape[0] < 2:
            return
        for name, value in retrieval_accuracy(z_ecg, z_img, ks=(1, 5)).items():
            self.log(f"val_{name}", value, prog_bar=name == "ecg_to_image_top1", sync_dist=False)

    def configure_optimizers(self):
        return _configure(self, self.config)
