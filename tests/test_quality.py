"""Signal-quality check of ECGs (units, rate, clipping) and colour X-rays: refuse or flag, never a silent score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.records import CANONICAL_LEADS, ECGRecord
from cardiofusion.transforms.quality import QualityConfig, check_ecg_quality

#: per-lead QRS amplitudes (mV) of the test ECG, canonical order
_GAINS = np.array([0.8, 1.2, 0.5, -0.9, 0.4, 0.9, -0.7, 1.1, 1.4, 1.6, 1.3, 1.0])


def _ecg(fs: float = 500.0, seconds: float = 10.0, bpm: float = 72.0, seed: int = 0) -> np.ndarray:
    """A plausible 12-lead ECG ``(12, n)`` in mV: QRS (sigma 12 ms) and T waves at ``bpm``, mild noise."""
    rng = np.random.default_rng(seed)
    n = int(round(fs * seconds))
    t = np.arange(n) / fs
    x = np.zeros((12, n))
    for beat in np.arange(0.3, seconds, 60.0 / bpm):
        qrs = np.exp(-0.5 * ((t - beat) / 0.012) ** 2)
        twave = 0.25 * np.exp(-0.5 * ((t - beat - 0.3) / 0.05) ** 2)
        x += _GAINS[:, None] * qrs + np.abs(_GAINS)[:, None] * twave
    return (x + 0.01 * rng.standard_normal(x.shape)).astype(np.float32)


def _record(signal: np.ndarray, fs: float) -> ECGRecord:
    return ECGRecord(signal=signal, fs=fs, leads=CANONICAL_LEADS, source="test.csv", format="csv")


def test_plausible_ecg_passes():
    q = check_ecg_quality(_record(_ecg(), 500.0))
    assert q.status == "pass", (q.refusals, q.warnings)
    assert q.heart_rate_bpm == pytest.approx(72, abs=2)
    assert 0.5 < q.qrs_mv < 2.0 and q.n_beats >= 10


@pytest.mark.parametrize("factor,words", [
    (1000.0, "microvolts (or counts) read as millivolts"),  # a uV file read as mV
    (100.0, "the wrong units or resolution"),
    (1e-3, "millivolts read as microvolts"),  # a mV file read as uV
])
def test_units_mistakes_are_refused_in_words(factor, words):
    q = check_ecg_quality(_record(_ecg() * factor, 500.0))
    assert q.status == "refuse"
    assert words in q.refusals[0] and "median QRS" in q.refusals[0]
    with pytest.raises(ReadError, match="amplitudes look like") as e:
        q.raise_if_refused("patient.csv")
    assert str(e.value).startswith("patient.csv: ")


def test_large_but_possible_amplitudes_are_flagged():
    q = check_ecg_quality(_record(_ecg() * 10, 500.0))
    assert q.status == "flag" and "unusually large QRS amplitudes" in q.warnings[0]


def test_sampling_rate_mistakes():
    x = _ecg(fs=500.0, bpm=72)
    slow = check_ecg_quality(_record(x, 100.0))  # a 500 Hz file read as 100 Hz: 14 bpm
    assert slow.status == "refuse"
    assert any("bpm at the stated 100 Hz: is the sampling rate right?" in r for r in slow.refusals)
    fast = check_ecg_quality(_record(x[:, ::2], 500.0))  # a 250 Hz file read as 500 Hz: fast, narrow QRS
    assert fast.status == "flag"
    assert any("at the stated 500 Hz" in w and "sampling rate right" in w for w in fast.warnings)


def test_clipped_and_flat_leads():
    x = _ecg()
    clipped = x.copy()
    clipped[7:] = np.clip(clipped[7:], -0.2, 0.2)  # V2-V6 saturated
    q = check_ecg_quality(_record(clipped, 500.0))
    assert q.status == "flag" and "V2, V3, V4, V5, V6 partly flat or clipped" in q.warnings[0]
    off = x.copy()
    off[:, 1000:] = 0.0  # electrodes off after 2 s
    q = check_ecg_quality(_record(off, 500.0))
    assert q.status == "refuse" and "most leads are flat or clipped" in q.refusals[0]


def test_quality_config_is_validated():
    with pytest.raises(ConfigError, match="refuse_qrs_mv"):
        QualityConfig(refuse_qrs_mv=(5.0, 1.0))
    with pytest.raises(ConfigError, match="inside refuse_rate_bpm"):
        QualityConfig(flag_rate_bpm=(10.0, 200.0))
    with pytest.raises(ConfigError, match="unknown"):
        QualityConfig.from_dict({"qrs": 1})
    assert QualityConfig.from_dict(QualityConfig().to_dict()) == QualityConfig()


def test_decoding_refuses_or_flags(tmp_path):
    """The check runs where the cache and prediction decode: refusal -> ReadError, flag -> warnings."""
    from cardiofusion.transforms.decode import CacheConfig, decode_ecg, standardize_ecg_record

    config = CacheConfig(fs=500.0, duration_s=10.0)
    with pytest.raises(ReadError, match="amplitudes look like"):
        standardize_ecg_record(_record(_ecg() * 1000, 500.0), config)
    flags: list[str] = []
    standardize_ecg_record(_record(_ecg() * 10, 500.0), config, warnings=flags)
    assert flags and "unusually large" in flags[0]
    path = tmp_path / "uv_as_mv.npy"
    np.save(path, _ecg() * 1000)  # microvolts in a .npy, whose units default to mV
    with pytest.raises(ReadError) as e:
        decode_ecg(str(path), config)
    assert str(e.value).startswith(f"{path}: amplitudes look like microvolts")


def test_cache_build_records_refused_and_flagged_ecgs(tmp_path):
    from cardiofusion.cache.build import _decode_chunk
    from cardiofusion.transforms.decode import CacheConfig

    paths = {}
    for name, factor in (("good", 1.0), ("flagged", 10.0), ("refused", 1000.0)):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], _ecg() * factor)
    items = [{"row": i, "path": str(p)} for i, p in enumerate(paths.values())]
    res = _decode_chunk("ecg", items, CacheConfig(fs=500.0, duration_s=10.0).to_dict())
    assert [r["status"] for r in res] == ["ok", "ok", "failed"]
    assert res[0]["reason"] == "" and "unusually large QRS" in res[1]["reason"]
    assert "microvolts (or counts) read as millivolts" in res[2]["reason"]


def test_real_ecgs_are_never_refused(shared_data):
    """PTB-XL (500 and 100 Hz) and CinC 2021 records: a false refusal of a real record is a bug."""
    from cardiofusion.io.ecg import read_ecg

    paths = (sorted((shared_data / "ptbxl").rglob("*.hea"))[:80] + sorted((shared_data / "cinc2021").rglob("*.hea"))
             + sorted((shared_data / "cinc2021").rglob("*.h5"))[:3])
    refused = []
    for p in paths:
        q = check_ecg_quality(read_ecg(p))
        if q.status == "refuse":
            refused.append((p.name, q.refusals))
    assert len(paths) > 100 and not refused


# ------------------------------------------------------------------------------------------ colour X-rays
def _xray(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    return np.clip(120 + 80 * np.exp(-((xx - 32) ** 2 + (yy - 32) ** 2) / 400) + rng.normal(0, 8, (64, 64)),
                   0, 255).astype(np.uint8)


def test_grey_stored_as_rgb_is_silent_tinted_warns_photo_refused(tmp_path):
    from PIL import Image

    from cardiofusion.io.cxr import read_cxr

    grey = _xray()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    Image.fromarray(rgb).save(tmp_path / "grey_rgb.jpg", quality=90)
    img = read_cxr(tmp_path / "grey_rgb.jpg")
    assert "warnings" not in img.meta and img.meta["colour_difference"] < 2.0

    tinted = rgb.astype(int) + np.array([6, 0, -6])  # a sepia-ish export of a radiograph
    Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8)).save(tmp_path / "tinted.png")
    img = read_cxr(tmp_path / "tinted.png")
    assert img.pixels.shape == (64, 64)
    assert len(img.meta["warnings"]) == 1 and "stored in colour" in img.meta["warnings"][0]

    photo = np.stack([grey, np.roll(grey, 20, axis=1), 255 - grey], axis=2)  # channels unrelated: a picture
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=90)
    with pytest.raises(ReadError, match="colour image, not a radiograph") as e:
        read_cxr(tmp_path / "photo.jpg")
    assert str(e.value).startswith(str(tmp_path / "photo.jpg")) and "\n" not in str(e.value)


def test_reader_defaults_apply_to_csv_only(tmp_path):
    """The bundle's headerless-export defaults (counts of 1.25 uV) never override a .npy's mV or a CSV
    header's stated units: predict reads those files as ``inspect`` does."""
    from cardiofusion.bundle.inputs import ReaderDefaults, reader_options

    d = ReaderDefaults(fs=500.0, units="counts", resolution_uv=1.25)
    assert reader_options(tmp_path / "a.npy", d) == {}
    assert reader_options(tmp_path / "a.h5", d, units="uV") == {"units": "uV"}
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"I": [1, 2], "II": [3, 4]}).to_csv(plain, index=False)
    assert reader_options(plain, d) == {"fs": 500.0, "units": "counts", "resolution_uv": 1.25}
    stated = tmp_path / "stated.csv"
    pd.DataFrame({"I (mV)": [1, 2], "II (mV)": [3, 4]}).to_csv(stated, index=False)
    assert reader_options(stated, d) == {"fs": 500.0}
    assert reader_options(stated, d, units="uV")["units"] == "uV"  # the caller's option still wins

