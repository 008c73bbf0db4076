"""The LS-EMVAE recipe's VAE baselines and the free-bits option against direct NumPy computations.

MoPoE over two experts is the equal mixture of prior x q1, prior x q2 and prior x q1 x q2 (Sutter et al.,
2021); the single-encoder beta-VAE is one Gaussian whose KL term is scaled by beta; free bits floor each
latent dimension's batch-mean KL (Kingma et al., 2016).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiofusion.errors import ConfigError
from cardiofusion.models import create_ecg_encoder
from cardiofusion.models.lsvae import (
    LSVAEConfig,
    SingleVAEECGEncoder,
    beta_schedule,
    build_lsvae,
    kl_term,
    lead_subsets,
    mopoe_posterior,
)
from cardiofusion.records import CANONICAL_LEADS

T = 64


def _np_poe_with_prior(mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prec = 1.0 + (1.0 / var).sum(0)
    return (mu / var).sum(0) / prec, 1.0 / prec


def _np_kl(mu: np.ndarray, var: np.ndarray) -> float:
    return float(0.5 * (var + mu**2 - 1.0 - np.log(var)).sum())


def test_lead_subsets_are_every_nonempty_subset():
    s = lead_subsets(3).numpy()
    assert s.shape == (7, 3) and len({tuple(r) for r in s}) == 7 and s.sum(1).min() == 1
    assert lead_subsets(12).shape == (4095, 12)
    with pytest.raises(ConfigError):
        lead_subsets(0)


def test_mopoe_two_experts_equals_numpy_subset_mixture():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(1, 2, 3))
    logvar = rng.normal(scale=0.5, size=(1, 2, 3))
    var = np.exp(logvar)
    comps = [_np_poe_with_prior(mu[0, idx], var[0, idx]) for idx in ([0], [1], [0, 1])]
    c_mu = np.stack([c[0] for c in comps])  # (3, D)
    c_var = np.stack([c[1] for c in comps])
    mean = c_mu.mean(0)
    mix_var = (c_var + c_mu**2).mean(0) - mean**2
    t_mu, t_lv = torch.from_numpy(mu), torch.from_numpy(logvar)

    post = mopoe_posterior(t_mu, t_lv, mixture="moment", sample=False)
    np.testing.assert_allclose(post.mu[0].numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(post.logvar[0].exp().numpy(), mix_var, rtol=1e-10)
    np.testing.assert_allclose(post.kl[0].item(), _np_kl(mean, mix_var), rtol=1e-10)
    # the sampled mixture: KL bound = mean of the three subset KLs; z comes from one subset's product
    post = mopoe_posterior(t_mu, t_lv, mixture="sample", sample=False)
    np.testing.assert_allclose(post.kl[0].item(), np.mean([_np_kl(m, v) for m, v in comps]), rtol=1e-10)
    np.testing.assert_allclose(post.group_mu[0].numpy(), c_mu, rtol=1e-10)
    torch.manual_seed(0)
    drawn = mopoe_posterior(t_mu.expand(4000, -1, -1), t_lv.expand(4000, -1, -1), mixture="sample")
    counts = np.bincount(drawn.component.numpy(), minlength=3) / 4000
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)


def test_mopoe_masking_and_no_lead():
    rng = np.random.default_rng(1)
    mu, logvar = torch.from_numpy(rng.normal(size=(2, 3, 2))), torch.from_numpy(rng.normal(size=(2, 3, 2)))
    mask = torch.tensor([[True, False, True], [False, False, False]])
    post = mopoe_posterior(mu, logvar, mask, mixture="moment", sample=False)
    # row 0: the subsets of {0, 2} only -> the same as MoPoE of those two experts alone
    alone = mopoe_posterior(mu[:1, [0, 2]], logvar[:1, [0, 2]], mixture="moment", sample=False)
    torch.testing.assert_close((post.mu[0], post.logvar[0]), (alone.mu[0], alone.logvar[0]))
    assert int((post.weights[0] > 0).sum()) == 3
    # row 1: no lead -> the prior
    torch.testing.assert_close((post.mu[1], post.logvar[1]), (torch.zeros(2, dtype=mu.dtype),) * 2)


def test_beta_scales_the_kl_term_and_free_bits_floor_it():
    assert beta_schedule(0, 10, 4.0) == pytest.approx(4 * beta_schedule(0, 10)) == pytest.approx(0.4)
    assert beta_schedule(50, 10, 4.0) == 4.0 == beta_schedule(0, 0, 4.0)
    # free bits: batch mean per dimension floored: means [0.2, 1.5] -> [0.5, 1.5]
    kd = torch.tensor([[0.1, 2.0], [0.3, 1.0]], requires_grad=True)
    assert kl_term(kd).item() == pytest.approx(1.7) and kl_term(kd, 0.5).item() == pytest.approx(2.0)
    kl_term(kd, 0.5).backward()
    torch.testing.assert_close(kd.grad, torch.tensor([[0.0, 0.5], [0.0, 0.5]]))  # no pull below the floor

    torch.manual_seed(0)
    x = torch.randn(4, 12, T)
    for fusion in ("single", "hime"):
        vae = build_lsvae("tiny", n_samples=T, fusion=fusion, beta_max=4.0, free_bits=0.3)
        out = vae(x, sample=False)
        t1, t4 = vae.loss(out, x, beta=1.0), vae.loss(out, x, beta=4.0)
        floored = kl_term(out.posterior.kl_dims, 0.3)
        assert floored.item() >= t1["kl"].item()
        torch.testing.assert_close(t4["loss"] - t1["loss"], 3.0 * floored)  # beta multiplies the (floored) KL
        torch.testing.assert_close(t1["kl"], out.posterior.kl.mean())  # the logged KL is the plain one
        if fusion == "single":
            assert t1["align"].item() == 0.0  # one posterior: nothing to align


def test_pretraining_beta_uses_beta_max():
    from cardiofusion.training.vae_pretrain import LSVAEPretrainModule

    cfg = LSVAEConfig(arch="tiny", n_samples=T, fusion="single", beta_max=4.0, beta_anneal_epochs=4)
    module = LSVAEPretrainModule(cfg.to_dict())
    assert module.beta() == pytest.approx(1.0)  # epoch 0 of 4: 4 * 1/4


@pytest.mark.parametrize("fusion", ["mopoe", "single"])
def test_baselines_train_every_parameter(fusion):
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T, fusion=fusion, mixture="sample")
    x = torch.randn(3, 12, T)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 6:] = False
    out = vae(x, mask)
    assert out.recon.shape == (3, 12, T)
    vae.loss(out, x)["loss"].backward()
    if fusion == "mopoe":  # a sampled subset per record: the encoders of the drawn subsets get gradient
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoders.parameters())
        for dec in vae.decoders.values():  # every lead's decoder (a tiny random decoder may have dead ReLUs)
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())
    else:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.parameters())
    # a reconstruction per lead that differs across leads
    assert not torch.allclose(out.recon[:, 0], out.recon[:, 1])


def test_config_rules_for_the_baselines():
    with pytest.raises(ConfigError, match="fusion"):
        LSVAEConfig(fusion="unknown")
    with pytest.raises(ConfigError, match="reference_compat"):
        LSVAEConfig(fusion="mopoe", reference_compat=True)
    with pytest.raises(ConfigError, match="every_group"):
        LSVAEConfig(fusion="mopoe", prior="first_group")
    with pytest.raises(ConfigError, match="free_bits"):
        LSVAEConfig(free_bits=-1.0)
    cfg = LSVAEConfig(arch="tiny", fusion="single", beta_max=4.0, free_bits=0.25)
    assert LSVAEConfig.from_dict(cfg.to_dict()) == cfg


def test_single_encoder_face_takes_its_leads_columns_by_name(tmp_path):
    torch.manual_seed(0)
    vae = build_lsvae("tiny", n_samples=T, fusion="single").eval()
    x = torch.randn(2, 12, T)
    leads = ["aVL", "I"]  # not canonical order: the face must still take each lead's own column
    pos = [CANONICAL_LEADS.index(lead) for lead in leads]
    face = SingleVAEECGEncoder.from_vae(vae, leads).eval()
    only = torch.zeros_like(x)
    only[:, pos] = x[:, pos]
    with torch.no_grad():
        torch.testing.assert_close(face(x[:, pos]), vae.encoder(only)[0])  # = the VAE with the other leads absent
    # through the registry, from a saved weights file, frozen
    path = tmp_path / "vae.pt"
    torch.save(vae.state_dict(), path)
    enc = create_ecg_encoder("betavae", leads=leads, arch="tiny", n_samples=T, pretrained=str(path), frozen=True)
    assert enc.out_dim == vae.latent_dim and not any(p.requires_grad for p in enc.encoders.parameters())
    with torch.no_grad():
        torch.testing.assert_close(enc(x[:, pos]), face(x[:, pos]))
    with pytest.raises(ConfigError, match="not a single-encoder"):
        create_ecg_encoder("betavae", leads=leads, arch="tiny", n_samples=T,
                           pretrained=str(_save(build_lsvae("tiny", n_samples=T), tmp_path / "hime.pt")))


def _save(vae, path):
    torch.save(vae.state_dict(), path)
    return path
