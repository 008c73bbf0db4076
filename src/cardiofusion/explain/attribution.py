"""Attribution maps of a trained model for one record: X-ray Grad-CAM, ECG lead attention x 1D Grad-CAM.

What is explained is a *score*, chosen per modality by ``target``:

* ``"auto"`` (default): the modality's own branch score where the fusion head has one (cooperative:
  ``f_ecg`` / ``f_cxr``; late: each branch logit; single-modality heads: the logit), else the fused score
  (early fusion).  This is "explain each branch's score" for cooperative learning.
* ``"score"``: the fused ranking score (the positive-class logit of BCE heads, ``f_ecg + f_cxr`` for
  cooperative) with the other modality held fixed.

Models of other tasks (``cardiofusion.tasks``) output k values; an explanation then also has an *output
target* (:class:`OutputTarget`, :func:`resolve_output_target`): a class (name or index), a label name or an
output index; by default the predicted class (multiclass), the first positive label or else the first label
(multilabel; :func:`default_output_targets` lists every positive label) or the first target (regression).
The explained score is that output's raw value (softmax: the class logit; multilabel: the label logit;
regression: the standardised value; ordinal: the cumulative logit of ``y >= class``, and minus the first
cumulative logit for the lowest class).  Binary models have one output and no output target (unchanged).

Scores of a record are the mean over its ECG evaluation windows, as in evaluation.  Gradients come from
captum (``LayerGradCam``, ``IntegratedGradients``); the hooked layers are the encoders' own
``gradcam_layer``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._compat import ensure_torchvision
from ..errors import ConfigError
from .samples import RecordSample

ensure_torchvision()  # captum imports nothing from torchvision, but timm (models) does; keep one order

from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam

__all__ = [
    "METHODS",
    "TARGETS",
    "CXRExplanation",
    "OutputTarget",
    "default_output_targets",
    "resolve_output_target",
    "ECGExplanation",
    "Explanation",
    "RecordScorer",
    "cxr_gradcam",
    "cxr_integrated_gradients",
    "cxr_layers",
    "ecg_gradcam",
    "ecg_integrated_gradients",
    "explain_sample",
    "lead_attention",
    "stitch_windows",
]

METHODS = ("gradcam", "ig")
TARGETS = ("auto", "score")


# --------------------------------------------------------------------------------------------------
# Which output of a k-output model is explained
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputTarget:
    """One class / label / regression target of a k-output model, as an explanation target.

    Attributes:
        name: the class / label / target name (``output <j>`` when the task is unknown).
        index: its index among the task's classes / labels / targets.
        output: the column of the model's raw outputs that is explained.
        sign: -1 when the explained score is minus that output (the lowest class of an ordinal task:
            evidence against ``y >= 1``), else 1.
        kind: the task kind (``multiclass``, ``multilabel``, ``regression``; ``outputs`` when unknown).
    """

    name: str
    index: int
    output: int
    sign: float = 1.0
    kind: str = "outputs"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "index": self.index, "output": self.output, "sign": self.sign, "kind": self.kind}

    def describe(self) -> str:
        what = {"multiclass": "class", "multilabel": "label", "regression": "target"}.get(self.kind, "output")
        return f"{what} {self.name}"


def _task_of(task: Any) -> Any:
    if task is None:
        return None
    from ..tasks import load_task

    return load_task(task)


def resolve_output_target(target: Any, task: Any = None, n_outputs: int | None = None) -> OutputTarget | None:
    """An output target from a class / label / target name, its index (int or digits), or an
    :class:`OutputTarget`; None for binary tasks (one output).  Errors list the choices."""
    if isinstance(target, OutputTarget):
        return target
    task = _task_of(task)
    if task is not None and task.is_binary:
        return None
    if task is None:
        if not n_outputs or n_outputs <= 1:
            return None
        names, kind = [f"output {j}" for j in range(n_outputs)], "outputs"
    else:
        names, kind = list(task.classes), task.kind
    text = str(target).strip()
    index = None
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        index = int(target)
    elif text in names:
        index = names.index(text)
    elif task is not None and text in task.columns:
        index = task.columns.index(text)
    elif task is not None and text in task.target_names:
        index = list(task.target_names).index(text)
    elif text.lstrip("-").isdigit():
        index = int(text)
    if index is None or not (0 <= index < len(names)):
        raise ConfigError(f"unknown explanation target {target!r}; choose one of {', '.join(names)} "
                          f"(or its index 0-{len(names) - 1})")
    if task is not None and task.kind == "multiclass" and task.ordinal:
        output, sign = (index - 1, 1.0) if index >= 1 else (0, -1.0)
    else:
        output, sign = index, 1.0
    return OutputTarget(name=names[index], index=index, output=output, sign=sign, kind=kind)


def default_output_targets(task: Any, probs: Any, n_outputs: int | None = None) -> list[OutputTarget]:
    """The targets explained when none is given, from the record's ``prob`` (``(m,)``): multiclass the
    predicted class, multilabel every positive label (at the task's thresholds) or else the first label,
    regression the first target; [] for binary."""
    task = _task_of(task)
    if task is None:
        return [] if not n_outputs or n_outputs <= 1 else [resolve_output_target(0, None, n_outputs)]
    if task.is_binary:
        return []
    p = np.asarray(probs, dtype=np.float64).ravel()
    if task.kind == "multiclass":
        return [resolve_output_target(int(np.nanargmax(p)) if np.isfinite(p).any() else 0, task)]
    if task.kind == "multilabel":
        positive = [j for j, d in enumerate(task.decide(p[None])[0]) if d == 1]
        return [resolve_output_target(j, task) for j in (positive or [0])]
    return [resolve_output_target(0, task)]


# --------------------------------------------------------------------------------------------------
# Scores with one modality varied and the other held fixed
# --------------------------------------------------------------------------------------------------
class RecordScorer:
    """Scores of one record as functions of one modality's input, the other modality held fixed.

    ``cxr_scores(x)`` maps ``(K, 1, H, W)`` images to ``(K,)`` scores; ``ecg_scores(w)`` maps
    ``(K, n_w, L, W)`` window sets (K versions of the record's windows) to ``(K,)`` record scores.  The
    fixed modality's features are computed once (no gradient).  Differentiable in the varied input.

    Args:
        model: a ``MultimodalModel`` (eval mode).
        sample: the record.
    """

    def __init__(self, model: nn.Module, sample: RecordSample, output: OutputTarget | None = None):
        self.model = model
        self.sample = sample
        self.output = output  # which column of k-output scores is explained (None: one output)
        self.has = {"ecg": model.ecg_encoder is not None and sample.has_ecg,
                    "cxr": model.cxr_encoder is not None and sample.has_cxr}
        if not any(self.has.values()):
            raise ConfigError(f"record {sample.record_id} has none of the modalities the model uses "
                              f"({', '.join(model.fusion.modalities)})")
        device = next(model.parameters()).device
        self.device = device
        self.windows = sample.ecg_windows().to(device) if self.has["ecg"] else None  # (n_w, L, W)
        self.lead_mask = (torch.as_tensor(sample.ecg_mask, dtype=torch.bool, device=device)
                          if self.has["ecg"] else None)  # (L,)
        self.image = sample.cxr.to(device).unsqueeze(0) if self.has["cxr"] else None  # (1, 1, H, W)
        self.n_windows = self.windows.shape[0] if self.windows is not None else 1
        with torch.no_grad():
            self.ecg_features = self._encode_ecg(self.windows.unsqueeze(0))[0] if self.has["ecg"] else None  # (n_w, d)
            self.cxr_features = self.model.cxr_encoder(self.image)[0] if self.has["cxr"] else None  # (d,)

    # -- encoders ----------------------------------------------------------------------------------
    def _encode_ecg(self, windows: Tensor) -> Tensor:
        k, n_w, n_leads, w = windows.shape
        mask = self.lead_mask.unsqueeze(0).expand(k * n_w, -1)  # (K*n_w, L)
        f = self.model.ecg_encoder(windows.reshape(k * n_w, n_leads, w), mask)  # (K*n_w, d)
        return f.reshape(k, n_w, -1)  # (K, n_w, d)

    # -- fusion ------------------------------------------------------------------------------------
    def outputs(self, ecg_features: Tensor | None, cxr_features: Tensor | None, k: int) -> Any:
        """Window-level ``FusionOutput`` for ``K`` versions: features ``(K, n_w, d)`` / ``(K, d)``."""
        n_w = self.n_windows
        feats: dict[str, Tensor | None] = {"ecg": None, "cxr": None}
        present: dict[str, Tensor | None] = {"ecg": None, "cxr": None}
        if ecg_features is not None:
            feats["ecg"] = ecg_features.reshape(k * n_w, -1)  # (K*n_w, d)
        if cxr_features is not None:
            feats["cxr"] = cxr_features.repeat_interleave(n_w, dim=0)  # (K*n_w, d)
        for m in ("ecg", "cxr"):
            if feats[m] is not None:
                present[m] = torch.ones(k * n_w, dtype=torch.bool, device=self.device)
        return self.model.fusion(feats, present)

    def _pick(self, out: Any, modality: str | None, target: str, k: int) -> Tensor:
        if target not in TARGETS:
            raise ConfigError(f"unknown explanation target {target!r}; choose from {', '.join(TARGETS)}")
        s = out.score
        if target == "auto" and modality is not None:
            branch = (out.branch_scores or {}).get(modality)
            if branch is not None:
                s = branch
        if s.dim() == 2:  # k outputs: the output target's column
            if self.output is None:
                if s.shape[1] != 1:
                    raise ConfigError(f"the model has {s.shape[1]} outputs; choose an explanation target")
                s = s[:, 0]
            else:
                s = self.output.sign * s[:, self.output.output]
        return s.reshape(k, self.n_windows).mean(dim=1)  # (K,) record score = mean over windows

    def target_name(self, modality: str, target: str) -> str:
        """What ``target`` explains for ``modality``: ``branch:<m>`` or ``score``."""
        name = "score"
        if target == "auto":
            out = self.fused()
            if (out.branch_scores or {}).get(modality) is not None:
                name = f"branch:{modality}"
        return name if self.output is None else f"{name}[{self.output.name}]"

    def fused(self) -> Any:
        """Window-level output of the unperturbed record."""
        with torch.no_grad():
            ef = self.ecg_features.unsqueeze(0) if self.ecg_features is not None else None
            cf = self.cxr_features.unsqueeze(0) if self.cxr_features is not None else None
            return self.outputs(ef, cf, 1)

    def cxr_scores(self, images: Tensor, target: str = "auto") -> Tensor:
        """``(K, 1, H, W)`` normalised images -> ``(K,)`` scores (this record's ECG held fixed)."""
        if not self.has["cxr"]:
            raise ConfigError(f"record {self.sample.record_id}: the model has no X-ray input for it")
        k = images.shape[0]
        cf = self.model.cxr_encoder(images)  # (K, d)
        ef = self.ecg_features.unsqueeze(0).expand(k, -1, -1) if self.ecg_features is not None else None
        return self._pick(self.outputs(ef, cf, k), "cxr", target, k)

    def ecg_scores(self, windows: Tensor, target: str = "auto") -> Tensor:
        """``(K, n_w, L, W)`` window sets -> ``(K,)`` record scores (this record's X-ray held fixed)."""
        if not self.has["ecg"]:
            raise ConfigError(f"record {self.sample.record_id}: the model has no ECG input for it")
        k = windows.shape[0]
        ef = self._encode_ecg(windows)  # (K, n_w, d)
        cf = self.cxr_features.unsqueeze(0).expand(k, -1) if self.cxr_features is not None else None
        return self._pick(self.outputs(ef, cf, k), "ecg", target, k)

    def ecg_signal_scores(self, signals: Tensor, target: str = "auto") -> Tensor:
        """``(K, L, T)`` whole recordings -> ``(K,)`` record scores (cut into the evaluation windows)."""
        from .samples import windows_from_signal

        w = windows_from_signal(signals, self.sample.window_starts, self.sample.window_samples)
        return self.ecg_scores(w, target)


# --------------------------------------------------------------------------------------------------
# X-ray
# --------------------------------------------------------------------------------------------------
def _normalise(a: np.ndarray) -> np.ndarray:
    """Divide by the maximum (all zeros stay zeros)."""
    hi = float(np.max(a)) if a.size else 0.0
    return (a / hi).astype(np.float32) if hi > 0 else np.zeros_like(a, dtype=np.float32)


def _min_max(a: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by minimum and maximum, as pytorch-grad-cam shows CAMs (constant maps -> zeros)."""
    lo, hi = (float(np.min(a)), float(np.max(a))) if a.size else (0.0, 0.0)
    return ((a - lo) / (hi - lo)).astype(np.float32) if hi > lo else np.zeros_like(a, dtype=np.float32)


def cxr_layers(encoder: nn.Module, layer: Any = None) -> list[tuple[str, nn.Module]]:
    """``layer`` (None / ``"last"``, a stage index, a module name, or a sequence of them) -> the
    ``(name, module)`` pairs of the X-ray ``encoder`` that Grad-CAM hooks (encoders without
    ``feature_layer`` offer only their own ``gradcam_layer``)."""
    specs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not specs:
        specs = [None]
    out = []
    for spec in specs:
        if hasattr(encoder, "feature_layer"):
            out.append(encoder.feature_layer(spec))
        elif spec is None or spec == "last":
            out.append(("gradcam_layer", encoder.gradcam_layer))
        else:
            raise ConfigError(f"the X-ray encoder {type(encoder).__name__} names only its own Grad-CAM layer; "
                              f"cannot use layer {spec!r}")
    return out


def cxr_gradcam(scorer: RecordScorer, target: str = "auto", layer: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the X-ray (captum ``LayerGradCam``), by default on the encoder's ``gradcam_layer``.

    ``layer`` picks another depth (see :func:`cardiofusion.models.cxr.resolve_feature_layer`): a timm
    ``feature_info`` stage index (``-2``: the stride-16 stage, twice the grid of the last one), a module
    name, or a sequence of them -- then, as pytorch-grad-cam does with several target layers, each
    layer's map is upsampled and min-max scaled and the maps are averaged.

    Returns:
        ``(coarse, heatmap)``: the ReLU'd class-activation map on the (first) layer's grid ``(h, w)`` and
        the map on the input grid ``(H, W)`` min-max scaled to [0, 1] (all zeros when the map is
        constant, e.g. nothing in the image raises the score).
    """
    image = scorer.image.detach().clone()
    coarse, heats = None, []
    for _, module in cxr_layers(scorer.model.cxr_encoder, layer):
        gc = LayerGradCam(lambda x: scorer.cxr_scores(x, target), module)
        cam = gc.attribute(image, relu_attributions=True)  # (1, 1, h, w)
        up = LayerAttribution.interpolate(cam, tuple(image.shape[-2:]), interpolate_mode="bilinear")  # (1, 1, H, W)
        if coarse is None:
            coarse = cam[0, 0].detach().cpu().numpy().astype(np.float32)
        heats.append(_min_max(np.clip(up[0, 0].detach().cpu().numpy(), 0, None)))
    heat = heats[0] if len(heats) == 1 else _min_max(np.mean(heats, axis=0))
    return coarse, heat


def cxr_integrated_gradients(scorer: RecordScorer, target: str = "auto", n_steps: int = 32,
                             baseline: float = 0.0) -> np.ndarray:
    """|Integrated gradients| of the X-ray score (captum), ``(H, W)`` in [0, 1].

    The baseline is a constant image, ``baseline`` in normalised units (0: the normalisation mean grey).
    """
    ig = IntegratedGradients(lambda x: scorer.cxr_scores(x, target))
    image = scorer.image.detach().clone()
    attr = ig.attribute(image, baselines=torch.full_like(image, float(baseline)), n_steps=int(n_steps),
                        internal_batch_size=int(n_steps))  # (1, 1, H, W)
    return _normalise(np.abs(attr[0, 0].detach().cpu().numpy()))


# --------------------------------------------------------------------------------------------------
# ECG
# --------------------------------------------------------------------------------------------------
def stitch_windows(maps: np.ndarray, starts: np.ndarray, total: int) -> np.ndarray:
    """Per-window maps ``(n_w, L, W)`` -> one map ``(L, total)`` over the recording (overlaps averaged)."""
    _, n_leads, w = maps.shape  # (n_w, L, W)
    acc = np.zeros((n_leads, max(total, int(np.max(starts)) + w)), dtype=np.float64)
    cnt = np.zeros(acc.shape[1], dtype=np.float64)
    for i, s in enumerate(starts):
        acc[:, s:s + w] += maps[i]
        cnt[s:s + w] += 1
    return (acc[:, :total] / np.maximum(cnt[:total], 1)).astype(np.float32)


def ecg_gradcam(scorer: RecordScorer, target: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Per-lead 1D Grad-CAM from the ECG encoder's last CNN stage (captum ``LayerGradCam``).

    The shared per-lead CNN gives activations ``(n_w * L, C, T')``; each (window, lead) row gets its own
    channel weights (time-averaged gradients), so every lead has its own time map.

    Returns:
        ``(coarse, time_map)``: ``(n_w, L, T')`` raw maps and the recording-level map ``(L, T)``
        (linearly upsampled per window, windows stitched, scaled to [0, 1] by its maximum over all
        leads so leads stay comparable).
    """
    layer = scorer.model.ecg_encoder.gradcam_layer
    windows = scorer.windows.detach().clone()  # (n_w, L, W)
    n_w, n_leads, w = windows.shape
    gc = LayerGradCam(lambda x: scorer.ecg_scores(x.unsqueeze(0), target), layer)
    cam = gc.attribute(windows, relu_attributions=True)  # (n_w * L, 1, T')
    if cam.dim() != 3 or cam.shape[0] != n_w * n_leads:
        raise ConfigError(f"the ECG encoder's gradcam_layer must give (windows * leads, C, T') activations; "
                          f"Grad-CAM has shape {tuple(cam.shape)}")
    up = F.interpolate(cam, size=w, mode="linear", align_corners=False)  # (n_w * L, 1, W)
    coarse = cam.detach().cpu().numpy().reshape(n_w, n_leads, -1)
    per_window = up.detach().cpu().numpy().reshape(n_w, n_leads, w)
    total = scorer.sample.ecg_signal.shape[1]
    time_map = stitch_windows(np.clip(per_window, 0, None), scorer.sample.window_starts, total)
    time_map[~scorer.sample.ecg_mask] = 0.0
    return coarse, _normalise(time_map)


def ecg_integrated_gradients(scorer: RecordScorer, target: str = "auto", n_steps: int = 32,
                             smooth_s: float = 0.04) -> np.ndarray:
    """|Integrated gradients| of the ECG score over time, ``(L, T)`` in [0, 1].

    The baseline is a flat 0 mV recording; the absolute attributions are smoothed with a ``smooth_s``
    moving average (single samples are too fine to show) and stitched over the windows.
    """
    ig = IntegratedGradients(lambda x: scorer.ecg_scores(x, target))
    windows = scorer.windows.detach().clone().unsqueeze(0)  # (1, n_w, L, W)
    attr = ig.attribute(windows, baselines=torch.zeros_like(windows), n_steps=int(n_steps),
                        internal_batch_size=int(n_steps))  # (1, n_w, L, W)
    a = np.abs(attr[0].detach().cpu().numpy())  # (n_w, L, W)
    width = max(1, round(smooth_s * scorer.sample.fs))
    if width > 1:
        from scipy.ndimage import uniform_filter1d

        a = uniform_filter1d(a, width, axis=-1, mode="nearest")
    total = scorer.sample.ecg_signal.shape[1]
    time_map = stitch_windows(a, scorer.sample.window_starts, total)
    time_map[~scorer.sample.ecg_mask] = 0.0
    return _normalise(time_map)


def _full_attention(encoder: nn.Module, x: Tensor, lead_mask: Tensor) -> list[Tensor]:
    """Per-layer head-wise attention ``(B, heads, 1 + L, 1 + L)`` of an ``ECGResNetTransformer``.

    Follows the encoder's own ``return_attention`` pass (pre-norm layers, key padding mask for absent
    leads) but keeps every row, which attention rollout needs.
    """
    b = x.shape[0]
    tokens = encoder.lead_tokens(x, lead_mask) + encoder.lead_embedding(encoder.lead_index)  # (B, L, d)
    h = torch.cat([encoder.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1 + L, d)
    keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), lead_mask.bool()], dim=1)
    pad = ~keep  # (B, 1 + L)
    maps = []
    for layer in encoder.transformer.layers:
        hn = layer.norm1(h) if layer.norm_first else h
        _, w = layer.self_attn(hn, hn, hn, key_padding_mask=pad, need_weights=True,
                               average_attn_weights=False)  # (B, heads, 1 + L, 1 + L)
        maps.append(w)
        h = layer(h, src_key_padding_mask=pad)
    return maps


def lead_attention(scorer: RecordScorer, rollout: bool = False) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Lead importance from the class token's attention to the lead tokens.

    Default: the last Transformer layer's attention of the class token over the lead tokens, averaged
    over heads, renormalised over the present leads (the class token's weight on itself is left out)
    and averaged over the record's windows.  With ``rollout``: attention rollout (Abnar & Zuidema 2020)
    across layers -- each layer's head-averaged attention plus the identity (residual path),
    row-normalised, multiplied from the first layer to the last; the class-token row over the leads,
    renormalised.

    Returns:
        ``(importance (L,) summing to 1, raw (n_w, n_layers, heads, L))``, or ``(None, None)`` when the
        ECG encoder has no attention over leads.
    """
    enc = scorer.model.ecg_encoder
    if "return_attention" not in inspect.signature(enc.forward).parameters:
        return None, None
    windows, n_w = scorer.windows, scorer.windows.shape[0]
    mask = scorer.lead_mask.unsqueeze(0).expand(n_w, -1)  # (n_w, L)
    with torch.no_grad():
        _, raw = enc(windows, mask, return_attention=True)  # (n_w, n_layers, heads, L)
    present = mask.float()  # (n_w, L)
    if rollout:
        with torch.no_grad():
            maps = _full_attention(enc, windows, mask)
        n = maps[0].shape[-1]
        eye = torch.eye(n, device=windows.device)
        r = eye.expand(n_w, n, n)
        for w in maps:
            a = w.mean(dim=1) + eye  # (n_w, 1 + L, 1 + L), residual connection
            a = a / a.sum(dim=-1, keepdim=True)
            r = a @ r
        cls = r[:, 0, 1:] * present  # (n_w, L)
    else:
        cls = raw[:, -1].mean(dim=1) * present  # (n_w, L) last layer, head average
    cls = cls / cls.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    imp = cls.mean(dim=0).cpu().numpy().astype(np.float64)
    imp = imp / imp.sum() if imp.sum() > 0 else imp
    return imp, raw.cpu().numpy()


# --------------------------------------------------------------------------------------------------
# Explanation objects
# --------------------------------------------------------------------------------------------------
@dataclass
class CXRExplanation:
    """X-ray heat map.

    Attributes:
        image: ``(H, W)`` the model's input as grey levels 0-255.
        heatmap: ``(H, W)`` in [0, 1] on the input grid.
        coarse: the map on the hooked layer's grid (Grad-CAM) or None (integrated gradients).
        method: ``gradcam`` or ``ig``.
        target: the explained score (``branch:cxr`` or ``score``).
        target_score: its value for this record.
        layer: the hooked module(s) of the encoder (Grad-CAM), e.g. ``model.bn2``; None for IG.
    """

    image: np.ndarray
    heatmap: np.ndarray
    coarse: np.ndarray | None
    method: str
    target: str
    target_score: float
    layer: str | None = None


@dataclass
class ECGExplanation:
    """ECG heat map: lead importance x time importance.

    Attributes:
        signal: ``(L, T)`` mV; ``fs`` in Hz; ``leads`` the row names; ``lead_mask`` ``(L,)`` present leads.
        lead_importance: ``(L,)`` summing to 1 (attention, see ``lead_importance_source``).
        lead_importance_source: ``attention``, ``attention-rollout`` or ``gradcam-mass`` (encoders
            without attention: each lead's share of the time map).
        time_importance: ``(L, T)`` in [0, 1] (Grad-CAM or integrated gradients per lead).
        heatmap: ``(L, T)`` in [0, 1], ``lead_importance[l] * time_importance[l, t]`` rescaled.
        attention: raw class-token attention ``(n_w, n_layers, heads, L)`` or None.
        method, target, target_score: as for :class:`CXRExplanation`.
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    lead_mask: np.ndarray
    lead_importance: np.ndarray
    lead_importance_source: str
    time_importance: np.ndarray
    heatmap: np.ndarray
    attention: np.ndarray | None
    method: str
    target: str
    target_score: float


@dataclass
class Explanation:
    """Everything explained about one record.

    Attributes:
        record_id, patient_id, label: identifiers and the reference label (NaN when unknown).
        score, probability: the model's record-level ranking score and probability (k-output models: the
            output target's raw score and its class / label probability, None for regression).
        branch_scores: ``{"ecg": float | None, "cxr": float | None}`` record-level branch scores.
        fusion: the fusion head's name.
        cxr, ecg: the per-modality explanations (None when the record or model lacks the modality).
        output_target: the explained class / label / target of a k-output model (None: one output).
    """

    record_id: str
    patient_id: str
    label: float
    score: float
    probability: float
    branch_scores: dict[str, float | None]
    fusion: str
    cxr: CXRExplanation | None = None
    ecg: ECGExplanation | None = None
    output_target: OutputTarget | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (no arrays except the lead importance)."""
        d: dict[str, Any] = {"record_id": self.record_id, "patient_id": self.patient_id,
                             "label": None if np.isnan(self.label) else float(self.label) if self.output_target
                             is not None and self.output_target.kind == "regression" else int(self.label),
                             "score": self.score, "probability": self.probability,
                             "branch_scores": self.branch_scores, "fusion": self.fusion}
        if self.output_target is not None:
            d["output_target"] = self.output_target.to_dict()
        if self.cxr is not None:
            d["cxr"] = {"method": self.cxr.method, "target": self.cxr.target, "target_score": self.cxr.target_score}
            if self.cxr.layer is not None:
                d["cxr"]["layer"] = self.cxr.layer
                if self.cxr.coarse is not None and "+" not in self.cxr.layer:  # one layer: its grid
                    d["cxr"]["grid"] = list(self.cxr.coarse.shape)
        if self.ecg is not None:
            d["ecg"] = {"method": self.ecg.method, "target": self.ecg.target, "target_score": self.ecg.target_score,
                        "lead_importance_source": self.ecg.lead_importance_source,
                        "lead_importance": {lead: round(float(v), 5) for lead, v in
                                            zip(self.ecg.leads, self.ecg.lead_importance)}}
        return d


def _float(t: Tensor | None) -> float | None:
    if t is None:
        return None
    v = float(t.detach().float().mean())
    return None if np.isnan(v) else v


def _column(t: Tensor | None, target: OutputTarget | None, sign: bool = True) -> Tensor | None:
    if t is None or target is None or t.dim() < 2:
        return t
    return t[:, target.output] * (target.sign if sign else 1.0)


def explain_sample(model: nn.Module, sample: RecordSample, *, method: str = "gradcam", target: Any = "auto",
                   rollout: bool = False, ig_steps: int = 32,
                   modalities: tuple[str, ...] = ("ecg", "cxr"), cxr_layer: Any = None,
                   output: Any = None, task: Any = None) -> Explanation:
    """Explain one record (see :func:`cardiofusion.explain.explain_record` for the run-level entry).

    Args:
        target: ``auto`` (each modality's branch score where the head has one) or ``score`` (the fused
            score); for k-output models also a class / label / target (name or index), which is then the
            output target with ``auto`` scores.
        output: the output target of a k-output model (class name or index, label name, output index, or an
            :class:`OutputTarget`); default :func:`default_output_targets`' first.
        task: the model's task (:class:`cardiofusion.tasks.Task`, a mapping or a built-in name) to resolve
            names and defaults; without it outputs are addressed by index.
        cxr_layer: the X-ray Grad-CAM layer(s) (default: the encoder's last feature map; see
            :func:`cxr_gradcam`).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; choose from {', '.join(METHODS)}")
    if target not in TARGETS:
        if output is not None:
            raise ConfigError(f"unknown explanation target {target!r}; choose from {', '.join(TARGETS)}")
        output, target = target, "auto"
    model.eval()
    task = _task_of(task)
    n_outputs = int(getattr(getattr(model, "config", None), "num_outputs", 1) or 1)
    if task is not None and not task.is_binary and task.n_outputs != n_outputs:
        raise ConfigError(f"task {task.name!r} has {task.n_outputs} outputs, the model {n_outputs}")
    scorer = RecordScorer(model, sample)
    out = scorer.fused()
    chosen = None
    if output is not None:
        chosen = resolve_output_target(output, task, n_outputs)
    elif out.score.dim() == 2 and (task is None or not task.is_binary):
        probs = out.prob.detach().float().mean(dim=0).cpu().numpy()  # record probabilities, window mean
        found = default_output_targets(task, probs, out.score.shape[1])
        chosen = found[0] if found else None
    scorer.output = chosen
    fusion_name = getattr(getattr(model, "config", None), "fusion", type(model.fusion).__name__)
    probability = _float(out.prob)
    if chosen is not None:
        kind = task.kind if task is not None else "outputs"
        prob_col = None if kind in ("regression", "outputs") else _column(out.prob, OutputTarget(
            chosen.name, chosen.index, chosen.index, 1.0, kind), sign=False)
        probability = _float(prob_col)
    expl = Explanation(
        record_id=sample.record_id, patient_id=sample.patient_id, label=sample.label,
        score=_float(_column(out.score, chosen)), probability=probability,
        branch_scores={m: _float(_column((out.branch_scores or {}).get(m), chosen)) for m in ("ecg", "cxr")},
        fusion=str(fusion_name), output_target=chosen)
    if scorer.has["cxr"] and "cxr" in modalities:
        with torch.no_grad():
            value = float(scorer.cxr_scores(scorer.image, target)[0])
        layer_name = None
        if method == "gradcam":
            coarse, heat = cxr_gradcam(scorer, target, layer=cxr_layer)
            layer_name = "+".join(name for name, _ in cxr_layers(scorer.model.cxr_encoder, cxr_layer))
        else:
            coarse, heat = None, cxr_integrated_gradients(scorer, target, n_steps=ig_steps)
        expl.cxr = CXRExplanation(image=sample.cxr_grey(), heatmap=heat, coarse=coarse, method=method,
                                  target=scorer.target_name("cxr", target), target_score=value,
                                  layer=layer_name)
    if scorer.has["ecg"] and "ecg" in modalities:
        with torch.no_grad():
            value = float(scorer.ecg_scores(scorer.windows.unsqueeze(0), target)[0])
        if method == "gradcam":
            _, time_map = ecg_gradcam(scorer, target)
        else:
            time_map = ecg_integrated_gradients(scorer, target, n_steps=ig_steps)
        importance, attention = lead_attention(scorer, rollout=rollout)
        source = "attention-rollout" if rollout else "attention"
        if importance is None:
            mass = time_map.sum(axis=1).astype(np.float64)
            importance = mass / mass.sum() if mass.sum() > 0 else np.where(sample.ecg_mask, 1.0, 0.0) / max(
                1, int(sample.ecg_mask.sum()))
            source = "gradcam-mass" if method == "gradcam" else "ig-mass"
        product = importance[:, None].astype(np.float32) * time_map  # (L, T)
        expl.ecg = ECGExplanation(
            signal=sample.ecg_signal, fs=sample.fs, leads=sample.leads, lead_mask=sample.ecg_mask,
            lead_importance=importance, lead_importance_source=source, time_importance=time_map,
            heatmap=_normalise(product), attention=attention, method=method,
            target=scorer.target_name("ecg", target), target_score=value)
    return expl

