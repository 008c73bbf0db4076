"""Signal-quality check of one ECG: is it plausibly a human ECG in millivolts at the stated rate?

A units or rate mistake does not make a file unreadable; it makes a wrong answer (an ECG in microvolts
read as millivolts scores as severe disease).  :func:`check_ecg_quality` measures, on the record as read
(its own rate, before resampling):

* **QRS amplitude**: per lead the median over beats of the QRS peak-to-peak (window
  ``[R - 60 ms, R + 80 ms]`` of :mod:`cardiofusion.transforms.criteria`, after its 0.5 Hz high-pass),
  then the median over the recorded leads.  A human ECG is about 0.3-5 mV; a file in microvolts read
  as millivolts is 1000 times that, millivolts read as microvolts 1000 times less.
* **Heart rate** from the R peaks (``neurokit2`` via :func:`~cardiofusion.transforms.criteria.detect_r_peaks`)
  at the *stated* sampling rate, and the **QRS width** (the extent of the median beat's slope around the R
  peak).  A 250 Hz file read as 500 Hz runs twice as fast (fast rate, QRS about 30 ms wide), a 1000 Hz
  file read as 500 Hz half as fast (slow rate, wide QRS).  Real ECGs overlap these values (sinus
  tachycardia with a narrow QRS, bradycardia with bundle branch block), so rate and width mistakes are
  flagged, and refused only outside :attr:`QualityConfig.refuse_rate_bpm`.
* **Clipped** samples (runs at a lead's own maximum or minimum: amplifier saturation) and **flat**
  samples (runs of one value lasting :attr:`QualityConfig.flat_run_s` or more: lead off), as the
  fraction of each lead's samples.

Each measure has a *refuse* range (the record is not scored: :class:`~cardiofusion.errors.ReadError`
in prediction, a failure in the cache build's ``failures.csv``) and a narrower *flag* range (scored,
with a warning in the prediction and the cache index's ``reason``).  Defaults are in
:class:`QualityConfig` and ``docs/screening.md``.
"""

from __future__ import annotations

import dataclasses
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..configfile import reject_unknown_fields
from ..errors import ConfigError, ReadError
from .criteria import QRS_WINDOW_S, clean_leads, detect_r_peaks

#: Beats needed before the heart rate and the per-beat QRS amplitude are trusted.
MIN_QUALITY_BEATS = 3
#: R peaks smaller than this fraction of the 75th percentile of the detected peaks are not beats.
MIN_PEAK_FRACTION = 0.35


@dataclass(frozen=True)
class QualityConfig:
    """Plausibility thresholds of the ECG signal-quality check (outside ``refuse_*``: not scored;
    outside ``flag_*`` but inside ``refuse_*``: scored with a warning).

    Attributes:
        refuse_qrs_mv: median QRS peak-to-peak (mV) outside this range is refused: below 0.05 mV
            looks like millivolts read as microvolts (or no signal), above 20 mV like microvolts or
            counts read as millivolts (the largest human QRS is about 7 mV).
        flag_qrs_mv: outside this range (0.15-8 mV) the record is scored with a warning (very low
            voltage, or unusually large).
        refuse_rate_bpm: heart rate (bpm at the stated rate) outside 25-250 is refused.
        flag_rate_bpm: outside 35-200 bpm scored with a warning asking whether the sampling rate is
            right (a 250 Hz file read as 500 Hz halves the apparent rate).
        flag_fast_narrow: ``(width_ms, rate_bpm)``: a QRS narrower than 40 ms at a rate above 95 bpm
            is flagged (the sampling rate is probably lower than stated).
        flag_slow_wide: ``(width_ms, rate_bpm)``: a QRS wider than 100 ms at a rate below 55 bpm is
            flagged (the sampling rate is probably higher than stated).
        flat_run_s: a run of one value at least this long (0.2 s) counts as flat (lead off).
        clip_run_samples: a run of at least this many samples (3) at a lead's own maximum or minimum
            counts as clipped (saturation).
        flag_bad_fraction: a lead with more than this fraction (5 %) of clipped or flat samples is
            named in a warning.
        refuse_bad_fraction: when the median recorded lead has more than this fraction (50 %) of
            clipped or flat samples the record is refused.
        refuse_no_beats: refuse a record in which fewer than 3 beats are found (default False: a
            warning, since a rhythm the detector misses is still an ECG).
    """

    refuse_qrs_mv: tuple[float, float] = (0.05, 20.0)
    flag_qrs_mv: tuple[float, float] = (0.15, 8.0)
    refuse_rate_bpm: tuple[float, float] = (25.0, 250.0)
    flag_rate_bpm: tuple[float, float] = (35.0, 200.0)
    flag_fast_narrow: tuple[float, float] = (40.0, 95.0)
    flag_slow_wide: tuple[float, float] = (100.0, 55.0)
    flat_run_s: float = 0.2
    clip_run_samples: int = 3
    flag_bad_fraction: float = 0.05
    refuse_bad_fraction: float = 0.5
    refuse_no_beats: bool = False

    def __post_init__(self) -> None:
        for name in ("refuse_qrs_mv", "flag_qrs_mv", "refuse_rate_bpm", "flag_rate_bpm"):
            value = getattr(self, name)
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"quality {name} must be a (low, high) pair, got {value!r}") from None
            if not (0 <= lo < hi):
                raise ConfigError(f"quality {name} must satisfy 0 <= low < high, got {value!r}")
            object.__setattr__(self, name, (lo, hi))
        for name in ("flag_fast_narrow", "flag_slow_wide"):
            value = getattr(self, name)
            try:
                width, rate = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"quality {name} must be a (width_ms, rate_bpm) pair, got {value!r}") from None
            object.__setattr__(self, name, (width, rate))
        if not (self.refuse_qrs_mv[0] <= self.flag_qrs_mv[0] and self.flag_qrs_mv[1] <= self.refuse_qrs_mv[1]):
            raise ConfigError("quality flag_qrs_mv must lie inside refuse_qrs_mv")
        if not (self.refuse_rate_bpm[0] <= self.flag_rate_bpm[0] and self.flag_rate_bpm[1] <= self.refuse_rate_bpm[1]):
            raise ConfigError("quality flag_rate_bpm must lie inside refuse_rate_bpm")
        if not (self.flat_run_s > 0):
            raise ConfigError(f"quality flat_run_s must be positive, got {self.flat_run_s}")
        if int(self.clip_run_samples) != self.clip_run_samples or self.clip_run_samples < 2:
            raise ConfigError(f"quality clip_run_samples must be an integer >= 2, got {self.clip_run_samples}")
        for name in ("flag_bad_fraction", "refuse_bad_fraction"):
            if not (0 < getattr(self, name) <= 1):
                raise ConfigError(f"quality {name} must be in (0, 1], got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> QualityConfig:
        reject_unknown_fields(cls, values, "quality")
        return cls(**values)


@dataclass
class ECGQuality:
    """What :func:`check_ecg_quality` measured and concluded.

    Attributes:
        qrs_mv: median QRS peak-to-peak over recorded leads, mV (NaN if not measurable).
        heart_rate_bpm: from the median R-R interval at the stated rate (NaN when < 3 beats).
        qrs_width_ms: extent of the median beat's slope above 15 % of its peak, ms (NaN when < 3 beats).
        n_beats: R peaks found.
        fs: the stated sampling rate the rate was measured at.
        bad_fraction: per recorded lead, the fraction of clipped or flat samples.
        refusals: reasons the record must not be scored (empty when it may be).
        warnings: reasons to be careful with the score.
    """

    qrs_mv: float
    heart_rate_bpm: float
    n_beats: int
    fs: float
    qrs_width_ms: float = float("nan")
    bad_fraction: dict[str, float] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``refuse``, ``flag`` or ``pass``."""
        return "refuse" if self.refusals else "flag" if self.warnings else "pass"

    def raise_if_refused(self, path: Any) -> None:
        """Raise :class:`ReadError` with the (first) refusal reason."""
        if self.refusals:
            raise ReadError(path, "; ".join(self.refusals))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status
        return d


def _runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal consecutive values of a 1-D array: ``(starts, lengths, values)``."""
    change = np.flatnonzero(np.diff(x) != 0) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [x.size])))
    return starts, lengths, x[starts]


def _bad_fraction(lead: np.ndarray, fs: float, config: QualityConfig) -> float:
    """Fraction of one lead's samples that are clipped (runs at its max/min) or flat (long runs)."""
    if lead.size == 0:
        return 1.0
    _, lengths, values = _runs(lead)
    flat_min = max(2, int(round(config.flat_run_s * fs)))
    hi, lo = lead.max(), lead.min()
    bad = (lengths >= flat_min) | ((lengths >= config.clip_run_samples) & ((values == hi) | (values == lo)))
    return float(lengths[bad].sum() / lead.size)


def _qrs_width_ms(cleaned: np.ndarray, fs: float, peaks: np.ndarray) -> float:
    """Width of the QRS of the median beat: where the spatial slope magnitude stays above 15 % of its
    peak around the R peak (gaps under 20 ms bridged), in ms; NaN with fewer than 3 whole beats."""
    slope = np.sqrt(np.mean(np.diff(cleaned, axis=1) ** 2, axis=0)) * fs  # (n - 1,) mV/s
    half = int(round(0.25 * fs))
    beats = [int(p) for p in peaks if p - half >= 0 and p + half <= slope.size]
    if len(beats) < MIN_QUALITY_BEATS:
        return float("nan")
    t = np.median(np.stack([slope[p - half: p + half] for p in beats]), axis=0)  # (2 * half,)
    base, top = np.median(t), t.max()
    above = t > base + 0.15 * (top - base)
    gap = max(1, int(round(0.02 * fs)))
    lo = hi = int(np.argmax(t))
    while lo > 0 and above[max(0, lo - gap): lo].any():
        lo = max(0, lo - gap) + int(np.flatnonzero(above[max(0, lo - gap): lo])[0])
    while hi < t.size - 1 and above[hi + 1: hi + 1 + gap].any():
        hi = hi + 1 + int(np.flatnonzero(above[hi + 1: hi + 1 + gap])[-1])
    return float(1000.0 * (hi - lo) / fs)


def _fmt_mv(x: float) -> str:
    return f"{x:.0f} mV" if x >= 100 else f"{x:.3g} mV" if x >= 0.01 else f"{x:.2g} mV"


def check_ecg_quality(record: Any, config: QualityConfig | None = None) -> ECGQuality:
    """Measure one :class:`~cardiofusion.records.ECGRecord` (in mV, at its stated ``fs``) against ``config``.

    Never raises for a bad signal: the verdict is in the result (:attr:`ECGQuality.refusals`,
    :attr:`ECGQuality.warnings`; :meth:`ECGQuality.raise_if_refused` turns a refusal into a ``ReadError``).
    """
    config = config or QualityConfig()
    fs = float(record.fs)
    x = np.asarray(record.signal, dtype=np.float64)  # (L, n) mV
    leads = list(record.leads)
    q = ECGQuality(qrs_mv=float("nan"), heart_rate_bpm=float("nan"), n_beats=0, fs=fs)
    if x.ndim != 2 or x.shape[1] < 2 or not np.isfinite(x).all():
        q.refusals.append("the signal is empty or not finite")
        return q
    recorded = [i for i in range(x.shape[0]) if np.ptp(x[i]) > 0]
    # -- clipped / flat samples -------------------------------------------------------------------
    q.bad_fraction = {leads[i]: round(_bad_fraction(x[i], fs, config), 4) for i in range(x.shape[0])}
    fractions = np.array([q.bad_fraction[leads[i]] for i in recorded]) if recorded else np.ones(1)
    if np.median(fractions) > config.refuse_bad_fraction:
        q.refusals.append(f"most leads are flat or clipped (median lead {100 * np.median(fractions):.0f} % of samples "
                          "constant or at the amplifier's limit): electrodes off or a saturated recording")
    else:
        bad = [leads[i] for i in recorded if q.bad_fraction[leads[i]] > config.flag_bad_fraction]
        if bad:
            q.warnings.append(f"lead(s) {', '.join(bad)} partly flat or clipped (more than "
                              f"{100 * config.flag_bad_fraction:.0f} % of samples constant or at the amplifier's limit)")
    if not recorded:
        return q
    # -- beats: R peaks, heart rate, QRS amplitude ------------------------------------------------
    xr = x[recorded]
    cleaned = clean_leads(xr, fs)
    with _warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        _warnings.simplefilter("ignore", RuntimeWarning)  # neurokit2 on a beatless signal: "Mean of empty slice"
        peaks = detect_r_peaks(cleaned, fs, cleaned=True)
    if len(peaks):  # drop detections far smaller than the typical R peak (T waves found at a wrong rate)
        mag = np.sqrt(np.mean(cleaned[:, peaks] ** 2, axis=0))  # (peaks,)
        peaks = peaks[mag >= MIN_PEAK_FRACTION * np.percentile(mag, 75)]
    q.n_beats = int(len(peaks))
    q0, q1 = (int(round(t * fs)) for t in QRS_WINDOW_S)
    n = cleaned.shape[1]
    inside = [int(r) for r in peaks if r + q0 >= 0 and r + q1 + 1 <= n]
    if len(inside) >= MIN_QUALITY_BEATS:
        pp = np.stack([np.ptp(cleaned[:, r + q0: r + q1 + 1], axis=1) for r in inside], axis=1)  # (L, beats)
        q.qrs_mv = float(np.median(np.median(pp, axis=1)))
    else:  # no measurable beats: the robust range of each lead (the QRS dominates it)
        spread = np.percentile(cleaned, 99.5, axis=1) - np.percentile(cleaned, 0.5, axis=1)
        q.qrs_mv = float(np.median(spread))
    if len(peaks) >= MIN_QUALITY_BEATS:
        rr = np.diff(peaks) / fs  # (beats - 1,) seconds
        q.heart_rate_bpm = float(60.0 / np.median(rr))
        q.qrs_width_ms = _qrs_width_ms(cleaned, fs, peaks)
    # -- verdicts -----------------------------------------------------------------------------------
    a = q.qrs_mv
    (r_lo, r_hi), (f_lo, f_hi) = config.refuse_qrs_mv, config.flag_qrs_mv
    if a > r_hi:
        likely = ("microvolts (or counts) read as millivolts" if a > 200 else
                  "the wrong units or resolution (a human QRS is at most about 7 mV)")
        q.refusals.append(f"amplitudes look like {likely} (median QRS {_fmt_mv(a)}; expected about 0.3-5 mV): "
                          "check the file's units / resolution")
    elif a < r_lo:
        likely = "millivolts read as microvolts" if a < 0.005 else "the wrong units, or no ECG signal"
        q.refusals.append(f"amplitudes look like {likely} (median QRS {_fmt_mv(a)}; expected about 0.3-5 mV): "
                          "check the file's units / resolution")
    elif a > f_hi:
        q.warnings.append(f"unusually large QRS amplitudes (median {_fmt_mv(a)}): check the units / resolution")
    elif a < f_lo:
        q.warnings.append(f"very low QRS amplitudes (median {_fmt_mv(a)}): low voltage, or check the units")
    hr = q.heart_rate_bpm
    at = f"at the stated {fs:g} Hz"
    if np.isnan(hr):
        msg = f"fewer than {MIN_QUALITY_BEATS} heart beats detected: the rate and rhythm could not be checked"
        (q.refusals if config.refuse_no_beats else q.warnings).append(msg)
    elif not (config.refuse_rate_bpm[0] <= hr <= config.refuse_rate_bpm[1]):
        q.refusals.append(f"heart rate {hr:.0f} bpm {at}: is the sampling rate right?")
    elif not (config.flag_rate_bpm[0] <= hr <= config.flag_rate_bpm[1]):
        q.warnings.append(f"heart rate {hr:.0f} bpm {at}: unusual; is the sampling rate right?")
    w = q.qrs_width_ms
    if np.isfinite(hr) and np.isfinite(w):
        (n_w, n_r), (s_w, s_r) = config.flag_fast_narrow, config.flag_slow_wide
        if w < n_w and hr > n_r:
            q.warnings.append(f"QRS complexes look {w:.0f} ms wide at a heart rate of {hr:.0f} bpm {at}: "
                              "is the sampling rate right (lower than stated)?")
        elif w > s_w and hr < s_r:
            q.warnings.append(f"QRS complexes look {w:.0f} ms wide at a heart rate of {hr:.0f} bpm {at}: "
                              "is the sampling rate right (higher than stated)?")
    return q


__all__ = ["MIN_PEAK_FRACTION", "MIN_QUALITY_BEATS", "ECGQuality", "QualityConfig", "check_ecg_quality"]
