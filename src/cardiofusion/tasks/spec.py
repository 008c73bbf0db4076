"""What a model learns: the :class:`Task`, a definition that is data (YAML / JSON) and travels with the weights.

A task names the manifest columns that hold its targets and says how to read them:

=============  ==========================================  ==============  =========================================
kind           targets                                     model outputs   ``link`` (what the heads do)
=============  ==========================================  ==============  =========================================
``binary``     one 0/1 column (default ``label``: AS)      1               ``logistic`` (today's behaviour)
``multiclass`` one column of class names or indices, or a  K (ordinal:     ``softmax``; ordinal: ``cumulative``
               continuous column cut by ``bins``           K - 1)          (CORAL: P(y > k), monotone)
``multilabel`` one 0/1 column per label, NaN = unknown     L               ``logistic``, one per label
``regression`` one numeric column per target, NaN missing  R               ``identity`` (standardised targets)
=============  ==========================================  ==============  =========================================

The encoded label of a record (:meth:`Task.encode_labels`) is a float array: ``(N,)`` 0/1 for binary, ``(N,)``
class index for multiclass, ``(N, L)`` for multilabel and ``(N, R)`` in the targets' units for regression; NaN is
unknown everywhere (never 0). Regression targets are standardised with train-split statistics
(:meth:`Task.fit`), which are saved with the task and so with every run and bundle.

Record-level score tables (``val_scores.csv``, ``scores_<split>.csv``) have ``record_id``, ``patient_id`` and:

- binary: ``label``, ``score``, ``prob``, ``score_ecg``, ``score_cxr`` (unchanged);
- multiclass: ``label`` (class index), ``prob_<class>`` per class (sum 1), ``score_<output>`` raw outputs;
- multilabel: ``label_<name>``, ``prob_<name>``, ``score_<name>`` per label;
- regression: ``label_<name>`` and ``pred_<name>`` in the target's units, ``score_<name>`` standardised;

plus ``score_ecg_<output>`` / ``score_cxr_<output>`` for heads with modality branches
(:meth:`Task.score_columns`, :meth:`Task.table_from_outputs`, :meth:`Task.labels_from_table`,
:meth:`Task.outputs_from_table`).

This module needs numpy and pandas (and the link names of :mod:`cardiofusion.models.fusion`); the torch
side (target encoding for the losses) is
:mod:`cardiofusion.tasks.losses`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..configfile import read_mapping_file
from ..errors import ConfigError
from ..models.fusion import LINKS

__all__ = [
    "KINDS",
    "LINKS",
    "Task",
    "TargetScaler",
    "binary_task",
]

#: task kinds
KINDS = ("binary", "multiclass", "multilabel", "regression")
# LINKS (how a head turns its outputs into probabilities / values) is defined by the models layer
# (``cardiofusion.models.fusion.LINKS``) and re-exported here.

#: primary validation metric per kind and ordinal flag: (name, higher is better)
PRIMARY_METRICS = {
    "binary": ("auroc", True),
    "multiclass": ("macro_auroc", True),
    "ordinal": ("quadratic_kappa", True),
    "multilabel": ("macro_auroc", True),
    "regression": ("mae", False),
}

_SAFE_NAME = re.compile(r"[^0-9A-Za-z_.+-]+")


def _column_safe(name: str) -> str:
    """A class / label / target name as it appears in score-table column names (``>=400`` -> ``ge400``)."""
    text = str(name).replace(">=", "ge").replace("<=", "le").replace(">", "gt").replace("<", "lt")
    return _SAFE_NAME.sub("_", text).strip("_") or "x"


@dataclass
class TargetScaler:
    """Per-target mean and standard deviation of the training split (regression)."""

    mean: list[float]
    std: list[float]

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64) * np.asarray(self.std) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


@dataclass
class Task:
    """A prediction target: which manifest columns, how to read them, what the model outputs.

    Attributes:
        name: short name (run folders, reports, bundles).
        kind: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        columns: manifest columns holding the targets: one for binary / multiclass, one per label
            (multilabel) or per target (regression).
        classes: multiclass: class names in order (the column holds these names or their indices 0..K-1);
            binary: the two display names (default ``negative``, ``positive``); multilabel / regression:
            display names per column (default the column names).
        ordinal: multiclass only: the classes are ordered; the heads output K - 1 cumulative logits
            P(y > k) (CORAL-style, rank-consistent, so class probabilities are never negative).
        bins: multiclass from a continuous column: K - 1 increasing cut points; value v falls in class
            ``k = #{b in bins: v >= b}`` (right-open bins, ``[0, 1, 100, 400]`` style without the first).
        units: display units per target (regression; e.g. ``{"peak_velocity_m_s": "m/s"}``).
        thresholds: decision threshold per output for binary / multilabel probabilities (default 0.5; a
            bundle's calibration may override the binary one).
        scaler: regression standardisation fitted on the training split (:meth:`fit`); None before.
        description: free text shown in reports.
    """

    name: str = "aortic_stenosis"
    kind: str = "binary"
    columns: list[str] = field(default_factory=lambda: ["label"])
    classes: list[str] = field(default_factory=list)
    ordinal: bool = False
    bins: list[float] | None = None
    units: dict[str, str] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    scaler: TargetScaler | None = None
    description: str = ""

    # -- construction ----------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if isinstance(self.columns, str):
            self.columns = [self.columns]
        self.columns = [str(c) for c in (self.columns or [])]
        if not self.columns:
            raise ConfigError(f"{where}: 'columns' names no manifest column")
        if len(set(self.columns)) != len(self.columns):
            raise ConfigError(f"{where}: a column is named twice in 'columns'")
        self.classes = [str(c) for c in (self.classes or [])]
        if isinstance(self.scaler, Mapping):
            self.scaler = TargetScaler(**self.scaler)
        if self.bins is not None:
            self.bins = [float(b) for b in self.bins]
        if self.kind in ("binary", "multiclass") and len(self.columns) != 1:
            raise ConfigError(f"{where}: a {self.kind} task reads one column, got {len(self.columns)}")
        if self.kind == "binary":
            if not self.classes:
                self.classes = ["negative", "positive"]
            if len(self.classes) != 2:
                raise ConfigError(f"{where}: a binary task has two class names, got {len(self.classes)}")
        elif self.kind == "multiclass":
            if self.bins is not None:
                if any(b2 <= b1 for b1, b2 in zip(self.bins, self.bins[1:])):
                    raise ConfigError(f"{where}: 'bins' must increase, got {self.bins}")
                if not self.classes:
                    self.classes = _bin_names(self.bins)
                if len(self.classes) != len(self.bins) + 1:
                    raise ConfigError(f"{where}: {len(self.bins)} bins make {len(self.bins) + 1} classes, "
                                      f"but {len(self.classes)} class names are given")
            if len(self.classes) < 2:
                raise ConfigError(f"{where}: a multiclass task needs at least two 'classes' in order")
            if len(set(self.classes)) != len(self.classes):
                raise ConfigError(f"{where}: a class is named twice in 'classes'")
        else:
            if not self.classes:
                self.classes = list(self.columns)
            if len(self.classes) != len(self.columns):
                raise ConfigError(f"{where}: {len(self.classes)} display names for {len(self.columns)} columns")
        if self.ordinal and self.kind != "multiclass":
            raise ConfigError(f"{where}: 'ordinal' applies to multiclass tasks only")
        if self.bins is not None and self.kind != "multiclass":
            raise ConfigError(f"{where}: 'bins' applies to multiclass tasks only")
        for key, value in self.thresholds.items():
            if key not in self.output_names or not (0.0 < float(value) < 1.0):
                raise ConfigError(f"{where}: threshold {key}={value!r} must name an output "
                                  f"({', '.join(self.output_names)}) and lie in (0, 1)")
        unknown_units = sorted(set(self.units) - set(self.columns))
        if unknown_units:
            raise ConfigError(f"{where}: 'units' names columns the task does not read: {', '.join(unknown_units)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "task") -> Task:
        """Build from a mapping (a task file's content); unknown keys and bad values are one-line errors."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: a task is a mapping of settings, got {type(d).__name__}")
        values = dict(d)
        if "column" in values and "columns" not in values:  # one column, singular spelling
            values["columns"] = [values.pop("column")]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown task keys: {', '.join(map(str, unknown))} "
                              f"(known: {', '.join(sorted(known))})")
        try:
            return cls(**values)
        except ConfigError as e:
            if str(e).startswith(where):
                raise
            raise ConfigError(f"{where}: {e}") from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Task:
        """Read a task file (YAML or JSON); errors name the file."""
        data = read_mapping_file(path, "task file")
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly dict (the inverse of :meth:`from_dict`)."""
        return {
            "name": self.name, "kind": self.kind, "columns": list(self.columns), "classes": list(self.classes),
            "ordinal": bool(self.ordinal), "bins": None if self.bins is None else list(self.bins),
            "units": dict(self.units), "thresholds": {k: float(v) for k, v in self.thresholds.items()},
            "scaler": None if self.scaler is None else self.scaler.to_dict(), "description": self.description,
        }

    # -- what the model outputs ------------------------------------------------------------------------
    @property
    def is_binary(self) -> bool:
        return self.kind == "binary"

    @property
    def n_classes(self) -> int:
        """Classes of a multiclass task (2 for binary, 0 otherwise)."""
        return len(self.classes) if self.kind in ("binary", "multiclass") else 0

    @property
    def n_outputs(self) -> int:
        """Values the heads output (timm's ``num_classes``): 1, K (ordinal K - 1), L or R."""
        if self.kind == "binary":
            return 1
        if self.kind == "multiclass":
            return len(self.classes) - 1 if self.ordinal else len(self.classes)
        return len(self.columns)

    @property
    def link(self) -> str:
        """How the heads turn outputs into probabilities / values (one of :data:`LINKS`)."""
        if self.kind == "multiclass":
            return "cumulative" if self.ordinal else "softmax"
        return "identity" if self.kind == "regression" else "logistic"

    @property
    def label_width(self) -> int:
        """Columns of an encoded label: 1 for binary / multiclass (stored as ``(N,)``), else L or R."""
        return 1 if self.kind in ("binary", "multiclass") else len(self.columns)

    @property
    def output_names(self) -> list[str]:
        """Names of the heads' outputs, column-safe."""
        if self.kind == "binary":
            return [_column_safe(self.classes[1])]
        if self.kind == "multiclass" and self.ordinal:
            return [f"gt_{_column_safe(c)}" for c in self.classes[:-1]]  # P(y > class k)
        if self.kind == "multiclass":
            return [_column_safe(c) for c in self.classes]
        return [_column_safe(c) for c in self.classes]

    @property
    def target_names(self) -> list[str]:
        """Column-safe names of what the labels / predictions are about (classes, labels or targets)."""
        if self.kind == "binary":
            return [_column_safe(self.classes[1])]
        return [_column_safe(c) for c in self.classes]

    @property
    def primary_metric(self) -> tuple[str, bool]:
        """``(metric name, higher is better)``: what training reports and tuning optimises."""
        key = "ordinal" if (self.kind == "multiclass" and self.ordinal) else self.kind
        return PRIMARY_METRICS[key]

    def unit(self, column: str) -> str:
        return self.units.get(column, "")

    # -- labels ----------------------------------------------------------------------------------------
    def check_columns(self, frame: pd.DataFrame, where: str = "manifest") -> None:
        """One-line error naming ``where`` and every task column the table lacks."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ConfigError(f"{where}: task {self.name!r} reads column(s) {', '.join(missing)}, which the "
                              f"table does not have (it has: {', '.join(map(str, frame.columns[:30]))})")

    def encode_labels(self, frame: pd.DataFrame, where: str = "manifest") -> np.ndarray:
        """The encoded labels of every row: float, NaN unknown (see the module docstring for shapes).

        Raises:
            ConfigError: a missing column, or a value that is not one of the declared classes / not a
                number, naming ``where`` and the column.
        """
        self.check_columns(frame, where)
        if self.kind == "binary":
            values = _numeric(frame[self.columns[0]], where, self.columns[0])
            bad = np.isfinite(values) & ~np.isin(values, (0.0, 1.0))
            if bad.any():
                raise ConfigError(f"{where}: column {self.columns[0]!r} of binary task {self.name!r} holds "
                                  f"{_examples(frame[self.columns[0]][bad])}; labels are 0, 1 or empty")
            return values.astype(np.float32)
        if self.kind == "multiclass":
            return self._encode_classes(frame[self.columns[0]], where).astype(np.float32)
        out = np.stack([_numeric(frame[c], where, c) for c in self.columns], axis=1) if len(frame) else \
            np.zeros((0, len(self.columns)))
        if self.kind == "multilabel":
            bad = np.isfinite(out) & ~np.isin(out, (0.0, 1.0))
            if bad.any():
                col = self.columns[int(np.nonzero(bad.any(axis=0))[0][0])]
                raise ConfigError(f"{where}: column {col!r} of multilabel task {self.name!r} holds "
                                  f"{_examples(frame[col][bad[:, self.columns.index(col)]])}; labels are 0, 1 or "
                                  "empty (unknown)")
        return out.astype(np.float32)

    def _encode_classes(self, column: pd.Series, where: str) -> np.ndarray:
        name = str(column.name)
        if self.bins is not None:
            values = _numeric(column, where, name)
            out = np.full(len(values), np.nan)
            known = np.isfinite(values)
            out[known] = np.searchsorted(np.asarray(self.bins), values[known], side="right")
            return out
        out = np.full(len(column), np.nan)
        lookup = {c: i for i, c in enumerate(self.classes)}
        text = column.astype("string")
        bad = []
        for i, v in enumerate(text):
            s = "" if v is pd.NA else str(v).strip()
            if s in lookup:
                out[i] = lookup[s]
                continue
            if s == "" or s.lower() in ("nan", "none", "na"):
                continue
            try:
                f = float(s)
            except ValueError:
                f = math.nan
            if math.isfinite(f) and f == int(f) and 0 <= int(f) < len(self.classes) and s not in lookup:
                out[i] = int(f)
            else:
                bad.append(s)
        if bad:
            raise ConfigError(f"{where}: column {name!r} of task {self.name!r} holds {sorted(set(bad))[:5]!r}, "
                              f"outside the declared classes {self.classes} (or their indices 0-{len(self.classes) - 1})")
        return out

    def check_train_labels(self, labels: np.ndarray, where: str = "training split") -> None:
        """Refuse training labels that cannot teach the task: a class or a label value absent from training,
        a regression target with no value."""
        labels = np.asarray(labels, dtype=np.float64)
        if self.kind in ("binary", "multiclass"):
            seen = set(np.unique(labels[np.isfinite(labels)]).astype(int).tolist())
            absent = [self.classes[i] for i in range(self.n_classes) if i not in seen]
            if absent:
                raise ConfigError(f"{where}: class(es) {', '.join(map(repr, absent))} of task {self.name!r} "
                                  f"(column {self.columns[0]!r}) have no training record")
            return
        labels = labels.reshape(len(labels), -1)
        for j, col in enumerate(self.columns):
            known = labels[:, j][np.isfinite(labels[:, j])]
            if self.kind == "regression" and known.size == 0:
                raise ConfigError(f"{where}: regression target {col!r} of task {self.name!r} is missing in every "
                                  "training record")
            if self.kind == "regression" and known.size >= 2 and np.std(known) == 0:
                raise ConfigError(f"{where}: regression target {col!r} of task {self.name!r} is constant in training")
            if self.kind == "multilabel" and len(np.unique(known)) < 2:
                raise ConfigError(f"{where}: label {col!r} of task {self.name!r} has "
                                  f"{'no known value' if known.size == 0 else 'one value only'} in training")

    def fit(self, train_labels: np.ndarray) -> Task:
        """A copy with the regression scaler fitted on the training labels (other kinds: unchanged copy)."""
        self.check_train_labels(train_labels)
        d = self.to_dict()
        if self.kind == "regression":
            values = np.asarray(train_labels, dtype=np.float64).reshape(len(train_labels), -1)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
            std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
            d["scaler"] = {"mean": mean.tolist(), "std": std.tolist()}
        return Task.from_dict(d)

    def standardize(self, labels: np.ndarray) -> np.ndarray:
        """Regression labels in standard units (the scale the heads learn); other kinds unchanged."""
        if self.kind != "regression":
            return np.asarray(labels)
        if self.scaler is None:
            raise ConfigError(f"task {self.name!r}: the regression scaler is not fitted (Task.fit on train labels)")
        return self.scaler.transform(labels).astype(np.float32)

    def unstandardize(self, values: np.ndarray) -> np.ndarray:
        """Regression outputs back in the targets' units."""
        if self.kind != "regression":
            return np.asarray(values)
        if self.scaler is None:
            raise ConfigError(f"task {self.name!r}: the regression scaler is not fitted")
        return self.scaler.inverse(values)

    # -- score tables ----------------------------------------------------------------------------------
    def label_columns(self) -> list[str]:
        """Label columns of a score table."""
        if self.kind in ("binary", "multiclass"):
            return ["label"]
        return [f"label_{n}" for n in self.target_names]

    def prediction_columns(self) -> list[str]:
        """Probability / value columns of a score table (binary: ``prob``)."""
        if self.kind == "binary":
            return ["prob"]
        prefix = "pred" if self.kind == "regression" else "prob"
        return [f"{prefix}_{n}" for n in self.target_names]

    def output_columns(self, branch: str | None = None) -> list[str]:
        """Raw output columns of a score table (``score`` for binary; ``score_<output>`` otherwise), or of a
        modality branch (``score_ecg`` / ``score_ecg_<output>``)."""
        stem = "score" if branch is None else f"score_{branch}"
        if self.kind == "binary":
            return [stem]
        return [f"{stem}_{n}" for n in self.output_names]

    def score_columns(self) -> list[str]:
        """Every column of a record-level score table, in order (binary: today's ``label, score, prob,
        score_ecg, score_cxr``)."""
        if self.kind == "binary":
            return ["record_id", "patient_id", "label", "score", "prob", "score_ecg", "score_cxr"]
        return ["record_id", "patient_id", *self.label_columns(), *self.prediction_columns(),
                *self.output_columns(), *self.output_columns("ecg"), *self.output_columns("cxr")]

    def table_from_outputs(self, labels: np.ndarray, scores: np.ndarray, probs: np.ndarray,
                           branches: Mapping[str, np.ndarray | None] | None = None) -> dict[str, np.ndarray]:
        """Score-table columns from record-level arrays.

        Args:
            labels: encoded labels ``(N,)`` or ``(N, L)`` (regression in units).
            scores: raw head outputs ``(N, n_outputs)`` (or ``(N,)`` for binary).
            probs: the heads' ``prob`` ``(N,)`` binary, ``(N, K)`` class probabilities, ``(N, L)`` label
                probabilities, or ``(N, R)`` standardised regression values.
            branches: ``{"ecg": (N, n_outputs) | None, "cxr": ...}`` branch outputs.
        """
        n = len(labels)
        out: dict[str, np.ndarray] = {}
        lab = np.asarray(labels, dtype=np.float64).reshape(n, -1)
        for j, col in enumerate(self.label_columns()):
            out[col] = lab[:, j]
        pr = np.asarray(probs, dtype=np.float64).reshape(n, -1)
        if self.kind == "regression":
            pr = self.unstandardize(pr)
        for j, col in enumerate(self.prediction_columns()):
            out[col] = pr[:, j]
        for stem, values in ((None, scores), *((b, (branches or {}).get(b)) for b in ("ecg", "cxr"))):
            cols = self.output_columns(stem)
            arr = (np.full((n, len(cols)), np.nan) if values is None
                   else np.asarray(values, dtype=np.float64).reshape(n, -1))
            for j, col in enumerate(cols):
                out[col] = arr[:, j]
        return out

    def labels_from_table(self, table: pd.DataFrame) -> np.ndarray:
        """Encoded labels back from a score table: ``(N,)`` or ``(N, L)``."""
        cols = self.label_columns()
        values = table[cols].to_numpy(dtype=np.float64)
        return values[:, 0] if self.kind in ("binary", "multiclass") else values

    def predictions_from_table(self, table: pd.DataFrame) -> np.ndarray:
        """Probabilities / values back from a score table: ``(N,)`` binary, else ``(N, K | L | R)``."""
        values = table[self.prediction_columns()].to_numpy(dtype=np.float64)
        return values[:, 0] if self.kind == "binary" else values

    def decide(self, predictions: np.ndarray) -> np.ndarray:
        """Decisions from probabilities / values: binary and multilabel 0/1 at the task's thresholds (default
        0.5), multiclass the most probable class index, regression the values themselves. NaN stays NaN."""
        p = np.asarray(predictions, dtype=np.float64)
        if self.kind == "multiclass":
            p = p.reshape(len(p), -1)
            ok = np.isfinite(p).all(axis=1)
            out = np.full(len(p), np.nan)
            out[ok] = np.argmax(p[ok], axis=1)
            return out
        if self.kind == "regression":
            return p
        names = self.output_names
        thr = np.asarray([float(self.thresholds.get(n, 0.5)) for n in names])
        if self.kind == "binary":
            return np.where(np.isfinite(p), (p >= thr[0]).astype(float), np.nan)
        p = p.reshape(len(p), -1)
        return np.where(np.isfinite(p), (p >= thr[None, :]).astype(float), np.nan)


def binary_task(column: str = "label", name: str = "aortic_stenosis") -> Task:
    """The default task: one 0/1 column (today's behaviour)."""
    return Task(name=name, kind="binary", columns=[column], classes=["no AS", "AS"] if name == "aortic_stenosis"
                else ["negative", "positive"])


def _bin_names(bins: Sequence[float]) -> list[str]:
    def fmt(v: float) -> str:
        return f"{int(v)}" if float(v).is_integer() else f"{v:g}"

    names = [f"<{fmt(bins[0])}"]
    for lo, hi in zip(bins, bins[1:]):
        names.append(f"{fmt(lo)}-<{fmt(hi)}")
    names.append(f">={fmt(bins[-1])}")
    return names


def _numeric(column: pd.Series, where: str, name: str) -> np.ndarray:
    """A column as float with empty -> NaN; any other non-number is an error naming the column."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    text = column.astype("string").str.strip()
    empty = text.isna() | text.isin(["", "nan", "NaN", "none", "None", "NA"])
    values = pd.to_numeric(text.where(~empty), errors="coerce")
    bad = values.isna() & ~empty
    if bad.any():
        raise ConfigError(f"{where}: column {name!r} holds non-numeric values {_examples(column[bad])}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _examples(values: pd.Series, k: int = 3) -> str:
    uniq = list(dict.fromkeys(str(v) for v in values.tolist()))
    return ", ".join(repr(v) for v in uniq[:k]) + (" ..." if len(uniq) > k else "")


def load_task(value: str | os.PathLike | Mapping[str, Any] | Task | None) -> Task:
    """A task from a :class:`Task`, a mapping, a built-in name (:func:`cardiofusion.tasks.builtin_tasks`) or a
    task file path; None is the default binary AS task."""
    from .builtin import BUILTIN_TASKS

    if value is None:
        return binary_task()
    if isinstance(value, Task):
        return value
    if isinstance(value, Mapping):
        return Task.from_dict(value)
    text = str(value)
    if text in BUILTIN_TASKS:
        return Task.from_dict(BUILTIN_TASKS[text], where=f"built-in task {text!r}")
    if not Path(text).suffix and not Path(text).exists():
        raise ConfigError(f"unknown task {text!r}: give a task file (YAML/JSON) or one of "
                          f"{', '.join(sorted(BUILTIN_TASKS))}")
    return Task.from_file(text)


__all__ += ["load_task"]
