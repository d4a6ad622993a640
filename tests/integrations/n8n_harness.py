"""A real n8n (installed by integrations/n8n/e2e/install.sh) driven through its CLI: import the templates and
credentials, `n8n execute --id` a workflow and read its run data, or `n8n start` it for webhooks and chat."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.gateway.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
N8N_DIR = ROOT / "integrations/n8n"
INSTALL = N8N_DIR / "e2e/install.sh"


def install() -> Path:
    """The n8n cache dir (installs on the first call: ~13 min on 2 cores)."""
    done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class Execution:
    """One workflow run: {node name: [runs]}, each run's output items by connection type."""

    workflow_id: str
    data: dict
    seconds: float

    @property
    def error(self) -> str | None:
        error = self.data["data"]["resultData"].get("error")
        return None if error is None else error.get("message", str(error))

    @property
    def run_data(self) -> dict[str, list[dict]]:
        return self.data["data"]["resultData"]["runData"]

    def items(self, node: str, kind: str = "main", run: int = -1) -> list[dict]:
        """The JSON of the items a node emitted on its first output in one run."""
        outputs = self.run_data[node][run]["data"][kind]
        return [item["json"] for item in outputs[0]] if outputs and outputs[0] else []

    def runs(self, node: str) -> int:
        return len(self.run_data.get(node, []))


@dataclass
class N8n:
    cache: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> str:
        return str(self.cache / "n8n/node_modules/.bin/n8n")

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.cache / 'node/bin'}:{os.environ['PATH']}",
            "N8N_USER_FOLDER": str(self.home),
            "N8N_ENCRYPTION_KEY": "flowgate-e2e-not-a-secret",
            # Nothing outside this machine: no telemetry, version checks or template gallery.
            "N8N_DIAGNOSTICS_ENABLED": "false",
            "N8N_VERSION_NOTIFICATIONS_ENABLED": "false",
            "N8N_TEMPLATES_ENABLED": "false",
            # What the templates need (docs/n8n.md): $env in expressions, crypto in the Code node.
            "N8N_BLOCK_ENV_ACCESS_IN_NODE": "false",
            "NODE_FUNCTION_ALLOW_BUILTIN": "crypto",
            "N8N_LOG_LEVEL": "info",  # `n8n execute` prints its result through the logger at info
            # Each n8n process runs a task-runner broker (default port 5679): give each its own.
            "N8N_RUNNERS_BROKER_PORT": str(free_port()),
            **self.extra_env,
        }

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        done = subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"n8n {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def import_all(self) -> None:
        """The credentials and every template (re-importing overwrites them by id)."""
        self.cli("import:credentials", f"--input={N8N_DIR / 'credentials/flowgate.json'}")
        self.cli("import:workflow", "--separate", f"--input={N8N_DIR / 'workflows'}")

    def execute(self, workflow_id: str, timeout: float = 900) -> Execution:
        start = time.monotonic()
        done = subprocess.run([self.bin, "execute", f"--id={workflow_id}", "--rawOutput"], env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        seconds = time.monotonic() - start
        # Log lines (task runner, license) come before the JSON document.
        start_of_json = done.stdout.find("\n{\n")
        text = done.stdout if done.stdout.startswith("{") else done.stdout[start_of_json + 1:]
        assert start_of_json >= 0 or done.stdout.startswith("{"), (
            f"n8n execute {workflow_id} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        data, _ = json.JSONDecoder().raw_decode(text)
        return Execution(workflow_id, data, seconds)

    def start(self, port: int, log_path: Path) -> subprocess.Popen:
        env = {**self.env, "N8N_PORT": str(port), "N8N_LISTEN_ADDRESS": "127.0.0.1",
               "WEBHOOK_URL": f"http://127.0.0.1:{port}/",
               "N8N_SECURE_COOKIE": "false"}
        with open(log_path, "wb") as log:
            process = subprocess.Popen([self.bin, "start"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert process.poll() is None, log_path.read_text()[-4000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz/readiness", timeout=2).status_code == 200:
                    return process
            except httpx.TransportError:
                pass
            time.sleep(1)
        process.kill()
        raise AssertionError(f"n8n start not ready after 300 s:\n{log_path.read_text()[-4000:]}")


class RecordingProxy:
    """A pass-through HTTP proxy in front of flowgate that records each request n8n sends (method, path,
    headers, JSON body): the evidence that a tool result went back to the model, and of what n8n sends.
    Responses (SSE streams included) are relayed as they arrive."""

    def __init__(self, upstream: str):
        import http.server
        import threading

        self.upstream = upstream
        self.requests: list[dict] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _relay(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    parsed = json.loads(body) if body else None
                except ValueError:
                    parsed = None
                proxy.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}, "json": parsed})
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                with httpx.Client(timeout=None) as client, client.stream(
                        self.command, proxy.upstream + self.path, headers=headers, content=body) as upstream:
                    self.send_response(upstream.status_code)
                    for key, value in upstream.headers.items():
                        if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                               "content-encoding"):
                            self.send_header(key, value)
                    self.send_header("connection", "close")
                    self.end_headers()
                    for chunk in upstream.iter_raw():
                        self.wfile.write(chunk)
                        self.wfile.flush()

            do_GET = do_POST = do_DELETE = _relay

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, mark: int, path: str) -> list[dict]:
        return [r for r in self.requests[mark:] if r["path"].split("?")[0] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
