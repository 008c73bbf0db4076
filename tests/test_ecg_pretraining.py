"""Lightning modules of paper 003: MAE pretraining of the ECG ViT, then alignment to a frozen X-ray teacher."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader

from cardiofusion.errors import ConfigError
from cardiofusion.training.ecg_align import AlignConfig, AlignmentModule, load_encoder_state
from cardiofusion.training.ecg_pretrain import MAEPretrainConfig, MAEPretrainModule, warmup_cosine_schedule

T = 128
TINY_VIT = {"encoder_kwargs": {"width": 16, "depth": 1, "n_heads": 2}, "decoder_width": 8, "decoder_depth": 1,
            "decoder_heads": 2}


def _batches(n_batches: int, b: int, seed: int, windows: int = 1) -> list[dict]:
    """Paired batches; with ``windows`` > 1, every record comes as that many ECG rows (evaluation layout)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ecg = torch.randn(b, 12, T, generator=g)
        has_cxr = torch.ones(b, dtype=torch.bool)
        has_cxr[-1] = False  # an unpaired row: dropped by alignment
        batch = {"ecg": ecg, "ecg_mask": torch.ones(b, 12, dtype=torch.bool), "cxr": torch.randn(b, 1, 32, 32,
                 generator=g), "has_ecg": torch.ones(b, dtype=torch.bool), "has_cxr": has_cxr}
        if windows > 1:
            batch = {k: v.repeat_interleave(windows, dim=0) for k, v in batch.items()}
            batch["record_index"] = torch.arange(b).repeat_interleave(windows)
            batch["n_records"] = b
        out.append(batch)
    return out


def _trainer(tmp_path, epochs: int = 1):
    import lightning as L  # after cardiofusion.training, which makes torchvision importable on CPU

    return L.Trainer(default_root_dir=tmp_path, max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_schedule(opt, warmup_steps=3, total_steps=13)
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lrs[13] == pytest.approx(0.0, abs=1e-12)


def test_configs_round_trip_and_reject_unknown_keys():
    cfg = MAEPretrainConfig(encoder="ecg_vit_tiny", mask_ratio=0.8)
    assert MAEPretrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="mask_ratoi"):
        MAEPretrainConfig.from_dict({"mask_ratoi": 0.5})
    acfg = AlignConfig(ecg_encoder="ecg_vit_tiny", cxr_pretrained="/weights/cxr.pth", embed_dim=8)
    assert AlignConfig.from_dict(acfg.to_dict()) == acfg
    with pytest.raises(ConfigError, match="pretrained X-ray teacher"):
        AlignConfig(cxr_pretrained=False)  # a random frozen teacher is refused


def test_mae_then_alignment(tmp_path):
    torch.manual_seed(0)
    mae = MAEPretrainModule(MAEPretrainConfig(encoder="ecg_vit_tiny", lr=1e-3, warmup_steps=1, **TINY_VIT))
    trainer = _trainer(tmp_path / "mae", epochs=2)
    trainer.fit(mae, DataLoader(_batches(3, 4, 0), batch_size=None), DataLoader(_batches(1, 4, 1), batch_size=None))
    assert math.isfinite(float(trainer.callback_metrics["train_loss"]))
    assert math.isfinite(float(trainer.callback_metrics["val_loss"]))
    ckpt = tmp_path / "mae.ckpt"
    trainer.save_checkpoint(ckpt)
    assert MAEPretrainModule.load_from_checkpoint(ckpt).config == mae.config  # the checkpoint alone rebuilds it

    cfg = AlignConfig(ecg_encoder="ecg_vit_tiny", ecg_kwargs=TINY_VIT["encoder_kwargs"], ecg_init=str(ckpt),
                      cxr_encoder="cxr_tiny", cxr_pretrained=False, allow_random_teacher=True, embed_dim=8, lr=1e-3)
    align = AlignmentModule(cfg)
    for k, v in mae.encoder.state_dict().items():  # stage 2 starts from the stage-1 encoder
        assert torch.equal(v, align.ecg_encoder.state_dict()[k])
    assert load_encoder_state(ckpt).keys() == mae.encoder.state_dict().keys()
    teacher = align.aligner.teacher.encoder
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = _trainer(tmp_path / "align", epochs=1)
    trainer.fit(align, DataLoader(_batches(3, 5, 2), batch_size=None),
                DataLoader(_batches(2, 5, 3, windows=3), batch_size=None))
    metrics = trainer.callback_metrics
    for name in ("train_loss", "val_loss", "val_ecg_to_image_top1", "val_image_to_ecg_top5", "val_chance_top1"):
        assert math.isfinite(float(metrics[name])), name
    assert float(metrics["val_chance_top1"]) == pytest.approx(1 / 8)  # 2 batches x 4 paired records
    assert not any(m.training for m in teacher.modules())  # still eval after Lightning's mode switching
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher {k} changed"
    assert any(not torch.equal(v, mae.encoder.state_dict()[k]) for k, v in align.ecg_encoder.state_dict().items())


def test_alignment_measurement_aware_negatives():
    cfg = AlignConfig(ecg_encoder="ecg_vit_tiny", ecg_kwargs=TINY_VIT["encoder_kwargs"], cxr_encoder="cxr_tiny",
                      cxr_pretrained=False, allow_random_teacher=True, embed_dim=8, use_measurements=True)
    torch.manual_seed(0)
    module = AlignmentModule(cfg)
    batch = _batches(1, 5, 4)[0]
    with pytest.raises(ConfigError, match="measurements"):
        module._loss(batch)
    phi = torch.randn(5, 2)
    phi[1] = phi[0]  # rows 0 and 1: identical measurements, not each other's negatives
    terms, n = module._loss({**batch, "measurements": phi})
    assert n == 4  # the unpaired last row is dropped, its measurements with it
    from cardiofusion.models.alignment import ClipLoss

    z_ecg, z_img = module.aligner.embed({k: batch[k][:4] for k in ("ecg", "ecg_mask", "cxr")})
    torch.testing.assert_close(terms["loss"], ClipLoss()(z_ecg, z_img, phi[:4])["loss"])
    assert not torch.allclose(terms["loss"], ClipLoss()(z_ecg, z_img)["loss"])


def test_record_embeddings_one_per_paired_record_at_its_first_row():
    """Evaluation batches: one ECG embedding per paired record (mean of its windows' normalised embeddings,
    equal to embedding the windows one by one), the record's first batch row, unpaired records left out."""
    torch.manual_seed(0)
    cfg = AlignConfig(ecg_encoder="ecg_vit_tiny", ecg_kwargs=TINY_VIT["encoder_kwargs"], cxr_encoder="cxr_tiny",
                      cxr_pretrained=False, allow_random_teacher=True, embed_dim=8)
    align = AlignmentModule(cfg).eval()
    batch = _batches(1, 4, 5, windows=3)[0]  # records 0-2 paired, record 3 without an X-ray
    z_ecg, z_img, rows = align.record_embeddings(batch)
    assert rows.tolist() == [0, 3, 6] and z_ecg.shape == (3, 8) and z_img.shape == (3, 8)
    with torch.no_grad():
        for j, r in enumerate(rows.tolist()):
            windows = torch.nn.functional.normalize(align.aligner.embed_ecg(batch["ecg"][r:r + 3],
                                                                            batch["ecg_mask"][r:r + 3]), dim=-1)
            assert torch.allclose(z_ecg[j], windows.mean(0), atol=1e-5)
            assert torch.allclose(z_img[j], align.aligner.embed_image(batch["cxr"][r:r + 1])[0], atol=1e-5)
    plain = _batches(1, 4, 6)[0]  # one row per record (training layout)
    _, _, rows = align.record_embeddings(plain)
    assert rows.tolist() == [0, 1, 2]


def test_pretrain_monitor_is_validated():
    from cardiofusion.training.pretrain_fit import PretrainConfig

    module = {"ecg_encoder": "ecg_vit_tiny", "cxr_pretrained": "/weights/cxr.pth"}
    cfg = PretrainConfig(kind="align", module=module, monitor="val_ecg_to_image_top5")
    assert cfg.monitor_mode == "max" and PretrainConfig.from_dict(cfg.to_dict()).monitor == cfg.monitor
    assert PretrainConfig(kind="align", module=module).monitor_mode == "min"
    with pytest.raises(ConfigError, match="monitor of a mae pretraining"):
        PretrainConfig(kind="mae", module={"encoder": "ecg_vit_tiny"}, monitor="val_ecg_to_image_top5")
    with pytest.raises(ConfigError, match="val_chance_top1"):
        PretrainConfig(kind="align", module=module, monitor="val_chance_top1")  # not a quality
