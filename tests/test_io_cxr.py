"""Tests of the chest X-ray reader (``cardiofusion.io.cxr``) on real DICOM/PNG files and tiny synthetic ones.

Expected values are computed independently of the reader: the DICOM standard's window formulas
(PS3.3 C.11.2.1.2.1 LINEAR, C.11.2.1.3.1 SIGMOID) written out in numpy, LUTs indexed by hand.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

from cardiofusion.errors import ConfigError, ReadError
from cardiofusion.io.cxr import read_cxr, resize_square
from cardiofusion.records import CXRImage

# name -> (shape, photometric, bits_stored, steps, transfer syntax name)
EXPECTED_DICOM = {
    "RG1_UNCR.dcm": ((1955, 1841), "MONOCHROME1", 15, ("window", "invert_monochrome1", "to_uint8"),
                     "Explicit VR Little Endian"),
    "RG1_J2KR.dcm": ((1955, 1841), "MONOCHROME1", 15, ("window", "invert_monochrome1", "to_uint8"),
                     "JPEG 2000 Image Compression (Lossless Only)"),
    "siim_chest_cr_jpeg_baseline.dcm": ((1024, 1024), "MONOCHROME2", 8, ("to_uint8",), "JPEG Baseline (Process 1)"),
    "siim_chest_cr_monochrome1_retagged.dcm": ((1024, 1024), "MONOCHROME1", 8, ("invert_monochrome1", "to_uint8"),
                                               "JPEG Baseline (Process 1)"),
    "vlut_04.dcm": ((512, 512), "MONOCHROME2", 8, ("voi_lut", "to_uint8"), "Explicit VR Little Endian"),
    "mlut_18.dcm": ((512, 512), "MONOCHROME2", 12, ("modality_lut", "to_uint8"), "Explicit VR Little Endian"),
}
# Chest films whose stored photometric interpretation is right: lungs must come out darker than the spine.
CORRECTLY_TAGGED_CHESTS = ["RG1_UNCR.dcm", "RG1_J2KR.dcm", "siim_chest_cr_jpeg_baseline.dcm"]
NIH_FULLRES = ["00000001_000.png", "00027426_000.png"]
IDENTIFIER_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber")


@lru_cache(maxsize=None)
def _read_cached(path: str) -> CXRImage:
    return read_cxr(path)


def _read_shared(shared_data: Path, name: str) -> CXRImage:
    """Each real DICOM decoded once per session (the JPEG 2000 one takes about a second)."""
    return _read_cached(str(shared_data / "dicom" / name))


def _lungs_minus_mediastinum(pixels: np.ndarray) -> float:
    """Mean of both lung fields minus mean of the central column (spine/mediastinum), upper-middle rows."""
    h, w = pixels.shape
    rows = pixels[int(0.25 * h): int(0.55 * h)].astype(np.float64)  # (rows, W)
    lungs = np.concatenate([rows[:, int(0.15 * w): int(0.35 * w)].ravel(),
                            rows[:, int(0.65 * w): int(0.85 * w)].ravel()]).mean()
    central = rows[:, int(0.45 * w): int(0.55 * w)].mean()
    return float(lungs - central)


def _linear_window_u8(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 with y_min = 0, y_max = 255, as floats (not rounded)."""
    x = np.asarray(x, dtype=np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    y[x <= c - 0.5 - (w - 1) / 2] = 0.0
    y[x > c - 0.5 + (w - 1) / 2] = 255.0
    return y


def _round_half_up(y: np.ndarray) -> np.ndarray:
    frac = np.abs(y - np.floor(y) - 0.5)
    assert np.all(frac > 1e-6), "test values must not sit on a rounding tie"
    return np.floor(y + 0.5).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                 modality: str | None = "DX", **attrs) -> Path:
    """Write a minimal uncompressed single-frame DICOM; ``attrs`` become extra data elements."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-123"
    ds.PatientBirthDate = "19500101"
    if modality is not None:
        ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------ real DICOM


def test_every_shared_dicom_has_expectations(shared_data: Path) -> None:
    assert {p.name for p in (shared_data / "dicom").glob("*.dcm")} == set(EXPECTED_DICOM)


@pytest.mark.parametrize("name", sorted(EXPECTED_DICOM))
def test_shared_dicom_decodes(shared_data: Path, name: str) -> None:
    shape, photometric, bits_stored, steps, transfer_syntax = EXPECTED_DICOM[name]
    img = _read_shared(shared_data, name)
    assert img.pixels.dtype == np.uint8 and img.pixels.shape == shape
    assert (img.photometric, img.bits_stored, img.steps) == (photometric, bits_stored, steps)
    assert img.transfer_syntax == transfer_syntax
    assert img.format == "dicom" and img.source == str(shared_data / "dicom" / name)
    assert img.pixels.min() < 40 and img.pixels.max() > 200  # uses the grey range
    assert img.summary() == {"kind": "cxr", "height": shape[0], "width": shape[1],
                             "photometric": photometric, "bits_stored": bits_stored}
    # no patient identifier leaks into meta
    ds = pydicom.dcmread(shared_data / "dicom" / name, stop_before_pixels=True)
    secrets = {str(ds.get(k)) for k in IDENTIFIER_KEYWORDS if ds.get(k)}
    assert not any("patient" in key.lower() or "birth" in key.lower() for key in img.meta)
    assert not secrets & {str(v) for v in img.meta.values()}


@pytest.mark.parametrize("name", CORRECTLY_TAGGED_CHESTS)
def test_chest_lungs_darker_than_mediastinum(shared_data: Path, name: str) -> None:
    assert _lungs_minus_mediastinum(_read_shared(shared_data, name).pixels) < -15


def test_monochrome1_retag_is_exact_inverse(shared_data: Path) -> None:
    """The retagged file holds the same stored pixels (only the tag differs): the outputs are negatives."""
    a = pydicom.dcmread(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm")
    b = pydicom.dcmread(shared_data / "dicom" / "siim_chest_cr_monochrome1_retagged.dcm")
    assert a.PixelData == b.PixelData and a.PhotometricInterpretation != b.PhotometricInterpretation
    mono2 = _read_shared(shared_data, "siim_chest_cr_jpeg_baseline.dcm").pixels
    mono1 = _read_shared(shared_data, "siim_chest_cr_monochrome1_retagged.dcm").pixels
    np.testing.assert_array_equal(mono1, 255 - mono2)
    np.testing.assert_array_equal(mono2, a.pixel_array)  # 8 bits spanning 0-255, no VOI: unchanged
    # the retag is wrong for this film, and the reader does what the tag says: lungs come out bright
    assert _lungs_minus_mediastinum(mono1) > 15


def test_jpeg2000_lossless_equals_uncompressed(shared_data: Path) -> None:
    np.testing.assert_array_equal(_read_shared(shared_data, "RG1_J2KR.dcm").pixels, _read_shared(shared_data, "RG1_UNCR.dcm").pixels)


def test_rg1_window_and_inversion_match_the_standard(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / "RG1_UNCR.dcm")
    stored = ds.pixel_array.astype(np.float64)  # no rescale in this file
    expected = 255 - np.floor(_linear_window_u8(stored, 15000, 30000) + 0.5).astype(np.int64)
    got = _read_shared(shared_data, "RG1_UNCR.dcm").pixels.astype(np.int64)
    assert np.abs(got - expected).max() <= 1
    assert (got == expected).mean() > 0.999
    assert _read_shared(shared_data, "RG1_UNCR.dcm").meta["window"] == (15000.0, 30000.0)


def test_voi_lut_sequence_applied(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / "vlut_04.dcm")
    item = ds.VOILUTSequence[0]
    n, first, _ = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    out = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, (n or 65536) - 1)]
    expected = np.floor((out - lut.min()) / (lut.max() - lut.min()) * 255 + 0.5).astype(np.uint8)
    img = _read_shared(shared_data, "vlut_04.dcm")
    np.testing.assert_array_equal(img.pixels, expected)
    assert img.meta["voi_source"] == "voi_lut_sequence"


def test_voi_lut_really_drives_the_output(shared_data: Path, tmp_path: Path) -> None:
    """vlut_04's LUT is linear (x * 257): swap in a reversed 12-bit LUT and the image must follow it."""
    ds = pydicom.dcmread(shared_data / "dicom" / "vlut_04.dcm")
    stored = ds.pixel_array.astype(np.int64)
    item = ds.VOILUTSequence[0]
    item.LUTData = [int(v) for v in (255 - np.arange(256)) * 16]  # declared 16 bits, uses 0..4080
    ds.save_as(tmp_path / "reversed_lut.dcm")
    img = read_cxr(tmp_path / "reversed_lut.dcm")
    np.testing.assert_array_equal(img.pixels, (255 - stored).astype(np.uint8))
    assert img.steps == ("voi_lut", "to_uint8")


def test_modality_lut_applied(shared_data: Path) -> None:
    ds = pydicom.dcmread(shared_data / "dicom" / "mlut_18.dcm")
    item = ds.ModalityLUTSequence[0]
    n, first, _ = item.LUTDescriptor
    lut = np.asarray(item.LUTData, dtype=np.float64)
    values = lut[np.clip(ds.pixel_array.astype(np.int64) - first, 0, (n or 65536) - 1)]
    # no VOI in this file: min-max scaling of the modality values
    expected = np.floor((values - values.min()) / (values.max() - values.min()) * 255 + 0.5).astype(np.uint8)
    img = _read_shared(shared_data, "mlut_18.dcm")
    np.testing.assert_array_equal(img.pixels, expected)
    assert img.meta["voi_source"] == "min_max"


def test_window_argument_overrides_file(shared_data: Path) -> None:
    img = read_cxr(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm", window=(128, 256))
    # LINEAR window 128/256 on 8-bit values is the identity: ((x - 127.5) / 255 + 0.5) * 255 = x
    np.testing.assert_array_equal(img.pixels, _read_shared(shared_data, "siim_chest_cr_jpeg_baseline.dcm").pixels)
    assert img.steps == ("window", "to_uint8") and img.meta["voi_source"] == "argument"
    narrow = read_cxr(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm", window=(100, 50))
    raw = pydicom.dcmread(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm").pixel_array
    assert np.all(narrow.pixels[raw < 75] == 0) and np.all(narrow.pixels[raw >= 125] == 255)
    with pytest.raises(ConfigError):
        read_cxr(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm", window=(100, 0))


# -------------------------------------------------------------------------------------- synthetic DICOM


def test_synthetic_monochrome1_rescale_window_exact(tmp_path: Path) -> None:
    stored = np.array([[0, 400, 499, 500, 501, 600, 750, 999],
                       [1000, 1001, 1200, 1333, 1499, 1500, 2000, 4095]], dtype=np.uint16)
    slope, intercept, centre, width = 2.0, -1000.0, 1000.0, 2001.0
    path = _write_dicom(tmp_path / "synth.dcm", stored, photometric="MONOCHROME1", bits_stored=12,
                        RescaleSlope=slope, RescaleIntercept=intercept, WindowCenter=centre, WindowWidth=width)
    img = read_cxr(path)
    # by hand: modality value -> LINEAR window onto 0..255 -> MONOCHROME1 inversion -> round half up
    modality = stored * slope + intercept
    expected = _round_half_up(255.0 - _linear_window_u8(modality, centre, width))
    np.testing.assert_array_equal(img.pixels, expected)
    assert img.pixels[0, 0] == 255 and img.pixels[1, 7] == 0  # below the window = white once inverted
    assert img.steps == ("rescale", "window", "invert_monochrome1", "to_uint8")
    assert (img.photometric, img.bits_stored, img.transfer_syntax) == ("MONOCHROME1", 12, "Explicit VR Little Endian")
    assert img.meta["modality"] == "DX"
    assert not {"Doe^Jane", "SECRET-123", "19500101"} & {str(v) for v in img.meta.values()}

    # the same file RLE-compressed decodes to the same image
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "synth_rle.dcm")
    rle = read_cxr(tmp_path / "synth_rle.dcm")
    np.testing.assert_array_equal(rle.pixels, img.pixels)
    assert rle.transfer_syntax == "RLE Lossless"


def test_synthetic_multiple_windows_uses_first(tmp_path: Path) -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    path = _write_dicom(tmp_path / "multi.dcm", stored, WindowCenter=[2048, 500], WindowWidth=[4096, 200])
    img = read_cxr(path)
    expected = np.floor(_linear_window_u8(stored, 2048, 4096) + 0.5).astype(np.uint8)
    assert np.abs(img.pixels.astype(int) - expected).max() <= 1
    assert img.meta["window"] == (2048.0, 4096.0)


def test_synthetic_sigmoid_window(tmp_path: Path) -> None:
    stored = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    path = _write_dicom(tmp_path / "sig.dcm", stored, WindowCenter=1500, WindowWidth=800, VOILUTFunction="SIGMOID")
    img = read_cxr(path)
    # PS3.3 C.11.2.1.3.1 with output range 0..255
    expected = 255.0 / (1 + np.exp(-4 * (stored - 1500.0) / 800.0))
    assert np.abs(img.pixels - expected).max() <= 0.5 + 1e-9
    assert img.steps == ("window_sigmoid", "to_uint8")


def test_synthetic_no_voi_minmax_and_presentation_inverse(tmp_path: Path) -> None:
    stored = np.array([[100, 200], [300, 400]], dtype=np.uint16)
    img = read_cxr(_write_dicom(tmp_path / "plain.dcm", stored, modality=None))
    np.testing.assert_array_equal(img.pixels, [[0, 85], [170, 255]])
    assert img.steps == ("to_uint8",) and img.meta["scale_range"] == (100.0, 400.0)
    inv = read_cxr(_write_dicom(tmp_path / "inv.dcm", stored, PresentationLUTShape="INVERSE"))
    np.testing.assert_array_equal(inv.pixels, [[255, 170], [85, 0]])
    assert inv.steps == ("presentation_lut_inverse", "to_uint8")


def test_colour_and_multiframe_dicom() -> None:
    """pydicom's bundled RGB RLE 2-frame file: first frame only, BT.601 luma."""
    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array  # (2, 100, 100, 3)
    img = read_cxr(path)
    expected = np.floor(frames[0].astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5)
    assert np.abs(img.pixels - expected).max() <= 1
    second = np.floor(frames[1].astype(np.float64) @ [0.299, 0.587, 0.114] + 0.5)
    assert np.abs(img.pixels - second).max() > 50  # really the first frame
    assert img.steps == ("rgb_to_grey", "to_uint8") and img.photometric == "RGB"
    assert img.meta["n_frames"] == 2 and img.transfer_syntax == "RLE Lossless"


@pytest.mark.filterwarnings("ignore:Expected explicit VR")
@pytest.mark.parametrize("name", ["SC_rgb_jpeg.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_small_odd_jpeg.dcm"])
def test_colour_dicoms_become_grey(name: str) -> None:
    path = get_testdata_file(name)
    img = read_cxr(path)
    ds = pydicom.dcmread(path)
    assert img.pixels.shape == (ds.Rows, ds.Columns)
    assert img.steps[-2:] == ("rgb_to_grey", "to_uint8")
    assert img.photometric == ds.PhotometricInterpretation


# -------------------------------------------------------------------------------------------- PNG / JPEG


@pytest.mark.parametrize("name", NIH_FULLRES)
def test_nih_fullres_png(shared_data: Path, name: str) -> None:
    path = shared_data / "nih-fullres" / name
    img = read_cxr(path)
    np.testing.assert_array_equal(img.pixels, np.asarray(Image.open(path).convert("L")))
    assert (img.format, img.photometric, img.bits_stored, img.steps) == ("png", "MONOCHROME2", 8, ())
    assert img.transfer_syntax is None
    assert _lungs_minus_mediastinum(img.pixels) < -15


@pytest.mark.parametrize("label", ["cardiomegaly", "no_cardiomegaly"])
def test_nih_cardiomegaly_128_png(shared_data: Path, label: str) -> None:
    files = sorted((shared_data / "nih-cardiomegaly-128" / label).glob("*.png"))[:5]
    assert files
    contrast = []
    for path in files:
        img = read_cxr(path)
        assert img.pixels.shape == (128, 128) and img.pixels.dtype == np.uint8
        assert img.format == "png" and img.bits_stored == 8
        contrast.append(_lungs_minus_mediastinum(img.pixels))
    assert np.mean(contrast) < -15  # lungs dark on average (single small films may be rotated or hazy)


def test_png_16bit_rgb_palette_and_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    grey16 = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    img = read_cxr(tmp_path / "g16.png")
    np.testing.assert_array_equal(img.pixels, [[0, 64], [128, 255]])  # min-max: 0, 63.75, 127.5, 255
    assert img.bits_stored == 16 and img.steps == ("to_uint8",)

    # a grey radiograph stored in colour, slightly tinted (a strongly coloured image is refused: test_quality.py)
    grey = rng.integers(4, 252, (6, 7, 1))
    rgb = (grey + rng.integers(-3, 4, (6, 7, 3))).astype(np.uint8)  # (6, 7, 3)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    for name, photometric in (("rgb.png", "RGB"), ("rgba.png", "RGB"), ("pal.png", "PALETTE COLOR")):
        img = read_cxr(tmp_path / name)
        np.testing.assert_array_equal(img.pixels, np.asarray(Image.open(tmp_path / name).convert("L")))
        assert img.pixels.shape == (6, 7) and img.photometric == photometric and img.steps == ("rgb_to_grey",)

    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "x.jpg", quality=95)
    img = read_cxr(tmp_path / "x.jpg")
    assert img.format == "jpeg" and img.pixels.shape == (16, 16)


# ------------------------------------------------------------------------------------------- bad inputs


def _assert_read_error(path: Path, *words: str) -> ReadError:
    with pytest.raises(ReadError) as info:
        read_cxr(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message.lower()
    return info.value


@pytest.mark.parametrize("name,fraction", [("siim_chest_cr_jpeg_baseline.dcm", 0.6), ("RG1_UNCR.dcm", 0.5),
                                           ("RG1_UNCR.dcm", 0.0005)])
def test_truncated_dicom(shared_data: Path, tmp_path: Path, name: str, fraction: float) -> None:
    data = (shared_data / "dicom" / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    _assert_read_error(path)


def test_bad_files(shared_data: Path, tmp_path: Path) -> None:
    _assert_read_error(tmp_path / "missing.dcm", "no such file")
    _assert_read_error(tmp_path, "directory")
    (tmp_path / "notes.dcm").write_text("this is not a DICOM file\n")
    _assert_read_error(tmp_path / "notes.dcm", "not a dicom")
    (tmp_path / "notes.png").write_text("this is not a PNG file\n")
    _assert_read_error(tmp_path / "notes.png", "not a recognised image")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8) + 7).save(tmp_path / "flat.png")
    _assert_read_error(tmp_path / "flat.png", "constant")
    png = (shared_data / "nih-fullres" / NIH_FULLRES[0]).read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    _assert_read_error(tmp_path / "cut.png")

    ds = pydicom.dcmread(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm")
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    _assert_read_error(tmp_path / "nopixels.dcm", "no pixeldata")

    ds = pydicom.dcmread(shared_data / "dicom" / "siim_chest_cr_jpeg_baseline.dcm")
    ds.Modality = "CT"
    ds.save_as(tmp_path / "ct.dcm")
    _assert_read_error(tmp_path / "ct.dcm", "modality ct is not a radiograph")


def test_ecg_waveform_dicom_refused() -> None:
    _assert_read_error(Path(get_testdata_file("waveform_ecg.dcm")), "modality ecg is not a radiograph")


def test_synthetic_bad_dicoms(tmp_path: Path) -> None:
    _assert_read_error(_write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 7, dtype=np.uint16)), "constant")
    empty = _write_dicom(tmp_path / "empty.dcm", np.zeros((0, 4), dtype=np.uint16))
    _assert_read_error(empty, "zero size")
    _assert_read_error(_write_dicom(tmp_path / "mr.dcm", np.eye(4, dtype=np.uint16), modality="MR"), "modality mr")
    # window entirely above the data: every pixel black
    _assert_read_error(_write_dicom(tmp_path / "dark.dcm", np.eye(4, dtype=np.uint16) * 10,
                                    WindowCenter=3000, WindowWidth=100), "constant")


# ---------------------------------------------------------------------------------------- resize_square


def test_resize_square_modes() -> None:
    tall = np.zeros((40, 20), dtype=np.uint8)
    tall[10:30] = 200  # the centre square is uniform 200
    crop = resize_square(tall, 10, mode="crop")
    assert crop.shape == (10, 10) and crop.dtype == np.uint8 and np.all(crop == 200)
    pad = resize_square(tall, 10, mode="pad")
    assert pad.shape == (10, 10)
    assert np.all(pad[:, :2] == 0) and np.all(pad[:, -3:] == 0)  # 5 columns of image, centred
    assert np.all(pad[3:7, 2:7] == 200)
    stretch = resize_square(tall, 10, mode="stretch")
    assert stretch.shape == (10, 10) and np.all(stretch[:2] == 0) and np.all(stretch[3:7] == 200)
    # shrinking is an area average
    block = np.array([[0, 100, 10, 10], [200, 100, 10, 10], [0, 0, 255, 255], [0, 0, 255, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(resize_square(block, 2, mode="stretch"), [[100, 10], [0, 255]])
    up = resize_square(np.full((3, 5), 9, dtype=np.uint8), 12, mode="pad")
    assert up.shape == (12, 12) and up.max() == 9 and up[0, 0] == 0


def test_resize_square_rejects_bad_arguments() -> None:
    img = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ConfigError):
        resize_square(img, 8, mode="zoom")
    with pytest.raises(ConfigError):
        resize_square(img, 0)
    with pytest.raises(ValueError):
        resize_square(img.astype(np.float32), 8)


# --------------------------------------------------------------------------------------------------
# Devices, FIFOs and the input size cap (issue 13: /dev/zero hung, /dev/urandom reached 14 GB)
# --------------------------------------------------------------------------------------------------
def test_device_is_refused_not_read(tmp_path: Path) -> None:
    """In a child process (memory-limited, with a generous timeout as a guard only): reading /dev/zero or
    /dev/urandom as an X-ray used to hang and fill memory."""
    import subprocess
    import sys

    link = tmp_path / "xray.png"
    link.symlink_to("/dev/urandom")
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "from cardiofusion.errors import ReadError\n"
            "from cardiofusion.io.cxr import read_cxr\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        read_cxr(path)\n"
            "    except ReadError as e:\n"
            "        print(e)\n")
    done = subprocess.run([sys.executable, "-c", code, "/dev/zero", "/dev/urandom", str(link)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    assert lines == [f"{p}: file is not a regular file (a device); give a file"
                     for p in ("/dev/zero", "/dev/urandom", link)]


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    outcome: dict = {}

    def target():
        try:
            read_cxr(fifo)
        except ReadError as e:
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)  # a guard, not a timing assertion
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked reader
        thread.join(60)
        pytest.fail("read_cxr blocked on a FIFO")
    assert "not a regular file (a FIFO)" in str(outcome.get("error"))


def test_image_over_the_input_cap_is_refused(tmp_path: Path, monkeypatch) -> None:
    from cardiofusion.io._files import MAX_INPUT_BYTES_ENV

    path = tmp_path / "x.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L").save(path)
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(path.stat().st_size - 1))
    err = _assert_read_error(path, "over the limit")
    assert MAX_INPUT_BYTES_ENV in err.reason
    monkeypatch.setenv(MAX_INPUT_BYTES_ENV, str(path.stat().st_size))
    assert read_cxr(path).pixels.shape == (64, 64)
