"""Model-side preprocessing: what happens between the cache and a model's input tensors.

The cache (``cardiofusion.cache``) stores every ECG as ``(12, T)`` millivolts at a fixed rate and every
X-ray as an ``S x S`` uint8 image.  :class:`PreprocessConfig` says how a model sees them, and the same
object drives training augmentation, deterministic evaluation and (later) prediction, so it is saved
with every run (``RUN/config.yaml``) and travels with the weights.

The paper's recipe (``docs/spec.md`` section 2) is the default:

* ECG: a random ``window_s`` = 2 s window per training iteration (``(12, 1000)`` at 500 Hz) with uniform
  noise in ``+-noise_mv`` = 0.1 mV; evaluation is deterministic: every window of ``window_s`` taken with
  stride ``eval_stride_s`` from the start of the valid part of the recording, plus one window aligned to
  its end when the stride does not land there, so the windows cover the whole recording; a record's
  score is the mean of its window scores.
* X-ray: resized to ``image_size`` = 224; training adds a random rotation in ``+-rotation_deg`` = 10
  degrees (bilinear, black corners) and, with probability ``autocontrast_p`` = 0.25, autocontrast
  (grey levels stretched to the full 0-255 range, as ``torchvision.transforms.functional.autocontrast``).
  Optional, off by default: a random zoom in ``1 +- scale_range`` and shift in ``+-translate_frac`` of the
  side per axis, in the same affine warp as the rotation (torchvision's ``RandomAffine`` without shear).
  There is deliberately no horizontal flip: the heart's side is part of the picture.
  Normalisation is the single-channel version of ImageNet's: ``(x / 255 - image_mean) / image_std``
  with mean 0.449 and std 0.226, the averages of ImageNet's per-channel RGB statistics
  (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225) -- what timm uses when a pretrained RGB stem is
  collapsed to one input channel.

Every random function takes a :class:`numpy.random.Generator`, so a sample is a function of its seed.
Everything here is plain NumPy / PyTorch: no torchvision, no Lightning.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..configfile import reject_unknown_fields
from ..errors import ConfigError
from ..records import CANONICAL_LEADS

#: Single-channel ImageNet statistics (means of the RGB channel statistics).
IMAGENET_GRAY_MEAN = 0.449
IMAGENET_GRAY_STD = 0.226


@dataclass
class PreprocessConfig:
    """How cached exams become model inputs (saved with every run; used by training and prediction).

    Attributes:
        fs: ECG sampling rate the model expects, Hz; the cache must have been built at this rate.
        leads: ECG leads fed to the model, a subsequence of the canonical 12 in canonical order
            (e.g. the six limb leads of a handheld device).
        window_s: ECG window length in seconds (training crops, evaluation windows).
        eval_stride_s: stride between evaluation windows in seconds (``window_s``: adjacent windows).
        noise_mv: half-width of the uniform noise added to ECG windows during training, mV (0: none).
        image_size: side of the square X-ray fed to the model, pixels.
        image_mean: normalisation mean on the 0-1 scale (single-channel ImageNet: 0.449).
        image_std: normalisation standard deviation on the 0-1 scale (single-channel ImageNet: 0.226).
        rotation_deg: training rotations are drawn uniformly in ``+-rotation_deg`` degrees (0: none).
        autocontrast_p: probability of autocontrast during training.
        scale_range: training zoom drawn uniformly in ``[1 - scale_range, 1 + scale_range]`` (0: none; < 1).
        translate_frac: training shift drawn uniformly in ``+-translate_frac`` of the image side, per axis
            (0: none; < 0.5).
    """

    fs: float = 500.0
    leads: tuple[str, ...] = field(default_factory=lambda: tuple(CANONICAL_LEADS))
    window_s: float = 2.0
    eval_stride_s: float = 2.0
    noise_mv: float = 0.1
    image_size: int = 224
    image_mean: float = IMAGENET_GRAY_MEAN
    image_std: float = IMAGENET_GRAY_STD
    rotation_deg: float = 10.0
    autocontrast_p: float = 0.25
    scale_range: float = 0.0
    translate_frac: float = 0.0

    def __post_init__(self) -> None:
        self.leads = tuple(str(lead) for lead in self.leads)
        unknown = [lead for lead in self.leads if lead not in CANONICAL_LEADS]
        if unknown:
            raise ConfigError(f"unknown ECG lead(s) {', '.join(unknown)}; known: {', '.join(CANONICAL_LEADS)}")
        if not self.leads:
            raise ConfigError("at least one ECG lead is needed")
        order = [CANONICAL_LEADS.index(lead) for lead in self.leads]
        if order != sorted(set(order)):
            raise ConfigError(f"leads must be distinct and in canonical order ({', '.join(CANONICAL_LEADS)})")
        for name in ("fs", "window_s", "eval_stride_s", "image_std"):
            if not (float(getattr(self, name)) > 0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.noise_mv < 0 or self.rotation_deg < 0:
            raise ConfigError("noise_mv and rotation_deg must not be negative")
        if not 0 <= self.autocontrast_p <= 1:
            raise ConfigError(f"autocontrast_p must be in [0, 1], got {self.autocontrast_p}")
        if not 0 <= self.scale_range < 1:
            raise ConfigError(f"scale_range must be in [0, 1), got {self.scale_range}")
        if not 0 <= self.translate_frac < 0.5:
            raise ConfigError(f"translate_frac must be in [0, 0.5), got {self.translate_frac}")
        if int(self.image_size) != self.image_size or self.image_size < 1:
            raise ConfigError(f"image_size must be a positive integer, got {self.image_size}")
        self.image_size = int(self.image_size)
        for name in ("fs", "window_s", "eval_stride_s", "noise_mv", "image_mean", "image_std", "rotation_deg",
                     "autocontrast_p", "scale_range", "translate_frac"):
            setattr(self, name, float(getattr(self, name)))

    @property
    def window_samples(self) -> int:
        """ECG window length in samples."""
        return max(1, round(self.fs * self.window_s))

    @property
    def stride_samples(self) -> int:
        """Stride between evaluation windows in samples."""
        return max(1, round(self.fs * self.eval_stride_s))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["leads"] = list(self.leads)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        reject_unknown_fields(cls, values, "preprocessing")
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# ECG
# --------------------------------------------------------------------------------------------------
def _fit_length(signal: np.ndarray, n_valid: int, start: int, length: int) -> np.ndarray:
    """``signal[:, start:start + length]`` restricted to the valid part, zero-padded at the end."""
    out = np.zeros((signal.shape[0], length), dtype=np.float32)
    stop = min(start + length, n_valid)
    if stop > start:
        out[:, : stop - start] = signal[:, start:stop]
    return out


def window_starts(n_valid: int, window: int, stride: int) -> np.ndarray:
    """Start samples of the evaluation windows over ``n_valid`` samples.

    Windows start at ``0, stride, 2 * stride, ...`` while they fit; when the last of them does not end
    at ``n_valid`` one more window aligned to the end is added, so every sample is covered.  A record
    shorter than one window gets a single window at 0 (zero-padded).
    """
    if n_valid <= window:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, n_valid - window + 1, stride))
    if starts[-1] + window < n_valid:
        starts.append(n_valid - window)
    return np.asarray(starts, dtype=np.int64)


def ecg_train_window(signal: np.ndarray, n_valid: int, config: PreprocessConfig, rng: np.random.Generator,
                     lead_mask: np.ndarray | None = None) -> np.ndarray:
    """A random training window ``(L, window_samples)`` float32 with uniform noise.

    Args:
        signal: ``(L, T)`` ECG in mV (the cache row, leads already selected).
        n_valid: samples of ``signal`` that hold the recording (the rest is padding).
        config: window length and noise amplitude.
        rng: the random source (start sample, noise).
        lead_mask: ``(L,)`` leads really present; absent leads stay all-zero rows (no noise).
    """
    window = config.window_samples
    n_valid = int(min(n_valid, signal.shape[1]))
    start = int(rng.integers(0, max(n_valid - window, 0) + 1))
    out = _fit_length(signal, n_valid, start, window)  # (L, W)
    if config.noise_mv > 0:
        noise = rng.uniform(-config.noise_mv, config.noise_mv, size=out.shape).astype(np.float32)
        if lead_mask is not None:
            noise *= np.asarray(lead_mask, dtype=np.float32)[:, None]
        out += noise
    return out


def ecg_eval_windows(signal: np.ndarray, n_valid: int, config: PreprocessConfig) -> np.ndarray:
    """All evaluation windows of a recording, ``(n_windows, L, window_samples)`` float32 (deterministic)."""
    window = config.window_samples
    n_valid = int(min(n_valid, signal.shape[1]))
    starts = window_starts(n_valid, window, config.stride_samples)
    return np.stack([_fit_length(signal, n_valid, int(s), window) for s in starts])  # (n_w, L, W)


# --------------------------------------------------------------------------------------------------
# X-ray
# --------------------------------------------------------------------------------------------------
def _as_float_image(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A 2-D uint8 image as a ``(1, H, W)`` float32 tensor on the 0-255 scale."""
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {tuple(t.shape)}")
    return t.to(torch.float32).unsqueeze(0)  # (1, H, W)


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a ``(1, H, W)`` image to ``(1, size, size)``."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image.unsqueeze(0), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).squeeze(0)  # (1, size, size)


def rotate_image(image: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a ``(1, H, W)`` image about its centre (bilinear; uncovered corners become 0)."""
    return affine_image(image, degrees)


def affine_image(image: torch.Tensor, degrees: float = 0.0, scale: float = 1.0,
                 shift: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """Rotate a ``(1, H, W)`` image about its centre by ``degrees`` (counter-clockwise), zoom it by ``scale``
    (> 1: the content looks larger) and shift it by ``shift = (x, y)`` fractions of its width / height (right,
    down); bilinear, uncovered borders become 0.  The identity returns the image itself."""
    if degrees == 0 and scale == 1 and shift == (0.0, 0.0):
        return image
    a = math.radians(degrees)
    # affine_grid maps output to input coordinates (-1..1): q = A p + b with A = R / scale, b = -A t
    A = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64) / scale
    t = torch.tensor([2.0 * shift[0], 2.0 * shift[1]], dtype=torch.float64)
    theta = torch.cat([A, (-A @ t).unsqueeze(1)], dim=1).to(image.dtype).unsqueeze(0)  # (1, 2, 3)
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)  # (1, H, W, 2)
    return F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).squeeze(0)


def autocontrast(image: torch.Tensor) -> torch.Tensor:
    """Stretch grey levels of a 0-255 image linearly to the full 0-255 range (constant images unchanged)."""
    lo, hi = image.min(), image.max()
    if not hi > lo:
        return image
    return (image - lo) * (255.0 / (hi - lo))


def normalize_image(image: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """``(x / 255 - image_mean) / image_std``."""
    return (image / 255.0 - config.image_mean) / config.image_std


def cxr_train_transform(image: np.ndarray | torch.Tensor, config: PreprocessConfig,
                        rng: np.random.Generator) -> torch.Tensor:
    """Resize, random rotation (zoom, shift), random autocontrast, normalise: uint8 ``(S, S)`` -> float32
    ``(1, H, W)``."""
    x = resize_image(_as_float_image(image), config.image_size)
    angle = float(rng.uniform(-config.rotation_deg, config.rotation_deg)) if config.rotation_deg > 0 else 0.0
    contrast = bool(rng.random() < config.autocontrast_p)
    # drawn after the rotation and contrast draws, and only when on: the default stream is unchanged
    scale = float(rng.uniform(1 - config.scale_range, 1 + config.scale_range)) if config.scale_range > 0 else 1.0
    t = config.translate_frac
    shift = ((float(rng.uniform(-t, t)), float(rng.uniform(-t, t))) if t > 0 else (0.0, 0.0))
    x = affine_image(x, angle, scale, shift)
    if contrast:
        x = autocontrast(x)
    return normalize_image(x.clamp_(0.0, 255.0), config).contiguous()


def cxr_eval_transform(image: np.ndarray | torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Resize and normalise (deterministic): uint8 ``(S, S)`` -> float32 ``(1, H, W)``."""
    x = resize_image(_as_float_image(image), config.image_size)
    return normalize_image(x.clamp_(0.0, 255.0), config).contiguous()


__all__ = [
    "IMAGENET_GRAY_MEAN",
    "IMAGENET_GRAY_STD",
    "PreprocessConfig",
    "affine_image",
    "autocontrast",
    "cxr_eval_transform",
    "cxr_train_transform",
    "ecg_eval_windows",
    "ecg_train_window",
    "normalize_image",
    "resize_image",
    "rotate_image",
    "window_starts",
]
