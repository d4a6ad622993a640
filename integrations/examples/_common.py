"""What every example shares: where flowgate is, and the one tool they all call."""

from __future__ import annotations

import json
import os

BASE_URL = os.environ.get("FLOWGATE_BASE_URL", "http://127.0.0.1:8000").rstrip("/") + "/v1"
# Open mode (no keys configured) accepts any key; with keys, put yours here.
API_KEY = os.environ.get("FLOWGATE_API_KEY", "unused")
MODEL = os.environ.get("FLOWGATE_MODEL", "smollm2-135m")
QUESTION = "What is the weather in Paris?"


def get_weather(city: str) -> str:
    """Current weather in a city (a stand-in for a real API: examples must not need one)."""
    return json.dumps({"city": city, "sky": "sunny", "celsius": 21})
