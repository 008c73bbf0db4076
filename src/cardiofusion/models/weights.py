"""Load ImageNet weights for a timm image model from a LOCAL file (offline hospitals).

Accepted files (``.pth``/``.pt``/``.bin`` via ``torch.load``, or ``.safetensors``):

- a timm state dict, bare or wrapped under ``state_dict`` / ``model`` / ``model_state_dict``, keys
  optionally prefixed with ``module.`` (DDP) or ``model.``;
- a lukemelas-style EfficientNet state dict (``efficientnet_pytorch`` / ``efficientnet_lite_pytorch``:
  ``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``, ``_conv_head``, ``_bn1``, ``_fc``), converted
  to timm's names block by block (lukemelas numbers blocks 0..N-1 flat; timm groups them in stages).

The first convolution is adapted to the model's input channels as timm does (``adapt_input_conv``:
RGB weights summed for one channel); the classifier is dropped unless the model has one of the same
shape.  Any real weight of the model left unloaded, or any weight of the file that found no place,
raises :class:`ConfigError` naming them: a silently half-loaded network is the worst outcome.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import Tensor, nn

from ..errors import ConfigError, ReadError
from ..io.torchfile import read_torch_file

__all__ = ["convert_lukemelas_efficientnet", "load_pretrained_file", "read_state_dict"]


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``path`` (safetensors or torch pickle), unwrapping common containers."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(path, "weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 -- any failure to parse is a bad input file
            raise ReadError(path, f"cannot read weights: {type(e).__name__}: {e}") from None
    else:  # checked to be a file torch.save wrote before anything is unpickled
        sd = read_torch_file(path, what="weights file", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise ReadError(path, "not a state dict (expected a mapping of parameter names to tensors)")
    return dict(sd)


def _is_lukemelas(sd: dict[str, Tensor]) -> bool:
    return "_conv_stem.weight" in sd or any(k.startswith("_blocks.") for k in sd)


#: lukemelas block submodule -> timm submodule, per timm block type.
_DS_MAP = {  # timm DepthwiseSeparableConv (expand ratio 1)
    "_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
    "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2",
}
_IR_MAP = {  # timm InvertedResidual
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_TOP_MAP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_lukemelas_efficientnet(sd: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename a lukemelas-style EfficientNet state dict to the names of timm ``model``.

    Args:
        sd: the lukemelas state dict (flat block numbering ``_blocks.N``).
        model: the timm EfficientNet it is meant for (its ``blocks`` give the stage layout).
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError(f"lukemelas EfficientNet weights need a timm EfficientNet, not {type(model).__name__}")
    flat = [(f"blocks.{s}.{i}", blk) for s, stage in enumerate(blocks) for i, blk in enumerate(stage)]
    n_file = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("_blocks.")), default=-1)
    if n_file != len(flat):
        raise ConfigError(
            f"lukemelas weights have {n_file} blocks but {type(model).__name__} has {len(flat)}: "
            "wrong architecture for this file"
        )
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            prefix, blk = flat[int(m.group(1))]
            table = _IR_MAP if type(blk).__name__ == "InvertedResidual" else _DS_MAP
            sub = table.get(m.group(2))
            if sub is None:
                raise ConfigError(f"no timm counterpart for lukemelas weight {key!r}")
            out[f"{prefix}.{sub}.{m.group(3)}"] = value
            continue
        head, _, rest = key.partition(".")
        if head not in _TOP_MAP:
            raise ConfigError(f"no timm counterpart for lukemelas weight {key!r}")
        out[f"{_TOP_MAP[head]}.{rest}"] = value
    return out


def _strip_prefixes(sd: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    for prefix in ("module.", "model.", "net.", "backbone."):
        if not (set(sd) & expected) and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_pretrained_file(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load ImageNet weights from a local ``path`` into timm ``model`` (strict; see module doc).

    Returns:
        ``{"adapted": [...], "dropped": [...]}``: first-conv keys adapted to the input channels and
        classifier keys dropped because the model has no (or a differently sized) classifier.
    """
    from timm.models import adapt_input_conv

    sd = read_state_dict(path)
    target = model.state_dict()
    if _is_lukemelas(sd):
        sd = convert_lukemelas_efficientnet(sd, model)
    sd = _strip_prefixes(sd, set(target))
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    adapted, dropped = [], []

    first = cfg.get("first_conv")
    for conv in [first] if isinstance(first, str) else list(first or []):
        key = f"{conv}.weight"
        if key in sd and key in target and sd[key].shape != target[key].shape:
            sd[key] = adapt_input_conv(target[key].shape[1], sd[key])
            adapted.append(key)

    classifier = cfg.get("classifier")
    for head in [classifier] if isinstance(classifier, str) else list(classifier or []):
        for suffix in ("weight", "bias"):
            key = f"{head}.{suffix}"
            if key in sd and (key not in target or target[key].shape != sd[key].shape):
                del sd[key]
                dropped.append(key)

    missing = sorted(k for k in target if k not in sd)
    unexpected = sorted(k for k in sd if k not in target)
    wrong = sorted(k for k in sd if k in target and sd[k].shape != target[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} model weights not in the file: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} file weights with no place in the model: {show(unexpected)}")
        if wrong:
            parts.append(f"{len(wrong)} weights of the wrong shape: {show(wrong)}")
        raise ConfigError(
            f"{path}: weights do not fit {type(model).__name__} "
            f"({getattr(model, 'default_cfg', {}).get('architecture', '?')}): " + "; ".join(parts)
        )
    model.load_state_dict(sd, strict=True)
    return {"adapted": adapted, "dropped": dropped}
