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
from .faithfulness import bootstrap_mean_ci

__all__ = [
    "GroundTruth",
    "box_mask",
    "evaluate_on_ground_truth",
    "lead_ranks",
    "load_ground_truth",
    "map_box",
    "pointing_game",
    "shuffled_hits",
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
                  tolerance: float) -> np.ndarray:
    """Location-prior baseline of the pointing game: for each map, its hit rate against the boxes of
    every *other* image (``(n,)``; NaN when n < 2).

    The area chance assumes the peak falls anywhere; planted signs sit at typical places (the valve
    over the spine, the aortic knob), so a map that always peaks at the usual place of a sign would
    beat area chance without looking at the image.  Beating this baseline means the map follows the
    sign in *this* image.
    """
    n = len(heatmaps)
    if n < 2:
        return np.full(n, np.nan)
    peaks = [_peak(h) for h in heatmaps]
    nears = [_near(b, np.asarray(h).shape, tolerance)[1] for h, b in zip(heatmaps, box_lists)]
    out = np.zeros(n)
    for i, pk in enumerate(peaks):
        if pk is None:
            continue
        out[i] = np.mean([float(nears[j][pk]) for j in range(n) if j != i and nears[j].shape == nears[i].shape])
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


def _ci(values: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    m, lo, hi = bootstrap_mean_ci(np.asarray(values, dtype=np.float64), n_boot, seed)
    return {"mean": float(m), "ci95": [float(lo), float(hi)]}


def _shuffled(hits: np.ndarray, maps: list, tol: float, n_boot: int, seed: int) -> dict[str, Any]:
    if len(maps) < 2:
        return {}
    sh = shuffled_hits([h for h, _ in maps], [b for _, b in maps], tol)
    return {"shuffled_hit_rate": _ci(sh, n_boot, seed), "hit_minus_shuffled": _ci(hits - sh, n_boot, seed)}


def evaluate_on_ground_truth(maps: Sequence[dict[str, Any]], ground_truth: str | os.PathLike | GroundTruth,
                             preprocess: Any, *, kinds: Sequence[str] = ("valve", "knob"), top_k: int = 3,
                             n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pointing game and lead ranking of explained records (from ``maps_for_ground_truth``).

    X-ray: AS records whose X-ray has at least one visible calcification of ``kinds``; ECG: AS
    records (their LVH leads carry the planted voltage sign), with non-AS records as a contrast.
    """
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    size = int(preprocess.image_size)
    tol = TOLERANCE_AT_224 * size / 224.0
    out: dict[str, Any] = {"cxr_size": gt.cxr_size, "image_size": size, "tolerance_px": tol,
                           "calc_kinds": list(kinds)}
    pg_rows, heart_rows, pg_maps, heart_maps = [], [], [], []
    for m in maps:
        heat, exam = m.get("cxr_heatmap"), m.get("cxr_exam_id")
        if heat is None or exam is None or exam not in gt.cxr.index or m["label"] != 1:
            continue
        g = gt.cxr.loc[exam]
        boxes = json.loads(g["calc_bboxes"]) if isinstance(g["calc_bboxes"], str) else []
        kind = str(g["calc_kinds"]).split(",") if isinstance(g["calc_kinds"], str) else []
        boxes = [map_box(b, (gt.cxr_size, gt.cxr_size), size) for b, k in zip(boxes, kind) if k in kinds]
        heart = map_box([g["heart_x0"], g["heart_y0"], g["heart_x1"], g["heart_y1"]], (gt.cxr_size, gt.cxr_size), size)
        heart_rows.append(pointing_game(heat, [heart], tol))
        heart_maps.append((heat, [heart]))
        if boxes:
            pg_rows.append(pointing_game(heat, boxes, tol))
            pg_maps.append((heat, boxes))
    if pg_rows:
        t = pd.DataFrame(pg_rows)
        out["pointing_game"] = {
            "n": len(t), "hit_rate": _ci(t["hit"], n_boot, seed), "chance": _ci(t["chance"], n_boot, seed),
            "hit_minus_chance": _ci(t["hit"] - t["chance"], n_boot, seed),
            "mass_in_boxes": _ci(t["mass"], n_boot, seed), "box_area": _ci(t["area"], n_boot, seed)}
        out["pointing_game"]["ratio_to_chance"] = (out["pointing_game"]["hit_rate"]["mean"]
                                                   / max(out["pointing_game"]["chance"]["mean"], 1e-12))
        out["pointing_game"].update(_shuffled(t["hit"].to_numpy(), pg_maps, tol, n_boot, seed))
    if heart_rows:
        t = pd.DataFrame(heart_rows)
        out["heart_pointing_game"] = {"n": len(t), "hit_rate": _ci(t["hit"], n_boot, seed),
                                      "chance": _ci(t["chance"], n_boot, seed),
                                      "mass_in_box": _ci(t["mass"], n_boot, seed),
                                      "box_area": _ci(t["area"], n_boot, seed)}
        out["heart_pointing_game"].update(_shuffled(t["hit"].to_numpy(), heart_maps, tol, n_boot, seed))
    for group, want in (("lead_ranking", 1), ("lead_ranking_non_as", 0)):
        rows, imps, lead_names = [], [], None
        for m in maps:
            imp, exam = m.get("lead_importance"), m.get("ecg_exam_id")
            if imp is None or exam is None or exam not in gt.ecg.index or m["label"] != want:
                continue
            planted = str(gt.ecg.loc[exam, "lvh_leads"]).split(",")
            rows.append(lead_ranks(imp, m["leads"], planted, m.get("lead_mask"), top_k=top_k))
            imps.append(np.asarray(imp, dtype=np.float64))
            lead_names = list(m["leads"])
        if rows:
            t = pd.DataFrame(rows)
            out[group] = {"n": len(t), "planted": "lvh_leads", "mean_rank": _ci(t["mean_rank"], n_boot, seed),
                          "chance_rank": float(t["chance_rank"].mean()),
                          f"top{top_k}_share": _ci(t["top_share"], n_boot, seed),
                          f"chance_top{top_k}_share": float(t["chance_top_share"].mean()),
                          "mean_importance_by_lead": {lead: round(float(v), 5) for lead, v in
                                                      zip(lead_names, np.mean(imps, axis=0))}}
    if len(out) == 4:
        raise ConfigError("no explained AS record matched the ground truth (is it the export this cohort was "
                          "built from?)")
    return out
