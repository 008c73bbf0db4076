"""Settings of the synthetic hospital export and what a run returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError


@dataclass
class SynthConfig:
    """Everything that decides the content of a synthetic export.

    The same config and seed always give byte-identical files, whatever ``workers`` is.

    Attributes:
        n_patients: patients to generate (paper scale: 7,483).
        seed: root seed; every patient draws from its own ``SeedSequence`` child.
        workers: processes used to render and write files (does not change the output).
        as_prevalence: fraction of patients with aortic stenosis (paper: 8.1%).
        minor_fraction: fraction of non-AS patients younger than 18 at every exam (must be excluded).
        start_date / end_date: span of exam dates (ISO dates).
        ecg_fs: ECG sampling rate in Hz.
        ecg_duration_s: ECG length in seconds.
        ecg_resolution_uv: microvolts per stored count in the ECG CSVs.
        cxr_size: X-ray image side in pixels.
        monochrome1_fraction: fraction of X-rays stored as MONOCHROME1 (inverted stored values).
        cr_fraction: fraction of X-rays with Modality ``CR`` (the rest ``DX``).
        ecg_lvh_effect: LVH voltage gain per unit of AS severity (0 removes the ECG voltage sign).
        ecg_strain_effect: ST depression / T inversion (mV) at full AS severity.
        cxr_ctr_effect: cardiothoracic-ratio increase at full AS severity.
        ecg_voltage_spread: sd of the log LV voltage between people (hides the LVH sign).
        cxr_ctr_spread: sd of the cardiothoracic ratio between people.
        cxr_calc_effect: expected aortic-valve calcification spots at full AS severity.
        cxr_calc_background: expected valve-region spots at age 80 without AS (annulus, coronaries).
        lvh_confounder_rate: probability of hypertensive LVH (any patient; rises with age).
        cardiomegaly_confounder_rate: probability of heart-failure cardiomegaly in non-AS patients.
        missing_rate: probability that one echo measurement is an empty cell.
        n_defective_cxr: X-ray files written truncated (listed in the ground truth).
        n_defective_ecg: ECG CSVs written with an unusable (flat or NaN) signal.
        write_ground_truth: write ``ground_truth/`` (tables, oracle and ``summary.json``).
        compute_oracle: fit the oracle AUROCs (needs a few AS patients).
    """

    n_patients: int = 300
    seed: int = 0
    workers: int = 1
    as_prevalence: float = 0.081
    minor_fraction: float = 0.015
    start_date: str = "2012-01-01"
    end_date: str = "2022-11-30"
    ecg_fs: int = 500
    ecg_duration_s: float = 15.0
    ecg_resolution_uv: float = 1.25
    cxr_size: int = 256
    monochrome1_fraction: float = 0.2
    cr_fraction: float = 0.3
    ecg_lvh_effect: float = 0.25
    ecg_strain_effect: float = 0.1
    ecg_voltage_spread: float = 0.16
    cxr_ctr_effect: float = 0.035
    cxr_ctr_spread: float = 0.03
    cxr_calc_effect: float = 0.6
    cxr_calc_background: float = 0.15
    lvh_confounder_rate: float = 0.12
    cardiomegaly_confounder_rate: float = 0.10
    missing_rate: float = 0.03
    n_defective_cxr: int = 1
    n_defective_ecg: int = 1
    write_ground_truth: bool = True
    compute_oracle: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot give a sensible export."""
        if self.n_patients < 1:
            raise ConfigError(f"n_patients must be >= 1, got {self.n_patients}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        for name in ("as_prevalence", "minor_fraction", "monochrome1_fraction", "cr_fraction",
                     "lvh_confounder_rate", "cardiomegaly_confounder_rate", "missing_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if self.cxr_size < 64:
            raise ConfigError(f"cxr_size must be >= 64, got {self.cxr_size}")
        if self.ecg_fs < 100 or self.ecg_duration_s < 2:
            raise ConfigError("ecg_fs must be >= 100 Hz and ecg_duration_s >= 2 s")
        if self.n_defective_cxr < 0 or self.n_defective_ecg < 0:
            raise ConfigError("defective file counts must be >= 0")
        if self.start_date >= self.end_date:
            raise ConfigError(f"start_date {self.start_date} must precede end_date {self.end_date}")

    def data_dict(self) -> dict[str, Any]:
        """The settings that decide the data (``workers`` left out: it never changes the files)."""
        d = asdict(self)
        d.pop("workers")
        return d


@dataclass
class SynthResult:
    """What :func:`~cardiofusion.synth.generate_export` wrote.

    Attributes:
        out_dir: the export folder.
        n_patients: patients generated.
        counts: exams per table (``ecg``, ``cxr``, ``echo``) and linked ``records``.
        as_prevalence_patients: fraction of patients with AS.
        as_prevalence_records: fraction of linked records with AS.
        oracle: AUROCs of the planted-sign oracle (``ecg``, ``cxr``, ``both``), empty if not computed.
        defects: ``(modality, exam_id, path, kind)`` of the deliberately broken files.
        seconds: wall time of the run.
    """

    out_dir: Path
    n_patients: int
    counts: dict[str, int]
    as_prevalence_patients: float
    as_prevalence_records: float
    oracle: dict[str, float] = field(default_factory=dict)
    defects: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        """Short human-readable summary (what the command prints)."""
        c = self.counts
        lines = [
            f"export: {self.out_dir}",
            f"patients: {self.n_patients}  AS prevalence: {100 * self.as_prevalence_patients:.1f}% of patients",
            f"exams: ECG {c.get('ecg', 0)}  X-ray {c.get('cxr', 0)}  echo {c.get('echo', 0)}",
            f"linked records (adults, X-ray +-90 d, ECG +-7 d): {c.get('records', 0)} from "
            f"{c.get('linked_patients', 0)} patients, AS {100 * self.as_prevalence_records:.1f}% of records",
        ]
        if self.oracle:
            lines.append("oracle AUROC (planted signs): " + "  ".join(
                f"{k} {v:.3f}" for k, v in self.oracle.items() if isinstance(v, float)))
        if self.defects:
            lines.append("defective files: " + ", ".join(f"{d['path']} ({d['kind']})" for d in self.defects))
        lines.append(f"time: {self.seconds:.1f} s")
        return lines
