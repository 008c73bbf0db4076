"""Datasets, collate and the data module over a tiny cache built from the synthetic export."""

from __future__ import annotations

from conftest import build_tiny_cache

from pathlib import Path

import numpy as np
import pytest
import torch

from cardiofusion.cache import open_cache
from cardiofusion.data.dataset import (
    CohortDataModule,
    CohortDataset,
    EpochSampler,
    collate,
    split_records,
)
from cardiofusion.errors import ConfigError
from cardiofusion.transforms.preprocess import PreprocessConfig, window_starts
from cardiofusion.records import LIMB_LEADS

FS, DURATION_S, SIZE = 250.0, 5.0, 64
PRE = PreprocessConfig(fs=FS, window_s=1.0, eval_stride_s=1.0, image_size=48)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> dict[str, Path]:
    """synth -> cohort -> cache, then the raw export is deleted: everything after reads the cache only."""
    return build_tiny_cache(tmp_path_factory.mktemp("data_cache"), fs=FS, duration_s=DURATION_S, image_size=SIZE,
                            cxr_size=SIZE, delete_export=True)


@pytest.fixture(autouse=True)
def no_raw_reading(monkeypatch):
    """Any attempt to parse a raw ECG / X-ray file fails the test."""
    import cardiofusion.transforms.decode as decode_mod
    import cardiofusion.io.cxr as cxr_io
    import cardiofusion.io.ecg as ecg_io

    def boom(*args, **kwargs):
        raise AssertionError("the data pipeline must read the cache, never raw files")

    for module, name in ((ecg_io, "read_ecg"), (cxr_io, "read_cxr"), (decode_mod, "decode_ecg"),
                         (decode_mod, "decode_cxr")):
        monkeypatch.setattr(module, name, boom)


def _dataset(tiny_cache, split="train", **kw) -> CohortDataset:
    cache = open_cache(tiny_cache["cache"])
    return CohortDataset(cache, split_records(cache, tiny_cache["manifest"], split), kw.pop("preprocess", PRE),
                         train=split == "train", **kw)


def test_train_sample_keys_shapes_dtypes(tiny_cache):
    ds = _dataset(tiny_cache, "train")
    assert len(ds) > 20
    s = ds[0]
    assert set(s) == {"ecg", "ecg_mask", "cxr", "has_ecg", "has_cxr", "label", "record_id", "patient_id"}
    assert s["ecg"].shape == (1, 12, 250) and s["ecg"].dtype == torch.float32
    assert s["ecg_mask"].shape == (12,) and s["ecg_mask"].dtype == torch.bool
    assert s["cxr"].shape == (1, 48, 48) and s["cxr"].dtype == torch.float32
    assert s["label"].dtype == torch.float32 and float(s["label"]) in (0.0, 1.0)
    assert bool(s["has_ecg"]) and bool(s["has_cxr"])
    assert isinstance(s["record_id"], str) and isinstance(s["patient_id"], str)
    # a sample is a function of (seed, epoch, index)
    torch.testing.assert_close(ds[(3, 5)]["ecg"], ds[(3, 5)]["ecg"])
    assert not torch.equal(ds[(3, 5)]["ecg"], ds[(3, 6)]["ecg"])
    other_seed = _dataset(tiny_cache, "train", seed=1)
    assert not torch.equal(ds[(3, 5)]["cxr"], other_seed[(3, 5)]["cxr"])


def test_eval_samples_hold_every_window(tiny_cache):
    ds = _dataset(tiny_cache, "val")
    cache = open_cache(tiny_cache["cache"])
    for i in range(len(ds)):
        s = ds[i]
        _, _, n_valid = cache.ecg_at(int(ds.ecg_row[i]))
        n_w = len(window_starts(n_valid, PRE.window_samples, PRE.stride_samples))
        assert s["ecg"].shape == (n_w, 12, 250)
    torch.testing.assert_close(ds[0]["ecg"], ds[0]["ecg"])  # deterministic
    torch.testing.assert_close(ds[0]["cxr"], ds[0]["cxr"])


def test_collate_window_level_batch(tiny_cache):
    ds = _dataset(tiny_cache, "val")
    samples = [ds[i] for i in range(3)]
    batch = collate(samples)
    n_w = [s["ecg"].shape[0] for s in samples]
    total = sum(n_w)
    assert batch["n_records"] == 3
    assert batch["record_index"].tolist() == [i for i, n in enumerate(n_w) for _ in range(n)]
    assert batch["ecg"].shape == (total, 12, 250) and batch["ecg_mask"].shape == (total, 12)
    assert batch["cxr"].shape == (total, 1, 48, 48)
    assert batch["label"].shape == (total,) and batch["has_ecg"].dtype == torch.bool
    assert len(batch["record_id"]) == len(batch["patient_id"]) == total
    torch.testing.assert_close(batch["cxr"][n_w[0]], samples[1]["cxr"])  # the record's X-ray on each window row

    train = _dataset(tiny_cache, "train")
    tb = collate([train[i] for i in range(4)])
    assert tb["ecg"].shape == (4, 12, 250) and tb["record_index"].tolist() == [0, 1, 2, 3]


def test_single_modality_loads_only_its_modality(tiny_cache, monkeypatch):
    ecg_only = _dataset(tiny_cache, "train", modalities=("ecg",))
    monkeypatch.setattr(type(ecg_only.cache), "cxr_at", lambda *a: pytest.fail("X-ray read for an ECG-only model"))
    b = collate([ecg_only[i] for i in range(2)])
    assert "cxr" not in b and not b["has_cxr"].any() and b["has_ecg"].all()
    monkeypatch.undo()

    cxr_only = _dataset(tiny_cache, "val", modalities=("cxr",))
    monkeypatch.setattr(type(cxr_only.cache), "ecg_at", lambda *a: pytest.fail("ECG read for an X-ray-only model"))
    b = collate([cxr_only[i] for i in range(3)])
    assert "ecg" not in b and "ecg_mask" not in b and b["cxr"].shape == (3, 1, 48, 48)
    assert b["record_index"].tolist() == [0, 1, 2] and not b["has_ecg"].any()
    with pytest.raises(ConfigError):
        _dataset(tiny_cache, "train", modalities=("eeg",))


def test_lead_subset_and_rate_check(tiny_cache):
    pre = PreprocessConfig(fs=FS, leads=LIMB_LEADS, window_s=1.0, image_size=48)
    s = _dataset(tiny_cache, "train", preprocess=pre)[0]
    assert s["ecg"].shape == (1, 6, 250) and s["ecg_mask"].shape == (6,)
    with pytest.raises(ConfigError, match="250 Hz"):
        _dataset(tiny_cache, "train", preprocess=PreprocessConfig(fs=500))
    # an X-ray-only model does not care about the cache's ECG rate
    xray = _dataset(tiny_cache, "train", preprocess=PreprocessConfig(fs=500, image_size=48), modalities=("cxr",))[0]
    assert "ecg" not in xray and xray["cxr"].shape == (1, 48, 48)


def test_epoch_sampler_is_seeded_and_counts_epochs():
    sampler = EpochSampler(10, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(i for i, _ in first) == list(range(10)) and {e for _, e in first} == {0}
    assert {e for _, e in second} == {1} and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(EpochSampler(10, seed=3, start_epoch=1)) == second


def test_datamodule_loaders(tiny_cache):
    dm = CohortDataModule(tiny_cache["cache"], tiny_cache["manifest"], PRE, batch_size=8, eval_batch_size=4,
                          num_workers=0)
    dm.setup()
    train = dm.train_dataloader()
    batch = next(iter(train))
    assert batch["ecg"].shape == (8, 12, 250) and batch["cxr"].shape == (8, 1, 48, 48)
    assert len(train) == len(dm.datasets["train"]) // 8  # drop_last: no batch of one
    val = next(iter(dm.val_dataloader()))
    assert val["n_records"] == 4 and val["ecg"].shape[0] == len(val["record_index"]) >= 4
    ids = [rid for b in dm.test_dataloader() for rid in dict.fromkeys(b["record_id"])]
    assert len(ids) == len(dm.datasets["test"])
    assert set(ids).isdisjoint(dm.datasets["train"].record_id)
    labels = dm.train_labels()
    assert labels.dtype == np.float32 and set(np.unique(labels)) <= {0.0, 1.0}


def test_datamodule_with_workers(tiny_cache):
    dm = CohortDataModule(tiny_cache["cache"], tiny_cache["manifest"], PRE, batch_size=8, num_workers=2)
    a = [b["ecg"] for b in dm.train_dataloader()]
    dm0 = CohortDataModule(tiny_cache["cache"], tiny_cache["manifest"], PRE, batch_size=8, num_workers=0)
    b = [b["ecg"] for b in dm0.train_dataloader()]
    for x, y in zip(a, b):  # augmentation does not depend on the number of workers
        torch.testing.assert_close(x, y)


def test_encoded_labels_vector_and_matrix(tiny_cache):
    """Other tasks' labels reach the batches as given: (N,) or (N, L), NaN kept; a callable of the records too."""
    cache = open_cache(tiny_cache["cache"])
    records = split_records(cache, tiny_cache["manifest"], "val")
    n = len(records)
    matrix = np.stack([np.arange(n, dtype=np.float32), np.full(n, np.nan, dtype=np.float32)], 1)
    ds = CohortDataset(cache, records, PRE, train=False, labels=matrix)
    batch = collate([ds[0], ds[1]])
    assert batch["label"].shape == (len(batch["record_index"]), 2) and batch["label"].dtype == torch.float32
    torch.testing.assert_close(batch["label"][:, 0], batch["record_index"].float())
    assert torch.isnan(batch["label"][:, 1]).all()
    with pytest.raises(ConfigError, match="labels must be"):
        CohortDataset(cache, records, PRE, train=False, labels=matrix[:-1])
    dm = CohortDataModule(tiny_cache["cache"], tiny_cache["manifest"], PRE, batch_size=4, num_workers=0,
                          labels=lambda recs: recs["label"].to_numpy(dtype=np.float32) * 2 + 1)
    dm.setup()
    np.testing.assert_array_equal(dm.train_labels(), dm.datasets["train"].label)
    assert set(np.unique(dm.train_labels())) == {1.0, 3.0}
    train_eval = next(iter(dm.eval_dataloader("train")))  # the train split's deterministic loader keeps them
    assert set(train_eval["label"].unique().tolist()) <= {1.0, 3.0}
