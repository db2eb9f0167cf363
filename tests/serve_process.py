"""`bloomforge serve` as a user runs it: the command in its own process on a free local port.

with serve_process(ckpt, "--max-batch", "32") as url:
    httpx.get(url + "/health")
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_process(ckpt: Path, *flags: str, timeout: float = 120) -> Iterator[str]:
    """The server's base URL once /health answers; the process is stopped on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "bloomforge", "serve", str(ckpt), "--port", str(port), *flags]
    # a file, not a pipe: a chatty server never blocks on it
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(log.read().decode()[-2000:])
                assert time.monotonic() < deadline, "bloomforge serve did not start"
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
