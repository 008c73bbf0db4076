"""Models: ECG and X-ray encoders and fusion heads, each built by name from a registry.

``import cardiofusion.models`` first makes torchvision importable on CPU-only machines
(:func:`cardiofusion._compat.ensure_torchvision`), since timm imports it.
"""

from __future__ import annotations

from .._compat import ensure_torchvision

ensure_torchvision()

from . import cxr as _cxr  # noqa: F401  (registers X-ray presets)
from . import ecg as _ecg  # noqa: F401  (registers ECG encoders)
from .cxr import TimmCXREncoder, resolve_gradcam_layer
from .ecg import ECGResNetTransformer, ResNet1d
from .fusion import (
    LINKS,
    CooperativeFusion,
    CumulativeLinear,
    EarlyFusion,
    FusionHead,
    FusionOutput,
    LateFusion,
    SingleModalityFusion,
)
from .model import (
    ModelConfig,
    MultimodalModel,
    build_model,
    create_cxr_encoder,
    create_ecg_encoder,
    create_fusion,
    fusion_uses_rho,
    list_cxr_encoders,
    list_ecg_encoders,
    list_fusions,
)
from .registry import register_cxr_encoder, register_ecg_encoder, register_fusion
from .weights import (
    convert_lukemelas_efficientnet,
    load_pretrained_file,
    read_state_dict,
)

__all__ = [
    "LINKS",
    "CooperativeFusion",
    "CumulativeLinear",
    "ECGResNetTransformer",
    "EarlyFusion",
    "FusionHead",
    "FusionOutput",
    "LateFusion",
    "ModelConfig",
    "MultimodalModel",
    "ResNet1d",
    "SingleModalityFusion",
    "TimmCXREncoder",
    "build_model",
    "convert_lukemelas_efficientnet",
    "create_cxr_encoder",
    "create_ecg_encoder",
    "create_fusion",
    "fusion_uses_rho",
    "list_cxr_encoders",
    "list_ecg_encoders",
    "list_fusions",
    "load_pretrained_file",
    "read_state_dict",
    "register_cxr_encoder",
    "register_ecg_encoder",
    "register_fusion",
    "resolve_gradcam_layer",
]
