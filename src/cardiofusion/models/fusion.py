"""Fusion heads: ECG and X-ray features -> the task's outputs, each head with its own loss terms.

Every head takes ``features = {"ecg": (B, d_ecg) | None, "cxr": (B, d_cxr) | None}`` and optional
``present = {"ecg": bool (B,), "cxr": bool (B,)}`` (rows whose modality is missing; ``None`` features
mean the modality is absent for the whole batch), and returns a :class:`FusionOutput`.

Every registered head takes ``num_outputs`` (timm's ``num_classes`` habit) and ``link`` (one of :data:`LINKS`):

- ``num_outputs=1, link="logistic"`` (the default): one binary logit; ``score`` and ``prob`` are ``(B,)``,
  exactly as before tasks existed;
- otherwise ``score`` is ``(B, k)`` raw outputs and ``prob`` is ``(B, m)``: ``logistic`` -> a sigmoid per
  output (multilabel, m = k); ``softmax`` -> class probabilities (m = k = K); ``cumulative`` -> ordinal
  classes: k = K - 1 rank-consistent logits of P(y > k) (:class:`CumulativeLinear`, CORAL-style) and
  ``prob`` the K class probabilities (differences of the cumulative ones: non-negative, summing to 1);
  ``identity`` -> ``prob = score`` (standardised regression values, m = k).

``head.loss(output, target, pos_weight=None, mask=None)`` returns ``{"loss": total, <named terms>}``.
``target`` is the *encoded* target (:func:`cardiofusion.tasks.losses.encode_targets`): ``(B,)`` 0/1 for
the binary head (as before), else ``(B, k)``: one-hot (softmax), cumulative 0/1 ``[y > k]`` (cumulative),
multi-hot (logistic) or standardised values (identity).  ``mask`` (bool, like ``target``; default
``~isnan(target)``) says which entries count; rows with no usable modality are ignored too.  Losses per
link: ``logistic`` and ``cumulative`` -> binary cross-entropy per output (mean over the output's known
entries, summed over outputs), ``softmax`` -> cross-entropy (mean over known rows), ``identity`` -> squared
error per output (mean over known entries, summed over outputs); the cooperative head has its own.
``pos_weight``: logistic / cumulative -> a scalar or one weight per output for the positive entries;
cumulative also K weights, one per class (every output of a row weighted by its class's weight, normalised
by the rows' weights; what ``balanced`` gives an ordinal task); softmax -> one weight per class (weighted
cross-entropy, normalised by the weights of the rows' classes);
identity -> not allowed.

Rows for which the head can use no modality at all get ``score = prob = NaN`` and ``used = (False,
False)``; ``branch_scores`` are NaN in rows where that modality is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .registry import register_fusion

__all__ = [
    "LINKS",
    "CooperativeFusion",
    "CumulativeLinear",
    "EarlyFusion",
    "FusionHead",
    "FusionOutput",
    "LateFusion",
    "SingleModalityFusion",
    "check_link",
    "probabilities",
]

MODALITIES = ("ecg", "cxr")

#: How a head turns its raw outputs into ``prob`` (the task kinds of :mod:`cardiofusion.tasks` map onto these):
#: ``logistic`` sigmoid per output (binary, multilabel), ``softmax`` over classes (multiclass),
#: ``cumulative`` rank-consistent P(y > k) -> class probabilities (ordinal), ``identity`` (regression).
LINKS = ("logistic", "softmax", "cumulative", "identity")


def check_link(num_outputs: int, link: str, where: str = "fusion head") -> tuple[int, str]:
    """Validated ``(num_outputs, link)``; :class:`ConfigError` for an unknown link or a bad output count."""
    if link not in LINKS:
        raise ConfigError(f"{where}: link {link!r} is not one of {', '.join(LINKS)}")
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ConfigError(f"{where}: num_outputs must be a positive integer, got {num_outputs!r}")
    if link == "softmax" and num_outputs < 2:
        raise ConfigError(f"{where}: a softmax head needs at least 2 outputs (classes), got {num_outputs}")
    return num_outputs, link


@dataclass
class FusionOutput:
    """What a fusion head returns (see ``docs/model_contract.md``).

    Attributes:
        score: raw outputs: ``(B,)`` for the binary head (a logit for BCE heads, ``f_ecg + f_cxr`` for
            cooperative), else ``(B, k)``.
        prob: binary ``(B,)`` in [0, 1]; else ``(B, m)``: label probabilities (logistic), class
            probabilities (softmax, cumulative: ``(B, K)`` with K = k + 1), or standardised values
            (identity).  NaN where no modality was usable.
        branch_scores: ``{"ecg": like score | None, "cxr": like score | None}`` per-modality outputs (NaN
            where the modality is missing; None where the head has no such branch or the batch lacks it).
        used: bool ``(B, 2)``, columns ecg, cxr: which modalities produced the score.
        aux: head-internal tensors its ``loss`` needs (finite everywhere; not part of the contract).
    """

    score: Tensor
    prob: Tensor
    branch_scores: dict[str, Tensor | None]
    used: Tensor
    aux: dict[str, Tensor] = field(default_factory=dict)


def _nan_where(keep: Tensor, x: Tensor) -> Tensor:
    if x.dim() > keep.dim():
        keep = keep.reshape(keep.shape + (1,) * (x.dim() - keep.dim()))
    return torch.where(keep, x, torch.full_like(x, float("nan")))


def _batch_size(features: dict[str, Tensor | None]) -> tuple[int, torch.device]:
    x = _first(features)
    return x.shape[0], x.device


def _first(features: dict[str, Tensor | None]) -> Tensor:
    for x in features.values():
        if x is not None:
            return x
    raise ConfigError("fusion needs at least one modality's features")


def _zeros(features: dict[str, Tensor | None], k: int) -> Tensor:
    x = _first(features)
    return x.new_zeros(x.shape[0], k)


def probabilities(score: Tensor, link: str) -> Tensor:
    """``prob`` from raw ``(B, k)`` outputs of a BCE-style head: sigmoid, softmax, ordinal class
    probabilities from cumulative logits (``(B, k + 1)``), or the values themselves."""
    if link == "logistic":
        return torch.sigmoid(score)
    if link == "softmax":
        return torch.softmax(score, dim=-1)
    if link == "cumulative":
        return _classes_from_cumulative(torch.sigmoid(score))
    return score


def _classes_from_cumulative(gt: Tensor) -> Tensor:
    """Class probabilities ``(B, K)`` from non-increasing P(y > k) ``(B, K - 1)`` by differences."""
    one, zero = torch.ones_like(gt[:, :1]), torch.zeros_like(gt[:, :1])
    upper = torch.cat([one, gt], dim=1)
    lower = torch.cat([gt, zero], dim=1)
    return (upper - lower).clamp(min=0.0)


class CumulativeLinear(nn.Module):
    """Rank-consistent ordinal output layer (CORAL, Cao, Mirjalili & Raschka 2020): ``k`` logits of P(y > j)
    that share one weight vector and have ordered biases, ``z_j = w . x + b_j`` with
    ``b_j = b_0 - sum_{i < j} softplus(d_i)`` (strictly decreasing), so P(y > j) is non-increasing in j for
    every input and the class probabilities (their differences) are never negative.

    Args:
        in_features: input width.
        num_outputs: K - 1 cumulative logits.
    """

    def __init__(self, in_features: int, num_outputs: int):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(num_outputs)
        self.weight = nn.Parameter(torch.empty(1, in_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        # biases centred on 0 and 1 apart at the start: softplus(d) = 1
        self.bias0 = nn.Parameter(torch.tensor((num_outputs - 1) / 2.0))
        self.deltas = nn.Parameter(torch.full((max(num_outputs - 1, 0),), math.log(math.expm1(1.0))))

    @property
    def bias(self) -> Tensor:
        """The ordered biases ``(k,)``."""
        steps = torch.cat([self.bias0.new_zeros(1), torch.cumsum(F.softplus(self.deltas), 0)])
        return self.bias0 - steps

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight) + self.bias.to(x.dtype)  # (B, 1) + (k,) -> (B, k)


def _output_layer(dim: int | None, name: str, num_outputs: int = 1, link: str = "logistic") -> nn.Module:
    """The layer mapping features to the head's raw outputs: linear, or CORAL for the cumulative link."""
    if not dim or dim <= 0:
        raise ConfigError(f"{name} feature width must be a positive integer, got {dim!r}")
    if link == "cumulative":
        return CumulativeLinear(dim, num_outputs)
    return nn.Linear(dim, num_outputs)


def _linear_head(dim: int | None, name: str) -> nn.Linear:
    return _output_layer(dim, name)


def _masked(target: Tensor, mask: Tensor | None, used_rows: Tensor) -> tuple[Tensor, Tensor]:
    """``(target (B, k) with unknowns zeroed, rows (B, k) bool)``."""
    known = ~torch.isnan(target) if mask is None else mask.to(target.device).bool() & ~torch.isnan(target)
    rows = known & used_rows.reshape(-1, *([1] * (target.dim() - 1)))
    return torch.where(rows, target, torch.zeros_like(target)), rows


def _as_matrix(x: Tensor) -> Tensor:
    return x.unsqueeze(-1) if x.dim() == 1 else x


def _weight_vector(pos_weight: float | Tensor | None, like: Tensor) -> Tensor | None:
    return None if pos_weight is None else torch.as_tensor(pos_weight, dtype=like.dtype, device=like.device)


def _bce_term(logit: Tensor, label: Tensor, rows: Tensor, pos_weight: float | Tensor | None) -> Tensor:
    """BCE-with-logits over ``rows`` (others ignored; 0 with a graph when there are none): the mean over each
    output's rows, summed over outputs (``(B,)`` inputs: one output)."""
    y = torch.where(rows, label, torch.zeros_like(label))
    z = torch.where(rows, logit, torch.zeros_like(logit))
    pw = _weight_vector(pos_weight, z)
    per = F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")
    if per.dim() == 1:
        return (per * rows).sum() / rows.sum().clamp(min=1)
    return ((per * rows).sum(0) / rows.sum(0).clamp(min=1)).sum()


def _ordinal_class_weight(class_weight: Tensor, y: Tensor) -> Tensor:
    """``(B, 1)``: each row's class weight for cumulative targets ``[y > j]`` (the class is their count)."""
    return class_weight[y.sum(dim=1).round().long()].unsqueeze(1)


def _cumulative_term(logit: Tensor, label: Tensor, rows: Tensor, weight: float | Tensor | None) -> Tensor:
    """The cumulative (ordinal) link's BCE over ``(B, K - 1)`` targets ``[y > j]``: ``weight`` with K entries
    is a weight per class (each row's every output weighted by its class's weight, normalised by the rows'
    weights, as a weighted cross-entropy is), so the loss stays the likelihood of one weighted ordinal model;
    a scalar or K - 1 entries weight the positive entries per output (:func:`_bce_term`)."""
    cw = _weight_vector(weight, logit)
    if cw is None or cw.numel() != label.shape[-1] + 1:
        return _bce_term(logit, label, rows, weight)
    y = torch.where(rows, label, torch.zeros_like(label))
    z = torch.where(rows, logit, torch.zeros_like(logit))
    w = _ordinal_class_weight(cw, y) * rows  # (B, K - 1)
    per = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return ((per * w).sum(0) / w.sum(0).clamp(min=torch.finfo(z.dtype).tiny)).sum()


def _ce_term(logit: Tensor, onehot: Tensor, rows: Tensor, class_weight: float | Tensor | None) -> Tensor:
    """Cross-entropy of ``(B, K)`` logits against one-hot targets over rows that are fully known; optional
    class weights (normalised by the weights of the rows' classes, as ``F.cross_entropy`` does)."""
    row = rows.all(dim=1) & rows.any(dim=1)
    y = torch.where(row.unsqueeze(1), onehot, torch.zeros_like(onehot))
    z = torch.where(row.unsqueeze(1), logit, torch.zeros_like(logit))
    cw = _weight_vector(class_weight, z)
    wy = y if cw is None else y * cw
    per = -(wy * torch.log_softmax(z, dim=1)).sum(1)
    return per.sum() / wy.sum().clamp(min=torch.finfo(z.dtype).tiny if cw is not None else 1)


def _se_term(value: Tensor, target: Tensor, rows: Tensor, pos_weight: float | Tensor | None) -> Tensor:
    """Squared error per output over its known entries (mean), summed over outputs."""
    if pos_weight is not None:
        raise ConfigError("pos_weight does not apply to regression (identity) outputs")
    z = torch.where(rows, value, torch.zeros_like(value))
    per = (z - target) ** 2
    return ((per * rows).sum(0) / rows.sum(0).clamp(min=1)).sum()


_TERM = {"logistic": ("bce", _bce_term), "cumulative": ("bce", _cumulative_term), "softmax": ("ce", _ce_term),
         "identity": ("mse", _se_term)}


class FusionHead(nn.Module):
    """Base class: presence handling, the output shape and link, and the shared face.

    Args:
        num_outputs: raw outputs per sample (1 for the binary head).
        link: one of :data:`LINKS`.

    Attributes:
        modalities: the modalities the head can use (``("ecg", "cxr")`` or a single one).
    """

    modalities: tuple[str, ...] = MODALITIES
    #: What the head's ``score`` is (written into model bundles, ``docs/model_contract.md``).
    score_meaning: str = "model score"

    def __init__(self, num_outputs: int = 1, link: str = "logistic"):
        super().__init__()
        self.num_outputs, self.link = check_link(num_outputs, link, type(self).__name__)

    @property
    def is_binary(self) -> bool:
        """One logistic output: ``score`` and ``prob`` are ``(B,)``."""
        return self.num_outputs == 1 and self.link == "logistic"

    def _shape(self, x: Tensor) -> Tensor:
        """``(B, k)`` -> ``(B,)`` for the binary head, unchanged otherwise."""
        return x.squeeze(-1) if self.is_binary else x

    def _prob(self, score: Tensor) -> Tensor:
        return torch.sigmoid(score) if self.is_binary else probabilities(score, self.link)

    def _target(self, target: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Target and mask as ``(B, k)``; a clear error for un-encoded labels."""
        if self.is_binary and target.dim() == 1:
            return target, mask
        target = _as_matrix(target)
        if target.shape[-1] != self.num_outputs:
            raise ConfigError(f"{type(self).__name__}: target has {target.shape[-1]} column(s) but the head has "
                              f"{self.num_outputs} {self.link} output(s); encode labels with "
                              "cardiofusion.tasks.losses.encode_targets")
        return target, None if mask is None else _as_matrix(mask)

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

    def _link_term(self, logit: Tensor, target: Tensor, rows_used: Tensor, pos_weight, mask) -> tuple[str, Tensor]:
        name, fn = _TERM[self.link]
        dtype = torch.promote_types(logit.dtype, torch.float32)  # fp16/bf16 -> fp32
        logit, target = logit.to(dtype), target.to(dtype)
        y, rows = _masked(target, mask, rows_used)
        return name, fn(logit, y, rows, pos_weight)

    def loss(self, output: FusionOutput, target: Tensor, pos_weight: float | Tensor | None = None,
             mask: Tensor | None = None) -> dict[str, Tensor]:
        """Default: the link's loss (BCE / cross-entropy / squared error) on the score over entries with a
        known target and rows with a usable modality."""
        target, mask = self._target(target, mask)
        name, term = self._link_term(output.aux["logit"], target, output.used.any(dim=1), pos_weight, mask)
        return {"loss": term, name: term}


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

    **k outputs** (tasks beyond binary): the same, per output.  ``score_j = f_ecg,j + f_cxr,j`` and the loss
    is the sum over outputs j of the weighted mean over that output's known entries of
    ``1/2 (t_j - score_j)^2 + rho/2 (f_ecg,j - f_cxr,j)^2``, where ``t`` is the encoded target: one-hot
    (softmax), cumulative 0/1 ``[y > j]`` (cumulative, K - 1 outputs), multi-hot (logistic, NaN entries
    masked out) or standardised values (identity).  With linear branches each output is therefore exactly
    least squares on the augmented data ``[[X, Z], [-sqrt(rho) X, sqrt(rho) Z]]`` with targets ``[t_j; 0]``.
    ``prob``: logistic ``clamp(score, 0, 1)`` per output; softmax: clamped, then rows renormalised to sum 1
    (uniform where every output is <= 0); cumulative: each branch is a :class:`CumulativeLinear` (shared
    weight, ordered biases), so ``score_j`` is non-increasing in j, and clamping to [0, 1] keeps that, so
    the class probabilities (differences) are non-negative and sum to 1; identity: ``prob = score``.
    ``pos_weight``: logistic / cumulative a scalar or one weight per output for entries with target 1;
    softmax one weight per class for the rows of that class.

    Args:
        ecg_dim, cxr_dim: feature widths.
        rho: agreement strength (>= 0; 0 = early fusion of the two scores).
        num_outputs, link: see :class:`FusionHead`.
    """

    score_meaning = "f_ecg + f_cxr (cooperative learning; 2 x the available branch with one modality)"

    def __init__(self, ecg_dim: int, cxr_dim: int, rho: float = 0.5, num_outputs: int = 1, link: str = "logistic"):
        super().__init__(num_outputs, link)
        if rho < 0:
            raise ConfigError(f"cooperative rho must be >= 0, got {rho}")
        self.rho = float(rho)
        self.ecg_head = _output_layer(ecg_dim, "ECG", self.num_outputs, self.link)
        self.cxr_head = _output_layer(cxr_dim, "X-ray", self.num_outputs, self.link)

    def _prob(self, score: Tensor) -> Tensor:
        p = score.clamp(0.0, 1.0)
        if self.link == "softmax":
            s = p.sum(dim=1, keepdim=True)
            return torch.where(s > 0, p / s.clamp(min=torch.finfo(p.dtype).tiny), torch.full_like(p, 1.0 / p.shape[1]))
        if self.link == "cumulative":
            return _classes_from_cumulative(p)
        if self.link == "identity":
            return score
        return p

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        k = self.num_outputs
        zero = _zeros(features, k)
        f_e = self.ecg_head(features["ecg"]) if features.get("ecg") is not None else zero  # (B, k)
        f_c = self.cxr_head(features["cxr"]) if features.get("cxr") is not None else zero
        f_e, f_c = self._shape(f_e), self._shape(f_c)
        both = p["ecg"] & p["cxr"]
        pe = p["ecg"] if f_e.dim() == 1 else p["ecg"].unsqueeze(1)
        bo = both if f_e.dim() == 1 else both.unsqueeze(1)
        raw = torch.where(bo, f_e + f_c, torch.where(pe, 2 * f_e, 2 * f_c))  # (B,) or (B, k)
        any_used = p["ecg"] | p["cxr"]
        score = _nan_where(any_used, raw)
        return FusionOutput(
            score=score,
            prob=self._prob(score),
            branch_scores={
                "ecg": _nan_where(p["ecg"], f_e) if features.get("ecg") is not None else None,
                "cxr": _nan_where(p["cxr"], f_c) if features.get("cxr") is not None else None,
            },
            used=self._used(p),
            aux={"raw_score": raw, "f_ecg": f_e, "f_cxr": f_c, "both": both},
        )

    def loss(self, output: FusionOutput, target: Tensor, pos_weight: float | Tensor | None = None,
             mask: Tensor | None = None) -> dict[str, Tensor]:
        target, mask = self._target(target, mask)
        dtype = torch.promote_types(output.aux["raw_score"].dtype, torch.float32)  # fp16/bf16 -> fp32
        target = target.to(dtype)
        y, rows = _masked(target, mask, output.used.any(dim=1))
        f_e, f_c = output.aux["f_ecg"].to(dtype), output.aux["f_cxr"].to(dtype)
        w = rows.to(y.dtype)
        if pos_weight is not None:
            pw = torch.as_tensor(pos_weight, dtype=y.dtype, device=y.device)
            if self.link == "identity":
                raise ConfigError("pos_weight does not apply to regression (identity) outputs")
            if self.link == "softmax":  # class weights: each row weighted by its class's weight
                w = w * (y * pw).sum(dim=1, keepdim=True)
            elif self.link == "cumulative" and pw.numel() == y.shape[-1] + 1:  # class weights, class = sum [y > j]
                w = w * _ordinal_class_weight(pw, y)
            else:
                w = w * torch.where(y > 0.5, pw, torch.ones_like(y))
        w = w / w.sum(dim=0).clamp(min=torch.finfo(y.dtype).tiny)  # per output
        fit = 0.5 * (y - output.aux["raw_score"].to(dtype)) ** 2
        both = output.aux["both"] if y.dim() == 1 else output.aux["both"].unsqueeze(1)
        diff = torch.where(both, f_e - f_c, torch.zeros_like(y))
        agreement = 0.5 * self.rho * diff**2
        fit_t, agree_t = (w * fit).sum(), (w * agreement).sum()
        return {"loss": fit_t + agree_t, "fit": fit_t, "agreement": agree_t}


@register_fusion("early")
class EarlyFusion(FusionHead):
    """Early fusion: concatenated features -> MLP (or linear) head -> raw outputs, the link's loss (BCE for
    the binary head).

    A missing modality is replaced by a learned "missing" feature vector.  With
    ``modality_dropout > 0``, during training each sample that has both modalities loses one of them
    (chosen at random) with that probability, so the head learns to score single-modality patients.

    Args:
        ecg_dim, cxr_dim: feature widths.
        hidden: hidden width of the MLP head; 0 = a single linear layer.
        dropout: dropout before the output layer (MLP only).
        modality_dropout: probability of dropping one modality of a paired sample in training.
        num_outputs, link: see :class:`FusionHead` (the cumulative link ends in a :class:`CumulativeLinear`).
    """

    score_meaning = "logit of the early-fusion head"

    def __init__(self, ecg_dim: int, cxr_dim: int, hidden: int = 128, dropout: float = 0.1, modality_dropout: float = 0.0,
                 num_outputs: int = 1, link: str = "logistic"):
        super().__init__(num_outputs, link)
        _linear_head(ecg_dim, "ECG"), _linear_head(cxr_dim, "X-ray")  # validate widths
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.modality_dropout = float(modality_dropout)
        self.missing_ecg = nn.Parameter(torch.zeros(ecg_dim))
        self.missing_cxr = nn.Parameter(torch.zeros(cxr_dim))
        nn.init.normal_(self.missing_ecg, std=0.02)
        nn.init.normal_(self.missing_cxr, std=0.02)
        d = ecg_dim + cxr_dim
        k, link = self.num_outputs, self.link
        if hidden:
            self.head = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                      _output_layer(hidden, "hidden", k, link))
        else:
            self.head = _output_layer(d, "fused", k, link)

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
        logit = self._shape(self.head(torch.cat(parts, dim=1)))  # (B,) or (B, k)
        any_used = p["ecg"] | p["cxr"]
        score = _nan_where(any_used, logit)
        return FusionOutput(
            score=score,
            prob=self._prob(score),
            branch_scores={"ecg": None, "cxr": None},
            used=self._used(p),
            aux={"logit": logit},
        )


@register_fusion("late")
class LateFusion(FusionHead):
    """Late fusion: one output head per modality, each trained with its own loss (terms ``bce_ecg``,
    ``bce_cxr`` for the binary / logistic / cumulative links, ``ce_*`` for softmax, ``mse_*`` for identity;
    total = their sum); score = mean of the available branch outputs (for the cumulative link both
    branches are :class:`CumulativeLinear`, so the mean stays rank-consistent).

    Args:
        ecg_dim, cxr_dim: feature widths.
        num_outputs, link: see :class:`FusionHead`.
    """

    score_meaning = "mean of the available branch logits"

    def __init__(self, ecg_dim: int, cxr_dim: int, num_outputs: int = 1, link: str = "logistic"):
        super().__init__(num_outputs, link)
        self.ecg_head = _output_layer(ecg_dim, "ECG", self.num_outputs, self.link)
        self.cxr_head = _output_layer(cxr_dim, "X-ray", self.num_outputs, self.link)

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        zero = _zeros(features, self.num_outputs)
        z_e = self._shape(self.ecg_head(features["ecg"]) if features.get("ecg") is not None else zero)
        z_c = self._shape(self.cxr_head(features["cxr"]) if features.get("cxr") is not None else zero)
        pe, pc = p["ecg"].to(z_e.dtype), p["cxr"].to(z_e.dtype)
        if z_e.dim() == 2:
            pe, pc = pe.unsqueeze(1), pc.unsqueeze(1)
        mean = (pe * z_e + pc * z_c) / (pe + pc).clamp(min=1)  # (B,) or (B, k)
        score = _nan_where(p["ecg"] | p["cxr"], mean)
        return FusionOutput(
            score=score,
            prob=self._prob(score),
            branch_scores={
                "ecg": _nan_where(p["ecg"], z_e) if features.get("ecg") is not None else None,
                "cxr": _nan_where(p["cxr"], z_c) if features.get("cxr") is not None else None,
            },
            used=self._used(p),
            aux={"logit_ecg": z_e, "logit_cxr": z_c},
        )

    def loss(self, output: FusionOutput, target: Tensor, pos_weight: float | Tensor | None = None,
             mask: Tensor | None = None) -> dict[str, Tensor]:
        target, mask = self._target(target, mask)
        terms = {}
        for i, m in enumerate(MODALITIES):
            name, term = self._link_term(output.aux[f"logit_{m}"], target, output.used[:, i], pos_weight, mask)
            terms[f"{name}_{m}"] = term
        return {"loss": sum(terms.values()), **terms}


class SingleModalityFusion(FusionHead):
    """One modality -> linear (or :class:`CumulativeLinear`) -> raw outputs, the link's loss (the paper's
    ECG-only and X-ray-only baselines: one logit, BCE).

    Rows missing that modality get a NaN score and ``used = (False, False)``.
    """

    modality: str = "ecg"
    modalities: tuple[str, ...] = ("ecg",)

    def __init__(self, ecg_dim: int | None = None, cxr_dim: int | None = None, num_outputs: int = 1,
                 link: str = "logistic"):
        super().__init__(num_outputs, link)
        dim = ecg_dim if self.modality == "ecg" else cxr_dim
        self.head = _output_layer(dim, self.modality.upper(), self.num_outputs, self.link)

    def forward(self, features, present=None) -> FusionOutput:
        p = self.presence(features, present)
        x = features.get(self.modality)
        logit = self._shape(self.head(x) if x is not None else _zeros(features, self.num_outputs))
        score = _nan_where(p[self.modality], logit)
        branch = {m: None for m in MODALITIES}
        branch[self.modality] = score if x is not None else None
        return FusionOutput(score=score, prob=self._prob(score), branch_scores=branch, used=self._used(p),
                            aux={"logit": logit})


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
