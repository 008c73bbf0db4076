"""The screening web service: one page for clinicians and a JSON API, over a loaded model bundle.

``create_app(screener)`` returns an ASGI app (FastAPI):

* ``GET /`` -- the page (inline HTML/CSS/JS, nothing fetched from elsewhere);
* ``GET /api/info`` -- the model: name, modalities, label definition, threshold and how it was chosen,
  validation metrics;
* ``POST /api/predict`` -- multipart form: ``ecg`` (one file, or a WFDB header with its signal file,
  or a ZIP of both), ``cxr`` (one file), optional ``ecg_fs`` / ``ecg_units`` / ``ecg_resolution_uv`` for
  headerless ECG files and ``explain`` (``1``/``0``, default 1).  Returns the prediction's
  ``probability``, ``decision``, ``modalities``, ``scores``, ``threshold``, ``warnings`` and ``images``
  (``{"cxr": "data:image/png;base64,...", "ecg": ...}``).  Bundles of other tasks return
  ``Prediction.to_dict`` of that kind (``task_kind``, ``outputs`` per class / label / target, ``summary``,
  ...) and images keyed ``"cxr:<target>"`` / ``"ecg:<target>"``; ``/api/info`` then has ``task``.
* ``GET /healthz``.

Privacy and safety:

* the request body is read into memory with a size limit (413 beyond it; ``Content-Length`` is checked
  first) and parsed there -- Starlette's form parser, which spools large parts to disk, is not used;
* file types are recognised from the bytes (:mod:`.sniff`), never from the names (415 for a wrong or
  unknown type, 422 for a file of the right type that cannot be read);
* the readers need paths, so during the request the files live in a private folder (mode 0700, in
  ``/dev/shm`` -- memory -- where it exists) that is deleted before the response is sent; heat-map PNGs
  are made there too and returned inline;
* logs hold a request number, sizes, modalities, status and timing -- never file names, paths, patient
  identifiers or DICOM tags; responses never echo file names nor any value read from a file: reader
  errors are mapped to fixed messages (:mod:`.messages`), so a DICOM Modality, a CSV cell or a channel
  label never reaches the page;
* only requests whose ``Host`` header names an allowed host are answered (400 otherwise; Starlette's
  ``TrustedHostMiddleware``), which defeats DNS rebinding against the service on 127.0.0.1;
* ``Cache-Control: no-store`` and a strict content security policy on every response.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..errors import CardiofusionError, ReadError
from .messages import public_error, public_read_error
from .page import PAGE_HTML
from .sniff import Upload, UploadError, layout_cxr, layout_ecg

logger = logging.getLogger("cardiofusion.serve")

DEFAULT_MAX_UPLOAD_MB = 50.0
_FIELDS = ("ecg_fs", "ecg_units", "ecg_resolution_uv", "explain")
_MAX_PARTS = 24
_DRAIN_FACTOR = 4
#: ``Host`` header names always accepted (this machine); see :func:`allowed_host_names`.
DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def _private_dir(needed_bytes: int = 0) -> Path:
    """A fresh folder only this process can read (mode 0700), in memory (``/dev/shm``) when the system
    has it with room to spare (containers often give it 64 MB), else in the default temporary folder."""
    base = None
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK):
        try:
            st = os.statvfs(shm)
            if st.f_bavail * st.f_frsize > 2 * needed_bytes + (64 << 20):
                base = shm
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="cardiofusion-upload-", dir=base))


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, in memory, at most ``limit`` bytes.

    A larger body is read to its end and discarded (up to ``_DRAIN_FACTOR`` times the limit) so that the
    browser receives the 413 message instead of a broken connection; nothing of it is kept.
    """
    length = request.headers.get("content-length")
    declared = None
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise UploadError(400, "bad Content-Length header") from None
    body = bytearray()
    total = 0
    too_large = declared is not None and declared > limit
    if too_large and declared > _DRAIN_FACTOR * limit:
        raise UploadError(413, _too_large(declared, limit))
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            too_large = True
            body = bytearray()  # drop what was kept
            if total > _DRAIN_FACTOR * limit:
                break
        elif not too_large:
            body += chunk
    if too_large:
        raise UploadError(413, _too_large(max(total, declared or 0), limit))
    return bytes(body)


def _too_large(size: int, limit: int) -> str:
    return f"upload too large: {size / 1e6:.1f} MB (limit {limit / 1e6:.0f} MB)"


class _WithholdDetails(logging.Filter):
    """Replace DICOM decoder log messages, which can quote element values, by a generic line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = "DICOM decoder message withheld (may quote patient data)", ()
        return True


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, list[Upload]], dict[str, str]]:
    """In-memory ``multipart/form-data`` parsing: ``({field: [files]}, {field: text})``."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(415, "send the files as multipart/form-data")
    parts: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        if len(parts) >= _MAX_PARTS:
            raise UploadError(422, "too many form parts")
        state.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
        parts.append({"name": disp.get(b"name", b"").decode("utf-8", "replace"),
                      "filename": disp.get(b"filename", b"").decode("utf-8", "replace") if b"filename" in disp else None,
                      "data": bytes(state["data"])})

    parser = MultipartParser(params[b"boundary"], {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed bodies raise parser-specific errors
        raise UploadError(400, f"malformed multipart body ({type(e).__name__})") from None
    files: dict[str, list[Upload]] = {}
    fields: dict[str, str] = {}
    for part in parts:
        if part["filename"] is not None:
            if part["data"]:  # an empty file input sends a part with no bytes: ignore it
                files.setdefault(part["name"], []).append(Upload(part["data"], part["filename"]))
        elif part["name"] in _FIELDS:
            fields[part["name"]] = part["data"].decode("utf-8", "replace").strip()
    return files, fields


def _number(fields: dict[str, str], name: str, label: str) -> float | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    try:
        x = float(value)
    except ValueError:
        raise UploadError(422, f"{label} must be a number, got {value[:20]!r}") from None
    if not (x > 0 and math.isfinite(x)):
        raise UploadError(422, f"{label} must be positive")
    return x


def _clean_reason(e: CardiofusionError, what: str) -> str:
    """A library error as the page may show it: ``"The X-ray file: <fixed message>"``.

    Reader reasons can quote the file (DICOM values, CSV cells, channel labels, decoder text), so they
    are mapped to fixed messages (:mod:`.messages`); nothing of the reader's text is passed through.
    """
    if isinstance(e, ReadError):
        return public_read_error(e.reason, what)
    return public_error(str(e))


def _which(e: ReadError, folder: Path, ecg_files: dict | None, cxr_files: dict | None) -> str:
    """Which upload a reader error is about (from the name this module gave the file)."""
    name = Path(e.path).name if e.path else ""
    if ecg_files and (name in ecg_files or any(name == Path(n).stem for n in ecg_files)):
        return "The ECG file"
    if cxr_files and name in cxr_files:
        return "The X-ray file"
    return "The upload"


class ScreeningService:
    """Request handling around one :class:`~cardiofusion.bundle.Screener` (thread-safe: one request at a
    time uses the model, since explanations hook into it)."""

    def __init__(self, screener: Any, *, max_upload_bytes: int, explain: bool = True):
        self.screener = screener
        self.max_upload_bytes = int(max_upload_bytes)
        self.explain = bool(explain)
        self._lock = threading.Lock()
        self._counter = itertools.count(1)

    def info(self) -> dict[str, Any]:
        d = self.screener.describe()
        d["max_upload_mb"] = round(self.max_upload_bytes / 1e6, 1)
        d["explanations"] = self.explain
        d["ecg_reader_defaults"] = self.screener.reader_defaults.to_dict()
        return d

    def predict(self, files: dict[str, list[Upload]], fields: dict[str, str]) -> dict[str, Any]:
        """Validate, lay out in a private folder, predict, explain; the folder is gone on return."""
        ecg_up, cxr_up = files.get("ecg", []), files.get("cxr", [])
        if not ecg_up and not cxr_up:
            raise UploadError(422, "choose an ECG file, an X-ray file, or both")
        if len(cxr_up) > 1:
            raise UploadError(422, "upload one X-ray at a time")
        ecg_files = layout_ecg(ecg_up, self.max_upload_bytes) if ecg_up else None
        cxr_files = layout_cxr(cxr_up[0]) if cxr_up else None
        units = fields.get("ecg_units", "").strip() or None
        if units is not None and units not in ("mV", "uV", "counts"):
            raise UploadError(422, "ECG units must be mV, uV or counts")
        options = {"ecg_fs": _number(fields, "ecg_fs", "ECG sampling rate"), "ecg_units": units,
                   "ecg_resolution_uv": _number(fields, "ecg_resolution_uv", "ECG resolution")}
        want_explain = self.explain and fields.get("explain", "1").strip().lower() not in ("0", "false", "no", "off")
        folder = _private_dir(sum(len(v) for group in (ecg_files, cxr_files) for v in (group or {}).values()))
        try:
            ecg_path = cxr_path = None
            for group in (ecg_files, cxr_files):
                for name, data in (group or {}).items():
                    (folder / name).write_bytes(data)
            if ecg_files:
                ecg_path = folder / next(n for n in ecg_files if n.endswith(".hea") or n.startswith("ecg."))
            if cxr_files:
                cxr_path = folder / next(iter(cxr_files))
            with self._lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reader warnings can quote file content; never let them out
                try:
                    patient = self.screener.prepare(ecg_path, cxr_path, **options)
                except ReadError as e:
                    raise UploadError(422, _clean_reason(e, _which(e, folder, ecg_files, cxr_files))) from None
                except CardiofusionError as e:
                    raise UploadError(422, _clean_reason(e, "The upload")) from None
                from ..bundle.screener import PredictionError

                try:
                    result = self.screener.predict_prepared([patient])[0]
                except PredictionError:  # NaN / infinite score: an error, never "probability nan, negative"
                    logger.error("the model gave a non-finite score; the bundle is probably broken")
                    raise UploadError(500, "the model gave no valid score (not a finite number), so no decision "
                                           "was made; the model bundle may be broken: tell the service's "
                                           "administrator") from None
                images: dict[str, str] = {}
                if want_explain:
                    try:
                        paths = self.screener.explain(patient, folder / "explain", result, stem="")
                        images = {k: "data:image/png;base64," + base64.b64encode(Path(p).read_bytes()).decode()
                                  for k, p in paths.items()}
                    except CardiofusionError as e:  # the message may quote the input: not passed on
                        logger.warning("heat maps failed (%s)", type(e).__name__)
                        result.warnings.append("no heat maps: the explanation could not be computed for this input")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        out = result.to_dict()
        out["images"] = images
        return out


def allowed_host_names(host: str | None = None, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` header names the service answers: :data:`DEFAULT_ALLOWED_HOSTS`, the address it is
    bound to (unless a wildcard address such as ``0.0.0.0``) and ``extra``.  IPv6 addresses are given
    bracketed (``[::1]``), as they appear in a ``Host`` header.  Raises ``ValueError`` for a name that
    cannot appear in a ``Host`` header."""
    names: list[str] = []
    for name in (*DEFAULT_ALLOWED_HOSTS, *([host] if host else []), *extra):
        name = str(name).strip().lower()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            address = None
        if address is not None:
            if address.is_unspecified:
                continue  # 0.0.0.0 / :: is where it listens, not a name clients use
            name = f"[{address.compressed}]" if address.version == 6 else address.compressed
        elif not _HOST_NAME.match(name):
            raise ValueError(f"not a host name: {name!r} (give a name or address, without port or scheme)")
        if name not in names:
            names.append(name)
    return names


def create_app(screener: Any, *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, explain: bool = True,
               allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The FastAPI app serving ``screener`` (a loaded bundle, :func:`cardiofusion.load`).

    Only requests whose ``Host`` header names one of ``allowed_hosts`` are answered (400 otherwise), so a
    web page elsewhere cannot reach the service through DNS rebinding; default
    :func:`allowed_host_names` (``localhost``, ``127.0.0.1``, ``[::1]``).
    """
    hosts = allowed_host_names() if allowed_hosts is None else list(allowed_hosts)
    service = ScreeningService(screener, max_upload_bytes=int(max_upload_mb * 1e6), explain=explain)
    dicom_log = logging.getLogger("pydicom")
    if not any(isinstance(f, _WithholdDetails) for f in dicom_log.filters):
        dicom_log.addFilter(_WithholdDetails())
    app = FastAPI(title="cardiofusion screening", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.allowed_hosts = hosts
    # added before the header middleware below, so that its 400 answer carries those headers too
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        return response

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return service.info()

    @app.post("/api/predict")
    async def predict(request: Request) -> JSONResponse:
        number = next(service._counter)
        t0 = time.perf_counter()
        size = 0
        try:
            body = await _read_body(request, service.max_upload_bytes)
            size = len(body)
            files, fields = parse_multipart(body, request.headers.get("content-type", ""))
            del body
            result = await run_in_threadpool(service.predict, files, fields)
        except UploadError as e:
            logger.info("predict #%d: refused, status %d, %d bytes, %.0f ms", number, e.status, size,
                        1000 * (time.perf_counter() - t0))
            return JSONResponse({"error": e.message}, status_code=e.status)
        except Exception as e:  # noqa: BLE001 - never a traceback (or a path) in the response
            logger.error("predict #%d: internal error %s, %d bytes", number, type(e).__name__, size)
            return JSONResponse({"error": "internal error while predicting; see the server log"}, status_code=500)
        logger.info("predict #%d: ok, modalities %s, %d bytes, %.0f ms", number, "+".join(result["modalities"]),
                    size, 1000 * (time.perf_counter() - t0))
        return JSONResponse(result)

    return app


def serve(bundle: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, runtime: str | None = None, explain: bool = True,
          log_level: str = "info", allowed_hosts: Sequence[str] = (), precision: str | None = None) -> None:
    """Load a bundle and serve the page with uvicorn (blocks until interrupted).

    Requests must name the service by ``localhost``, a loopback address, ``host`` or one of
    ``allowed_hosts`` (see :func:`allowed_host_names`). ``runtime`` and ``precision`` default to the bundle's
    stored choice; only a precision the bundle passed at export is accepted (:func:`cardiofusion.load`)."""
    import uvicorn

    from ..bundle import load

    screener = load(bundle, runtime=runtime, precision=precision)
    app = create_app(screener, max_upload_mb=max_upload_mb, explain=explain,
                     allowed_hosts=allowed_host_names(host, allowed_hosts))
    if not logger.handlers:  # the service's own request lines, beside uvicorn's access log
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(log_level.upper())
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_MAX_UPLOAD_MB", "ScreeningService", "allowed_host_names", "create_app",
           "parse_multipart", "serve"]
