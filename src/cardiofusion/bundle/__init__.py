"""Model bundles: export a trained run, load it safely, screen new patients (``docs/screening.md``).

::

    from cardiofusion.bundle import export_bundle, load
    export_bundle("runs/cooperative", "bundles/as-screen")            # weights + manifest (+ ONNX)
    screener = load("bundles/as-screen")                               # hash-checked, no pickle
    result = screener.predict(ecg="patient.hea", cxr="patient.dcm")
    result.to_dict()  # {"probability", "decision", "modalities", "scores", "threshold", "warnings"}

Bundles of multiclass / multilabel / regression tasks answer per-class probabilities and the predicted
class, per-label probabilities and decisions, or values in units (:mod:`cardiofusion.bundle.results`;
``result.outputs``, ``result.to_dict()["outputs"]``).

``cardiofusion.load`` is :func:`load`.
"""

from __future__ import annotations

from .batch import BatchReport, predict_batch, read_table
from .export import export_bundle
from .format import FORMAT_VERSION, BundleError, read_manifest, verify_files
from .inputs import ReaderDefaults, prepare_cxr, prepare_ecg
from .results import OUTPUT_KEYS, task_from_manifest
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
    "OUTPUT_KEYS",
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
    "task_from_manifest",
    "verify_files",
]
