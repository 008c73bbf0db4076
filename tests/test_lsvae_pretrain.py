"""LS-EMVAE pretraining module: every loss term logged per epoch, beta annealed, checkpoint -> 6-lead face."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from cardiofusion.models import create_ecg_encoder
from cardiofusion.models.lsvae import LSVAEConfig
from cardiofusion.records import LIMB_LEADS

L = pytest.importorskip("lightning")

T = 64


def _loader(n: int = 8, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    ecg = torch.randn(n, 12, T, generator=g)
    mask = torch.ones(n, 12, dtype=torch.bool)
    mask[::3, 6:] = False  # some records limb-only
    has = torch.ones(n, dtype=torch.bool)
    has[-1] = False  # a row without an ECG is ignored
    rows = [{"ecg": ecg[i], "ecg_mask": mask[i], "has_ecg": has[i]} for i in range(n)]
    return torch.utils.data.DataLoader(rows, batch_size=4)


def test_pretraining_logs_each_term_and_its_encoders_load_by_lead_name(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from cardiofusion.training.vae_pretrain import LSVAEPretrainModule

    torch.manual_seed(0)
    cfg = LSVAEConfig(arch="tiny", n_samples=T, beta_anneal_epochs=4)
    module = LSVAEPretrainModule(cfg.to_dict(), lr=1e-3)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path, name="pre"),
                        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, accumulate_grad_batches=2, log_every_n_steps=1)
    trainer.fit(module, _loader(), _loader(seed=1))
    metrics = pd.read_csv(next(tmp_path.glob("pre/*/metrics.csv")))
    train = metrics.dropna(subset=["train_loss"]).set_index("epoch")
    assert list(train.index) == [0, 1]
    assert train["beta"].tolist() == pytest.approx([0.25, 0.5])  # linear to 1 over 4 epochs
    for name in ("recon", "kl", "align"):
        assert train[f"train_{name}"].notna().all() and metrics[f"val_{name}"].notna().any()
    assert (train["train_recon"] > 0).all() and (train["train_kl"] >= 0).all()
    # the checkpoint's encoders go into a six-lead face by lead name
    ckpt = next(tmp_path.glob("pre/*/checkpoints/*.ckpt"))
    face = create_ecg_encoder("lsvae_tiny", leads=LIMB_LEADS, pretrained=str(ckpt)).eval()
    x = torch.randn(2, 6, T)
    with torch.no_grad():
        want = torch.cat([module.vae.encoders[lead](x[:, i : i + 1])[0] for i, lead in enumerate(LIMB_LEADS)], 1)
        torch.testing.assert_close(face(x), want)
