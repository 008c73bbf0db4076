"""Fast synthetic 12-lead ECGs.

Each beat is a sum of Gaussian waves (P, septal Q, R, S, ST, T).  Limb-lead waves are vectors in the
frontal plane (amplitude, axis) projected on leads I (0 deg) and II (60 deg); III, aVR, aVL and aVF are
derived from I and II exactly as an electrocardiograph does (Einthoven/Goldberger), noise included.
Precordial leads have their own per-wave amplitudes with a patient-specific transition zone.
A record is one beat template per lead convolved with a weighted impulse train at the R times
(heart-rate variability, respiratory amplitude modulation; irregular RR and no P waves in AF), plus
f-waves, pacing spikes, white noise, baseline wander and powerline interference.

LVH multiplies the R voltage in I/aVL/V4-V6 and the S voltage in V1-V3 (Sokolow-Lyon and Cornell
voltage rise) and turns the QRS axis left; strain adds lateral ST depression and T inversion
(I, aVL, V5, V6) with reciprocal changes in aVR/III/V1.  A paced rhythm replaces the QRS by a wide
paced complex, which masks both signs.  ~1 ms of numpy per record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.signal import fftconvolve

from ..transforms.criteria import sokolow_lyon_mv  # noqa: F401  (re-exported: per-beat Sokolow-Lyon voltage)
from ..records import CANONICAL_LEADS

#: precordial per-wave amplitudes (mV), V1..V6, for a normal adult heart.
_V_R = np.array([0.18, 0.4, 0.75, 1.15, 1.15, 0.9])
_V_S = np.array([-0.85, -1.2, -0.8, -0.45, -0.2, -0.08])
_V_Q = np.array([0.0, 0.0, 0.0, -0.03, -0.08, -0.08])
_V_T = np.array([0.0, 0.35, 0.45, 0.42, 0.33, 0.24])
_V_P = np.array([0.04, 0.06, 0.06, 0.06, 0.06, 0.05])
_V_LVH_R = np.array([0.0, 0.0, 0.2, 0.6, 1.0, 1.0])  # share of the LVH gain on R
_V_LVH_S = np.array([1.0, 1.0, 0.6, 0.2, 0.0, 0.0])  # share of the LVH gain on S
_V_STRAIN_ST = np.array([0.15, 0.0, -0.1, -0.35, -0.6, -0.6])
_V_STRAIN_T = np.array([0.2, 0.0, -0.2, -0.6, -1.0, -1.0])

#: ECG territories of the ischaemic correlates: (frontal-plane axis in degrees, V1..V6 weights).
ISCHAEMIA_TERRITORIES: dict[str, tuple[float, tuple[float, ...]]] = {
    "inferior": (90.0, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
    "anterior": (0.0, (0.3, 1.0, 1.0, 0.7, 0.2, 0.0)),
    "lateral": (10.0, (0.0, 0.0, 0.0, 0.4, 1.0, 1.0)),
}
#: limb-lead amplitude of a territory's changes relative to its precordial ones (inferior: limb leads only)
_TERRITORY_LIMB = {"inferior": 1.0, "anterior": 0.15, "lateral": 0.6}


def _frontal(amp: float, axis_deg: float) -> np.ndarray:
    """Projection of a frontal-plane vector on leads I (0 deg) and II (60 deg): shape (2,)."""
    a = np.deg2rad(axis_deg)
    return amp * np.array([np.cos(a), np.cos(a - np.pi / 3)])


def _interp_shift(v: np.ndarray, shift: float) -> np.ndarray:
    """Shift a V1..V6 amplitude profile by ``shift`` leads (transition zone earlier/later)."""
    x = np.arange(6, dtype=float)
    return np.interp(x - shift, x, v)


def beat_template(spec: dict[str, Any], fs: float) -> tuple[np.ndarray, int]:
    """One beat for the 8 independent leads (I, II, V1..V6): ``(8, L)`` in mV and the R-peak offset."""
    pre, post = 0.36, 0.64
    t = np.arange(-pre, post, 1.0 / fs)  # (L,)
    L = t.size

    def g(c: float, w: float) -> np.ndarray:
        return np.exp(-0.5 * ((t - c) / w) ** 2)

    scale = spec["amp_scale"]
    gain = spec["lvh_gain_visible"]
    strain = spec["strain_visible_mv"]
    w = spec["qrs_width"] * (1 + 0.08 * (gain - 1))
    tr = spec["transition"]
    tsc = spec["t_scale"]
    hr = spec["hr_bpm"]
    qt = 0.40 * np.sqrt(60.0 / hr) ** 0.9  # Bazett-like
    t_c = qt - 0.13
    out = np.zeros((8, L))

    def add(frontal: np.ndarray, prec: np.ndarray, wave: np.ndarray) -> None:
        out[:2] += frontal[:, None] * wave[None, :]
        out[2:] += prec[:, None] * wave[None, :]

    if not spec["af"]:
        add(_frontal(0.12, 55), _V_P, g(-spec["pr_s"], 0.022))
    axis = spec["qrs_axis_deg"]
    if spec["paced"]:
        # RV apical pacing: wide LBBB-like complex, left axis, discordant T
        add(_frontal(1.0, -60), np.array([-0.2, -0.4, -0.3, 0.3, 0.8, 0.9]), g(0.02, 0.03))
        add(_frontal(0.5, 150), np.array([-1.2, -1.5, -1.0, -0.4, 0.0, 0.0]), g(0.08, 0.03))
        add(_frontal(0.35, 120), np.array([0.3, 0.35, 0.2, -0.1, -0.25, -0.25]) * tsc, g(t_c + 0.04, 0.06))
        spike = np.zeros(L)
        i0 = int(round((pre - 0.035) * fs))
        spike[i0], spike[i0 + 1] = 1.0, -0.35
        amp = spec.get("spike_mv", 1.5)
        add(_frontal(amp, spec.get("spike_axis_deg", 100)), amp * np.array([0.9, 0.7, 0.5, 0.4, 0.3, 0.3]), spike)
    else:
        r_gain = 1 + (gain - 1) * _V_LVH_R
        s_gain = 1 + (gain - 1) * _V_LVH_S
        add(_frontal(0.1, 160), _interp_shift(_V_Q, tr) + np.array([0.08, 0.05, 0, 0, 0, 0]), g(-0.022 * w, 0.007 * w))
        add(_frontal(1.1 * gain, axis - 12 * (gain - 1)), _interp_shift(_V_R, tr) * r_gain, g(0.0, 0.0105 * w))
        add(_frontal(0.25, -100), _interp_shift(_V_S, tr) * s_gain, g(0.028 * w, 0.011 * w))
        t_prec = _V_T * tsc
        t_prec[0] = spec["v1_t"]
        t_wave = g(t_c, 0.052) + 0.35 * g(t_c + 0.035, 0.03)
        add(_frontal(0.32 * tsc, axis - 5), t_prec, t_wave)
        if strain > 0:
            st = g(0.1 + 0.25 * (t_c - 0.1), 0.045)  # downsloping ST segment into the T wave
            add(_frontal(0.6 * strain, 165), strain * _V_STRAIN_ST, st)
            add(_frontal(1.1 * strain, 165), strain * _V_STRAIN_T, t_wave)
        _add_ischaemia(spec, add, g, t_wave, t_prec, tsc, w)
    return (out * scale).astype(np.float64), int(round(pre * fs))


def _add_ischaemia(spec: dict[str, Any], add: Any, g: Any, t_wave: np.ndarray, t_prec: np.ndarray,
                   tsc: float, w: float) -> None:
    """Ischaemic correlates of coronary calcium in one territory (``isch_*_visible`` keys; none: unchanged).

    ST depression (a negative ST-segment wave), T flattening (part of the T wave removed) and a
    pathological Q wave (a deep, wide negative deflection before R), each along the territory's
    frontal-plane axis and precordial weights (:data:`ISCHAEMIA_TERRITORIES`).
    """
    terr = spec.get("isch_territory") or ""
    st_mv = float(spec.get("isch_st_mv_visible", 0.0))
    t_flat = float(spec.get("isch_t_flat_visible", 0.0))
    q_mv = float(spec.get("isch_q_mv_visible", 0.0))
    if not terr or (st_mv <= 0 and t_flat <= 0 and q_mv <= 0):
        return
    axis, prec = ISCHAEMIA_TERRITORIES[terr]
    prec_w = np.asarray(prec, dtype=float)
    limb = _TERRITORY_LIMB[terr]
    if st_mv > 0:
        add(_frontal(-st_mv * limb, axis), -st_mv * prec_w, g(0.12, 0.05))
    if t_flat > 0:
        add(_frontal(-t_flat * 0.32 * tsc * limb, axis), -t_flat * t_prec * prec_w, t_wave)
    if q_mv > 0:
        add(_frontal(-q_mv * limb, axis), -q_mv * prec_w, g(-0.03 * w, 0.012 * w))


def _beat_times(spec: dict[str, Any], duration: float, rng: np.random.Generator) -> np.ndarray:
    rr = 60.0 / spec["hr_bpm"]
    times = []
    t = -rng.uniform(0.3, 0.3 + rr)
    while t < duration + 0.7:
        times.append(t)
        if spec["af"]:
            step = rr * float(np.exp(rng.normal(0, 0.22)))
        else:
            step = rr * (1 + 0.04 * np.sin(2 * np.pi * 0.25 * t) + rng.normal(0, 0.015))
        t += float(np.clip(step, 0.33, 2.2))
    return np.asarray(times)


def render_ecg(spec: dict[str, Any], rng: np.random.Generator, fs: float = 500.0,
               duration_s: float = 15.0) -> np.ndarray:
    """One 12-lead record ``(12, n)`` float32 in mV, leads in :data:`CANONICAL_LEADS` order."""
    n = int(round(fs * duration_s))
    spec = dict(spec)
    if spec["paced"]:
        spec.setdefault("spike_mv", float(rng.uniform(0.5, 3.0)))
        spec.setdefault("spike_axis_deg", float(rng.uniform(60, 140)))
    tmpl, r_off = beat_template(spec, fs)  # (8, L)
    L = tmpl.shape[1]
    pad = L
    beats = _beat_times(spec, duration_s, rng)
    idx = np.round(beats * fs).astype(int) + pad
    keep = (idx >= 0) & (idx < n + 2 * pad)
    idx = idx[keep]
    train = np.zeros(n + 2 * pad)
    # respiratory amplitude modulation + small beat-to-beat jitter
    train[idx] = 1 + 0.06 * np.sin(2 * np.pi * beats[keep] / rng.uniform(3.5, 6)) + rng.normal(0, 0.02, idx.size)
    x = fftconvolve(np.broadcast_to(train, (8, train.size)), tmpl, mode="full", axes=1)  # (8, n+2pad+L-1)
    x = x[:, pad + r_off: pad + r_off + n]  # (8, n): template offset aligns R with the impulse
    tt = np.arange(n) / fs
    if spec["af"]:
        f_amp = rng.uniform(0.03, 0.1)
        phase = np.cumsum(2 * np.pi * (rng.uniform(4.5, 7.5) + 0.8 * np.sin(2 * np.pi * 0.1 * tt + rng.uniform(0, 6))) / fs)
        fw = f_amp * np.sin(phase) * (1 + 0.3 * np.sin(2 * np.pi * 0.3 * tt))
        x[:2] += _frontal(1.0, 85)[:, None] * fw
        x[2:] += np.array([1.2, 0.7, 0.4, 0.25, 0.2, 0.15])[:, None] * fw
    # noise, baseline wander, powerline (independent per recorded channel)
    x += rng.normal(0, spec["noise_mv"], size=x.shape)
    f = rng.uniform(0.05, 0.45, size=(8, 2))
    ph = rng.uniform(0, 2 * np.pi, size=(8, 2))
    a = spec["wander_mv"] * rng.uniform(0.3, 1.0, size=(8, 2))
    x += (a[:, :, None] * np.sin(2 * np.pi * f[:, :, None] * tt + ph[:, :, None])).sum(1)
    if spec["powerline_mv"] > 0:
        x += spec["powerline_mv"] * rng.uniform(0.3, 1.0, size=(8, 1)) * np.sin(
            2 * np.pi * spec["powerline_hz"] * tt + rng.uniform(0, 2 * np.pi))
    lead_i, lead_ii = x[0], x[1]
    out = np.empty((12, n), dtype=np.float32)
    out[0] = lead_i
    out[1] = lead_ii
    out[2] = lead_ii - lead_i              # III
    out[3] = -(lead_i + lead_ii) / 2       # aVR
    out[4] = lead_i - lead_ii / 2          # aVL
    out[5] = lead_ii - lead_i / 2          # aVF
    out[6:] = x[2:]
    return out


def to_counts(signal_mv: np.ndarray, resolution_uv: float = 1.25) -> np.ndarray:
    """mV -> integer counts of ``resolution_uv`` microvolts (int32)."""
    return np.rint(np.asarray(signal_mv, dtype=np.float64) * (1000.0 / resolution_uv)).astype(np.int32)


def write_ecg_csv(path: str | Path, counts: np.ndarray) -> None:
    """Write ``(12, n)`` integer counts as a CSV with the canonical lead names as header."""
    import polars as pl

    pl.DataFrame({lead: counts[i] for i, lead in enumerate(CANONICAL_LEADS)}).write_csv(path)


def write_defective_ecg_csv(path: str | Path, n: int, kind: str) -> None:
    """A broken export: ``flat`` (every lead constant 0) or ``nan`` (empty cells in every lead)."""
    if kind == "flat":
        write_ecg_csv(path, np.zeros((12, n), dtype=np.int32))
        return
    with open(path, "w", newline="") as f:
        f.write(",".join(CANONICAL_LEADS) + "\n")
        row = "," * 11 + "\n"
        f.write(row * n)
