"""Model bundles: export a trained run, load it safely, screen new patients (``docs/screening.md``).

::

    from cardiofusion.bundle import export_bundle, load
    export_bundle("runs/cooperative", "bundles/as-screen")            # weights + manifest (+ ONNX)
    screener = load("bundles/as-screen")                               # hash-checked, no pickle
    result = screener.predict(ecg="patient.hea", cxr="patient.dcm")
    result.to_dict()  # {"probability", "decision", "modalities", "scores", "threshold", "warnings"}

``cardiofusion.load`` is :func:`load`.
"""

from __future__ import annotations

from .batch import BatchReport, predict_batch, read_table
from .export import export_bundle
from .format import FORMAT_VERSION, BundleError, read_manifest, verify_files
from .inputs import ReaderDefaults, prepare_cxr, prepare_ecg
from .screener import (
    NEGATIVE,
    POSITIVE,
    RUNTIMES,
    Prediction,
    PreparedPatient,
    Screener,
    load,
)

__all__ = [
    "FORMAT_VERSION",
    "NEGATIVE",
    "POSITIVE",
    "RUNTIMES",
    "BatchReport",
    "BundleError",
    "Prediction",
    "PreparedPatient",
    "ReaderDefaults",
    "Screener",
    "export_bundle",
    "load",
    "predict_batch",
    "prepare_cxr",
    "prepare_ecg",
    "read_manifest",
    "read_table",
    "verify_files",
]
