"""The ST-MEM-style ECG ViT and its masked-autoencoder objective (paper 003 stage 1).

The shared encoder checks (shape, gradients to every parameter, Grad-CAM layout) run for every registered
ECG encoder in test_models.py; here: masks, lead subsets, attention, flat leads, and the MAE's masking
and loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.models import ModelConfig, build_model, create_ecg_encoder
from cardiofusion.models.ecg_mae import ECGMaskedAutoencoder, masked_patch_loss, random_patch_mask
from cardiofusion.models.ecg_vit import ECGViT
from cardiofusion.records import CANONICAL_LEADS, LIMB_LEADS

T = 256  # 8 patches of 32 samples in the tiny configuration


def _tiny(**kw) -> ECGViT:
    torch.manual_seed(0)
    return create_ecg_encoder("ecg_vit_tiny", **kw)


def _mae(norm_target: bool = False, **kw) -> ECGMaskedAutoencoder:
    enc = _tiny(**kw)
    return ECGMaskedAutoencoder(enc, mask_ratio=0.75, decoder_width=16, decoder_depth=1, decoder_heads=2,
                                norm_target=norm_target)


# ---------------------------------------------------------------- encoder


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vit_attention_and_mask(pool):
    enc = _tiny(pool=pool).eval()
    x = torch.randn(3, 12, T)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 6:] = False  # limb leads only
    mask[1, [2, 5]] = False
    feat, att = enc(x, mask, return_attention=True)
    assert feat.shape == (3, enc.out_dim) and att.shape == (3, 2, 4, 12)  # (B, depth, heads, L)
    assert torch.all(att[~mask[:, None, None, :].expand_as(att)] == 0)
    assert torch.all(att[mask[:, None, None, :].expand_as(att)] > 0)
    if pool == "mean":  # every key belongs to a lead: the pooled rows sum to 1 over the leads
        torch.testing.assert_close(att.sum(-1), torch.ones(3, 2, 4))
    else:  # the class token's weight on itself is left out
        assert torch.all(att.sum(-1) < 1)
    torch.testing.assert_close(feat, enc(x, mask))  # same feature with or without attention
    assert len(enc.last_attention) == 2


@pytest.mark.parametrize("pool", ["mean", "cls"])
@pytest.mark.parametrize("train", [False, True])
def test_vit_masked_lead_values_do_not_matter(pool, train):
    enc = _tiny(pool=pool).train(train)
    x = torch.randn(2, 12, T)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 6:] = False
    x2 = x.clone()
    x2[:, 6:] = 100 * torch.randn(2, 6, T)
    torch.testing.assert_close(enc(x, mask), enc(x2, mask))
    assert not torch.allclose(enc(x, mask), enc(x2))  # without the mask, those leads count


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vit_lead_subset_same_parameters(pool):
    full = _tiny(pool=pool).eval()
    limb = create_ecg_encoder("ecg_vit_tiny", pool=pool, leads=LIMB_LEADS).eval()
    limb.load_state_dict(full.state_dict(), strict=True)  # 12-lead weights fit the 6-lead encoder
    x = torch.randn(2, 12, T)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :6] = True
    torch.testing.assert_close(limb(x[:, :6]), full(x, mask))  # limb leads by name pick the same embeddings
    # lead order is by name: a (V1, I) encoder reads its rows as V1 then I
    two = create_ecg_encoder("ecg_vit_tiny", pool=pool, leads=("V1", "I")).eval()
    two.load_state_dict(full.state_dict())
    keep = torch.zeros(2, 12, dtype=torch.bool)
    keep[:, [0, 6]] = True
    torch.testing.assert_close(two(x[:, [6, 0]]), full(x, keep))
    with pytest.raises(ConfigError):
        limb(x)  # 12 rows for a 6-lead encoder
    with pytest.raises(ConfigError):
        create_ecg_encoder("ecg_vit_tiny", leads=("I", "V7"))


def test_vit_patches_and_lengths():
    enc = _tiny().eval()
    x = torch.arange(2 * 12 * 70, dtype=torch.float32).reshape(2, 12, 70)
    p = enc.patchify(x)  # 70 samples -> 3 patches of 32, zero padded
    assert p.shape == (2, 12, 3, 32)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 26))).reshape(2, 12, 3, 32)
    np.testing.assert_array_equal(p.numpy(), ref)
    assert enc(x).shape == (2, enc.out_dim)  # any length up to max_len
    with pytest.raises(ConfigError, match="max_len"):
        enc(torch.zeros(1, 12, enc.max_len + 1))
    with pytest.raises(ConfigError):
        create_ecg_encoder("ecg_vit_tiny", pool="max")
    with pytest.raises(ConfigError):
        create_ecg_encoder("ecg_vit_tiny", width=30, n_heads=4)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vit_flat_and_absent_leads_give_no_nan(pool):
    enc = _tiny(pool=pool)
    x = torch.zeros(3, 12, T)  # flat leads everywhere
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1] = False  # a row with no lead at all
    feat, att = enc(x, mask, return_attention=True)
    assert torch.isfinite(feat).all() and torch.isfinite(att).all()
    feat.pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_vit_in_a_model_and_gradcam():
    from captum.attr import LayerGradCam

    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion="ecg", ecg_encoder="ecg_vit_tiny", leads=LIMB_LEADS))
    x = torch.randn(2, 6, T)
    out = model({"ecg": x, "ecg_mask": torch.ones(2, 6, dtype=torch.bool)})
    assert out.score.shape == (2,) and torch.isfinite(out.score).all()
    enc = model.ecg_encoder.eval()
    cam = LayerGradCam(lambda s: model.fusion({"ecg": enc(s), "cxr": None}).score, enc.gradcam_layer)
    maps = cam.attribute(x, relu_attributions=False)  # (B * L, 1, n patches)
    assert maps.shape == (2 * 6, 1, T // 32)
    assert maps.abs().sum() > 0


# ---------------------------------------------------------------- masked autoencoder


@pytest.mark.parametrize(("ratio", "n"), [(0.75, 8), (0.8, 8), (0.5, 8), (0.3, 5), (0.9, 30)])
def test_mask_count_is_round_ratio_times_patches(ratio, n):
    keep, mask = random_patch_mask(3, 12, n, ratio, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 12, n) and keep.shape == (3, 12, n - round(ratio * n))
    assert torch.all(mask.sum(-1) == round(ratio * n))
    assert torch.all(~mask.gather(-1, keep))  # the kept indices are exactly the visible patches
    assert torch.all(keep.diff(dim=-1) > 0)
    assert not torch.equal(mask[0, 0], mask[0, 1]) or not torch.equal(mask[0, 0], mask[1, 0])  # random per lead


def test_mask_deterministic_under_seed():
    a = random_patch_mask(4, 12, 8, 0.75, torch.Generator().manual_seed(7))[1]
    b = random_patch_mask(4, 12, 8, 0.75, torch.Generator().manual_seed(7))[1]
    c = random_patch_mask(4, 12, 8, 0.75, torch.Generator().manual_seed(8))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    mae = _mae()
    x = torch.randn(2, 12, T)
    la = mae(x, generator=torch.Generator().manual_seed(3))["loss"]
    lb = mae(x, generator=torch.Generator().manual_seed(3))["loss"]
    assert torch.equal(la, lb)
    with pytest.raises(ConfigError):
        random_patch_mask(1, 1, 8, 0.01)  # hides nothing
    with pytest.raises(ConfigError):
        random_patch_mask(1, 1, 8, 0.99)  # hides everything


def test_masked_patch_loss_against_numpy():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)
    weight = (torch.rand(2, 3, 5, generator=g) > 0.4).float()
    per = ((pred.numpy() - target.numpy()) ** 2).mean(-1)
    ref = per[weight.numpy() > 0].mean()
    np.testing.assert_allclose(masked_patch_loss(pred, target, weight).item(), ref, rtol=1e-6)
    # perturbing visible (weight 0) patches of the prediction or target leaves the loss unchanged
    vis = (weight == 0)[..., None].expand_as(pred)
    pred2, target2 = pred.clone(), target.clone()
    pred2[vis] += 5 * torch.randn(int(vis.sum()), generator=g)
    target2[vis] -= 3.0
    torch.testing.assert_close(masked_patch_loss(pred2, target2, weight), masked_patch_loss(pred, target, weight))


def test_mae_loss_ignores_visible_patches():
    """The reconstruction of visible patches has no effect on the loss (zero gradient, any value)."""
    mae = _mae()
    x = torch.randn(2, 12, T)
    gen = torch.Generator().manual_seed(0)
    rec = mae.reconstruct(x, generator=gen)
    visible = ~rec.mask  # (B, L, n)

    def scramble(module, inputs, output):  # output (B, L * (n + 2), p): rewrite the visible patches' predictions
        out = output.reshape(2, 12, 10, -1).clone()
        out[:, :, 1:-1][visible] = 1e3 * torch.randn(int(visible.sum()), out.shape[-1])
        return out.reshape(output.shape)

    base = mae(x, generator=torch.Generator().manual_seed(0))["loss"]
    h = mae.decoder_head.register_forward_hook(scramble)
    try:
        scrambled = mae(x, generator=torch.Generator().manual_seed(0))["loss"]
    finally:
        h.remove()
    torch.testing.assert_close(scrambled, base)
    # gradient of the loss with respect to the predictions: exactly zero on visible patches, not on hidden ones
    pred = rec.pred.detach().requires_grad_(True)
    masked_patch_loss(pred, rec.target, rec.weight).backward()
    assert torch.all(pred.grad[visible] == 0) and torch.all(pred.grad[rec.mask].abs().sum(-1) > 0)


def test_mae_encoder_never_sees_hidden_patches():
    """Changing a hidden patch of the input changes the target there but not a single prediction."""
    mae = _mae().eval()
    x = torch.randn(2, 12, T)
    mask = mae.reconstruct(x, generator=torch.Generator().manual_seed(5)).mask
    hidden = mask.repeat_interleave(32, dim=-1)  # (B, L, T)
    x2 = x + 10 * hidden.float() * torch.randn_like(x)
    r1 = mae.reconstruct(x, generator=torch.Generator().manual_seed(5))
    r2 = mae.reconstruct(x2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(r1.pred, r2.pred)
    assert not torch.allclose(r1.target, r2.target)
    x3 = x + (~hidden).float()  # visible patches are the encoder's input: predictions move
    assert not torch.allclose(mae.reconstruct(x3, generator=torch.Generator().manual_seed(5)).pred, r1.pred)


def test_mae_absent_leads_and_flat_leads():
    mae = _mae(norm_target=True)
    x = torch.randn(2, 12, T)
    x[0, 3] = 0.4  # a flat (constant) lead
    lead_mask = torch.ones(2, 12, dtype=torch.bool)
    lead_mask[1, 6:] = False
    rec = mae.reconstruct(x, lead_mask, generator=torch.Generator().manual_seed(0))
    assert torch.all(rec.weight[1, 6:] == 0) and torch.equal(rec.weight[0] > 0, rec.mask[0])
    # norm_target: each target patch standardised by its own mean / variance; a flat patch is 0, not NaN
    p = x[0, 0, :32].numpy()
    np.testing.assert_allclose(rec.target[0, 0, 0].numpy(), (p - p.mean()) / np.sqrt(p.var() + 1e-6), rtol=1e-4,
                               atol=1e-5)
    assert rec.target[0, 3].abs().max() < 1e-3  # flat: 0 up to the float error of its mean
    out = mae(x, lead_mask, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "mae_masked_mse"} and torch.isfinite(out["loss"])
    x2 = x.clone()
    x2[1, 6:] = 50.0  # values of absent leads do not matter
    torch.testing.assert_close(mae(x2, lead_mask, generator=torch.Generator().manual_seed(0))["loss"], out["loss"])
    flat = mae(torch.zeros(2, 12, T), generator=torch.Generator().manual_seed(0))["loss"]
    flat.backward()
    assert torch.isfinite(flat) and all(torch.isfinite(q.grad).all() for q in mae.parameters() if q.grad is not None)
    with pytest.raises(ConfigError, match="whole patches"):
        mae(torch.randn(1, 12, 250))


def test_mae_learns_on_a_fixed_batch():
    """Forty steps on a batch of one scaled waveform (a pattern the decoder can learn) cut the masked-patch loss."""
    mae = _mae()
    t = torch.linspace(0, 1, T)
    g = torch.Generator().manual_seed(0)
    template = torch.sin(2 * torch.pi * 3 * t) + 0.5 * torch.sin(2 * torch.pi * 7 * t)  # (T,)
    x = (0.5 + torch.rand(8, 1, 1, generator=g)) * template * torch.linspace(0.5, 1.5, 12)[:, None]  # (8, 12, T)
    opt = torch.optim.AdamW(mae.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        loss = mae(x, generator=torch.Generator().manual_seed(step))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.4 * np.mean(losses[:5])


def test_mae_needs_a_vit():
    with pytest.raises(ConfigError):
        ECGMaskedAutoencoder(create_ecg_encoder("ecg_resnet_tiny_transformer"))
    with pytest.raises(ConfigError):
        ECGMaskedAutoencoder(_tiny(), mask_ratio=1.0)
    assert CANONICAL_LEADS == _tiny().leads
