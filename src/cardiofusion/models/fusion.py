"""Fusion heads: ECG and X-ray features -> one score, each head with its own loss terms.

Every head takes ``features = {"ecg": (B, d_ecg) | None, "cxr": (B, d_cxr) | None}`` and optional
``present = {"ecg": bool (B,), "cxr": bool (B,)}`` (rows whose modality is missing; ``None`` features
mean the modality is absent for the whole batch), and returns a :class:`FusionOutput`.
``head.loss(output, label, pos_weight=None)`` returns ``{"loss": total, <named terms>}``; rows whose
label is NaN (unknown) or that have no usable modality are ignored.

Rows for which the head can use no modality at all get ``score = prob = NaN`` and ``used = (False,
False)``; ``branch_scores`` are NaN in rows where that modality is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .registry import register_fusion

__all__ = [
    "CooperativeFusion",
    "EarlyFusion",
    "FusionHead",
    "FusionOutput",
    "LateFusion",
    "SingleModalityFusion",
]

MODALITIES = ("ecg", "cxr")


@dataclass
class FusionOutput:
    """What a fusion head returns (see ``docs/model_contract.md``).

    Attributes:
        score: ``(B,)`` ranking score: a logit for BCE heads, ``f_ecg + f_cxr`` for cooperative.
        prob: ``(B,)`` in [0, 1] (NaN where no modality was usable).
        branch_scores: ``{"ecg": (B,) | None, "cxr": (B,) | None}`` per-modality scores (NaN where the
            modality is missing; None where the head has no such branch or the batch lacks it).
        used: bool ``(B, 2)``, columns ecg, cxr: which modalities produced the score.
        aux: head-internal tensors its ``loss`` needs (finite everywhere; not part of the contract).
    """

    score: Tensor
    prob: Tensor
    branch_scores: dict[str, Tensor | None]
    used: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


def _nan_where(keep: Tensor, x: Tensor) -> Tensor:
    return torch.where(keep, x, torch.full_like(x, float("nan")))


def _batch_size(features: dict[str, Tensor | None]) -> tuple[int, torch.device]:
    x = _first(features)
    return x.shape[0], x.device


def _first(features: dict[str, Tensor | None]) -> Tensor:
    for x in features.values():
        if x is not None:
            return x
    raise ConfigError("fusion needs at least one modality's features")


def _zeros(features: dict[str, Tensor | None]) -> Tensor:
    x = _first(features)
    return x.new_zeros(x.shape[0])


def _bce_term(logit: Tensor, label: Tensor, rows: Tensor, pos_weight: float | Tensor | None) -> Tensor:
    """Mean BCE-with-logits over ``rows`` (others ignored; 0 with a graph when there are none)."""
    y = torch.where(rows, label, torch.zeros_like(label))
    z = torch.where(rows, logit, torch.zeros_like(logit))
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=z.dtype, device=z.device)
    per = F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")
    return (per * rows).sum() / rows.sum().clamp(min=1)


class FusionHead(nn.Module):
    """Base class: presence handling and the shared face.

    Attributes:
        modalities: the modalities the head can use (``("ecg", "cxr")`` or a single one).
    """

    modalities: tuple[str, ...] = MODALITIES
    #: What the head's ``score`` is (written into model bundles, ``docs/model_contract.md``).
    score_meaning: str = "model score"

    def presence(
        self, features: dict[str, Tensor | None], present: dict[str, Tensor | None] | None
    ) -> dict[str, Tensor]:
        """Bool ``(B,)`` per modality: row has the modality and the head uses it."""
        b, device = _batch_size(features)
        present = present or {}
        out = {}
        for m in MODALITIES:
            x = features.get(m)
            if m not in self.modalities or x is None:
                out[m] = torch.zeros(b, dtype=torch.bool, device=device)
            else:
                p = present.get(m)
                out[m] = torch.ones(b, dtype=torch.bool, device=device) if p is None else p.to(device).bool()
        return out

    def _used(self, p: dict[str, Tensor]) -> Tensor:
        return torch.stack([p["ecg"], p["cxr"]], dim=1)  # (B, 2)

    def forward(
        self, features: dict[str, Tensor | None], present: dict[str, Tensor | None] | None = None
    ) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, output: FusionOutput, label: Tensor, pos_weight: float | Tensor | None = None) -> dict[str, Tensor]:
        """Default: BCE on the score logit over rows with a label and a usable modality."""
        rows = ~torch.isnan(label) & output.used.any(dim=1)
        bce = _bce_term(output.aux["logit"], label, rows, pos_weight)
        return {"loss": bce, "bce": bce}


def _linear_head(dim: int | None, name: str) -> nn.Linear:
    if not dim or dim <= 0:
        raise ConfigError(f"{name} feature width must be a positive integer, got {dim!r}")
    return nn.Linear(dim, 1)


@register_fusion("cooperative")
class CooperativeFusion(FusionHead):
    """Cooperative learning (Ding et al., PNAS 2022), the reference paper's fusion.

    Each modality has a linear score head, ``f_ecg`` and ``f_cxr``; the score is ``f_ecg + f_cxr`` and
    the loss is the mean over samples of ``1/2 (y - (f_ecg + f_cxr))^2 + rho/2 (f_ecg - f_cxr)^2``
    (terms ``fit`` and ``agreement``, the latter including ``rho``).  ``prob = clamp(score, 0, 1)``.

    A sample with one modality missing is scored ``2 * f_available``: the agreement penalty drives
    ``f_ecg ~ f_cxr`` (exactly so as rho grows), so ``f_ecg + f_cxr ~ 2 f_available``.  This is an
    approximation, poorer for small rho.  In training such samples contribute only their fit term
    ``1/2 (y - 2 f_available)^2`` (no agreement term, which needs both).

    ``pos_weight`` weights positive samples' terms by ``pos_weight`` (negatives by 1) and normalises
    by the sum of weights, so the loss stays on the same scale.

    Args:
        ecg_dim, cxr_dim: feature widths.
        rho: agreement strength (>= 0; 0 = early fusion of the two scores).
    """

    score_meaning = "f_ecg + f_cxr (cooperative learning; 2 x the available branch with one modality)"

    def __init__(self, ecg_dim: int, cxr_dim: int, rho: float = 0.5):
        super().__init__()
        if rho < 0:
            raise ConfigError(f"cooperative rho must be >= 0, got {rho}")
        self.rho = float(rho)
        self.ecg_head = _linear_head(ecg_dim, "ECG")
        self.cxr_head = _linear_head(cxr_dim, "X-ray")

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        zero = _zeros(features)
        f_e = self.ecg_head(features["ecg"]).squeeze(-1) if features.get("ecg") is not None else zero
        f_c = self.cxr_head(features["cxr"]).squeeze(-1) if features.get("cxr") is not None else zero
        both = p["ecg"] & p["cxr"]
        raw = torch.where(both, f_e + f_c, torch.where(p["ecg"], 2 * f_e, 2 * f_c))  # (B,)
        any_used = p["ecg"] | p["cxr"]
        score = _nan_where(any_used, raw)
        return FusionOutput(
            score=score,
            prob=score.clamp(0.0, 1.0),
            branch_scores={
                "ecg": _nan_where(p["ecg"], f_e) if features.get("ecg") is not None else None,
                "cxr": _nan_where(p["cxr"], f_c) if features.get("cxr") is not None else None,
            },
            used=self._used(p),
            aux={"raw_score": raw, "f_ecg": f_e, "f_cxr": f_c, "both": both},
        )

    def loss(self, output: FusionOutput, label: Tensor, pos_weight: float | Tensor | None = None) -> dict[str, Tensor]:
        rows = ~torch.isnan(label) & output.used.any(dim=1)
        dtype = torch.promote_types(output.aux["raw_score"].dtype, torch.float32)  # fp16/bf16 -> fp32
        f_e, f_c = output.aux["f_ecg"].to(dtype), output.aux["f_cxr"].to(dtype)
        y = torch.where(rows, label, torch.zeros_like(label)).to(dtype)
        w = rows.to(y.dtype)
        if pos_weight is not None:
            w = w * torch.where(y > 0.5, torch.as_tensor(pos_weight, dtype=y.dtype, device=y.device), torch.ones_like(y))
        w = w / w.sum().clamp(min=torch.finfo(y.dtype).tiny)
        fit = 0.5 * (y - output.aux["raw_score"].to(dtype)) ** 2
        diff = torch.where(output.aux["both"], f_e - f_c, torch.zeros_like(y))
        agreement = 0.5 * self.rho * diff**2
        fit_t, agree_t = (w * fit).sum(), (w * agreement).sum()
        return {"loss": fit_t + agree_t, "fit": fit_t, "agreement": agree_t}


@register_fusion("early")
class EarlyFusion(FusionHead):
    """Early fusion: concatenated features -> MLP (or linear) head -> logit, BCE.

    A missing modality is replaced by a learned "missing" feature vector.  With
    ``modality_dropout > 0``, during training each sample that has both modalities loses one of them
    (chosen at random) with that probability, so the head learns to score single-modality patients.

    Args:
        ecg_dim, cxr_dim: feature widths.
        hidden: hidden width of the MLP head; 0 = a single linear layer.
        dropout: dropout before the output layer (MLP only).
        modality_dropout: probability of dropping one modality of a paired sample in training.
    """

    score_meaning = "logit of the early-fusion head"

    def __init__(self, ecg_dim: int, cxr_dim: int, hidden: int = 128, dropout: float = 0.1, modality_dropout: float = 0.0):
        super().__init__()
        _linear_head(ecg_dim, "ECG"), _linear_head(cxr_dim, "X-ray")  # validate widths
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = float(modality_dropout)
        self.missing_ecg = nn.Parameter(torch.zeros(ecg_dim))
        self.missing_cxr = nn.Parameter(torch.zeros(cxr_dim))
        nn.init.normal_(self.missing_ecg, std=0.02)
        nn.init.normal_(self.missing_cxr, std=0.02)
        d = ecg_dim + cxr_dim
        if hidden:
            self.head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, 1))
        else:
            self.head = nn.Linear(d, 1)

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        b, device = _batch_size(features)
        if self.training and self.modality_dropout > 0:
            both = p["ecg"] & p["cxr"]
            drop = both & (torch.rand(b, device=device) < self.modality_dropout)
            drop_ecg = drop & (torch.rand(b, device=device) < 0.5)
            p = {"ecg": p["ecg"] & ~drop_ecg, "cxr": p["cxr"] & ~(drop & ~drop_ecg)}
        parts = []
        for m, missing in (("ecg", self.missing_ecg), ("cxr", self.missing_cxr)):
            x = features.get(m)
            fill = missing.unsqueeze(0).expand(b, -1)  # (B, d_m)
            parts.append(fill if x is None else torch.where(p[m].unsqueeze(1), x, fill))
        logit = self.head(torch.cat(parts, dim=1)).squeeze(-1)  # (B,)
        any_used = p["ecg"] | p["cxr"]
        score = _nan_where(any_used, logit)
        return FusionOutput(
            score=score,
            prob=torch.sigmoid(score),
            branch_scores={"ecg": None, "cxr": None},
            used=self._used(p),
            aux={"logit": logit},
        )


@register_fusion("late")
class LateFusion(FusionHead):
    """Late fusion: one logit head per modality, each trained with its own BCE (terms ``bce_ecg``,
    ``bce_cxr``; total = their sum); score = mean of the available branch logits.

    Args:
        ecg_dim, cxr_dim: feature widths.
    """

    score_meaning = "mean of the available branch logits"

    def __init__(self, ecg_dim: int, cxr_dim: int):
        super().__init__()
        self.ecg_head = _linear_head(ecg_dim, "ECG")
        self.cxr_head = _linear_head(cxr_dim, "X-ray")

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        zero = _zeros(features)
        z_e = self.ecg_head(features["ecg"]).squeeze(-1) if features.get("ecg") is not None else zero
        z_c = self.cxr_head(features["cxr"]).squeeze(-1) if features.get("cxr") is not None else zero
        pe, pc = p["ecg"].to(z_e.dtype), p["cxr"].to(z_e.dtype)
        mean = (pe * z_e + pc * z_c) / (pe + pc).clamp(min=1)  # (B,)
        score = _nan_where(p["ecg"] | p["cxr"], mean)
        return FusionOutput(
            score=score,
            prob=torch.sigmoid(score),
            branch_scores={
                "ecg": _nan_where(p["ecg"], z_e) if features.get("ecg") is not None else None,
                "cxr": _nan_where(p["cxr"], z_c) if features.get("cxr") is not None else None,
            },
            used=self._used(p),
            aux={"logit_ecg": z_e, "logit_cxr": z_c},
        )

    def loss(self, output: FusionOutput, label: Tensor, pos_weight: float | Tensor | None = None) -> dict[str, Tensor]:
        known = ~torch.isnan(label)
        terms = {
            f"bce_{m}": _bce_term(output.aux[f"logit_{m}"], label, known & output.used[:, i], pos_weight)
            for i, m in enumerate(MODALITIES)
        }
        return {"loss": terms["bce_ecg"] + terms["bce_cxr"], **terms}


class SingleModalityFusion(FusionHead):
    """One modality -> linear -> logit, BCE (the paper's ECG-only and X-ray-only baselines).

    Rows missing that modality get a NaN score and ``used = (False, False)``.
    """

    modality: str = "ecg"
    modalities: tuple[str, ...] = ("ecg",)

    def __init__(self, ecg_dim: int | None = None, cxr_dim: int | None = None):
        super().__init__()
        dim = ecg_dim if self.modality == "ecg" else cxr_dim
        self.head = _linear_head(dim, self.modality.upper())

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        x = features.get(self.modality)
        logit = self.head(x).squeeze(-1) if x is not None else _zeros(features)
        score = _nan_where(p[self.modality], logit)
        branch = {m: None for m in MODALITIES}
        branch[self.modality] = score if x is not None else None
        return FusionOutput(score=score, prob=torch.sigmoid(score), branch_scores=branch, used=self._used(p), aux={"logit": logit})


@register_fusion("ecg")
class ECGOnlyFusion(SingleModalityFusion):
    """ECG only (the paper's ECG baseline): ECG feature -> linear -> logit, BCE."""

    modality = "ecg"
    modalities = ("ecg",)
    score_meaning = "logit of the ECG-only head"


@register_fusion("cxr")
class CXROnlyFusion(SingleModalityFusion):
    """X-ray only (the paper's X-ray baseline): X-ray feature -> linear -> logit, BCE."""

    modality = "cxr"
    modalities = ("cxr",)
    score_meaning = "logit of the X-ray-only head"
