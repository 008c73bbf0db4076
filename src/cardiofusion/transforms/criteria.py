"""ECG voltage criteria for left ventricular hypertrophy, the clinical baselines a cardiologist uses.

Both criteria are measured **per beat** and summarised by the median over beats:

* **Sokolow-Lyon** voltage ``S(V1) + max(R(V5), R(V6))``; criterion met at ``>= 3.5 mV`` (35 mm at
  10 mm/mV).  Sokolow & Lyon, Am Heart J 1949.
* **Cornell** voltage ``R(aVL) + S(V3)``; criterion met at ``> 2.8 mV`` in men and ``> 2.0 mV`` in
  women (Casale et al., Circulation 1987).  Unknown sex: the continuous voltage is still returned, the
  binary criterion is ``None``.

How a beat is measured (signal in mV, canonical lead order, any sampling rate):

1. Each lead is high-pass filtered at 0.5 Hz (2nd-order Butterworth, zero-phase ``sosfiltfilt``),
   which removes baseline wander without touching QRS amplitudes (``neurokit2.ecg_clean`` is not
   used for amplitudes: its powerline moving average would flatten the R peaks).
2. R peaks are found once for all leads on the spatial magnitude ``sqrt(mean over leads of x**2)``
   with ``neurokit2.ecg_findpeaks`` (method ``neurokit``), then moved to the local maximum of that
   magnitude within +-50 ms, so that a small or inverted lead II does not lose beats.
3. Per beat and lead, the isoelectric level is the median of the PR segment window
   ``[R - 110 ms, R - 50 ms]``; the R amplitude is the maximum above it and the S amplitude the depth
   of the minimum below it within the QRS window ``[R - 60 ms, R + 80 ms]`` (both >= 0).
4. Beats whose windows leave the record are skipped; the record needs :data:`MIN_BEATS` beats.

The continuous voltages are the scores of the clinical baselines (AUROC etc.); the binary criteria
are what a reader of the ECG would report.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ReadError
from ..records import CANONICAL_LEADS, ECGRecord

if TYPE_CHECKING:
    import pandas as pd

#: Sokolow-Lyon criterion threshold, mV (>=).
SOKOLOW_LYON_THRESHOLD_MV = 3.5
#: Cornell voltage thresholds, mV (>), by sex.
CORNELL_THRESHOLD_MV: dict[str, float] = {"M": 2.8, "F": 2.0}
#: Fewest measurable beats for a record to be scored.
MIN_BEATS = 2
#: Measurement windows relative to the R peak, seconds.
QRS_WINDOW_S = (-0.06, 0.08)
PR_WINDOW_S = (-0.11, -0.05)
#: Leads each criterion needs.
SOKOLOW_LYON_LEADS = ("V1", "V5", "V6")
CORNELL_LEADS = ("aVL", "V3")


@dataclass(frozen=True)
class VoltageCriteria:
    """The voltage criteria of one ECG (amplitudes in mV, medians over beats).

    Attributes:
        sokolow_lyon_mv: ``S(V1) + max(R(V5), R(V6))``, the median of the per-beat sums.
        cornell_mv: ``R(aVL) + S(V3)``, the median of the per-beat sums.
        s_v1_mv, r_v5_mv, r_v6_mv, r_avl_mv, s_v3_mv: median component amplitudes.
        n_beats: beats measured.
        sokolow_lyon_lvh: ``sokolow_lyon_mv >= 3.5``.
        cornell_lvh: ``cornell_mv`` above the sex-specific threshold; ``None`` when sex is unknown.
        sex: ``"M"``, ``"F"`` or ``None``, as used for Cornell.
    """

    sokolow_lyon_mv: float
    cornell_mv: float
    s_v1_mv: float
    r_v5_mv: float
    r_v6_mv: float
    r_avl_mv: float
    s_v3_mv: float
    n_beats: int
    sokolow_lyon_lvh: bool
    cornell_lvh: bool | None
    sex: str | None

    @property
    def any_lvh(self) -> bool | None:
        """Either criterion met (``None`` only when Sokolow-Lyon is not met and Cornell is unknown)."""
        if self.sokolow_lyon_lvh or self.cornell_lvh:
            return True
        return None if self.cornell_lvh is None else False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["any_lvh"] = self.any_lvh
        return d


def normalise_sex(sex: Any) -> str | None:
    """``"M"``/``"F"`` from the usual spellings (M, male, F, female, case-insensitive); else ``None``."""
    if sex is None or (isinstance(sex, float) and math.isnan(sex)):
        return None
    s = str(sex).strip().lower()
    if s in ("m", "male", "man"):
        return "M"
    if s in ("f", "female", "woman", "w"):
        return "F"
    return None


def cornell_lvh(cornell_mv: float, sex: Any) -> bool | None:
    """Cornell criterion: ``cornell_mv`` > 2.8 mV (men) / 2.0 mV (women); ``None`` for unknown sex."""
    s = normalise_sex(sex)
    if s is None or not np.isfinite(cornell_mv):
        return None
    return bool(cornell_mv > CORNELL_THRESHOLD_MV[s])


def _nk():
    import neurokit2 as nk  # slow import (seconds): only when criteria are computed

    return nk


def clean_leads(signal_mv: np.ndarray, fs: float) -> np.ndarray:
    """``(L, n)`` -> ``(L, n)`` float64: zero-phase 0.5 Hz high-pass per lead (baseline wander removed)."""
    from scipy.signal import butter, sosfiltfilt

    x = np.asarray(signal_mv, dtype=np.float64)
    sos = butter(2, 0.5, btype="highpass", fs=float(fs), output="sos")
    if x.shape[-1] <= 3 * (2 * sos.shape[0] + 1):  # too short to filter: level removal only
        return x - np.median(x, axis=-1, keepdims=True)
    return sosfiltfilt(sos, x, axis=-1)


def detect_r_peaks(signal_mv: np.ndarray, fs: float, *, cleaned: bool = False) -> np.ndarray:
    """R-peak sample indices of a multi-lead ECG ``(L, n)`` (mV), common to all leads.

    Detection runs on the spatial magnitude of the cleaned leads (``neurokit2.ecg_findpeaks``),
    each peak then moved to the magnitude's maximum within +-50 ms. Returns sorted unique indices.
    """
    nk = _nk()
    x = np.asarray(signal_mv, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if not cleaned:
        x = clean_leads(x, fs)
    mag = np.sqrt(np.mean(x ** 2, axis=0))  # (n,)
    if not np.any(mag > 0):
        return np.zeros(0, dtype=np.int64)
    try:
        found = nk.ecg_findpeaks(mag, sampling_rate=int(round(fs)), method="neurokit")["ECG_R_Peaks"]
    except Exception:  # neurokit raises on degenerate signals (too short, flat)
        return np.zeros(0, dtype=np.int64)
    half = max(1, int(round(0.05 * fs)))
    peaks = []
    for p in np.asarray(found, dtype=np.int64):
        lo, hi = max(0, p - half), min(mag.size, p + half + 1)
        peaks.append(lo + int(np.argmax(mag[lo:hi])))
    return np.unique(np.asarray(peaks, dtype=np.int64))


def beat_amplitudes(signal_mv: np.ndarray, fs: float, r_peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-beat R and S amplitudes (mV, >= 0) of every lead: two ``(L, n_beats)`` arrays.

    Beats whose PR or QRS window leaves the record are dropped (the returned beat count says how many remain).
    """
    x = np.asarray(signal_mv, dtype=np.float64)
    n = x.shape[1]
    q0, q1 = (int(round(t * fs)) for t in QRS_WINDOW_S)
    b0, b1 = (int(round(t * fs)) for t in PR_WINDOW_S)
    r_amp, s_amp = [], []
    for r in np.asarray(r_peaks, dtype=np.int64):
        if r + b0 < 0 or r + q1 + 1 > n:
            continue
        base = np.median(x[:, r + b0: r + b1 + 1], axis=1)  # (L,)
        qrs = x[:, r + q0: r + q1 + 1] - base[:, None]  # (L, W)
        r_amp.append(np.clip(qrs.max(axis=1), 0, None))
        s_amp.append(np.clip(-qrs.min(axis=1), 0, None))
    if not r_amp:
        empty = np.zeros((x.shape[0], 0))
        return empty, empty
    return np.stack(r_amp, axis=1), np.stack(s_amp, axis=1)


def _lead_rows(leads: Sequence[str], needed: Iterable[str]) -> dict[str, int]:
    index = {name: i for i, name in enumerate(leads)}
    return {name: index[name] for name in needed if name in index}


def voltage_criteria(
    ecg: ECGRecord | np.ndarray,
    fs: float | None = None,
    *,
    sex: Any = None,
    leads: Sequence[str] = CANONICAL_LEADS,
    source: str | os.PathLike | None = None,
) -> VoltageCriteria:
    """Sokolow-Lyon and Cornell voltages of one ECG, measured per beat.

    Args:
        ecg: an :class:`ECGRecord`, or a ``(leads, samples)`` array in mV (then ``fs`` is required).
        fs: sampling rate in Hz (taken from the record when ``ecg`` is one).
        sex: ``M``/``F`` (or male/female) for the Cornell threshold; unknown -> ``cornell_lvh`` None.
        leads: lead names of the array's rows (ignored for a record, which carries its own).
        source: name used in error messages (default: the record's source).

    Raises:
        ReadError: a needed lead is missing, or fewer than :data:`MIN_BEATS` beats can be measured.
    """
    if isinstance(ecg, ECGRecord):
        x, fs, leads = ecg.signal, float(ecg.fs), ecg.leads
        source = source or ecg.source
    else:
        x = np.asarray(ecg, dtype=np.float64)
        if fs is None:
            raise ValueError("fs is required when the ECG is an array")
    where = source or "<ECG array>"
    if x.ndim != 2 or x.shape[0] != len(leads):
        raise ReadError(where, f"signal shape {x.shape} does not match {len(leads)} lead names")
    rows = _lead_rows(leads, SOKOLOW_LYON_LEADS + CORNELL_LEADS)
    missing = [name for name in SOKOLOW_LYON_LEADS + CORNELL_LEADS if name not in rows]
    if missing:
        raise ReadError(where, f"voltage criteria need lead(s) {', '.join(missing)}, absent from this ECG")
    if not np.all(np.isfinite(x)):
        raise ReadError(where, "signal has non-finite samples")
    cleaned = clean_leads(x, float(fs))
    peaks = detect_r_peaks(cleaned, float(fs), cleaned=True)
    r_amp, s_amp = beat_amplitudes(cleaned, float(fs), peaks)
    n_beats = r_amp.shape[1]
    if n_beats < MIN_BEATS:
        raise ReadError(where, f"only {n_beats} measurable beat(s) detected (need {MIN_BEATS})")
    s_v1, r_v5, r_v6 = s_amp[rows["V1"]], r_amp[rows["V5"]], r_amp[rows["V6"]]
    r_avl, s_v3 = r_amp[rows["aVL"]], s_amp[rows["V3"]]
    sl = float(np.median(s_v1 + np.maximum(r_v5, r_v6)))
    cv = float(np.median(r_avl + s_v3))
    s = normalise_sex(sex)
    return VoltageCriteria(
        sokolow_lyon_mv=sl, cornell_mv=cv,
        s_v1_mv=float(np.median(s_v1)), r_v5_mv=float(np.median(r_v5)), r_v6_mv=float(np.median(r_v6)),
        r_avl_mv=float(np.median(r_avl)), s_v3_mv=float(np.median(s_v3)), n_beats=int(n_beats),
        sokolow_lyon_lvh=bool(sl >= SOKOLOW_LYON_THRESHOLD_MV), cornell_lvh=cornell_lvh(cv, s), sex=s,
    )


def sokolow_lyon_mv(signal_mv: np.ndarray, fs: float = 500.0) -> float:
    """Sokolow-Lyon voltage ``S(V1) + max(R(V5), R(V6))`` in mV of a ``(12, n)`` canonical-order array.

    NaN when fewer than :data:`MIN_BEATS` beats can be measured.
    """
    try:
        return voltage_criteria(np.asarray(signal_mv), fs).sokolow_lyon_mv
    except ReadError:
        return float("nan")


#: Columns of :func:`score_ecgs`, after the id columns.
SCORE_COLUMNS: tuple[str, ...] = (
    "sokolow_lyon_mv", "cornell_mv", "s_v1_mv", "r_v5_mv", "r_v6_mv", "r_avl_mv", "s_v3_mv", "n_beats",
    "sokolow_lyon_lvh", "cornell_lvh", "any_lvh", "sex_used", "status", "reason",
)


def score_ecgs(table: Any, *, path_col: str = "path", id_col: str = "exam_id", sex_col: str | None = "sex",
               reader_options: dict[str, Any] | None = None) -> pd.DataFrame:
    """Voltage criteria of every ECG in a table (an index table or a cohort manifest).

    Reads each file with :func:`cardiofusion.io.ecg.read_ecg`; ``status`` is ``ok``, ``unreadable``
    (the reader failed) or ``unmeasurable`` (read, but a lead is missing or too few beats), with the
    ``reason``: no row ever disappears.  Returns one row per input row
    (same order) with ``id_col``, ``path_col`` and :data:`SCORE_COLUMNS`.

    Args:
        table: pandas or Polars frame with ``path_col`` (and ``id_col``, ``sex_col`` if present).
        path_col, id_col: columns of the ECG path and id (manifest: ``ecg_path`` / ``ecg_exam_id``).
        sex_col: column with ``M``/``F`` for Cornell (None or absent: Cornell binary is None).
        reader_options: ``fs``/``units``/... for headerless files.
    """
    import pandas as pd

    from ..io.ecg import read_ecg

    df = table.to_pandas() if hasattr(table, "to_pandas") and not isinstance(table, pd.DataFrame) else table
    rows = []
    cache: dict[tuple[str, Any], dict[str, Any]] = {}
    for _, row in df.iterrows():
        path = str(row[path_col])
        sex = row[sex_col] if sex_col and sex_col in df.columns else None
        key = (path, normalise_sex(sex))
        if key not in cache:
            out: dict[str, Any] = {c: None for c in SCORE_COLUMNS}
            try:
                record = read_ecg(path, **(reader_options or {}))
            except ReadError as e:
                record = None
                out["status"], out["reason"] = "unreadable", e.reason
            if record is not None:
                try:
                    out.update(voltage_criteria(record, sex=sex).to_dict())
                    out["sex_used"] = out.pop("sex")
                    out["status"], out["reason"] = "ok", None
                except ReadError as e:
                    out["status"], out["reason"] = "unmeasurable", e.reason
            cache[key] = out
        rows.append({id_col: row[id_col] if id_col in df.columns else None, path_col: path, **cache[key]})
    out_df = pd.DataFrame(rows, columns=[id_col, path_col, *SCORE_COLUMNS])
    for c in ("sokolow_lyon_mv", "cornell_mv", "s_v1_mv", "r_v5_mv", "r_v6_mv", "r_avl_mv", "s_v3_mv"):
        out_df[c] = out_df[c].astype(float)
    return out_df


__all__ = [
    "CORNELL_THRESHOLD_MV",
    "MIN_BEATS",
    "SCORE_COLUMNS",
    "SOKOLOW_LYON_THRESHOLD_MV",
    "VoltageCriteria",
    "beat_amplitudes",
    "clean_leads",
    "cornell_lvh",
    "detect_r_peaks",
    "normalise_sex",
    "score_ecgs",
    "sokolow_lyon_mv",
    "voltage_criteria",
]
