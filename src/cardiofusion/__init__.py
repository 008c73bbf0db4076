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
    "load",
]


def __getattr__(name: str):
    """Lazy attributes: ``cardiofusion.load`` (model bundles) imports torch only when first used."""
    if name == "load":
        from .bundle import load

        return load
    raise AttributeError(f"module 'cardiofusion' has no attribute {name!r}")
