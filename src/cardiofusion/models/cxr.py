"""X-ray encoders: any timm image model by name, single-channel input, pooled features out.

``create_cxr_encoder(name)`` first looks ``name`` up in our registry (presets such as the paper's
``efficientnet_b0`` and the tiny test model ``cxr_tiny``); any other name is handed to timm as is, so
every timm model name works (``timm/`` prefixes are accepted too).
"""

from __future__ import annotations

import os

import timm
from torch import Tensor, nn

from ..errors import ConfigError
from .registry import register_cxr_encoder
from .weights import load_pretrained_file

__all__ = ["TimmCXREncoder", "resolve_gradcam_layer", "resolve_feature_layer"]


class TimmCXREncoder(nn.Module):
    """A timm model without its classifier: ``(B, in_chans, H, W) -> (B, out_dim)``.

    Args:
        model_name: any timm model name.
        pretrained: False (random init), ``"timm"`` (timm's own hub download, for online users) or
            the path of a local weights file (timm or lukemelas EfficientNet state dict; see
            :mod:`cardiofusion.models.weights`).
        in_chans: input channels (1 for X-rays; pretrained RGB stems are summed as timm does).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``, ``drop_path_rate``).

    Attributes:
        out_dim: the pooled feature width (``head_hidden_size`` or ``num_features`` of the timm model).
        gradcam_layer: the module producing the last feature map before pooling.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool | str | os.PathLike = False,
        in_chans: int = 1,
        **timm_kwargs,
    ):
        super().__init__()
        model_name = model_name.removeprefix("timm/")
        if not timm.is_model(model_name):
            raise ConfigError(f"unknown X-ray encoder {model_name!r}: not registered here and not a timm model")
        use_hub = pretrained == "timm" or pretrained is True
        self.model_name = model_name
        self.model = timm.create_model(
            model_name, pretrained=use_hub, in_chans=in_chans, num_classes=0, **timm_kwargs
        )
        if pretrained not in (False, None, "", True, "timm"):
            self.load_report = load_pretrained_file(self.model, pretrained)
        self.in_chans = in_chans
        # Pooled output width: timm's head_hidden_size where a pre-logits layer follows pooling
        # (MobileNetV3's conv_head), else num_features.
        self.out_dim = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The module whose output is the last feature map (e.g. EfficientNet's head conv + BN + act)."""
        return resolve_gradcam_layer(self.model)

    def feature_layer(self, spec: int | str | None = None) -> tuple[str, nn.Module]:
        """A feature-map module chosen by ``spec`` (for Grad-CAM at another depth); see
        :func:`resolve_feature_layer`.  Returns ``(name, module)``, the name relative to this encoder."""
        name, module = resolve_feature_layer(self.model, spec)
        return f"model.{name}", module

    def forward_features(self, x: Tensor) -> Tensor:
        """Unpooled feature map ``(B, C, h, w)``."""
        return self.model.forward_features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # (B, out_dim), pooled, no classifier


def resolve_gradcam_layer(model: nn.Module) -> nn.Module:
    """The last feature-map module of a timm model, found generically.

    EfficientNet-like models (``conv_head`` followed by ``bn2`` inside ``forward_features``) -> ``bn2``
    (its output is the activated head-conv map); otherwise the last ``feature_info`` module
    (``layer4`` for ResNets, the last block stage for MobileNets, ...).
    """
    # MobileNetV3 also has conv_head but applies it after pooling: only EfficientNet-style models qualify.
    if type(model).__name__ in {"EfficientNet", "EfficientNetFeatures"} and isinstance(
        getattr(model, "bn2", None), nn.Module
    ):
        return model.bn2
    stages = _stages(model)
    if stages:
        return model.get_submodule(stages[-1]["module"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"cannot find a convolution for Grad-CAM in {type(model).__name__}")
    return convs[-1]


def _stages(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if not isinstance(info, list):  # timm FeatureInfo objects
        info = list(getattr(info, "info", []))
    return [d for d in info if isinstance(d, dict) and d.get("module")]


def resolve_feature_layer(model: nn.Module, spec: int | str | None = None) -> tuple[str, nn.Module]:
    """The feature-map module of a timm model named by ``spec``, as ``(module name, module)``.

    ``spec``:

    * ``None`` / ``"last"``: the last feature map (:func:`resolve_gradcam_layer`; EfficientNet: ``bn2``);
    * an ``int`` (or a string of one): a stage of timm's ``feature_info``, Python-indexed, so ``-1`` is the
      deepest stage (stride 32 for EfficientNet) and ``-2`` the one before it (stride 16, twice the grid);
    * any other string: a module name of the timm model (``"blocks.5"``), as ``model.get_submodule``.

    Raises :class:`ConfigError` naming the stages that exist when ``spec`` matches none.
    """
    stages = _stages(model)
    listing = ", ".join(f"{i - len(stages)} = {d['module']} (stride {d.get('reduction', '?')})"
                        for i, d in enumerate(stages)) or "none"
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "last")):
        target = resolve_gradcam_layer(model)
        for name, module in model.named_modules():
            if module is target:
                return name, module
        return "last", target
    if isinstance(spec, str) and spec.strip().lstrip("+-").isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not -len(stages) <= spec < len(stages):
            raise ConfigError(f"X-ray Grad-CAM stage {spec} does not exist in {type(model).__name__}; "
                              f"stages: {listing}")
        name = stages[spec]["module"]
        return name, model.get_submodule(name)
    if isinstance(spec, str):
        name = spec.strip().removeprefix("model.")
        try:
            return name, model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"X-ray Grad-CAM layer {spec!r} is not a module of {type(model).__name__}; "
                              f"give a module name or a stage index ({listing})") from None
    raise ConfigError(f"X-ray Grad-CAM layer must be 'last', a stage index or a module name, got {spec!r}")


def _preset(name: str, timm_name: str, doc: str):
    @register_cxr_encoder(name)
    def build(pretrained: bool | str = False, in_chans: int = 1, **kw) -> TimmCXREncoder:
        return TimmCXREncoder(timm_name, pretrained=pretrained, in_chans=in_chans, **kw)

    build.__name__ = name
    build.__doc__ = doc
    return build


#: The paper's X-ray branch (EfficientNet-B0, ImageNet weights via ``pretrained``).
efficientnet_b0 = _preset("efficientnet_b0", "efficientnet_b0", "EfficientNet-B0 (the paper's X-ray encoder).")
#: Tiny, fast model for CPU tests and demos (timm mobilenetv3_small_050, 288-d features).
cxr_tiny = _preset("cxr_tiny", "mobilenetv3_small_050", "MobileNetV3-Small x0.5: tiny CPU/test X-ray encoder.")
