"""cardiofusion: multimodal 12-lead ECG + chest X-ray screening for structural heart disease."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CardiofusionError, ConfigError, ReadError
from .records import CANONICAL_LEADS, LIMB_LEADS, CXRImage, ECGRecord

__all__ = [
    "__version__",
    "CardiofusionError",
    "ConfigError",
    "ReadError",
    "CANONICAL_LEADS",
    "LIMB_LEADS",
    "CXRImage",
    "ECGRecord",
]
