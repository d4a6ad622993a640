"""A screenshot of a template executed in n8n's editor: a real `n8n start`, a real run against a live flowgate,
the execution opened in headless Chromium (Debian's `chromium`, driven over the DevTools protocol).

    FLOWGATE_BASE_URL=http://127.0.0.1:8000 python integrations/n8n/e2e/screenshot.py docs/n8n-agent.png

It imports the templates into a fresh n8n home, executes one (`--workflow`, default the Chat Completions
agent), creates the instance owner, logs in and captures the execution's canvas.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.gateway.conftest import free_port
from tests.integrations.n8n_harness import N8n, install

OWNER = {"email": "owner@flowgate.example", "firstName": "flow", "lastName": "gate",
         "password": "Screenshot-only-1"}


class Browser:
    """Headless Chromium over the DevTools protocol: one page, commands answered in order."""

    def __init__(self, width: int, height: int):
        port = free_port()
        self.profile = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--remote-debugging-port={port}", f"--user-data-dir={self.profile.name}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json", timeout=2).json()
                page = next(p for p in pages if p["type"] == "page")
                break
            except (httpx.TransportError, StopIteration, ValueError):
                assert time.monotonic() < deadline, "chromium did not start"
                time.sleep(0.5)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)
        self.next_id = 0

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self.profile.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--workflow", default="flowgate02AgtCcp")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="n8n-screenshot-"))
    n8n = N8n(install(), home, extra_env={
        "FLOWGATE_BASE_URL": os.environ.get("FLOWGATE_BASE_URL", "http://127.0.0.1:8000"),
        "FLOWGATE_API_KEY": os.environ.get("FLOWGATE_API_KEY", "unused"),
        "N8N_PERSONALIZATION_ENABLED": "false",
    })
    n8n.import_all()
    run = n8n.execute(args.workflow)
    assert run.error is None, run.error

    port = free_port()
    server = n8n.start(port, home / "n8n.log")
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            http.post("/rest/owner/setup", json=OWNER).raise_for_status()
            cookie = http.cookies["n8n-auth"]
            executions = http.get("/rest/executions", params={
                "filter": json.dumps({"workflowId": args.workflow})}).json()["data"]["results"]
        execution_id = executions[0]["id"]
        browser = Browser(args.width, args.height)
        try:
            browser.send("Network.enable")
            browser.send("Network.setCookie", name="n8n-auth", value=cookie, domain="127.0.0.1", path="/")
            browser.send("Emulation.setDeviceMetricsOverride", width=args.width, height=args.height,
                         deviceScaleFactor=1, mobile=False)
            browser.send("Page.navigate", url=f"{url}/workflow/{args.workflow}/executions/{execution_id}")
            time.sleep(15)  # the editor loads, then draws the execution's canvas
            shot = browser.send("Page.captureScreenshot", format="png")
            args.out.write_bytes(base64.b64decode(shot["data"]))
        finally:
            browser.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    print(f"{args.out}: execution {execution_id} of {args.workflow} in n8n {url}")


if __name__ == "__main__":
    main()
