"""Gateway settings: flags win over FLOWGATE_* variables, which win over the defaults."""

import pytest

from gateway.settings import Settings

VARIABLES = ("FLOWGATE_HOST", "FLOWGATE_PORT", "FLOWGATE_MODEL", "FLOWGATE_KV_CACHE_BYTES", "FLOWGATE_MAX_BODY_BYTES")


@pytest.fixture
def clean_env(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_serve_the_bundled_model_on_localhost(clean_env):
    settings = Settings.from_env()
    assert (settings.host, settings.port, settings.engine.model) == ("127.0.0.1", 8000, "smollm2-135m")


def test_flags_win_over_the_environment(clean_env):
    clean_env.setenv("FLOWGATE_HOST", "0.0.0.0")
    clean_env.setenv("FLOWGATE_PORT", "9000")
    clean_env.setenv("FLOWGATE_MODEL", "/models/from-env")
    clean_env.setenv("FLOWGATE_KV_CACHE_BYTES", "1048576")
    clean_env.setenv("FLOWGATE_MAX_BODY_BYTES", "4096")
    settings = Settings.from_env(model="/models/from-flag", port=1234)
    assert settings.host == "0.0.0.0" and settings.port == 1234
    assert settings.engine.model == "/models/from-flag" and settings.engine.kv_cache_bytes == 1 << 20
    assert settings.max_body_bytes == 4096


def test_invalid_settings_are_refused(clean_env):
    with pytest.raises(ValueError, match="port"):
        Settings.from_env(port=70000)
    clean_env.setenv("FLOWGATE_MAX_BODY_BYTES", "10")
    with pytest.raises(ValueError, match="max_body_bytes"):
        Settings.from_env()
