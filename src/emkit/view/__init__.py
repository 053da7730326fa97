"""`emkit view`: a local, read-only web app over run stores (answers, rates, labels).

`create_app(run_dirs)` builds the Starlette app; `serve(run_dirs, port)` binds it to
127.0.0.1 only (never another interface: the app shows model text and takes labels, and has
no login) and serves it with uvicorn until interrupted.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from emkit.view.app import CSP, create_app

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8765

__all__ = ["CSP", "DEFAULT_PORT", "LOOPBACK", "bind_loopback", "create_app", "default_labeller",
           "serve"]


def default_labeller() -> str:
    """Who labels, when not said: the login name (labels are per labeller)."""
    try:
        return getpass.getuser() or "reader"
    except (KeyError, OSError):
        return "reader"


def bind_loopback(port: int = DEFAULT_PORT) -> socket.socket:
    """A listening TCP socket on 127.0.0.1:`port` (0: any free port). The address is fixed
    here, not taken from the caller, so no option can expose the app to the network."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {LOOPBACK}:{port} ({exc.strerror}); "
                      "choose another --port") from None
    sock.listen(128)
    return sock


def serve(run_dirs: Sequence[Path], port: int = DEFAULT_PORT, labeller: str | None = None,
          echo: Callable[[str], None] = print) -> None:
    """Serve the app over `run_dirs` on 127.0.0.1:`port` until Ctrl-C; prints the URL first."""
    import uvicorn

    app = create_app(run_dirs, labeller or default_labeller())
    sock = bind_loopback(port)
    echo(f"emkit view: http://{LOOPBACK}:{sock.getsockname()[1]}/  (Ctrl-C stops it)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
