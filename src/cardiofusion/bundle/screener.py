"""Screen new patients with a model bundle: ``cardiofusion.load(BUNDLE).predict(ecg=..., cxr=...)``.

Bundles of every task kind (:mod:`cardiofusion.bundle.results`): binary bundles answer a calibrated
probability and POSITIVE / NEGATIVE at their threshold; multiclass bundles the class probabilities and the
predicted class; multilabel bundles each label's probability and decision; regression bundles values in units.

:func:`load` checks the bundle (format version, content hash, file sizes and digests), rebuilds the
model from its JSON config and loads the safetensors weights -- nothing is unpickled.
:meth:`Screener.predict` reads the files with the settings the bundle carries
(:mod:`cardiofusion.bundle.inputs`), scores every evaluation window, averages the window scores per
patient (as validation did), calibrates the fused score and applies the bundle's threshold.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation.calibration import Calibrator, Threshold
from ..errors import CardiofusionError, ConfigError
from ..records import CXRImage, ECGRecord
from .format import GENERATED_LABEL, GENERATOR_WEIGHTS, ONNX_GRAPH, WEIGHTS, BundleError, read_manifest, verify_files
from .inputs import PreparedCXR, PreparedECG, ReaderDefaults, prepare_cxr, prepare_ecg
from .results import NEGATIVE, POSITIVE, Prediction, binary_outputs, task_from_manifest, task_prediction, task_values

RUNTIMES = ("torch", "onnx")


@dataclass
class PreparedPatient:
    """One patient's model inputs (either modality may be absent)."""

    ecg: PreparedECG | None
    cxr: PreparedCXR | None
    patient_id: str | None = None
    warnings: list[str] = field(default_factory=list)


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class PredictionError(CardiofusionError):
    """The model gave no usable score for a patient (NaN or infinite): no decision is made.

    Attributes:
        patient_id: the caller's identifier of the patient (None when not given).
    """

    def __init__(self, message: str, patient_id: str | None = None):
        self.patient_id = patient_id
        super().__init__(" ".join(str(message).split()))


#: Why a non-finite score is refused (fixed words: the web service shows this message as it is).
NON_FINITE_REASON = ("the model gave a non-finite score, so no decision can be made; the bundle's weights or "
                     "calibration are broken (re-export it from a sound run)")


class Screener:
    """A loaded model bundle (see :func:`load`).

    Attributes:
        path: the bundle folder.
        manifest: the bundle's manifest (dict).
        model: the PyTorch ``MultimodalModel`` in eval mode.
        model_config, preprocess, decode: rebuild, model-input and file-decoding settings.
        calibrator, threshold: from the bundle.
        runtime: ``torch`` or ``onnx`` (ONNX Runtime on the bundle's ``model.onnx``).
        precision: ``fp32``, ``bf16`` (PyTorch autocast) or ``int8`` (ONNX Runtime on ``model.int8.onnx``);
            see :mod:`cardiofusion.bundle.precision`.  Explanations always use the fp32 PyTorch model.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], model: torch.nn.Module, *, runtime: str = "torch",
                 onnx_runner: Any = None, precision: str = "fp32"):
        from .precision import forward_for

        from ..transforms.decode import CacheConfig
        from ..models import ModelConfig
        from ..transforms.preprocess import PreprocessConfig

        self.path = path
        self.manifest = manifest
        self.model = model.eval()
        self.model_config = ModelConfig.from_dict(manifest["model"]["config"])
        self.preprocess = PreprocessConfig.from_dict(manifest["preprocess"])
        self.decode = CacheConfig.from_dict(manifest["decode"])
        self.reader_defaults = ReaderDefaults.from_dict(manifest.get("ecg_reader_defaults"))
        self.task = task_from_manifest(manifest, path)
        # calibration and one threshold exist for binary tasks; other kinds report the heads' probabilities
        # (multilabel decisions at the task's per-label thresholds) or values in units
        binary = self.task.is_binary
        self.calibrator = Calibrator.from_dict(manifest["calibration"]["calibrator"]) if binary else None
        self.threshold = Threshold.from_dict(manifest["threshold"]) if binary else None
        self.modalities: tuple[str, ...] = tuple(manifest["model"]["modalities"])
        self.runtime = runtime
        self._onnx = onnx_runner
        self.precision = precision
        self._forward = forward_for(self.model, precision) if runtime == "torch" else self.model

    # -- description ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    def describe(self) -> dict[str, Any]:
        """What a clinician-facing page shows about the model (no file paths)."""
        m = self.manifest
        d = {"name": self.name, "fusion": self.model_config.fusion, "modalities": list(self.modalities),
             "label": m.get("label", {}).get("definition"),
             "threshold": self.threshold.value if self.threshold is not None else None,
             "threshold_rule": self.threshold.describe() if self.threshold is not None else None,
             "validation": m.get("validation", {}),
             "ecg": m.get("ecg"), "cxr": m.get("cxr"), "runtime": self.runtime, "precision": self.precision,
             "cardiofusion": m.get("versions", {}).get("cardiofusion"),
             "content_hash": m.get("content_hash")}
        if not self.task.is_binary:
            t = self.task
            d["task"] = {"name": t.name, "kind": t.kind, "ordinal": t.ordinal, "names": list(t.classes),
                         "units": [t.unit(c) or None for c in t.columns] if t.kind == "regression" else None,
                         "thresholds": ({n: float(t.thresholds.get(o, 0.5)) for n, o in zip(t.classes, t.output_names)}
                                        if t.kind == "multilabel" else None),
                         "description": t.description}
        return d

    # -- inputs --------------------------------------------------------------------------------------
    def prepare(self, ecg: str | os.PathLike | ECGRecord | None = None, cxr: str | os.PathLike | CXRImage | None = None,
                *, patient_id: str | None = None, ecg_fs: float | None = None, ecg_units: str | None = None,
                ecg_resolution_uv: float | None = None) -> PreparedPatient:
        """Read and preprocess one patient's files (raises ``ReadError`` / ``ConfigError``)."""
        if ecg is None and cxr is None:
            raise ConfigError("give an ECG, an X-ray or both")
        warnings: list[str] = []
        uses = set(self.modalities)
        if ecg is not None and "ecg" not in uses:
            warnings.append("ECG ignored: this model reads X-rays only")
            ecg = None
        if cxr is not None and "cxr" not in uses:
            warnings.append("X-ray ignored: this model reads ECGs only")
            cxr = None
        if ecg is None and cxr is None:
            need = " and ".join({"ecg": "an ECG", "cxr": "an X-ray"}[m] for m in self.modalities)
            raise ConfigError(f"this model ({self.model_config.fusion}) needs {need}")
        p_ecg = (prepare_ecg(ecg, self.decode, self.preprocess, self.reader_defaults, fs=ecg_fs, units=ecg_units,
                             resolution_uv=ecg_resolution_uv) if ecg is not None else None)
        p_cxr = prepare_cxr(cxr, self.decode, self.preprocess) if cxr is not None else None
        if len(self.modalities) == 2 and (p_ecg is None or p_cxr is None):
            have = "ECG" if p_ecg is not None else "X-ray"
            warnings.append(f"{have} only: the model and its calibration were fitted on patients with both "
                            f"modalities, so this probability is less reliable")
        for part in (p_ecg, p_cxr):
            if part is not None:
                warnings.extend(part.warnings)
        return PreparedPatient(ecg=p_ecg, cxr=p_cxr, patient_id=patient_id, warnings=warnings)

    # -- scoring -------------------------------------------------------------------------------------
    def _window_batch(self, patients: Sequence[PreparedPatient]) -> dict[str, Any]:
        """The window-level batch of ``cardiofusion.data.dataset.collate`` for prepared patients (plus per-record
        X-rays for the ONNX graph)."""
        pp = self.preprocess
        n_leads, width, size = len(pp.leads), pp.window_samples, pp.image_size
        ecg_rows, mask_rows, n_windows = [], [], []
        for p in patients:
            if p.ecg is not None:
                w = p.ecg.windows  # (n_w, L, W)
                ecg_rows.append(w)
                mask_rows.append(np.repeat(p.ecg.lead_mask[None], len(w), axis=0))
            else:
                ecg_rows.append(np.zeros((1, n_leads, width), dtype=np.float32))
                mask_rows.append(np.zeros((1, n_leads), dtype=bool))
            n_windows.append(len(ecg_rows[-1]))
        record_index = torch.repeat_interleave(torch.arange(len(patients)), torch.tensor(n_windows))  # (B_w,)
        has_ecg = torch.tensor([p.ecg is not None for p in patients])[record_index]
        has_cxr = torch.tensor([p.cxr is not None for p in patients])[record_index]
        cxr_records = torch.stack([p.cxr.image if p.cxr is not None else torch.zeros(1, size, size)
                                   for p in patients])  # (R, 1, H, W)
        batch: dict[str, Any] = {"record_index": record_index, "n_records": len(patients),
                                 "has_ecg": has_ecg, "has_cxr": has_cxr, "cxr_records": cxr_records}
        if "ecg" in self.modalities:
            batch["ecg"] = torch.from_numpy(np.concatenate(ecg_rows))  # (B_w, L, W)
            batch["ecg_mask"] = torch.from_numpy(np.concatenate(mask_rows))  # (B_w, L)
        if "cxr" in self.modalities:
            batch["cxr"] = cxr_records[record_index]  # (B_w, 1, H, W), repeated per window as in evaluation
        return batch

    @torch.no_grad()
    def _score(self, patients: Sequence[PreparedPatient]) -> dict[str, np.ndarray]:
        """Record-level ``score``, ``prob``, ``score_ecg``, ``score_cxr`` (``(R,)`` binary, ``(R, k)`` / ``(R, m)``
        otherwise) and ``used`` ``(R, 2)``."""
        from ..training.evaluate import aggregate_windows, model_batch
        from .precision import onnx_output

        batch = self._window_batch(patients)
        if self.runtime == "onnx":
            n_leads, width = len(self.preprocess.leads), self.preprocess.window_samples
            b = len(batch["record_index"])
            inputs = {"ecg": batch.get("ecg", torch.zeros(b, n_leads, width)).numpy(),
                      "ecg_mask": batch.get("ecg_mask", torch.zeros(b, n_leads, dtype=torch.bool)).numpy(),
                      "cxr": batch["cxr_records"].numpy(), "has_ecg": batch["has_ecg"].numpy(),
                      "has_cxr": batch["has_cxr"].numpy(), "record_index": batch["record_index"].numpy()}
            output = onnx_output(self._onnx.run(inputs))
        else:
            # record_index lets the model encode each X-ray once per patient (not once per ECG window as
            # evaluation does); the features, hence the scores, are the same
            output = self._forward({**model_batch(batch), "record_index": batch["record_index"]})
        agg = aggregate_windows(output, batch["record_index"], len(patients))
        return {k: agg[k].cpu().numpy() for k in ("score", "prob", "score_ecg", "score_cxr", "used")}

    def predict_prepared(self, patients: Sequence[PreparedPatient]) -> list[Prediction]:
        """Predictions for already prepared patients (one model call for all of them).

        Raises :class:`PredictionError` when the model's score or calibrated probability of any of them
        is NaN or infinite (see :meth:`predict_prepared_each` to keep the others).
        """
        out = self.predict_prepared_each(patients)
        for r in out:
            if isinstance(r, PredictionError):
                raise r
        return out  # type: ignore[return-value]

    def predict_prepared_each(self, patients: Sequence[PreparedPatient]) -> list[Prediction | PredictionError]:
        """Like :meth:`predict_prepared`, but a patient whose score or probability is not finite gets a
        :class:`PredictionError` in its place (batch mode: that row fails, the others go on)."""
        if not patients:
            return []
        agg = self._score(patients)
        if not self.task.is_binary:
            return self._task_results(patients, agg)
        with np.errstate(invalid="ignore", over="ignore"):
            probs = np.asarray(self.calibrator(agg["score"]), dtype=np.float64)
            decisions = self.threshold.apply(probs)
        out: list[Prediction | PredictionError] = []
        for i, p in enumerate(patients):
            if not (math.isfinite(float(agg["score"][i])) and math.isfinite(float(probs[i]))):
                bad = float(agg["score"][i]) if not math.isfinite(float(agg["score"][i])) else float(probs[i])
                out.append(PredictionError(f"{NON_FINITE_REASON} (score {bad})", patient_id=p.patient_id))
                continue
            used = [m for j, m in enumerate(("ecg", "cxr")) if bool(agg["used"][i, j])]
            out.append(Prediction(
                probability=float(probs[i]), decision=POSITIVE if bool(decisions[i]) else NEGATIVE,
                threshold=float(self.threshold.value), modalities=used,
                scores={"fused": _finite(agg["score"][i]), "ecg": _finite(agg["score_ecg"][i]),
                        "cxr": _finite(agg["score_cxr"][i])},
                patient_id=p.patient_id, warnings=list(p.warnings), task=self.task.name,
                outputs=binary_outputs(self.task, float(probs[i]), float(self.threshold.value),
                                       POSITIVE if bool(decisions[i]) else NEGATIVE)))
        return out

    def _task_results(self, patients: Sequence[PreparedPatient],
                      agg: dict[str, np.ndarray]) -> list[Prediction | PredictionError]:
        """Multiclass / multilabel / regression results (:mod:`cardiofusion.bundle.results`)."""
        k = self.task.n_outputs
        n = len(patients)
        raw = {name: np.asarray(agg[key], dtype=np.float64).reshape(n, k)
               for name, key in (("fused", "score"), ("ecg", "score_ecg"), ("cxr", "score_cxr"))}
        with np.errstate(invalid="ignore", over="ignore"):
            values = task_values(self.task, agg["prob"])
        out: list[Prediction | PredictionError] = []
        for i, p in enumerate(patients):
            bad = [float(v) for v in (*raw["fused"][i], *values[i]) if not math.isfinite(float(v))]
            if bad:
                out.append(PredictionError(f"{NON_FINITE_REASON} (score {bad[0]})", patient_id=p.patient_id))
                continue
            used = [m for j, m in enumerate(("ecg", "cxr")) if bool(agg["used"][i, j])]
            out.append(task_prediction(self.task, values[i], {m: raw[m][i] for m in raw}, used, p.patient_id,
                                       p.warnings))
        return out

    def predict(self, ecg: str | os.PathLike | ECGRecord | None = None, cxr: str | os.PathLike | CXRImage | None = None,
                *, explain: str | os.PathLike | None = None, patient_id: str | None = None,
                ecg_fs: float | None = None, ecg_units: str | None = None,
                ecg_resolution_uv: float | None = None, cxr_layer: Any = None, target: Any = None,
                generate_image: str | os.PathLike | None = None, seed: int = 0) -> Prediction:
        """Screen one patient.

        Args:
            ecg: an ECG file (any supported format; WFDB: the ``.hea``) or an :class:`ECGRecord`.
            cxr: an X-ray file (DICOM, PNG, JPEG) or a :class:`CXRImage`.
            explain: a folder to write the heat maps into (``cxr.png``: Grad-CAM overlay; ``ecg.png``:
                12-lead heat map), named ``<patient_id>_cxr.png`` when a patient id is given.
            cxr_layer: X-ray Grad-CAM layer(s) of the explanation (default: the last feature map; ``-2``:
                the stride-16 stage, finer; see :func:`cardiofusion.explain.cxr_gradcam`).
            target: what the explanation explains for bundles of non-binary tasks: a class (name or index),
                label name or output index (default: the predicted class, each positive label or else the
                first, the first regression target; see :meth:`explain`).
            patient_id: echoed in the result (and used for figure names); never read from files.
            ecg_fs, ecg_units, ecg_resolution_uv: for headerless ECG files (CSV, NumPy, HDF5); default:
                the training export's (``manifest["ecg_reader_defaults"]``).
            generate_image: a PNG path: also write the X-ray the bundle's generator makes from the ECG
                (:meth:`generate_image`; bundles exported with a generator), labelled GENERATED.
            seed: the generator's noise seed.
        """
        if generate_image is not None:
            self._check_generator()
        patient = self.prepare(ecg, cxr, patient_id=patient_id, ecg_fs=ecg_fs, ecg_units=ecg_units,
                               ecg_resolution_uv=ecg_resolution_uv)
        result = self.predict_prepared([patient])[0]
        if explain is not None:
            result.explanations = self.explain(patient, explain, result, cxr_layer=cxr_layer, target=target)
        if generate_image is not None:
            result.generated_image = self.generate_image(patient, generate_image, seed=seed)
        return result

    # -- ECG -> X-ray generation (paper 003 stage 4) ---------------------------------------------------
    @property
    def has_generator(self) -> bool:
        """True when the bundle carries an ECG -> X-ray generator."""
        return "generator" in self.manifest

    def _check_generator(self) -> None:
        if not self.has_generator:
            raise ConfigError(f"{self.path}: this bundle carries no ECG -> X-ray generator (export it with "
                              f"--generator RUN)")

    def _generator(self) -> torch.nn.Module:
        if getattr(self, "_generator_model", None) is None:
            from safetensors.torch import load_file

            from ..models.ecg_to_image import ECGImageGenerator

            section = self.manifest["generator"]
            try:
                model = ECGImageGenerator(section["spec"])
                model.load_state_dict(load_file(str(self.path / GENERATOR_WEIGHTS), device="cpu"), strict=True)
            except (ConfigError, KeyError, TypeError, RuntimeError, OSError) as e:
                raise BundleError(self.path / GENERATOR_WEIGHTS, f"unusable generator ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0]})") from None
            self._generator_model = model.eval()
        return self._generator_model

    def generate_image(self, patient: PreparedPatient, out: str | os.PathLike, *, seed: int = 0) -> dict[str, Any]:
        """Write the X-ray the bundle's generator makes from the patient's ECG (its first window, as in the
        recipe's evaluation) as a PNG titled GENERATED (also in the PNG's metadata); returns
        ``{"path", "generated": True, "label", "guidance", "steps", "seed", "image_size"}``."""
        self._check_generator()
        if patient.ecg is None:
            raise ConfigError("generating an image needs the patient's ECG")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        section = self.manifest["generator"]
        window = torch.from_numpy(np.ascontiguousarray(patient.ecg.windows[:1]))
        mask = torch.from_numpy(np.ascontiguousarray(patient.ecg.lead_mask[None]))
        image = self._generator().generate(window, mask, guidance=float(section["guidance"]),
                                           steps=int(section["steps"]), seed=int(seed))[0, 0].numpy()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(3.2, 3.6))
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title("GENERATED - not a real X-ray", fontsize=10, color="red")
        ax.set_xlabel("synthetic image from the ECG (diffusion model)", fontsize=7)
        fig.tight_layout()
        fig.savefig(out, dpi=100, metadata={"Title": "GENERATED - not a real X-ray", "Description": GENERATED_LABEL})
        plt.close(fig)
        return {"path": str(out), "generated": True, "label": GENERATED_LABEL, "guidance": float(section["guidance"]),
                "steps": int(section["steps"]), "seed": int(seed), "image_size": int(image.shape[-1])}

    # -- explanations --------------------------------------------------------------------------------
    def explain(self, patient: PreparedPatient, out_dir: str | os.PathLike, result: Prediction | None = None,
                *, stem: str | None = None, cxr_layer: Any = None, target: Any = None) -> dict[str, str]:
        """Write the X-ray Grad-CAM overlay and the 12-lead heat map of one patient (PyTorch model; the
        same weights as the ONNX graph).  Returns ``{"cxr": path, "ecg": path}`` for what was drawn.

        Bundles of other tasks explain ``target`` (a class name or index, label name, output index), by
        default the predicted class, each positive label (else the first label) or the first target; files
        are ``<stem><target>_cxr.png``, keys ``"cxr:<target>"`` / ``"ecg:<target>"``, and each figure's
        title names its target."""
        try:
            from ..explain import (
                explain_sample,
                plot_cxr_explanation,
                plot_ecg_explanation,
            )
            from ..explain.attribution import default_output_targets, resolve_output_target
            from ..explain.samples import RecordSample
        except ImportError as e:  # pragma: no cover - the explain package ships with the library
            raise ConfigError(f"explanations are unavailable ({e})") from None
        from ..transforms.preprocess import window_starts

        pp = self.preprocess
        signal = mask = starts = None
        if patient.ecg is not None:
            n = patient.ecg.n_samples
            signal = np.ascontiguousarray(patient.ecg.signal[:, :n])  # (L, n)
            mask = patient.ecg.lead_mask
            starts = window_starts(n, pp.window_samples, pp.stride_samples)
        sample = RecordSample(record_id=patient.patient_id or "patient", patient_id=patient.patient_id or "",
                              label=float("nan"), ecg_signal=signal, ecg_mask=mask, window_starts=starts,
                              window_samples=pp.window_samples, fs=pp.fs, leads=tuple(pp.leads),
                              cxr=patient.cxr.image if patient.cxr is not None else None,
                              image_mean=pp.image_mean, image_std=pp.image_std)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        prefix = stem or (_safe_stem(patient.patient_id) + "_" if patient.patient_id else "")
        layout = "3x4" if len(pp.leads) == 12 else "12x1"
        if self.task.is_binary:
            expl = explain_sample(self.model, sample, method="gradcam", cxr_layer=cxr_layer)
            head = None
            if result is not None:
                head = (f"P(AS) = {result.probability:.3f}  |  {result.decision} at {result.threshold:.3g}  |  "
                        f"{' + '.join(m.upper() if m == 'ecg' else 'X-ray' for m in result.modalities)}")
            paths: dict[str, str] = {}
            if expl.cxr is not None:
                paths["cxr"] = str(plot_cxr_explanation(expl.cxr, out / f"{prefix}cxr.png", title=head))
            if expl.ecg is not None:
                paths["ecg"] = str(plot_ecg_explanation(expl.ecg, out / f"{prefix}ecg.png", layout=layout,
                                                        title=head))
            return paths
        if target is not None:
            targets = [resolve_output_target(target, self.task)]
        else:
            if result is None:
                result = self.predict_prepared([patient])[0]
            values = [o["probability"] if o["probability"] is not None else o["value"] for o in result.outputs]
            targets = default_output_targets(self.task, values)
        paths = {}
        for chosen in targets:
            expl = explain_sample(self.model, sample, method="gradcam", cxr_layer=cxr_layer, output=chosen,
                                  task=self.task)
            head = f"target: {chosen.describe()}"
            if result is not None:
                o = result.outputs[chosen.index]
                value = (f"P = {o['probability']:.3f}" if o["probability"] is not None
                         else f"{o['value']:.4g}{(' ' + o['unit']) if o.get('unit') else ''}")
                head += (f"  |  {value}  |  "
                         f"{' + '.join(m.upper() if m == 'ecg' else 'X-ray' for m in result.modalities)}")
            name = _safe_stem(chosen.name)
            if expl.cxr is not None:
                paths[f"cxr:{chosen.name}"] = str(plot_cxr_explanation(expl.cxr, out / f"{prefix}{name}_cxr.png",
                                                                       title=head))
            if expl.ecg is not None:
                paths[f"ecg:{chosen.name}"] = str(plot_ecg_explanation(
                    expl.ecg, out / f"{prefix}{name}_ecg.png", layout=layout, title=head))
        return paths


def _safe_stem(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_") or "patient"


def load(bundle: str | os.PathLike, *, runtime: str | None = None, threads: int | None = None,
         precision: str | None = None) -> Screener:
    """Load a model bundle written by :func:`cardiofusion.bundle.export_bundle`.

    Args:
        bundle: the bundle folder.
        runtime: ``torch`` or ``onnx`` (ONNX Runtime on ``model.onnx``; exported on the fly when the bundle
            has none); default: the bundle's stored choice (``torch`` unless exported otherwise; ``onnx``
            for int8).
        threads: ONNX Runtime intra-op threads.
        precision: ``fp32``, ``bf16`` or ``int8`` (default: the bundle's stored choice, ``fp32`` unless
            exported otherwise); only a precision the bundle offers, i.e. that passed the export-time check
            against fp32 (:mod:`cardiofusion.bundle.precision`).

    Raises:
        BundleError: missing, corrupt, truncated, altered (hash mismatch) or incompatible bundle.
        ConfigError: a runtime or precision this bundle or machine cannot use (a refused precision with the
            numbers of its check).
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    from .precision import INT8_GRAPH, resolve

    root = Path(bundle)
    manifest = read_manifest(root)
    precision, runtime = resolve(manifest, precision, runtime)
    verify_files(root, manifest)
    model = _build(root, manifest)
    runner = None
    if runtime == "onnx":
        from .onnx import OnnxRunner, export_onnx

        if precision == "int8":
            runner = OnnxRunner(str(root / INT8_GRAPH), threads=threads)
        elif ONNX_GRAPH in manifest["files"]:
            runner = OnnxRunner(str(root / ONNX_GRAPH), threads=threads)
        else:
            pp = manifest["preprocess"]
            from ..transforms.preprocess import PreprocessConfig

            pc = PreprocessConfig.from_dict(pp)
            graph, _ = export_onnx(model, leads=len(pc.leads), window=pc.window_samples, image_size=pc.image_size)
            runner = OnnxRunner(graph, threads=threads)
    try:
        return Screener(root, manifest, model, runtime=runtime, onnx_runner=runner, precision=precision)
    except (KeyError, TypeError) as e:
        raise BundleError(root, f"incomplete manifest ({type(e).__name__}: {e})") from None


def _build(root: Path, manifest: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model from the manifest's JSON config and load the safetensors weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models import ModelConfig, build_model

    try:
        config = ModelConfig.from_dict(manifest["model"]["config"])
    except (KeyError, TypeError) as e:
        raise BundleError(root, f"incomplete manifest: no model config ({e})") from None
    except ConfigError as e:
        raise BundleError(root, f"incompatible bundle: {e}") from None
    config.cxr_pretrained = False  # the weights come from the bundle; never download or read other files
    try:
        model = build_model(config)
    except (ConfigError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise BundleError(root, f"incompatible bundle: cannot build the model {config.fusion} / "
                                f"{config.ecg_encoder} / {config.cxr_encoder} with this cardiofusion "
                                f"({type(e).__name__}: {e})") from None
    try:
        state = load_file(str(root / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise BundleError(root / WEIGHTS, f"corrupt weights ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise BundleError(root / WEIGHTS, f"incompatible weights for the model in the manifest ({first})") from None
    return model.eval()


__all__ = ["NEGATIVE", "NON_FINITE_REASON", "POSITIVE", "RUNTIMES", "Prediction", "PredictionError", "PreparedPatient",
           "Screener", "load"]
