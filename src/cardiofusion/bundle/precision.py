"""Reduced-precision prediction and its export-time check against fp32.

Precisions (:data:`PRECISIONS`):

* ``fp32``: the model as trained (PyTorch or ONNX Runtime); always offered.
* ``bf16``: PyTorch autocast to bfloat16 (:class:`ReducedPrecision`).  On a CPU only where the CPU has
  native bf16 arithmetic (AVX512-BF16 or AMX, :func:`cpu_supports_bf16`); elsewhere autocast emulates it
  and is slower than fp32, so it is refused.  Also on a GPU (``device="cuda"``).
* ``fp16``: PyTorch autocast to float16, GPU only.
* ``int8``: ONNX Runtime's quantisation of the exported graph (:func:`quantize_int8`): dynamic
  (weights int8, activations quantised on the fly) or static (activation ranges calibrated on records of
  the training split, QDQ format, per-channel weights).  Runs on ONNX Runtime only.

At export (:func:`check_precisions`, called by :func:`cardiofusion.bundle.export_bundle`) every offered
precision scores the validation split beside fp32 (PyTorch) and :func:`compare_scores` records, in the
manifest's ``precision`` section, the largest score and probability differences, the AUROC in each
precision and its difference, and how many decisions at the bundle's threshold flip.  A precision whose
AUROC moves by more than ``tolerances.auroc`` or that flips more than ``tolerances.flip_fraction`` of the
decisions (or, when set, moves a score by more than ``tolerances.score``) is refused for that bundle:
it is listed with its numbers but not offered, and :func:`cardiofusion.load` refuses it with those
numbers (:func:`resolve`).

Bundles of the other task kinds are checked the same way by :func:`compare_task_outputs`, on the task's own
metric and decisions: multiclass (ordinal too) the macro AUROC and the most probable class, multilabel the
macro AUROC and every label's decision at its threshold (a record flips when any of its labels does),
regression the relative change of the validation MAE (``tolerances.mae``) with the largest value difference
per target recorded in its units.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
#: Precisions offered at export by default (``auto``): those this machine can check.
AUTO_PRECISIONS = ("bf16", "int8")
#: The int8 graph's file in a bundle.
INT8_GRAPH = "model.int8.onnx"
INT8_MODES = ("dynamic", "static")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class PrecisionTolerances:
    """When a reduced precision is refused for a bundle (differences against fp32 on the validation split).

    Attributes:
        auroc: largest allowed ``|AUROC(precision) - AUROC(fp32)|``.
        flip_fraction: largest allowed fraction of validation decisions (at the bundle's threshold) that change.
        score: largest allowed ``|score - score_fp32|`` of any record (None: not a criterion, only recorded).
        mae: regression bundles: largest allowed relative change of the validation MAE,
            ``|MAE(precision) - MAE(fp32)| / MAE(fp32)``.
    """

    auroc: float = 0.002
    flip_fraction: float = 0.01
    score: float | None = None
    mae: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return {"auroc": self.auroc, "flip_fraction": self.flip_fraction, "score": self.score, "mae": self.mae}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PrecisionTolerances:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown precision tolerance(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        out = cls(**d)
        for name in ("auroc", "flip_fraction", "score", "mae"):
            v = getattr(out, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0):
                raise ConfigError(f"precision tolerance {name} must be a number >= 0, got {v!r}")
        return out


# ------------------------------------------------------------------------------------------------------
# Hardware
# ------------------------------------------------------------------------------------------------------
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), so bf16 autocast is faster than fp32."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(getattr(torch._C, "_cpu", None), probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_available(precision: str, device: str = "cpu") -> None:
    """Raise :class:`ConfigError` when ``precision`` cannot run on ``device`` here."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    dev = torch.device(device).type
    if precision == "fp16" and dev != "cuda":
        raise ConfigError("precision fp16 runs on a GPU only (device='cuda'); on a CPU use bf16 or int8")
    if precision == "bf16" and dev == "cpu" and not cpu_supports_bf16():
        raise ConfigError("precision bf16 needs a CPU with native bf16 arithmetic (AVX512-BF16 or AMX); this CPU "
                          "has neither, so bf16 would be slower than fp32: use fp32 or int8")
    if precision == "int8" and dev != "cpu":
        raise ConfigError("precision int8 runs on ONNX Runtime's CPU provider; use device='cpu'")
    if precision == "int8":
        try:
            import onnxruntime.quantization  # noqa: F401
        except ImportError:
            raise ConfigError("precision int8 needs ONNX Runtime: pip install 'cardiofusion[onnx]'") from None


# ------------------------------------------------------------------------------------------------------
# bf16 / fp16: autocast
# ------------------------------------------------------------------------------------------------------
def _float32(x: Any) -> Any:
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


class ReducedPrecision(nn.Module):
    """``model`` run under ``torch.autocast`` in ``precision`` (bf16 or fp16); floating outputs come back float32.

    The weights stay float32 (autocast casts per operation: matmuls and convolutions in the reduced type,
    reductions and normalisations in float32), so the same module serves explanations in fp32.
    """

    def __init__(self, model: nn.Module, precision: str, device_type: str = "cpu"):
        super().__init__()
        if precision not in _AUTOCAST_DTYPES:
            raise ConfigError(f"autocast precision must be bf16 or fp16, got {precision!r}")
        self.model, self.precision, self.device_type = model, precision, device_type

    def forward(self, batch: dict[str, Any]) -> Any:
        with torch.autocast(self.device_type, dtype=_AUTOCAST_DTYPES[self.precision]):
            out = self.model(batch)
        if hasattr(out, "__dataclass_fields__"):  # FusionOutput
            changes = {f: _float32(getattr(out, f)) for f in ("score", "prob", "used")}
            branches = getattr(out, "branch_scores", None)
            if branches is not None:
                changes["branch_scores"] = {k: _float32(v) for k, v in branches.items()}
            return replace(out, **changes)
        return _float32(out)


def forward_for(model: nn.Module, precision: str, device_type: str = "cpu") -> nn.Module:
    """The module that scores in ``precision`` (``model`` itself for fp32; int8 is not a PyTorch precision)."""
    if precision == "fp32":
        return model
    if precision in _AUTOCAST_DTYPES:
        return ReducedPrecision(model, precision, device_type).eval()
    raise ConfigError(f"precision {precision!r} does not run on PyTorch; int8 runs on ONNX Runtime (runtime='onnx')")


# ------------------------------------------------------------------------------------------------------
# int8: ONNX Runtime quantisation
# ------------------------------------------------------------------------------------------------------
class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over a sequence of input dicts."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]], names: Sequence[str]):
        self._it = iter([{n: np.ascontiguousarray(f[n]) for n in names} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - the calibrators read the data once
        pass


def quantize_int8(graph: bytes, *, mode: str = "dynamic",
                  calibration: Iterable[dict[str, np.ndarray]] | None = None) -> bytes:
    """An int8 version of an ONNX graph (ONNX Runtime quantisation).

    Args:
        graph: the serialised float32 graph (``model.onnx``).
        mode: ``dynamic`` (int8 weights of MatMul/Gemm/Conv, activations quantised per call) or ``static``
            (QDQ, per-channel int8 weights, uint8 activations with ranges calibrated on ``calibration``).
        calibration: with ``static``: the graph's input dicts (e.g. batches of training-split records).
    """
    if mode not in INT8_MODES:
        raise ConfigError(f"unknown int8 mode {mode!r}; choose from {', '.join(INT8_MODES)}")
    import logging

    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(max(level, logging.ERROR))  # ORT's "consider pre-processing" advice on the root logger
    try:
        return _quantize(graph, mode, calibration)
    finally:
        root_logger.setLevel(level)


def _single_output_matmuls(graph: bytes) -> list[str]:
    """MatMul nodes whose constant weight has one output column (e.g. an ordinal head's shared logit, to which
    the K - 1 cut-points are added).  ONNX Runtime's dynamic quantiser fuses such a MatMul with the following
    Add into a DynamicQuantizeMatMul that refuses to run when the bias is wider than the weight ("bias
    tensor's element count must equal B's last dimension"); one column gains nothing from int8 anyway."""
    import onnx

    model = onnx.load_from_string(graph)
    width = {t.name: (list(t.dims)[-1] if t.dims else None) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and width.get(n.input[1]) == 1]


def _quantize(graph: bytes, mode: str, calibration: Iterable[dict[str, np.ndarray]] | None) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    with tempfile.TemporaryDirectory(prefix="cardiofusion-int8-") as tmp:
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(graph)
        if mode == "dynamic":
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             nodes_to_exclude=_single_output_matmuls(graph))
        else:
            if calibration is None:
                raise ConfigError("static int8 quantisation needs calibration inputs (records of the training split)")
            import onnx

            names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
            quantize_static(str(src), str(dst), _Calibration(calibration, names), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        return dst.read_bytes()


# ------------------------------------------------------------------------------------------------------
# The check against fp32
# ------------------------------------------------------------------------------------------------------
def _num(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def compare_scores(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, calibrate: Callable,
                   threshold: Any, tolerances: PrecisionTolerances) -> dict[str, Any]:
    """How far ``candidate`` record scores are from the fp32 ``reference`` ones, and whether that is tolerated.

    Args:
        reference, candidate: record-level scores ``(N,)`` (fp32 and the reduced precision).
        labels: ``(N,)`` 0/1 (NaN: unknown, left out of the AUROC).
        calibrate: score -> probability (the bundle's calibrator).
        threshold: the bundle's :class:`~cardiofusion.evaluation.calibration.Threshold` (``apply(probs)`` -> bool).
        tolerances: when to refuse.

    Returns:
        ``n_records``, ``max_abs_score_diff``, ``max_abs_prob_diff``, ``auroc_fp32``, ``auroc``, ``auroc_diff``,
        ``decision_flips``, ``flip_fraction``, ``accepted`` and ``reasons`` (why refused; empty when accepted).
    """
    from ..training.evaluate import auroc

    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if ref.shape != cand.shape or ref.shape != y.shape:
        raise ConfigError(f"score arrays differ in shape: {ref.shape}, {cand.shape}, labels {y.shape}")
    if not np.isfinite(cand[np.isfinite(ref)]).all():
        n_bad = int((~np.isfinite(cand) & np.isfinite(ref)).sum())
        return {"n_records": int(len(ref)), "accepted": False,
                "reasons": [f"{n_bad} record(s) get a non-finite score in this precision"]}
    keep = np.isfinite(ref)
    p_ref = np.asarray(calibrate(ref[keep]), dtype=np.float64)
    p_cand = np.asarray(calibrate(cand[keep]), dtype=np.float64)
    flips = int((np.asarray(threshold.apply(p_ref)) != np.asarray(threshold.apply(p_cand))).sum())
    n = int(keep.sum())
    a_ref, a_cand = auroc(y[keep], ref[keep]), auroc(y[keep], cand[keep])
    d_auroc = abs(a_cand - a_ref) if math.isfinite(a_ref) and math.isfinite(a_cand) else 0.0
    d_score = float(np.max(np.abs(cand[keep] - ref[keep]))) if n else 0.0
    out = {"n_records": n, "max_abs_score_diff": d_score,
           "max_abs_prob_diff": float(np.max(np.abs(p_cand - p_ref))) if n else 0.0,
           "auroc_fp32": _num(a_ref), "auroc": _num(a_cand), "auroc_diff": float(d_auroc),
           "decision_flips": flips, "flip_fraction": flips / n if n else 0.0}
    reasons = []
    if d_auroc > tolerances.auroc:
        reasons.append(f"AUROC {a_ref:.4f} -> {a_cand:.4f} (difference {d_auroc:.4f} > {tolerances.auroc:g})")
    if out["flip_fraction"] > tolerances.flip_fraction:
        reasons.append(f"{flips} of {n} decisions flip ({out['flip_fraction']:.2%} > {tolerances.flip_fraction:.2%})")
    if tolerances.score is not None and d_score > tolerances.score:
        reasons.append(f"largest score difference {d_score:.3g} > {tolerances.score:g}")
    out["accepted"] = not reasons
    out["reasons"] = reasons
    return out


def compare_task_outputs(task: Any, reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray],
                         labels: np.ndarray, tolerances: PrecisionTolerances) -> dict[str, Any]:
    """:func:`compare_scores` for a multiclass, multilabel or regression bundle.

    Args:
        task: the bundle's :class:`~cardiofusion.tasks.Task` (not binary).
        reference, candidate: record-level ``score`` ``(N, n_outputs)`` and ``prob`` ``(N, m)`` (class / label
            probabilities, standardised regression values) of fp32 and of the reduced precision.
        labels: the records' encoded labels ``(N,)`` / ``(N, L)`` (NaN: unknown).
        tolerances: when to refuse.

    Returns:
        ``n_records``, ``max_abs_score_diff`` and, for classification, ``max_abs_prob_diff``, the macro AUROC in
        each precision (``auroc_fp32``, ``auroc``, ``auroc_diff``), ``decision_flips`` (records whose most probable
        class, or any of whose label decisions, changes) and ``flip_fraction``; for regression ``mae_fp32``,
        ``mae``, ``mae_change`` (relative) and ``max_abs_value_diff`` per target in its unit.  Then ``accepted``
        and ``reasons``.
    """
    from ..training.evaluate import task_metrics

    if task.is_binary:
        raise ConfigError("compare_task_outputs is for non-binary tasks; binary bundles use compare_scores")
    y = np.asarray(labels, dtype=np.float64)
    n = len(y)
    rs, cs = (np.asarray(d["score"], dtype=np.float64).reshape(n, -1) for d in (reference, candidate))
    rp, cp = (np.asarray(d["prob"], dtype=np.float64).reshape(n, -1) for d in (reference, candidate))
    if rs.shape != cs.shape or rp.shape != cp.shape:
        raise ConfigError(f"output arrays differ in shape: {rs.shape} / {cs.shape}, {rp.shape} / {cp.shape}")
    keep = np.isfinite(rp).all(axis=1) & np.isfinite(rs).all(axis=1)
    n_bad = int((keep & ~(np.isfinite(cp).all(axis=1) & np.isfinite(cs).all(axis=1))).sum())
    if n_bad:
        return {"n_records": int(keep.sum()), "accepted": False,
                "reasons": [f"{n_bad} record(s) get a non-finite output in this precision"]}
    rs, cs, rp, cp, y = rs[keep], cs[keep], rp[keep], cp[keep], y[keep]
    m = int(keep.sum())
    out: dict[str, Any] = {"n_records": m, "max_abs_score_diff": float(np.max(np.abs(cs - rs))) if m else 0.0}
    ref_metrics, cand_metrics = task_metrics(task, y, rp), task_metrics(task, y, cp)
    reasons = []
    if task.kind == "regression":
        rv, cv = task.unstandardize(rp), task.unstandardize(cp)
        out["max_abs_value_diff"] = {name: float(np.max(np.abs(cv[:, j] - rv[:, j]))) if m else 0.0
                                     for j, name in enumerate(task.target_names)}
        out["units"] = {name: task.unit(col) or None for name, col in zip(task.target_names, task.columns)}
        a_ref, a_cand = ref_metrics["mae"], cand_metrics["mae"]
        both = math.isfinite(a_ref) and math.isfinite(a_cand)
        change = (abs(a_cand - a_ref) / a_ref if a_ref > 0 else (0.0 if a_cand == a_ref else math.inf)) if both else 0.0
        out.update(mae_fp32=_num(a_ref), mae=_num(a_cand), mae_change=float(change))
        if change > tolerances.mae:
            reasons.append(f"MAE {a_ref:.4g} -> {a_cand:.4g} (relative change {change:.2%} > {tolerances.mae:.2%})")
    else:
        out["max_abs_prob_diff"] = float(np.max(np.abs(cp - rp))) if m else 0.0
        a_ref, a_cand = ref_metrics["macro_auroc"], cand_metrics["macro_auroc"]
        d_auroc = abs(a_cand - a_ref) if math.isfinite(a_ref) and math.isfinite(a_cand) else 0.0
        changed = np.asarray(task.decide(rp) != task.decide(cp)).reshape(m, -1).any(axis=1)
        flips = int(changed.sum())
        out.update(auroc_fp32=_num(a_ref), auroc=_num(a_cand), auroc_diff=float(d_auroc), decision_flips=flips,
                   flip_fraction=flips / m if m else 0.0)
        if d_auroc > tolerances.auroc:
            reasons.append(f"macro AUROC {a_ref:.4f} -> {a_cand:.4f} (difference {d_auroc:.4f} > {tolerances.auroc:g})")
        if out["flip_fraction"] > tolerances.flip_fraction:
            reasons.append(f"{flips} of {m} records' decisions flip ({out['flip_fraction']:.2%} > "
                           f"{tolerances.flip_fraction:.2%})")
    if tolerances.score is not None and out["max_abs_score_diff"] > tolerances.score:
        reasons.append(f"largest score difference {out['max_abs_score_diff']:.3g} > {tolerances.score:g}")
    out["accepted"] = not reasons
    out["reasons"] = reasons
    return out


def describe_check(precision: str, check: dict[str, Any]) -> str:
    """One line: a precision's numbers against fp32 (for export's report and load's refusal)."""
    if "max_abs_score_diff" not in check:
        return f"{precision}: " + "; ".join(check.get("reasons") or ["not checked"])
    parts = [f"max |score diff| {check['max_abs_score_diff']:.3g}"]
    if "max_abs_prob_diff" in check:
        parts.append(f"max |prob diff| {check['max_abs_prob_diff']:.3g}")
    if "mae_change" in check:
        m_ref, m = check.get("mae_fp32"), check.get("mae")
        parts.append(f"MAE {m_ref:.4g} -> {m:.4g} (change {check['mae_change']:.2%})" if m_ref is not None
                     and m is not None else "MAE undefined (no known targets)")
    if "auroc_diff" in check:
        a_ref, a = check.get("auroc_fp32"), check.get("auroc")
        parts.append(f"AUROC {a_ref:.4f} -> {a:.4f} (diff {check['auroc_diff']:.4f})" if a_ref is not None
                     and a is not None else "AUROC undefined (one class)")
    if "decision_flips" in check:
        parts.append(f"{check['decision_flips']} of {check['n_records']} decisions flip")
    verdict = "accepted" if check.get("accepted") else "REFUSED: " + "; ".join(check.get("reasons") or [])
    return f"{precision}: {', '.join(parts)} -- {verdict}"


def onnx_feed(batch: dict[str, Any], *, leads: int, window: int, image_size: int) -> dict[str, np.ndarray]:
    """The :class:`~cardiofusion.bundle.onnx.FusedGraph` inputs of a window-level loader batch
    (one X-ray per record; zeros for an absent modality)."""
    from ..training.evaluate import record_rows

    index = batch["record_index"]
    b, r = len(index), int(batch["n_records"])
    first = torch.as_tensor(record_rows(batch))
    cxr = batch["cxr"][first] if "cxr" in batch else torch.zeros(r, 1, image_size, image_size)
    return {"ecg": batch.get("ecg", torch.zeros(b, leads, window)).float().numpy(),
            "ecg_mask": batch.get("ecg_mask", torch.zeros(b, leads, dtype=torch.bool)).numpy(),
            "cxr": cxr.float().numpy(), "has_ecg": batch["has_ecg"].numpy(), "has_cxr": batch["has_cxr"].numpy(),
            "record_index": index.numpy()}


def onnx_output(out: dict[str, np.ndarray]) -> Any:
    """The :class:`~cardiofusion.models.fusion.FusionOutput` of one :class:`~cardiofusion.bundle.onnx.FusedGraph` run."""
    from ..models.fusion import FusionOutput

    return FusionOutput(score=torch.from_numpy(out["score"]), prob=torch.from_numpy(out["prob"]),
                        branch_scores={"ecg": torch.from_numpy(out["score_ecg"]),
                                       "cxr": torch.from_numpy(out["score_cxr"])},
                        used=torch.from_numpy(out["used"]))


@torch.no_grad()
def score_loader(scorers: dict[str, Callable[[dict[str, Any]], Any]], loader: Iterable[dict[str, Any]], *,
                 failures: dict[str, str] | None = None) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Record-level outputs of each scorer (window batch -> ``FusionOutput``) over one pass of ``loader``:
    ``{scorer: {"score": (N,) | (N, n_outputs), "prob": (N,) | (N, m)}}``, and the records' labels.

    ``failures``: when given, a scorer that raises is dropped (its one-line reason stored under its name) and
    the others go on; the first scorer (the reference) always re-raises."""
    from ..training.evaluate import aggregate_windows, record_rows

    parts: dict[str, dict[str, list[np.ndarray]]] = {k: {"score": [], "prob": []} for k in scorers}  # live scorers
    reference = next(iter(scorers), None)
    labels: list[np.ndarray] = []
    for batch in loader:
        n = int(batch["n_records"])
        for name, fn in scorers.items():
            if name not in parts:  # failed on an earlier batch
                continue
            try:
                agg = aggregate_windows(fn(batch), batch["record_index"], n)
            except Exception as e:  # noqa: BLE001 -- ONNX Runtime raises its own types for graphs it cannot run
                if failures is None or name == reference:
                    raise
                failures[name] = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                del parts[name]
                continue
            for key in ("score", "prob"):
                parts[name][key].append(agg[key].float().cpu().numpy())
        labels.append(batch["label"][torch.as_tensor(record_rows(batch))].float().numpy())
    cat = {k: {key: np.concatenate(v) if v else np.zeros(0) for key, v in d.items()} for k, d in parts.items()}
    return cat, (np.concatenate(labels) if labels else np.zeros(0))


def check_precisions(model: nn.Module, precisions: Sequence[str], *, val_loader: Iterable[dict[str, Any]],
                     graph: bytes | None, leads: int, window: int, image_size: int, calibrate: Callable,
                     threshold: Any, tolerances: PrecisionTolerances, int8_mode: str = "dynamic",
                     calibration_loader: Iterable[dict[str, Any]] | None = None, task: Any = None,
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """Score the validation split in fp32 and each of ``precisions``; compare (:func:`compare_scores`; for a
    non-binary ``task`` :func:`compare_task_outputs`, where ``calibrate`` and ``threshold`` are not used).

    Returns ``(checks, files)``: ``checks[precision]`` (the numbers, ``accepted``, ``reasons``, ``runtime``)
    and the files an accepted precision needs in the bundle (``{INT8_GRAPH: bytes}``).
    """
    from ..training.evaluate import model_batch
    from .onnx import OnnxRunner

    model = model.eval()
    scorers: dict[str, Callable] = {"fp32": lambda b: model(model_batch(b))}
    checks: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    int8_graph = None
    for p in precisions:
        if p == "fp32":
            continue
        try:
            check_available(p, "cpu")
            if p == "int8" and graph is None:
                raise ConfigError("int8 needs the ONNX graph (export without --no-onnx)")
        except ConfigError as e:
            checks[p] = {"accepted": False, "reasons": [f"not checked: {e}"]}
            continue
        if p in _AUTOCAST_DTYPES:
            fwd = forward_for(model, p, "cpu")
            scorers[p] = lambda b, fwd=fwd: fwd(model_batch(b))
            checks[p] = {"runtime": "torch"}
        else:
            mode, note = int8_mode, None
            if mode == "static":
                feeds = [onnx_feed(b, leads=leads, window=window, image_size=image_size)
                         for b in (calibration_loader or [])]
                try:
                    int8_graph = quantize_int8(graph, mode="static", calibration=feeds) if feeds else None
                    if int8_graph is None:
                        note = "no training-split records to calibrate on"
                except Exception as e:  # noqa: BLE001 - ONNX Runtime's calibrators raise assertion and value errors
                    int8_graph, note = None, f"static quantisation failed ({type(e).__name__}: {e})"
                if int8_graph is None:
                    mode = "dynamic"
            if mode == "dynamic":
                int8_graph = quantize_int8(graph, mode="dynamic")
            runner = OnnxRunner(int8_graph)
            scorers[p] = lambda b, runner=runner: onnx_output(
                runner.run(onnx_feed(b, leads=leads, window=window, image_size=image_size)))
            checks[p] = {"runtime": "onnx", "file": INT8_GRAPH, "quantisation": mode,
                         **({"calibration": f"{sum(len(f['cxr']) for f in feeds)} training-split records"}
                            if mode == "static" else {}),
                         **({"note": f"dynamic instead of static: {note}"} if note else {})}
    failures: dict[str, str] = {}
    scores, labels = score_loader(scorers, val_loader, failures=failures)
    for p, reason in failures.items():
        checks[p].update(accepted=False, reasons=[f"not checked: scoring the validation split failed ({reason})"])
    for p in list(checks):
        if p not in scores:
            continue
        if task is not None and not task.is_binary:
            checks[p].update(compare_task_outputs(task, scores["fp32"], scores[p], labels, tolerances))
        else:
            checks[p].update(compare_scores(scores["fp32"]["score"], scores[p]["score"], labels, calibrate,
                                            threshold, tolerances))
        if p == "int8" and checks[p]["accepted"] and int8_graph is not None:
            files[INT8_GRAPH] = int8_graph
    return checks, files


# ------------------------------------------------------------------------------------------------------
# At load
# ------------------------------------------------------------------------------------------------------
def offered(manifest: dict[str, Any]) -> list[str]:
    """The precisions a bundle offers (fp32 always; others only when they passed the export check)."""
    section = manifest.get("precision") or {}
    return ["fp32", *[p for p in section.get("offered", []) if p != "fp32"]]


def resolve(manifest: dict[str, Any], precision: str | None, runtime: str | None,
            device: str = "cpu") -> tuple[str, str]:
    """``(precision, runtime)`` to load a bundle with: the arguments, else the bundle's stored choice
    (``manifest["inference"]``), else fp32 / torch; int8 implies ONNX Runtime.

    Raises :class:`ConfigError` for a precision the bundle does not offer (with the export check's numbers
    when it was refused), a runtime that cannot run it, or hardware without it.
    """
    stored = manifest.get("inference") or {}
    precision = precision or stored.get("precision") or "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if runtime is None:
        runtime = "onnx" if precision == "int8" else ("torch" if precision in _AUTOCAST_DTYPES
                                                       else stored.get("runtime") or "torch")
    if precision == "int8" and runtime != "onnx":
        raise ConfigError("precision int8 runs on ONNX Runtime only; use runtime 'onnx' (or leave it out)")
    if precision in _AUTOCAST_DTYPES and runtime != "torch":
        raise ConfigError(f"precision {precision} runs on PyTorch (autocast) only; use runtime 'torch'")
    if precision != "fp32" and precision not in offered(manifest):
        check = (manifest.get("precision") or {}).get("checks", {}).get(precision)
        if check is not None:
            raise ConfigError(f"this bundle does not offer precision {precision}: refused at export against fp32 "
                              f"on the validation split -- {describe_check(precision, check)}")
        raise ConfigError(f"this bundle does not offer precision {precision}: it was not checked against fp32 at "
                          f"export; re-export it with --precisions {precision}")
    check_available(precision, device)
    return precision, runtime


__all__ = ["AUTO_PRECISIONS", "INT8_GRAPH", "INT8_MODES", "PRECISIONS", "PrecisionTolerances", "ReducedPrecision",
           "check_available", "check_precisions", "compare_scores", "compare_task_outputs", "cpu_supports_bf16", "describe_check",
           "forward_for", "offered", "onnx_feed", "onnx_output", "quantize_int8", "resolve", "score_loader"]
