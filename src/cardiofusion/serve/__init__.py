"""The screening web page and API (``cardiofusion serve BUNDLE``); needs the ``serve`` extra
(FastAPI, uvicorn, python-multipart).  See :mod:`cardiofusion.serve.app`."""

from __future__ import annotations

from .app import (
           DEFAULT_ALLOWED_HOSTS,
           DEFAULT_MAX_UPLOAD_MB,
           ScreeningService,
           allowed_host_names,
           create_app,
           parse_multipart,
           serve,
)
from .sniff import Upload, UploadError, sniff

__all__ = ["DEFAULT_ALLOWED_HOSTS", "DEFAULT_MAX_UPLOAD_MB", "ScreeningService", "Upload", "UploadError",
           "allowed_host_names", "create_app", "parse_multipart", "serve", "sniff"]
