"""The screening web service: API (real files, refusals, privacy) and the page in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("python_multipart")

from test_bundle import screening_setup

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_UPLOAD_MB = 5.0
PTBXL_RECORD = Path("ptbxl/records500/00000/00001_hr")
DICOM = Path("dicom/siim_chest_cr_jpeg_baseline.dcm")
#: identifiers stored in that real DICOM (PatientName and PatientID)
REAL_DICOM_IDENTIFIER = "16d7f894-55d7-4d95-8957-d18987f0e981"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    return screening_setup(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every test here runs on one intra-op thread (conftest.one_thread)."""


class _Server:
    """uvicorn in a background thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def server(setup):
    from cardiofusion.bundle import load
    from cardiofusion.serve import create_app

    srv = _Server(create_app(load(setup["bundle"]), max_upload_mb=MAX_UPLOAD_MB))
    yield srv
    srv.stop()


def _get(url: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def _post(url: str, files: list[tuple[str, str, bytes]], fields: dict | None = None) -> tuple[int, dict]:
    """POST multipart/form-data; returns (status, JSON body)."""
    body, content_type = _multipart(files, fields)
    request = urllib.request.Request(url + "/api/predict", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _multipart(files: list[tuple[str, str, bytes]], fields: dict | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type."""
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in (fields or {}).items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for field, filename, data in files:
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode())
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def _raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
         ) -> tuple[int, dict, bytes]:
    """One request with http.client (which lets the test set the Host header): (status, headers, body)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _wfdb(shared: Path) -> list[tuple[str, str, bytes]]:
    base = shared / PTBXL_RECORD
    return [("ecg", base.name + ".hea", base.with_suffix(".hea").read_bytes()),
            ("ecg", base.name + ".dat", base.with_suffix(".dat").read_bytes())]


def _leftover_upload_dirs() -> list[str]:
    found = []
    for folder in {"/dev/shm", tempfile.gettempdir()}:
        if os.path.isdir(folder):
            found += [n for n in os.listdir(folder) if n.startswith("cardiofusion-upload-")]
    return found


# --------------------------------------------------------------------------------------------------
# Page and API
# --------------------------------------------------------------------------------------------------
def test_page_is_self_contained(server):
    status, headers, body = _get(server.url + "/")
    html = body.decode()
    assert status == 200 and '<input id="ecg" name="ecg" type="file" multiple>' in html
    assert "http://" not in html and "https://" not in html  # no CDN, no external request
    assert headers["cache-control"] == "no-store" and "default-src 'none'" in headers["content-security-policy"]
    status, _, body = _get(server.url + "/api/info")
    info = json.loads(body)
    assert info["modalities"] == ["ecg", "cxr"] and "Youden" in info["threshold_rule"]
    assert info["max_upload_mb"] == MAX_UPLOAD_MB


def test_api_predicts_real_files(server, setup, shared_data):
    from cardiofusion.bundle import load

    status, d = _post(server.url, _wfdb(shared_data) + [("cxr", "chest.dcm", (shared_data / DICOM).read_bytes())])
    assert status == 200, d
    assert {"probability", "decision", "modalities", "scores", "threshold", "warnings", "images"} <= set(d)
    assert d["modalities"] == ["ecg", "cxr"] and 0 <= d["probability"] <= 1
    for kind in ("cxr", "ecg"):
        assert d["images"][kind].startswith("data:image/png;base64,")
        assert base64.b64decode(d["images"][kind].split(",", 1)[1]).startswith(PNG_MAGIC)
    # the page's answer is the library's answer for the same files
    direct = load(setup["bundle"]).predict(ecg=shared_data / PTBXL_RECORD.with_suffix(".hea"), cxr=shared_data / DICOM)
    assert d["probability"] == pytest.approx(direct.probability, abs=1e-6)
    assert d["scores"] == pytest.approx(direct.scores, abs=1e-6)
    assert not _leftover_upload_dirs()


def test_api_wfdb_zip_and_synthetic_csv_exact(server, setup, shared_data):
    base = shared_data / PTBXL_RECORD
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.write(base.with_suffix(".hea"), base.name + ".hea")
        z.write(base.with_suffix(".dat"), base.name + ".dat")
    status, d = _post(server.url, [("ecg", "record.zip", archive.getvalue())], {"explain": "0"})
    assert status == 200 and d["modalities"] == ["ecg"] and d["images"] == {}
    assert any("ECG only" in w for w in d["warnings"])
    # PhysioNet/CinC 2021: header + MATLAB signal file
    cinc = shared_data / "cinc2021" / "PTB_PTBXL" / "HR00001"
    status, d = _post(server.url, [("ecg", "h.hea", cinc.with_suffix(".hea").read_bytes()),
                                   ("ecg", "s.mat", cinc.with_suffix(".mat").read_bytes())], {"explain": "0"})
    assert status == 200 and d["modalities"] == ["ecg"], d
    # a synthetic CSV in counts at 500 Hz (the bundle's reader defaults) scores as the run scored it
    row = setup["val"].iloc[0]
    status, d = _post(server.url, [("ecg", "a.csv", Path(row["ecg_path"]).read_bytes()),
                                   ("cxr", "b.dcm", Path(row["cxr_path"]).read_bytes())], {"explain": "0"})
    assert status == 200 and d["scores"]["fused"] == pytest.approx(row["score"], abs=1e-5)


def test_api_refuses_bad_uploads_with_readable_messages(server, setup, shared_data):
    png = (shared_data / "nih-fullres" / "00000001_000.png").read_bytes()
    dicom = (shared_data / DICOM).read_bytes()
    csv = Path(setup["val"].iloc[0]["ecg_path"]).read_bytes()
    cases = [
        ([], {}, 422, "choose an ECG file, an X-ray file, or both"),
        ([("ecg", "ecg.csv", png)], {}, 415, "the ECG upload is a PNG image, not an ECG"),
        ([("cxr", "chest.png", csv)], {}, 415, "the X-ray upload is a delimited text table, not an image"),
        ([("cxr", "chest.dcm", np.random.default_rng(3).bytes(4000))], {}, 415, "accepted: DICOM, PNG, JPEG"),
        ([("ecg", "x.dat", (shared_data / PTBXL_RECORD.with_suffix(".dat")).read_bytes())], {}, 415,
         "needs its WFDB header"),
        ([("cxr", "chest.dcm", dicom[:3000])], {}, 422, "The X-ray file:"),
        ([("ecg", "short.csv", b"I,II,III\n1,2,3\n4,5,6\n")], {}, 422, "The ECG file:"),
        ([("ecg", "a.csv", csv)], {"ecg_fs": "fast"}, 422, "ECG sampling rate must be a number"),
        ([("cxr", "big.dcm", b"\0" * int(MAX_UPLOAD_MB * 1e6 + 10))], {}, 413, "upload too large"),
    ]
    for files, fields, want_status, want_message in cases:
        status, d = _post(server.url, files, fields)
        assert status == want_status, (want_message, d)
        assert want_message in d["error"], d
        assert "cardiofusion-upload" not in d["error"] and "/tmp" not in d["error"]  # no server paths
    assert not _leftover_upload_dirs()


def test_no_patient_identifiers_in_logs_or_responses(server, shared_data, caplog):
    import pydicom

    caplog.set_level(logging.DEBUG)
    ds = pydicom.dcmread(shared_data / DICOM)
    assert str(ds.PatientName) == REAL_DICOM_IDENTIFIER  # the real file carries identifiers
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "DOE^JANE", "MRN8675309", "19450101"
    buf = io.BytesIO()
    ds.save_as(buf)
    tagged = buf.getvalue()
    identifiers = ("DOE", "JANE", "MRN8675309", "19450101", REAL_DICOM_IDENTIFIER)
    responses = []
    for data, expect in ((tagged, 200), ((shared_data / DICOM).read_bytes(), 200), (tagged[:4000], 422)):
        status, d = _post(server.url, [("cxr", "DOE_JANE_MRN8675309.dcm", data)])
        assert status == expect, d
        responses.append(json.dumps(d))
    assert any("predict #" in r.getMessage() for r in caplog.records)  # the service does log requests
    # PNG figures travel base64-encoded; a 3-letter identifier can occur in such a payload by chance
    # (it is not text in the figure), so the payloads are set aside before the search.
    payload = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")
    for text in [caplog.text, *responses]:
        text = payload.sub("<base64>", text)
        for identifier in identifiers:
            assert identifier not in text


MARKER = "ZQXMARK7"  # a valid DICOM CS value (uppercase letters and digits) found nowhere else
MARKER_UID = "1.2.826.0.1.8675309.4242"  # a UID-shaped marker


def _assert_no_marker(status: int, headers: dict, body: bytes, *markers: str) -> None:
    text = (body.decode("utf-8", "replace") + json.dumps(headers)).lower()
    for marker in markers:
        assert marker.lower() not in text, (status, body[:300])


def _tagged_dicom(shared: Path, tmp_path: Path, name: str, **values) -> tuple[Path, bytes]:
    """The real DICOM with patient identifiers and ``values`` set to markers."""
    import pydicom

    ds = pydicom.dcmread(shared / DICOM)
    ds.PatientName, ds.PatientID, ds.StudyDescription = f"{MARKER}^{MARKER}", MARKER, MARKER
    ds.InstitutionName, ds.ReferringPhysicianName = MARKER, MARKER
    for key, value in values.items():
        if key == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        else:
            setattr(ds, key, value)
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the odd values: that is the point
        ds.save_as(path, enforce_file_format=False)
    return path, path.read_bytes()


def test_error_responses_never_echo_file_values(server, shared_data, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    from cardiofusion.errors import ReadError
    from cardiofusion.io.cxr import read_cxr

    cases: list[tuple[str, list[tuple[str, str, bytes]], str]] = []
    # X-ray: Modality and Photometric Interpretation that the reader quotes in its reason
    path, data = _tagged_dicom(shared_data, tmp_path, "modality.dcm", Modality=MARKER)
    with pytest.raises(ReadError) as raised:
        read_cxr(path)
    assert MARKER in raised.value.reason  # the library's own message quotes the value ...
    cases.append(("cxr modality", [("cxr", f"{MARKER}.dcm", data)], "not a radiograph"))
    path, data = _tagged_dicom(shared_data, tmp_path, "photometric.dcm", PhotometricInterpretation=MARKER)
    with pytest.raises(ReadError) as raised:
        read_cxr(path)
    assert MARKER in raised.value.reason
    cases.append(("cxr photometric", [("cxr", "p.dcm", data)], "The X-ray file:"))
    _, data = _tagged_dicom(shared_data, tmp_path, "syntax.dcm", TransferSyntaxUID=MARKER_UID)
    cases.append(("cxr transfer syntax", [("cxr", "t.dcm", data)], "The X-ray file"))
    # ECG: DICOM waveform whose channel label and units are markers
    ds = pydicom.dcmread(get_testdata_file("waveform_ecg.dcm"))
    ds.PatientName, ds.PatientID = MARKER, MARKER
    for group in ds.WaveformSequence:
        for channel in group.ChannelDefinitionSequence:
            channel.ChannelLabel = MARKER
            channel.ChannelSensitivityUnitsSequence[0].CodeValue = MARKER
            channel.ChannelSensitivityUnitsSequence[0].CodeMeaning = MARKER
    buf = io.BytesIO()
    ds.save_as(buf)
    cases.append(("dicom ecg units", [("ecg", "e.dcm", buf.getvalue())], "unknown signal units"))
    # ECG: CSV whose column names, or one cell, are markers
    signal = np.round(np.random.default_rng(0).normal(0, 200, (2500, 12))).astype(int)
    rows = "\n".join(",".join(map(str, r)) for r in signal)
    header = ",".join(f"{MARKER}{i}" for i in range(12))
    cases.append(("csv columns", [("ecg", "c.csv", f"{header}\n{rows}\n".encode())], "no standard ECG lead"))
    lines = rows.split("\n")
    lines[7] = ",".join([MARKER] + lines[7].split(",")[1:])
    body = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6\n" + "\n".join(lines) + "\n"
    cases.append(("csv cell", [("ecg", "c.csv", body.encode())], "non-numeric value"))
    # ECG: NumPy archives whose entry names or units entry are markers
    npz = io.BytesIO()
    np.savez(npz, **{f"{MARKER}a": signal.T.astype(float), f"{MARKER}b": signal.T.astype(float)})
    cases.append(("npz entries", [("ecg", "n.npz", npz.getvalue())], "cannot find the ECG array"))
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f[f"{MARKER}a"], f[f"{MARKER}b"] = signal.T.astype(float), signal.T.astype(float)
    cases.append(("hdf5 datasets", [("ecg", "e.h5", (tmp_path / "e.h5").read_bytes())],
                  "cannot find the ECG dataset"))
    # ECG: a WFDB header naming a signal file that was not uploaded (its name is file content)
    hea = f"{MARKER} 1 500 5000\n{MARKER}.dat 16 200 16 0 0 0 0 I\n".encode()
    cases.append(("wfdb signal name", [("ecg", "r.hea", hea), ("ecg", "a.dat", b"\0" * 64),
                                       ("ecg", "b.dat", b"\0" * 64)], "needs its signal file"))

    for what, files, expected in cases:
        body, content_type = _multipart(files)
        status, headers, answer = _raw(server.url, "POST", "/api/predict", body, {"Content-Type": content_type})
        assert status in (415, 422), (what, status, answer[:300])
        message = json.loads(answer)["error"]
        assert expected in message, (what, message)
        _assert_no_marker(status, headers, answer, MARKER, MARKER_UID)  # ... the service's never does
    assert not _leftover_upload_dirs()


def test_public_messages_withhold_unknown_reasons():
    from cardiofusion.serve.messages import _READER_REASONS, public_error, public_read_error

    assert public_read_error(f"modality {MARKER} is not a radiograph (accepted: CR, DX, RG, OT)",
                             "The X-ray file") == ("The X-ray file: the DICOM modality is not a radiograph "
                                                   "(accepted: CR, DX, RG, OT)")
    unknown = public_read_error(f"something new about {MARKER}", "The ECG file")
    assert unknown.startswith("The ECG file cannot be read") and MARKER not in unknown
    assert MARKER not in public_error(f"signal quality: lead {MARKER} looks odd")
    assert public_error("give an ECG, an X-ray or both") == "give an ECG, an X-ray or both"
    assert public_error("this model (cooperative) needs an ECG and an X-ray").endswith("an X-ray")
    for _, message in _READER_REASONS:  # fixed sentences, nothing substituted
        assert "{" not in message and "%" not in message


# --------------------------------------------------------------------------------------------------
# Host header (DNS rebinding)
# --------------------------------------------------------------------------------------------------
def test_only_allowed_host_names_are_answered(server):
    port = server.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", "127.0.0.2"):
        status, headers, body = _raw(server.url, "GET", "/api/info", headers={"Host": host})
        assert status == 400 and b"model" not in body, (host, body[:200])
        assert headers["cache-control"] == "no-store"
    # a prediction request from a rebinding page is refused before the upload is read
    body, content_type = _multipart([("ecg", "a.csv", b"I,II\n1,2\n")])
    status, _, answer = _raw(server.url, "POST", "/api/predict", body,
                             {"Host": "evil.example", "Content-Type": content_type})
    assert status == 400 and b"Invalid host header" in answer
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        status, _, body = _raw(server.url, "GET", "/api/info", headers={"Host": host})
        assert status == 200 and json.loads(body)["modalities"] == ["ecg", "cxr"], host


def _asgi_status(app, host: str) -> int:
    """GET /healthz through the ASGI interface (no HTTP client needed)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/healthz", "raw_path": b"/healthz", "query_string": b"", "root_path": "",
             "headers": [(b"host", host.encode())], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


def test_allowed_hosts_option(setup, capsys):
    from cardiofusion.bundle import load
    from cardiofusion.cli import main
    from cardiofusion.serve import allowed_host_names, create_app

    assert allowed_host_names() == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_host_names("0.0.0.0", ["Screen.Hospital.org", "::1", "fe80::1", "*.ward.example"]) == [
        "localhost", "127.0.0.1", "[::1]", "screen.hospital.org", "[fe80::1]", "*.ward.example"]
    assert allowed_host_names("10.1.2.3")[-1] == "10.1.2.3"  # the bound address
    for bad in ("http://x.org", "x.org:8000", "*", "a b"):
        with pytest.raises(ValueError):
            allowed_host_names(None, [bad])
    app = create_app(load(setup["bundle"]), allowed_hosts=allowed_host_names("127.0.0.1", ["screen.hospital.org"]))
    assert _asgi_status(app, "screen.hospital.org:8000") == 200
    assert _asgi_status(app, "localhost:8000") == 200
    assert _asgi_status(app, "other.hospital.org") == 400
    assert main(["serve", str(setup["bundle"]), "--allowed-host", "http://screen.hospital.org"]) == 2
    assert "not a host name" in capsys.readouterr().err


def test_serve_refuses_a_precision_the_bundle_does_not_offer(setup, capsys):
    """``serve --precision`` goes through the same export-time offer as ``predict --precision``: a precision the
    bundle was not checked for is a one-line error before anything listens."""
    from cardiofusion.bundle.format import read_manifest
    from cardiofusion.bundle.precision import offered
    from cardiofusion.cli import main

    missing = [p for p in ("bf16", "int8") if p not in offered(read_manifest(setup["bundle"]))]
    assert missing, "the test bundle offers every precision; export one without bf16 or int8"
    assert main(["serve", str(setup["bundle"]), "--precision", missing[0]]) == 2
    err = capsys.readouterr().err
    assert f"does not offer precision {missing[0]}" in err and "serving" not in err
    assert main(["serve", str(setup["bundle"]), "--precision", "int8", "--runtime", "torch"]) == 2
    assert "ONNX Runtime only" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# The page in a real browser
# --------------------------------------------------------------------------------------------------
def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("headless Chromium not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # the system browser: Selenium Manager downloads nothing
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1500", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_browser_end_to_end(server, shared_data, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(server.url + "/")
        wait = WebDriverWait(browser, 90)
        wait.until(lambda b: "Model:" in b.find_element(By.ID, "model-line").text)
        hea = shared_data / PTBXL_RECORD.with_suffix(".hea")
        browser.find_element(By.ID, "ecg").send_keys(f"{hea}\n{hea.with_suffix('.dat')}")
        browser.find_element(By.ID, "cxr").send_keys(str(shared_data / DICOM))
        browser.find_element(By.ID, "submit").click()
        wait.until(ec.visibility_of_element_located((By.ID, "result")))
        wait.until(lambda b: b.execute_script(
            "return ['cxr-image', 'ecg-image'].every(id => document.getElementById(id).naturalWidth > 100)"))
        probability = float(browser.find_element(By.ID, "probability").text)
        assert 0 <= probability <= 1
        assert browser.find_element(By.ID, "decision").text.split()[0] in ("POSITIVE", "NEGATIVE")
        assert browser.find_element(By.ID, "modalities").text == "ECG + X-ray"
        browser.execute_script("document.getElementById('result').scrollIntoView()")
        shot = tmp_path / "screening_page.png"
        browser.save_screenshot(str(shot))
        keep = os.environ.get("CARDIOFUSION_SCREENSHOT_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
        assert pixels.shape[1] >= 1000 and pixels.std() > 20  # a rendered page with images, not a blank one

        # a wrong file gets a readable message on the page
        browser.get(server.url + "/")
        browser.find_element(By.ID, "ecg").send_keys(str(shared_data / "nih-fullres" / "00000001_000.png"))
        browser.find_element(By.ID, "submit").click()
        error = wait.until(ec.visibility_of_element_located((By.ID, "error")))
        assert "PNG image, not an ECG" in error.text
        assert not browser.find_element(By.ID, "result").is_displayed()
        browser.save_screenshot(str(tmp_path / "screening_error.png"))
        if keep:
            shutil.copy(tmp_path / "screening_error.png", Path(keep) / "screening_error.png")
    finally:
        browser.quit()


def test_serve_command_checks_its_options(setup, capsys):
    from cardiofusion.cli import main

    assert main(["serve", str(setup["bundle"]), "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be positive" in capsys.readouterr().err
    assert main(["serve", str(setup["bundle"]), "--port", "70000"]) == 2
    assert "--port must be 1-65535" in capsys.readouterr().err
