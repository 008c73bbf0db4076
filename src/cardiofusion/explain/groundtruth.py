"""Checks of the heat maps where the truth is known: the synthetic export's planted AS signs.

The generator (:mod:`cardiofusion.synth`) writes where it put every sign (``EXPORT/ground_truth/``):

* X-ray: ``cxr_exams.csv`` ``calc_bboxes`` (JSON ``[[x0, y0, x1, y1], ...]``, columns / rows of the
  exported ``cxr_size`` square image, end exclusive) with ``calc_kinds`` (``valve``, ``knob``), and the
  heart box ``heart_x0..heart_y1``.  AS adds valve calcifications and enlarges the heart.
* ECG: ``ecg_exams.csv`` ``lvh_leads`` (the leads whose voltage AS raises), ``strain_leads``.

Boxes are mapped to the model's input grid as the cache and the model resize the image: the cache
centre-crops the largest square (a no-op for the square synthetic images) and resizes it to the cache
side, the model resizes that to ``image_size``, so a box edge ``x`` lands at ``x * image_size / side``.

* **Pointing game** (Zhang et al. 2016): a hit when the heat map's maximum lies within ``tolerance`` px
  of a planted calcification box (15 px at 224, scaled with the image size).  Chance = the fraction of
  the image within that tolerance of a box (where a uniformly random point would hit).  Also the
  share of heat-map mass inside the boxes vs their area share ("mass" variant), and a location-prior
  baseline (:func:`shuffled_hits`): each map scored against the boxes of the *other* images, which a
  map that always peaks where the sign usually sits would also win.
* **Lead ranking**: rank (1 = most important) of the planted LVH leads in the lead importance;
  chance = ``(L + 1) / 2``; and the share of the top-3 leads that are LVH leads (chance: LVH leads / L).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from ..errors import ConfigError, ReadError
from ..evaluation.bootstrap import bootstrap_mean_ci

__all__ = [
    "GroundTruth",
    "box_mask",
    "calc_boxes",
    "evaluate_on_ground_truth",
    "lead_ranks",
    "load_ground_truth",
    "map_box",
    "pointing_game",
    "shuffled_hits",
    "sign_removal",
]

#: The standard pointing-game tolerance: 15 px on a 224 px image.
TOLERANCE_AT_224 = 15.0


@dataclass
class GroundTruth:
    """The synthetic export's planted signs.

    Attributes:
        cxr: ``cxr_exams.csv`` indexed by ``exam_id``; ``ecg``: ``ecg_exams.csv`` indexed by ``exam_id``.
        cxr_size: side of the exported X-ray images in pixels.
    """

    cxr: pd.DataFrame
    ecg: pd.DataFrame
    cxr_size: int


def load_ground_truth(path: str | os.PathLike, cxr_size: int | None = None) -> GroundTruth:
    """Read ``EXPORT/ground_truth`` (or the export folder itself); ``cxr_size`` from ``export.json``."""
    path = Path(path)
    if (path / "ground_truth").is_dir():
        path = path / "ground_truth"
    files = {name: path / f"{name}_exams.csv" for name in ("cxr", "ecg")}
    for f in files.values():
        if not f.is_file():
            raise ReadError(f, "no such ground-truth table (expected a synthetic export's ground_truth/ folder)")
    try:
        cxr = pd.read_csv(files["cxr"], dtype={"exam_id": str, "patient_id": str}).set_index("exam_id")
        ecg = pd.read_csv(files["ecg"], dtype={"exam_id": str, "patient_id": str}).set_index("exam_id")
    except (OSError, ValueError, KeyError) as e:
        raise ReadError(path, f"unreadable ground truth ({type(e).__name__}: {e})") from None
    if cxr_size is None:
        meta = path.parent / "export.json"
        try:
            cxr_size = int(json.loads(meta.read_text())["config"]["cxr_size"])
        except (OSError, ValueError, KeyError) as e:
            raise ReadError(meta, f"cannot read the X-ray size of the export ({type(e).__name__}); "
                                  "pass cxr_size") from None
    return GroundTruth(cxr=cxr, ecg=ecg, cxr_size=int(cxr_size))


def map_box(box: Sequence[float], source_shape: tuple[int, int], image_size: int) -> list[float]:
    """A box ``[x0, y0, x1, y1]`` of the exported image -> the model's input grid (``crop`` resize)."""
    h, w = source_shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    s = image_size / side
    x0, y0, x1, y1 = (float(v) for v in box)
    return [(x0 - left) * s, (y0 - top) * s, (x1 - left) * s, (y1 - top) * s]


def calc_boxes(gt: GroundTruth, exam_id: str, image_size: int,
               kinds: Sequence[str] = ("valve", "knob")) -> list[list[float]]:
    """The planted calcification boxes of X-ray ``exam_id`` of ``kinds``, on the model's input grid."""
    g = gt.cxr.loc[exam_id]
    boxes = json.loads(g["calc_bboxes"]) if isinstance(g["calc_bboxes"], str) else []
    kind = str(g["calc_kinds"]).split(",") if isinstance(g["calc_kinds"], str) else []
    return [map_box(b, (gt.cxr_size, gt.cxr_size), image_size) for b, k in zip(boxes, kind) if k in kinds]


def box_mask(boxes: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Bool mask of the pixels whose centre lies inside any box (continuous edge coordinates)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    mask = np.zeros(shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        mask |= (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    if not mask.any():  # a box thinner than a pixel still covers the pixel holding its centre
        for x0, y0, x1, y1 in boxes:
            r, c = int(np.clip((y0 + y1) / 2, 0, h - 1)), int(np.clip((x0 + x1) / 2, 0, w - 1))
            mask[r, c] = True
    return mask


def _near(boxes: Sequence[Sequence[float]], shape: tuple[int, int], tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """``(inside, near)`` masks: pixels inside a box, and within ``tolerance`` px of one."""
    inside = box_mask(boxes, shape)
    return inside, ndimage.distance_transform_edt(~inside) <= tolerance


def _peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """``(row, col)`` of the map's maximum; None for an all-zero map (which never hits)."""
    heat = np.asarray(heatmap, dtype=np.float64)
    if not heat.sum() > 0:
        return None
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return int(r), int(c)


def pointing_game(heatmap: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float) -> dict[str, float]:
    """One image: is the heat map's maximum within ``tolerance`` px of a box?

    Returns ``hit`` (0/1; an all-zero map is a miss), ``chance`` (area share of the tolerance region),
    ``mass`` (share of the heat map inside the boxes) and ``area`` (the boxes' area share).
    """
    heat = np.asarray(heatmap, dtype=np.float64)
    inside, near = _near(boxes, heat.shape, tolerance)
    total = heat.sum()
    peak = _peak(heat)
    hit = float(near[peak]) if peak is not None else 0.0
    return {"hit": hit, "chance": float(near.mean()), "mass": float(heat[inside].sum() / total) if total > 0 else 0.0,
            "area": float(inside.mean())}


def shuffled_hits(heatmaps: Sequence[np.ndarray], box_lists: Sequence[Sequence[Sequence[float]]],
                  tolerance: float, images: Sequence[Any] | None = None) -> np.ndarray:
    """Location-prior baseline of the pointing game: for each map, its hit rate against the boxes of
    every *other* image (``(n,)``; NaN when there is no other image).

    The area chance assumes the peak falls anywhere; planted signs sit at typical places (the valve
    over the spine, the aortic knob), so a map that always peaks at the usual place of a sign would
    beat area chance without looking at the image.  Beating this baseline means the map follows the
    sign in *this* image.  ``images`` (one id per map, e.g. the X-ray exam) marks maps of the same
    image, which are not compared with each other.
    """
    n = len(heatmaps)
    ids = np.arange(n) if images is None else np.asarray([str(i) for i in images])
    peaks = [_peak(h) for h in heatmaps]
    nears = [_near(b, np.asarray(h).shape, tolerance)[1] for h, b in zip(heatmaps, box_lists)]
    out = np.full(n, np.nan)
    for i, pk in enumerate(peaks):
        others = [j for j in range(n) if ids[j] != ids[i] and nears[j].shape == nears[i].shape]
        if others:
            out[i] = 0.0 if pk is None else np.mean([float(nears[j][pk]) for j in others])
    return out


def lead_ranks(importance: np.ndarray, leads: Sequence[str], planted: Sequence[str],
               mask: np.ndarray | None = None, top_k: int = 3) -> dict[str, float]:
    """Mean rank (1 = most important) of the planted leads and their share of the top ``top_k``.

    Only present leads are ranked (``mask``); chance mean rank = ``(n_present + 1) / 2``.
    """
    leads = list(leads)
    present = np.ones(len(leads), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    idx = [i for i in range(len(leads)) if present[i]]
    imp = np.asarray(importance, dtype=np.float64)[idx]
    names = [leads[i] for i in idx]
    order = np.argsort(-imp, kind="stable")
    rank = np.empty(len(idx), dtype=np.float64)
    rank[order] = np.arange(1, len(idx) + 1)
    hit = np.array([n in set(planted) for n in names])
    if not hit.any():
        raise ConfigError(f"none of the planted leads {tuple(planted)} is among the model's present leads")
    top = order[:top_k]
    return {"mean_rank": float(rank[hit].mean()), "chance_rank": (len(idx) + 1) / 2,
            "top_share": float(hit[top].mean()), "chance_top_share": float(hit.mean())}


def _ci(values: Any, n_boot: int, seed: int, groups: Any = None) -> dict[str, Any]:
    m, lo, hi = bootstrap_mean_ci(np.asarray(values, dtype=np.float64), n_boot, seed, groups=groups)
    return {"mean": float(m), "ci95": [float(lo), float(hi)]}


def _per_image(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-record results -> one row per image (``unit``): records that share an X-ray (one X-ray linked
    to several ECGs) or an ECG are one observation, averaged; ``patient`` kept for the cluster bootstrap."""
    t = pd.DataFrame(rows)
    num = [c for c in t.columns if c not in ("unit", "patient")]
    return t.groupby("unit", sort=True).agg({**{c: "mean" for c in num}, "patient": "first"}).reset_index()


def _game_summary(rows: list[dict[str, Any]], n_boot: int, seed: int, *, mass_key: str) -> dict[str, Any]:
    t = _per_image(rows)
    g = t["patient"].to_numpy()
    res = {"n": len(t), "n_records": len(rows), "n_patients": int(t["patient"].nunique()),
           "hit_rate": _ci(t["hit"], n_boot, seed, g), "chance": _ci(t["chance"], n_boot, seed, g),
           "hit_minus_chance": _ci(t["hit"] - t["chance"], n_boot, seed, g),
           mass_key: _ci(t["mass"], n_boot, seed, g),
           "box_area": _ci(t["area"], n_boot, seed, g)}
    if t["shuffled"].notna().all():
        res["shuffled_hit_rate"] = _ci(t["shuffled"], n_boot, seed, g)
        res["hit_minus_shuffled"] = _ci(t["hit"] - t["shuffled"], n_boot, seed, g)
    res["ratio_to_chance"] = res["hit_rate"]["mean"] / max(res["chance"]["mean"], 1e-12)
    return res


def evaluate_on_ground_truth(maps: Sequence[dict[str, Any]], ground_truth: str | os.PathLike | GroundTruth,
                             preprocess: Any, *, kinds: Sequence[str] = ("valve", "knob"), top_k: int = 3,
                             n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pointing game and lead ranking of explained records (from ``maps_for_ground_truth``).

    X-ray: AS records whose X-ray has at least one visible calcification of ``kinds``; ECG: AS
    records (their LVH leads carry the planted voltage sign), with non-AS records as a contrast.
    The unit is the image (``n``: distinct X-ray / ECG exams; records sharing one are averaged) and the
    CIs come from a cluster bootstrap over patients.
    """
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    size = int(preprocess.image_size)
    tol = TOLERANCE_AT_224 * size / 224.0
    out: dict[str, Any] = {"cxr_size": gt.cxr_size, "image_size": size, "tolerance_px": tol,
                           "calc_kinds": list(kinds)}
    games: dict[str, list] = {"pointing_game": [], "heart_pointing_game": []}
    for m in maps:
        heat, exam = m.get("cxr_heatmap"), m.get("cxr_exam_id")
        if heat is None or exam is None or exam not in gt.cxr.index or m["label"] != 1:
            continue
        g = gt.cxr.loc[exam]
        boxes = calc_boxes(gt, exam, size, kinds)
        heart = map_box([g["heart_x0"], g["heart_y0"], g["heart_x1"], g["heart_y1"]], (gt.cxr_size, gt.cxr_size), size)
        patient = str(m.get("patient_id", exam))
        games["heart_pointing_game"].append((heat, [heart], str(exam), patient))
        if boxes:
            games["pointing_game"].append((heat, boxes, str(exam), patient))
    for key, items in games.items():
        if not items:
            continue
        shuffled = shuffled_hits([h for h, *_ in items], [b for _, b, *_ in items], tol, [e for _, _, e, _ in items])
        rows = [{**pointing_game(h, b, tol), "shuffled": sh, "unit": e, "patient": pt}
                for (h, b, e, pt), sh in zip(items, shuffled)]
        out[key] = _game_summary(rows, n_boot, seed, mass_key="mass_in_boxes" if key == "pointing_game" else "mass_in_box")
    for group, want in (("lead_ranking", 1), ("lead_ranking_non_as", 0)):
        rows, imps, lead_names = [], [], None
        for m in maps:
            imp, exam = m.get("lead_importance"), m.get("ecg_exam_id")
            if imp is None or exam is None or exam not in gt.ecg.index or m["label"] != want:
                continue
            planted = str(gt.ecg.loc[exam, "lvh_leads"]).split(",")
            rows.append({**lead_ranks(imp, m["leads"], planted, m.get("lead_mask"), top_k=top_k),
                         "unit": str(exam), "patient": str(m.get("patient_id", exam))})
            imps.append(np.asarray(imp, dtype=np.float64))
            lead_names = list(m["leads"])
        if rows:
            t = _per_image(rows)
            pg = t["patient"].to_numpy()
            out[group] = {"n": len(t), "n_records": len(rows), "n_patients": int(t["patient"].nunique()),
                          "planted": "lvh_leads", "mean_rank": _ci(t["mean_rank"], n_boot, seed, pg),
                          "chance_rank": float(t["chance_rank"].mean()),
                          f"top{top_k}_share": _ci(t["top_share"], n_boot, seed, pg),
                          f"chance_top{top_k}_share": float(t["chance_top_share"].mean()),
                          "mean_importance_by_lead": {lead: round(float(v), 5) for lead, v in
                                                      zip(lead_names, np.mean(imps, axis=0))}}
    if len(out) == 4:
        raise ConfigError("no explained AS record matched the ground truth (is it the export this cohort was "
                          "built from?)")
    return out


def _inpaint(image: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Fill ``mask`` pixels from their surroundings: normalised Gaussian convolution of the unmasked
    pixels (the masked ones never bleed into the fill)."""
    keep = (~mask).astype(np.float64)
    num = ndimage.gaussian_filter(image * keep, sigma, mode="nearest")
    den = ndimage.gaussian_filter(keep, sigma, mode="nearest")
    fill = np.where(den > 1e-6, num / np.maximum(den, 1e-6), float(image[~mask].mean() if (~mask).any() else 0.0))
    return np.where(mask, fill, image)


def sign_removal(model: Any, samples: Sequence[Any], ground_truth: str | os.PathLike | GroundTruth, *,
                 kinds: Sequence[str] = ("valve", "knob"), target: str = "auto", n_random: int = 8,
                 shift_px: tuple[float, float] = (16.0, 40.0), margin_px: float = 2.0, n_boot: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """Does the model use the planted calcifications?  The premise of the pointing game, tested directly.

    For every AS X-ray with a visible planted calcification: the explained X-ray score of the image as is,
    with the calcification boxes (grown by ``margin_px``, at 224 scale) inpainted from their surroundings,
    and -- the control -- with the same boxes moved by a random ``shift_px`` (at 224 scale) and inpainted
    there, ``n_random`` times (the same area of nearby anatomy removed).  Reported: mean score drop for the
    planted boxes, for the moved boxes, their paired difference and the share of images where removing
    the planted spots lowers the score more than the average control; one row per X-ray exam (the first
    record of an X-ray linked to several ECGs), CIs by a bootstrap over patients.
    """
    import torch

    from .attribution import RecordScorer

    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    rng = np.random.default_rng(seed)
    rows, seen = [], set()
    for sample in samples:
        if sample.cxr is None or sample.label != 1 or sample.cxr_exam_id not in gt.cxr.index:
            continue
        if sample.cxr_exam_id in seen:  # one X-ray linked to several ECGs: one image
            continue
        seen.add(sample.cxr_exam_id)
        image = sample.cxr[0].detach().cpu().numpy().astype(np.float64)  # (H, W) normalised model input
        size = image.shape[-1]
        scale = size / 224.0
        m = margin_px * scale
        boxes = calc_boxes(gt, sample.cxr_exam_id, size, kinds)
        if not boxes:
            continue
        grown = [[x0 - m, y0 - m, x1 + m, y1 + m] for x0, y0, x1, y1 in boxes]
        sigma = 3.0 * scale
        versions = [image, _inpaint(image, box_mask(grown, image.shape), sigma)]
        for _ in range(n_random):
            r = rng.uniform(*shift_px) * scale
            a = rng.uniform(0, 2 * np.pi)
            dx, dy = r * np.cos(a), r * np.sin(a)
            moved = [[x0 + dx, y0 + dy, x1 + dx, y1 + dy] for x0, y0, x1, y1 in grown]
            versions.append(_inpaint(image, box_mask(moved, image.shape), sigma))
        scorer = RecordScorer(model, sample)
        batch = torch.as_tensor(np.stack(versions)[:, None], dtype=torch.float32, device=scorer.device)
        with torch.no_grad():
            s = scorer.cxr_scores(batch, target).cpu().numpy().astype(np.float64)
        drop, drop_random = s[0] - s[1], float(np.mean(s[0] - s[2:]))
        rows.append({"record_id": sample.record_id, "patient": str(sample.patient_id), "score": s[0], "drop": drop,
                     "drop_random": drop_random, "wins": float(drop > drop_random)})
    if not rows:
        raise ConfigError("no AS X-ray with a visible planted calcification among the samples")
    t = pd.DataFrame(rows)
    g = t["patient"].to_numpy()
    return {"n": len(t), "n_patients": int(t["patient"].nunique()), "kinds": list(kinds), "target": target,
            "n_random": n_random, "shift_px_at_224": list(shift_px), "margin_px_at_224": margin_px,
            "score": _ci(t["score"], n_boot, seed, g), "drop_planted": _ci(t["drop"], n_boot, seed, g),
            "drop_moved": _ci(t["drop_random"], n_boot, seed, g),
            "planted_minus_moved": _ci(t["drop"] - t["drop_random"], n_boot, seed, g),
            "share_planted_wins": _ci(t["wins"], n_boot, seed, g)}
