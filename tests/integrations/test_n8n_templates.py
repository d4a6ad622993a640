"""The n8n templates, checked without n8n: valid workflow JSON, node types, versions and parameter names that
the pinned n8n knows (tests/integrations/data/n8n-catalog.json, extracted from the installed n8n by
integrations/n8n/e2e/extract_catalog.py), wiring, credentials, and every URL on the configurable base."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N8N_DIR = ROOT / "integrations/n8n"
CATALOG = json.loads((ROOT / "tests/integrations/data/n8n-catalog.json").read_text())
WORKFLOWS = sorted((N8N_DIR / "workflows").glob("*.json"))
CREDENTIALS = {c["id"]: c for c in json.loads((N8N_DIR / "credentials/flowgate.json").read_text())}
BASE = "={{ $env.FLOWGATE_BASE_URL }}"
TRIGGERS = re.compile(r"(manualTrigger|webhook|chatTrigger)$")
# n8n node properties every node may carry besides `parameters`.
NODE_KEYS = {"id", "name", "type", "typeVersion", "position", "parameters", "credentials", "webhookId",
             "retryOnFail", "maxTries", "waitBetweenTries", "onError", "notes", "disabled", "alwaysOutputData"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_the_catalog_is_the_pinned_n8n():
    assert CATALOG["n8n"] == re.search(r'N8N_VERSION="\$\{N8N_VERSION:-([\d.]+)\}"',
                                       (N8N_DIR / "e2e/install.sh").read_text()).group(1)
    assert len(WORKFLOWS) >= 7


def test_workflow_ids_and_names_are_unique():
    workflows = [load(p) for p in WORKFLOWS]
    ids = [w["id"] for w in workflows]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[A-Za-z0-9]{16}", i) for i in ids)
    assert len({w["name"] for w in workflows}) == len(workflows)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_are_ones_the_pinned_n8n_knows(path):
    workflow = load(path)
    assert workflow["settings"]["executionOrder"] == "v1"
    for node in workflow["nodes"]:
        known = CATALOG["nodes"].get(node["type"])
        assert known, f"{node['name']}: n8n {CATALOG['n8n']} has no node type {node['type']}"
        assert node["typeVersion"] in known["versions"], (node["name"], node["typeVersion"], known["versions"])
        unknown = set(node["parameters"]) - set(known["parameters"])
        assert not unknown, f"{node['name']}: parameters {unknown} are not {node['type']}'s"
        assert set(node) <= NODE_KEYS, set(node) - NODE_KEYS
    ids = [n["id"] for n in workflow["nodes"]]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_node_is_wired_to_a_trigger(path):
    workflow = load(path)
    names = {n["name"] for n in workflow["nodes"]}
    edges = [(src, dst["node"], kind) for src, outputs in workflow["connections"].items()
             for kind, lists in outputs.items() for targets in lists for dst in targets]
    assert {e[0] for e in edges} | {e[1] for e in edges} <= names
    [trigger] = [n["name"] for n in workflow["nodes"] if TRIGGERS.search(n["type"])]
    # Sub-nodes (models, tools, parsers) point at their root node; follow edges both ways from the trigger.
    reached, frontier = {trigger}, [trigger]
    while frontier:
        here = frontier.pop()
        for src, dst, kind in edges:
            nxt = dst if src == here else src if dst == here and kind != "main" else None
            if nxt and nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == names, f"not wired: {names - reached}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_url_is_on_the_configurable_base(path):
    workflow = load(path)
    for node in workflow["nodes"]:
        for text in strings(node["parameters"]):
            assert not re.search(r"https?://", text), f"{node['name']}: a hard-coded URL in {text[:80]!r}"
        if node["type"] == "n8n-nodes-base.httpRequest":
            assert node["parameters"]["url"].startswith(BASE + "/v1/"), node["parameters"]["url"]
            # Our 429 and 503 carry Retry-After: n8n only retries when told to (docs/n8n.md).
            assert node.get("retryOnFail") is True and node["maxTries"] >= 2


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_credentials_are_the_shipped_ones(path):
    for node in load(path)["nodes"]:
        for kind, ref in node.get("credentials", {}).items():
            credential = CREDENTIALS[ref["id"]]
            assert (credential["type"], credential["name"]) == (kind, ref["name"])


def test_credentials_read_the_base_url_and_key_from_the_environment():
    by_type = {c["type"]: c for c in CREDENTIALS.values()}
    assert by_type["openAiApi"]["data"]["url"] == BASE + "/v1"
    assert "$env.FLOWGATE_API_KEY" in by_type["openAiApi"]["data"]["apiKey"]
    assert by_type["httpHeaderAuth"]["data"] == {
        "name": "Authorization", "value": "=Bearer {{ $env.FLOWGATE_API_KEY }}"}
    for credential in CREDENTIALS.values():
        assert set(credential["data"]) <= set(CATALOG["credentials"][credential["type"]])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_each_template_has_its_page(path):
    page = path.with_suffix(".md")
    assert page.exists(), f"{page.name} is missing"
    assert path.name in (N8N_DIR / "README.md").read_text()


def test_a_wrong_template_fails_these_checks():
    """The checks above can fail: an unknown version, parameter and URL are each caught."""
    node = {"type": "n8n-nodes-base.httpRequest", "typeVersion": 9, "parameters": {"urll": "http://x"}}
    known = CATALOG["nodes"][node["type"]]
    assert node["typeVersion"] not in known["versions"]
    assert set(node["parameters"]) - set(known["parameters"]) == {"urll"}
    assert any(re.search(r"https?://", s) for s in strings(node["parameters"]))
