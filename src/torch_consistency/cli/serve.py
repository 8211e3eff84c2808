"""`cm serve`: a local web page for real-time generation and editing with a checkpoint (served by uvicorn)."""

import argparse
import socket
from pathlib import Path

EXAMPLES = """
examples:
  cm serve --checkpoint runs/mnist-cd                      # http://127.0.0.1:8000
  cm serve --checkpoint runs/mnist-cd --port 8080 --data ../data/mnist   # held-out images from a moved data folder
  cm serve --checkpoint runs/cifar-cd --device cuda --host 0.0.0.0       # reachable from other machines
"""


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "serve",
        help="a local web page for generation and editing",
        description="Serve a page (Generate and Edit tabs) and a JSON API (POST /api/generate, POST /api/edit, "
        "GET /api/model) for a checkpoint, loaded once. Every result comes with the settings and the cm sample "
        "or cm edit command that reproduce it bit for bit. Binds to 127.0.0.1 unless --host says otherwise.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder, or a run folder (newest)")
    parser.add_argument("--weights", help="weight set: online, target or ema-RATE (default: the first EMA)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (default cpu)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    parser.add_argument("--data", help="where the run's data lies now, for held-out images (default: its data.path)")
    parser.set_defaults(run=run)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (ConfigError if it cannot be). Made with proto = IPPROTO_TCP, not 0: asyncio
    sets TCP_NODELAY only on the connections of such a socket, and without it a response's body waits behind its
    headers for the client's delayed ACK (40 ms on Linux) on a kept-alive connection."""

    from ..errors import ConfigError

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return listener


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..errors import ConfigError
    from ..model import load
    from ..serve import create_app

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must lie in 0 … 65535, got {args.port}")
    model = load(args.checkpoint, args.weights, args.device)
    app = create_app(model, data_path=args.data)
    listener = listening_socket(args.host, args.port)
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model.method} model {model.checkpoint} on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[listener])
    return 0
