"""Model-side preprocessing: ECG windows and noise, X-ray transforms, normalisation, config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.transforms.preprocess import (
    IMAGENET_GRAY_MEAN,
    IMAGENET_GRAY_STD,
    PreprocessConfig,
    affine_image,
    autocontrast,
    cxr_eval_transform,
    cxr_train_transform,
    ecg_eval_windows,
    ecg_train_window,
    rotate_image,
    window_starts,
)
from cardiofusion.records import CANONICAL_LEADS, LIMB_LEADS


def test_defaults_are_the_papers_recipe():
    cfg = PreprocessConfig()
    assert cfg.fs == 500 and cfg.leads == CANONICAL_LEADS and cfg.window_samples == 1000
    assert cfg.stride_samples == 1000 and cfg.noise_mv == 0.1 and cfg.image_size == 224
    assert cfg.rotation_deg == 10 and cfg.autocontrast_p == 0.25
    # single-channel ImageNet statistics = means of the RGB ones
    assert cfg.image_mean == pytest.approx(np.mean([0.485, 0.456, 0.406]), abs=1e-3) == IMAGENET_GRAY_MEAN
    assert cfg.image_std == pytest.approx(np.mean([0.229, 0.224, 0.225]), abs=1e-3) == IMAGENET_GRAY_STD


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(fs=250, leads=LIMB_LEADS, window_s=1.0, image_size=64)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(cfg.to_dict()["leads"], list)
    with pytest.raises(ConfigError, match="canonical order"):
        PreprocessConfig(leads=("II", "I"))
    with pytest.raises(ConfigError, match="unknown ECG lead"):
        PreprocessConfig(leads=("I", "X"))
    with pytest.raises(ConfigError, match="unknown preprocessing"):
        PreprocessConfig.from_dict({"window": 2})
    with pytest.raises(ConfigError, match="autocontrast_p"):
        PreprocessConfig(autocontrast_p=2)


@pytest.mark.parametrize("n_valid,window,stride", [(7500, 1000, 1000), (7000, 1000, 1000), (7300, 1000, 500),
                                                   (1000, 1000, 1000), (600, 1000, 1000), (2500, 1000, 700)])
def test_eval_windows_cover_the_record(n_valid, window, stride):
    starts = window_starts(n_valid, window, stride)
    assert starts[0] == 0 and np.all(np.diff(starts) > 0)
    covered = np.zeros(max(n_valid, window), dtype=bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered[:n_valid].all()
    if n_valid >= window:
        assert starts[-1] + window == n_valid  # last window aligned to the end
        assert np.all(np.diff(starts) <= stride)


def test_ecg_eval_windows_values_and_padding():
    cfg = PreprocessConfig(fs=100, window_s=1.0, eval_stride_s=1.0, noise_mv=0.1)
    signal = np.tile(np.arange(300, dtype=np.float32), (12, 1))  # (12, 300): value = sample index
    windows = ecg_eval_windows(signal, 250, cfg)  # valid part: 250 samples
    assert windows.shape == (3, 12, 100) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[:, 0, 0], [0, 100, 150])  # 0, 100, then aligned to the end
    assert windows[-1, 0, -1] == 249
    np.testing.assert_array_equal(ecg_eval_windows(signal, 250, cfg), windows)  # deterministic, no noise
    short = ecg_eval_windows(signal, 40, cfg)
    assert short.shape == (1, 12, 100) and short[0, 0, 39] == 39 and np.all(short[0, :, 40:] == 0)


def test_ecg_train_window_length_range_and_noise_bounds():
    cfg = PreprocessConfig(fs=100, window_s=1.0, noise_mv=0.1)
    signal = np.tile(np.arange(500, dtype=np.float32), (12, 1))
    mask = np.ones(12, dtype=bool)
    mask[3] = False
    signal[3] = 0
    rng = np.random.default_rng(0)
    starts = []
    for _ in range(200):
        w = ecg_train_window(signal, 400, cfg, rng, lead_mask=mask)
        assert w.shape == (12, 100) and w.dtype == np.float32
        start = round(float(np.median(w[0] - np.arange(100))))
        starts.append(start)
        noise = w[0] - (start + np.arange(100))
        assert np.abs(noise).max() <= 0.1 + 1e-5 and np.abs(noise).max() > 0.05
        assert np.all(w[3] == 0)  # an absent lead stays a zero row
    assert min(starts) >= 0 and max(starts) <= 300  # inside the valid 400 samples
    assert len(set(starts)) > 50
    a = ecg_train_window(signal, 400, cfg, np.random.default_rng(7))
    b = ecg_train_window(signal, 400, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)  # seeded
    quiet = ecg_train_window(signal, 400, PreprocessConfig(fs=100, window_s=1.0, noise_mv=0), rng)
    assert np.all(quiet[0] == quiet[0][0] + np.arange(100))


def test_cxr_eval_transform_resizes_and_normalises():
    cfg = PreprocessConfig(image_size=32)
    image = np.full((64, 64), 128, dtype=np.uint8)
    x = cxr_eval_transform(image, cfg)
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full((1, 32, 32), (128 / 255 - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD))
    black, white = (cxr_eval_transform(np.full((64, 64), v, dtype=np.uint8), cfg) for v in (0, 255))
    assert float(black.mean()) == pytest.approx(-IMAGENET_GRAY_MEAN / IMAGENET_GRAY_STD, abs=1e-5)
    assert float(white.mean()) == pytest.approx((1 - IMAGENET_GRAY_MEAN) / IMAGENET_GRAY_STD, abs=1e-5)


def test_rotation_and_autocontrast():
    image = torch.zeros(1, 33, 33)
    image[0, 16, 20:] = 255  # a horizontal bar right of the centre
    turned = rotate_image(image, 90.0)
    assert turned.shape == image.shape
    # positive angles turn counter-clockwise (as torchvision): the bar now points up
    assert float(turned[0, :12, 16].min()) > 200 and float(turned[0, 16, 22:].max()) < 50
    assert float(turned[0, 21:, 16].max()) < 50
    torch.testing.assert_close(rotate_image(image, 0.0), image)
    dim = torch.linspace(50, 100, 64).reshape(1, 8, 8)
    stretched = autocontrast(dim)
    assert float(stretched.min()) == pytest.approx(0) and float(stretched.max()) == pytest.approx(255)
    flat = torch.full((1, 4, 4), 7.0)
    torch.testing.assert_close(autocontrast(flat), flat)


def test_cxr_train_transform_is_seeded_and_augments():
    cfg = PreprocessConfig(image_size=48, rotation_deg=10, autocontrast_p=0.25)
    rng = np.random.default_rng(0)
    image = rng.integers(60, 180, size=(64, 64), dtype=np.uint8)
    a = cxr_train_transform(image, cfg, np.random.default_rng(3))
    b = cxr_train_transform(image, cfg, np.random.default_rng(3))
    assert a.shape == (1, 48, 48) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    outs = [cxr_train_transform(image, cfg, np.random.default_rng(s)) for s in range(40)]
    assert len({round(float(o.sum()), 2) for o in outs}) == 40  # every draw differs
    lo = (0 / 255 - cfg.image_mean) / cfg.image_std
    hi = (255 / 255 - cfg.image_mean) / cfg.image_std
    assert all(float(o.min()) >= lo - 1e-5 and float(o.max()) <= hi + 1e-5 for o in outs)
    # autocontrast reaches full white in about a quarter of the draws (the input tops out at 180)
    n_contrast = sum(float(o.max()) > (200 / 255 - cfg.image_mean) / cfg.image_std for o in outs)
    assert 2 <= n_contrast <= 20
    none = PreprocessConfig(image_size=48, rotation_deg=0, autocontrast_p=0)
    torch.testing.assert_close(cxr_train_transform(image, none, rng), cxr_eval_transform(image, none))


@pytest.mark.parametrize("degrees, scale, shift", [(0, 1, (0.125, 0)), (0, 1, (0, -0.0625)), (0, 1.2, (0, 0)),
                                                   (-8, 0.9, (0.0625, 0.125)), (5, 1.1, (-0.125, 0.0625))])
def test_affine_image_matches_torchvision(degrees, scale, shift):
    """Rotation + zoom + shift against torchvision's affine (clockwise angles, shifts in whole pixels)."""
    from cardiofusion._compat import ensure_torchvision

    ensure_torchvision()
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    image = (128 + 100 * torch.sin(xx / 7) * torch.cos(yy / 5) + xx).unsqueeze(0)
    ours = affine_image(image, degrees, scale, shift)
    ref = TF.affine(image, angle=-degrees, translate=[round(shift[0] * 64), round(shift[1] * 64)], scale=scale,
                    shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR)
    inner = (slice(None), slice(12, -12), slice(12, -12))  # borders: both fill with 0, edges may differ by a pixel
    torch.testing.assert_close(ours[inner], ref[inner], atol=1e-3, rtol=0)
    assert affine_image(image) is image and torch.equal(rotate_image(image, 7.0), affine_image(image, 7.0))


def test_cxr_zoom_and_shift_are_off_by_default_seeded_and_bounded():
    rng = np.random.default_rng(0)
    image = rng.integers(60, 180, size=(64, 64), dtype=np.uint8)
    base = PreprocessConfig(image_size=48)
    assert base.scale_range == 0 and base.translate_frac == 0
    # off: the random stream and the output are the rotation-only ones
    a = cxr_train_transform(image, base, np.random.default_rng(5))
    r = np.random.default_rng(5)
    angle, contrast = r.uniform(-10, 10), r.random() < 0.25
    x = rotate_image(torch.as_tensor(image, dtype=torch.float32).unsqueeze(0), 0.0)
    from cardiofusion.transforms.preprocess import normalize_image, resize_image

    x = rotate_image(resize_image(x, 48), angle)
    x = autocontrast(x) if contrast else x
    torch.testing.assert_close(a, normalize_image(x.clamp(0, 255), base))
    # on: seeded, different from the rotation-only draw, and a pure shift moves a bright dot by the drawn amount
    aug = PreprocessConfig(image_size=48, scale_range=0.1, translate_frac=0.08)
    torch.testing.assert_close(cxr_train_transform(image, aug, np.random.default_rng(5)),
                               cxr_train_transform(image, aug, np.random.default_rng(5)))
    assert not torch.allclose(cxr_train_transform(image, aug, np.random.default_rng(5)), a)
    dot = torch.zeros(1, 64, 64)
    dot[0, 32, 32] = 255
    moved = affine_image(dot, 0.0, 1.0, (0.125, -0.125))
    assert divmod(int(moved[0].argmax()), 64) == (24, 40)  # 8 pixels right, 8 up
    shift_only = PreprocessConfig(image_size=64, rotation_deg=0, autocontrast_p=0, translate_frac=0.2)
    peaks = {divmod(int(cxr_train_transform(dot[0].to(torch.uint8), shift_only,
                                            np.random.default_rng(s))[0].argmax()), 64) for s in range(30)}
    assert len(peaks) > 10 and all(abs(r - 32) <= 13 and abs(c - 32) <= 13 for r, c in peaks)
    for bad in ({"scale_range": 1.0}, {"scale_range": -0.1}, {"translate_frac": 0.5}):
        with pytest.raises(ConfigError):
            PreprocessConfig(**bad)
    assert PreprocessConfig.from_dict(aug.to_dict()) == aug
