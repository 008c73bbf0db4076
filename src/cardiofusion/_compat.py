"""The one place that works around a broken torchvision install (documented in the README).

Why: torchvision 0.28.0 is the only release that pins torch 2.13.0, and PyPI only has its CUDA build.
On a CPU-only torch its compiled extension (``torchvision._C``) cannot load, and ``import torchvision``
then dies in ``torchvision/_meta_registrations.py``, which registers fake kernels for the operators
``torchvision::nms`` and ``torchvision::qnms`` *unconditionally* -- operators that only the missing
extension defines.  Everything that imports torchvision (timm, Lightning, torchmetrics,
pytorch-grad-cam) breaks with it.

What: :func:`ensure_torchvision` first imports torchvision normally.  Only if that fails with exactly
this error does it declare the two operator schemas (no kernels) and import again.  Image
classification models use none of the compiled detection ops, so nothing we run changes; calling
``torchvision.ops.nms`` on such a machine still raises, as it would anyway.  Where torchvision loads
normally (a user's CUDA machine) this does nothing at all.
"""

from __future__ import annotations

import sys

#: torchvision operators given fake kernels at import time regardless of the compiled extension.
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_patched = False
_library = None  # keeps the torch.library.Library (and its definitions) alive


def ensure_torchvision() -> bool:
    """Make ``import torchvision`` work; returns True if the schema work-around was needed."""
    global _patched, _library
    if "torchvision" in sys.modules and not _patched:
        return False
    try:
        import torchvision  # noqa: F401

        return _patched
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    import torch

    _library = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not _op_exists(op):
            _library.define(schema)
    import torchvision  # noqa: F401,F811

    _patched = True
    return True


def _op_exists(op: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, op)
        return True
    except (AttributeError, RuntimeError):
        return False
