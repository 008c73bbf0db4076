"""``cardiofusion serve``: the screening web page for clinicians over a model bundle."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from ..errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web page where a clinician uploads an ECG and/or X-ray and sees the prediction and heat maps",
        description="Serve a model bundle as a web page and JSON API (POST /api/predict). Listens on "
        "127.0.0.1 only unless --host says otherwise. Uploads are checked by content, limited in size, "
        "processed in memory (a private temporary folder, in /dev/shm where available, deleted at the end "
        "of each request) and never logged; logs hold no file names or patient identifiers.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="model bundle folder (cardiofusion export)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME", dest="allowed_hosts",
                   help="a host name clients use to reach the service (repeatable; '*.example.org' for a domain). "
                   "Requests whose Host header names another host get 400, which defeats DNS rebinding. Always "
                   "allowed: localhost, 127.0.0.1, [::1] and the --host address")
    p.add_argument("--max-upload-mb", type=float, default=50.0, help="largest request accepted, MB (default: 50)")
    p.add_argument("--runtime", choices=("torch", "onnx"), default=None,
                   help="model runtime (default: the bundle's choice, torch unless exported otherwise; onnx for int8)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                   help="arithmetic, as for predict: only a precision the bundle passed at export (default: the "
                        "bundle's choice)")
    p.add_argument("--no-explain", action="store_true", help="no heat maps (faster)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..serve import allowed_host_names, serve
    except ImportError as e:
        raise ConfigError(f"the web service needs the serve extra: pip install 'cardiofusion[serve]' ({e})") from None
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be 1-65535, got {args.port}")
    if not 0 < args.max_upload_mb < float("inf"):
        raise ConfigError("--max-upload-mb must be positive and finite")
    try:
        hosts = allowed_host_names(args.host, args.allowed_hosts)
    except ValueError as e:
        raise ConfigError(f"--host / --allowed-host: {e}") from None
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"cardiofusion: warning: listening on {args.host}, reachable from other machines; put the service "
              "behind TLS and authentication", file=sys.stderr)
    from ..bundle.format import read_manifest

    from ..bundle.precision import resolve

    # a missing or damaged bundle, or a precision / runtime it does not offer, is an error before "serving"
    resolve(read_manifest(args.bundle), args.precision, args.runtime)
    print(f"cardiofusion: serving {args.bundle} on http://{args.host}:{args.port}/ (Ctrl+C to stop); "
          f"accepted host names: {', '.join(hosts)}", file=sys.stderr)
    serve(args.bundle, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, runtime=args.runtime,
          explain=not args.no_explain, log_level=args.log_level, allowed_hosts=args.allowed_hosts,
          precision=args.precision)
    return 0
