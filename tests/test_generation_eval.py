"""Stage 4 judged (:mod:`cardiofusion.evaluation.generation`): SSIM / PSNR against closed forms, the
patient-bootstrap summary against a direct computation, the classifier AUROC against scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.evaluation.bootstrap import bootstrap_weights
from cardiofusion.evaluation.generation import (
    PSNR_CAP,
    generation_markdown,
    generation_summary,
    image_quality,
)


def test_identical_images_ssim_one_psnr_capped():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 24, 24, generator=g)
    ssim, psnr = image_quality(x, x.clone())
    assert np.allclose(ssim, 1.0, atol=1e-6)
    assert np.all(psnr == PSNR_CAP)


def test_psnr_of_a_known_mse_and_ssim_of_uniform_images():
    g = torch.Generator().manual_seed(1)
    target = 0.2 + 0.5 * torch.rand(2, 1, 32, 32, generator=g)  # in [0.2, 0.7]: the shift is not clipped
    for d in (0.1, 0.05):
        _, psnr = image_quality(target + d, target)
        assert np.allclose(psnr, 10 * np.log10(1.0 / d**2), atol=1e-3)  # MSE = d^2, data range 1
    # uniform images a and b: SSIM = (2ab + C1) / (a^2 + b^2 + C1) (contrast-structure term 1), C1 = (0.01)^2
    a, b, c1 = 0.3, 0.5, 0.01**2
    ssim, _ = image_quality(torch.full((1, 1, 32, 32), a), torch.full((1, 1, 32, 32), b))
    assert ssim[0] == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-5)
    with pytest.raises(ConfigError, match="one shape"):
        image_quality(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 9, 9))


def _table(seed=0, n_patients=40):
    rng = np.random.default_rng(seed)
    pid = np.repeat([f"p{i:02d}" for i in range(n_patients)], rng.integers(1, 4, n_patients))
    n = pid.size
    label = (np.array([int(p[1:]) for p in pid]) % 4 == 0).astype(float)
    t = {"record_id": [f"r{i}" for i in range(n)], "patient_id": pid, "label": label}
    t["mean_ssim"] = rng.uniform(0.2, 0.4, n)
    t["gen_ssim"] = t["mean_ssim"] + rng.uniform(0.05, 0.1, n)  # always better than the mean image
    t["uncond_ssim"] = t["mean_ssim"] + rng.normal(0, 0.05, n)
    for name in ("gen", "mean", "uncond"):
        t[f"{name}_psnr"] = 10 + 10 * t[f"{name}_ssim"]
    t["cls_real"] = 2.0 * label + rng.normal(0, 1, n)
    t["cls_gen"] = 0.5 * label + rng.normal(0, 1, n)
    t["cls_uncond"] = rng.normal(0, 1, n)
    return pd.DataFrame(t)


def test_summary_against_a_direct_patient_bootstrap():
    from sklearn.metrics import roc_auc_score

    table = _table()
    s = generation_summary(table, n_boot=200, seed=3)
    assert s["records"] == len(table) and s["patients"] == table["patient_id"].nunique()
    w = bootstrap_weights(table["patient_id"].to_numpy(), 200, 3)
    for key in ("gen_ssim", "mean_psnr", "uncond_ssim"):
        v = table[key].to_numpy()
        boot = (w @ v) / w.sum(1)
        assert s[key]["value"] == pytest.approx(v.mean())
        assert s[key]["ci_low"] == pytest.approx(np.quantile(boot, 0.025))
        assert s[key]["ci_high"] == pytest.approx(np.quantile(boot, 0.975))
    diff = s["gen_minus_mean_ssim"]  # paired: every record's generated image beats its mean image
    assert diff["value"] == pytest.approx((table["gen_ssim"] - table["mean_ssim"]).mean())
    assert 0.05 <= diff["ci_low"] <= diff["ci_high"] <= 0.1 and diff["p_value"] < 0.01
    # classifier AUROCs: the point value is scikit-learn's; a resample's value is the AUROC of that resample
    y = table["label"].to_numpy()
    for name in ("real", "gen", "uncond"):
        assert s[f"auroc_{name}"]["value"] == pytest.approx(roc_auc_score(y, table[f"cls_{name}"]))
    i = np.repeat(np.arange(len(table)), w[0].astype(int))
    assert np.isfinite(roc_auc_score(y[i], table["cls_real"].to_numpy()[i]))
    assert s["auroc_real"]["ci_low"] > 0.5 and s["auroc_real_minus_gen"]["value"] > 0
    assert s["auroc_gen_minus_uncond"]["value"] == pytest.approx(s["auroc_gen"]["value"] - s["auroc_uncond"]["value"])
    assert s["positives"] == int(y.sum())
    md = generation_markdown(s)
    assert "generated - mean training X-ray (paired)" in md and "AUROC" in md


def test_summary_without_classifier_and_empty_table():
    table = _table().drop(columns=["cls_real", "cls_gen", "cls_uncond"])
    s = generation_summary(table, n_boot=50)
    assert "auroc_gen" not in s and "AUROC" not in generation_markdown(s)
    with pytest.raises(ConfigError, match="empty"):
        generation_summary(table.iloc[:0], n_boot=10)
