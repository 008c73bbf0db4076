"""Every registered component through one set of checks, plus lead subsets, masks, configs.

Tiny inputs keep the file fast on CPU: ECG (B=2, T=256), X-rays 64 x 64.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cardiofusion.errors import ConfigError
from cardiofusion.models import (
    ModelConfig,
    build_model,
    create_cxr_encoder,
    create_ecg_encoder,
    create_fusion,
    list_cxr_encoders,
    list_ecg_encoders,
    list_fusions,
)
from cardiofusion.models.registry import CXR_ENCODERS, ECG_ENCODERS, FUSIONS
from cardiofusion.records import CANONICAL_LEADS, LIMB_LEADS


def _library_components(registry, names: list[str]) -> list[str]:
    """The library's own registered components (other test files may register helpers of their own)."""
    return [n for n in names if registry.get(n).__module__.startswith("cardiofusion.")]


ECG_NAMES = _library_components(ECG_ENCODERS, list_ecg_encoders())
CXR_NAMES = _library_components(CXR_ENCODERS, list_cxr_encoders())
FUSION_NAMES = _library_components(FUSIONS, list_fusions())

T = 256
IMG = 64
TINY = {"ecg_encoder": "ecg_resnet_tiny_transformer", "cxr_encoder": "cxr_tiny"}


def _assert_all_grads(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    """Every parameter has a finite, non-zero gradient."""
    for name, p in module.named_parameters():
        if any(name.startswith(s) for s in skip):
            continue
        assert p.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"


def _random_loss(out: torch.Tensor) -> torch.Tensor:
    # a random projection: out.sum() would give zero gradients through a final LayerNorm
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return (out * w).sum()


def _batch(b: int = 4, leads=CANONICAL_LEADS, has_ecg=None, has_cxr=None, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    has_ecg = torch.tensor([True, True, False, True][:b] if has_ecg is None else has_ecg)
    has_cxr = torch.tensor([True, False, True, True][:b] if has_cxr is None else has_cxr)
    ecg = torch.randn(b, len(leads), T, generator=g) * has_ecg[:, None, None]
    cxr = torch.randn(b, 1, IMG, IMG, generator=g) * has_cxr[:, None, None, None]
    return {
        "ecg": ecg,
        "ecg_mask": has_ecg[:, None].expand(b, len(leads)).clone(),
        "cxr": cxr,
        "has_ecg": has_ecg,
        "has_cxr": has_cxr,
        "label": torch.tensor([1.0, 0.0, 1.0, 0.0][:b]),
        "record_id": [f"r{i}" for i in range(b)],
        "patient_id": [f"p{i}" for i in range(b)],
    }


# ---------------------------------------------------------------- ECG encoders


@pytest.mark.parametrize("name", ECG_NAMES)
def test_ecg_encoder(name):
    torch.manual_seed(0)
    enc = create_ecg_encoder(name)
    x = torch.randn(2, 12, T)
    out = enc(x)
    assert out.shape == (2, enc.out_dim)
    assert torch.isfinite(out).all()
    _random_loss(out).backward()
    _assert_all_grads(enc)
    # Grad-CAM layer: (B * L, C, T') activations
    acts = []
    h = enc.gradcam_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    enc.eval()(x)
    h.remove()
    assert acts[0].dim() == 3 and acts[0].shape[0] == 2 * 12


def test_ecg_attention_and_mask():
    torch.manual_seed(0)
    enc = create_ecg_encoder("ecg_resnet_tiny_transformer").eval()
    x = torch.randn(3, 12, T)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 6:] = False  # sample 0: limb leads only
    mask[1, [2, 5]] = False
    feat, att = enc(x, mask, return_attention=True)
    assert att.shape == (3, 1, 4, 12)  # (B, layers, heads, L)
    assert torch.all(att[~mask[:, None, None, :].expand_as(att)] == 0)
    assert torch.all(att[mask[:, None, None, :].expand_as(att)] > 0)
    torch.testing.assert_close(feat, enc(x, mask))  # same feature with or without attention
    assert len(enc.last_attention) == 1


@pytest.mark.parametrize("train", [False, True])
def test_ecg_masked_lead_values_do_not_matter(train):
    torch.manual_seed(0)
    enc = create_ecg_encoder("ecg_resnet_tiny_transformer").train(train)
    x = torch.randn(2, 12, T)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 6:] = False
    x2 = x.clone()
    x2[:, 6:] = 100 * torch.randn(2, 6, T)
    a, b = enc(x, mask), enc(x2, mask)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, enc(x2))  # without the mask, those leads count


def test_ecg_lead_subset_same_architecture():
    torch.manual_seed(0)
    full = create_ecg_encoder("ecg_resnet_tiny_transformer").eval()
    limb = create_ecg_encoder("ecg_resnet_tiny_transformer", leads=LIMB_LEADS).eval()
    limb.load_state_dict(full.state_dict(), strict=True)  # 12-lead weights fit the 6-lead encoder
    x = torch.randn(2, 12, T)
    out = limb(x[:, :6])
    assert out.shape == (2, limb.out_dim)
    # the 6-lead encoder equals the 12-lead one with the chest leads masked out
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[:, :6] = True
    torch.testing.assert_close(out, full(x, mask))
    with pytest.raises(ConfigError):
        limb(x)  # 12 rows for a 6-lead encoder
    with pytest.raises(ConfigError):
        create_ecg_encoder("ecg_resnet_tiny_transformer", leads=("I", "V7"))


# ---------------------------------------------------------------- X-ray encoders


@pytest.mark.parametrize("name", CXR_NAMES + ["efficientnet_lite0"])  # presets + a plain timm name
def test_cxr_encoder(name):
    torch.manual_seed(0)
    enc = create_cxr_encoder(name)
    x = torch.randn(2, 1, IMG, IMG)
    acts = []
    h = enc.gradcam_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    out = enc(x)
    h.remove()
    assert out.shape == (2, enc.out_dim)
    assert torch.isfinite(out).all()
    assert acts and acts[-1].dim() == 4 and acts[-1].shape[0] == 2
    _random_loss(out).backward()
    _assert_all_grads(enc)


@pytest.mark.parametrize("name", ["efficientnet_b0", "tf_efficientnet_lite0"])
def test_cxr_feature_layers_by_stage(name):
    """Grad-CAM depth by timm stage: 'last' is the activated head conv (bn2, stride 32, same grid as the
    last stage); -2 the stride-16 stage with twice the grid; a module name works; errors list the stages."""
    enc = create_cxr_encoder(name)
    assert enc.feature_layer(None) == ("model.bn2", enc.model.bn2) == enc.feature_layer("last")
    grids = {}
    for spec in (None, -1, -2, "blocks.4"):
        name_, module = enc.feature_layer(spec)
        acts = []
        h = module.register_forward_hook(lambda m, i, o, acts=acts: acts.append(o))
        enc(torch.randn(1, 1, 128, 128))
        h.remove()
        grids[spec] = tuple(acts[0].shape[-2:])
    assert grids[None] == grids[-1] == (4, 4) and grids[-2] == grids["blocks.4"] == (8, 8)
    assert enc.feature_layer(-2)[0] == "model.blocks.4" == enc.feature_layer("model.blocks.4")[0]
    with pytest.raises(ConfigError, match="-2 = blocks.4 \\(stride 16\\)"):
        enc.feature_layer(-9)


def test_unknown_cxr_encoder():
    with pytest.raises(ConfigError):
        create_cxr_encoder("no_such_model_xyz")


# ---------------------------------------------------------------- fusion heads in full models

EXPECT_USED = {  # per fusion: used (ecg, cxr) for the rows of _batch(): both, ecg only, cxr only, both
    "cooperative": [[1, 1], [1, 0], [0, 1], [1, 1]],
    "early": [[1, 1], [1, 0], [0, 1], [1, 1]],
    "late": [[1, 1], [1, 0], [0, 1], [1, 1]],
    "ecg": [[1, 0], [1, 0], [0, 0], [1, 0]],
    "cxr": [[0, 1], [0, 0], [0, 1], [0, 1]],
}


def test_every_fusion_has_expectations():
    assert set(FUSION_NAMES) == set(EXPECT_USED)
    assert {"ecg_resnet50_transformer", "ecg_resnet_tiny_transformer"} <= set(ECG_NAMES)


@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_fusion_model(fusion):
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion=fusion, **TINY))
    mods = model.fusion.modalities
    assert (model.ecg_encoder is not None) == ("ecg" in mods)
    assert (model.cxr_encoder is not None) == ("cxr" in mods)
    batch = _batch()
    out = model(batch)
    used = torch.tensor(EXPECT_USED[fusion], dtype=torch.bool)
    assert out.used.shape == (4, 2) and out.used.dtype == torch.bool
    assert torch.equal(out.used, used)
    scored = used.any(1)
    assert out.score.shape == out.prob.shape == (4,)
    assert torch.isfinite(out.score[scored]).all()
    assert torch.isnan(out.score[~scored]).all()  # single-modality heads cannot score the others
    assert ((out.prob[scored] >= 0) & (out.prob[scored] <= 1)).all()
    for m, col in (("ecg", 0), ("cxr", 1)):
        s = out.branch_scores[m]
        if s is not None:
            assert s.shape == (4,)
            assert torch.isfinite(s[used[:, col]]).all() and torch.isnan(s[~used[:, col]]).all()
    losses = model.loss(out, batch["label"])
    assert "loss" in losses and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    _assert_all_grads(model)
    if fusion == "cooperative":
        assert set(losses) == {"loss", "fit", "agreement"}
        # one modality missing: score = 2 * the available branch
        torch.testing.assert_close(out.score[1], 2 * out.branch_scores["ecg"][1])
        torch.testing.assert_close(out.score[2], 2 * out.branch_scores["cxr"][2])
        torch.testing.assert_close(out.score[0], out.branch_scores["ecg"][0] + out.branch_scores["cxr"][0])
    if fusion == "late":
        assert set(losses) == {"loss", "bce_ecg", "bce_cxr"}
        torch.testing.assert_close(out.score[0], (out.branch_scores["ecg"][0] + out.branch_scores["cxr"][0]) / 2)


@pytest.mark.parametrize("fusion", ["cooperative", "early", "late"])
@pytest.mark.parametrize("drop", ["ecg", "cxr"])
def test_batch_without_a_modality_key(fusion, drop):
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion=fusion, **TINY)).eval()
    batch = _batch(has_ecg=[True] * 4, has_cxr=[True] * 4)
    del batch[drop]
    batch.pop(f"has_{drop}")
    out = model(batch)
    keep = "cxr" if drop == "ecg" else "ecg"
    assert torch.isfinite(out.score).all()
    assert out.used[:, 0 if keep == "ecg" else 1].all() and not out.used[:, 0 if drop == "ecg" else 1].any()
    assert out.branch_scores[drop] is None


def test_missing_rows_do_not_change_present_rows():
    """In eval mode a sample's score does not depend on the other samples or on padded rows."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion="cooperative", **TINY)).eval()
    batch = _batch()
    out = model(batch)
    batch["ecg"][2] = 5.0  # garbage in a row flagged absent
    batch["cxr"][1] = -3.0
    torch.testing.assert_close(model(batch).score, out.score)


def test_model_limb_leads():
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion="ecg", leads=LIMB_LEADS, **TINY))
    out = model(_batch(leads=LIMB_LEADS, has_ecg=[True] * 4))
    assert torch.isfinite(out.score).all()


def test_determinism_under_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(ModelConfig(fusion="cooperative", **TINY)).eval()
        outs.append(model(_batch()).score)
    torch.testing.assert_close(outs[0], outs[1], equal_nan=True)


def test_model_config_round_trip(tmp_path):
    cfg = ModelConfig(
        fusion="early", rho=0.3, leads=LIMB_LEADS, ecg_kwargs={"d_model": 32, "n_heads": 2},
        fusion_kwargs={"hidden": 0, "modality_dropout": 0.2}, cxr_pretrained=str(tmp_path / "w.pth"), **TINY,
    )
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()
    with pytest.raises(ConfigError):
        ModelConfig.from_dict({"fusion": "early", "bogus": 1})
    model = build_model(ModelConfig.from_dict({**cfg.to_dict(), "cxr_pretrained": False}))
    assert model.ecg_encoder.out_dim == 32 and model.ecg_encoder.leads == LIMB_LEADS
    with pytest.raises(ConfigError):
        build_model(ModelConfig(fusion="nope", **TINY))


# ---------------------------------------------------------------- losses


def test_cooperative_loss_formula_and_pos_weight():
    torch.manual_seed(0)
    head = create_fusion("cooperative", 5, 3, rho=0.7)
    x, z = torch.randn(6, 5), torch.randn(6, 3)
    y = torch.tensor([1.0, 0, 0, 1, float("nan"), 0])
    out = head({"ecg": x, "cxr": z})
    fe, fc = out.branch_scores["ecg"], out.branch_scores["cxr"]
    keep = ~torch.isnan(y)
    per_fit = 0.5 * (y - fe - fc) ** 2
    per_agree = 0.35 * (fe - fc) ** 2
    terms = head.loss(out, y)
    torch.testing.assert_close(terms["fit"], per_fit[keep].mean())
    torch.testing.assert_close(terms["agreement"], per_agree[keep].mean())
    torch.testing.assert_close(terms["loss"], terms["fit"] + terms["agreement"])
    w = torch.where(y == 1, 3.0, 1.0)[keep]
    terms = head.loss(out, y, pos_weight=3.0)
    torch.testing.assert_close(terms["loss"], ((per_fit + per_agree)[keep] * w).sum() / w.sum())
    assert torch.equal(out.prob, out.score.clamp(0, 1))


def test_bce_heads_pos_weight():
    torch.manual_seed(0)
    head = create_fusion("early", 4, 4, hidden=8)
    feats = {"ecg": torch.randn(5, 4), "cxr": torch.randn(5, 4)}
    y = torch.tensor([1.0, 0, 1, 0, 0])
    out = head.eval()(feats)
    want = F.binary_cross_entropy_with_logits(out.score, y, pos_weight=torch.tensor(4.0))
    torch.testing.assert_close(head.loss(out, y, pos_weight=4.0)["loss"], want)
    # all labels unknown: a zero loss that still backpropagates
    loss = head.loss(out, torch.full((5,), float("nan")))["loss"]
    assert loss.item() == 0.0 and loss.requires_grad


def test_early_modality_dropout():
    torch.manual_seed(0)
    head = create_fusion("early", 4, 4, modality_dropout=0.5).train()
    out = head({"ecg": torch.randn(200, 4), "cxr": torch.randn(200, 4)})
    single = out.used.sum(1) == 1
    assert 60 < int(single.sum()) < 140 and out.used.any(1).all()
    assert head.eval()({"ecg": torch.randn(8, 4), "cxr": torch.randn(8, 4)}).used.all()


def test_repeated_xray_rows_encoded_once_same_scores():
    """Evaluation repeats a record's X-ray for every ECG window: features are computed once per record."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet_tiny_transformer",
                                    cxr_encoder="cxr_tiny")).eval()
    calls = []
    model.cxr_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    ecg = torch.randn(5, 12, 200)
    cxr = torch.randn(2, 1, 64, 64)
    record_index = torch.tensor([0, 0, 0, 1, 1])
    batch = {"ecg": ecg, "cxr": cxr[record_index], "record_index": record_index}
    with torch.no_grad():
        deduped = model(batch).score
        plain = model({"ecg": ecg, "cxr": cxr[record_index]}).score
    assert calls == [2, 5]
    torch.testing.assert_close(deduped, plain)


# ---------------------------------------------------------------- task kinds: num_outputs + link

NAN = float("nan")
B_TASK = 8
# kind -> (num_outputs, link, encoded (B, k) target); NaN = unknown entry
TASK_KINDS = {
    "binary": (1, "logistic", torch.tensor([1.0, 0, 1, 0, NAN, 1, 0, 0])),
    "multiclass": (3, "softmax", F.one_hot(torch.tensor([0, 1, 2, 1, 0, 2, 2, 1]), 3).float()),
    "ordinal": (3, "cumulative", (torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])[:, None] > torch.arange(3)).float()),
    "multilabel": (2, "logistic", torch.tensor([[1.0, 0], [0, NAN], [1, 1], [NAN, 0], [0, 1], [1, NAN], [0, 0], [1, 1]])),
    "regression": (2, "identity", torch.randn(B_TASK, 2, generator=torch.Generator().manual_seed(5))),
}


def _task_features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    feats = {"ecg": torch.randn(B_TASK, 6, generator=g), "cxr": torch.randn(B_TASK, 5, generator=g)}
    present = {"ecg": torch.tensor([True] * 6 + [True, False]), "cxr": torch.tensor([True] * 6 + [False, True])}
    return feats, present


def _head_grads(head, feats, present, target, mask=None):
    head.zero_grad()
    out = head(feats, present)
    losses = head.loss(out, target, mask=mask)
    losses["loss"].backward()
    return out, losses, {n: p.grad.clone() for n, p in head.named_parameters()}


@pytest.mark.parametrize("kind", list(TASK_KINDS))
@pytest.mark.parametrize("fusion", FUSION_NAMES)
def test_fusion_every_task_kind(fusion, kind):
    k, link, target = TASK_KINDS[kind]
    torch.manual_seed(0)
    kw = {"hidden": 8, "dropout": 0.0} if fusion == "early" else {}
    head = create_fusion(fusion, 6, 5, num_outputs=k, link=link, **kw)
    feats, present = _task_features()
    out, losses, grads = _head_grads(head, feats, present, target)
    scored = out.used.any(1)
    m = k + 1 if link == "cumulative" else k
    want = (B_TASK,) if kind == "binary" else (B_TASK, k)
    assert out.score.shape == want and out.prob.shape == ((B_TASK,) if kind == "binary" else (B_TASK, m))
    assert torch.isfinite(out.score[scored]).all() and torch.isnan(out.score[~scored]).all()
    for b in ("ecg", "cxr"):
        if out.branch_scores[b] is not None:
            assert out.branch_scores[b].shape == want
    assert all(torch.isfinite(v) for v in losses.values())
    for name, g in grads.items():  # gradients reach every head parameter
        assert torch.isfinite(g).all() and g.abs().sum() > 0, f"no gradient at {name}"
    p = out.prob[scored]
    if link == "identity":
        torch.testing.assert_close(out.prob, out.score, equal_nan=True)
    else:
        assert ((p >= 0) & (p <= 1)).all()
    if link in ("softmax", "cumulative"):
        torch.testing.assert_close(p.sum(1), torch.ones(len(p)))
    if link == "cumulative":  # rank-consistent: P(y > j) non-increasing in j, for every head
        s = out.score[scored]
        assert (s[:, 1:] <= s[:, :-1] + 1e-6).all()
        gt = 1 - p.cumsum(1)[:, :-1]
        assert (gt[:, 1:] <= gt[:, :-1] + 1e-6).all()
    if kind == "multilabel":  # a NaN label changes neither the loss nor the gradients
        known = ~torch.isnan(target)
        for fill in (0.0, 1.0):
            filled = torch.where(known, target, torch.full_like(target, fill))
            _, losses2, grads2 = _head_grads(head, feats, present, filled, mask=known)
            torch.testing.assert_close(losses2["loss"], losses["loss"])
            for name in grads:
                torch.testing.assert_close(grads2[name], grads[name])
        _, losses3, _ = _head_grads(head, feats, present, torch.where(known, target, 1.0))
        assert not torch.allclose(losses3["loss"], losses["loss"])  # ...whereas a known 1 there does


@pytest.mark.parametrize("kind", ["multiclass", "ordinal", "multilabel", "regression"])
@pytest.mark.parametrize("fusion", ["cooperative", "late"])
def test_task_model_end_to_end_shapes(fusion, kind):
    k, link, target = TASK_KINDS[kind]
    torch.manual_seed(0)
    model = build_model(ModelConfig(fusion=fusion, num_outputs=k, link=link, **TINY))
    out = model(_batch())
    assert out.score.shape == (4, k)
    losses = model.loss(out, target[:4])
    losses["loss"].backward()
    _assert_all_grads(model)


def test_softmax_and_cumulative_losses_match_references():
    torch.manual_seed(0)
    feats, _ = _task_features()
    y = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    head = create_fusion("ecg", 6, None, num_outputs=3, link="softmax")
    out = head(feats)
    cw = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(head.loss(out, F.one_hot(y, 3).float(), pos_weight=cw)["loss"],
                               F.cross_entropy(out.score, y, weight=cw))
    torch.testing.assert_close(head.loss(out, F.one_hot(y, 3).float())["ce"], F.cross_entropy(out.score, y))
    head = create_fusion("cxr", None, 5, num_outputs=3, link="cumulative")
    out = head(feats)
    t = (y[:, None] > torch.arange(3)).float()  # CORAL targets
    want = sum(F.binary_cross_entropy_with_logits(out.score[:, j], t[:, j]) for j in range(3))
    torch.testing.assert_close(head.loss(out, t)["bce"], want)
    head = create_fusion("late", 6, 5, num_outputs=2, link="identity")
    out = head(feats)
    v = torch.randn(8, 2)
    terms = head.loss(out, v)
    assert set(terms) == {"loss", "mse_ecg", "mse_cxr"}
    torch.testing.assert_close(terms["mse_ecg"], 2 * F.mse_loss(out.branch_scores["ecg"], v))


def test_cumulative_layer_is_rank_consistent():
    from cardiofusion.models import CumulativeLinear

    layer = CumulativeLinear(4, 5)
    with torch.no_grad():
        layer.deltas.copy_(torch.tensor([-5.0, 3.0, 0.0, -1.0]))
    assert (layer.bias[1:] < layer.bias[:-1]).all()
    z = layer(torch.randn(100, 4) * 10)
    assert (z[:, 1:] <= z[:, :-1]).all()


def test_task_config_fields_and_errors():
    old = ModelConfig().to_dict()
    del old["num_outputs"], old["link"]
    cfg = ModelConfig.from_dict(old)  # configs written before tasks existed: the binary head
    assert (cfg.num_outputs, cfg.link) == (1, "logistic") and cfg.is_binary
    cfg = ModelConfig(fusion="early", num_outputs=4, link="softmax", **TINY)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad in ({"link": "probit"}, {"num_outputs": 0}, {"num_outputs": 1, "link": "softmax"}):
        with pytest.raises(ConfigError):
            ModelConfig(**bad)
    head = create_fusion("early", 4, 4, num_outputs=3, link="logistic")
    out = head({"ecg": torch.randn(2, 4), "cxr": torch.randn(2, 4)})
    with pytest.raises(ConfigError, match="encode_targets"):
        head.loss(out, torch.tensor([1.0, 0.0]))
    head = create_fusion("cooperative", 4, 4, num_outputs=2, link="identity")
    with pytest.raises(ConfigError, match="pos_weight"):
        head.loss(head({"ecg": torch.randn(2, 4), "cxr": torch.randn(2, 4)}), torch.zeros(2, 2), pos_weight=2.0)


def test_cooperative_prob_per_link():
    head = create_fusion("cooperative", 3, 3, num_outputs=3, link="softmax")
    score = torch.tensor([[0.2, 0.6, 0.9], [-0.5, 2.0, 0.0], [-1.0, -1.0, -2.0]])
    p = head._prob(score)
    torch.testing.assert_close(p[0], torch.tensor([0.2, 0.6, 0.9]) / 1.7)
    torch.testing.assert_close(p[1], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(p[2], torch.full((3,), 1 / 3))
    head = create_fusion("cooperative", 3, 3, num_outputs=3, link="cumulative")
    p = head._prob(torch.tensor([[1.3, 0.7, -0.2]]))
    torch.testing.assert_close(p, torch.tensor([[0.0, 0.3, 0.7, 0.0]]))
