"""Keys, tiers and limits against two real `flowgate serve` replicas sharing one real Redis (a unique key
prefix per run), driven with the openai SDK and plain HTTP."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.gateway.conftest import MODEL
from tests.gateway.keyed_servers import (
    chat,
    create_key,
    drop_redis_prefix,
    keys,
    openai_client,
    redis_env,
    servers,
)

LIMITED_RPM = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiers-redis")
    env = redis_env(tmp)
    made = {
        "paid": create_key(env, "--tier", "paid", "--name", "paid-key"),
        "free": create_key(env, "--tier", "free"),
        "limited": create_key(env, "--tier", "free", "--rpm", str(LIMITED_RPM)),
        "revoked": create_key(env, "--tier", "paid"),
        "doomed": create_key(env, "--tier", "paid"),
        "other_model": create_key(env, "--tier", "paid", "--models", "some-other-model"),
    }
    keys(env, "revoke", made["revoked"][1])
    try:
        with servers((env, tmp / "a.log"), (env, tmp / "b.log")) as (a, b):
            yield {"env": env, "a": a, "b": b, "keys": {name: secret for name, (secret, _) in made.items()},
                   "ids": {name: key_id for name, (_, key_id) in made.items()}}
    finally:
        drop_redis_prefix(env)


def enumerate_routes():
    """Every (method, path) the app registers, path parameters filled in."""
    from gateway.app import create_app

    for route in create_app().routes:
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            yield method, path


def is_open(path: str) -> bool:
    return path in ("/health", "/ready", "/metrics") or path.startswith("/docs")


def test_every_route_needs_a_key_and_every_bad_key_gets_the_same_401(cluster):
    server, secrets = cluster["a"], cluster["keys"]
    malformed = "Bearer not-a-flowgate-key"
    unknown = "Bearer fg_0123456789ab_" + "0" * 48
    revoked = f"Bearer {secrets['revoked']}"
    routes = list(enumerate_routes())
    assert {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models", "/admin/usage"} <= {
        p for _, p in routes}
    bodies = set()
    for method, path in routes:
        for authorization in (None, malformed, unknown, revoked, "Basic abc"):
            headers = {"authorization": authorization} if authorization else {}
            response = httpx.request(method, server.url + path, headers=headers, json={}, timeout=60)
            if is_open(path):
                assert response.status_code != 401, (method, path)
                continue
            assert response.status_code == 401, (method, path, authorization, response.text)
            bodies.add(response.content)
    assert len(bodies) == 1
    error = httpx.Response(401, content=bodies.pop()).json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"


def test_bearer_and_api_key_headers(cluster):
    server, secret = cluster["a"], cluster["keys"]["paid"]
    assert httpx.get(f"{server.url}/v1/models", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    assert httpx.get(f"{server.url}/v1/models", headers={"api-key": secret}).status_code == 200


def test_service_tier_is_echoed_in_responses_and_every_chunk(cluster):
    paid = openai_client(cluster["a"], cluster["keys"]["paid"])
    free = openai_client(cluster["b"], cluster["keys"]["free"])
    messages = [{"role": "user", "content": "Say hi"}]
    assert paid.chat.completions.create(model=MODEL, messages=messages, max_tokens=2).service_tier == "priority"
    # A free key asking for priority runs (and is told it ran) as the free tier; so does a claiming header.
    answer = free.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, service_tier="priority",
                                          extra_headers={"x-tier": "paid", "x-user": "admin"},
                                          extra_body={"priority": -100})
    assert answer.service_tier == "default"
    chunks = list(free.chat.completions.create(model=MODEL, messages=messages, max_tokens=3, stream=True,
                                               stream_options={"include_usage": True}))
    assert len(chunks) > 2 and {c.service_tier for c in chunks} == {"default"}
    with free.chat.completions.with_streaming_response.create(model=MODEL, messages=messages, max_tokens=2,
                                                              stream=True) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert raw.headers["x-ratelimit-limit-requests"]
    assert paid.completions.create(model=MODEL, prompt="Hi", max_tokens=2, extra_body={"service_tier": "flex"}).service_tier == "flex"
    completion_chunks = list(paid.completions.create(model=MODEL, prompt="Hi", max_tokens=2, stream=True))
    assert {c.service_tier for c in completion_chunks} == {"priority"}
    assert free.responses.create(model=MODEL, input="Hi", max_output_tokens=2).service_tier == "default"


def test_caps_and_model_permissions(cluster):
    server, secrets = cluster["a"], cluster["keys"]
    too_long = chat(server, secrets["free"], max_tokens=5000)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
    assert "cap" in too_long.json()["error"]["message"]
    too_many = chat(server, secrets["free"], n=3)
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "n"
    forbidden = chat(server, secrets["other_model"])
    assert forbidden.status_code == 403 and forbidden.json()["error"]["param"] == "model"


def test_rate_limits_are_shared_by_replicas_with_headers_on_every_response(cluster):
    a, b, secret = cluster["a"], cluster["b"], cluster["keys"]["limited"]
    for i, server in enumerate([a, b, a][:LIMITED_RPM]):
        ok = chat(server, secret)
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-limit-requests"] == str(LIMITED_RPM)
        assert ok.headers["x-ratelimit-remaining-requests"] == str(LIMITED_RPM - 1 - i)
        for name in ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
                     "x-ratelimit-reset-requests"):
            assert name in ok.headers
    refused = chat(b, secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-limit-tokens" in refused.headers
    with pytest.raises(Exception) as exc:
        openai_client(a, secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=1)
    assert getattr(exc.value, "status_code", None) == 429


def test_revocation_reaches_the_other_replica_within_a_second(cluster):
    secret = cluster["keys"]["doomed"]
    url = f"{cluster['b'].url}/v1/models"
    headers = {"authorization": f"Bearer {secret}"}
    assert httpx.get(url, headers=headers).status_code == 200
    keys(cluster["env"], "revoke", cluster["ids"]["doomed"])
    revoked_at = time.monotonic()
    while (status := httpx.get(url, headers=headers).status_code) == 200:
        assert time.monotonic() - revoked_at < 1.5, "the revoked key still works on the second replica"
        time.sleep(0.05)
    assert status == 401


def test_usage_ledger_over_the_admin_route_and_the_cli(cluster):
    env, a = cluster["env"], cluster["a"]
    assert chat(a, cluster["keys"]["paid"]).status_code == 200
    assert httpx.get(f"{a.url}/admin/usage", headers={"authorization": "Bearer nope"}).status_code == 401
    time.sleep(0.2)  # the ledger is written after the response
    rows = httpx.get(f"{a.url}/admin/usage", headers={"authorization": f"Bearer {env['FLOWGATE_ADMIN_KEY']}"}).json()
    paid = rows[f"key:{cluster['ids']['paid']}"]
    assert paid["requests"] >= 1 and paid["prompt_tokens"] > 0 and paid["completion_tokens"] > 0
    assert sum(rows[f"tier:{t}"]["requests"] for t in ("paid", "batch") if f"tier:{t}" in rows) >= paid["requests"]
    import json

    from_cli = json.loads(keys(env, "usage", "--json").strip().splitlines()[-1])
    assert from_cli[f"key:{cluster['ids']['paid']}"]["requests"] >= 1


def test_keys_list_shows_no_secrets(cluster):
    listed = keys(cluster["env"], "list", "--json")
    assert cluster["ids"]["paid"] in listed
    assert all(secret not in listed for secret in cluster["keys"].values())
    assert "key_hash" not in listed
