"""Raw files -> model inputs, exactly as the training data was made.

A training record went through two steps: the preprocessing cache decoded the raw file
(:func:`cardiofusion.transforms.decode.decode_ecg` / :func:`~cardiofusion.transforms.decode.decode_cxr`: resampling, lead
standardisation, baseline removal, cut to ``duration_s``, float16 storage; X-ray to an ``S x S`` uint8
square) and the data loader turned the cached arrays into evaluation inputs
(:func:`cardiofusion.transforms.preprocess.ecg_eval_windows`, :func:`~cardiofusion.transforms.preprocess.cxr_eval_transform`).
Prediction calls the same functions with the settings the bundle carries, so a file scores exactly as
its cached copy did during validation (tested).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..transforms.decode import CacheConfig, decode_cxr, decode_ecg, standardize_ecg_record
from ..transforms.preprocess import PreprocessConfig, cxr_eval_transform, ecg_eval_windows
from ..records import CANONICAL_LEADS, CXRImage, ECGRecord


@dataclass
class ReaderDefaults:
    """Reader options for headerless ECG files (CSV, NumPy, HDF5) when the caller gives none: those of
    the training export (the manifest's ``fs``/``units``/``resolution_uv`` when they were uniform)."""

    fs: float | None = None
    units: str | None = None
    resolution_uv: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"fs": self.fs, "units": self.units, "resolution_uv": self.resolution_uv}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ReaderDefaults:
        d = d or {}
        return cls(fs=d.get("fs"), units=d.get("units"), resolution_uv=d.get("resolution_uv"))


@dataclass
class PreparedECG:
    """One ECG as model inputs: ``windows`` ``(n_windows, L, W)`` float32, ``lead_mask`` ``(L,)`` bool."""

    windows: np.ndarray
    lead_mask: np.ndarray
    n_samples: int
    signal: np.ndarray  # (L, T) float32 mV at the model's fs (the cached row, for explanations)
    warnings: list[str] = field(default_factory=list)


@dataclass
class PreparedCXR:
    """One X-ray as model input: ``image`` ``(1, H, W)`` float32 normalised; ``square`` the cached
    ``(S, S)`` uint8 image (for overlays)."""

    image: torch.Tensor
    square: np.ndarray
    warnings: list[str] = field(default_factory=list)


def prepare_ecg(source: str | os.PathLike | ECGRecord, decode: CacheConfig, preprocess: PreprocessConfig,
                defaults: ReaderDefaults | None = None, *, fs: float | None = None, units: str | None = None,
                resolution_uv: float | None = None) -> PreparedECG:
    """An ECG file (any supported format) or :class:`ECGRecord` -> evaluation windows.

    ``fs``/``units``/``resolution_uv`` apply to headerless files only (default: the training export's).
    Raises :class:`~cardiofusion.errors.ReadError` for an unusable file.
    """
    defaults = defaults or ReaderDefaults()
    if isinstance(source, ECGRecord):
        signal16, mask12, n_valid = standardize_ecg_record(source, decode)
    else:
        signal16, mask12, n_valid, _ = decode_ecg(
            str(source), decode, fs=fs if fs is not None else defaults.fs,
            units=units if units is not None else defaults.units,
            resolution_uv=resolution_uv if resolution_uv is not None else defaults.resolution_uv)
    rows = [CANONICAL_LEADS.index(lead) for lead in preprocess.leads]
    signal = np.asarray(signal16, dtype=np.float32)[rows]  # (L, T), as CohortDataset reads the cache
    mask = np.asarray(mask12, dtype=bool)[rows]  # (L,)
    windows = ecg_eval_windows(signal, n_valid, preprocess)  # (n_w, L, W)
    warnings: list[str] = []
    absent = [lead for lead, ok in zip(preprocess.leads, mask) if not ok]
    if absent:
        warnings.append(f"ECG leads {', '.join(absent)} absent from the file (scored as missing)")
    if n_valid < preprocess.window_samples:
        warnings.append(f"ECG shorter than the model's {preprocess.window_s:g} s window "
                        f"({n_valid / decode.fs:.2f} s): zero-padded")
    return PreparedECG(windows=windows, lead_mask=mask, n_samples=int(n_valid), signal=signal, warnings=warnings)


def prepare_cxr(source: str | os.PathLike | CXRImage, decode: CacheConfig, preprocess: PreprocessConfig) -> PreparedCXR:
    """An X-ray file (DICOM, PNG, JPEG) or :class:`CXRImage` -> the normalised model input."""
    if isinstance(source, CXRImage):
        from ..io.cxr import resize_square

        square = np.array(resize_square(source.pixels, decode.image_size, mode=decode.image_mode))
    else:
        square = np.array(decode_cxr(str(source), decode))  # (S, S) uint8 (a writable copy)
    image = cxr_eval_transform(square, preprocess)  # (1, H, W)
    return PreparedCXR(image=image, square=square)


__all__ = ["PreparedCXR", "PreparedECG", "ReaderDefaults", "prepare_cxr", "prepare_ecg"]
