"""Synthetic patients, their exam schedules and the planted signs (no files written here).

Every patient draws from its own random stream (``SeedSequence(seed, spawn_key=(0, index))``), so a
patient's plan does not depend on how many patients come before it or on the number of workers.
A latent AS severity (0 for non-AS) drives the echo measurements and, with independent noise, the ECG
signs (LVH voltage gain, strain) and the X-ray signs (cardiothoracic ratio, valve calcification).
Confounders (age, hypertension LVH, heart-failure cardiomegaly, AF, pacemaker, AP view) blur both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..cohort.labels import CAC_BINS, ASCriteria
from .config import SynthConfig
from .ecg import ISCHAEMIA_TERRITORIES

#: The AS label rule (:mod:`cardiofusion.cohort.labels`, the paper's thresholds) the echoes are drawn to meet.
_AS_RULE = ASCriteria()

_FIRST = ("Alex", "Sam", "Robin", "Kim", "Jo", "Chris", "Max", "Noa", "Yuki", "Ren", "Mika", "Sora",
          "Hana", "Kai", "Lee", "Toni", "Sasha", "Jules", "Ari", "Eli")
_LAST = ("Synthetic", "Phantom", "Example", "Sample", "Testcase", "Dummy", "Mock", "Placeholder",
         "Fictive", "Madeup")

#: ECG leads whose R (I, aVL, V5, V6) or S (V1, V2) voltage carries the LVH sign.
LVH_LEADS = ("I", "aVL", "V1", "V2", "V5", "V6")
#: ECG leads with the strain pattern (ST depression, T inversion).
STRAIN_LEADS = ("I", "aVL", "V5", "V6")


def patient_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Random stream of one patient (``stream`` 0: plan; others: per-exam rendering)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, index)))


def exam_rng(seed: int, patient_index: int, exam_key: int) -> np.random.Generator:
    """Random stream of one rendered exam, independent of worker layout."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, patient_index, exam_key)))


def coronary_rng(seed: int, patient_index: int, exam_key: int) -> np.random.Generator:
    """Random stream of an X-ray's coronary calcification specks (separate from :func:`exam_rng`)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, patient_index, exam_key)))


@dataclass
class PatientPlan:
    """One patient with every exam to write (specs are plain dicts, picklable for workers)."""

    patient: dict[str, Any]
    echos: list[dict[str, Any]] = field(default_factory=list)
    cxrs: list[dict[str, Any]] = field(default_factory=list)
    ecgs: list[dict[str, Any]] = field(default_factory=list)


def _age_at(birth: dt.date, when: dt.datetime) -> int:
    d = when.date()
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


def _at(day: dt.date, rng: np.random.Generator, lo_h: float = 8.0, hi_h: float = 17.5) -> dt.datetime:
    minutes = int(rng.integers(int(lo_h * 60), int(hi_h * 60)))
    return dt.datetime(day.year, day.month, day.day) + dt.timedelta(minutes=minutes)


def _offset_dt(ref: dt.datetime, days: int, limit: int, rng: np.random.Generator) -> dt.datetime:
    """Datetime ``days`` away from ``ref``; at ``|days| == limit`` the clock time keeps it inside."""
    day = ref.date() + dt.timedelta(days=int(days))
    if abs(days) < limit:
        return _at(day, rng)
    # exactly at the window edge: keep |delta| strictly below limit days
    minutes = int(rng.integers(5, 120))
    return ref + dt.timedelta(days=int(days)) - np.sign(days) * dt.timedelta(minutes=minutes)


def _echo_measurements(is_as: bool, sev: float, rng: np.random.Generator,
                       low_gradient: bool) -> tuple[float, float, float]:
    """Vmax (m/s), mean gradient (mmHg), AVA (cm2), consistent with the label rule by construction."""
    if is_as:
        s = float(np.clip(sev + rng.normal(0, 0.04), 0.0, 1.0))
        if low_gradient:  # AS by valve area only (low-flow low-gradient)
            v = rng.uniform(2.0, 2.45)
            mpg = min(2.4 * v * v * np.exp(rng.normal(0, 0.1)), 19.0)
            ava = rng.uniform(0.75, 1.45)
        else:
            v = max(2.5, 2.55 + 2.6 * s + rng.normal(0, 0.18))
            mpg = 2.4 * v * v * np.exp(rng.normal(0, 0.12))
            ava = float(np.clip(1.75 - 1.2 * s + rng.normal(0, 0.15), 0.35, 2.2))  # mild AS keeps AVA > 1.5
    else:
        v = float(np.clip(rng.normal(1.35, 0.3), 0.7, 2.45))
        mpg = min(2.4 * v * v * np.exp(rng.normal(0, 0.12)), 19.0)
        ava = float(np.clip(rng.normal(2.7, 0.55), 1.6, 4.5))
    return round(float(v), 2), round(float(mpg), 1), round(float(ava), 2)


#: random stream of the targets added after the AS signs (coronary calcium, ischaemia, LV mass, LVEF):
#: a separate stream, so the plan stream (and every AS sign, signal and image it decides) is unchanged.
TARGET_STREAM = 3
def _plan_targets(index: int, cfg: SynthConfig, *, age0: float, female: bool, is_as: bool, sev: float,
                  minor: bool, hf: bool, hypertrophy: float) -> dict[str, Any]:
    """Coronary calcium, its ECG / X-ray correlates, LV mass and LVEF of one patient (targets stream).

    - Agatston score: P(score > 0) = sigmoid(0.09 (age - 62) +- 0.55 (male +, female -)), log10 of a positive
      score ~ N(1.7 + 0.02 (age - 62) + 0.2 male + 0.3 AS, 0.9), at least 1: about 50% zero, 30% 1-99,
      11% 100-399, 8% >= 400 in a screening-age population (MESA-like).
    - X-ray: Poisson(1.6 log10(1 + score) / 3) coronary calcification specks (fainter and smaller than the
      valve spots), each visible on 70% of exams.
    - ECG: an ischaemic pattern with probability 0.04 + 0.14 log10(1 + score) (about 4% at 0, 33% at 100,
      46% at 1000): ST depression 0.04-0.1 mV and T flattening 30-70% in one territory, with a pathological
      Q wave (0.12-0.3 mV) in 35% of them; a paced rhythm hides it.
    - LV mass (g): 160 (male) / 120 (female) x hypertrophy^2 x (1 + 0.004 (age - 60)) x lognormal(0.13), where
      hypertrophy is the product of the AS and hypertensive factors of the ECG LVH voltage gain (so voltage and
      mass agree); LVH = mass > 224 g (male) / 162 g (female) (ASE/EACVI 2015).
    - LVEF (%): heart-failure cardiomegaly patients (the X-ray's large heart) have HFrEF (LVEF 18-39) in 70%,
      else 42-55; AS with a low-flow severe valve (probability 0.15 sev) 25-45; everyone else ~N(62, 5.5)
      clipped 45-80.  HF = LVEF < 40%.
    """
    rng = patient_rng(cfg.seed, index, TARGET_STREAM)
    male = not female
    age_c = age0 - 62.0
    p_pos = 1.0 / (1.0 + np.exp(-(0.09 * age_c + (0.55 if male else -0.55))))
    positive = (not minor) and bool(rng.random() < p_pos)
    mu = 1.7 + 0.02 * age_c + (0.2 if male else 0.0) + (0.3 if is_as else 0.0)
    log_score = float(rng.normal(mu, 0.9))
    cac = round(max(1.0, 10.0 ** log_score), 1) if positive else 0.0
    cac_bin = int(np.searchsorted(CAC_BINS, cac, side="right"))
    lcac = float(np.log10(1.0 + cac))
    n_cor = int(rng.poisson(1.6 * lcac / 3.0))
    isch = bool(rng.random() < 0.04 + 0.14 * lcac) and not minor
    territory = str(rng.choice(list(ISCHAEMIA_TERRITORIES)))
    st = float(rng.uniform(0.04, 0.1))
    t_flat = float(rng.uniform(0.3, 0.7))
    q = float(rng.uniform(0.12, 0.3)) if rng.random() < 0.35 else 0.0
    if not isch:
        st = t_flat = q = 0.0
    mass = (120.0 if female else 160.0) * hypertrophy ** 2 * (1 + 0.004 * (age0 - 60)) * float(np.exp(rng.normal(0, 0.13)))
    u = float(rng.random())
    low_flow = is_as and bool(rng.random() < 0.15 * sev)
    if hf:
        lvef = rng.uniform(18, 39) if u < 0.7 else rng.uniform(42, 55)
    elif low_flow:
        lvef = rng.uniform(25, 45)
    else:
        lvef = np.clip(rng.normal(62, 5.5), 45, 80)
    return {
        "rng": rng,
        "patient": {
            "cac_agatston": cac, "cac_bin": cac_bin, "n_coronary_calc": n_cor, "ischaemia": int(isch),
            "isch_territory": territory if isch else "", "isch_st_mv": round(st, 4), "isch_t_flat": round(t_flat, 4),
            "isch_q_mv": round(q, 4), "lv_mass_patient_g": round(float(mass), 1), "lvef_patient_pct": round(float(lvef), 1),
        },
        "ecg": {"isch_territory": territory if isch else "", "isch_st_mv": st, "isch_t_flat": t_flat, "isch_q_mv": q},
    }


def plan_patient(index: int, cfg: SynthConfig) -> PatientPlan:
    """Draw one patient: demographics, latent severity, confounders, exam schedule and planted signs."""
    rng = patient_rng(cfg.seed, index)
    is_as = bool(rng.random() < cfg.as_prevalence)
    minor = (not is_as) and bool(rng.random() < cfg.minor_fraction)
    if is_as:
        age0 = float(np.clip(rng.normal(78.0, 9.2), 45, 99))
        female = bool(rng.random() < 0.553)
        sev = float(rng.beta(1.0, 1.4))  # mean 0.42 -> Vmax about 3.7 m/s as in the paper, ~15% mild
    else:
        age0 = rng.uniform(6.0, 15.0) if minor else float(np.clip(rng.normal(63.0, 15.9), 18.5, 99))
        female = bool(rng.random() < 0.38)
        sev = 0.0
    age0 = float(age0)
    older = float(np.clip((age0 - 40) / 40, 0, 1.2))  # 0 at 40 y, 1 at 80 y
    af = (not minor) and bool(rng.random() < (0.10 if is_as else 0.156) * (0.6 + 0.6 * older))
    pacemaker = (not minor) and bool(rng.random() < (0.06 if is_as else 0.04) * (0.4 + 0.9 * older))
    hyp_lvh = (not minor) and bool(rng.random() < cfg.lvh_confounder_rate * (0.5 + older))
    hf = (not minor) and (not is_as) and bool(rng.random() < cfg.cardiomegaly_confounder_rate * (0.5 + older))
    low_gradient = is_as and bool(rng.random() < 0.12)

    # --- ECG signs (patient level) ---
    sev_eff = (0.25 + 0.75 * sev) if is_as else 0.0
    # natural spread of LV voltage (chest wall, habitus), AS effect, hypertension
    # the same three draws in the same order as one product; the two hypertrophy factors also set the LV mass
    voltage_habitus = float(np.exp(rng.normal(0, cfg.ecg_voltage_spread)))
    hyp_as = 1.0 + cfg.ecg_lvh_effect * sev_eff * rng.uniform(0.4, 1.6)
    hyp_htn = 1.0 + (rng.uniform(0.15, 0.45) if hyp_lvh else 0.0)
    lvh_gain = voltage_habitus * hyp_as * hyp_htn
    strain = 0.0
    if is_as and rng.random() < 0.35 + 0.6 * sev:
        strain += cfg.ecg_strain_effect * sev_eff * rng.uniform(0.5, 1.5)
    if (hyp_lvh and rng.random() < 0.3) or rng.random() < 0.06:  # hypertension, ischaemia, drugs
        strain += rng.uniform(0.03, 0.15)
    amp_scale = float(np.exp(rng.normal(0, 0.2)) * (0.88 if female else 1.0) * (1.1 - 0.1 * older))
    ecg_pat = {
        "hr_bpm": float(np.clip(rng.normal(70, 12), 45, 115)),
        "amp_scale": amp_scale,
        "qrs_axis_deg": float(np.clip(rng.normal(45 - 20 * older, 25), -45, 105)),
        "transition": float(rng.normal(0, 0.6)),
        "t_scale": float(np.clip(np.exp(rng.normal(0, 0.2)), 0.6, 1.4)),
        "qrs_width": float(np.clip(rng.normal(1.0, 0.1), 0.8, 1.35)),
        "pr_s": float(np.clip(rng.normal(0.16, 0.02), 0.12, 0.24)),
        "v1_t": float(rng.normal(0.02, 0.08)),
    }

    # --- X-ray signs (patient level) ---
    ctr = 0.445 + 0.045 * (older - 0.6) + (0.015 if female else 0.0) + rng.normal(0, cfg.cxr_ctr_spread) \
        + (rng.uniform(0.05, 0.11) if hf else 0.0) + cfg.cxr_ctr_effect * sev_eff * rng.uniform(0.5, 1.5)
    # valve-region spots: AS valve calcification; in non-AS mitral annulus / coronary calcium
    n_valve = int(rng.poisson(cfg.cxr_calc_effect * sev_eff * (0.4 + 0.6 * older) + cfg.cxr_calc_background * older))
    n_knob = int(rng.poisson(1.1 * max(0.0, older - 0.5) ** 1.5))
    cxr_pat = {
        "ctr": float(np.clip(ctr, 0.33, 0.72)),
        "n_valve_calc": n_valve,
        "n_knob_calc": n_knob,
        "habitus": float(rng.normal(0, 1)),
    }

    # --- schedule ---
    n_echo = 1 if minor else int(rng.choice([1, 2, 3], p=[0.3, 0.37, 0.33]))
    start = dt.date.fromisoformat(cfg.start_date) + dt.timedelta(days=160)
    end = dt.date.fromisoformat(cfg.end_date) - dt.timedelta(days=190)
    gaps = [int(rng.integers(330, 1000)) for _ in range(n_echo - 1)]
    span = sum(gaps)
    room = max((end - start).days - span, 1)
    first = start + dt.timedelta(days=int(rng.integers(0, room)))
    birth = first - dt.timedelta(days=int(age0 * 365.25))
    sex = "F" if female else "M"
    pid = f"SYN{index + 1:06d}"
    name = f"{_LAST[int(rng.integers(len(_LAST)))]}^{_FIRST[int(rng.integers(len(_FIRST)))]}"
    patient = {
        "patient_index": index, "patient_id": pid, "patient_name": name, "sex": sex,
        "birth_date": birth.isoformat(), "age_first_exam": round(age0, 1), "minor": minor,
        "as_label": int(is_as), "severity_latent": round(sev, 4), "low_gradient_as": low_gradient,
        "atrial_fibrillation": int(af), "pacemaker": int(pacemaker), "hypertensive_lvh": int(hyp_lvh),
        "heart_failure_cardiomegaly": int(hf), "lvh_gain": round(float(lvh_gain), 4),
        "strain_mv": round(float(strain), 4), **{f"ecg_{k}": round(v, 4) for k, v in ecg_pat.items()},
        "ctr_patient": round(cxr_pat["ctr"], 4), "n_valve_calc": n_valve, "n_knob_calc": n_knob,
    }
    targets = _plan_targets(index, cfg, age0=age0, female=female, is_as=is_as, sev=sev, minor=minor, hf=hf,
                            hypertrophy=float(hyp_as * hyp_htn))
    patient.update(targets["patient"])
    rng_t = targets["rng"]
    plan = PatientPlan(patient)

    lvef_mu, lvef_sd = (61.7, 11.9) if is_as else (58.8, 12.3)
    echo_dates = [first]
    for g in gaps:
        echo_dates.append(echo_dates[-1] + dt.timedelta(days=g))
    exam_key = 0

    def add_cxr(when: dt.datetime, linked_hint: bool) -> dict[str, Any]:
        nonlocal exam_key
        exam_key += 1
        ap = bool(rng.random() < (0.12 + 0.1 * older))
        plan.cxrs.append({
            "patient_index": index, "exam_key": exam_key, "datetime": when, "age": _age_at(birth, when),
            "view_position": "AP" if ap else "PA",
            "ctr": float(np.clip(cxr_pat["ctr"] + rng.normal(0, 0.015) + (0.035 if ap else 0.0), 0.3, 0.78)),
            "n_valve_calc": n_valve, "n_knob_calc": n_knob, "pacemaker": int(pacemaker),
            "habitus": cxr_pat["habitus"], "female": female, "monochrome1": bool(rng.random() < cfg.monochrome1_fraction),
            "modality": "CR" if rng.random() < cfg.cr_fraction else "DX", "linked_hint": linked_hint,
            "n_coronary_calc": targets["patient"]["n_coronary_calc"],
        })
        return plan.cxrs[-1]

    def add_ecg(when: dt.datetime, linked_hint: bool) -> None:
        nonlocal exam_key
        exam_key += 1
        gain_exam = lvh_gain * float(np.exp(rng.normal(0, 0.05)))
        strain_exam = max(0.0, strain * float(np.exp(rng.normal(0, 0.15))))
        paced = bool(pacemaker and rng.random() < 0.85)  # paced rhythm masks LVH and strain
        plan.ecgs.append({
            "patient_index": index, "exam_key": exam_key, "datetime": when, "age": _age_at(birth, when),
            "af": bool(af), "pacemaker": int(pacemaker), "paced": paced,
            "lvh_gain": gain_exam, "strain_mv": strain_exam,
            "lvh_gain_visible": 1.0 if paced else gain_exam, "strain_visible_mv": 0.0 if paced else strain_exam,
            **ecg_pat, "hr_bpm": float(np.clip(ecg_pat["hr_bpm"] + rng.normal(0, 5) + (12 if af else 0), 42, 135)),
            "noise_mv": float(rng.uniform(0.004, 0.02)), "wander_mv": float(rng.uniform(0.02, 0.3)),
            "powerline_mv": float(rng.uniform(0.0, 0.02) if rng.random() < 0.4 else 0.0),
            "powerline_hz": 50.0 if rng.random() < 0.5 else 60.0, "linked_hint": linked_hint,
            **targets["ecg"], **{f"{k}_visible": 0.0 if paced else targets["ecg"][k]
                                 for k in ("isch_st_mv", "isch_t_flat", "isch_q_mv")},
        })

    def ecgs_around(cxr_when: dt.datetime, counts_p: list[float]) -> None:
        n_link = int(rng.choice(len(counts_p), p=counts_p))
        days = set()
        for j in range(n_link):
            d = 0 if (j == 0 and rng.random() < 0.6) else int(rng.integers(-7, 8))
            if d in days:
                continue
            days.add(d)
            add_ecg(_offset_dt(cxr_when, d, 7, rng), True)
        if rng.random() < 0.3:  # an ECG outside the +-7 day window
            d = int(rng.integers(8, 31)) * int(rng.choice([-1, 1]))
            add_ecg(_at(cxr_when.date() + dt.timedelta(days=d), rng), False)

    for day in echo_dates:
        exam_key += 1
        when = _at(day, rng, 8.5, 16.5)
        v, mpg, ava = _echo_measurements(is_as, sev, rng, low_gradient)
        vals = {"peak_velocity_m_s": v, "mean_gradient_mmhg": mpg, "ava_cm2": ava}
        crit = {"peak_velocity_m_s": v >= _AS_RULE.peak_velocity_m_s,
                "mean_gradient_mmhg": mpg >= _AS_RULE.mean_gradient_mmhg, "ava_cm2": ava <= _AS_RULE.ava_cm2}
        if rng.random() < 3 * cfg.missing_rate:
            drop = ["peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2"][int(rng.choice(3, p=[0.2, 0.3, 0.5]))]
            # never drop the only criterion an AS echo meets
            if not (is_as and crit[drop] and sum(crit.values()) == 1):
                vals[drop] = None
        float(np.clip(rng.normal(lvef_mu, lvef_sd), 12, 82))  # drawn and unused: keeps the plan stream as before
        lvef_missing = rng.random() < 0.05
        # LVEF and LV mass: the patient's values with measurement noise, from the targets stream
        lvef = float(np.clip(targets["patient"]["lvef_patient_pct"] + rng_t.normal(0, 3.0), 10, 85))
        lv_mass = targets["patient"]["lv_mass_patient_g"] * float(np.exp(rng_t.normal(0, 0.07)))
        plan.echos.append({
            "patient_index": index, "exam_key": exam_key, "datetime": when, "age": _age_at(birth, when),
            **vals, "lvef_pct": None if lvef_missing else round(lvef, 1),
            "lv_mass_g": None if rng_t.random() < 0.05 else round(float(np.clip(lv_mass, 40, 650)), 0),
        })
        # X-rays around this echo
        if rng.random() < 0.9:
            u = rng.random()
            o1 = int(rng.integers(0, 15) if u < 0.55 else rng.integers(15, 60) if u < 0.8 else rng.integers(60, 90))
            o1 *= int(rng.choice([-1, 1]))
            c1 = add_cxr(_offset_dt(when, o1, 90, rng), True)
            ecgs_around(c1["datetime"], [0.05, 0.4, 0.4, 0.15])
            if rng.random() < 0.25 and abs(o1) < 88:  # a second, farther X-ray in the window
                o2 = int(rng.integers(abs(o1) + 1, 90)) * int(rng.choice([-1, 1]))
                c2 = add_cxr(_offset_dt(when, o2, 90, rng), False)
                ecgs_around(c2["datetime"], [0.3, 0.6, 0.1, 0.0])
        if rng.random() < 0.35:  # an X-ray 91-150 days away: not linked
            o3 = int(rng.integers(91, 151)) * int(rng.choice([-1, 1]))
            c3 = add_cxr(_at(when.date() + dt.timedelta(days=o3), rng), False)
            ecgs_around(c3["datetime"], [0.2, 0.7, 0.1, 0.0])
    return plan


def plan_cohort(cfg: SynthConfig) -> list[PatientPlan]:
    """Plans of all patients, with global exam ids assigned in patient order."""
    plans = [plan_patient(i, cfg) for i in range(cfg.n_patients)]
    n = {"ecg": 0, "cxr": 0, "echo": 0}
    for p in plans:
        pid = p.patient["patient_id"]
        for kind, rows, prefix in (("echo", p.echos, "US"), ("cxr", p.cxrs, "XR"), ("ecg", p.ecgs, "EC")):
            rows.sort(key=lambda r: r["datetime"])
            for r in rows:
                n[kind] += 1
                r["exam_id"] = f"{prefix}{n[kind]:07d}"
                r["patient_id"] = pid
                r["sex"] = p.patient["sex"]
    return plans
