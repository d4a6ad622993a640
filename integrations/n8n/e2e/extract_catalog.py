"""Writes the node and credential catalog of an installed n8n, which the default test suite checks the
templates against without n8n (node types, their versions, parameter names, credential fields).

    python integrations/n8n/e2e/extract_catalog.py ~/.cache/flowgate-n8n > tests/integrations/data/n8n-catalog.json

Node types come from `n8n export:nodes` (what the running n8n loads, including the generated "...Tool"
variants); credential types from the node packages' credentials.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("n8n-nodes-base", "@n8n/n8n-nodes-langchain")


def _versions(version) -> list[float]:
    return sorted(version if isinstance(version, list) else [version])


def exported_nodes(cache: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "nodes.json"
        env = {**os.environ, "N8N_USER_FOLDER": home, "PATH": f"{cache / 'node/bin'}:{os.environ['PATH']}",
               "N8N_DIAGNOSTICS_ENABLED": "false", "N8N_LOG_LEVEL": "warn"}
        subprocess.run([str(cache / "n8n/node_modules/.bin/n8n"), "export:nodes", f"--output={out}"],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def catalog(cache: Path) -> dict:
    modules = cache / "n8n/node_modules"
    nodes: dict[str, dict] = {}
    for node in exported_nodes(cache):
        entry = nodes.setdefault(node["name"], {"versions": [], "parameters": []})
        entry["versions"] = sorted(set(entry["versions"]) | set(_versions(node["version"])))
        entry["parameters"] = sorted(set(entry["parameters"]) | {p["name"] for p in node["properties"]})
    credentials: dict[str, list[str]] = {}
    for package in PACKAGES:
        for credential in json.loads((modules / package / "dist/types/credentials.json").read_text()):
            credentials[credential["name"]] = sorted({p["name"] for p in credential["properties"]})
    version = json.loads((modules / "n8n/package.json").read_text())["version"]
    return {"n8n": version, "nodes": dict(sorted(nodes.items())), "credentials": dict(sorted(credentials.items()))}


if __name__ == "__main__":
    json.dump(catalog(Path(sys.argv[1])), sys.stdout, indent=0, sort_keys=False)
    sys.stdout.write("\n")
