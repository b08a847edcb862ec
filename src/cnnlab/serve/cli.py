"""The ``cnnlab serve`` command: parse arguments, build the app, run it with uvicorn."""

from __future__ import annotations

import ipaddress
import socket
import sys

from cnnlab.errors import CnnlabError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def add_parser(sub) -> None:
    from cnnlab.serve import DEFAULT_MAX_BYTES

    p = sub.add_parser("serve", help="a web page to draw digits and watch the net classify them",
                       description="Serve one page (draw a digit; see the class probabilities, the 28x28 image "
                                   "the net saw and, for Inception nets, each branch's activation energy) and "
                                   "a JSON endpoint POST /predict taking an image file.")
    p.add_argument("run", help="run directory or checkpoint (.pt) written by cnnlab")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run directory (default: last)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default: {DEFAULT_HOST}, this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default: cpu; one image at a time)")
    p.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"largest accepted request body (default: {DEFAULT_MAX_BYTES:,})")
    p.set_defaults(func=cmd_serve)


def check_port_free(host: str, port: int) -> None:
    """Fail early with a one-line error instead of uvicorn's log and exit."""
    if not 0 <= port <= 65535:
        raise CnnlabError(f"--port must be in 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise CnnlabError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port or --host") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args) -> int:
    import uvicorn

    from cnnlab.predict import Predictor
    from cnnlab.serve.app import create_app

    if args.max_upload_bytes < 1024:
        raise CnnlabError(f"--max-upload-bytes must be at least 1024, got {args.max_upload_bytes}")
    predictor = Predictor.from_run(args.run, which=args.checkpoint, device=args.device)
    app = create_app(predictor, max_bytes=args.max_upload_bytes)
    check_port_free(args.host, args.port)
    if not _is_loopback(args.host):
        print(f"cnnlab: warning: serving on {args.host}, reachable from other machines; there is no authentication",
              file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {predictor.model_name} from {predictor.source} on http://{shown}:{args.port}/  (Ctrl+C stops)",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
