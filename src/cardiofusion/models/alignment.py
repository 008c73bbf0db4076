"""Cross-modal alignment of the ECG to a frozen X-ray teacher (paper 003 stage 2, CLIP style).

* :class:`ClipLoss` -- the symmetric InfoNCE loss of CLIP, ``1/2 CE(logits, I) + 1/2 CE(logits^T, I)`` with
  ``logits = z_ecg . z_img^T / tau`` on L2-normalised embeddings and in-batch negatives; ``tau`` fixed (0.1,
  the default) or learnable (CLIP's log-parameterised scale, capped at 100).  Optionally each negative pair
  ``(i, k)`` is down-weighted by ``w_ik = 1 - exp(-||phi_i - phi_k||^2 / sigma^2)`` (sigma 0.5) when the two
  patients' cardiac measurements ``phi`` are close: the softmax denominator becomes
  ``exp(s_ii) + sum_k w_ik exp(s_ik)``.
* :class:`FrozenTeacher` -- the X-ray encoder frozen and **always** in eval mode (``train()`` on a parent
  leaves it in eval mode, so dropout is off and batch-norm statistics never move) followed by a *trained*
  projection head.  Loading a state dict without the projection's weights is refused: the public code
  aligned ECGs to a projection that was never trained (flaws 1 and 2 of recipes.md).
* :class:`ECGImageAligner` -- the ECG encoder + its projection head + the teacher + the loss; only the ECG
  side and the two projections train.
* :func:`retrieval_accuracy` -- top-k retrieval accuracy of paired embeddings in both directions, ties
  broken at random in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "ClipLoss",
    "ECGImageAligner",
    "FrozenTeacher",
    "ProjectionHead",
    "clip_loss",
    "negative_weights",
    "retrieval_accuracy",
    "retrieval_hits",
]


def negative_weights(measurements: Tensor, sigma: float = 0.5) -> Tensor:
    """Measurement-aware weights ``(B, B)``: ``1 - exp(-||phi_i - phi_k||^2 / sigma^2)``, 1 on the diagonal.

    Args:
        measurements: ``(B, M)`` cardiac measurements, standardised (sigma is in their units); NaN = unknown:
            distances use the measurements both patients have, and a pair with none in common keeps weight 1.
        sigma: the similarity scale.
    """
    if measurements.dim() == 1:
        measurements = measurements.unsqueeze(-1)
    if float(sigma) <= 0:
        raise ConfigError(f"negative-weighting sigma must be > 0; got {sigma}")
    phi = measurements.float()
    known = torch.isfinite(phi)  # (B, M)
    filled = torch.where(known, phi, torch.zeros_like(phi))
    both = known[:, None, :] & known[None, :, :]  # (B, B, M)
    sq = ((filled[:, None, :] - filled[None, :, :]).pow(2) * both).sum(dim=-1)  # (B, B)
    w = 1.0 - torch.exp(-sq / float(sigma) ** 2)
    w = torch.where(both.any(dim=-1), w, torch.ones_like(w))
    w.fill_diagonal_(1.0)
    return w


def clip_loss(
    z_ecg: Tensor, z_img: Tensor, logit_scale: float | Tensor = 10.0, weights: Tensor | None = None
) -> dict[str, Tensor]:
    """Symmetric CLIP loss of paired embeddings (row ``i`` of each is patient ``i``).

    Args:
        z_ecg, z_img: ``(B, D)``; L2-normalised here, so their scale does not matter.
        logit_scale: ``1 / tau`` (10 for tau 0.1).
        weights: optional ``(B, B)`` negative weights (:func:`negative_weights`); row ``i`` weighs the
            negatives of ECG ``i`` and, symmetrically, of image ``i``.

    Returns:
        ``{"loss": mean of both directions, "clip_ecg_to_image": ..., "clip_image_to_ecg": ...}``.
    """
    if z_ecg.shape != z_img.shape or z_ecg.dim() != 2:
        raise ConfigError(f"CLIP loss needs paired (B, D) embeddings; got {tuple(z_ecg.shape)} and {tuple(z_img.shape)}")
    e = F.normalize(z_ecg.float(), dim=-1)
    c = F.normalize(z_img.float(), dim=-1)
    logits = logit_scale * (e @ c.T)  # (B, B): ECG i vs image k
    logits_t = logits.T  # image i vs ECG k
    if weights is not None:
        log_w = torch.log(weights.to(logits.device, logits.dtype))  # 0 weight -> -inf: negative removed
        logits, logits_t = logits + log_w, logits_t + log_w
    target = torch.arange(logits.shape[0], device=logits.device)
    e2i = F.cross_entropy(logits, target)
    i2e = F.cross_entropy(logits_t, target)
    return {"loss": 0.5 * (e2i + i2e), "clip_ecg_to_image": e2i.detach(), "clip_image_to_ecg": i2e.detach()}


class ClipLoss(nn.Module):
    """Symmetric CLIP loss with a fixed (default) or learnable temperature and optional negative weighting.

    Args:
        temperature: tau (0.1; the later paper version 0.05); the initial value when learnable.
        learnable: learn ``log(1 / tau)`` (CLIP), the scale capped at ``max_logit_scale``.
        measurement_sigma: sigma of the measurement-aware negative weighting (used when measurements are
            passed to :meth:`forward`).
        max_logit_scale: cap of ``1 / tau`` when learnable (CLIP: 100).
    """

    def __init__(self, temperature: float = 0.1, learnable: bool = False, measurement_sigma: float = 0.5,
                 max_logit_scale: float = 100.0):
        super().__init__()
        if not 0.0 < float(temperature):
            raise ConfigError(f"CLIP temperature must be > 0; got {temperature}")
        init = torch.tensor(math.log(1.0 / float(temperature)))
        if learnable:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)
        self.learnable = bool(learnable)
        self.measurement_sigma = float(measurement_sigma)
        self.max_logit_scale = float(max_logit_scale)

    @property
    def logit_scale(self) -> Tensor:
        """``1 / tau`` (capped at ``max_logit_scale`` when learnable)."""
        if self.learnable:
            return self.log_logit_scale.clamp(max=math.log(self.max_logit_scale)).exp()
        return self.log_logit_scale.exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach())

    def forward(self, z_ecg: Tensor, z_img: Tensor, measurements: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms (see :func:`clip_loss`), plus ``temperature``; ``measurements`` ``(B, M)`` turns on the
        measurement-aware negative weighting."""
        weights = None if measurements is None else negative_weights(measurements, self.measurement_sigma)
        out = clip_loss(z_ecg, z_img, self.logit_scale, weights)
        out["temperature"] = (1.0 / self.logit_scale).detach()
        return out


class ProjectionHead(nn.Module):
    """Linear projection (or a one-hidden-layer MLP with GELU) to the shared embedding space.

    ``norm=True`` first standardises every input feature over the batch (``BatchNorm1d``; running statistics in
    eval mode), as SimCLR's projection does: encoder features that share one large mean direction (a pooled,
    layer-normed ViT: pairwise cosine near 1 across records) otherwise project to nearly identical embeddings,
    every logit is the same and the CLIP loss sits at ``log B`` with vanishing gradients.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, norm: bool = False):
        super().__init__()
        first = [nn.BatchNorm1d(in_dim)] if norm else []
        if hidden:
            self.net = nn.Sequential(*first, nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(*first, nn.Linear(in_dim, out_dim))
        self.out_dim = int(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FrozenTeacher(nn.Module):
    """A frozen, eval-mode image encoder followed by a trained projection head.

    Args:
        encoder: a pretrained image encoder (``out_dim`` attribute, ``forward(x) -> (B, out_dim)``); its
            parameters are frozen here and it stays in eval mode whatever mode the parent is put in.
        embed_dim: width of the projected embedding.
        hidden: hidden width of an MLP projection (None: linear).
        norm: batch-standardise the teacher's features before the projection (:class:`ProjectionHead`).

    The projection trains with the ECG side (or comes pretrained): :meth:`load_state_dict` refuses a state
    without the projection's weights, whatever ``strict`` says.
    """

    def __init__(self, encoder: nn.Module, embed_dim: int, hidden: int | None = None, norm: bool = False):
        super().__init__()
        if not hasattr(encoder, "out_dim"):
            raise ConfigError(f"the teacher encoder {type(encoder).__name__} has no out_dim")
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.projection = ProjectionHead(int(encoder.out_dim), embed_dim, hidden, norm)
        self.out_dim = int(embed_dim)

    def train(self, mode: bool = True) -> FrozenTeacher:
        super().train(mode)
        self.encoder.eval()  # a frozen teacher never leaves eval mode
        return self

    def features(self, x: Tensor) -> Tensor:
        """The frozen encoder's features ``(B, out_dim)``, without gradient."""
        with torch.no_grad():
            return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        """Projected embedding ``(B, embed_dim)`` (gradients reach the projection only)."""
        return self.projection(self.features(x))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        missing = [k for k in self.projection.state_dict() if f"projection.{k}" not in state_dict]
        if missing:
            raise ConfigError(f"teacher state has no trained projection ({', '.join('projection.' + k for k in missing)}"
                              f" missing): an untrained random projection would be used")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ECGImageAligner(nn.Module):
    """ECG encoder + projection aligned to a :class:`FrozenTeacher` with a :class:`ClipLoss`.

    Args:
        ecg_encoder: any registered ECG encoder (``forward(x, lead_mask)``; usually the MAE-pretrained ViT).
        teacher: the frozen X-ray teacher; its ``out_dim`` is the shared embedding width.
        loss: the contrastive loss (default: fixed tau 0.1).
        hidden: hidden width of an MLP ECG projection (None: linear).
        norm: batch-standardise the ECG features before the projection (:class:`ProjectionHead`).
    """

    def __init__(self, ecg_encoder: nn.Module, teacher: FrozenTeacher, loss: ClipLoss | None = None,
                 hidden: int | None = None, norm: bool = False):
        super().__init__()
        self.ecg_encoder = ecg_encoder
        self.ecg_projection = ProjectionHead(int(ecg_encoder.out_dim), teacher.out_dim, hidden, norm)
        self.teacher = teacher
        self.loss_fn = loss if loss is not None else ClipLoss()

    def embed_ecg(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """ECG embedding ``(B, D)`` (not normalised)."""
        return self.ecg_projection(self.ecg_encoder(x, lead_mask))

    def embed_image(self, image: Tensor) -> Tensor:
        """Image embedding ``(B, D)`` (not normalised) from the frozen teacher and its trained projection."""
        return self.teacher(image)

    def embed(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """``(z_ecg, z_img)`` ``(B, D)`` (not normalised) of a paired batch (keys ``ecg``, ``ecg_mask``, ``cxr``).

        Rows must have both modalities (``has_ecg`` and ``has_cxr`` are checked when present):
        in-batch negatives assume every row is a real pair.
        """
        for key in ("has_ecg", "has_cxr"):
            if key in batch and not bool(torch.as_tensor(batch[key]).all()):
                raise ConfigError(f"alignment needs paired rows; the batch has rows with {key} False")
        return self.embed_ecg(batch["ecg"], batch.get("ecg_mask")), self.embed_image(batch["cxr"])

    def forward(self, batch: Mapping[str, Any], measurements: Tensor | None = None) -> dict[str, Tensor]:
        """Named scalar loss terms of a paired batch (:class:`ClipLoss`): ``loss``, ``clip_ecg_to_image``,
        ``clip_image_to_ecg``, ``temperature``; ``measurements`` ``(B, M)`` for the weighted negatives."""
        z_ecg, z_img = self.embed(batch)
        return self.loss_fn(z_ecg, z_img, measurements)


def retrieval_hits(z_query: Tensor, z_gallery: Tensor, k: int) -> Tensor:
    """Per query, the probability that its partner (row ``i`` of ``z_gallery`` for query ``i``) is among the
    ``k`` gallery items most similar to it (cosine), ties broken at random in expectation: with ``g`` items
    strictly more similar than the partner and ``t`` others exactly as similar, ``clip((k - g) / (t + 1), 0, 1)``.
    Returns ``(N,)`` float64 in [0, 1]; its mean is the top-``k`` accuracy."""
    if z_query.shape != z_gallery.shape or z_query.dim() != 2:
        raise ConfigError(f"retrieval needs paired (N, D) embeddings; got {tuple(z_query.shape)} and "
                          f"{tuple(z_gallery.shape)}")
    q = F.normalize(z_query.detach().double(), dim=-1)
    g = F.normalize(z_gallery.detach().double(), dim=-1)
    sim = q @ g.T  # (N, N)
    true = sim.diagonal().unsqueeze(1)  # (N, 1)
    greater = (sim > true).sum(dim=1).double()
    ties = (sim == true).sum(dim=1).double() - 1.0  # others exactly as similar
    return ((int(k) - greater) / (ties + 1.0)).clamp(0.0, 1.0)


def retrieval_accuracy(z_query: Tensor, z_gallery: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k retrieval accuracy of paired embeddings (row ``i`` of each is the same patient), both ways.

    Cosine similarity; a query is right at ``k`` when its partner ranks among the ``k`` most similar gallery
    items (:func:`retrieval_hits`: ties broken at random in expectation, so identical embeddings score chance).

    Returns:
        ``{"ecg_to_image_top{k}", "image_to_ecg_top{k}", "chance_top{k}"}`` for each ``k`` (query = ECG).
    """
    n = z_query.shape[0]
    out: dict[str, float] = {}
    for name, (a, b) in (("ecg_to_image", (z_query, z_gallery)), ("image_to_ecg", (z_gallery, z_query))):
        for k in ks:
            out[f"{name}_top{k}"] = float(retrieval_hits(a, b, k).mean())
    for k in ks:
        out[f"chance_top{k}"] = min(int(k), n) / n
    return out
