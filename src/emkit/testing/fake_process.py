"""The loopback OpenAI server as a process of its own: `python -m emkit.testing --port 8000
--model m` runs `main`, and `FakeServerProcess` starts that in a child process for benchmarks,
so the client does not share an interpreter lock with the server, as with a real remote API."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Self

from emkit.testing.fake_server import FakeOpenAI


class FakeServerProcess:
    """The same server in a child process (`with FakeServerProcess(latency_s=0.1) as p:`), so a
    benchmark's client does not share a GIL with it, as with a real remote API."""

    def __init__(self, latency_s: float = 0.0, models: tuple[str, ...] = ("gpt-4o-2024-08-06",),
                 startup_timeout_s: float = 60.0) -> None:
        self.args = [sys.executable, "-m", "emkit.testing", "--latency-ms",
                     str(latency_s * 1000), *[a for m in models for a in ("--model", m)]]
        self.startup_timeout_s = startup_timeout_s
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(
            self._proc.stdout.readline() if self._proc and self._proc.stdout else ""),
            daemon=True)
        reader.start()
        reader.join(self.startup_timeout_s)  # readline alone could wait forever
        line = got[0] if got else ""
        if not line.startswith("listening on "):
            why = (f"no output within {self.startup_timeout_s:g} s" if not got
                   else f"it printed {line!r}")
            self.__exit__()
            raise RuntimeError(f"fake server did not start: {why}")
        self.base_url = line.split("listening on ", 1)[1].strip()
        return self

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/emkit/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def chat_calls(self) -> int:
        return int(self.stats()["calls"].get("POST /v1/chat/completions", 0))

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()


def main(argv: list[str] | None = None) -> None:
    """Serve until killed; prints the base URL once listening."""
    parser = argparse.ArgumentParser(description="Serve the loopback OpenAI API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", action="append", default=[], help="served model id (repeat)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    server = FakeOpenAI(models=tuple(args.model) or None, latency_s=args.latency_ms / 1000,
                        host=args.host, port=args.port).start()
    print(f"listening on {server.base_url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
