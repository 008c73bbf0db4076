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
    request = urllib.request.Request(url + "/api/predict", data=body.getvalue(), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


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
        ([("cxr", "chest.dcm", os.urandom(4000))], {}, 415, "accepted: DICOM, PNG, JPEG"),
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
