"""Keys and tiers without Redis: one real server on a key file, limits and the ledger in its memory.
Open mode until the first key exists; prefix-cache isolation between keys; per-key fairness in the free
tier; the first-turn tool policy."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.gateway.conftest import MODEL
from tests.gateway.keyed_servers import base_env, chat, create_key, keys, openai_client, servers


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiers-local")
    env = base_env(tmp, FLOWGATE_ADMIT_FREE_INFLIGHT="1", FLOWGATE_ADMIT_FREE_QUEUE="4")
    with servers((env, tmp / "server.log")) as (server,):
        yield {"env": env, "server": server}


def wait_for_status(url: str, headers: dict, status: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while (got := httpx.get(url, headers=headers).status_code) != status:
        assert time.monotonic() < deadline, f"still {got} after {within_s} s"
        time.sleep(0.05)


def test_open_mode_until_the_first_key_then_revocation(local):
    server, env = local["server"], local["env"]
    models = f"{server.url}/v1/models"
    assert httpx.get(models).status_code == 200  # no keys: open mode, as in the quickstart
    secret, key_id = create_key(env, "--tier", "paid")
    wait_for_status(models, {}, 401, within_s=1.5)
    assert httpx.get(models, headers={"authorization": f"Bearer {secret}"}).status_code == 200
    keys(env, "revoke", key_id)
    wait_for_status(models, {"authorization": f"Bearer {secret}"}, 401, within_s=1.5)


def test_in_memory_rate_limits_and_headers(local):
    secret, _ = create_key(local["env"], "--tier", "paid", "--rpm", "2", "--tpm", "100000")
    time.sleep(0.6)  # the key cache refreshes every 0.5 s
    for remaining in ("1", "0"):
        ok = chat(local["server"], secret)
        assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == remaining
        assert ok.headers["x-ratelimit-limit-tokens"] == "100000"
    refused = chat(local["server"], secret)
    assert refused.status_code == 429 and "retry-after" in refused.headers
    assert refused.headers["x-ratelimit-limit-requests"] == "2"


def cached_tokens(server, secret: str, prompt: str) -> int:
    answer = openai_client(server, secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=1)
    return answer.usage.prompt_tokens_details.cached_tokens


def test_prefix_cache_is_isolated_between_keys_unless_they_share_a_tenant(local):
    env, server = local["env"], local["server"]
    alice, _ = create_key(env, "--tier", "paid")
    bob, _ = create_key(env, "--tier", "paid")
    acme_1, _ = create_key(env, "--tier", "paid", "--tenant", "acme")
    acme_2, _ = create_key(env, "--tier", "paid", "--tenant", "acme")
    time.sleep(0.6)
    prompt = "You are the support assistant of a bicycle shop. " * 12 + "Which tyre fits a road bike?"
    assert cached_tokens(server, alice, prompt) == 0
    assert cached_tokens(server, alice, prompt) > 0  # the same key hits its own cache
    assert cached_tokens(server, bob, prompt) == 0  # another key's identical prompt does not
    assert cached_tokens(server, acme_1, prompt) == 0
    assert cached_tokens(server, acme_2, prompt) > 0  # keys of one tenant share


def test_one_free_key_flooding_cannot_starve_another(local):
    env, server = local["env"], local["server"]
    hog, _ = create_key(env, "--tier", "free", "--max-concurrent", "100", "--rpm", "10000")
    polite, _ = create_key(env, "--tier", "free")
    time.sleep(0.6)

    async def one(client, secret):
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {secret}"},
                                     json={"model": MODEL, "messages": [{"role": "user", "content": "Count"}],
                                           "max_tokens": 8})
        return response, time.monotonic() - started

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            flood = [asyncio.ensure_future(one(client, hog)) for _ in range(12)]
            await asyncio.sleep(0.5)  # the hog fills the free tier's slot and queue first
            mine = await asyncio.gather(*(one(client, polite) for _ in range(2)))
            return await asyncio.gather(*flood), mine

    flood, mine = asyncio.run(scenario())
    assert [r.status_code for r, _ in mine] == [200, 200]
    refused = [(r, t) for r, t in flood if r.status_code == 429]
    assert len(refused) >= 6  # 1 running + 4 queued at most, and the polite key pushed two out
    assert {r.json()["error"]["code"] for r, _ in refused} == {"tier_capacity_exceeded"}
    assert all(r.headers["retry-after"] == "1" for r, _ in refused)
    assert min(t for _, t in refused) < 1.0  # refusals do not wait for capacity
    assert all(r.status_code in (200, 429) for r, _ in flood)


def test_required_first_turn_makes_an_agent_call_its_tool(local):
    secret, _ = create_key(local["env"], "--tier", "paid", "--tool-choice-default", "required_first_turn")
    time.sleep(0.6)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    client = openai_client(local["server"], secret)
    messages = [{"role": "user", "content": "Hello there"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, max_tokens=40)
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    # After a tool result the policy no longer applies (test_tiers_units checks `auto` stays auto).
    later = client.chat.completions.create(model=MODEL, max_tokens=3, tools=tools, messages=[
        *messages, {"role": "assistant", "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert later.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_set_tier_takes_effect_on_the_running_server(local):
    env, server = local["env"], local["server"]
    secret, key_id = create_key(env, "--tier", "free")
    time.sleep(0.6)
    assert chat(server, secret).json()["service_tier"] == "default"
    keys(env, "set-tier", key_id, "paid")
    time.sleep(0.6)
    assert chat(server, secret).json()["service_tier"] == "priority"
