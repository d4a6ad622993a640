"""What every `flowgate bench` that starts its own `flowgate serve` shares: a free port, and waiting for it."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_ready(http: httpx.AsyncClient, server: subprocess.Popen | None, timeout_s: float) -> None:
    """Until /ready answers 200; fails at once if the server process exits (None: a server we did not start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"flowgate serve exited with {server.returncode}")
        try:
            if (await http.get("/ready", timeout=5)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("flowgate serve did not become ready")
