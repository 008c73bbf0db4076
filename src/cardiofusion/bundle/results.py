"""What a bundle answers for every task kind: the :class:`Prediction` type, the task a bundle stores, and how
results become batch rows and text.

A bundle's manifest holds the run's fitted task under ``task_definition`` (:meth:`cardiofusion.tasks.Task.to_dict`,
the regression scaler included); a bundle without it (written before tasks existed) is the binary aortic
stenosis task.  :func:`task_from_manifest` reads and checks it against the model config.

Results per kind (``Prediction.outputs``: one entry per class / label / target, every entry with the keys
``name``, ``index``, ``probability``, ``value``, ``unit``, ``threshold``, ``decision``; unused keys are None):

=============  ===============================================================================================
kind           what the result holds
=============  ===============================================================================================
``binary``     unchanged: ``probability`` (calibrated), ``decision`` ``positive`` / ``negative`` at ``threshold``
               (``to_dict`` has exactly today's keys); ``outputs`` has the positive class.
``multiclass`` ``outputs``: the probability of every class, in the task's order; the most probable class is
               the prediction (``predicted_class``, ``predicted_index``, its ``probability``; its entry's
               ``decision`` is ``predicted``).
``multilabel`` ``outputs``: the probability of every label and its ``decision`` (``positive`` / ``negative``)
               at the task's threshold for that label (default 0.5); ``positive_labels``.
``regression`` ``outputs``: each target's ``value`` in its ``unit`` (the heads' standardised output mapped back
               with the training split's mean and standard deviation).
=============  ===============================================================================================

Batch tables (:func:`batch_columns`) keep today's columns for binary; other kinds get one column per class
(``prob_<class>``) plus ``predicted_class`` / ``predicted_index``, per label (``prob_<label>``,
``decision_<label>``) plus ``positive_labels``, or per target (``pred_<target>``, in the target's unit; the
units are in the bundle manifest and in ``cardiofusion predict --json``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..tasks import Task, binary_task

POSITIVE, NEGATIVE = "positive", "negative"
#: decision of the most probable class of a multiclass result
PREDICTED = "predicted"
#: manifest key of the bundle's fitted task
TASK_KEY = "task_definition"
#: keys of every ``Prediction.outputs`` entry
OUTPUT_KEYS = ("name", "index", "probability", "value", "unit", "threshold", "decision")


@dataclass
class Prediction:
    """The result for one patient (every task kind; see the module docstring).

    Attributes:
        probability: binary: calibrated probability of the positive class; multiclass: probability of the
            predicted class; None for multilabel and regression.
        decision: binary: ``"positive"`` (refer for echocardiography) when ``probability >= threshold``, else
            ``"negative"``; multiclass: the predicted class's name; multilabel: the positive labels joined by
            ``", "`` (``"none"`` when no label is positive); regression: None.
        threshold: binary: the bundle's decision threshold on the probability; None otherwise (multilabel
            thresholds are per label, in ``outputs``).
        modalities: the modalities that produced the result (``["ecg", "cxr"]``, ``["ecg"]`` or ``["cxr"]``).
        scores: ``fused`` (the model's raw output, mean over ECG windows) and the per-branch ``ecg`` / ``cxr``
            (None where the model has no such branch or it was not used); binary: floats, other kinds: one
            value per model output (a list).
        patient_id: the caller's identifier, echoed back (never read from the files).
        warnings: things the clinician should know (absent leads, a single modality, ...).
        explanations: ``{"cxr": path, "ecg": path}`` heat-map PNGs when asked for (non-binary tasks:
            ``{"<target>_cxr": path, ...}`` per explained target).
        task_kind: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        task: the task's name.
        outputs: one entry per class / label / target (keys :data:`OUTPUT_KEYS`).
        predicted_index: multiclass: index of the predicted class.
    """

    probability: float | None
    decision: str | None
    threshold: float | None
    modalities: list[str]
    scores: dict[str, Any]
    patient_id: str | None = None
    warnings: list[str] = field(default_factory=list)
    explanations: dict[str, str] = field(default_factory=dict)
    generated_image: dict[str, Any] = field(default_factory=dict)
    task_kind: str = "binary"
    task: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    predicted_index: int | None = None

    @property
    def positive(self) -> bool:
        """Binary: the decision is positive; multilabel: some label is positive."""
        if self.task_kind == "multilabel":
            return bool(self.positive_labels)
        return self.decision == POSITIVE

    @property
    def predicted_class(self) -> str | None:
        """Multiclass: the predicted class's name (None for other kinds)."""
        return self.decision if self.task_kind == "multiclass" else None

    @property
    def positive_labels(self) -> list[str]:
        """Multilabel: the labels decided positive."""
        if self.task_kind != "multilabel":
            return []
        return [o["name"] for o in self.outputs if o.get("decision") == POSITIVE]

    def summary(self) -> str:
        """One line for people: ``moderate (p = 0.62)``, ``positive: AS, LVH``, ``LVEF 55.1 %, ...``."""
        if self.task_kind == "binary":
            return f"{self.decision} (p = {self.probability:.3f})"
        if self.task_kind == "multiclass":
            return f"{self.decision} (p = {self.probability:.3f})"
        if self.task_kind == "multilabel":
            return f"positive: {', '.join(self.positive_labels) or 'none'}"
        return ", ".join(f"{o['name']} {_g(o['value'])}{(' ' + o['unit']) if o.get('unit') else ''}"
                         for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready.  Binary: exactly ``probability``, ``decision``, ``modalities``, ``scores``, ``threshold``,
        ``warnings`` (+ ``patient_id`` when given, ``explanations`` when made, ``generated_image`` when an
        image was generated from the ECG: path, ``generated: true`` and the GENERATED label), as before tasks existed.
        Other kinds: ``task_kind``, ``task``, ``outputs``, ``summary``, ``modalities``, ``scores``,
        ``warnings``; multiclass adds ``predicted_class``, ``predicted_index``, ``probability``; multilabel
        ``positive_labels``."""
        if self.task_kind == "binary":
            d: dict[str, Any] = {"probability": self.probability, "decision": self.decision,
                                 "modalities": list(self.modalities), "scores": dict(self.scores),
                                 "threshold": self.threshold, "warnings": list(self.warnings)}
        else:
            d = {"task_kind": self.task_kind, "task": self.task, "outputs": [dict(o) for o in self.outputs],
                 "summary": self.summary()}
            if self.task_kind == "multiclass":
                d.update(predicted_class=self.decision, predicted_index=self.predicted_index,
                         probability=self.probability)
            elif self.task_kind == "multilabel":
                d["positive_labels"] = self.positive_labels
            d.update(modalities=list(self.modalities), scores=dict(self.scores), warnings=list(self.warnings))
        if self.patient_id is not None:
            d = {"patient_id": self.patient_id, **d}
        if self.explanations:
            d["explanations"] = dict(self.explanations)
        if self.generated_image:
            d["generated_image"] = dict(self.generated_image)
        return d


def _g(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


# --------------------------------------------------------------------------------------------------
# The task a bundle stores
# --------------------------------------------------------------------------------------------------
def task_from_manifest(manifest: Mapping[str, Any], root: str | Path = "bundle") -> Task:
    """The bundle's fitted task (absent: the binary aortic stenosis task), checked against the model config.

    Raises:
        BundleError: the stored task is not a valid task definition, does not fit the model's outputs
            (``num_outputs`` / ``link``), or is a regression task without its training scaler.
    """
    from ..errors import ConfigError
    from .format import BundleError

    data = manifest.get(TASK_KEY)
    if data is None:
        return binary_task()
    try:
        task = Task.from_dict(data, where="task")
    except ConfigError as e:
        raise BundleError(root, f"incompatible bundle: its task definition is invalid ({e})") from None
    config = (manifest.get("model") or {}).get("config") or {}
    n_outputs, link = config.get("num_outputs", 1), config.get("link", "logistic")
    if n_outputs != task.n_outputs or link != task.link:
        raise BundleError(root, f"incompatible bundle: task {task.name!r} ({task.kind}) needs {task.n_outputs} "
                                f"{task.link} output(s), the model has {n_outputs} {link}")
    if task.kind == "regression":
        sc = task.scaler
        if sc is None or len(sc.mean) != len(task.columns) or len(sc.std) != len(task.columns) or not all(
                math.isfinite(float(v)) for v in (*sc.mean, *sc.std)) or min(float(s) for s in sc.std) <= 0:
            raise BundleError(root, f"incompatible bundle: regression task {task.name!r} has no valid training "
                                    f"scaler (one finite mean and positive standard deviation per target)")
    return task


def task_description(task: Task, modalities: Sequence[str]) -> str:
    """The manifest's ``task`` text."""
    reads = " and/or ".join({"ecg": "a 12-lead ECG", "cxr": "a chest X-ray"}[m] for m in modalities)
    if task.kind == "binary" and task.name == "aortic_stenosis":
        return f"screening for aortic stenosis from {reads}"
    what = {"binary": f"{task.classes[1]} yes / no", "multiclass": "one of " + ", ".join(task.classes),
            "multilabel": "labels " + ", ".join(task.classes),
            "regression": "values of " + ", ".join(task.classes)}[task.kind]
    return f"{task.name} ({task.kind}: {what}) from {reads}"


# --------------------------------------------------------------------------------------------------
# Record-level outputs -> results
# --------------------------------------------------------------------------------------------------
def _list(values: np.ndarray) -> list[float | None] | None:
    out = [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values, dtype=np.float64).ravel()]
    return None if all(v is None for v in out) else out


def task_values(task: Task, probs: np.ndarray) -> np.ndarray:
    """The heads' record-level ``prob`` ``(R, m)`` as reported: class / label probabilities, or regression
    values in units."""
    p = np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)
    return task.unstandardize(p) if task.kind == "regression" else p


def task_outputs(task: Task, values: np.ndarray) -> tuple[list[dict[str, Any]], int | None]:
    """The ``outputs`` entries of one record (``values``: its row of :func:`task_values`) and, for
    multiclass, the predicted class index."""
    v = np.asarray(values, dtype=np.float64).ravel()
    out: list[dict[str, Any]] = []
    predicted = None
    if task.kind == "multiclass":
        predicted = int(task.decide(v[None])[0])
    decisions = task.decide(v[None])[0] if task.kind == "multilabel" else None
    for j, name in enumerate(task.classes):
        entry = dict.fromkeys(OUTPUT_KEYS)
        entry.update(name=name, index=j)
        if task.kind == "regression":
            entry.update(value=float(v[j]), unit=task.unit(task.columns[j]) or None)
        else:
            entry["probability"] = float(v[j])
        if task.kind == "multiclass":
            entry["decision"] = PREDICTED if j == predicted else None
        elif task.kind == "multilabel":
            entry["threshold"] = float(task.thresholds.get(task.output_names[j], 0.5))
            entry["decision"] = POSITIVE if decisions[j] == 1 else NEGATIVE
        out.append(entry)
    return out, predicted


def task_prediction(task: Task, values: np.ndarray, scores: Mapping[str, np.ndarray], modalities: list[str],
                    patient_id: str | None, warnings: list[str]) -> Prediction:
    """A non-binary :class:`Prediction` from one record's values (:func:`task_values`) and raw outputs
    (``{"fused": (k,), "ecg": (k,), "cxr": (k,)}``)."""
    outputs, predicted = task_outputs(task, values)
    probability = decision = None
    if task.kind == "multiclass":
        probability, decision = outputs[predicted]["probability"], task.classes[predicted]
    elif task.kind == "multilabel":
        decision = ", ".join(o["name"] for o in outputs if o["decision"] == POSITIVE) or "none"
    score_lists = {k: _list(v) for k, v in scores.items()}
    return Prediction(probability=probability, decision=decision, threshold=None, modalities=modalities,
                      scores=score_lists, patient_id=patient_id, warnings=list(warnings), task_kind=task.kind,
                      task=task.name, outputs=outputs, predicted_index=predicted)


def binary_outputs(task: Task, probability: float, threshold: float, decision: str) -> list[dict[str, Any]]:
    """The one ``outputs`` entry of a binary result (the positive class)."""
    entry = dict.fromkeys(OUTPUT_KEYS)
    entry.update(name=task.classes[1], index=0, probability=probability, threshold=threshold, decision=decision)
    return [entry]


# --------------------------------------------------------------------------------------------------
# Batch rows
# --------------------------------------------------------------------------------------------------
#: binary batch columns (unchanged since before tasks)
BINARY_COLUMNS = ("patient_id", "status", "probability", "decision", "threshold", "modalities", "score",
                  "score_ecg", "score_cxr", "warnings", "error")
BINARY_NUMERIC = ("probability", "threshold", "score", "score_ecg", "score_cxr")


def batch_columns(task: Task) -> list[str]:
    """Output columns of a batch for this task (binary: :data:`BINARY_COLUMNS`)."""
    if task.kind == "binary":
        return list(BINARY_COLUMNS)
    names = list(task.target_names)
    if task.kind == "multiclass":
        middle = ["predicted_class", "predicted_index", *(f"prob_{n}" for n in names)]
    elif task.kind == "multilabel":
        middle = ["positive_labels", *(f"prob_{n}" for n in names), *(f"decision_{n}" for n in names)]
    else:
        middle = [f"pred_{n}" for n in names]
    return ["patient_id", "status", *middle, "modalities", "warnings", "error"]


def numeric_columns(task: Task) -> list[str]:
    """Batch columns written as numbers (never formula-escaped)."""
    if task.kind == "binary":
        return list(BINARY_NUMERIC)
    return [c for c in batch_columns(task) if c.startswith(("prob_", "pred_")) or c == "predicted_index"]


def batch_row(task: Task, d: Mapping[str, Any]) -> dict[str, Any]:
    """One batch output row from a result's :meth:`Prediction.to_dict`."""
    if task.kind == "binary":
        return {"patient_id": d.get("patient_id"), "status": "ok", "probability": d["probability"],
                "decision": d["decision"], "threshold": d["threshold"],
                "modalities": "+".join(d["modalities"]), "score": d["scores"]["fused"],
                "score_ecg": d["scores"]["ecg"], "score_cxr": d["scores"]["cxr"],
                "warnings": "; ".join(d["warnings"]), "error": ""}
    row: dict[str, Any] = {"patient_id": d.get("patient_id"), "status": "ok"}
    names = list(task.target_names)
    if task.kind == "multiclass":
        row.update(predicted_class=d["predicted_class"], predicted_index=d["predicted_index"])
    if task.kind == "multilabel":
        row["positive_labels"] = "; ".join(d["positive_labels"])
    for n, o in zip(names, d["outputs"]):
        if task.kind == "regression":
            row[f"pred_{n}"] = o["value"]
        else:
            row[f"prob_{n}"] = o["probability"]
        if task.kind == "multilabel":
            row[f"decision_{n}"] = o["decision"]
    row.update(modalities="+".join(d["modalities"]), warnings="; ".join(d["warnings"]), error="")
    return row


__all__ = ["BINARY_COLUMNS", "NEGATIVE", "OUTPUT_KEYS", "POSITIVE", "PREDICTED", "TASK_KEY", "Prediction",
           "batch_columns", "batch_row", "binary_outputs", "numeric_columns", "task_description",
           "task_from_manifest", "task_outputs", "task_prediction", "task_values"]
