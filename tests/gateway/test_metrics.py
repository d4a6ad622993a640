"""GET /metrics scraped from the real server and parsed with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import MODEL


def _scrape(http) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_count_requests_latencies_tokens_and_engine_state(client, http, server):
    before = _scrape(http)
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count from 1 to 20."}],
                                              max_tokens=5, temperature=0)
    assert http.post("/v1/chat/completions", json={"model": MODEL, "messages": []}).status_code == 400
    assert http.get("/v1/no-such-route").status_code == 404  # refused by the router, before any middleware
    assert http.delete("/v1/chat/completions").status_code == 405
    server.wait_idle()
    after = _scrape(http)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/v1/chat/completions"
    assert delta("flowgate_requests_total", route=route, status="200", tier="paid") == 1
    assert delta("flowgate_requests_total", route=route, status="400", tier="paid") == 1
    assert delta("flowgate_requests_total", route="unmatched", status="404", tier="unknown") == 1
    assert delta("flowgate_requests_total", route="unmatched", status="405", tier="unknown") == 1
    assert "flowgate_interrupted_steps_total" in after
    usage = response.usage
    assert delta("flowgate_prompt_tokens_total", tier="paid", key_id="anonymous") == usage.prompt_tokens
    assert delta("flowgate_generation_tokens_total", tier="paid", key_id="anonymous") == usage.completion_tokens == 5
    assert delta("flowgate_cached_prompt_tokens_total", tier="paid",
                 key_id="anonymous") == usage.prompt_tokens_details.cached_tokens
    for histogram in ("flowgate_time_to_first_token_seconds", "flowgate_e2e_request_latency_seconds",
                      "flowgate_queue_time_seconds", "flowgate_time_per_output_token_seconds"):
        assert delta(f"{histogram}_count", tier="paid") == 1, histogram
        assert delta(f"{histogram}_sum", tier="paid") > 0 or histogram == "flowgate_queue_time_seconds"
    ttft = delta("flowgate_time_to_first_token_seconds_sum", tier="paid")
    assert ttft <= delta("flowgate_e2e_request_latency_seconds_sum", tier="paid")

    assert _value(after, "flowgate_engine_up") == 1
    assert _value(after, "flowgate_seqs_running") == 0 and _value(after, "flowgate_seqs_waiting") == 0
    blocks = {state: _value(after, "flowgate_kv_cache_blocks", state=state) for state in ("used", "cached", "free")}
    assert sum(blocks.values()) == _value(after, "flowgate_kv_cache_capacity_blocks") > 0
    assert blocks["cached"] > 0  # the finished prompt's full blocks stay cached
    assert 0 <= _value(after, "flowgate_prefix_cache_hit_ratio") <= 1
    assert "flowgate_preemptions_total" in after and "flowgate_grammar_compile_seconds_count" in after


def test_rate_limit_refusals_counter_is_exposed(http):
    from gateway.telemetry import record_rate_limit_refusal  # what the tiers code calls on each 429

    record_rate_limit_refusal("free", "requests")
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value("flowgate_rate_limit_refusals_total", {"tier": "free", "limit": "requests"}) == 1
    # The server has refused nothing (open mode), but the family is registered there for the tiers code.
    assert "# TYPE flowgate_rate_limit_refusals_total counter" in http.get("/metrics").text


def test_dashboard_and_configs_refer_to_what_exists(http):
    """Every flowgate_* series the Grafana dashboard queries is exposed by /metrics (bulk ones registered even
    before a job ran), and the collector's pipeline uses only components it defines."""
    import json
    import re

    import yaml

    from tests.gateway.conftest import ROOT

    exposed = set(re.findall(r"^# TYPE (flowgate_\w+) ", http.get("/metrics").text, flags=re.M))
    dashboard = json.loads((ROOT / "integrations/grafana/flowgate-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
               for name in re.findall(r"flowgate_\w+", target["expr"])}
    assert queried, "the dashboard queries nothing"
    missing = {n for n in queried if re.sub(r"_(bucket|sum|count)$", "", n) not in exposed}
    assert not missing, f"dashboard queries series /metrics does not expose: {sorted(missing)}"

    collector = yaml.safe_load((ROOT / "integrations/otel/collector.yaml").read_text())
    for pipeline in collector["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(collector[kind]), kind
