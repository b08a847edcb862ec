"""``cnnlab serve [RUN]``: a web page to draw digits and watch the net classify them (a run's net, or the shipped
weights)."""

from __future__ import annotations

from cnnlab.cli.common import add_device, add_run, chosen_checkpoint, dataset_arg, model_arg, refuse_typed
from cnnlab.cli.predict import add_max_pixels
from cnnlab.serve import CANVAS_SIDE, DEFAULT_MAX_BYTES, MIN_SERVE_PIXELS
from cnnlab.serve.server import DEFAULT_DEVICE, DEFAULT_HOST, DEFAULT_PORT, MIN_UPLOAD_BYTES, check_serving, run_server


def register(sub) -> None:
    p = sub.add_parser("serve", help="a web page to draw digits (or clothes) and watch the net classify them",
                       description="Serve one page for a run's net, or without RUN for the shipped weights (draw a digit, or an item of clothing for a Fashion-MNIST net; see the class probabilities, the 28x28 image "
                                   "the net saw and, for Inception nets, each branch's activation energy) and "
                                   "a JSON endpoint POST /predict taking an image file. Ctrl+C stops it.")
    add_run(p, optional=True)
    p.add_argument("--model", "--pretrained", dest="model", metavar="MODEL", default="resnet", type=model_arg,
                   help="without RUN: serve cnnlab's shipped weights of this model (see 'cnnlab models') "
                        "(default: %(default)s)")
    p.add_argument("--dataset", default="mnist", type=dataset_arg,
                   help="without RUN: the shipped weights trained on mnist or fashion-mnist (default: %(default)s)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind, alone (its port is --port) (default: %(default)s, this machine only; "
                        "0.0.0.0 exposes it to the network, without authentication)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s)")
    add_device(p, default=DEFAULT_DEVICE, why="; one image per request")
    p.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"largest accepted request body, at least {MIN_UPLOAD_BYTES:,} (default: {DEFAULT_MAX_BYTES:,})")
    add_max_pixels(p, least=f"{MIN_SERVE_PIXELS:,} (the page's {CANVAS_SIDE}x{CANVAS_SIDE} canvas)")
    p.set_defaults(func=cmd_serve, before_torch=check_serve)


def check_serve(args) -> None:
    """What ``serve`` refuses before torch is imported (the command line's ``before_torch``): flags of the other mode,
    a bad host or limit, a taken port, each at once, not after torch's seconds of loading."""
    if args.run is None:
        refuse_typed(args, "checkpoint", "without RUN: it picks a run folder's last or best checkpoint")
    else:
        for dest in ("model", "dataset"):
            refuse_typed(args, dest, "with RUN: it picks the shipped weights, and the run's own net is served")
    check_serving(args.host, args.port, max_bytes=args.max_upload_bytes, max_pixels=args.max_pixels)


def cmd_serve(args) -> int:  # (after check_serve; run_server checks the port again as it binds it, before the net)
    run_server(args.run, model=args.model, dataset=args.dataset, which=chosen_checkpoint(args), host=args.host,
               port=args.port, device=args.device, max_bytes=args.max_upload_bytes, max_pixels=args.max_pixels)
    return 0
