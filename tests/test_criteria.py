"""Voltage criteria (Sokolow-Lyon, Cornell): a hand-built ECG with known R/S amplitudes, edge cases,
and the real PTB-XL LVH vs NORM records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cardiofusion.transforms.criteria import (
    CORNELL_THRESHOLD_MV,
    SOKOLOW_LYON_THRESHOLD_MV,
    cornell_lvh,
    detect_r_peaks,
    score_ecgs,
    sokolow_lyon_mv,
    voltage_criteria,
)
from cardiofusion.errors import ReadError
from cardiofusion.records import CANONICAL_LEADS, ECGRecord

#: Known (R, S) amplitudes in mV per lead of the hand-built ECG.
AMPLITUDES = {
    "I": (0.9, 0.1), "II": (1.2, 0.2), "III": (0.4, 0.3), "aVR": (0.1, 0.9), "aVL": (1.1, 0.2), "aVF": (0.7, 0.2),
    "V1": (0.2, 1.6), "V2": (0.4, 1.9), "V3": (0.6, 1.5), "V4": (1.6, 0.6), "V5": (2.2, 0.3), "V6": (1.8, 0.1),
}
EXPECTED_SL = 1.6 + max(2.2, 1.8)  # 3.8 mV: criterion met
EXPECTED_CORNELL = 1.1 + 1.5  # 2.6 mV: met for a woman (> 2.0), not for a man (<= 2.8)


def hand_built_ecg(fs: float, *, duration_s: float = 10.0, hr_bpm: float = 60.0, wander_mv: float = 0.3,
                   offset_mv: float = 0.5) -> np.ndarray:
    """12 leads ``(12, n)`` mV: per beat a P wave, an R Gaussian of amplitude R and an S Gaussian of
    depth S 40 ms later, a T wave; plus a constant offset and 0.15 Hz baseline wander."""
    n = int(round(fs * duration_s))
    t = np.arange(n) / fs
    x = np.zeros((12, n))
    beats = np.arange(0.5, duration_s - 0.5, 60.0 / hr_bpm)
    for i, lead in enumerate(CANONICAL_LEADS):
        r, s = AMPLITUDES[lead]
        for b in beats:
            x[i] += 0.12 * np.exp(-0.5 * ((t - (b - 0.17)) / 0.02) ** 2)  # P
            x[i] += r * np.exp(-0.5 * ((t - b) / 0.009) ** 2)  # R
            x[i] -= s * np.exp(-0.5 * ((t - (b + 0.04)) / 0.009) ** 2)  # S
            x[i] += 0.25 * np.exp(-0.5 * ((t - (b + 0.3)) / 0.05) ** 2)  # T
        x[i] += offset_mv + wander_mv * np.sin(2 * np.pi * 0.15 * t + i)
    return x


@pytest.mark.parametrize("fs", [500.0, 250.0])
def test_hand_built_ecg_gives_known_voltages(fs):
    x = hand_built_ecg(fs)
    peaks = detect_r_peaks(x, fs)
    assert len(peaks) == 9  # beats at 0.5, 1.5, ..., 8.5 s
    np.testing.assert_allclose(peaks / fs, np.arange(0.5, 9.0, 1.0), atol=0.03)
    vc = voltage_criteria(x, fs, sex="F")
    assert vc.n_beats == 9
    tol = 0.06  # the 0.5 Hz high-pass and the sampled Gaussians move an amplitude by a few hundredths of a mV
    assert vc.sokolow_lyon_mv == pytest.approx(EXPECTED_SL, abs=tol)
    assert vc.cornell_mv == pytest.approx(EXPECTED_CORNELL, abs=tol)
    assert vc.s_v1_mv == pytest.approx(1.6, abs=tol) and vc.r_v5_mv == pytest.approx(2.2, abs=tol)
    assert vc.r_v6_mv == pytest.approx(1.8, abs=tol)
    assert vc.r_avl_mv == pytest.approx(1.1, abs=tol) and vc.s_v3_mv == pytest.approx(1.5, abs=tol)
    assert vc.sokolow_lyon_lvh is True and vc.cornell_lvh is True and vc.any_lvh is True and vc.sex == "F"
    male = voltage_criteria(x, fs, sex="male")
    assert male.cornell_lvh is False and male.cornell_mv == vc.cornell_mv and male.sex == "M"
    unknown = voltage_criteria(x, fs, sex=None)
    assert unknown.cornell_lvh is None and unknown.any_lvh is True  # Sokolow-Lyon alone suffices
    assert sokolow_lyon_mv(x, fs) == pytest.approx(vc.sokolow_lyon_mv)


def test_thresholds_and_record_input():
    assert SOKOLOW_LYON_THRESHOLD_MV == 3.5 and CORNELL_THRESHOLD_MV == {"M": 2.8, "F": 2.0}
    assert cornell_lvh(2.81, "M") is True and cornell_lvh(2.8, "M") is False
    assert cornell_lvh(2.01, "F") is True and cornell_lvh(2.0, "female") is False
    assert cornell_lvh(3.0, None) is None and cornell_lvh(3.0, "unknown") is None
    # halve every amplitude: Sokolow-Lyon below 3.5 mV
    small = hand_built_ecg(500.0) * 0.5
    rec = ECGRecord(signal=small, fs=500.0, leads=CANONICAL_LEADS, source="hand.csv", format="numpy")
    vc = voltage_criteria(rec, sex="M")
    assert vc.sokolow_lyon_mv == pytest.approx(EXPECTED_SL / 2, abs=0.05) and vc.sokolow_lyon_lvh is False
    assert vc.any_lvh is False
    # the old import path keeps working (synth re-exports the criteria function)
    from cardiofusion.synth.ecg import sokolow_lyon_mv as synth_sl

    assert synth_sl(small, 500.0) == pytest.approx(vc.sokolow_lyon_mv)


def test_unmeasurable_ecgs_raise_with_the_source():
    x = hand_built_ecg(500.0)
    limb = ECGRecord(signal=x[:6], fs=500.0, leads=CANONICAL_LEADS[:6], source="limb.csv", format="csv")
    with pytest.raises(ReadError, match=r"limb\.csv: .*need lead\(s\) V1, V5, V6, V3"):
        voltage_criteria(limb)
    with pytest.raises(ReadError, match="measurable beat"):
        voltage_criteria(np.zeros((12, 5000)), 500.0, source="flat.csv")
    assert math.isnan(sokolow_lyon_mv(np.zeros((12, 5000)), 500.0))


def test_sokolow_lyon_on_ptbxl_lvh_vs_norm(shared_data, capsys):
    """Score every shared PTB-XL record that is LVH or strictly normal; report (not assert) the AUROC."""
    from sklearn.metrics import roc_auc_score

    from cardiofusion.adapters import PTBXLConfig, adapt_ptbxl

    res = adapt_ptbxl(shared_data / "ptbxl", PTBXLConfig(sampling_rate=100))
    lab = res.labels.set_index("exam_id")
    keep = (lab["lvh"] == 1) | ((lab["norm"] == 1) & (lab["hyp_mentioned"] == 0))
    index = res.ecg_index[res.ecg_index["exam_id"].map(keep)].reset_index(drop=True)
    assert len(index) == 243 and int(lab.loc[index["exam_id"], "lvh"].sum()) == 18
    scores = score_ecgs(index, sex_col="sex")
    assert list(scores["exam_id"]) == list(index["exam_id"])  # one row per input row, same order
    read_ok = scores["status"] != "unreadable"
    assert read_ok.all()  # every shared record reads ...
    assert (scores.loc[read_ok, "status"] == "ok").all()  # ... and every one that reads is scored
    assert (scores["sokolow_lyon_lvh"] == (scores["sokolow_lyon_mv"] >= 3.5)).all()
    assert scores["n_beats"].min() >= 2 and scores["sokolow_lyon_mv"].between(0.1, 10).all()
    y = lab.loc[index["exam_id"], "lvh"].to_numpy()
    auc_sl = roc_auc_score(y, scores["sokolow_lyon_mv"])
    auc_cornell = roc_auc_score(y, scores["cornell_mv"])
    assert 0.0 <= auc_sl <= 1.0 and 0.0 <= auc_cornell <= 1.0
    with capsys.disabled():
        print(f"\n[PTB-XL shared, 100 Hz] LVH {int(y.sum())} vs NORM {int((y == 0).sum())}: "
              f"AUROC Sokolow-Lyon {auc_sl:.3f}, Cornell {auc_cornell:.3f}; "
              f"Sokolow-Lyon criterion sensitivity {scores.loc[y == 1, 'sokolow_lyon_lvh'].mean():.2f}, "
              f"specificity {1 - scores.loc[y == 0, 'sokolow_lyon_lvh'].mean():.2f}")


def test_score_ecgs_lists_failures(tmp_path):
    x = hand_built_ecg(500.0)
    good = tmp_path / "good.npy"
    np.save(good, x.astype(np.float32))
    table = pd.DataFrame({"exam_id": ["a", "b"], "path": [str(good), str(tmp_path / "missing.npy")], "sex": ["F", "M"]})
    out = score_ecgs(table, reader_options={"fs": 500.0, "units": "mV"})
    assert list(out["status"]) == ["ok", "unreadable"]
    assert out.loc[0, "sokolow_lyon_mv"] == pytest.approx(EXPECTED_SL, abs=0.06) and out.loc[0, "cornell_lvh"]
    assert "no such file" in out.loc[1, "reason"] and np.isnan(out.loc[1, "sokolow_lyon_mv"])
