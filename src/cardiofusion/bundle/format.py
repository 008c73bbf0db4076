"""The on-disk model bundle: a folder with safetensors weights, an optional ONNX graph and a JSON manifest.

Layout (format version :data:`FORMAT_VERSION`)::

    BUNDLE/
      manifest.json       everything prediction needs (see :func:`cardiofusion.bundle.export_bundle`),
                          per-file SHA-256 and size, and ``content_hash``
      model.safetensors   the model's state dict (tensors only; no pickle)
      model.onnx          the whole fused model for ONNX Runtime (optional)
      generator.safetensors  an ECG -> X-ray generator (optional; its spec in the manifest's ``generator``)

``content_hash`` is ``"sha256:<hex>"`` of the canonical JSON of the manifest without that key; the
manifest lists the SHA-256 and byte size of every file, so the hash covers the weights too.  Reading a
bundle (:func:`read_manifest`, :func:`verify_files`) never unpickles anything: the manifest is JSON, the
weights go through ``safetensors.torch.load_file``.  A bundle that is incomplete, truncated, altered or
written by an incompatible format version is refused with a one-line :class:`BundleError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..configfile import check_regular_file
from ..errors import ReadError

#: Bundle layout version written by this library; readers refuse newer ones.
FORMAT_VERSION = 1
#: Value of the manifest's ``format`` key.
FORMAT_NAME = "cardiofusion-bundle"

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ONNX_GRAPH = "model.onnx"
#: The optional ECG -> X-ray generator (paper 003 stage 4) of an ECG-only bundle.
GENERATOR_WEIGHTS = "generator.safetensors"
#: How every generated image is labelled (file, figure and result).
GENERATED_LABEL = "GENERATED from the ECG by a diffusion model: a synthetic image, NOT a real X-ray of this patient"

_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class BundleError(ReadError):
    """A model bundle cannot be used (missing, corrupt, truncated, altered or incompatible)."""


def canonical_json(data: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace) used for hashing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_hash(manifest: dict[str, Any]) -> str:
    """``sha256:<hex>`` of a manifest without its ``content_hash`` key (files are covered by their digests)."""
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    return "sha256:" + hashlib.sha256(canonical_json(body)).hexdigest()


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256": hex, "bytes": size}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"sha256": h.hexdigest(), "bytes": size}


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the file digests and the content hash to ``manifest`` and write ``directory/manifest.json``."""
    manifest = dict(manifest)
    manifest["files"] = {name: file_digest(directory / name)
                         for name in sorted(p.name for p in directory.iterdir() if p.name != MANIFEST)}
    manifest["content_hash"] = content_hash(manifest)
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


def read_manifest(bundle: str | os.PathLike) -> dict[str, Any]:
    """Read and check a bundle's manifest: format, version, content hash. Files are checked by
    :func:`verify_files`."""
    root = Path(bundle)
    if not root.exists():
        raise BundleError(root, "no such model bundle")
    if not root.is_dir():
        raise BundleError(root, "not a model bundle folder (cardiofusion export writes a folder)")
    path = root / MANIFEST
    if not path.exists():
        raise BundleError(root, f"not a cardiofusion model bundle (no {MANIFEST})")
    try:
        check_regular_file(path, "manifest")
    except ReadError as e:
        raise BundleError(path, f"{e.reason}; not a cardiofusion bundle") from None
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise BundleError(path, "manifest too large; not a cardiofusion bundle")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise BundleError(path, "corrupt manifest, nested too deeply to be a bundle manifest; "
                                "re-export the bundle") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(path, f"corrupt manifest, not valid JSON ({e}); re-export the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(path, f"not a cardiofusion model bundle manifest (format is not {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(path, f"incompatible bundle: format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise BundleError(path, f"incompatible bundle: format version {version} is newer than this cardiofusion "
                                f"reads (up to {FORMAT_VERSION}); upgrade cardiofusion "
                                f"(bundle written by cardiofusion {manifest.get('versions', {}).get('cardiofusion', '?')})")
    if version < 1:
        raise BundleError(path, f"incompatible bundle: unknown format version {version}")
    expected = manifest.get("content_hash")
    if not isinstance(expected, str) or not expected.startswith("sha256:"):
        raise BundleError(path, "manifest has no content_hash; the bundle is incomplete or was edited")
    try:
        actual = content_hash(manifest)
    except (TypeError, ValueError, RecursionError) as e:
        raise BundleError(path, f"corrupt manifest ({type(e).__name__}: {e})") from None
    if actual != expected:
        raise BundleError(path, f"content hash mismatch: the manifest was modified after export "
                                f"(expected {expected[:19]}..., got {actual[:19]}...); refusing to load")
    if not isinstance(manifest.get("files"), dict) or WEIGHTS not in manifest["files"]:
        raise BundleError(path, f"manifest lists no {WEIGHTS}")
    return manifest


def is_bundle_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that a cardiofusion export wrote: a real folder (not a symlink) holding
    a regular ``manifest.json`` whose ``format`` is :data:`FORMAT_NAME`.  Used to decide what
    ``export --overwrite`` may replace; the content hash is not checked (a damaged bundle may be replaced)."""
    root = Path(path)
    manifest = root / MANIFEST
    try:
        if root.is_symlink() or not root.is_dir() or manifest.is_symlink():
            return False
        check_regular_file(manifest, "manifest", max_bytes=_MAX_MANIFEST_BYTES)
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, ReadError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def verify_files(bundle: str | os.PathLike, manifest: dict[str, Any], names: list[str] | None = None) -> None:
    """Check size and SHA-256 of the bundle's files against the manifest (all, or ``names``)."""
    root = Path(bundle)
    for name in names if names is not None else sorted(manifest["files"]):
        info = manifest["files"].get(name)
        if info is None:
            raise BundleError(root / name, "not listed in the bundle manifest")
        if Path(name).name != name:
            raise BundleError(root, f"manifest lists a file outside the bundle ({name!r})")
        path = root / name
        if not path.is_file():
            raise BundleError(path, "missing from the bundle; copy the whole bundle folder")
        size = path.stat().st_size
        if size != info.get("bytes"):
            what = "truncated" if size < int(info.get("bytes") or 0) else "larger than exported"
            raise BundleError(path, f"{what}: {size} bytes, expected {info.get('bytes')}; copy the bundle again")
        digest = file_digest(path)["sha256"]
        if digest != info.get("sha256"):
            raise BundleError(path, f"content hash mismatch: SHA-256 {digest[:12]}... differs from the manifest's "
                                    f"{str(info.get('sha256'))[:12]}...; the file was altered or corrupted, refusing to load")


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST",
    "GENERATED_LABEL",
    "GENERATOR_WEIGHTS",
    "ONNX_GRAPH",
    "WEIGHTS",
    "BundleError",
    "content_hash",
    "file_digest",
    "is_bundle_folder",
    "read_manifest",
    "verify_files",
    "write_manifest",
]
