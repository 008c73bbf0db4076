"""The multimodal model: encoders chosen by name + a fusion head, driven by a :class:`ModelConfig`."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .fusion import FusionOutput, check_link
from .registry import CXR_ENCODERS, ECG_ENCODERS, FUSIONS

__all__ = [
    "ModelConfig",
    "MultimodalModel",
    "build_model",
    "create_cxr_encoder",
    "create_ecg_encoder",
    "create_fusion",
    "list_cxr_encoders",
    "list_ecg_encoders",
    "list_fusions",
]


def create_ecg_encoder(name: str, **kw) -> nn.Module:
    """Build a registered ECG encoder (``leads=...`` and architecture overrides as keywords)."""
    return ECG_ENCODERS.get(name)(**kw)


def create_cxr_encoder(name: str, pretrained: bool | str = False, in_chans: int = 1, **kw) -> nn.Module:
    """Build an X-ray encoder: a registered preset, else any timm model name (optionally ``timm/NAME``).

    Args:
        pretrained: False, ``"timm"`` (timm's hub download) or a local weights file path.
        in_chans: input channels (1 for X-rays).
    """
    if name in CXR_ENCODERS:
        return CXR_ENCODERS.get(name)(pretrained=pretrained, in_chans=in_chans, **kw)
    from .cxr import TimmCXREncoder

    return TimmCXREncoder(name, pretrained=pretrained, in_chans=in_chans, **kw)


def create_fusion(name: str, ecg_dim: int | None, cxr_dim: int | None, **kw) -> nn.Module:
    """Build a registered fusion head for the given feature widths."""
    return FUSIONS.get(name)(ecg_dim=ecg_dim, cxr_dim=cxr_dim, **kw)


def list_ecg_encoders() -> list[str]:
    """Registered ECG encoder names."""
    return ECG_ENCODERS.names()


def list_cxr_encoders() -> list[str]:
    """Registered X-ray encoder presets; any timm model name (``timm.list_models()``) is accepted too."""
    return CXR_ENCODERS.names()


def list_fusions() -> list[str]:
    """Registered fusion head names."""
    return FUSIONS.names()


def fusion_uses_rho(name: str) -> bool:
    """Whether the registered fusion head ``name`` takes the agreement strength ``rho`` (the cooperative
    head does): :func:`build_model` passes ``ModelConfig.rho`` to it and tuning searches it."""
    return name in FUSIONS and "rho" in inspect.signature(FUSIONS.get(name)).parameters


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (JSON-serialisable through :meth:`to_dict`).

    Attributes:
        fusion: a registered fusion head name (:func:`list_fusions`).
        ecg_encoder: registered ECG encoder name.
        ecg_kwargs: architecture overrides for the ECG encoder.
        cxr_encoder: registered preset or any timm model name.
        cxr_kwargs: extra keywords for the X-ray encoder (``timm.create_model`` keywords).
        cxr_pretrained: False, ``"timm"`` (download via timm) or a local weights file path.
        rho: cooperative agreement strength (used by heads that take ``rho``).
        leads: ECG lead names the model reads, canonical order.
        fusion_kwargs: extra keywords for the fusion head (e.g. ``hidden``, ``modality_dropout``).
        num_outputs: raw outputs of the fusion head (timm's ``num_classes``; ``Task.n_outputs``); 1 = binary.
        link: how the head turns outputs into ``prob``, one of :data:`cardiofusion.models.fusion.LINKS`
            (``Task.link``); configs written before tasks existed load as the binary head (1, ``logistic``).
    """

    fusion: str = "cooperative"
    ecg_encoder: str = "ecg_resnet50_transformer"
    ecg_kwargs: dict[str, Any] = field(default_factory=dict)
    cxr_encoder: str = "efficientnet_b0"
    cxr_kwargs: dict[str, Any] = field(default_factory=dict)
    cxr_pretrained: bool | str = False
    rho: float = 0.5
    leads: tuple[str, ...] = CANONICAL_LEADS
    fusion_kwargs: dict[str, Any] = field(default_factory=dict)
    num_outputs: int = 1
    link: str = "logistic"

    def __post_init__(self):
        self.leads = tuple(self.leads)
        if self.cxr_pretrained is None:
            self.cxr_pretrained = False
        check_link(self.num_outputs, self.link, "ModelConfig")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["leads"] = list(self.leads)
        d["cxr_pretrained"] = str(self.cxr_pretrained) if not isinstance(self.cxr_pretrained, bool) else self.cxr_pretrained
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig keys: {', '.join(unknown)}")
        return cls(**dict(d))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities the configured fusion head uses."""
        return FUSIONS.get(self.fusion).modalities

    @property
    def is_binary(self) -> bool:
        """One logistic output (``score`` / ``prob`` of shape ``(B,)``)."""
        return self.num_outputs == 1 and self.link == "logistic"


class MultimodalModel(nn.Module):
    """ECG encoder + X-ray encoder (each only if the fusion uses it) + fusion head.

    Attributes:
        config: the :class:`ModelConfig` it was built from.
        ecg_encoder, cxr_encoder: the encoders (None when the fusion does not use the modality).
        fusion: the fusion head.
    """

    def __init__(self, config: ModelConfig, ecg_encoder: nn.Module | None, cxr_encoder: nn.Module | None, fusion: nn.Module):
        super().__init__()
        self.config = config
        self.ecg_encoder = ecg_encoder
        self.cxr_encoder = cxr_encoder
        self.fusion = fusion

    @property
    def leads(self) -> tuple[str, ...]:
        return tuple(self.config.leads)

    def encode(self, batch: Mapping[str, Any]) -> tuple[dict[str, Tensor | None], dict[str, Tensor | None]]:
        """Features ``{"ecg": (B, d) | None, "cxr": (B, d) | None}`` and presence masks.

        Encoders run only on the rows that have their modality (absent rows are zero features and
        flagged absent), so zero-filled rows never touch batch-norm statistics.
        """
        feats: dict[str, Tensor | None] = {"ecg": None, "cxr": None}
        present: dict[str, Tensor | None] = {"ecg": None, "cxr": None}
        for m, enc in (("ecg", self.ecg_encoder), ("cxr", self.cxr_encoder)):
            x = batch.get(m)
            if enc is None or x is None:
                continue
            b = x.shape[0]
            has = batch.get(f"has_{m}")
            has = torch.ones(b, dtype=torch.bool, device=x.device) if has is None else has.to(x.device).bool()
            out = x.new_zeros(b, enc.out_dim)
            if bool(has.any()):
                if m == "ecg":
                    mask = batch.get("ecg_mask")
                    f = enc(x[has], None if mask is None else mask.to(x.device)[has])
                else:
                    f = _encode_images_once(enc, x[has], batch.get("record_index"), has)
                out = out.index_put((has.nonzero(as_tuple=True)[0],), f.to(out.dtype)) if not bool(has.all()) else f
            feats[m], present[m] = out, has
        if feats["ecg"] is None and feats["cxr"] is None:
            raise ConfigError(f"batch has none of the modalities this model uses ({', '.join(self.fusion.modalities)})")
        return feats, present

    def forward(self, batch: Mapping[str, Any]) -> FusionOutput:
        """Score a batch (dict with the keys of ``docs/model_contract.md``)."""
        feats, present = self.encode(batch)
        return self.fusion(feats, present)

    def loss(self, output: FusionOutput, label: Tensor, pos_weight: float | Tensor | None = None,
             mask: Tensor | None = None) -> dict[str, Tensor]:
        """``{"loss": total, <named terms>}`` from the fusion head.

        ``label``: the binary ``(B,)`` 0/1 label (NaN ignored), or for other heads the encoded ``(B, k)`` target
        (:func:`cardiofusion.tasks.losses.encode_targets`) with an optional bool ``mask`` of the entries that count
        (default: the non-NaN ones).
        """
        label = label.to(device=output.score.device, dtype=output.score.dtype)
        if mask is None:
            return self.fusion.loss(output, label, pos_weight)
        return self.fusion.loss(output, label, pos_weight, mask=mask.to(output.score.device))


def _encode_images_once(enc: nn.Module, x: Tensor, record_index: Tensor | None, has: Tensor) -> Tensor:
    """Image features, computing each record's X-ray once when evaluation repeats it per ECG window.

    ``record_index`` (from the loaders) says which rows belong to the same record; those rows hold the
    same image, so the encoder runs on the first row of each record and the features are gathered back.
    """
    if record_index is None:
        return enc(x)
    rec = torch.as_tensor(record_index, device=x.device)[has]  # (B_present,)
    uniq, inverse = torch.unique(rec, return_inverse=True)
    if uniq.numel() == rec.numel():
        return enc(x)
    rows = torch.arange(rec.numel(), device=x.device)
    first = torch.full((uniq.numel(),), rec.numel(), dtype=torch.long, device=x.device)
    first = first.scatter_reduce(0, inverse, rows, reduce="amin")  # first row of each record
    return enc(x[first])[inverse]  # (B_present, d)


def build_model(cfg: ModelConfig | Mapping[str, Any]) -> MultimodalModel:
    """Build the model a :class:`ModelConfig` describes (only the encoders its fusion needs)."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(cfg)
    mods = cfg.modalities
    ecg = create_ecg_encoder(cfg.ecg_encoder, leads=cfg.leads, **cfg.ecg_kwargs) if "ecg" in mods else None
    cxr = (
        create_cxr_encoder(cfg.cxr_encoder, pretrained=cfg.cxr_pretrained, **cfg.cxr_kwargs)
        if "cxr" in mods
        else None
    )
    kw = dict(cfg.fusion_kwargs)
    if fusion_uses_rho(cfg.fusion):
        kw.setdefault("rho", cfg.rho)
    params = inspect.signature(FUSIONS.get(cfg.fusion)).parameters
    if "num_outputs" in params and "link" in params:
        kw.update(num_outputs=cfg.num_outputs, link=cfg.link)
    elif not cfg.is_binary:
        raise ConfigError(f"fusion head {cfg.fusion!r} takes no num_outputs / link, so it can only be binary "
                          f"(asked for {cfg.num_outputs} {cfg.link} outputs)")
    fusion = create_fusion(
        cfg.fusion, ecg.out_dim if ecg is not None else None, cxr.out_dim if cxr is not None else None, **kw
    )
    return MultimodalModel(cfg, ecg, cxr, fusion)
