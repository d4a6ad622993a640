"""Redis going away under a running server: requests keep working on the last-known keys and in-memory
limits (a private redis-server we can kill; the shared one is never touched)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.gateway.conftest import free_port
from tests.gateway.keyed_servers import base_env, chat, create_key, servers


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield process, f"redis://127.0.0.1:{port}/0"
    if process.poll() is None:
        process.kill()
    process.wait()


def test_requests_survive_redis_going_down(private_redis, tmp_path):
    process, url = private_redis
    env = base_env(tmp_path, FLOWGATE_REDIS_URL=url, FLOWGATE_REDIS_PREFIX="fgtest:down:")
    secret, _ = create_key(env, "--tier", "free", "--rpm", "3")
    with servers((env, tmp_path / "server.log")) as (server,):
        assert chat(server, secret).status_code == 200
        process.kill()
        process.wait()
        statuses = [chat(server, secret).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the last-known key, limited in memory (counting afresh)
        assert chat(server, "fg_0123456789ab_" + "0" * 48).status_code == 401
        assert chat(server, None).status_code == 401
        log = server.log_tail()
        assert "Redis unavailable for rate limits" in log and "Traceback" not in log
