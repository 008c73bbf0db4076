"""Stage 4 of paper 003: the ECG-conditioned diffusion generator (diffusers UNet2DModel + DDIM / DDPM)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from cardiofusion.models.ecg_to_image import ECGToImageDiffusion  # noqa: E402


@pytest.fixture(scope="module")
def model(one_thread):
    torch.manual_seed(0)
    m = ECGToImageDiffusion(cond_dim=8, image_size=16, block_out_channels=(8, 16), num_train_timesteps=50)
    with torch.no_grad():  # a non-trivial condition path and null embedding (a fresh UNet's output is ~constant)
        m.null_cond.normal_()
        for p in m.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def test_generate_shape_range_and_seed(model):
    cond = torch.randn(3, 8)
    a = model.generate(cond, guidance=3.0, steps=4, seed=1)
    b = model.generate(cond, guidance=3.0, steps=4, seed=1)
    c = model.generate(cond, guidance=3.0, steps=4, seed=2)
    assert a.shape == (3, 1, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    ddpm = model.generate(cond, guidance=2.0, steps=4, seed=1, scheduler="ddpm")
    assert torch.equal(ddpm, model.generate(cond, guidance=2.0, steps=4, seed=1, scheduler="ddpm"))


def test_guidance_one_is_the_conditional_model(model):
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([10, 30])
    cond = torch.randn(2, 8)
    emb = model.embed_condition(cond, torch.zeros(2, dtype=torch.bool))
    null = model.null_cond.expand_as(emb)
    with torch.no_grad():
        conditional = model.predict_noise(x, t, cond)
        unconditional = model.predict_noise(x, t, cond, unconditional=True)
        formula_1 = model.guided_noise(x, t, emb, null, 1.0, shortcut=False)
        formula_0 = model.guided_noise(x, t, emb, null, 0.0, shortcut=False)
        formula_3 = model.guided_noise(x, t, emb, null, 3.0, shortcut=False)
    assert torch.allclose(formula_1, conditional, atol=1e-5)
    assert torch.allclose(formula_0, unconditional, atol=1e-5)
    assert torch.allclose(formula_3, unconditional + 3 * (conditional - unconditional), atol=1e-5)
    assert not torch.allclose(conditional, unconditional, atol=1e-4)  # the condition matters
    # the sampler at guidance 1 equals the conditional model's sampler (same noise, same steps)
    g1 = model.generate(cond, guidance=1.0, steps=3, seed=0)
    assert torch.equal(g1, model.generate(cond, guidance=1.0, steps=3, seed=0))


def test_condition_dropout_trains_the_null_embedding(one_thread):
    torch.manual_seed(0)
    m = ECGToImageDiffusion(cond_dim=4, image_size=8, block_out_channels=(8,), num_train_timesteps=20,
                            cond_dropout=0.5).train()
    images, cond = torch.rand(16, 1, 8, 8), torch.randn(16, 4)
    loss = m.loss(images, cond, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and m.null_cond.grad is not None and m.null_cond.grad.abs().sum() > 0
    m.zero_grad()
    off = ECGToImageDiffusion(cond_dim=4, image_size=8, block_out_channels=(8,), num_train_timesteps=20,
                              cond_dropout=0.0).train()
    off.loss(images, cond).backward()
    assert off.null_cond.grad is None or off.null_cond.grad.abs().sum() == 0
    # flat (constant) images and zero conditions: no NaN
    flat = m.loss(torch.full((4, 1, 8, 8), 0.5), torch.zeros(4, 4))
    assert torch.isfinite(flat)
