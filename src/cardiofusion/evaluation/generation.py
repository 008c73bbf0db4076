"""Stage 4 of paper 003 judged: ECG -> X-ray generated images against the patient's real X-ray.

On a split (the test split), each record's first ECG window conditions the generator
(:class:`~cardiofusion.training.ecg_generate.GenerationModule`); the generated image is compared with the
patient's real X-ray of that record beside two baselines that use no ECG:

* ``mean``: the mean training X-ray (the best constant image under squared error);
* ``uncond``: an unconditional sample of the same generator (condition dropped, guidance 0) from the same
  noise, so the only difference to ``gen`` is the ECG.

Image quality is SSIM and PSNR (data range 1, torchmetrics; PSNR capped at :data:`PSNR_CAP` dB, the value
of identical images).  :func:`generation_summary` gives each mean with a patient-bootstrap CI and the paired
differences ``gen - mean`` and ``gen - uncond`` (the same resamples, so they are paired), each with its CI
and bootstrap p-value.

A frozen X-ray classifier (:class:`ImageClassifier`: any trained X-ray-only run of a binary task, e.g. the
recipe's AS model) scores the real, generated and unconditional images; the AUROC of its scores for
patients with the label (AS) against those without, with a patient-bootstrap CI, says whether the generated
images carry the disease: real images give the classifier's own AUROC, unconditional ones about 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .bootstrap import bootstrap_p_value, bootstrap_weights, percentile_summary
from .metrics import RankedScores

__all__ = ["IMAGE_SOURCES", "PSNR_CAP", "ImageClassifier", "generation_markdown", "generation_summary",
           "generation_table", "image_quality", "save_samples"]

#: PSNR of identical images (dB): the cap of every PSNR (MSE below 1e-10).
PSNR_CAP = 100.0
#: The images scored per record: generated, the two baselines, and (classifier only) the real one.
IMAGE_SOURCES: dict[str, str] = {"gen": "generated (ECG-conditioned)", "mean": "mean training X-ray",
                                 "uncond": "unconditional sample", "real": "real X-ray"}


def image_quality(pred: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image SSIM and PSNR (data range 1; PSNR capped at :data:`PSNR_CAP`) of ``pred`` against
    ``target``, both ``(B, 1, H, W)`` in [0, 1] (torchmetrics' implementations: 11 x 11 Gaussian window,
    sigma 1.5, K1 0.01, K2 0.03)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    if pred.shape != target.shape or pred.dim() != 4:
        raise ConfigError(f"image quality needs two (B, C, H, W) batches of one shape; got {tuple(pred.shape)} "
                          f"and {tuple(target.shape)}")
    pred, target = pred.float().clamp(0, 1), target.float().clamp(0, 1)
    ssim = structural_similarity_index_measure(pred, target, data_range=1.0, reduction="none")
    psnr = peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    psnr = torch.nan_to_num(psnr, posinf=PSNR_CAP).clamp(max=PSNR_CAP)
    return ssim.detach().cpu().numpy().reshape(-1), psnr.detach().cpu().numpy().reshape(-1)


class ImageClassifier:
    """A frozen X-ray-only model of a binary task scoring ``[0, 1]`` images of any size.

    Args:
        run: the run folder (or ``.ckpt``) of a trained X-ray-only model (``cxr`` fusion) of a binary task.

    ``classifier.labels(records)`` encodes its task's labels of a records table (for the loaders);
    ``classifier(images)`` resizes ``(B, 1, S, S)`` images in [0, 1] to the run's input size (bilinear),
    normalises them as its preprocessing does and returns the ranking scores (logits) ``(B,)``.
    """

    def __init__(self, run: str | os.PathLike):
        from ..training.inference import load_run

        loaded = load_run(run)
        if loaded.model.cxr_encoder is None or loaded.config.model.fusion != "cxr":
            raise ConfigError(f"{run}: the image classifier must be an X-ray-only model (fusion 'cxr'), got "
                              f"{loaded.config.model.fusion!r}")
        task = loaded.config.task_spec()
        if not task.is_binary:
            raise ConfigError(f"{run}: the image classifier must be of a binary task, got {task.kind}")
        self.task = task
        self.model = loaded.model.eval()
        self.preprocess = loaded.config.preprocess
        self.run = str(run)

    def labels(self, records: Any) -> np.ndarray:
        return np.asarray(self.task.encode_labels(records), dtype=np.float32).reshape(-1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        size = int(self.preprocess.image_size)
        x = images.float().clamp(0, 1)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - self.preprocess.image_mean) / self.preprocess.image_std
        out = self.model({"cxr": x, "has_cxr": torch.ones(x.shape[0], dtype=torch.bool)})
        return out.score.detach().float().cpu().numpy().reshape(-1)


def mean_training_image(module: Any, datamodule: Any) -> torch.Tensor:
    """The mean ``(1, S, S)`` of the training split's X-rays at the generator's size (no augmentation)."""
    total, n = None, 0
    for batch in datamodule.eval_dataloader("train"):
        index = batch["record_index"]
        first = _first_rows(index, int(batch["n_records"]))
        keep = batch["has_cxr"][first].bool() if "has_cxr" in batch else torch.ones(first.numel(), dtype=torch.bool)
        if not bool(keep.any()):
            continue
        imgs = module.images(batch["cxr"][first[keep]])
        total = imgs.sum(0) if total is None else total + imgs.sum(0)
        n += imgs.shape[0]
    if not n:
        raise ConfigError("no training X-rays to average for the mean-image baseline")
    return total / n


def _first_rows(index: torch.Tensor, n_records: int) -> torch.Tensor:
    """The first row of each record of an evaluation batch (its first ECG window)."""
    first = torch.full((n_records,), index.numel(), dtype=torch.long)
    return first.scatter_reduce(0, index, torch.arange(index.numel()), "amin")


@torch.no_grad()
def generation_table(module: Any, datamodule: Any, *, split: str = "test", guidance: float = 3.0, steps: int = 50,
                     seed: int = 0, max_records: int | None = None, classifier: ImageClassifier | None = None,
                     keep_images: int = 8) -> Any:
    """Per record of ``split`` with an ECG and an X-ray: SSIM / PSNR against the real X-ray of the generated
    image (``gen_ssim``, ``gen_psnr``), of the mean training X-ray (``mean_*``) and of the unconditional
    sample from the same noise (``uncond_*``); with a ``classifier``, its scores of the real, generated and
    unconditional images (``cls_real``, ``cls_gen``, ``cls_uncond``).  ``label`` is the loader's label.

    The condition of a record is its first ECG window's embedding; sampling noise is seeded per batch from
    ``seed``.  Returns a DataFrame (``record_id``, ``patient_id``, ``label``, the scores); ``table.attrs``
    holds the mean image and the first ``keep_images`` (real, generated, unconditional) for figures.
    """
    import pandas as pd

    module.eval()
    mean_image = mean_training_image(module, datamodule)
    rows: list[dict[str, Any]] = []
    shown: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    for batch in datamodule.eval_dataloader(split):
        first = _first_rows(batch["record_index"], int(batch["n_records"]))
        has = torch.ones(first.numel(), dtype=torch.bool)
        for key in ("has_ecg", "has_cxr"):
            if key in batch:
                has &= torch.as_tensor(batch[key])[first].bool()
        first = first[has]
        if max_records is not None:
            first = first[: max(int(max_records) - len(rows), 0)]
        if not first.numel():
            continue
        mask = batch.get("ecg_mask")
        cond = module.condition(batch["ecg"][first], None if mask is None else mask[first])
        real = module.images(batch["cxr"][first])
        batch_seed = int(seed) * 1_000_003 + len(rows)
        images = {"gen": module.diffusion.generate(cond, guidance=guidance, steps=steps, seed=batch_seed),
                  "uncond": module.diffusion.generate(cond, guidance=0.0, steps=steps, seed=batch_seed),
                  "mean": mean_image.expand_as(real)}
        scores = {name: image_quality(img, real) for name, img in images.items()}
        cls = ({name: classifier(img) for name, img in (("real", real), ("gen", images["gen"]),
                                                         ("uncond", images["uncond"]))}
               if classifier is not None else {})
        label = batch.get("label")
        for j, i in enumerate(first.tolist()):
            row: dict[str, Any] = {"record_id": batch["record_id"][i], "patient_id": batch["patient_id"][i],
                                   "label": float(label[i]) if label is not None and label.dim() == 1 else np.nan}
            for name, (ssim, psnr) in scores.items():
                row[f"{name}_ssim"], row[f"{name}_psnr"] = float(ssim[j]), float(psnr[j])
            for name, values in cls.items():
                row[f"cls_{name}"] = float(values[j])
            rows.append(row)
            if len(shown) < keep_images:
                shown.append((str(row["record_id"]), real[j, 0].numpy(), images["gen"][j, 0].numpy(),
                              images["uncond"][j, 0].numpy()))
        if max_records is not None and len(rows) >= max_records:
            break
    table = pd.DataFrame(rows)
    table.attrs.update(samples=shown, mean_image=mean_image[0].numpy())
    return table


def _interval(iv: Any) -> dict[str, Any]:
    return {"value": iv.value, "ci_low": iv.ci_low, "ci_high": iv.ci_high}


def generation_summary(table: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Means of :func:`generation_table`'s SSIM / PSNR with patient-bootstrap CIs, the paired differences of
    the generated images to each baseline (CI, bootstrap p-value), and the classifier AUROCs (label 1 vs 0)
    of the real, generated and unconditional images with CIs and ``gen - uncond``, ``real - gen`` differences.

    Keys: ``{source}_{metric}`` (``source`` in gen / mean / uncond, ``metric`` ssim / psnr),
    ``gen_minus_{base}_{metric}``, ``auroc_{source}`` (source in real / gen / uncond),
    ``auroc_gen_minus_uncond``, ``auroc_real_minus_gen``; each ``{"value", "ci_low", "ci_high"}`` (+
    ``p_value`` for differences); ``records``, ``patients``, ``positives``.
    """
    if not len(table):
        raise ConfigError("no records to summarise: the generation table is empty")
    w = bootstrap_weights(table["patient_id"].to_numpy(), n_boot, seed)  # (B, n)
    summary: dict[str, Any] = {"records": int(len(table)), "patients": int(table["patient_id"].nunique()),
                               "n_boot": int(n_boot)}

    def mean_boot(values: np.ndarray) -> np.ndarray:
        return (w @ values) / w.sum(1)

    def difference(point: float, boot: np.ndarray) -> dict[str, Any]:
        iv = percentile_summary(np.array([point]), boot[:, None], level)[0]
        return {**_interval(iv), "p_value": bootstrap_p_value(boot)}

    for metric in ("ssim", "psnr"):
        for name in ("gen", "mean", "uncond"):
            values = table[f"{name}_{metric}"].to_numpy(dtype=float)
            summary[f"{name}_{metric}"] = _interval(percentile_summary(np.array([values.mean()]),
                                                                       mean_boot(values)[:, None], level)[0])
        for base in ("mean", "uncond"):
            diff = table[f"gen_{metric}"].to_numpy(dtype=float) - table[f"{base}_{metric}"].to_numpy(dtype=float)
            summary[f"gen_minus_{base}_{metric}"] = difference(float(diff.mean()), mean_boot(diff))
    if "cls_gen" in table and "label" in table:
        known = np.isfinite(table["label"].to_numpy(dtype=float))
        y = table["label"].to_numpy(dtype=float)[known]
        summary["positives"] = int(y.sum())
        if 0 < y.sum() < y.size:
            points, boots = {}, {}
            for name in ("real", "gen", "uncond"):
                ranked = RankedScores(y, table[f"cls_{name}"].to_numpy(dtype=float)[known])
                points[name] = float(ranked.auroc_auprc(np.ones((1, y.size)))[0][0])
                boots[name] = ranked.auroc_auprc(w[:, known])[0]
                summary[f"auroc_{name}"] = _interval(percentile_summary(np.array([points[name]]),
                                                                        boots[name][:, None], level)[0])
            for a, b in (("gen", "uncond"), ("real", "gen")):
                summary[f"auroc_{a}_minus_{b}"] = difference(points[a] - points[b], boots[a] - boots[b])
    return summary


def generation_markdown(summary: Mapping[str, Any], digits: int = 3) -> str:
    """The stage-4 tables of a :func:`generation_summary`: image quality per source with the paired
    differences, and the classifier AUROCs."""
    def ci(d: Mapping[str, Any]) -> str:
        text = f"{d['value']:.{digits}f} ({d['ci_low']:.{digits}f} to {d['ci_high']:.{digits}f})"
        return text + (f", p = {d['p_value']:.3g}" if "p_value" in d else "")

    lines = ["| image vs the real X-ray | SSIM | PSNR (dB) |", "|---|---|---|"]
    for name in ("gen", "mean", "uncond"):
        lines.append(f"| {IMAGE_SOURCES[name]} | {ci(summary[f'{name}_ssim'])} | {ci(summary[f'{name}_psnr'])} |")
    for base in ("mean", "uncond"):
        lines.append(f"| generated - {IMAGE_SOURCES[base]} (paired) | {ci(summary[f'gen_minus_{base}_ssim'])} | "
                     f"{ci(summary[f'gen_minus_{base}_psnr'])} |")
    if "auroc_gen" in summary:
        lines += ["", "| images scored by the frozen X-ray classifier | AUROC, label vs no label |", "|---|---|"]
        for name in ("real", "gen", "uncond"):
            lines.append(f"| {IMAGE_SOURCES[name]} | {ci(summary[f'auroc_{name}'])} |")
        lines.append(f"| generated - unconditional (paired) | {ci(summary['auroc_gen_minus_uncond'])} |")
        lines.append(f"| real - generated (paired) | {ci(summary['auroc_real_minus_gen'])} |")
    return "\n".join(lines)


def save_samples(table: Any, path: str | os.PathLike) -> bool:
    """A PNG of the first records of :func:`generation_table`: rows real | GENERATED | unconditional | mean
    training X-ray, every image labelled (the generated ones are synthetic, not the patient's).  False when
    the table kept no images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table.attrs.get("samples") or []
    if not shown:
        return False
    mean_image = table.attrs["mean_image"]
    fig, axes = plt.subplots(4, len(shown), figsize=(1.6 * len(shown), 6.6), squeeze=False)
    for j, (rid, real, gen, unc) in enumerate(shown):
        for i, (img, label) in enumerate(((real, "real X-ray"), (gen, "GENERATED"), (unc, "unconditional"),
                                          (mean_image, "mean train"))):
            ax = axes[i][j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
        axes[0][j].set_title(str(rid)[-10:], fontsize=7)
    fig.suptitle("ECG -> X-ray: GENERATED images are synthetic, not the patient's radiograph", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
