"""LS-EMVAE (paper 002) model parts against closed forms and a direct NumPy re-derivation of the formulas.

Closed forms from docs/recipes.md (Paper 002): prior x N(2, 1) = N(1, 0.5); prior x N(2, 1) x N(-1, 0.25) has
precision 6 and mean -1/3; N(-1, 1) and N(1, 1) at 1/2 each moment-match to N(0, 2); KL(N(1, 1) || N(0, 1)) = 0.5
per dimension, KL(N(0, 2) || N(0, 1)) = 0.15343; an absent lead leaves the product unchanged; no lead -> the prior.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.models import create_ecg_encoder
from cardiofusion.models.lsvae import (
    LSVAEConfig,
    LSVAEECGEncoder,
    LSVAEHead,
    LeadDecoder,
    LeadEncoder,
    beta_schedule,
    build_lsvae,
    gaussian_kl,
    hime_posterior,
    mixture_of_gaussians,
    product_of_experts,
)
from cardiofusion.records import CANONICAL_LEADS, LIMB_LEADS, ECGRecord

T = 64  # tiny VAEs: 64 samples per lead


def _t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- closed forms


def test_product_of_experts_closed_forms():
    # prior x N(2, 1) = N(1, 0.5)
    mu, lv = product_of_experts(_t([[2.0]]), _t([[0.0]]), prior=True)
    torch.testing.assert_close(mu, _t([1.0]))
    torch.testing.assert_close(lv.exp(), _t([0.5]))
    # prior x N(2, 1) x N(-1, 0.25): precision 1 + 1 + 4 = 6, mean (2 - 4) / 6 = -1/3
    mu, lv = product_of_experts(_t([[2.0], [-1.0]]), _t([[0.0], [math.log(0.25)]]), prior=True)
    torch.testing.assert_close(1 / lv.exp(), _t([6.0]))
    torch.testing.assert_close(mu, _t([-1 / 3]))
    # an absent expert (whatever its values) leaves the product unchanged
    mu3, lv3 = product_of_experts(_t([[2.0], [-1.0], [50.0]]), _t([[0.0], [math.log(0.25)], [-9.0]]),
                                  torch.tensor([True, True, False]), prior=True)
    torch.testing.assert_close((mu3, lv3), (mu, lv))
    # no expert at all: the prior, with or without the prior expert
    for prior in (True, False):
        mu0, lv0 = product_of_experts(_t([[3.0]]), _t([[1.0]]), torch.tensor([False]), prior=prior)
        torch.testing.assert_close((mu0, lv0), (_t([0.0]), _t([0.0])))


def test_moment_matching_and_kl_closed_forms():
    mu = _t([[[-1.0], [1.0]]])  # (B=1, K=2, D=1)
    lv = torch.zeros_like(mu)
    w = _t([0.5, 0.5])
    m, v = mixture_of_gaussians(mu, lv, w, "moment")
    torch.testing.assert_close(m, _t([[0.0]]))
    torch.testing.assert_close(v.exp(), _t([[2.0]]))
    # the original's "mixture" averages log-variances: N(0, 1) here, not the mixture's spread
    m, v = mixture_of_gaussians(mu, lv, w, "param_avg")
    torch.testing.assert_close((m, v.exp()), (_t([[0.0]]), _t([[1.0]])))
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension; KL(N(0, 2) || N(0, 1)) = 0.15343
    torch.testing.assert_close(gaussian_kl(_t(1.0, 1.0, 1.0), _t(0.0, 0.0, 0.0)), torch.tensor(1.5, dtype=torch.float64))
    kl = gaussian_kl(_t([0.0]), _t([math.log(2.0)]))
    assert abs(float(kl) - 0.15343) < 5e-6


def test_no_lead_gives_the_prior_in_every_mode():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 12, 4, generator=g, dtype=torch.float64)
    lv = torch.randn(2, 12, 4, generator=g, dtype=torch.float64)
    groups = LSVAEConfig().group_indices()
    mask = torch.zeros(2, 12, dtype=torch.bool)
    for prior in ("every_group", "first_group"):
        for mixture in ("moment", "param_avg", "sample"):
            post = hime_posterior(mu, lv, groups, mask, prior=prior, mixture=mixture, sample=False)
            torch.testing.assert_close(post.mu, torch.zeros_like(post.mu))
            torch.testing.assert_close(post.logvar, torch.zeros_like(post.logvar))
            torch.testing.assert_close(post.kl, torch.zeros(2, dtype=torch.float64))


# ---------------------------------------------------------------- HiME against NumPy


def _np_hime(mu, lv, mask, groups, prior, mixture):
    """Direct re-derivation: per group prod of N(0,1) (if the group has the prior) and present leads; equal
    weights over groups with a present lead (all groups when none); mixture summarised by ``mixture``."""
    b, _, d = mu.shape
    out_mu, out_var, out_kl = np.zeros((b, d)), np.zeros((b, d)), np.zeros(b)
    for i in range(b):
        comps = []
        for gi, idx in enumerate(groups):
            prec, num = np.zeros(d), np.zeros(d)
            if prior == "every_group" or gi == 0:
                prec += 1.0
            present = [j for j in idx if mask[i, j]]
            for j in present:
                prec += np.exp(-lv[i, j])
                num += np.exp(-lv[i, j]) * mu[i, j]
            if not prec.any():
                prec, num = np.ones(d), np.zeros(d)
            comps.append((num / prec, 1.0 / prec, bool(present)))
        use = [c for c in comps if c[2]] or comps
        w = 1.0 / len(use)
        m = sum(w * c[0] for c in use)
        if mixture == "param_avg":
            var = np.exp(sum(w * np.log(c[1]) for c in use))
        else:
            var = sum(w * (c[1] + c[0] ** 2) for c in use) - m**2
        out_mu[i], out_var[i] = m, var
        if mixture == "sample":
            out_kl[i] = sum(w * 0.5 * np.sum(c[1] + c[0] ** 2 - 1 - np.log(c[1])) for c in use)
        else:
            out_kl[i] = 0.5 * np.sum(var + m**2 - 1 - np.log(var))
    return out_mu, out_var, out_kl


@pytest.mark.parametrize("prior", ["every_group", "first_group"])
@pytest.mark.parametrize("mixture", ["moment", "param_avg", "sample"])
def test_hime_equals_numpy_rederivation(prior, mixture):
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(4, 12, 3, generator=g, dtype=torch.float64)
    lv = 0.5 * torch.randn(4, 12, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[1, 6:] = False  # limb leads only
    mask[2, [0, 4, 9]] = False
    mask[3, :3] = False  # first group empty
    groups = LSVAEConfig().group_indices()
    post = hime_posterior(mu, lv, groups, mask, prior=prior, mixture=mixture, sample=False)
    ref_mu, ref_var, ref_kl = _np_hime(mu.numpy(), lv.numpy(), mask.numpy(), groups, prior, mixture)
    np.testing.assert_allclose(post.mu.numpy(), ref_mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.logvar.exp().numpy(), ref_var, rtol=1e-10)
    np.testing.assert_allclose(post.kl.numpy(), ref_kl, rtol=1e-10)
    # a masked lead's values do not matter
    mu2, lv2 = mu.clone(), lv.clone()
    mu2[~mask], lv2[~mask] = 77.0, -5.0
    post2 = hime_posterior(mu2, lv2, groups, mask, prior=prior, mixture=mixture, sample=False)
    torch.testing.assert_close((post2.mu, post2.logvar, post2.kl), (post.mu, post.logvar, post.kl))


@pytest.mark.parametrize("mixture", ["moment", "sample"])
def test_z_is_drawn_from_the_posterior_whose_kl_is_reported(mixture):
    """Many draws for one input: z's mean and variance are the (moment-matched) posterior's; in ``sample``
    mode z follows the mixture (one group per draw) and the KL is the bound sum_k w_k KL(q_k || p)."""
    torch.manual_seed(0)
    mu = torch.tensor([[[-2.0], [2.0]]], dtype=torch.float64).expand(20000, 2, 1)
    lv = torch.zeros_like(mu)
    groups = [[0], [1]]
    post = hime_posterior(mu, lv, groups, prior="first_group", mixture=mixture)
    # group 0: prior x N(-2, 1) = N(-1, 0.5); group 1 (no prior): N(2, 1); mixture mean 0.5, variance 3
    z = post.z[:, 0]
    assert abs(float(z.mean()) - 0.5) < 0.05 and abs(float(z.var()) - 3.0) < 0.1
    torch.testing.assert_close(post.mu[0], _t(0.5))
    torch.testing.assert_close(post.logvar[0].exp(), _t(3.0))
    if mixture == "moment":
        torch.testing.assert_close(post.kl[0], gaussian_kl(post.mu[0], post.logvar[0]))
    else:
        kl_0 = 0.5 * (0.5 + 1 - 1 - math.log(0.5))  # KL(N(-1, 0.5) || N(0, 1))
        kl_1 = 0.5 * (1 + 4 - 1 - 0)  # KL(N(2, 1) || N(0, 1))
        torch.testing.assert_close(post.kl[0], torch.tensor(0.5 * kl_0 + 0.5 * kl_1, dtype=torch.float64))
        comp = post.component
        assert 0.45 < comp.double().mean() < 0.55  # both groups drawn, equal weights
        for k, (m, v) in enumerate([(-1.0, 0.5), (2.0, 1.0)]):  # each draw comes from its group's Gaussian
            zk = z[comp == k]
            assert abs(float(zk.mean()) - m) < 0.05 and abs(float(zk.var()) - v) < 0.05


# ---------------------------------------------------------------- sizes, shapes, gradients


def test_full_size_parameter_counts():
    assert _n_params(LeadEncoder()) == 20_488_352
    assert _n_params(LeadDecoder()) == 10_290_353
    assert _n_params(LSVAEHead(6 * 256, 2)) == 196_994
    # the paper-size face on the six limb leads: posterior means 6 x 256, its head's hidden layer 1536 -> 128
    face = LSVAEECGEncoder(LIMB_LEADS, arch="paper", head_hidden=128)
    assert face.out_dim == 128 and _n_params(face.project) + 128 * 2 + 2 == 196_994
    assert _n_params(face.encoders) == 6 * (20_488_352 - (64 * 625 * 256 + 256))  # no log-variance layers


@pytest.mark.parametrize("decoder", ["per_lead", "conditioned"])
@pytest.mark.parametrize("mixture", ["moment", "param_avg", "sample"])
def test_small_variant_shapes_and_every_parameter_gets_a_gradient(decoder, mixture):
    torch.manual_seed(0)
    vae = build_lsvae("small", n_samples=128, decoder=decoder, mixture=mixture)
    x = torch.randn(3, 12, 128)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 6:] = False
    out = vae(x, mask)
    assert out.mu.shape == out.logvar.shape == (3, 12, 32)
    assert out.posterior.z.shape == (3, 32) and out.recon.shape == (3, 12, 128)
    terms = vae.loss(out, x, beta=0.3)
    assert set(terms) == {"loss", "recon", "kl", "align", "beta"}
    torch.testing.assert_close(terms["loss"], terms["recon"] + 0.3 * terms["kl"] + 0.1 * terms["align"])
    terms["loss"].backward()
    for name, p in vae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # reconstructions differ across leads (one decoder per lead, or a lead-conditioned one)
    assert not torch.allclose(out.recon[:, 0], out.recon[:, 1])


def test_absent_leads_do_not_count_in_reconstruction_or_alignment():
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T)
    x = torch.randn(2, 12, T)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 6:] = False
    x2 = x.clone()
    x2[:, 6:] = 100.0
    a = vae.loss(vae(x, mask, sample=False), x)
    b = vae.loss(vae(x2, mask, sample=False), x2)
    for k in ("recon", "kl", "align", "loss"):
        torch.testing.assert_close(a[k], b[k])


def test_alignment_targets():
    torch.manual_seed(0)
    x = torch.randn(3, 12, T, dtype=torch.float64)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 6:] = False
    for target in ("lead_mean", "fused"):
        vae = build_lsvae("tiny", n_samples=T, align_target=target).double()
        out = vae(x, mask, sample=False)
        mu, m = out.mu.detach().numpy(), mask.numpy()
        if target == "fused":
            ref_target = out.posterior.mu.detach().numpy()
        else:
            ref_target = np.stack([mu[i][m[i]].mean(0) for i in range(3)])
        per = [((mu[i, j] - ref_target[i]) ** 2).mean() for i in range(3) for j in range(12) if m[i, j]]
        np.testing.assert_allclose(vae.loss(out, x)["align"].item(), np.mean(per), rtol=1e-10)


def test_two_half_batches_average_to_the_full_batch_gradient():
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T).double()
    x = torch.randn(4, 12, T, dtype=torch.float64)

    def grads(xb):
        vae.zero_grad()
        vae.loss(vae(xb, sample=False), xb, beta=0.5)["loss"].backward()
        return [p.grad.clone() for p in vae.parameters()]

    full, h1, h2 = grads(x), grads(x[:2]), grads(x[2:])
    for f, a, b in zip(full, h1, h2):
        torch.testing.assert_close(f, (a + b) / 2)


def test_fifty_steps_halve_the_reconstruction_loss():
    torch.manual_seed(0)
    vae = build_lsvae("small", n_samples=T)
    t = torch.linspace(0, 1, T)
    x = torch.stack([torch.stack([torch.sin(2 * math.pi * (k + 1) * t + i) for k in range(12)]) for i in range(8)])
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-2)
    first = None
    for _ in range(50):
        terms = vae.loss(vae(x), x, beta=0.01)
        first = float(terms["recon"].detach()) if first is None else first
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    with torch.no_grad():
        last = float(vae.loss(vae(x, sample=False), x)["recon"])
    assert last < first / 2, (first, last)


def test_beta_schedule():
    assert beta_schedule(0, 50) == pytest.approx(1 / 50)
    assert beta_schedule(24, 50) == pytest.approx(0.5)
    assert beta_schedule(49, 50) == 1.0 == beta_schedule(200, 50) == beta_schedule(0, 0)
    values = [beta_schedule(e, 10) for e in range(15)]
    assert values == sorted(values) and np.allclose(np.diff(values[:10]), 0.1)


def test_config_round_trip_and_validation():
    cfg = LSVAEConfig(arch="small", leads=LIMB_LEADS, mixture="sample", groups=(("I", "II", "III"), ("aVR", "aVL", "aVF")))
    again = LSVAEConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.group_indices() == [[0, 1, 2], [3, 4, 5]]
    assert LSVAEConfig(leads=LIMB_LEADS).group_indices() == [[0, 1, 2], [3, 4, 5]]  # chest groups dropped
    with pytest.raises(ConfigError, match="unknown LS-EMVAE settings: mixtur"):
        LSVAEConfig.from_dict({"mixtur": "moment"})
    with pytest.raises(ConfigError, match="no LS-EMVAE group"):
        LSVAEConfig(groups=(("I", "II"),))
    with pytest.raises(ConfigError, match="two LS-EMVAE groups"):
        LSVAEConfig(groups=(("I", "II"), ("II", "III")) + LSVAEConfig().groups[1:])
    with pytest.raises(ConfigError, match="mixture"):
        LSVAEConfig(mixture="geometric")
    with pytest.raises(ConfigError, match="exactly 5000 samples"):
        LeadEncoder()(torch.zeros(1, 1, 4000))


# ---------------------------------------------------------------- reference_compat against NumPy


def test_reference_compat_equals_the_original_formulas():
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T, reference_compat=True).double()
    x = torch.randn(3, 12, T, dtype=torch.float64)
    out = vae(x, sample=False)
    terms = vae.loss(out, x, beta=0.2)
    mu, lv = out.mu.detach().numpy(), out.logvar.detach().numpy()  # (B, 12, D)
    eps = 1e-8
    # groups by position in fours of three, the prior appended after them and so never used
    experts_mu = np.concatenate([mu, np.zeros_like(mu[:, :1])], 1)
    experts_lv = np.concatenate([lv, np.zeros_like(lv[:, :1])], 1)
    g_mu, g_lv = [], []
    for g in range(4):
        sl = slice(3 * g, 3 * g + 3)
        prec = 1.0 / (np.exp(experts_lv[:, sl]) + eps)
        g_mu.append((experts_mu[:, sl] * prec).sum(1) / prec.sum(1))
        g_lv.append(np.log(1.0 / prec.sum(1) + eps))
    f_mu, f_lv = np.mean(g_mu, 0), np.mean(g_lv, 0)
    np.testing.assert_allclose(out.posterior.mu.detach().numpy(), f_mu, rtol=1e-10)
    np.testing.assert_allclose(out.posterior.logvar.detach().numpy(), f_lv, rtol=1e-10)
    # one shared decoder, one z: every lead gets the same reconstruction
    rec = vae.decoder(torch.from_numpy(f_mu)).detach().numpy()  # (B, T)
    np.testing.assert_allclose(out.recon.detach().numpy(), np.repeat(rec[:, None], 12, 1), rtol=1e-12)
    b = x.shape[0]
    xn = x.numpy()
    recon = sum(((rec - xn[:, i]) ** 2).sum() for i in range(12)) * 1e-3 / b
    joint_mu, joint_lv = mu.mean(1), lv.mean(1)  # KL on the averaged encoder parameters
    kl = (-0.5 * np.sum(1 + joint_lv - joint_mu**2 - np.exp(joint_lv), axis=1)).sum() / b
    align = sum(((mu[:, i] - joint_mu) ** 2).mean() for i in range(12)) / 12
    np.testing.assert_allclose(terms["recon"].item(), recon, rtol=1e-10)
    np.testing.assert_allclose(terms["kl"].item(), kl, rtol=1e-10)
    np.testing.assert_allclose(terms["align"].item(), align, rtol=1e-10)
    np.testing.assert_allclose(terms["loss"].item(), recon + 0.2 * kl + 0.1 * align, rtol=1e-10)
    # the default differs on the same encoders: prior in every group, KL of the sampled (moment) posterior
    default = build_lsvae("tiny", n_samples=T, decoder="per_lead").double()
    default.encoders.load_state_dict(vae.encoders.state_dict())
    assert not torch.allclose(default(x, sample=False).posterior.mu, out.posterior.mu)


# ---------------------------------------------------------------- the fine-tuning face


def test_face_takes_encoders_by_lead_name_and_avl_gets_avl():
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T)
    t = torch.linspace(0, 1, T)
    x12 = torch.stack([torch.sin(2 * math.pi * (i + 1) * t) * (i + 1) for i in range(12)]).expand(2, 12, T).clone()
    limb = LSVAEECGEncoder.from_vae(vae, LIMB_LEADS)
    seen = {}
    hooks = [limb.encoders[lead].conv.register_forward_hook(lambda m, i, o, lead=lead: seen.__setitem__(lead, i[0]))
             for lead in LIMB_LEADS]
    feat = limb(x12[:, :6]).view(2, 6, -1)
    for h in hooks:
        h.remove()
    avl = CANONICAL_LEADS.index("aVL")
    torch.testing.assert_close(seen["aVL"][:, 0], x12[:, avl])  # the aVL encoder received aVL
    for i, lead in enumerate(LIMB_LEADS):  # each block is the VAE's encoder of that lead on that lead
        torch.testing.assert_close(feat[:, i], vae.encoders[lead](x12[:, i : i + 1])[0])
    # rows in another order: still matched by name
    swapped = LSVAEECGEncoder.from_vae(vae, ("aVF", "aVL"))
    out = swapped(x12[:, [5, 4]]).view(2, 2, -1)
    torch.testing.assert_close(out[:, 1], feat[:, 4])
    torch.testing.assert_close(out[:, 0], feat[:, 5])
    assert not torch.allclose(out[:, 0], out[:, 1])


def test_face_loads_a_saved_vae_file_and_refuses_a_missing_lead(tmp_path):
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T, leads=LIMB_LEADS)
    path = tmp_path / "vae.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in vae.state_dict().items()}}, path)
    face = create_ecg_encoder("lsvae_tiny", leads=("II", "aVL"), pretrained=str(path))
    x = torch.randn(2, 2, T)
    torch.testing.assert_close(face(x)[:, 8:], vae.encoders["aVL"](x[:, 1:2])[0])
    with pytest.raises(ConfigError, match="no encoder for lead\\(s\\) V1"):
        create_ecg_encoder("lsvae_tiny", leads=("I", "V1"), pretrained=str(path))
    with pytest.raises(ConfigError, match="does not fit"):
        create_ecg_encoder("lsvae", leads=("I",), pretrained=str(path))  # small != tiny


def test_face_mask_invariance_and_frozen_finetuning():
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T)
    face = LSVAEECGEncoder.from_vae(vae, LIMB_LEADS, head_hidden=16, frozen=True, dropout=0.0)
    assert face.out_dim == 16
    x = torch.randn(4, 6, T)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[0, 3:] = False
    x2 = x.clone()
    x2[0, 3:] = 50.0
    torch.testing.assert_close(face(x, mask), face(x2, mask))
    head = torch.nn.Linear(16, 2)
    before_enc = {k: v.clone() for k, v in face.encoders.state_dict().items()}
    before_proj = [p.clone() for p in face.project.parameters()]
    opt = torch.optim.Adam([p for p in [*face.parameters(), *head.parameters()] if p.requires_grad], lr=1e-2)
    face.train()
    assert not face.encoders.training
    loss = torch.nn.functional.cross_entropy(head(face(x, mask)), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    opt.step()
    for k, v in face.encoders.state_dict().items():
        torch.testing.assert_close(v, before_enc[k])
    assert any(not torch.equal(a, b) for a, b in zip(before_proj, face.project.parameters()))
    # Grad-CAM on the frozen face in eval mode: the maps (B * L, C, T') still get gradients
    acts = []
    h = face.gradcam_layer.register_forward_hook(lambda m, i, o: acts.append(o))
    out = face.eval()(x, mask)
    h.remove()
    (grad,) = torch.autograd.grad(out.sum(), acts[0])
    assert acts[0].shape[0] == 4 * 6 and grad.abs().sum() > 0


# ---------------------------------------------------------------- the paper's preprocessing


def test_paper_preprocessing():
    import neurokit2 as nk

    from cardiofusion.transforms.vae_preprocess import LSVAE_PREPROCESSING, ecg_preprocessing, lsvae_preprocess_ecg

    assert ecg_preprocessing(LSVAE_PREPROCESSING) is lsvae_preprocess_ecg
    with pytest.raises(ConfigError, match="unknown ECG preprocessing"):
        ecg_preprocessing("nope")
    fs, n = 250.0, 1000
    g = np.random.default_rng(0)
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * (1 + 0.2 * i) * t) + 0.05 * g.standard_normal(n) for i in range(12)])
    sig[4, 100:110] = np.nan  # a gap in aVL
    rec = ECGRecord(signal=sig.astype(np.float32), fs=fs, leads=CANONICAL_LEADS, source="rec1.hea", format="numpy")
    out = lsvae_preprocess_ecg(rec, leads=("aVL", "I"))  # read by name, in the order asked
    assert out.shape == (2, n) and out.dtype == np.float32
    for row, i in zip(out, (4, 0)):
        raw = sig[i].astype(np.float32).astype(np.float64)
        ok = ~np.isnan(raw)
        filled = np.interp(np.arange(n), np.flatnonzero(ok), raw[ok])  # independent linear gap fill
        clean = nk.ecg_clean(filled, sampling_rate=fs, method="neurokit")
        np.testing.assert_allclose(row, (clean - clean.mean()) / clean.std(ddof=1), rtol=1e-5, atol=1e-5)
        assert abs(row.mean()) < 1e-5 and abs(row.std(ddof=1) - 1) < 1e-5
    flat = sig.copy()
    flat[5] = 0.3
    with pytest.raises(ReadError, match="rec2: lead aVF is constant"):
        lsvae_preprocess_ecg(flat, fs, source="rec2")
    empty = sig.copy()
    empty[7] = np.nan
    with pytest.raises(ReadError, match="lead V2 has no valid samples"):
        lsvae_preprocess_ecg(empty, fs, source="rec3")
    limb = ECGRecord(signal=sig[:6].astype(np.float32), fs=fs, leads=LIMB_LEADS, source="rec4", format="numpy")
    with pytest.raises(ReadError, match="rec4: lead\\(s\\) V1 not in the record"):
        lsvae_preprocess_ecg(limb, leads=("I", "V1"))
