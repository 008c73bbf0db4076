"""Explanations: Grad-CAM against a hand computation, lead attention, branch targets, single-modality
records, faithfulness on models whose truth is known, ground-truth checks, figures and the commands.

Most tests use untrained tiny models built directly (explanation mechanics do not need trained weights);
the command-line tests use one tiny trained cooperative run on a tiny synthetic cohort.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import build_tiny_cache
from torch import nn

from cardiofusion.cli import main
from cardiofusion.errors import ConfigError
from cardiofusion.explain import (
    FaithfulnessConfig,
    RecordSample,
    RecordScorer,
    aopc,
    bootstrap_mean_ci,
    choose_examples,
    cxr_gradcam,
    ecg_gradcam,
    explain_records,
    explain_sample,
    lead_attention,
    lead_ranks,
    load_run_any,
    load_samples,
    map_box,
    plot_cxr_explanation,
    plot_ecg_explanation,
    pointing_game,
    record_curves,
    sample_from_batch,
    shuffled_hits,
)
from cardiofusion.models import (
    ModelConfig,
    build_model,
    register_cxr_encoder,
    register_ecg_encoder,
)
from cardiofusion.models.registry import CXR_ENCODERS, ECG_ENCODERS
from cardiofusion.transforms.preprocess import PreprocessConfig, window_starts
from cardiofusion.records import CANONICAL_LEADS

FS, DURATION_S, SIZE = 250.0, 4.0, 64
WINDOW = 500  # 2 s at 250 Hz


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _sample(seed: int = 0, *, size: int = SIZE, n_samples: int = 1000, ecg: bool = True, cxr: bool = True,
            mask: np.ndarray | None = None, window: int = WINDOW) -> RecordSample:
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 0.3, size=(12, n_samples)).astype(np.float32) if ecg else None
    lead_mask = (np.ones(12, dtype=bool) if mask is None else mask) if ecg else None
    if ecg and mask is not None:
        signal[~mask] = 0
    image = torch.as_tensor(rng.normal(0, 1, size=(1, size, size)), dtype=torch.float32) if cxr else None
    return RecordSample(record_id=f"r{seed}", patient_id="p", label=1.0, ecg_signal=signal, ecg_mask=lead_mask,
                        window_starts=window_starts(n_samples, window, window) if ecg else None,
                        window_samples=window, fs=FS, leads=CANONICAL_LEADS, cxr=image, image_mean=0.449,
                        image_std=0.226)


def _model(fusion: str = "cooperative", seed: int = 0, **ecg_kwargs):
    torch.manual_seed(seed)
    cfg = ModelConfig(fusion=fusion, ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="cxr_tiny",
                      ecg_kwargs=ecg_kwargs)
    return build_model(cfg).eval()


def _batch(sample: RecordSample) -> dict:
    """One record as a window-level batch (the loaders' layout), for the independent forward path."""
    windows = sample.ecg_windows()  # (n_w, L, W)
    n_w = windows.shape[0]
    return {"ecg": windows, "ecg_mask": torch.as_tensor(sample.ecg_mask).expand(n_w, -1),
            "cxr": sample.cxr.unsqueeze(0).expand(n_w, -1, -1, -1), "has_ecg": torch.ones(n_w, dtype=torch.bool),
            "has_cxr": torch.ones(n_w, dtype=torch.bool), "record_index": torch.zeros(n_w, dtype=torch.long),
            "n_records": 1}


def _hand_gradcam(model, batch, layer, branch: str) -> torch.Tensor:
    """Grad-CAM by hand: hook the layer, d(branch score)/d(activations), channel weights = mean over space."""
    acts = []
    handle = layer.register_forward_hook(lambda m, i, o: acts.append(o))
    try:
        out = model(batch)
    finally:
        handle.remove()
    score = out.branch_scores[branch].mean()  # record score = mean over windows
    a = acts[0]
    (g,) = torch.autograd.grad(score, a)
    dims = tuple(range(2, a.dim()))
    w = g.mean(dim=dims, keepdim=True)  # (N, C, 1[, 1])
    return torch.relu((w * a).sum(dim=1)).detach()  # (N, *spatial)


# --------------------------------------------------------------------------------------------------
# Grad-CAM, attention, targets
# --------------------------------------------------------------------------------------------------
def test_cxr_gradcam_equals_hand_computation():
    model, sample = _model(), _sample(1)
    coarse, heat = cxr_gradcam(RecordScorer(model, sample))
    ref = _hand_gradcam(model, _batch(sample), model.cxr_encoder.gradcam_layer, "cxr")[0]  # (h, w)
    torch.testing.assert_close(torch.as_tensor(coarse), ref, rtol=1e-4, atol=1e-7)
    assert float(ref.max()) > 0  # a real map, not all zeros
    up = F.interpolate(ref[None, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[0, 0]
    up = (up - up.min()) / (up.max() - up.min())
    torch.testing.assert_close(torch.as_tensor(heat), up, rtol=1e-4, atol=1e-5)


def test_cxr_gradcam_at_an_earlier_stage_and_several_layers():
    """Grad-CAM on a chosen timm stage equals the hand computation on that stage; its grid is finer;
    several layers average their min-max scaled maps (pytorch-grad-cam's rule); bad names are clear errors."""
    model, sample = _model(), _sample(3)
    enc = model.cxr_encoder
    last_name, _ = enc.feature_layer(None)
    assert last_name == f"model.{enc.model.feature_info[-1]['module']}"  # MobileNetV3: its last stage
    name, layer = enc.feature_layer(-2)
    stages = enc.model.feature_info
    assert name == f"model.{stages[-2]['module']}" and stages[-2]["reduction"] < stages[-1]["reduction"]
    scorer = RecordScorer(model, sample)
    coarse, heat = cxr_gradcam(scorer, layer=-2)
    ref = _hand_gradcam(model, _batch(sample), layer, "cxr")[0]
    torch.testing.assert_close(torch.as_tensor(coarse), ref, rtol=1e-4, atol=1e-7)
    coarse_last, heat_last = cxr_gradcam(scorer)
    assert coarse.shape[0] == 2 * coarse_last.shape[0]  # stride 16 vs 32: twice the grid
    _, heat_both = cxr_gradcam(scorer, layer=(None, "-2"))
    mean = (heat + heat_last) / 2
    torch.testing.assert_close(torch.as_tensor(heat_both), torch.as_tensor((mean - mean.min()) / (mean.max() - mean.min())),
                               rtol=1e-5, atol=1e-6)
    assert explain_sample(model, sample, cxr_layer=-2).cxr.layer == name
    assert explain_sample(model, sample).summary()["cxr"]["layer"] == last_name
    with pytest.raises(ConfigError, match="stage 9 does not exist.*stride"):
        cxr_gradcam(scorer, layer=9)
    with pytest.raises(ConfigError, match="'no.such' is not a module"):
        cxr_gradcam(scorer, layer="no.such")


def test_ecg_gradcam_per_lead_equals_hand_computation():
    model, sample = _model(), _sample(2)
    coarse, time_map = ecg_gradcam(RecordScorer(model, sample))
    ref = _hand_gradcam(model, _batch(sample), model.ecg_encoder.gradcam_layer, "ecg")  # (n_w * L, T')
    n_w = len(sample.window_starts)
    torch.testing.assert_close(torch.as_tensor(coarse), ref.reshape(n_w, 12, -1), rtol=1e-4, atol=1e-7)
    assert time_map.shape == sample.ecg_signal.shape and 0 <= time_map.min() and time_map.max() == pytest.approx(1)


def test_lead_attention_rows_sum_to_one_and_match_the_encoder():
    mask = np.ones(12, dtype=bool)
    mask[[2, 7]] = False  # two absent leads
    model, sample = _model(n_layers=2), _sample(3, mask=mask)
    scorer = RecordScorer(model, sample)
    imp, _ = lead_attention(scorer)
    assert imp.shape == (12,) and imp.sum() == pytest.approx(1.0) and (imp >= 0).all()
    assert imp[~mask].sum() == 0
    # independent: the encoder's own class-token attention, last layer, head mean, renormalised per window
    with torch.no_grad():
        _, att = model.ecg_encoder(scorer.windows, scorer.lead_mask.expand(len(scorer.windows), -1),
                                   return_attention=True)  # (n_w, layers, heads, L)
    per_window = att[:, -1].mean(1)
    ref = (per_window / per_window.sum(-1, keepdim=True)).mean(0)
    torch.testing.assert_close(torch.as_tensor(imp, dtype=torch.float32), ref, rtol=1e-5, atol=1e-6)
    roll, _ = lead_attention(scorer, rollout=True)
    assert roll.sum() == pytest.approx(1.0) and roll[~mask].sum() == 0 and not np.allclose(roll, imp)
    # with one layer, rollout's class row over the leads is the last layer's attention, renormalised
    one = RecordScorer(_model(n_layers=1), sample)
    np.testing.assert_allclose(lead_attention(one, rollout=True)[0], lead_attention(one)[0], rtol=1e-5)


def test_product_map_shape_and_definition():
    sample = _sample(4, n_samples=1100)  # 2 s windows: starts 0, 500 and an end-aligned 600
    assert list(sample.window_starts) == [0, 500, 600]
    expl = explain_sample(_model(), sample)
    e = expl.ecg
    assert e.heatmap.shape == e.time_importance.shape == (12, 1100)
    prod = e.lead_importance[:, None] * e.time_importance
    np.testing.assert_allclose(e.heatmap, prod / prod.max(), rtol=1e-5, atol=1e-6)
    assert e.lead_importance_source == "attention" and e.lead_importance.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("fusion,targets", [("cooperative", ("branch:ecg", "branch:cxr")),
                                            ("late", ("branch:ecg", "branch:cxr")),
                                            ("early", ("score", "score")), ("ecg", ("branch:ecg", None)),
                                            ("cxr", (None, "branch:cxr"))])
def test_every_fusion_explains_the_right_score(fusion, targets):
    model, sample = _model(fusion), _sample(5)
    expl = explain_sample(model, sample)
    with torch.no_grad():
        out = model(_batch(sample))
    for m, want in zip(("ecg", "cxr"), targets):
        part = getattr(expl, m)
        if want is None:
            assert part is None
            continue
        assert part.target == want
        ref = out.score if want == "score" else out.branch_scores[m]
        assert part.target_score == pytest.approx(float(ref.mean()), rel=1e-5, abs=1e-6)
    assert expl.score == pytest.approx(float(out.score.mean()), rel=1e-5, abs=1e-6)


def test_cooperative_branch_maps_depend_on_their_own_modality_only():
    model = _model("cooperative")
    a, b = _sample(6), _sample(6)
    b.cxr = torch.randn_like(b.cxr)  # another X-ray, same ECG
    ea, eb = explain_sample(model, a), explain_sample(model, b)
    np.testing.assert_allclose(ea.ecg.heatmap, eb.ecg.heatmap, rtol=1e-5, atol=1e-6)
    assert not np.allclose(ea.cxr.heatmap, eb.cxr.heatmap)


def test_single_modality_patients_and_integrated_gradients():
    model = _model("cooperative")
    ecg_only = explain_sample(model, _sample(7, cxr=False))
    assert ecg_only.cxr is None and ecg_only.ecg is not None and ecg_only.branch_scores["cxr"] is None
    cxr_only = explain_sample(model, _sample(7, ecg=False), method="ig", ig_steps=8)
    assert cxr_only.ecg is None and cxr_only.cxr.method == "ig" and cxr_only.cxr.heatmap.max() == pytest.approx(1)
    with pytest.raises(ConfigError, match="none of the modalities"):
        explain_sample(_model("cxr"), _sample(7, cxr=False))
    ig = explain_sample(model, _sample(8), method="ig", ig_steps=8)
    assert ig.ecg.time_importance.shape == (12, 1000) and ig.ecg.heatmap.max() == pytest.approx(1)


def test_sample_from_batch_roundtrip():
    s = _sample(9)
    pp = PreprocessConfig(fs=FS, image_size=SIZE)
    batch = {"ecg": s.ecg_windows(), "ecg_mask": torch.as_tensor(s.ecg_mask), "cxr": s.cxr,
             "has_ecg": torch.tensor(True), "has_cxr": torch.tensor(False), "record_id": "x", "label": torch.tensor(0.)}
    back = sample_from_batch(batch, pp)
    np.testing.assert_allclose(back.ecg_signal, s.ecg_signal, atol=1e-6)
    assert back.cxr is None and back.record_id == "x" and back.label == 0.0


# --------------------------------------------------------------------------------------------------
# Faithfulness on models whose truth is known
# --------------------------------------------------------------------------------------------------
_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


class _TopLeftOnly(nn.Module):
    """Zeroes activations outside the top-left quadrant: the model sees nothing else."""

    def forward(self, a):  # (B, C, h, w)
        keep = torch.zeros_like(a)
        keep[..., : a.shape[-2] // 2, : a.shape[-1] // 2] = 1
        return a * keep


class _QuadrantCXR(nn.Module):
    """Edge energy (|Laplacian|) of the top-left quadrant only."""

    def __init__(self, pretrained=False, in_chans: int = 1):
        super().__init__()
        self.out_dim = 2
        self.conv = nn.Conv2d(in_chans, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.stack([_LAPLACE, -_LAPLACE]).unsqueeze(1))
        self.mask = _TopLeftOnly()
        self.gradcam_layer = self.mask

    def forward(self, x):
        return self.mask(torch.relu(self.conv(x))).mean((-2, -1))  # (B, 2)


class _OneLead(nn.Module):
    """Keeps one lead's rows of the per-lead activations ``(B * L, C, T)``."""

    def __init__(self, n_leads: int, lead: int):
        super().__init__()
        self.n_leads, self.lead = n_leads, lead

    def forward(self, a):
        keep = torch.zeros(a.shape[0], 1, 1, dtype=a.dtype)
        keep.view(-1, self.n_leads)[:, self.lead] = 1
        return a * keep


class _V5OnlyECG(nn.Module):
    """Edge energy of lead V5 only (per-lead shared convolution, like the paper's encoder)."""

    def __init__(self, leads=CANONICAL_LEADS):
        super().__init__()
        self.out_dim = 2
        self.conv = nn.Conv1d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[1.0, -2.0, 1.0]], [[-1.0, 2.0, -1.0]]]))
        self.mask = _OneLead(len(leads), list(leads).index("V5"))
        self.gradcam_layer = self.mask

    def forward(self, x, lead_mask=None):  # (B, L, T) -> (B, 2)
        b, n, t = x.shape
        a = self.mask(torch.relu(self.conv(x.reshape(b * n, 1, t))))  # (B*L, 2, T)
        return a.mean(-1).reshape(b, n, 2).sum(1)


for _name, _register, _cls, _reg in (("test_quadrant_cxr", register_cxr_encoder, _QuadrantCXR, CXR_ENCODERS),
                                     ("test_v5_only_ecg", register_ecg_encoder, _V5OnlyECG, ECG_ENCODERS)):
    if _name not in _reg:
        _register(_name)(_cls)


def _known_truth_model(fusion: str):
    model = build_model(ModelConfig(fusion=fusion, ecg_encoder="test_v5_only_ecg", cxr_encoder="test_quadrant_cxr"))
    with torch.no_grad():
        for head in (model.fusion.head,):
            head.weight.fill_(1.0)
            head.bias.zero_()
    return model.eval()


def test_faithfulness_on_a_model_that_sees_one_quadrant():
    model = _known_truth_model("cxr")
    config = FaithfulnessConfig(seed=0)
    wins = {"random": 0, "uniform": 0}
    for seed in range(4):
        sample = _sample(20 + seed, size=32, ecg=False)
        expl, curves = record_curves(model, sample, config)
        heat = expl.cxr.heatmap
        assert heat[16:, :].max() == 0 and heat[:, 16:].max() == 0 and heat[:16, :16].max() == 1  # the quadrant
        for mode in ("deletion", "insertion"):
            a = {k: float(aopc(v, mode)) for k, v in curves["cxr"][mode].items()}
            assert a["explanation"] > 0
            wins["random"] += a["explanation"] > a["random"]
            wins["uniform"] += a["explanation"] > a["uniform"]
        assert curves["cxr"]["deletion"]["explanation"][1] < curves["cxr"]["deletion"]["random"][1]
    assert wins == {"random": 8, "uniform": 8}


def test_sign_removal_finds_the_spot_the_model_uses():
    """Inpainting a planted spot the model sees lowers its score; the same spot where the model does not
    look, or the boxes moved onto flat background, change nothing."""
    from cardiofusion.explain import GroundTruth, sign_removal

    model = _known_truth_model("cxr")  # edge energy of the top-left quadrant of a 32 px image
    samples, rows = [], []
    for i, (r, c) in enumerate([(6, 7), (8, 5), (24, 25)]):  # two spots the model sees, one it does not
        img = np.zeros((1, 32, 32), dtype=np.float32)
        img[0, r - 1:r + 2, c - 1:c + 2] = 3.0
        sample = dataclasses.replace(_sample(40 + i, size=32, ecg=False), cxr=torch.as_tensor(img),
                                     record_id=f"s{i}", cxr_exam_id=f"X{i}")
        samples.append(sample)
        rows.append({"exam_id": f"X{i}", "calc_bboxes": json.dumps([[c - 1, r - 1, c + 2, r + 2]]), "calc_kinds": "valve"})
    gt = GroundTruth(cxr=pd.DataFrame(rows).set_index("exam_id"), ecg=pd.DataFrame(), cxr_size=32)
    seen = sign_removal(model, samples[:2], gt, n_boot=100, margin_px=3.0)
    assert seen["n"] == 2 and seen["drop_planted"]["mean"] > 0.9 * seen["score"]["mean"] > 0  # the spot was all
    assert abs(seen["drop_moved"]["mean"]) < 0.02 * seen["drop_planted"]["mean"]  # flat background: nothing lost
    assert seen["share_planted_wins"]["mean"] == 1.0 and seen["planted_minus_moved"]["ci95"][0] > 0
    unseen = sign_removal(model, samples[2:], gt, n_boot=100, margin_px=3.0)
    assert unseen["drop_planted"]["mean"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="no AS X-ray"):
        sign_removal(model, [dataclasses.replace(samples[0], label=0.0)], gt)


def test_faithfulness_on_a_model_that_reads_one_lead():
    model = _known_truth_model("ecg")
    expl, curves = record_curves(model, _sample(30, cxr=False), FaithfulnessConfig(seed=1))
    e = expl.ecg
    assert e.lead_importance_source == "gradcam-mass" and e.leads[int(np.argmax(e.lead_importance))] == "V5"
    assert np.delete(e.heatmap, CANONICAL_LEADS.index("V5"), axis=0).max() == 0
    for mode in ("deletion", "insertion"):
        a = {k: float(aopc(v, mode)) for k, v in curves["ecg"][mode].items()}
        assert a["explanation"] > a["random"] and a["explanation"] > a["uniform"] and a["explanation"] > 0


def test_aopc_and_bootstrap():
    assert float(aopc(np.array([1.0, 0.5, 0.2]), "deletion")) == pytest.approx(0.65)
    assert float(aopc(np.array([0.0, 0.5, 0.2]), "insertion")) == pytest.approx(0.35)
    v = np.random.default_rng(0).normal(1.0, 2.0, size=200)
    m, lo, hi = bootstrap_mean_ci(v, 1000, seed=3)
    assert lo < m < hi and m == pytest.approx(v.mean())
    assert hi - lo == pytest.approx(2 * 1.96 * v.std() / np.sqrt(200), rel=0.2)  # the normal-theory width
    again = bootstrap_mean_ci(v, 1000, seed=3)
    assert (again[1], again[2]) == (lo, hi)  # seeded
    curves = np.random.default_rng(1).normal(size=(50, 5))
    cm, clo, chi = bootstrap_mean_ci(curves, 1000)
    assert cm.shape == (5,) and (clo <= cm).all() and (cm <= chi).all()


def test_cluster_bootstrap_draws_whole_patients():
    """groups = one per record is the record bootstrap exactly; patients' duplicated records give the CI of
    the de-duplicated values; ignoring the clustering gives too narrow a CI."""
    v = np.random.default_rng(0).normal(size=40)
    assert bootstrap_mean_ci(v, 500, seed=2, groups=np.arange(40)) == bootstrap_mean_ci(v, 500, seed=2)
    dup, groups = np.repeat(v, 3), np.repeat(np.arange(40), 3)  # every patient has 3 identical records
    m, lo, hi = bootstrap_mean_ci(dup, 500, seed=2, groups=groups)
    _, ulo, uhi = bootstrap_mean_ci(v, 500, seed=2, groups=np.arange(40))
    assert m == pytest.approx(dup.mean()) and (lo, hi) == pytest.approx((ulo, uhi))
    _, rlo, rhi = bootstrap_mean_ci(dup, 500, seed=2)  # treating duplicates as independent: too narrow
    assert rhi - rlo < 0.75 * (hi - lo)
    with pytest.raises(ConfigError, match="groups has 3 entries"):
        bootstrap_mean_ci(v, 10, groups=[1, 2, 3])


def test_ground_truth_counts_images_not_records():
    """Two records that share an X-ray (and its map) are one image in the pointing game."""
    from cardiofusion.explain import GroundTruth, evaluate_on_ground_truth

    cxr = pd.DataFrame([{"exam_id": f"X{i}", "calc_bboxes": json.dumps([[10 + 20 * i, 10, 14 + 20 * i, 14]]),
                         "calc_kinds": "valve", "heart_x0": 0, "heart_y0": 0, "heart_x1": 32, "heart_y1": 32}
                        for i in range(3)]).set_index("exam_id")
    gt = GroundTruth(cxr=cxr, ecg=pd.DataFrame(columns=["lvh_leads"]), cxr_size=64)
    maps = []
    for i, (r, c) in enumerate([(12, 12), (12, 32), (50, 50)]):  # hits on X0 and X1, a miss on X2
        heat = np.zeros((64, 64))
        heat[r, c] = 1.0
        for copy in range(3 if i == 0 else 1):  # X0 is linked to three ECGs
            maps.append({"record_id": f"r{i}{copy}", "patient_id": f"p{i}", "label": 1, "cxr_exam_id": f"X{i}",
                         "cxr_heatmap": heat, "ecg_exam_id": None})
    res = evaluate_on_ground_truth(maps, gt, PreprocessConfig(image_size=64), n_boot=200)
    pg = res["pointing_game"]
    assert (pg["n"], pg["n_records"], pg["n_patients"]) == (3, 5, 3)
    assert pg["hit_rate"]["mean"] == pytest.approx(2 / 3)  # per image, not 4 / 5 per record
    assert pg["shuffled_hit_rate"]["mean"] == pytest.approx(0.0)  # no map peaks at another image's spot


# --------------------------------------------------------------------------------------------------
# Ground truth checks
# --------------------------------------------------------------------------------------------------
def test_map_box_pointing_game_and_lead_ranks():
    assert map_box([100, 40, 110, 52], (256, 256), 128) == [50.0, 20.0, 55.0, 26.0]
    assert map_box([100, 40, 110, 52], (256, 320), 128) == [(100 - 32) / 2, 20.0, (110 - 32) / 2, 26.0]  # crop
    heat = np.zeros((64, 64))
    heat[22, 51] = 1.0  # 3 px right of the box [40, 20, 48, 24]
    r = pointing_game(heat, [[40, 20, 48, 24]], tolerance=4.0)
    assert r["hit"] == 1.0 and r["mass"] == 0.0 and r["area"] == pytest.approx(32 / 64**2)
    assert 32 / 64**2 < r["chance"] < (16 * 12) / 64**2
    assert pointing_game(heat, [[40, 20, 48, 24]], tolerance=2.0)["hit"] == 0.0
    assert pointing_game(np.zeros((8, 8)), [[0, 0, 8, 8]], 0)["hit"] == 0.0  # an empty map never hits
    # location-prior baseline: map i against the boxes of the other images
    boxes = [[[0, 0, 4, 4]], [[0, 0, 4, 4]], [[56, 56, 64, 64]]]
    heats = []
    for r, c in ((1, 1), (2, 2), (60, 60)):
        h = np.zeros((64, 64))
        h[r, c] = 1.0
        heats.append(h)
    assert [pointing_game(h, b, 2.0)["hit"] for h, b in zip(heats, boxes)] == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(shuffled_hits(heats, boxes, 2.0), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(shuffled_hits([np.zeros((64, 64)), heats[0]], boxes[:2], 2.0), [0.0, 1.0])
    assert np.isnan(shuffled_hits(heats[:1], boxes[:1], 2.0)).all()
    planted = ("I", "aVL", "V1", "V2", "V5", "V6")
    imp = np.array([1.0 if lead in planted else 0.1 for lead in CANONICAL_LEADS])
    lr = lead_ranks(imp + np.linspace(0, 0.01, 12), CANONICAL_LEADS, planted)
    assert lr["mean_rank"] == 3.5 and lr["chance_rank"] == 6.5 and lr["top_share"] == 1.0
    assert lr["chance_top_share"] == 0.5


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def test_figures_render(tmp_path):
    from PIL import Image

    expl = explain_sample(_model(), _sample(10))
    paths = [plot_cxr_explanation(expl.cxr, tmp_path / "cxr.png", title="t", boxes=[[10, 10, 20, 20]]),
             plot_ecg_explanation(expl.ecg, tmp_path / "ecg_3x4.png", title="t"),
             plot_ecg_explanation(expl.ecg, tmp_path / "ecg_12x1.png", layout="12x1")]
    sizes = [Image.open(p).size for p in paths]
    assert all(p.stat().st_size > 10_000 for p in paths)
    assert sizes[1][0] > sizes[1][1] and sizes[2][1] > sizes[1][1]  # 3x4 landscape; 12x1 taller
    with pytest.raises(ConfigError, match="layout"):
        plot_ecg_explanation(expl.ecg, tmp_path / "x.png", layout="6x2")


# --------------------------------------------------------------------------------------------------
# On a trained run, through the command line
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny cohort (export kept for its ground truth) and one tiny trained cooperative run."""
    from cardiofusion.recipes.demo import demo_train_config
    from cardiofusion.training import fit

    root = tmp_path_factory.mktemp("explain")
    cohort = build_tiny_cache(root, fs=FS, duration_s=DURATION_S, image_size=SIZE)
    config = demo_train_config(cohort["cache"], cohort["manifest"], "cooperative", max_epochs=1, fs=FS,
                               image_size=SIZE)
    config = dataclasses.replace(config, batch_size=16, eval_batch_size=32, limit_train_batches=1)
    run = fit(config, root / "cooperative", progress=False).run_dir
    manifest = pd.read_parquet(cohort["manifest"])
    test = manifest[manifest["split"] == "test"]
    return {**cohort, "run": run, "test_as": test[test["label"] == 1]["record_id"].tolist(),
            "test_non_as": test[test["label"] == 0]["record_id"].tolist()}


def test_cli_explain_end_to_end(trained, tmp_path, capsys):
    ids = [trained["test_as"][0], trained["test_non_as"][0]]
    out = tmp_path / "expl"
    assert main(["explain", str(trained["run"]), "--record", ids[0], "--record", ids[1], "--out", str(out)]) == 0
    report = json.loads((out / "explanations.json").read_text())
    assert [r["record_id"] for r in report["records"]] == ids
    assert [r["label"] for r in report["records"]] == [1, 0]
    for r in report["records"]:
        assert set(r["images"]) == {"cxr", "ecg"} and all(Path(p).is_file() for p in r["images"].values())
        assert r["targets"] == {"cxr": "branch:cxr", "ecg": "branch:ecg"}
        assert sum(r["lead_importance"].values()) == pytest.approx(1.0, abs=1e-4)
    assert ids[0] in capsys.readouterr().out
    # record scores agree with the library's evaluation of the run
    from cardiofusion.training import score_split

    scores = score_split(trained["run"], "test").set_index("record_id")
    for r in report["records"]:
        assert r["probability"] == pytest.approx(float(scores.loc[r["record_id"], "prob"]), abs=1e-5)
    # the demo's pick: the top-scored AS record and the lowest-scored non-AS record
    top_as, low_non_as = choose_examples(trained["run"], "test", n_as=1, n_non_as=1)
    assert scores.loc[top_as, "score"] == scores[scores["label"] == 1]["score"].max()
    assert scores.loc[low_non_as, "score"] == scores[scores["label"] == 0]["score"].min()


def test_cli_explain_cxr_layer(trained, tmp_path, capsys):
    rid = trained["test_as"][0]
    for flags, layer in ((["--cxr-layer", "-2"], "model.blocks.3"),
                         (["--cxr-layer", "last", "--cxr-layer", "-2"], "model.blocks.5+model.blocks.3")):
        assert main(["explain", str(trained["run"]), "--record", rid, "--out", str(tmp_path), *flags]) == 0
        (record,) = json.loads((tmp_path / "explanations.json").read_text())["records"]
        assert record["cxr_layer"] == layer
    assert main(["explain", str(trained["run"]), "--record", rid, "--out", str(tmp_path),
                 "--cxr-layer", "blocks.99"]) == 2
    assert "blocks.99" in capsys.readouterr().err


def test_bad_record_id_is_a_clear_error(trained, tmp_path, capsys):
    rc = main(["explain", str(trained["run"]), "--record", "NO-SUCH-RECORD", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "NO-SUCH-RECORD" in err and "not in the manifest" in err and "Traceback" not in err


def test_record_missing_its_xray_is_explained_on_its_ecg(trained, tmp_path):
    manifest = pd.read_parquet(trained["manifest"])
    rid = trained["test_as"][0]
    manifest.loc[manifest["record_id"] == rid, "cxr_exam_id"] = None
    (sample,) = load_samples(load_run_any(trained["run"]), [rid], manifest=manifest)
    assert sample.cxr is None and sample.has_ecg
    results = explain_records(trained["run"], [rid], tmp_path, manifest=manifest)
    assert set(results[0]["images"]) == {"ecg"}


def test_cli_faithfulness_with_ground_truth(trained, tmp_path, capsys):
    out = tmp_path / "faith"
    ids = [trained["test_as"][0], trained["test_as"][-1], trained["test_non_as"][0]]
    rc = main(["faithfulness", str(trained["run"]), "--split", "test", "--out", str(out), "--n-boot", "200",
               *[a for r in ids for a in ("--record", r)],
               "--ground-truth", str(trained["root"] / "export" / "ground_truth"), "--no-progress"])
    assert rc == 0
    report = json.loads((out / "faithfulness.json").read_text())
    assert (out / "faithfulness_curves.png").stat().st_size > 10_000
    assert report["n_records"] == len(set(ids)) and report["n_as"] == len(set(ids)) - 1
    for m in ("cxr", "ecg"):
        for mode in ("deletion", "insertion"):
            sec = report[m][mode]
            assert set(sec["aopc"]) == {"explanation", "random", "uniform"}
            for entry in sec["aopc"].values():
                lo, hi = entry["ci95"]
                assert lo <= entry["mean"] <= hi
            assert len(sec["curves"]["explanation"]["mean"]) == 5  # p = 0, 18, 30, 40, 50
            curve = sec["curves"]["explanation"]["mean"]
            assert sec["mean_score"]["explanation"]["mean"] == pytest.approx(np.mean(curve[1:]), abs=1e-6)
            first = curve[0] if mode == "deletion" else -curve[0]
            sign = 1 if mode == "deletion" else -1
            assert sec["aopc"]["explanation"]["mean"] == pytest.approx(
                first - sign * np.mean(curve[1:]), abs=1e-6)
    gt = report["ground_truth"]
    assert gt["lead_ranking"]["chance_rank"] == 6.5 and 1 <= gt["lead_ranking"]["mean_rank"]["mean"] <= 12
    assert "AOPC" in capsys.readouterr().out
    records = pd.read_csv(out / "faithfulness_records.csv")
    assert len(records) == report["n_records"]
