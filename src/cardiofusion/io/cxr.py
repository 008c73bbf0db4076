"""Chest X-ray reader: DICOM, PNG and JPEG to an 8-bit greyscale :class:`~cardiofusion.records.CXRImage`.

DICOM pixels go through the display pipeline of the DICOM standard (PS3.3 C.11, PS3.4 N.2), in order:

1. **Modality transform** -- the Modality LUT Sequence (step ``"modality_lut"``) or Rescale
   Slope/Intercept when they change anything (step ``"rescale"``), via
   :func:`pydicom.pixels.apply_modality_lut`.
2. **VOI transform** -- the first VOI LUT Sequence item (step ``"voi_lut"``) or else the first
   Window Center/Width pair (step ``"window"``; ``"window_sigmoid"`` / ``"window_linear_exact"`` when
   VOI LUT Function says so), via :func:`pydicom.pixels.apply_voi_lut`.  ``read_cxr(path, window=(c, w))``
   replaces the file's own VOI with a LINEAR window on the modality values (step ``"window"``).
   The result is normalised to ``[0, 1]`` over the VOI's output range: the range pydicom's window maps
   to, or the smallest and largest entries of the VOI LUT (many LUTs declare 16 bits and use 12).
   **Without any VOI** the modality values are scaled min-max over the image itself: robust to a wrong
   Bits Stored, to data using a fraction of the range and to rescaled (signed, fractional) values; an
   8-bit image that already spans 0-255 comes out unchanged.
3. **MONOCHROME1 inversion** (step ``"invert_monochrome1"``): ``t -> 1 - t`` so that 0 is black and
   bones are white.  A MONOCHROME2 image with Presentation LUT Shape ``INVERSE`` is inverted too
   (step ``"presentation_lut_inverse"``).
4. **To 8 bits** (step ``"to_uint8"``, always last): ``floor(255 t + 0.5)`` clipped to 0-255.

Colour DICOMs (RGB, YBR_*, PALETTE COLOR) are decoded to RGB by pydicom and turned into grey with the
ITU-R BT.601 luma (``0.299 R + 0.587 G + 0.114 B``, what Pillow's ``convert("L")`` uses; step
``"rgb_to_grey"``), then scaled over the full Bits Stored range (no modality or VOI transform applies to
colour images).  Multi-frame files: only the **first frame** is decoded and returned
(``meta["n_frames"]`` says how many there were).  Compressed transfer syntaxes (JPEG baseline/extended,
JPEG lossless, JPEG 2000, RLE) are decoded by the pylibjpeg plugins.

PNG and JPEG files are read with Pillow: 8-bit grey is kept as is; 16-bit (or 32-bit integer / float)
grey is scaled min-max to 8 bits (step ``"to_uint8"``); RGB, RGBA, LA, CMYK and palette images are
converted with ``convert("L")`` (step ``"rgb_to_grey"``; alpha is dropped).  Colour images whose
channels differ are read with a warning in ``meta["warnings"]`` (PNG, JPEG and colour DICOM), and PNG /
JPEG images whose channels differ strongly (a photograph, not a radiograph) are refused:
:data:`COLOUR_WARN_LEVEL`, :data:`COLOUR_REFUSE_LEVEL`.

Every problem with the file raises :class:`~cardiofusion.errors.ReadError` with one line of reason:
missing or unreadable file, truncated or corrupt data, no pixel data, a modality that is not a
radiograph (accepted: CR, DX, RG, OT or no modality), zero-sized or constant images.  No patient
identifier (name, id, birth date...) is ever copied to ``meta``.

:func:`resize_square` is the resizing helper of the preprocessing cache (centre-crop, letterbox or
stretch to a square).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, ReadError
from ..records import CXRImage
from ._files import check_input_file

#: DICOM modalities accepted as chest radiographs ("" = Modality absent or empty).
RADIOGRAPH_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "RG", "OT", ""})
#: Resizing modes of :func:`resize_square`.
RESIZE_MODES: tuple[str, ...] = ("crop", "pad", "stretch")

_IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpeg"}
_COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422",
                        "YBR_ICT", "YBR_RCT", "PALETTE COLOR")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, as Pillow's convert("L")
#: Colour images: the mean over pixels of (largest - smallest of R, G, B), on a 0-255 scale.  Above
#: :data:`COLOUR_WARN_LEVEL` the image is read with a warning (``meta["warnings"]``: a radiograph with a
#: coloured annotation, or tinted by its export); above :data:`COLOUR_REFUSE_LEVEL` it is refused (a
#: photograph or a coloured picture, not a radiograph).  A grey image stored as RGB scores 0 (JPEG
#: chroma noise well under 1).
COLOUR_WARN_LEVEL = 2.0
COLOUR_REFUSE_LEVEL = 16.0


def read_cxr(path: str | os.PathLike, *, window: tuple[float, float] | None = None) -> CXRImage:
    """Read a chest X-ray (DICOM, PNG or JPEG) as an 8-bit greyscale image, 0 = black.

    Args:
        path: the file.  DICOM is recognised by its ``DICM`` preamble or a ``.dcm``/``.dicom``/no
            extension; anything else is opened with Pillow (PNG or JPEG only).
        window: optional ``(centre, width)`` LINEAR window on the modality values (e.g. Hounsfield-like
            units after rescale; raw grey values for PNG/JPEG) replacing the file's own VOI LUT/window.

    Returns:
        :class:`CXRImage` with the steps applied, in order, in ``steps``.

    Raises:
        ReadError: the file is missing, unreadable, not a regular file (device, FIFO), larger than
            ``CARDIOFUSION_MAX_INPUT_BYTES`` (default 512 MiB), not a radiograph, empty or constant.
    """
    p = Path(path)
    if window is not None:
        try:
            centre, width = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ConfigError(f"window must be (centre, width), got {window!r}") from None
        if not (np.isfinite(centre) and np.isfinite(width) and width >= 1):
            raise ConfigError(f"window width must be >= 1 and finite, got {window!r}")
        window = (centre, width)
    check_input_file(p)  # a regular, non-empty file under the input cap (never a device or FIFO)
    try:
        if _is_dicom(p):
            return _read_dicom(p, window)
        return _read_pillow(p, window)
    except ReadError:
        raise
    except MemoryError:
        raise ReadError(p, "image too large to decode in memory") from None
    except Exception as e:  # decoders raise anything: never let it escape unwrapped
        raise ReadError(p, f"could not decode image ({type(e).__name__}: {e})") from None


def resize_square(pixels: np.ndarray, size: int, *, mode: str = "crop") -> np.ndarray:
    """Resize a 2-D uint8 image to ``(size, size)`` uint8.

    Args:
        pixels: ``(H, W)`` uint8 image.
        size: side of the output square, in pixels.
        mode: ``"crop"`` centre-crops the largest square then resizes (no distortion, loses the
            edges of the longer side); ``"pad"`` resizes the longer side to ``size`` keeping the aspect
            ratio and letterboxes the rest with zeros (black), centred; ``"stretch"`` resizes both sides
            to ``size`` (distorts non-square images).

    Shrinking uses Pillow's BOX filter (area average, i.e. antialiased like OpenCV's INTER_AREA);
    enlarging uses BILINEAR.
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise ValueError(f"resize_square expects a non-empty 2-D uint8 image, got {arr.dtype} {arr.shape}")
    h, w = arr.shape
    if mode == "crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return _resize(arr[top:top + side, left:left + side], size, size)
    if mode == "stretch":
        return _resize(arr, size, size)
    # pad: longer side -> size, keep aspect ratio, centre on a black square
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = _resize(arr, new_h, new_w)
    return out


# --------------------------------------------------------------------------------------------- utils


def _resize(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    from PIL import Image

    if arr.shape == (out_h, out_w):
        return arr.copy()
    shrinking = out_h * out_w < arr.shape[0] * arr.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    img = Image.fromarray(np.ascontiguousarray(arr), mode="L")
    return np.asarray(img.resize((out_w, out_h), resample=resample), dtype=np.uint8)


def _is_dicom(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError as e:
        raise ReadError(p, f"cannot open file ({e.strerror or e})") from None
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    return p.suffix.lower() in (".dcm", ".dicom", "")


def _to_uint8(t: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats to uint8, rounding half up."""
    return np.floor(np.clip(t, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _minmax(values: np.ndarray, p: Path, what: str) -> tuple[np.ndarray, tuple[float, float]]:
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ReadError(p, f"{what} contain non-finite values")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise ReadError(p, f"constant image (every pixel = {lo:g})")
    return (values - lo) / (hi - lo), (lo, hi)


def _linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window with output range ``[0, 1]``."""
    x = np.asarray(values, dtype=np.float64)
    t = (x - (centre - 0.5)) / (width - 1.0) + 0.5 if width > 1 else (x > centre - 0.5).astype(np.float64)
    t = np.where(x <= centre - 0.5 - (width - 1.0) / 2.0, 0.0, t)
    t = np.where(x > centre - 0.5 + (width - 1.0) / 2.0, 1.0, t)
    return t


def _check_constant(pixels: np.ndarray, p: Path, steps: list[str]) -> None:
    if pixels.min() == pixels.max():
        after = f" after {', '.join(steps)}" if steps else ""
        raise ReadError(p, f"constant image (every pixel = {int(pixels.flat[0])}{after})")


# --------------------------------------------------------------------------------------------- DICOM


def _read_dicom(p: Path, window: tuple[float, float] | None) -> CXRImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    # pydicom warns about every oddity (we check what matters ourselves) and, on a file cut short
    # inside an undefined-length element (e.g. encapsulated JPEG pixel data), only warns and drops it.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(p)
        except InvalidDicomError:
            try:
                ds = pydicom.dcmread(p, force=True)
            except Exception as e:
                raise ReadError(p, f"not a readable DICOM file ({type(e).__name__}: {e})") from None
            if "PixelData" not in ds and "Rows" not in ds and "Modality" not in ds:
                raise ReadError(p, "not a DICOM file (no DICM preamble and no image attributes)") from None
        except Exception as e:
            raise ReadError(p, f"not a readable DICOM file, truncated or corrupt ({type(e).__name__}: {e})") from None
        for w in caught:
            message = str(w.message)
            if "end of file" in message.lower():
                raise ReadError(p, f"truncated DICOM file ({message.replace(str(p), '').strip()})")
        return _dicom_to_image(p, ds, window)


def _dicom_to_image(p: Path, ds: Any, window: tuple[float, float] | None) -> CXRImage:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array

    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise ReadError(p, f"modality {modality} is not a radiograph (accepted: CR, DX, RG, OT)")
    if "WaveformSequence" in ds and "PixelData" not in ds:
        raise ReadError(p, "DICOM waveform (e.g. an ECG), not an image")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ReadError(p, "DICOM file has no PixelData (not an image)")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows == 0 or cols == 0:
        raise ReadError(p, f"image has zero size ({rows} x {cols})")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise ReadError(p, "DICOM image without PhotometricInterpretation")
    bits_stored = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 0) or 0)
    if bits_stored <= 0:
        raise ReadError(p, "DICOM image without BitsStored/BitsAllocated")
    file_meta = getattr(ds, "file_meta", None)
    ts_uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    transfer_syntax = ts_uid.name if ts_uid is not None else None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)

    try:
        arr = pixel_array(ds, index=0) if n_frames > 1 else ds.pixel_array
    except Exception as e:
        raise ReadError(p, f"cannot decode pixel data ({transfer_syntax or 'unknown transfer syntax'}; "
                           f"truncated or corrupt? {type(e).__name__}: {e})") from None
    arr = np.asarray(arr)
    if arr.size == 0:
        raise ReadError(p, "image has zero size")

    meta: dict[str, Any] = {
        "modality": modality or None,
        "sop_class": _uid_name(ds.get("SOPClassUID")),
        "n_frames": n_frames,
        "frame": 0,
        "samples_per_pixel": int(ds.get("SamplesPerPixel", 1) or 1),
        "pixel_representation": int(ds.get("PixelRepresentation", 0) or 0),
    }
    for key, name in (("ViewPosition", "view_position"), ("BodyPartExamined", "body_part")):
        if ds.get(key):
            meta[name] = str(ds.get(key))
    for key, name in (("PixelSpacing", "pixel_spacing_mm"), ("ImagerPixelSpacing", "imager_pixel_spacing_mm")):
        spacing = ds.get(key)
        if spacing and len(spacing) == 2 and all(float(v) > 0 for v in spacing):
            meta[name] = (float(spacing[0]), float(spacing[1]))

    steps: list[str] = []
    if photometric in _COLOUR_PHOTOMETRICS or arr.ndim == 3:
        t = _colour_to_grey(p, ds, arr, photometric, bits_stored, steps, meta)
    else:
        t = _grey_pipeline(p, ds, arr, photometric, window, steps, meta,
                           apply_modality_lut, apply_voi_lut)
    pixels = _to_uint8(t)
    steps.append("to_uint8")
    _check_constant(pixels, p, steps)
    return CXRImage(pixels=pixels, source=str(p), format="dicom", photometric=photometric,
                    bits_stored=bits_stored, steps=tuple(steps), transfer_syntax=transfer_syntax, meta=meta)


def _uid_name(uid: Any) -> str | None:
    if uid is None:
        return None
    return str(getattr(uid, "name", uid))


def _check_colour(p: Path, rgb: np.ndarray, top: float, meta: dict[str, Any], *, refuse: bool = True) -> None:
    """Refuse a strongly coloured image (when ``refuse``), record a warning for a coloured one (see
    :data:`COLOUR_REFUSE_LEVEL`).  ``rgb`` is ``(H, W, 3)`` with values in ``[0, top]``."""
    spread = 0.0
    for r0 in range(0, rgb.shape[0], 256):  # row blocks: bounded temporary memory on large images
        block = rgb[r0: r0 + 256].astype(np.float32)  # (h, W, 3)
        spread += float((block.max(axis=-1) - block.min(axis=-1)).sum())
    spread = spread / max(1, rgb.shape[0] * rgb.shape[1]) * 255.0 / top
    meta["colour_difference"] = round(spread, 2)
    if refuse and spread > COLOUR_REFUSE_LEVEL:
        raise ReadError(p, f"colour image, not a radiograph (mean channel difference {spread:.0f} of 255, "
                           f"above {COLOUR_REFUSE_LEVEL:g}): a photograph or coloured picture?")
    if spread > COLOUR_WARN_LEVEL:
        meta.setdefault("warnings", []).append(
            f"X-ray stored in colour with differing channels (mean channel difference {spread:.1f} of 255): "
            "converted to grey; check that it is the radiograph itself")


def _colour_to_grey(p: Path, ds: Any, arr: np.ndarray, photometric: str, bits_stored: int,
                    steps: list[str], meta: dict[str, Any] | None = None) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)  # (H, W, 3), 8 or 16 bit per the LUT descriptor
        steps.append("palette_to_rgb")
        top = 255.0 if arr.dtype == np.uint8 else 65535.0
    else:
        top = float(2 ** bits_stored - 1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ReadError(p, f"unsupported colour pixel layout {arr.shape} for {photometric}")
    if meta is not None:
        _check_colour(p, arr[..., :3], top, meta, refuse=False)  # a colour DICOM: warned, not refused
    grey = arr[..., :3].astype(np.float64) @ _LUMA  # (H, W)
    steps.append("rgb_to_grey")
    return grey / top


def _grey_pipeline(p: Path, ds: Any, arr: np.ndarray, photometric: str, window: tuple[float, float] | None,
                   steps: list[str], meta: dict[str, Any], apply_modality_lut: Any,
                   apply_voi_lut: Any) -> np.ndarray:
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ReadError(p, f"unsupported photometric interpretation {photometric!r}")
    if arr.ndim != 2:
        raise ReadError(p, f"unexpected pixel array shape {arr.shape} for a greyscale image")

    # 1. modality LUT / rescale
    values = arr
    if ds.get("ModalityLUTSequence"):
        values = apply_modality_lut(arr, ds)
        steps.append("modality_lut")
    elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        meta["rescale"] = (slope, intercept)
        if slope == 0:
            raise ReadError(p, "RescaleSlope is 0 (every pixel would be equal)")
        if (slope, intercept) != (1.0, 0.0):
            values = apply_modality_lut(arr, ds)
            steps.append("rescale")

    # 2. VOI: the caller's window, the first VOI LUT item or the first window, else min-max
    has_lut = bool(ds.get("VOILUTSequence")) and all(
        k in ds.VOILUTSequence[0] for k in ("LUTDescriptor", "LUTData"))
    has_window = _present(ds.get("WindowCenter")) and _present(ds.get("WindowWidth"))
    if window is not None:
        t = _linear_window(values, *window)
        steps.append("window")
        meta["window"] = window
        meta["voi_source"] = "argument"
    elif has_lut:
        item = ds.VOILUTSequence[0]
        inputs = _lut_inputs(item)
        # LUT inputs are integers; clamp to the LUT's domain first (the standard maps values outside it
        # to the first/last entry, and pydicom would wrap them when the LUT is 8-bit).
        idx = np.clip(np.rint(np.asarray(values, dtype=np.float64)), inputs[0], inputs[-1]).astype(np.int64)
        voi = np.asarray(apply_voi_lut(idx, ds, index=0, prefer_lut=True), dtype=np.float64)
        lut = np.asarray(apply_voi_lut(inputs, ds, index=0, prefer_lut=True), dtype=np.float64)
        lo, hi = float(lut.min()), float(lut.max())
        if hi <= lo:
            raise ReadError(p, "VOI LUT is constant")
        t = (voi - lo) / (hi - lo)
        steps.append("voi_lut")
        meta["voi_source"] = "voi_lut_sequence"
        if item.get("LUTExplanation"):
            meta["voi_lut_explanation"] = str(item.LUTExplanation)
    elif has_window:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        centre, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise ReadError(p, f"unsupported VOI LUT Function {function!r}")
        if width <= 0 or (function == "LINEAR" and width < 1):
            raise ReadError(p, f"invalid window width {width:g} for a {function} window")
        voi = np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=False), dtype=np.float64)
        # The window's output range, read off pydicom itself: far below -> y_min, far above -> y_max.
        with np.errstate(over="ignore"):
            ends = np.asarray(apply_voi_lut(np.array([-1e30, 1e30]), ds, index=0, prefer_lut=False),
                              dtype=np.float64)
        y_min, y_max = float(ends[0]), float(ends[1])
        if y_max == y_min:
            raise ReadError(p, "window output range is empty")
        t = (voi - y_min) / (y_max - y_min)
        steps.append({"LINEAR": "window", "LINEAR_EXACT": "window_linear_exact",
                      "SIGMOID": "window_sigmoid"}[function])
        meta["window"] = (centre, width)
        meta["voi_lut_function"] = function
        meta["voi_source"] = "window"
    else:
        t, (lo, hi) = _minmax(values, p, "modality values")
        meta["voi_source"] = "min_max"
        meta["scale_range"] = (lo, hi)

    # 3. photometric inversion
    if photometric == "MONOCHROME1":
        t = 1.0 - t
        steps.append("invert_monochrome1")
    elif str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE":
        t = 1.0 - t
        steps.append("presentation_lut_inverse")
    return t


def _present(value: Any) -> bool:
    """A data element value that is there and not empty."""
    if value is None or value == "":
        return False
    try:
        return len(value) > 0 if not isinstance(value, (int, float)) else True
    except TypeError:
        return True


def _first(value: Any) -> float:
    """First value of a possibly multi-valued DS element."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _lut_inputs(item: Any) -> np.ndarray:
    """Every input value a LUT maps (first_map .. first_map + n - 1)."""
    n_entries = int(item.LUTDescriptor[0]) or 2 ** 16
    first_map = int(item.LUTDescriptor[1])
    return np.arange(first_map, first_map + n_entries, dtype=np.int64)


# --------------------------------------------------------------------------------------- PNG / JPEG


def _read_pillow(p: Path, window: tuple[float, float] | None) -> CXRImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as img:
            fmt = img.format
            img.load()
            img = img.copy()
    except UnidentifiedImageError:
        raise ReadError(p, "not a recognised image (expected DICOM, PNG or JPEG)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ReadError(p, f"truncated or corrupt image ({type(e).__name__}: {e})") from None
    if fmt not in _IMAGE_FORMATS:
        raise ReadError(p, f"unsupported image format {fmt} (expected DICOM, PNG or JPEG)")
    if img.width == 0 or img.height == 0:
        raise ReadError(p, f"image has zero size ({img.height} x {img.width})")

    mode = img.mode
    steps: list[str] = []
    meta: dict[str, Any] = {"pil_mode": mode}
    if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        photometric = "RGB"
    elif mode in ("P", "PA"):
        photometric = "PALETTE COLOR"
    else:
        photometric = "MONOCHROME2"

    if mode in ("L", "1", "LA") or photometric != "MONOCHROME2":
        bits = 8
        if mode != "L":
            if photometric != "MONOCHROME2":
                _check_colour(p, np.asarray(img.convert("RGB")), 255.0, meta)
            img = img.convert("L")
            if photometric != "MONOCHROME2":
                steps.append("rgb_to_grey")
        values = np.asarray(img, dtype=np.uint8)
        if window is not None:
            pixels = _to_uint8(_linear_window(values, *window))
            steps += ["window", "to_uint8"]
            meta["window"] = window
        else:
            pixels = values.copy()
    else:  # 16-bit / 32-bit integer / float greyscale
        values = np.asarray(img)
        bits = 16 if mode.startswith("I;16") or (values.dtype.kind in "iu" and values.max() < 2 ** 16
                                                   and values.min() >= 0) else 32
        if window is not None:
            t = _linear_window(values, *window)
            steps.append("window")
            meta["window"] = window
        else:
            t, meta["scale_range"] = _minmax(values, p, "pixel values")
        pixels = _to_uint8(t)
        steps.append("to_uint8")
    if pixels.ndim != 2:
        raise ReadError(p, f"unexpected pixel array shape {pixels.shape}")
    _check_constant(pixels, p, steps)
    return CXRImage(pixels=pixels, source=str(p), format=_IMAGE_FORMATS[fmt], photometric=photometric,
                    bits_stored=bits, steps=tuple(steps), transfer_syntax=None, meta=meta)


__all__ = ["read_cxr", "resize_square", "RADIOGRAPH_MODALITIES", "RESIZE_MODES"]
