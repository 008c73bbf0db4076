"""Fast synthetic frontal chest radiographs and their DICOM files.

The phantom is built in an "attenuation" image (bright = dense): soft-tissue body, two air-filled
lungs with vascular texture, mediastinum and spine, posterior ribs, clavicles, diaphragm domes, a heart
silhouette whose width is ``CTR x`` the inner thoracic width, the aortic knob, calcification spots
(aortic valve region, aortic knob; fainter coronary specks near the heart border, drawn from their own
random stream) and a pacemaker with its lead.  A random rotation / zoom / shift,
detector blur, exposure (gamma, contrast), quantum noise and a 12-bit mapping follow.  Bounding boxes
of the heart, every calcification and the pacemaker are returned in pixel coordinates of the stored
image (``x0, y0, x1, y1``: columns, rows, inclusive-exclusive).  A few ms per 256 px image.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

_MAX12 = 4095


def _inside(d: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``d < 0`` with an edge ``width`` wide (no overflow)."""
    return 0.5 * (1.0 - np.tanh(d / width))


def _smooth_mask(inside: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(inside.astype(np.float32), sigma)


def _add_spot(A: np.ndarray, qr: float, qc: float, r: float, amp: float) -> list[int] | None:
    """Add a Gaussian spot (radius ``r`` px, amplitude ``amp``) centred at row ``qr``, column ``qc`` of the
    attenuation map ``A`` in place; returns its box ``[x0, y0, x1, y1]`` (2.2 r around the centre, clipped), or
    None when the spot lies outside the image."""
    S = A.shape[0]
    h = int(np.ceil(3 * r))
    r0, r1 = max(int(qr) - h, 0), min(int(qr) + h + 2, S)
    c0, c1 = max(int(qc) - h, 0), min(int(qc) + h + 2, S)
    if r0 >= r1 or c0 >= c1:
        return None
    py_, px_ = np.mgrid[r0:r1, c0:c1]
    A[r0:r1, c0:c1] += amp * np.exp(-0.5 * (((py_ - qr) / r) ** 2 + ((px_ - qc) / r) ** 2))
    b = [qc - 2.2 * r, qr - 2.2 * r, qc + 2.2 * r, qr + 2.2 * r]
    return [int(np.clip(np.floor(b[0]), 0, S)), int(np.clip(np.floor(b[1]), 0, S)),
            int(np.clip(np.ceil(b[2]), 0, S)), int(np.clip(np.ceil(b[3]), 0, S))]


def render_cxr(spec: dict[str, Any], rng: np.random.Generator, size: int = 256,
               coronary_rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One radiograph: ``(size, size)`` uint16 12-bit MONOCHROME2 values and its ground truth.

    ``spec`` keys: ``ctr``, ``n_valve_calc``, ``n_knob_calc``, ``pacemaker``, ``habitus``, ``female``,
    ``view_position``.  The ground truth holds the geometry and exposure actually drawn.  Anatomy is
    drawn at half resolution and upsampled by the positioning transform; calcifications, detector blur
    and noise are added at full resolution.
    """
    S = size
    B = S // 2  # anatomy grid
    yy, xx = np.mgrid[0:B, 0:B].astype(np.float32) / B  # (B, B) rows, cols in [0, 1)
    hab = float(spec.get("habitus", 0.0))
    ap = spec.get("view_position") == "AP"
    # thorax geometry (normalised coordinates)
    th = float(np.clip(0.355 + 0.012 * hab + rng.normal(0, 0.01), 0.31, 0.42))  # inner half-width
    cx = 0.5
    apex_y = 0.1 + rng.normal(0, 0.01)
    dia_y = float(np.clip(0.72 + rng.normal(0, 0.025) - (0.03 if ap else 0.0), 0.62, 0.8))
    body_half = min(0.49, th + 0.07 + 0.02 * max(hab, 0))
    dx = np.abs(xx - cx)

    # body: soft tissue with neck and rounded shoulders
    neck = 0.11
    half = np.where(yy < 0.05, neck, neck + (body_half - neck) * np.sqrt(np.clip((yy - 0.05) / 0.13, 0, 1)))
    body = _inside(dx - half, 3.0 / B)
    A = body * (0.3 + 0.06 * (1 - dx / 0.5))

    # diaphragm domes (patient right = image left is higher)
    dome_r = dia_y - 0.02 - 0.05 * np.cos(np.clip((xx - (cx - th / 2)) / th * np.pi, -np.pi / 2, np.pi / 2))
    dome_l = dia_y + 0.01 - 0.045 * np.cos(np.clip((xx - (cx + th / 2)) / th * np.pi, -np.pi / 2, np.pi / 2))
    dome = np.where(xx < cx, dome_r, dome_l)

    # lungs
    lung_inner = 0.06
    rx = (th - lung_inner) / 2
    ry = (dia_y - apex_y) * 0.62
    lcx = (lung_inner + th) / 2
    e = ((dx - lcx) / rx) ** 2
    e = e + 0.6 * e * e + ((yy - (apex_y + ry)) / ry) ** 2
    lungs = (e < 1.3) & (yy < dome) & (dx > lung_inner / 2)
    lung = _smooth_mask(lungs, 0.8)

    # heart: width = ctr * thoracic width, 1/3 right of midline, 2/3 left
    ctr = float(spec["ctr"])
    hw = ctr * 2 * th
    h_x0, h_x1 = cx - 0.33 * hw, cx + 0.67 * hw
    h_cy = dia_y - 0.09
    h_ry = 0.1 + 0.25 * hw
    h_cx = (h_x0 + h_x1) / 2
    heart_in = (((xx - h_cx) / (hw / 2)) ** 2 + ((yy - h_cy) / h_ry) ** 2 < 1) & (yy < dome + 0.03)
    heart = _smooth_mask(heart_in, 0.6)
    h_y0 = h_cy - h_ry
    h_y1 = float(min(h_cy + h_ry, dia_y + 0.03))

    # mediastinum, aortic knob, spine
    med = _inside(np.abs(xx - cx - 0.005) - 0.05, 2.4 / B) * (yy > 0.04) * (yy < dia_y)
    knob_c = (cx + 0.065 + rng.normal(0, 0.006), h_y0 - 0.05 + rng.normal(0, 0.008))
    knob_r = 0.034 + 0.004 * rng.normal()
    knob = _inside(np.hypot(xx - knob_c[0], yy - knob_c[1]) - knob_r, 1.6 / B)
    air = lung * (1 - heart) * (1 - knob) * (1 - 0.9 * med)

    # lung texture: vessels fanning from the hila
    tex = np.clip(ndimage.gaussian_filter(rng.standard_normal((B, B), dtype=np.float32), 1.2), 0, None)
    hilar = np.exp(-(((dx - 0.1) / 0.15) ** 2 + ((yy - 0.45) / 0.22) ** 2))
    A = A - 0.27 * air + air * (tex * (0.08 + 0.16 * hilar) + 0.06 * hilar)
    A = A + 0.1 * med + 0.06 * heart * (1 - lung)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * yy / 0.047 + rng.uniform(0, 6))
    A = A + (dx < 0.03) * (yy > 0.02) * (0.035 + 0.03 * vert)

    # posterior ribs: arcs rising medially, falling laterally
    phase = (yy + 0.45 * dx - 1.6 * dx * dx) / 0.075 + rng.uniform(0, 1)
    rib = np.clip(np.cos(2 * np.pi * phase) - 0.4, 0, None)
    rib_zone = body * (yy > apex_y - 0.02) * (yy < dome + 0.02) * (dx > 0.035) * (dx < th + 0.03)
    A = A + 0.09 * rib * rib_zone * (0.7 + 0.3 * lung)
    # clavicles
    for side in (-1, 1):
        x0, y0, x1, y1 = cx + side * 0.04, 0.17, cx + side * 0.33, 0.1 + rng.normal(0, 0.01)
        t = np.clip(((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / ((x1 - x0) ** 2 + (y1 - y0) ** 2), 0, 1)
        d = np.hypot(xx - (x0 + t * (x1 - x0)), yy - (y0 + t * (y1 - y0)))
        A = A + 0.09 * np.clip(1 - d / 0.017, 0, 1)

    # pacemaker: can below the left clavicle and a lead into the right ventricle
    pm_box = None
    if spec.get("pacemaker"):
        px, py = cx + 0.2 + rng.normal(0, 0.02), 0.19 + rng.normal(0, 0.015)
        pw, ph = 0.045, 0.035
        can = ((xx - px) / pw) ** 4 + ((yy - py) / ph) ** 4 < 1
        A = np.where(can, A + 0.9, A)
        tt = np.linspace(0, 1, 4 * B)
        ex, ey = cx - 0.02 + 0.2 * hw, h_cy + 0.6 * h_ry
        bx = (1 - tt) ** 2 * px + 2 * tt * (1 - tt) * (cx - 0.06) + tt ** 2 * ex
        by = (1 - tt) ** 2 * py + 2 * tt * (1 - tt) * 0.2 + tt ** 2 * ey
        wire = np.zeros((B, B), dtype=np.float32)
        wire[np.clip((by * B).astype(int), 0, B - 1), np.clip((bx * B).astype(int), 0, B - 1)] = 0.5
        A = A + wire
        pm_box = (px - pw, py - ph, px + pw, py + ph)

    # positioning: rotation, zoom, shift about the image centre; upsampled B -> S on the way
    rot = float(rng.normal(0, 2.5))
    zoom = float(rng.uniform(0.93, 1.06))
    shift = rng.normal(0, 0.02 * S, 2)  # (rows, cols) in output pixels
    theta = np.deg2rad(rot)
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) * zoom  # (row, col)
    c = np.array([S / 2, S / 2])
    # forward (anatomy px p, scaled to S): out = R @ (p * S/B - c) + c + shift
    M = np.linalg.inv(R) * (B / S)  # output px -> anatomy px
    offset = -M @ (c + shift) + c * (B / S)
    A = ndimage.affine_transform(A.astype(np.float32), M, offset=offset, output_shape=(S, S),
                                 order=1, mode="nearest")  # (S, S)

    def fwd(u: float, v: float) -> np.ndarray:
        return R @ (np.array([v, u]) * S - c) + c + shift  # [row, col]

    def fwd_box(x0: float, y0: float, x1: float, y1: float) -> list[int]:
        q = np.array([fwd(x0, y0), fwd(x1, y0), fwd(x0, y1), fwd(x1, y1)])  # (4, [row, col])
        r0, c0 = np.floor(q.min(0)).astype(int)
        r1, c1 = np.ceil(q.max(0)).astype(int)
        return [int(np.clip(c0, 0, S)), int(np.clip(r0, 0, S)), int(np.clip(c1, 0, S)), int(np.clip(r1, 0, S))]

    # calcifications: small dense spots, aortic valve region (inside the heart, over the spine) and knob
    spots = []
    valve_c = (cx + 0.02 + 0.08 * hw, h_y0 + 0.3 * h_ry)
    for _ in range(int(spec["n_valve_calc"])):
        if rng.random() < 0.85:  # each spot visible on most exams
            spots.append(("valve", valve_c[0] + rng.normal(0, 0.014), valve_c[1] + rng.normal(0, 0.014)))
    for _ in range(int(spec["n_knob_calc"])):
        if rng.random() < 0.85:
            a = rng.uniform(-np.pi * 0.9, 0.1)
            spots.append(("knob", knob_c[0] + knob_r * np.cos(a), knob_c[1] + knob_r * np.sin(a)))
    calc_boxes, calc_kinds = [], []
    for kind, sx, sy in spots:
        r = rng.uniform(1.0, 1.9) * zoom * S / 256  # px
        amp = rng.uniform(0.2, 0.35)
        box = _add_spot(A, *fwd(sx, sy), r, amp)
        if box is None:
            continue
        calc_boxes.append(box)
        calc_kinds.append(kind)

    # coronary calcification specks near the heart border (LAD / circumflex on the left, RCA on the right):
    # smaller and fainter than the valve spots, from their own stream so that everything else is unchanged
    cor_boxes = []
    n_cor = int(spec.get("n_coronary_calc", 0))
    if n_cor > 0 and coronary_rng is not None:
        crng = coronary_rng
        for _ in range(n_cor):
            if crng.random() >= 0.7:  # each speck visible on 70% of exams
                continue
            a = crng.uniform(np.deg2rad(-80), np.deg2rad(10)) if crng.random() < 0.7 \
                else crng.uniform(np.deg2rad(150), np.deg2rad(200))
            rr = crng.uniform(0.8, 0.95)
            sx, sy = h_cx + rr * (hw / 2) * np.cos(a), h_cy + rr * h_ry * np.sin(a)
            r = crng.uniform(0.7, 1.2) * zoom * S / 256
            amp = crng.uniform(0.1, 0.18)
            box = _add_spot(A, *fwd(sx, sy), r, amp)
            if box is not None:
                cor_boxes.append(box)

    # detector blur, exposure, noise, 12-bit mapping
    A = ndimage.gaussian_filter(A, float(rng.uniform(0.5, 0.9)))
    exposure = float(np.exp(rng.normal(0, 0.15)))
    gamma = float(rng.uniform(0.8, 1.25))
    contrast = float(rng.uniform(0.85, 1.15))
    b = np.clip((A * exposure - 0.02) / 0.75, 0, 1) ** gamma
    b = 0.5 + contrast * (b - 0.5)
    noise_sd = float(rng.uniform(0.006, 0.02) * (1 + 0.3 * max(hab, 0)))
    b = b + rng.standard_normal(b.shape, dtype=np.float32) * (noise_sd * np.sqrt(0.3 + b))
    lo = float(rng.uniform(150, 500))
    span = float(rng.uniform(2800, 3500))
    stored = np.clip(np.rint(lo + span * b), 0, _MAX12).astype(np.uint16)
    gt = {
        "ctr": ctr,
        "heart_bbox": fwd_box(h_x0, h_y0, h_x1, h_y1),
        "thorax_bbox": fwd_box(cx - th, apex_y, cx + th, dia_y),
        "calc_bboxes": calc_boxes,
        "calc_kinds": calc_kinds,
        "n_valve_calc_visible": calc_kinds.count("valve"),
        "n_knob_calc_visible": calc_kinds.count("knob"),
        "coronary_bboxes": cor_boxes,
        "n_coronary_calc_visible": len(cor_boxes),
        "pacemaker_bbox": fwd_box(*pm_box) if pm_box is not None else None,
        "rotation_deg": round(rot, 3), "zoom": round(zoom, 4),
        "shift_px": [round(float(shift[1]), 2), round(float(shift[0]), 2)],
        "exposure": round(exposure, 4), "gamma": round(gamma, 4), "contrast": round(contrast, 4),
        "noise_sd": round(noise_sd, 5),
        "window_center": round(lo + span * 0.5, 1), "window_width": round(span * 1.05, 1),
    }
    return stored, gt


def _dicom_dt(when: dt.datetime) -> tuple[str, str]:
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S")


def write_cxr_dicom(path: str | Path, stored: np.ndarray, *, monochrome1: bool, modality: str,
                    window_center: float, window_width: float, patient_id: str, patient_name: str,
                    sex: str, age: int, when: dt.datetime, exam_id: str, view_position: str,
                    uid_seed: str) -> None:
    """Write a 12-bit frontal chest X-ray as a DX/CR DICOM file (explicit VR little endian).

    ``stored`` holds MONOCHROME2 values; with ``monochrome1`` the stored values are inverted and the
    window centre mirrored, as a CR plate reader writes them.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    sop_uid = generate_uid(entropy_srcs=[uid_seed, "sop"])
    if monochrome1:
        stored = (_MAX12 - stored.astype(np.int32)).astype(np.uint16)
        window_center = _MAX12 - window_center
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    date, time = _dicom_dt(when)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.AccessionNumber = exam_id
    ds.Modality = modality
    ds.Manufacturer = "cardiofusion synthetic"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientSex = sex
    ds.PatientAge = f"{max(int(age), 0):03d}Y"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_seed, "series"])
    ds.StudyID = exam_id[-8:]
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.PixelSpacing = ds.ImagerPixelSpacing = [f"{0.14 * 2048 / stored.shape[0]:.4f}"] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = f"{window_center:.1f}"
    ds.WindowWidth = f"{window_width:.1f}"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def truncate_file(path: str | Path, keep_fraction: float = 0.5) -> None:
    """Cut a file to ``keep_fraction`` of its bytes (a transfer that broke off)."""
    p = Path(path)
    data = p.read_bytes()
    p.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
