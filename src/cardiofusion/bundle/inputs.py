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


#: Extensions the bundle's :class:`ReaderDefaults` apply to: the headerless text exports the defaults
#: describe (the training export's CSV files).  NumPy and HDF5 files keep their reader's own rule (the
#: file's ``fs``/``units`` entries or attributes, else 500 Hz and mV), the same as ``cardiofusion inspect``.
DEFAULTS_APPLY_TO = (".csv", ".tsv", ".txt")


@dataclass
class ReaderDefaults:
    """Reader options for headerless ECG text files (CSV) when the caller gives none: those of the
    training export (the manifest's ``fs``/``units``/``resolution_uv`` when they were uniform).

    They apply only to :data:`DEFAULTS_APPLY_TO` files, and ``units``/``resolution_uv`` only when the
    CSV header states no units (``I (mV)``): a file that says what it holds is read as ``inspect``
    reads it.  Options the caller gives always apply.
    """

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
    warnings: list[str] = []  # the signal-quality check's flags first
    if isinstance(source, ECGRecord):
        signal16, mask12, n_valid = standardize_ecg_record(source, decode, warnings=warnings)
    else:
        options = reader_options(source, defaults, fs=fs, units=units, resolution_uv=resolution_uv)
        signal16, mask12, n_valid, _ = decode_ecg(str(source), decode, warnings=warnings, **options)
    rows = [CANONICAL_LEADS.index(lead) for lead in preprocess.leads]
    signal = np.asarray(signal16, dtype=np.float32)[rows]  # (L, T), as CohortDataset reads the cache
    mask = np.asarray(mask12, dtype=bool)[rows]  # (L,)
    windows = ecg_eval_windows(signal, n_valid, preprocess)  # (n_w, L, W)
    warnings = [f"ECG {w}" if not w.startswith("ECG") else w for w in warnings]
    absent = [lead for lead, ok in zip(preprocess.leads, mask) if not ok]
    if absent:
        warnings.append(f"ECG leads {', '.join(absent)} absent from the file (scored as missing)")
    if n_valid < preprocess.window_samples:
        warnings.append(f"ECG shorter than the model's {preprocess.window_s:g} s window "
                        f"({n_valid / decode.fs:.2f} s): zero-padded")
    return PreparedECG(windows=windows, lead_mask=mask, n_samples=int(n_valid), signal=signal, warnings=warnings)


def prepare_cxr(source: str | os.PathLike | CXRImage, decode: CacheConfig, preprocess: PreprocessConfig) -> PreparedCXR:
    """An X-ray file (DICOM, PNG, JPEG) or :class:`CXRImage` -> the normalised model input."""
    warnings: list[str] = []
    if isinstance(source, CXRImage):
        from ..io.cxr import resize_square

        square = np.array(resize_square(source.pixels, decode.image_size, mode=decode.image_mode))
        warnings.extend(str(w) for w in source.meta.get("warnings", ()))
    else:
        square = np.array(decode_cxr(str(source), decode, warnings=warnings))  # (S, S) uint8 (a writable copy)
    image = cxr_eval_transform(square, preprocess)  # (1, H, W)
    return PreparedCXR(image=image, square=square, warnings=warnings)


def _csv_states_units(path: str | os.PathLike) -> bool:
    """Whether a CSV's header line names units for its columns (``I (mV)``, ``V1 [uV]``...)."""
    from ..io._ecg_formats import _HEADER_UNIT

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline(65536)
    except OSError:
        return False  # the reader reports the problem
    cells = [c.strip().strip('"') for c in first.replace(";", ",").replace("\t", ",").split(",")]
    return any(_HEADER_UNIT.search(c) for c in cells if c)


def reader_options(source: str | os.PathLike, defaults: ReaderDefaults, *, fs: float | None = None,
                   units: str | None = None, resolution_uv: float | None = None) -> dict[str, Any]:
    """The ``fs``/``units``/``resolution_uv`` to read one ECG file with: the caller's, else the bundle's
    defaults where they apply (see :class:`ReaderDefaults`), else none (the reader's own defaults)."""
    given = {"fs": fs, "units": units, "resolution_uv": resolution_uv}
    if str(source).lower().endswith(DEFAULTS_APPLY_TO):
        states_units = units is None and defaults.units is not None and _csv_states_units(source)
        for key, value in defaults.to_dict().items():
            if given[key] is None and not (states_units and key in ("units", "resolution_uv")):
                given[key] = value
    return {k: v for k, v in given.items() if v is not None}


__all__ = ["DEFAULTS_APPLY_TO", "PreparedCXR", "PreparedECG", "ReaderDefaults", "prepare_cxr", "prepare_ecg",
           "reader_options"]
