"""Cross-modal alignment (paper 003 stage 2): CLIP loss, measurement-aware negatives, frozen teacher, retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from torch import nn

from cardiofusion.errors import ConfigError
from cardiofusion.models import create_cxr_encoder, create_ecg_encoder
from cardiofusion.models.alignment import (
    ClipLoss,
    ECGImageAligner,
    FrozenTeacher,
    clip_loss,
    negative_weights,
    retrieval_accuracy,
)

E = torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 1]])
C = torch.tensor([[1.0, 0.2, 0], [0.3, 1, 0], [0, 1, 1]])


def _reference_loss(e: np.ndarray, c: np.ndarray, tau: float, w: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted InfoNCE both ways in numpy: -log(exp(s_ii) / (exp(s_ii) + sum_k w_ik exp(s_ik)))."""
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    s = e @ c.T / tau
    w = np.ones_like(s) if w is None else w
    out = []
    for m in (s, s.T):
        rows = [logsumexp(m[i], b=w[i]) - m[i, i] for i in range(len(m))]
        out.append(float(np.mean(rows)))
    return out[0], out[1]


# ---------------------------------------------------------------- CLIP loss


def test_clip_loss_reference_values():
    out = ClipLoss(temperature=0.1)(E, C)
    assert out["loss"].item() == pytest.approx(0.165851, abs=1e-6)
    assert out["clip_ecg_to_image"].item() == pytest.approx(0.189595, abs=1e-6)
    assert out["clip_image_to_ecg"].item() == pytest.approx(0.142107, abs=1e-6)
    assert out["temperature"].item() == pytest.approx(0.1)
    e2i, i2e = _reference_loss(E.numpy(), C.numpy(), 0.1)
    assert (e2i, i2e) == (pytest.approx(0.189595, abs=1e-6), pytest.approx(0.142107, abs=1e-6))


@pytest.mark.parametrize("b", [2, 5, 16])
def test_clip_loss_identical_embeddings_is_log_b(b):
    z = torch.randn(1, 8).expand(b, 8)
    for loss in (ClipLoss(), ClipLoss(temperature=0.05, learnable=True)):
        assert loss(z, z)["loss"].item() == pytest.approx(math.log(b), rel=1e-6)


def test_clip_loss_scale_invariant_and_matches_reference():
    g = torch.Generator().manual_seed(0)
    e, c = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    base = clip_loss(e, c, 10.0)
    torch.testing.assert_close(clip_loss(7.5 * e, 0.01 * c, 10.0)["loss"], base["loss"])
    ref = _reference_loss(e.numpy(), c.numpy(), 0.1)
    assert base["clip_ecg_to_image"].item() == pytest.approx(ref[0], rel=1e-5)
    assert base["clip_image_to_ecg"].item() == pytest.approx(ref[1], rel=1e-5)


def test_measurement_aware_negatives():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(6, 3, generator=g)
    phi[4] = phi[1]  # two patients with identical measurements: not each other's negatives
    phi[5, 0] = float("nan")
    w = negative_weights(phi, sigma=0.5)
    p = phi.numpy()
    ref = np.ones((6, 6))
    for i in range(6):
        for k in range(6):
            if i != k:
                both = np.isfinite(p[i]) & np.isfinite(p[k])
                ref[i, k] = 1 - np.exp(-np.sum((p[i, both] - p[k, both]) ** 2) / 0.25)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-5, atol=1e-7)
    assert w[1, 4] == 0 and w[4, 1] == 0 and torch.all(w.diagonal() == 1)
    e, c = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    out = ClipLoss(temperature=0.1, measurement_sigma=0.5)(e, c, measurements=phi)
    ref_e2i, ref_i2e = _reference_loss(e.numpy(), c.numpy(), 0.1, ref)
    assert out["clip_ecg_to_image"].item() == pytest.approx(ref_e2i, rel=1e-5)
    assert out["clip_image_to_ecg"].item() == pytest.approx(ref_i2e, rel=1e-5)
    # far-apart measurements: weights ~1, the plain loss
    far = torch.arange(6, dtype=torch.float32)[:, None] * 100
    torch.testing.assert_close(ClipLoss()(e, c, far)["loss"], ClipLoss()(e, c)["loss"])
    e_req = e.clone().requires_grad_(True)
    ClipLoss()(e_req, c, phi)["loss"].backward()  # a removed negative (weight 0) gives finite gradients
    assert torch.isfinite(e_req.grad).all()
    assert negative_weights(torch.full((3, 2), float("nan")))[0, 1] == 1  # nothing in common: a full negative


def test_temperature_fixed_or_learnable():
    fixed = ClipLoss()
    assert list(fixed.parameters()) == [] and fixed.temperature == pytest.approx(0.1)
    learn = ClipLoss(temperature=0.07, learnable=True)
    e, c = torch.randn(4, 3), torch.randn(4, 3)
    learn(e, c)["loss"].backward()
    assert learn.log_logit_scale.grad is not None and learn.log_logit_scale.grad != 0
    with torch.no_grad():
        learn.log_logit_scale.fill_(10.0)
    assert learn.logit_scale.item() == pytest.approx(100.0)  # capped as CLIP
    with pytest.raises(ConfigError):
        ClipLoss(temperature=0.0)
    with pytest.raises(ConfigError):
        clip_loss(torch.randn(3, 2), torch.randn(4, 2))


# ---------------------------------------------------------------- frozen teacher


def _aligner(drop_rate: float = 0.5) -> ECGImageAligner:
    torch.manual_seed(0)
    cxr = create_cxr_encoder("cxr_tiny", drop_rate=drop_rate)
    teacher = FrozenTeacher(cxr, embed_dim=16)
    return ECGImageAligner(create_ecg_encoder("ecg_vit_tiny"), teacher)


def test_teacher_unchanged_by_training_and_always_eval():
    model = _aligner().train()
    teacher = model.teacher
    assert model.training and model.ecg_encoder.training and teacher.projection.training
    assert not any(m.training for m in teacher.encoder.modules())  # dropout off, BN statistics frozen
    before = {k: v.clone() for k, v in teacher.encoder.state_dict().items()}  # parameters and BN buffers
    assert any("running_mean" in k for k in before)
    proj_before = {k: v.clone() for k, v in teacher.projection.state_dict().items()}
    ecg_before = {k: v.clone() for k, v in model.ecg_encoder.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)  # everything handed over
    batch = {"ecg": torch.randn(4, 12, 64), "cxr": torch.randn(4, 1, 64, 64),
             "has_ecg": torch.ones(4, dtype=torch.bool), "has_cxr": torch.ones(4, dtype=torch.bool)}
    out = model(batch)
    assert set(out) == {"loss", "clip_ecg_to_image", "clip_image_to_ecg", "temperature"}
    assert all(v.dim() == 0 for v in out.values())  # scalars only: every term can be logged
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.encoder.parameters())
    opt.step()
    model(batch)  # another train-mode forward
    after = teacher.encoder.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"teacher {k} changed"
    assert any(not torch.equal(v, teacher.projection.state_dict()[k]) for k, v in proj_before.items())
    assert any(not torch.equal(v, model.ecg_encoder.state_dict()[k]) for k, v in ecg_before.items())
    # dropout (drop_rate 0.5) is off: a train-mode teacher is deterministic
    x = batch["cxr"]
    torch.testing.assert_close(teacher.features(x), teacher.features(x))
    with pytest.raises(ConfigError, match="paired"):
        model({**batch, "has_cxr": torch.tensor([True, False, True, True])})


def test_teacher_refuses_a_state_without_projection():
    enc = nn.Linear(5, 3)
    enc.out_dim = 3
    teacher = FrozenTeacher(enc, embed_dim=2, hidden=4)
    state = teacher.state_dict()
    without = {k: v for k, v in state.items() if not k.startswith("projection.")}
    with pytest.raises(ConfigError, match="projection"):
        teacher.load_state_dict(without, strict=False)  # the public code's strict=False load of an untrained head
    teacher.load_state_dict(state)
    assert all(p.requires_grad for p in teacher.projection.parameters())
    assert not any(p.requires_grad for p in teacher.encoder.parameters())
    with pytest.raises(ConfigError):
        FrozenTeacher(nn.Linear(5, 3), embed_dim=2)  # no out_dim: not an encoder


# ---------------------------------------------------------------- retrieval


def test_retrieval_accuracy_against_brute_force():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(40, 6, generator=g), torch.randn(40, 6, generator=g)
    k[:10] = q[:10] * 3  # ten exact pairs
    out = retrieval_accuracy(q, k, ks=(1, 5))
    qn = q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True)
    kn = k.numpy() / np.linalg.norm(k.numpy(), axis=1, keepdims=True)
    sim = qn @ kn.T
    for name, s in (("ecg_to_image", sim), ("image_to_ecg", sim.T)):
        ranks = np.array([np.sum(s[i] > s[i, i]) for i in range(40)])  # continuous data: no ties
        for kk in (1, 5):
            assert out[f"{name}_top{kk}"] == pytest.approx(np.mean(ranks < kk))
    assert out["chance_top1"] == pytest.approx(1 / 40) and out["chance_top5"] == pytest.approx(5 / 40)
    assert out["ecg_to_image_top1"] >= 10 / 40
    same = retrieval_accuracy(torch.ones(8, 3), torch.ones(8, 3), ks=(1, 5))  # all tied: chance, not 100 %
    assert same["ecg_to_image_top1"] == pytest.approx(1 / 8) and same["image_to_ecg_top5"] == pytest.approx(5 / 8)
    perfect = retrieval_accuracy(torch.eye(5), torch.eye(5), ks=(1,))
    assert perfect["ecg_to_image_top1"] == 1.0


def test_alignment_retrieval_beats_chance_after_training():
    """ECGs and images sharing a planted latent: a few hundred tiny steps align them far above chance."""
    g = torch.Generator().manual_seed(0)
    n, n_latent = 256, 4
    mix_ecg = torch.randn(n_latent, 12, 1, generator=g)
    wave = torch.sin(torch.linspace(0, 6 * math.pi, 64))

    def make(m: int, gen: torch.Generator):
        z = torch.randn(m, n_latent, generator=gen)
        ecg = torch.einsum("bk,klt->blt", z, mix_ecg * wave) + 0.1 * torch.randn(m, 12, 64, generator=gen)
        img = torch.cat([z, torch.randn(m, 4, generator=gen)], dim=1)  # the image 'pixels': latent + nuisance
        return ecg, img

    torch.manual_seed(0)
    img_encoder = nn.Sequential(nn.Linear(8, 16), nn.Tanh())  # a 'pretrained' image encoder, frozen below
    img_encoder.out_dim = 16
    model = ECGImageAligner(create_ecg_encoder("ecg_vit_tiny", width=32, depth=1),
                            FrozenTeacher(img_encoder, embed_dim=16))
    ecg, img = make(n, g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.05)
    model.train()
    for _step in range(200):
        idx = torch.randint(0, n, (32,), generator=g)
        loss = model({"ecg": ecg[idx], "cxr": img[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ecg_val, img_val = make(64, torch.Generator().manual_seed(99))
    with torch.no_grad():
        out = retrieval_accuracy(model.embed_ecg(ecg_val), model.embed_image(img_val), ks=(1, 5))
    assert out["ecg_to_image_top1"] > 5 * out["chance_top1"]
    assert out["ecg_to_image_top5"] > 3 * out["chance_top5"] and out["image_to_ecg_top5"] > 3 * out["chance_top5"]


def test_projection_norm_learns_from_features_that_share_one_mean_direction(one_thread):
    """A pooled ViT's features can share one large mean direction (pairwise cosine ~0.99): linear projections
    then give near-identical embeddings and the CLIP loss stays at log B; standardising the features over the
    batch (``norm=True``, BatchNorm1d) lets the same optimiser learn the pairing."""
    from cardiofusion.models.alignment import ProjectionHead

    g = torch.Generator().manual_seed(0)
    n, d = 256, 16
    latent = torch.randn(n, 4, generator=g)
    mean = 50.0 * torch.ones(d)  # the shared direction dwarfs the per-record signal
    x_ecg = mean + latent @ torch.randn(4, d, generator=g) * 0.5 + 0.1 * torch.randn(n, d, generator=g)
    x_img = mean + latent @ torch.randn(4, d, generator=g) * 0.5 + 0.1 * torch.randn(n, d, generator=g)
    assert torch.nn.functional.cosine_similarity(x_ecg[:1], x_ecg[1:]).mean() > 0.99
    final = {}
    for norm in (False, True):
        torch.manual_seed(0)
        pe, pi = ProjectionHead(d, 8, norm=norm), ProjectionHead(d, 8, norm=norm)
        opt = torch.optim.AdamW([*pe.parameters(), *pi.parameters()], lr=3e-3)
        for _ in range(150):
            j = torch.randperm(n, generator=g)[:32]
            loss = clip_loss(pe(x_ecg[j]), pi(x_img[j]))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        pe.eval(), pi.eval()
        with torch.no_grad():
            final[norm] = retrieval_accuracy(pe(x_ecg), pi(x_img))["ecg_to_image_top5"]
    assert final[True] > 5 * 5 / n and final[True] > 2 * final[False]
